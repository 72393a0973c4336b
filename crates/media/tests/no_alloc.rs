//! Proves the steady state allocates nothing: a counting global allocator sees zero heap
//! allocations over thousands of RTP packets through the whole pipeline (jitter buffer, Opus
//! decode, resampler, timeline, mixer, ring push and pop), with loss and reordering.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mediabot_media::{CallConfig, CallTag, MediaIngest, SampleRate, Ssrc, TrackSelect};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run(rate: SampleRate) {
    // 3 speakers, 100 s each (15,000 packets), 5 % loss, jitter with reordering.
    let pcm = common::speech_like(48_000, 4.0, 1);
    let looped = common::encode(&pcm, false, 10);
    let packets: Vec<Vec<u8>> = (0..5000)
        .map(|i| looped[i % looped.len()].clone())
        .collect();
    let streams: Vec<_> = (0..3u32)
        .map(|s| {
            let sent = common::schedule(&packets, s as u16 * 1000, s * 7, 0.1, 0.0, false);
            let net = common::Netem {
                base_delay: 0.02,
                jitter: 0.05,
                loss: 0.05,
                seed: u64::from(s),
                ..common::Netem::default()
            };
            common::impair(&sent, Ssrc(s + 1), net)
        })
        .collect();
    let arrivals = common::merge(streams);
    let (mut call, start) = common::pipeline(CallConfig::new(CallTag(1)).with_rate(rate));
    let mut per = call
        .add_sink_i16(TrackSelect::AllParticipants, 512)
        .unwrap();
    let mut mixed = call.add_sink_f32(TrackSelect::Mixed, 512).unwrap();
    let warmup = arrivals.len() / 10;
    let mut next_tick = 0.0;
    let mut popped = 0u64;
    for (i, a) in arrivals.iter().enumerate() {
        if i == warmup {
            COUNTING.store(true, Ordering::SeqCst);
        }
        while next_tick < a.at {
            call.poll(start + Duration::from_secs_f64(next_tick));
            next_tick += 0.01;
        }
        let _ = call.ingest_rtp(start + Duration::from_secs_f64(a.at), &a.bytes);
        while let Some(f) = per.pop() {
            popped += f.len() as u64;
        }
        while let Some(f) = mixed.pop() {
            popped += f.len() as u64;
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let measured = arrivals.len() - warmup;
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    eprintln!("{rate}: {measured} packets, {allocs} allocations, {popped} samples out");
    assert!(measured > 10_000);
    assert!(popped > 0);
    assert_eq!(allocs, 0, "heap allocations in steady state");
}

#[test]
fn steady_state_allocates_nothing() {
    // One test function: the counter is global, so the two rates run one after the other.
    run(SampleRate::HZ_16000);
    run(SampleRate::HZ_48000);
}
