//! Interop with headless Chromium (Debian's `chromium`): a local page captures a fake
//! microphone fed from a WAV of a known chirp and pushes it over WHIP with RTCPeerConnection;
//! the stream decodes to that chirp (cross-correlation), for the time the page sent it, with
//! RFC 6464 audio levels. A missing or failing Chromium fails this test.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/audio.rs"]
mod audio;
#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use mediabot_media::transport::{CallId, CloseReason, MediaServerConfig};
use tokio::io::AsyncReadExt;
use transport_common::Harness;

const PAGE: &str = include_str!("transport_fixtures/chromium_whip.html");
const SEND_SECONDS: f32 = 3.0;

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn chromium() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = PathBuf::from(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("chromium not found in PATH (run scripts/setup-interop.sh)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_fake_microphone_arrives_intact() {
    let browser = chromium();
    let dir = std::env::temp_dir().join(format!("mediabot-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two periods of the chirp; Chromium loops the file, so the capture is the periodic chirp.
    let wav = dir.join("chirp.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for s in audio::chirp(0, 0, 2 * audio::RATE) {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();

    let routes =
        axum::Router::new().route("/interop/chromium_whip.html", get(|| async { Html(PAGE) }));
    let h = Harness::start_with_routes(
        MediaServerConfig {
            loopback_peers_only: true,
            handshake_timeout: Duration::from_secs(30),
            ..Default::default()
        },
        routes,
    )
    .await;
    let call = CallId::new("chromium-call");
    let blob = h.whip.mint_blob(&call).blob;
    let url = format!(
        "http://{}/interop/chromium_whip.html?whip={}&token={}&seconds={SEND_SECONDS}",
        h.http_addr,
        query_escape(&blob.whip),
        query_escape(&blob.token)
    );
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            "--enable-logging=stderr",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!(
            "--use-file-for-fake-audio-capture={}",
            wav.display()
        ))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium could not start");
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });

    // The page DELETEs its session after SEND_SECONDS of media.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let closed = loop {
        if !h.seen.lock().unwrap().closed.is_empty() {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("chromium exited early: {status}\n{}", log.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill().await;
    let browser_log = log.await.unwrap();
    let console: Vec<&str> = browser_log
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .collect();
    assert!(
        closed,
        "chromium never finished its WHIP session\nconsole: {console:#?}\nserver: {:#?}",
        h.media.stats()
    );
    let seen = h.seen.lock().unwrap().clone();
    assert_eq!(seen.closed[0].1, CloseReason::Requested, "{console:#?}");
    // Chromium read the bot's reception reports for its stream (the stats entry exists only
    // once a report block for it arrived): no loss, and a sane round trip when it took one
    // (the block's LSR is its last sender report).
    let remote = browser_log
        .lines()
        .find_map(|l| l.split("remote-inbound ").nth(1))
        .and_then(|r| r.split(" end").next())
        .unwrap_or_else(|| panic!("no remote-inbound-rtp stats in chromium\n{console:#?}"));
    println!("chromium's view of the bot's reports: {remote}");
    assert!(remote.starts_with("lost=0 "), "{remote}");
    if let Some(rtt) = remote
        .split("rtt=")
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok())
    {
        assert!((0.0..1.0).contains(&rtt), "{remote}");
    }
    // Chromium offers `a=setup:actpass`: the session ran on the direct media plane.
    assert_eq!(
        mediabot_media::transport::server::TransportStats::get(&h.media.stats().direct_sessions),
        1
    );
    let ssrcs: std::collections::BTreeSet<u32> = seen.rtp.iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one microphone, one stream: {ssrcs:?}");
    let packets: Vec<_> = seen.rtp.iter().collect();
    assert!(
        packets.iter().all(|p| p.audio_level.is_some()),
        "chromium sends ssrc-audio-level"
    );
    let pcm = audio::decode_stream(&packets);
    let secs = pcm.len() as f32 / audio::RATE as f32;
    assert!(
        // The page's timer and DELETE may run late on a loaded machine, never early.
        secs > SEND_SECONDS - 0.3 && secs < SEND_SECONDS + 1.5,
        "{secs} s of media, page sent {SEND_SECONDS} s"
    );
    // Start somewhat in, past any start-up ramp; the capture phase is arbitrary (the file
    // loops), so search a whole period.
    let from = audio::RATE / 2;
    let template = audio::chirp(0, 0, audio::RATE / 4);
    let (c, lag) = audio::best_correlation_coarse(&pcm[from..], &template, audio::RATE, 4);
    let (c_other, _) = audio::best_correlation_coarse(
        &pcm[from..],
        &audio::chirp(1, 0, audio::RATE / 4),
        audio::RATE,
        4,
    );
    eprintln!(
        "chromium: {} packets, {secs:.2} s, corr {c:.3} at lag {lag}, other {c_other:.3}",
        packets.len()
    );
    assert!(c > 0.7, "correlation with the chirp {c}");
    assert!(c_other < 0.5, "correlates with the wrong chirp {c_other}");
    let _ = std::fs::remove_dir_all(&dir);
    h.media.shutdown().await;
}
