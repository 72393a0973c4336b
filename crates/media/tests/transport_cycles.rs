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

/// Live heap bytes and blocks, counted by this test binary's global allocator: RSS alone cannot
/// tell a leak from allocator fragmentation, live bytes can.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicI64, Ordering};

    pub static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
    pub static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

    pub struct Counting;

    // SAFETY: forwards to `System` unchanged; only adds relaxed counter updates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
                LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
                LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) };
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            }
            p
        }
    }

    /// (live bytes, live blocks) now.
    pub fn live() -> (i64, i64) {
        (
            LIVE_BYTES.load(Ordering::Relaxed),
            LIVE_BLOCKS.load(Ordering::Relaxed),
        )
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soak version: *full* sessions (WHIP, ICE, DTLS, SRTP, a packet, DELETE, end of call),
/// with the live heap (counting allocator) measured after a warm-up, after N more sessions and
/// after 2N: the second N must not grow the heap. Resident memory is printed too. Minutes
/// long, so it is run by hand (N = `MEDIABOT_SOAK_N`, default 450, warm-up 100):
/// `cargo test -p mediabot-media --release --test transport_cycles -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: about 1,000 full handshakes; run by hand in release"]
async fn thousand_full_sessions_leave_nothing_behind() {
    let warmup = env_or("MEDIABOT_SOAK_WARMUP", 100);
    let n = env_or("MEDIABOT_SOAK_N", 450);
    // The lean harness keeps counts only, so any growth is the server's or the client's.
    let h = Harness::start_lean(MediaServerConfig::default()).await;
    let full = |i: u32| {
        let h = &h;
        async move {
            let call = CallId::new(format!("soak{i}"));
            let blob = h.whip.mint_blob(&call).blob;
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
            h.wait_for(|s: &Seen| s.rtp_count as u32 == i + 1).await;
            assert_eq!(c.close().await.unwrap(), 200);
            // What the engine does when the call ends: its (used) tokens are forgotten.
            h.whip.end_call(&call).await;
            h.wait_for(|s: &Seen| s.closed_count as u32 == i + 1).await;
        }
    };
    // Lets connection tasks (HTTP keep-alive, client drivers) finish before a reading.
    async fn settle() -> (i64, i64, u64) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (b, k) = counting::live();
        (b, k, rss_kib())
    }
    for i in 0..warmup {
        full(i).await;
    }
    let (b0, k0, r0) = settle().await;
    let t0 = Instant::now();
    for i in warmup..warmup + n {
        full(i).await;
    }
    let (b1, k1, r1) = settle().await;
    for i in warmup + n..warmup + 2 * n {
        full(i).await;
    }
    let (b2, k2, r2) = settle().await;
    let per_cycle = t0.elapsed() / (2 * n);
    let per = |a: i64, b: i64| (b - a) as f64 / f64::from(n);
    eprintln!(
        "full sessions: {per_cycle:?} each; live heap after warm-up {b0} B in {k0} blocks, rss {r0} KiB\n\
         first {n}: live heap {:+.1} B/session, {:+.2} blocks/session, rss {:+} KiB\n\
         second {n}: live heap {:+.1} B/session, {:+.2} blocks/session, rss {:+} KiB",
        per(b0, b1),
        per(k0, k1),
        r1 as i64 - r0 as i64,
        per(b1, b2),
        per(k1, k2),
        r2 as i64 - r1 as i64,
    );
    let total = warmup + 2 * n;
    let seen = h.wait_for(|s: &Seen| s.closed_count as u32 == total).await;
    assert_eq!(seen.opened_count as u32, total);
    assert_eq!(
        h.media.sizes().await.unwrap(),
        ServerSizes {
            sessions: 0,
            ufrags: 0,
            addrs: 0
        }
    );
    assert_eq!(h.whip.session_count(), 0);
    // ~0 after warm-up: table capacities may still settle in the first N, never in the second.
    assert!(
        per(b1, b2) < 64.0,
        "live heap grew {:.1} B per full session",
        per(b1, b2)
    );
    assert!(
        per(k1, k2) < 0.5,
        "live heap grew {:.2} blocks per full session",
        per(k1, k2)
    );
    h.media.shutdown().await;
}
