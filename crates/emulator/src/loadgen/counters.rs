//! Hardware event counters of threads (retired instructions, CPU cycles), through
//! `perf_event_open(2)`.
//!
//! CPU time on a shared VM moves by tens of percent within minutes: the same floor measured
//! 21.6 then 33.1 µs per packet around one step (neighbours' load, clock frequency, cache
//! contention). Retired instructions do not depend on any of that: the same binary doing the
//! same work retires the same count, so an instructions-per-packet ratio can be compared from
//! run to run and machine to machine. Cycles sit in between: they show cache and memory
//! contention but not time the hypervisor took away. The load test reports both, per packet,
//! for the bot (per thread group) and for the floor, next to the CPU-time figures the targets
//! are judged on.
//!
//! Counters are per task (`pid` = a thread id, `cpu` = -1), so they follow a thread across
//! CPUs and count nothing else. Kernel work (the bot's `recvmmsg`, file writes) is counted
//! when the system allows it (`perf_event_paranoid` ≤ 1, or root); otherwise user space only,
//! and the result says so. On machines without a PMU (many containers and some VMs) opening
//! fails with [`CounterError::Unavailable`] and the load test reports "not available".

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::Serialize;

/// `PERF_TYPE_HARDWARE`.
const TYPE_HARDWARE: u32 = 0;
/// `PERF_COUNT_HW_CPU_CYCLES`.
const HW_CPU_CYCLES: u64 = 0;
/// `PERF_COUNT_HW_INSTRUCTIONS`.
const HW_INSTRUCTIONS: u64 = 1;
/// `PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING`: a read returns
/// `[value, enabled, running]`, so a multiplexed counter can be scaled.
const READ_FORMAT: u64 = 1 | 2;
/// `perf_event_attr` flag bits: `exclude_kernel` (bit 5) and `exclude_hv` (bit 6).
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
/// `PERF_FLAG_FD_CLOEXEC`.
const FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// The first version of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER0`, 64 bytes): every
/// kernel since 2.6.31 accepts it, and it holds every field used here.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Why counters could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CounterError {
    /// The machine has no usable hardware counters (no PMU exposed, or `perf_event_paranoid`
    /// forbids even user-space counting of one's own threads).
    #[error("hardware counters not available: {0}")]
    Unavailable(io::Error),
    /// None of the given threads could be counted (all ended before they were opened).
    #[error("no thread could be counted")]
    NoThreads,
    /// A read of an open counter failed.
    #[error("reading a counter: {0}")]
    Read(io::Error),
}

/// One open counter.
#[derive(Debug)]
struct Counter {
    fd: OwnedFd,
}

impl Counter {
    /// Opens a counter of `config` on thread `tid` (0: the calling thread), counting from now.
    fn open(tid: i32, config: u64, kernel: bool) -> io::Result<Self> {
        let attr = PerfEventAttr {
            kind: TYPE_HARDWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            read_format: READ_FORMAT,
            flags: EXCLUDE_HV | if kernel { 0 } else { EXCLUDE_KERNEL },
            ..PerfEventAttr::default()
        };
        // SAFETY: `attr` is a valid, initialized perf_event_attr of the size it declares, and
        // lives across the call; the other arguments are plain integers.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                tid as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) },
        })
    }

    /// The count so far, scaled up when the counter shared the PMU with others (multiplexing).
    fn read(&self) -> io::Result<u64> {
        let mut v = [0u64; 3];
        // SAFETY: `v` is 24 writable bytes, exactly what READ_FORMAT makes the kernel write.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                v.as_mut_ptr().cast::<libc::c_void>(),
                std::mem::size_of_val(&v),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != std::mem::size_of_val(&v) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(scale(v[0], v[1], v[2]))
    }
}

/// A count scaled from the time its counter ran to the time it was enabled.
fn scale(value: u64, enabled: u64, running: u64) -> u64 {
    if running == 0 || running >= enabled {
        value
    } else {
        (value as f64 * enabled as f64 / running as f64).round() as u64
    }
}

/// Instructions and cycles counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Retired instructions.
    pub instructions: u64,
    /// CPU cycles.
    pub cycles: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.instructions += o.instructions;
        self.cycles += o.cycles;
    }
}

impl<'a> std::iter::Sum<&'a Counts> for Counts {
    fn sum<I: Iterator<Item = &'a Counts>>(it: I) -> Self {
        let mut t = Counts::default();
        for c in it {
            t += *c;
        }
        t
    }
}

/// Counters on a set of threads, grouped by a name (a thread group such as `sink-*`).
#[derive(Debug)]
pub struct TaskCounters {
    tasks: Vec<(String, Counter, Counter)>,
    kernel_included: bool,
}

impl TaskCounters {
    /// Starts counting on `tasks` (thread id, group name; id 0 is the calling thread). Threads
    /// that ended meanwhile are skipped; kernel work is counted when the system allows it.
    ///
    /// # Errors
    /// [`CounterError::Unavailable`] when the machine cannot count at all,
    /// [`CounterError::NoThreads`] when every thread had ended.
    pub fn open(tasks: &[(u32, String)]) -> Result<Self, CounterError> {
        let denied = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
        let mut last = None;
        // Kernel work included first; when that is refused, user space only, for every thread
        // alike, so the groups stay comparable.
        for kernel in [true, false] {
            let mut out = Vec::with_capacity(tasks.len());
            let mut first_error = None;
            for (tid, group) in tasks {
                let tid = *tid as i32;
                let pair = Counter::open(tid, HW_INSTRUCTIONS, kernel)
                    .and_then(|i| Ok((i, Counter::open(tid, HW_CPU_CYCLES, kernel)?)));
                match pair {
                    Ok((i, c)) => out.push((group.clone(), i, c)),
                    // The thread ended between the listing and now.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) if kernel && denied(&e) => last = Some(e),
                Some(e) if out.is_empty() => return Err(CounterError::Unavailable(e)),
                _ if out.is_empty() => return Err(CounterError::NoThreads),
                _ => {
                    return Ok(Self {
                        tasks: out,
                        kernel_included: kernel,
                    });
                }
            }
        }
        Err(last.map_or(CounterError::NoThreads, CounterError::Unavailable))
    }

    /// Starts counting the calling thread.
    ///
    /// # Errors
    /// As [`TaskCounters::open`].
    pub fn open_self(group: &str) -> Result<Self, CounterError> {
        Self::open(&[(0, group.to_owned())])
    }

    /// Whether kernel work is in the counts.
    pub fn kernel_included(&self) -> bool {
        self.kernel_included
    }

    /// Threads being counted.
    pub fn threads(&self) -> usize {
        self.tasks.len()
    }

    /// Counts so far, summed per group.
    ///
    /// # Errors
    /// [`CounterError::Read`] when a read fails.
    pub fn read(&self) -> Result<BTreeMap<String, Counts>, CounterError> {
        let mut by_group: BTreeMap<String, Counts> = BTreeMap::new();
        for (group, i, c) in &self.tasks {
            let counts = Counts {
                instructions: i.read().map_err(CounterError::Read)?,
                cycles: c.read().map_err(CounterError::Read)?,
            };
            *by_group.entry(group.clone()).or_default() += counts;
        }
        Ok(by_group)
    }

    /// Counts so far, all groups together.
    ///
    /// # Errors
    /// As [`TaskCounters::read`].
    pub fn read_total(&self) -> Result<Counts, CounterError> {
        Ok(self.read()?.values().sum())
    }
}

/// Per-packet figures from counts over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerPacket {
    /// Instructions per packet.
    pub instructions: f64,
    /// Cycles per packet.
    pub cycles: f64,
}

impl PerPacket {
    /// `counts` spread over `packets` (None when no packet).
    pub fn new(counts: Counts, packets: u64) -> Option<Self> {
        (packets > 0).then(|| Self {
            instructions: counts.instructions as f64 / packets as f64,
            cycles: counts.cycles as f64 / packets as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_attr_is_the_first_abi_version() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
    }

    #[test]
    fn multiplexed_counts_are_scaled_to_the_enabled_time() {
        assert_eq!(scale(100, 10, 10), 100);
        assert_eq!(scale(100, 20, 10), 200);
        assert_eq!(scale(100, 0, 0), 100);
        assert_eq!(scale(7, 5, 0), 7);
    }

    #[test]
    fn per_packet_divides_and_refuses_zero_packets() {
        let c = Counts {
            instructions: 1000,
            cycles: 500,
        };
        assert_eq!(
            PerPacket::new(c, 10),
            Some(PerPacket {
                instructions: 100.0,
                cycles: 50.0
            })
        );
        assert_eq!(PerPacket::new(c, 0), None);
    }

    /// Where the machine has counters, more work retires proportionally more instructions;
    /// where it has none, the error says so (and the load test reports "not available").
    #[test]
    fn counting_own_work_scales_with_the_work_or_reports_unavailable() {
        let spin = |n: u64| {
            let mut x = 0u64;
            for i in 0..n {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            x
        };
        let count = |n: u64| -> Result<u64, CounterError> {
            let c = TaskCounters::open_self("me")?;
            spin(n);
            Ok(c.read_total()?.instructions)
        };
        match (count(1_000_000), count(4_000_000)) {
            (Ok(a), Ok(b)) => {
                assert!(a > 1_000_000, "{a}");
                let r = b as f64 / a as f64;
                assert!((3.0..5.0).contains(&r), "{a} {b} {r}");
            }
            (Err(CounterError::Unavailable(e)), _) => {
                eprintln!("no hardware counters on this machine: {e}");
            }
            (a, b) => panic!("{a:?} {b:?}"),
        }
    }

    #[test]
    fn a_thread_that_does_not_exist_is_skipped() {
        // pid_max is at most 2^22; this id cannot be a live thread.
        match TaskCounters::open(&[(4_194_304 + 17, "gone".into())]) {
            Err(CounterError::NoThreads) | Err(CounterError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
