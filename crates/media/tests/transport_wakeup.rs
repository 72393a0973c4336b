//! The media thread honours `MediaHandler::next_wakeup`: `on_tick` runs at the handler's own
//! deadlines (never before them), not only on the 10 ms period, and handlers that do not ask
//! keep the plain 10 ms tick.
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let media = MediaServer::start(
            MediaServerConfig::default(),
            Box::new(Waker {
                period,
                next: None,
                log: Arc::clone(&log),
            }),
        )
        .unwrap();
        tokio::time::sleep(for_).await;
        media.shutdown().await;
    });
    Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap()
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
