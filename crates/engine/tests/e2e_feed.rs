//! Proves the live transcription feed end to end: a WebSocket server standing in for a speech
//! service receives, for an emulated meeting, the session, the speakers by name, utterance
//! boundaries and each speaker's 16 kHz audio at the right timeline positions.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::time::Duration;

use futures::StreamExt;
use mediabot::demo::start_local;
use mediabot::sinks::transcription::parse_audio_header;
use mediabot_emulator::Scenario;
use tokio_tungstenite::tungstenite::Message;

const MEETING: &str = r#"
name = "feed"
end_at = "8s"

[meeting]
subject = "feed"
join_meeting_id = "141421356237"
passcode = "feed"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 31 }]

[[participant]]
handle = "bob"
display_name = "Bob Builder"
join_at = "0s"
speak = [{ at = "4s", duration = "2s", synth = 32 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_service_receives_speakers_boundaries_and_audio() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/asr", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut path = String::new();
        let ws = tokio_tungstenite::accept_hdr_async(
            tcp,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                path = req.uri().to_string();
                Ok(resp)
            },
        )
        .await
        .unwrap();
        let (_, mut rx) = ws.split();
        let mut got = Vec::new();
        while let Some(Ok(m)) = rx.next().await {
            let stop = matches!(&m, Message::Text(t) if t.contains("session.stop"));
            got.push(m);
            if stop {
                break;
            }
        }
        (path, got)
    });

    let dir = std::env::temp_dir().join(format!("mediabot-feed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.transcription.websocket_url = Some(url.clone());
        c.transcription.file_dir = None;
        c.recording.enabled = false;
    })
    .await
    .unwrap();
    let info = emulator
        .start_scenario(Scenario::from_toml(MEETING, None).unwrap())
        .unwrap();
    let call_id = engine
        .join(info["join_url"].as_str().unwrap())
        .await
        .unwrap();
    let (path, msgs) = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap();
    engine.shutdown(Duration::from_secs(1)).await;

    assert!(path.contains(&format!("callId={call_id}")), "{path}");
    let texts: Vec<serde_json::Value> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(texts[0]["type"], "session.start");
    assert_eq!(texts[0]["audio"]["sampleRate"], 16000);
    let source_of = |name: &str| {
        texts
            .iter()
            .filter(|t| t["displayName"] == name)
            .find_map(|t| t["sourceId"].as_u64())
            .unwrap_or_else(|| panic!("{name} announced: {texts:?}"))
    };
    let (ada, bob) = (source_of("Ada Lovelace"), source_of("Bob Builder"));
    let starts: Vec<(u64, u64)> = texts
        .iter()
        .filter(|t| t["type"] == "utterance.start")
        .map(|t| {
            (
                t["sourceId"].as_u64().unwrap(),
                t["position"].as_u64().unwrap(),
            )
        })
        .collect();
    let ada_start = starts.iter().find(|s| s.0 == ada).unwrap().1;
    let bob_start = starts.iter().find(|s| s.0 == bob).unwrap().1;
    // Bob spoke 3 s after Ada: 48,000 samples at 16 kHz, within the VAD's granularity (the
    // synthesized speech opens with a short pause now and then).
    let d = bob_start as i64 - ada_start as i64;
    assert!(
        (d - 48_000).abs() < 16_000,
        "utterance offsets {ada_start} {bob_start}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| t["type"] == "utterance.end")
            .count(),
        starts.len()
    );

    // Audio: 20 ms frames of 320 samples, per speaker in increasing positions.
    let mut last: std::collections::HashMap<u32, u64> = Default::default();
    let mut frames = 0;
    for m in &msgs {
        if let Message::Binary(b) = m {
            let (id, pos, n) = parse_audio_header(b).unwrap();
            assert_eq!(n, 320);
            if let Some(prev) = last.insert(id, pos) {
                assert!(pos > prev, "positions increase per speaker");
            }
            frames += 1;
        }
    }
    // Two speakers x 2 s of speech = 200 frames (a stream carries frames while it sends).
    assert!(frames >= 180, "about 2 s of frames per speaker: {frames}");
}
