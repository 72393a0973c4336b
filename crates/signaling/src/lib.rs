//! Microsoft Graph call control for application-hosted media bots.

pub mod join_url;
pub mod models;
