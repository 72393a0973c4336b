//! The send path end to end: PCM the app writes for a call comes out at the far side (our WHIP
//! client) as paced Opus RTP with continuous sequence numbers and timestamps, decodes to the
//! same audio, turns to silence (still sent) when the app stops, carries RFC 4733 DTMF, and is
//! accompanied by RTCP sender reports. A sendonly offer (a pure WHIP publisher) gets no stream.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/audio.rs"]
mod audio;
#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::time::Duration;

use mediabot_media::transport::client::{ReceivedRtp, WhipClientConfig, WhipClientSession};
use mediabot_media::transport::{CallId, DtmfRequest, MediaServerConfig, SendConfig};
use transport_common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_pcm_reaches_the_far_side_paced_and_intact() {
    send_scenario(true).await;
}

/// The same through the WebRTC stack's own DTLS-SRTP (`direct_media = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_pcm_reaches_the_far_side_on_the_stack_path() {
    send_scenario(false).await;
}

async fn send_scenario(direct_media: bool) {
    let h = Harness::start_with(MediaServerConfig {
        send: SendConfig {
            ring_ms: 3000,
            ..Default::default()
        },
        direct_media,
        ..Default::default()
    })
    .await;
    let blob = h.whip.mint_blob(&CallId::new("send")).blob;
    let mut c = WhipClientSession::connect_blob(&blob, WhipClientConfig::default())
        .await
        .unwrap();
    c.wait_connected(Duration::from_secs(15)).await.unwrap();

    // 2 s of the chirp, written at once (the ring holds 3 s); then nothing.
    let chirp = audio::chirp(0, 0, 2 * audio::RATE);
    let pcm: Vec<i16> = chirp.iter().map(|s| (s * 32767.0) as i16).collect();
    {
        let mut writers = h.writers.lock().unwrap();
        assert_eq!(
            writers.len(),
            1,
            "a sendrecv offer gets one playback stream"
        );
        assert_eq!(writers[0].1.write(&pcm), pcm.len());
    }
    // Collect 3 s of packets; DTMF '7' for 100 ms after 2.5 s.
    let mut got: Vec<ReceivedRtp> = Vec::new();
    let start = tokio::time::Instant::now();
    let mut dtmf_sent = false;
    while start.elapsed() < Duration::from_secs(3) {
        if !dtmf_sent && start.elapsed() > Duration::from_millis(2500) {
            let mut writers = h.writers.lock().unwrap();
            assert!(writers[0].1.send_dtmf(DtmfRequest {
                event: 7,
                duration_ms: 100,
                volume: 10
            }));
            dtmf_sent = true;
        }
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(100), c.recv_rtp()).await {
            got.push(p);
        }
    }
    let opus_pt = c.opus_payload_type();
    let tel_pt = c.telephone_event_payload_type().unwrap();
    let audio_pkts: Vec<&ReceivedRtp> = got.iter().filter(|p| p.payload_type == opus_pt).collect();
    let tones: Vec<&ReceivedRtp> = got.iter().filter(|p| p.payload_type == tel_pt).collect();

    // Paced at 50 packets/s, continuous sequence numbers across audio and tones.
    let n = got.len();
    assert!((140..=155).contains(&n), "{n} packets in 3 s");
    for w in got.windows(2) {
        assert_eq!(
            w[1].sequence,
            w[0].sequence.wrapping_add(1),
            "sequence continuous"
        );
    }
    for w in audio_pkts.windows(2) {
        let step = w[1].timestamp.wrapping_sub(w[0].timestamp);
        assert_eq!(step % 960, 0, "timestamps advance by whole 20 ms frames");
    }
    let span = got.last().unwrap().received_at - got.first().unwrap().received_at;
    assert!(
        span > Duration::from_millis(2700),
        "paced over real time, not burst: {span:?}"
    );

    // The audio decodes to the chirp, then silence.
    let rtp: Vec<transport_common::Rtp> = audio_pkts
        .iter()
        .map(|p| transport_common::Rtp {
            session: mediabot_media::transport::SessionId(0),
            ssrc: p.ssrc,
            sequence: p.sequence,
            timestamp: p.timestamp,
            audio_level: None,
            payload: p.payload.to_vec(),
            received_at: p.received_at,
        })
        .collect();
    let refs: Vec<&transport_common::Rtp> = rtp.iter().collect();
    let decoded = audio::decode_stream(&refs);
    // The first packets may be lost while the client finishes DTLS, so the phase of the chirp
    // in the decoded audio is not known: search a whole period (the chirp repeats every second).
    let template = audio::chirp(0, 0, audio::RATE / 4);
    let (c_chirp, lag) = audio::best_correlation_coarse(&decoded, &template, audio::RATE, 4);
    eprintln!("send path: {n} packets, corr {c_chirp:.3} at lag {lag}");
    assert!(c_chirp > 0.8, "decoded audio is the app's chirp: {c_chirp}");
    let loud = audio::loud_blocks(&decoded, 0.05) as f32 * 0.02;
    assert!(
        (loud - 2.0).abs() < 0.2,
        "{loud} s of signal, app wrote 2 s"
    );
    assert!(
        decoded.len() as f32 / audio::RATE as f32 > 2.4,
        "silence keeps flowing after the app stops"
    );

    // DTMF: one event, one timestamp, marker first, end bit on the last three.
    assert!(
        tones.len() >= 7,
        "5 frames + 2 extra end packets, got {}",
        tones.len()
    );
    assert!(
        tones
            .iter()
            .all(|t| t.timestamp == tones[0].timestamp && t.payload[0] == 7)
    );
    assert!(tones[0].marker);
    let ends = tones.iter().filter(|t| t.payload[1] & 0x80 != 0).count();
    assert_eq!(ends, 3);

    // RTCP sender reports went out alongside (about once a second) and reached the client.
    let rtcp = mediabot_media::transport::server::TransportStats::get(&h.media.stats().rtcp_sent);
    assert!(rtcp >= 2, "srtcp sent: {rtcp}");
    let srs = c
        .stats()
        .sender_reports
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(srs >= 2, "sender reports received: {srs}");
    // Both directions ran on the plane asked for.
    assert_eq!(
        mediabot_media::transport::server::TransportStats::get(&h.media.stats().direct_sessions),
        u64::from(direct_media)
    );
    c.close().await.unwrap();
    h.media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendonly_publisher_gets_no_playback() {
    let h = Harness::start().await;
    let call = CallId::new("pub");
    // A WHIP publisher offer like aiortc's or a browser's: sendonly.
    let blob = h.whip.mint_blob(&call).blob;
    let cfg = WhipClientConfig {
        offer_rewrite: Some(|o: String| o.replace("a=sendrecv", "a=sendonly")),
        ..Default::default()
    };
    let mut c = WhipClientSession::connect_blob(&blob, cfg).await.unwrap();
    c.wait_connected(Duration::from_secs(15)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.writers.lock().unwrap().is_empty());
    assert!(c.try_recv_rtp().is_none());
    c.close().await.unwrap();
    h.media.shutdown().await;
}
