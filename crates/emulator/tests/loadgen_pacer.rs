//! The load generator's media path end to end on loopback, without a bot process: the pacer
//! thread sends two streams through `WhipClientPeer` sessions (SRTP, `sendmmsg`) to a real
//! mediabot media server, which must receive every packet of both SSRCs in sequence.
#![cfg(feature = "webrtc")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediabot_emulator::loadgen::replay::{Packets, ReplayMedia};
use mediabot_emulator::media::MediaBlob;
use mediabot_media::transport::whip::{self, WhipConfig, WhipState};
use mediabot_media::transport::{CallId, InboundRtp, MediaHandler, MediaServer, MediaServerConfig};

struct Handler(Arc<Mutex<Vec<(u32, u16)>>>);

impl MediaHandler for Handler {
    fn on_rtp(&mut self, p: &InboundRtp<'_>) {
        self.0.lock().unwrap().push((p.ssrc.0, p.sequence));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacer_streams_reach_a_media_server_in_sequence() {
    let seen = Arc::new(Mutex::new(Vec::new()));
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

    let packets = Packets::encode_speech(1, 1, 32_000).unwrap();
    let media = ReplayMedia::new(packets, 2, 5).unwrap();
    let blob = MediaBlob::decode(&whip_state.mint_blob(&CallId::new("c1")).encoded).unwrap();
    let t0 = Instant::now();
    let session = media
        .connect_direct("c1", &blob.whip, &blob.token, vec![21, 22])
        .await
        .unwrap();
    eprintln!("WHIP + ICE + DTLS connected in {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(600)).await;
    session.close().await;
    let stats = media.stats();
    let sent = stats.packets_sent.load(Ordering::Relaxed);
    assert_eq!(stats.packets_refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.streams_active.load(Ordering::Relaxed), 0);
    // 600 ms of two 50 packet/s streams, give or take the phase and a loaded machine.
    assert!((30..=80).contains(&sent), "sent {sent}");
    assert_eq!(media.sent_for("c1"), sent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, sent, "every packet sent arrived");
    for ssrc in [21u32, 22] {
        let seqs: Vec<u16> = seen.iter().filter(|p| p.0 == ssrc).map(|p| p.1).collect();
        assert!(seqs.len() >= 10, "ssrc {ssrc}: {}", seqs.len());
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "ssrc {ssrc} in sequence: {seqs:?}"
        );
    }
    // Batching: never more sendmmsg calls than packets.
    assert!(stats.send_calls.load(Ordering::Relaxed) <= sent);
}
