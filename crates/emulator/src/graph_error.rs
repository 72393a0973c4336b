//! Graph's error body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.

use serde_json::{Value, json};

/// A refused Graph request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status.
    pub status: u16,
    /// Graph error code (for call control Graph also uses numeric strings such as `7504`).
    pub code: String,
    /// Message.
    pub message: String,
    /// `Retry-After` seconds (429/503).
    pub retry_after: Option<u64>,
}

impl GraphError {
    /// Any status/code/message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 `itemNotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "itemNotFound", message)
    }

    /// 409 `Conflict` (action not allowed in the call's current state).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 403 `7504` as Graph answers when the app lacks a permission; the emulator names the
    /// permissions that would have allowed it.
    pub fn missing_permission(any_of: &[&str]) -> Self {
        Self::new(
            403,
            "7504",
            format!(
                "Insufficient enterprise tenant permissions, cannot access this API. (emulator: the token's roles grant none of: {}; grant one as an application permission and give admin consent)",
                any_of.join(", ")
            ),
        )
    }

    /// 403 `7505`: the token's tenant differs from the request's.
    pub fn tenant_mismatch() -> Self {
        Self::new(403, "7505", "Request authorization tenant mismatch.")
    }

    /// 401 `InvalidAuthenticationToken`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "InvalidAuthenticationToken", message)
    }

    /// 429 `TooManyRequests` with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "TooManyRequests",
                "Too many requests, please retry after the time in the Retry-After header.",
            )
        }
    }

    /// An injected server error (500/502/503/504).
    pub fn server(status: u16) -> Self {
        let (code, msg) = match status {
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            ),
            504 => ("GatewayTimeout", "The gateway timed out."),
            502 => ("BadGateway", "Bad gateway."),
            _ => ("generalException", "An internal server error occurred."),
        };
        let mut e = Self::new(status, code, msg);
        if status == 503 {
            e.retry_after = Some(1);
        }
        e
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str, client_request_id: Option<&str>, date: &str) -> Value {
        let mut inner = json!({"date": date, "request-id": request_id});
        if let Some(c) = client_request_id {
            inner["client-request-id"] = json!(c);
        }
        json!({"error": {"code": self.code, "message": self.message, "innerError": inner}})
    }
}
