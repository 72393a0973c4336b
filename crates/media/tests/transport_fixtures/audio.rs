//! Shared audio checks for the interop tests: rebuild a stream's PCM from its RTP (placed by
//! timestamp, so losses leave gaps instead of shifting), and compare it to a known source by
//! normalized cross-correlation.
#![allow(dead_code, clippy::unwrap_used)]

use super::transport_common::Rtp;

pub const RATE: usize = 48_000;

/// The chirp speaker `k` sends (must match aiortc_whip.py and chromium_whip.html):
/// linear sweep F0[k] → F1[k] Hz repeating every second, amplitude 0.4.
pub fn chirp(k: usize, start: usize, n: usize) -> Vec<f32> {
    const F0: [f64; 2] = [300.0, 2400.0];
    const F1: [f64; 2] = [2400.0, 300.0];
    (start..start + n)
        .map(|i| {
            let t = (i % RATE) as f64 / RATE as f64;
            let phase = 2.0 * std::f64::consts::PI * (F0[k] * t + (F1[k] - F0[k]) * t * t / 2.0);
            (0.4 * phase.sin()) as f32
        })
        .collect()
}

/// Decodes one SSRC's Opus packets into mono PCM placed by RTP timestamp.
pub fn decode_stream(packets: &[&Rtp]) -> Vec<f32> {
    assert!(!packets.is_empty(), "no packets");
    let ts0 = packets.iter().map(|p| p.timestamp).min().unwrap();
    let mut ordered: Vec<&&Rtp> = packets.iter().collect();
    ordered.sort_by_key(|p| p.timestamp.wrapping_sub(ts0));
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0f32; 5760];
    for p in ordered {
        let at = p.timestamp.wrapping_sub(ts0) as usize;
        let n = dec.decode_float(&p.payload, &mut buf, false).unwrap();
        if out.len() < at + n {
            out.resize(at + n, 0.0);
        }
        out[at..at + n].copy_from_slice(&buf[..n]);
    }
    out
}

/// Best normalized correlation of `template` inside `signal` over lags `0..max_lag`.
pub fn best_correlation(signal: &[f32], template: &[f32], max_lag: usize) -> (f32, usize) {
    let te: f32 = template.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut best = (0.0f32, 0usize);
    for lag in 0..max_lag.min(signal.len().saturating_sub(template.len())) {
        let w = &signal[lag..lag + template.len()];
        let dot: f32 = w.iter().zip(template).map(|(a, b)| a * b).sum();
        let we: f32 = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        let c = if we > 0.0 { dot / (we * te) } else { 0.0 };
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// Like [`best_correlation`] over lags `0..max_lag`, searching every `step`-th lag first and
/// then refining around the best one (cheap enough for a one-second search in debug builds).
pub fn best_correlation_coarse(
    signal: &[f32],
    template: &[f32],
    max_lag: usize,
    step: usize,
) -> (f32, usize) {
    let corr = |lag: usize| -> f32 {
        let Some(w) = signal.get(lag..lag + template.len()) else {
            return 0.0;
        };
        let te: f32 = template.iter().map(|x| x * x).sum::<f32>().sqrt();
        let dot: f32 = w.iter().zip(template).map(|(a, b)| a * b).sum();
        let we: f32 = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        if we > 0.0 { dot / (we * te) } else { 0.0 }
    };
    let mut best = (0.0f32, 0usize);
    for lag in (0..max_lag).step_by(step.max(1)) {
        let c = corr(lag);
        if c > best.0 {
            best = (c, lag);
        }
    }
    let (_, around) = best;
    for lag in around.saturating_sub(step)..around + step {
        let c = corr(lag);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// Number of 20 ms blocks whose RMS is above `threshold`.
pub fn loud_blocks(signal: &[f32], threshold: f32) -> usize {
    signal
        .chunks(960)
        .filter(|b| (b.iter().map(|x| x * x).sum::<f32>() / b.len() as f32).sqrt() > threshold)
        .count()
}
