//! Proves recordings survive the ends a production bot meets: a graceful shutdown mid-call
//! finalizes every file, and a `kill -9` of the whole process mid-call leaves WAV files that
//! decoders open and play.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mediabot::demo::start_local;
use mediabot_emulator::Scenario;

const LONG_MEETING: &str = r#"
name = "long"
end_at = "10m"

[meeting]
subject = "long"
join_meeting_id = "161803398874"
passcode = "long"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "0s", duration = "60s", synth = 5 }]
"#;

fn wavs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(wavs_under(&p));
        } else if p.extension().is_some_and(|x| x == "wav") {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_mid_call_finalizes_files() {
    let dir = std::env::temp_dir().join(format!("mediabot-graceful-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |_| {}).await.unwrap();
    let info = emulator
        .start_scenario(Scenario::from_toml(LONG_MEETING, None).unwrap())
        .unwrap();
    let call_id = engine
        .join(info["join_url"].as_str().unwrap())
        .await
        .unwrap();
    // Wait for audio to flow.
    let t = Instant::now();
    while !engine
        .calls()
        .iter()
        .any(|c| c.call_id == call_id && c.setup_to_first_audio_ms.is_some())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no audio");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What SIGTERM does in `mediabot run`, with no grace left.
    engine.shutdown(Duration::ZERO).await;
    let done = engine
        .finished_calls()
        .into_iter()
        .find(|c| c.call_id == call_id)
        .unwrap();
    let manifest = done.ended.unwrap().manifest.unwrap();
    assert_eq!(manifest["recording"], false);
    let timeline = manifest["timelineSamples"].as_u64().unwrap();
    assert!(timeline > 48_000, "{timeline}");
    let wavs = wavs_under(&dir.join("recordings"));
    assert!(wavs.len() >= 2, "{wavs:?}");
    for w in wavs {
        let r = hound::WavReader::open(&w).unwrap();
        assert_eq!(u64::from(r.duration()), timeline, "{}", w.display());
        // The header's size matches the file: finalized, not just checkpointed.
        let len = std::fs::metadata(&w).unwrap().len();
        assert_eq!(len, 44 + timeline * 2, "{}", w.display());
    }
}

#[test]
fn kill_9_mid_call_leaves_playable_files() {
    let dir = std::env::temp_dir().join(format!("mediabot-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("long.toml");
    std::fs::write(&scenario, LONG_MEETING).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mediabot"))
        .args(["demo", "--out"])
        .arg(dir.join("out"))
        .arg("--scenario")
        .arg(&scenario)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it record a few seconds past the first checkpoints.
    let t = Instant::now();
    loop {
        let grown = wavs_under(&dir.join("out")).iter().any(|w| {
            std::fs::metadata(w)
                .map(|m| m.len() > 48_000 * 2 * 3)
                .unwrap_or(false)
        });
        if grown {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no recording grew within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let wavs = wavs_under(&dir.join("out").join("recordings"));
    assert!(!wavs.is_empty());
    for w in wavs {
        let r = hound::WavReader::open(&w).unwrap_or_else(|e| panic!("{}: {e}", w.display()));
        let declared = u64::from(r.duration());
        let samples: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(samples.len() as u64, declared);
        assert!(
            declared >= 48_000,
            "{}: at least the checkpointed second: {declared}",
            w.display()
        );
    }
    // The manifest is never half-written (temp file + rename).
    for e in std::fs::read_dir(dir.join("out").join("recordings"))
        .unwrap()
        .flatten()
    {
        let m = e.path().join("manifest.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        assert_eq!(
            v["recording"], true,
            "killed mid-call: the manifest says so"
        );
    }
}
