//! Setup/teardown does not leak: 1,000 negotiated sessions opened and closed, plus full
//! ICE/DTLS sessions over loopback opened, used and deleted, leave the server's tables empty,
//! every session reported closed, and resident memory flat.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use mediabot_media::transport::server::ServerSizes;
use mediabot_media::transport::{CallId, MediaServerConfig};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use transport_common::{Harness, Seen};

/// An offer as a real WebRTC stack makes it (for negotiation-only cycles).
fn offer_sdp() -> String {
    let mut me = rtc::peer_connection::configuration::media_engine::MediaEngine::default();
    me.register_default_codecs().unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .build(Instant::now())
        .unwrap();
    pc.add_transceiver_from_kind(
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .unwrap();
    let offer = pc.create_offer(None).unwrap();
    pc.set_local_description(Instant::now(), offer).unwrap();
    pc.local_description().unwrap().sdp
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cycles_leave_nothing_behind() {
    let h = Harness::start_with(MediaServerConfig::default()).await;
    let offer = offer_sdp();
    let cycle = |i: usize| {
        let media = h.media.clone();
        let offer = offer.clone();
        async move {
            let s = media
                .open_session(CallId::new(format!("c{i}")), offer)
                .await
                .unwrap();
            assert!(s.answer_sdp.contains("a=ice-lite"));
            assert!(media.close_session(s.id).await);
        }
    };
    for i in 0..100 {
        cycle(i).await;
    }
    let warm = rss_kib();
    let t0 = Instant::now();
    for i in 100..1000 {
        cycle(i).await;
    }
    let per_cycle = t0.elapsed() / 900;
    let grown = rss_kib().saturating_sub(warm);
    eprintln!("negotiation cycles: {per_cycle:?} each, rss growth over 900: {grown} KiB");
    assert!(grown < 16 * 1024, "rss grew {grown} KiB over 900 cycles");

    // Full sessions: ICE + DTLS + SRTP, a few packets, DELETE.
    for i in 0..30u16 {
        let blob = h.whip.mint_blob(&CallId::new(format!("full{i}"))).blob;
        let mut c = WhipClientSession::connect_blob(
            &blob,
            WhipClientConfig {
                ssrcs: vec![u32::from(i) + 1],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        c.wait_connected(Duration::from_secs(15)).await.unwrap();
        c.send_rtp(OutboundRtp {
            ssrc: u32::from(i) + 1,
            sequence: i,
            timestamp: 0,
            marker: true,
            payload_type: None,
            audio_level: None,
            payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
        })
        .unwrap();
        let want = usize::from(i) + 1;
        h.wait_for(|s: &Seen| s.rtp.len() == want).await;
        assert_eq!(c.close().await.unwrap(), 200);
    }
    let seen = h.wait_for(|s: &Seen| s.closed.len() == 1030).await;
    assert_eq!(seen.opened.len(), 1030);
    assert_eq!(
        h.media.sizes().await.unwrap(),
        ServerSizes {
            sessions: 0,
            ufrags: 0,
            addrs: 0
        }
    );
    assert_eq!(h.whip.session_count(), 0);
    h.media.shutdown().await;
}

/// The soak version: 1,000 *full* sessions (WHIP, ICE, DTLS, SRTP, a packet, DELETE), with
/// resident memory measured after a warm-up. Minutes long, so it is run by hand:
/// `cargo test -p mediabot-media --release --test transport_cycles -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: about 1,000 full handshakes; run by hand in release"]
async fn thousand_full_sessions_leave_nothing_behind() {
    let h = Harness::start_with(MediaServerConfig::default()).await;
    let full = |i: u32| {
        let h = &h;
        async move {
            let blob = h.whip.mint_blob(&CallId::new(format!("soak{i}"))).blob;
            let mut c = WhipClientSession::connect_blob(
                &blob,
                WhipClientConfig {
                    ssrcs: vec![i + 1],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            c.wait_connected(Duration::from_secs(15)).await.unwrap();
            c.send_rtp(OutboundRtp {
                ssrc: i + 1,
                sequence: 1,
                timestamp: 0,
                marker: true,
                payload_type: None,
                audio_level: None,
                payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
            })
            .unwrap();
            h.wait_for(|s: &Seen| s.rtp.len() as u32 == i + 1).await;
            assert_eq!(c.close().await.unwrap(), 200);
        }
    };
    for i in 0..100 {
        full(i).await;
    }
    let warm = rss_kib();
    let t0 = Instant::now();
    for i in 100..1000 {
        full(i).await;
    }
    let per_cycle = t0.elapsed() / 900;
    let grown = rss_kib().saturating_sub(warm);
    eprintln!("full session cycles: {per_cycle:?} each, rss growth over 900: {grown} KiB");
    let seen = h.wait_for(|s: &Seen| s.closed.len() == 1000).await;
    assert_eq!(seen.opened.len(), 1000);
    assert_eq!(
        h.media.sizes().await.unwrap(),
        ServerSizes {
            sessions: 0,
            ufrags: 0,
            addrs: 0
        }
    );
    assert_eq!(h.whip.session_count(), 0);
    assert!(
        grown < 16 * 1024,
        "rss grew {grown} KiB over 900 full sessions"
    );
    h.media.shutdown().await;
}
