//! Per-SSRC receive state: sequence and timestamp unwrapping, RFC 3550 loss and interarrival
//! jitter, sender restarts (RFC 3550 A.1), the RTCP sender-report clock mapping, and the
//! transit envelope every later stage uses to place audio in time.
//!
//! Times are seconds since the call's media start (`f64`), supplied by the caller.

use crate::units::{ExtSeq, ExtTimestamp, RtpTimestamp, SeqNo, WallClock100ns};

/// RFC 3550 A.1: a forward jump of at least this many sequence numbers is suspicious.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets at most this far behind the highest are reordered, not a restart.
const MAX_MISORDER: u16 = 100;
/// Offset so that packets reordered from before the first one still unwrap to >= 0.
const SEQ_ORIGIN: u64 = 1 << 16;

/// What [`ReceiveState::handle_packet`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// A packet of the stream (in order, with a gap, reordered, or a duplicate).
    Accept(ExtSeq, ExtTimestamp),
    /// The sender restarted (a large jump confirmed by the next packet in sequence): the caller
    /// resets everything downstream; numbering continues from here.
    Restart(ExtSeq, ExtTimestamp),
    /// A large jump not (yet) confirmed: dropped (a seq storm or a stray packet).
    Reject,
}

/// Sequence/timestamp unwrapping, loss and jitter for one SSRC.
#[derive(Debug, Clone)]
pub struct ReceiveState {
    clock_rate: f64,
    started: bool,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: Option<u16>,
    received: u64,
    last_ts: u32,
    last_ext_ts: i64,
    jitter: f64,
    last_transit: Option<f64>,
    sr: Option<(u64, i64)>,
}

impl ReceiveState {
    /// State for a stream with an RTP clock of `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        ReceiveState {
            clock_rate: f64::from(clock_rate),
            started: false,
            max_seq: 0,
            cycles: SEQ_ORIGIN,
            base_seq: SEQ_ORIGIN,
            bad_seq: None,
            received: 0,
            last_ts: 0,
            last_ext_ts: 0,
            jitter: 0.0,
            last_transit: None,
            sr: None,
        }
    }

    /// Takes one packet's sequence number and timestamp, arrived at `arrival` seconds.
    pub fn handle_packet(&mut self, seq: SeqNo, ts: RtpTimestamp, arrival: f64) -> SeqVerdict {
        if !self.started {
            self.init(seq, ts);
            self.update_jitter(ts, arrival);
            return SeqVerdict::Accept(self.ext_seq(seq), self.ext_ts(ts));
        }
        let udelta = seq.0.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            let ext = self.ext_seq(seq);
            let ext_ts = self.ext_ts(ts);
            if seq.0 < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq.0;
            self.last_ts = ts.0;
            self.last_ext_ts = ext_ts.0;
            self.bad_seq = None;
            self.received += 1;
            self.update_jitter(ts, arrival);
            SeqVerdict::Accept(ext, ext_ts)
        } else if udelta <= u16::MAX - MAX_MISORDER {
            if self.bad_seq == Some(seq.0) {
                // Two sequential packets after a big jump: the sender restarted.
                let prev_ext = self.ext_seq(SeqNo(self.max_seq));
                let prev_ext_ts = self.last_ext_ts;
                self.init(seq, ts);
                // Keep numbering monotonic across the restart.
                self.cycles = (prev_ext.0 + (1 << 16)) & !0xffff;
                self.base_seq = self.cycles + u64::from(seq.0);
                self.last_ext_ts = prev_ext_ts;
                self.last_ts = ts.0;
                self.update_jitter(ts, arrival);
                SeqVerdict::Restart(self.ext_seq(seq), ExtTimestamp(self.last_ext_ts))
            } else {
                self.bad_seq = Some(seq.0.wrapping_add(1));
                SeqVerdict::Reject
            }
        } else {
            // Reordered or duplicate, within MAX_MISORDER behind the highest.
            self.received += 1;
            SeqVerdict::Accept(self.ext_seq(seq), self.ext_ts(ts))
        }
    }

    fn init(&mut self, seq: SeqNo, ts: RtpTimestamp) {
        self.started = true;
        self.max_seq = seq.0;
        self.cycles = SEQ_ORIGIN;
        self.base_seq = SEQ_ORIGIN + u64::from(seq.0);
        self.bad_seq = None;
        self.received = 1;
        self.last_ts = ts.0;
        self.last_ext_ts = i64::from(ts.0);
        self.last_transit = None;
    }

    fn ext_seq(&self, seq: SeqNo) -> ExtSeq {
        let delta = i64::from(seq.0.wrapping_sub(self.max_seq) as i16);
        let ext_max = (self.cycles + u64::from(self.max_seq)) as i64;
        ExtSeq((ext_max + delta).max(0) as u64)
    }

    fn ext_ts(&self, ts: RtpTimestamp) -> ExtTimestamp {
        let delta = i64::from(ts.0.wrapping_sub(self.last_ts) as i32);
        ExtTimestamp(self.last_ext_ts + delta)
    }

    fn update_jitter(&mut self, ts: RtpTimestamp, arrival: f64) {
        // RFC 3550 A.8, in timestamp units.
        let transit = arrival * self.clock_rate - f64::from(ts.0);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A timestamp wrap between the two packets is not jitter.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// RFC 3550 interarrival jitter in seconds.
    pub fn jitter_secs(&self) -> f64 {
        self.jitter / self.clock_rate
    }

    /// Packets expected from the sequence range seen (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.cycles + u64::from(self.max_seq) + 1).saturating_sub(self.base_seq)
    }

    /// Packets received (including duplicates, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative loss: expected minus received, floored at zero.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Records a sender report: `ntp` is the sender's wall clock at RTP time `rtp`.
    pub fn handle_sender_report(&mut self, ntp: u64, rtp: RtpTimestamp) {
        let ext = if self.started {
            self.ext_ts(rtp).0
        } else {
            i64::from(rtp.0)
        };
        self.sr = Some((ntp, ext));
    }

    /// The last sender report: NTP time and the unwrapped RTP time it matches.
    pub fn sender_report(&self) -> Option<(u64, i64)> {
        self.sr
    }

    /// The sender's wall-clock time of RTP time `ts`, once a sender report has been seen.
    pub fn wall_clock_of(&self, ts: ExtTimestamp) -> Option<WallClock100ns> {
        let (ntp, sr_ts) = self.sr?;
        let base = WallClock100ns::from_ntp(ntp).0 as i128;
        let delta_ticks = i128::from(ts.0 - sr_ts) * 10_000_000 / (self.clock_rate as i128);
        Some(WallClock100ns(
            (base + delta_ticks).clamp(0, i128::from(u64::MAX)) as u64,
        ))
    }
}

/// The lower envelope of packet transit times (arrival minus media time): "when would this
/// sample have arrived with no queuing". Jitter only ever adds delay, so the minimum is the
/// stable reference; it leaks upward slowly so that a sender whose clock runs slow (transit
/// growing) is followed too.
///
/// `excess` (transit above the envelope) is what the jitter buffer sizes its delay on, and the
/// envelope itself places audio on the call timeline.
#[derive(Debug, Clone, Copy)]
pub struct TransitEnvelope {
    leak_per_sec: f64,
    floor: Option<f64>,
    last_arrival: f64,
}

impl TransitEnvelope {
    /// An envelope that rises at most `leak_per_sec` seconds per second between minima.
    /// Must exceed the largest clock drift to follow (200 ppm = 0.0002 s/s).
    pub fn new(leak_per_sec: f64) -> Self {
        TransitEnvelope {
            leak_per_sec,
            floor: None,
            last_arrival: 0.0,
        }
    }

    /// Takes a packet's arrival (s since media start) and media time (s); returns its excess
    /// delay over the envelope (>= 0).
    pub fn observe(&mut self, arrival: f64, media_time: f64) -> f64 {
        let transit = arrival - media_time;
        let floor = match self.floor {
            None => transit,
            Some(f) => {
                let leaked = f + self.leak_per_sec * (arrival - self.last_arrival).max(0.0);
                leaked.min(transit)
            }
        };
        self.floor = Some(floor);
        self.last_arrival = self.last_arrival.max(arrival);
        transit - floor
    }

    /// The current envelope (s), if any packet was seen.
    pub fn floor(&self) -> Option<f64> {
        self.floor
    }

    /// Forgets everything (sender restart, re-anchor).
    pub fn reset(&mut self) {
        self.floor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_reorder() {
        let mut r = ReceiveState::new(48_000);
        let mut seq = 65_530u16;
        let mut ts = u32::MAX - 960 * 3;
        let mut last = None;
        for i in 0..20 {
            let SeqVerdict::Accept(e, t) = r.handle_packet(SeqNo(seq), RtpTimestamp(ts), i as f64)
            else {
                panic!("rejected")
            };
            if let Some((le, lt)) = last {
                assert_eq!(e.0, le + 1);
                assert_eq!(t.0, lt + 960);
            }
            last = Some((e.0, t.0));
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(960);
        }
        // A packet reordered from before the wrap.
        let v = r.handle_packet(SeqNo(65_533), RtpTimestamp(u32::MAX), 21.0);
        let SeqVerdict::Accept(e, _) = v else {
            panic!()
        };
        assert_eq!(e.0, last.map(|l| l.0).unwrap_or(0) - 16);
        assert_eq!(r.lost(), 0);
        assert_eq!(r.expected(), 20);
    }

    #[test]
    fn restart_needs_two_in_sequence() {
        let mut r = ReceiveState::new(48_000);
        r.handle_packet(SeqNo(100), RtpTimestamp(0), 0.0);
        assert_eq!(
            r.handle_packet(SeqNo(30_000), RtpTimestamp(5), 0.0),
            SeqVerdict::Reject
        );
        assert_eq!(
            r.handle_packet(SeqNo(12_000), RtpTimestamp(5), 0.0),
            SeqVerdict::Reject
        );
        let v = r.handle_packet(SeqNo(12_001), RtpTimestamp(965), 0.0);
        assert!(matches!(v, SeqVerdict::Restart(..)), "{v:?}");
        let SeqVerdict::Accept(e, _) = r.handle_packet(SeqNo(12_002), RtpTimestamp(1925), 0.0)
        else {
            panic!()
        };
        let SeqVerdict::Restart(re, _) = v else {
            panic!()
        };
        assert_eq!(e.0, re.0 + 1);
    }

    #[test]
    fn loss_and_jitter() {
        let mut r = ReceiveState::new(48_000);
        for i in 0..100u16 {
            if i % 10 == 3 {
                continue;
            }
            let arrival = f64::from(i) * 0.02 + if i % 2 == 0 { 0.01 } else { 0.0 };
            r.handle_packet(SeqNo(i), RtpTimestamp(u32::from(i) * 960), arrival);
        }
        assert_eq!(r.lost(), 10);
        assert!(
            (r.jitter_secs() - 0.01).abs() < 0.002,
            "{}",
            r.jitter_secs()
        );
    }

    #[test]
    fn sender_report_maps_to_wall_clock() {
        let mut r = ReceiveState::new(48_000);
        r.handle_packet(SeqNo(1), RtpTimestamp(48_000), 0.0);
        let ntp = (2_208_988_800u64 + 10) << 32;
        r.handle_sender_report(ntp, RtpTimestamp(48_000));
        let w = r.wall_clock_of(ExtTimestamp(96_000));
        assert_eq!(w, Some(WallClock100ns(11 * 10_000_000)));
    }

    #[test]
    fn envelope_tracks_minimum_and_drift() {
        let mut env = TransitEnvelope::new(0.001);
        // 80 ms of extra delay on the first packet, then none.
        env.observe(0.08, 0.0);
        assert!(env.observe(0.02, 0.02) < 1e-9);
        assert!((env.floor().unwrap_or(1.0)).abs() < 1e-9);
        // Sender slow by 200 ppm: transit grows 0.2 ms/s; the envelope follows within 1 ms.
        for i in 0..1000 {
            let t = f64::from(i) * 0.02;
            env.observe(t, t * (1.0 - 200e-6));
        }
        let t = 19.98;
        let true_transit = t * 200e-6;
        assert!((env.floor().unwrap_or(0.0) - true_transit).abs() < 0.001);
    }
}
