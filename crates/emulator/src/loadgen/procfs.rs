//! CPU and memory of a process and its threads, from `/proc` (Linux).
//!
//! Parsing is separate from reading so the parsers are tested on fixed text. CPU time comes in
//! clock ticks (`utime + stime`, `sysconf(_SC_CLK_TCK)` per second, usually 100): over a 10 s
//! window that is a resolution of 0.1 % of a core.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

/// CPU time of one task (process or thread) from a `stat` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    /// `comm`, the task's name (at most 15 bytes on Linux).
    pub comm: String,
    /// User plus system time, in clock ticks.
    pub ticks: u64,
}

/// Parses `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`. The name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<TaskStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), so utime is the 12th.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(TaskStat {
        comm,
        ticks: utime + stime,
    })
}

/// `VmRSS` in KiB from `/proc/<pid>/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `voluntary_ctxt_switches` from a `status` file.
pub fn parse_voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Nanoseconds a thread has waited on a run queue (runnable, not running), the second field of
/// `/proc/<pid>/task/<tid>/schedstat`.
pub fn parse_schedstat_wait_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// A thread's group name, so that per-call threads add up: `sink-50efdf7d-c` (a sink named
/// after its call) and `sink-3` count as `sink-*`; names without digits after their first `-`
/// (`mediabot-udp`, `tokio-runtime-w`, `feed-file`) stay as they are.
pub fn thread_group(comm: &str) -> String {
    match comm.split_once('-') {
        Some((head, tail)) if tail.chars().any(|c| c.is_ascii_digit()) => format!("{head}-*"),
        _ => {
            let trimmed = comm.trim_end_matches(|c: char| c.is_ascii_digit());
            if trimmed.len() < comm.len() {
                format!("{trimmed}*")
            } else {
                comm.to_owned()
            }
        }
    }
}

/// Clock ticks per second.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// One reading of a process.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// Process CPU ticks (all threads, including ones that ended).
    pub process_ticks: u64,
    /// Per live thread: (tid, name, ticks).
    pub threads: Vec<(u32, String, u64)>,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Per live thread: voluntary context switches so far (each is a sleep, so the next run is
    /// a wake-up), from `task/<tid>/status`.
    pub sleeps: BTreeMap<u32, u64>,
    /// Per live thread: nanoseconds spent runnable but not running so far, from
    /// `task/<tid>/schedstat` (absent where the kernel has no schedstat).
    pub runq_wait_ns: BTreeMap<u32, u64>,
}

/// Reads a process's CPU and memory now.
///
/// # Errors
/// The process is gone or `/proc` is not readable.
pub fn snapshot(pid: u32) -> std::io::Result<Snapshot> {
    let base = Path::new("/proc").join(pid.to_string());
    let bad = |what: &str| std::io::Error::other(format!("cannot parse {what} of pid {pid}"));
    let stat = std::fs::read_to_string(base.join("stat"))?;
    let process_ticks = parse_stat(&stat).ok_or_else(|| bad("stat"))?.ticks;
    let status = std::fs::read_to_string(base.join("status"))?;
    let rss_kib = parse_vm_rss_kib(&status).ok_or_else(|| bad("status"))?;
    let mut threads = Vec::new();
    let mut sleeps = BTreeMap::new();
    let mut runq_wait_ns = BTreeMap::new();
    for e in std::fs::read_dir(base.join("task"))?.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may end between listing and reading: skip it.
        if let Ok(s) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(t) = parse_stat(&s)
        {
            threads.push((tid, t.comm, t.ticks));
            if let Some(n) = std::fs::read_to_string(e.path().join("status"))
                .ok()
                .as_deref()
                .and_then(parse_voluntary_switches)
            {
                sleeps.insert(tid, n);
            }
            if let Some(w) = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_schedstat_wait_ns)
            {
                runq_wait_ns.insert(tid, w);
            }
        }
    }
    Ok(Snapshot {
        at: Instant::now(),
        process_ticks,
        threads,
        rss_kib,
        sleeps,
        runq_wait_ns,
    })
}

/// CPU use between two snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// Wall seconds between the snapshots.
    pub wall_secs: f64,
    /// Process CPU in cores (1.0 = one core busy all the time).
    pub process_cores: f64,
    /// Per thread group (see [`thread_group`]): cores.
    pub threads: BTreeMap<String, f64>,
    /// Per thread group: wake-ups per second (voluntary context switches; threads alive at
    /// both ends of the window).
    pub wakes_per_sec: BTreeMap<String, f64>,
    /// Per thread group: seconds spent runnable but not running, per second of the window
    /// (threads alive at both ends): what contention for the core costs each group. A sink
    /// group that waits long falls behind and its rings fill.
    pub runqueue_wait: BTreeMap<String, f64>,
}

impl CpuUse {
    /// Wake-ups per second of all threads together.
    pub fn total_wakes_per_sec(&self) -> f64 {
        self.wakes_per_sec.values().sum()
    }
}

/// CPU use from `a` to `b` (same process).
pub fn cpu_between(a: &Snapshot, b: &Snapshot, ticks_per_sec: u64) -> CpuUse {
    let wall = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let hz = ticks_per_sec.max(1) as f64;
    let cores = |t: u64| t as f64 / hz / wall;
    let before: BTreeMap<u32, u64> = a.threads.iter().map(|(t, _, v)| (*t, *v)).collect();
    let mut threads: BTreeMap<String, f64> = BTreeMap::new();
    let mut wakes_per_sec: BTreeMap<String, f64> = BTreeMap::new();
    let mut runqueue_wait: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, comm, ticks) in &b.threads {
        // A thread born inside the window counts from zero.
        let d = ticks.saturating_sub(before.get(tid).copied().unwrap_or(0));
        *threads.entry(thread_group(comm)).or_default() += cores(d);
        if let (Some(s0), Some(s1)) = (a.sleeps.get(tid), b.sleeps.get(tid)) {
            *wakes_per_sec.entry(thread_group(comm)).or_default() +=
                s1.saturating_sub(*s0) as f64 / wall;
        }
        if let (Some(w0), Some(w1)) = (a.runq_wait_ns.get(tid), b.runq_wait_ns.get(tid)) {
            *runqueue_wait.entry(thread_group(comm)).or_default() +=
                w1.saturating_sub(*w0) as f64 / 1e9 / wall;
        }
    }
    CpuUse {
        wall_secs: wall,
        process_cores: cores(b.process_ticks.saturating_sub(a.process_ticks)),
        threads,
        wakes_per_sec,
        runqueue_wait,
    }
}

/// One CPU's time from `/proc/stat`, in jiffies since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// All but idle and iowait (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// Everything (the first eight fields; guest time is inside user).
    pub total: u64,
    /// Interrupt handling: irq + softirq. On the bot's CPU this is mostly loopback receive
    /// processing of the bot's own sends and disk completions, not the bot's threads.
    pub interrupts: u64,
    /// Steal: the hypervisor ran something else while this virtual CPU wanted to run.
    pub steal: u64,
}

/// Per-CPU [`CpuTimes`] from the text of `/proc/stat`.
pub fn parse_cpu_times(stat: &str) -> BTreeMap<usize, CpuTimes> {
    let mut out = BTreeMap::new();
    for line in stat.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(n) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let field = |i: usize| v.get(i).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        let idle = field(3) + field(4);
        out.insert(
            n,
            CpuTimes {
                busy: total - idle,
                total,
                interrupts: field(5) + field(6),
                steal: field(7),
            },
        );
    }
    out
}

/// [`parse_cpu_times`] of this machine now (empty when unreadable).
pub fn cpu_times() -> BTreeMap<usize, CpuTimes> {
    std::fs::read_to_string("/proc/stat")
        .map(|s| parse_cpu_times(&s))
        .unwrap_or_default()
}

/// Busy fraction per CPU between two [`cpu_times`] readings.
pub fn busy_between(
    a: &BTreeMap<usize, CpuTimes>,
    b: &BTreeMap<usize, CpuTimes>,
) -> BTreeMap<usize, f64> {
    share_between(a, b, |t| t.busy)
}

/// The fraction of each CPU's time between two [`cpu_times`] readings that `part` counts
/// (e.g. `|t| t.steal`).
pub fn share_between(
    a: &BTreeMap<usize, CpuTimes>,
    b: &BTreeMap<usize, CpuTimes>,
    part: impl Fn(&CpuTimes) -> u64,
) -> BTreeMap<usize, f64> {
    b.iter()
        .filter_map(|(cpu, t1)| {
            let t0 = a.get(cpu)?;
            let dt = t1.total.checked_sub(t0.total)?;
            (dt > 0).then(|| (*cpu, part(t1).saturating_sub(part(t0)) as f64 / dt as f64))
        })
        .collect()
}

/// Pins thread `tid` (0 = the calling thread) to one CPU.
///
/// # Errors
/// The kernel refused (no such CPU, or not permitted).
pub fn pin_thread(tid: u32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins every current thread of this process to `cpu` (threads started later by them
/// inherit it). Returns how many threads were pinned.
///
/// # Errors
/// `/proc/self/task` unreadable, or the kernel refused.
pub fn pin_self(cpu: usize) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/task")?.flatten() {
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            pin_thread(tid, cpu)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Number of CPUs online (of the machine, whatever this process's affinity).
pub fn cpus_online() -> usize {
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STAT: &str = "4242 (sink-3 (x)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_counts_fields_after_the_last_paren() {
        let t = parse_stat(STAT).unwrap();
        assert_eq!(t.comm, "sink-3 (x)");
        assert_eq!(t.ticks, 325);
        assert!(parse_stat("12 (x) S 1 2").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn vm_rss_and_groups() {
        let status = "Name:\tmediabot\nVmPeak:\t 9000 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(51234));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        assert_eq!(thread_group("sink-12"), "sink-*");
        assert_eq!(thread_group("mediabot-udp"), "mediabot-udp");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_group("sink-50efdf7d-c"), "sink-*");
        assert_eq!(thread_group("worker7"), "worker*");
    }

    #[test]
    fn cpu_between_splits_by_thread_group() {
        let t0 = Instant::now();
        let a = Snapshot {
            at: t0,
            process_ticks: 100,
            threads: vec![(1, "main".into(), 50), (2, "sink-1".into(), 10)],
            rss_kib: 1,
            sleeps: BTreeMap::from([(1, 100), (2, 1000)]),
            runq_wait_ns: BTreeMap::from([(1, 0), (2, 1_000_000_000)]),
        };
        let b = Snapshot {
            at: t0 + std::time::Duration::from_secs(2),
            process_ticks: 200,
            threads: vec![
                (1, "main".into(), 70),
                (2, "sink-1".into(), 30),
                (3, "sink-2".into(), 60),
            ],
            rss_kib: 2,
            sleeps: BTreeMap::from([(1, 100), (2, 1100), (3, 9999)]),
            runq_wait_ns: BTreeMap::from([(1, 200_000_000), (2, 1_600_000_000), (3, 5)]),
        };
        let c = cpu_between(&a, &b, 100);
        assert!((c.process_cores - 0.5).abs() < 1e-9);
        assert!((c.threads["main"] - 0.1).abs() < 1e-9);
        assert!((c.threads["sink-*"] - 0.4).abs() < 1e-9);
        // Thread 3 was born inside the window: its sleeps are not counted.
        assert_eq!(c.wakes_per_sec["sink-*"], 50.0);
        assert_eq!(c.wakes_per_sec["main"], 0.0);
        assert_eq!(c.total_wakes_per_sec(), 50.0);
        // Waited 0.2 s and 0.6 s over 2 s; thread 3 not counted.
        assert!((c.runqueue_wait["main"] - 0.1).abs() < 1e-9);
        assert!((c.runqueue_wait["sink-*"] - 0.3).abs() < 1e-9);
        assert_eq!(
            parse_schedstat_wait_ns("808577451 110928777 1557\n"),
            Some(110_928_777)
        );
        assert_eq!(parse_schedstat_wait_ns("0\n"), None);
        assert_eq!(
            parse_voluntary_switches(
                "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t3\n"
            ),
            Some(42)
        );
    }

    #[test]
    fn per_cpu_busy_from_proc_stat() {
        let a = parse_cpu_times(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 1 2 3 0 0\nintr 1\n",
        );
        let b = parse_cpu_times(
            "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 55 0 5 90 0 0 0 0 0 0\ncpu1 5 0 5 120 0 11 12 23 0 0\n",
        );
        assert_eq!(a[&0].busy, 10);
        assert_eq!(a[&0].total, 50);
        assert_eq!((a[&1].interrupts, a[&1].steal), (3, 3));
        let busy = busy_between(&a, &b);
        assert!((busy[&0] - 0.5).abs() < 1e-9);
        // cpu1: 120 jiffies passed, 80 idle, 20 in irq + softirq, 20 stolen.
        assert!((busy[&1] - 40.0 / 120.0).abs() < 1e-9);
        assert_eq!(busy.len(), 2);
        let irq = share_between(&a, &b, |t| t.interrupts);
        let steal = share_between(&a, &b, |t| t.steal);
        assert!((irq[&1] - 20.0 / 120.0).abs() < 1e-9 && irq[&0].abs() < 1e-9);
        assert!((steal[&1] - 20.0 / 120.0).abs() < 1e-9);
    }

    #[test]
    fn reads_this_process() {
        let s = snapshot(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(!s.threads.is_empty());
    }
}
