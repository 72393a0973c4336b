//! An echo bot on the mediabot library, run against the local emulator: with `calls.echo` on,
//! the call's mix is played back into the call through the send path, so every participant hears
//! the meeting back (about 120 ms later). The emulator saves what the bot sent, so you can listen.
//!
//! ```sh
//! cargo run --example echo_bot -- [OUT_DIR]
//! ```

use std::time::Duration;

use mediabot::demo::start_local;
use mediabot_emulator::Scenario;

const MEETING: &str = r#"
name = "echo"
end_at = "8s"
[meeting]
subject = "echo bot"
join_meeting_id = "100200300400"
passcode = "echo"
organizer = "ada"
[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "5s", synth = 7 }]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "echo-bot-out".into());
    let (emulator, engine) = start_local(out.as_ref(), |cfg| {
        cfg.calls.echo = true; // needs the 48 kHz pipeline, which recording selects
        cfg.transcription.file_dir = None;
    })
    .await?;
    let meeting = emulator.start_scenario(Scenario::from_toml(MEETING, None)?)?;
    let call_id = engine
        .join(meeting["join_url"].as_str().unwrap_or_default())
        .await?;
    println!("joined {call_id}; echoing until the meeting ends (about 8 s)");
    while !engine.finished_calls().iter().any(|c| c.call_id == call_id) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    engine.shutdown(Duration::from_secs(1)).await;
    println!(
        "what the participants heard from the bot: {}/emulator-received/bot-audio-{call_id}.wav",
        out
    );
    Ok(())
}
