//! Thread scheduling hints for the threads around the media thread.
//!
//! The media thread's frames have play-out deadlines; the sink threads (recorders, feeds) only
//! have rings to drain, which absorb seconds of delay. On a saturated core the scheduler should
//! therefore run the media thread first. Lowering the sink threads' priority (a higher nice
//! value) needs no privilege, unlike raising the media thread's, so that is what the engine does.

use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The origin of every wake-up grid in the process: the media thread's play-out grid and the
/// sink threads' drain waits count their steps from this one instant.
///
/// Why one origin: threads whose timed waits end on the same instants share one timer
/// interrupt and one exit from idle, where waits on their own phases cost one each. In a VM
/// each of those is a trip through the hypervisor: 40 threads sleeping 20 ms on staggered
/// phases cost 19 µs of CPU per wake-up on this machine, on one common phase 11 µs
/// (`docs/performance.md`). Fixed at its first use.
pub fn grid_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The first point of the process's `step` grid ([`grid_epoch`]) strictly after `now`; `now`
/// itself with a zero step.
pub fn next_grid_point(now: Instant, step: Duration) -> Instant {
    next_point_after(grid_epoch(), now, step)
}

/// The first point of the grid `epoch + k * step` (any integer `k`) strictly after `t`; `t`
/// itself with a zero step. Before `epoch` the grid extends backwards (an instant read before
/// another thread fixed the origin). Far-out points saturate at 584 years (u64 nanoseconds).
pub fn next_point_after(epoch: Instant, t: Instant, step: Duration) -> Instant {
    let step_ns = step.as_nanos();
    if step_ns == 0 {
        return t;
    }
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    if t < epoch {
        let back = (epoch - t).as_nanos();
        return epoch - nanos((back - 1) / step_ns * step_ns);
    }
    let since = (t - epoch).as_nanos();
    epoch + nanos((since / step_ns + 1).saturating_mul(step_ns))
}

/// Sets the calling thread's nice value (Linux: per thread). Values are clamped to 0..=19; a
/// process may always make its own threads nicer. Elsewhere this does nothing.
///
/// # Errors
/// The OS refused (e.g. a seccomp policy forbids `setpriority`).
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let nice = nice.clamp(0, 19);
        // SAFETY: plain syscalls; `gettid` cannot fail and `setpriority`'s result is checked.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

/// Puts the calling thread under `SCHED_IDLE` (Linux): it runs on what the core's other
/// threads leave, and never preempts them when it wakes. Needs no privilege. Elsewhere an
/// `Unsupported` error.
///
/// # Errors
/// The OS refused (e.g. a seccomp policy forbids `sched_setscheduler`).
pub fn set_current_thread_idle() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread (pid 0); `param` lives for the call.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SCHED_IDLE is Linux only",
        ))
    }
}

/// Puts the calling thread under `SCHED_BATCH` (Linux), keeping its nice value: a fair-share
/// thread that does not preempt others when it wakes. Needs no privilege. Elsewhere an
/// `Unsupported` error.
///
/// # Errors
/// The OS refused (e.g. a seccomp policy forbids `sched_setscheduler`).
pub fn set_current_thread_batch() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread (pid 0); `param` lives for the call.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SCHED_BATCH is Linux only",
        ))
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (clamped to 1..=99). Linux only;
/// elsewhere an `Unsupported` error.
///
/// # Errors
/// The OS refused: without `CAP_SYS_NICE` or a permissive `RLIMIT_RTPRIO`, `EPERM`.
pub fn set_current_thread_realtime(priority: u8) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: i32::from(priority.clamp(1, 99)),
        };
        // SAFETY: plain syscall on the calling thread (pid 0); `param` lives for the call.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "real-time scheduling is only wired up on Linux",
        ))
    }
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
///
/// # Errors
/// The OS refused.
pub fn current_thread_nice() -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls; `getpriority` returns -1 both as a value and as an error, so
        // errno is cleared first and checked after.
        unsafe {
            *libc::__errno_location() = 0;
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let v = libc::getpriority(libc::PRIO_PROCESS, tid);
            if v == -1 && *libc::__errno_location() != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(v)
        }
    }
    #[cfg(not(target_os = "linux"))]
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn real_time_priority_is_granted_or_refused_cleanly() {
        let r = std::thread::spawn(|| {
            let r = set_current_thread_realtime(1);
            // SAFETY: plain query of the calling thread's policy.
            let policy = unsafe { libc::sched_getscheduler(0) };
            (r.map_err(|e| e.kind()), policy)
        })
        .join()
        .unwrap();
        match r {
            (Ok(()), policy) => assert_eq!(policy, libc::SCHED_FIFO),
            (Err(kind), policy) => {
                assert_eq!(kind, io::ErrorKind::PermissionDenied);
                assert_eq!(policy, libc::SCHED_OTHER, "unchanged when refused");
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn batch_and_idle_need_no_privilege_and_keep_the_nice_value() {
        let (batch, nice, idle) = std::thread::spawn(|| {
            set_current_thread_nice(10).unwrap();
            set_current_thread_batch().unwrap();
            // SAFETY: plain query of the calling thread's policy.
            let batch = unsafe { libc::sched_getscheduler(0) };
            let nice = current_thread_nice().unwrap();
            set_current_thread_idle().unwrap();
            // SAFETY: as above.
            let idle = unsafe { libc::sched_getscheduler(0) };
            (batch, nice, idle)
        })
        .join()
        .unwrap();
        assert_eq!(batch, libc::SCHED_BATCH);
        assert_eq!(nice, 10);
        assert_eq!(idle, libc::SCHED_IDLE);
        // SAFETY: as above, on the test's own thread, which nothing changed.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }

    #[test]
    fn a_thread_can_lower_its_own_priority_without_touching_others() {
        let before = current_thread_nice().unwrap();
        let target = (before + 3).min(19);
        let inner = std::thread::spawn(move || {
            set_current_thread_nice(target).unwrap();
            current_thread_nice().unwrap()
        })
        .join()
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(inner, target);
        }
        assert_eq!(
            current_thread_nice().unwrap(),
            before,
            "only that thread changed"
        );
    }

    #[test]
    fn grid_points_are_shared_multiples_of_the_step_after_now() {
        let step = Duration::from_millis(20);
        let now = Instant::now();
        let p = next_grid_point(now, step);
        assert!(p > now && p - now <= step, "within one step after now");
        let since = (p - grid_epoch()).as_nanos();
        assert_eq!(since % step.as_nanos(), 0, "on the process grid");
        // A later instant in the same step maps to the same point; the point itself to the next.
        assert_eq!(next_grid_point(now + (p - now) / 2, step), p);
        assert_eq!(next_grid_point(p, step), p + step);
        // A 10 ms grid contains every 20 ms point: the drain waits meet the play-out grid.
        assert_eq!(
            (next_grid_point(now, Duration::from_millis(10)) - grid_epoch()).as_nanos()
                % 10_000_000,
            0
        );
        assert_eq!(next_grid_point(now, Duration::ZERO), now);
        // Before the origin (an instant read before it was fixed), the grid extends backwards.
        let e = grid_epoch();
        assert_eq!(next_grid_point(e - Duration::from_millis(5), step), e);
        assert_eq!(next_grid_point(e - step, step), e);
        assert_eq!(
            next_grid_point(e - Duration::from_millis(21), step),
            e - step
        );
    }
}
