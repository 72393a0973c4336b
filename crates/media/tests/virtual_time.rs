//! Proves on virtual time that tracks come out continuous, correctly placed and of the right
//! length under reorder, duplicates, loss, jitter, wrap, DTX, SSRC change and clock drift.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mediabot_media::{CallConfig, CallTag, SampleRate, Ssrc, TrackSelect};

const RATE: u64 = 16_000;
const FRAME: u64 = 320;

fn speech_packets(seconds: f64, seed: u64) -> (Vec<f32>, Vec<Vec<u8>>) {
    let pcm = speech_like(48_000, seconds, seed);
    let packets = encode(&pcm, false, 10);
    (pcm, packets)
}

/// Runs one stream through `net`; returns the driver after `seconds + 1`.
fn run_one(
    seconds: f64,
    net: Netem,
    start_seq: u16,
    start_ts: u32,
    keep: bool,
) -> (Driver, Vec<f32>, Vec<Arrival>) {
    let (pcm, packets) = speech_packets(seconds, 7);
    let sent = schedule(&packets, start_seq, start_ts, 0.5, 0.0, false);
    let arrivals = merge(vec![impair(&sent, Ssrc(1), net)]);
    let (call, start) = pipeline(CallConfig::new(CallTag(1)));
    let mut d = Driver::new(call, start);
    d.keep_samples = keep;
    d.add_sink(TrackSelect::AllParticipants);
    d.add_sink(TrackSelect::Mixed);
    d.run(&arrivals, seconds + 1.5, 0.01);
    (d, pcm, arrivals)
}

/// The track starts where the first packet was sent (+20 ms network delay) and ends where the
/// last received packet's audio ends, each within one frame.
fn check_track(d: &Driver, arrivals: &[Arrival]) -> (u64, u64) {
    let frames = &d.tracks[0].frames;
    let (first, end) = assert_contiguous(frames);
    let first_sent = arrivals.iter().map(|a| a.sent).fold(f64::MAX, f64::min);
    let last_sent = arrivals.iter().map(|a| a.sent).fold(0.0, f64::max);
    let expected_first = ((first_sent + 0.02) * RATE as f64) as u64;
    assert!(
        first.abs_diff(expected_first) <= FRAME,
        "first {first} vs {expected_first}"
    );
    let expected_end = ((last_sent + 0.04) * RATE as f64) as u64;
    // The end frame is zero-padded up to the grid, hence up to one more frame.
    assert!(
        end.abs_diff(expected_end) <= FRAME,
        "end {end} vs {expected_end}"
    );
    (first, end)
}

fn base_net(seed: u64) -> Netem {
    Netem {
        base_delay: 0.02,
        seed,
        ..Netem::default()
    }
}

#[test]
fn clean_stream_is_continuous_placed_and_faithful() {
    let (d, pcm, arr) = run_one(6.0, base_net(1), 1000, 5000, true);
    check_track(&d, &arr);
    let stats = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert_eq!(
        (stats.lost, stats.late, stats.duplicate, stats.concealed),
        (0, 0, 0, 0)
    );
    let (_, out) = flatten(&d.tracks[0].samples);
    let reference = decimate3(&pcm);
    let (c, _) = best_correlation(&reference[16_000..48_000], &out[16_000..], 400);
    assert!(c > 0.9, "correlation {c}");
    // The mix is continuous from position 0.
    let (mfirst, mend) = assert_contiguous(&d.tracks[1].frames);
    assert_eq!(mfirst, 0);
    assert!(mend >= (6.0 * RATE as f64) as u64);
}

#[test]
fn reorder_and_duplicates() {
    let net = Netem {
        jitter: 0.06,
        duplicate: 0.1,
        ..base_net(2)
    };
    let (d, _, arr) = run_one(6.0, net, 1, 0, false);
    check_track(&d, &arr);
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(s.duplicate > 10, "{s:?}");
    assert_eq!(s.lost, 0);
    // Only packets later than the adapted buffer are lost to lateness: very few. (With 60 ms
    // of jitter, one of the first packets more comes after the 40 ms start-up wait than after
    // the former 100 ms: the price of starting 60 ms sooner.)
    assert!(
        s.concealed + s.fec_recovered <= s.late && s.late <= 4,
        "{s:?}"
    );
}

#[test]
fn random_and_burst_loss_are_concealed_without_gaps() {
    let net = Netem {
        loss: 0.08,
        burst: 0.3,
        burst_max: 4,
        ..base_net(3)
    };
    let (d, _, arr) = run_one(8.0, net, 40_000, 1 << 31, false);
    check_track(&d, &arr);
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(s.lost > 20, "{s:?}");
    assert!(s.fec_recovered > 0 && s.concealed > 0, "{s:?}");
    let flagged = d.tracks[0].frames.iter().filter(|f| f.2.concealed).count();
    assert!(flagged > 0);
}

#[test]
fn jitter_up_to_100ms_adapts_the_buffer() {
    let net = Netem {
        jitter: 0.1,
        ..base_net(4)
    };
    let (d, _, arr) = run_one(10.0, net, 7, 7, false);
    check_track(&d, &arr);
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert!(s.buffer_delay_us >= 80_000, "{s:?}");
    assert!(
        s.late * 100 <= s.received,
        "late {} of {}",
        s.late,
        s.received
    );
}

#[test]
fn sequence_and_timestamp_wrap() {
    let (d, _, arr) = run_one(4.0, base_net(5), 65_500, u32::MAX - 48_000, false);
    check_track(&d, &arr);
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert_eq!((s.lost, s.resyncs, s.restarts), (0, 0, 0), "{s:?}");
}

#[test]
fn dtx_gaps_become_exact_silence() {
    let pcm = speech_like(48_000, 8.0, 11);
    let packets = encode(&pcm, true, 0);
    let sent = schedule(&packets, 1, 0, 0.5, 0.0, true);
    assert!(sent.len() < packets.len(), "the encoder used DTX");
    let arrivals = impair(&sent, Ssrc(1), base_net(6));
    let (call, start) = pipeline(CallConfig::new(CallTag(1)));
    let mut d = Driver::new(call, start);
    d.keep_samples = true;
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, 9.5, 0.01);
    let (first, end) = assert_contiguous(&d.tracks[0].frames);
    // The last packet sent ends the track: its media time decides the length, exactly.
    let last_ts_secs = (sent.last().unwrap().ts as f64) / 48_000.0 + 0.02;
    let expected = (last_ts_secs * RATE as f64) as u64;
    assert!(
        (end - first).abs_diff(expected) <= 2 * FRAME,
        "{} vs {expected}",
        end - first
    );
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    // Exactly the DTX gaps (at 16 kHz) were filled with silence.
    let gaps: u64 = sent
        .windows(2)
        .map(|w| u64::from(w[1].ts.wrapping_sub(w[0].ts) - 960) / 3)
        .sum();
    assert!(gaps > 16_000, "{gaps}");
    assert_eq!(s.silence_samples, gaps, "{s:?}");
    assert_eq!(s.resyncs, 0);
    // Frames flagged silent are exact zeros, and there are many of them.
    let silent: Vec<_> = d.tracks[0]
        .samples
        .iter()
        .zip(&d.tracks[0].frames)
        .filter(|(_, f)| f.2.silence)
        .collect();
    assert!(silent.len() as u64 >= gaps / 320 / 2, "{}", silent.len());
    assert!(silent.iter().all(|((_, s), _)| s.iter().all(|v| *v == 0.0)));
}

#[test]
fn ssrc_change_continues_on_the_timeline() {
    let (_, packets) = speech_packets(6.0, 13);
    let a = schedule(&packets[..150], 100, 1000, 0.5, 0.0, false);
    let b = schedule(&packets[150..], 9000, 777_777, 0.5 + 3.0, 0.0, false);
    let arrivals = merge(vec![
        impair(&a, Ssrc(1), base_net(7)),
        impair(&b, Ssrc(2), base_net(8)),
    ]);
    let (call, start) = pipeline(CallConfig::new(CallTag(1)));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, 7.5, 0.01);
    let fa: Vec<_> = d.tracks[0]
        .frames
        .iter()
        .filter(|f| f.3 == Ssrc(1))
        .copied()
        .collect();
    let fb: Vec<_> = d.tracks[0]
        .frames
        .iter()
        .filter(|f| f.3 == Ssrc(2))
        .copied()
        .collect();
    let (_, end_a) = assert_contiguous(&fa);
    let (first_b, _) = assert_contiguous(&fb);
    let expected_b = (3.52 * RATE as f64) as u64;
    assert!(
        first_b.abs_diff(expected_b) <= FRAME,
        "{first_b} vs {expected_b}"
    );
    assert!(
        end_a.abs_diff((3.52 * RATE as f64) as u64) <= FRAME,
        "{end_a}"
    );
}

/// One hour, two senders at +200 and -200 ppm, random jitter: each track ends within one
/// frame of the true media length and the two stay aligned within a frame.
#[test]
fn one_hour_of_drift_stays_within_a_frame() {
    let seconds = 3600.0;
    // A 2 s loop of speech, re-sent for an hour (decoding cost is what matters here).
    let (_, looped) = speech_packets(2.0, 17);
    let n = (seconds / 0.02) as usize;
    let packets: Vec<Vec<u8>> = (0..n).map(|i| looped[i % looped.len()].clone()).collect();
    let fast = schedule(&packets, 1, 0, 0.5, 200.0, false);
    let slow = schedule(&packets, 1, 0, 0.5, -200.0, false);
    let net = |seed| Netem {
        jitter: 0.04,
        ..base_net(seed)
    };
    let arrivals = merge(vec![
        impair(&fast, Ssrc(1), net(21)),
        impair(&slow, Ssrc(2), net(22)),
    ]);
    let (call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::Participant(Ssrc(1)));
    d.add_sink(TrackSelect::Participant(Ssrc(2)));
    d.run(&arrivals, 0.5 + seconds / (1.0 - 200e-6) + 2.0, 0.02);
    let (f1, e1) = assert_contiguous(&d.tracks[0].frames);
    let (f2, e2) = assert_contiguous(&d.tracks[1].frames);
    // True durations on the receiver's clock.
    let exp1 = seconds / (1.0 + 200e-6) * RATE as f64;
    let exp2 = seconds / (1.0 - 200e-6) * RATE as f64;
    let (l1, l2) = ((e1 - f1) as f64, (e2 - f2) as f64);
    eprintln!("fast: {l1} vs {exp1}; slow: {l2} vs {exp2}; starts {f1} {f2}");
    assert!(
        (l1 - exp1).abs() <= FRAME as f64,
        "fast track {l1} vs {exp1}"
    );
    assert!(
        (l2 - exp2).abs() <= FRAME as f64,
        "slow track {l2} vs {exp2}"
    );
    // Aligned: both started at the same instant.
    assert!(f1.abs_diff(f2) <= FRAME, "{f1} vs {f2}");
    for s in [Ssrc(1), Ssrc(2)] {
        let st = d.call.stream_stats(s).unwrap().snapshot();
        eprintln!("{s}: {st:?} drift {} ppb", st.drift_ppb());
        assert_eq!(st.resyncs, 0, "{st:?}");
    }
    let _ = SampleRate::HZ_16000;
}

/// The media bridge path: 20 ms PCM frames with 100 ns timestamps (one gap) at 48 kHz into a
/// 16 kHz call: resampled, placed, the gap filled with exact silence.
#[test]
fn pcm_frames_from_the_bridge_land_on_the_timeline() {
    use mediabot_media::{MediaIngest, PcmInput};
    let pcm = speech_like(48_000, 4.0, 5);
    let (call, start) = pipeline(CallConfig::new(CallTag(3)));
    let mut d = Driver::new(call, start);
    d.keep_samples = true;
    d.add_sink(TrackSelect::AllParticipants);
    let frames: Vec<Vec<i16>> = pcm
        .chunks_exact(960)
        .map(|c| c.iter().map(|s| (s * 32767.0) as i16).collect())
        .collect();
    for (i, f) in frames.iter().enumerate() {
        // Frames 100..110 never arrive (the bridge paused 200 ms).
        if (100..110).contains(&i) {
            continue;
        }
        let sent = 0.3 + i as f64 * 0.02;
        let input = PcmInput {
            source: Ssrc(40),
            rate: SampleRate::HZ_48000,
            samples: f,
            timestamp_100ns: Some(1_000_000_000 + i as u64 * 200_000),
        };
        d.call.ingest_pcm(d.at(sent + 0.001), &input).unwrap();
        d.call.poll(d.at(sent + 0.001));
        d.drain();
    }
    d.call.remove_stream(Ssrc(40));
    d.drain();
    let (first, end) = assert_contiguous(&d.tracks[0].frames);
    assert!(
        first.abs_diff((0.301 * RATE as f64) as u64) <= FRAME,
        "{first}"
    );
    assert!((end - first).abs_diff(4 * RATE) <= FRAME, "{}", end - first);
    let s = d.call.stream_stats(Ssrc(40));
    assert!(s.is_none(), "removed");
    let c = d.call.stats().snapshot();
    assert_eq!(c.pcm_rejected, 0);
}

/// With RTCP sender reports, frames carry the sender's wall clock for their first sample.
#[test]
fn sender_reports_set_capture_time() {
    use mediabot_media::MediaIngest;
    use mediabot_media::rtp::SenderReport;
    let (_, packets) = speech_packets(2.0, 3);
    let sent = schedule(&packets, 1, 48_000, 0.2, 0.0, false);
    let arrivals = impair(&sent, Ssrc(1), base_net(9));
    let (call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    let mut d = Driver::new(call, start);
    let mut sink = d
        .call
        .add_sink_i16(TrackSelect::AllParticipants, 512)
        .unwrap();
    // RTP time 48_000 (the first packet) is Unix time 1_700_000_000 s on the sender.
    let ntp = (1_700_000_000u64 + 2_208_988_800) << 32;
    d.run(&arrivals[..5], 0.3, 0.01);
    let mut buf = [0u8; 28];
    let n = SenderReport {
        ssrc: Ssrc(1),
        ntp_time: ntp,
        rtp_time: mediabot_media::RtpTimestamp(48_000),
        packet_count: 5,
    }
    .write_to(&mut buf)
    .unwrap();
    d.call.ingest_rtcp(d.at(0.3), &buf[..n]).unwrap();
    d.run(&arrivals[5..], 3.0, 0.01);
    let mut checked = 0;
    while let Some(f) = sink.pop() {
        if f.position.0 < 16_000 {
            continue;
        }
        // The sample at position p was sent (p/16000 - 0.22) s after the first packet.
        let secs = f.position.0 as f64 / 16_000.0 - 0.22;
        let expected = 1_700_000_000.0 + secs;
        let got = f.capture_time.0 as f64 / 1e7;
        assert!((got - expected).abs() < 0.02, "{got} vs {expected}");
        checked += 1;
    }
    assert!(checked > 20);
}

/// The paused-sender policy: a 3 s pause (timestamps jump with real time) is filled with
/// exact silence; a 20 s pause (longer than `max_silence_fill`, 10 s) is a marked gap: no
/// frames for it, the next frame flagged `discontinuity` at its true position.
#[test]
fn paused_sender_short_pause_filled_long_pause_marked() {
    let (_, packets) = speech_packets(6.0, 23);
    // Three talk spurts of 2 s: at 0.5 s, after a 3 s pause, after a 20 s pause.
    let mut sent = schedule(&packets[..100], 1, 0, 0.5, 0.0, false);
    let second = schedule(
        &packets[100..200],
        101,
        96_000 + 3 * 48_000,
        0.5 + 2.0 + 3.0,
        0.0,
        false,
    );
    let third_ts = 96_000 * 2 + 3 * 48_000 + 20 * 48_000;
    let third = schedule(&packets[200..], 201, third_ts, 0.5 + 4.0 + 23.0, 0.0, false);
    sent.extend(second);
    sent.extend(third);
    let arrivals = impair(&sent, Ssrc(1), base_net(31));
    let (call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, 30.0, 0.01);
    let frames = &d.tracks[0].frames;
    let (first, end) = assert_contiguous(frames);
    let marked: Vec<_> = frames.iter().filter(|f| f.2.discontinuity).collect();
    assert_eq!(marked.len(), 1, "one marked gap: {marked:?}");
    // The marked frame is where the third spurt really started (27.5 s + 20 ms).
    let expected = (27.52 * RATE as f64) as u64;
    assert!(
        marked[0].0.abs_diff(expected) <= FRAME,
        "{} vs {expected}",
        marked[0].0
    );
    // Before it, the track is continuous through the 3 s pause (silence frames).
    let before: u64 = frames
        .iter()
        .filter(|f| f.0 < marked[0].0)
        .map(|f| f.1 as u64)
        .sum();
    assert!(before.abs_diff(7 * RATE) <= 2 * FRAME, "{before}");
    let silent = frames.iter().filter(|f| f.2.silence).count();
    assert!(silent >= 140, "{silent} silent frames");
    // And nothing was produced for the 20 s pause.
    let total: u64 = frames.iter().map(|f| f.1 as u64).sum();
    assert!(total.abs_diff(9 * RATE) <= 3 * FRAME, "{total}");
    assert!(
        end - first > total,
        "the gap is in the positions, not in the samples"
    );
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert_eq!(s.resyncs, 1, "{s:?}");
}

/// A sender restart on the same SSRC (new random sequence and timestamp bases, RFC 3550 A.1):
/// detected on the second packet, the stream re-anchors by arrival and flags the frame.
#[test]
fn sender_restart_on_the_same_ssrc() {
    let (_, packets) = speech_packets(4.0, 29);
    let mut sent = schedule(&packets[..100], 10, 0, 0.5, 0.0, false);
    sent.extend(schedule(
        &packets[100..],
        40_000,
        123_456_789,
        2.5 + 0.5,
        0.0,
        false,
    ));
    let arrivals = impair(&sent, Ssrc(1), base_net(41));
    let (call, start) = pipeline(CallConfig::new(CallTag(1)).with_mixer(None));
    let mut d = Driver::new(call, start);
    d.add_sink(TrackSelect::AllParticipants);
    d.run(&arrivals, 6.0, 0.01);
    let s = d.call.stream_stats(Ssrc(1)).unwrap().snapshot();
    assert_eq!(s.restarts, 1, "{s:?}");
    let frames = &d.tracks[0].frames;
    let (first, end) = assert_contiguous(frames);
    let marked: Vec<_> = frames.iter().filter(|f| f.2.discontinuity).collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    // After the restart the audio is where it was sent: 3.0 s + 20 ms network delay.
    let expected = (3.02 * RATE as f64) as u64;
    assert!(
        marked[0].0.abs_diff(expected) <= FRAME,
        "{} vs {expected}",
        marked[0].0
    );
    assert!(end.abs_diff((5.02 * RATE as f64) as u64) <= FRAME, "{end}");
    assert!(first.abs_diff((0.52 * RATE as f64) as u64) <= FRAME);
}
