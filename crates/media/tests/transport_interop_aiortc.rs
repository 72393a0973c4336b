//! Interop with aiortc (PyPI), a WebRTC stack no one here wrote: it pushes two known chirps on
//! two SSRCs over WHIP to our server; each stream decodes to its own chirp (cross-correlation)
//! at the right length. A missing or failing aiortc fails this test.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/audio.rs"]
mod audio;
#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::path::PathBuf;
use std::time::Duration;

use mediabot_media::transport::server::TransportStats;
use mediabot_media::transport::{CallId, CloseReason, MediaServerConfig};
use transport_common::{Harness, Seen};

const SECONDS: f32 = 3.0;
const SSRCS: [u32; 2] = [0x1111_0001, 0x2222_0002];

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python");
    assert!(
        p.exists(),
        "aiortc venv missing at {} (run scripts/setup-interop.sh)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_two_speakers_arrive_intact() {
    let h = Harness::start_with(MediaServerConfig {
        loopback_peers_only: true,
        handshake_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let call = CallId::new("aiortc-call");
    let blob = h.whip.mint_blob(&call).blob;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transport_fixtures/aiortc_whip.py");
    let child = tokio::process::Command::new(python())
        .arg(script)
        .arg(&blob.whip)
        .arg(&blob.token)
        .arg(SECONDS.to_string())
        .arg(SSRCS[0].to_string())
        .arg(SSRCS[1].to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), child)
        .await
        .expect("aiortc did not finish in 150 s")
        .expect("aiortc could not start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aiortc failed: {}\n{stdout}\n{stderr}\nserver: {:#?}",
        out.status,
        h.media.stats()
    );
    assert!(stdout.contains("aiortc: DELETE 200"), "{stdout}\n{stderr}");

    let seen = h.wait_for(|s: &Seen| !s.closed.is_empty()).await;
    assert!(
        seen.sender_reports >= 2,
        "aiortc's sender reports reach the handler"
    );
    // aiortc only sends, so what we sent back on RTCP are receiver reports (about 1/s).
    let rtcp_sent = TransportStats::get(&h.media.stats().rtcp_sent);
    assert!(rtcp_sent >= 2, "receiver reports sent: {rtcp_sent}");
    // aiortc read the bot's reception reports: a block for each of its two senders, no loss,
    // and where its round trip could be taken (the block's LSR is its last SR), a sane one.
    let remote: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("aiortc: remote-inbound "))
        .collect();
    println!("aiortc's view of the bot's reports: {remote:?}");
    assert_eq!(remote.len(), 2, "{stdout}");
    for r in &remote {
        assert!(r.starts_with("lost=0 "), "{r}");
        if let Some(rtt) = r.split("rtt=").nth(1).and_then(|v| v.parse::<f64>().ok()) {
            assert!((0.0..1.0).contains(&rtt), "{r}");
        }
    }
    // aiortc offers `a=setup:actpass`: the session ran on the direct media plane.
    assert_eq!(TransportStats::get(&h.media.stats().direct_sessions), 1);
    assert_eq!(seen.closed[0].1, CloseReason::Requested);
    for (k, ssrc) in SSRCS.iter().enumerate() {
        let packets: Vec<_> = seen.rtp.iter().filter(|p| p.ssrc == *ssrc).collect();
        let pcm = audio::decode_stream(&packets);
        // The chirp lasts SECONDS; silence follows until the DELETE.
        let loud = audio::loud_blocks(&pcm, 0.05) as f32 * 0.02;
        assert!(
            (loud - SECONDS).abs() < 0.3,
            "ssrc {ssrc}: {loud} s of signal, want {SECONDS}"
        );
        let template = audio::chirp(k, 0, audio::RATE / 4);
        let other = audio::chirp(1 - k, 0, audio::RATE / 4);
        let (c, lag) = audio::best_correlation(&pcm, &template, 4_000);
        let (c_other, _) = audio::best_correlation(&pcm, &other, 4_000);
        eprintln!(
            "ssrc {ssrc:#x}: {} packets, corr {c:.3} at lag {lag}, other {c_other:.3}, {loud} s",
            packets.len()
        );
        assert!(c > 0.8, "ssrc {ssrc}: correlation with its chirp {c}");
        assert!(
            c_other < 0.5,
            "ssrc {ssrc}: looks like the other speaker ({c_other})"
        );
    }
    h.media.shutdown().await;
}
