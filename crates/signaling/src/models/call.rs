//! The `call` resource and the types it is made of.

use super::{
    CallDirection, CallState, CallTranscriptionState, Extra, IdentitySet,
    InvitationParticipantInfo, MediaState, Modality, ParticipantInfo, RoutingType, de_opt_i64,
};
use serde::{Deserialize, Serialize};

/// `call`: a call the bot takes part in. Also the body of "create call".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Call {
    /// `@odata.type` as received (`#microsoft.graph.call`).
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HTTPS URL that receives this call's notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_uri: Option<String>,
    /// Id shared by all legs of one conference or P2P call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_chain_id: Option<String>,
    /// Optional features (`incomingCallOptions` / `outgoingCallOptions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_options: Option<CallOptions>,
    /// How the call was retargeted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_routes: Option<Vec<CallRoute>>,
    /// Chat of the meeting; required to join a meeting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_info: Option<ChatInfo>,
    /// Direction of the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<CallDirection>,
    /// Context of an incoming call (observed participant for compliance recording, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incoming_context: Option<IncomingContext>,
    /// Media configuration (app-hosted blob or service-hosted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_config: Option<MediaConfig>,
    /// Media state of the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_state: Option<CallMediaState>,
    /// Meeting to join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting_info: Option<MeetingInfo>,
    /// The bot's own participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub my_participant_id: Option<String>,
    /// Requested modalities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_modalities: Option<Vec<Modality>>,
    /// Result information, e.g. the termination reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_info: Option<super::ResultInfo>,
    /// Originator of the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ParticipantInfo>,
    /// Call state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<CallState>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Targets of the call (P2P and group calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<InvitationParticipantInfo>>,
    /// Tenant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Last tone received (after `subscribeToTone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone_info: Option<ToneInfo>,
    /// Transcription information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Option<CallTranscriptionInfo>,
    /// Unknown properties (including `@odata.etag`, beta properties, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `callMediaState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallMediaState {
    /// State of the audio modality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<MediaState>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `callOptions` (`incomingCallOptions` or `outgoingCallOptions`; both carry the same fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallOptions {
    /// Discriminator, e.g. `#microsoft.graph.incomingCallOptions`.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Hide the bot after escalation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hide_bot_after_escalation: Option<bool>,
    /// Send content-sharing notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_content_sharing_notification_enabled: Option<bool>,
    /// Send roster deltas instead of full rosters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_delta_roster_enabled: Option<bool>,
    /// Interactive roster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_interactive_roster_enabled: Option<bool>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CallOptions {
    /// `incomingCallOptions` with delta roster notifications switched on or off.
    pub fn incoming(delta_roster: bool) -> Self {
        Self {
            odata_type: Some("#microsoft.graph.incomingCallOptions".to_owned()),
            is_delta_roster_enabled: Some(delta_roster),
            ..Self::default()
        }
    }

    /// `outgoingCallOptions` with delta roster notifications switched on or off.
    pub fn outgoing(delta_roster: bool) -> Self {
        Self {
            odata_type: Some("#microsoft.graph.outgoingCallOptions".to_owned()),
            is_delta_roster_enabled: Some(delta_roster),
            ..Self::default()
        }
    }
}

/// `callRoute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallRoute {
    /// Final target.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_: Option<IdentitySet>,
    /// Original target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<IdentitySet>,
    /// Routing type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_type: Option<RoutingType>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `callTranscriptionInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallTranscriptionInfo {
    /// Last change (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_date_time: Option<String>,
    /// Transcription state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<CallTranscriptionState>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `chatInfo`: the meeting chat thread; required to join a meeting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChatInfo {
    /// Message id (`"0"` for a meeting join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Reply-chain message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_chain_message_id: Option<String>,
    /// Thread id, e.g. `19:meeting_...@thread.v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `incomingContext`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IncomingContext {
    /// Participant under compliance recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_participant_id: Option<String>,
    /// On whose behalf the call is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<IdentitySet>,
    /// Source participant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_participant_id: Option<String>,
    /// Transferor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transferor: Option<IdentitySet>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `toneInfo`: one DTMF tone received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ToneInfo {
    /// Sequence number; increases per tone.
    #[serde(
        deserialize_with = "de_opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub sequence_id: Option<i64>,
    /// The tone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<super::Tone>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `appHostedMediaConfig`: the bot hosts the media; `blob` tells the far side how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppHostedMediaConfig {
    /// Media session configuration blob (for mediabot: base64 JSON pointing at WHIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `mediaInfo`: a media file by URI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaInfo {
    /// Resource id used for caching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// URI of the media file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `serviceHostedMediaConfig`: Graph hosts the media (prompts, recording).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceHostedMediaConfig {
    /// Media to prefetch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_fetch_media: Option<Vec<MediaInfo>>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

polymorphic! {
    /// `mediaConfig` (abstract).
    MediaConfig, guess = |m| {
        if m.contains_key("blob") { Some("appHostedMediaConfig") }
        else if m.contains_key("preFetchMedia") { Some("serviceHostedMediaConfig") }
        else { None }
    }, {
        /// The bot hosts the media (needs `Calls.AccessMedia.All`).
        AppHosted(AppHostedMediaConfig) = "appHostedMediaConfig",
        /// Graph hosts the media.
        ServiceHosted(ServiceHostedMediaConfig) = "serviceHostedMediaConfig",
    }
}

impl MediaConfig {
    /// `appHostedMediaConfig` carrying `blob`.
    pub fn app_hosted(blob: impl Into<String>) -> Self {
        Self::AppHosted(AppHostedMediaConfig {
            blob: Some(blob.into()),
            extra: Extra::new(),
        })
    }

    /// `serviceHostedMediaConfig` with nothing to prefetch.
    pub fn service_hosted() -> Self {
        Self::ServiceHosted(ServiceHostedMediaConfig::default())
    }

    /// True for app-hosted media (which needs `Calls.AccessMedia.All`).
    pub fn is_app_hosted(&self) -> bool {
        matches!(self, Self::AppHosted(_))
    }
}

/// `mediaPrompt`: a prompt that plays a media file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaPrompt {
    /// The media to play.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_info: Option<MediaInfo>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

polymorphic! {
    /// `prompt` (abstract).
    Prompt, guess = |m| if m.contains_key("mediaInfo") { Some("mediaPrompt") } else { None }, {
        /// Plays a media file.
        Media(MediaPrompt) = "mediaPrompt",
    }
}

impl Prompt {
    /// A `mediaPrompt` playing `uri`.
    pub fn media(uri: impl Into<String>) -> Self {
        Self::Media(MediaPrompt {
            media_info: Some(MediaInfo {
                uri: Some(uri.into()),
                ..MediaInfo::default()
            }),
            extra: Extra::new(),
        })
    }
}

/// `organizerMeetingInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrganizerMeetingInfo {
    /// The organizer (its `user` carries `id` and `tenantId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizer: Option<IdentitySet>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `joinMeetingIdMeetingInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JoinMeetingIdMeetingInfo {
    /// The meeting id users type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_meeting_id: Option<String>,
    /// Passcode, if the meeting has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tokenMeetingInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenMeetingInfo {
    /// The token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

polymorphic! {
    /// `meetingInfo` (abstract).
    MeetingInfo, guess = |m| {
        if m.contains_key("joinMeetingId") { Some("joinMeetingIdMeetingInfo") }
        else if m.contains_key("organizer") { Some("organizerMeetingInfo") }
        else if m.contains_key("token") { Some("tokenMeetingInfo") }
        else { None }
    }, {
        /// Meeting identified by its organizer (Teams join URL).
        Organizer(OrganizerMeetingInfo) = "organizerMeetingInfo",
        /// Meeting identified by join meeting id and passcode.
        JoinMeetingId(JoinMeetingIdMeetingInfo) = "joinMeetingIdMeetingInfo",
        /// Meeting identified by a token.
        Token(TokenMeetingInfo) = "tokenMeetingInfo",
    }
}
