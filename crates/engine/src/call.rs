//! One call's life in the engine: a task fed notifications, media events and operator
//! commands, that keeps the call alive, opens the recording gate, maps sources to people and
//! closes the files when the call ends.
//!
//! ```text
//!   spawn ──▶ media pipeline added, sink thread started (rings not yet attached)
//!     │ notifications ─▶ CallModel (signaling) ─▶ CallEvent
//!     ├─ Established ──▶ compliance? updateRecordingStatus(recording) ── ok ──▶ gate open: rings attached
//!     │                                                              └ fail ─▶ status(failed), hang up
//!     ├─ SourceMapped ─▶ pipeline tags the SSRC; recorder and feed learn the name
//!     ├─ every keepalive period: keepAlive (404 = call gone)
//!     └─ Terminated / hang-up / shutdown ─▶ pipeline removed, final drain, files closed,
//!                                           notRecording reported after the writers closed
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mediabot_media::transport::CallId;
use mediabot_media::{
    CallStats, ParticipantTag, RingGrowth, SampleRate, Ssrc, StreamStats, TrackSelect,
};
use mediabot_signaling::GraphErrorKind;
use mediabot_signaling::models::{
    CallState, Modality, OperationStatus, Participant, RecordingStatus,
    UpdateRecordingStatusRequest,
};
use mediabot_signaling::notifications::Notification;
use mediabot_signaling::state::{CallEvent, CallModel, CallModelConfig, RosterMode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::engine::Shared;
use crate::health::CallSlot;
use crate::media::{MediaCommand, MediaEvent};
use crate::sinks::recorder::{Manifest, ParticipantMeta, Recorder, RecorderConfig};
use crate::sinks::runner::{self, SinkControl, SinkSet};

/// Input of a call task.
#[derive(Debug)]
pub enum CallInput {
    /// A verified notification about this call.
    Notification(Box<Notification>),
    /// News from the media thread.
    Media(MediaEvent),
    /// Leave the call (operator or shutdown).
    HangUp,
}

/// What the operator API and the demo summary show of a call.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallInfo {
    /// Graph call id.
    pub call_id: String,
    /// Media key (the WHIP path segment).
    pub media_key: String,
    /// Last known call state.
    pub state: String,
    /// Participants by id.
    pub participants: Vec<ParticipantView>,
    /// Recording folder, when recording.
    pub recording_dir: Option<String>,
    /// Whether frames reach the recorder (compliance gate).
    pub recording: bool,
    /// Milliseconds from the join/answer request to the first participant frame in a sink.
    pub setup_to_first_audio_ms: Option<u64>,
    /// Final outcome, once ended.
    pub ended: Option<CallOutcome>,
}

/// A participant as the operator sees it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    /// Graph participant id.
    pub id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Audio source id.
    pub source_id: Option<u32>,
    /// Muted.
    pub muted: bool,
    /// In the lobby.
    pub in_lobby: bool,
    /// Left.
    pub left: bool,
}

/// How a call ended.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOutcome {
    /// Why.
    pub reason: String,
    /// The recorder's manifest.
    pub manifest: Option<serde_json::Value>,
    /// Per-stream media counters (by source id).
    pub streams: Vec<StreamSummary>,
    /// Errors closing files.
    pub errors: Vec<String>,
}

/// Media counters of one stream at the end of a call.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSummary {
    /// Source id.
    pub source_id: u32,
    /// Display name, when the roster named it.
    pub display_name: Option<String>,
    /// Packets received.
    pub received: u64,
    /// Packets lost.
    pub lost: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets recovered by FEC.
    pub fec_recovered: u64,
    /// Packets too late.
    pub late: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// Frames dropped at a full ring.
    pub dropped_at_ring: u64,
    /// Frames produced.
    pub frames_out: u64,
    /// Seconds of voiced audio (frames above the VAD threshold are not counted here: this is
    /// audio frames written that were not silence).
    pub speech_seconds: f64,
}

/// Shared view of a running call.
pub type CallInfoHandle = Arc<Mutex<CallInfo>>;

/// Everything a call task starts with.
pub struct CallSetup {
    /// Graph call id.
    pub call_id: String,
    /// Media key.
    pub media_key: CallId,
    /// Whether we answered (true) or joined (false).
    pub incoming: bool,
    /// When the answer/join was sent.
    pub started: Instant,
    /// Roster mode of this call.
    pub roster_mode: RosterMode,
    /// The admission slot, released when the task ends.
    pub slot: CallSlot,
    /// Inputs.
    pub inputs: mpsc::Receiver<CallInput>,
    /// Shared view.
    pub info: CallInfoHandle,
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// Packet ring of the Ogg/Opus recorder: 256 KiB holds about 2.5 s of ten speakers at 32 kbit/s
/// (the sink thread drains it every 10 ms).
const OGG_RING_BYTES: usize = 256 * 1024;

/// Frames the speakers' ring holds per speaker: one second of 20 ms frames. The ring grows to
/// this many times the call's speakers as they arrive (2.5 times at a step), up to
/// `recording.ring_frames`.
pub const RING_FRAMES_PER_SPEAKER: usize = 50;

/// Speakers the first ring is sized for (200 frames): a call of up to four never replaces it.
pub const RING_FIRST_SPEAKERS: usize = 4;

/// Runs a call until it ends. Never panics on bad input; every failure ends in a closed call
/// with its files finalized.
pub async fn run(shared: Arc<Shared>, setup: CallSetup) {
    let CallSetup {
        call_id,
        media_key,
        incoming: _,
        started,
        roster_mode,
        slot,
        mut inputs,
        info,
    } = setup;
    let cfg = &shared.config;
    let rate = pipeline_rate(cfg);
    let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    let wall_start = SystemTime::now();
    let media_start = Instant::now();

    // The media pipeline.
    let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
    let call_cfg = mediabot_media::CallConfig::new(mediabot_media::CallTag(tag))
        .with_rate(rate)
        .with_max_streams(cfg.media.max_streams_per_call)
        // The media thread wakes on this grid: play out one step ahead so the rounding of
        // wake-ups to the grid does not make frames late.
        .with_release_lead(Duration::from_micros(cfg.media.wake_grid_us));
    let _ = shared.media_tx.try_send(MediaCommand::AddCall {
        call: media_key.clone(),
        config: Box::new(call_cfg),
        wall_start,
        reply: stats_tx,
        echo: cfg.calls.echo,
    });
    let handles = tokio::time::timeout(Duration::from_secs(5), stats_rx)
        .await
        .ok()
        .and_then(Result::ok);
    let call_stats: Option<Arc<CallStats>> = handles.as_ref().map(|h| Arc::clone(&h.0));
    let latency = handles.map(|h| h.1);
    if let Some(l) = &latency {
        shared.latency_started(&media_key, Arc::clone(l));
    }

    // Sinks (rings attached when the gate opens).
    let safe_id: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let recorder = if cfg.recording.enabled {
        let dir = cfg.recording.dir.join(&safe_id);
        match Recorder::create(
            RecorderConfig {
                dir: dir.clone(),
                sample_rate: rate.hz(),
                checkpoint_every: Duration::from_secs(1),
                fsync_every: Duration::from_secs(cfg.recording.fsync_interval_secs),
                ogg: cfg.recording.ogg,
                participant_wav: cfg.recording.participant_wav,
            },
            &call_id,
            rfc3339(wall_start),
            cfg.media.max_streams_per_call,
        ) {
            Ok(r) => {
                lock(&info).recording_dir = Some(dir.display().to_string());
                Some(r)
            }
            Err(e) => {
                tracing::error!(call_id, error = %e, dir = %dir.display(), "recorder: cannot create the call folder; not recording");
                shared
                    .metrics
                    .recorder_errors
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    } else {
        None
    };
    let (feed, feed_dir) = shared.feed_for(&call_id).unzip();
    let participant_ring = needs_participant_ring(cfg, feed.is_some());
    let (sink_tx, sink_rx) = std::sync::mpsc::channel();
    let sink_thread = shared.sinks.start(
        &safe_id,
        SinkSet {
            recorder,
            feed: feed.clone(),
            feed_dir: feed_dir.flatten(),
            rate: rate.hz(),
            errors: Arc::clone(&shared.metrics.recorder_errors),
            feed_errors: Arc::clone(&shared.metrics.transcription_write_errors),
            on_first_frame: Some(first_frame_hook(&shared, &info, started)),
        },
        sink_rx,
    );
    let sink_thread = match sink_thread {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(call_id, error = %e, "cannot start the sink thread");
            None
        }
    };

    let mut model = CallModel::new(
        call_id.clone(),
        CallModelConfig {
            roster_mode,
            ..CallModelConfig::default()
        },
    );
    let mut state = CallRun {
        shared: Arc::clone(&shared),
        call_id: call_id.clone(),
        media_key: media_key.clone(),
        info: Arc::clone(&info),
        sink_tx,
        gate_open: false,
        gate_requested: false,
        participant_ring,
        rate,
        media_start,
        names: HashMap::new(),
        tags: HashMap::new(),
        streams: HashMap::new(),
        my_participant: None,
        end_reason: None,
    };
    if !cfg.calls.compliance {
        state.open_gate().await;
    }
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.calls.keepalive(),
        cfg.calls.keepalive(),
    );
    let mut hangup_deadline: Option<tokio::time::Instant> = None;
    loop {
        let deadline = hangup_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            input = inputs.recv() => {
                match input {
                    Some(CallInput::Notification(n)) => {
                        model.handle_notification(&n);
                        while let Some(ev) = model.poll_event() {
                            state.handle_call_event(&model, ev).await;
                        }
                    }
                    Some(CallInput::Media(ev)) => state.handle_media_event(ev),
                    Some(CallInput::HangUp) | None => {
                        if hangup_deadline.is_none() {
                            state.end_reason.get_or_insert_with(|| "hung up by the bot".into());
                            match shared.graph.hang_up(&call_id).await {
                                Ok(()) => {}
                                Err(e) if matches!(e.kind(), GraphErrorKind::NotFound) => break,
                                Err(e) => tracing::warn!(call_id, error = %e, "hang up failed"),
                            }
                            // Wait for Graph's terminated/deleted notification, bounded.
                            hangup_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                        }
                        if inputs.is_closed() && hangup_deadline.is_some() && model.is_terminated() {
                            break;
                        }
                    }
                }
                if model.is_terminated() {
                    break;
                }
            }
            _ = keepalive.tick() => {
                match shared.graph.keep_alive(&call_id).await {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind(), GraphErrorKind::NotFound) => {
                        state.end_reason = Some("keepAlive: call no longer exists (404)".into());
                        break;
                    }
                    Err(e) => tracing::warn!(call_id, error = %e, "keepAlive failed; retrying next period"),
                }
            }
            _ = tokio::time::sleep_until(deadline), if hangup_deadline.is_some() => {
                tracing::warn!(call_id, "no terminated notification after hang-up; closing anyway");
                break;
            }
        }
    }
    state.finish(&model, call_stats, sink_thread).await;
    drop(slot);
}

struct CallRun {
    shared: Arc<Shared>,
    call_id: String,
    media_key: CallId,
    info: CallInfoHandle,
    sink_tx: std::sync::mpsc::Sender<SinkControl>,
    gate_open: bool,
    gate_requested: bool,
    /// Whether the per-speaker PCM ring is attached at all (see [`needs_participant_ring`]).
    participant_ring: bool,
    rate: SampleRate,
    media_start: Instant,
    /// Roster facts by source id.
    names: HashMap<u32, ParticipantMeta>,
    /// Engine tags by participant id.
    tags: HashMap<String, ParticipantTag>,
    streams: HashMap<u32, Arc<StreamStats>>,
    my_participant: Option<String>,
    end_reason: Option<String>,
}

impl CallRun {
    fn timeline_ms(&self) -> u64 {
        self.media_start.elapsed().as_millis() as u64
    }

    async fn handle_call_event(&mut self, model: &CallModel, ev: CallEvent) {
        if self.my_participant.is_none() {
            self.my_participant = model.my_participant_id().map(str::to_string);
        }
        match ev {
            CallEvent::StateChanged { to, .. } => {
                lock(&self.info).state = to.to_string();
                if to == CallState::Established {
                    self.shared
                        .publish(crate::engine::EngineEvent::CallEstablished {
                            call_id: self.call_id.clone(),
                        });
                }
                if to == CallState::Established
                    && self.shared.config.calls.compliance
                    && !self.gate_requested
                {
                    self.gate_requested = true;
                    self.request_recording(model).await;
                }
            }
            CallEvent::ParticipantJoined { participant } => {
                self.update_view(&participant, false);
                if let Some(id) = &participant.id {
                    for ms in participant.media_streams.iter().flatten() {
                        let audio = ms.media_type.as_ref().is_none_or(|m| *m == Modality::Audio);
                        if let (true, Some(src)) = (
                            audio,
                            ms.source_id.as_deref().and_then(|s| s.parse::<u32>().ok()),
                        ) {
                            self.map_source(src, id, &participant);
                        }
                    }
                }
            }
            CallEvent::SourceMapped {
                media_type,
                source_id,
                participant_id,
            } => {
                if media_type == Modality::Audio
                    && let Some(p) = model.participant(&participant_id).cloned()
                {
                    self.map_source(source_id, &participant_id, &p);
                }
            }
            CallEvent::ParticipantLeft { participant_id } => {
                let now = self.timeline_ms();
                for (src, meta) in self.names.iter_mut() {
                    if meta.participant_id.as_deref() == Some(participant_id.as_str()) {
                        meta.left_ms = Some(now);
                        let _ = self.sink_tx.send(SinkControl::Participant {
                            source_id: *src,
                            meta: meta.clone(),
                        });
                    }
                }
                self.with_view(&participant_id, |v| v.left = true);
            }
            CallEvent::ParticipantMuteChanged {
                participant_id,
                muted,
            } => {
                self.with_view(&participant_id, |v| v.muted = muted);
            }
            CallEvent::ParticipantLobbyChanged {
                participant_id,
                in_lobby,
            } => {
                self.with_view(&participant_id, |v| v.in_lobby = in_lobby);
            }
            CallEvent::Terminated { result_info } => {
                let why = result_info
                    .map(|r| {
                        format!(
                            "terminated ({} {} {})",
                            r.code.unwrap_or_default(),
                            r.subcode.unwrap_or_default(),
                            r.message.unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "terminated".into());
                self.end_reason.get_or_insert(why);
            }
            CallEvent::ToneReceived { tone, .. } => {
                tracing::info!(call_id = %self.call_id, ?tone, "tone received (signaling)");
            }
            _ => {}
        }
        let _ = model
            .my_participant_id()
            .map(|p| self.my_participant.get_or_insert_with(|| p.to_string()));
    }

    /// Applies `f` to the operator view of `participant_id`, if it is listed.
    fn with_view(&self, participant_id: &str, f: impl FnOnce(&mut ParticipantView)) {
        if let Some(v) = lock(&self.info)
            .participants
            .iter_mut()
            .find(|p| p.id == participant_id)
        {
            f(v);
        }
    }

    fn update_view(&self, p: &Participant, left: bool) {
        let Some(id) = &p.id else { return };
        let (name, _, _) = identity_of(p);
        let src = p
            .media_streams
            .iter()
            .flatten()
            .filter(|m| m.media_type.as_ref().is_none_or(|t| *t == Modality::Audio))
            .find_map(|m| m.source_id.as_deref().and_then(|s| s.parse().ok()));
        let mut info = lock(&self.info);
        let view = ParticipantView {
            id: id.clone(),
            display_name: name,
            source_id: src,
            muted: p.is_muted.unwrap_or(false),
            in_lobby: p.is_in_lobby.unwrap_or(false),
            left,
        };
        match info.participants.iter_mut().find(|v| v.id == *id) {
            Some(v) => *v = view,
            None => info.participants.push(view),
        }
    }

    fn map_source(&mut self, source_id: u32, participant_id: &str, p: &Participant) {
        // The bot's own stream is not a speaker (Microsoft's SDK leaves the bot's MSI out too).
        if self.my_participant.as_deref() == Some(participant_id) {
            return;
        }
        let next = self.tags.len() as u32 + 1;
        let tag = *self
            .tags
            .entry(participant_id.to_string())
            .or_insert(ParticipantTag(next));
        let (name, identity_id, kind) = identity_of(p);
        let joined = self.timeline_ms();
        let meta = self
            .names
            .entry(source_id)
            .or_insert_with(|| ParticipantMeta {
                joined_ms: Some(joined),
                ..Default::default()
            });
        meta.participant_id = Some(participant_id.to_string());
        meta.display_name = name;
        meta.identity_id = identity_id;
        meta.identity_kind = kind;
        let _ = self.sink_tx.send(SinkControl::Participant {
            source_id,
            meta: meta.clone(),
        });
        let _ = self.shared.media_tx.try_send(MediaCommand::SetParticipant {
            call: self.media_key.clone(),
            ssrc: Ssrc(source_id),
            participant: Some(tag),
        });
        self.update_view(p, false);
    }

    fn handle_media_event(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::StreamAdded {
                ssrc,
                stats: Some(s),
                ..
            } => {
                self.streams.insert(ssrc.0, s);
            }
            MediaEvent::DominantSpeaker { ssrc, .. } => {
                let pos = self.media_start.elapsed().as_secs_f64() * f64::from(self.rate.hz());
                let id = (ssrc != Ssrc::NONE).then_some(ssrc.0);
                let _ = self.sink_tx.send(SinkControl::Dominant(id, pos as u64));
            }
            MediaEvent::Tone(t) => {
                tracing::info!(call_id = %self.call_id, event = t.event, ssrc = t.ssrc.0, "DTMF tone (RFC 4733)");
                self.shared.metrics.tones.fetch_add(1, Ordering::Relaxed);
            }
            MediaEvent::SessionClosed { reason, .. } => {
                tracing::info!(call_id = %self.call_id, ?reason, "media session closed");
            }
            _ => {}
        }
    }

    /// Compliance: report `recording` and open the gate only when Graph accepted it.
    async fn request_recording(&mut self, model: &CallModel) {
        let who = model.my_participant_id().map(str::to_string);
        match self
            .shared
            .graph
            .update_recording_status(
                &self.call_id,
                &UpdateRecordingStatusRequest {
                    status: RecordingStatus::Recording,
                    client_context: Some("mediabot-recording".into()),
                },
            )
            .await
        {
            Ok(op) => {
                let failed = matches!(op.status, Some(OperationStatus::Failed));
                if failed {
                    self.recording_failed("updateRecordingStatus(recording) failed")
                        .await;
                } else {
                    tracing::info!(call_id = %self.call_id, participant = ?who, "recording status accepted: gate open");
                    self.open_gate().await;
                }
            }
            Err(e) => {
                self.recording_failed(&format!("updateRecordingStatus(recording): {e}"))
                    .await;
            }
        }
    }

    async fn recording_failed(&mut self, why: &str) {
        tracing::error!(call_id = %self.call_id, why, "compliance: cannot record; reporting failed and leaving");
        self.shared
            .metrics
            .recorder_errors
            .fetch_add(1, Ordering::Relaxed);
        let _ = self
            .shared
            .graph
            .update_recording_status(
                &self.call_id,
                &UpdateRecordingStatusRequest {
                    status: RecordingStatus::Failed,
                    client_context: None,
                },
            )
            .await;
        self.end_reason = Some(format!("compliance: {why}"));
        let _ = self.shared.graph.hang_up(&self.call_id).await;
    }

    /// Sends the media thread a command made around a reply channel and waits (up to 5 s) for
    /// the reply; `None` when the command queue is full or no reply came.
    async fn ask_media<T>(
        &self,
        command: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> MediaCommand,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.shared.media_tx.try_send(command(tx)).is_err() {
            tracing::error!(call_id = %self.call_id, "media command queue full");
            return None;
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }

    /// Asks the media thread for a ring ([`CallRun::ask_media`]) and hands its consumer to the
    /// call's sink task as `control`; logs `missing` when no ring came.
    async fn attach_ring<T>(
        &self,
        missing: &str,
        command: impl FnOnce(tokio::sync::oneshot::Sender<Option<T>>) -> MediaCommand,
        control: impl FnOnce(T) -> SinkControl,
    ) {
        match self.ask_media(command).await.flatten() {
            Some(consumer) => {
                let _ = self.sink_tx.send(control(consumer));
            }
            None => tracing::error!(call_id = %self.call_id, "{missing}"),
        }
    }

    async fn open_gate(&mut self) {
        if self.gate_open {
            return;
        }
        let rec = &self.shared.config.recording;
        let (capacity, recording, ogg) = (rec.ring_frames.max(8), rec.enabled, rec.ogg);
        // Without a reader of decoded per-speaker audio the media thread skips those pushes.
        if self.participant_ring {
            // The speakers' ring: RING_FRAMES_PER_SPEAKER per speaker (at least for
            // RING_FIRST_SPEAKERS), grown by the media thread as speakers arrive (up to
            // `ring_frames`); every ring goes straight from there to the sink task, in order.
            let sink_tx = self.sink_tx.clone();
            let growth = RingGrowth {
                per_stream: RING_FRAMES_PER_SPEAKER.min(capacity),
                min: RING_FRAMES_PER_SPEAKER * RING_FIRST_SPEAKERS,
                max: capacity,
                on_grow: Box::new(move |consumer| {
                    let _ = sink_tx.send(SinkControl::AddRing(consumer));
                }),
            };
            let call = self.media_key.clone();
            let added = self
                .ask_media(|reply| MediaCommand::AddGrowingSink {
                    call,
                    select: TrackSelect::AllParticipants,
                    growth,
                    reply,
                })
                .await;
            if added != Some(true) {
                tracing::error!(call_id = %self.call_id, "speakers' sink not attached (no pipeline or too many sinks)");
            }
        }
        if recording {
            let call = self.media_key.clone();
            self.attach_ring(
                "mix sink not attached (no pipeline or too many sinks)",
                |reply| MediaCommand::AddSink {
                    call,
                    select: TrackSelect::Mixed,
                    capacity,
                    reply,
                },
                SinkControl::AddRing,
            )
            .await;
        }
        if recording && ogg {
            let call = self.media_key.clone();
            self.attach_ring(
                "Ogg/Opus packet ring not attached",
                |reply| MediaCommand::AddPacketTap {
                    call,
                    bytes: OGG_RING_BYTES,
                    reply,
                },
                SinkControl::AddPacketRing,
            )
            .await;
        }
        self.gate_open = true;
        lock(&self.info).recording = true;
    }

    async fn finish(
        mut self,
        model: &CallModel,
        call_stats: Option<Arc<CallStats>>,
        sink_thread: Option<runner::SinkJoin>,
    ) {
        let reason = self.end_reason.take().unwrap_or_else(|| "ended".into());
        tracing::info!(call_id = %self.call_id, reason, "call ending: closing media and files");
        let _ = self.shared.media_tx.try_send(MediaCommand::RemoveCall {
            call: self.media_key.clone(),
        });
        self.shared.whip.end_call(&self.media_key).await;
        // Give the media thread a moment to flush the last frames into the rings.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let streams: Vec<StreamSummary> = {
            let mut v: Vec<StreamSummary> = self
                .streams
                .iter()
                .map(|(src, s)| {
                    let s = s.snapshot();
                    StreamSummary {
                        source_id: *src,
                        display_name: self.names.get(src).and_then(|m| m.display_name.clone()),
                        received: s.received,
                        lost: s.lost,
                        concealed: s.concealed,
                        fec_recovered: s.fec_recovered,
                        late: s.late,
                        duplicate: s.duplicate,
                        dropped_at_ring: s.dropped_at_ring,
                        frames_out: s.frames_out,
                        speech_seconds: 0.0,
                    }
                })
                .collect();
            v.sort_by_key(|s| s.source_id);
            v
        };
        let media_stats = serde_json::json!({
            "call": call_stats.map(|c| {
                let c = c.snapshot();
                serde_json::json!({"malformed": c.malformed, "streamsRefused": c.streams_refused, "streamsCreated": c.streams_created, "mixedFrames": c.mixed_frames, "lateForMix": c.late_for_mix, "mixedDroppedAtRing": c.mixed_dropped_at_ring, "ringsGrown": c.rings_grown})
            }),
            "streams": streams,
        });
        let _ = self.sink_tx.send(SinkControl::Stop(media_stats));
        let outcome = match sink_thread {
            Some(t) => tokio::task::spawn_blocking(move || t.join())
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
            None => runner::SinkOutcome::default(),
        };
        // Compliance: the writers are closed; now, and only now, say so.
        if self.shared.config.calls.compliance && self.gate_open && !model.is_terminated() {
            let _ = self
                .shared
                .graph
                .update_recording_status(
                    &self.call_id,
                    &UpdateRecordingStatusRequest {
                        status: RecordingStatus::NotRecording,
                        client_context: None,
                    },
                )
                .await;
        }
        let mut streams = streams;
        if let Some(m) = &outcome.manifest {
            for s in &mut streams {
                if let Some(t) = m.tracks.iter().find(|t| t.source_id == Some(s.source_id)) {
                    s.speech_seconds = t.audio_samples as f64 / f64::from(self.rate.hz());
                }
            }
        }
        let manifest = outcome.manifest.as_ref().map(manifest_json);
        self.shared
            .metrics
            .calls_ended
            .fetch_add(1, Ordering::Relaxed);
        self.shared.latency_ended(&self.media_key);
        let mut info = lock(&self.info);
        info.state = "terminated".into();
        info.ended = Some(CallOutcome {
            reason,
            manifest,
            streams,
            errors: outcome.errors,
        });
        self.shared
            .call_finished(&self.call_id, &self.media_key, info.clone());
    }
}

/// The rate a call's pipeline decodes and mixes at: 48 kHz only when something consumes 48 kHz
/// PCM (per-speaker WAV recording, or echo, which plays the mix back at 48 kHz); otherwise
/// 16 kHz, the transcription feed's rate, which decodes Opus straight at 16 kHz and spares the
/// feed's decimation. Recording with `participant_wav = false` (Ogg/Opus passthrough) thus
/// decodes at 16 kHz and writes a 16 kHz `mixed.wav`.
pub fn pipeline_rate(cfg: &Config) -> SampleRate {
    if cfg.recording.writes_participant_pcm() || cfg.calls.echo {
        SampleRate::HZ_48000
    } else {
        SampleRate::HZ_16000
    }
}

/// Whether a call's per-speaker PCM ring ([`TrackSelect::AllParticipants`]) is attached: only
/// when a consumer reads it (per-speaker WAV recording or a transcription feed). Without it the
/// sink thread still drains the mix and the Ogg packet ring.
pub fn needs_participant_ring(cfg: &Config, has_feed: bool) -> bool {
    cfg.recording.writes_participant_pcm() || has_feed
}

/// `mediabot_call_setup_seconds` and `setupToFirstAudioMs`: from the join/answer request to the
/// first participant frame taken from a sink ring (recorder or transcription feed) by the call's
/// sink thread; a call with no per-speaker ring (Ogg-only recording, no feed) counts its first
/// audible mixed frame instead, which comes a mixing window later. It spans Graph, the far side's
/// WHIP connect, ICE/DTLS, the first packets, the jitter buffer and, in compliance mode,
/// `updateRecordingStatus`. Calls with no sink (echo or playback only) are not measured.
fn first_frame_hook(
    shared: &Arc<Shared>,
    info: &CallInfoHandle,
    started: Instant,
) -> Box<dyn FnOnce(Instant) + Send> {
    let (shared, info) = (Arc::clone(shared), Arc::clone(info));
    Box::new(move |at| {
        let d = at.saturating_duration_since(started);
        lock(&info).setup_to_first_audio_ms = Some(d.as_millis() as u64);
        shared.metrics.setup_latency.observe(d);
    })
}

fn manifest_json(m: &Manifest) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or(serde_json::Value::Null)
}

/// Display name, identity id and identity kind of a participant.
pub fn identity_of(p: &Participant) -> (Option<String>, Option<String>, Option<String>) {
    let Some(ids) = p.info.as_ref().and_then(|i| i.identity.as_ref()) else {
        return (None, None, None);
    };
    for (kind, id) in [
        ("user", &ids.user),
        ("guest", &ids.guest),
        ("application", &ids.application),
        ("applicationInstance", &ids.application_instance),
        ("phone", &ids.phone),
        ("acsUser", &ids.azure_communication_services_user),
    ] {
        if let Some(i) = id {
            return (i.display_name.clone(), i.id.clone(), Some(kind.to_string()));
        }
    }
    (None, None, None)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// RFC 3339 (UTC, seconds) of a system time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_runs_at_48k_only_for_48k_consumers() {
        let mut c = Config::default();
        assert!(c.recording.enabled && c.recording.participant_wav);
        assert_eq!(pipeline_rate(&c), SampleRate::HZ_48000, "per-speaker WAV");
        assert!(needs_participant_ring(&c, false));
        c.recording.participant_wav = false;
        c.recording.ogg = true;
        assert_eq!(pipeline_rate(&c), SampleRate::HZ_16000, "Ogg passthrough");
        assert!(!needs_participant_ring(&c, false), "nobody reads it");
        assert!(needs_participant_ring(&c, true), "the feed reads it");
        c.calls.echo = true;
        assert_eq!(pipeline_rate(&c), SampleRate::HZ_48000, "echo plays 48 kHz");
        c.calls.echo = false;
        c.recording.enabled = false;
        c.recording.participant_wav = true;
        assert_eq!(pipeline_rate(&c), SampleRate::HZ_16000, "feed only");
        assert!(!needs_participant_ring(&c, false));
        c.calls.echo = true;
        assert_eq!(
            pipeline_rate(&c),
            SampleRate::HZ_48000,
            "echo without recording"
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600 + 3661);
        assert_eq!(rfc3339(t), "2026-11-22T01:01:01Z");
    }
}
