//! Shared test harness: a speech-like signal synthesizer, an Opus RTP sender with a drifting
//! clock, a seeded network emulator, and a virtual-time driver that never sleeps.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use mediabot_media::rtp::RtpPacket;
use mediabot_media::{
    AudioFrame, CallPipeline, FrameConsumer, MediaIngest, PayloadType, RtpTimestamp, SeqNo, Ssrc,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic speech-like signal at `rate`: voiced syllables (harmonics of a gliding
/// pitch, formant-ish weighting) with an amplitude envelope, short pauses and some noise.
pub fn speech_like(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = (f64::from(rate) * seconds) as usize;
    let mut out = vec![0.0f32; n];
    let mut phase = 0.0f64;
    let mut i = 0;
    while i < n {
        // A syllable of 120-350 ms, then a gap of 30-200 ms (sometimes a long pause).
        let syl = (f64::from(rate) * rng.random_range(0.12..0.35)) as usize;
        let gap = if rng.random_bool(0.1) {
            (f64::from(rate) * rng.random_range(0.5..1.2)) as usize
        } else {
            (f64::from(rate) * rng.random_range(0.03..0.2)) as usize
        };
        let f0a = rng.random_range(90.0..220.0);
        let f0b = f0a * rng.random_range(0.8..1.25);
        let amp = rng.random_range(0.15..0.45);
        for j in 0..syl.min(n - i) {
            let x = j as f64 / syl as f64;
            let f0 = f0a + (f0b - f0a) * x;
            phase += 2.0 * std::f64::consts::PI * f0 / f64::from(rate);
            let env = (std::f64::consts::PI * x).sin().powf(0.6);
            let mut s = 0.0;
            for h in 1..=12 {
                let fh = f0 * h as f64;
                if fh > f64::from(rate) * 0.45 {
                    break;
                }
                let formant = 1.0 / (1.0 + ((fh - 600.0) / 400.0).powi(2))
                    + 0.6 / (1.0 + ((fh - 1700.0) / 500.0).powi(2));
                s += formant * (phase * h as f64).sin() / h as f64;
            }
            let noise: f64 = rng.random_range(-0.02..0.02);
            out[i + j] = (amp * env * s * 0.8 + noise * env) as f32;
        }
        i += syl + gap;
    }
    out
}

/// One packet as sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Sender's clock time of sending, in real seconds.
    pub send_time: f64,
    pub seq: u16,
    pub ts: u32,
    pub payload: Vec<u8>,
}

/// Encodes `pcm48` (48 kHz mono) into 20 ms Opus packets (FEC on, optional DTX).
pub fn encode(pcm48: &[f32], dtx: bool, loss_perc: i32) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(loss_perc).unwrap();
    enc.set_dtx(dtx).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    for chunk in pcm48.chunks_exact(960) {
        let n = enc.encode_float(chunk, &mut buf).unwrap();
        out.push(buf[..n].to_vec());
    }
    out
}

/// Turns encoded 20 ms packets into a packet schedule. With DTX, packets of 1-2 bytes
/// (DTX frames) are not sent (the timestamp jumps instead), like a real sender.
/// `drift_ppm` > 0: the sender's clock runs fast (it sends its 20 ms a little early).
pub fn schedule(
    packets: &[Vec<u8>],
    start_seq: u16,
    start_ts: u32,
    start_time: f64,
    drift_ppm: f64,
    drop_dtx: bool,
) -> Vec<Sent> {
    let mut out = Vec::with_capacity(packets.len());
    let mut seq = start_seq;
    for (i, p) in packets.iter().enumerate() {
        if drop_dtx && p.len() <= 2 {
            continue;
        }
        let ts = start_ts.wrapping_add((i as u32).wrapping_mul(960));
        let send_time = start_time + i as f64 * 0.02 / (1.0 + drift_ppm * 1e-6);
        out.push(Sent {
            send_time,
            seq,
            ts,
            payload: p.clone(),
        });
        seq = seq.wrapping_add(1);
    }
    out
}

/// Network impairments, seeded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netem {
    pub base_delay: f64,
    /// Uniform extra delay in [0, jitter] seconds (reorders when > packet interval).
    pub jitter: f64,
    pub loss: f64,
    /// Probability a loss starts a burst; burst length uniform 2..=burst_max.
    pub burst: f64,
    pub burst_max: u32,
    pub duplicate: f64,
    pub seed: u64,
}

/// One packet as it arrives.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: f64,
    /// When it was sent (s), for expected positions.
    pub sent: f64,
    /// Its RTP timestamp.
    pub ts: u32,
    pub ssrc: Ssrc,
    pub bytes: Vec<u8>,
}

/// Applies `net` to `sent` for stream `ssrc`.
pub fn impair(sent: &[Sent], ssrc: Ssrc, net: Netem) -> Vec<Arrival> {
    let mut rng = ChaCha8Rng::seed_from_u64(net.seed);
    let mut out = Vec::with_capacity(sent.len());
    let mut burst_left = 0u32;
    for s in sent {
        if burst_left > 0 {
            burst_left -= 1;
            continue;
        }
        if net.loss > 0.0 && rng.random_bool(net.loss) {
            if net.burst > 0.0 && rng.random_bool(net.burst) {
                burst_left = rng.random_range(1..net.burst_max.max(2));
            }
            continue;
        }
        let bytes = rtp_bytes(ssrc, s.seq, s.ts, &s.payload);
        let delay = net.base_delay
            + if net.jitter > 0.0 {
                rng.random_range(0.0..net.jitter)
            } else {
                0.0
            };
        out.push(Arrival {
            at: s.send_time + delay,
            sent: s.send_time,
            ts: s.ts,
            ssrc,
            bytes: bytes.clone(),
        });
        if net.duplicate > 0.0 && rng.random_bool(net.duplicate) {
            let d2 = delay + rng.random_range(0.0..0.03);
            out.push(Arrival {
                at: s.send_time + d2,
                sent: s.send_time,
                ts: s.ts,
                ssrc,
                bytes,
            });
        }
    }
    out
}

/// An RTP packet's bytes.
pub fn rtp_bytes(ssrc: Ssrc, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let p = RtpPacket {
        marker: false,
        payload_type: PayloadType(111),
        seq: SeqNo(seq),
        timestamp: RtpTimestamp(ts),
        ssrc,
        payload,
    };
    let mut buf = vec![0u8; 12 + payload.len()];
    let n = p.write_to(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Merges arrivals of several streams in time order (stable).
pub fn merge(mut streams: Vec<Vec<Arrival>>) -> Vec<Arrival> {
    let mut all: Vec<Arrival> = streams.drain(..).flatten().collect();
    all.sort_by(|a, b| a.at.total_cmp(&b.at));
    all
}

/// What a sink collected.
#[derive(Debug, Default)]
pub struct Track {
    pub frames: Vec<(u64, usize, mediabot_media::FrameFlags, Ssrc)>,
    pub samples: Vec<(u64, Vec<f32>)>,
}

/// Drives a pipeline on virtual time: delivers each arrival at its time, polls every `tick`
/// (and at arrivals), drains the sinks. Ends at `end` seconds.
pub struct Driver {
    pub start: Instant,
    pub call: CallPipeline,
    pub sinks: Vec<FrameConsumer<f32>>,
    pub tracks: Vec<Track>,
    pub keep_samples: bool,
}

impl Driver {
    pub fn new(call: CallPipeline, start: Instant) -> Self {
        Driver {
            start,
            call,
            sinks: Vec::new(),
            tracks: Vec::new(),
            keep_samples: false,
        }
    }

    pub fn add_sink(&mut self, select: mediabot_media::TrackSelect) -> usize {
        let c = self.call.add_sink_f32(select, 4096).unwrap();
        self.sinks.push(c);
        self.tracks.push(Track::default());
        self.sinks.len() - 1
    }

    pub fn at(&self, t: f64) -> Instant {
        self.start + Duration::from_secs_f64(t.max(0.0))
    }

    pub fn run(&mut self, arrivals: &[Arrival], end: f64, tick: f64) {
        let mut next_tick = 0.0;
        let mut i = 0;
        loop {
            let next_arrival = arrivals.get(i).map_or(f64::INFINITY, |a| a.at);
            let t = next_arrival.min(next_tick);
            if t > end {
                break;
            }
            if next_arrival <= next_tick {
                let now = self.at(next_arrival);
                let _ = self.call.ingest_rtp(now, &arrivals[i].bytes);
                i += 1;
            } else {
                self.call.poll(self.at(next_tick));
                next_tick += tick;
                self.drain();
            }
        }
        self.call.poll(self.at(end));
        self.drain();
    }

    pub fn drain(&mut self) {
        for (c, t) in self.sinks.iter_mut().zip(self.tracks.iter_mut()) {
            while let Some(f) = c.pop() {
                record(t, &f, self.keep_samples);
            }
        }
    }
}

fn record(t: &mut Track, f: &AudioFrame<f32>, keep: bool) {
    let ssrc = match f.source {
        mediabot_media::FrameSource::Participant { ssrc, .. } => ssrc,
        mediabot_media::FrameSource::Mixed => Ssrc::NONE,
    };
    t.frames.push((f.position.0, f.len(), f.flags, ssrc));
    if keep {
        t.samples.push((f.position.0, f.samples().to_vec()));
    }
}

/// A pipeline at virtual time zero.
pub fn pipeline(cfg: mediabot_media::CallConfig) -> (CallPipeline, Instant) {
    let start = Instant::now();
    (CallPipeline::new(cfg, start, SystemTime::UNIX_EPOCH), start)
}

/// Asserts frames of one source are strictly ordered, unique and contiguous except where
/// flagged `discontinuity`; returns (first position, end position).
pub fn assert_contiguous(frames: &[(u64, usize, mediabot_media::FrameFlags, Ssrc)]) -> (u64, u64) {
    assert!(!frames.is_empty(), "no frames");
    let first = frames[0].0;
    let mut end = first;
    for (pos, len, flags, _) in frames {
        if *pos != end {
            assert!(
                flags.discontinuity && *pos > end,
                "gap/overlap at {pos}, expected {end}"
            );
        }
        end = pos + *len as u64;
    }
    (first, end)
}

/// Flattens a track to one signal from its first frame (gaps as zeros).
pub fn flatten(samples: &[(u64, Vec<f32>)]) -> (u64, Vec<f32>) {
    let first = samples.first().map_or(0, |s| s.0);
    let mut out = Vec::new();
    for (pos, s) in samples {
        let at = (pos - first) as usize;
        if out.len() < at {
            out.resize(at, 0.0);
        }
        out.truncate(at);
        out.extend_from_slice(s);
    }
    (first, out)
}

/// Linear resampling 48 kHz -> 16 kHz reference (plain decimation after a 3-tap box filter),
/// good enough as a reference for correlation.
pub fn decimate3(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(3)
        .map(|c| (c[0] + c[1] + c[2]) / 3.0)
        .collect()
}

/// Best normalized cross-correlation of `out` against `reference` over lags in
/// `-max_lag..=max_lag`; returns (correlation, lag).
pub fn best_correlation(reference: &[f32], out: &[f32], max_lag: i64) -> (f64, i64) {
    let mut best = (f64::MIN, 0);
    for lag in -max_lag..=max_lag {
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (i, r) in reference.iter().enumerate() {
            let j = i as i64 + lag;
            if j < 0 || j as usize >= out.len() {
                continue;
            }
            let (a, b) = (f64::from(*r), f64::from(out[j as usize]));
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let c = if xx > 0.0 && yy > 0.0 {
            xy / (xx * yy).sqrt()
        } else {
            0.0
        };
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}
