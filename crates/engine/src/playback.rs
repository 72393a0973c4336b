//! Playback: an app's audio (a WAV file or PCM it made) played into a call through the send path.
//!
//! The work is split by thread, like everything on the real-time path:
//!
//! ```text
//!  app task ── Engine::play_wav / play_pcm ──▶ decode + mix to mono + resample to 48 kHz
//!           (blocking pool; errors: bad WAV, too long, bad rate)          │ Clip (Arc<[i16]>)
//!                                                                        ▼
//!  media thread: MediaCommand::Play ──▶ Player (per call, bounded queue) ──▶ PlaybackWriter
//!     every tick: keeps ~100 ms queued in the transport's ring, no more,   (paced out as Opus
//!     so stop takes effect within 100 ms; a finished clip reports          every 20 ms)
//!     PlaybackOutcome on its oneshot and as an EngineEvent
//! ```
//!
//! Bounds: a clip is at most [`MAX_CLIP_SECS`] long and a call queues at most
//! [`MAX_QUEUED_CLIPS`] clips holding at most [`MAX_QUEUED_SECS`] of audio; past that
//! [`PlaybackError::QueueFull`]. While a clip plays, echo mode (if on) is paused: its mix frames
//! are dropped and counted rather than mixed over the prompt.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mediabot_media::transport::PlaybackWriter;

/// The send path's rate: the transport encodes 48 kHz mono.
pub const PLAYBACK_RATE: u32 = 48_000;
/// Longest clip accepted, seconds.
pub const MAX_CLIP_SECS: u64 = 600;
/// Most clips queued (playing one included) per call.
pub const MAX_QUEUED_CLIPS: usize = 16;
/// Most audio queued per call, seconds.
pub const MAX_QUEUED_SECS: u64 = 900;
/// Audio kept ahead in the transport's ring (100 ms): the latency of a stop.
const LEAD_SAMPLES: usize = 4_800;
/// Lowest and highest input rates accepted.
const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// Why a playback request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaybackError {
    /// No call with this id on this instance.
    #[error("no such call: {0}")]
    UnknownCall(String),
    /// The call's media session has not connected yet (or the far side takes no audio).
    #[error("call {0} has no media session that receives audio yet")]
    NoMedia(String),
    /// The WAV file could not be read or is not PCM/float audio.
    #[error("bad wav file {path}: {reason}")]
    BadWav {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// PCM with an unsupported rate or channel count, or empty.
    #[error("bad pcm: {0}")]
    BadPcm(String),
    /// Longer than [`MAX_CLIP_SECS`].
    #[error("clip of {secs} s is longer than the {MAX_CLIP_SECS} s limit")]
    TooLong {
        /// The clip's length.
        secs: u64,
    },
    /// The call's queue is full ([`MAX_QUEUED_CLIPS`] / [`MAX_QUEUED_SECS`]).
    #[error("playback queue of the call is full")]
    QueueFull,
    /// The media thread did not answer (shutting down).
    #[error("media thread unavailable")]
    MediaUnavailable,
}

/// Identifies one queued clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PlaybackId(pub u64);

/// How a clip's playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum PlaybackOutcome {
    /// Every sample went out.
    Completed,
    /// Stopped by [`crate::engine::Engine::stop_playback`].
    Stopped,
    /// The call ended first.
    CallEnded,
}

/// A clip ready for the send path: 48 kHz mono.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Its id.
    pub id: PlaybackId,
    /// The samples.
    pub samples: Arc<[i16]>,
}

impl Clip {
    /// Its length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(PLAYBACK_RATE))
    }
}

/// Reads a WAV file (PCM 8/16/24/32-bit or 32-bit float, any rate from 8 to 192 kHz, any channel
/// count) and converts it to 48 kHz mono.
///
/// # Errors
/// [`PlaybackError::BadWav`], [`PlaybackError::TooLong`].
pub fn decode_wav(path: &Path) -> Result<Vec<i16>, PlaybackError> {
    let bad = |reason: String| PlaybackError::BadWav {
        path: path.display().to_string(),
        reason,
    };
    let reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(bad("zero channels".into()));
    }
    if !RATES.contains(&spec.sample_rate) {
        return Err(bad(format!("unsupported sample rate {}", spec.sample_rate)));
    }
    let secs = u64::from(reader.duration()) / u64::from(spec.sample_rate);
    if secs > MAX_CLIP_SECS {
        return Err(PlaybackError::TooLong { secs });
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?,
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?
        }
        (f, b) => return Err(bad(format!("unsupported format {f:?} {b}-bit"))),
    };
    let mono = downmix(&interleaved, usize::from(spec.channels));
    Ok(to_i16(&resample_to_48k(&mono, spec.sample_rate)?))
}

/// Converts app PCM (interleaved `channels`, at `rate`) to 48 kHz mono.
///
/// # Errors
/// [`PlaybackError::BadPcm`], [`PlaybackError::TooLong`].
pub fn convert_pcm(samples: &[i16], rate: u32, channels: u16) -> Result<Vec<i16>, PlaybackError> {
    if channels == 0 || channels > 8 {
        return Err(PlaybackError::BadPcm(format!("{channels} channels")));
    }
    if !RATES.contains(&rate) {
        return Err(PlaybackError::BadPcm(format!("sample rate {rate}")));
    }
    if samples.is_empty() || !samples.len().is_multiple_of(usize::from(channels)) {
        return Err(PlaybackError::BadPcm(format!(
            "{} samples is not a whole number of {channels}-channel frames",
            samples.len()
        )));
    }
    let frames = (samples.len() / usize::from(channels)) as u64;
    let secs = frames / u64::from(rate);
    if secs > MAX_CLIP_SECS {
        return Err(PlaybackError::TooLong { secs });
    }
    if rate == PLAYBACK_RATE && channels == 1 {
        return Ok(samples.to_vec());
    }
    let f: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32_768.0).collect();
    let mono = downmix(&f, usize::from(channels));
    Ok(to_i16(&resample_to_48k(&mono, rate)?))
}

fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect()
}

fn resample_to_48k(mono: &[f32], rate: u32) -> Result<Vec<f32>, PlaybackError> {
    use rubato::Resampler as _;
    if rate == PLAYBACK_RATE || mono.is_empty() {
        return Ok(mono.to_vec());
    }
    let bad = |e: &dyn std::fmt::Display| PlaybackError::BadPcm(format!("resampler: {e}"));
    let mut r = rubato::Fft::<f32>::new(
        rate as usize,
        PLAYBACK_RATE as usize,
        1024,
        1,
        rubato::FixedSync::Input,
    )
    .map_err(|e| bad(&e))?;
    let input = rubato::audioadapter_buffers::owned::InterleavedOwned::new_from(
        mono.to_vec(),
        1,
        mono.len(),
    )
    .map_err(|e| bad(&e))?;
    let out = r
        .process_all(&input, mono.len(), None)
        .map_err(|e| bad(&e))?;
    Ok(out.take_data())
}

fn to_i16(v: &[f32]) -> Vec<i16> {
    v.iter()
        .map(|&x| (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
        .collect()
}

/// One queued clip on the media thread.
#[derive(Debug)]
pub struct QueuedClip {
    /// The clip.
    pub clip: Clip,
    /// Told how it ended.
    pub done: Option<tokio::sync::oneshot::Sender<PlaybackOutcome>>,
}

/// A call's playback queue on the media thread: feeds clips into the transport's ring, keeping
/// only 100 ms ahead. Sans-IO apart from the writer it is handed.
#[derive(Debug, Default)]
pub struct Player {
    queue: VecDeque<QueuedClip>,
    /// Samples of the front clip already written.
    cursor: usize,
    queued_samples: u64,
}

impl Player {
    /// Queues a clip.
    ///
    /// # Errors
    /// [`PlaybackError::QueueFull`] (the clip is handed back).
    pub fn enqueue(&mut self, c: QueuedClip) -> Result<(), (PlaybackError, QueuedClip)> {
        let len = c.clip.samples.len() as u64;
        if self.queue.len() >= MAX_QUEUED_CLIPS
            || self.queued_samples + len > MAX_QUEUED_SECS * u64::from(PLAYBACK_RATE)
        {
            return Err((PlaybackError::QueueFull, c));
        }
        self.queued_samples += len;
        self.queue.push_back(c);
        Ok(())
    }

    /// Whether a clip is playing (echo pauses then).
    pub fn is_active(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Clips queued, the playing one included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Moves audio into `writer` (whose ring holds `capacity` samples) and reports the clips that
    /// finished through `finished`. A clip is finished once its last sample is written and the
    /// ring has drained to less than one frame, i.e. when it has (nearly) all gone out.
    pub fn pump(
        &mut self,
        writer: &mut PlaybackWriter,
        capacity: usize,
        mut finished: impl FnMut(PlaybackId, PlaybackOutcome),
    ) {
        loop {
            let Some(front) = self.queue.front() else {
                return;
            };
            let samples = Arc::clone(&front.clip.samples);
            let in_ring = capacity.saturating_sub(writer.vacant());
            if self.cursor < samples.len() {
                let room = LEAD_SAMPLES.saturating_sub(in_ring);
                if room == 0 {
                    return;
                }
                let end = (self.cursor + room).min(samples.len());
                let n = writer.write(&samples[self.cursor..end]);
                self.cursor += n;
                if self.cursor < samples.len() {
                    return;
                }
            }
            // Written in full: done when the ring is (almost) empty.
            let in_ring = capacity.saturating_sub(writer.vacant());
            if in_ring >= 960 {
                return;
            }
            self.finish_front(PlaybackOutcome::Completed, &mut finished);
        }
    }

    /// Ends every clip with `outcome` (stop, call end); returns how many there were. Audio
    /// already in the transport's ring (at most 100 ms) still goes out.
    pub fn clear(
        &mut self,
        outcome: PlaybackOutcome,
        mut finished: impl FnMut(PlaybackId, PlaybackOutcome),
    ) -> usize {
        let n = self.queue.len();
        while !self.queue.is_empty() {
            self.finish_front(outcome, &mut finished);
        }
        n
    }

    fn finish_front(
        &mut self,
        outcome: PlaybackOutcome,
        finished: &mut impl FnMut(PlaybackId, PlaybackOutcome),
    ) {
        if let Some(mut c) = self.queue.pop_front() {
            self.queued_samples = self
                .queued_samples
                .saturating_sub(c.clip.samples.len() as u64);
            if let Some(done) = c.done.take() {
                let _ = done.send(outcome);
            }
            finished(c.clip.id, outcome);
        }
        self.cursor = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mediabot_media::transport::send::{SendConfig, playback};

    fn tone(rate: u32, ms: u32, hz: f64) -> Vec<i16> {
        (0..rate * ms / 1000)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    #[test]
    fn pcm_of_any_common_rate_and_stereo_becomes_48k_mono() {
        for rate in [8_000, 16_000, 22_050, 44_100, 48_000] {
            let mono = tone(rate, 500, 440.0);
            let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
            let out = convert_pcm(&stereo, rate, 2).unwrap();
            let expect = 24_000usize;
            assert!(
                out.len().abs_diff(expect) <= 48,
                "{rate}: {} samples for 500 ms",
                out.len()
            );
            // Same frequency after resampling: compare with a 48 kHz tone by zero crossings.
            let zc = |v: &[i16]| v.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
            let z = zc(&out[2400..21_600]);
            assert!(
                (z as i64 - 352).abs() <= 4,
                "{rate}: {z} crossings in 400 ms"
            );
        }
        assert!(matches!(
            convert_pcm(&[1, 2, 3], 16_000, 2),
            Err(PlaybackError::BadPcm(_))
        ));
        assert!(matches!(
            convert_pcm(&[1], 4_000, 1),
            Err(PlaybackError::BadPcm(_))
        ));
        assert!(matches!(
            convert_pcm(&[], 16_000, 1),
            Err(PlaybackError::BadPcm(_))
        ));
    }

    #[test]
    fn wav_files_decode_and_bad_ones_are_typed_errors() {
        let dir = std::env::temp_dir().join(format!("mediabot-playback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s24.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 24_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for s in tone(24_000, 250, 300.0) {
            w.write_sample(i32::from(s) << 8).unwrap();
            w.write_sample(i32::from(s) << 8).unwrap();
        }
        w.finalize().unwrap();
        let out = decode_wav(&p).unwrap();
        assert!(out.len().abs_diff(12_000) <= 48, "{}", out.len());
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((7_000..9_000).contains(&peak), "level kept: {peak}");

        let junk = dir.join("junk.wav");
        std::fs::write(&junk, b"RIFF....not a wav").unwrap();
        assert!(matches!(
            decode_wav(&junk),
            Err(PlaybackError::BadWav { .. })
        ));
        assert!(matches!(
            decode_wav(&dir.join("missing.wav")),
            Err(PlaybackError::BadWav { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn player_keeps_a_short_lead_finishes_in_order_and_stops() {
        let (mut w, mut core) = playback(&SendConfig::default(), 111, None, 0, 0).unwrap();
        let capacity = w.vacant();
        let mut p = Player::default();
        let mut done = Vec::new();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        p.enqueue(QueuedClip {
            clip: Clip {
                id: PlaybackId(1),
                samples: vec![100; 960 * 10].into(),
            },
            done: Some(tx),
        })
        .unwrap();
        p.enqueue(QueuedClip {
            clip: Clip {
                id: PlaybackId(2),
                samples: vec![200; 960 * 3].into(),
            },
            done: None,
        })
        .unwrap();
        // 20 ms ticks: the send core takes one frame each.
        let mut ticks = 0;
        while p.is_active() && ticks < 100 {
            p.pump(&mut w, capacity, |id, o| done.push((id, o)));
            assert!(capacity - w.vacant() <= LEAD_SAMPLES, "lead stays bounded");
            core.next_packet().unwrap();
            ticks += 1;
        }
        assert_eq!(
            done,
            vec![
                (PlaybackId(1), PlaybackOutcome::Completed),
                (PlaybackId(2), PlaybackOutcome::Completed)
            ]
        );
        assert_eq!(rx.try_recv().unwrap(), PlaybackOutcome::Completed);
        assert!(
            (13..=16).contains(&ticks),
            "13 frames of audio took {ticks} ticks"
        );

        // Stop: everything queued ends as stopped.
        for i in 0..3 {
            p.enqueue(QueuedClip {
                clip: Clip {
                    id: PlaybackId(10 + i),
                    samples: vec![1; 48_000].into(),
                },
                done: None,
            })
            .unwrap();
        }
        p.pump(&mut w, capacity, |_, _| {});
        done.clear();
        assert_eq!(
            p.clear(PlaybackOutcome::Stopped, |id, o| done.push((id, o))),
            3
        );
        assert!(done.iter().all(|d| d.1 == PlaybackOutcome::Stopped));
        assert!(!p.is_active());
    }

    #[test]
    fn queue_is_bounded() {
        let mut p = Player::default();
        for i in 0..MAX_QUEUED_CLIPS as u64 {
            p.enqueue(QueuedClip {
                clip: Clip {
                    id: PlaybackId(i),
                    samples: vec![0; 10].into(),
                },
                done: None,
            })
            .unwrap();
        }
        let extra = QueuedClip {
            clip: Clip {
                id: PlaybackId(99),
                samples: vec![0; 10].into(),
            },
            done: None,
        };
        assert!(matches!(
            p.enqueue(extra),
            Err((PlaybackError::QueueFull, _))
        ));
    }
}
