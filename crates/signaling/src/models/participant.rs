//! Participants and identities.

use super::{EndpointType, Extra, MediaDirection, Modality, RecordingStatus, de_opt_i64};
use serde::{Deserialize, Serialize};

/// `identity` and its communications subtypes (`communicationsUserIdentity`,
/// `communicationsApplicationIdentity`, `communicationsGuestIdentity`, ...). The subtypes only
/// add optional properties, so one open struct carries them all; `odata_type` says which.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Identity {
    /// Discriminator, e.g. `#microsoft.graph.communicationsUserIdentity`.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Object id (user, app, guest, phone number in E.164 ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tenant of a user or application instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Identity provider (`AAD`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<String>,
    /// `communicationsApplicationIdentity.applicationType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    /// `hidden` of application (instance) identities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// `communicationsGuestIdentity.email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Identity {
    /// An identity with just an id and optional display name.
    pub fn new(id: impl Into<String>, display_name: Option<&str>) -> Self {
        Self {
            id: Some(id.into()),
            display_name: display_name.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// `identitySet` / `communicationsIdentitySet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IdentitySet {
    /// Discriminator, e.g. `#microsoft.graph.identitySet`.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<Identity>,
    /// Device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Identity>,
    /// User.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Identity>,
    /// Application instance (resource account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_instance: Option<Identity>,
    /// Asserted identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asserted_identity: Option<Identity>,
    /// Azure Communication Services user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_communication_services_user: Option<Identity>,
    /// Encrypted identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<Identity>,
    /// Endpoint type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_type: Option<EndpointType>,
    /// Guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<Identity>,
    /// On-premises user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises: Option<Identity>,
    /// Phone (id is an E.164 number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Identity>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

impl IdentitySet {
    /// An identity set naming a user.
    pub fn user(id: impl Into<String>, display_name: Option<&str>) -> Self {
        Self {
            user: Some(Identity::new(id, display_name)),
            ..Self::default()
        }
    }

    /// An identity set naming an application.
    pub fn application(id: impl Into<String>, display_name: Option<&str>) -> Self {
        Self {
            application: Some(Identity::new(id, display_name)),
            ..Self::default()
        }
    }

    /// An identity set naming a guest.
    pub fn guest(id: impl Into<String>, display_name: Option<&str>) -> Self {
        Self {
            guest: Some(Identity::new(id, display_name)),
            ..Self::default()
        }
    }
}

/// `participantInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParticipantInfo {
    /// Country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Endpoint type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_type: Option<EndpointType>,
    /// Identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySet>,
    /// Language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_id: Option<String>,
    /// Participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `invitationParticipantInfo`: whom to call, invite, redirect or transfer to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvitationParticipantInfo {
    /// Hidden in the roster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySet>,
    /// Participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// Keep out of the default audio routing group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_from_default_audio_routing_group: Option<bool>,
    /// Call this invitation replaces (consultative transfer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces_call_id: Option<String>,
    /// Unknown properties (`endpointType`, `languageId`, ... in examples).
    #[serde(flatten)]
    pub extra: Extra,
}

impl InvitationParticipantInfo {
    /// An invitation for `identity`.
    pub fn new(identity: IdentitySet) -> Self {
        Self {
            identity: Some(identity),
            ..Self::default()
        }
    }
}

/// `mediaStream`: one stream of a participant. `sourceId` is the media source id (MSI) that
/// equals the RTP SSRC of the stream; it is a string on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaStream {
    /// Direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<MediaDirection>,
    /// Label, e.g. `main-audio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Media type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<Modality>,
    /// Muted by the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_muted: Option<bool>,
    /// Media source id (decimal string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `recordingInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecordingInfo {
    /// Who started recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<IdentitySet>,
    /// Recording status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_status: Option<RecordingStatus>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `removedState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemovedState {
    /// Why the participant was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `onlineMeetingRestricted`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnlineMeetingRestricted {
    /// Content sharing disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sharing_disabled: Option<String>,
    /// Video disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_disabled: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `participant`: one member of the call roster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Participant {
    /// `@odata.type` as received.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who the participant is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ParticipantInfo>,
    /// Waiting in the lobby.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_in_lobby: Option<bool>,
    /// Muted (client or server mute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_muted: Option<bool>,
    /// Media streams, each with its `sourceId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_streams: Option<Vec<MediaStream>>,
    /// Opaque metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Recording information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_info: Option<RecordingInfo>,
    /// Why the participant was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_state: Option<RemovedState>,
    /// Restrictions in the meeting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted_experience: Option<OnlineMeetingRestricted>,
    /// Roster sequence number (orders roster updates).
    #[serde(
        deserialize_with = "de_opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub roster_sequence_number: Option<i64>,
    /// Unknown properties (including `@odata.etag`).
    #[serde(flatten)]
    pub extra: Extra,
}
