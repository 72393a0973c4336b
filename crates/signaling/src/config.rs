//! Client configuration: endpoints, timeouts and the retry policy.

use std::time::Duration;

/// Microsoft's public-cloud Graph v1.0 endpoint.
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
/// Microsoft's public-cloud token authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Scope of an app-only Graph token.
pub const DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// How a [`crate::GraphClient`] reaches Graph and the token authority.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Graph base URL (the emulator's in tests).
    pub base_url: String,
    /// Token authority; the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: String,
    /// OAuth scope requested.
    pub scope: String,
    /// Timeout of one HTTP attempt, connection included.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Retries of throttled and failed requests.
    pub retry: RetryPolicy,
    /// Refuse operations whose permission the token's `roles` lacks, before sending.
    pub check_permissions: bool,
    /// Largest response body read (bytes).
    pub max_response_bytes: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_GRAPH_BASE_URL.to_owned(),
            authority: DEFAULT_AUTHORITY.to_owned(),
            scope: DEFAULT_SCOPE.to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            check_permissions: true,
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

impl GraphConfig {
    /// The default configuration pointed at another Graph (the emulator).
    pub fn with_endpoints(base_url: impl Into<String>, authority: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            authority: authority.into(),
            ..Self::default()
        }
    }

    /// The token endpoint for `tenant`.
    pub fn token_endpoint(&self, tenant: &str) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority.trim_end_matches('/'),
            tenant
        )
    }
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// Graph answered with an error status.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, if present.
        retry_after: Option<Duration>,
    },
    /// The connection could not be made: the request never left, always safe to retry.
    Connect,
    /// The attempt timed out: the request may have been processed.
    Timeout,
    /// The connection broke mid-way: the request may have been processed.
    Io,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Return the error.
    GiveUp,
}

/// Exponential backoff with jitter that honours `Retry-After` on 429/503/504, retrying only
/// where it is safe: 429 and 503 mean the request was not processed, so any request may be
/// retried; 504, timeouts and broken connections may hide a processed request, so only
/// idempotent operations are retried after them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is returned to the caller instead of waited out.
    pub max_retry_after: Duration,
    /// Seed of the jitter RNG (deterministic tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            jitter_seed: None,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Decides after failed attempt number `attempt` (0-based). `jitter` in `[0, 1)` picks the
    /// point in the upper half of the backoff window ("equal jitter"). Pure: no clock, no RNG.
    pub fn decide(
        &self,
        attempt: u32,
        failure: AttemptFailure,
        idempotent: bool,
        jitter: f64,
    ) -> RetryDecision {
        if attempt >= self.max_retries {
            return RetryDecision::GiveUp;
        }
        let (safe, retry_after) = match failure {
            AttemptFailure::Status {
                status: 429 | 503,
                retry_after,
            } => (true, retry_after),
            AttemptFailure::Status {
                status: 504,
                retry_after,
            } => (idempotent, retry_after),
            AttemptFailure::Status { .. } => (false, None),
            AttemptFailure::Connect => (true, None),
            AttemptFailure::Timeout | AttemptFailure::Io => (idempotent, None),
        };
        if !safe {
            return RetryDecision::GiveUp;
        }
        if let Some(wait) = retry_after {
            return if wait > self.max_retry_after {
                RetryDecision::GiveUp
            } else {
                RetryDecision::RetryAfter(wait)
            };
        }
        let exp = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = exp / 2;
        RetryDecision::RetryAfter(half + half.mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(10),
            jitter_seed: Some(1),
        }
    }

    #[test]
    fn throttling_honours_retry_after_for_any_method() {
        let f = AttemptFailure::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            p().decide(0, f, false, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(3))
        );
        let f = AttemptFailure::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            p().decide(1, f, false, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        let f = AttemptFailure::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            p().decide(0, f, true, 0.5),
            RetryDecision::GiveUp,
            "too long: caller decides"
        );
    }

    #[test]
    fn gateway_timeout_and_broken_connections_retry_only_idempotent() {
        let f = AttemptFailure::Status {
            status: 504,
            retry_after: None,
        };
        assert_eq!(p().decide(0, f, false, 0.0), RetryDecision::GiveUp);
        assert!(matches!(
            p().decide(0, f, true, 0.0),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            p().decide(0, AttemptFailure::Timeout, false, 0.0),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p().decide(0, AttemptFailure::Io, false, 0.0),
            RetryDecision::GiveUp
        );
        assert!(matches!(
            p().decide(0, AttemptFailure::Connect, false, 0.0),
            RetryDecision::RetryAfter(_)
        ));
    }

    #[test]
    fn other_statuses_are_not_retried() {
        for status in [400, 401, 403, 404, 409, 500, 502] {
            let f = AttemptFailure::Status {
                status,
                retry_after: None,
            };
            assert_eq!(
                p().decide(0, f, true, 0.0),
                RetryDecision::GiveUp,
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let f = AttemptFailure::Connect;
        let d = |a, j| match p().decide(a, f, true, j) {
            RetryDecision::RetryAfter(d) => d,
            RetryDecision::GiveUp => panic!("gave up"),
        };
        assert_eq!(d(0, 0.0), Duration::from_millis(50));
        assert_eq!(d(0, 1.0), Duration::from_millis(100));
        assert_eq!(d(1, 0.0), Duration::from_millis(100));
        assert_eq!(d(2, 0.5), Duration::from_millis(300));
        assert_eq!(d(3, 1.0), Duration::from_millis(500), "capped");
        assert_eq!(
            p().decide(4, f, true, 0.0),
            RetryDecision::GiveUp,
            "attempts exhausted"
        );
    }
}
