//! The error every Graph call returns: a kind the caller can act on, plus what Graph said.

use crate::auth::Permission;
use std::time::Duration;

/// What kind of failure happened, so the caller can decide what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphErrorKind {
    /// 429 (or a throttling 503): wait `retry_after` (when Graph said) and try again.
    Throttled {
        /// How long Graph asked us to wait.
        retry_after: Option<Duration>,
    },
    /// 401, or the token endpoint refused the credentials: fix the app id, secret or
    /// certificate.
    Unauthorized,
    /// 403, or the token lacks a permission this operation needs (checked before sending):
    /// grant the permission and have a tenant admin consent.
    Forbidden {
        /// The permission that is missing, when known.
        missing_permission: Option<Permission>,
    },
    /// 404: the call or resource no longer exists (for keepAlive: clean up the call).
    NotFound,
    /// 409 / 412: the resource is in a state that does not allow this.
    Conflict,
    /// 400 and other 4xx: the request was malformed.
    BadRequest,
    /// 5xx: Graph failed; retried where safe before this was returned.
    Server,
    /// The connection failed or broke.
    Transport,
    /// The request did not finish within the configured timeout.
    Timeout,
    /// Graph answered 2xx with a body this crate could not read, or a body too large.
    InvalidResponse,
    /// The request was refused before sending (bad id, client context too long, ...).
    InvalidRequest,
}

/// An error from Graph or from the way to it. Small (a kind and a box) so `Result`s stay cheap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {}{}", self.kind_text(), self.d.message, self.d.code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default())]
pub struct GraphError {
    kind: GraphErrorKind,
    d: Box<Details>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Details {
    pub(crate) status: Option<u16>,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
    pub(crate) client_request_id: Option<String>,
    pub(crate) retry_after: Option<Duration>,
}

impl GraphError {
    /// A new error of `kind` with `message`.
    pub fn new(kind: GraphErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            d: Box::new(Details {
                message: message.into(),
                ..Details::default()
            }),
        }
    }

    fn kind_text(&self) -> &'static str {
        match &self.kind {
            GraphErrorKind::Throttled { .. } => "throttled",
            GraphErrorKind::Unauthorized => "unauthorized",
            GraphErrorKind::Forbidden { .. } => "forbidden",
            GraphErrorKind::NotFound => "not found",
            GraphErrorKind::Conflict => "conflict",
            GraphErrorKind::BadRequest => "bad request",
            GraphErrorKind::Server => "graph server error",
            GraphErrorKind::Transport => "transport error",
            GraphErrorKind::Timeout => "timed out",
            GraphErrorKind::InvalidResponse => "invalid response",
            GraphErrorKind::InvalidRequest => "invalid request",
        }
    }

    /// The kind to branch on.
    pub fn kind(&self) -> &GraphErrorKind {
        &self.kind
    }

    /// HTTP status, when there was a response.
    pub fn status(&self) -> Option<u16> {
        self.d.status
    }

    /// Graph's `error.code` (or the token endpoint's `error`).
    pub fn code(&self) -> Option<&str> {
        self.d.code.as_deref()
    }

    /// Human-readable message.
    pub fn message(&self) -> &str {
        &self.d.message
    }

    /// Graph's `request-id`, for support tickets.
    pub fn request_id(&self) -> Option<&str> {
        self.d.request_id.as_deref()
    }

    /// The `client-request-id` this crate sent.
    pub fn client_request_id(&self) -> Option<&str> {
        self.d.client_request_id.as_deref()
    }

    /// `Retry-After`, when Graph sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.d.retry_after
    }

    /// For `Forbidden`: the missing permission, when known.
    pub fn missing_permission(&self) -> Option<Permission> {
        match self.kind {
            GraphErrorKind::Forbidden { missing_permission } => missing_permission,
            _ => None,
        }
    }

    /// The same details under another kind.
    pub(crate) fn with_kind(mut self, kind: GraphErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn details_mut(&mut self) -> &mut Details {
        &mut self.d
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.d.status = Some(status);
        self
    }

    pub(crate) fn with_client_request_id(mut self, id: &str) -> Self {
        self.d.client_request_id = Some(id.to_owned());
        self
    }

    /// Builds the error for a non-2xx Graph response from its status, headers and body.
    pub(crate) fn from_response(
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
        client_request_id: &str,
    ) -> Self {
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let kind = match status {
            429 => GraphErrorKind::Throttled { retry_after },
            401 => GraphErrorKind::Unauthorized,
            403 => GraphErrorKind::Forbidden {
                missing_permission: None,
            },
            404 | 410 => GraphErrorKind::NotFound,
            409 | 412 => GraphErrorKind::Conflict,
            400..=499 => GraphErrorKind::BadRequest,
            _ => GraphErrorKind::Server,
        };
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let detail = parsed.map(|b| b.error);
        let message = detail
            .as_ref()
            .and_then(|d| d.message.clone())
            .unwrap_or_else(|| format!("http status {status}"));
        let mut err = Self::new(kind, message)
            .with_status(status)
            .with_client_request_id(client_request_id);
        err.d.code = detail.as_ref().and_then(|d| d.code.clone());
        err.d.request_id = headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                detail
                    .as_ref()
                    .and_then(|d| d.inner_error.as_ref()?.request_id.clone())
            });
        err.d.retry_after = retry_after;
        err
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP-date (a date in the past means now).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    #[serde(alias = "innererror")]
    inner_error: Option<InnerError>,
}

#[derive(serde::Deserialize)]
struct InnerError {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(3500) && d <= Duration::from_secs(3600),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
