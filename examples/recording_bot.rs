//! A recording bot on the mediabot library, run against the local emulator: it joins a meeting
//! by its join URL, records every participant on the call timeline plus the mix, and prints the
//! manifest when the meeting ends.
//!
//! ```sh
//! cargo run --example recording_bot -- [OUT_DIR]
//! ```
//!
//! Against a real tenant the same engine is configured with `mediabot::config::Config::load`
//! and started with `Engine::start`; the join is the same call.

use std::time::Duration;

use mediabot::demo::{DEMO_SCENARIO, start_local};
use mediabot_emulator::Scenario;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "recording-bot-out".into());
    // Emulator + engine on loopback; recording is on by default (48 kHz WAVs + manifest).
    let (emulator, engine) = start_local(out.as_ref(), |cfg| {
        cfg.transcription.file_dir = None;
    })
    .await?;
    let meeting = emulator.start_scenario(Scenario::from_toml(DEMO_SCENARIO, None)?)?;
    let join_url = meeting["join_url"].as_str().unwrap_or_default();
    let call_id = engine.join(join_url).await?;
    println!("joined {call_id}; recording until the meeting ends (about 35 s)");
    let call = loop {
        if let Some(done) = engine
            .finished_calls()
            .into_iter()
            .find(|c| c.call_id == call_id)
        {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    engine.shutdown(Duration::from_secs(1)).await;
    let manifest = call.ended.and_then(|e| e.manifest).unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    println!("files in {}", call.recording_dir.unwrap_or_default());
    Ok(())
}
