//! Property tests: jitter-buffer output is ordered and unique across sequence wrap for any
//! arrival order; sample counts balance through the resampler; pipeline frames never overlap.
#![allow(clippy::unwrap_used)]

mod common;

use mediabot_media::jitter::{JitterBuffer, JitterConfig, Playout};
use mediabot_media::receive::{ReceiveState, SeqVerdict};
use mediabot_media::resample::DriftResampler;
use mediabot_media::{CallConfig, CallTag, RtpTimestamp, SampleRate, SeqNo, Ssrc, TrackSelect};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Whatever the arrival order, duplicates and losses, released sequence numbers (packets
    /// and loss decisions together) strictly increase, each at most once, across the wrap.
    #[test]
    fn jitter_output_ordered_and_unique(
        start in any::<u16>(),
        n in 20usize..300,
        delays in proptest::collection::vec(0.0f64..0.15, 300),
        dup in proptest::collection::vec(any::<bool>(), 300),
        drop in proptest::collection::vec(0u8..10, 300),
    ) {
        let mut arrivals: Vec<(f64, u16, u32)> = Vec::new();
        for i in 0..n {
            if drop[i] == 0 {
                continue;
            }
            let seq = start.wrapping_add(i as u16);
            let ts = (i as u32).wrapping_mul(960).wrapping_add(u32::MAX - 5000);
            let at = i as f64 * 0.02 + delays[i];
            arrivals.push((at, seq, ts));
            if dup[i] {
                arrivals.push((at + 0.005, seq, ts));
            }
        }
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut recv = ReceiveState::new(48_000);
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        let mut released: Vec<u64> = Vec::new();
        let mut t = 0.0;
        let mut k = 0;
        while t < n as f64 * 0.02 + 1.0 {
            while k < arrivals.len() && arrivals[k].0 <= t {
                let (at, seq, ts) = arrivals[k];
                if let SeqVerdict::Accept(s, e) | SeqVerdict::Restart(s, e) =
                    recv.handle_packet(SeqNo(seq), RtpTimestamp(ts), at)
                {
                    jb.insert(s, e, &[1, 2, 3], 0.0);
                }
                k += 1;
            }
            // The envelope: media time of the first packet maps to time 0.
            let floor = -f64::from(u32::MAX - 5000) / 48_000.0;
            while let Some(p) = jb.poll(t, floor) {
                let s = match p {
                    Playout::Packet { seq, .. } | Playout::Lost { seq, .. } => seq.0,
                };
                released.push(s);
            }
            t += 0.005;
        }
        for w in released.windows(2) {
            prop_assert!(w[0] < w[1], "not increasing: {:?}", w);
        }
        prop_assert!(!released.is_empty());
    }

    /// Samples out = samples in x ratio, less the resampler's fixed delay, for any rates and
    /// any push sizes.
    #[test]
    fn resampler_counts_balance(
        rates in (0usize..5, 0usize..5),
        pushes in proptest::collection::vec(1usize..1000, 1..20),
    ) {
        let all = [8_000, 16_000, 24_000, 44_100, 48_000];
        let (a, b) = (all[rates.0], all[rates.1]);
        let mut r = DriftResampler::new(
            SampleRate::new(a).unwrap(),
            SampleRate::new(b).unwrap(),
        ).unwrap();
        let total_in: usize = pushes.iter().sum();
        let mut total_out = 0usize;
        for n in pushes {
            let input = vec![0.1f32; n];
            let mut rest = &input[..];
            while !rest.is_empty() {
                let k = r.push(rest);
                rest = &rest[k..];
                while let Some(o) = r.process() {
                    total_out += o.len();
                }
            }
        }
        let processed = total_in - r.pending();
        let expected = processed as f64 * f64::from(b) / f64::from(a);
        // Short by the resampler's start-up delay (its history), never more, never long.
        let short = expected - total_out as f64;
        let delay = r.output_delay() as f64;
        prop_assert!((-2.0..=delay + 2.0).contains(&short), "{total_out} vs {expected}, delay {delay}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    /// Through the whole pipeline, under random jitter, loss and duplication, a stream's frames
    /// are strictly ordered and never overlap, and they are contiguous unless flagged.
    #[test]
    fn pipeline_frames_ordered_and_unique(
        seed in any::<u64>(),
        jitter in 0.0f64..0.12,
        loss in 0.0f64..0.2,
        start_seq in any::<u16>(),
    ) {
        let pcm = common::speech_like(48_000, 3.0, seed);
        let packets = common::encode(&pcm, false, 10);
        let sent = common::schedule(&packets, start_seq, seed as u32, 0.2, 0.0, false);
        let net = common::Netem {
            base_delay: 0.02, jitter, loss, burst: 0.2, burst_max: 6, duplicate: 0.05, seed,
        };
        let arrivals = common::impair(&sent, Ssrc(5), net);
        let (call, start) = common::pipeline(CallConfig::new(CallTag(2)));
        let mut d = common::Driver::new(call, start);
        d.add_sink(TrackSelect::AllParticipants);
        d.run(&arrivals, 4.5, 0.01);
        let frames = &d.tracks[0].frames;
        for w in frames.windows(2) {
            prop_assert!(w[0].0 + w[0].1 as u64 <= w[1].0, "overlap {:?}", w);
        }
        common::assert_contiguous(frames);
    }
}
