//! Prometheus text exposition (format 0.0.4), written by hand.
//!
//! The media crate keeps its counters in atomics that the media thread updates without locks;
//! the engine reads them only when `/metrics` is scraped and writes them out here. Engine-level
//! latencies (notification handling, Graph requests) use [`Histogram`], a fixed-bucket atomic
//! histogram that is cheap to observe from any task.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Builds one exposition body. Each metric family is announced once with HELP and TYPE.
#[derive(Debug, Default)]
pub struct PromWriter {
    out: String,
    announced: Vec<&'static str>,
}

/// Prometheus metric type of a family.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
}

impl PromWriter {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one sample of `name` with `labels` (label values are escaped).
    pub fn sample(
        &mut self,
        name: &'static str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.announce(
            name,
            help,
            match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            },
        );
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", fmt_value(value));
    }

    /// Writes a histogram family sample set (`_bucket`, `_sum`, `_count`).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        h: &Histogram,
    ) {
        self.announce(name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, le) in h.bounds.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&fmt_value(*le)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = write!(self.out, "{name}_bucket");
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(
            self.out,
            " {}",
            fmt_value(h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
        );
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    /// Writes a histogram family from cumulative buckets `(upper bound seconds, count below)`,
    /// ascending and ending with the `+Inf` bucket (whose count is the total), and the sum.
    pub fn histogram_cumulative(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        cumulative: impl IntoIterator<Item = (f64, u64)>,
        sum_secs: f64,
    ) {
        self.announce(name, help, "histogram");
        let mut count = 0;
        for (le, n) in cumulative {
            let _ = write!(self.out, "{name}_bucket");
            let le = if le.is_finite() {
                fmt_value(le)
            } else {
                "+Inf".to_string()
            };
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {n}");
            count = n;
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", fmt_value(sum_secs));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    /// The finished body.
    pub fn finish(self) -> String {
        self.out
    }

    fn announce(&mut self, name: &'static str, help: &str, kind: &str) {
        if !self.announced.contains(&name) {
            self.announced.push(name);
            let _ = writeln!(
                self.out,
                "# HELP {name} {}",
                help.replace('\\', "\\\\").replace('\n', "\\n")
            );
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        let _ = write!(out, "le=\"{le}\"");
    }
    out.push('}');
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A latency histogram with fixed bucket bounds in seconds, observed lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Buckets from 0.5 ms to 10 s, suited to request and notification latencies.
    pub fn latency() -> Self {
        Self::with_bounds(&[
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }

    /// A histogram with the given increasing upper bounds (seconds).
    pub fn with_bounds(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_families_once_with_escaped_labels_and_cumulative_buckets() {
        let mut w = PromWriter::new();
        w.sample("mediabot_calls", "Active calls.", Kind::Gauge, &[], 3.0);
        w.sample(
            "mediabot_packets_lost_total",
            "Lost.",
            Kind::Counter,
            &[("call", "a\"b")],
            7.0,
        );
        w.sample(
            "mediabot_packets_lost_total",
            "Lost.",
            Kind::Counter,
            &[("call", "c")],
            1.0,
        );
        let h = Histogram::with_bounds(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        w.histogram("mediabot_webhook_seconds", "Webhook latency.", &[], &h);
        let body = w.finish();
        assert_eq!(
            body.matches("# TYPE mediabot_packets_lost_total counter")
                .count(),
            1
        );
        assert!(
            body.contains("mediabot_packets_lost_total{call=\"a\\\"b\"} 7\n"),
            "{body}"
        );
        assert!(
            body.contains("mediabot_webhook_seconds_bucket{le=\"0.001\"} 1\n"),
            "{body}"
        );
        assert!(
            body.contains("mediabot_webhook_seconds_bucket{le=\"0.01\"} 2\n"),
            "{body}"
        );
        assert!(
            body.contains("mediabot_webhook_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{body}"
        );
        assert!(
            body.contains("mediabot_webhook_seconds_count 3\n"),
            "{body}"
        );
    }
}
