//! The independent peer: an aiortc WHIP receiver (`scripts/loadtest/aiortc_receiver.py`) fed
//! the same pre-encoded packets by the same pacer, pinned to the bot's core while the bot
//! idles. It does the receive work of a Python transcription bot (jitter buffer, Opus decode,
//! resample to 16 kHz), so its CPU per stream is a like-for-like comparison minus the disk.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use super::procfs;
use super::replay::ReplayMedia;

/// What the peer measurement needs from the run.
#[derive(Debug)]
pub struct PeerCtx<'a> {
    /// The generator's media side.
    pub media: &'a ReplayMedia,
    /// Python with aiortc.
    pub python: &'a Path,
    /// The receiver script.
    pub script: &'a Path,
    /// Streams per WHIP session.
    pub speakers: usize,
    /// Steady seconds per count.
    pub secs: f64,
    /// CPU to pin the receiver to.
    pub cpu: Option<usize>,
    /// Clock ticks per second.
    pub hz: u64,
}

/// One measurement of the independent peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// Which peer (with its version).
    pub peer: String,
    /// Streams sent to it.
    pub streams: usize,
    /// Its CPU in the steady window, cores.
    pub cpu_cores: f64,
    /// Cores per stream.
    pub cores_per_stream: f64,
    /// Frames it decoded in the window.
    pub frames: u64,
    /// Decoded frames per stream per second (50 when it keeps up).
    pub frames_per_stream_per_sec: f64,
    /// Its CPU per stream divided by mediabot's at the nearest step.
    pub ratio_to_bot: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Measures the aiortc receiver at each of `counts` streams.
///
/// # Errors
/// The interpreter or script is missing, or the receiver does not start.
pub async fn measure_aiortc(
    ctx: &PeerCtx<'_>,
    counts: &[usize],
) -> Result<Vec<PeerResult>, String> {
    if !ctx.python.is_file() || !ctx.script.is_file() {
        return Err(format!(
            "{} or {} missing: run scripts/setup-interop.sh (creates target/interop-venv with aiortc)",
            ctx.python.display(),
            ctx.script.display()
        ));
    }
    let version = Command::new(ctx.python)
        .args(["-c", "import aiortc; print(aiortc.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cmd = Command::new(ctx.python);
    cmd.arg(ctx.script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(cpu) = ctx.cpu {
        super::bot::pin_command(&mut cmd, cpu);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", ctx.python.display()))?;
    let guard = KillOnDrop(&mut child);
    let stdout = guard.0.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(l)) if l.starts_with("listening") => {}
        other => return Err(format!("aiortc receiver did not start: {other:?}")),
    }
    let pid = guard.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let stats = |http: reqwest::Client, base: String| async move {
        let v: serde_json::Value = http
            .get(format!("{base}/stats"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["frames"].as_u64()
    };
    let mut out = Vec::new();
    for &count in counts {
        let sessions_n = count.div_ceil(ctx.speakers.max(1));
        let mut sessions = Vec::new();
        let mut error = None;
        for i in 0..sessions_n {
            let ssrcs: Vec<u32> = (0..ctx.speakers)
                .map(|j| 10_000 + (i * ctx.speakers + j) as u32)
                .collect();
            match ctx
                .media
                .connect_direct(
                    &format!("aiortc-{count}-{i}"),
                    &format!("{base}/whip"),
                    "aiortc",
                    ssrcs,
                )
                .await
            {
                Ok(s) => sessions.push(s),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let f0 = stats(http.clone(), base.clone()).await.unwrap_or(0);
        let s0 = procfs::snapshot(pid).map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs_f64(ctx.secs.max(1.0))).await;
        let s1 = procfs::snapshot(pid).map_err(|e| e.to_string())?;
        let f1 = stats(http.clone(), base.clone()).await.unwrap_or(0);
        for s in sessions {
            s.close().await;
        }
        let cpu = procfs::cpu_between(&s0, &s1, ctx.hz);
        let streams = sessions_n * ctx.speakers;
        let frames = f1.saturating_sub(f0);
        out.push(PeerResult {
            peer: format!("aiortc {version}"),
            streams,
            cpu_cores: cpu.process_cores,
            cores_per_stream: cpu.process_cores / streams.max(1) as f64,
            frames,
            frames_per_stream_per_sec: frames as f64 / streams.max(1) as f64 / cpu.wall_secs,
            ratio_to_bot: None,
            error,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(out)
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
