//! App-only access tokens: fetched with client credentials, cached, refreshed before they
//! expire, with one refresh in flight however many callers wait.

use super::{Credentials, Permission, Secret};
use crate::config::{AttemptFailure, GraphConfig, RetryDecision};
use crate::error::{GraphError, GraphErrorKind};
use crate::{jwt, transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Source of wall-clock time, injectable so expiry is testable without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A bearer token for Graph and what it grants.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The token.
    pub secret: Secret,
    /// When it expires.
    pub expires_at: SystemTime,
    /// When this crate refreshes it (before `expires_at`).
    pub refresh_at: SystemTime,
    /// The `roles` claim, when the token is a readable JWT (`None` for opaque tokens).
    pub roles: Option<Vec<String>>,
}

impl AccessToken {
    /// The `Calls.*` permissions the token grants (empty when roles are unknown).
    pub fn permissions(&self) -> Vec<Permission> {
        self.roles
            .iter()
            .flatten()
            .filter_map(|r| Permission::from_role(r))
            .collect()
    }
}

/// Fetches and caches app-only tokens for one set of credentials.
#[derive(Debug)]
pub struct TokenProvider {
    http: reqwest::Client,
    config: GraphConfig,
    endpoint: String,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    cache: std::sync::Mutex<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
    jitter: transport::Jitter,
    epoch: AtomicU64,
    last_error: std::sync::Mutex<Option<GraphError>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct TokenErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenProvider {
    /// A provider using `http` for the token endpoint named by `config`.
    pub fn new(http: reqwest::Client, config: GraphConfig, credentials: Credentials) -> Self {
        Self::with_clock(http, config, credentials, Arc::new(SystemClock))
    }

    /// Like [`TokenProvider::new`] with an injected clock.
    pub fn with_clock(
        http: reqwest::Client,
        config: GraphConfig,
        credentials: Credentials,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let endpoint = config.token_endpoint(&credentials.tenant_id);
        let jitter = transport::Jitter::new(config.retry.jitter_seed);
        Self {
            http,
            config,
            endpoint,
            credentials,
            clock,
            cache: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            jitter,
            epoch: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// The credentials tokens are fetched with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// How many times the token endpoint was called (a metric; tests use it).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Drops the cached token (after a 401), so the next call fetches a new one.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
    }

    fn cached(&self) -> Option<AccessToken> {
        self.cache.lock().ok().and_then(|c| c.clone())
    }

    /// A valid token: the cached one until its refresh time, else a fresh one. Concurrent
    /// callers share one refresh. If a refresh fails while the cached token is still valid,
    /// the cached token is returned.
    ///
    /// # Errors
    /// `Unauthorized` when the authority refuses the credentials, `Throttled`, `Server`,
    /// `Transport` or `Timeout` as for any request.
    pub async fn token(&self) -> Result<AccessToken, GraphError> {
        let now = self.clock.now();
        if let Some(t) = self.cached().filter(|t| now < t.refresh_at) {
            return Ok(t);
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let _guard = self.refresh.lock().await;
        let now = self.clock.now();
        let cached = self.cached();
        if let Some(t) = cached.clone().filter(|t| now < t.refresh_at) {
            return Ok(t);
        }
        let still_valid = cached.filter(|t| now < t.expires_at);
        if self.epoch.load(Ordering::SeqCst) != epoch {
            // A refresh finished while we waited and left no fresh token: it failed. Share its
            // outcome instead of hitting the authority once per waiter.
            let shared = self.last_error.lock().ok().and_then(|e| e.clone());
            if let Some(e) = shared {
                return still_valid.ok_or(e);
            }
        }
        let result = self.fetch().await;
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().cloned();
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(t) => {
                if let Ok(mut c) = self.cache.lock() {
                    *c = Some(t.clone());
                }
                Ok(t)
            }
            Err(e) => match still_valid {
                Some(t) => {
                    tracing::warn!(error = %e, "token refresh failed; using the cached token");
                    Ok(t)
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<AccessToken, GraphError> {
        let mut attempt = 0u32;
        loop {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let (err, failure) = match self.fetch_once().await {
                Ok(t) => return Ok(t),
                Err((e, Some(f))) => (e, f),
                Err((e, None)) => return Err(e),
            };
            match self
                .config
                .retry
                .decide(attempt, failure, true, self.jitter.next())
            {
                RetryDecision::RetryAfter(d) => tokio::time::sleep(d).await,
                RetryDecision::GiveUp => return Err(err),
            }
            attempt += 1;
        }
    }

    async fn fetch_once(&self) -> Result<AccessToken, (GraphError, Option<AttemptFailure>)> {
        let now = self.clock.now();
        let fields = self
            .credentials
            .form_fields(&self.endpoint, now)
            .map_err(|e| {
                (
                    GraphError::new(
                        GraphErrorKind::InvalidRequest,
                        format!("client assertion: {e}"),
                    ),
                    None,
                )
            })?;
        let form_body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("client_id", &self.credentials.client_id);
            form.append_pair("scope", &self.config.scope);
            for (k, v) in &fields {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let sent = self
            .http
            .post(&self.endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("client-request-id", &client_request_id)
            .timeout(self.config.request_timeout)
            .body(form_body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let (err, failure) = transport::classify_send_error(&e);
                return Err((
                    err.with_client_request_id(&client_request_id),
                    Some(failure),
                ));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = transport::read_body(&mut resp, self.config.max_response_bytes)
            .await
            .map_err(|e| (e.with_client_request_id(&client_request_id), None))?;
        if !(200..300).contains(&status) {
            let mut err = GraphError::from_response(status, &headers, &body, &client_request_id);
            let failure = AttemptFailure::Status {
                status,
                retry_after: err.retry_after(),
            };
            if let Ok(b) = serde_json::from_slice::<TokenErrorBody>(&body) {
                err.details_mut().code = b.error;
                if let Some(d) = b.error_description {
                    err.details_mut().message = d;
                }
            }
            if (400..500).contains(&status) && status != 429 {
                return Err((err.with_kind(GraphErrorKind::Unauthorized), None));
            }
            return Err((err, Some(failure)));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            (
                GraphError::new(
                    GraphErrorKind::InvalidResponse,
                    "token response is not json",
                ),
                None,
            )
        })?;
        let lifetime = Duration::from_secs(
            parsed
                .expires_in
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(3600),
        );
        let margin = lifetime.div_f64(2.0).min(Duration::from_secs(300));
        let roles = jwt::decode_unverified(&parsed.access_token).ok().map(|t| {
            t.claims
                .get("roles")
                .and_then(|r| r.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        });
        Ok(AccessToken {
            secret: Secret::new(parsed.access_token),
            expires_at: now + lifetime,
            refresh_at: now + lifetime - margin,
            roles,
        })
    }
}
