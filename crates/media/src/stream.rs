//! One sender's stream inside a call: receive state, jitter buffer, decoder, resampler with
//! drift control, and the frame assembler that places audio on the call timeline.
//!
//! Placement: a sample with media time `t` (s) belongs at timeline position
//! `(envelope + t) * output_rate`, where the envelope is the stream's minimum transit
//! ([`TransitEnvelope`]). The stream's output position is compared with that target after every
//! chunk; a PI controller turns the error into a resampler ratio correction (smooth, a few
//! hundred ppm), and only errors beyond a threshold (start-up, clock jumps) are fixed by
//! inserting silence or dropping samples.

use std::sync::Arc;
use std::time::Instant;

use crate::decode::{DecodeError, DecodeKind, OpusDecoder};
use crate::frame::{
    AudioFrame, FrameFlags, FrameSource, MAX_FRAME_SAMPLES, level_and_silence_parts,
};
use crate::jitter::{InsertOutcome, JitterBuffer, JitterConfig, Playout};
use crate::mixer::{MixReject, Mixer};
use crate::pipeline::{Sink, TrackSelect};
use crate::receive::{ReceiveState, SeqVerdict, TransitEnvelope};
use crate::resample::{DriftResampler, ResampleError};
use crate::rtp::RtpPacket;
use crate::stats::{CallLatency, CallStats, StreamStats};
use crate::units::{
    CallTag, ParticipantTag, PayloadType, SampleRate, Ssrc, TimelinePos, WallClock100ns,
};

/// Proportional gain of the drift controller (per second of position error).
const KP: f64 = 0.1;
/// Integral gain (critically damped with `KP`).
const KI: f64 = KP * KP / 4.0;
/// Largest correction (ratio deviation) the controller applies.
const MAX_CORRECTION: f64 = 0.005;
/// Largest integral term (covers +-2000 ppm of clock drift).
const MAX_INTEGRAL: f64 = 0.002;
/// Position error fixed by inserting/dropping samples after the first seconds.
const HARD_ERROR_SECS: f64 = 0.06;
/// Position error fixed by inserting/dropping samples during a stream's first seconds.
const WARMUP_HARD_ERROR_SECS: f64 = 0.01;
/// How long the warm-up lasts (media seconds since the anchor).
const WARMUP_SECS: f64 = 2.0;
/// Envelope leak: must exceed the largest drift followed (200 ppm = 0.0002 s/s).
const ENVELOPE_LEAK: f64 = 0.001;
/// A packet whose media time runs this far ahead of its arrival (against the envelope) is a
/// clock jump, not a network effect.
const CLOCK_JUMP_SECS: f64 = 1.0;
/// A position error this large is never corrected sample by sample: the stream re-anchors.
const REANCHOR_ERROR_SECS: f64 = 1.0;
/// A gap is filled with silence only if the filled position is within this of the target.
const FILL_TOLERANCE_SECS: f64 = 0.1;

/// Where a frame goes, handed down from the pipeline.
pub(crate) struct Emit<'a> {
    pub call: CallTag,
    pub wall_start: WallClock100ns,
    pub rate: SampleRate,
    pub sinks: &'a mut [Sink],
    pub mixer: Option<&'a mut Mixer>,
    pub call_stats: &'a CallStats,
    pub scratch: &'a mut AudioFrame<f32>,
    /// Latency histograms of the call.
    pub latency: &'a CallLatency,
    /// The real clock, read when a frame is pushed, and the instant its seconds count from.
    pub clock: fn() -> Instant,
    pub media_start: Instant,
    /// Arrival and play-out deadline (s) of the packet being played out, while frames made
    /// from it are emitted; `None` for concealment.
    pub timing: Option<(f64, f64)>,
}

pub(crate) struct StreamParams {
    pub ssrc: Ssrc,
    pub out_rate: SampleRate,
    pub frame_len: usize,
    pub jitter: JitterConfig,
    pub max_fill_secs: f64,
    pub payload_type: PayloadType,
}

// One per stream, built once and never moved around: the size difference is irrelevant.
#[allow(clippy::large_enum_variant)]
enum Source {
    Opus {
        recv: ReceiveState,
        jb: JitterBuffer,
        dec: OpusDecoder,
        pt: PayloadType,
    },
    Pcm {
        rate: SampleRate,
        next_ts: i64,
    },
}

/// Timeline placement of one stream's audio.
struct Timeline {
    clock: f64,
    k: i64,
    out_rate: f64,
    max_fill_secs: f64,
    env: TransitEnvelope,
    rs: DriftResampler,
    asm: Assembler,
    next_ts: Option<i64>,
    fifo_ts: i64,
    anchor_ts: i64,
    skip: u64,
    drop_input: usize,
    integral: f64,
    force_discontinuity: bool,
    sr: Option<(WallClock100ns, i64)>,
}

/// A stream of a call.
pub(crate) struct Stream {
    pub ssrc: Ssrc,
    pub participant: Option<ParticipantTag>,
    pub stats: Arc<StreamStats>,
    pub last_arrival: f64,
    max_delay: f64,
    source: Source,
    tl: Timeline,
    /// When the head of the jitter buffer is due (s; infinite: nothing buffered), kept current
    /// by [`Stream::poll`] (which every packet goes through), so the pipeline can skip streams
    /// that have nothing due without touching their buffers.
    due: f64,
}

impl Stream {
    /// An Opus stream decoding at the output rate when libopus can, else at 48 kHz.
    pub fn new_opus(p: &StreamParams) -> Result<Self, ResampleError> {
        let decode_rate = if p.out_rate.is_opus_native() {
            p.out_rate
        } else {
            SampleRate::HZ_48000
        };
        let dec = OpusDecoder::new(decode_rate)
            .map_err(|e| ResampleError::Construction(e.to_string()))?;
        let source = Source::Opus {
            recv: ReceiveState::new(48_000),
            jb: JitterBuffer::new(p.jitter, 48_000),
            dec,
            pt: p.payload_type,
        };
        Self::new(p, source, 48_000, decode_rate)
    }

    /// A PCM stream (media bridge) at `rate`.
    pub fn new_pcm(p: &StreamParams, rate: SampleRate) -> Result<Self, ResampleError> {
        Self::new(p, Source::Pcm { rate, next_ts: 0 }, rate.hz(), rate)
    }

    fn new(
        p: &StreamParams,
        source: Source,
        clock: u32,
        decode_rate: SampleRate,
    ) -> Result<Self, ResampleError> {
        let rs = DriftResampler::new(decode_rate, p.out_rate)?;
        Ok(Stream {
            ssrc: p.ssrc,
            participant: None,
            stats: Arc::new(StreamStats::default()),
            last_arrival: 0.0,
            due: f64::INFINITY,
            max_delay: p.jitter.max_delay.as_secs_f64(),
            source,
            tl: Timeline {
                clock: f64::from(clock),
                k: i64::from(clock / decode_rate.hz()).max(1),
                out_rate: f64::from(p.out_rate.hz()),
                max_fill_secs: p.max_fill_secs,
                env: TransitEnvelope::new(ENVELOPE_LEAK),
                rs,
                asm: Assembler::new(p.frame_len),
                next_ts: None,
                fifo_ts: 0,
                anchor_ts: 0,
                skip: 0,
                drop_input: 0,
                integral: 0.0,
                force_discontinuity: false,
                sr: None,
            },
        })
    }

    /// Whether this is a PCM (media bridge) stream.
    pub fn is_pcm(&self) -> bool {
        matches!(self.source, Source::Pcm { .. })
    }

    /// Takes one RTP packet of this stream, then plays out whatever is due.
    pub fn handle_rtp(&mut self, now: f64, pkt: &RtpPacket<'_>, out: &mut Emit<'_>) {
        self.last_arrival = now;
        let Source::Opus { recv, jb, dec, pt } = &mut self.source else {
            return;
        };
        let stats = &*self.stats;
        if pkt.payload_type != *pt {
            StreamStats::add(&stats.unknown_payload_type, 1);
            return;
        }
        let (seq, ts) = match recv.handle_packet(pkt.seq, pkt.timestamp, now) {
            SeqVerdict::Accept(s, t) => (s, t),
            SeqVerdict::Restart(s, t) => {
                StreamStats::add(&stats.restarts, 1);
                StreamStats::add(&stats.overflow, u64::from(jb.reset()));
                dec.reset();
                self.tl.env.reset();
                self.tl.force_discontinuity = true;
                (s, t)
            }
            SeqVerdict::Reject => {
                StreamStats::add(&stats.overflow, 1);
                return;
            }
        };
        StreamStats::add(&stats.received, 1);
        let media = ts.0 as f64 / self.tl.clock;
        let excess = self.tl.observe(now, media, self.max_delay);
        match jb.insert_at(seq, ts, pkt.payload, excess, now) {
            InsertOutcome::Buffered => {}
            InsertOutcome::Duplicate => StreamStats::add(&stats.duplicate, 1),
            InsertOutcome::Late => StreamStats::add(&stats.late, 1),
            InsertOutcome::Invalid => StreamStats::add(&stats.decode_errors, 1),
            InsertOutcome::Overflow(n) => StreamStats::add(&stats.overflow, u64::from(n)),
        }
        StreamStats::set(&stats.lost, recv.lost());
        StreamStats::set(&stats.jitter_us, (recv.jitter_secs() * 1e6) as u64);
        StreamStats::set(&stats.buffer_delay_us, jb.target_delay().as_micros() as u64);
        self.poll(now, out);
    }

    /// Takes an RTCP sender report for this stream.
    pub fn handle_sender_report(&mut self, ntp: u64, rtp: crate::units::RtpTimestamp) {
        if let Source::Opus { recv, .. } = &mut self.source {
            recv.handle_sender_report(ntp, rtp);
            StreamStats::add(&self.stats.sender_reports, 1);
            let _ = rtp;
            self.tl.sr = recv
                .sender_report()
                .map(|(ntp, ext)| (WallClock100ns::from_ntp(ntp), ext));
        }
    }

    /// Takes one PCM frame (media bridge). `ts` is its media time in samples at its rate when
    /// the bridge supplies one; otherwise frames are taken as contiguous.
    pub fn handle_pcm(&mut self, now: f64, samples: &[f32], ts: Option<i64>, out: &mut Emit<'_>) {
        self.last_arrival = now;
        let Source::Pcm { next_ts, .. } = &mut self.source else {
            return;
        };
        let ts = ts.unwrap_or(*next_ts);
        *next_ts = ts + samples.len() as i64;
        StreamStats::add(&self.stats.received, 1);
        let media = ts as f64 / self.tl.clock;
        self.tl.observe(now, media, self.max_delay);
        out.timing = Some((now, now));
        self.tl
            .place(ts, false, &self.stats, self.ssrc, self.participant, out);
        self.tl.push(
            samples,
            false,
            &self.stats,
            self.ssrc,
            self.participant,
            out,
        );
        out.timing = None;
    }

    /// Plays out everything the jitter buffer releases at `now`.
    pub fn poll(&mut self, now: f64, out: &mut Emit<'_>) {
        let Source::Opus { jb, dec, .. } = &mut self.source else {
            return;
        };
        let stats = &*self.stats;
        loop {
            let floor = self.tl.env.floor().unwrap_or(0.0);
            let Some(p) = jb.poll(now, floor) else { break };
            match p {
                Playout::Packet {
                    ts,
                    payload,
                    discontinuity,
                    timing,
                    ..
                } => {
                    // Frames completed while this packet plays out are "made from" it.
                    out.timing = timing.filter(|(a, _)| a.is_finite());
                    self.tl
                        .place(ts.0, discontinuity, stats, self.ssrc, self.participant, out);
                    let (ssrc, participant) = (self.ssrc, self.participant);
                    let decoded = match self.tl.decode_in_place(dec, payload) {
                        Ok(true) => {
                            self.tl
                                .drain_resampler(false, stats, ssrc, participant, out);
                            continue;
                        }
                        Ok(false) => dec.decode(payload),
                        Err(e) => Err(e),
                    };
                    match decoded {
                        Ok(pcm) => self.tl.push(pcm, false, stats, ssrc, participant, out),
                        Err(_) => {
                            StreamStats::add(&stats.decode_errors, 1);
                            let (pcm, _) = dec.conceal(None);
                            self.tl.push(pcm, true, stats, ssrc, participant, out);
                        }
                    }
                }
                Playout::Lost { next_payload, .. } => {
                    out.timing = None;
                    if self.tl.next_ts.is_none() {
                        continue;
                    }
                    let (pcm, kind) = dec.conceal(next_payload);
                    let counter = if kind == DecodeKind::Fec {
                        &stats.fec_recovered
                    } else {
                        &stats.concealed
                    };
                    StreamStats::add(counter, 1);
                    self.tl
                        .push(pcm, true, stats, self.ssrc, self.participant, out);
                }
            }
        }
        out.timing = None;
        StreamStats::set(&stats.buffer_delay_us, jb.target_delay().as_micros() as u64);
        self.refresh_due();
    }

    /// When this stream next needs a poll (s since media start).
    pub fn next_due(&self) -> Option<f64> {
        self.due.is_finite().then_some(self.due)
    }

    /// Recomputes [`Stream::next_due`] from the jitter buffer.
    fn refresh_due(&mut self) {
        self.due = match &self.source {
            Source::Opus { jb, .. } => jb
                .next_due(self.tl.env.floor().unwrap_or(0.0))
                .unwrap_or(f64::INFINITY),
            Source::Pcm { .. } => f64::INFINITY,
        };
    }

    /// Emits the partial frame (zero-padded): the stream is going away.
    pub fn finish(&mut self, out: &mut Emit<'_>) {
        let (ssrc, participant, stats) = (self.ssrc, self.participant, &*self.stats);
        let sr = self.tl.sr;
        let (clock, out_rate) = (self.tl.clock, self.tl.out_rate);
        let anchor = (self.tl.asm.next_pos(), self.tl.fifo_ts);
        self.tl.asm.finish(&mut |head, tail, pos, flags| {
            let capture = capture_time(sr, anchor, clock, out_rate, pos, out);
            emit(
                out,
                stats,
                ssrc,
                participant,
                (head, tail),
                pos,
                flags,
                capture,
            );
        });
    }

    /// The PCM rate of a PCM stream.
    pub fn pcm_rate(&self) -> Option<SampleRate> {
        match self.source {
            Source::Pcm { rate, .. } => Some(rate),
            Source::Opus { .. } => None,
        }
    }
}

impl Timeline {
    /// Feeds the transit envelope; returns the packet's excess delay. A media clock that jumps
    /// against arrival time (backwards, or ahead by more than [`CLOCK_JUMP_SECS`]) is not
    /// allowed to drag the envelope: the envelope restarts from this packet and the stream
    /// re-anchors, so positions stay bounded by real time whatever the timestamps say.
    fn observe(&mut self, now: f64, media: f64, max_delay: f64) -> f64 {
        let jumped = self.env.floor().is_some_and(|floor| {
            let transit = now - media;
            transit > floor + max_delay + 2.0 || transit < floor - CLOCK_JUMP_SECS
        });
        if jumped {
            self.env.reset();
            self.force_discontinuity = true;
        }
        self.env.observe(now, media)
    }

    fn target_pos(&self, ts: i64) -> Option<f64> {
        Some((self.env.floor()? + ts as f64 / self.clock) * self.out_rate)
    }

    /// Position where the first sample in the resampler FIFO will land.
    fn fifo_pos(&self) -> f64 {
        self.asm.next_pos() as f64 + self.rs.output_delay() as f64 - self.skip as f64
    }

    /// Position where the next pushed sample will land.
    fn input_pos(&self) -> f64 {
        self.fifo_pos() + self.rs.pending() as f64 * self.rs.nominal_ratio()
    }

    /// Makes the next pushed sample (media time `ts`) land where it belongs.
    fn place(
        &mut self,
        ts: i64,
        discontinuity: bool,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        let forced = std::mem::take(&mut self.force_discontinuity);
        let Some(expected) = self.next_ts else {
            self.anchor(ts, forced, stats, ssrc, participant, out);
            return;
        };
        let gap = ts - expected;
        if gap == 0 && !forced {
            return;
        }
        let gap_secs = gap as f64 / self.clock;
        let predicted = self.input_pos() + gap_secs * self.out_rate;
        let consistent = self
            .target_pos(ts)
            .is_some_and(|t| (t - predicted).abs() < FILL_TOLERANCE_SECS * self.out_rate);
        if !forced && consistent && gap > 0 && gap_secs <= self.max_fill_secs {
            // DTX or a skipped loss: exact silence of the right length.
            let n = (gap / self.k) as usize;
            StreamStats::add(&stats.silence_samples, n as u64);
            self.push_zeros(n, stats, ssrc, participant, out);
            self.next_ts = Some(ts);
        } else if !forced && consistent && gap < 0 && gap_secs > -0.12 {
            // Overlap (a timestamp stepping back a little): drop the overlapping input.
            self.drop_input = ((-gap) / self.k) as usize;
            self.next_ts = Some(ts);
        } else {
            let _ = discontinuity;
            self.anchor(ts, true, stats, ssrc, participant, out);
        }
    }

    fn anchor(
        &mut self,
        ts: i64,
        discontinuity: bool,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        let target = self.target_pos(ts).unwrap_or(0.0).max(0.0).round() as u64;
        let started = self.next_ts.is_some();
        if started {
            StreamStats::add(&stats.resyncs, 1);
            let sr = self.sr;
            let (clock, out_rate) = (self.clock, self.out_rate);
            let anchor = (self.asm.next_pos(), self.fifo_ts);
            self.asm.finish(&mut |head, tail, pos, flags| {
                let capture = capture_time(sr, anchor, clock, out_rate, pos, out);
                emit(
                    out,
                    stats,
                    ssrc,
                    participant,
                    (head, tail),
                    pos,
                    flags,
                    capture,
                );
            });
        }
        let pos = if started {
            target.max(self.asm.next_pos())
        } else {
            target
        };
        self.rs.reset();
        self.asm.start_at(pos, discontinuity && started);
        self.skip = self.rs.output_delay() as u64;
        self.drop_input = 0;
        self.fifo_ts = ts;
        self.anchor_ts = ts;
        self.next_ts = Some(ts);
        self.integral = 0.0;
    }

    fn push_zeros(
        &mut self,
        mut n: usize,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        while n > 0 {
            let k = self.rs.push_zeros(n);
            n -= k;
            self.drain_resampler(false, stats, ssrc, participant, out);
        }
    }

    /// Decodes `payload` straight into the resampler's FIFO (no copy through the decoder's
    /// buffer) when nothing stands in the way: the stream is anchored, no overlap is being
    /// dropped, and the FIFO has the room. `Ok(true)`: decoded and counted as input, drain
    /// next. `Ok(false)`: not attempted (nothing decoded), take the copying path.
    fn decode_in_place(
        &mut self,
        dec: &mut OpusDecoder,
        payload: &[u8],
    ) -> Result<bool, DecodeError> {
        let Some(next) = self.next_ts else {
            return Ok(false);
        };
        if self.drop_input > 0 {
            return Ok(false);
        }
        let n = dec.packet_samples(payload)?;
        let Some(slot) = self.rs.input_slot(n) else {
            return Ok(false);
        };
        let got = dec.decode_into(payload, slot)?;
        self.rs.commit(got);
        self.next_ts = Some(next + got as i64 * self.k);
        Ok(true)
    }

    fn push(
        &mut self,
        samples: &[f32],
        concealed: bool,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        let Some(next) = self.next_ts else { return };
        self.next_ts = Some(next + samples.len() as i64 * self.k);
        let skip_in = self.drop_input.min(samples.len());
        self.drop_input -= skip_in;
        let mut rest = &samples[skip_in..];
        while !rest.is_empty() {
            let k = self.rs.push(rest);
            rest = &rest[k..];
            self.drain_resampler(concealed, stats, ssrc, participant, out);
        }
    }

    fn drain_resampler(
        &mut self,
        concealed: bool,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        let chunk = self.rs.chunk() as i64;
        loop {
            let anchor = (self.asm.next_pos(), self.fifo_ts);
            let Some(o) = self.rs.process() else { break };
            self.fifo_ts += chunk * self.k;
            let skip = (self.skip as usize).min(o.len());
            self.skip -= skip as u64;
            let sr = self.sr;
            let (clock, out_rate) = (self.clock, self.out_rate);
            if concealed {
                self.asm.flags.concealed = true;
            }
            self.asm.write(&o[skip..], &mut |head, tail, pos, flags| {
                let capture = capture_time(sr, anchor, clock, out_rate, pos, out);
                emit(
                    out,
                    stats,
                    ssrc,
                    participant,
                    (head, tail),
                    pos,
                    flags,
                    capture,
                );
            });
            self.control(stats, ssrc, participant, out);
        }
    }

    /// The drift controller, run after every chunk.
    fn control(
        &mut self,
        stats: &StreamStats,
        ssrc: Ssrc,
        participant: Option<ParticipantTag>,
        out: &mut Emit<'_>,
    ) {
        let Some(target) = self.target_pos(self.fifo_ts) else {
            return;
        };
        let err = (target - self.fifo_pos()) / self.out_rate;
        let age = (self.fifo_ts - self.anchor_ts) as f64 / self.clock;
        if err.abs() > REANCHOR_ERROR_SECS {
            self.force_discontinuity = true;
            return;
        }
        let hard = if age < WARMUP_SECS {
            WARMUP_HARD_ERROR_SECS
        } else {
            HARD_ERROR_SECS
        };
        if err.abs() > hard {
            let n = (err.abs() * self.out_rate).round() as u64;
            if err > 0.0 {
                // Behind: insert silence at the output.
                let sr = self.sr;
                let (clock, out_rate) = (self.clock, self.out_rate);
                let anchor = (self.asm.next_pos(), self.fifo_ts);
                let zeros = [0.0f32; MAX_FRAME_SAMPLES];
                let mut left = n as usize;
                while left > 0 {
                    let k = left.min(MAX_FRAME_SAMPLES);
                    self.asm.write(&zeros[..k], &mut |head, tail, pos, flags| {
                        let capture = capture_time(sr, anchor, clock, out_rate, pos, out);
                        emit(
                            out,
                            stats,
                            ssrc,
                            participant,
                            (head, tail),
                            pos,
                            flags,
                            capture,
                        );
                    });
                    left -= k;
                }
            } else {
                self.skip += n;
            }
            if age >= WARMUP_SECS {
                StreamStats::add(&stats.resyncs, 1);
            }
            return;
        }
        let dt = self.rs.chunk() as f64 * self.k as f64 / self.clock;
        self.integral = (self.integral + KI * err * dt).clamp(-MAX_INTEGRAL, MAX_INTEGRAL);
        let u = (KP * err + self.integral).clamp(-MAX_CORRECTION, MAX_CORRECTION);
        self.rs.set_correction(u);
        stats.set_drift_ppb((u * 1e9) as i64);
    }
}

fn capture_time(
    sr: Option<(WallClock100ns, i64)>,
    anchor: (u64, i64),
    clock: f64,
    out_rate: f64,
    pos: u64,
    out: &Emit<'_>,
) -> WallClock100ns {
    match sr {
        Some((wall, sr_ts)) => {
            let ts = anchor.1 as f64 + (pos as f64 - anchor.0 as f64) * clock / out_rate;
            let ticks = (ts - sr_ts as f64) / clock * 1e7;
            WallClock100ns((wall.0 as f64 + ticks).max(0.0) as u64)
        }
        None => out.wall_start.plus(out.rate.duration_of(pos)),
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    out: &mut Emit<'_>,
    stats: &StreamStats,
    ssrc: Ssrc,
    participant: Option<ParticipantTag>,
    (head, tail): (&[f32], &[f32]),
    pos: u64,
    flags: FrameFlags,
    capture: WallClock100ns,
) {
    let f = &mut *out.scratch;
    f.call = out.call;
    f.source = FrameSource::Participant { ssrc, participant };
    f.position = TimelinePos(pos);
    f.capture_time = capture;
    f.rate = out.rate;
    f.flags = flags;
    let (level, silent) = level_and_silence_parts(head, tail);
    f.level_dbfs = level;
    f.flags.silence = silent;
    f.active_speakers = Default::default();
    StreamStats::add(&stats.frames_out, 1);
    for sink in out.sinks.iter_mut() {
        let wanted = match sink.select {
            TrackSelect::AllParticipants => true,
            TrackSelect::Participant(s) => s == ssrc,
            TrackSelect::Mixed => false,
        };
        if wanted && !sink.producer.push_parts(f, head, tail) {
            StreamStats::add(&stats.dropped_at_ring, 1);
            StreamStats::add(&crate::stats::RING_FRAMES_DROPPED, 1);
        }
    }
    if let Some((arrival, due)) = out.timing
        && !flags.concealed
    {
        let pushed = (out.clock)()
            .saturating_duration_since(out.media_start)
            .as_secs_f64();
        out.latency.record_frame(arrival, due, pushed);
    }
    if let Some(m) = out.mixer.as_deref_mut()
        && let Err(MixReject::Late | MixReject::TooEarly) = m.add_parts(f, head, tail)
    {
        StreamStats::add(&out.call_stats.late_for_mix, 1);
    }
}

/// Where the assembler sends a completed frame: its samples as two parts (`head` then `tail`),
/// its position and its flags.
type OnFrame<'a> = dyn FnMut(&[f32], &[f32], u64, FrameFlags) + 'a;

/// Cuts a stream's output into grid-aligned frames.
struct Assembler {
    len: usize,
    buf: [f32; MAX_FRAME_SAMPLES],
    fill: usize,
    frame_pos: u64,
    flags: FrameFlags,
}

impl Assembler {
    fn new(len: usize) -> Self {
        Assembler {
            len: len.clamp(1, MAX_FRAME_SAMPLES),
            buf: [0.0; MAX_FRAME_SAMPLES],
            fill: 0,
            frame_pos: 0,
            flags: FrameFlags::default(),
        }
    }

    fn next_pos(&self) -> u64 {
        self.frame_pos + self.fill as u64
    }

    /// Starts writing at `pos`; the frame's head (back to the grid line) is silence.
    fn start_at(&mut self, pos: u64, discontinuity: bool) {
        let len = self.len as u64;
        self.frame_pos = pos - pos % len;
        self.fill = (pos % len) as usize;
        self.buf[..self.fill].fill(0.0);
        self.flags = FrameFlags {
            discontinuity,
            ..FrameFlags::default()
        };
    }

    /// Appends `s`; every frame it completes goes to `on_frame` as two parts, `head` then
    /// `tail`, whose samples together are the frame's: the buffered start of the frame and
    /// the rest straight from `s` (no copy), or, for a frame wholly inside `s`, `s`'s slice
    /// and nothing. Only a frame's start that `s` does not complete is copied into the buffer.
    fn write(&mut self, mut s: &[f32], on_frame: &mut OnFrame<'_>) {
        while !s.is_empty() {
            let need = self.len - self.fill;
            if s.len() < need {
                self.buf[self.fill..self.fill + s.len()].copy_from_slice(s);
                self.fill += s.len();
                return;
            }
            let (rest, next) = s.split_at(need);
            on_frame(&self.buf[..self.fill], rest, self.frame_pos, self.flags);
            s = next;
            self.frame_pos += self.len as u64;
            self.fill = 0;
            self.flags = FrameFlags::default();
        }
    }

    /// Pads the partial frame with silence and emits it.
    fn finish(&mut self, on_frame: &mut OnFrame<'_>) {
        if self.fill > 0 {
            self.buf[self.fill..self.len].fill(0.0);
            self.fill = self.len;
            on_frame(&self.buf[..self.len], &[], self.frame_pos, self.flags);
            self.frame_pos += self.len as u64;
            self.fill = 0;
            self.flags = FrameFlags::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::level_and_silence;

    /// The assembler as it was before frames were emitted in two parts: every sample copied
    /// into the frame buffer, each frame emitted from it. The reference for
    /// [`Assembler::write`].
    struct CopyingAssembler {
        len: usize,
        buf: [f32; MAX_FRAME_SAMPLES],
        fill: usize,
        frame_pos: u64,
        flags: FrameFlags,
    }

    impl CopyingAssembler {
        fn write(&mut self, mut s: &[f32], on_frame: &mut dyn FnMut(&[f32], u64, FrameFlags)) {
            while !s.is_empty() {
                let n = (self.len - self.fill).min(s.len());
                self.buf[self.fill..self.fill + n].copy_from_slice(&s[..n]);
                self.fill += n;
                s = &s[n..];
                if self.fill == self.len {
                    on_frame(&self.buf[..self.len], self.frame_pos, self.flags);
                    self.frame_pos += self.len as u64;
                    self.fill = 0;
                    self.flags = FrameFlags::default();
                }
            }
        }

        fn finish(&mut self, on_frame: &mut dyn FnMut(&[f32], u64, FrameFlags)) {
            if self.fill > 0 {
                self.buf[self.fill..self.len].fill(0.0);
                on_frame(&self.buf[..self.len], self.frame_pos, self.flags);
                self.frame_pos += self.len as u64;
                self.fill = 0;
                self.flags = FrameFlags::default();
            }
        }

        fn start_at(&mut self, pos: u64, discontinuity: bool) {
            let len = self.len as u64;
            self.frame_pos = pos - pos % len;
            self.fill = (pos % len) as usize;
            self.buf[..self.fill].fill(0.0);
            self.flags = FrameFlags {
                discontinuity,
                ..FrameFlags::default()
            };
        }
    }

    /// A frame as a sink sees it: samples (bits), position, flags, level (bits).
    type Seen = (Vec<u32>, u64, FrameFlags, u32);

    fn seen(samples: &[f32], pos: u64, flags: FrameFlags) -> Seen {
        let level = crate::frame::level_and_silence(samples).0;
        (
            samples.iter().map(|s| s.to_bits()).collect(),
            pos,
            flags,
            level.to_bits(),
        )
    }

    /// Deterministic pseudo-random numbers (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn sample(&mut self) -> f32 {
            match self.below(8) {
                0 => 0.0,
                _ => (self.next() % 20_001) as f32 / 10_000.0 - 1.0,
            }
        }
    }

    #[test]
    fn two_part_frames_equal_the_copying_assemblers_frame_by_frame() {
        for (seed, len) in [(1u64, 320usize), (2, 960), (3, 160), (4, 480), (5, 7)] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let mut new = Assembler::new(len);
            let mut old = CopyingAssembler {
                len,
                buf: [0.0; MAX_FRAME_SAMPLES],
                fill: 0,
                frame_pos: 0,
                flags: FrameFlags::default(),
            };
            let (mut got, mut want): (Vec<Seen>, Vec<Seen>) = (Vec::new(), Vec::new());
            let mut parts = [0usize; 3];
            for _ in 0..3_000 {
                match rng.below(40) {
                    0 => {
                        // Re-anchor somewhere on or off the grid, like `Timeline::anchor`.
                        let pos = rng.next() % 1_000_000;
                        let disc = rng.below(2) == 0;
                        new.finish(&mut |h, t, p, f| {
                            let joined = [h, t].concat();
                            got.push(seen(&joined, p, f));
                        });
                        old.finish(&mut |s, p, f| want.push(seen(s, p, f)));
                        new.start_at(pos, disc);
                        old.start_at(pos, disc);
                    }
                    1 => {
                        new.flags.concealed = true;
                        old.flags.concealed = true;
                    }
                    _ => {
                        // Chunks around the 10 ms resampler chunk (slips), short and long.
                        let n = match rng.below(4) {
                            0 => rng.below(3 * len + 1),
                            1 => len / 2 + rng.below(3),
                            _ => 159 + rng.below(3),
                        };
                        let s: Vec<f32> = (0..n).map(|_| rng.sample()).collect();
                        new.write(&s, &mut |h, t, p, f| {
                            parts[usize::from(!h.is_empty()) + usize::from(!t.is_empty())] += 1;
                            // Each part is passed as it is, and level is computed from parts.
                            let joined = [h, t].concat();
                            let mut sn = seen(&joined, p, f);
                            sn.3 = level_and_silence_parts(h, t).0.to_bits();
                            got.push(sn);
                        });
                        old.write(&s, &mut |s, p, f| want.push(seen(s, p, f)));
                        assert_eq!(new.next_pos(), old.frame_pos + old.fill as u64);
                    }
                }
            }
            assert!(want.len() > 100, "len {len}: {} frames", want.len());
            assert_eq!(got.len(), want.len(), "len {len}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "len {len}, frame {i}");
            }
            // Both shapes happened: frames split across buffer and input, and whole in input.
            assert!(parts[2] > 0 && parts[1] > 0, "len {len}: {parts:?}");
        }
    }

    #[test]
    fn level_of_two_parts_is_bit_identical_to_the_joined_slice() {
        let mut rng = Rng(42);
        for _ in 0..2_000 {
            let n = rng.below(100);
            let s: Vec<f32> = (0..n).map(|_| rng.sample() * 0.3).collect();
            let whole = level_and_silence(&s);
            for cut in 0..=n {
                let (h, t) = s.split_at(cut);
                let parts = level_and_silence_parts(h, t);
                assert_eq!(parts.0.to_bits(), whole.0.to_bits(), "n {n} cut {cut}");
                assert_eq!(parts.1, whole.1);
            }
        }
        // Silence and underflow edges.
        assert_eq!(
            level_and_silence_parts(&[0.0; 5], &[0.0; 9]),
            (-120.0, true)
        );
        assert_eq!(
            level_and_silence_parts(&[0.0; 5], &[1e-30]),
            (-120.0, false)
        );
        assert_eq!(level_and_silence_parts(&[], &[]), (-120.0, true));
    }
}
