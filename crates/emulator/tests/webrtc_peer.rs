//! Proves the emulator's media side over loopback: from a bot's blob, the WHIP peer connects to a
//! real mediabot media server, streams the scenario's speaker with SSRC = sourceId, and saves
//! what the bot sends back into the call, decoded, so echo and playback can be checked.
#![cfg(feature = "webrtc")]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mediabot_emulator::media::{
    AudioSource, MediaBlob, MediaEvent, MediaParticipant, MediaPeerFactory, MediaSession,
    SpeechSegment,
};
use mediabot_emulator::scenario::NetworkSpec;
use mediabot_emulator::webrtc_peer::WhipMedia;
use mediabot_media::transport::whip::{self, WhipConfig, WhipState};
use mediabot_media::transport::{
    CallId, InboundRtp, MediaHandler, MediaServer, MediaServerConfig, MediaServerHandle,
    PlaybackWriter, SessionId,
};

#[derive(Default)]
struct Seen {
    packets_by_ssrc: std::collections::HashMap<u32, u64>,
    seqs: Vec<u16>,
    writers: Vec<PlaybackWriter>,
}

struct Handler(Arc<Mutex<Seen>>);

impl MediaHandler for Handler {
    fn on_rtp(&mut self, p: &InboundRtp<'_>) {
        let mut s = self.0.lock().unwrap();
        *s.packets_by_ssrc.entry(p.ssrc.0).or_default() += 1;
        s.seqs.push(p.sequence);
    }
    fn on_playback_ready(&mut self, _s: SessionId, _c: &CallId, writer: PlaybackWriter) {
        self.0.lock().unwrap().writers.push(writer);
    }
}

/// A mediabot media server with its WHIP endpoint on loopback, recording what arrives.
async fn media_server() -> (
    Arc<Mutex<Seen>>,
    MediaServerHandle,
    WhipState<MediaServerHandle>,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = MediaServer::start(
        MediaServerConfig {
            loopback_peers_only: true,
            ..MediaServerConfig::default()
        },
        Box::new(Handler(Arc::clone(&seen))),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let whip_state = WhipState::new(
        WhipConfig {
            public_base_url: base,
            ..WhipConfig::default()
        },
        server.clone(),
    );
    let app = whip::router(whip_state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, server, whip_state)
}

fn goertzel(x: &[i16], f: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f / 48_000.0;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_streams_the_speaker_and_saves_the_bots_audio() {
    let (seen, _server, whip_state) = media_server().await;

    let minted = whip_state.mint_blob(&CallId::new("call-9"));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let session = MediaSession {
        call_id: "call-9".into(),
        blob: MediaBlob::decode(&minted.encoded).unwrap(),
        participants: vec![MediaParticipant {
            participant_id: "p-11".into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            source_id: 11,
            muted: false,
            in_lobby: false,
        }],
        bot_source_id: 1,
        speech: vec![SpeechSegment {
            handle: "ada".into(),
            source_id: 11,
            start_ms: 0,
            duration_ms: 2000,
            audio: AudioSource::Synth(3),
        }],
        established_at_ms: now_ms,
        network: None,
    };
    let dir = std::env::temp_dir().join(format!("mediabot-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let factory = WhipMedia {
        save_dir: Some(dir.clone()),
        ..WhipMedia::default()
    };
    let mut peer = factory.start(session);

    // Once the session is up, the bot plays 1 s of 440 Hz into the call.
    let t = tokio::time::Instant::now();
    loop {
        {
            let mut s = seen.lock().unwrap();
            if let Some(w) = s.writers.first_mut() {
                let tone: Vec<i16> = (0..48_000)
                    .map(|i| {
                        (8000.0
                            * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 48_000.0).sin())
                            as i16
                    })
                    .collect();
                assert_eq!(w.write(&tone), tone.len(), "the playback ring takes 1 s");
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no playback stream; peer: {}",
            peer.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    peer.handle_event(MediaEvent::Ended);

    let file = dir.join("bot-audio-call-9.wav");
    let t = tokio::time::Instant::now();
    let samples: Vec<i16> = loop {
        if let Ok(r) = hound::WavReader::open(&file)
            && r.duration() > 0
        {
            break r.into_samples().map(|s| s.unwrap()).collect();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "bot audio not saved; peer: {}",
            peer.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The speaker's stream arrived with SSRC = sourceId, at 50 packets/s for about 2 s.
    let got = seen
        .lock()
        .unwrap()
        .packets_by_ssrc
        .get(&11)
        .copied()
        .unwrap_or(0);
    assert!(got >= 60, "packets from sourceId 11: {got}");
    // The bot's tone is in the saved file: strong at 440 Hz, nothing at 1 kHz.
    let best = samples
        .chunks(4800)
        .map(|c| (goertzel(c, 440.0), goertzel(c, 1000.0)))
        .fold((0.0f64, 0.0f64), |a, b| if b.0 > a.0 { b } else { a });
    println!(
        "saved {} samples; 440 Hz {:.0}, 1 kHz {:.0}; peer {}",
        samples.len(),
        best.0,
        best.1,
        peer.status()
    );
    assert!(
        best.0 > 20.0 * best.1.max(1.0),
        "440 Hz tone saved: {best:?}"
    );
    assert!(samples.len() >= 48_000, "{}", samples.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impairment_model_loses_duplicates_and_reorders_packets() {
    let (seen, server, whip_state) = media_server().await;
    let minted = whip_state.mint_blob(&CallId::new("call-imp"));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let session = MediaSession {
        call_id: "call-imp".into(),
        blob: MediaBlob::decode(&minted.encoded).unwrap(),
        participants: vec![],
        bot_source_id: 1,
        speech: vec![SpeechSegment {
            handle: "x".into(),
            source_id: 21,
            start_ms: 0,
            duration_ms: 4000,
            audio: AudioSource::Synth(9),
        }],
        established_at_ms: now_ms,
        // As a scenario's `[network]` section delivers it; it overrides the factory's default.
        network: Some(NetworkSpec {
            loss: 0.1,
            burst_enter: 0.05,
            burst_exit: 0.5,
            burst_loss: 0.9,
            jitter_ms: 80,
            duplicate: 0.1,
            seed: 42,
        }),
    };
    let factory = WhipMedia::default();
    let mut peer = factory.start(session);
    tokio::time::sleep(Duration::from_millis(6000)).await;
    peer.handle_event(MediaEvent::Ended);
    let seqs = seen.lock().unwrap().seqs.clone();
    let distinct: std::collections::HashSet<u16> = seqs.iter().copied().collect();
    let dups = seqs.len() - distinct.len();
    let reordered = seqs
        .windows(2)
        .filter(|w| w[1].wrapping_sub(w[0]) > 0x8000)
        .count();
    // 200 packets were encoded (4 s); about 10 % + bursts are lost.
    println!(
        "arrived {} ({} distinct), duplicates {dups}, out of order {reordered}; peer {}",
        seqs.len(),
        distinct.len(),
        peer.status()
    );
    assert!(
        (100..195).contains(&distinct.len()),
        "losses: {} of 200 arrived",
        distinct.len()
    );
    // Duplicates are the same SRTP index twice: the receiver's replay protection drops them
    // (as it would duplicated datagrams on a real network), and counts them.
    let replays =
        mediabot_media::transport::server::TransportStats::get(&server.stats().srtp_rejected);
    println!("srtp replays rejected: {replays}");
    assert_eq!(dups, 0, "no duplicate reaches the handler");
    assert!(
        replays >= 5,
        "duplicates sent and rejected as replays: {replays}"
    );
    assert!(reordered >= 5, "reordering: {reordered}");
}
