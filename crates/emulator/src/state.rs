//! The emulator's core: calls, participants, operations, timers and fault windows.
//!
//! Sans-IO: every entry point takes `now` (epoch ms on the emulator clock) and leaves what
//! must happen outside in two queues, `out` (notifications to POST) and `media` (media hook
//! commands). The HTTP layer and the drivers in `server.rs` move those out.
//!
//! Call lifecycle as the emulator plays it:
//!
//! ```text
//!  create (201) ──▶ establishing ──(+establish delay)──▶ established ──▶ terminated (deleted)
//!  ring ──▶ incoming ──answer (202)──▶ establishing ──▶ established
//!             │  └─reject/redirect (202) or answer deadline (15 s, 5 s policy) ──▶ terminated
//!  established ──transfer──▶ transferring ──▶ transferAccepted ──▶ terminated
//!  established ──no keepAlive for 45 min / DELETE / scenario end──▶ terminated
//! ```

use std::collections::{BTreeMap, HashMap};

use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::{Millis, rfc3339};
use crate::graph_error::GraphError;
use crate::identity::{Directory, Principal, roles};
use crate::media::{
    AudioSource, MediaBlob, MediaEvent, MediaParticipant, MediaSession, SpeechSegment,
};
use crate::scenario::{NotificationPolicy, Scenario, graph_tone};

/// Timing rules.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// From create/answer to `established`.
    pub establish_ms: Millis,
    /// From an action's 200 (status running) to its completion notification.
    pub operation_ms: Millis,
    /// Answer deadline for normal incoming calls (Graph: 15 s).
    pub answer_deadline_ms: Millis,
    /// Answer deadline for policy-based recording (Graph: 5 s).
    pub policy_answer_deadline_ms: Millis,
    /// A call without keepAlive for this long is ended (Graph: 45 min).
    pub keepalive_timeout_ms: Millis,
    /// Ring time before a redirected or transferred call ends.
    pub transfer_ms: Millis,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            establish_ms: 300,
            operation_ms: 200,
            answer_deadline_ms: 15_000,
            policy_answer_deadline_ms: 5_000,
            keepalive_timeout_ms: 45 * 60 * 1000,
            transfer_ms: 500,
        }
    }
}

/// Graph call states the emulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    /// Ringing the bot.
    Incoming,
    /// Being set up.
    Establishing,
    /// Connected.
    Established,
    /// Being transferred.
    Transferring,
    /// Transfer accepted by the target.
    TransferAccepted,
    /// Ending.
    Terminating,
    /// Ended.
    Terminated,
}

impl CallState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Establishing => "establishing",
            Self::Established => "established",
            Self::Transferring => "transferring",
            Self::TransferAccepted => "transferAccepted",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
        }
    }
}

/// What kind of call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CallKind {
    /// Outgoing 1:1.
    PeerToPeer,
    /// Outgoing group call.
    Group,
    /// Joined meeting (scenario index, if the meeting is a scenario's).
    Meeting,
    /// Incoming call.
    Incoming,
}

/// A participant.
#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    /// Graph participant id.
    pub id: String,
    /// Scenario handle.
    pub handle: String,
    /// Display name.
    pub display_name: String,
    /// User/guest/application id.
    pub identity_id: String,
    /// Tenant of the identity.
    pub tenant_id: String,
    /// Guest identity.
    pub guest: bool,
    /// The bot itself.
    pub is_bot: bool,
    /// Audio sourceId.
    pub source_id: u32,
    /// Muted.
    pub muted: bool,
    /// In the lobby.
    pub in_lobby: bool,
    /// In the call now.
    pub present: bool,
    /// `recordingInfo.recordingStatus`, if reported.
    pub recording_status: Option<String>,
    /// On hold (hold music playing).
    pub on_hold: bool,
    /// Video sourceId, when the call requested video.
    pub video_source_id: Option<u32>,
}

/// An operation.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Id.
    pub id: String,
    /// `@odata.type` without the namespace (`playPromptOperation`).
    pub kind: String,
    /// `notStarted|running|completed|failed`.
    pub status: String,
    /// Echoed client context.
    pub client_context: Option<String>,
    /// `resultInfo` once finished.
    pub result_info: Option<Value>,
    /// Extra properties (`recordingLocation`, `completionReason`, `participants`...).
    pub extra: Map<String, Value>,
}

/// A call.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// Id.
    pub id: String,
    /// Owning app.
    pub app_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Where notifications go.
    pub callback_uri: String,
    /// State.
    pub state: CallState,
    /// Kind.
    pub kind: CallKind,
    /// `incoming` / `outgoing`.
    pub direction: &'static str,
    /// Properties echoed from the request (source, targets, chatInfo, meetingInfo, ...).
    pub props: Map<String, Value>,
    /// App-hosted media blob, if any.
    pub app_hosted_blob: Option<String>,
    /// Service-hosted media.
    pub service_hosted: bool,
    /// Participants (bot first).
    pub participants: Vec<Participant>,
    /// Operations.
    pub operations: Vec<Operation>,
    /// Audio routing groups by id.
    pub audio_routing_groups: BTreeMap<String, Value>,
    /// Created (emulator time).
    pub created_at: Millis,
    /// Established (emulator time).
    pub established_at: Option<Millis>,
    /// Last successful keepAlive (or establishment).
    pub last_keepalive: Millis,
    /// subscribeToTone called.
    pub tones_subscribed: bool,
    /// Next toneInfo.sequenceId.
    pub tone_seq: i64,
    /// Scenario driving this call.
    pub scenario: Option<usize>,
    /// Policy-based recording incoming call.
    pub policy_recording: bool,
    /// Delta roster (callOptions.isDeltaRosterEnabled).
    pub delta_roster: bool,
    /// Termination reason.
    pub result_info: Option<Value>,
    /// Notification delivery policy.
    pub notify: NotificationPolicy,
    /// What happened with media (`none`, `started: ...`, `blob not mediabot's: ...`).
    pub media_status: String,
    /// Bot muted itself (call-level mute).
    pub bot_muted: bool,
    next_source_id: u32,
    etag: u64,
}

impl Call {
    fn bot(&self) -> Option<&Participant> {
        self.participants.iter().find(|p| p.is_bot)
    }
    fn bot_mut(&mut self) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.is_bot)
    }
    fn is_live(&self) -> bool {
        self.state != CallState::Terminated
    }
}

/// A notification POST waiting for delivery.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Call id.
    pub call_id: String,
    /// App (audience of the JWT).
    pub app_id: String,
    /// Tenant (`tid` claim).
    pub tenant_id: String,
    /// Target URL.
    pub url: String,
    /// `commsNotification` items.
    pub items: Vec<Value>,
    /// Delivery quirks.
    pub policy: NotificationPolicy,
    /// Emulator time when produced.
    pub produced_at: Millis,
}

/// A command for the media hook.
#[derive(Debug, Clone)]
pub enum MediaCommand {
    /// Start a session.
    Start(MediaSession),
    /// Forward an event.
    Event(String, MediaEvent),
}

#[derive(Debug, Clone)]
enum Timer {
    Establishing(String),
    Established(String),
    CompleteOp {
        call: String,
        op: String,
    },
    AnswerDeadline(String),
    KeepAliveCheck(String),
    Scenario {
        call: String,
        handle: String,
        action: Action,
    },
    EndCall {
        call: String,
        code: i64,
        subcode: i64,
        message: String,
    },
    TransferStep {
        call: String,
        step: u8,
    },
    InviteJoin {
        call: String,
        op: String,
    },
}

/// A participant action, from a scenario timeline or the control API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Join (into the lobby when `lobby` is true).
    Join {
        /// Wait in the lobby.
        #[serde(default)]
        lobby: bool,
    },
    /// Admitted from the lobby.
    Admit,
    /// Leave.
    Leave,
    /// Mute.
    Mute,
    /// Unmute.
    Unmute,
    /// Press a tone.
    Tone {
        /// Tone key.
        tone: String,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
struct FaultState {
    throttle: Vec<(Millis, Millis, u64)>,
    bursts: Vec<(Millis, u32, u16)>,
    slow: Vec<(Millis, Millis, u64)>,
}

/// What fault to apply to one Graph request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultDecision {
    /// Refuse with this error.
    pub error: Option<GraphError>,
    /// Delay the response.
    pub delay_ms: u64,
}

/// A started scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRun {
    /// Index (the id in the control API).
    pub id: usize,
    /// The scenario.
    pub scenario: Scenario,
    /// Started at (emulator time).
    pub started_at: Millis,
    /// Meeting thread id (meeting scenarios).
    pub thread_id: Option<String>,
    /// Meeting id for joinMeetingIdMeetingInfo.
    pub join_meeting_id: Option<String>,
    /// A Teams-style join URL.
    pub join_url: Option<String>,
    /// Organizer (user id, tenant id).
    pub organizer: Option<(String, String)>,
    /// The call it rang (incoming scenarios).
    pub incoming_call_id: Option<String>,
    /// Calls that joined this meeting.
    pub calls: Vec<String>,
}

/// An incoming call to ring a bot with.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct IncomingCall {
    /// App to ring (first registered app when absent).
    pub app_id: Option<String>,
    /// Caller display name.
    pub caller_name: Option<String>,
    /// Caller user id (generated when absent).
    pub caller_id: Option<String>,
    /// Policy-based recording (5 s deadline, incomingContext.observedParticipantId).
    pub policy_recording: bool,
}

/// Counters of refused input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Graph requests answered.
    pub graph_requests: u64,
    /// 400s.
    pub bad_requests: u64,
    /// 401s.
    pub unauthorized: u64,
    /// 403s.
    pub forbidden: u64,
    /// 404s.
    pub not_found: u64,
    /// 409s.
    pub conflicts: u64,
    /// Injected faults.
    pub injected_faults: u64,
    /// Token requests refused.
    pub token_refusals: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Answer deadlines missed.
    pub answer_deadlines_missed: u64,
    /// Calls ended for lack of keepAlive.
    pub keepalive_timeouts: u64,
}

/// A Graph response the HTTP layer renders.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphResponse {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: Option<Value>,
    /// `Location` header.
    pub location: Option<String>,
}

impl GraphResponse {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
        }
    }
    fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            location: None,
        }
    }
}

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Default tenant for apps and participants.
    pub tenant_id: String,
    /// Timing rules.
    pub timing: Timing,
    /// Refuse `http://` callback URIs as Graph does (off by default so loopback bots work).
    pub require_https_callbacks: bool,
    /// Default notification policy for calls not driven by a scenario.
    pub notify: NotificationPolicy,
    /// Seed for ids.
    pub seed: u64,
}

/// The core.
#[derive(Debug)]
pub struct Core {
    /// Settings.
    pub cfg: CoreConfig,
    /// Apps.
    pub dir: Directory,
    /// Calls by id.
    pub calls: HashMap<String, Call>,
    /// Call ids in creation order.
    pub call_order: Vec<String>,
    /// Started scenarios.
    pub scenarios: Vec<ScenarioRun>,
    /// Counters.
    pub counters: Counters,
    /// Notifications to POST.
    pub out: Vec<Outbound>,
    /// Media hook commands.
    pub media: Vec<MediaCommand>,
    timers: BTreeMap<(Millis, u64), Timer>,
    seq: u64,
    rng: rand_chacha::ChaCha8Rng,
    faults: FaultState,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn odata_type(v: &Value) -> Option<&str> {
    v.get("@odata.type").and_then(Value::as_str).map(|t| {
        t.trim_start_matches('#')
            .trim_start_matches("microsoft.graph.")
    })
}

fn require_obj<'a>(body: &'a Value, what: &str) -> Result<&'a Map<String, Value>, GraphError> {
    body.as_object().ok_or_else(|| {
        GraphError::bad_request(format!(
            "The request body for {what} must be a JSON object."
        ))
    })
}

fn check_client_context(body: &Value) -> Result<Option<String>, GraphError> {
    match body.get("clientContext") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) if c.chars().count() <= 256 => Ok(Some(c.clone())),
        Some(Value::String(_)) => Err(GraphError::bad_request(
            "clientContext can have at most 256 characters.",
        )),
        Some(_) => Err(GraphError::bad_request("clientContext must be a string.")),
    }
}

fn check_url(v: Option<&Value>, name: &str, https_only: bool) -> Result<String, GraphError> {
    let raw = match v {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(GraphError::bad_request(format!("{name} is required.")));
        }
        Some(_) => return Err(GraphError::bad_request(format!("{name} must be a string."))),
    };
    let url = url::Url::parse(raw)
        .map_err(|_| GraphError::bad_request(format!("{name} '{raw}' is not an absolute URL.")))?;
    match url.scheme() {
        "https" => Ok(raw.clone()),
        "http" if !https_only => Ok(raw.clone()),
        _ => Err(GraphError::bad_request(format!(
            "{name} must be an HTTPS URL."
        ))),
    }
}

/// Validates a mediaConfig; returns (app-hosted blob, service-hosted).
fn check_media_config(v: Option<&Value>) -> Result<(Option<String>, bool), GraphError> {
    let Some(mc) = v.filter(|m| !m.is_null()) else {
        return Err(GraphError::bad_request("mediaConfig is required."));
    };
    if !mc.is_object() {
        return Err(GraphError::bad_request("mediaConfig must be an object."));
    }
    match odata_type(mc) {
        Some("appHostedMediaConfig") => match mc.get("blob") {
            Some(Value::String(b)) if !b.is_empty() => Ok((Some(b.clone()), false)),
            _ => Err(GraphError::bad_request(
                "appHostedMediaConfig.blob is required.",
            )),
        },
        Some("serviceHostedMediaConfig") => {
            if let Some(p) = mc.get("preFetchMedia")
                && !p.is_null()
                && !p.is_array()
            {
                return Err(GraphError::bad_request(
                    "serviceHostedMediaConfig.preFetchMedia must be an array.",
                ));
            }
            Ok((None, true))
        }
        Some(other) => Err(GraphError::bad_request(format!(
            "mediaConfig type '{other}' is not supported."
        ))),
        None => Err(GraphError::bad_request(
            "mediaConfig must carry @odata.type (appHostedMediaConfig or serviceHostedMediaConfig).",
        )),
    }
}

const MODALITIES: [&str; 5] = [
    "audio",
    "video",
    "videoBasedScreenSharing",
    "data",
    "unknown",
];

fn check_modalities(v: Option<&Value>, name: &str, required: bool) -> Result<(), GraphError> {
    match v {
        None | Some(Value::Null) if !required => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() => {
            for m in a {
                match m.as_str() {
                    Some(x) if MODALITIES.contains(&x) => {}
                    _ => {
                        return Err(GraphError::bad_request(format!(
                            "{name} contains an invalid modality {m}."
                        )));
                    }
                }
            }
            Ok(())
        }
        _ => Err(GraphError::bad_request(format!(
            "{name} must be a non-empty array of modalities."
        ))),
    }
}

/// Checks an identitySet has at least one identity with an id; returns (kind, id, displayName).
fn check_identity_set(
    v: Option<&Value>,
    name: &str,
) -> Result<(String, String, String), GraphError> {
    let Some(set) = v.and_then(Value::as_object) else {
        return Err(GraphError::bad_request(format!(
            "{name} must be an identitySet object."
        )));
    };
    for kind in [
        "user",
        "guest",
        "application",
        "applicationInstance",
        "phone",
        "device",
        "encrypted",
        "onPremises",
        "acsUser",
        "spoolUser",
        "azureCommunicationServicesUser",
    ] {
        if let Some(id) = set.get(kind).filter(|i| !i.is_null()) {
            let Some(obj) = id.as_object() else {
                return Err(GraphError::bad_request(format!(
                    "{name}.{kind} must be an object."
                )));
            };
            let ident = obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let dn = obj
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if ident.is_empty() && kind != "guest" {
                return Err(GraphError::bad_request(format!(
                    "{name}.{kind}.id is required."
                )));
            }
            return Ok((kind.to_owned(), ident, dn));
        }
    }
    Err(GraphError::bad_request(format!(
        "{name} must contain an identity (user, guest, application, phone, ...)."
    )))
}

fn check_targets(
    v: Option<&Value>,
    name: &str,
    max: Option<usize>,
) -> Result<Vec<(String, String, String)>, GraphError> {
    let Some(arr) = v.and_then(Value::as_array).filter(|a| !a.is_empty()) else {
        return Err(GraphError::bad_request(format!(
            "{name} must be a non-empty array."
        )));
    };
    if let Some(m) = max
        && arr.len() > m
    {
        return Err(GraphError::bad_request(format!(
            "{name} can contain at most {m} participants per request."
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, t)| {
            if !t.is_object() {
                return Err(GraphError::bad_request(format!(
                    "{name}[{i}] must be an invitationParticipantInfo object."
                )));
            }
            check_identity_set(t.get("identity"), &format!("{name}[{i}].identity"))
        })
        .collect()
}

fn need(p: &Principal, any_of: &[&str]) -> Result<(), GraphError> {
    if any_of.iter().any(|r| p.has(r)) {
        Ok(())
    } else {
        Err(GraphError::missing_permission(any_of))
    }
}

const ANY_CALLS_ROLE: [&str; 5] = roles::ALL;
/// Operations kept per call (older finished ones are forgotten).
pub const MAX_OPERATIONS_PER_CALL: usize = 1000;
/// Calls kept in total (the oldest terminated ones are forgotten beyond this).
pub const MAX_CALLS: usize = 50_000;

impl Core {
    /// A core with no apps.
    pub fn new(cfg: CoreConfig) -> Self {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            dir: Directory::default(),
            calls: HashMap::new(),
            call_order: Vec::new(),
            scenarios: Vec::new(),
            counters: Counters::default(),
            out: Vec::new(),
            media: Vec::new(),
            timers: BTreeMap::new(),
            seq: 0,
            rng,
            faults: FaultState::default(),
        }
    }

    /// Forgets the oldest terminated calls beyond [`MAX_CALLS`].
    fn prune_calls(&mut self) {
        if self.call_order.len() <= MAX_CALLS {
            return;
        }
        let mut excess = self.call_order.len() - MAX_CALLS;
        let calls = &mut self.calls;
        self.call_order.retain(|id| {
            if excess > 0
                && calls
                    .get(id)
                    .is_none_or(|c| c.state == CallState::Terminated)
            {
                calls.remove(id);
                excess -= 1;
                false
            } else {
                true
            }
        });
    }

    /// A fresh UUID from the seeded generator.
    pub fn uuid(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn schedule(&mut self, at: Millis, t: Timer) {
        self.seq += 1;
        self.timers.insert((at, self.seq), t);
    }

    /// The time of the earliest pending timer.
    pub fn next_due(&self) -> Option<Millis> {
        self.timers.keys().next().map(|k| k.0)
    }

    /// Runs every timer due at or before `now`, in time order.
    pub fn run_due(&mut self, now: Millis) {
        // Bounded: a handler may schedule at `now`, which runs in this loop too.
        for _ in 0..100_000 {
            let Some((&key, _)) = self.timers.iter().next() else {
                return;
            };
            if key.0 > now {
                return;
            }
            let Some(t) = self.timers.remove(&key) else {
                return;
            };
            self.fire(key.0, t);
        }
    }

    // ---------------------------------------------------------------- notifications

    fn emit(&mut self, call_id: &str, items: Vec<Value>, now: Millis) {
        let Some(c) = self.calls.get(call_id) else {
            return;
        };
        self.out.push(Outbound {
            call_id: call_id.to_owned(),
            app_id: c.app_id.clone(),
            tenant_id: c.tenant_id.clone(),
            url: c.callback_uri.clone(),
            items,
            policy: c.notify.clone(),
            produced_at: now,
        });
    }

    fn item(change: &str, resource_url: &str, data: Value, callback: &str) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": change,
            "resource": resource_url.replacen("/communications/", "/app/", 1),
            "resourceUrl": resource_url,
            "callbackUri": callback,
            "resourceData": data,
        })
    }

    fn call_item(&mut self, call_id: &str, change: &str) -> Option<Value> {
        let c = self.calls.get_mut(call_id)?;
        c.etag += 1;
        let mut data = render_call(c);
        data["@odata.etag"] = json!(format!("W/\"{}\"", c.etag));
        Some(Self::item(
            change,
            &format!("/communications/calls/{call_id}"),
            data,
            &c.callback_uri,
        ))
    }

    fn notify_call(&mut self, call_id: &str, change: &str, now: Millis) {
        if let Some(i) = self.call_item(call_id, change) {
            self.emit(call_id, vec![i], now);
        }
    }

    /// Roster notification: the full roster, or only `changed` with delta roster on.
    fn notify_roster(&mut self, call_id: &str, changed: &[String], now: Millis) {
        let Some(c) = self.calls.get(call_id) else {
            return;
        };
        if !c.is_live() {
            return;
        }
        let url = format!("/communications/calls/{call_id}/participants");
        let mut items = Vec::new();
        if c.delta_roster {
            let (gone, here): (Vec<&Participant>, Vec<&Participant>) = c
                .participants
                .iter()
                .filter(|p| changed.contains(&p.id))
                .partition(|p| !p.present);
            if !here.is_empty() {
                let data: Vec<Value> = here.iter().map(|p| render_participant(c, p)).collect();
                items.push(Self::item(
                    "updated",
                    &url,
                    Value::Array(data),
                    &c.callback_uri,
                ));
            }
            if !gone.is_empty() {
                let data: Vec<Value> = gone.iter().map(|p| render_participant(c, p)).collect();
                items.push(Self::item(
                    "deleted",
                    &url,
                    Value::Array(data),
                    &c.callback_uri,
                ));
            }
        } else {
            let data: Vec<Value> = c
                .participants
                .iter()
                .filter(|p| p.present)
                .map(|p| render_participant(c, p))
                .collect();
            items.push(Self::item(
                "updated",
                &url,
                Value::Array(data),
                &c.callback_uri,
            ));
        }
        if !items.is_empty() {
            self.emit(call_id, items, now);
        }
        self.media_roster(call_id);
    }

    fn media_roster(&mut self, call_id: &str) {
        let Some(c) = self.calls.get(call_id) else {
            return;
        };
        if c.established_at.is_some() && c.media_status.starts_with("started") {
            let roster = media_roster(c);
            self.media.push(MediaCommand::Event(
                call_id.to_owned(),
                MediaEvent::Roster(roster),
            ));
        }
    }

    fn notify_op(&mut self, call_id: &str, op_id: &str, now: Millis) {
        let Some(c) = self.calls.get(call_id) else {
            return;
        };
        let Some(op) = c.operations.iter().find(|o| o.id == op_id) else {
            return;
        };
        let data = render_op(call_id, op);
        let url = format!("/communications/calls/{call_id}/operations/{op_id}");
        let item = Self::item("deleted", &url, data, &c.callback_uri);
        self.emit(call_id, vec![item], now);
    }

    // ---------------------------------------------------------------- faults

    /// Installs a scenario's fault windows, offset from `now`.
    pub fn add_faults(&mut self, spec: &crate::scenario::FaultSpec, now: Millis) {
        for t in &spec.throttle {
            self.faults
                .throttle
                .push((now + t.at, now + t.at + t.duration, t.retry_after));
        }
        for b in &spec.server_error {
            self.faults.bursts.push((now + b.at, b.count, b.status));
        }
        for sl in &spec.slow {
            self.faults
                .slow
                .push((now + sl.at, now + sl.at + sl.duration, sl.delay_ms));
        }
    }

    /// Removes all fault windows.
    pub fn clear_faults(&mut self) {
        self.faults = FaultState::default();
    }

    /// The fault (if any) for a Graph request arriving at `now`.
    pub fn fault_for(&mut self, now: Millis) -> FaultDecision {
        let mut d = FaultDecision::default();
        for &(from, until, delay) in &self.faults.slow {
            if (from..until).contains(&now) {
                d.delay_ms = d.delay_ms.max(delay);
            }
        }
        if let Some(&(_, _, ra)) = self
            .faults
            .throttle
            .iter()
            .find(|(f, u, _)| (*f..*u).contains(&now))
        {
            d.error = Some(GraphError::throttled(ra));
        } else if let Some(b) = self
            .faults
            .bursts
            .iter_mut()
            .find(|(f, n, _)| *f <= now && *n > 0)
        {
            b.1 -= 1;
            d.error = Some(GraphError::server(b.2));
        }
        if d.error.is_some() {
            self.counters.injected_faults += 1;
        }
        d
    }

    // ---------------------------------------------------------------- Graph API

    /// Dispatches a Graph request (`segments` after `/v1.0/`).
    ///
    /// # Errors
    /// A [`GraphError`] the HTTP layer renders.
    pub fn graph(
        &mut self,
        now: Millis,
        p: &Principal,
        method: &str,
        segments: &[&str],
        body: Option<&Value>,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        self.counters.graph_requests += 1;
        let r = self.route(now, p, method, segments, body, base);
        if let Err(e) = &r {
            match e.status {
                400 => self.counters.bad_requests += 1,
                403 => self.counters.forbidden += 1,
                404 => self.counters.not_found += 1,
                409 => self.counters.conflicts += 1,
                _ => {}
            }
        }
        self.run_due(now);
        r
    }

    fn route(
        &mut self,
        now: Millis,
        p: &Principal,
        method: &str,
        seg: &[&str],
        body: Option<&Value>,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let empty = Value::Null;
        let body = body.unwrap_or(&empty);
        let not_allowed = || {
            GraphError::new(
                405,
                "MethodNotAllowed",
                format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        };
        if seg.len() < 2 || !eq(seg[0], "communications") || !eq(seg[1], "calls") {
            return Err(GraphError::bad_request(format!(
                "Resource not found for the segment '{}'.",
                seg.first().copied().unwrap_or_default()
            )));
        }
        match &seg[2..] {
            [] => match method {
                "POST" => self.create_call(now, p, body, base),
                _ => Err(not_allowed()),
            },
            [a] if eq(a, "logTeleconferenceDeviceQuality") => {
                if method != "POST" {
                    return Err(not_allowed());
                }
                need(p, &[roles::ACCESS_MEDIA])?;
                let q = require_obj(body, "logTeleconferenceDeviceQuality")?.get("quality");
                match q {
                    Some(Value::Object(q))
                        if q.get("callChainId").is_some_and(Value::is_string) =>
                    {
                        Ok(GraphResponse::empty(200))
                    }
                    Some(Value::Object(_)) => {
                        Err(GraphError::bad_request("quality.callChainId is required."))
                    }
                    _ => Err(GraphError::bad_request("quality is required.")),
                }
            }
            [id, rest @ ..] => {
                let id = (*id).to_owned();
                self.visible_call(p, &id)?;
                self.call_route(now, p, method, &id, rest, body, base)
            }
        }
    }

    /// 404 unless the call exists, is not terminated, and belongs to the caller's app.
    fn visible_call(&self, p: &Principal, id: &str) -> Result<&Call, GraphError> {
        match self.calls.get(id) {
            Some(c) if c.app_id == p.app_id && c.is_live() => {
                if !c.tenant_id.eq_ignore_ascii_case(&p.tenant_id) {
                    return Err(GraphError::tenant_mismatch());
                }
                Ok(c)
            }
            _ => Err(GraphError::not_found(format!(
                "Call '{id}' was not found or has already ended."
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_route(
        &mut self,
        now: Millis,
        p: &Principal,
        method: &str,
        id: &str,
        rest: &[&str],
        body: &Value,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let not_allowed = || {
            GraphError::new(
                405,
                "MethodNotAllowed",
                format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        };
        let app_hosted = self
            .calls
            .get(id)
            .is_some_and(|c| c.app_hosted_blob.is_some());
        match rest {
            [] => match method {
                "GET" => {
                    need(p, &ANY_CALLS_ROLE)?;
                    let c = self.visible_call(p, id)?;
                    let mut v = render_call(c);
                    v["@odata.context"] = json!(format!(
                        "{base}/v1.0/$metadata#communications/calls/$entity"
                    ));
                    Ok(GraphResponse::json(200, v))
                }
                "DELETE" => {
                    need(p, &ANY_CALLS_ROLE)?;
                    self.end_call(
                        id,
                        now,
                        200,
                        0,
                        "The call was ended by the application.",
                        true,
                    );
                    Ok(GraphResponse::empty(204))
                }
                _ => Err(not_allowed()),
            },
            [coll, rest @ ..] if eq(coll, "participants") => {
                self.participants_route(now, p, method, id, rest, body, base)
            }
            [coll, rest @ ..] if eq(coll, "audioRoutingGroups") => {
                self.arg_route(p, method, id, rest, body, base)
            }
            [coll, rest @ ..] if eq(coll, "contentSharingSessions") => {
                if method != "GET" {
                    return Err(not_allowed());
                }
                need(p, &ANY_CALLS_ROLE)?;
                match rest {
                    [] => Ok(GraphResponse::json(
                        200,
                        json!({"@odata.context": format!("{base}/v1.0/$metadata#communications/calls('{id}')/contentSharingSessions"), "value": []}),
                    )),
                    [sid] => Err(GraphError::not_found(format!(
                        "Content sharing session '{sid}' was not found."
                    ))),
                    _ => Err(GraphError::bad_request("Unsupported segment.")),
                }
            }
            [coll, op] if eq(coll, "operations") => {
                if method != "GET" {
                    return Err(not_allowed());
                }
                need(p, &ANY_CALLS_ROLE)?;
                let c = self.visible_call(p, id)?;
                let o = c.operations.iter().find(|o| o.id == *op).ok_or_else(|| {
                    GraphError::not_found(format!("Operation '{op}' was not found."))
                })?;
                Ok(GraphResponse::json(200, render_op(id, o)))
            }
            [action] => {
                if method != "POST" {
                    return Err(not_allowed());
                }
                let a = action.to_ascii_lowercase();
                self.call_action(now, p, id, &a, body, base, app_hosted)
            }
            _ => Err(GraphError::bad_request(format!(
                "Resource not found for the segment '{}'.",
                rest.first().copied().unwrap_or_default()
            ))),
        }
    }

    fn require_state(&self, id: &str, ok: &[CallState], action: &str) -> Result<(), GraphError> {
        let st = self.calls.get(id).map(|c| c.state);
        match st {
            Some(s) if ok.contains(&s) => Ok(()),
            Some(s) => Err(GraphError::conflict(format!(
                "Action '{action}' is not allowed when the call is in state '{}'.",
                s.as_str()
            ))),
            None => Err(GraphError::not_found(format!("Call '{id}' was not found."))),
        }
    }

    fn new_op(
        &mut self,
        call_id: &str,
        kind: &str,
        status: &str,
        client_context: Option<String>,
    ) -> String {
        let id = self.uuid();
        if let Some(c) = self.calls.get_mut(call_id) {
            if c.operations.len() >= MAX_OPERATIONS_PER_CALL {
                // Bounded memory: forget the oldest finished operation.
                if let Some(i) = c.operations.iter().position(|o| o.status != "running") {
                    c.operations.remove(i);
                }
            }
            c.operations.push(Operation {
                id: id.clone(),
                kind: kind.to_owned(),
                status: status.to_owned(),
                client_context,
                result_info: if status == "completed" {
                    Some(result_info(200, 0, "Success"))
                } else {
                    None
                },
                extra: Map::new(),
            });
        }
        id
    }

    fn op_response(&self, call_id: &str, op_id: &str, base: &str) -> GraphResponse {
        let body = self
            .calls
            .get(call_id)
            .and_then(|c| c.operations.iter().find(|o| o.id == op_id))
            .map(|o| render_op(call_id, o))
            .unwrap_or(Value::Null);
        GraphResponse {
            status: 200,
            body: Some(body),
            location: Some(format!(
                "{base}/v1.0/communications/calls/{call_id}/operations/{op_id}"
            )),
        }
    }

    fn running_op(
        &mut self,
        now: Millis,
        call_id: &str,
        kind: &str,
        cc: Option<String>,
        base: &str,
    ) -> GraphResponse {
        let op = self.new_op(call_id, kind, "running", cc);
        self.schedule(
            now + self.cfg.timing.operation_ms,
            Timer::CompleteOp {
                call: call_id.to_owned(),
                op: op.clone(),
            },
        );
        self.op_response(call_id, &op, base)
    }

    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    fn call_action(
        &mut self,
        now: Millis,
        p: &Principal,
        id: &str,
        action: &str,
        body: &Value,
        base: &str,
        app_hosted: bool,
    ) -> Result<GraphResponse, GraphError> {
        use CallState::{Established, Establishing, Incoming};
        let media_or = |r: &'static str| {
            if app_hosted {
                vec![r, roles::ACCESS_MEDIA]
            } else {
                vec![r]
            }
        };
        let https = self.cfg.require_https_callbacks;
        match action {
            "answer" => {
                let mut perms = vec![roles::JOIN_GROUP_CALL, roles::JOIN_GROUP_CALL_AS_GUEST];
                require_obj(body, "answer")?;
                let cb = check_url(body.get("callbackUri"), "callbackUri", https)?;
                let (blob, service) = check_media_config(body.get("mediaConfig"))?;
                if blob.is_some() {
                    // App-hosted media additionally needs AccessMedia.
                    if !p.has(roles::ACCESS_MEDIA) {
                        return Err(GraphError::missing_permission(&[roles::ACCESS_MEDIA]));
                    }
                    perms.push(roles::ACCESS_MEDIA);
                }
                need(p, &perms)?;
                check_modalities(body.get("acceptedModalities"), "acceptedModalities", false)?;
                if let Some(pc) = body.get("participantCapacity")
                    && !pc.is_null()
                    && pc.as_i64().is_none_or(|n| n < 0)
                {
                    return Err(GraphError::bad_request(
                        "participantCapacity must be a non-negative integer.",
                    ));
                }
                if let Some(co) = body.get("callOptions").filter(|v| !v.is_null()) {
                    match odata_type(co) {
                        None | Some("incomingCallOptions") => {}
                        Some(t) => {
                            return Err(GraphError::bad_request(format!(
                                "callOptions of type '{t}' is not valid for answer; use incomingCallOptions."
                            )));
                        }
                    }
                }
                self.require_state(id, &[Incoming], "answer")?;
                let delta = body
                    .pointer("/callOptions/isDeltaRosterEnabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(c) = self.calls.get_mut(id) {
                    c.callback_uri = cb;
                    c.app_hosted_blob = blob;
                    c.service_hosted = service;
                    c.delta_roster = delta;
                    c.props
                        .insert("mediaConfig".into(), body["mediaConfig"].clone());
                    if let Some(m) = body.get("acceptedModalities") {
                        c.props.insert("activeModalities".into(), m.clone());
                    }
                }
                self.start_establishing(id, now);
                Ok(GraphResponse::empty(202))
            }
            "reject" => {
                if !body.is_null() {
                    require_obj(body, "reject")?;
                }
                let reason = match body.get("reason") {
                    None | Some(Value::Null) => "none".to_owned(),
                    Some(Value::String(r))
                        if ["none", "busy", "forbidden"].contains(&r.as_str()) =>
                    {
                        r.clone()
                    }
                    Some(r) => {
                        return Err(GraphError::bad_request(format!(
                            "reason {r} is not one of none, busy, forbidden."
                        )));
                    }
                };
                if let Some(cb) = body.get("callbackUri").filter(|v| !v.is_null()) {
                    let cb = check_url(Some(cb), "callbackUri", https)?;
                    self.require_state(id, &[Incoming], "reject")?;
                    if let Some(c) = self.calls.get_mut(id) {
                        c.callback_uri = cb;
                    }
                }
                self.require_state(id, &[Incoming], "reject")?;
                let code = if reason == "busy" { 486 } else { 603 };
                self.end_call(
                    id,
                    now,
                    code,
                    0,
                    &format!("The call was rejected by the application (reason: {reason})."),
                    false,
                );
                Ok(GraphResponse::empty(202))
            }
            "redirect" => {
                need(p, &[roles::INITIATE])?;
                require_obj(body, "redirect")?;
                check_targets(body.get("targets"), "targets", None)?;
                if let Some(t) = body.get("timeout").filter(|v| !v.is_null())
                    && !t.as_i64().is_some_and(|t| (15..=90).contains(&t))
                {
                    return Err(GraphError::bad_request(
                        "timeout must be an integer between 15 and 90 seconds.",
                    ));
                }
                if let Some(cb) = body.get("callbackUri").filter(|v| !v.is_null()) {
                    check_url(Some(cb), "callbackUri", https)?;
                }
                self.require_state(id, &[Incoming], "redirect")?;
                if let Some(c) = self.calls.get_mut(id) {
                    c.state = CallState::Terminating;
                }
                self.schedule(
                    now + self.cfg.timing.transfer_ms,
                    Timer::EndCall {
                        call: id.to_owned(),
                        code: 302,
                        subcode: 0,
                        message: "The call was redirected.".into(),
                    },
                );
                Ok(GraphResponse::empty(202))
            }
            "transfer" => {
                need(p, &[roles::INITIATE])?;
                require_obj(body, "transfer")?;
                let Some(target) = body.get("transferTarget").filter(|t| t.is_object()) else {
                    return Err(GraphError::bad_request("transferTarget is required."));
                };
                check_identity_set(target.get("identity"), "transferTarget.identity")?;
                if let Some(t) = body.get("transferee").filter(|v| !v.is_null()) {
                    check_identity_set(t.get("identity"), "transferee.identity")?;
                }
                self.require_state(id, &[Established], "transfer")?;
                if let Some(c) = self.calls.get_mut(id) {
                    c.state = CallState::Transferring;
                }
                self.notify_call(id, "updated", now);
                self.schedule(
                    now + self.cfg.timing.transfer_ms,
                    Timer::TransferStep {
                        call: id.to_owned(),
                        step: 1,
                    },
                );
                Ok(GraphResponse::empty(202))
            }
            "keepalive" => {
                need(
                    p,
                    &[
                        roles::INITIATE,
                        roles::ACCESS_MEDIA,
                        roles::JOIN_GROUP_CALL,
                        roles::JOIN_GROUP_CALL_AS_GUEST,
                        roles::INITIATE_GROUP_CALL,
                    ],
                )?;
                if let Some(c) = self.calls.get_mut(id) {
                    c.last_keepalive = now;
                }
                Ok(GraphResponse::empty(200))
            }
            "mute" | "unmute" => {
                need(
                    p,
                    &media_or(roles::INITIATE)
                        .iter()
                        .chain(&[
                            roles::JOIN_GROUP_CALL,
                            roles::JOIN_GROUP_CALL_AS_GUEST,
                            roles::INITIATE_GROUP_CALL,
                        ])
                        .copied()
                        .collect::<Vec<_>>(),
                )?;
                let cc = if body.is_null() {
                    None
                } else {
                    require_obj(body, action).and_then(|_| check_client_context(body))?
                };
                self.require_state(id, &[Established], action)?;
                let muted = action == "mute";
                let mut changed = Vec::new();
                if let Some(c) = self.calls.get_mut(id) {
                    c.bot_muted = muted;
                    if let Some(b) = c.bot_mut() {
                        b.muted = muted;
                        changed.push(b.id.clone());
                    }
                }
                let kind = if muted {
                    "muteParticipantOperation"
                } else {
                    "unmuteParticipantOperation"
                };
                let op = self.new_op(id, kind, "completed", cc);
                self.notify_roster(id, &changed, now);
                Ok(self.op_response(id, &op, base))
            }
            "playprompt" => {
                need(p, &media_or(roles::INITIATE))?;
                require_obj(body, "playPrompt")?;
                let cc = check_client_context(body)?;
                let Some(prompts) = body
                    .get("prompts")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                else {
                    return Err(GraphError::bad_request(
                        "prompts must be a non-empty array.",
                    ));
                };
                if prompts.len() > 20 {
                    return Err(GraphError::bad_request("At most 20 prompts are allowed."));
                }
                for (i, pr) in prompts.iter().enumerate() {
                    if pr
                        .pointer("/mediaInfo/uri")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(GraphError::bad_request(format!(
                            "prompts[{i}].mediaInfo.uri is required."
                        )));
                    }
                }
                self.require_state(id, &[Established], "playPrompt")?;
                if app_hosted {
                    return Err(GraphError::bad_request(
                        "PlayPrompt is supported only for calls with serviceHostedMediaConfig; an app-hosted media bot plays audio itself.",
                    ));
                }
                Ok(self.running_op(now, id, "playPromptOperation", cc, base))
            }
            "recordresponse" | "record" => {
                need(p, &[roles::ACCESS_MEDIA])?;
                if !body.is_null() {
                    require_obj(body, "recordResponse")?;
                }
                let cc = check_client_context(body)?;
                if body
                    .get("prompts")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.len() > 1)
                {
                    return Err(GraphError::bad_request(
                        "At most 1 prompt is allowed for recordResponse.",
                    ));
                }
                for k in [
                    "initialSilenceTimeoutInSeconds",
                    "maxSilenceTimeoutInSeconds",
                    "maxRecordDurationInSeconds",
                ] {
                    if let Some(v) = body.get(k).filter(|v| !v.is_null())
                        && !v.as_i64().is_some_and(|n| (1..=120).contains(&n))
                    {
                        return Err(GraphError::bad_request(format!(
                            "{k} must be between 1 and 120."
                        )));
                    }
                }
                self.require_state(id, &[Established], "recordResponse")?;
                if app_hosted {
                    return Err(GraphError::bad_request(
                        "RecordResponse is supported only for calls with serviceHostedMediaConfig.",
                    ));
                }
                Ok(self.running_op(now, id, "recordOperation", cc, base))
            }
            "cancelmediaprocessing" => {
                need(p, &[roles::ACCESS_MEDIA])?;
                let cc = if body.is_null() {
                    None
                } else {
                    require_obj(body, action).and_then(|_| check_client_context(body))?
                };
                self.require_state(id, &[Established], "cancelMediaProcessing")?;
                // Running prompts/recordings finish now.
                let running: Vec<String> = self
                    .calls
                    .get(id)
                    .map(|c| {
                        c.operations
                            .iter()
                            .filter(|o| {
                                o.status == "running"
                                    && (o.kind == "playPromptOperation"
                                        || o.kind == "recordOperation")
                            })
                            .map(|o| o.id.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for op in running {
                    self.finish_op(
                        id,
                        &op,
                        "failed",
                        result_info(
                            400,
                            8508,
                            "The operation was cancelled by cancelMediaProcessing.",
                        ),
                        now,
                    );
                }
                Ok(self.running_op(now, id, "cancelMediaProcessingOperation", cc, base))
            }
            "subscribetotone" => {
                need(p, &[roles::ACCESS_MEDIA])?;
                let cc = if body.is_null() {
                    None
                } else {
                    require_obj(body, action).and_then(|_| check_client_context(body))?
                };
                self.require_state(id, &[Established, Establishing], "subscribeToTone")?;
                if let Some(c) = self.calls.get_mut(id) {
                    c.tones_subscribed = true;
                }
                let op = self.new_op(id, "subscribeToToneOperation", "completed", cc);
                Ok(self.op_response(id, &op, base))
            }
            "senddtmftones" => {
                need(p, &media_or(roles::INITIATE))?;
                require_obj(body, "sendDtmfTones")?;
                let cc = check_client_context(body)?;
                let Some(tones) = body
                    .get("tones")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                else {
                    return Err(GraphError::bad_request("tones must be a non-empty array."));
                };
                for t in tones {
                    if t.as_str().and_then(graph_tone).is_none() {
                        return Err(GraphError::bad_request(format!(
                            "tones contains an invalid tone {t}."
                        )));
                    }
                }
                if let Some(d) = body.get("delayBetweenTonesMs").filter(|v| !v.is_null())
                    && d.as_i64().is_none_or(|d| d < 0)
                {
                    return Err(GraphError::bad_request(
                        "delayBetweenTonesMs must be a non-negative integer.",
                    ));
                }
                self.require_state(id, &[Established], "sendDtmfTones")?;
                Ok(self.running_op(now, id, "sendDtmfTonesOperation", cc, base))
            }
            "changescreensharingrole" => {
                need(p, &[roles::ACCESS_MEDIA])?;
                require_obj(body, "changeScreenSharingRole")?;
                match body.get("role").and_then(Value::as_str) {
                    Some("viewer" | "sharer") => {}
                    _ => {
                        return Err(GraphError::bad_request(
                            "role is required and must be viewer or sharer.",
                        ));
                    }
                }
                self.require_state(id, &[Established], "changeScreenSharingRole")?;
                Ok(GraphResponse::empty(200))
            }
            "updaterecordingstatus" => {
                need(p, &[roles::JOIN_GROUP_CALL, roles::ACCESS_MEDIA])?;
                require_obj(body, "updateRecordingStatus")?;
                let cc = check_client_context(body)?;
                let status = match body.get("status").and_then(Value::as_str) {
                    Some(st @ ("notRecording" | "recording" | "failed")) => st.to_owned(),
                    Some(other) => {
                        return Err(GraphError::bad_request(format!(
                            "status '{other}' is not one of notRecording, recording, failed."
                        )));
                    }
                    None => return Err(GraphError::bad_request("status is required.")),
                };
                self.require_state(id, &[Established], "updateRecordingStatus")?;
                let mut changed = Vec::new();
                if let Some(c) = self.calls.get_mut(id)
                    && let Some(b) = c.bot_mut()
                {
                    b.recording_status = Some(status);
                    changed.push(b.id.clone());
                }
                let op = self.new_op(id, "updateRecordingStatusOperation", "completed", cc);
                self.notify_roster(id, &changed, now);
                Ok(self.op_response(id, &op, base))
            }
            "addlargegalleryview" => {
                need(
                    p,
                    &[
                        roles::ACCESS_MEDIA,
                        roles::JOIN_GROUP_CALL,
                        roles::JOIN_GROUP_CALL_AS_GUEST,
                    ],
                )?;
                let cc = if body.is_null() {
                    None
                } else {
                    require_obj(body, action).and_then(|_| check_client_context(body))?
                };
                self.require_state(id, &[Established], "addLargeGalleryView")?;
                Ok(self.running_op(now, id, "addLargeGalleryViewOperation", cc, base))
            }
            other => Err(GraphError::bad_request(format!(
                "Resource not found for the segment '{other}'."
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn participants_route(
        &mut self,
        now: Millis,
        p: &Principal,
        method: &str,
        id: &str,
        rest: &[&str],
        body: &Value,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        let not_allowed = || {
            GraphError::new(
                405,
                "MethodNotAllowed",
                format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        };
        let group_perms = [
            roles::INITIATE_GROUP_CALL,
            roles::JOIN_GROUP_CALL,
            roles::JOIN_GROUP_CALL_AS_GUEST,
        ];
        match rest {
            [] => {
                if method != "GET" {
                    return Err(not_allowed());
                }
                need(p, &ANY_CALLS_ROLE)?;
                let c = self.visible_call(p, id)?;
                let value: Vec<Value> = c
                    .participants
                    .iter()
                    .filter(|x| x.present)
                    .map(|x| render_participant(c, x))
                    .collect();
                Ok(GraphResponse::json(
                    200,
                    json!({"@odata.context": format!("{base}/v1.0/$metadata#communications/calls('{id}')/participants"), "value": value}),
                ))
            }
            [inv] if inv.eq_ignore_ascii_case("invite") => {
                if method != "POST" {
                    return Err(not_allowed());
                }
                need(p, &[roles::INITIATE_GROUP_CALL])?;
                require_obj(body, "invite")?;
                let cc = check_client_context(body)?;
                let targets = check_targets(body.get("participants"), "participants", Some(5))?;
                self.require_state(id, &[CallState::Established], "invite")?;
                if self
                    .calls
                    .get(id)
                    .is_some_and(|c| c.kind == CallKind::PeerToPeer || c.kind == CallKind::Incoming)
                {
                    return Err(GraphError::bad_request(
                        "Invite is supported only for group calls and meetings.",
                    ));
                }
                let op = self.new_op(id, "inviteParticipantsOperation", "running", cc);
                if let Some(c) = self.calls.get_mut(id)
                    && let Some(o) = c.operations.iter_mut().find(|o| o.id == op)
                {
                    o.extra
                        .insert("participants".into(), body["participants"].clone());
                    o.extra.insert(
                        "invitees".into(),
                        Value::Array(targets.iter().map(|(k, i, d)| json!([k, i, d])).collect()),
                    );
                }
                self.schedule(
                    now + self.cfg.timing.operation_ms,
                    Timer::InviteJoin {
                        call: id.to_owned(),
                        op: op.clone(),
                    },
                );
                Ok(self.op_response(id, &op, base))
            }
            [pid] => {
                let pid = (*pid).to_owned();
                let exists = self
                    .visible_call(p, id)?
                    .participants
                    .iter()
                    .any(|x| x.id == pid && x.present);
                match method {
                    "GET" => {
                        need(p, &ANY_CALLS_ROLE)?;
                        let c = self.visible_call(p, id)?;
                        let x = c
                            .participants
                            .iter()
                            .find(|x| x.id == pid && x.present)
                            .ok_or_else(|| {
                                GraphError::not_found(format!("Participant '{pid}' was not found."))
                            })?;
                        Ok(GraphResponse::json(200, render_participant(c, x)))
                    }
                    "DELETE" => {
                        need(p, &group_perms)?;
                        if !exists {
                            return Err(GraphError::not_found(format!(
                                "Participant '{pid}' was not found."
                            )));
                        }
                        if self
                            .calls
                            .get(id)
                            .and_then(Call::bot)
                            .is_some_and(|b| b.id == pid)
                        {
                            return Err(GraphError::bad_request(
                                "The bot cannot remove itself; delete the call instead.",
                            ));
                        }
                        self.apply_leave(id, &pid, now);
                        Ok(GraphResponse::empty(204))
                    }
                    _ => Err(not_allowed()),
                }
            }
            [pid, action] => {
                if method != "POST" {
                    return Err(not_allowed());
                }
                let pid = (*pid).to_owned();
                need(
                    p,
                    &group_perms
                        .iter()
                        .chain(&[roles::INITIATE])
                        .copied()
                        .collect::<Vec<_>>(),
                )?;
                let exists = self
                    .visible_call(p, id)?
                    .participants
                    .iter()
                    .any(|x| x.id == pid && x.present);
                let a = action.to_ascii_lowercase();
                if !["mute", "startholdmusic", "stopholdmusic"].contains(&a.as_str()) {
                    return Err(GraphError::bad_request(format!(
                        "Resource not found for the segment '{action}'."
                    )));
                }
                let cc = if body.is_null() {
                    None
                } else {
                    require_obj(body, action).and_then(|_| check_client_context(body))?
                };
                if a == "startholdmusic"
                    && let Some(cp) = body.get("customPrompt").filter(|v| !v.is_null())
                    && cp
                        .pointer("/mediaInfo/uri")
                        .and_then(Value::as_str)
                        .is_none()
                {
                    return Err(GraphError::bad_request(
                        "customPrompt.mediaInfo.uri is required when customPrompt is given.",
                    ));
                }
                if !exists {
                    return Err(GraphError::not_found(format!(
                        "Participant '{pid}' was not found."
                    )));
                }
                self.require_state(id, &[CallState::Established], action)?;
                let kind = match a.as_str() {
                    "mute" => "muteParticipantOperation",
                    "startholdmusic" => "startHoldMusicOperation",
                    _ => "stopHoldMusicOperation",
                };
                let op = self.new_op(id, kind, "running", cc);
                if let Some(c) = self.calls.get_mut(id)
                    && let Some(o) = c.operations.iter_mut().find(|o| o.id == op)
                {
                    o.extra.insert("participantId".into(), json!(pid));
                }
                self.schedule(
                    now + self.cfg.timing.operation_ms,
                    Timer::CompleteOp {
                        call: id.to_owned(),
                        op: op.clone(),
                    },
                );
                Ok(self.op_response(id, &op, base))
            }
            _ => Err(GraphError::bad_request("Resource not found.")),
        }
    }

    fn arg_route(
        &mut self,
        p: &Principal,
        method: &str,
        id: &str,
        rest: &[&str],
        body: &Value,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        let not_allowed = || {
            GraphError::new(
                405,
                "MethodNotAllowed",
                format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        };
        need(
            p,
            &[
                roles::JOIN_GROUP_CALL,
                roles::INITIATE_GROUP_CALL,
                roles::ACCESS_MEDIA,
            ],
        )?;
        let ctx = format!("{base}/v1.0/$metadata#communications/calls('{id}')/audioRoutingGroups");
        match (method, rest) {
            ("GET", []) => {
                let c = self.visible_call(p, id)?;
                Ok(GraphResponse::json(
                    200,
                    json!({"@odata.context": ctx, "value": c.audio_routing_groups.values().cloned().collect::<Vec<_>>()}),
                ))
            }
            ("POST", []) => {
                let mut g = self.check_arg(id, body, true)?;
                let gid = match g.get("id").and_then(Value::as_str) {
                    Some(x) if !x.is_empty() => x.to_owned(),
                    _ => self.uuid(),
                };
                if self
                    .calls
                    .get(id)
                    .is_some_and(|c| c.audio_routing_groups.contains_key(&gid))
                {
                    return Err(GraphError::conflict(format!(
                        "Audio routing group '{gid}' already exists."
                    )));
                }
                g["id"] = json!(gid);
                g["@odata.type"] = json!("#microsoft.graph.audioRoutingGroup");
                if let Some(c) = self.calls.get_mut(id) {
                    c.audio_routing_groups.insert(gid.clone(), g.clone());
                }
                Ok(GraphResponse {
                    status: 201,
                    body: Some(g),
                    location: Some(format!(
                        "{base}/v1.0/communications/calls/{id}/audioRoutingGroups/{gid}"
                    )),
                })
            }
            ("GET", [gid]) => {
                let c = self.visible_call(p, id)?;
                let g = c.audio_routing_groups.get(*gid).ok_or_else(|| {
                    GraphError::not_found(format!("Audio routing group '{gid}' was not found."))
                })?;
                Ok(GraphResponse::json(200, g.clone()))
            }
            ("PATCH", [gid]) => {
                let existing = self
                    .calls
                    .get(id)
                    .and_then(|c| c.audio_routing_groups.get(*gid))
                    .cloned()
                    .ok_or_else(|| {
                        GraphError::not_found(format!("Audio routing group '{gid}' was not found."))
                    })?;
                let patch = require_obj(body, "audioRoutingGroup")?.clone();
                let mut merged = existing;
                for (k, v) in patch {
                    if k != "id" {
                        merged[k] = v;
                    }
                }
                let merged = self.check_arg(id, &merged, false)?;
                if let Some(c) = self.calls.get_mut(id) {
                    c.audio_routing_groups
                        .insert((*gid).to_owned(), merged.clone());
                }
                Ok(GraphResponse::json(200, merged))
            }
            ("DELETE", [gid]) => {
                let removed = self
                    .calls
                    .get_mut(id)
                    .and_then(|c| c.audio_routing_groups.remove(*gid));
                if removed.is_none() {
                    return Err(GraphError::not_found(format!(
                        "Audio routing group '{gid}' was not found."
                    )));
                }
                Ok(GraphResponse::empty(204))
            }
            (_, [] | [_]) => Err(not_allowed()),
            _ => Err(GraphError::bad_request("Resource not found.")),
        }
    }

    fn check_arg(&self, id: &str, body: &Value, creating: bool) -> Result<Value, GraphError> {
        let obj = require_obj(body, "audioRoutingGroup")?;
        let mode = obj.get("routingMode").and_then(Value::as_str);
        if !matches!(mode, Some("oneToOne" | "multicast")) {
            return Err(GraphError::bad_request(
                "routingMode is required and must be oneToOne or multicast.",
            ));
        }
        let list = |k: &str| -> Result<Vec<String>, GraphError> {
            obj.get(k)
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    GraphError::bad_request(format!(
                        "{k} must be a non-empty array of participant ids."
                    ))
                })?
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        GraphError::bad_request(format!("{k} must contain strings."))
                    })
                })
                .collect()
        };
        let sources = list("sources")?;
        let receivers = list("receivers")?;
        if mode == Some("oneToOne") && sources.len() != 1 {
            return Err(GraphError::bad_request(
                "A oneToOne audio routing group has exactly one source.",
            ));
        }
        let c = self
            .calls
            .get(id)
            .ok_or_else(|| GraphError::not_found("Call not found."))?;
        for pid in sources.iter().chain(&receivers) {
            if !c.participants.iter().any(|x| &x.id == pid && x.present) {
                return Err(GraphError::bad_request(format!(
                    "Participant '{pid}' in the audio routing group is not in the call."
                )));
            }
        }
        let _ = creating;
        Ok(Value::Object(obj.clone()))
    }

    // ---------------------------------------------------------------- create / ring

    #[allow(clippy::too_many_lines)]
    fn create_call(
        &mut self,
        now: Millis,
        p: &Principal,
        body: &Value,
        base: &str,
    ) -> Result<GraphResponse, GraphError> {
        let obj = require_obj(body, "create call")?;
        if let Some(t) = odata_type(body)
            && t != "call"
        {
            return Err(GraphError::bad_request(format!(
                "@odata.type '{t}' is not valid here; expected #microsoft.graph.call."
            )));
        }
        let cb = check_url(
            obj.get("callbackUri"),
            "callbackUri",
            self.cfg.require_https_callbacks,
        )?;
        let (blob, service) = check_media_config(obj.get("mediaConfig"))?;
        check_modalities(obj.get("requestedModalities"), "requestedModalities", true)?;
        if let Some(co) = obj.get("callOptions").filter(|v| !v.is_null()) {
            match odata_type(co) {
                None | Some("outgoingCallOptions") => {}
                Some(t) => {
                    return Err(GraphError::bad_request(format!(
                        "callOptions of type '{t}' is not valid for create call; use outgoingCallOptions."
                    )));
                }
            }
        }
        let source_kind = match obj.get("source").filter(|v| !v.is_null()) {
            Some(src) => Some(check_identity_set(src.get("identity"), "source.identity")?.0),
            None => None,
        };
        let meeting = obj.get("meetingInfo").filter(|v| !v.is_null());
        let chat = obj.get("chatInfo").filter(|v| !v.is_null());
        let targets = obj.get("targets").filter(|v| !v.is_null());
        let (kind, perm): (CallKind, &str) = match (meeting, targets) {
            (Some(_), Some(_)) => {
                return Err(GraphError::bad_request(
                    "targets cannot be combined with meetingInfo; join a meeting or call targets.",
                ));
            }
            (Some(m), None) => {
                match odata_type(m) {
                    Some("organizerMeetingInfo") => {
                        check_identity_set(m.get("organizer"), "meetingInfo.organizer")?;
                        if chat
                            .and_then(|c| c.get("threadId"))
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            return Err(GraphError::bad_request(
                                "chatInfo.threadId is required to join a meeting with organizerMeetingInfo.",
                            ));
                        }
                    }
                    Some("joinMeetingIdMeetingInfo") => {
                        if m.get("joinMeetingId")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            return Err(GraphError::bad_request(
                                "meetingInfo.joinMeetingId is required.",
                            ));
                        }
                    }
                    Some("tokenMeetingInfo") => {
                        if m.get("token")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            return Err(GraphError::bad_request("meetingInfo.token is required."));
                        }
                    }
                    _ => {
                        return Err(GraphError::bad_request(
                            "meetingInfo must be organizerMeetingInfo, joinMeetingIdMeetingInfo or tokenMeetingInfo.",
                        ));
                    }
                }
                let guest = source_kind.as_deref() == Some("guest");
                (
                    CallKind::Meeting,
                    if guest {
                        roles::JOIN_GROUP_CALL_AS_GUEST
                    } else {
                        roles::JOIN_GROUP_CALL
                    },
                )
            }
            (None, Some(_)) => {
                let t = check_targets(targets, "targets", None)?;
                if t.len() == 1 {
                    (CallKind::PeerToPeer, roles::INITIATE)
                } else {
                    (CallKind::Group, roles::INITIATE_GROUP_CALL)
                }
            }
            (None, None) => {
                return Err(GraphError::bad_request(
                    "Either targets or meetingInfo (with chatInfo) is required.",
                ));
            }
        };
        need(p, &[perm])?;
        if blob.is_some() {
            need(p, &[roles::ACCESS_MEDIA])?;
        }
        if let Some(t) = obj.get("tenantId").filter(|v| !v.is_null()) {
            match t.as_str() {
                Some(t) if t.eq_ignore_ascii_case(&p.tenant_id) => {}
                Some(_) => return Err(GraphError::tenant_mismatch()),
                None => return Err(GraphError::bad_request("tenantId must be a string.")),
            }
        }
        // Find the scenario meeting this call joins, if any.
        let mut scenario = None;
        let mut passcode_ok = true;
        if kind == CallKind::Meeting {
            let thread = chat.and_then(|c| s(c, "threadId"));
            let jmid = meeting.and_then(|m| s(m, "joinMeetingId"));
            for run in &self.scenarios {
                let by_thread = thread.is_some() && thread == run.thread_id;
                let by_id = jmid.is_some() && jmid == run.join_meeting_id;
                if by_thread || by_id {
                    scenario = Some(run.id);
                    if by_id
                        && let Some(pc) = run
                            .scenario
                            .meeting
                            .as_ref()
                            .and_then(|m| m.passcode.clone())
                    {
                        passcode_ok =
                            meeting.and_then(|m| s(m, "passcode")).as_deref() == Some(pc.as_str());
                    }
                    break;
                }
            }
        }
        let id = self.uuid();
        let mut props = Map::new();
        for k in [
            "source",
            "targets",
            "requestedModalities",
            "mediaConfig",
            "chatInfo",
            "meetingInfo",
            "callOptions",
            "subject",
        ] {
            if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
                props.insert(k.to_owned(), v.clone());
            }
        }
        let chain = obj
            .get("callChainId")
            .and_then(Value::as_str)
            .map_or_else(|| self.uuid(), str::to_owned);
        props.insert("callChainId".into(), json!(chain));
        let delta = obj
            .get("callOptions")
            .and_then(|c| c.get("isDeltaRosterEnabled"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let notify = scenario
            .and_then(|i| self.scenarios.get(i))
            .and_then(|r| r.scenario.notifications.clone())
            .unwrap_or_else(|| self.cfg.notify.clone());
        let app_name = self
            .dir
            .app(&p.app_id)
            .map(|a| a.display_name.clone())
            .unwrap_or_default();
        let mut call = Call {
            id: id.clone(),
            app_id: p.app_id.clone(),
            tenant_id: p.tenant_id.clone(),
            callback_uri: cb,
            state: CallState::Establishing,
            kind: kind.clone(),
            direction: "outgoing",
            props,
            app_hosted_blob: blob,
            service_hosted: service,
            participants: Vec::new(),
            operations: Vec::new(),
            audio_routing_groups: BTreeMap::new(),
            created_at: now,
            established_at: None,
            last_keepalive: now,
            tones_subscribed: false,
            tone_seq: 0,
            scenario,
            policy_recording: false,
            delta_roster: delta,
            result_info: None,
            notify,
            media_status: "pending".into(),
            bot_muted: false,
            next_source_id: 1,
            etag: 0,
        };
        let bot_id = self.uuid();
        add_participant(
            &mut call,
            bot_id,
            String::new(),
            app_name,
            p.app_id.clone(),
            p.tenant_id.clone(),
            false,
            true,
        );
        if let Some(b) = call.participants.last_mut() {
            b.present = true;
        }
        // Targets of outgoing calls become participants when the call is established.
        if kind != CallKind::Meeting
            && let Some(ts) = targets.and_then(Value::as_array)
        {
            for t in ts {
                let (k, ident, dn) = check_identity_set(t.get("identity"), "targets.identity")?;
                let pid = self.uuid();
                add_participant(
                    &mut call,
                    pid,
                    String::new(),
                    dn,
                    ident,
                    p.tenant_id.clone(),
                    k == "guest",
                    false,
                );
            }
        }
        if let Some(i) = scenario {
            self.add_scenario_people(&mut call, i);
            if let Some(run) = self.scenarios.get_mut(i) {
                run.calls.push(id.clone());
            }
        }
        self.calls.insert(id.clone(), call);
        self.call_order.push(id.clone());
        self.prune_calls();
        tracing::info!(call_id = %id, app = %p.app_id, kind = ?kind, "graph: call created");
        if passcode_ok {
            self.start_establishing(&id, now);
        } else {
            self.schedule(
                now + self.cfg.timing.establish_ms,
                Timer::EndCall {
                    call: id.clone(),
                    code: 403,
                    subcode: 7507,
                    message: "The meeting passcode is not valid.".into(),
                },
            );
        }
        let c = self.calls.get(&id).ok_or_else(|| GraphError::server(500))?;
        let mut v = render_call(c);
        v["@odata.context"] = json!(format!(
            "{base}/v1.0/$metadata#communications/calls/$entity"
        ));
        Ok(GraphResponse {
            status: 201,
            body: Some(v),
            location: Some(format!("{base}/v1.0/communications/calls/{id}")),
        })
    }

    fn add_scenario_people(&mut self, call: &mut Call, idx: usize) {
        let Some(run) = self.scenarios.get(idx) else {
            return;
        };
        let tenant = run
            .organizer
            .as_ref()
            .map_or_else(|| self.cfg.tenant_id.clone(), |o| o.1.clone());
        let specs = run.scenario.participants.clone();
        for sp in specs {
            let pid = self.uuid();
            let uid = sp.user_id.clone().unwrap_or_else(|| self.uuid());
            let dn = sp.display_name.clone().unwrap_or_else(|| sp.handle.clone());
            add_participant(
                call,
                pid,
                sp.handle.clone(),
                dn,
                uid,
                tenant.clone(),
                sp.guest,
                false,
            );
        }
    }

    fn start_establishing(&mut self, id: &str, now: Millis) {
        let ooo = self
            .calls
            .get(id)
            .is_some_and(|c| c.notify.establish_out_of_order);
        if let Some(c) = self.calls.get_mut(id) {
            c.state = CallState::Establishing;
        }
        if ooo {
            // Establishing is emitted after established, from the same timer.
            self.schedule(
                now + self.cfg.timing.establish_ms,
                Timer::Established(id.to_owned()),
            );
        } else {
            self.schedule(now, Timer::Establishing(id.to_owned()));
            self.schedule(
                now + self.cfg.timing.establish_ms,
                Timer::Established(id.to_owned()),
            );
        }
    }

    /// Rings an app with an incoming call; returns the call id.
    ///
    /// # Errors
    /// A message when the app is unknown or has no calling webhook.
    pub fn ring(
        &mut self,
        now: Millis,
        inc: &IncomingCall,
        scenario: Option<usize>,
    ) -> Result<String, String> {
        let app = match &inc.app_id {
            Some(a) => self
                .dir
                .app(a)
                .cloned()
                .ok_or_else(|| format!("no app with client id {a}"))?,
            None => self
                .dir
                .apps()
                .into_iter()
                .next()
                .ok_or("no app is registered")?,
        };
        let webhook = app
            .calling_webhook
            .clone()
            .ok_or_else(|| format!("app {} has no calling_webhook to ring", app.client_id))?;
        let id = self.uuid();
        let caller_id = inc.caller_id.clone().unwrap_or_else(|| self.uuid());
        let caller_name = inc.caller_name.clone().unwrap_or_else(|| "Caller".into());
        let notify = scenario
            .and_then(|i| self.scenarios.get(i))
            .and_then(|r| r.scenario.notifications.clone())
            .unwrap_or_else(|| self.cfg.notify.clone());
        let mut props = Map::new();
        props.insert(
            "source".into(),
            json!({"@odata.type": "#microsoft.graph.participantInfo", "identity": identity_set("user", &caller_id, &caller_name, &app.tenant_id), "region": "amer", "languageId": "en-US"}),
        );
        props.insert(
            "targets".into(),
            json!([{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": identity_set("application", &app.client_id, &app.display_name, &app.tenant_id)}]),
        );
        props.insert("requestedModalities".into(), json!(["audio"]));
        let chain = self.uuid();
        props.insert("callChainId".into(), json!(chain));
        let mut call = Call {
            id: id.clone(),
            app_id: app.client_id.clone(),
            tenant_id: app.tenant_id.clone(),
            callback_uri: webhook,
            state: CallState::Incoming,
            kind: CallKind::Incoming,
            direction: "incoming",
            props,
            app_hosted_blob: None,
            service_hosted: false,
            participants: Vec::new(),
            operations: Vec::new(),
            audio_routing_groups: BTreeMap::new(),
            created_at: now,
            established_at: None,
            last_keepalive: now,
            tones_subscribed: false,
            tone_seq: 0,
            scenario,
            policy_recording: inc.policy_recording,
            delta_roster: false,
            result_info: None,
            notify,
            media_status: "pending".into(),
            bot_muted: false,
            next_source_id: 1,
            etag: 0,
        };
        let bot_id = self.uuid();
        add_participant(
            &mut call,
            bot_id,
            String::new(),
            app.display_name.clone(),
            app.client_id.clone(),
            app.tenant_id.clone(),
            false,
            true,
        );
        if let Some(b) = call.participants.last_mut() {
            b.present = true;
        }
        match scenario {
            Some(i) => self.add_scenario_people(&mut call, i),
            None => {
                let pid = self.uuid();
                add_participant(
                    &mut call,
                    pid,
                    "caller".into(),
                    caller_name,
                    caller_id.clone(),
                    app.tenant_id.clone(),
                    false,
                    false,
                );
            }
        }
        if inc.policy_recording {
            let observed = call
                .participants
                .iter()
                .find(|x| !x.is_bot)
                .map(|x| x.id.clone())
                .unwrap_or_default();
            call.props.insert(
                "incomingContext".into(),
                json!({"@odata.type": "#microsoft.graph.incomingContext", "observedParticipantId": observed, "sourceParticipantId": observed}),
            );
        }
        self.calls.insert(id.clone(), call);
        self.call_order.push(id.clone());
        self.prune_calls();
        let deadline = if inc.policy_recording {
            self.cfg.timing.policy_answer_deadline_ms
        } else {
            self.cfg.timing.answer_deadline_ms
        };
        self.schedule(now + deadline, Timer::AnswerDeadline(id.clone()));
        self.notify_call(&id, "created", now);
        tracing::info!(call_id = %id, app = %app.client_id, policy = inc.policy_recording, "ringing bot");
        self.run_due(now);
        Ok(id)
    }

    // ---------------------------------------------------------------- scenarios

    /// Starts a scenario: registers its meeting (or rings for an incoming one) and its faults.
    ///
    /// # Errors
    /// A message when an incoming scenario cannot ring.
    pub fn start_scenario(
        &mut self,
        scenario: Scenario,
        now: Millis,
    ) -> Result<ScenarioRun, String> {
        let idx = self.scenarios.len();
        let mut run = ScenarioRun {
            id: idx,
            scenario: scenario.clone(),
            started_at: now,
            thread_id: None,
            join_meeting_id: None,
            join_url: None,
            organizer: None,
            incoming_call_id: None,
            calls: Vec::new(),
        };
        if let Some(m) = &scenario.meeting {
            let thread = m.thread_id.clone().unwrap_or_else(|| {
                format!("19:meeting_{}@thread.v2", self.uuid().replace('-', ""))
            });
            let jmid = m.join_meeting_id.clone().unwrap_or_else(|| {
                format!(
                    "{:012}",
                    self.rng.random_range(100_000_000_000u64..999_999_999_999)
                )
            });
            let tenant = m
                .tenant_id
                .clone()
                .unwrap_or_else(|| self.cfg.tenant_id.clone());
            let org_id = match &m.organizer {
                Some(h) => scenario
                    .participants
                    .iter()
                    .find(|p| &p.handle == h)
                    .and_then(|p| p.user_id.clone())
                    .unwrap_or_else(|| self.uuid()),
                None => self.uuid(),
            };
            let ctx = format!("{{\"Tid\":\"{tenant}\",\"Oid\":\"{org_id}\"}}");
            let enc =
                |x: &str| url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
            run.join_url = Some(format!(
                "https://teams.microsoft.com/l/meetup-join/{}/0?context={}",
                enc(&thread),
                enc(&ctx)
            ));
            run.thread_id = Some(thread);
            run.join_meeting_id = Some(jmid);
            run.organizer = Some((org_id, tenant));
        }
        self.add_faults(&scenario.fault, now);
        self.scenarios.push(run);
        if let Some(inc) = &scenario.incoming {
            let caller = inc
                .caller
                .clone()
                .or_else(|| scenario.participants.first().map(|p| p.handle.clone()));
            let sp = scenario
                .participants
                .iter()
                .find(|p| Some(&p.handle) == caller.as_ref());
            let ring = IncomingCall {
                app_id: inc.app.clone(),
                caller_name: sp.map(|p| p.display_name.clone().unwrap_or_else(|| p.handle.clone())),
                caller_id: sp.and_then(|p| p.user_id.clone()),
                policy_recording: inc.policy_recording,
            };
            match self.ring(now, &ring, Some(idx)) {
                Ok(call) => {
                    if let Some(r) = self.scenarios.get_mut(idx) {
                        r.incoming_call_id = Some(call.clone());
                        r.calls.push(call);
                    }
                }
                Err(e) => {
                    self.scenarios.pop();
                    return Err(e);
                }
            }
        }
        tracing::info!(scenario = %scenario.name, id = idx, "scenario started");
        self.scenarios
            .get(idx)
            .cloned()
            .ok_or_else(|| "scenario vanished".into())
    }

    /// Applies a participant action to a live call now (control API).
    ///
    /// # Errors
    /// A message when the call or participant is unknown.
    pub fn participant_action(
        &mut self,
        call_id: &str,
        who: &str,
        action: Action,
        now: Millis,
    ) -> Result<(), String> {
        let c = self.calls.get(call_id).ok_or("no such call")?;
        if !c.is_live() {
            return Err("the call has ended".into());
        }
        let known = c
            .participants
            .iter()
            .any(|p| !p.is_bot && (p.handle == who || p.id == who));
        if !known {
            if let Action::Join { lobby } = action {
                // A new ad-hoc participant.
                let pid = self.uuid();
                let uid = self.uuid();
                let tenant = self.cfg.tenant_id.clone();
                if let Some(c) = self.calls.get_mut(call_id) {
                    add_participant(
                        c,
                        pid,
                        who.to_owned(),
                        who.to_owned(),
                        uid,
                        tenant,
                        false,
                        false,
                    );
                }
                self.apply_action(call_id, who, &Action::Join { lobby }, now);
                self.run_due(now);
                return Ok(());
            }
            return Err(format!("no participant {who:?} in call"));
        }
        self.apply_action(call_id, who, &action, now);
        self.run_due(now);
        Ok(())
    }

    /// Ends a call from the far side (control API "hang up").
    pub fn remote_hangup(&mut self, call_id: &str, now: Millis) -> bool {
        if self.calls.get(call_id).is_some_and(Call::is_live) {
            self.end_call(
                call_id,
                now,
                200,
                5000,
                "The call was ended by the remote party.",
                true,
            );
            self.run_due(now);
            true
        } else {
            false
        }
    }

    fn schedule_scenario_timeline(&mut self, call_id: &str, now: Millis) {
        let Some(idx) = self.calls.get(call_id).and_then(|c| c.scenario) else {
            return;
        };
        let Some(run) = self.scenarios.get(idx) else {
            return;
        };
        let sc = run.scenario.clone();
        for p in &sc.participants {
            let h = p.handle.clone();
            let push = |this: &mut Self, at: Millis, action: Action| {
                this.schedule(
                    now + at,
                    Timer::Scenario {
                        call: call_id.to_owned(),
                        handle: h.clone(),
                        action,
                    },
                );
            };
            push(
                self,
                p.join_at,
                Action::Join {
                    lobby: p.lobby_until.is_some_and(|l| l > p.join_at),
                },
            );
            if let Some(l) = p.lobby_until
                && l > p.join_at
            {
                push(self, l, Action::Admit);
            }
            for m in &p.mute {
                push(self, m.at, Action::Mute);
            }
            for m in &p.unmute {
                push(self, m.at, Action::Unmute);
            }
            for t in &p.tone {
                push(
                    self,
                    t.at,
                    Action::Tone {
                        tone: t.tone.clone(),
                    },
                );
            }
            if let Some(l) = p.leave_at {
                push(self, l, Action::Leave);
            }
        }
        if let Some(end) = sc.end_at {
            self.schedule(
                now + end,
                Timer::EndCall {
                    call: call_id.to_owned(),
                    code: 200,
                    subcode: 5000,
                    message: "The meeting has ended.".into(),
                },
            );
        }
    }

    fn apply_action(&mut self, call_id: &str, who: &str, action: &Action, now: Millis) {
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        if !c.is_live() {
            return;
        }
        let Some(p) = c
            .participants
            .iter_mut()
            .find(|p| !p.is_bot && (p.handle == who || p.id == who))
        else {
            return;
        };
        let pid = p.id.clone();
        let sid = p.source_id;
        match action {
            Action::Join { lobby } => {
                if p.present {
                    return;
                }
                p.present = true;
                p.in_lobby = *lobby;
            }
            Action::Admit => {
                if !p.present || !p.in_lobby {
                    return;
                }
                p.in_lobby = false;
            }
            Action::Leave => {
                if !p.present {
                    return;
                }
                p.present = false;
                p.in_lobby = false;
            }
            Action::Mute | Action::Unmute => {
                let m = *action == Action::Mute;
                if !p.present || p.muted == m {
                    return;
                }
                p.muted = m;
            }
            Action::Tone { tone } => {
                let present = p.present;
                let Some(t) = graph_tone(tone) else { return };
                if !present {
                    return;
                }
                let started = c.media_status.starts_with("started");
                if started {
                    self.media.push(MediaCommand::Event(
                        call_id.to_owned(),
                        MediaEvent::Tone {
                            source_id: sid,
                            tone: t.to_owned(),
                        },
                    ));
                }
                if c.tones_subscribed {
                    c.tone_seq += 1;
                    c.props.insert(
                        "toneInfo".into(),
                        json!({"@odata.type": "#microsoft.graph.toneInfo", "sequenceId": c.tone_seq, "tone": t}),
                    );
                    self.notify_call(call_id, "updated", now);
                    if let Some(c) = self.calls.get_mut(call_id) {
                        c.props.remove("toneInfo");
                    }
                }
                return;
            }
        }
        self.notify_roster(call_id, &[pid], now);
    }

    fn apply_leave(&mut self, call_id: &str, pid: &str, now: Millis) {
        if let Some(c) = self.calls.get_mut(call_id)
            && let Some(p) = c.participants.iter_mut().find(|p| p.id == pid)
        {
            p.present = false;
            p.in_lobby = false;
        }
        self.notify_roster(call_id, &[pid.to_owned()], now);
    }

    fn finish_op(&mut self, call_id: &str, op_id: &str, status: &str, info: Value, now: Millis) {
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(op) = c.operations.iter_mut().find(|o| o.id == op_id) else {
            return;
        };
        if op.status != "running" {
            return;
        }
        op.status = status.to_owned();
        op.result_info = Some(info);
        self.notify_op(call_id, op_id, now);
    }

    /// Ends a call: `terminated` state, `deleted` notification (unless already ended).
    fn end_call(
        &mut self,
        id: &str,
        now: Millis,
        code: i64,
        subcode: i64,
        message: &str,
        via_terminating: bool,
    ) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if !c.is_live() {
            return;
        }
        if via_terminating && c.state == CallState::Established {
            c.state = CallState::Terminating;
            self.notify_call(id, "updated", now);
        }
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = CallState::Terminated;
        c.result_info = Some(result_info(code, subcode, message));
        let started = c.media_status.starts_with("started");
        for p in &mut c.participants {
            p.present = false;
        }
        // Pending operations of an ended call never complete.
        let pending: Vec<String> = c
            .operations
            .iter()
            .filter(|o| o.status == "running")
            .map(|o| o.id.clone())
            .collect();
        for op in pending {
            self.finish_op(
                id,
                &op,
                "failed",
                result_info(410, 0, "The call ended before the operation completed."),
                now,
            );
        }
        self.notify_call(id, "deleted", now);
        if started {
            self.media
                .push(MediaCommand::Event(id.to_owned(), MediaEvent::Ended));
        }
        // Drop this call's timers.
        self.timers.retain(|_, t| timer_call(t) != Some(id));
        tracing::info!(call_id = %id, code, message, "call terminated");
    }

    // ---------------------------------------------------------------- timers

    #[allow(clippy::too_many_lines)]
    fn fire(&mut self, now: Millis, t: Timer) {
        match t {
            Timer::Establishing(id) => {
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.state == CallState::Establishing)
                {
                    self.notify_call(&id, "updated", now);
                }
            }
            Timer::Established(id) => {
                let ooo = {
                    let Some(c) = self.calls.get_mut(&id) else {
                        return;
                    };
                    if c.state != CallState::Establishing {
                        return;
                    }
                    c.notify.establish_out_of_order
                };
                let early = if ooo {
                    self.call_item(&id, "updated")
                } else {
                    None
                };
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                c.state = CallState::Established;
                c.established_at = Some(now);
                c.last_keepalive = now;
                // Outgoing targets answer; incoming callers are there.
                let scenario_call = c.scenario.is_some();
                for p in &mut c.participants {
                    if !p.is_bot && !scenario_call {
                        p.present = true;
                    }
                }
                let my = c.bot().map(|b| b.id.clone()).unwrap_or_default();
                c.props.insert("myParticipantId".into(), json!(my));
                if let Some(est) = self.call_item(&id, "updated") {
                    // Out of order: established first, then the stale establishing.
                    let items = match early {
                        Some(e) => vec![est, e],
                        None => vec![est],
                    };
                    if ooo {
                        for i in items {
                            self.emit(&id, vec![i], now);
                        }
                    } else {
                        self.emit(&id, items, now);
                    }
                }
                // The first roster lists everyone present, in delta mode too.
                let present: Vec<String> = self
                    .calls
                    .get(&id)
                    .map(|c| {
                        c.participants
                            .iter()
                            .filter(|p| p.present)
                            .map(|p| p.id.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                self.notify_roster(&id, &present, now);
                self.start_media(&id, now);
                self.schedule_scenario_timeline(&id, now);
                self.schedule(
                    now + self.cfg.timing.keepalive_timeout_ms,
                    Timer::KeepAliveCheck(id),
                );
            }
            Timer::CompleteOp { call, op } => {
                let kind = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.operations.iter().find(|o| o.id == op))
                    .map(|o| {
                        (
                            o.kind.clone(),
                            o.extra
                                .get("participantId")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        )
                    });
                let Some((kind, target)) = kind else { return };
                let mut info = result_info(200, 0, "Action completed successfully.");
                if let Some(c) = self.calls.get_mut(&call)
                    && let Some(o) = c.operations.iter_mut().find(|o| o.id == op)
                {
                    match kind.as_str() {
                        "recordOperation" => {
                            info = result_info(
                                200,
                                8515,
                                "Action completed, max record duration reached.",
                            );
                            o.extra.insert(
                                "recordingLocation".into(),
                                json!(format!("https://emulator.invalid/recordings/{op}.wav")),
                            );
                            o.extra
                                .insert("recordingAccessToken".into(), json!(format!("rec-{op}")));
                        }
                        "sendDtmfTonesOperation" => {
                            o.extra
                                .insert("completionReason".into(), json!("completedSuccessfully"));
                        }
                        _ => {}
                    }
                }
                self.finish_op(&call, &op, "completed", info, now);
                if let Some(pid) = target {
                    let mut changed = false;
                    if let Some(c) = self.calls.get_mut(&call)
                        && let Some(p) = c.participants.iter_mut().find(|p| p.id == pid)
                    {
                        match kind.as_str() {
                            "muteParticipantOperation" => {
                                changed = !std::mem::replace(&mut p.muted, true)
                            }
                            "startHoldMusicOperation" => {
                                changed = !std::mem::replace(&mut p.on_hold, true)
                            }
                            "stopHoldMusicOperation" => {
                                changed = std::mem::replace(&mut p.on_hold, false)
                            }
                            _ => {}
                        }
                    }
                    if changed {
                        self.notify_roster(&call, &[pid], now);
                    }
                }
            }
            Timer::InviteJoin { call, op } => {
                let invitees: Vec<Value> = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.operations.iter().find(|o| o.id == op))
                    .and_then(|o| o.extra.get("invitees"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let tenant = self
                    .calls
                    .get(&call)
                    .map(|c| c.tenant_id.clone())
                    .unwrap_or_default();
                let mut changed = Vec::new();
                for inv in invitees {
                    let k = inv[0].as_str().unwrap_or("user").to_owned();
                    let ident = inv[1].as_str().unwrap_or_default().to_owned();
                    let dn = inv[2].as_str().unwrap_or_default().to_owned();
                    let pid = self.uuid();
                    if let Some(c) = self.calls.get_mut(&call) {
                        add_participant(
                            c,
                            pid.clone(),
                            String::new(),
                            dn,
                            ident,
                            tenant.clone(),
                            k == "guest",
                            false,
                        );
                        if let Some(p) = c.participants.last_mut() {
                            p.present = true;
                        }
                    }
                    changed.push(pid);
                }
                if let Some(c) = self.calls.get_mut(&call)
                    && let Some(o) = c.operations.iter_mut().find(|o| o.id == op)
                {
                    o.extra.remove("invitees");
                }
                self.finish_op(
                    &call,
                    &op,
                    "completed",
                    result_info(200, 0, "Invitation accepted."),
                    now,
                );
                self.notify_roster(&call, &changed, now);
            }
            Timer::AnswerDeadline(id) => {
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.state == CallState::Incoming)
                {
                    self.counters.answer_deadlines_missed += 1;
                    let policy = self.calls.get(&id).is_some_and(|c| c.policy_recording);
                    let secs = if policy {
                        self.cfg.timing.policy_answer_deadline_ms
                    } else {
                        self.cfg.timing.answer_deadline_ms
                    } / 1000;
                    self.end_call(
                        &id,
                        now,
                        408,
                        0,
                        &format!("The call was not answered within {secs} s."),
                        false,
                    );
                }
            }
            Timer::KeepAliveCheck(id) => {
                let Some(c) = self.calls.get(&id) else { return };
                if !c.is_live() {
                    return;
                }
                let due = c.last_keepalive + self.cfg.timing.keepalive_timeout_ms;
                if now >= due {
                    self.counters.keepalive_timeouts += 1;
                    self.end_call(
                        &id,
                        now,
                        408,
                        0,
                        "The call was ended because no keepAlive was received for 45 minutes.",
                        true,
                    );
                } else {
                    self.schedule(due, Timer::KeepAliveCheck(id));
                }
            }
            Timer::Scenario {
                call,
                handle,
                action,
            } => self.apply_action(&call, &handle, &action, now),
            Timer::EndCall {
                call,
                code,
                subcode,
                message,
            } => self.end_call(&call, now, code, subcode, &message, true),
            Timer::TransferStep { call, step } => {
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                if step == 1 && c.state == CallState::Transferring {
                    c.state = CallState::TransferAccepted;
                    self.notify_call(&call, "updated", now);
                    self.schedule(
                        now + self.cfg.timing.transfer_ms,
                        Timer::TransferStep { call, step: 2 },
                    );
                } else if step == 2 && c.state == CallState::TransferAccepted {
                    self.end_call(&call, now, 200, 7015, "The call was transferred.", false);
                }
            }
        }
    }

    fn start_media(&mut self, id: &str, now: Millis) {
        let Some(c) = self.calls.get(id) else { return };
        let Some(blob) = c.app_hosted_blob.clone() else {
            let status = if c.service_hosted {
                "service-hosted"
            } else {
                "none"
            };
            if let Some(c) = self.calls.get_mut(id) {
                c.media_status = status.into();
            }
            return;
        };
        let blob = match MediaBlob::decode(&blob) {
            Ok(b) => b,
            Err(e) => {
                if let Some(c) = self.calls.get_mut(id) {
                    c.media_status = format!("blob not in mediabot's format ({e}); no media");
                }
                return;
            }
        };
        let mut speech = Vec::new();
        let network = c
            .scenario
            .and_then(|i| self.scenarios.get(i))
            .and_then(|run| run.scenario.network.clone());
        if let Some(run) = c.scenario.and_then(|i| self.scenarios.get(i)) {
            for sp in &run.scenario.participants {
                let Some(p) = c.participants.iter().find(|p| p.handle == sp.handle) else {
                    continue;
                };
                for seg in &sp.speak {
                    speech.push(SpeechSegment {
                        handle: sp.handle.clone(),
                        source_id: p.source_id,
                        start_ms: seg.at,
                        duration_ms: seg.duration,
                        audio: match (&seg.wav, seg.synth) {
                            (Some(w), _) => AudioSource::Wav(w.clone()),
                            (None, s) => AudioSource::Synth(s.unwrap_or(u64::from(p.source_id))),
                        },
                    });
                }
            }
        }
        let session = MediaSession {
            call_id: id.to_owned(),
            blob,
            participants: media_roster(c),
            bot_source_id: c.bot().map_or(0, |b| b.source_id),
            speech,
            established_at_ms: now,
            network,
        };
        if let Some(c) = self.calls.get_mut(id) {
            c.media_status = "started".into();
        }
        self.media.push(MediaCommand::Start(session));
    }
}

fn timer_call(t: &Timer) -> Option<&str> {
    match t {
        Timer::Establishing(c)
        | Timer::Established(c)
        | Timer::AnswerDeadline(c)
        | Timer::KeepAliveCheck(c) => Some(c),
        Timer::CompleteOp { call, .. }
        | Timer::Scenario { call, .. }
        | Timer::EndCall { call, .. }
        | Timer::TransferStep { call, .. }
        | Timer::InviteJoin { call, .. } => Some(call),
    }
}

#[allow(clippy::too_many_arguments)]
fn add_participant(
    call: &mut Call,
    id: String,
    handle: String,
    display_name: String,
    identity_id: String,
    tenant_id: String,
    guest: bool,
    is_bot: bool,
) {
    let source_id = call.next_source_id;
    call.next_source_id += 1;
    let wants_video = call
        .props
        .get("requestedModalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "video"));
    let video_source_id = wants_video.then(|| {
        let v = call.next_source_id;
        call.next_source_id += 1;
        v
    });
    call.participants.push(Participant {
        id,
        handle,
        display_name,
        identity_id,
        tenant_id,
        guest,
        is_bot,
        source_id,
        muted: false,
        in_lobby: false,
        present: false,
        recording_status: None,
        on_hold: false,
        video_source_id,
    });
}

fn media_roster(c: &Call) -> Vec<MediaParticipant> {
    c.participants
        .iter()
        .filter(|p| p.present && !p.is_bot)
        .map(|p| MediaParticipant {
            participant_id: p.id.clone(),
            handle: p.handle.clone(),
            display_name: p.display_name.clone(),
            source_id: p.source_id,
            muted: p.muted,
            in_lobby: p.in_lobby,
        })
        .collect()
}

/// `resultInfo` JSON.
pub fn result_info(code: i64, subcode: i64, message: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.resultInfo", "code": code, "subcode": subcode, "message": message})
}

fn identity_set(kind: &str, id: &str, name: &str, tenant: &str) -> Value {
    let mut set = json!({"@odata.type": "#microsoft.graph.identitySet"});
    set[kind] = json!({"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": name, "tenantId": tenant});
    set
}

/// Renders a call as Graph JSON.
pub fn render_call(c: &Call) -> Value {
    let mut v = Map::new();
    v.insert("@odata.type".into(), json!("#microsoft.graph.call"));
    v.insert("id".into(), json!(c.id));
    v.insert("state".into(), json!(c.state.as_str()));
    v.insert("direction".into(), json!(c.direction));
    v.insert("callbackUri".into(), json!(c.callback_uri));
    v.insert("tenantId".into(), json!(c.tenant_id));
    for (k, val) in &c.props {
        v.insert(k.clone(), val.clone());
    }
    let audio = if c.state == CallState::Established {
        "active"
    } else {
        "inactive"
    };
    v.insert(
        "mediaState".into(),
        json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": audio}),
    );
    v.insert(
        "resultInfo".into(),
        c.result_info.clone().unwrap_or(Value::Null),
    );
    if !v.contains_key("myParticipantId") {
        v.insert("myParticipantId".into(), Value::Null);
    }
    Value::Object(v)
}

/// Renders a participant as Graph JSON.
pub fn render_participant(c: &Call, p: &Participant) -> Value {
    let kind = if p.is_bot {
        "application"
    } else if p.guest {
        "guest"
    } else {
        "user"
    };
    let mut identity = identity_set(kind, &p.identity_id, &p.display_name, &p.tenant_id);
    if p.is_bot {
        identity["@odata.type"] = json!("#microsoft.graph.communicationsIdentitySet");
    }
    let direction = if p.on_hold { "inactive" } else { "sendReceive" };
    let mut streams = vec![json!({
        "@odata.type": "#microsoft.graph.mediaStream",
        "mediaType": "audio",
        "label": "main-audio",
        "sourceId": p.source_id.to_string(),
        "direction": direction,
        "serverMuted": false,
    })];
    if let Some(v) = p.video_source_id {
        streams.push(json!({
            "@odata.type": "#microsoft.graph.mediaStream",
            "mediaType": "video",
            "label": "main-video",
            "sourceId": v.to_string(),
            "direction": direction,
            "serverMuted": false,
        }));
    }
    let recording = p.recording_status.as_ref().map_or(Value::Null, |st| {
        json!({"@odata.type": "#microsoft.graph.recordingInfo", "recordingStatus": st, "initiator": identity_set("application", &c.app_id, "", &c.tenant_id)})
    });
    json!({
        "@odata.type": "#microsoft.graph.participant",
        "@odata.id": format!("/communications/calls/{}/participants/{}", c.id, p.id),
        "id": p.id,
        "info": {
            "@odata.type": "#microsoft.graph.participantInfo",
            "identity": identity,
            "endpointType": "default",
            "languageId": "en-US",
            "region": "amer",
            "participantId": p.id,
        },
        "mediaStreams": streams,
        "isMuted": p.muted,
        "isInLobby": p.in_lobby,
        "recordingInfo": recording,
        "metadata": Value::Null,
    })
}

/// Renders an operation as Graph JSON.
pub fn render_op(call_id: &str, o: &Operation) -> Value {
    let mut v = Map::new();
    v.insert(
        "@odata.type".into(),
        json!(format!("#microsoft.graph.{}", o.kind)),
    );
    v.insert(
        "@odata.id".into(),
        json!(format!(
            "/communications/calls/{call_id}/operations/{}",
            o.id
        )),
    );
    v.insert("id".into(), json!(o.id));
    v.insert("status".into(), json!(o.status));
    v.insert(
        "clientContext".into(),
        o.client_context.clone().map_or(Value::Null, Value::String),
    );
    v.insert(
        "resultInfo".into(),
        o.result_info.clone().unwrap_or(Value::Null),
    );
    for (k, val) in &o.extra {
        if k != "participantId" && k != "invitees" {
            v.insert(k.clone(), val.clone());
        }
    }
    Value::Object(v)
}

/// A JSON snapshot of a call for the control API (Graph view plus emulator internals).
pub fn snapshot(c: &Call) -> Value {
    json!({
        "call": render_call(c),
        "app_id": c.app_id,
        "kind": c.kind,
        "state": c.state,
        "created_at": rfc3339(c.created_at),
        "established_at": c.established_at.map(rfc3339),
        "last_keepalive": rfc3339(c.last_keepalive),
        "tones_subscribed": c.tones_subscribed,
        "scenario": c.scenario,
        "policy_recording": c.policy_recording,
        "media_status": c.media_status,
        "participants": c.participants.iter().map(|p| json!({
            "graph": render_participant(c, p),
            "handle": p.handle,
            "present": p.present,
            "is_bot": p.is_bot,
            "on_hold": p.on_hold,
        })).collect::<Vec<_>>(),
        "operations": c.operations.iter().map(|o| render_op(&c.id, o)).collect::<Vec<_>>(),
    })
}
