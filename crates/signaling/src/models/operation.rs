//! `commsOperation`, its subtypes, and `resultInfo`.

use super::{Extra, InvitationParticipantInfo, OperationStatus, SendDtmfCompletionReason};
use serde::{Deserialize, Serialize};

/// `resultInfo`: outcome of an operation or the reason a call ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResultInfo {
    /// 2xx success, 4xx client error, 5xx server error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Sub-code (some examples spell it `subCode`).
    #[serde(alias = "subCode", skip_serializing_if = "Option::is_none")]
    pub subcode: Option<i32>,
    /// Message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

graph_enum! {
    /// The concrete `commsOperation` subtype, read from `@odata.type`.
    OperationType {
        /// Base type.
        CommsOperation = "commsOperation",
        /// `playPrompt`.
        PlayPrompt = "playPromptOperation",
        /// `recordResponse`.
        Record = "recordOperation",
        /// `mute` / participant mute.
        MuteParticipant = "muteParticipantOperation",
        /// `unmute`.
        UnmuteParticipant = "unmuteParticipantOperation",
        /// `updateRecordingStatus`.
        UpdateRecordingStatus = "updateRecordingStatusOperation",
        /// `subscribeToTone`.
        SubscribeToTone = "subscribeToToneOperation",
        /// `cancelMediaProcessing`.
        CancelMediaProcessing = "cancelMediaProcessingOperation",
        /// `addLargeGalleryView`.
        AddLargeGalleryView = "addLargeGalleryViewOperation",
        /// `startHoldMusic`.
        StartHoldMusic = "startHoldMusicOperation",
        /// `stopHoldMusic`.
        StopHoldMusic = "stopHoldMusicOperation",
        /// `participants/invite`.
        InviteParticipants = "inviteParticipantsOperation",
        /// `sendDtmfTones`.
        SendDtmfTones = "sendDtmfTonesOperation",
    }
}

/// `commsOperation` and every subtype. The subtypes only add optional properties, so one
/// open struct carries them all; [`CommsOperation::operation_type`] says which one it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CommsOperation {
    /// Discriminator, e.g. `#microsoft.graph.playPromptOperation`.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Operation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Client context echoed back for correlation (at most 256 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
    /// Result of the operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
    /// Status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<OperationStatus>,
    /// `recordOperation`: token to fetch the recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_access_token: Option<String>,
    /// `recordOperation`: where the recording is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_location: Option<String>,
    /// `inviteParticipantsOperation`: who was invited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<InvitationParticipantInfo>>,
    /// `sendDtmfTonesOperation`: why it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_reason: Option<SendDtmfCompletionReason>,
    /// Unknown properties (`@odata.context`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl CommsOperation {
    /// The subtype named by `@odata.type` (`CommsOperation` when absent).
    pub fn operation_type(&self) -> OperationType {
        match &self.odata_type {
            Some(t) => OperationType::from_wire(&super::short_odata_type(t)),
            None => OperationType::CommsOperation,
        }
    }

    /// True when the operation already finished (no notification will follow).
    pub fn is_final(&self) -> bool {
        self.status.as_ref().is_some_and(OperationStatus::is_final)
    }
}
