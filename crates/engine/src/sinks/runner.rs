//! The sink thread of a call: drains the call's frame rings into the recorder and the
//! transcription feed, off the media thread.
//!
//! One thread per call keeps a slow disk or a stalled speech service from touching any other
//! call: the thread may fall behind, its rings then fill and the pipeline drops (and counts)
//! frames for it alone. The thread wakes every 10 ms, drains everything queued, applies control
//! messages (roster facts, compliance gate, stop) and, on stop, drains the rings one last time and
//! finalizes the files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use mediabot_media::{AudioFrame, FrameConsumer, FrameSource};

use super::packet_ring::PacketConsumer;
use super::recorder::{Manifest, ParticipantMeta, Recorder};
use super::transcription::{FRAME_SAMPLES, SpeakerInfo};
use super::transcription_ws::FeedHandle;

/// Control messages for a sink thread.
#[derive(Debug)]
pub enum SinkControl {
    /// Start consuming a ring (the recorder's, once compliance allows, or the feed's).
    AddRing(FrameConsumer<i16>),
    /// Start consuming the call's received Opus packets (Ogg/Opus recording).
    AddPacketRing(PacketConsumer),
    /// Roster facts about a source.
    Participant {
        /// Source id.
        source_id: u32,
        /// For the recorder.
        meta: ParticipantMeta,
    },
    /// The dominant speaker changed (`None`: nobody), at a timeline position (output rate).
    Dominant(Option<u32>, u64),
    /// Drain and finish; media stats go into the manifest.
    Stop(serde_json::Value),
}

/// What the thread produced.
#[derive(Debug, Default)]
pub struct SinkOutcome {
    /// The final recorder manifest, if recording ran.
    pub manifest: Option<Manifest>,
    /// Errors finishing files.
    pub errors: Vec<String>,
    /// Frames consumed.
    pub frames: u64,
}

/// The sinks of one call.
pub struct SinkSet {
    /// Recorder (48 kHz or whatever the pipeline's rate is).
    pub recorder: Option<Recorder>,
    /// Transcription feed (16 kHz).
    pub feed: Option<FeedHandle>,
    /// The pipeline's output rate; frames are decimated to 16 kHz for the feed when it is 48 kHz.
    pub rate: u32,
    /// Recorder file failures are added here (`mediabot_recorder_errors_total`).
    pub errors: Arc<AtomicU64>,
    /// Called once, with the time, when the first participant frame reaches a sink (the call
    /// setup metric's end point).
    pub on_first_frame: Option<Box<dyn FnOnce(std::time::Instant) + Send>>,
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Spawns the sink thread of a call.
///
/// # Errors
/// When the OS refuses a thread.
pub fn spawn(
    name: &str,
    sinks: SinkSet,
    control: Receiver<SinkControl>,
) -> std::io::Result<JoinHandle<SinkOutcome>> {
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || run(sinks, control))
}

fn run(mut sinks: SinkSet, control: Receiver<SinkControl>) -> SinkOutcome {
    let mut rings: Vec<FrameConsumer<i16>> = Vec::new();
    let mut packets: Option<PacketConsumer> = None;
    let mut reported_failures = 0u64;
    let mut out = SinkOutcome::default();
    let mut decimators: Vec<(u32, Decimator)> = Vec::new();
    let mut pcm16 = Vec::with_capacity(FRAME_SAMPLES);
    loop {
        let msg = control.recv_timeout(Duration::from_millis(10));
        drain(
            &mut rings,
            &mut packets,
            &mut sinks,
            &mut decimators,
            &mut pcm16,
            &mut out,
        );
        report_failures(&sinks, &mut reported_failures);
        let stop = match msg {
            Ok(SinkControl::AddRing(r)) => {
                rings.push(r);
                None
            }
            Ok(SinkControl::AddPacketRing(r)) => {
                packets = Some(r);
                None
            }
            Ok(SinkControl::Participant { source_id, meta }) => {
                if let Some(feed) = &sinks.feed {
                    let info = SpeakerInfo {
                        participant_id: meta.participant_id.clone(),
                        display_name: meta.display_name.clone(),
                        identity_id: meta.identity_id.clone(),
                    };
                    feed.update(|f| f.handle_speaker_info(source_id, &info));
                }
                if let Some(r) = &mut sinks.recorder {
                    r.handle_participant(source_id, meta);
                    if let Err(e) = r.flush_manifest() {
                        out.errors.push(format!("manifest: {e}"));
                    }
                }
                None
            }
            Ok(SinkControl::Dominant(id, pos)) => {
                if let Some(feed) = &sinks.feed {
                    let pos16 = pos * 16_000 / u64::from(sinks.rate.max(1));
                    feed.update(|f| f.handle_dominant(id, pos16));
                }
                None
            }
            Ok(SinkControl::Stop(stats)) => Some(stats),
            Err(RecvTimeoutError::Disconnected) => Some(serde_json::Value::Null),
            Err(RecvTimeoutError::Timeout) => None,
        };
        if let Some(stats) = stop {
            drain(
                &mut rings,
                &mut packets,
                &mut sinks,
                &mut decimators,
                &mut pcm16,
                &mut out,
            );
            if let Some(feed) = &sinks.feed {
                feed.update(|f| f.handle_stop("call ended"));
            }
            if let Some(mut r) = sinks.recorder.take() {
                r.opus_packets_dropped = packets.as_ref().map_or(0, PacketConsumer::dropped);
                match r.finish(stats) {
                    Ok(m) => {
                        // Every failed file carries its error in the manifest, once; those
                        // not reported while writing failed at close.
                        let failed = m.tracks.iter().filter(|t| t.error.is_some()).count()
                            + m.opus.iter().filter(|t| t.error.is_some()).count();
                        sinks.errors.fetch_add(
                            (failed as u64).saturating_sub(reported_failures),
                            Ordering::Relaxed,
                        );
                        out.manifest = Some(m);
                    }
                    Err(e) => {
                        sinks.errors.fetch_add(1, Ordering::Relaxed);
                        out.errors.push(format!("manifest: {e}"));
                    }
                }
            }
            return out;
        }
    }
}

/// Adds the recorder's new file failures to the shared error counter.
fn report_failures(sinks: &SinkSet, reported: &mut u64) {
    if let Some(r) = &sinks.recorder {
        let now = r.failures();
        if now > *reported {
            sinks.errors.fetch_add(now - *reported, Ordering::Relaxed);
            *reported = now;
        }
    }
}

fn drain(
    rings: &mut [FrameConsumer<i16>],
    packets: &mut Option<PacketConsumer>,
    sinks: &mut SinkSet,
    decimators: &mut Vec<(u32, Decimator)>,
    pcm16: &mut Vec<i16>,
    out: &mut SinkOutcome,
) {
    if let Some(p) = packets.as_mut() {
        while let Some(pkt) = p.pop() {
            if let Some(r) = &mut sinks.recorder {
                r.handle_packet(&pkt);
            }
        }
    }
    for ring in rings.iter_mut() {
        while let Some(frame) = ring.pop() {
            out.frames += 1;
            if matches!(frame.source, FrameSource::Participant { .. })
                && let Some(f) = sinks.on_first_frame.take()
            {
                f(std::time::Instant::now());
            }
            if let Some(r) = &mut sinks.recorder {
                r.handle_frame(&frame);
            }
            if let (Some(feed), FrameSource::Participant { ssrc, .. }) = (&sinks.feed, frame.source)
            {
                to_16k(&frame, sinks.rate, ssrc.0, decimators, pcm16);
                let pos = frame.position.0 * 16_000 / u64::from(sinks.rate.max(1));
                feed.update(|f| f.handle_frame(ssrc.0, pos, pcm16));
            }
        }
    }
}

fn to_16k(
    frame: &AudioFrame<i16>,
    rate: u32,
    id: u32,
    decimators: &mut Vec<(u32, Decimator)>,
    out: &mut Vec<i16>,
) {
    out.clear();
    if rate == 16_000 {
        out.extend_from_slice(frame.samples());
        return;
    }
    let i = match decimators.iter().position(|(d, _)| *d == id) {
        Some(i) => i,
        None => {
            decimators.push((id, Decimator::default()));
            decimators.len() - 1
        }
    };
    decimators[i].1.process(frame.samples(), out);
}

/// A 48 kHz to 16 kHz decimator: a 48-tap windowed-sinc low-pass at 7.2 kHz, keeping every third
/// sample. Cheap enough for the sink thread and clean enough for speech recognition.
#[derive(Debug, Clone)]
pub struct Decimator {
    hist: [f32; TAPS],
    pos: usize,
    phase: usize,
}

const TAPS: usize = 48;

fn taps() -> &'static [f32; TAPS] {
    static T: std::sync::OnceLock<[f32; TAPS]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0f32; TAPS];
        let fc = 7_200.0 / 48_000.0;
        let mid = (TAPS - 1) as f64 / 2.0;
        let mut sum = 0.0;
        for (i, v) in t.iter_mut().enumerate() {
            let x = i as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (TAPS - 1) as f64).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / (TAPS - 1) as f64).cos();
            *v = (sinc * w) as f32;
            sum += f64::from(*v);
        }
        for v in &mut t {
            *v = (f64::from(*v) / sum) as f32;
        }
        t
    })
}

impl Default for Decimator {
    fn default() -> Self {
        Self {
            hist: [0.0; TAPS],
            pos: 0,
            phase: 0,
        }
    }
}

impl Decimator {
    /// Filters `input` (48 kHz) and appends the 16 kHz samples to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let t = taps();
        for &s in input {
            self.hist[self.pos] = f32::from(s);
            self.pos = (self.pos + 1) % TAPS;
            self.phase += 1;
            if self.phase == 3 {
                self.phase = 0;
                let mut acc = 0f32;
                for (k, c) in t.iter().enumerate() {
                    acc += c * self.hist[(self.pos + k) % TAPS];
                }
                out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_write_error_is_counted_in_the_metric_and_media_goes_on() {
        use crate::sinks::recorder::RecorderConfig;
        use mediabot_media::{CallConfig, CallPipeline, CallTag, SampleRate, TrackSelect};
        use std::time::Instant;
        let dir = std::env::temp_dir().join(format!("mediabot-runner-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Recorder::create(
            RecorderConfig {
                dir: dir.clone(),
                sample_rate: 48_000,
                checkpoint_every: Duration::from_millis(100),
                fsync_every: Duration::ZERO,
                ogg: false,
            },
            "call-x",
            "x".into(),
            4,
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.join("mixed.wav")).unwrap();
        let errors = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn(
            "test",
            SinkSet {
                recorder: Some(recorder),
                feed: None,
                rate: 48_000,
                errors: Arc::clone(&errors),
                on_first_frame: None,
            },
            rx,
        )
        .unwrap();
        let start = Instant::now();
        let mut call = CallPipeline::new(
            CallConfig::new(CallTag(1)).with_rate(SampleRate::HZ_48000),
            start,
            std::time::SystemTime::now(),
        );
        tx.send(SinkControl::AddRing(
            call.add_sink_i16(TrackSelect::Mixed, 64).unwrap(),
        ))
        .unwrap();
        // One second of media: the pipeline keeps producing the mix whatever the disk does.
        call.poll(start + Duration::from_secs(1));
        let mixed = call.stats().snapshot().mixed_frames;
        let t0 = Instant::now();
        while errors.load(Ordering::Relaxed) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(errors.load(Ordering::Relaxed), 1, "reported while running");
        tx.send(SinkControl::Stop(serde_json::Value::Null)).unwrap();
        let out = t.join().unwrap();
        assert_eq!(errors.load(Ordering::Relaxed), 1, "counted once");
        assert!(mixed > 0);
        assert_eq!(out.frames, mixed, "every frame reached the sink thread");
        let m = out.manifest.unwrap();
        assert!(m.tracks[0].error.is_some());
        assert_eq!(m.tracks[0].frames_lost_to_errors, mixed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decimator_keeps_speech_band_and_removes_aliases() {
        let tone = |f: f64| -> Vec<i16> {
            (0..4800)
                .map(|i| {
                    (10_000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 48_000.0).sin()) as i16
                })
                .collect()
        };
        let rms = |v: &[i16]| {
            (v.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let mut d = Decimator::default();
        let mut out = Vec::new();
        d.process(&tone(1000.0), &mut out);
        assert_eq!(out.len(), 1600);
        let pass = rms(&out[100..]);
        assert!((pass - 7071.0).abs() < 500.0, "1 kHz passes: {pass}");
        let mut d = Decimator::default();
        let mut out = Vec::new();
        d.process(&tone(12_000.0), &mut out);
        let stop = rms(&out[100..]);
        assert!(
            stop < 300.0,
            "12 kHz (would alias to 4 kHz) is removed: {stop}"
        );
    }
}
