//! A prompt bot on the mediabot library, run against the local emulator: when the call's media
//! is ready it plays a prompt WAV into the call (any rate, mono or stereo; resampled to 48 kHz),
//! plays it again whenever someone presses a DTMF key, and leaves when the prompt has played
//! twice or the meeting ends.
//!
//! ```sh
//! cargo run --example prompt_bot -- [PROMPT.wav]
//! ```
//!
//! Without a file it synthesizes a 2 s speech-like prompt at 16 kHz.

use std::time::Duration;

use mediabot::demo::{DEMO_SCENARIO, start_local};
use mediabot::engine::EngineEvent;
use mediabot_emulator::Scenario;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join("prompt-bot");
    let prompt = match std::env::args().nth(1) {
        Some(p) => p.into(),
        None => {
            std::fs::create_dir_all(&out)?;
            let p = out.join("prompt.wav");
            let mut w = mediabot::sinks::wav::WavWriter::create(&p, 16_000, 1)?;
            w.write_samples(&mediabot_emulator::media::speech_like(9, 16_000, 2000))?;
            w.finalize()?;
            p
        }
    };
    let (emulator, engine) = start_local(&out, |cfg| {
        cfg.recording.enabled = false;
        cfg.transcription.file_dir = None;
    })
    .await?;
    let mut events = engine.events();
    let meeting = emulator.start_scenario(Scenario::from_toml(DEMO_SCENARIO, None)?)?;
    let call_id = engine
        .join(meeting["join_url"].as_str().unwrap_or_default())
        .await?;
    println!("joined {call_id}");
    let mut plays = 0;
    loop {
        let play = match events.recv().await? {
            EngineEvent::MediaReady { call_id: c } if c == call_id => true,
            EngineEvent::Tone { call_id: c, event } if c == call_id => {
                println!("DTMF key {event}: playing the prompt again");
                true
            }
            EngineEvent::PlaybackFinished {
                call_id: c,
                id,
                outcome,
            } if c == call_id => {
                println!("prompt {id:?} finished: {outcome:?}");
                if plays >= 2 {
                    engine.hang_up(&call_id).await;
                }
                false
            }
            EngineEvent::CallEnded { call_id: c } if c == call_id => break,
            _ => false,
        };
        if play {
            let p = engine.play_wav(&call_id, &prompt).await?;
            plays += 1;
            println!(
                "playing {} ({:.1} s) as {:?}",
                prompt.display(),
                p.duration.as_secs_f64(),
                p.id
            );
        }
    }
    engine.shutdown(Duration::from_secs(1)).await;
    println!(
        "what the meeting heard: {}/emulator-received/bot-audio-{call_id}.wav",
        out.display()
    );
    Ok(())
}
