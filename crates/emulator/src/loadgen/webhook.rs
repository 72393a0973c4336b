//! The webhook phase: verified notifications blasted at the bot's `callbackUri`.
//!
//! The body is the last notification the emulator really delivered for a live call (so the
//! bot parses and routes a real Graph payload to a call it holds), and the bearer token is the
//! one the emulator signs deliveries with. Graph reuses one notification token per app and
//! tenant for most of its hour-long life (the emulator does the same, see `notify::Signer`), so
//! every request carries the same token: the bot's verifier still checks the RS256 signature,
//! issuer, audience, lifetime and tenant on each request (it keeps no cache of verified
//! tokens), so nothing is skipped by reusing it.
//!
//! Several HTTP/1.1 keep-alive connections each send one request at a time, as Graph's
//! delivery workers do; latency is measured at the client, per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

/// Result of a blast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Blast {
    /// Connections used.
    pub connections: usize,
    /// Wall seconds of the blast.
    pub secs: f64,
    /// Requests answered 2xx.
    pub accepted: u64,
    /// Requests answered otherwise, or failed.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Accepted per wall second.
    pub per_sec: f64,
    /// Client-side latency percentiles, milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
}

/// Sends `body` with `token` to `url` from `connections` keep-alive connections for `duration`.
pub async fn blast(
    url: &str,
    token: &str,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Blast {
    let connections = connections.max(1);
    let auth = Arc::new(format!("Bearer {token}"));
    let url = Arc::new(url.to_owned());
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (auth, url, body) = (Arc::clone(&auth), Arc::clone(&url), body.clone());
        tasks.push(tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(5))
                .build()
            {
                Ok(c) => c,
                Err(e) => return (Vec::new(), 1u64, Some(e.to_string())),
            };
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let (mut failed, mut first) = (0u64, None);
            while Instant::now() < end {
                let s = Instant::now();
                let r = client
                    .post(url.as_str())
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        // Read the (empty) body so the connection is reused.
                        let _ = resp.bytes().await;
                        lat.push(s.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Ok(resp) => {
                        failed += 1;
                        let st = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        first.get_or_insert_with(|| format!("{st}: {}", text.trim()));
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, failed, first)
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    let mut out = Blast {
        connections,
        ..Blast::default()
    };
    for t in tasks {
        if let Ok((lat, failed, first)) = t.await {
            all.extend(lat);
            out.failed += failed;
            if out.first_failure.is_none() {
                out.first_failure = first;
            }
        }
    }
    out.secs = t0.elapsed().as_secs_f64();
    out.accepted = all.len() as u64;
    out.per_sec = out.accepted as f64 / out.secs.max(1e-9);
    all.sort_unstable();
    out.latency_ms = [
        exact_quantile(&all, 0.5),
        exact_quantile(&all, 0.9),
        exact_quantile(&all, 0.99),
        all.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
    ];
    out
}

/// The `q` quantile (nearest rank) of sorted microsecond samples, in milliseconds.
pub fn exact_quantile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted_us.len() as f64).ceil() as usize).max(1);
    f64::from(sorted_us[rank.min(sorted_us.len()) - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(exact_quantile(&v, 0.5), 50.0);
        assert_eq!(exact_quantile(&v, 0.99), 99.0);
        assert_eq!(exact_quantile(&v, 1.0), 100.0);
        assert_eq!(exact_quantile(&[], 0.5), 0.0);
    }
}
