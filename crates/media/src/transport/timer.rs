//! The media thread's wake-up timer. Tokio's timer rounds every deadline up to the next
//! millisecond, so a frame due at 10.1 ms would play at 11 ms (up to 1 ms of "processing"
//! latency from the timer alone). On Linux a `timerfd` registered with the runtime wakes at
//! the deadline to within the kernel's timer slack (50 µs by default); elsewhere the tokio
//! timer is used.

use std::time::Instant;

/// The earlier of two optional deadlines (`None`: no deadline).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The media loop's timer: [`WakeTimer::arm`] sets the deadline (only when it is earlier than
/// the armed one, or none is armed: a spurious early wake is harmless, one syscall per loop
/// turn is not), [`WakeTimer::wait`] resolves once it passes.
///
/// **Periodic on a grid.** Under dense traffic the loop wakes at every point of its wake-up
/// grid (1 ms), and arming a one-shot timer for each was a `timerfd_settime` per wake-up:
/// ~2 % of the media core at 100 streams on the load test's VM, where reprogramming the
/// timer is a trap to the hypervisor. With a grid step set ([`WakeTimer::with_grid`]), a
/// deadline one step after the one that just fired makes the timer periodic: the kernel
/// re-arms it every step and the following grid deadlines cost no syscall. Any other deadline
/// (later: the loop goes quiet; earlier) turns it back into a one-shot timer.
pub(crate) struct WakeTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    /// The next instant the timer fires.
    armed: Option<Instant>,
    /// The grid step, when the timer may go periodic.
    grid: Option<std::time::Duration>,
    /// Whether the timer is periodic (it fires every `grid` after `armed`).
    periodic: bool,
    /// The deadline that fired last.
    fired: Option<Instant>,
}

impl WakeTimer {
    /// A timer (timerfd on Linux when it can be created, else tokio's).
    pub fn new() -> Self {
        WakeTimer {
            #[cfg(target_os = "linux")]
            fd: linux::create().ok(),
            armed: None,
            grid: None,
            periodic: false,
            fired: None,
        }
    }

    /// Lets the timer go periodic on a grid of `step` (none when zero).
    pub fn with_grid(mut self, step: std::time::Duration) -> Self {
        self.grid = (!step.is_zero()).then_some(step);
        self
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

    /// Whether the timer is periodic now.
    #[cfg(test)]
    fn is_periodic(&self) -> bool {
        self.periodic
    }

    /// Makes sure the timer fires no later than `at`.
    pub fn arm(&mut self, at: Instant) {
        if self.periodic {
            if self.armed == Some(at) {
                return; // the kernel fires there by itself
            }
            self.periodic = false;
        } else if self.armed.is_some_and(|a| a <= at) {
            return;
        }
        // One step after the deadline that just fired: periodic from here on.
        let period = self
            .grid
            .filter(|&g| self.armed.is_none() && self.fired.is_some_and(|f| f + g == at));
        self.armed = Some(at);
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            use std::os::fd::AsRawFd;
            if linux::set(fd.get_ref().as_raw_fd(), at, period).is_err() {
                // Fall back to tokio's timer for this deadline.
                self.fd = None;
            } else {
                self.periodic = period.is_some();
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
                let now = Instant::now();
                if fired || now >= at {
                    self.fire(at, now);
                    return;
                }
            }
        }
        tokio::time::sleep_until(at.into()).await;
        self.periodic = false;
        self.fire(at, Instant::now());
    }

    /// Bookkeeping of a deadline `at` that fired (seen at `now`): a periodic timer's next
    /// expiry is its first grid point after `now` (the kernel skips the ones missed too).
    fn fire(&mut self, at: Instant, now: Instant) {
        self.fired = Some(at);
        self.armed = match (self.periodic, self.grid) {
            (true, Some(g)) => Some(crate::sched::next_point_after(at, now.max(at), g)),
            _ => None,
        };
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

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

    /// Arms the timer for `at` (relative to now; at least 1 ns, since 0 would disarm it), and,
    /// with `period`, every `period` after that.
    pub(super) fn set(fd: RawFd, at: Instant, period: Option<Duration>) -> io::Result<()> {
        let d = at.saturating_duration_since(Instant::now());
        let spec = libc::itimerspec {
            it_interval: timespec(period.unwrap_or_default().as_nanos()),
            it_value: timespec(d.as_nanos().max(1)),
        };
        // SAFETY: `fd` is our timerfd; `spec` lives for the call; no old value is asked for.
        let r = unsafe { libc::timerfd_settime(fd, 0, &raw const spec, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn timespec(ns: u128) -> libc::timespec {
        libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        }
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

    #[tokio::test]
    async fn consecutive_grid_deadlines_go_periodic_and_any_other_leaves() {
        let step = Duration::from_millis(2);
        let mut t = WakeTimer::new().with_grid(step);
        if !t.is_precise() {
            return; // tokio's timer has no periodic mode
        }
        let start = Instant::now() + Duration::from_millis(1);
        t.arm(start);
        assert!(!t.is_periodic(), "nothing fired yet");
        t.wait().await;
        // A wake-up seen more than a step late (a busy machine) has the kernel already past
        // the next grid point, so arming that point rightly goes one-shot: the periodic
        // checks below apply only when the last wake-up came in time.
        let in_time = |next: Instant| Instant::now() < next;
        // The next grid point after the one that fired: periodic.
        let on_time = in_time(start + step);
        t.arm(start + step);
        assert!(t.is_periodic() || !on_time);
        for k in 1..=5u32 {
            let on_time = in_time(start + step * k);
            t.arm(start + step * k);
            assert!(
                t.is_periodic() || !on_time,
                "the grid point the kernel fires at next"
            );
            t.wait().await;
            assert!(
                Instant::now() >= start + step * k,
                "fires at or after its deadline"
            );
        }
        // A later deadline (the loop goes quiet): one-shot again, and it waits that long.
        let later = start + step * 20;
        t.arm(later);
        assert!(!t.is_periodic());
        t.wait().await;
        assert!(Instant::now() >= later);
        // A periodic timer that is asked for an earlier instant fires then.
        let on_time = in_time(later + step);
        t.arm(later + step);
        assert!(t.is_periodic() || !on_time);
        let soon = Instant::now();
        t.arm(soon);
        assert!(!t.is_periodic());
        t.wait().await;
        assert!(Instant::now() >= soon);
    }

    #[tokio::test]
    async fn a_periodic_timer_that_missed_steps_moves_on_to_the_next_one() {
        let step = Duration::from_millis(1);
        let mut t = WakeTimer::new().with_grid(step);
        if !t.is_precise() {
            return;
        }
        let start = Instant::now() + Duration::from_millis(1);
        t.arm(start);
        t.wait().await;
        t.arm(start + step);
        assert!(t.is_periodic());
        // The loop is busy for several steps: the next wait returns at once (deadlines passed),
        // and the timer's next deadline is the first grid point still to come.
        std::thread::sleep(Duration::from_millis(5));
        t.wait().await;
        let now = Instant::now();
        let next = t.armed.unwrap();
        assert!(
            next > start + step * 5,
            "missed points skipped: {:?}",
            next - start
        );
        assert!(next <= now + step, "the first point after now");
        assert_eq!(
            (next - start).as_nanos() % step.as_nanos(),
            0,
            "on the grid"
        );
        t.arm(next);
        assert!(t.is_periodic(), "and it stays periodic");
    }
}
