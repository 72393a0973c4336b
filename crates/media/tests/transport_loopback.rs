//! Our WHIP client → our WHIP endpoint + media server on loopback: two calls share the one UDP
//! port at once, every packet arrives on the right session with the right SSRC, a token works
//! once, and DELETE frees the session.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::time::Duration;

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use mediabot_media::transport::server::{MediaServerConfig, TransportStats};
use mediabot_media::transport::{AudioLevel, CallId, CloseReason, TonePhase};
use transport_common::{Harness, Seen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_share_one_port_and_keep_their_ssrcs() {
    two_calls(true, None).await;
}

/// The same through the WebRTC stack's own DTLS-SRTP (`direct_media = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_on_the_stack_path() {
    two_calls(false, None).await;
}

/// The same with offers that insist on being the DTLS client (`a=setup:active`): the bot's
/// direct media plane is then the DTLS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_with_the_bot_as_dtls_server() {
    two_calls(
        true,
        Some(|o: String| o.replace("a=setup:actpass", "a=setup:active")),
    )
    .await;
}

async fn two_calls(direct_media: bool, offer_rewrite: Option<fn(String) -> String>) {
    let h = Harness::start_with(MediaServerConfig {
        direct_media,
        ..Default::default()
    })
    .await;
    let call_a = CallId::new("call-a");
    let call_b = CallId::new("call-b");
    let blob_a = h.whip.mint_blob(&call_a);
    let blob_b = h.whip.mint_blob(&call_b);

    let cfg = |ssrcs: Vec<u32>| WhipClientConfig {
        ssrcs,
        offer_rewrite,
        ..Default::default()
    };
    let mut a = WhipClientSession::connect_blob(&blob_a.blob, cfg(vec![1111, 2222]))
        .await
        .unwrap();
    let mut b = WhipClientSession::connect_blob(&blob_b.blob, cfg(vec![3333]))
        .await
        .unwrap();
    a.wait_connected(Duration::from_secs(15)).await.unwrap();
    b.wait_connected(Duration::from_secs(15)).await.unwrap();
    assert_eq!(h.media.session_count().await.unwrap(), 2);

    const N: u16 = 40;
    for seq in 0..N {
        for (client, ssrc) in [(&a, 1111u32), (&a, 2222), (&b, 3333)] {
            let mut payload = ssrc.to_be_bytes().to_vec();
            payload.extend_from_slice(&seq.to_be_bytes());
            client
                .send_rtp(OutboundRtp {
                    ssrc,
                    sequence: seq,
                    timestamp: u32::from(seq) * 960,
                    marker: seq == 0,
                    payload_type: None,
                    audio_level: Some(AudioLevel {
                        level_dbov: 20,
                        voice: true,
                    }),
                    payload: Bytes::from(payload),
                })
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // RFC 4733: digit 5, three packets of one event, the last one repeated with E set.
    let tel = a.telephone_event_payload_type().unwrap();
    for (i, end) in [(0u16, false), (1, false), (2, true), (3, true), (4, true)] {
        let dur = 160 * (i.min(2) + 1);
        let payload = vec![
            5,
            if end { 0x80 | 10 } else { 10 },
            (dur >> 8) as u8,
            dur as u8,
        ];
        a.send_rtp(OutboundRtp {
            ssrc: 1111,
            sequence: N + i,
            timestamp: 99_000,
            marker: i == 0,
            payload_type: Some(tel),
            audio_level: None,
            payload: Bytes::from(payload),
        })
        .unwrap();
    }

    let seen = h
        .wait_for(|s: &Seen| s.rtp.len() >= 3 * usize::from(N) && s.tones.len() >= 2)
        .await;
    let sess_a = seen.opened[&call_a];
    let sess_b = seen.opened[&call_b];
    assert_ne!(sess_a, sess_b);
    for ssrc in [1111u32, 2222, 3333] {
        let got: Vec<_> = seen.rtp.iter().filter(|p| p.ssrc == ssrc).collect();
        assert_eq!(got.len(), usize::from(N), "ssrc {ssrc}");
        let want_session = if ssrc == 3333 { sess_b } else { sess_a };
        for p in &got {
            assert_eq!(p.session, want_session, "ssrc {ssrc} on the wrong session");
            assert_eq!(&p.payload[..4], &ssrc.to_be_bytes(), "payload intact");
            assert_eq!(
                p.audio_level,
                Some(AudioLevel {
                    level_dbov: 20,
                    voice: true
                })
            );
        }
    }
    assert_eq!(
        seen.tones.len(),
        2,
        "one start and one end: {:?}",
        seen.tones
    );
    assert_eq!(seen.tones[0].phase, TonePhase::Start);
    assert_eq!(seen.tones[1].phase, TonePhase::End);
    assert_eq!(seen.tones[1].event, 5);

    // The token of call A is spent: a second POST with it is refused.
    let reuse = WhipClientSession::connect_blob(&blob_a.blob, cfg(vec![9]))
        .await
        .unwrap_err();
    assert!(reuse.to_string().contains("403"), "{reuse}");

    // DELETE frees the session; the other call keeps going.
    assert_eq!(a.close().await.unwrap(), 200);
    let seen = h.wait_for(|s: &Seen| !s.closed.is_empty()).await;
    assert_eq!(seen.closed, vec![(sess_a, CloseReason::Requested)]);
    assert_eq!(h.media.session_count().await.unwrap(), 1);
    assert_eq!(h.whip.session_count(), 1);
    assert_eq!(b.close().await.unwrap(), 200);
    assert_eq!(h.media.session_count().await.unwrap(), 0);
    let direct = TransportStats::get(&h.media.stats().direct_sessions);
    assert_eq!(direct, if direct_media { 2 } else { 0 });
    h.media.shutdown().await;
}
