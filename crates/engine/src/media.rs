//! The media glue: runs every call's [`CallPipeline`] on the transport's media thread.
//!
//! The WebRTC transport calls [`EngineMedia`] (a [`MediaHandler`]) synchronously for every
//! packet; the handler feeds the packet to its call's pipeline and lets the pipeline push
//! frames into the sinks' lock-free rings. Nothing here blocks, locks against slow code or does
//! I/O: the orchestrator talks to the media thread through a bounded command queue that is
//! drained on every callback, and hears back through a bounded event queue whose overflow is
//! counted, never waited on.
//!
//! ```text
//!  orchestrator ──MediaCommand (bounded)──▶ EngineMedia (media thread) ──MediaEvent (bounded)──▶ orchestrator
//!                                             │ per call: CallPipeline
//!                      transport on_rtp ──────┘      └─▶ sink rings ─▶ sink thread (recorder, feed)
//! ```

use mediabot_media::fasthash::{FastMap, fast_map};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Instant, SystemTime};

use mediabot_media::rtp::RtpPacket;
use mediabot_media::transport::{
    CallId, CloseReason, InboundRtp, MediaHandler, PlaybackWriter, SenderReportInfo, SessionId,
    ToneEvent,
};
use mediabot_media::{
    CallConfig, CallLatency, CallPipeline, CallStats, FrameConsumer, MediaIngest, ParticipantTag,
    PayloadType, PipelineEvent, PlayoutQueue, RingGrowth, RtpTimestamp, SeqNo, Ssrc, StreamStats,
    TrackSelect,
};

use crate::playback::{PlaybackError, PlaybackId, PlaybackOutcome, Player, QueuedClip};
use crate::sinks::packet_ring::{PacketConsumer, PacketProducer, packet_ring};

/// Orders from the orchestrator to the media thread.
#[derive(Debug)]
pub enum MediaCommand {
    /// Create the pipeline of a call whose WHIP session may arrive.
    AddCall {
        /// The engine's media key of the call (the WHIP call id).
        call: CallId,
        /// Pipeline settings (boxed: the command queue holds small values).
        config: Box<CallConfig>,
        /// Wall-clock time of the call's media start.
        wall_start: SystemTime,
        /// Receives the call's counters and frame latency histograms.
        reply: tokio::sync::oneshot::Sender<(Arc<CallStats>, Arc<CallLatency>)>,
        /// Echo mode: the call's mix is played back into the call (needs 48 kHz output).
        echo: bool,
    },
    /// Add an `i16` sink to a call (e.g. the recorder, once compliance allows it).
    AddSink {
        /// The call.
        call: CallId,
        /// Which frames.
        select: TrackSelect,
        /// Ring capacity in frames.
        capacity: usize,
        /// Receives the consumer (`None`: no such call, or too many sinks).
        reply: tokio::sync::oneshot::Sender<Option<FrameConsumer<i16>>>,
    },
    /// Add an `i16` sink whose ring follows the call's size (`RingGrowth`): its consumers,
    /// the first one included, go to `growth.on_grow`.
    AddGrowingSink {
        /// The call.
        call: CallId,
        /// Which frames.
        select: TrackSelect,
        /// Frames per stream, the most, and where the consumers go.
        growth: RingGrowth,
        /// `false`: no such call, or too many sinks.
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// Copy the call's received Opus packets into a ring (the Ogg/Opus recorder).
    AddPacketTap {
        /// The call.
        call: CallId,
        /// Ring capacity in bytes.
        bytes: usize,
        /// Receives the consumer (`None`: no such call).
        reply: tokio::sync::oneshot::Sender<Option<PacketConsumer>>,
    },
    /// Tag a source with its roster participant.
    SetParticipant {
        /// The call.
        call: CallId,
        /// The source (SSRC = `mediaStreams[].sourceId`).
        ssrc: Ssrc,
        /// The participant's engine tag.
        participant: Option<ParticipantTag>,
    },
    /// Queue a clip for playback into the call.
    Play {
        /// The call.
        call: CallId,
        /// The clip (boxed: the command queue holds small values).
        clip: Box<QueuedClip>,
        /// Told whether it was queued.
        reply: tokio::sync::oneshot::Sender<Result<(), PlaybackError>>,
    },
    /// Stop the clip playing and drop the queue.
    StopPlayback {
        /// The call.
        call: CallId,
        /// Receives how many clips were stopped (`None`: no such call).
        reply: tokio::sync::oneshot::Sender<Option<usize>>,
    },
    /// Drop the call's pipeline after a final play-out; its sinks see their rings end.
    RemoveCall {
        /// The call.
        call: CallId,
    },
}

/// News from the media thread.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// A WHIP session connected (ICE + DTLS done).
    Connected {
        /// The call.
        call: CallId,
        /// When.
        at: Instant,
    },
    /// A session ended.
    SessionClosed {
        /// The call.
        call: CallId,
        /// Why.
        reason: CloseReason,
    },
    /// First packet of a new source in a call.
    StreamAdded {
        /// The call.
        call: CallId,
        /// The source.
        ssrc: Ssrc,
        /// When.
        at: Instant,
        /// The stream's counters.
        stats: Option<Arc<StreamStats>>,
    },
    /// A source went idle or was removed.
    StreamRemoved {
        /// The call.
        call: CallId,
        /// The source.
        ssrc: Ssrc,
    },
    /// The dominant speaker changed.
    DominantSpeaker {
        /// The call.
        call: CallId,
        /// The speaker (`Ssrc::NONE`: nobody).
        ssrc: Ssrc,
    },
    /// A DTMF tone (RFC 4733).
    Tone(ToneEvent),
    /// The call's send path is ready: playback requests are accepted from now on.
    PlaybackReady {
        /// The call.
        call: CallId,
    },
    /// A clip ended.
    PlaybackFinished {
        /// The call.
        call: CallId,
        /// The clip.
        id: PlaybackId,
        /// How.
        outcome: PlaybackOutcome,
    },
}

/// Counters of the glue itself.
#[derive(Debug, Default)]
pub struct GlueStats {
    /// Packets for calls with no pipeline.
    pub packets_unknown_call: AtomicU64,
    /// Packets the pipeline refused (malformed, too many streams...).
    pub packets_refused: AtomicU64,
    /// Events dropped because the orchestrator's queue was full.
    pub events_dropped: AtomicU64,
    /// Echo frames dropped because the playback ring was full or a clip was playing.
    pub echo_dropped: AtomicU64,
    /// Sequence numbers taken by RFC 4733 tone packets, not counted as lost audio.
    pub tone_seqs_skipped: AtomicU64,
    /// Opus packets not copied to the Ogg recorder because its ring was full.
    pub ogg_packets_dropped: AtomicU64,
}

/// Longest run of sequence numbers after a tone attributed to the tone's packets (a tone of
/// about a second in 20 ms packets plus the repeated end packets).
const MAX_TONE_SEQS: u16 = 64;

/// Keeps an SSRC's audio sequence numbers contiguous across RFC 4733 tone packets.
///
/// Tone packets share the sequence space of the audio stream (RFC 4733 §2.1), but the transport
/// hands them to `on_tone`, not `on_rtp`, and the pipeline's loss accounting only sees audio. So
/// the first audio packet after a tone arrives with a sequence gap that is not loss. The remap
/// subtracts that gap (at most [`MAX_TONE_SEQS`]) from this and every later sequence number;
/// packets reordered from before the tone keep the previous offset. Cost: an audio packet lost
/// right next to a tone is hidden too (it then plays as a DTX gap, not as concealment).
#[derive(Debug, Clone, Copy)]
struct SeqRemap {
    ssrc: u32,
    last_in: Option<u16>,
    offset: u16,
    prev_offset: u16,
    boundary: u16,
    tone_pending: bool,
}

impl SeqRemap {
    fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            last_in: None,
            offset: 0,
            prev_offset: 0,
            boundary: 0,
            tone_pending: false,
        }
    }

    /// The sequence number to give the pipeline, and how many tone seqs were skipped.
    fn map(&mut self, seq: u16) -> (u16, u16) {
        let Some(last) = self.last_in else {
            self.last_in = Some(seq);
            self.tone_pending = false;
            return (seq, 0);
        };
        let d = seq.wrapping_sub(last) as i16;
        if d > 0 {
            let mut skipped = 0;
            if self.tone_pending && d > 1 && d as u16 - 1 <= MAX_TONE_SEQS {
                skipped = d as u16 - 1;
                self.prev_offset = self.offset;
                self.boundary = seq;
                self.offset = self.offset.wrapping_add(skipped);
            }
            self.tone_pending = false;
            self.last_in = Some(seq);
            (seq.wrapping_sub(self.offset), skipped)
        } else if (seq.wrapping_sub(self.boundary) as i16) < 0 {
            (seq.wrapping_sub(self.prev_offset), 0)
        } else {
            (seq.wrapping_sub(self.offset), 0)
        }
    }
}

/// What the engine sends into a call: the transport's writer, echo and the clip queue.
#[derive(Default)]
struct Outbound {
    writer: Option<PlaybackWriter>,
    /// Ring size of `writer`, samples (it is empty when handed over).
    capacity: usize,
    echo: Option<FrameConsumer<i16>>,
    player: Player,
}

/// One call on the media thread.
struct CallMedia {
    /// When the call's pipeline next has work: its last `finish_tick` deadline, brought
    /// forward by arrivals. A tick leaves a call alone until then (or the next sweep).
    wake: Option<Instant>,
    pipeline: CallPipeline,
    out: Outbound,
    remaps: Vec<SeqRemap>,
    max_remaps: usize,
    tap: Option<PacketProducer>,
    /// Output rate of the pipeline, for timeline positions at 48 kHz.
    rate_hz: u32,
}

/// How often a tick finishes every call, due or not ([`EngineMedia::tick`]).
const SWEEP: std::time::Duration = std::time::Duration::from_millis(20);

/// The [`MediaHandler`] the engine gives the transport.
pub struct EngineMedia {
    /// Looked up per packet: a fast hasher (the keys are the engine's own call ids).
    calls: FastMap<CallId, CallMedia>,
    commands: Receiver<MediaCommand>,
    events: SyncSender<MediaEvent>,
    stats: Arc<GlueStats>,
    /// Earliest `CallPipeline::poll` deadline of all calls (for [`MediaHandler::next_wakeup`]).
    next_due: Option<Instant>,
    /// Each tick plays out the due streams of all calls earliest deadline first.
    playout: PlayoutQueue,
    /// The next tick that finishes every call, due or not (idle streams are closed there).
    next_sweep: Instant,
}

impl std::fmt::Debug for EngineMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMedia")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl EngineMedia {
    /// A handler reading `commands` and reporting on `events`.
    pub fn new(
        commands: Receiver<MediaCommand>,
        events: SyncSender<MediaEvent>,
        stats: Arc<GlueStats>,
    ) -> Self {
        Self {
            calls: fast_map(),
            commands,
            events,
            stats,
            next_due: None,
            playout: PlayoutQueue::new(),
            next_sweep: Instant::now(),
        }
    }

    /// Moves queued clips and the echo mix into each call's playback stream.
    fn pump_outbound(&mut self) {
        let Self {
            calls,
            events,
            stats,
            ..
        } = self;
        for (call, c) in calls.iter_mut() {
            let out = &mut c.out;
            let Some(w) = out.writer.as_mut() else {
                continue;
            };
            if out.player.is_active() {
                out.player.pump(w, out.capacity, |id, outcome| {
                    emit(
                        events,
                        stats,
                        MediaEvent::PlaybackFinished {
                            call: call.clone(),
                            id,
                            outcome,
                        },
                    );
                });
            }
            if let Some(ring) = out.echo.as_mut() {
                let playing = out.player.is_active();
                while let Some(frame) = ring.pop() {
                    if playing || w.write(frame.samples()) < frame.len() {
                        stats.echo_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Applies pending commands. Called at the top of every callback.
    fn drain_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.apply(cmd, now);
        }
    }

    fn apply(&mut self, cmd: MediaCommand, now: Instant) {
        match cmd {
            MediaCommand::AddCall {
                call,
                config,
                wall_start,
                reply,
                echo,
            } => {
                let mut p = CallPipeline::new(*config, now, wall_start);
                let _ = reply.send((p.stats(), p.latency()));
                let mut out = Outbound::default();
                if echo && config.output_rate.hz() == 48_000 {
                    // 1 s of mix queued at most; the playback ring paces it out.
                    out.echo = p.add_sink_i16(TrackSelect::Mixed, 50);
                }
                self.calls.insert(
                    call,
                    CallMedia {
                        wake: Some(now),
                        pipeline: p,
                        out,
                        remaps: Vec::new(),
                        max_remaps: config.max_streams.max(1),
                        tap: None,
                        rate_hz: config.output_rate.hz(),
                    },
                );
            }
            MediaCommand::AddSink {
                call,
                select,
                capacity,
                reply,
            } => {
                let capacity = sink_ring_frames(select, capacity);
                let c = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.pipeline.add_sink_i16(select, capacity));
                let _ = reply.send(c);
            }
            MediaCommand::AddGrowingSink {
                call,
                select,
                growth,
                reply,
            } => {
                let added = self
                    .calls
                    .get_mut(&call)
                    .is_some_and(|c| c.pipeline.add_sink_i16_growing(select, growth));
                let _ = reply.send(added);
            }
            MediaCommand::AddPacketTap { call, bytes, reply } => {
                let c = self.calls.get_mut(&call).map(|c| {
                    let (p, cons) = packet_ring(bytes);
                    c.tap = Some(p);
                    cons
                });
                let _ = reply.send(c);
            }
            MediaCommand::SetParticipant {
                call,
                ssrc,
                participant,
            } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.pipeline.set_participant(ssrc, participant);
                }
            }
            MediaCommand::Play { call, clip, reply } => {
                let res = match self.calls.get_mut(&call) {
                    None => Err(PlaybackError::UnknownCall(call.to_string())),
                    Some(c) if c.out.writer.is_none() => {
                        Err(PlaybackError::NoMedia(call.to_string()))
                    }
                    Some(c) => c.out.player.enqueue(*clip).map_err(|(e, _)| e),
                };
                let _ = reply.send(res);
            }
            MediaCommand::StopPlayback { call, reply } => {
                let Self {
                    calls,
                    events,
                    stats,
                    ..
                } = self;
                let n = calls.get_mut(&call).map(|c| {
                    c.out.player.clear(PlaybackOutcome::Stopped, |id, outcome| {
                        emit(
                            events,
                            stats,
                            MediaEvent::PlaybackFinished {
                                call: call.clone(),
                                id,
                                outcome,
                            },
                        );
                    })
                });
                let _ = reply.send(n);
            }
            MediaCommand::RemoveCall { call } => {
                if let Some(mut c) = self.calls.remove(&call) {
                    c.out
                        .player
                        .clear(PlaybackOutcome::CallEnded, |id, outcome| {
                            emit(
                                &self.events,
                                &self.stats,
                                MediaEvent::PlaybackFinished {
                                    call: call.clone(),
                                    id,
                                    outcome,
                                },
                            );
                        });
                    c.pipeline.poll(now);
                    forward_events(&self.events, &self.stats, &call, &mut c.pipeline, now);
                }
            }
        }
    }

    /// Runs the time-driven work of every call (play-out, mixing, playback).
    pub fn tick(&mut self, now: Instant) {
        self.drain_commands(now);
        self.pump_outbound();
        let Self {
            calls,
            events,
            stats,
            next_due,
            playout,
            next_sweep,
            ..
        } = self;
        // Only the calls with work due (a stream's frame, the mix): touching every call on
        // every tick cost ~1 % of a core at 500 streams. Every SWEEP all of them, for the
        // idle-stream timeouts.
        let sweep = now >= *next_sweep;
        if sweep {
            *next_sweep = now + SWEEP;
        }
        *next_due = None;
        let mut due: Vec<(&CallId, &mut CallMedia)> = Vec::new();
        for (k, c) in calls.iter_mut() {
            if sweep || c.wake.is_some_and(|w| w <= now) {
                due.push((k, c));
            } else {
                *next_due = earliest(*next_due, c.wake);
            }
        }
        // All those calls' due streams first, earliest deadline first (not call after call,
        // which made a frame due first wait behind the calls polled before its own).
        playout.play(now, &mut due, |(_, c)| &mut c.pipeline);
        for (k, c) in due {
            c.wake = c.pipeline.finish_tick(now);
            *next_due = earliest(*next_due, c.wake);
            forward_events(events, stats, k, &mut c.pipeline, now);
        }
    }

    fn emit(&self, ev: MediaEvent) {
        emit(&self.events, &self.stats, ev);
    }
}

impl MediaHandler for EngineMedia {
    fn on_session_opened(&mut self, _session: SessionId, _call: &CallId) {
        self.drain_commands(Instant::now());
    }

    fn on_session_connected(&mut self, _session: SessionId, call: &CallId) {
        let now = Instant::now();
        self.drain_commands(now);
        self.emit(MediaEvent::Connected {
            call: call.clone(),
            at: now,
        });
    }

    fn on_rtp(&mut self, packet: &InboundRtp<'_>) {
        let now = packet.received_at;
        self.drain_commands(now);
        let Self {
            calls,
            events,
            stats,
            ..
        } = self;
        let Some(c) = calls.get_mut(packet.call) else {
            stats.packets_unknown_call.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let seq = match c.remaps.iter_mut().find(|r| r.ssrc == packet.ssrc.0) {
            Some(r) => {
                let (seq, skipped) = r.map(packet.sequence);
                if skipped > 0 {
                    stats
                        .tone_seqs_skipped
                        .fetch_add(u64::from(skipped), Ordering::Relaxed);
                }
                seq
            }
            None => {
                if c.remaps.len() < c.max_remaps {
                    let mut r = SeqRemap::new(packet.ssrc.0);
                    r.map(packet.sequence);
                    c.remaps.push(r);
                }
                packet.sequence
            }
        };
        if let Some(tap) = c.tap.as_mut() {
            let pos = c.pipeline.position_at(now).0 * 48_000 / u64::from(c.rate_hz.max(1));
            if !tap.push(
                packet.ssrc.0,
                packet.timestamp,
                packet.sequence,
                pos,
                packet.payload,
            ) {
                stats.ogg_packets_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pkt = RtpPacket {
            marker: packet.marker,
            payload_type: PayloadType(packet.payload_type),
            seq: SeqNo(seq),
            timestamp: RtpTimestamp(packet.timestamp),
            ssrc: Ssrc(packet.ssrc.0),
            payload: packet.payload,
        };
        if c.pipeline.ingest_rtp_packet(now, &pkt).is_err() {
            stats.packets_refused.fetch_add(1, Ordering::Relaxed);
        }
        // Play-out waits for the tick (the server runs it right after the reads when it is
        // due), where every call's streams go earliest deadline first; the packet may only
        // bring its stream's deadline forward.
        let due = c.pipeline.stream_wakeup(pkt.ssrc);
        c.wake = earliest(c.wake, due);
        self.next_due = earliest(self.next_due, due);
        forward_events(events, stats, packet.call, &mut c.pipeline, now);
    }

    fn on_playback_ready(&mut self, _session: SessionId, call: &CallId, writer: PlaybackWriter) {
        self.drain_commands(Instant::now());
        // Bounded by the calls that exist: a writer for an unknown call is dropped.
        if let Some(c) = self.calls.get_mut(call) {
            c.out.capacity = writer.vacant();
            c.out.writer = Some(writer);
            self.emit(MediaEvent::PlaybackReady { call: call.clone() });
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.tick(now);
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        self.next_due
    }

    fn on_tone(&mut self, tone: &ToneEvent) {
        if let Some(c) = self.calls.get_mut(&tone.call)
            && let Some(r) = c.remaps.iter_mut().find(|r| r.ssrc == tone.ssrc.0)
        {
            r.tone_pending = true;
        }
        self.emit(MediaEvent::Tone(tone.clone()));
    }

    fn on_sender_report(&mut self, _session: SessionId, call: &CallId, report: &SenderReportInfo) {
        // Re-serialize as a minimal RTCP SR so the pipeline's one ingest seam sees it.
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        let mut sr = [0u8; 28];
        sr[0] = 0x80;
        sr[1] = 200;
        sr[2..4].copy_from_slice(&6u16.to_be_bytes());
        sr[4..8].copy_from_slice(&report.ssrc.0.to_be_bytes());
        sr[8..16].copy_from_slice(&report.ntp_time.to_be_bytes());
        sr[16..20].copy_from_slice(&report.rtp_time.to_be_bytes());
        sr[20..24].copy_from_slice(&report.packet_count.to_be_bytes());
        let _ = c.pipeline.ingest_rtcp(Instant::now(), &sr);
    }

    fn on_session_closed(&mut self, _session: SessionId, call: &CallId, reason: CloseReason) {
        self.emit(MediaEvent::SessionClosed {
            call: call.clone(),
            reason,
        });
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn emit(events: &SyncSender<MediaEvent>, stats: &GlueStats, ev: MediaEvent) {
    match events.try_send(ev) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn forward_events(
    events: &SyncSender<MediaEvent>,
    stats: &GlueStats,
    call: &CallId,
    p: &mut CallPipeline,
    now: Instant,
) {
    while let Some(e) = p.poll_event() {
        let ev = match e {
            PipelineEvent::StreamAdded(ssrc) => MediaEvent::StreamAdded {
                call: call.clone(),
                ssrc,
                at: now,
                stats: p.stream_stats(ssrc),
            },
            PipelineEvent::StreamRemoved(ssrc) => MediaEvent::StreamRemoved {
                call: call.clone(),
                ssrc,
            },
            PipelineEvent::DominantSpeakerChanged(ssrc) => MediaEvent::DominantSpeaker {
                call: call.clone(),
                ssrc,
            },
            _ => continue,
        };
        emit(events, stats, ev);
    }
}

/// Frames of a sink ring: `recording.ring_frames` for a fixed participants' ring (the
/// recorder's grows per speaker instead, `crate::call::RING_FRAMES_PER_SPEAKER`), and a
/// quarter of it (at least 50, one second) for the mix, which
/// carries one frame per 20 ms whatever the number of speakers. A ring's slots become resident
/// as the ring cycles (about 2 KiB each), so an oversized mix ring is memory spent on nothing:
/// with the defaults and ten speakers the participants' ring holds 1 s and the mix ring 2.5 s.
fn sink_ring_frames(select: TrackSelect, configured: usize) -> usize {
    match select {
        TrackSelect::Mixed => (configured / 4).max(50),
        _ => configured,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::playback::Clip;

    #[test]
    fn playback_needs_a_known_call_with_media() {
        let (_cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(4);
        let (ev_tx, ev_rx) = std::sync::mpsc::sync_channel(4);
        let mut m = EngineMedia::new(cmd_rx, ev_tx, Arc::default());
        let now = Instant::now();
        let call = CallId::new("c1");
        let (reply, _) = tokio::sync::oneshot::channel();
        m.apply(
            MediaCommand::AddCall {
                call: call.clone(),
                config: Box::new(CallConfig::new(mediabot_media::CallTag(1))),
                wall_start: SystemTime::now(),
                reply,
                echo: false,
            },
            now,
        );
        let play = |m: &mut EngineMedia, call: &CallId| {
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            m.apply(
                MediaCommand::Play {
                    call: call.clone(),
                    clip: Box::new(QueuedClip {
                        clip: Clip {
                            id: PlaybackId(1),
                            samples: vec![0; 960].into(),
                        },
                        done: None,
                    }),
                    reply: tx,
                },
                now,
            );
            rx.try_recv().unwrap()
        };
        assert!(matches!(
            play(&mut m, &call),
            Err(PlaybackError::NoMedia(_))
        ));
        assert!(matches!(
            play(&mut m, &CallId::new("other")),
            Err(PlaybackError::UnknownCall(_))
        ));
        let (w, _core) =
            mediabot_media::transport::send::playback(&Default::default(), 111, None, 0, 0)
                .unwrap();
        m.on_playback_ready(SessionId(1), &call, w);
        assert!(matches!(
            ev_rx.try_recv(),
            Ok(MediaEvent::PlaybackReady { .. })
        ));
        assert!(play(&mut m, &call).is_ok());
    }

    #[test]
    fn tone_sequence_numbers_are_not_audio_loss() {
        let mut r = SeqRemap::new(1);
        assert_eq!(r.map(65_534), (65_534, 0));
        assert_eq!(r.map(65_535), (65_535, 0));
        // A real gap with no tone stays a gap (loss).
        assert_eq!(r.map(1), (1, 0));
        // A tone of 4 packets (seq 2..=5), then audio resumes at 6 -> 2.
        r.tone_pending = true;
        assert_eq!(r.map(6), (2, 4));
        assert_eq!(r.map(7), (3, 0));
        // Reordered packet from before the tone keeps the old offset.
        assert_eq!(r.map(0), (0, 0));
        // Too long a run after a tone is loss, not tone.
        r.tone_pending = true;
        assert_eq!(r.map(7 + MAX_TONE_SEQS + 2), (7 + MAX_TONE_SEQS + 2 - 4, 0));
    }
}
