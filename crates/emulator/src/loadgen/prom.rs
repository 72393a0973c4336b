//! Reading the bot's Prometheus `/metrics`: counters, and percentiles from histogram buckets.
//!
//! A percentile from buckets is an estimate: the rank is located in its bucket and placed by
//! linear interpolation between the bucket's bounds (the first bucket starts at 0). Its error is
//! at most the width of that bucket, which the report states next to each figure.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition body.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// All samples, in order.
    pub samples: Vec<Sample>,
}

/// Parses Prometheus text format 0.0.4. Lines that do not parse are skipped.
pub fn parse(text: &str) -> Scrape {
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect();
    Scrape { samples }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, labels, rest) = match line.find('{') {
        Some(i) => {
            let close = line.rfind('}')?;
            (
                &line[..i],
                parse_labels(line.get(i + 1..close)?)?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], BTreeMap::new(), &line[sp..])
        }
    };
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        out.insert(key.trim().to_owned(), val);
    }
}

impl Scrape {
    /// Sum of all samples named `name` (over label sets); `None` when absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.samples.iter().filter(|s| s.name == name) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    /// Sum over all families whose name starts with `prefix` and ends with `suffix`.
    pub fn sum_matching(&self, prefix: &str, suffix: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self
            .samples
            .iter()
            .filter(|s| s.name.starts_with(prefix) && s.name.ends_with(suffix))
        {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    /// The histogram `name` (buckets summed over label sets other than `le`); `None` when
    /// the bot does not export it.
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == bucket) {
            let Some(le) = s.labels.get("le") else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let e = by_le.entry(bound.to_bits()).or_insert((bound, 0.0));
            e.1 += s.value;
        }
        if by_le.is_empty() {
            return None;
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            buckets,
            sum: self.sum(&format!("{name}_sum")).unwrap_or(0.0),
            count: self.sum(&format!("{name}_count")).unwrap_or(0.0),
        })
    }
}

/// A cumulative histogram: `(upper bound, observations <= bound)`, increasing bounds, the
/// last `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// `(le, cumulative count)`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

/// A percentile estimate with its resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The estimate (seconds for latency histograms).
    pub value: f64,
    /// Lower bound of the bucket it fell in.
    pub bucket_low: f64,
    /// Upper bound of that bucket (`inf` when above the largest finite bound).
    pub bucket_high: f64,
}

impl Histogram {
    /// What was observed between an earlier scrape `before` and this one (same bounds).
    pub fn minus(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let prev = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b.to_bits() == le.to_bits())
                    .map_or(0.0, |(_, v)| *v);
                (*le, (c - prev).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: (self.sum - before.sum).max(0.0),
            count: (self.count - before.count).max(0.0),
        }
    }

    /// Mean observation, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile (0..=1) by linear interpolation inside its bucket; `None` when empty.
    /// Above the largest finite bound the estimate is that bound (and `bucket_high` is inf).
    pub fn quantile(&self, q: f64) -> Option<Estimate> {
        let total = self.buckets.last().map_or(0.0, |b| b.1).max(self.count);
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut low = 0.0f64;
        let mut below = 0.0f64;
        for &(le, cum) in &self.buckets {
            if cum >= rank && cum > below {
                if le.is_infinite() {
                    return Some(Estimate {
                        value: low,
                        bucket_low: low,
                        bucket_high: f64::INFINITY,
                    });
                }
                let frac = (rank - below) / (cum - below);
                return Some(Estimate {
                    value: low + (le - low) * frac,
                    bucket_low: low,
                    bucket_high: le,
                });
            }
            if le.is_finite() {
                low = le;
            }
            below = cum;
        }
        Some(Estimate {
            value: low,
            bucket_low: low,
            bucket_high: f64::INFINITY,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BODY: &str = r#"# HELP mediabot_webhook_seconds Notification webhook handling time.
# TYPE mediabot_webhook_seconds histogram
mediabot_webhook_seconds_bucket{le="0.001"} 10
mediabot_webhook_seconds_bucket{le="0.002"} 90
mediabot_webhook_seconds_bucket{le="0.005"} 100
mediabot_webhook_seconds_bucket{le="+Inf"} 100
mediabot_webhook_seconds_sum 0.15
mediabot_webhook_seconds_count 100
mediabot_packets_lost_total{call="a\"b",x="1"} 7
mediabot_packets_lost_total{call="c"} 1
mediabot_calls_active 3
"#;

    #[test]
    fn parses_samples_with_escaped_labels() {
        let s = parse(BODY);
        assert_eq!(s.sum("mediabot_packets_lost_total"), Some(8.0));
        assert_eq!(s.sum("mediabot_calls_active"), Some(3.0));
        assert_eq!(s.sum("absent"), None);
        let lost = s
            .samples
            .iter()
            .find(|x| x.name == "mediabot_packets_lost_total")
            .unwrap();
        assert_eq!(lost.labels["call"], "a\"b");
        assert_eq!(lost.labels["x"], "1");
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket() {
        let h = parse(BODY).histogram("mediabot_webhook_seconds").unwrap();
        assert_eq!(h.count, 100.0);
        // p50: rank 50, in (0.001, 0.002] holding ranks 10..90 → 0.001 + 0.001 * 40/80.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50.value - 0.0015).abs() < 1e-12, "{p50:?}");
        assert_eq!((p50.bucket_low, p50.bucket_high), (0.001, 0.002));
        // p99: rank 99 in (0.002, 0.005] holding 90..100 → 0.002 + 0.003 * 9/10.
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99.value - 0.0047).abs() < 1e-12, "{p99:?}");
        // p5 in the first bucket, which starts at 0.
        let p5 = h.quantile(0.05).unwrap();
        assert!((p5.value - 0.0005).abs() < 1e-12, "{p5:?}");
        assert!((h.mean().unwrap() - 0.0015).abs() < 1e-12);
    }

    #[test]
    fn overflow_bucket_reports_the_last_bound_and_windows_subtract() {
        let before = parse(BODY).histogram("mediabot_webhook_seconds").unwrap();
        let after = parse(
            "h_bucket{le=\"0.001\"} 10\nh_bucket{le=\"0.002\"} 90\nh_bucket{le=\"0.005\"} 100\nh_bucket{le=\"+Inf\"} 200\nh_sum 100.15\nh_count 200\n",
        )
        .histogram("h")
        .unwrap();
        let w = after.minus(&before);
        assert_eq!(w.count, 100.0);
        let p50 = w.quantile(0.5).unwrap();
        assert_eq!(p50.value, 0.005);
        assert!(p50.bucket_high.is_infinite());
        assert!(parse("x 1\n").histogram("x").is_none());
        assert!(
            Histogram {
                buckets: vec![(f64::INFINITY, 0.0)],
                sum: 0.0,
                count: 0.0
            }
            .quantile(0.5)
            .is_none()
        );
    }
}
