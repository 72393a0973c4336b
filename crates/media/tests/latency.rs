//! Proves on virtual time what the per-call latency histograms measure: end to end = jitter
//! hold + processing, concealed frames are not counted, a 10 ms tick shows up as processing
//! latency while polling at the pipeline's own deadline does not, and work time (the clock
//! read at the push) is what processing measures.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mediabot_media::{CallConfig, CallTag, MediaIngest, SampleRate, Ssrc, TrackSelect};

/// The virtual clock the pipeline reads at each push: `base + VIRTUAL_NS`. Each test uses its
/// own base and offset pair, so tests in this binary may run in parallel.
struct VClock {
    base: OnceLock<Instant>,
    ns: AtomicU64,
}

impl VClock {
    const fn new() -> Self {
        VClock {
            base: OnceLock::new(),
            ns: AtomicU64::new(0),
        }
    }
    fn base(&self) -> Instant {
        *self.base.get_or_init(Instant::now)
    }
    fn now(&self) -> Instant {
        self.base() + Duration::from_nanos(self.ns.load(Ordering::Relaxed))
    }
    fn set(&self, t: Instant) {
        let d = t.saturating_duration_since(self.base());
        self.ns.store(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

static TICKED: VClock = VClock::new();
static DEADLINE: VClock = VClock::new();
static WORK: VClock = VClock::new();
static LOSSY: VClock = VClock::new();
static GRID: VClock = VClock::new();
static PREROLL: VClock = VClock::new();
static STEPPING: VClock = VClock::new();

/// A push clock for [`STEPPING`] on which every frame push takes 1 ms of work: each read
/// returns the clock 1 ms later than the read before.
fn stepping_now() -> Instant {
    let ns = STEPPING.ns.fetch_add(1_000_000, Ordering::Relaxed) + 1_000_000;
    STEPPING.base() + Duration::from_nanos(ns)
}

/// Feeds `ssrc` the first `n` packets of 20 ms Opus, all arriving at `at`.
fn feed(call: &mut mediabot_media::CallPipeline, ssrc: Ssrc, at: Instant, n: usize) {
    let pcm = speech_like(48_000, 0.2, u64::from(ssrc.0));
    for (k, p) in encode(&pcm, false, 0).iter().take(n).enumerate() {
        let bytes = rtp_bytes(ssrc, k as u16, (k * 960) as u32, p);
        call.ingest_rtp(at, &bytes).unwrap();
    }
}

fn packets(seconds: f64, seed: u64) -> Vec<Arrival> {
    let pcm = speech_like(48_000, seconds, seed);
    let p = encode(&pcm, false, 10);
    let sent = schedule(&p, 100, 1000, 0.0, 0.0, false);
    impair(
        &sent,
        Ssrc(1),
        Netem {
            base_delay: 0.02,
            jitter: 0.008,
            seed,
            ..Netem::default()
        },
    )
}

/// Runs `arrivals` through a call whose push clock is `clock`, polling every `tick` s, or at
/// the pipeline's own deadlines when `tick` is `None`; the clock reads `work` after each
/// input's instant (as if the work took that long).
fn run(
    clock: &'static VClock,
    clock_fn: fn() -> Instant,
    arrivals: &[Arrival],
    end: f64,
    tick: Option<f64>,
    work: Duration,
) -> (mediabot_media::CallLatencySnapshot, Driver) {
    let cfg = CallConfig::new(CallTag(1)).with_clock(clock_fn);
    let start = clock.base();
    let call = mediabot_media::CallPipeline::new(cfg, start, std::time::SystemTime::UNIX_EPOCH);
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    let mut next_poll: Option<Instant> = Some(start);
    let mut i = 0;
    loop {
        let arrival = arrivals.get(i).map(|a| d.at(a.at));
        let t = match (arrival, next_poll) {
            (Some(a), Some(p)) => a.min(p),
            (a, p) => a.or(p).unwrap(),
        };
        if t > d.at(end) {
            break;
        }
        clock.set(t + work);
        if arrival == Some(t) {
            let _ = d.call.ingest_rtp(t, &arrivals[i].bytes);
            i += 1;
            if tick.is_none() {
                // An arrival may bring the deadline forward.
                let due = d.call.poll(t);
                next_poll = due;
            }
        } else {
            let due = d.call.poll(t);
            next_poll = match tick {
                Some(s) => Some(t + Duration::from_secs_f64(s)),
                None => due.map(|x| x.max(t + Duration::from_micros(1))),
            };
            d.drain();
        }
    }
    d.drain();
    (d.call.latency().snapshot(), d)
}

/// Like a media thread on a 1 ms wake grid: the pipeline's deadline (and each arrival's
/// read) is served at the next grid point; `lead` is the call's pre-roll.
fn run_on_grid(
    clock: &'static VClock,
    clock_fn: fn() -> Instant,
    arrivals: &[Arrival],
    end: f64,
    lead: Duration,
) -> (mediabot_media::CallLatencySnapshot, Driver) {
    let step = Duration::from_millis(1);
    let cfg = CallConfig::new(CallTag(1))
        .with_clock(clock_fn)
        .with_release_lead(lead);
    let start = clock.base();
    let call = mediabot_media::CallPipeline::new(cfg, start, std::time::SystemTime::UNIX_EPOCH);
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    let up = |t: Instant| {
        let k = t
            .saturating_duration_since(start)
            .as_nanos()
            .div_ceil(step.as_nanos());
        start + step * k as u32
    };
    let mut due: Option<Instant> = Some(start);
    let mut i = 0;
    let mut t = start;
    while t <= d.at(end) {
        clock.set(t);
        // Arrivals up to this grid point are read now, with their true arrival instants.
        while let Some(a) = arrivals.get(i).filter(|a| d.at(a.at) <= t) {
            let _ = d.call.ingest_rtp(d.at(a.at), &a.bytes);
            i += 1;
        }
        if due.is_some_and(|x| x <= t) || i > 0 {
            due = d.call.poll(t);
        }
        d.drain();
        let next_arrival = arrivals.get(i).map(|a| up(d.at(a.at)));
        let next_due = due.map(|x| up(x).max(t + step));
        t = match (next_arrival, next_due) {
            (Some(a), Some(b)) => a.min(b).max(t + step),
            (a, b) => a.or(b).unwrap_or(t + step).max(t + step),
        };
    }
    d.drain();
    (d.call.latency().snapshot(), d)
}

#[test]
fn a_pre_roll_of_one_grid_step_keeps_the_grid_out_of_processing_latency() {
    let a = packets(4.0, 5);
    let (late, d0) = run_on_grid(&GRID, || GRID.now(), &a, 4.5, Duration::ZERO);
    let (early, d1) = run_on_grid(
        &PREROLL,
        || PREROLL.now(),
        &a,
        4.5,
        Duration::from_millis(1),
    );
    assert!(late.processing.count > 150, "{}", late.processing.count);
    // Without pre-roll a deadline inside a step waits for the next grid point: up to 1 ms.
    assert!(
        late.processing.quantile(0.5) > Duration::from_micros(100),
        "{late:?}"
    );
    assert!(late.processing.max <= Duration::from_millis(1), "{late:?}");
    // With one step of pre-roll a frame is pushed by its deadline (no work time here) unless
    // its packet itself came within the last step: that one waits for the grid read.
    assert!(
        early.processing.quantile(0.99) <= Duration::from_micros(2),
        "{early:?}"
    );
    assert!(
        early.processing.max <= Duration::from_millis(1),
        "{early:?}"
    );
    assert!(
        early.processing.sum * 20 < late.processing.sum,
        "{early:?} {late:?}"
    );
    // The same audio comes out: the pre-roll moves work earlier, it loses nothing.
    assert_eq!(d0.tracks[0].frames.len(), d1.tracks[0].frames.len());
    // Frames reach the sink earlier end to end (by up to the step).
    assert!(
        early.end_to_end.sum < late.end_to_end.sum,
        "{early:?} {late:?}"
    );
}

#[test]
fn one_call_plays_its_streams_earliest_deadline_first() {
    let (call, start) = pipeline(
        CallConfig::new(CallTag(1))
            .with_mixer(None)
            .with_rate(SampleRate::HZ_48000),
    );
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    // Stream 1 comes first in the call but its packets 0.8 ms after stream 2's: its deadline
    // is the later one.
    let t0 = start + Duration::from_millis(10);
    feed(&mut d.call, Ssrc(1), t0 + Duration::from_micros(800), 2);
    feed(&mut d.call, Ssrc(2), t0, 2);
    let w1 = d.call.stream_wakeup(Ssrc(1)).unwrap();
    let w2 = d.call.stream_wakeup(Ssrc(2)).unwrap();
    assert!(w2 < w1, "{w2:?} {w1:?}");
    d.call.poll(w1);
    d.drain();
    let order: Vec<Ssrc> = d.tracks[0].frames.iter().map(|f| f.3).collect();
    assert_eq!(order, [Ssrc(2), Ssrc(1)], "{:?}", d.tracks[0].frames);
}

#[test]
fn a_tick_over_many_calls_plays_the_earliest_deadline_first() {
    use mediabot_media::{CallPipeline, PlayoutQueue};
    let base = STEPPING.base();
    let cfg = |k| {
        CallConfig::new(CallTag(k))
            .with_mixer(None)
            .with_rate(SampleRate::HZ_48000)
            .with_clock(stepping_now)
            .with_release_lead(Duration::from_millis(1))
    };
    // Call A's timeline starts 5 ms after call B's: deadlines are compared as instants, not
    // as each call's own seconds (A's would then look 5 ms earlier than they are).
    let a_start = base + Duration::from_millis(5);
    let mut a = CallPipeline::new(cfg(1), a_start, std::time::SystemTime::UNIX_EPOCH);
    let mut b = CallPipeline::new(cfg(2), base, std::time::SystemTime::UNIX_EPOCH);
    let sink_a = a.add_sink_f32(TrackSelect::AllParticipants, 64).unwrap();
    let sink_b = b.add_sink_f32(TrackSelect::AllParticipants, 64).unwrap();
    // A's three streams are due 0.8 ms after B's one.
    let t0 = base + Duration::from_millis(10);
    for ssrc in [1, 2, 3] {
        feed(&mut a, Ssrc(ssrc), t0 + Duration::from_micros(800), 2);
    }
    feed(&mut b, Ssrc(9), t0, 2);
    let wa = (1..=3)
        .map(|s| a.stream_wakeup(Ssrc(s)).unwrap())
        .min()
        .unwrap();
    let wb = b.stream_wakeup(Ssrc(9)).unwrap();
    assert!(wb < wa, "{wb:?} {wa:?}");
    // The tick comes at the last of the four wake-ups: all four are due (within the lead).
    let now = (1..=3)
        .map(|s| a.stream_wakeup(Ssrc(s)).unwrap())
        .max()
        .unwrap();
    STEPPING.set(now);
    // A first, as the engine's call map may well list it.
    let mut calls = [&mut a, &mut b];
    let played = PlayoutQueue::new().play(now, &mut calls, |c| &mut **c);
    assert_eq!(played, 4);
    for c in calls {
        c.finish_tick(now);
    }
    let (mut sink_a, mut sink_b) = (sink_a, sink_b);
    let frames = |s: &mut mediabot_media::FrameConsumer<f32>| {
        std::iter::from_fn(|| s.pop().map(|f| f.position)).count()
    };
    assert_eq!((frames(&mut sink_a), frames(&mut sink_b)), (3, 1));
    // Each push took 1 ms: B's frame, due first, was pushed first (1 ms of work); A's waited
    // behind it and behind each other (2-4 ms). Call after call, B's would have waited 4 ms.
    let (la, lb) = (a.latency().snapshot(), b.latency().snapshot());
    assert_eq!((la.processing.count, lb.processing.count), (3, 1));
    assert!(
        lb.processing.max < Duration::from_millis(2),
        "{:?}",
        lb.processing
    );
    assert!(
        la.processing.max > lb.processing.max + Duration::from_millis(1),
        "{:?} {:?}",
        la.processing,
        lb.processing
    );
}

#[test]
fn ticking_every_10ms_shows_as_processing_latency() {
    let a = packets(4.0, 1);
    let (s, _) = run(
        &TICKED,
        || TICKED.now(),
        &a,
        4.5,
        Some(0.01),
        Duration::ZERO,
    );
    assert!(s.processing.count > 150, "{}", s.processing.count);
    // Due instants fall anywhere between ticks: the wait for the next tick is up to 10 ms.
    let p99 = s.processing.quantile(0.99);
    assert!(p99 > Duration::from_millis(7), "p99 {p99:?}");
    assert!(s.processing.max <= Duration::from_millis(10), "{s:?}");
    // Arrivals between ticks play out when a packet arrival polls, so not all frames wait.
    assert!(s.processing.quantile(0.5) < p99);
}

#[test]
fn polling_at_the_deadline_leaves_no_processing_latency() {
    let a = packets(4.0, 2);
    let (s, d) = run(&DEADLINE, || DEADLINE.now(), &a, 4.5, None, Duration::ZERO);
    let n = s.end_to_end.count;
    assert!(n > 150, "{n}");
    assert_eq!(s.jitter_hold.count, n);
    assert_eq!(s.processing.count, n);
    // The virtual clock does not move during work: nothing above the first bucket (< 1 µs).
    assert!(
        s.processing.max < Duration::from_micros(1),
        "{:?}",
        s.processing
    );
    // End to end is then the jitter hold: the 20 ms minimum target less each packet's own
    // excess delay (0-8 ms), and the 40 ms start-up wait for the first packets.
    assert_eq!(s.end_to_end.quantile(0.5), s.jitter_hold.quantile(0.5));
    let hold = s.jitter_hold.quantile(0.5);
    assert!(
        hold >= Duration::from_millis(10) && hold <= Duration::from_millis(30),
        "{hold:?}"
    );
    // (The first packet's wait is 40 ms from the envelope, less its own excess delay.)
    assert!(s.end_to_end.max >= Duration::from_millis(30), "{s:?}");
    // Sum check: e2e = hold + processing for every frame.
    let diff = s
        .end_to_end
        .sum
        .abs_diff(s.jitter_hold.sum + s.processing.sum);
    assert!(diff < Duration::from_micros(10), "{diff:?}");
    // Every frame in the sink came from a received packet, and each was timed once.
    let frames = d.tracks[0].frames.len() as u64;
    assert_eq!(frames, n);
}

#[test]
fn processing_measures_the_push_clock() {
    let a = packets(3.0, 3);
    let work = Duration::from_micros(300);
    let (s, _) = run(&WORK, || WORK.now(), &a, 3.5, None, work);
    let p = &s.processing;
    assert!(p.count > 100);
    // Every push reads 300 µs after its poll instant, and polls come at the deadline (to the
    // driver's 1 µs step and float rounding).
    assert!(p.quantile(0.0) >= Duration::from_micros(299), "{p:?}");
    assert!(p.max < Duration::from_micros(302), "{p:?}");
}

#[test]
fn concealed_frames_are_not_counted() {
    let pcm = speech_like(48_000, 4.0, 4);
    let p = encode(&pcm, false, 10);
    let sent = schedule(&p, 100, 1000, 0.0, 0.0, false);
    let a = impair(
        &sent,
        Ssrc(1),
        Netem {
            base_delay: 0.02,
            loss: 0.1,
            seed: 4,
            ..Netem::default()
        },
    );
    let (s, d) = run(&LOSSY, || LOSSY.now(), &a, 4.5, None, Duration::ZERO);
    let st = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(st.concealed + st.fec_recovered > 5, "{st:?}");
    let frames = &d.tracks[0].frames;
    let clean = frames.iter().filter(|f| !f.2.concealed).count() as u64;
    assert!(clean < frames.len() as u64);
    assert_eq!(s.end_to_end.count, clean);
}

/// One media thread's work for `streams` speakers, on virtual time plus the real time the work
/// takes: a clock that reads "the later of the event's instant and when the previous work
/// finished", so a frame that waits behind other streams' decodes shows it as processing.
/// No network, no scheduler: the figure is the pipeline's own queueing and work.
/// `cargo test -p mediabot-media --release --test latency -- --ignored --nocapture`
#[test]
#[ignore = "measurement (real work time); run by hand in release"]
fn work_queueing_with_many_streams() {
    use mediabot_media::{CallPipeline, FrameConsumer};
    static MODEL: Mutex<(Option<Instant>, Option<Instant>)> = Mutex::new((None, None));
    // (virtual anchor, real anchor): clock = v + (real now - r).
    fn model_now() -> Instant {
        let m = MODEL.lock().unwrap();
        match *m {
            (Some(v), Some(r)) => v + r.elapsed(),
            _ => Instant::now(),
        }
    }
    use std::sync::Mutex;
    let pcm = speech_like(48_000, 2.0, 9);
    let enc = encode(&pcm, false, 10);
    for (streams, aligned) in [(100, false), (500, false), (500, true)] {
        let start = Instant::now();
        *MODEL.lock().unwrap() = (Some(start), Some(Instant::now()));
        let per_call = std::env::var("MEDIABOT_PER_CALL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100usize);
        let mut calls: Vec<(CallPipeline, Option<Instant>, FrameConsumer<i16>)> = (0..streams
            / per_call)
            .map(|k| {
                let cfg = CallConfig::new(CallTag(k as u64))
                    .with_mixer(None)
                    .with_max_streams(per_call)
                    .with_clock(model_now);
                let mut c = CallPipeline::new(cfg, start, std::time::SystemTime::UNIX_EPOCH);
                let sink = c.add_sink_i16(TrackSelect::AllParticipants, 64).unwrap();
                (c, None, sink)
            })
            .collect();
        // Arrivals: 4 s, stream i at offset (i * 20 ms / streams) unless aligned.
        let mut arrivals = Vec::new();
        for n in 0..200usize {
            for i in 0..streams {
                let off = if aligned {
                    0.0
                } else {
                    0.02 * i as f64 / streams as f64
                };
                let at = 0.02 * n as f64 + off;
                let p = &enc[n % enc.len()];
                let bytes = rtp_bytes(Ssrc(1 + i as u32), n as u16, (n * 960) as u32, p);
                arrivals.push((at, i, bytes));
            }
        }
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut idx = 0;
        let end = start + Duration::from_secs(4);
        let wall = Instant::now();
        let cpu0 = thread_cpu();
        loop {
            let next_arr = arrivals
                .get(idx)
                .map(|a| start + Duration::from_secs_f64(a.0));
            let next_due = calls.iter().filter_map(|c| c.1).min();
            let t = match (next_arr, next_due) {
                (Some(a), Some(d)) => a.min(d),
                (a, d) => match a.or(d) {
                    Some(t) => t,
                    None => break,
                },
            };
            if t > end {
                break;
            }
            // The thread is free at `cur`; it idles until `t` if that is later.
            let cur = model_now();
            if t > cur {
                *MODEL.lock().unwrap() = (Some(t), Some(Instant::now()));
            }
            let now = t.max(cur);
            if next_arr == Some(t) {
                let (_, i, bytes) = &arrivals[idx];
                let c = &mut calls[i / per_call];
                let _ = c.0.ingest_rtp(t, bytes);
                c.1 = c.0.poll(now);
                idx += 1;
            } else {
                for c in calls.iter_mut().filter(|c| c.1.is_some_and(|d| d <= now)) {
                    c.1 = c.0.poll(now);
                }
            }
            for c in &mut calls {
                while c.2.pop().is_some() {}
            }
        }
        let mut s = mediabot_media::CallLatencySnapshot::default();
        for c in &calls {
            s.merge(&c.0.latency().snapshot());
        }
        let p = &s.processing;
        let wall = wall.elapsed();
        let cpu = thread_cpu() - cpu0;
        println!(
            "streams={streams} aligned={aligned}: {} frames of 4 s media; thread cpu {cpu:?} \
             ({:?} per frame, {:.0}% of a core), wall {wall:?}; processing p50 {:?} p99 {:?} \
             p99.9 {:?} max {:?}",
            p.count,
            cpu / u32::try_from(p.count.max(1)).unwrap(),
            100.0 * cpu.as_secs_f64() / 4.0,
            p.quantile(0.5),
            p.quantile(0.99),
            p.quantile(0.999),
            p.max,
        );
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: all-zero is a valid timespec, filled in by clock_gettime for our own thread.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
