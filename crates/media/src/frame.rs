//! The frame contract (DESIGN.md "Frames"): a fixed-size PCM frame (10 or 20 ms, mono) tagged
//! with call, source (a participant's stream or the mix), SSRC, timeline position and
//! wall-clock capture time; and the lock-free SPSC rings that carry frames to sinks.
//!
//! A frame is a plain `Copy` value with its samples inline, so pushing it into a ring is a
//! memcpy: no allocation, no reference counting.

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};

use crate::units::{CallTag, ParticipantTag, SampleRate, Ssrc, TimelinePos, WallClock100ns};

/// Largest frame: 20 ms at 48 kHz.
pub const MAX_FRAME_SAMPLES: usize = 960;

/// Most active speakers listed on one mixed frame.
pub const MAX_ACTIVE_SPEAKERS: usize = 8;

/// A PCM sample type frames can carry.
pub trait Sample: Copy + Default + Send + 'static + std::fmt::Debug {
    /// From a float in [-1, 1] (clamped).
    fn from_f32(v: f32) -> Self;
    /// To a float in [-1, 1].
    fn to_f32(self) -> f32;
}

impl Sample for i16 {
    fn from_f32(v: f32) -> Self {
        // Round half away from zero without a libm call; `as` saturates.
        let x = v.clamp(-1.0, 1.0) * 32767.0;
        (x + 0.5f32.copysign(x)) as i16
    }
    fn to_f32(self) -> f32 {
        f32::from(self) / 32768.0
    }
}

impl Sample for f32 {
    fn from_f32(v: f32) -> Self {
        v.clamp(-1.0, 1.0)
    }
    fn to_f32(self) -> f32 {
        self
    }
}

/// Whose audio a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameSource {
    /// One participant's stream.
    Participant {
        /// The stream's SSRC (media source id).
        ssrc: Ssrc,
        /// The roster participant, once the engine mapped the SSRC.
        participant: Option<ParticipantTag>,
    },
    /// The call's mix of all participants.
    Mixed,
}

/// Per-frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags {
    /// Every sample is exact silence (DTX, pause, or nobody speaking in the mix), like the
    /// SDK's `IsSilence`.
    pub silence: bool,
    /// Some samples were synthesized (PLC or FEC).
    pub concealed: bool,
    /// The stream's audio before this frame did not continue into it: a gap longer than the
    /// silence-fill limit, a sender restart or a re-anchor. The position says how long.
    pub discontinuity: bool,
}

/// Active speakers on a mixed frame, loudest first (the SDK's `ActiveSpeakers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveSpeakers {
    len: u8,
    ssrcs: [Option<Ssrc>; MAX_ACTIVE_SPEAKERS],
}

impl ActiveSpeakers {
    /// The speakers, loudest first.
    pub fn iter(&self) -> impl Iterator<Item = Ssrc> + '_ {
        self.ssrcs[..usize::from(self.len)]
            .iter()
            .flatten()
            .copied()
    }

    /// Number of speakers.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether nobody was heard.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, ssrc: Ssrc) {
        if usize::from(self.len) < MAX_ACTIVE_SPEAKERS {
            self.ssrcs[usize::from(self.len)] = Some(ssrc);
            self.len += 1;
        }
    }
}

/// One fixed-size frame of mono PCM on a call's timeline.
#[derive(Debug, Clone, Copy)]
pub struct AudioFrame<S: Sample> {
    /// The call.
    pub call: CallTag,
    /// Whose audio.
    pub source: FrameSource,
    /// First sample's position on the call timeline (samples since media start, at `rate`).
    pub position: TimelinePos,
    /// Wall-clock capture time of the first sample: from the sender's RTCP reports when it sent
    /// some, else the call's media start plus the position.
    pub capture_time: WallClock100ns,
    /// Sample rate.
    pub rate: SampleRate,
    /// Flags.
    pub flags: FrameFlags,
    /// RMS level in dBFS (-120 for silence).
    pub level_dbfs: f32,
    /// Active speakers (mixed frames only).
    pub active_speakers: ActiveSpeakers,
    len: u16,
    samples: [S; MAX_FRAME_SAMPLES],
}

impl<S: Sample> AudioFrame<S> {
    /// An empty (zero-length) frame; used to pre-size buffers.
    pub fn empty() -> Self {
        AudioFrame {
            call: CallTag::default(),
            source: FrameSource::Mixed,
            position: TimelinePos(0),
            capture_time: WallClock100ns::default(),
            rate: SampleRate::HZ_48000,
            flags: FrameFlags::default(),
            level_dbfs: -120.0,
            active_speakers: ActiveSpeakers::default(),
            len: 0,
            samples: [S::default(); MAX_FRAME_SAMPLES],
        }
    }

    /// The samples.
    pub fn samples(&self) -> &[S] {
        &self.samples[..usize::from(self.len)]
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the frame holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position just after the last sample.
    pub fn end(&self) -> TimelinePos {
        TimelinePos(self.position.0 + u64::from(self.len))
    }

    /// Fills the samples from floats (at most [`MAX_FRAME_SAMPLES`]).
    pub fn set_samples_f32(&mut self, src: &[f32]) {
        let n = src.len().min(MAX_FRAME_SAMPLES);
        for (d, s) in self.samples[..n].iter_mut().zip(src) {
            *d = S::from_f32(*s);
        }
        self.len = n as u16;
    }
}

/// The producing side of a sink's ring, owned by the pipeline.
pub(crate) enum SinkProducer {
    I16(ringbuf::HeapProd<AudioFrame<i16>>),
    F32(ringbuf::HeapProd<AudioFrame<f32>>),
}

/// The consuming side of a sink's ring: move it to the sink's thread and pop frames. Never
/// blocks; when the sink falls behind, the pipeline drops frames and counts them.
pub struct FrameConsumer<S: Sample> {
    inner: ringbuf::HeapCons<AudioFrame<S>>,
}

impl<S: Sample> std::fmt::Debug for FrameConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameConsumer")
            .field("queued", &self.inner.occupied_len())
            .finish()
    }
}

impl<S: Sample> FrameConsumer<S> {
    /// The oldest queued frame, if any.
    pub fn pop(&mut self) -> Option<AudioFrame<S>> {
        self.inner.try_pop()
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.inner.occupied_len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// Builds a ring of `capacity` frames (allocated once, here).
pub(crate) fn ring<S: Sample>(
    capacity: usize,
) -> (ringbuf::HeapProd<AudioFrame<S>>, FrameConsumer<S>) {
    let rb = HeapRb::<AudioFrame<S>>::new(capacity.max(1));
    let (p, c) = rb.split();
    (p, FrameConsumer { inner: c })
}

impl SinkProducer {
    /// Pushes a frame converted from floats; `false` when the ring is full (frame dropped).
    pub(crate) fn push(&mut self, meta: &AudioFrame<f32>) -> bool {
        self.push_samples(meta, meta.samples())
    }

    /// Pushes a frame with `meta`'s tags and `samples` (not `meta`'s own samples).
    pub(crate) fn push_samples(&mut self, meta: &AudioFrame<f32>, samples: &[f32]) -> bool {
        fn convert<S: Sample>(meta: &AudioFrame<f32>, samples: &[f32]) -> AudioFrame<S> {
            let n = samples.len().min(MAX_FRAME_SAMPLES);
            let mut f = AudioFrame::<S> {
                call: meta.call,
                source: meta.source,
                position: meta.position,
                capture_time: meta.capture_time,
                rate: meta.rate,
                flags: meta.flags,
                level_dbfs: meta.level_dbfs,
                active_speakers: meta.active_speakers,
                len: n as u16,
                samples: [S::default(); MAX_FRAME_SAMPLES],
            };
            for (d, s) in f.samples[..n].iter_mut().zip(samples) {
                *d = S::from_f32(*s);
            }
            f
        }
        match self {
            SinkProducer::I16(p) => {
                !p.is_full() && p.try_push(convert::<i16>(meta, samples)).is_ok()
            }
            SinkProducer::F32(p) => {
                !p.is_full() && p.try_push(convert::<f32>(meta, samples)).is_ok()
            }
        }
    }
}

/// RMS level of `samples` in dBFS (floor -120).
pub fn level_dbfs(samples: &[f32]) -> f32 {
    level_and_silence(samples).0
}

/// RMS level in dBFS and whether every sample is exactly zero, in one pass.
pub fn level_and_silence(samples: &[f32]) -> (f32, bool) {
    if samples.is_empty() {
        return (-120.0, true);
    }
    // Eight partial sums so the loop vectorizes.
    let mut acc = [0.0f32; 8];
    let chunks = samples.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    let sum: f32 = acc.iter().sum::<f32>() + rest.iter().map(|s| s * s).sum::<f32>();
    if sum == 0.0 {
        // A sum of squares is zero only if every sample is zero (or squares underflowed).
        let silent = samples.iter().all(|s| *s == 0.0);
        return (-120.0, silent);
    }
    let mean = sum / samples.len() as f32;
    let level = if mean <= 1e-12 {
        -120.0
    } else {
        (10.0 * mean.log10()).max(-120.0)
    };
    (level, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_drops_not_blocks() {
        let (p, mut c) = ring::<i16>(2);
        let mut p = SinkProducer::I16(p);
        let mut f = AudioFrame::<f32>::empty();
        f.set_samples_f32(&[0.5; 320]);
        assert!(p.push(&f));
        assert!(p.push(&f));
        assert!(!p.push(&f));
        let got = c.pop().map(|g| g.samples()[0]);
        assert_eq!(got, Some(16384));
        assert!(p.push(&f));
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0.0; 10]), -120.0);
        assert!((level_dbfs(&[1.0; 10])).abs() < 1e-3);
        assert!((level_dbfs(&[0.1; 10]) + 20.0).abs() < 1e-3);
    }
}
