//! Inbound `commsNotifications`: verify the bearer token Graph sends, then parse the batch.
//!
//! The engine's HTTP route calls [`NotificationVerifier::verify`] with the raw
//! `Authorization` header and the raw body; nothing is parsed before the token is verified,
//! and the body size is bounded first. Errors map to the HTTP status to answer with
//! ([`VerifyError::http_status`]).

mod parse;
mod verify;

pub use parse::{
    MAX_NOTIFICATIONS_PER_BATCH, Notification, NotificationError, Resource, parse_notifications,
};
pub use verify::{
    DEFAULT_ALLOWED_ISSUERS, DEFAULT_OPENID_METADATA_URL, KeySet, NotificationVerifier, TokenRules,
    VerifiedClaims, VerifiedNotifications, VerifierConfig, VerifierStats, VerifyError,
    verify_token,
};
