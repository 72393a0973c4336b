//! The media blob and its single-use bearer tokens (sans-IO: the caller passes the wall clock
//! and the RNG).
//!
//! The blob is what a bot puts in `appHostedMediaConfig.blob`: standard base64 of the UTF-8
//! JSON `{"v":1,"whip":URL,"token":secret,"expires":RFC3339}`. The far side uses `whip` and
//! `token` to start media with one WHIP `POST`.
//!
//! The [`TokenRegistry`] keeps only a SHA-256 of each token, so a memory dump does not leak
//! live credentials, and compares hashes in constant time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CallId;

/// The current blob format version.
pub const BLOB_VERSION: u32 = 1;

/// Largest blob [`MediaBlob::decode`] accepts (bytes of base64), so a hostile blob cannot make
/// us allocate without bound.
pub const MAX_BLOB_LEN: usize = 4096;

/// The decoded media blob: where and how the far side starts media for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBlob {
    /// Format version, [`BLOB_VERSION`].
    pub v: u32,
    /// The WHIP endpoint URL of this call.
    pub whip: String,
    /// The bearer secret for the one `POST` to `whip`.
    pub token: String,
    /// When the token stops working, RFC 3339 (UTC, `Z`).
    pub expires: String,
}

/// Why a blob could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob is longer than [`MAX_BLOB_LEN`].
    #[error("blob too long ({0} bytes)")]
    TooLong(usize),
    /// Not standard base64.
    #[error("blob is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not the JSON object we define.
    #[error("blob is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this code does not know.
    #[error("unsupported blob version {0}")]
    Version(u32),
    /// `expires` is not RFC 3339.
    #[error("blob expiry is not rfc 3339: {0}")]
    Expires(String),
}

impl MediaBlob {
    /// Encodes the blob as standard base64 of its JSON.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and an integer cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        STANDARD.encode(json)
    }

    /// Decodes and checks a blob received from elsewhere.
    ///
    /// # Errors
    /// [`BlobError`] when the blob is too long, not base64, not our JSON, of an unknown
    /// version, or its expiry is not RFC 3339.
    pub fn decode(blob: &str) -> Result<Self, BlobError> {
        let blob = blob.trim();
        if blob.len() > MAX_BLOB_LEN {
            return Err(BlobError::TooLong(blob.len()));
        }
        let bytes = STANDARD.decode(blob)?;
        let parsed: MediaBlob = serde_json::from_slice(&bytes)?;
        if parsed.v != BLOB_VERSION {
            return Err(BlobError::Version(parsed.v));
        }
        parsed.expires_at()?;
        Ok(parsed)
    }

    /// The expiry as a [`SystemTime`].
    ///
    /// # Errors
    /// [`BlobError::Expires`] when `expires` is not RFC 3339.
    pub fn expires_at(&self) -> Result<SystemTime, BlobError> {
        humantime::parse_rfc3339(&self.expires).map_err(|e| BlobError::Expires(e.to_string()))
    }
}

/// Why a bearer token was refused. The WHIP layer maps these to 401 or 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token, or one this registry never issued (401).
    #[error("unknown bearer token")]
    Unknown,
    /// The token belongs to another call (403).
    #[error("token is for another call")]
    WrongCall,
    /// The token's time is over (403).
    #[error("token expired")]
    Expired,
    /// The token was already used for a session (403).
    #[error("token already used")]
    Used,
}

/// The state of one issued token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Fresh,
    /// A `POST` holds it while the session is being set up.
    Claimed,
    Used,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    call: CallId,
    expires: SystemTime,
    state: TokenState,
}

/// The outcome of minting: the blob to put in `appHostedMediaConfig` and the raw parts.
#[derive(Debug, Clone)]
pub struct MintedBlob {
    /// The blob, decoded.
    pub blob: MediaBlob,
    /// The blob as the base64 string for `appHostedMediaConfig.blob`.
    pub encoded: String,
}

/// Issues and checks single-use, expiring bearer tokens, one per call (sans-IO).
#[derive(Debug)]
pub struct TokenRegistry {
    tokens: HashMap<[u8; 32], TokenEntry>,
    max_tokens: usize,
}

/// Default bound on live (unused, unexpired) tokens.
pub const DEFAULT_MAX_TOKENS: usize = 100_000;

impl Default for TokenRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TOKENS)
    }
}

impl TokenRegistry {
    /// A registry that holds at most `max_tokens` tokens (the oldest expired ones are purged
    /// first; when all are live, minting still succeeds after purging and the bound is
    /// advisory for memory accounting).
    pub fn new(max_tokens: usize) -> Self {
        Self {
            tokens: HashMap::new(),
            max_tokens,
        }
    }

    /// Mints a blob for `call` whose token expires `ttl` after `now`. `whip_url` is the full
    /// WHIP endpoint URL of this call.
    pub fn mint(
        &mut self,
        call: &CallId,
        whip_url: &str,
        now: SystemTime,
        ttl: Duration,
        rng: &mut impl RngCore,
    ) -> MintedBlob {
        if self.tokens.len() >= self.max_tokens {
            self.purge(now);
        }
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let token = URL_SAFE_NO_PAD.encode(secret);
        // Whole seconds: RFC 3339 without fractions is what most parsers accept.
        let expires = now + ttl;
        let expires_secs = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()))
            .unwrap_or(expires);
        self.tokens.insert(
            hash_token(&token),
            TokenEntry {
                call: call.clone(),
                expires: expires_secs,
                state: TokenState::Fresh,
            },
        );
        let blob = MediaBlob {
            v: BLOB_VERSION,
            whip: whip_url.to_owned(),
            token,
            expires: humantime::format_rfc3339_seconds(expires_secs).to_string(),
        };
        let encoded = blob.encode();
        MintedBlob { blob, encoded }
    }

    /// Claims `token` for a `POST` on `call`. On success the token cannot be claimed again
    /// until [`TokenRegistry::release`] gives it back (setup failed) or for ever after
    /// [`TokenRegistry::commit`].
    ///
    /// # Errors
    /// [`TokenError`] when the token is unknown, for another call, expired or used.
    pub fn claim(&mut self, token: &str, call: &CallId, now: SystemTime) -> Result<(), TokenError> {
        let entry = self
            .tokens
            .get_mut(&hash_token(token))
            .ok_or(TokenError::Unknown)?;
        if entry.call != *call {
            return Err(TokenError::WrongCall);
        }
        if entry.state != TokenState::Fresh {
            return Err(TokenError::Used);
        }
        if now >= entry.expires {
            return Err(TokenError::Expired);
        }
        entry.state = TokenState::Claimed;
        Ok(())
    }

    /// Marks a claimed token as used for good.
    pub fn commit(&mut self, token: &str) {
        if let Some(entry) = self.tokens.get_mut(&hash_token(token)) {
            entry.state = TokenState::Used;
        }
    }

    /// Gives a claimed token back (the session could not be set up, e.g. a malformed offer),
    /// so a fixed client can retry before expiry.
    pub fn release(&mut self, token: &str) {
        if let Some(entry) = self.tokens.get_mut(&hash_token(token))
            && entry.state == TokenState::Claimed
        {
            entry.state = TokenState::Fresh;
        }
    }

    /// Whether `token` was issued for `call` (any state): used to authorize `DELETE`.
    pub fn belongs_to(&self, token: &str, call: &CallId) -> bool {
        self.tokens
            .get(&hash_token(token))
            .is_some_and(|e| e.call == *call)
    }

    /// Forgets every token of `call` (the call ended).
    pub fn revoke_call(&mut self, call: &CallId) {
        self.tokens.retain(|_, e| e.call != *call);
    }

    /// Drops expired tokens that were never used (used ones stay until the call is revoked,
    /// so `DELETE` keeps working).
    pub fn purge(&mut self, now: SystemTime) {
        self.tokens
            .retain(|_, e| e.state != TokenState::Fresh || now < e.expires);
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
    }

    #[test]
    fn blob_round_trips_and_is_standard_base64_json() {
        let mut reg = TokenRegistry::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let call = CallId::new("call-1");
        let m = reg.mint(
            &call,
            "https://bot/whip/call-1",
            t0(),
            Duration::from_secs(60),
            &mut rng,
        );
        let json = STANDARD.decode(&m.encoded).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["whip"], "https://bot/whip/call-1");
        assert!(v["expires"].as_str().unwrap().ends_with('Z'));
        let back = MediaBlob::decode(&m.encoded).unwrap();
        assert_eq!(back, m.blob);
        assert_eq!(back.expires_at().unwrap(), t0() + Duration::from_secs(60));
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(
            MediaBlob::decode("!!!"),
            Err(BlobError::Base64(_))
        ));
        assert!(matches!(
            MediaBlob::decode(&STANDARD.encode("{}")),
            Err(BlobError::Json(_))
        ));
        let v2 =
            STANDARD.encode(r#"{"v":2,"whip":"x","token":"t","expires":"2026-01-01T00:00:00Z"}"#);
        assert!(matches!(MediaBlob::decode(&v2), Err(BlobError::Version(2))));
        let bad = STANDARD.encode(r#"{"v":1,"whip":"x","token":"t","expires":"tomorrow"}"#);
        assert!(matches!(
            MediaBlob::decode(&bad),
            Err(BlobError::Expires(_))
        ));
        assert!(matches!(
            MediaBlob::decode(&"A".repeat(5000)),
            Err(BlobError::TooLong(_))
        ));
    }

    #[test]
    fn token_is_single_use_per_call_and_expires() {
        let mut reg = TokenRegistry::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let a = CallId::new("a");
        let b = CallId::new("b");
        let ttl = Duration::from_secs(30);
        let ta = reg.mint(&a, "u", t0(), ttl, &mut rng).blob.token;
        let tb = reg.mint(&b, "u", t0(), ttl, &mut rng).blob.token;
        assert_ne!(ta, tb);
        assert_eq!(reg.claim("nope", &a, t0()), Err(TokenError::Unknown));
        assert_eq!(reg.claim(&ta, &b, t0()), Err(TokenError::WrongCall));
        reg.claim(&ta, &a, t0()).unwrap();
        assert_eq!(reg.claim(&ta, &a, t0()), Err(TokenError::Used));
        reg.release(&ta);
        reg.claim(&ta, &a, t0()).unwrap();
        reg.commit(&ta);
        reg.release(&ta);
        assert_eq!(reg.claim(&ta, &a, t0()), Err(TokenError::Used));
        assert!(reg.belongs_to(&ta, &a));
        assert!(!reg.belongs_to(&ta, &b));
        assert_eq!(reg.claim(&tb, &b, t0() + ttl), Err(TokenError::Expired));
        reg.purge(t0() + ttl);
        assert_eq!(reg.len(), 1, "expired fresh token purged, used one kept");
        reg.revoke_call(&a);
        assert!(reg.is_empty());
    }
}
