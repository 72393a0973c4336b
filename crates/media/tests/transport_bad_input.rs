//! Hostile and broken input to the media server is dropped and counted, and established
//! sessions are unaffected: garbage and unknown datagrams, media from addresses that did not
//! pass ICE, forged DTLS fingerprints, SRTP with bad auth tags and replays, RTCP floods, SSRC
//! floods, bad offers.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use mediabot_media::transport::server::{SessionError, TransportStats};
use mediabot_media::transport::{CallId, CloseReason, MediaServerConfig};
use tokio::net::UdpSocket;
use transport_common::{Harness, Seen};

fn get(c: &AtomicU64) -> u64 {
    TransportStats::get(c)
}

async fn connected(h: &Harness, call: &str, ssrcs: Vec<u32>) -> WhipClientSession {
    let blob = h.whip.mint_blob(&CallId::new(call)).blob;
    let mut c = WhipClientSession::connect_blob(
        &blob,
        WhipClientConfig {
            ssrcs,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.wait_connected(Duration::from_secs(15)).await.unwrap();
    c
}

fn opus(ssrc: u32, seq: u16) -> OutboundRtp {
    OutboundRtp {
        ssrc,
        sequence: seq,
        timestamp: u32::from(seq) * 960,
        marker: false,
        payload_type: None,
        audio_level: None,
        payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_datagrams_are_dropped_and_counted() {
    let h = Harness::start().await;
    let server = h.media.local_addr();
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let st = h.media.stats();

    stray.send_to(&[0xff; 40], server).await.unwrap(); // no protocol
    stray.send_to(&vec![0x80; 1600], server).await.unwrap(); // oversize
    // STUN binding request for a ufrag no session has.
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[1; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"nobo:dyx");
    stray.send_to(&stun, server).await.unwrap();
    // A DTLS ClientHello-looking record and SRTP/SRTCP from an address that never did ICE.
    for first in [[22u8, 0xfe, 0xfd], [0x80, 111, 0], [0x80, 200, 0]] {
        let mut d = first.to_vec();
        d.resize(100, 7);
        for i in 0..50 {
            stray.send_to(&d, server).await.unwrap();
            if i % 10 == 9 {
                // Paced, so a busy machine's socket buffer cannot drop what we count.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    settle().await;
    assert_eq!(get(&st.unknown_kind_dropped), 1);
    assert_eq!(get(&st.oversize_dropped), 1);
    assert_eq!(get(&st.stun_unknown_dropped), 1);
    assert_eq!(get(&st.unauthenticated_dropped), 150);
    assert_eq!(get(&st.datagrams_out), 0, "nothing answered to strays");

    // The server still serves a real client afterwards.
    let c = connected(&h, "after-strays", vec![7]).await;
    c.send_rtp(opus(7, 1)).unwrap();
    h.wait_for(|s: &Seen| s.rtp.len() == 1).await;
    h.media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_only_from_the_address_that_passed_ice() {
    let h = Harness::start().await;
    let c = connected(&h, "ice-addr", vec![42]).await;
    let st = h.media.stats();
    let before = get(&st.unauthenticated_dropped);
    // Same SSRC, from another port: the RTP header is plausible but the source never did ICE.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42];
    rtp.resize(60, 1);
    other.send_to(&rtp, h.media.local_addr()).await.unwrap();
    settle().await;
    assert_eq!(get(&st.unauthenticated_dropped), before + 1);
    // The real client is unaffected.
    c.send_rtp(opus(42, 9)).unwrap();
    let seen = h.wait_for(|s: &Seen| !s.rtp.is_empty()).await;
    assert_eq!(seen.rtp.len(), 1);
    assert_eq!(seen.rtp[0].sequence, 9);
    h.media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_replay_and_rtcp_flood_are_dropped() {
    let h = Harness::start_with(MediaServerConfig {
        max_rtcp_per_second: 20,
        ..Default::default()
    })
    .await;
    let c = connected(&h, "attacks", vec![5]).await;
    for seq in 1..=5 {
        c.send_rtp(opus(5, seq)).unwrap();
    }
    h.wait_for(|s: &Seen| s.rtp.len() == 5).await;
    let st = h.media.stats();
    let rejected = get(&st.srtp_rejected);

    // Replay the last SRTP packet 10 times: SRTP replay protection refuses every copy.
    c.replay_last_rtp(10).unwrap();
    // SRTP with a forged auth tag (right SSRC, random payload and tag).
    let mut forged = vec![0x80, 111, 0, 50, 0, 0, 0x10, 0, 0, 0, 0, 5];
    forged.extend_from_slice(&[0xab; 40]);
    c.send_raw_datagram(Bytes::from(forged)).unwrap();
    // An SRTCP flood of garbage: beyond the rate limit it is not even decrypted.
    let mut rtcp = vec![0x81, 200, 0, 6, 0, 0, 0, 5];
    rtcp.resize(40, 0xcd);
    for _ in 0..200 {
        c.send_raw_datagram(Bytes::from(rtcp.clone())).unwrap();
    }
    settle().await;
    assert_eq!(
        h.seen.lock().unwrap().rtp.len(),
        5,
        "nothing forged or replayed delivered"
    );
    // 10 replays + 1 forged tag + the garbage SRTCP let through by the rate limit.
    assert!(get(&st.srtp_rejected) >= rejected + 11, "{st:#?}");
    assert!(
        get(&st.rtcp_rate_dropped) >= 150,
        "rtcp flood: {}",
        get(&st.rtcp_rate_dropped)
    );

    // The session still works.
    c.send_rtp(opus(5, 6)).unwrap();
    h.wait_for(|s: &Seen| s.rtp.len() == 6).await;
    h.media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrc_flood_is_bounded_per_session() {
    let h = Harness::start_with(MediaServerConfig {
        max_ssrcs_per_session: 3,
        ..Default::default()
    })
    .await;
    let ssrcs: Vec<u32> = (100..106).collect();
    let c = connected(&h, "flood", ssrcs.clone()).await;
    for seq in 1..=4u16 {
        for s in &ssrcs {
            c.send_rtp(opus(*s, seq)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle().await;
    let seen = h.seen.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<u32> = seen.rtp.iter().map(|p| p.ssrc).collect();
    assert_eq!(distinct.len(), 3, "{distinct:?}");
    assert_eq!(seen.rtp.len(), 12);
    assert_eq!(get(&h.media.stats().ssrc_limit_dropped), 12);
    h.media.shutdown().await;
}

fn forge_fingerprint(offer: String) -> String {
    offer
        .lines()
        .map(|l| {
            if l.starts_with("a=fingerprint:sha-256 ") {
                let mut hex: Vec<char> = l.chars().collect();
                let last = hex.len() - 1;
                hex[last] = if hex[last] == '0' { '1' } else { '0' };
                hex.into_iter().collect()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_fingerprint_never_connects() {
    let h = Harness::start_with(MediaServerConfig {
        handshake_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let blob = h.whip.mint_blob(&CallId::new("forged")).blob;
    let config = WhipClientConfig {
        ssrcs: vec![1],
        offer_rewrite: Some(forge_fingerprint),
        ..Default::default()
    };
    let mut c = WhipClientSession::connect_blob(&blob, config)
        .await
        .unwrap();
    let _ = c.wait_connected(Duration::from_secs(5)).await;
    let _ = c.send_rtp(opus(1, 1));
    let seen = h.wait_for(|s: &Seen| !s.closed.is_empty()).await;
    assert!(
        matches!(
            seen.closed[0].1,
            CloseReason::Failed | CloseReason::HandshakeTimeout
        ),
        "{:?}",
        seen.closed
    );
    assert!(
        seen.connected.is_empty(),
        "server must not accept the forged peer"
    );
    assert!(seen.rtp.is_empty());
    assert_eq!(
        h.whip.session_count(),
        0,
        "the WHIP endpoint forgot the session the server ended"
    );
    h.media.shutdown().await;
}

#[tokio::test]
async fn bad_offers_refused_by_the_real_server() {
    let h = Harness::start().await;
    let call = CallId::new("x");
    for offer in [
        "",
        "garbage",
        "v=0\r\na=fingerprint:sha-256 AA\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
        "v=0\r\na=fingerprint:sha-256 AA\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n",
        // Passes our pre-check but is not negotiable (no ICE credentials).
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AA\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n",
    ] {
        let r = h.media.open_session(call.clone(), offer.to_owned()).await;
        assert!(
            matches!(
                r,
                Err(SessionError::Offer(_) | SessionError::Negotiation(_))
            ),
            "{r:?}"
        );
    }
    assert_eq!(get(&h.media.stats().offers_rejected), 5);
    assert_eq!(h.media.session_count().await.unwrap(), 0);
    h.media.shutdown().await;
}
