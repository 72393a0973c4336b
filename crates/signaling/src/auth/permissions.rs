//! The five `Calls.*` application permissions, what each operation needs, and a report of
//! what a bot configuration needs against what its token grants.
//!
//! Graph checks most call permissions when the call is created, not on each in-call action;
//! in-call actions therefore require "any `Calls.*` permission" unless the documentation names
//! a specific one (e.g. `recordResponse` needs `Calls.AccessMedia.All`). This keeps the
//! pre-flight check from refusing what Graph would accept.

use crate::models::CallScenario;

/// A Graph `Calls.*` application permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Permission {
    /// `Calls.AccessMedia.All`: media streams in a call (any app-hosted media call).
    AccessMedia,
    /// `Calls.Initiate.All`: outgoing 1:1 calls, transfer, redirect.
    Initiate,
    /// `Calls.InitiateGroupCall.All`: outgoing group calls, invite participants.
    InitiateGroupCall,
    /// `Calls.JoinGroupCall.All`: join group calls and meetings as the app.
    JoinGroupCall,
    /// `Calls.JoinGroupCallAsGuest.All`: join as a guest.
    JoinGroupCallAsGuest,
}

impl Permission {
    /// All five.
    pub const ALL: [Permission; 5] = [
        Self::AccessMedia,
        Self::Initiate,
        Self::InitiateGroupCall,
        Self::JoinGroupCall,
        Self::JoinGroupCallAsGuest,
    ];

    /// The permission's value as it appears in the token's `roles` claim.
    pub fn name(self) -> &'static str {
        match self {
            Self::AccessMedia => "Calls.AccessMedia.All",
            Self::Initiate => "Calls.Initiate.All",
            Self::InitiateGroupCall => "Calls.InitiateGroupCall.All",
            Self::JoinGroupCall => "Calls.JoinGroupCall.All",
            Self::JoinGroupCallAsGuest => "Calls.JoinGroupCallAsGuest.All",
        }
    }

    /// The permission's id in Microsoft Graph's service principal.
    pub fn id(self) -> &'static str {
        match self {
            Self::AccessMedia => "a7a681dc-756e-4909-b988-f160edc6655f",
            Self::Initiate => "284383ee-7f6e-4e40-a2a8-e85dcb029101",
            Self::InitiateGroupCall => "4c277553-8a09-487b-8023-29ee378d8324",
            Self::JoinGroupCall => "f6b49018-60ab-4f81-83bd-22caeabfed2d",
            Self::JoinGroupCallAsGuest => "fd7ccf6b-3d28-418b-9701-cd10f5cd2fd4",
        }
    }

    /// Parses a role name (case-insensitive).
    pub fn from_role(role: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(role))
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.id())
    }
}

/// What an operation needs: at least one of `any_of` (when non-empty) and all of `all_of`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionRequirement {
    /// One of these suffices.
    pub any_of: Vec<Permission>,
    /// Each of these is needed.
    pub all_of: Vec<Permission>,
}

impl PermissionRequirement {
    fn any(p: &[Permission]) -> Self {
        Self {
            any_of: p.to_vec(),
            all_of: Vec::new(),
        }
    }

    fn with_media(mut self, app_hosted: bool) -> Self {
        if app_hosted {
            self.all_of.push(Permission::AccessMedia);
        }
        self
    }

    /// The first permission missing from `granted`, or `None` when satisfied.
    pub fn missing(&self, granted: &[Permission]) -> Option<Permission> {
        if !self.any_of.is_empty() && !self.any_of.iter().any(|p| granted.contains(p)) {
            return self.any_of.first().copied();
        }
        self.all_of.iter().find(|p| !granted.contains(p)).copied()
    }
}

/// Every call-control operation of [`crate::GraphClient`], for permission and retry rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // variant names are the Graph operation names
pub enum Operation {
    CreateCall {
        scenario: Option<CallScenario>,
        app_hosted: bool,
    },
    GetCall,
    DeleteCall,
    Answer {
        app_hosted: bool,
    },
    Reject,
    Redirect,
    Transfer,
    KeepAlive,
    Mute,
    Unmute,
    PlayPrompt,
    RecordResponse,
    CancelMediaProcessing,
    SubscribeToTone,
    SendDtmfTones,
    ChangeScreenSharingRole,
    UpdateRecordingStatus,
    LogTeleconferenceDeviceQuality,
    ListParticipants,
    GetParticipant,
    InviteParticipants,
    MuteParticipant,
    DeleteParticipant,
    StartHoldMusic,
    StopHoldMusic,
    CreateAudioRoutingGroup,
    ListAudioRoutingGroups,
    GetAudioRoutingGroup,
    UpdateAudioRoutingGroup,
    DeleteAudioRoutingGroup,
    ListContentSharingSessions,
    GetContentSharingSession,
    GetOperation,
}

impl Operation {
    /// Permissions the operation needs (documented per API; see the module docs).
    pub fn required_permissions(self) -> PermissionRequirement {
        use Permission::*;
        let any_calls = PermissionRequirement::any(&Permission::ALL);
        match self {
            Self::CreateCall {
                scenario,
                app_hosted,
            } => match scenario {
                Some(CallScenario::PeerToPeer) => PermissionRequirement::any(&[Initiate]),
                Some(CallScenario::GroupCall) => PermissionRequirement::any(&[InitiateGroupCall]),
                Some(CallScenario::JoinMeeting) => PermissionRequirement::any(&[JoinGroupCall]),
                Some(CallScenario::JoinMeetingAsGuest) => {
                    PermissionRequirement::any(&[JoinGroupCallAsGuest])
                }
                None => any_calls,
            }
            .with_media(app_hosted),
            Self::Answer { app_hosted } => {
                PermissionRequirement::any(&[JoinGroupCall, JoinGroupCallAsGuest])
                    .with_media(app_hosted)
            }
            Self::Reject => PermissionRequirement::default(),
            Self::Redirect | Self::Transfer => PermissionRequirement::any(&[Initiate]),
            Self::InviteParticipants => PermissionRequirement::any(&[InitiateGroupCall]),
            Self::RecordResponse
            | Self::SubscribeToTone
            | Self::ChangeScreenSharingRole
            | Self::CancelMediaProcessing
            | Self::LogTeleconferenceDeviceQuality => PermissionRequirement::any(&[AccessMedia]),
            Self::UpdateRecordingStatus => {
                PermissionRequirement::any(&[JoinGroupCall, AccessMedia])
            }
            Self::DeleteParticipant
            | Self::MuteParticipant
            | Self::StartHoldMusic
            | Self::StopHoldMusic => PermissionRequirement::any(&[
                JoinGroupCall,
                JoinGroupCallAsGuest,
                InitiateGroupCall,
            ]),
            _ => any_calls,
        }
    }

    /// True when sending it twice has the effect of sending it once (safe to retry after a
    /// timeout or a 504).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Self::GetCall
                | Self::DeleteCall
                | Self::KeepAlive
                | Self::Mute
                | Self::Unmute
                | Self::ChangeScreenSharingRole
                | Self::UpdateRecordingStatus
                | Self::ListParticipants
                | Self::GetParticipant
                | Self::MuteParticipant
                | Self::DeleteParticipant
                | Self::ListAudioRoutingGroups
                | Self::GetAudioRoutingGroup
                | Self::UpdateAudioRoutingGroup
                | Self::DeleteAudioRoutingGroup
                | Self::ListContentSharingSessions
                | Self::GetContentSharingSession
                | Self::GetOperation
                | Self::SubscribeToTone
        )
    }
}

/// What a bot does; decides which permissions it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BotProfile {
    /// Answers incoming calls (including compliance-recording invitations).
    pub answers_calls: bool,
    /// Joins meetings as the app.
    pub joins_meetings: bool,
    /// Joins meetings as a guest.
    pub joins_as_guest: bool,
    /// Places 1:1 calls, redirects or transfers.
    pub places_calls: bool,
    /// Places group calls or invites participants.
    pub places_group_calls: bool,
    /// Uses app-hosted media (mediabot always does).
    pub app_hosted_media: bool,
}

/// One permission a bot needs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionNeed {
    /// The permission.
    pub permission: Permission,
    /// Why the profile needs it.
    pub reason: &'static str,
}

/// Needed vs granted permissions of a bot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionReport {
    /// What the profile needs.
    pub needed: Vec<PermissionNeed>,
    /// `Calls.*` permissions the token grants.
    pub granted: Vec<Permission>,
    /// Needed but not granted.
    pub missing: Vec<Permission>,
    /// Granted roles that are not `Calls.*` permissions (for information).
    pub other_roles: Vec<String>,
}

impl PermissionReport {
    /// True when nothing is missing.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Compares what `profile` needs with the token's `roles`.
pub fn permission_report(profile: &BotProfile, roles: &[String]) -> PermissionReport {
    let mut needed = Vec::new();
    let mut need = |permission, reason| {
        if !needed
            .iter()
            .any(|n: &PermissionNeed| n.permission == permission)
        {
            needed.push(PermissionNeed { permission, reason });
        }
    };
    if profile.app_hosted_media {
        need(
            Permission::AccessMedia,
            "app-hosted media (appHostedMediaConfig)",
        );
    }
    if profile.answers_calls || profile.joins_meetings {
        need(
            Permission::JoinGroupCall,
            "answer calls / join meetings as the app",
        );
    }
    if profile.joins_as_guest {
        need(Permission::JoinGroupCallAsGuest, "join meetings as a guest");
    }
    if profile.places_calls {
        need(Permission::Initiate, "place 1:1 calls, redirect, transfer");
    }
    if profile.places_group_calls {
        need(
            Permission::InitiateGroupCall,
            "place group calls, invite participants",
        );
    }
    let granted: Vec<Permission> = roles
        .iter()
        .filter_map(|r| Permission::from_role(r))
        .collect();
    let other_roles = roles
        .iter()
        .filter(|r| Permission::from_role(r).is_none())
        .cloned()
        .collect();
    let missing = needed
        .iter()
        .map(|n| n.permission)
        .filter(|p| !granted.contains(p))
        .collect();
    PermissionReport {
        needed,
        granted,
        missing,
        other_roles,
    }
}

/// The URL a tenant admin opens to consent to the app's permissions.
pub fn admin_consent_url(authority: &str, tenant_id: &str, client_id: &str) -> String {
    format!(
        "{}/{}/adminconsent?client_id={}",
        authority.trim_end_matches('/'),
        tenant_id,
        client_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_seeds() {
        assert_eq!(
            Permission::AccessMedia.id(),
            "a7a681dc-756e-4909-b988-f160edc6655f"
        );
        assert_eq!(
            Permission::JoinGroupCall.id(),
            "f6b49018-60ab-4f81-83bd-22caeabfed2d"
        );
        assert_eq!(
            Permission::from_role("calls.initiate.all"),
            Some(Permission::Initiate)
        );
        assert_eq!(Permission::from_role("User.Read.All"), None);
    }

    #[test]
    fn create_call_needs_media_permission_when_app_hosted() {
        let op = Operation::CreateCall {
            scenario: Some(CallScenario::JoinMeeting),
            app_hosted: true,
        };
        let req = op.required_permissions();
        assert_eq!(
            req.missing(&[Permission::JoinGroupCall]),
            Some(Permission::AccessMedia)
        );
        assert_eq!(
            req.missing(&[Permission::AccessMedia]),
            Some(Permission::JoinGroupCall)
        );
        assert_eq!(
            req.missing(&[Permission::JoinGroupCall, Permission::AccessMedia]),
            None
        );
        assert_eq!(Operation::Reject.required_permissions().missing(&[]), None);
    }

    #[test]
    fn report_lists_needed_granted_and_missing() {
        let profile = BotProfile {
            answers_calls: true,
            app_hosted_media: true,
            ..BotProfile::default()
        };
        let roles = vec![
            "Calls.JoinGroupCall.All".to_owned(),
            "User.Read.All".to_owned(),
        ];
        let r = permission_report(&profile, &roles);
        assert_eq!(r.needed.len(), 2);
        assert_eq!(r.granted, vec![Permission::JoinGroupCall]);
        assert_eq!(r.missing, vec![Permission::AccessMedia]);
        assert_eq!(r.other_roles, vec!["User.Read.All".to_owned()]);
        assert!(!r.is_complete());
    }
}
