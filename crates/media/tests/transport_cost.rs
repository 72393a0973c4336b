//! Measures what a session costs on the media server (not a pass/fail test, so `#[ignore]`):
//! setup time, resident memory per connected session, and the media thread's CPU per packet
//! while N sessions each receive one 50 packet/s Opus stream. See docs/transport.md.
//!
//! cargo test -p mediabot-media --release --test transport_cost -- --ignored --nocapture
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use mediabot_media::transport::{CallId, MediaServerConfig};
use transport_common::Harness;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time (user + system) of the thread named `name`, in clock ticks.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand (see file doc)"]
async fn cost_per_session() {
    let n = env_or("MEDIABOT_COST_SESSIONS", 50);
    let seconds = env_or("MEDIABOT_COST_SECONDS", 10);
    let playback = env_or("MEDIABOT_COST_PLAYBACK", 0) == 1;
    let h = Harness::start_with(MediaServerConfig::default()).await;
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let blob = h.whip.mint_blob(&CallId::new(format!("cost{i}"))).blob;
        let ssrc = 1000 + i as u32;
        let mut c = WhipClientSession::connect_blob(
            &blob,
            WhipClientConfig {
                ssrcs: vec![ssrc],
                // Receive-only by default; MEDIABOT_COST_PLAYBACK=1 adds the bot's send path
                // (one silent Opus stream back per session).
                offer_rewrite: if playback {
                    None
                } else {
                    Some(|o: String| o.replace("a=sendrecv", "a=sendonly"))
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
        c.wait_connected(Duration::from_secs(20)).await.unwrap();
        clients.push((c, ssrc));
    }
    let setup = t0.elapsed() / n as u32;
    let rss1 = rss_kib();

    // Idle: sessions up, no media (keepalives and timers only).
    let idle0 = thread_ticks("mediabot-udp");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = Duration::from_millis((thread_ticks("mediabot-udp") - idle0) * 10);
    println!("idle: media-thread cpu {idle_cpu:?} over 3 s with {n} sessions");

    let payload = Bytes::from(vec![0x5a; 80]); // ~32 kbit/s Opus frame size
    let ticks0 = thread_ticks("mediabot-udp");
    let delivered0 = h
        .media
        .stats()
        .rtp_delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    let frames = seconds * 50;
    for seq in 0..frames {
        interval.tick().await;
        for (c, ssrc) in &clients {
            let _ = c.send_rtp(OutboundRtp {
                ssrc: *ssrc,
                sequence: seq as u16,
                timestamp: seq as u32 * 960,
                marker: false,
                payload_type: None,
                audio_level: None,
                payload: payload.clone(),
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wall = start.elapsed();
    let ticks = thread_ticks("mediabot-udp") - ticks0;
    let delivered = h
        .media
        .stats()
        .rtp_delivered
        .load(std::sync::atomic::Ordering::Relaxed)
        - delivered0;
    let cpu = Duration::from_millis(ticks * 10); // USER_HZ = 100 on Linux
    println!(
        "sessions={n} playback={playback} setup/session={setup:?} rss/session={} KiB packets={delivered}/{} \
         media-thread cpu={cpu:?} over {wall:?} ({:.1}% of one core) cpu/packet={:.1} us",
        (rss1.saturating_sub(rss0)) / n as u64,
        frames * n,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
    );
    for (c, _) in clients {
        c.close().await.unwrap();
    }
    h.media.shutdown().await;
}
