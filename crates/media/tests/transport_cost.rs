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

/// Sets the nice value of every thread named `name` (root may lower it): on a shared,
/// oversubscribed box the media thread otherwise gets only its fair share of a core.
fn renice(name: &str, nice: i32) -> usize {
    let mut n = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let tid: libc::id_t = dir.file_name().unwrap().to_str().unwrap().parse().unwrap();
        // SAFETY: plain syscall on one of our own threads; the result is checked.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
            n += 1;
        }
    }
    n
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

/// A media handler like the engine's: one `CallPipeline` per session, a 16 kHz sink ring per
/// call drained by another thread, play-out at each call's own deadline (`next_wakeup`).
mod loaded {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Instant, SystemTime};

    use mediabot_media::rtp::RtpPacket;
    use mediabot_media::transport::{CallId, InboundRtp, MediaHandler, SessionId};
    use mediabot_media::{
        CallConfig, CallLatency, CallPipeline, CallTag, FrameConsumer, MediaIngest, PayloadType,
        RtpTimestamp, SeqNo, Ssrc, StreamStats, TrackSelect,
    };

    pub struct Call {
        pipeline: CallPipeline,
        next: Option<Instant>,
    }

    /// What the test reads after the run.
    #[derive(Default)]
    pub struct Shared {
        pub latencies: Vec<Arc<CallLatency>>,
        pub streams: Vec<Arc<StreamStats>>,
        pub frames: u64,
        /// `on_tick` calls (media-thread wake-ups for the handler).
        pub ticks: Arc<std::sync::atomic::AtomicU64>,
    }

    pub struct Handler {
        calls: HashMap<SessionId, Call>,
        tag: u64,
        sinks: Arc<Mutex<Vec<FrameConsumer<i16>>>>,
        pub shared: Arc<Mutex<Shared>>,
        ticks: Arc<std::sync::atomic::AtomicU64>,
        /// Poll every call on each `on_tick`, due or not (as the engine does):
        /// `MEDIABOT_COST_POLL_ALL=1`.
        poll_all: bool,
    }

    impl Handler {
        pub fn new() -> (Self, Arc<Mutex<Shared>>, Arc<AtomicBool>) {
            let shared = Arc::new(Mutex::new(Shared::default()));
            let ticks = Arc::clone(&shared.lock().unwrap().ticks);
            let sinks: Arc<Mutex<Vec<FrameConsumer<i16>>>> = Arc::default();
            let stop = Arc::new(AtomicBool::new(false));
            // The consuming sink: drains every ring every 5 ms on its own thread.
            let (s2, sh2, st2) = (Arc::clone(&sinks), Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !st2.load(Ordering::Relaxed) {
                    let mut n = 0;
                    for c in s2.lock().unwrap().iter_mut() {
                        while c.pop().is_some() {
                            n += 1;
                        }
                    }
                    sh2.lock().unwrap().frames += n;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            (
                Handler {
                    calls: HashMap::new(),
                    tag: 0,
                    sinks,
                    ticks,
                    poll_all: super::env_or("MEDIABOT_COST_POLL_ALL", 0) == 1,
                    shared: Arc::clone(&shared),
                },
                shared,
                stop,
            )
        }
    }

    impl MediaHandler for Handler {
        fn on_session_opened(&mut self, session: SessionId, _call: &CallId) {
            self.tag += 1;
            let cfg = CallConfig::new(CallTag(self.tag)).with_mixer(None);
            let mut pipeline = CallPipeline::new(cfg, Instant::now(), SystemTime::now());
            let sink = pipeline
                .add_sink_i16(TrackSelect::AllParticipants, 256)
                .unwrap();
            self.sinks.lock().unwrap().push(sink);
            self.shared
                .lock()
                .unwrap()
                .latencies
                .push(pipeline.latency());
            self.calls.insert(
                session,
                Call {
                    pipeline,
                    next: None,
                },
            );
        }

        fn on_rtp(&mut self, p: &InboundRtp<'_>) {
            let Some(c) = self.calls.get_mut(&p.session) else {
                return;
            };
            let pkt = RtpPacket {
                marker: p.marker,
                payload_type: PayloadType(p.payload_type),
                seq: SeqNo(p.sequence),
                timestamp: RtpTimestamp(p.timestamp),
                ssrc: Ssrc(p.ssrc.0),
                payload: p.payload,
            };
            let _ = c.pipeline.ingest_rtp_packet(p.received_at, &pkt);
            c.next = c.pipeline.poll(Instant::now());
            while let Some(e) = c.pipeline.poll_event() {
                if let mediabot_media::PipelineEvent::StreamAdded(ssrc) = e
                    && let Some(s) = c.pipeline.stream_stats(ssrc)
                {
                    self.shared.lock().unwrap().streams.push(s);
                }
            }
        }

        fn on_tick(&mut self, now: Instant) {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            for c in self.calls.values_mut() {
                if self.poll_all || c.next.is_none_or(|t| t <= now) {
                    c.next = c.pipeline.poll(now);
                }
            }
        }

        fn next_wakeup(&mut self) -> Option<Instant> {
            self.calls.values().filter_map(|c| c.next).min()
        }
    }
}

/// Media-thread CPU per stream and the three frame latencies with N speaking streams over
/// loopback (WHIP, ICE, DTLS, SRTP), decoded to a 16 kHz ring that another thread drains. The
/// streams' send instants are spread over the 20 ms period (as independent senders are), or
/// all aligned with `MEDIABOT_COST_ALIGNED=1` (the worst case: every frame due at once).
///
/// On a shared machine the media thread runs at nice -10 (`MEDIABOT_COST_NICE`, needs root),
/// standing in for the dedicated core the bot would have.
///
/// `MEDIABOT_COST_POLL_ALL=1` polls every call on each `on_tick` (as the engine does) instead
/// of only the due ones.
///
/// MEDIABOT_COST_STREAMS=500 MEDIABOT_COST_PER_SESSION=5 [MEDIABOT_COST_GRID_US=1000] \
///   cargo test -p mediabot-media --release --test transport_cost -- --ignored --nocapture latency
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand (see doc)"]
async fn latency_under_load() {
    use std::sync::atomic::Ordering;
    let streams = env_or("MEDIABOT_COST_STREAMS", 100);
    let per_session = env_or("MEDIABOT_COST_PER_SESSION", 5).max(1);
    let seconds = env_or("MEDIABOT_COST_SECONDS", 10);
    let aligned = env_or("MEDIABOT_COST_ALIGNED", 0) == 1;
    let nice = env_or("MEDIABOT_COST_NICE", 10) as i32;
    // MEDIABOT_COST_GRID_US: the wake-up grid in µs (default 1000; 0 = a wake-up per deadline).
    let grid = Duration::from_micros(env_or("MEDIABOT_COST_GRID_US", 1000) as u64);
    let sessions = streams.div_ceil(per_session);
    let (handler, shared, stop) = loaded::Handler::new();
    let media = mediabot_media::transport::MediaServer::start(
        MediaServerConfig {
            wake_grid: grid,
            ..MediaServerConfig::default()
        },
        Box::new(handler),
    )
    .unwrap();
    println!("wake grid {grid:?}");
    // MEDIABOT_COST_NICE=n runs the media thread at nice -n (default 10; 0 leaves it alone).
    tokio::time::sleep(Duration::from_millis(50)).await;
    if nice != 0 {
        println!(
            "media thread at nice -{nice}: {} thread(s)",
            renice("mediabot-udp", -nice)
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let whip = mediabot_media::transport::whip::WhipState::new(
        mediabot_media::transport::whip::WhipConfig {
            public_base_url: format!("http://{http_addr}"),
            ..Default::default()
        },
        media.clone(),
    );
    let app = mediabot_media::transport::whip::router(whip.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Pre-encoded speech-like Opus, 20 ms packets (one encode, replayed by every stream).
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    let mut packets = Vec::new();
    let mut out = [0u8; 400];
    for k in 0..250 {
        let pcm: Vec<f32> = (0..960)
            .map(|i| {
                let t = (k * 960 + i) as f32 / 48_000.0;
                0.3 * (2.0 * std::f32::consts::PI * (180.0 + 40.0 * (t * 3.0).sin()) * t).sin()
            })
            .collect();
        let n = enc.encode_float(&pcm, &mut out).unwrap();
        packets.push(Bytes::copy_from_slice(&out[..n]));
    }

    let mut clients = Vec::new();
    let t0 = Instant::now();
    for s in 0..sessions {
        let blob = whip.mint_blob(&CallId::new(format!("load{s}"))).blob;
        let ssrcs: Vec<u32> = (0..per_session)
            .map(|k| 10_000 + (s * per_session + k) as u32)
            .filter(|x| ((x - 10_000) as usize) < streams)
            .collect();
        let c = WhipClientSession::connect_blob(
            &blob,
            WhipClientConfig {
                ssrcs: ssrcs.clone(),
                offer_rewrite: Some(|o: String| o.replace("a=sendrecv", "a=sendonly")),
                queue: 4096,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        clients.push((c, ssrcs));
    }
    for (c, _) in &mut clients {
        c.wait_connected(Duration::from_secs(30)).await.unwrap();
    }
    println!(
        "{sessions} sessions, {streams} streams up in {:?}",
        t0.elapsed()
    );

    // Each stream sends at its own offset in the 20 ms period (1 ms slots).
    let slot_of = |i: usize| {
        if aligned {
            0
        } else {
            (i * 20) / streams.max(1)
        }
    };
    let sender_ticks0 = thread_ticks("mediabot-udp");
    let on_ticks0 = shared.lock().unwrap().ticks.load(Ordering::Relaxed);
    let stats0 = media.stats().socket_snapshot();
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total_ms = seconds * 1000;
    for ms in 0..total_ms {
        interval.tick().await;
        let frame = ms / 20;
        let slot = ms % 20;
        for (c, ssrcs) in &clients {
            for &ssrc in ssrcs {
                let i = (ssrc - 10_000) as usize;
                if slot_of(i) != slot {
                    continue;
                }
                let _ = c.send_rtp(OutboundRtp {
                    ssrc,
                    sequence: frame as u16,
                    timestamp: (frame as u32).wrapping_mul(960),
                    marker: frame == 0,
                    payload_type: None,
                    audio_level: None,
                    payload: packets[frame % packets.len()].clone(),
                });
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wall = start.elapsed();
    let cpu = Duration::from_millis((thread_ticks("mediabot-udp") - sender_ticks0) * 10);
    let stats1 = media.stats().socket_snapshot();
    let on_ticks = shared.lock().unwrap().ticks.load(Ordering::Relaxed) - on_ticks0;
    println!(
        "on_tick calls {on_ticks} ({:.0} per second)",
        on_ticks as f64 / wall.as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);

    report(
        &shared.lock().unwrap(),
        (streams, sessions, aligned, seconds),
        wall,
        cpu,
        (stats0, stats1),
    );
    for (c, _) in clients {
        let _ = c.close().await;
    }
    media.shutdown().await;
}

fn report(
    sh: &loaded::Shared,
    (streams, sessions, aligned, seconds): (usize, usize, bool, usize),
    wall: Duration,
    cpu: Duration,
    (stats0, stats1): (
        mediabot_media::transport::SocketStatsSnapshot,
        mediabot_media::transport::SocketStatsSnapshot,
    ),
) {
    let mut lat = mediabot_media::CallLatencySnapshot::default();
    for l in &sh.latencies {
        lat.merge(&l.snapshot());
    }
    let (mut ring_drops, mut concealed, mut lost, mut frames_out) = (0, 0, 0, 0);
    for s in &sh.streams {
        let s = s.snapshot();
        ring_drops += s.dropped_at_ring;
        concealed += s.concealed;
        lost += s.lost;
        frames_out += s.frames_out;
    }
    let f = |s: &mediabot_media::LatencySnapshot| {
        format!(
            "p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
            s.quantile(0.5),
            s.quantile(0.99),
            s.quantile(0.999),
            s.max
        )
    };
    println!(
        "streams={streams} sessions={sessions} aligned={aligned} wall={wall:?}\n\
         media-thread cpu {cpu:?} = {:.1}% of a core, {:.1} us per stream-second, {:.1} us per packet\n\
         datagrams in {} (kernel-stamped {}), recv errors {}, rx queue drops {}\n\
         frames out {frames_out} (timed {}), ring drops {ring_drops}, lost {lost}, concealed {concealed}, drained {}\n\
         end_to_end  {}\n\
         jitter_hold {}\n\
         processing  {}",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / (streams as f64 * seconds as f64),
        cpu.as_secs_f64() * 1e6 / (stats1.datagrams_in - stats0.datagrams_in).max(1) as f64,
        stats1.datagrams_in - stats0.datagrams_in,
        stats1.kernel_timestamped - stats0.kernel_timestamped,
        stats1.recv_errors,
        stats1.rx_queue_dropped,
        lat.end_to_end.count,
        sh.frames,
        f(&lat.end_to_end),
        f(&lat.jitter_hold),
        f(&lat.processing),
    );
}
