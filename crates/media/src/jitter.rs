//! Adaptive jitter buffer for one stream: reorders, drops duplicates and too-late packets, and
//! releases packets (or loss decisions) when their play-out time comes.
//!
//! ```text
//!                 insert(first packet)
//!   ┌─────────┐ ───────────────────────▶ ┌───────────┐  head due, present
//!   │  Empty  │                          │ Buffering │ ─────────────────────▶ Packet(seq)
//!   └─────────┘ ◀─── reset (restart) ─── └───────────┘  head missing, its
//!                                           │   ▲       due time passed   ─▶ Lost(seq, fec?)
//!        too far ahead / gap > max_conceal  │   │       (FEC when seq+1 is buffered)
//!        ──▶ skip to next buffered packet ──┘   │
//!            (next Packet has `discontinuity`)  │ late (seq < next): drop, count
//!                                               │ duplicate: drop, count
//! ```
//!
//! Play-out time of a packet with media time `t` (s) is `envelope + t + target_delay`, where the
//! envelope is the stream's minimum transit ([`crate::receive::TransitEnvelope`]). The target
//! delay follows the peak excess transit (fast attack, slow decay) plus a margin, clamped to
//! `[min_delay, max_delay]`. Because timeline positions come from media time, not from play-out
//! time, changing the delay never stretches or shifts the recorded audio: it only changes how
//! long we wait for a late packet.
//!
//! Storage is a fixed array of slots indexed by extended sequence number modulo capacity, each
//! holding its payload inline: no allocation after construction.

use std::time::Duration;

use crate::units::{ExtSeq, ExtTimestamp};

/// Largest payload a slot holds.
pub const MAX_PAYLOAD: usize = crate::rtp::MAX_PACKET_LEN - 12;

/// Jitter buffer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct JitterConfig {
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay; packets later than this are lost.
    pub max_delay: Duration,
    /// Added on top of the measured peak jitter.
    pub margin: Duration,
    /// Slots (packets) held; a power of two. Must cover `max_delay` at the smallest packet time.
    pub capacity: usize,
    /// Consecutive lost packets concealed with PLC/FEC before the gap is treated as silence.
    pub max_conceal: u32,
    /// Extra wait before a stream's first packet plays, so the transit envelope (and with it
    /// the stream's start position) is measured on a few packets, not on one. The default,
    /// 40 ms, is two packet times of 20 ms audio: with the receiver's one-packet probation of a
    /// new SSRC, the envelope has seen three packets when the first one plays. (It was 100 ms,
    /// a third of the call setup time on loopback; the drift controller corrects any residual
    /// start error anyway.)
    pub startup_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
            margin: Duration::from_millis(10),
            capacity: 64,
            max_conceal: 5,
            startup_delay: Duration::from_millis(40),
        }
    }
}

impl JitterConfig {
    /// Sets the delay bounds.
    pub fn with_delay(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }
}

/// What [`JitterBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored for play-out.
    Buffered,
    /// Already stored or already played: dropped.
    Duplicate,
    /// Its play-out slot has passed: dropped.
    Late,
    /// Empty payload or larger than a slot: dropped.
    Invalid,
    /// So far ahead that older packets were discarded to make room (count given).
    Overflow(u32),
}

/// What [`JitterBuffer::poll`] releases.
#[derive(Debug, PartialEq)]
pub enum Playout<'a> {
    /// The next packet, in sequence order.
    Packet {
        /// Its sequence number.
        seq: ExtSeq,
        /// Its media time.
        ts: ExtTimestamp,
        /// Its payload.
        payload: &'a [u8],
        /// Packets were skipped before this one (overflow or a gap too long to conceal).
        discontinuity: bool,
        /// Its arrival and play-out deadline, as [`JitterBuffer::released_timing`] reports
        /// them (carried here so a caller still holding `payload` can read them).
        timing: Option<(f64, f64)>,
    },
    /// The next packet did not arrive in time.
    Lost {
        /// The missing sequence number.
        seq: ExtSeq,
        /// The payload of `seq + 1` when it is buffered (its in-band FEC may rebuild this one).
        next_payload: Option<&'a [u8]>,
    },
}

struct Slot {
    seq: u64,
    ts: i64,
    /// When the packet arrived (s since media start; NaN when not given).
    arrival: f64,
    len: u16,
    /// Payloads up to [`INLINE_PAYLOAD`] bytes (speech at up to ~100 kbit/s in 20 ms packets).
    inline: [u8; INLINE_PAYLOAD],
    /// Larger payloads: a full-size buffer, allocated the first time this slot needs it and
    /// kept, so a high-bitrate stream allocates at most once per slot.
    big: Option<Box<[u8]>>,
}

/// Bytes a slot holds without its overflow buffer. A slot sized for the largest RTP payload
/// (1.5 kB) made the default 64-slot buffer ~96 KiB per stream, resident; this makes it 16 KiB.
pub const INLINE_PAYLOAD: usize = 256;

impl Slot {
    fn store(&mut self, payload: &[u8]) {
        let n = payload.len().min(MAX_PAYLOAD);
        self.len = n as u16;
        if n <= INLINE_PAYLOAD {
            self.inline[..n].copy_from_slice(&payload[..n]);
        } else {
            let big = self
                .big
                .get_or_insert_with(|| vec![0; MAX_PAYLOAD].into_boxed_slice());
            big[..n].copy_from_slice(&payload[..n]);
        }
    }

    fn payload(&self) -> &[u8] {
        let n = usize::from(self.len);
        match &self.big {
            Some(big) if n > INLINE_PAYLOAD => &big[..n],
            _ => &self.inline[..n.min(INLINE_PAYLOAD)],
        }
    }
}

const EMPTY: u64 = u64::MAX;

/// The jitter buffer. See the module docs for its states.
pub struct JitterBuffer {
    cfg: JitterConfig,
    clock_rate: f64,
    slots: Box<[Slot]>,
    mask: u64,
    count: usize,
    next: Option<u64>,
    lowest: u64,
    last_ts_step: i64,
    last_played_ts: Option<i64>,
    consecutive_lost: u32,
    skipped: bool,
    peak_excess: f64,
    target: f64,
    /// Arrival and play-out deadline of the packet `poll` last released.
    released: Option<(f64, f64)>,
    /// The latest play-out deadline released so far: play-out is in order, so a packet
    /// cannot be due before the one ahead of it (e.g. those that queued behind the first
    /// packet's start-up wait).
    last_due: f64,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("count", &self.count)
            .field("next", &self.next)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// A buffer for a stream whose media clock runs at `clock_rate` Hz. The capacity is rounded
    /// up to a power of two (at least 4).
    pub fn new(cfg: JitterConfig, clock_rate: u32) -> Self {
        let cap = cfg.capacity.clamp(4, 1024).next_power_of_two();
        let slots = (0..cap)
            .map(|_| Slot {
                seq: EMPTY,
                ts: 0,
                arrival: f64::NAN,
                len: 0,
                inline: [0; INLINE_PAYLOAD],
                big: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        JitterBuffer {
            cfg,
            clock_rate: f64::from(clock_rate),
            slots,
            mask: cap as u64 - 1,
            count: 0,
            next: None,
            lowest: u64::MAX,
            last_ts_step: i64::from(clock_rate / 50),
            last_played_ts: None,
            consecutive_lost: 0,
            skipped: false,
            peak_excess: 0.0,
            target: cfg.min_delay.as_secs_f64(),
            released: None,
            last_due: f64::NEG_INFINITY,
        }
    }

    /// Stores a packet. `excess` is its transit above the stream's envelope (s), used to adapt
    /// the target delay.
    pub fn insert(
        &mut self,
        seq: ExtSeq,
        ts: ExtTimestamp,
        payload: &[u8],
        excess: f64,
    ) -> InsertOutcome {
        self.insert_at(seq, ts, payload, excess, f64::NAN)
    }

    /// [`JitterBuffer::insert`], also keeping the packet's arrival time (s, same clock as
    /// [`JitterBuffer::poll`]'s `now`) for [`JitterBuffer::released_timing`].
    pub fn insert_at(
        &mut self,
        seq: ExtSeq,
        ts: ExtTimestamp,
        payload: &[u8],
        excess: f64,
        arrival: f64,
    ) -> InsertOutcome {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return InsertOutcome::Invalid;
        }
        self.adapt(excess);
        let seq = seq.0;
        let mut outcome = InsertOutcome::Buffered;
        match self.next {
            Some(next) if seq < next => return InsertOutcome::Late,
            Some(next) if seq - next > self.mask => {
                outcome = InsertOutcome::Overflow(self.flush());
                self.next = Some(seq);
                self.skipped = true;
            }
            None if self.count > 0 && seq.abs_diff(self.lowest) > self.mask => {
                outcome = InsertOutcome::Overflow(self.flush());
            }
            _ => {}
        }
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if slot.seq == seq {
            return InsertOutcome::Duplicate;
        }
        slot.seq = seq;
        slot.ts = ts.0;
        slot.arrival = arrival;
        slot.store(payload);
        self.count += 1;
        if self.next.is_none() {
            self.lowest = self.lowest.min(seq);
        }
        outcome
    }

    /// Releases the next packet or loss decision due at `now` (s since media start), given the
    /// stream's transit envelope `floor` (s). Call until it returns `None`.
    pub fn poll(&mut self, now: f64, floor: f64) -> Option<Playout<'_>> {
        if self.count == 0 {
            return None;
        }
        let next = *self.next.get_or_insert(self.lowest);
        let idx = (next & self.mask) as usize;
        if self.slots[idx].seq == next {
            let ts = self.slots[idx].ts;
            let due = self.due(ts, floor);
            if now < due {
                return None;
            }
            self.last_due = self.last_due.max(due);
            self.released = Some((self.slots[idx].arrival, self.last_due));
            return Some(self.take(next));
        }
        // The head is missing: find the next buffered packet.
        let (nseq, nts) = self.next_buffered(next)?;
        let gap = nseq - next;
        let expected_ts = nts - self.last_ts_step * gap as i64;
        let lost_due = self.due(expected_ts, floor);
        if now < lost_due {
            return None;
        }
        self.last_due = self.last_due.max(lost_due);
        if self.consecutive_lost >= self.cfg.max_conceal {
            // Too long to conceal: jump to the next packet; the gap becomes silence downstream.
            let s = &self.slots[(nseq & self.mask) as usize];
            self.released = Some((s.arrival, self.last_due));
            self.next = Some(nseq);
            self.skipped = true;
            self.consecutive_lost = 0;
            return Some(self.take(nseq));
        }
        self.consecutive_lost += 1;
        self.released = None;
        self.next = Some(next + 1);
        let next_payload = (gap == 1).then(|| {
            let s = &self.slots[(nseq & self.mask) as usize];
            s.payload()
        });
        Some(Playout::Lost {
            seq: ExtSeq(next),
            next_payload,
        })
    }

    /// When the head packet will be due (s), if any is buffered; a driver's next wake-up.
    pub fn next_due(&self, floor: f64) -> Option<f64> {
        let next = self.next.unwrap_or(self.lowest);
        if self.count == 0 {
            return None;
        }
        let idx = (next & self.mask) as usize;
        if self.slots[idx].seq == next {
            return Some(self.due(self.slots[idx].ts, floor));
        }
        let (nseq, nts) = self.next_buffered(next)?;
        Some(self.due(nts - self.last_ts_step * (nseq - next) as i64, floor))
    }

    /// Arrival time and play-out deadline (s) of the packet the last [`JitterBuffer::poll`]
    /// released; `None` after a loss decision. The deadline is the packet's own play-out time,
    /// or the latest one released before it if that is later (play-out is in order). The arrival is NaN when the packet was stored
    /// with [`JitterBuffer::insert`] rather than [`JitterBuffer::insert_at`].
    pub fn released_timing(&self) -> Option<(f64, f64)> {
        self.released
    }

    /// Current target delay.
    pub fn target_delay(&self) -> Duration {
        Duration::from_secs_f64(self.target)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops everything (sender restart); returns how many packets were discarded.
    pub fn reset(&mut self) -> u32 {
        let n = self.flush();
        self.next = None;
        self.last_played_ts = None;
        self.consecutive_lost = 0;
        self.skipped = false;
        self.released = None;
        self.last_due = f64::NEG_INFINITY;
        n
    }

    fn flush(&mut self) -> u32 {
        let mut n = 0;
        if self.count > 0 {
            for s in self.slots.iter_mut() {
                if s.seq != EMPTY {
                    s.seq = EMPTY;
                    n += 1;
                }
            }
        }
        self.count = 0;
        self.lowest = u64::MAX;
        n
    }

    fn due(&self, ts: i64, floor: f64) -> f64 {
        let delay = if self.last_played_ts.is_none() {
            self.target.max(self.cfg.startup_delay.as_secs_f64())
        } else {
            self.target
        };
        floor + ts as f64 / self.clock_rate + delay
    }

    fn adapt(&mut self, excess: f64) {
        // Peak hold with a ~5 s half-life at 50 packets/s.
        let decayed = self.peak_excess * 0.9972;
        self.peak_excess = decayed.max(excess.max(0.0));
        let target = self.peak_excess + self.cfg.margin.as_secs_f64();
        self.target = target.clamp(
            self.cfg.min_delay.as_secs_f64(),
            self.cfg.max_delay.as_secs_f64(),
        );
    }

    fn next_buffered(&self, after: u64) -> Option<(u64, i64)> {
        (1..=self.mask).find_map(|d| {
            let s = &self.slots[((after + d) & self.mask) as usize];
            (s.seq == after + d).then_some((s.seq, s.ts))
        })
    }

    fn take(&mut self, seq: u64) -> Playout<'_> {
        let idx = (seq & self.mask) as usize;
        let discontinuity = std::mem::take(&mut self.skipped);
        self.count -= 1;
        self.next = Some(seq + 1);
        self.consecutive_lost = 0;
        let slot = &mut self.slots[idx];
        slot.seq = EMPTY;
        if let Some(prev) = self.last_played_ts {
            let step = slot.ts - prev;
            if step > 0 && step <= (self.clock_rate * 0.12) as i64 {
                self.last_ts_step = step;
            }
        }
        self.last_played_ts = Some(slot.ts);
        Playout::Packet {
            seq: ExtSeq(seq),
            ts: ExtTimestamp(slot.ts),
            payload: slot.payload(),
            discontinuity,
            timing: self.released,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn drain(jb: &mut JitterBuffer, now: f64) -> Vec<(char, u64)> {
        let mut out = Vec::new();
        while let Some(p) = jb.poll(now, 0.0) {
            match p {
                Playout::Packet { seq, .. } => out.push(('P', seq.0)),
                Playout::Lost { seq, next_payload } => {
                    out.push((if next_payload.is_some() { 'F' } else { 'L' }, seq.0))
                }
            }
        }
        out
    }

    #[test]
    fn reorders_and_drops_duplicates_and_late() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        for s in [2u64, 1, 3, 3] {
            let o = jb.insert(ExtSeq(s), ExtTimestamp(s as i64 * 960), &[s as u8], 0.0);
            if s == 3 && jb.len() == 3 {
                assert!(matches!(
                    o,
                    InsertOutcome::Buffered | InsertOutcome::Duplicate
                ));
            }
        }
        assert_eq!(jb.len(), 3);
        assert_eq!(drain(&mut jb, 1.0), vec![('P', 1), ('P', 2), ('P', 3)]);
        assert_eq!(
            jb.insert(ExtSeq(2), ExtTimestamp(1920), &[2], 0.0),
            InsertOutcome::Late
        );
    }

    #[test]
    fn small_and_large_payloads_come_back_intact_in_any_slot_order() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        // Sizes around the inline limit, then the same slots reused with other sizes.
        let sizes = [
            1usize,
            INLINE_PAYLOAD,
            INLINE_PAYLOAD + 1,
            MAX_PAYLOAD,
            80,
            3,
        ];
        let mut seq = 1u64;
        for round in 0..3 {
            let mut sent = Vec::new();
            for (k, &n) in sizes.iter().enumerate() {
                let body: Vec<u8> = (0..n).map(|i| (i + k + round * 7) as u8).collect();
                jb.insert(ExtSeq(seq), ExtTimestamp(seq as i64 * 960), &body, 0.0);
                sent.push(body);
                seq += 1;
            }
            let mut got = Vec::new();
            while let Some(p) = jb.poll(1e6, 0.0) {
                if let Playout::Packet { payload, .. } = p {
                    got.push(payload.to_vec());
                }
            }
            assert_eq!(got, sent, "round {round}");
        }
    }

    #[test]
    fn first_packet_waits_the_startup_delay_then_packets_play_at_the_target() {
        let cfg = JitterConfig::default();
        assert_eq!(cfg.startup_delay, Duration::from_millis(40));
        let mut jb = JitterBuffer::new(cfg, 48_000);
        // Packets of 20 ms arriving on time (no excess transit): the target stays at min_delay.
        for s in 0..3u64 {
            jb.insert(ExtSeq(s), ExtTimestamp(s as i64 * 960), &[1], 0.0);
        }
        assert_eq!(jb.target_delay(), cfg.min_delay);
        assert_eq!(jb.next_due(0.0), Some(0.040));
        assert!(drain(&mut jb, 0.0399).is_empty());
        // The first plays at 40 ms; the second was due at 20 + 20 ms and goes with it.
        assert_eq!(drain(&mut jb, 0.040), vec![('P', 0), ('P', 1)]);
        // After the first, only the target delay counts: seq 2 (media time 40 ms) at 60 ms.
        assert!(drain(&mut jb, 0.0599).is_empty());
        assert_eq!(drain(&mut jb, 0.060), vec![('P', 2)]);
        // A configured start-up delay below the target changes nothing: the target rules.
        let mut jb = JitterBuffer::new(
            JitterConfig {
                startup_delay: Duration::ZERO,
                ..cfg
            },
            48_000,
        );
        jb.insert(ExtSeq(0), ExtTimestamp(0), &[1], 0.0);
        assert!(drain(&mut jb, 0.0199).is_empty());
        assert_eq!(drain(&mut jb, 0.020), vec![('P', 0)]);
    }

    #[test]
    fn loss_uses_fec_when_next_is_there() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        for s in [1u64, 2, 4, 5, 8] {
            jb.insert(ExtSeq(s), ExtTimestamp(s as i64 * 960), &[1], 0.0);
        }
        assert_eq!(
            drain(&mut jb, 10.0),
            vec![
                ('P', 1),
                ('P', 2),
                ('F', 3),
                ('P', 4),
                ('P', 5),
                ('L', 6),
                ('F', 7),
                ('P', 8)
            ]
        );
    }

    #[test]
    fn waits_until_due() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        jb.insert(ExtSeq(1), ExtTimestamp(48_000), &[1], 0.0);
        jb.insert(ExtSeq(2), ExtTimestamp(48_960), &[1], 0.0);
        // Media time 1 s, start-up delay 40 ms: due at 1.04 s.
        assert!(jb.poll(1.039, 0.0).is_none());
        assert!(jb.poll(1.041, 0.0).is_some());
        // Then the target delay (20 ms) applies: 1.02 + 0.02.
        assert!(jb.poll(1.039, 0.0).is_none());
        assert!(jb.poll(1.041, 0.0).is_some());
    }

    #[test]
    fn adapts_target_to_jitter() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        for s in 0..50u64 {
            let excess = if s % 5 == 0 { 0.08 } else { 0.0 };
            jb.insert(ExtSeq(s), ExtTimestamp(s as i64 * 960), &[1], excess);
            drain(&mut jb, 1e9);
        }
        let d = jb.target_delay().as_secs_f64();
        assert!((0.08..=0.1).contains(&d), "{d}");
    }

    #[test]
    fn far_ahead_packet_overflows_and_marks_discontinuity() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 48_000);
        jb.insert(ExtSeq(1), ExtTimestamp(960), &[1], 0.0);
        assert_eq!(drain(&mut jb, 10.0), vec![('P', 1)]);
        jb.insert(ExtSeq(3), ExtTimestamp(2880), &[1], 0.0);
        let o = jb.insert(ExtSeq(1000), ExtTimestamp(960_000), &[1], 0.0);
        assert_eq!(o, InsertOutcome::Overflow(1));
        let p = jb.poll(100.0, 0.0).unwrap();
        assert!(matches!(
            p,
            Playout::Packet {
                seq: ExtSeq(1000),
                discontinuity: true,
                ..
            }
        ));
    }
}
