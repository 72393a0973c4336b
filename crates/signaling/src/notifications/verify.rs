//! Verification of the bearer JWT on inbound notifications.
//!
//! Rules (Microsoft's SDK checks issuer, audience, lifetime and tenant; we are stricter):
//! - `alg` must be exactly `RS256` (no `none`, no HMAC, no other RSA/EC variants);
//! - the signature must verify with a key from the configured OpenID metadata's `jwks_uri`,
//!   chosen by `kid` (or `x5t`); RSA keys under 2048 bits are ignored;
//! - `iss` must be one of the allowed issuers; `aud` must be the bot's app id;
//! - `exp` is required; `exp`/`nbf` are checked with a small clock skew;
//! - a tenant claim (`tid` or the `.../claims/tenantid` URI) must be present, and in the
//!   allow-list when one is configured.
//!
//! Keys are cached. An unknown `kid` triggers a refresh, at most once per
//! `min_key_refresh_interval`, so a flood of made-up key ids cannot make us fetch keys.

use super::{Notification, NotificationError, parse_notifications};
use crate::jwt;
use rsa::{BigUint, RsaPublicKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microsoft's OpenID metadata for calling notifications.
pub const DEFAULT_OPENID_METADATA_URL: &str =
    "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration";
/// Issuers Microsoft's SDK accepts for calling notifications.
pub const DEFAULT_ALLOWED_ISSUERS: [&str; 2] = [
    "https://graph.microsoft.com",
    "https://api.botframework.com",
];
const MAX_KEYS: usize = 100;
const MAX_KEY_DOC_BYTES: usize = 256 * 1024;

/// How notifications are verified.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The bot's app id: the required audience.
    pub app_id: String,
    /// OpenID metadata URL (its `jwks_uri` names the signing keys).
    pub openid_metadata_url: String,
    /// Accepted issuers.
    pub allowed_issuers: Vec<String>,
    /// When set, only these tenants are accepted (403 otherwise).
    pub allowed_tenants: Option<Vec<String>>,
    /// Tolerance on `exp` / `nbf`.
    pub clock_skew: Duration,
    /// Largest body accepted (413 above).
    pub max_body_bytes: usize,
    /// Least time between two key refreshes caused by unknown `kid`s.
    pub min_key_refresh_interval: Duration,
    /// Keys older than this are refreshed on the next request.
    pub max_key_age: Duration,
    /// Timeout of one metadata/key fetch.
    pub fetch_timeout: Duration,
}

impl VerifierConfig {
    /// Defaults for `app_id`: Microsoft's metadata and issuers, 60 s skew, 1 MiB bodies,
    /// key refresh at most every 5 minutes on unknown kids and every 24 hours otherwise.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            openid_metadata_url: DEFAULT_OPENID_METADATA_URL.to_owned(),
            allowed_issuers: DEFAULT_ALLOWED_ISSUERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            allowed_tenants: None,
            clock_skew: Duration::from_secs(60),
            max_body_bytes: 1024 * 1024,
            min_key_refresh_interval: Duration::from_secs(300),
            max_key_age: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(10),
        }
    }

    fn rules(&self) -> TokenRules<'_> {
        TokenRules {
            audience: &self.app_id,
            issuers: &self.allowed_issuers,
            tenants: self.allowed_tenants.as_deref(),
            skew: self.clock_skew,
        }
    }
}

/// Why a notification was refused; [`VerifyError::http_status`] is the answer to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Body larger than the limit (413).
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// No `Authorization: Bearer` header (401).
    #[error("missing bearer token")]
    MissingToken,
    /// Token is not a well-formed JWT (401).
    #[error("malformed token")]
    MalformedToken,
    /// `alg` other than RS256 (401).
    #[error("token algorithm {0:?} is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    /// No key with the token's `kid` (401).
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// Signature does not verify (401).
    #[error("token signature is invalid")]
    BadSignature,
    /// `iss` not allowed (401).
    #[error("token issuer is not allowed")]
    WrongIssuer,
    /// `aud` is not the app id (401).
    #[error("token audience is not this app")]
    WrongAudience,
    /// Past `exp` (401).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (401).
    #[error("token not yet valid")]
    NotYetValid,
    /// No tenant claim (401).
    #[error("token has no tenant claim")]
    MissingTenant,
    /// Tenant not in the allow-list (403).
    #[error("tenant {0} is not allowed")]
    TenantNotAllowed(String),
    /// Signing keys could not be fetched (503: Graph will retry).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
    /// Verified, but the body is not a valid notification batch (400).
    #[error(transparent)]
    Body(#[from] NotificationError),
}

impl VerifyError {
    /// A short stable label for metrics (`"expired"`, `"bad_signature"`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingTenant => "missing_tenant",
            Self::TenantNotAllowed(_) => "tenant_not_allowed",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::Body(_) => "malformed_body",
        }
    }

    /// The HTTP status the webhook should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } => 413,
            Self::TenantNotAllowed(_) => 403,
            Self::KeysUnavailable(_) => 503,
            Self::Body(_) => 400,
            _ => 401,
        }
    }
}

/// The claims that matter after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// Tenant of the notification (route by it).
    pub tenant_id: String,
    /// Issuer.
    pub issuer: String,
    /// Signing key id.
    pub key_id: Option<String>,
}

/// A verified, parsed notification batch.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedNotifications {
    /// Who sent it.
    pub claims: VerifiedClaims,
    /// The notifications, in body order.
    pub notifications: Vec<Notification>,
}

/// Verification rules, borrowed from a [`VerifierConfig`].
#[derive(Debug, Clone, Copy)]
pub struct TokenRules<'a> {
    /// Required audience.
    pub audience: &'a str,
    /// Allowed issuers.
    pub issuers: &'a [String],
    /// Optional tenant allow-list.
    pub tenants: Option<&'a [String]>,
    /// Clock skew.
    pub skew: Duration,
}

/// Signing keys by `kid` (and by `x5t`), each prepared once for verification
/// ([`jwt::Rs256Key`]): the per-key derived material is computed when the key set is loaded,
/// not on every notification.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, jwt::Rs256Key>,
}

impl KeySet {
    /// Adds a key under `id`. Keys that can never verify an RS256 token (under 2048 bits)
    /// are left out.
    pub fn insert(&mut self, id: impl Into<String>, key: RsaPublicKey) {
        if let Some(k) = jwt::Rs256Key::new(&key) {
            self.keys.insert(id.into(), k);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads a JWKS document (`{"keys":[{"kty":"RSA","kid","n","e",...}]}`), keeping RSA keys
    /// of at least 2048 bits that are usable for RS256 signatures.
    pub fn from_jwks(doc: &serde_json::Value) -> Self {
        let mut set = Self::default();
        let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
            return set;
        };
        for k in keys.iter().take(MAX_KEYS) {
            let s = |name: &str| k.get(name).and_then(|v| v.as_str());
            if s("kty") != Some("RSA") || s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            if s("alg").is_some_and(|a| a != "RS256") {
                continue;
            }
            let (Some(n), Some(e)) = (s("n"), s("e")) else {
                continue;
            };
            let (Ok(n), Ok(e)) = (jwt::b64url_decode(n), jwt::b64url_decode(e)) else {
                continue;
            };
            let n = BigUint::from_bytes_be(&n);
            if n.bits() < 2048 {
                continue;
            }
            let Ok(key) = RsaPublicKey::new(n, BigUint::from_bytes_be(&e)) else {
                continue;
            };
            let Some(key) = jwt::Rs256Key::new(&key) else {
                continue;
            };
            if let Some(kid) = s("kid") {
                set.keys.insert(kid.to_owned(), key.clone());
            }
            if let Some(x5t) = s("x5t") {
                set.keys.insert(format!("x5t:{x5t}"), key);
            }
        }
        set
    }

    fn find(&self, kid: Option<&str>, x5t: Option<&str>) -> Option<&jwt::Rs256Key> {
        kid.and_then(|k| self.keys.get(k))
            .or_else(|| x5t.and_then(|t| self.keys.get(&format!("x5t:{t}"))))
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The claims [`verify_token`] checks; the rest of the token's claims are skipped.
#[derive(serde::Deserialize)]
struct CheckedClaims {
    #[serde(default, deserialize_with = "present")]
    iss: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    tid: Option<serde_json::Value>,
    #[serde(
        rename = "http://schemas.microsoft.com/identity/claims/tenantid",
        default,
        deserialize_with = "present"
    )]
    tenant_uri: Option<serde_json::Value>,
}

/// A claim that is present is `Some`, even when it is `null` (a `null` `nbf` is malformed,
/// not absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    <serde_json::Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// Verifies a compact JWT against `keys` and `rules` at `now`. Pure: no I/O, no clock.
///
/// # Errors
/// The [`VerifyError`] naming the first rule the token breaks.
pub fn verify_token(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules<'_>,
    now: SystemTime,
) -> Result<VerifiedClaims, VerifyError> {
    let t = jwt::split(token).map_err(|_| VerifyError::MalformedToken)?;
    // Only the checked claims are read (the others are skipped without allocating); a claims
    // part that is not a JSON object is malformed, as before.
    if t.claims_json.trim_ascii_start().first() != Some(&b'{') {
        return Err(VerifyError::MalformedToken);
    }
    let c: CheckedClaims =
        serde_json::from_slice(&t.claims_json).map_err(|_| VerifyError::MalformedToken)?;
    match t.header.alg.as_deref() {
        Some("RS256") => {}
        other => {
            return Err(VerifyError::UnsupportedAlgorithm(
                other.unwrap_or("").to_owned(),
            ));
        }
    }
    let key = keys
        .find(t.header.kid.as_deref(), t.header.x5t.as_deref())
        .ok_or(VerifyError::UnknownKey)?;
    if !key.verify(t.signing_input.as_bytes(), &t.signature) {
        return Err(VerifyError::BadSignature);
    }
    let issuer = c.iss.as_ref().and_then(|v| v.as_str()).unwrap_or("");
    if !rules
        .issuers
        .iter()
        .any(|i| i.trim_end_matches('/') == issuer.trim_end_matches('/'))
    {
        return Err(VerifyError::WrongIssuer);
    }
    let aud_ok = match &c.aud {
        Some(serde_json::Value::String(a)) => a == rules.audience,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(rules.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(VerifyError::WrongAudience);
    }
    let now_s = unix(now);
    let skew = i64::try_from(rules.skew.as_secs()).unwrap_or(0);
    let exp = c
        .exp
        .as_ref()
        .and_then(|v| v.as_i64())
        .ok_or(VerifyError::MalformedToken)?;
    if now_s > exp.saturating_add(skew) {
        return Err(VerifyError::Expired);
    }
    if let Some(nbf) = &c.nbf {
        let nbf = nbf.as_i64().ok_or(VerifyError::MalformedToken)?;
        if now_s.saturating_add(skew) < nbf {
            return Err(VerifyError::NotYetValid);
        }
    }
    let tenant = c
        .tid
        .as_ref()
        .or(c.tenant_uri.as_ref())
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingTenant)?;
    if let Some(allowed) = rules.tenants
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(tenant))
    {
        return Err(VerifyError::TenantNotAllowed(tenant.to_owned()));
    }
    Ok(VerifiedClaims {
        tenant_id: tenant.to_owned(),
        issuer: issuer.to_owned(),
        key_id: t.header.kid.clone(),
    })
}

/// Counters of what the verifier did (export them as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// Batches accepted.
    pub accepted: u64,
    /// Batches refused.
    pub rejected: u64,
    /// Metadata + key-set fetches.
    pub key_fetches: u64,
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: KeySet,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// Verifies and parses inbound notifications; holds the signing-key cache.
#[derive(Debug)]
pub struct NotificationVerifier {
    config: VerifierConfig,
    http: reqwest::Client,
    cache: std::sync::RwLock<KeyCache>,
    refresh: tokio::sync::Mutex<()>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    key_fetches: AtomicU64,
}

impl NotificationVerifier {
    /// A verifier using `http` to fetch keys.
    pub fn new(config: VerifierConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            cache: std::sync::RwLock::new(KeyCache::default()),
            refresh: tokio::sync::Mutex::new(()),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            key_fetches: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// What the verifier has done so far.
    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            key_fetches: self.key_fetches.load(Ordering::Relaxed),
        }
    }

    /// Verifies `authorization` (the raw header value) and then parses `body`.
    ///
    /// # Errors
    /// [`VerifyError`]; answer with its [`VerifyError::http_status`].
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<VerifiedNotifications, VerifyError> {
        self.verify_at(authorization, body, SystemTime::now()).await
    }

    /// [`NotificationVerifier::verify`] at a given time (tests, replay).
    ///
    /// # Errors
    /// See [`NotificationVerifier::verify`].
    pub async fn verify_at(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedNotifications, VerifyError> {
        let result = self.verify_inner(authorization, body, now).await;
        match &result {
            Ok(_) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "notification refused");
                self.rejected.fetch_add(1, Ordering::Relaxed)
            }
        };
        result
    }

    async fn verify_inner(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedNotifications, VerifyError> {
        if body.len() > self.config.max_body_bytes {
            return Err(VerifyError::BodyTooLarge {
                limit: self.config.max_body_bytes,
            });
        }
        let token = bearer(authorization).ok_or(VerifyError::MissingToken)?;
        let rules = self.config.rules();
        let stale = self.read_cache(|c| {
            c.fetched_at
                .is_none_or(|t| t.elapsed() >= self.config.max_key_age)
        });
        if stale && let Err(e) = self.refresh_keys().await {
            tracing::warn!(error = %e, "refreshing notification signing keys failed");
        }
        if self.read_cache(|c| c.keys.is_empty()) {
            return Err(VerifyError::KeysUnavailable("no signing keys yet".into()));
        }
        let claims = match self.read_cache(|c| verify_token(token, &c.keys, &rules, now)) {
            Err(VerifyError::UnknownKey) => {
                // Key rotation: refresh (rate limited) and try once more.
                if self.refresh_keys().await.unwrap_or(false) {
                    self.read_cache(|c| verify_token(token, &c.keys, &rules, now))?
                } else {
                    return Err(VerifyError::UnknownKey);
                }
            }
            other => other?,
        };
        let notifications = parse_notifications(body)?;
        Ok(VerifiedNotifications {
            claims,
            notifications,
        })
    }

    fn read_cache<T>(&self, f: impl FnOnce(&KeyCache) -> T) -> T {
        match self.cache.read() {
            Ok(c) => f(&c),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Fetches keys unless the last attempt (successful or not) is younger than
    /// `min_key_refresh_interval`. Returns whether fresh keys are in the cache (fetched by this
    /// or a concurrent caller); `Ok(false)` when rate limited.
    async fn refresh_keys(&self) -> Result<bool, VerifyError> {
        let before = self.read_cache(|c| c.fetched_at);
        let _guard = self.refresh.lock().await;
        let (fetched, attempted) = self.read_cache(|c| (c.fetched_at, c.attempted_at));
        if fetched != before {
            return Ok(true); // someone refreshed while we waited
        }
        if attempted.is_some_and(|t| t.elapsed() < self.config.min_key_refresh_interval) {
            return Ok(false);
        }
        self.write_cache(|c| c.attempted_at = Some(Instant::now()));
        self.key_fetches.fetch_add(1, Ordering::Relaxed);
        let keys = self.fetch_keys().await?;
        self.write_cache(|c| {
            c.keys = keys;
            c.fetched_at = Some(Instant::now());
        });
        Ok(true)
    }

    fn write_cache(&self, f: impl FnOnce(&mut KeyCache)) {
        match self.cache.write() {
            Ok(mut c) => f(&mut c),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    async fn fetch_keys(&self) -> Result<KeySet, VerifyError> {
        let meta = self.fetch_json(&self.config.openid_metadata_url).await?;
        let jwks_uri = meta
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| VerifyError::KeysUnavailable("metadata has no jwks_uri".into()))?
            .to_owned();
        let doc = self.fetch_json(&jwks_uri).await?;
        let keys = KeySet::from_jwks(&doc);
        if keys.is_empty() {
            return Err(VerifyError::KeysUnavailable(
                "key set has no usable rsa keys".into(),
            ));
        }
        Ok(keys)
    }

    async fn fetch_json(&self, url: &str) -> Result<serde_json::Value, VerifyError> {
        let unavailable = |e: String| VerifyError::KeysUnavailable(e);
        let mut resp = self
            .http
            .get(url)
            .timeout(self.config.fetch_timeout)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("{url} answered {}", resp.status())));
        }
        let body = crate::transport::read_body(&mut resp, MAX_KEY_DOC_BYTES)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))
    }
}

fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
