//! The frame contract (DESIGN.md "Frames"): a fixed-size PCM frame (10 or 20 ms, mono) tagged
//! with call, source (a participant's stream or the mix), SSRC, timeline position and
//! wall-clock capture time; and the lock-free SPSC rings that carry frames to sinks.
//!
//! A frame is a plain `Copy` value with its samples inline, so pushing it into a ring is a
//! memcpy: no allocation, no reference counting.

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Raw, Split};

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
    /// `dst[i] = from_f32(src[i])` over the shorter of the two: the per-frame loop, which a
    /// type may do faster than sample by sample.
    fn convert_from_f32(dst: &mut [Self], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(*s);
        }
    }
}

impl Sample for i16 {
    #[inline]
    fn from_f32(v: f32) -> Self {
        // Round half away from zero without a libm call, NaN to 0. Written so that the loops
        // over a frame vectorize: NaN is replaced first, so the clamped value is finite and
        // the conversion needs no saturation (a saturating `as` kept the loop scalar).
        // Measured on 960-sample frames: ~3x faster than the saturating `as`, same results.
        let v = if v.is_nan() { 0.0 } else { v };
        let x = v.clamp(-1.0, 1.0) * 32767.0;
        let r = x + 0.5f32.copysign(x);
        // SAFETY: `r` is finite and within [-32767.5, 32767.5], so its truncation is an i16.
        unsafe { r.to_int_unchecked::<i16>() }
    }
    #[inline]
    fn to_f32(self) -> f32 {
        // A power of two: multiplying by its inverse is exact, the same as dividing.
        f32::from(self) * (1.0 / 32768.0)
    }
    /// Eight samples per step with SSE2 (part of every x86-64 CPU): the compiler keeps the
    /// float to 16-bit conversion scalar (one `cvttss2si` and `pinsrw` per sample). Same results
    /// as [`Sample::from_f32`].
    #[cfg(target_arch = "x86_64")]
    fn convert_from_f32(dst: &mut [Self], src: &[f32]) {
        use std::arch::x86_64::{
            __m128, __m128i, _mm_add_ps, _mm_and_ps, _mm_cmpord_ps, _mm_cvttps_epi32, _mm_loadu_ps,
            _mm_max_ps, _mm_min_ps, _mm_mul_ps, _mm_or_ps, _mm_packs_epi32, _mm_set1_ps,
            _mm_storeu_si128,
        };
        let n = dst.len().min(src.len());
        let whole = n - n % 8;
        // SAFETY: SSE2 is in the x86-64 baseline. Each step reads src[k..k + 8] and writes
        // dst[k..k + 8] with k + 8 <= whole <= both lengths; unaligned loads and stores have no
        // alignment requirement. Lane by lane this is `from_f32`: NaN lanes are zeroed
        // (`cmpord` mask), the value is clamped to [-1, 1] (max/min of a non-NaN value), scaled,
        // ±0.5 with the value's sign added, truncated to i32 (in range: |r| <= 32767.5) and
        // packed to i16 (no saturation happens: every value is within ±32767).
        unsafe {
            let (lo, hi) = (_mm_set1_ps(-1.0), _mm_set1_ps(1.0));
            let (scale, half) = (_mm_set1_ps(32767.0), _mm_set1_ps(0.5));
            let sign = _mm_set1_ps(-0.0);
            let lane = |v: __m128| -> __m128i {
                let v = _mm_and_ps(v, _mm_cmpord_ps(v, v));
                let x = _mm_mul_ps(_mm_min_ps(_mm_max_ps(v, lo), hi), scale);
                let r = _mm_add_ps(x, _mm_or_ps(half, _mm_and_ps(x, sign)));
                _mm_cvttps_epi32(r)
            };
            for k in (0..whole).step_by(8) {
                let a = lane(_mm_loadu_ps(src.as_ptr().add(k)));
                let b = lane(_mm_loadu_ps(src.as_ptr().add(k + 4)));
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(k).cast::<__m128i>(),
                    _mm_packs_epi32(a, b),
                );
            }
        }
        for (d, s) in dst[whole..n].iter_mut().zip(&src[whole..n]) {
            *d = Self::from_f32(*s);
        }
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
        self.set_samples_f32_parts(src, &[]);
    }

    /// Fills the samples from the floats of `head` followed by those of `tail` (at most
    /// [`MAX_FRAME_SAMPLES`] in all), as [`AudioFrame::set_samples_f32`] of the joined slice.
    pub(crate) fn set_samples_f32_parts(&mut self, head: &[f32], tail: &[f32]) {
        self.len = convert_parts(&mut self.samples, head, tail) as u16;
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
    /// The oldest queued frame, if any, copied out of the ring. Readers that only look at
    /// the frame use [`FrameConsumer::pop_with`], which does not copy it.
    pub fn pop(&mut self) -> Option<AudioFrame<S>> {
        self.inner.try_pop()
    }

    /// Runs `read` on the oldest queued frame where it lies in the ring, then releases its
    /// slot; `None` (and `read` not called) when the ring is empty. No copy of the frame's
    /// samples, no allocation: the producer cannot reuse the slot until `read` returns.
    pub fn pop_with<R>(&mut self, read: impl FnOnce(&AudioFrame<S>) -> R) -> Option<R> {
        let r = read(self.inner.try_peek()?);
        // `AudioFrame` is `Copy` (no destructor): this only publishes the freed slot.
        self.inner.skip(1);
        Some(r)
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.inner.occupied_len()
    }

    /// Frames the ring can hold.
    pub fn capacity(&self) -> usize {
        self.inner.capacity().get()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Whether the writing side is gone (the pipeline replaced or dropped the ring): once it
    /// is also empty, nothing more will come.
    pub fn is_abandoned(&self) -> bool {
        !self.inner.write_is_held()
    }
}

/// Builds a ring of `capacity` frames (allocated once, here).
///
/// Every slot is initialized here with an empty frame (the ring starts full of them, and they
/// are released at once): [`SinkProducer`] then builds each frame in place in its vacant slot,
/// writing only the tags and the frame's own samples, instead of building a whole
/// [`MAX_FRAME_SAMPLES`] frame and copying it in. Releasing a slot never writes to it (a frame
/// has no destructor), so a vacant slot always holds the last complete frame written there.
pub(crate) fn ring<S: Sample>(
    capacity: usize,
) -> (ringbuf::HeapProd<AudioFrame<S>>, FrameConsumer<S>) {
    let slots = vec![AudioFrame::<S>::empty(); capacity.max(1)].into_boxed_slice();
    let rb = HeapRb::<AudioFrame<S>>::from(slots);
    let (p, mut c) = rb.split();
    c.clear();
    (p, FrameConsumer { inner: c })
}

/// Writes a frame with `meta`'s tags and the samples of `head` then `tail` (converted) into
/// the next vacant slot of `p` and publishes it; `false` when the ring is full. Only the tags
/// and the frame's own samples are written: the slot's samples beyond the frame's length keep an
/// earlier frame's (or the initial zeros), which [`AudioFrame::samples`] never shows.
fn push_in_place<S: Sample>(
    p: &mut ringbuf::HeapProd<AudioFrame<S>>,
    meta: &AudioFrame<f32>,
    head: &[f32],
    tail: &[f32],
) -> bool {
    let Some(slot) = p.vacant_slices_mut().0.first_mut() else {
        return false;
    };
    // SAFETY: `ring` initialized every slot with a complete frame, releasing a slot
    // (`skip`/`try_pop` of a `Copy` item) never writes to it, and the only writes to a vacant
    // slot are `AudioFrame` field assignments below (or a whole frame by `try_push`): the slot
    // holds a valid `AudioFrame<S>`. The vacant slot belongs to this producer alone until
    // `advance_write_index` publishes it.
    let f = unsafe { slot.assume_init_mut() };
    f.call = meta.call;
    f.source = meta.source;
    f.position = meta.position;
    f.capture_time = meta.capture_time;
    f.rate = meta.rate;
    f.flags = meta.flags;
    f.level_dbfs = meta.level_dbfs;
    f.active_speakers = meta.active_speakers;
    f.len = convert_parts(&mut f.samples, head, tail) as u16;
    // SAFETY: the first vacant slot now holds a complete frame (see above).
    unsafe { p.advance_write_index(1) };
    true
}

impl SinkProducer {
    /// Pushes a frame converted from floats; `false` when the ring is full (frame dropped).
    pub(crate) fn push(&mut self, meta: &AudioFrame<f32>) -> bool {
        self.push_parts(meta, meta.samples(), &[])
    }

    /// Pushes a frame with `meta`'s tags whose samples are those of `head` followed by those
    /// of `tail` (a frame that lies in two buffers needs no joining copy), built in place in
    /// the ring's next slot.
    pub(crate) fn push_parts(
        &mut self,
        meta: &AudioFrame<f32>,
        head: &[f32],
        tail: &[f32],
    ) -> bool {
        match self {
            SinkProducer::I16(p) => push_in_place(p, meta, head, tail),
            SinkProducer::F32(p) => push_in_place(p, meta, head, tail),
        }
    }
}

/// Converts the floats of `head` then `tail` into `dst` (as many as fit); returns how many.
fn convert_parts<S: Sample>(dst: &mut [S; MAX_FRAME_SAMPLES], head: &[f32], tail: &[f32]) -> usize {
    let h = head.len().min(MAX_FRAME_SAMPLES);
    let n = (h + tail.len()).min(MAX_FRAME_SAMPLES);
    S::convert_from_f32(&mut dst[..h], head);
    S::convert_from_f32(&mut dst[h..n], tail);
    n
}

/// RMS level of `samples` in dBFS (floor -120).
pub fn level_dbfs(samples: &[f32]) -> f32 {
    level_and_silence(samples).0
}

/// RMS level in dBFS and whether every sample is exactly zero, in one pass.
pub fn level_and_silence(samples: &[f32]) -> (f32, bool) {
    level_and_silence_parts(samples, &[])
}

/// [`level_and_silence`] of the samples of `head` followed by those of `tail`, without joining
/// them: the same sums in the same order, so the result is bit-identical to the joined slice's.
pub(crate) fn level_and_silence_parts(head: &[f32], tail: &[f32]) -> (f32, bool) {
    let len = head.len() + tail.len();
    if len == 0 {
        return (-120.0, true);
    }
    // Eight partial sums so the loop vectorizes; sample `i` of the joined slice goes to sum
    // `i % 8`, and the last `len % 8` samples are summed one by one.
    let mut acc = [0.0f32; 8];
    let add = |acc: &mut [f32; 8], c: &[f32]| {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    };
    let chunks = head.chunks_exact(8);
    let split = chunks.remainder();
    for c in chunks {
        add(&mut acc, c);
    }
    let (rest_head, rest_tail) = if tail.len() + split.len() < 8 {
        (split, tail)
    } else {
        // The chunk of eight that straddles the two parts, then the tail's own chunks.
        let (a, b) = tail.split_at(8 - split.len());
        if !split.is_empty() {
            let mut c = [0.0f32; 8];
            c[..split.len()].copy_from_slice(split);
            c[split.len()..].copy_from_slice(a);
            add(&mut acc, &c);
        } else {
            add(&mut acc, a);
        }
        let chunks = b.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            add(&mut acc, c);
        }
        (rest, &[][..])
    };
    let sum: f32 = acc.iter().sum::<f32>()
        + rest_head
            .iter()
            .chain(rest_tail)
            .map(|s| s * s)
            .sum::<f32>();
    if sum == 0.0 {
        // A sum of squares is zero only if every sample is zero (or squares underflowed).
        let silent = head.iter().chain(tail).all(|s| *s == 0.0);
        return (-120.0, silent);
    }
    let mean = sum / len as f32;
    let level = if mean <= 1e-12 {
        -120.0
    } else {
        (10.0 * mean.log10()).max(-120.0)
    };
    (level, false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The plain formula with a saturating cast (NaN saturates to 0 too).
    fn reference_or_zero(v: f32) -> i16 {
        let x = v.clamp(-1.0, 1.0) * 32767.0;
        (x + 0.5f32.copysign(x)) as i16
    }

    #[test]
    fn float_to_i16_rounds_half_away_from_zero_saturates_and_maps_nan_to_zero() {
        let reference = reference_or_zero;
        let mut v = -1.25f32;
        let mut sweep = Vec::new();
        while v <= 1.25 {
            assert_eq!(i16::from_f32(v), reference(v), "{v}");
            sweep.push(v);
            v += 1.0 / 65536.0 / 3.0;
        }
        let mut got = vec![0i16; sweep.len()];
        i16::convert_from_f32(&mut got, &sweep);
        for (g, v) in got.iter().zip(&sweep) {
            assert_eq!(*g, reference(*v), "slice conversion at {v}");
        }
        for (v, want) in [
            (f32::NAN, 0),
            (f32::INFINITY, 32767),
            (f32::NEG_INFINITY, -32767),
            (1.0, 32767),
            (-1.0, -32767),
            (0.5 / 32767.0, 1),
            (-0.5 / 32767.0, -1),
            (0.49 / 32767.0, 0),
            (-0.0, 0),
        ] {
            assert_eq!(i16::from_f32(v), want, "{v}");
        }
        // The per-frame conversion (SSE2 on x86-64) gives the per-sample results, for every
        // length (whole steps of eight and a remainder) and the special values.
        let mut src: Vec<f32> = (0..963).map(|i| ((i as f32) * 0.37).sin() * 1.3).collect();
        src[3] = f32::NAN;
        src[9] = f32::INFINITY;
        src[17] = f32::NEG_INFINITY;
        src[20] = 0.5 / 32767.0;
        src[21] = -0.5 / 32767.0;
        for len in [0, 1, 7, 8, 9, 16, 960, 963] {
            let mut got = vec![1i16; len];
            i16::convert_from_f32(&mut got, &src[..len]);
            let want: Vec<i16> = src[..len].iter().map(|&v| reference_or_zero(v)).collect();
            assert_eq!(got, want, "length {len}");
        }
        assert_eq!(i16::MIN.to_f32(), -1.0);
        assert_eq!(16384i16.to_f32(), 0.5);
    }

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

    fn meta(pos: u64) -> AudioFrame<f32> {
        let mut m = AudioFrame::<f32>::empty();
        m.call = CallTag(7);
        m.source = FrameSource::Participant {
            ssrc: Ssrc(9),
            participant: None,
        };
        m.position = TimelinePos(pos);
        m.capture_time = WallClock100ns(123_456 + pos);
        m.rate = SampleRate::HZ_16000;
        m.flags.concealed = pos % 2 == 1;
        m.level_dbfs = -20.5;
        m.active_speakers.push(Ssrc(3));
        m
    }

    /// The frame a ring used to carry: built whole from the joined samples, then moved in.
    fn reference<S: Sample>(meta: &AudioFrame<f32>, samples: &[f32]) -> AudioFrame<S> {
        let mut f = AudioFrame::<S>::empty();
        f.set_samples_f32(samples);
        AudioFrame {
            len: f.len,
            samples: f.samples,
            ..AudioFrame::<S>::empty()
        }
        .with_tags_of(meta)
    }

    impl<S: Sample> AudioFrame<S> {
        fn with_tags_of(mut self, m: &AudioFrame<f32>) -> Self {
            self.call = m.call;
            self.source = m.source;
            self.position = m.position;
            self.capture_time = m.capture_time;
            self.rate = m.rate;
            self.flags = m.flags;
            self.level_dbfs = m.level_dbfs;
            self.active_speakers = m.active_speakers;
            self
        }
    }

    fn same<S: Sample + PartialEq>(a: &AudioFrame<S>, b: &AudioFrame<S>) {
        assert_eq!(a.call, b.call);
        assert_eq!(a.source, b.source);
        assert_eq!(a.position, b.position);
        assert_eq!(a.capture_time, b.capture_time);
        assert_eq!(a.rate, b.rate);
        assert_eq!(a.flags, b.flags);
        assert_eq!(a.level_dbfs.to_bits(), b.level_dbfs.to_bits());
        assert_eq!(a.active_speakers, b.active_speakers);
        assert_eq!(a.samples(), b.samples());
    }

    /// Frames of changing lengths, pushed in place in two parts through a small ring (every
    /// slot reused many times, longer frames before shorter ones), read back in place and by
    /// copy, equal the frames built whole.
    fn in_place_frames_equal_whole_frames<S: Sample + PartialEq>(
        wrap: fn(ringbuf::HeapProd<AudioFrame<S>>) -> SinkProducer,
    ) {
        let (p, mut c) = ring::<S>(3);
        let mut p = wrap(p);
        for i in 0..200u64 {
            let len = [960usize, 320, 7, 0, 481][(i % 5) as usize];
            let s: Vec<f32> = (0..len)
                .map(|k| ((k as u64 * 7919 + i * 31) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let cut = (i as usize * 37) % (len + 1);
            let m = meta(i);
            assert!(p.push_parts(&m, &s[..cut], &s[cut..]));
            let want = reference::<S>(&m, &s);
            if i % 2 == 0 {
                let got = c.pop_with(|f| {
                    same(f, &want);
                    f.position
                });
                assert_eq!(got, Some(TimelinePos(i)));
            } else {
                same(&c.pop().unwrap(), &want);
            }
            assert!(c.is_empty());
            assert_eq!(c.pop_with(|_| ()), None);
        }
    }

    #[test]
    fn in_place_i16_frames_equal_whole_frames() {
        in_place_frames_equal_whole_frames::<i16>(SinkProducer::I16);
    }

    #[test]
    fn in_place_f32_frames_equal_whole_frames() {
        in_place_frames_equal_whole_frames::<f32>(SinkProducer::F32);
    }

    #[test]
    fn pop_with_drains_in_order_and_frees_slots() {
        let (p, mut c) = ring::<i16>(2);
        let mut p = SinkProducer::I16(p);
        let m = meta(0);
        assert!(p.push_parts(&m, &[0.5; 10], &[]));
        assert!(p.push_parts(&m, &[], &[0.25; 20]));
        assert!(!p.push_parts(&m, &[0.1; 5], &[]), "full");
        assert_eq!(c.pop_with(|f| f.len()), Some(10));
        assert!(p.push_parts(&m, &[0.1; 5], &[0.2; 5]));
        assert_eq!(c.pop_with(|f| f.samples()[0]), Some(8192));
        assert_eq!(
            c.pop_with(|f| f.samples().to_vec()),
            Some(
                [3277i16; 5]
                    .into_iter()
                    .chain([6553; 5])
                    .collect::<Vec<_>>()
            )
        );
        assert!(c.is_empty());
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0.0; 10]), -120.0);
        assert!((level_dbfs(&[1.0; 10])).abs() < 1e-3);
        assert!((level_dbfs(&[0.1; 10]) + 20.0).abs() < 1e-3);
    }
}
