//! Proves hostile or broken input is counted and dropped: no panic, no stream explosion, no
//! hours of synthesized silence, and a healthy stream next to it keeps working.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mediabot_media::rtp::{RtpPacket, SenderReport};
use mediabot_media::{
    CallConfig, CallTag, IngestError, MediaIngest, PayloadType, PcmInput, RtpTimestamp, SampleRate,
    SeqNo, Ssrc, TrackSelect,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn healthy_arrivals(seconds: f64) -> Vec<Arrival> {
    let pcm = speech_like(48_000, seconds, 3);
    let packets = encode(&pcm, false, 10);
    let sent = schedule(&packets, 10, 10, 0.2, 0.0, false);
    impair(
        &sent,
        Ssrc(1),
        Netem {
            base_delay: 0.02,
            seed: 1,
            ..Netem::default()
        },
    )
}

/// Feeds `noise` interleaved with a healthy stream; returns the driver.
fn run_with(noise: Vec<Arrival>, seconds: f64) -> Driver {
    let arrivals = merge(vec![healthy_arrivals(seconds), noise]);
    let (call, start) = pipeline(CallConfig::new(CallTag(9)).with_max_streams(4));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::Participant(Ssrc(1)));
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, seconds + 1.0, 0.01);
    d
}

fn healthy_ok(d: &Driver, seconds: f64) {
    let (first, end) = assert_contiguous(&d.tracks[0].frames);
    let len = (end - first) as f64 / 16_000.0;
    assert!((len - seconds).abs() < 0.05, "healthy track {len} s");
    // Nothing anywhere is longer than the call.
    let max_end = d.tracks[1]
        .frames
        .iter()
        .map(|f| f.0 + f.1 as u64)
        .max()
        .unwrap_or(0);
    assert!(max_end as f64 / 16_000.0 <= seconds + 1.0, "{max_end}");
}

fn noise_at(t: f64, ssrc: Ssrc, bytes: Vec<u8>) -> Arrival {
    Arrival {
        at: t,
        sent: t,
        ts: 0,
        ssrc,
        bytes,
    }
}

#[test]
fn garbage_truncated_and_oversized_packets() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut noise = Vec::new();
    let good = rtp_bytes(Ssrc(1), 5, 5, &[0x78; 60]);
    for i in 0..3000 {
        let t = 0.2 + i as f64 * 0.001;
        let bytes: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect(),
            1 => good[..rng.random_range(0..12)].to_vec(),
            _ => vec![0x80; rng.random_range(1501..4000)],
        };
        noise.push(noise_at(t, Ssrc(1), bytes));
    }
    let d = run_with(noise, 4.0);
    healthy_ok(&d, 4.0);
    let c = d.call.stats().snapshot();
    assert!(c.malformed >= 2000, "{c:?}");
    let (call, start) = pipeline(CallConfig::new(CallTag(1)));
    let mut call = call;
    assert!(matches!(
        call.ingest_rtp(start, &[0x80; 2000]),
        Err(IngestError::Rtp(_))
    ));
    assert!(call.ingest_rtcp(start, &[0x80, 200, 0, 40, 1]).is_err());
}

#[test]
fn random_opus_payloads_on_a_valid_stream() {
    // A valid RTP stream whose payloads are random bytes: decode errors, PLC, no panic.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let noise: Vec<Arrival> = (0..200u16)
        .map(|i| {
            let payload: Vec<u8> = (0..rng.random_range(1..300))
                .map(|_| rng.random())
                .collect();
            let t = 0.2 + f64::from(i) * 0.02;
            noise_at(
                t,
                Ssrc(2),
                rtp_bytes(Ssrc(2), i, u32::from(i) * 960, &payload),
            )
        })
        .collect();
    let d = run_with(noise, 4.0);
    healthy_ok(&d, 4.0);
    let s = d.call.stream_stats(Ssrc(2)).unwrap().snapshot();
    assert!(s.decode_errors > 0, "{s:?}");
}

#[test]
fn absurd_timestamps_never_make_hours_of_silence() {
    // Stream 2: ts jumps by hours, to zero, and backwards, with sane sequence numbers.
    let payload = encode(&speech_like(48_000, 1.0, 5), false, 0);
    let mut noise = Vec::new();
    let mut ts = 1_000u32;
    for i in 0..200u16 {
        ts = match i {
            50 => ts.wrapping_add(48_000 * 3600 * 5),
            90 => 0,
            130 => ts.wrapping_sub(48_000 * 600),
            170 => ts.wrapping_add(u32::MAX / 2 - 1),
            _ => ts.wrapping_add(960),
        };
        let t = 0.3 + f64::from(i) * 0.02;
        let p = &payload[usize::from(i) % payload.len()];
        noise.push(noise_at(t, Ssrc(2), rtp_bytes(Ssrc(2), 100 + i, ts, p)));
    }
    let d = run_with(noise, 5.0);
    healthy_ok(&d, 5.0);
    let s = d.call.stream_stats(Ssrc(2)).unwrap().snapshot();
    assert!(s.resyncs >= 3, "{s:?}");
    // At most the real 4 s of audio (plus re-anchoring slack) came out of stream 2.
    let frames2 = d.tracks[1].frames.iter().filter(|f| f.3 == Ssrc(2)).count();
    assert!(frames2 <= 4 * 50 + 20, "{frames2} frames");
    assert!(s.silence_samples < 16_000, "{s:?}");
}

#[test]
fn sequence_storm_and_unknown_payload_types() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut noise = Vec::new();
    // Stream 1 itself gets random sequence numbers injected (same SSRC!).
    for i in 0..2000 {
        let t = 0.25 + i as f64 * 0.0015;
        let seq: u16 = rng.random();
        let ts: u32 = rng.random();
        noise.push(noise_at(
            t,
            Ssrc(1),
            rtp_bytes(Ssrc(1), seq, ts, &[0x78, 1, 2]),
        ));
    }
    // Stream 3 with an unknown payload type.
    for i in 0..100u16 {
        let p = RtpPacket {
            marker: false,
            payload_type: PayloadType(0),
            seq: SeqNo(i),
            timestamp: RtpTimestamp(u32::from(i) * 160),
            ssrc: Ssrc(3),
            payload: &[0xd5; 160],
        };
        let mut b = vec![0u8; 200];
        let n = p.write_to(&mut b).unwrap();
        b.truncate(n);
        noise.push(noise_at(0.3 + f64::from(i) * 0.02, Ssrc(3), b));
    }
    let arrivals = merge(vec![healthy_arrivals(4.0), noise]);
    let (call, start) = pipeline(CallConfig::new(CallTag(9)));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::Participant(Ssrc(1)));
    d.run(&arrivals, 5.0, 0.01);
    // The storm costs audio, but the track stays ordered, bounded and no longer than real time.
    let frames = &d.tracks[0].frames;
    for w in frames.windows(2) {
        assert!(w[0].0 + w[0].1 as u64 <= w[1].0);
    }
    let end = frames.last().map_or(0, |f| f.0 + f.1 as u64);
    assert!(end as f64 / 16_000.0 <= 5.0, "{end}");
    let s1 = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(s1.overflow + s1.late + s1.duplicate > 1000, "{s1:?}");
    let s3 = d.call.stream_stats(Ssrc(3)).unwrap().snapshot();
    assert!(s3.unknown_payload_type >= 98, "{s3:?}");
    assert_eq!(s3.frames_out, 0);
}

#[test]
fn ssrc_flood_is_bounded() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut noise = Vec::new();
    for i in 0..20_000 {
        let ssrc = Ssrc(rng.random());
        let t = 0.2 + i as f64 * 0.0002;
        noise.push(noise_at(
            t,
            ssrc,
            rtp_bytes(ssrc, rng.random(), rng.random(), &[0x78, 0]),
        ));
    }
    // And 10 real sources in sequence pairs: only 3 more fit next to the healthy stream.
    for s in 100..110u32 {
        for k in 0..3u16 {
            let t = 1.0 + f64::from(s - 100) * 0.1 + f64::from(k) * 0.02;
            noise.push(noise_at(
                t,
                Ssrc(s),
                rtp_bytes(Ssrc(s), k, u32::from(k) * 960, &[0x78, 0]),
            ));
        }
    }
    let d = run_with(noise, 4.0);
    healthy_ok(&d, 4.0);
    let c = d.call.stats().snapshot();
    assert_eq!(c.streams_created, 4, "{c:?}");
    assert!(c.streams_refused > 0, "{c:?}");
    assert!(d.call.streams().count() <= 4);
}

#[test]
fn bad_pcm_frames_are_refused() {
    let (mut call, start) = pipeline(CallConfig::new(CallTag(1)));
    let frame = |samples: &'static [i16], rate| PcmInput {
        source: Ssrc(77),
        rate,
        samples,
        timestamp_100ns: None,
    };
    static EMPTY: [i16; 0] = [];
    static HUGE: [i16; 10_000] = [0; 10_000];
    static OK: [i16; 320] = [100; 320];
    assert_eq!(
        call.ingest_pcm(start, &frame(&EMPTY, SampleRate::HZ_16000)),
        Err(IngestError::BadPcm)
    );
    assert_eq!(
        call.ingest_pcm(start, &frame(&HUGE, SampleRate::HZ_16000)),
        Err(IngestError::BadPcm)
    );
    assert!(
        call.ingest_pcm(start, &frame(&OK, SampleRate::HZ_16000))
            .is_ok()
    );
    let later = start + Duration::from_millis(20);
    assert_eq!(
        call.ingest_pcm(later, &frame(&OK, SampleRate::HZ_48000)),
        Err(IngestError::BadPcm)
    );
    assert_eq!(call.stats().snapshot().pcm_rejected, 3);
    // RTP claiming the PCM source's id is refused without touching it.
    let rtp = rtp_bytes(Ssrc(77), 1, 960, &[0x78, 0]);
    assert_eq!(
        call.ingest_rtp(later, &rtp),
        Err(IngestError::SourceConflict(Ssrc(77)))
    );
    // A sender report for an unknown SSRC and a truncated one.
    let mut buf = [0u8; 28];
    let sr = SenderReport {
        ssrc: Ssrc(5),
        ntp_time: 1,
        rtp_time: RtpTimestamp(1),
        packet_count: 1,
    };
    sr.write_to(&mut buf).unwrap();
    assert!(call.ingest_rtcp(start, &buf).is_ok());
    assert!(call.ingest_rtcp(start, &buf[..20]).is_err());
}

#[test]
fn a_single_absurd_timestamp_does_not_derail_a_stream() {
    // A healthy stream plus, at 1 s, one stray copy of an old packet stamped 5 h ahead and one
    // stamped far behind.
    let mut arrivals = healthy_arrivals(4.0);
    let old = &arrivals[10];
    let p = RtpPacket::parse(&old.bytes).unwrap();
    let payload = p.payload.to_vec();
    let ahead = rtp_bytes(
        Ssrc(1),
        p.seq.0,
        p.timestamp.0.wrapping_add(48_000 * 3600 * 5),
        &payload,
    );
    let behind = rtp_bytes(
        Ssrc(1),
        p.seq.0 + 1,
        p.timestamp.0.wrapping_sub(48_000 * 3000),
        &payload,
    );
    arrivals.push(noise_at(1.0, Ssrc(1), ahead));
    arrivals.push(noise_at(1.5, Ssrc(1), behind));
    let arrivals = merge(vec![arrivals]);
    let (call, start) = pipeline(CallConfig::new(CallTag(9)));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::Participant(Ssrc(1)));
    d.run(&arrivals, 5.0, 0.01);
    let frames = &d.tracks[0].frames;
    let (first, end) = assert_contiguous(frames);
    assert!((end - first).abs_diff(4 * 16_000) <= 320, "{first}..{end}");
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(s.late + s.duplicate >= 2, "{s:?}");
}
