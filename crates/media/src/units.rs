//! Ids and units as types: a sequence number is not a timestamp, and a sample count at 16 kHz is
//! not one at 48 kHz. All are `Copy` and cost nothing at run time.

use std::fmt;
use std::time::Duration;

/// RTP synchronization source: one sender's stream. For Teams media this equals the
/// participant's `mediaStreams[].sourceId` (the MSI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl Ssrc {
    /// The "no speaker" value Microsoft's SDK uses for the dominant speaker (`0xFFFFFFFF`).
    pub const NONE: Ssrc = Ssrc(u32::MAX);
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// 16-bit RTP sequence number as it appears on the wire (wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNo(pub u16);

/// 32-bit RTP timestamp as it appears on the wire (wraps); 48 kHz units for Opus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpTimestamp(pub u32);

/// A sequence number unwrapped to 64 bits: monotonic across wraps for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtSeq(pub u64);

/// An RTP timestamp unwrapped to 64 bits (signed, so a stream may start near zero and step
/// back a little without underflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtTimestamp(pub i64);

/// RTP payload type (7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadType(pub u8);

/// A sample rate in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRate(u32);

impl SampleRate {
    /// 8 kHz (narrowband).
    pub const HZ_8000: SampleRate = SampleRate(8_000);
    /// 16 kHz: what Microsoft's SDK (`Pcm16K`) and most ASR engines use.
    pub const HZ_16000: SampleRate = SampleRate(16_000);
    /// 24 kHz.
    pub const HZ_24000: SampleRate = SampleRate(24_000);
    /// 44.1 kHz.
    pub const HZ_44100: SampleRate = SampleRate(44_100);
    /// 48 kHz: the Opus RTP clock and full-band decode rate.
    pub const HZ_48000: SampleRate = SampleRate(48_000);
    /// The highest rate the pipeline accepts for output or PCM input.
    pub const MAX: SampleRate = SampleRate(48_000);

    /// A rate in Hz, if within 8..=48 kHz (the pipeline's bounds; frames are sized for 48 kHz).
    pub fn new(hz: u32) -> Option<SampleRate> {
        (8_000..=48_000).contains(&hz).then_some(SampleRate(hz))
    }

    /// The rate in Hz.
    pub fn hz(self) -> u32 {
        self.0
    }

    /// Whether libopus can decode straight at this rate (8, 12, 16, 24 or 48 kHz).
    pub fn is_opus_native(self) -> bool {
        matches!(self.0, 8_000 | 12_000 | 16_000 | 24_000 | 48_000)
    }

    /// Number of samples in `ms` milliseconds at this rate (rounded down).
    pub fn samples_in_ms(self, ms: u32) -> usize {
        (u64::from(self.0) * u64::from(ms) / 1000) as usize
    }

    /// Duration of `samples` at this rate.
    pub fn duration_of(self, samples: u64) -> Duration {
        Duration::from_nanos(samples.saturating_mul(1_000_000_000) / u64::from(self.0))
    }

    /// Samples (possibly fractional) in `d` at this rate.
    pub fn samples_in(self, d: Duration) -> f64 {
        d.as_secs_f64() * f64::from(self.0)
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

/// The fixed size of every frame handed to sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameDuration {
    /// 10 ms frames.
    Ms10,
    /// 20 ms frames, what Microsoft's SDK delivers (50 per second).
    Ms20,
}

impl FrameDuration {
    /// Milliseconds per frame.
    pub fn ms(self) -> u32 {
        match self {
            FrameDuration::Ms10 => 10,
            FrameDuration::Ms20 => 20,
        }
    }

    /// Samples per frame at `rate`.
    pub fn samples(self, rate: SampleRate) -> usize {
        rate.samples_in_ms(self.ms())
    }
}

/// A position on a call's media timeline: samples since the call's media start, at the call's
/// output rate. Every track of a call (per speaker and mixed) uses the same timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TimelinePos(pub u64);

/// The engine's numeric handle for a call, carried on every frame (the media crate knows
/// nothing of Graph call ids; the engine keeps the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CallTag(pub u64);

/// The engine's numeric handle for a roster participant, attached to a stream once the roster
/// maps its SSRC (source id) to someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantTag(pub u32);

/// Wall-clock time in 100 ns ticks since the Unix epoch (the unit Microsoft's SDK uses for
/// `AudioMediaBuffer.Timestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WallClock100ns(pub u64);

impl WallClock100ns {
    /// From a `SystemTime`; times before the epoch map to zero.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        WallClock100ns(u64::try_from(d.as_nanos() / 100).unwrap_or(u64::MAX))
    }

    /// This time plus `d`.
    pub fn plus(self, d: Duration) -> Self {
        WallClock100ns(
            self.0
                .saturating_add(u64::try_from(d.as_nanos() / 100).unwrap_or(u64::MAX)),
        )
    }

    /// From a 64-bit NTP timestamp (RFC 3550: seconds since 1900 in the upper 32 bits).
    pub fn from_ntp(ntp: u64) -> Self {
        const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
        let secs = ntp >> 32;
        let frac = ntp & 0xffff_ffff;
        let unix_secs = secs.saturating_sub(NTP_UNIX_OFFSET_SECS);
        let ticks_frac = (frac * 10_000_000) >> 32;
        WallClock100ns(
            unix_secs
                .saturating_mul(10_000_000)
                .saturating_add(ticks_frac),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_frames() {
        assert_eq!(FrameDuration::Ms20.samples(SampleRate::HZ_16000), 320);
        assert_eq!(FrameDuration::Ms10.samples(SampleRate::HZ_48000), 480);
        assert!(SampleRate::HZ_16000.is_opus_native());
        assert!(!SampleRate::HZ_44100.is_opus_native());
        assert_eq!(SampleRate::new(96_000), None);
    }

    #[test]
    fn ntp_to_wall_clock() {
        // 2001-09-09T01:46:40Z = Unix 1_000_000_000 s.
        let ntp = (1_000_000_000u64 + 2_208_988_800) << 32 | (1u64 << 31);
        assert_eq!(WallClock100ns::from_ntp(ntp).0, 10_000_000_005_000_000);
    }
}
