//! Request bodies of the call-control actions, and builders for "create call" bodies.

use super::{
    Call, CallOptions, ChatInfo, Extra, IdentitySet, InvitationParticipantInfo,
    JoinMeetingIdMeetingInfo, MediaConfig, MeetingInfo, Modality, ParticipantInfo, Prompt,
    RecordingStatus, RejectReason, ScreenSharingRole, TeleconferenceDeviceQuality, Tone,
};
use crate::join_url::JoinInfo;
use serde::{Deserialize, Serialize};

/// Body of `POST /communications/calls/{id}/answer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerRequest {
    /// Where this call's notifications go.
    pub callback_uri: String,
    /// Media configuration (app-hosted blob or service-hosted).
    pub media_config: MediaConfig,
    /// Modalities to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_modalities: Option<Vec<Modality>>,
    /// Concurrent calls the bot can take for this policy (compliance recording).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_capacity: Option<i32>,
    /// `incomingCallOptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_options: Option<CallOptions>,
}

impl AnswerRequest {
    /// Answer with audio only and the given media configuration.
    pub fn audio(callback_uri: impl Into<String>, media_config: MediaConfig) -> Self {
        Self {
            callback_uri: callback_uri.into(),
            media_config,
            accepted_modalities: Some(vec![Modality::Audio]),
            participant_capacity: None,
            call_options: None,
        }
    }
}

/// Body of `reject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectRequest {
    /// Reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// Callback URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_uri: Option<String>,
}

/// Body of `redirect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectRequest {
    /// Targets (more than one means simultaneous ring; at most 25).
    pub targets: Vec<InvitationParticipantInfo>,
    /// Timeout in seconds (15-90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    /// Callback URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_uri: Option<String>,
}

/// Body of `transfer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    /// Transfer target.
    pub transfer_target: InvitationParticipantInfo,
    /// Transferee (group calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferee: Option<ParticipantInfo>,
}

/// Body of the actions that take only an optional `clientContext` (mute, unmute,
/// subscribeToTone, cancelMediaProcessing, participant mute, stopHoldMusic).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientContextRequest {
    /// Client context (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `playPrompt` (service-hosted media only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayPromptRequest {
    /// Prompts to play (at most 20).
    pub prompts: Vec<Prompt>,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `recordResponse` (service-hosted media only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordResponseRequest {
    /// Prompts to play before recording (at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<Prompt>>,
    /// Whether a tone or speech interrupts the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in_allowed: Option<bool>,
    /// Initial silence timeout, 1-120 s (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_silence_timeout_in_seconds: Option<i32>,
    /// Silence timeout, 1-120 s (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_silence_timeout_in_seconds: Option<i32>,
    /// Maximum duration, 1-120 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_duration_in_seconds: Option<i32>,
    /// Play a beep first (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_beep: Option<bool>,
    /// Tones that end the recording, e.g. `"#"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_tones: Option<Vec<String>>,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `sendDtmfTones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendDtmfTonesRequest {
    /// Tones to send.
    pub tones: Vec<Tone>,
    /// Delay between tones in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_between_tones_ms: Option<i32>,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `changeScreenSharingRole`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeScreenSharingRoleRequest {
    /// New role.
    pub role: ScreenSharingRole,
}

/// Body of `updateRecordingStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRecordingStatusRequest {
    /// New status (`recording` before recording starts, `notRecording` after it stopped).
    pub status: RecordingStatus,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `participants/invite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteParticipantsRequest {
    /// Participants to invite (at most 5 per request).
    pub participants: Vec<InvitationParticipantInfo>,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `participant: startHoldMusic`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartHoldMusicRequest {
    /// Prompt the held participant hears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_prompt: Option<Prompt>,
    /// Client context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
}

/// Body of `calls/logTeleconferenceDeviceQuality`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTeleconferenceDeviceQualityRequest {
    /// The quality report.
    pub quality: TeleconferenceDeviceQuality,
}

/// How a "create call" body was built; decides the permission it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallScenario {
    /// One target, no meeting (`Calls.Initiate.All`).
    PeerToPeer,
    /// Several targets, no meeting (`Calls.InitiateGroupCall.All`).
    GroupCall,
    /// Join a meeting as the app (`Calls.JoinGroupCall.All`).
    JoinMeeting,
    /// Join a meeting as a guest (`Calls.JoinGroupCallAsGuest.All`).
    JoinMeetingAsGuest,
}

impl Call {
    fn outgoing(callback_uri: impl Into<String>, media_config: MediaConfig) -> Self {
        Self {
            odata_type: Some("#microsoft.graph.call".to_owned()),
            callback_uri: Some(callback_uri.into()),
            requested_modalities: Some(vec![Modality::Audio]),
            media_config: Some(media_config),
            ..Self::default()
        }
    }

    /// Body for a peer-to-peer call to `target`.
    pub fn peer_to_peer(
        callback_uri: impl Into<String>,
        target: InvitationParticipantInfo,
        media_config: MediaConfig,
    ) -> Self {
        Self {
            targets: Some(vec![target]),
            ..Self::outgoing(callback_uri, media_config)
        }
    }

    /// Body for a group call to several `targets` in `tenant_id`.
    pub fn group_call(
        callback_uri: impl Into<String>,
        targets: Vec<InvitationParticipantInfo>,
        tenant_id: impl Into<String>,
        media_config: MediaConfig,
    ) -> Self {
        Self {
            targets: Some(targets),
            tenant_id: Some(tenant_id.into()),
            ..Self::outgoing(callback_uri, media_config)
        }
    }

    /// Body that joins the meeting of a parsed Teams join URL (see [`crate::join_url`]).
    pub fn join_meeting(
        callback_uri: impl Into<String>,
        join: JoinInfo,
        media_config: MediaConfig,
    ) -> Self {
        Self {
            chat_info: Some(join.chat_info),
            meeting_info: Some(join.meeting_info),
            tenant_id: join.tenant_id,
            ..Self::outgoing(callback_uri, media_config)
        }
    }

    /// Body that joins a meeting by its join meeting id and passcode.
    pub fn join_meeting_id(
        callback_uri: impl Into<String>,
        join_meeting_id: impl Into<String>,
        passcode: Option<String>,
        tenant_id: impl Into<String>,
        media_config: MediaConfig,
    ) -> Self {
        Self {
            meeting_info: Some(MeetingInfo::JoinMeetingId(JoinMeetingIdMeetingInfo {
                join_meeting_id: Some(join_meeting_id.into()),
                passcode,
                extra: Extra::new(),
            })),
            chat_info: Some(ChatInfo::default()),
            tenant_id: Some(tenant_id.into()),
            ..Self::outgoing(callback_uri, media_config)
        }
    }

    /// Makes a meeting join happen as a guest with `display_name` (and a stable `guest_id`).
    pub fn as_guest(mut self, guest_id: impl Into<String>, display_name: &str) -> Self {
        self.source = Some(ParticipantInfo {
            identity: Some(IdentitySet::guest(guest_id, Some(display_name))),
            ..ParticipantInfo::default()
        });
        self
    }

    /// The scenario of a "create call" body, or `None` if it names no target and no meeting.
    pub fn scenario(&self) -> Option<CallScenario> {
        if self.meeting_info.is_some() {
            let guest = self
                .source
                .as_ref()
                .and_then(|s| s.identity.as_ref())
                .is_some_and(|i| i.guest.is_some());
            return Some(if guest {
                CallScenario::JoinMeetingAsGuest
            } else {
                CallScenario::JoinMeeting
            });
        }
        match self.targets.as_ref().map(Vec::len) {
            Some(1) => Some(CallScenario::PeerToPeer),
            Some(n) if n > 1 => Some(CallScenario::GroupCall),
            _ => None,
        }
    }

    /// True when the media configuration is app-hosted.
    pub fn is_app_hosted(&self) -> bool {
        self.media_config
            .as_ref()
            .is_some_and(MediaConfig::is_app_hosted)
    }
}
