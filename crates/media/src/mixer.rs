//! The call mix: sums every participant's frames slot by slot on the call timeline with
//! headroom and a soft limiter, lists the active speakers of each mixed frame, and tracks the
//! dominant speaker (the SDK's `ActiveSpeakers` and `DominantSpeakerChanged`,
//! REFERENCE.md section 1).
//!
//! The mixer lags the timeline by a fixed delay (longer than the jitter buffers' maximum) so
//! that every stream's frame for a slot has arrived before the slot is mixed; a frame that
//! comes later still goes to per-speaker sinks but is counted `late_for_mix`. The mixed track is
//! continuous from position 0: silent slots are emitted as silence, so its length is the
//! call's media duration.

use std::time::Duration;

use crate::frame::{AudioFrame, FrameSource, MAX_ACTIVE_SPEAKERS, MAX_FRAME_SAMPLES, level_dbfs};
use crate::units::{SampleRate, Ssrc};

/// Most contributors remembered per slot for speaker detection (all are mixed regardless).
const MAX_CONTRIBUTORS: usize = 16;
/// Most speakers the dominant-speaker tracker follows.
const MAX_TRACKED: usize = 64;

/// Mixer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct MixerConfig {
    /// How far behind the timeline the mix runs; must exceed the jitter buffer's max delay.
    pub delay: Duration,
    /// Gain applied to the sum before limiting, in dB (negative: headroom).
    pub headroom_db: f32,
    /// Frames above this RMS level count as voice for active/dominant speakers.
    pub vad_threshold_dbfs: f32,
    /// How long a challenger must be louder before the dominant speaker changes.
    pub dominant_hold: Duration,
    /// How much louder (dB, smoothed) a challenger must be.
    pub dominant_margin_db: f32,
    /// Silence after which the dominant speaker becomes "none" (`Ssrc::NONE`).
    pub dominant_release: Duration,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            delay: Duration::from_millis(360),
            headroom_db: -6.0,
            vad_threshold_dbfs: -50.0,
            dominant_hold: Duration::from_millis(300),
            dominant_margin_db: 3.0,
            dominant_release: Duration::from_millis(1500),
        }
    }
}

struct Slot {
    pos: u64,
    acc: [f32; MAX_FRAME_SAMPLES],
    used: bool,
    n: usize,
    contributors: [(Ssrc, f32); MAX_CONTRIBUTORS],
}

#[derive(Clone, Copy)]
struct Tracked {
    ssrc: Ssrc,
    smoothed_db: f32,
    last_voice: u64,
}

/// Why a frame could not be mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixReject {
    /// Its slot was already mixed.
    Late,
    /// Its slot is beyond the mixer's window (a clock jump); dropped.
    TooEarly,
}

/// The mixer. Sans-IO: fed frames and the current timeline position.
pub struct Mixer {
    cfg: MixerConfig,
    frame_len: usize,
    delay_samples: u64,
    slots: Box<[Slot]>,
    next_pos: u64,
    gain: f32,
    tracked: [Option<Tracked>; MAX_TRACKED],
    dominant: Ssrc,
    challenger: Option<(Ssrc, u64)>,
    out: Box<AudioFrame<f32>>,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("next_pos", &self.next_pos)
            .field("dominant", &self.dominant)
            .finish_non_exhaustive()
    }
}

impl Mixer {
    /// A mixer for frames of `frame_len` samples at `rate`.
    pub fn new(cfg: MixerConfig, rate: SampleRate, frame_len: usize) -> Self {
        let frame_len = frame_len.clamp(1, MAX_FRAME_SAMPLES);
        let delay_samples = rate.samples_in(cfg.delay).ceil() as u64;
        let n_slots = (delay_samples as usize).div_ceil(frame_len) + 3;
        let slots = (0..n_slots)
            .map(|_| Slot {
                pos: 0,
                acc: [0.0; MAX_FRAME_SAMPLES],
                used: false,
                n: 0,
                contributors: [(Ssrc(0), -120.0); MAX_CONTRIBUTORS],
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let mut out = Box::new(AudioFrame::empty());
        out.rate = rate;
        out.source = FrameSource::Mixed;
        Mixer {
            cfg,
            frame_len,
            delay_samples,
            slots,
            next_pos: 0,
            gain: 10f32.powf(cfg.headroom_db / 20.0),
            tracked: [None; MAX_TRACKED],
            dominant: Ssrc::NONE,
            challenger: None,
            out,
        }
    }

    /// Adds one participant frame (grid-aligned, `frame_len` samples) to its slot.
    ///
    /// # Errors
    /// [`MixReject`] when the slot was already mixed or is out of the window.
    pub fn add(&mut self, frame: &AudioFrame<f32>) -> Result<(), MixReject> {
        self.add_parts(frame, frame.samples(), &[])
    }

    /// [`Mixer::add`] of a frame whose samples are `head` followed by `tail` (the frame's own
    /// samples are not read): the play-out path hands its frames over in two parts, and this
    /// saves joining them into the frame first.
    pub(crate) fn add_parts(
        &mut self,
        frame: &AudioFrame<f32>,
        head: &[f32],
        tail: &[f32],
    ) -> Result<(), MixReject> {
        let pos = frame.position.0;
        if pos < self.next_pos {
            return Err(MixReject::Late);
        }
        let window = (self.slots.len() * self.frame_len) as u64;
        if pos >= self.next_pos + window {
            return Err(MixReject::TooEarly);
        }
        let idx = (pos / self.frame_len as u64) as usize % self.slots.len();
        let slot = &mut self.slots[idx];
        let fresh = !slot.used || slot.pos != pos;
        if fresh {
            slot.pos = pos;
            slot.used = true;
            slot.n = 0;
        }
        let cut = head.len().min(slot.acc.len());
        let (acc_head, acc_tail) = slot.acc.split_at_mut(cut);
        let head = &head[..acc_head.len()];
        let tail = &tail[..tail.len().min(acc_tail.len())];
        if fresh {
            // The slot's first contributor: its samples are the sum so far (and whatever the
            // frame does not cover is silence).
            acc_head.copy_from_slice(head);
            acc_tail[..tail.len()].copy_from_slice(tail);
            acc_tail[tail.len()..].fill(0.0);
        } else {
            for (a, s) in acc_head.iter_mut().zip(head) {
                *a += *s;
            }
            for (a, s) in acc_tail.iter_mut().zip(tail) {
                *a += *s;
            }
        }
        if slot.n < MAX_CONTRIBUTORS
            && let FrameSource::Participant { ssrc, .. } = frame.source
        {
            slot.contributors[slot.n] = (ssrc, frame.level_dbfs);
            slot.n += 1;
        }
        Ok(())
    }

    /// Mixes the next slot if the timeline (`now_pos`, samples since media start) is far enough
    /// past it. Returns the mixed frame and, when it changed, the new dominant speaker.
    pub fn poll(&mut self, now_pos: u64) -> Option<(&AudioFrame<f32>, Option<Ssrc>)> {
        let fl = self.frame_len as u64;
        if self.next_pos + fl + self.delay_samples > now_pos {
            return None;
        }
        let pos = self.next_pos;
        self.next_pos += fl;
        let idx = (pos / fl) as usize % self.slots.len();
        let slot = &mut self.slots[idx];
        let has = slot.used && slot.pos == pos;
        let out = &mut *self.out;
        out.position = crate::units::TimelinePos(pos);
        out.active_speakers = Default::default();
        let mut mixed = [0.0f32; MAX_FRAME_SAMPLES];
        let mut contributors = [(Ssrc(0), -120.0f32); MAX_CONTRIBUTORS];
        let mut n = 0;
        if has {
            for (m, a) in mixed[..self.frame_len].iter_mut().zip(slot.acc.iter()) {
                *m = soft_limit(*a * self.gain);
            }
            n = slot.n;
            contributors[..n].copy_from_slice(&slot.contributors[..n]);
            slot.used = false;
        }
        out.set_samples_f32(&mixed[..self.frame_len]);
        out.level_dbfs = level_dbfs(out.samples());
        out.flags = Default::default();
        out.flags.silence = out.samples().iter().all(|s| *s == 0.0);
        // Active speakers: voice frames, loudest first.
        let active = &mut contributors[..n];
        active.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        for (ssrc, level) in active.iter() {
            if *level > self.cfg.vad_threshold_dbfs
                && out.active_speakers.len() < MAX_ACTIVE_SPEAKERS
            {
                out.active_speakers.push(*ssrc);
            }
        }
        let changed = self.update_dominant(pos, &contributors[..n]);
        Some((&*self.out, changed))
    }

    /// The current dominant speaker (`Ssrc::NONE` when nobody).
    pub fn dominant(&self) -> Ssrc {
        self.dominant
    }

    /// Timeline position of the next slot to be mixed.
    pub fn next_position(&self) -> u64 {
        self.next_pos
    }

    /// Forgets a speaker (stream removed).
    pub fn forget(&mut self, ssrc: Ssrc) {
        for t in self.tracked.iter_mut() {
            if t.is_some_and(|t| t.ssrc == ssrc) {
                *t = None;
            }
        }
    }

    fn update_dominant(&mut self, pos: u64, contributors: &[(Ssrc, f32)]) -> Option<Ssrc> {
        let vad = self.cfg.vad_threshold_dbfs;
        // Smooth every tracked speaker's level (absent = silence).
        for t in self.tracked.iter_mut().flatten() {
            let level = contributors
                .iter()
                .find(|c| c.0 == t.ssrc)
                .map_or(-120.0, |c| c.1);
            t.smoothed_db = 0.85 * t.smoothed_db + 0.15 * level;
            if level > vad {
                t.last_voice = pos;
            }
        }
        for (ssrc, level) in contributors {
            if *level > vad
                && !self.tracked.iter().flatten().any(|t| t.ssrc == *ssrc)
                && let Some(free) = self.tracked.iter_mut().find(|t| t.is_none())
            {
                {
                    *free = Some(Tracked {
                        ssrc: *ssrc,
                        smoothed_db: *level,
                        last_voice: pos,
                    });
                }
            }
        }
        let rate = f64::from(self.out.rate.hz());
        let hold = (self.cfg.dominant_hold.as_secs_f64() * rate) as u64;
        let release = (self.cfg.dominant_release.as_secs_f64() * rate) as u64;
        let loudest = self
            .tracked
            .iter()
            .flatten()
            .filter(|t| pos.saturating_sub(t.last_voice) < hold.max(self.frame_len as u64))
            .max_by(|a, b| a.smoothed_db.total_cmp(&b.smoothed_db))
            .copied();
        let current = self
            .tracked
            .iter()
            .flatten()
            .find(|t| t.ssrc == self.dominant)
            .copied();
        let previous = self.dominant;
        match (current, loudest) {
            (None, Some(l)) => {
                self.dominant = l.ssrc;
                self.challenger = None;
            }
            (Some(c), _) if pos.saturating_sub(c.last_voice) >= release => {
                self.dominant = loudest.map_or(Ssrc::NONE, |l| l.ssrc);
                self.challenger = None;
            }
            (Some(c), Some(l))
                if l.ssrc != c.ssrc
                    && l.smoothed_db > c.smoothed_db + self.cfg.dominant_margin_db =>
            {
                match self.challenger {
                    Some((s, since)) if s == l.ssrc => {
                        if pos - since >= hold {
                            self.dominant = l.ssrc;
                            self.challenger = None;
                        }
                    }
                    _ => self.challenger = Some((l.ssrc, pos)),
                }
            }
            _ => self.challenger = None,
        }
        (self.dominant != previous).then_some(self.dominant)
    }
}

/// Linear up to 0.5, then a tanh knee that approaches (never reaches) full scale.
fn soft_limit(x: f32) -> f32 {
    const KNEE: f32 = 0.5;
    let a = x.abs();
    if a <= KNEE {
        x
    } else {
        let over = (a - KNEE) / (1.0 - KNEE);
        (KNEE + (1.0 - KNEE) * over.tanh()).copysign(x)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::units::TimelinePos;

    fn frame(ssrc: u32, pos: u64, amp: f32) -> AudioFrame<f32> {
        let mut f = AudioFrame::<f32>::empty();
        f.source = FrameSource::Participant {
            ssrc: Ssrc(ssrc),
            participant: None,
        };
        f.position = TimelinePos(pos);
        let s: Vec<f32> = (0..320).map(|i| amp * ((i as f32) * 0.3).sin()).collect();
        f.set_samples_f32(&s);
        f.level_dbfs = level_dbfs(f.samples());
        f
    }

    #[test]
    fn limiter_is_bounded_and_monotonic() {
        let mut last = -2.0;
        for i in -400..=400 {
            let y = soft_limit(i as f32 / 100.0);
            assert!(y.abs() < 1.0 && y >= last);
            last = y;
        }
        assert_eq!(soft_limit(0.25), 0.25);
    }

    #[test]
    fn mixes_active_and_dominant() {
        let mut m = Mixer::new(MixerConfig::default(), SampleRate::HZ_16000, 320);
        let mut changes = Vec::new();
        for slot in 0..200u64 {
            let pos = slot * 320;
            // Speaker 1 loud for the first second, then speaker 2 loud.
            let (a1, a2) = if slot < 50 { (0.3, 0.01) } else { (0.0, 0.3) };
            m.add(&frame(1, pos, a1)).ok();
            m.add(&frame(2, pos, a2)).ok();
            let now = pos + 320 + 5760;
            while let Some((f, change)) = m.poll(now) {
                assert_eq!(f.len(), 320);
                assert!(f.samples().iter().all(|s| s.abs() < 1.0));
                if f.position.0 == 10 * 320 {
                    assert_eq!(f.active_speakers.iter().next(), Some(Ssrc(1)));
                }
                if let Some(c) = change {
                    changes.push((f.position.0 / 320, c));
                }
            }
        }
        assert_eq!(changes.first().map(|c| c.1), Some(Ssrc(1)));
        let to2 = changes.iter().find(|c| c.1 == Ssrc(2)).map(|c| c.0);
        assert!(to2.is_some_and(|s| (50..80).contains(&s)), "{changes:?}");
        // A frame for an already-mixed slot is late.
        assert_eq!(m.add(&frame(1, 0, 0.1)), Err(MixReject::Late));
    }

    #[test]
    fn a_frame_in_two_parts_mixes_like_the_joined_frame() {
        let mut joined = Mixer::new(MixerConfig::default(), SampleRate::HZ_16000, 320);
        let mut parts = Mixer::new(MixerConfig::default(), SampleRate::HZ_16000, 320);
        for slot in 0..4u64 {
            let pos = slot * 320;
            for (ssrc, amp) in [(1, 0.2), (2, 0.05), (3, 0.1)] {
                let f = frame(ssrc, pos, amp);
                joined.add(&f).unwrap();
                // Split at a different point for each speaker; the frame's own samples are
                // garbage, as the play-out path leaves them.
                let cut = (ssrc as usize * 97) % 320;
                let (head, tail) = f.samples().split_at(cut);
                let (head, tail) = (head.to_vec(), tail.to_vec());
                let mut meta = f;
                meta.set_samples_f32(&[9.0; 320]);
                parts.add_parts(&meta, &head, &tail).unwrap();
            }
        }
        // A stale slot (reused ring index) is reset by its first contributor in both.
        let now = 4 * 320 + 320 + 5760;
        for _ in 0..4 {
            let (a, _) = joined.poll(now).unwrap();
            let a = *a;
            let (b, _) = parts.poll(now).unwrap();
            assert_eq!(a.samples(), b.samples());
            assert_eq!(a.active_speakers, b.active_speakers);
        }
        assert_eq!(
            parts.add_parts(&frame(1, 0, 0.1), &[0.0; 320], &[]),
            Err(MixReject::Late)
        );
    }
}
