//! Counters that the media thread bumps and any other thread reads, with relaxed atomics: a
//! metrics scrape never takes a lock the media thread could wait on.
//!
//! A [`StreamStats`] (one per SSRC) and a [`CallStats`] (one per call) are shared through an
//! `Arc`; [`StreamStats::snapshot`] copies them into a plain struct.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Frames (per-speaker and mixed) that a sink ring had no room for, summed over every call
/// of the process since it started: audio a recorder or feed will never see. The per-stream
/// and per-call counters carry the same drops but end with their call; this one is what a
/// metrics scrape reads while calls run (`mediabot_ring_frames_dropped_total`).
pub static RING_FRAMES_DROPPED: AtomicU64 = AtomicU64::new(0);

macro_rules! counters {
    ($(#[$smeta:meta])* $shared:ident, $(#[$nmeta:meta])* $snap:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$smeta])*
        #[derive(Debug, Default)]
        pub struct $shared {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }

        $(#[$nmeta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $snap {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $shared {
            /// Copies every counter (each read is atomic; the set is not one instant).
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Per-stream (per-SSRC) counters, written by the media thread only.
    StreamStats,
    /// A copy of [`StreamStats`] at one moment.
    StreamStatsSnapshot {
        /// RTP packets accepted into the stream (after header validation).
        received,
        /// Packets never received (RFC 3550 A.3: expected minus received, floor 0).
        lost,
        /// 20 ms (or packet-sized) frames synthesized by Opus packet-loss concealment.
        concealed,
        /// Lost frames rebuilt from in-band FEC carried by the next packet.
        fec_recovered,
        /// Packets that arrived after their play-out slot had passed.
        late,
        /// Packets received twice.
        duplicate,
        /// Packets dropped because the jitter buffer was full or they were too far ahead.
        overflow,
        /// Payloads libopus refused.
        decode_errors,
        /// Packets with a payload type other than the stream's Opus type.
        unknown_payload_type,
        /// Frames a sink ring had no room for (summed over sinks).
        dropped_at_ring,
        /// Frames produced for this stream.
        frames_out,
        /// Samples of exact silence inserted for DTX and short pauses.
        silence_samples,
        /// Times the stream was re-anchored on the timeline (gap too long, clock jump).
        resyncs,
        /// Sender restarts (sequence jump confirmed by consecutive packets, RFC 3550 A.1).
        restarts,
        /// RFC 3550 interarrival jitter, in microseconds (a gauge).
        jitter_us,
        /// Current jitter-buffer target delay, in microseconds (a gauge).
        buffer_delay_us,
        /// Current drift correction in parts per billion, offset by 2^32 so it stays unsigned
        /// (a gauge; use [`StreamStatsSnapshot::drift_ppb`]).
        drift_ppb_biased,
        /// Sender reports received.
        sender_reports,
    }
}

counters! {
    /// Per-call counters.
    CallStats,
    /// A copy of [`CallStats`] at one moment.
    CallStatsSnapshot {
        /// Datagrams that failed RTP/RTCP parsing.
        malformed,
        /// Packets for a new SSRC refused because the call already has its maximum of streams.
        streams_refused,
        /// Streams created.
        streams_created,
        /// Mixed frames produced.
        mixed_frames,
        /// Per-speaker frames that reached the mixer after their slot was mixed.
        late_for_mix,
        /// Mixed frames a sink ring had no room for.
        mixed_dropped_at_ring,
        /// PCM frames refused (bad rate, size, or source).
        pcm_rejected,
        /// Dominant speaker changes.
        dominant_changes,
        /// Sink rings replaced by larger ones as streams arrived (`RingGrowth`).
        rings_grown,
    }
}

impl StreamStats {
    /// Adds `n` to a pipeline counter. Each of these counters has one writer, the thread that
    /// holds the pipeline (`&mut`; all callers are in `pipeline.rs` and `stream.rs`), so a
    /// plain load and store suffice: a reader (metrics) still sees whole values, and the
    /// per-packet path pays no `lock`-prefixed read-modify-write (a full barrier on x86, ~20
    /// cycles, several per packet). A counter written from two threads would lose counts here.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Ordering::Relaxed);
    }
}

const DRIFT_BIAS: i64 = 1 << 32;

impl StreamStats {
    pub(crate) fn set_drift_ppb(&self, ppb: i64) {
        let biased = ppb.saturating_add(DRIFT_BIAS).max(0) as u64;
        self.drift_ppb_biased.store(biased, Ordering::Relaxed);
    }
}

impl StreamStatsSnapshot {
    /// Drift correction applied to this stream, parts per billion (positive: the sender's
    /// clock runs slow, so its audio is stretched).
    pub fn drift_ppb(&self) -> i64 {
        if self.drift_ppb_biased == 0 {
            return 0;
        }
        self.drift_ppb_biased as i64 - DRIFT_BIAS
    }
}

/// Sub-buckets per decade of [`LatencyHistogram`]: bucket bounds have two significant digits
/// (1.0, 1.1, … 9.9 × 10^k ns), so a bucket is at most 10 % wide and every two-digit value
/// such as 2 ms or 25 µs is an exact bound.
const PER_DECADE: usize = 90;
/// Decades covered: 1 µs (10^3 ns) up to 10 s (10^10 ns).
const FIRST_DECADE: u32 = 3;
const DECADES: usize = 7;
/// Buckets: one below 1 µs, the log-linear ones, one at or above 10 s.
pub const LATENCY_BUCKETS: usize = DECADES * PER_DECADE + 2;

/// A lock-free latency histogram: fixed log-linear buckets from 1 µs to 10 s, relaxed atomic
/// counters. [`LatencyHistogram::record`] is a few atomic adds and never allocates or locks,
/// so it stays on in the real-time path; any thread may [`LatencyHistogram::snapshot`] it.
///
/// Buckets are `[m, m + 1) × 10^(k-1)` ns for `m` in 10..=99 and `k` in 3..=9 (two
/// significant digits), plus `[0, 1 µs)` and `[10 s, ∞)`. A quantile is reported as the upper
/// bound of its bucket (capped at the largest value recorded), so it overestimates by at most
/// 10 % (1 % at the top of a decade) and never underestimates.
///
/// ```
/// use mediabot_media::stats::LatencyHistogram;
/// use std::time::Duration;
///
/// let h = LatencyHistogram::new();
/// for us in 1..=100 {
///     h.record(Duration::from_micros(us * 10));
/// }
/// let s = h.snapshot();
/// assert_eq!(s.count, 100);
/// let p99 = s.quantile(0.99);
/// assert!(p99 >= Duration::from_micros(990) && p99 <= Duration::from_micros(1000));
/// ```
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64; LATENCY_BUCKETS]>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("LatencyHistogram")
            .field("count", &s.count)
            .field("p50", &s.quantile(0.5))
            .field("p99", &s.quantile(0.99))
            .field("max", &s.max)
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (one allocation of about 5 KiB).
    pub fn new() -> Self {
        LatencyHistogram {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Counts one latency.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Counts one latency given in nanoseconds.
    pub fn record_ns(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// [`LatencyHistogram::record_ns`] for a histogram with one writer thread (a call's
    /// [`CallLatency`], written by the thread that holds its pipeline): plain loads and stores
    /// instead of two `lock`-prefixed adds and a compare-exchange loop, three histograms per
    /// frame. Readers see whole values; two writers would lose counts.
    pub(crate) fn record_ns_single_writer(&self, ns: u64) {
        StreamStats::add(&self.buckets[bucket_of(ns)], 1);
        StreamStats::add(&self.sum_ns, ns);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// Copies the histogram (each counter is read atomically; the set is not one instant).
    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        LatencySnapshot {
            count: buckets.iter().sum(),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
            max: Duration::from_nanos(self.max_ns.load(Ordering::Relaxed)),
            buckets,
        }
    }
}

/// Index of the bucket holding `ns`.
fn bucket_of(ns: u64) -> usize {
    if ns < 1_000 {
        return 0;
    }
    let mut scale = 100u64; // 10^(k-1) for the decade [10^k, 10^(k+1)), k starting at 3
    for d in 0..DECADES {
        let top = scale * 100; // 10^(k+1)
        if ns < top {
            let m = (ns / scale) as usize; // 10..=99
            return 1 + d * PER_DECADE + (m - 10);
        }
        scale *= 10;
    }
    LATENCY_BUCKETS - 1
}

/// Upper bound (exclusive) of bucket `i`, in nanoseconds; `None` for the last (unbounded) one.
fn bucket_upper_ns(i: usize) -> Option<u64> {
    if i == 0 {
        return Some(1_000);
    }
    if i >= LATENCY_BUCKETS - 1 {
        return None;
    }
    let d = (i - 1) / PER_DECADE;
    let m = ((i - 1) % PER_DECADE + 10) as u64;
    Some((m + 1) * 10u64.pow(FIRST_DECADE - 1 + d as u32))
}

/// Bucket bounds (seconds) that suit a Prometheus histogram of media latencies: each is an
/// exact [`LatencyHistogram`] bucket bound, so [`LatencySnapshot::cumulative_at`] is exact.
pub const PROMETHEUS_BOUNDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A copy of a [`LatencyHistogram`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySnapshot {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
    /// The largest value recorded.
    pub max: Duration,
    buckets: Vec<u64>,
}

impl std::fmt::Debug for LatencySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySnapshot")
            .field("count", &self.count)
            .field("mean", &self.mean())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        LatencySnapshot {
            count: 0,
            sum: Duration::ZERO,
            max: Duration::ZERO,
            buckets: vec![0; LATENCY_BUCKETS],
        }
    }
}

impl LatencySnapshot {
    /// The `q` quantile (0..=1): the upper bound of the bucket holding the value of rank
    /// `ceil(q × count)`, capped at [`LatencySnapshot::max`]. Zero when empty. At most 10 %
    /// above the true value, never below it.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return match bucket_upper_ns(i) {
                    Some(ub) => Duration::from_nanos(ub).min(self.max),
                    None => self.max,
                };
            }
        }
        self.max
    }

    /// Mean value (zero when empty).
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        self.sum / u32::try_from(self.count).unwrap_or(u32::MAX).max(1)
    }

    /// Adds `other` into this one (e.g. all calls of a process, or all streams of a run).
    pub fn merge(&mut self, other: &LatencySnapshot) {
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// Every bucket as `(upper_bound_seconds, cumulative_count)`, the last with an infinite
    /// bound and the total count (Prometheus' `le` semantics: values below the bound; exact at
    /// bucket bounds).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut acc = 0;
        self.buckets.iter().enumerate().map(move |(i, n)| {
            acc += n;
            let ub = bucket_upper_ns(i).map_or(f64::INFINITY, |ns| ns as f64 / 1e9);
            (ub, acc)
        })
    }

    /// For each bound (seconds, ascending), the count of values below it, then
    /// `(+Inf, count)`: a Prometheus histogram in a few lines. Exact when the bounds are
    /// bucket bounds (any two-significant-digit value from 1 µs to 10 s, e.g.
    /// [`PROMETHEUS_BOUNDS`]); other bounds are rounded down to a bucket bound.
    pub fn cumulative_at<'a>(&'a self, bounds: &'a [f64]) -> impl Iterator<Item = (f64, u64)> + 'a {
        bounds
            .iter()
            .map(|&b| {
                let ns = (b * 1e9).round();
                let n: u64 = if ns <= 0.0 {
                    0
                } else {
                    // Buckets whose upper bound is at or below the bound are wholly below it.
                    self.buckets
                        .iter()
                        .enumerate()
                        .take_while(|(i, _)| bucket_upper_ns(*i).is_some_and(|ub| ub as f64 <= ns))
                        .map(|(_, n)| n)
                        .sum()
                };
                (b, n)
            })
            .chain(std::iter::once((f64::INFINITY, self.count)))
    }
}

/// Frame latencies of one call, recorded by the pipeline on the media thread and readable from
/// any thread. Only frames decoded from a received packet count (concealed and FEC frames do
/// not); all times are on the pipeline's clock ([`crate::CallConfig::with_clock`]). See
/// `docs/media-pipeline.md` for the exact definitions.
#[derive(Debug, Default)]
pub struct CallLatency {
    /// Packet arrival (the instant given to ingest) to the frame's push into the sink rings.
    pub end_to_end: LatencyHistogram,
    /// The part of `end_to_end` spent deliberately waiting in the jitter buffer:
    /// `max(0, play-out deadline - arrival)`.
    pub jitter_hold: LatencyHistogram,
    /// From `max(arrival, play-out deadline)` to the push: queueing and work, not buffering.
    pub processing: LatencyHistogram,
}

/// A copy of a [`CallLatency`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallLatencySnapshot {
    /// See [`CallLatency::end_to_end`].
    pub end_to_end: LatencySnapshot,
    /// See [`CallLatency::jitter_hold`].
    pub jitter_hold: LatencySnapshot,
    /// See [`CallLatency::processing`].
    pub processing: LatencySnapshot,
}

impl CallLatency {
    /// Copies the three histograms.
    pub fn snapshot(&self) -> CallLatencySnapshot {
        CallLatencySnapshot {
            end_to_end: self.end_to_end.snapshot(),
            jitter_hold: self.jitter_hold.snapshot(),
            processing: self.processing.snapshot(),
        }
    }

    /// Records one frame from its packet's arrival, play-out deadline and push instant
    /// (seconds on one clock).
    pub(crate) fn record_frame(&self, arrival: f64, due: f64, pushed: f64) {
        let ns = |s: f64| (s.max(0.0) * 1e9) as u64;
        // Only the pipeline's thread records frames (`&mut` pipeline, `pub(crate)`).
        self.end_to_end
            .record_ns_single_writer(ns(pushed - arrival));
        self.jitter_hold.record_ns_single_writer(ns(due - arrival));
        self.processing
            .record_ns_single_writer(ns(pushed - arrival.max(due)));
    }
}

impl CallLatencySnapshot {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &CallLatencySnapshot) {
        self.end_to_end.merge(&other.end_to_end);
        self.jitter_hold.merge(&other.jitter_hold);
        self.processing.merge(&other.processing);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_two_digit_bounds_are_exact() {
        // Every bucket's upper bound is the next bucket's lower bound.
        for i in 0..LATENCY_BUCKETS - 1 {
            let ub = bucket_upper_ns(i).unwrap();
            assert_eq!(bucket_of(ub - 1), i, "bucket {i}");
            assert_eq!(bucket_of(ub), i + 1, "bucket {i}");
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_upper_ns(LATENCY_BUCKETS - 1), None);
        assert_eq!(bucket_upper_ns(LATENCY_BUCKETS - 2), Some(10_000_000_000));
        for &b in PROMETHEUS_BOUNDS {
            let ns = (b * 1e9).round() as u64;
            assert_eq!(bucket_upper_ns(bucket_of(ns) - 1), Some(ns), "{b}");
        }
    }

    /// The quantile error bound: for values spread over the whole range (seeded), every
    /// reported quantile is >= the exact one and at most 10 % above it.
    #[test]
    fn quantiles_stay_within_the_error_bound() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..20 {
            let h = LatencyHistogram::new();
            let mut exact = Vec::new();
            let n = 1 + round * 97;
            for _ in 0..n {
                // Log-uniform from 1 µs to 10 s.
                let e: f64 = rng.random_range(3.0..10.0);
                let ns = 10f64.powf(e) as u64;
                h.record_ns(ns);
                exact.push(ns);
            }
            exact.sort_unstable();
            let s = h.snapshot();
            assert_eq!(s.count, n as u64);
            for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                let truth = exact[rank - 1] as f64;
                let got = s.quantile(q).as_nanos() as f64;
                assert!(got >= truth, "q{q}: {got} < {truth}");
                assert!(got <= truth * 1.10 + 1.0, "q{q}: {got} vs {truth}");
            }
            assert_eq!(s.quantile(1.0), s.max);
        }
    }

    #[test]
    fn empty_tiny_and_huge_values() {
        let h = LatencyHistogram::new();
        let s = h.snapshot();
        assert_eq!(s.quantile(0.99), Duration::ZERO);
        assert_eq!(s.mean(), Duration::ZERO);
        h.record(Duration::from_nanos(10));
        h.record(Duration::from_secs(3600));
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Duration::from_micros(1)); // bucket 0's bound
        assert_eq!(s.quantile(1.0), Duration::from_secs(3600));
        let c: Vec<_> = s.cumulative().collect();
        assert_eq!(c.len(), LATENCY_BUCKETS);
        assert_eq!(c[0], (1e-6, 1));
        assert_eq!(c[LATENCY_BUCKETS - 2].1, 1);
        assert_eq!(c[LATENCY_BUCKETS - 1], (f64::INFINITY, 2));
    }

    #[test]
    fn merge_and_prometheus_buckets() {
        let a = LatencyHistogram::new();
        let b = LatencyHistogram::new();
        for us in [5u64, 900, 1_999, 2_000, 2_001, 30_000] {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_millis(1));
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.count, 7);
        assert_eq!(s.max, Duration::from_millis(30));
        let p: Vec<_> = s.cumulative_at(PROMETHEUS_BOUNDS).collect();
        let at = |le: f64| p.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.000_01), 1); // 5 µs
        assert_eq!(at(0.001), 2); // + 900 µs (1 ms itself is not below 1 ms)
        assert_eq!(at(0.002), 4); // + 1 ms, 1.999 ms
        assert_eq!(at(0.005), 6);
        assert_eq!(at(0.05), 7);
        assert_eq!(p.last(), Some(&(f64::INFINITY, 7)));
        assert_eq!(s.mean(), s.sum / 7);
    }

    #[test]
    fn call_latency_splits_hold_and_processing() {
        let l = CallLatency::default();
        // Arrived at 1.000 s, due at 1.030 s, pushed at 1.0305 s.
        l.record_frame(1.0, 1.030, 1.0305);
        // Arrived after its deadline: no hold, processing from arrival.
        l.record_frame(2.0, 1.99, 2.0002);
        let s = l.snapshot();
        assert_eq!(s.end_to_end.count, 2);
        assert!(s.jitter_hold.max >= Duration::from_micros(29_999));
        assert_eq!(s.jitter_hold.quantile(0.0), Duration::from_micros(1)); // the 0 goes below 1 µs
        let p = s.processing;
        assert!(p.max > Duration::from_micros(499) && p.max < Duration::from_micros(501));
        assert!(p.quantile(0.0) >= Duration::from_micros(199));
    }
}
