//! Quality check: a synthesized speech-like signal (no downloads), encoded with libopus (FEC
//! on), sent through the pipeline at 0, 5 and 10 % random loss, compared with the source by
//! SNR and correlation after alignment. Numbers are printed (`--nocapture`) and documented in
//! docs/media-pipeline.md; the asserted floors are well below them.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mediabot_media::resample::DriftResampler;
use mediabot_media::{CallConfig, CallTag, SampleRate, Ssrc, TrackSelect};

const SECONDS: f64 = 12.0;

/// The source at 16 kHz, band-limited by the crate's own sinc resampler (reference only).
fn reference_16k(pcm48: &[f32]) -> Vec<f32> {
    let mut r = DriftResampler::new(SampleRate::HZ_48000, SampleRate::HZ_16000).unwrap();
    let mut out = Vec::new();
    let mut rest = pcm48;
    while !rest.is_empty() {
        let k = r.push(rest);
        rest = &rest[k..];
        while let Some(o) = r.process() {
            out.extend_from_slice(o);
        }
    }
    let delay = r.output_delay();
    out.drain(..delay.min(out.len()));
    out
}

/// Segmental scores of `out` against `reference`: for every 0.5 s segment with speech, the
/// best alignment within +-40 samples of the global lag (the drift controller moves the track
/// by a few samples as it works), then correlation and SNR with a least-squares gain. Returns
/// (mean segmental SNR dB, each clamped to [-10, 35] as usual; mean correlation; global lag).
fn compare(reference: &[f32], out: &[f32], expected_lag: i64) -> (f64, f64, i64) {
    let win = &reference[16_000..48_000];
    let from = (16_000 + expected_lag).max(0) as usize;
    let (_, d) = best_correlation(win, &out[from..], 400);
    let lag = from as i64 - 16_000 + d;
    let seg = 8_000usize;
    let (mut snr_sum, mut corr_sum, mut n) = (0.0, 0.0, 0);
    for start in (0..reference.len().saturating_sub(seg)).step_by(seg) {
        let r = &reference[start..start + seg];
        let energy: f64 = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / seg as f64;
        if energy < 1e-4 {
            continue;
        }
        let s0 = start as i64 + lag - 40;
        if s0 < 0 || (s0 as usize + seg + 80) > out.len() {
            continue;
        }
        let o = &out[s0 as usize..s0 as usize + seg + 80];
        let (_, dl) = best_correlation(r, &o[40..], 40);
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (i, a) in r.iter().enumerate() {
            let b = f64::from(o[(40 + i as i64 + dl) as usize]);
            let a = f64::from(*a);
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let corr = xy / (xx * yy).sqrt().max(1e-12);
        let gain = if yy > 0.0 { xy / yy } else { 0.0 };
        let mut noise = 0.0;
        for (i, a) in r.iter().enumerate() {
            let b = f64::from(o[(40 + i as i64 + dl) as usize]);
            noise += (f64::from(*a) - gain * b).powi(2);
        }
        snr_sum += (10.0 * (xx / noise.max(1e-12)).log10()).clamp(-10.0, 35.0);
        corr_sum += corr;
        n += 1;
    }
    assert!(n > 10, "too few speech segments: {n}");
    (snr_sum / f64::from(n), corr_sum / f64::from(n), lag)
}

fn run(loss: f64) -> (f64, f64, u64, u64) {
    let pcm = speech_like(48_000, SECONDS, 2024);
    let packets = encode(&pcm, false, 10);
    let sent = schedule(&packets, 1, 0, 0.5, 0.0, false);
    let net = Netem {
        base_delay: 0.02,
        jitter: 0.03,
        loss,
        seed: 99,
        ..Netem::default()
    };
    let arrivals = impair(&sent, Ssrc(1), net);
    let (call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    let mut d = Driver::new(call, start);
    d.keep_samples = true;
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, SECONDS + 1.5, 0.01);
    let (first, out) = flatten(&d.tracks[0].samples);
    // Sample 0 of the source was sent at 0.5 s and arrived 20 ms later.
    let expected_lag = (0.52 * 16_000.0) as i64 - first as i64;
    let (snr, corr, lag) = compare(&reference_16k(&pcm), &out, expected_lag);
    eprintln!("  lag {lag} samples (expected about {expected_lag} + Opus delay)");
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    (snr, corr, s.fec_recovered, s.concealed)
}

#[test]
fn speech_quality_under_loss() {
    let mut results = Vec::new();
    for (loss, min_corr, min_snr) in [(0.0, 0.85, 6.0), (0.05, 0.8, 5.0), (0.10, 0.75, 4.0)] {
        let (snr, corr, fec, plc) = run(loss);
        eprintln!(
            "loss {:>4.1} %: SNR {snr:5.2} dB, correlation {corr:.4} (FEC {fec}, PLC {plc})",
            loss * 100.0
        );
        assert!(corr >= min_corr, "loss {loss}: correlation {corr}");
        assert!(snr >= min_snr, "loss {loss}: SNR {snr}");
        results.push((loss, fec + plc));
    }
    // Loss was really applied and concealed.
    assert!(
        results[0].1 == 0 && results[1].1 > 10 && results[2].1 > results[1].1,
        "{results:?}"
    );
}
