//! The media thread honours `MediaHandler::next_wakeup`: `on_tick` runs at the handler's own
//! deadlines (never before them), not only on the 10 ms period, and handlers that do not ask
//! keep the plain 10 ms tick; many distinct deadlines are coalesced on
//! `MediaServerConfig::wake_grid` (at most one `on_tick` per grid step, plus the tick).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediabot_media::transport::{InboundRtp, MediaHandler, MediaServer, MediaServerConfig};

#[derive(Default)]
struct Log {
    ticks: u32,
    early: u32,
}

/// Asks to be woken every `period` (None: never asks).
struct Waker {
    period: Option<Duration>,
    next: Option<Instant>,
    log: Arc<Mutex<Log>>,
}

impl MediaHandler for Waker {
    fn on_rtp(&mut self, _packet: &InboundRtp<'_>) {}
    fn on_tick(&mut self, now: Instant) {
        let mut log = self.log.lock().unwrap();
        log.ticks += 1;
        if let Some(p) = self.period {
            // Woken for our deadline or the period: either way, never before the deadline
            // unless it was the 10 ms tick (which we cannot tell apart; count only the
            // calls that come before the deadline by more than a tick).
            if self
                .next
                .is_some_and(|d| now + Duration::from_millis(11) < d)
            {
                log.early += 1;
            }
            if self.next.is_none_or(|d| d <= now) {
                self.next = Some(now + p);
            }
        }
    }
    fn next_wakeup(&mut self) -> Option<Instant> {
        match self.period {
            Some(p) => Some(*self.next.get_or_insert_with(|| Instant::now() + p)),
            None => None,
        }
    }
}

fn run(period: Option<Duration>, for_: Duration) -> Log {
    let log = Arc::new(Mutex::new(Log::default()));
    serve(
        MediaServerConfig::default(),
        Box::new(Waker {
            period,
            next: None,
            log: Arc::clone(&log),
        }),
        for_,
    );
    Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap()
}

/// Runs a media server with `handler` for about `for_`; returns how long it really lived
/// (start to the end of shutdown: an upper bound on the time `on_tick` could run in).
fn serve(config: MediaServerConfig, handler: Box<dyn MediaHandler>, for_: Duration) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let media = MediaServer::start(config, handler).unwrap();
        tokio::time::sleep(for_).await;
        media.shutdown().await;
        start.elapsed()
    })
}

/// `streams` 20 ms frame clocks at distinct phases (like calls' play-out deadlines): asks to
/// be woken at the earliest due frame, handles every due frame on `on_tick`.
struct Streams {
    due: Vec<Instant>,
    ticks: Arc<Mutex<u32>>,
    frames: Arc<Mutex<u64>>,
}

impl MediaHandler for Streams {
    fn on_rtp(&mut self, _packet: &InboundRtp<'_>) {}
    fn on_tick(&mut self, now: Instant) {
        *self.ticks.lock().unwrap() += 1;
        for d in &mut self.due {
            while *d <= now {
                *d += Duration::from_millis(20);
                *self.frames.lock().unwrap() += 1;
            }
        }
    }
    fn next_wakeup(&mut self) -> Option<Instant> {
        self.due.iter().min().copied()
    }
}

#[test]
fn distinct_deadlines_are_coalesced_on_the_grid() {
    // 200 streams 100 µs apart: 10,000 distinct deadlines a second (5 within every 1 ms).
    // Uncoalesced, that is up to 10,000 wake-ups a second; with the 1 ms grid, on_tick runs
    // at most once per grid step plus the 10 ms tick.
    let start = Instant::now() + Duration::from_millis(5);
    let ticks = Arc::new(Mutex::new(0));
    let frames = Arc::new(Mutex::new(0));
    let handler = Streams {
        due: (0..200)
            .map(|i| start + Duration::from_micros(100 * i))
            .collect(),
        ticks: Arc::clone(&ticks),
        frames: Arc::clone(&frames),
    };
    let lived = serve(
        MediaServerConfig::default(),
        Box::new(handler),
        Duration::from_millis(600),
    );
    let ticks = *ticks.lock().unwrap();
    let frames = *frames.lock().unwrap();
    let ms = lived.as_millis() as u32;
    // Count-based bound (a busy box only lowers the count): one per 1 ms step + one per
    // 10 ms tick + start-up slack.
    assert!(
        ticks <= ms + ms / 10 + 5,
        "{ticks} on_tick calls in {ms} ms"
    );
    // The deadlines are followed (the 10 ms tick alone gives at most ~61 in 600 ms).
    assert!(ticks > 100, "only {ticks} on_tick calls in {ms} ms");
    // Every stream's frames were handled (about 30 each in 600 ms).
    assert!(frames > 200 * 20, "{frames} frames");
}

#[test]
fn on_tick_follows_the_handlers_deadlines() {
    // 2 ms deadlines for 500 ms: about 250 calls; the 10 ms period alone gives at most ~51.
    let asked = run(Some(Duration::from_millis(2)), Duration::from_millis(500));
    assert!(asked.ticks > 100, "only {} on_tick calls", asked.ticks);
    assert_eq!(asked.early, 0);
    // A handler that never asks keeps the plain 10 ms tick.
    let plain = run(None, Duration::from_millis(500));
    assert!(plain.ticks <= 52, "{} on_tick calls", plain.ticks);
    assert!(plain.ticks > 10, "{} on_tick calls", plain.ticks);
}
