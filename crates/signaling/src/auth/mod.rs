//! Outbound authentication: app credentials, cached tokens, and the `Calls.*` permissions.

mod credentials;
mod permissions;
mod token;

pub use credentials::{Credentials, CredentialsError, Secret};
pub use permissions::{
    BotProfile, Operation, Permission, PermissionNeed, PermissionReport, PermissionRequirement,
    admin_consent_url, permission_report,
};
pub use token::{AccessToken, Clock, SystemClock, TokenProvider};
