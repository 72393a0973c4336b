//! Proves the call mix through the whole pipeline: active speakers per mixed frame, dominant
//! speaker changes as events, no clipping when everyone shouts, participant tags on frames,
//! and other output formats (10 ms frames, 44.1 kHz through the sinc resampler).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mediabot_media::{
    CallConfig, CallTag, FrameDuration, FrameSource, ParticipantTag, PipelineEvent, SampleRate,
    Ssrc, TrackSelect,
};

/// A tone of `amp` for `on` (seconds from..to) and silence otherwise, at 48 kHz.
fn tone(seconds: f64, on: (f64, f64), amp: f32, hz: f32) -> Vec<f32> {
    (0..(seconds * 48_000.0) as usize)
        .map(|i| {
            let t = i as f64 / 48_000.0;
            if t >= on.0 && t < on.1 {
                amp * (2.0 * std::f32::consts::PI * hz * t as f32).sin()
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn dominant_and_active_speakers_follow_who_talks() {
    // A talks during 0-3 s, B during 3-6 s; both send all the time (no DTX).
    let a = encode(&tone(6.0, (0.0, 3.0), 0.3, 220.0), false, 0);
    let b = encode(&tone(6.0, (3.0, 6.0), 0.3, 330.0), false, 0);
    let net = |seed| Netem {
        base_delay: 0.02,
        jitter: 0.02,
        seed,
        ..Netem::default()
    };
    let arrivals = merge(vec![
        impair(&schedule(&a, 1, 0, 0.2, 0.0, false), Ssrc(10), net(1)),
        impair(&schedule(&b, 500, 7, 0.2, 0.0, false), Ssrc(20), net(2)),
    ]);
    let (call, start) = pipeline(CallConfig::new(CallTag(4)));
    let mut d = Driver::new(call, start);
    let mut mixed = d.call.add_sink_f32(TrackSelect::Mixed, 1024).unwrap();
    let mut per = d
        .call
        .add_sink_i16(TrackSelect::AllParticipants, 1024)
        .unwrap();
    let mut events = Vec::new();
    let mut active_at = Vec::new();
    let mut tagged = 0;
    let mut t = 0.0;
    let mut k = 0;
    while t < 7.0 {
        while k < arrivals.len() && arrivals[k].at <= t {
            let now = d.at(arrivals[k].at);
            let _ = mediabot_media::MediaIngest::ingest_rtp(&mut d.call, now, &arrivals[k].bytes);
            k += 1;
        }
        if (1.0..1.02).contains(&t) {
            d.call.set_participant(Ssrc(10), Some(ParticipantTag(1)));
        }
        d.call.poll(d.at(t));
        while let Some(e) = d.call.poll_event() {
            if let PipelineEvent::DominantSpeakerChanged(s) = e {
                events.push((t, s));
            }
        }
        while let Some(f) = mixed.pop() {
            assert!(f.samples().iter().all(|s| s.abs() < 1.0));
            active_at.push((f.position.0, f.active_speakers.iter().collect::<Vec<_>>()));
        }
        while let Some(f) = per.pop() {
            if let FrameSource::Participant {
                ssrc: Ssrc(10),
                participant: Some(ParticipantTag(1)),
            } = f.source
            {
                tagged += 1;
            }
        }
        t += 0.01;
    }
    assert!(
        tagged > 50,
        "frames carry the participant tag once set: {tagged}"
    );
    // Dominant: A first, then B after the switch at 3 s (+ path delay + hold).
    assert_eq!(events.first().map(|e| e.1), Some(Ssrc(10)), "{events:?}");
    let to_b = events
        .iter()
        .find(|e| e.1 == Ssrc(20))
        .map(|e| e.0)
        .unwrap();
    assert!(
        (3.2..4.5).contains(&to_b),
        "switched to B at {to_b} s: {events:?}"
    );
    // Active speakers: at 1-2 s only A, at 4-5 s only B.
    let at = |secs: f64| {
        active_at
            .iter()
            .find(|(p, _)| *p >= (secs * 16_000.0) as u64)
            .map(|(_, s)| s.clone())
            .unwrap()
    };
    assert_eq!(at(1.5), vec![Ssrc(10)]);
    assert_eq!(at(4.5), vec![Ssrc(20)]);
    // The mix is continuous from 0.
    let mut pos = 0;
    for (p, _) in &active_at {
        assert_eq!(*p, pos);
        pos += 320;
    }
}

#[test]
fn loud_speakers_together_never_clip() {
    let packets: Vec<_> = (0..4)
        .map(|i| {
            encode(
                &tone(3.0, (0.0, 3.0), 0.9, 200.0 + 50.0 * i as f32),
                false,
                0,
            )
        })
        .collect();
    let arrivals = merge(
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let sent = schedule(p, 1, 0, 0.1, 0.0, false);
                impair(
                    &sent,
                    Ssrc(i as u32 + 1),
                    Netem {
                        base_delay: 0.02,
                        seed: i as u64,
                        ..Netem::default()
                    },
                )
            })
            .collect(),
    );
    let (call, start) = pipeline(CallConfig::new(CallTag(5)));
    let mut d = Driver::new(call, start);
    d.keep_samples = true;
    d.add_sink(TrackSelect::Mixed);
    d.run(&arrivals, 4.0, 0.01);
    let peak = d.tracks[0]
        .samples
        .iter()
        .flat_map(|(_, s)| s.iter())
        .fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.5 && peak < 1.0, "peak {peak}");
    let active = d.tracks[0].frames.iter().any(|f| !f.2.silence);
    assert!(active);
}

#[test]
fn ten_ms_frames_at_44k1_through_the_sinc_resampler() {
    let pcm = speech_like(48_000, 3.0, 8);
    let packets = encode(&pcm, false, 0);
    let sent = schedule(&packets, 9, 9, 0.2, 0.0, false);
    let arrivals = impair(
        &sent,
        Ssrc(3),
        Netem {
            base_delay: 0.02,
            jitter: 0.03,
            seed: 4,
            ..Netem::default()
        },
    );
    let cfg = CallConfig::new(CallTag(6))
        .with_rate(SampleRate::HZ_44100)
        .with_frame(FrameDuration::Ms10);
    let (call, start) = pipeline(cfg);
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    d.add_sink(TrackSelect::Mixed);
    d.run(&arrivals, 4.0, 0.01);
    let (first, end) = assert_contiguous(&d.tracks[0].frames);
    assert!(d.tracks[0].frames.iter().all(|f| f.1 == 441));
    assert!(first.abs_diff((0.22 * 44_100.0) as u64) <= 441, "{first}");
    let len = (end - first) as f64 / 44_100.0;
    assert!((len - 3.0).abs() < 0.02, "{len}");
    let (mfirst, _) = assert_contiguous(&d.tracks[1].frames);
    assert_eq!(mfirst, 0);
}
