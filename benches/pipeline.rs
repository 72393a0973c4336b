//! Cost of the per-stream media pipeline against its floor, bare libopus decoding of the same
//! 20 ms packets, in the same run. Quoted as a ratio (target <= 1.25x) and as frames per second
//! per core. Run: `cargo bench --bench pipeline`.
//!
//! The pipeline case feeds one stream's RTP packets at virtual 20 ms spacing through
//! `CallPipeline::ingest_rtp` (parse, receive state, jitter buffer, Opus decode, drift
//! resampler, timeline framing, ring push of i16 frames); the sink pops every 50 packets.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mediabot_media::rtp::RtpPacket;
use mediabot_media::{
    CallConfig, CallPipeline, CallTag, MediaIngest, PayloadType, RtpTimestamp, SampleRate, SeqNo,
    Ssrc, TrackSelect,
};

/// Deterministic speech-like audio (voiced syllables with gliding pitch and pauses), 48 kHz.
fn speech_like(seconds: usize) -> Vec<f32> {
    let rate = 48_000.0f64;
    let n = seconds * 48_000;
    let mut out = vec![0.0f32; n];
    let mut phase = 0.0f64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut i = 0;
    while i < n {
        let syl = ((0.12 + 0.23 * rnd()) * rate) as usize;
        let gap = ((0.03 + 0.17 * rnd()) * rate) as usize;
        let f0 = 90.0 + 130.0 * rnd();
        let amp = 0.15 + 0.3 * rnd();
        for j in 0..syl.min(n - i) {
            let x = j as f64 / syl as f64;
            phase += 2.0 * std::f64::consts::PI * f0 * (1.0 + 0.2 * x) / rate;
            let env = (std::f64::consts::PI * x).sin();
            let mut s = 0.0;
            for h in 1..=10 {
                s += (phase * f64::from(h)).sin() / f64::from(h);
            }
            out[i + j] = (amp * env * s * 0.5) as f32;
        }
        i += syl + gap;
    }
    out
}

fn encode(pcm: &[f32]) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("encoder");
    enc.set_inband_fec(true).expect("fec");
    enc.set_packet_loss_perc(5).expect("loss");
    enc.set_bitrate(opus::Bitrate::Bits(32_000))
        .expect("bitrate");
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(960)
        .map(|c| {
            let n = enc.encode_float(c, &mut buf).expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

fn bench_pipeline(c: &mut Criterion) {
    let packets = encode(&speech_like(10));
    let mut group = c.benchmark_group("per_stream_20ms");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for rate in [SampleRate::HZ_16000, SampleRate::HZ_48000] {
        let frame = rate.samples_in_ms(20);
        group.bench_with_input(
            BenchmarkId::new("libopus_decode", rate.hz()),
            &rate,
            |b, rate| {
                let mut dec = opus::Decoder::new(rate.hz(), opus::Channels::Mono).expect("decoder");
                let mut out = vec![0.0f32; frame];
                let mut i = 0usize;
                b.iter(|| {
                    let p = &packets[i % packets.len()];
                    i += 1;
                    black_box(
                        dec.decode_float(black_box(p), &mut out, false)
                            .expect("decode"),
                    )
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("pipeline", rate.hz()), &rate, |b, rate| {
            let start = Instant::now();
            let cfg = CallConfig::new(CallTag(1))
                .with_rate(*rate)
                .with_mixer(None);
            let mut call = CallPipeline::new(cfg, start, SystemTime::UNIX_EPOCH);
            let mut sink = call
                .add_sink_i16(TrackSelect::AllParticipants, 64)
                .expect("sink");
            let mut buf = [0u8; 1500];
            let mut i = 0u64;
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let payload = &packets[(i as usize) % packets.len()];
                    let pkt = RtpPacket {
                        marker: false,
                        payload_type: PayloadType(111),
                        seq: SeqNo(i as u16),
                        timestamp: RtpTimestamp((i as u32).wrapping_mul(960)),
                        ssrc: Ssrc(7),
                        payload,
                    };
                    let n = pkt.write_to(&mut buf).expect("fits");
                    let now = start + Duration::from_millis(20 * i);
                    let _ = black_box(call.ingest_rtp(now, &buf[..n]));
                    i += 1;
                    if i.is_multiple_of(50) {
                        while let Some(f) = sink.pop() {
                            black_box(f.samples()[0]);
                        }
                    }
                }
                t0.elapsed()
            });
            if let Some(stats) = call.stream_stats(Ssrc(7)) {
                assert_eq!(stats.snapshot().dropped_at_ring, 0, "the sink kept up");
            }
        });
    }
    group.finish();

    // Breakdown: the drift resampler alone on 20 ms of decoded audio, and the feed decimator.
    // `drift_resampler` alternates +-100 ppm every 20 ms (ramps cross a ratio of 1);
    // `drift_resampler_50ppm` holds a typical small correction (whole-sample mode) and
    // `drift_resampler_0.3pct` a large one (cubic interpolation).
    let mut group = c.benchmark_group("parts_20ms");
    group.throughput(Throughput::Elements(1));
    // (name, correction for the k-th 20 ms)
    type Case = (&'static str, fn(u64) -> f64);
    let cases: [Case; 3] = [
        ("drift_resampler", |k| {
            if k.is_multiple_of(2) { 1e-4 } else { -1e-4 }
        }),
        ("drift_resampler_50ppm", |_| 5e-5),
        ("drift_resampler_0.3pct", |_| 3e-3),
    ];
    for (name, correction) in cases {
        for rate in [SampleRate::HZ_16000, SampleRate::HZ_48000] {
            group.bench_with_input(BenchmarkId::new(name, rate.hz()), &rate, |b, rate| {
                let mut r =
                    mediabot_media::resample::DriftResampler::new(*rate, *rate).expect("rs");
                let input: Vec<f32> = (0..rate.samples_in_ms(20))
                    .map(|i| (i as f32 * 0.01).sin())
                    .collect();
                let mut k = 0u64;
                b.iter(|| {
                    k += 1;
                    r.set_correction(correction(k));
                    let mut rest = &input[..];
                    let mut n = 0;
                    while !rest.is_empty() {
                        let t = r.push(rest);
                        rest = &rest[t..];
                        while let Some(o) = r.process() {
                            n += o.len();
                        }
                    }
                    black_box(n)
                });
            });
        }
    }
    // The sink thread's per-frame filter for the transcription feed (48 -> 16 kHz).
    group.bench_function("feed_decimator_48k_to_16k", |b| {
        let mut d = mediabot::sinks::runner::Decimator::default();
        let input: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.05).sin() * 12_000.0) as i16)
            .collect();
        let mut out = Vec::with_capacity(320);
        b.iter(|| {
            out.clear();
            d.process(black_box(&input), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

/// A paired measurement that resists a busy machine: blocks of 50 packets, decode-only and
/// pipeline alternately, 300 rounds; the minimum block time of each is the cost without
/// preemption. Printed as a table line (criterion's own figures are printed above it).
fn paired_min_ratio(_c: &mut Criterion) {
    // Listing benchmarks (`--list`, as test runners do) must print only their names.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let packets = encode(&speech_like(10));
    for rate in [SampleRate::HZ_16000, SampleRate::HZ_48000] {
        let frame = rate.samples_in_ms(20);
        let mut dec = opus::Decoder::new(rate.hz(), opus::Channels::Mono).expect("decoder");
        let mut out = vec![0.0f32; frame];
        let start = Instant::now();
        let cfg = CallConfig::new(CallTag(1)).with_rate(rate).with_mixer(None);
        let mut call = CallPipeline::new(cfg, start, SystemTime::UNIX_EPOCH);
        let mut sink = call
            .add_sink_i16(TrackSelect::AllParticipants, 64)
            .expect("sink");
        let mut buf = [0u8; 1500];
        let mut i = 0u64;
        let mut feed = |call: &mut CallPipeline, n: u64| {
            for _ in 0..n {
                let payload = &packets[(i as usize) % packets.len()];
                let pkt = RtpPacket {
                    marker: false,
                    payload_type: PayloadType(111),
                    seq: SeqNo(i as u16),
                    timestamp: RtpTimestamp((i as u32).wrapping_mul(960)),
                    ssrc: Ssrc(7),
                    payload,
                };
                let len = pkt.write_to(&mut buf).expect("fits");
                let now = start + Duration::from_millis(20 * i);
                let _ = black_box(call.ingest_rtp(now, &buf[..len]));
                i += 1;
            }
        };
        feed(&mut call, 200);
        while sink.pop().is_some() {}
        let (mut best_dec, mut best_pipe) = (Duration::MAX, Duration::MAX);
        let mut j = 0usize;
        for _ in 0..300 {
            let t0 = Instant::now();
            for _ in 0..50 {
                let p = &packets[j % packets.len()];
                j += 1;
                black_box(
                    dec.decode_float(black_box(p), &mut out, false)
                        .expect("decode"),
                );
            }
            best_dec = best_dec.min(t0.elapsed());
            let t0 = Instant::now();
            feed(&mut call, 50);
            best_pipe = best_pipe.min(t0.elapsed());
            while let Some(f) = sink.pop() {
                black_box(f.samples()[0]);
            }
        }
        let (d, p) = (
            best_dec.as_secs_f64() / 50.0,
            best_pipe.as_secs_f64() / 50.0,
        );
        println!(
            "paired/{}: libopus {:.2} us/frame, pipeline {:.2} us/frame, ratio {:.3}, \
             pipeline {:.0} frames/s per core",
            rate.hz(),
            d * 1e6,
            p * 1e6,
            p / d,
            1.0 / p
        );
    }
}

criterion_group!(benches, bench_pipeline, paired_min_ratio);
criterion_main!(benches);
