//! The media thread's wake-up timer. Tokio's timer rounds every deadline up to the next
//! millisecond, so a frame due at 10.1 ms would play at 11 ms (up to 1 ms of "processing"
//! latency from the timer alone). On Linux a `timerfd` registered with the runtime wakes at
//! the deadline to within the kernel's timer slack (50 µs by default); elsewhere the tokio
//! timer is used.

use std::time::Instant;

/// A one-shot timer for the media loop: [`WakeTimer::arm`] sets the deadline (only when it is
/// earlier than the armed one, or none is armed: a spurious early wake is harmless, one
/// syscall per loop turn is not), [`WakeTimer::wait`] resolves once it passes.
pub(crate) struct WakeTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    armed: Option<Instant>,
}

impl WakeTimer {
    /// A timer (timerfd on Linux when it can be created, else tokio's).
    pub fn new() -> Self {
        WakeTimer {
            #[cfg(target_os = "linux")]
            fd: linux::create().ok(),
            armed: None,
        }
    }

    /// Whether the precise (timerfd) timer is in use.
    pub fn is_precise(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.fd.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Makes sure the timer fires no later than `at`.
    pub fn arm(&mut self, at: Instant) {
        if self.armed.is_some_and(|a| a <= at) {
            return;
        }
        self.armed = Some(at);
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            use std::os::fd::AsRawFd;
            if linux::set(fd.get_ref().as_raw_fd(), at).is_err() {
                // Fall back to tokio's timer for this deadline.
                self.fd = None;
            }
        }
    }

    /// Resolves when the armed deadline has passed (never when none is armed).
    pub async fn wait(&mut self) {
        let Some(at) = self.armed else {
            return std::future::pending().await;
        };
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    break;
                };
                use std::os::fd::AsRawFd;
                let fired = linux::drain(fd.get_ref().as_raw_fd());
                guard.clear_ready();
                if fired || Instant::now() >= at {
                    self.armed = None;
                    return;
                }
            }
        }
        tokio::time::sleep_until(at.into()).await;
        self.armed = None;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::time::Instant;

    pub(super) fn create() -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the timerfd is owned by the `AsyncFd` and never replaced or closed while
        // registered (it is closed when the `AsyncFd` drops it).
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)
    }

    /// Arms the timer for `at` (relative to now; at least 1 ns, since 0 would disarm it).
    pub(super) fn set(fd: RawFd, at: Instant) -> io::Result<()> {
        let d = at.saturating_duration_since(Instant::now());
        let ns = d.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `fd` is our timerfd; `spec` lives for the call; no old value is asked for.
        let r = unsafe { libc::timerfd_settime(fd, 0, &raw const spec, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the expiration count; `true` if the timer fired.
    pub(super) fn drain(fd: RawFd) -> bool {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking timerfd.
        let r = unsafe { libc::read(fd, (&raw mut n).cast(), size_of::<u64>()) };
        r == size_of::<u64>() as isize && n > 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_after_the_deadline_and_keeps_the_earliest() {
        let mut t = WakeTimer::new();
        assert!(cfg!(not(target_os = "linux")) || t.is_precise());
        let start = Instant::now();
        t.arm(start + Duration::from_millis(3));
        // A later deadline does not push the armed one back.
        t.arm(start + Duration::from_secs(10));
        t.wait().await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(3), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // Disarmed after firing: a past deadline fires at once.
        t.arm(Instant::now());
        t.wait().await;
        // Nothing armed: never resolves.
        let r = tokio::time::timeout(Duration::from_millis(20), t.wait()).await;
        assert!(r.is_err());
    }
}
