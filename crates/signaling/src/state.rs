//! Sans-IO per-call model: feed it notifications and operation responses, drain typed events.
//!
//! ```text
//!   incoming ──answer──▶ establishing ──▶ [ringing] ──▶ established ◀──▶ hold
//!      │                      │                            │  ▲   transferring,
//!      │ reject/redirect      │                            │  └── transferAccepted,
//!      ▼                      ▼                            ▼      redirecting
//!   terminated ◀──────── terminating ◀─────────────────────┘
//! ```
//!
//! Graph may deliver notifications twice, late, or out of order (establishing after
//! established). The model therefore:
//! - ranks states (`incoming` < `establishing` < `ringing` < in-call family < `terminating`
//!   < `terminated`) and never moves to a lower rank; `terminated` is final;
//! - orders updates of the same rank by the resource version (`@odata.etag` `W/"N"`), and
//!   roster entries by `rosterSequenceNumber` (or their etag), ignoring anything not newer;
//! - treats participant ids as never reused: a participant that left is tombstoned, so a
//!   late update cannot bring it back;
//! - emits an event only when the model actually changes, so duplicates emit nothing;
//! - resolves a pending operation once, whether its result comes in the action's response
//!   (`completed`/`failed`) or in the later `deleted` notification on `.../operations/{id}`.
//!
//! Updates of the in-call family that carry no version are applied in arrival order (Graph
//! gives nothing better to order them by).

pub use crate::models::CallState;

use crate::models::{
    Call, ChangeType, CommsOperation, MediaState, Modality, OperationStatus, OperationType,
    Participant, RecordingStatus, ResultInfo, Tone,
};
use crate::notifications::{Notification, Resource};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How roster notifications are sent (the call's `isDeltaRosterEnabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RosterMode {
    /// Each roster notification lists only changed participants; `deleted` removes.
    #[default]
    Delta,
    /// Each roster notification is the whole roster; absence means the participant left.
    Full,
}

/// Limits of the model (all state is bounded). Set `roster_mode` to match the call's
/// `isDeltaRosterEnabled`: Graph's default (false) sends whole rosters, i.e. [`RosterMode::Full`].
#[derive(Debug, Clone)]
pub struct CallModelConfig {
    /// Roster notification mode.
    pub roster_mode: RosterMode,
    /// Resolved operation ids remembered (to drop duplicate completions).
    pub max_resolved_operations: usize,
    /// Pending operations tracked.
    pub max_pending_operations: usize,
    /// Tone sequence ids remembered (to drop duplicate tones).
    pub max_tones: usize,
    /// Departed participant ids remembered (to drop late updates).
    pub max_tombstones: usize,
    /// Participants tracked.
    pub max_participants: usize,
    /// Events queued but not yet polled; beyond this the oldest are dropped and counted.
    pub max_queued_events: usize,
}

impl Default for CallModelConfig {
    fn default() -> Self {
        Self {
            roster_mode: RosterMode::Delta,
            max_resolved_operations: 1024,
            max_pending_operations: 1024,
            max_tones: 1024,
            max_tombstones: 8192,
            max_participants: 4096,
            max_queued_events: 65_536,
        }
    }
}

/// What happened in the call, in the order the model saw it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallEvent {
    /// The call state moved forward.
    StateChanged {
        /// Previous state (`None` at first sight).
        from: Option<CallState>,
        /// New state.
        to: CallState,
    },
    /// A participant appeared in the roster.
    ParticipantJoined {
        /// The roster entry.
        participant: Box<Participant>,
    },
    /// A participant left (or was removed).
    ParticipantLeft {
        /// Its id.
        participant_id: String,
    },
    /// A participant's mute flag changed.
    ParticipantMuteChanged {
        /// Its id.
        participant_id: String,
        /// Muted now.
        muted: bool,
    },
    /// A participant entered or left the lobby.
    ParticipantLobbyChanged {
        /// Its id.
        participant_id: String,
        /// In the lobby now.
        in_lobby: bool,
    },
    /// A media source id now belongs to a participant (SSRC → speaker).
    SourceMapped {
        /// Media type of the stream.
        media_type: Modality,
        /// Source id (= SSRC).
        source_id: u32,
        /// Owner.
        participant_id: String,
    },
    /// A media source id no longer belongs to the participant.
    SourceUnmapped {
        /// Media type of the stream.
        media_type: Modality,
        /// Source id.
        source_id: u32,
        /// Former owner.
        participant_id: String,
    },
    /// An operation finished successfully.
    OperationCompleted {
        /// Operation id.
        operation_id: String,
        /// Its subtype.
        operation_type: OperationType,
        /// The client context sent with the action.
        client_context: Option<String>,
        /// Result.
        result_info: Option<ResultInfo>,
    },
    /// An operation failed.
    OperationFailed {
        /// Operation id.
        operation_id: String,
        /// Its subtype.
        operation_type: OperationType,
        /// The client context sent with the action.
        client_context: Option<String>,
        /// Result (code, subcode, message).
        result_info: Option<ResultInfo>,
    },
    /// A DTMF tone arrived (after `subscribeToTone`).
    ToneReceived {
        /// The tone.
        tone: Tone,
        /// Its sequence id.
        sequence_id: Option<i64>,
    },
    /// A participant's recording status changed.
    RecordingStatusChanged {
        /// Participant id.
        participant_id: String,
        /// New status.
        status: RecordingStatus,
    },
    /// The call's audio media state changed.
    MediaStateChanged {
        /// Audio state.
        audio: MediaState,
    },
    /// The call ended; nothing more will happen.
    Terminated {
        /// Why, when Graph said.
        result_info: Option<ResultInfo>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    participant: Participant,
    version: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingOp {
    operation_type: OperationType,
    client_context: Option<String>,
}

/// A comparable summary of the model (tests and diagnostics).
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    /// Call state.
    pub state: Option<CallState>,
    /// Terminated.
    pub terminated: bool,
    /// Roster by id.
    pub participants: BTreeMap<String, Participant>,
    /// (media type, source id) → participant id.
    pub sources: BTreeMap<(String, u32), String>,
    /// Pending operation ids.
    pub pending_operations: BTreeSet<String>,
    /// Resolved operation ids and whether they succeeded.
    pub resolved_operations: BTreeMap<String, bool>,
    /// Tone sequence ids seen.
    pub tones: BTreeSet<i64>,
    /// Audio media state.
    pub audio: Option<MediaState>,
}

/// The per-call model.
#[derive(Debug, Clone)]
pub struct CallModel {
    call_id: String,
    config: CallModelConfig,
    state: Option<CallState>,
    state_version: Option<i64>,
    result_info: Option<ResultInfo>,
    my_participant_id: Option<String>,
    audio: Option<MediaState>,
    audio_version: Option<i64>,
    participants: BTreeMap<String, Entry>,
    tombstones: BTreeSet<String>,
    tombstone_order: VecDeque<String>,
    roster_version: Option<i64>,
    sources: BTreeMap<(String, u32), String>,
    pending: BTreeMap<String, PendingOp>,
    resolved: BTreeMap<String, bool>,
    resolved_order: VecDeque<String>,
    tones: BTreeSet<i64>,
    events: VecDeque<CallEvent>,
    ignored: u64,
    dropped_events: u64,
}

/// Reads `W/"5445"` (or `"5445"`, or a number) as a version.
fn etag_version(extra: &crate::models::Extra) -> Option<i64> {
    match extra.get("@odata.etag")? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim_start_matches("W/").trim_matches('"').parse().ok(),
        _ => None,
    }
}

fn newer(new: Option<i64>, old: Option<i64>) -> bool {
    match (new, old) {
        (Some(n), Some(o)) => n > o,
        _ => true,
    }
}

impl CallModel {
    /// A model for `call_id`.
    pub fn new(call_id: impl Into<String>, config: CallModelConfig) -> Self {
        Self {
            call_id: call_id.into(),
            config,
            state: None,
            state_version: None,
            result_info: None,
            my_participant_id: None,
            audio: None,
            audio_version: None,
            participants: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            tombstone_order: VecDeque::new(),
            roster_version: None,
            sources: BTreeMap::new(),
            pending: BTreeMap::new(),
            resolved: BTreeMap::new(),
            resolved_order: VecDeque::new(),
            tones: BTreeSet::new(),
            events: VecDeque::new(),
            ignored: 0,
            dropped_events: 0,
        }
    }

    /// The call id.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Current call state.
    pub fn state(&self) -> Option<&CallState> {
        self.state.as_ref()
    }

    /// True once the call terminated.
    pub fn is_terminated(&self) -> bool {
        self.state.as_ref().is_some_and(CallState::is_terminal)
    }

    /// Why the call ended (or the last result Graph reported).
    pub fn result_info(&self) -> Option<&ResultInfo> {
        self.result_info.as_ref()
    }

    /// The bot's own participant id, once known.
    pub fn my_participant_id(&self) -> Option<&str> {
        self.my_participant_id.as_deref()
    }

    /// The roster.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values().map(|e| &e.participant)
    }

    /// A roster entry by id.
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.get(id).map(|e| &e.participant)
    }

    /// Who owns `source_id` for `media_type` (lobby participants own nothing).
    pub fn participant_for_source(
        &self,
        media_type: &Modality,
        source_id: u32,
    ) -> Option<&Participant> {
        let id = self
            .sources
            .get(&(media_type.as_str().to_owned(), source_id))?;
        self.participant(id)
    }

    /// Notifications or updates dropped as stale, duplicate, foreign or malformed.
    pub fn ignored_count(&self) -> u64 {
        self.ignored
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Events dropped because nobody polled them (see `max_queued_events`).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn trim_events(&mut self) {
        while self.events.len() > self.config.max_queued_events {
            self.events.pop_front();
            self.dropped_events += 1;
        }
    }

    /// A comparable summary.
    pub fn snapshot(&self) -> CallSnapshot {
        CallSnapshot {
            state: self.state.clone(),
            terminated: self.is_terminated(),
            participants: self
                .participants
                .iter()
                .map(|(k, e)| (k.clone(), e.participant.clone()))
                .collect(),
            sources: self.sources.clone(),
            pending_operations: self.pending.keys().cloned().collect(),
            resolved_operations: self.resolved.clone(),
            tones: self.tones.clone(),
            audio: self.audio.clone(),
        }
    }

    /// Applies one notification. Notifications for other calls are ignored (returns false).
    pub fn handle_notification(&mut self, n: &Notification) -> bool {
        if n.call_id() != Some(self.call_id.as_str()) {
            self.ignored += 1;
            return false;
        }
        match &n.resource {
            Resource::Call(call) => self.handle_call(call, &n.change_type),
            Resource::Participants(list) => self.handle_roster(list, &n.change_type),
            Resource::Operation(op) => {
                let mut op = (**op).clone();
                if op.id.is_none() {
                    op.id = n.resource_url.rsplit('/').next().map(str::to_owned);
                }
                let finished = n.change_type == ChangeType::Deleted;
                self.handle_operation(&op, finished);
            }
            Resource::ContentSharingSessions(_) | Resource::Unknown(_) => {}
        }
        self.trim_events();
        true
    }

    /// Applies a call resource (from a notification, the create-call response, or a GET).
    pub fn handle_call(&mut self, call: &Call, change: &ChangeType) {
        if let Some(p) = &call.my_participant_id {
            self.my_participant_id = Some(p.clone());
        }
        if let Some(tone) = &call.tone_info {
            self.handle_tone(tone.tone.clone(), tone.sequence_id);
        }
        let version = etag_version(&call.extra);
        if let Some(audio) = call.media_state.as_ref().and_then(|m| m.audio.clone())
            && newer(version, self.audio_version)
        {
            self.audio_version = self.audio_version.max(version).or(version);
            if self.audio.as_ref() != Some(&audio) {
                self.audio = Some(audio.clone());
                self.events
                    .push_back(CallEvent::MediaStateChanged { audio });
            }
        }
        if call.result_info.is_some() {
            self.result_info = call.result_info.clone();
        }
        let target = if *change == ChangeType::Deleted {
            Some(CallState::Terminated)
        } else {
            call.state.clone()
        };
        if let Some(to) = target {
            self.move_to(to, version);
        }
    }

    fn move_to(&mut self, to: CallState, version: Option<i64>) {
        if self.is_terminated() || self.state.as_ref() == Some(&to) {
            if self.state.as_ref() == Some(&to) {
                self.state_version = self.state_version.max(version);
            }
            return;
        }
        let (Some(new_rank), current) = (to.rank(), self.state.as_ref()) else {
            self.ignored += 1; // unknown state values never move the model
            return;
        };
        if let Some(cur_rank) = current.and_then(CallState::rank)
            && (new_rank < cur_rank
                || (new_rank == cur_rank && !newer(version, self.state_version)))
        {
            self.ignored += 1;
            return;
        }
        let from = self.state.replace(to.clone());
        self.state_version = self.state_version.max(version).or(version);
        self.events.push_back(CallEvent::StateChanged {
            from,
            to: to.clone(),
        });
        if to.is_terminal() {
            self.events.push_back(CallEvent::Terminated {
                result_info: self.result_info.clone(),
            });
        }
    }

    fn handle_tone(&mut self, tone: Option<Tone>, sequence_id: Option<i64>) {
        let Some(tone) = tone else { return };
        if let Some(seq) = sequence_id {
            if !self.tones.insert(seq) {
                return; // duplicate
            }
            while self.tones.len() > self.config.max_tones {
                self.tones.pop_first();
            }
        }
        self.events
            .push_back(CallEvent::ToneReceived { tone, sequence_id });
    }

    fn handle_roster(&mut self, list: &[Participant], change: &ChangeType) {
        if *change == ChangeType::Deleted {
            for p in list {
                if let Some(id) = &p.id {
                    self.remove_participant(id);
                }
            }
            return;
        }
        if self.config.roster_mode == RosterMode::Full {
            let snapshot_version = list
                .iter()
                .filter_map(|p| p.roster_sequence_number.or_else(|| etag_version(&p.extra)))
                .max();
            if !newer(snapshot_version, self.roster_version) {
                self.ignored += 1;
                return;
            }
            self.roster_version = self
                .roster_version
                .max(snapshot_version)
                .or(snapshot_version);
            let present: BTreeSet<&str> = list.iter().filter_map(|p| p.id.as_deref()).collect();
            let gone: Vec<String> = self
                .participants
                .keys()
                .filter(|k| !present.contains(k.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.remove_participant(&id);
            }
        }
        for p in list {
            self.upsert_participant(p);
        }
    }

    fn upsert_participant(&mut self, p: &Participant) {
        let Some(id) = p.id.clone() else {
            self.ignored += 1;
            return;
        };
        if self.tombstones.contains(&id) {
            self.ignored += 1;
            return;
        }
        if p.removed_state.is_some() {
            self.remove_participant(&id);
            return;
        }
        let version = p.roster_sequence_number.or_else(|| etag_version(&p.extra));
        // Duplicates (Graph redelivers, full rosters repeat everyone) are checked before
        // anything is cloned: they are the common case and must stay cheap.
        match self.participants.get(&id) {
            Some(old) if !newer(version, old.version) || old.participant == *p => {
                self.ignored += 1;
                return;
            }
            None if self.participants.len() >= self.config.max_participants => {
                self.ignored += 1;
                return;
            }
            _ => {}
        }
        let old = self.participants.insert(
            id.clone(),
            Entry {
                participant: p.clone(),
                version,
            },
        );
        let old_p = old.map(|e| e.participant);
        match &old_p {
            None => self.events.push_back(CallEvent::ParticipantJoined {
                participant: Box::new(p.clone()),
            }),
            Some(o) => {
                if let Some(m) = p.is_muted
                    && o.is_muted != Some(m)
                {
                    self.events.push_back(CallEvent::ParticipantMuteChanged {
                        participant_id: id.clone(),
                        muted: m,
                    });
                }
                if let Some(l) = p.is_in_lobby
                    && o.is_in_lobby != Some(l)
                {
                    self.events.push_back(CallEvent::ParticipantLobbyChanged {
                        participant_id: id.clone(),
                        in_lobby: l,
                    });
                }
            }
        }
        let old_rec = old_p
            .as_ref()
            .and_then(|o| o.recording_info.as_ref()?.recording_status.clone());
        let new_rec = p
            .recording_info
            .as_ref()
            .and_then(|r| r.recording_status.clone());
        if let Some(status) = new_rec
            && old_rec.as_ref() != Some(&status)
        {
            self.events.push_back(CallEvent::RecordingStatusChanged {
                participant_id: id.clone(),
                status,
            });
        }
        self.remap_sources(&id, old_p.as_ref(), Some(p));
    }

    fn remove_participant(&mut self, id: &str) {
        if !self.tombstones.contains(id) {
            self.tombstones.insert(id.to_owned());
            self.tombstone_order.push_back(id.to_owned());
            while self.tombstone_order.len() > self.config.max_tombstones {
                if let Some(old) = self.tombstone_order.pop_front() {
                    self.tombstones.remove(&old);
                }
            }
        }
        if let Some(old) = self.participants.remove(id) {
            self.remap_sources(id, Some(&old.participant), None);
            self.events.push_back(CallEvent::ParticipantLeft {
                participant_id: id.to_owned(),
            });
        }
    }

    fn owned_sources(p: Option<&Participant>) -> BTreeSet<(String, u32)> {
        let Some(p) = p else { return BTreeSet::new() };
        if p.is_in_lobby == Some(true) {
            return BTreeSet::new();
        }
        p.media_streams
            .iter()
            .flatten()
            .filter_map(|s| {
                let media = s.media_type.as_ref()?.as_str().to_owned();
                let source = s.source_id.as_deref()?.trim().parse::<u32>().ok()?;
                Some((media, source))
            })
            .collect()
    }

    fn remap_sources(&mut self, id: &str, old: Option<&Participant>, new: Option<&Participant>) {
        let before = Self::owned_sources(old);
        let after = Self::owned_sources(new);
        for key in before.difference(&after) {
            if self.sources.get(key).map(String::as_str) == Some(id) {
                self.sources.remove(key);
                self.events.push_back(CallEvent::SourceUnmapped {
                    media_type: Modality::from_wire(&key.0),
                    source_id: key.1,
                    participant_id: id.to_owned(),
                });
            }
        }
        for key in after.difference(&before) {
            self.sources.insert(key.clone(), id.to_owned());
            self.events.push_back(CallEvent::SourceMapped {
                media_type: Modality::from_wire(&key.0),
                source_id: key.1,
                participant_id: id.to_owned(),
            });
        }
    }

    /// Registers the operation returned by an action (`200 + operation`). If it already
    /// finished, the outcome is emitted now; otherwise it waits for its notification.
    pub fn handle_operation_response(&mut self, op: &CommsOperation) {
        self.handle_operation(op, false);
        self.trim_events();
    }

    fn handle_operation(&mut self, op: &CommsOperation, finished_notification: bool) {
        let Some(id) = op.id.clone() else {
            self.ignored += 1;
            return;
        };
        if self.resolved.contains_key(&id) {
            self.ignored += 1;
            return;
        }
        let status = op.status.clone();
        let is_final = status.as_ref().is_some_and(OperationStatus::is_final);
        if !is_final && !finished_notification {
            if !self.pending.contains_key(&id)
                && self.pending.len() < self.config.max_pending_operations
            {
                self.pending.insert(
                    id,
                    PendingOp {
                        operation_type: op.operation_type(),
                        client_context: op.client_context.clone(),
                    },
                );
            }
            return;
        }
        let pending = self.pending.remove(&id);
        let client_context = op
            .client_context
            .clone()
            .or_else(|| pending.as_ref().and_then(|p| p.client_context.clone()));
        let operation_type = match (op.operation_type(), &pending) {
            (OperationType::CommsOperation, Some(p)) => p.operation_type.clone(),
            (t, _) => t,
        };
        let ok = status == Some(OperationStatus::Completed);
        self.resolved.insert(id.clone(), ok);
        self.resolved_order.push_back(id.clone());
        while self.resolved_order.len() > self.config.max_resolved_operations {
            if let Some(old) = self.resolved_order.pop_front() {
                self.resolved.remove(&old);
            }
        }
        let result_info = op.result_info.clone();
        self.events.push_back(if ok {
            CallEvent::OperationCompleted {
                operation_id: id,
                operation_type,
                client_context,
                result_info,
            }
        } else {
            CallEvent::OperationFailed {
                operation_id: id,
                operation_type,
                client_context,
                result_info,
            }
        });
    }
}
