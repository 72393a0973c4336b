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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Instant, SystemTime};

use mediabot_media::transport::{
    CallId, CloseReason, InboundRtp, MediaHandler, PlaybackWriter, SenderReportInfo, SessionId,
    ToneEvent,
};
use mediabot_media::{
    CallConfig, CallPipeline, CallStats, FrameConsumer, MediaIngest, ParticipantTag, PipelineEvent,
    Ssrc, StreamStats, TrackSelect,
};

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
        /// Receives the call's counters.
        reply: tokio::sync::oneshot::Sender<Arc<CallStats>>,
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
    /// Tag a source with its roster participant.
    SetParticipant {
        /// The call.
        call: CallId,
        /// The source (SSRC = `mediaStreams[].sourceId`).
        ssrc: Ssrc,
        /// The participant's engine tag.
        participant: Option<ParticipantTag>,
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
}

/// An echo-mode call's loop: its mix, and the playback stream it goes to.
struct Echo {
    ring: FrameConsumer<i16>,
    writer: Option<PlaybackWriter>,
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
    /// Echo frames dropped because the playback ring was full.
    pub echo_dropped: AtomicU64,
}

/// The [`MediaHandler`] the engine gives the transport.
pub struct EngineMedia {
    calls: HashMap<CallId, CallPipeline>,
    /// Echo-mode calls: their mix ring and playback writer.
    echo: HashMap<CallId, Echo>,
    /// Playback writers of calls not (yet) in echo mode.
    pending_writers: HashMap<CallId, PlaybackWriter>,
    commands: Receiver<MediaCommand>,
    events: SyncSender<MediaEvent>,
    stats: Arc<GlueStats>,
    scratch: Vec<u8>,
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
            calls: HashMap::new(),
            commands,
            events,
            stats,
            scratch: Vec::with_capacity(1500),
            echo: HashMap::new(),
            pending_writers: HashMap::new(),
        }
    }

    /// Echo mode: moves the mix queued since the last call into the call's playback stream.
    fn pump_echo(&mut self) {
        for (call, e) in self.echo.iter_mut() {
            if e.writer.is_none() {
                e.writer = self.pending_writers.remove(call);
            }
            while let Some(frame) = e.ring.pop() {
                if let Some(w) = e.writer.as_mut()
                    && w.write(frame.samples()) < frame.len()
                {
                    self.stats.echo_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Applies pending commands. Called at the top of every callback.
    fn drain_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                MediaCommand::AddCall {
                    call,
                    config,
                    wall_start,
                    reply,
                    echo,
                } => {
                    let mut p = CallPipeline::new(*config, now, wall_start);
                    let _ = reply.send(p.stats());
                    if echo && config.output_rate.hz() == 48_000 {
                        // 1 s of mix queued at most; the playback ring paces it out.
                        if let Some(ring) = p.add_sink_i16(TrackSelect::Mixed, 50) {
                            self.echo.insert(call.clone(), Echo { ring, writer: None });
                        }
                    }
                    self.calls.insert(call, p);
                }
                MediaCommand::AddSink {
                    call,
                    select,
                    capacity,
                    reply,
                } => {
                    let c = self
                        .calls
                        .get_mut(&call)
                        .and_then(|p| p.add_sink_i16(select, capacity));
                    let _ = reply.send(c);
                }
                MediaCommand::SetParticipant {
                    call,
                    ssrc,
                    participant,
                } => {
                    if let Some(p) = self.calls.get_mut(&call) {
                        p.set_participant(ssrc, participant);
                    }
                }
                MediaCommand::RemoveCall { call } => {
                    self.echo.remove(&call);
                    self.pending_writers.remove(&call);
                    if let Some(mut p) = self.calls.remove(&call) {
                        p.poll(now);
                        forward_events(&self.events, &self.stats, &call, &mut p, now);
                    }
                }
            }
        }
    }

    /// Runs the time-driven work of every call (play-out, mixing).
    pub fn tick(&mut self, now: Instant) {
        self.drain_commands(now);
        self.pump_echo();
        let Self {
            calls,
            events,
            stats,
            ..
        } = self;
        for (k, p) in calls.iter_mut() {
            p.poll(now);
            forward_events(events, stats, k, p, now);
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
            scratch,
            ..
        } = self;
        let Some(p) = calls.get_mut(packet.call) else {
            stats.packets_unknown_call.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // The transport hands over parsed fields; the pipeline's ingest seam takes RTP bytes
        // (the form every adapter has). Rebuild a minimal header in a reused buffer.
        scratch.clear();
        scratch.push(0x80);
        scratch.push((u8::from(packet.marker) << 7) | (packet.payload_type & 0x7f));
        scratch.extend_from_slice(&packet.sequence.to_be_bytes());
        scratch.extend_from_slice(&packet.timestamp.to_be_bytes());
        scratch.extend_from_slice(&packet.ssrc.0.to_be_bytes());
        scratch.extend_from_slice(packet.payload);
        if p.ingest_rtp(now, scratch).is_err() {
            stats.packets_refused.fetch_add(1, Ordering::Relaxed);
        }
        p.poll(now);
        forward_events(events, stats, packet.call, p, now);
    }

    fn on_playback_ready(&mut self, _session: SessionId, call: &CallId, writer: PlaybackWriter) {
        self.drain_commands(Instant::now());
        // Bounded by the calls that exist: a writer for an unknown call is dropped.
        if self.calls.contains_key(call) {
            self.pending_writers.insert(call.clone(), writer);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.tick(now);
    }

    fn on_tone(&mut self, tone: &ToneEvent) {
        self.emit(MediaEvent::Tone(tone.clone()));
    }

    fn on_sender_report(&mut self, _session: SessionId, call: &CallId, report: &SenderReportInfo) {
        // Re-serialize as a minimal RTCP SR so the pipeline's one ingest seam sees it.
        let Some(p) = self.calls.get_mut(call) else {
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
        let _ = p.ingest_rtcp(Instant::now(), &sr);
    }

    fn on_session_closed(&mut self, _session: SessionId, call: &CallId, reason: CloseReason) {
        self.emit(MediaEvent::SessionClosed {
            call: call.clone(),
            reason,
        });
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
