//! A transcription bot on the mediabot library: the engine streams each speaker's 16 kHz audio
//! with speaker identity and utterance boundaries to a WebSocket (the protocol in
//! `docs/transcription-protocol.md`). Here a tiny local WebSocket server stands in for the speech
//! service and prints what a recognizer would receive; pass a `ws://` URL to use your own.
//!
//! ```sh
//! cargo run --example transcription_bot -- [ws://your-asr/stream]
//! ```

use std::time::Duration;

use futures::StreamExt;
use mediabot::demo::{DEMO_SCENARIO, start_local};
use mediabot_emulator::Scenario;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = match std::env::args().nth(1) {
        Some(u) => u,
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("ws://{}/asr", listener.local_addr()?);
            tokio::spawn(print_feed(listener));
            url
        }
    };
    let out = std::env::temp_dir().join("transcription-bot");
    let (emulator, engine) = start_local(&out, |cfg| {
        cfg.recording.enabled = false; // 16 kHz pipeline: Opus decodes straight to 16 kHz
        cfg.transcription.file_dir = None;
        cfg.transcription.websocket_url = Some(url.clone());
    })
    .await?;
    let meeting = emulator.start_scenario(Scenario::from_toml(DEMO_SCENARIO, None)?)?;
    let call_id = engine
        .join(meeting["join_url"].as_str().unwrap_or_default())
        .await?;
    println!("joined {call_id}; streaming to {url}");
    while !engine.finished_calls().iter().any(|c| c.call_id == call_id) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    engine.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// The stand-in speech service: prints control messages and a count of audio per speaker.
async fn print_feed(listener: tokio::net::TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            continue;
        };
        let mut frames = std::collections::BTreeMap::<u32, u64>::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => println!("asr <- {t}"),
                Message::Binary(b) if b.len() >= 12 => {
                    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    *frames.entry(id).or_default() += 1;
                }
                _ => {}
            }
        }
        for (id, n) in frames {
            println!(
                "asr: source {id}: {n} frames of 20 ms ({:.1} s)",
                n as f64 / 50.0
            );
        }
    }
}
