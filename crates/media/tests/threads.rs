//! Proves the thread boundary: sink rings and stats cross to other threads (the consumer pops
//! while the media thread pushes, a metrics thread reads counters), nothing blocks, and every
//! frame produced is either delivered in order or counted as dropped.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use mediabot_media::{CallConfig, CallTag, MediaIngest, Ssrc, TrackSelect};

#[test]
fn rings_and_stats_cross_threads() {
    let pcm = speech_like(48_000, 10.0, 4);
    let packets = encode(&pcm, false, 10);
    let sent = schedule(&packets, 1, 0, 0.1, 0.0, false);
    let arrivals = impair(
        &sent,
        Ssrc(9),
        Netem {
            base_delay: 0.02,
            seed: 2,
            ..Netem::default()
        },
    );
    let (mut call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    // A small ring, so that the consumer thread sometimes falls behind and frames drop.
    let mut consumer = call.add_sink_i16(TrackSelect::AllParticipants, 8).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let done_c = Arc::clone(&done);
    let sink = std::thread::spawn(move || {
        let mut positions = Vec::new();
        loop {
            let finished = done_c.load(Ordering::Acquire);
            while let Some(f) = consumer.pop() {
                positions.push(f.position.0);
            }
            if finished {
                return positions;
            }
            std::thread::yield_now();
        }
    });
    let mut stats = None;
    let mut reader = None;
    for a in &arrivals {
        let now = start + std::time::Duration::from_secs_f64(a.at);
        let _ = call.ingest_rtp(now, &a.bytes);
        call.poll(now);
        if stats.is_none()
            && let Some(s) = call.stream_stats(Ssrc(9))
        {
            let s2 = Arc::clone(&s);
            let done_r = Arc::clone(&done);
            reader = Some(std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut last = 0;
                loop {
                    let finished = done_r.load(Ordering::Acquire);
                    let snap = s2.snapshot();
                    assert!(snap.frames_out >= last, "counters only grow");
                    last = snap.frames_out;
                    reads += 1;
                    if finished {
                        return reads;
                    }
                    std::thread::yield_now();
                }
            }));
            stats = Some(s);
        }
    }
    call.poll(start + std::time::Duration::from_secs(12));
    done.store(true, Ordering::Release);
    let positions = sink.join().unwrap();
    let reads = reader.unwrap().join().unwrap();
    let snap = stats.unwrap().snapshot();
    assert!(reads > 0);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        positions.len() as u64 + snap.dropped_at_ring,
        snap.frames_out,
        "{snap:?}"
    );
    assert!(snap.frames_out > 400);
}

#[test]
fn ring_drops_reach_the_process_wide_counter() {
    use mediabot_media::stats::RING_FRAMES_DROPPED;
    let pcm = speech_like(48_000, 2.0, 4);
    let packets = encode(&pcm, false, 10);
    let sent = schedule(&packets, 1, 0, 0.1, 0.0, false);
    let arrivals = impair(&sent, Ssrc(9), Netem::default());
    let (mut call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    // Nobody pops this ring: past its capacity every frame drops.
    let _consumer = call.add_sink_i16(TrackSelect::AllParticipants, 4).unwrap();
    let before = RING_FRAMES_DROPPED.load(Ordering::Relaxed);
    for a in &arrivals {
        let now = start + std::time::Duration::from_secs_f64(a.at);
        let _ = call.ingest_rtp(now, &a.bytes);
        call.poll(now);
    }
    call.poll(start + std::time::Duration::from_secs(3));
    let snap = call.stream_stats(Ssrc(9)).unwrap().snapshot();
    assert!(snap.frames_out > 50, "{snap:?}");
    assert!(snap.dropped_at_ring >= snap.frames_out - 4, "{snap:?}");
    // Other tests of this binary may drop frames at the same time: at least ours.
    let after = RING_FRAMES_DROPPED.load(Ordering::Relaxed);
    assert!(
        after - before >= snap.dropped_at_ring,
        "{before} -> {after}, {snap:?}"
    );
}
