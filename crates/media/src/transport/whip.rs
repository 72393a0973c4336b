//! The WHIP (RFC 9725) endpoint as an axum [`Router`] the engine mounts on its HTTP server.
//!
//! ```text
//!  POST   {prefix}/{call}            Authorization: Bearer <token>, Content-Type: application/sdp
//!         → 201 Created, body = SDP answer, Location: {prefix}/{call}/{session}
//!  DELETE {prefix}/{call}/{session}  Authorization: Bearer <same token> → 200, session gone
//! ```
//!
//! Statuses: no or unknown token → 401 (with `WWW-Authenticate: Bearer`); token of another
//! call, expired or already used → 403; not `application/sdp` → 415; body over the limit → 413;
//! malformed offer → 400; no audio or no Opus → 422; server full → 503. Trickle ICE (`PATCH`)
//! is not supported (405): the answer carries our one candidate and ICE-lite needs nothing more.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};

use super::blob::{MintedBlob, TokenError, TokenRegistry};
use super::sdp::OfferError;
use super::server::{MediaServerHandle, OpenedSession, SessionError};
use super::{
    CallId, CloseReason, InboundRtp, MediaHandler, PlaybackWriter, SenderReportInfo, SessionId,
    ToneEvent,
};

/// Where sessions come from: the real [`MediaServerHandle`], or a fake in tests.
pub trait SessionBackend: Clone + Send + Sync + 'static {
    /// Negotiates a session for `call` from `offer`.
    fn open(
        &self,
        call: CallId,
        offer: String,
    ) -> impl Future<Output = Result<OpenedSession, SessionError>> + Send;
    /// Ends a session; `false` if it did not exist.
    fn close(&self, id: SessionId) -> impl Future<Output = bool> + Send;
}

impl SessionBackend for MediaServerHandle {
    fn open(
        &self,
        call: CallId,
        offer: String,
    ) -> impl Future<Output = Result<OpenedSession, SessionError>> + Send {
        self.open_session(call, offer)
    }

    fn close(&self, id: SessionId) -> impl Future<Output = bool> + Send {
        self.close_session(id)
    }
}

/// Setup of the WHIP endpoint.
#[derive(Debug, Clone)]
pub struct WhipConfig {
    /// Public base URL of the engine's HTTP server, without trailing slash
    /// (`https://bot.example.com`); the blob's `whip` URL is built from it.
    pub public_base_url: String,
    /// Path the router is mounted at (default `/whip`).
    pub path_prefix: String,
    /// How long a minted token stays valid.
    pub token_ttl: Duration,
    /// Largest accepted offer body, bytes.
    pub max_body_bytes: usize,
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            path_prefix: "/whip".into(),
            token_ttl: Duration::from_secs(300),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The wall clock, injectable so token expiry is testable without waiting.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct SessionEntry {
    call: CallId,
    /// SHA-256 of the token that created the session (the `DELETE` must present it).
    token_hash: [u8; 32],
}

fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes without an early exit.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Inner<B> {
    config: WhipConfig,
    backend: B,
    clock: WallClock,
    tokens: Mutex<TokenRegistry>,
    sessions: Mutex<HashMap<SessionId, SessionEntry>>,
}

/// Shared state of the WHIP endpoint: tokens, live sessions, the backend.
pub struct WhipState<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for WhipState<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: SessionBackend> WhipState<B> {
    /// A WHIP endpoint over `backend` using the system clock.
    pub fn new(config: WhipConfig, backend: B) -> Self {
        Self::with_clock(config, backend, Arc::new(SystemTime::now))
    }

    /// A WHIP endpoint with an injected wall clock.
    pub fn with_clock(config: WhipConfig, backend: B, clock: WallClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                backend,
                clock,
                tokens: Mutex::new(TokenRegistry::default()),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The WHIP URL of `call`.
    pub fn whip_url(&self, call: &CallId) -> String {
        let c = &self.inner.config;
        format!(
            "{}{}/{}",
            c.public_base_url.trim_end_matches('/'),
            c.path_prefix,
            call
        )
    }

    /// Mints the blob for `call` (a fresh single-use token valid for the configured TTL).
    pub fn mint_blob(&self, call: &CallId) -> MintedBlob {
        let now = (self.inner.clock)();
        let url = self.whip_url(call);
        let mut rng = rand::rng();
        lock(&self.inner.tokens).mint(call, &url, now, self.inner.config.token_ttl, &mut rng)
    }

    /// The call ended: its tokens stop working and its sessions are closed.
    pub async fn end_call(&self, call: &CallId) {
        lock(&self.inner.tokens).revoke_call(call);
        let ids: Vec<SessionId> = {
            let mut sessions = lock(&self.inner.sessions);
            let ids = sessions
                .iter()
                .filter(|(_, e)| e.call == *call)
                .map(|(id, _)| *id)
                .collect();
            sessions.retain(|_, e| e.call != *call);
            ids
        };
        for id in ids {
            self.inner.backend.close(id).await;
        }
    }

    /// Forgets a session the media server closed by itself (timeout, failure).
    pub fn forget_session(&self, id: SessionId) {
        lock(&self.inner.sessions).remove(&id);
    }

    /// Number of sessions this endpoint created and has not seen end.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }
}

/// Wraps the engine's [`MediaHandler`] so sessions the media server ends by itself (timeout,
/// failure) are also forgotten by the WHIP endpoint; everything is passed on unchanged.
///
/// The handler goes into [`MediaServer::start`](super::MediaServer::start) before the
/// [`WhipState`] exists (the state needs the server's handle), so the state is linked after:
/// `let link = handler.link(); ...; link.set(whip.clone())`.
pub struct ForgetClosed<H, B> {
    inner: H,
    whip: Arc<std::sync::OnceLock<WhipState<B>>>,
}

impl<H, B> ForgetClosed<H, B> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self {
            inner,
            whip: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Where to put the [`WhipState`] once it exists.
    pub fn link(&self) -> Arc<std::sync::OnceLock<WhipState<B>>> {
        Arc::clone(&self.whip)
    }
}

impl<H: MediaHandler, B: SessionBackend> MediaHandler for ForgetClosed<H, B> {
    fn on_session_opened(&mut self, session: SessionId, call: &CallId) {
        self.inner.on_session_opened(session, call);
    }
    fn on_session_connected(&mut self, session: SessionId, call: &CallId) {
        self.inner.on_session_connected(session, call);
    }
    fn on_rtp(&mut self, packet: &InboundRtp<'_>) {
        self.inner.on_rtp(packet);
    }
    fn on_tone(&mut self, tone: &ToneEvent) {
        self.inner.on_tone(tone);
    }
    fn on_sender_report(&mut self, session: SessionId, call: &CallId, report: &SenderReportInfo) {
        self.inner.on_sender_report(session, call, report);
    }
    fn on_playback_ready(&mut self, session: SessionId, call: &CallId, writer: PlaybackWriter) {
        self.inner.on_playback_ready(session, call, writer);
    }
    fn on_session_closed(&mut self, session: SessionId, call: &CallId, reason: CloseReason) {
        if let Some(whip) = self.whip.get() {
            whip.forget_session(session);
        }
        self.inner.on_session_closed(session, call, reason);
    }
    fn on_tick(&mut self, now: std::time::Instant) {
        self.inner.on_tick(now);
    }
    fn next_wakeup(&mut self) -> Option<std::time::Instant> {
        self.inner.next_wakeup()
    }
}

/// The router: `POST {prefix}/{call}` and `DELETE {prefix}/{call}/{session}`.
pub fn router<B: SessionBackend>(state: WhipState<B>) -> Router {
    let prefix = state.inner.config.path_prefix.clone();
    let limit = state.inner.config.max_body_bytes;
    Router::new()
        .route(&format!("{prefix}/{{call}}"), post(post_offer::<B>))
        .route(
            &format!("{prefix}/{{call}}/{{session}}"),
            delete(delete_session::<B>),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another request panicked mid-update; the maps stay usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn status(code: StatusCode, msg: &'static str) -> Response {
    (code, msg).into_response()
}

fn unauthorized() -> Response {
    let mut r = status(
        StatusCode::UNAUTHORIZED,
        "missing or unknown bearer token\n",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn valid_call_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn post_offer<B: SessionBackend>(
    State(state): State<WhipState<B>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !valid_call_id(&call) {
        return status(StatusCode::NOT_FOUND, "no such call\n");
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/sdp\n",
        );
    }
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let call = CallId::new(&call);
    let now = (state.inner.clock)();
    match lock(&state.inner.tokens).claim(token, &call, now) {
        Ok(()) => {}
        Err(TokenError::Unknown) => return unauthorized(),
        Err(_) => {
            return status(
                StatusCode::FORBIDDEN,
                "token expired, used or not for this call\n",
            );
        }
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        lock(&state.inner.tokens).release(token);
        return status(StatusCode::BAD_REQUEST, "offer is not utf-8\n");
    };
    match state.inner.backend.open(call.clone(), offer).await {
        Ok(opened) => {
            lock(&state.inner.tokens).commit(token);
            lock(&state.inner.sessions).insert(
                opened.id,
                SessionEntry {
                    call: call.clone(),
                    token_hash: token_hash(token),
                },
            );
            let location = format!("{}/{}/{}", state.inner.config.path_prefix, call, opened.id);
            let mut r = (StatusCode::CREATED, opened.answer_sdp).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => {
            lock(&state.inner.tokens).release(token);
            tracing::debug!(%call, error = %e, "whip offer refused");
            match e {
                SessionError::Offer(OfferError::NoAudio | OfferError::NoCommonCodec) => status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no audio with opus/48000/2\n",
                ),
                SessionError::Offer(_) | SessionError::Negotiation(_) => {
                    status(StatusCode::BAD_REQUEST, "offer refused\n")
                }
                SessionError::Full | SessionError::Stopped => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "media server unavailable\n",
                ),
            }
        }
    }
}

async fn delete_session<B: SessionBackend>(
    State(state): State<WhipState<B>>,
    Path((call, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let call = CallId::new(&call);
    let Some(id) = u64::from_str_radix(&session, 16).ok().map(SessionId) else {
        return status(StatusCode::NOT_FOUND, "no such session\n");
    };
    {
        let sessions = lock(&state.inner.sessions);
        match sessions.get(&id) {
            Some(e) if e.call == call && same_hash(&e.token_hash, &token_hash(token)) => {}
            Some(_) => return status(StatusCode::FORBIDDEN, "not your session\n"),
            None => {
                drop(sessions);
                return if lock(&state.inner.tokens).belongs_to(token, &call) {
                    status(StatusCode::NOT_FOUND, "no such session\n")
                } else {
                    unauthorized()
                };
            }
        }
    }
    lock(&state.inner.sessions).remove(&id);
    state.inner.backend.close(id).await;
    StatusCode::OK.into_response()
}
