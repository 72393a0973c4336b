//! `mediabot demo`: the whole product on one machine with no tenant.
//!
//! Starts the emulator in-process (Graph, identity, notifications, and its WebRTC media side),
//! registers a bot app with the five `Calls.*` roles, starts the engine against it exactly as it
//! would run against Microsoft Graph (same client, same verifier, same HTTP surface), starts the
//! bundled meeting scenario, joins it by its join URL, records it and writes the transcription
//! feed to files, then summarizes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediabot_emulator::webrtc_peer::WhipMedia;
use mediabot_emulator::{AppConfig, Emulator, EmulatorHandle, Scenario, roles};

use crate::call::CallInfo;
use crate::config::{Config, Secret};
use crate::engine::{Engine, EngineOptions};

/// The bundled scenario.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo-meeting.toml");

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[error("demo: {0}")]
pub struct DemoError(pub String);

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Output folder (recordings/ and transcripts/ are created inside).
    pub out_dir: PathBuf,
    /// A scenario file instead of the bundled one.
    pub scenario: Option<PathBuf>,
    /// Print progress lines while the call runs.
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// What the demo produced.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The call as it ended.
    pub call: CallInfo,
    /// Where the recordings are.
    pub recordings_dir: PathBuf,
    /// Where the transcription feed files are.
    pub transcripts_dir: PathBuf,
}

/// Starts the emulator (with its WebRTC media side) and an engine configured against it, on
/// loopback, recording under `out_dir/recordings` and writing the feed under
/// `out_dir/transcripts`; what the bot sends into calls is saved by the emulator under
/// `out_dir/emulator-received`. `tweak` adjusts the engine's config first (tests use it for
/// compliance mode and the like).
///
/// # Errors
/// [`DemoError`] naming the part that did not start.
pub async fn start_local(
    out_dir: &Path,
    tweak: impl FnOnce(&mut Config),
) -> Result<(EmulatorHandle, Engine), DemoError> {
    let err = |what: &str, e: &dyn std::fmt::Display| DemoError(format!("{what}: {e}"));
    // The engine's port is chosen first so the app's calling webhook (where the emulator rings
    // incoming calls) can name it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| err("pick a port", &e))?
        .port();
    let mut app_cfg = AppConfig::with_roles(roles::ALL);
    app_cfg.calling_webhook = Some(format!(
        "http://127.0.0.1:{port}{}",
        crate::server::NOTIFICATION_PATH
    ));
    let emulator = Emulator::builder()
        .app(app_cfg)
        .media(Arc::new(WhipMedia {
            // What the bot plays into calls (echo, playback) is saved here for checking.
            save_dir: Some(out_dir.join("emulator-received")),
            ..WhipMedia::default()
        }))
        .require_https_callbacks(false)
        .start("127.0.0.1:0")
        .await
        .map_err(|e| err("emulator", &e))?;
    let app = emulator
        .apps()
        .into_iter()
        .next()
        .ok_or_else(|| DemoError("emulator has no app".into()))?;
    let mut cfg = Config::default();
    cfg.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cfg.server.behind_tls_proxy = true;
    cfg.graph.tenant_id = Some(app.tenant_id.clone());
    cfg.graph.client_id = Some(app.client_id.clone());
    cfg.graph.client_secret = app.client_secret.clone().map(Secret::new);
    cfg.graph.base_url = emulator.graph_url();
    cfg.graph.authority = emulator.base_url().to_string();
    cfg.graph.openid_metadata_url = emulator.openid_metadata_url();
    cfg.media.bind_ip = "127.0.0.1".parse().map_err(|e| err("bind ip", &e))?;
    cfg.media.udp_port = 0;
    cfg.recording.dir = out_dir.join("recordings");
    cfg.transcription.file_dir = Some(out_dir.join("transcripts"));
    cfg.transcription.reconnect_buffer_secs = 10;
    tweak(&mut cfg);
    let engine = Engine::start(
        cfg,
        EngineOptions {
            loopback_media_only: true,
        },
    )
    .await
    .map_err(|e| err("engine", &e))?;
    Ok((emulator, engine))
}

/// Runs the demo to the end of the scenario's meeting.
///
/// # Errors
/// [`DemoError`] naming the step that failed.
pub async fn run(opts: &DemoOptions) -> Result<DemoResult, DemoError> {
    let err = |what: &str, e: &dyn std::fmt::Display| DemoError(format!("{what}: {e}"));
    let scenario = match &opts.scenario {
        Some(p) => Scenario::from_file(p).map_err(|e| err("scenario", &e))?,
        None => {
            Scenario::from_toml(DEMO_SCENARIO, None).map_err(|e| err("bundled scenario", &e))?
        }
    };
    let recordings = opts.out_dir.join("recordings");
    let transcripts = opts.out_dir.join("transcripts");
    // The operator API (list calls, hang up, join) is bearer-token protected; the demo makes a
    // one-off random token and prints it, so the API can be tried while the meeting runs.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let (emulator, engine) = start_local(&opts.out_dir, |c| {
        c.server.operator_token = Some(crate::config::Secret::new(token.clone()));
    })
    .await?;

    let info = emulator
        .start_scenario(scenario)
        .map_err(|e| err("start scenario", &e))?;
    let join_url = info["join_url"]
        .as_str()
        .ok_or_else(|| DemoError("scenario has no join url".into()))?
        .to_string();
    if opts.progress {
        println!("emulator   {}", emulator.base_url());
        println!(
            "bot        http://{}  (media udp {})",
            engine.http_addr(),
            engine.media_addr()
        );
        println!(
            "operator   curl -H 'Authorization: Bearer {token}' http://{}/api/v1/calls",
            engine.http_addr()
        );
        println!("joining    {join_url}");
    }
    let t0 = Instant::now();
    let call_id = engine.join(&join_url).await.map_err(|e| err("join", &e))?;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        if let Some(done) = engine
            .finished_calls()
            .into_iter()
            .find(|c| c.call_id == call_id)
        {
            engine.shutdown(Duration::from_secs(1)).await;
            return Ok(DemoResult {
                call: done,
                recordings_dir: recordings,
                transcripts_dir: transcripts,
            });
        }
        if t0.elapsed() > opts.timeout {
            engine.shutdown(Duration::from_secs(0)).await;
            return Err(DemoError(format!(
                "the call did not end within {} s",
                opts.timeout.as_secs()
            )));
        }
        if opts.progress && last_print.elapsed() >= Duration::from_secs(3) {
            last_print = Instant::now();
            if let Some(c) = engine.calls().into_iter().find(|c| c.call_id == call_id) {
                let present: Vec<String> = c
                    .participants
                    .iter()
                    .filter(|p| !p.left)
                    .map(|p| {
                        format!(
                            "{}{}",
                            p.display_name.clone().unwrap_or_else(|| p.id.clone()),
                            if p.in_lobby { " (lobby)" } else { "" }
                        )
                    })
                    .collect();
                println!(
                    "{:>5.1}s  {:<12} recording={}  in call: {}",
                    t0.elapsed().as_secs_f64(),
                    c.state,
                    c.recording,
                    present.join(", ")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the summary of a finished demo.
pub fn print_summary(r: &DemoResult) {
    let c = &r.call;
    println!();
    println!(
        "call {} ended: {}",
        c.call_id,
        c.ended.as_ref().map_or("?", |e| e.reason.as_str())
    );
    if let Some(ms) = c.setup_to_first_audio_ms {
        println!("join to first audio: {ms} ms");
    }
    if let Some(e) = &c.ended {
        println!(
            "{:<16} {:>9} {:>9} {:>7} {:>10} {:>8}",
            "speaker", "source", "speech s", "lost", "concealed", "fec"
        );
        for s in &e.streams {
            println!(
                "{:<16} {:>9} {:>9.1} {:>7} {:>10} {:>8}",
                s.display_name.clone().unwrap_or_else(|| "?".into()),
                s.source_id,
                s.speech_seconds,
                s.lost,
                s.concealed,
                s.fec_recovered
            );
        }
        if let Some(m) = &e.manifest {
            println!("files:");
            for t in m["tracks"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {} samples",
                    r.recordings_dir
                        .join(dir_of(c))
                        .join(t["file"].as_str().unwrap_or("?"))
                        .display(),
                    t["samples"]
                );
            }
            println!(
                "  {}",
                r.recordings_dir
                    .join(dir_of(c))
                    .join("manifest.json")
                    .display()
            );
        }
        for err in &e.errors {
            println!("error: {err}");
        }
    }
    println!("transcription feed: {}", r.transcripts_dir.display());
}

fn dir_of(c: &CallInfo) -> PathBuf {
    c.recording_dir
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(PathBuf::from)
        .unwrap_or_default()
}
