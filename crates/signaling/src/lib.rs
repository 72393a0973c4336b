//! Microsoft Graph call control for application-hosted media bots.

pub mod auth;
mod client;
pub mod config;
pub mod error;
pub mod join_url;
pub mod jwt;
pub mod models;
pub mod notifications;
pub mod state;
mod transport;

pub use auth::{Credentials, Permission, TokenProvider};
pub use client::{GraphClient, MAX_CLIENT_CONTEXT_LEN};
pub use config::{GraphConfig, RetryPolicy};
pub use error::{GraphError, GraphErrorKind};
