//! Liveness, readiness and drain state, shared by the HTTP server and the orchestrator.
//!
//! `/healthz` answers 200 while the process serves HTTP at all. `/readyz` answers 200 only while
//! the instance should be given new calls: started, not draining (SIGTERM received), below
//! `media.max_calls`, and not overloaded. Kubernetes stops routing new calls to a pod whose
//! readiness is false, while its existing calls carry on until the grace period ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// Media platform load, in the words of Microsoft's SDK (`MediaPlatformHealthStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LoadState {
    /// Accepting calls.
    Normal = 0,
    /// Do not add calls.
    HeavilyLoaded = 1,
    /// New calls may be rejected.
    Overloaded = 2,
}

/// Why the instance is not ready, for the `/readyz` body and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Still starting (keys, tokens, sockets).
    Starting,
    /// Draining after SIGTERM or an operator request.
    Draining,
    /// At `media.max_calls`.
    AtCapacity,
    /// The media path reports heavy load.
    Loaded(LoadState),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Starting => f.write_str("starting"),
            Self::Draining => f.write_str("draining"),
            Self::AtCapacity => f.write_str("at capacity (media.max_calls)"),
            Self::Loaded(s) => write!(f, "media load {s:?}"),
        }
    }
}

/// Lock-free health state.
#[derive(Debug)]
pub struct Health {
    started: AtomicBool,
    draining: AtomicBool,
    load: AtomicU8,
    calls: AtomicUsize,
    max_calls: usize,
}

impl Health {
    /// A not-yet-started instance that accepts up to `max_calls`.
    pub fn new(max_calls: usize) -> Self {
        Self {
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            load: AtomicU8::new(LoadState::Normal as u8),
            calls: AtomicUsize::new(0),
            max_calls,
        }
    }

    /// Marks start-up complete.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Begins draining: readiness turns false for good.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// True once draining began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records the media load state.
    pub fn set_load(&self, s: LoadState) {
        self.load.store(s as u8, Ordering::Relaxed);
    }

    /// Tries to take a call slot; fails when not ready.
    ///
    /// # Errors
    /// The reason the instance takes no new call.
    pub fn try_admit(self: &Arc<Self>) -> Result<CallSlot, NotReady> {
        self.check_flags()?;
        let mut cur = self.calls.load(Ordering::Relaxed);
        loop {
            if cur >= self.max_calls {
                return Err(NotReady::AtCapacity);
            }
            match self.calls.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(CallSlot {
                        health: Arc::clone(self),
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Calls holding a slot.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Ready for new calls?
    ///
    /// # Errors
    /// Why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.check_flags()?;
        if self.calls() >= self.max_calls {
            return Err(NotReady::AtCapacity);
        }
        Ok(())
    }

    fn check_flags(&self) -> Result<(), NotReady> {
        if !self.started.load(Ordering::Acquire) {
            return Err(NotReady::Starting);
        }
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        match self.load.load(Ordering::Relaxed) {
            0 => Ok(()),
            1 => Err(NotReady::Loaded(LoadState::HeavilyLoaded)),
            _ => Err(NotReady::Loaded(LoadState::Overloaded)),
        }
    }
}

/// A taken call slot; released on drop.
#[derive(Debug)]
pub struct CallSlot {
    health: Arc<Health>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.health.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn readiness_follows_start_capacity_load_and_drain() {
        let h = Arc::new(Health::new(2));
        assert_eq!(h.readiness(), Err(NotReady::Starting));
        h.set_started();
        assert_eq!(h.readiness(), Ok(()));
        let a = h.try_admit().unwrap();
        let b = h.try_admit().unwrap();
        assert_eq!(h.readiness(), Err(NotReady::AtCapacity));
        assert_eq!(h.try_admit().unwrap_err(), NotReady::AtCapacity);
        drop(a);
        assert_eq!(h.calls(), 1);
        h.set_load(LoadState::HeavilyLoaded);
        assert_eq!(
            h.readiness(),
            Err(NotReady::Loaded(LoadState::HeavilyLoaded))
        );
        h.set_load(LoadState::Normal);
        h.start_draining();
        assert_eq!(h.readiness(), Err(NotReady::Draining));
        drop(b);
        assert_eq!(h.calls(), 0);
        assert_eq!(h.readiness(), Err(NotReady::Draining));
    }
}
