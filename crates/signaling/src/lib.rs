//! Microsoft Graph call control for application-hosted media bots (work in progress).
