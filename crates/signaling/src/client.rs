//! [`GraphClient`]: every call-control operation of Graph v1.0 as a typed async method.

use crate::auth::{
    AccessToken, BotProfile, Credentials, Operation, PermissionReport, TokenProvider,
    admin_consent_url, permission_report,
};
use crate::config::{AttemptFailure, GraphConfig, RetryDecision};
use crate::error::{GraphError, GraphErrorKind};
use crate::models::*;
use crate::transport::{self, Jitter, segment};
use http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest `clientContext` Graph accepts.
pub const MAX_CLIENT_CONTEXT_LEN: usize = 256;
/// Most pages followed when listing a collection.
const MAX_PAGES: usize = 50;

/// A Microsoft Graph call-control client. Cheap to clone; clones share the token cache.
#[derive(Debug, Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: GraphConfig,
    http: reqwest::Client,
    tokens: Arc<TokenProvider>,
    jitter: Jitter,
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    failures: AtomicU64,
    refused_locally: AtomicU64,
}

/// Counters of a [`GraphClient`] (export them as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP attempts sent to Graph (retries included).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 answers received.
    pub throttled: u64,
    /// Operations that ended in an error returned to the caller.
    pub failures: u64,
    /// Operations refused before sending by the permission check (argument validation
    /// errors such as an over-long client context are returned without being counted).
    pub refused_locally: u64,
}

/// A successful raw response.
struct Raw {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

impl GraphClient {
    /// A client for `credentials` with its own HTTP connection pool.
    ///
    /// # Errors
    /// `Transport` if the TLS/HTTP stack cannot be initialised.
    pub fn new(config: GraphConfig, credentials: Credentials) -> Result<Self, GraphError> {
        let http = Self::http_client(&config)?;
        let tokens = Arc::new(TokenProvider::new(
            http.clone(),
            config.clone(),
            credentials,
        ));
        Ok(Self::with_parts(config, http, tokens))
    }

    /// A client from an existing HTTP client and token provider (shared caches, custom clock).
    pub fn with_parts(
        config: GraphConfig,
        http: reqwest::Client,
        tokens: Arc<TokenProvider>,
    ) -> Self {
        let jitter = Jitter::new(config.retry.jitter_seed);
        Self {
            inner: Arc::new(Inner {
                config,
                http,
                tokens,
                jitter,
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                refused_locally: AtomicU64::new(0),
            }),
        }
    }

    /// The HTTP client `config` asks for (rustls, timeouts).
    ///
    /// # Errors
    /// `Transport` if the client cannot be built.
    pub fn http_client(config: &GraphConfig) -> Result<reqwest::Client, GraphError> {
        reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("mediabot-signaling/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::new(GraphErrorKind::Transport, e.to_string()))
    }

    /// The token provider (for the permission report, metrics, or sharing).
    pub fn tokens(&self) -> &Arc<TokenProvider> {
        &self.inner.tokens
    }

    /// What the client has done so far.
    pub fn stats(&self) -> ClientStats {
        let i = &self.inner;
        ClientStats {
            requests: i.requests.load(Ordering::Relaxed),
            retries: i.retries.load(Ordering::Relaxed),
            throttled: i.throttled.load(Ordering::Relaxed),
            failures: i.failures.load(Ordering::Relaxed),
            refused_locally: i.refused_locally.load(Ordering::Relaxed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GraphConfig {
        &self.inner.config
    }

    /// Fetches (or reuses) a token and reports which permissions `profile` needs and which
    /// the token's `roles` claim grants. Run it at startup to fail fast. An opaque token
    /// (not a JWT) grants nothing readable, so everything needed is reported missing.
    ///
    /// # Errors
    /// The token errors of [`TokenProvider::token`].
    pub async fn permission_report(
        &self,
        profile: &BotProfile,
    ) -> Result<PermissionReport, GraphError> {
        let token = self.inner.tokens.token().await?;
        Ok(permission_report(
            profile,
            token.roles.as_deref().unwrap_or_default(),
        ))
    }

    // ---- calls -------------------------------------------------------------------------

    /// `POST /communications/calls`: place a call or join a meeting (201 + call).
    ///
    /// # Errors
    /// See [`GraphErrorKind`]; `Forbidden` before sending when the token lacks the
    /// permission the scenario needs.
    pub async fn create_call(&self, call: &Call) -> Result<Call, GraphError> {
        let op = Operation::CreateCall {
            scenario: call.scenario(),
            app_hosted: call.is_app_hosted(),
        };
        let raw = self
            .send(op, Method::POST, "/communications/calls".into(), Some(call))
            .await?;
        self.entity(&raw)
    }

    /// `GET /communications/calls/{id}`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`]; `NotFound` when the call ended.
    pub async fn get_call(&self, call_id: &str) -> Result<Call, GraphError> {
        let raw = self
            .send::<()>(
                Operation::GetCall,
                Method::GET,
                call_path(call_id, ""),
                None,
            )
            .await?;
        self.entity(&raw)
    }

    /// `DELETE /communications/calls/{id}`: hang up (204).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn hang_up(&self, call_id: &str) -> Result<(), GraphError> {
        self.send::<()>(
            Operation::DeleteCall,
            Method::DELETE,
            call_path(call_id, ""),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST .../answer` (202). Answer within 15 s (5 s for policy-based recording).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn answer(&self, call_id: &str, req: &AnswerRequest) -> Result<(), GraphError> {
        let op = Operation::Answer {
            app_hosted: req.media_config.is_app_hosted(),
        };
        self.send(op, Method::POST, call_path(call_id, "/answer"), Some(req))
            .await?;
        Ok(())
    }

    /// `POST .../reject` (202).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn reject(&self, call_id: &str, req: &RejectRequest) -> Result<(), GraphError> {
        self.send(
            Operation::Reject,
            Method::POST,
            call_path(call_id, "/reject"),
            Some(req),
        )
        .await?;
        Ok(())
    }

    /// `POST .../redirect` (202).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn redirect(&self, call_id: &str, req: &RedirectRequest) -> Result<(), GraphError> {
        self.send(
            Operation::Redirect,
            Method::POST,
            call_path(call_id, "/redirect"),
            Some(req),
        )
        .await?;
        Ok(())
    }

    /// `POST .../transfer` (202).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn transfer(&self, call_id: &str, req: &TransferRequest) -> Result<(), GraphError> {
        self.send(
            Operation::Transfer,
            Method::POST,
            call_path(call_id, "/transfer"),
            Some(req),
        )
        .await?;
        Ok(())
    }

    /// `POST .../keepAlive` (200, no body). Needed at least every 45 min; `NotFound` means
    /// the call is gone and should be cleaned up.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn keep_alive(&self, call_id: &str) -> Result<(), GraphError> {
        self.send::<()>(
            Operation::KeepAlive,
            Method::POST,
            call_path(call_id, "/keepAlive"),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST .../mute`: mute the bot (200 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`]; `InvalidRequest` for a client context over 256 characters.
    pub async fn mute(
        &self,
        call_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(Operation::Mute, call_path(call_id, "/mute"), &body)
            .await
    }

    /// `POST .../unmute` (200 + operation).
    ///
    /// # Errors
    /// See [`GraphClient::mute`].
    pub async fn unmute(
        &self,
        call_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(Operation::Unmute, call_path(call_id, "/unmute"), &body)
            .await
    }

    /// `POST .../playPrompt` (200 + operation; service-hosted media only).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn play_prompt(
        &self,
        call_id: &str,
        req: &PlayPromptRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        self.operation(
            Operation::PlayPrompt,
            call_path(call_id, "/playPrompt"),
            req,
        )
        .await
    }

    /// `POST .../recordResponse` (200 + recordOperation; service-hosted media only).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn record_response(
        &self,
        call_id: &str,
        req: &RecordResponseRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        self.operation(
            Operation::RecordResponse,
            call_path(call_id, "/recordResponse"),
            req,
        )
        .await
    }

    /// `POST .../cancelMediaProcessing` (200 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn cancel_media_processing(
        &self,
        call_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(
            Operation::CancelMediaProcessing,
            call_path(call_id, "/cancelMediaProcessing"),
            &body,
        )
        .await
    }

    /// `POST .../subscribeToTone` (200 + operation); tones then arrive as `toneInfo`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn subscribe_to_tone(
        &self,
        call_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(
            Operation::SubscribeToTone,
            call_path(call_id, "/subscribeToTone"),
            &body,
        )
        .await
    }

    /// `POST .../sendDtmfTones` (200 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn send_dtmf_tones(
        &self,
        call_id: &str,
        req: &SendDtmfTonesRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        self.operation(
            Operation::SendDtmfTones,
            call_path(call_id, "/sendDtmfTones"),
            req,
        )
        .await
    }

    /// `POST .../changeScreenSharingRole` (202).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn change_screen_sharing_role(
        &self,
        call_id: &str,
        role: ScreenSharingRole,
    ) -> Result<(), GraphError> {
        let body = ChangeScreenSharingRoleRequest { role };
        self.send(
            Operation::ChangeScreenSharingRole,
            Method::POST,
            call_path(call_id, "/changeScreenSharingRole"),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// `POST .../updateRecordingStatus` (200 + operation). A compliance bot may record only
    /// after `recording` succeeded, and must stop before reporting `notRecording`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn update_recording_status(
        &self,
        call_id: &str,
        req: &UpdateRecordingStatusRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        self.operation(
            Operation::UpdateRecordingStatus,
            call_path(call_id, "/updateRecordingStatus"),
            req,
        )
        .await
    }

    /// `POST /communications/calls/logTeleconferenceDeviceQuality` (204).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn log_teleconference_device_quality(
        &self,
        quality: &TeleconferenceDeviceQuality,
    ) -> Result<(), GraphError> {
        let body = LogTeleconferenceDeviceQualityRequest {
            quality: quality.clone(),
        };
        self.send(
            Operation::LogTeleconferenceDeviceQuality,
            Method::POST,
            "/communications/calls/logTeleconferenceDeviceQuality".into(),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    // ---- participants ------------------------------------------------------------------

    /// `GET .../participants` (all pages, bounded).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn list_participants(&self, call_id: &str) -> Result<Vec<Participant>, GraphError> {
        self.list(
            Operation::ListParticipants,
            call_path(call_id, "/participants"),
        )
        .await
    }

    /// `GET .../participants/{id}`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn get_participant(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> Result<Participant, GraphError> {
        let path = participant_path(call_id, participant_id, "");
        let raw = self
            .send::<()>(Operation::GetParticipant, Method::GET, path, None)
            .await?;
        self.entity(&raw)
    }

    /// `POST .../participants/invite` (200 + inviteParticipantsOperation). At most 5.
    ///
    /// # Errors
    /// See [`GraphErrorKind`]; `InvalidRequest` for more than 5 participants.
    pub async fn invite_participants(
        &self,
        call_id: &str,
        req: &InviteParticipantsRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        if req.participants.is_empty() || req.participants.len() > 5 {
            return Err(GraphError::new(
                GraphErrorKind::InvalidRequest,
                "invite takes 1 to 5 participants",
            ));
        }
        self.operation(
            Operation::InviteParticipants,
            call_path(call_id, "/participants/invite"),
            req,
        )
        .await
    }

    /// `POST .../participants/{id}/mute`: server mute (200 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn mute_participant(
        &self,
        call_id: &str,
        participant_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(
            Operation::MuteParticipant,
            participant_path(call_id, participant_id, "/mute"),
            &body,
        )
        .await
    }

    /// `DELETE .../participants/{id}` (204).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn remove_participant(
        &self,
        call_id: &str,
        participant_id: &str,
    ) -> Result<(), GraphError> {
        let path = participant_path(call_id, participant_id, "");
        self.send::<()>(Operation::DeleteParticipant, Method::DELETE, path, None)
            .await?;
        Ok(())
    }

    /// `POST .../participants/{id}/startHoldMusic` (202 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn start_hold_music(
        &self,
        call_id: &str,
        participant_id: &str,
        req: &StartHoldMusicRequest,
    ) -> Result<CommsOperation, GraphError> {
        check_context(req.client_context.as_deref())?;
        self.operation(
            Operation::StartHoldMusic,
            participant_path(call_id, participant_id, "/startHoldMusic"),
            req,
        )
        .await
    }

    /// `POST .../participants/{id}/stopHoldMusic` (202 + operation).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn stop_hold_music(
        &self,
        call_id: &str,
        participant_id: &str,
        client_context: Option<&str>,
    ) -> Result<CommsOperation, GraphError> {
        let body = context_body(client_context)?;
        self.operation(
            Operation::StopHoldMusic,
            participant_path(call_id, participant_id, "/stopHoldMusic"),
            &body,
        )
        .await
    }

    // ---- audio routing groups ----------------------------------------------------------

    /// `POST .../audioRoutingGroups` (201 + group).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn create_audio_routing_group(
        &self,
        call_id: &str,
        group: &AudioRoutingGroup,
    ) -> Result<AudioRoutingGroup, GraphError> {
        let raw = self
            .send(
                Operation::CreateAudioRoutingGroup,
                Method::POST,
                call_path(call_id, "/audioRoutingGroups"),
                Some(group),
            )
            .await?;
        self.entity(&raw)
    }

    /// `GET .../audioRoutingGroups`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn list_audio_routing_groups(
        &self,
        call_id: &str,
    ) -> Result<Vec<AudioRoutingGroup>, GraphError> {
        self.list(
            Operation::ListAudioRoutingGroups,
            call_path(call_id, "/audioRoutingGroups"),
        )
        .await
    }

    /// `GET .../audioRoutingGroups/{id}`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn get_audio_routing_group(
        &self,
        call_id: &str,
        group_id: &str,
    ) -> Result<AudioRoutingGroup, GraphError> {
        let path = call_path(
            call_id,
            &format!("/audioRoutingGroups/{}", segment(group_id)),
        );
        let raw = self
            .send::<()>(Operation::GetAudioRoutingGroup, Method::GET, path, None)
            .await?;
        self.entity(&raw)
    }

    /// `PATCH .../audioRoutingGroups/{id}` (200 + group).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn update_audio_routing_group(
        &self,
        call_id: &str,
        group_id: &str,
        group: &AudioRoutingGroup,
    ) -> Result<AudioRoutingGroup, GraphError> {
        let path = call_path(
            call_id,
            &format!("/audioRoutingGroups/{}", segment(group_id)),
        );
        let raw = self
            .send(
                Operation::UpdateAudioRoutingGroup,
                Method::PATCH,
                path,
                Some(group),
            )
            .await?;
        if raw.body.is_empty() {
            return Ok(group.clone());
        }
        self.entity(&raw)
    }

    /// `DELETE .../audioRoutingGroups/{id}` (204).
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn delete_audio_routing_group(
        &self,
        call_id: &str,
        group_id: &str,
    ) -> Result<(), GraphError> {
        let path = call_path(
            call_id,
            &format!("/audioRoutingGroups/{}", segment(group_id)),
        );
        self.send::<()>(
            Operation::DeleteAudioRoutingGroup,
            Method::DELETE,
            path,
            None,
        )
        .await?;
        Ok(())
    }

    // ---- content sharing, operations ---------------------------------------------------

    /// `GET .../contentSharingSessions`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn list_content_sharing_sessions(
        &self,
        call_id: &str,
    ) -> Result<Vec<ContentSharingSession>, GraphError> {
        self.list(
            Operation::ListContentSharingSessions,
            call_path(call_id, "/contentSharingSessions"),
        )
        .await
    }

    /// `GET .../contentSharingSessions/{id}`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn get_content_sharing_session(
        &self,
        call_id: &str,
        session_id: &str,
    ) -> Result<ContentSharingSession, GraphError> {
        let path = call_path(
            call_id,
            &format!("/contentSharingSessions/{}", segment(session_id)),
        );
        let raw = self
            .send::<()>(Operation::GetContentSharingSession, Method::GET, path, None)
            .await?;
        self.entity(&raw)
    }

    /// `GET .../operations/{id}`.
    ///
    /// # Errors
    /// See [`GraphErrorKind`].
    pub async fn get_operation(
        &self,
        call_id: &str,
        operation_id: &str,
    ) -> Result<CommsOperation, GraphError> {
        let path = call_path(call_id, &format!("/operations/{}", segment(operation_id)));
        let raw = self
            .send::<()>(Operation::GetOperation, Method::GET, path, None)
            .await?;
        self.entity(&raw)
    }

    // ---- plumbing ----------------------------------------------------------------------

    async fn operation<B: Serialize + ?Sized>(
        &self,
        op: Operation,
        path: String,
        body: &B,
    ) -> Result<CommsOperation, GraphError> {
        let raw = self.send(op, Method::POST, path, Some(body)).await?;
        if raw.body.iter().all(u8::is_ascii_whitespace) {
            // Tolerate an empty body: the operation id is the last segment of Location.
            let id = raw
                .location
                .as_deref()
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_owned);
            return Ok(CommsOperation {
                id,
                ..CommsOperation::default()
            });
        }
        self.entity(&raw)
    }

    async fn list<T: DeserializeOwned>(
        &self,
        op: Operation,
        path: String,
    ) -> Result<Vec<T>, GraphError> {
        let mut out = Vec::new();
        let mut next = Some(path);
        for _ in 0..MAX_PAGES {
            let Some(p) = next.take() else { break };
            let raw = self.send::<()>(op, Method::GET, p, None).await?;
            let page: Collection<T> = self.entity(&raw)?;
            out.extend(page.value);
            next = match page.next_link {
                Some(link) => Some(self.relative(&link)?),
                None => None,
            };
        }
        Ok(out)
    }

    /// Turns an absolute `@odata.nextLink` under our base URL into a path.
    fn relative(&self, link: &str) -> Result<String, GraphError> {
        let base = self.inner.config.base_url.trim_end_matches('/');
        link.strip_prefix(base).map(str::to_owned).ok_or_else(|| {
            GraphError::new(
                GraphErrorKind::InvalidResponse,
                "nextLink points outside the graph base url",
            )
        })
    }

    fn entity<T: DeserializeOwned>(&self, raw: &Raw) -> Result<T, GraphError> {
        serde_json::from_slice(&raw.body).map_err(|e| {
            GraphError::new(
                GraphErrorKind::InvalidResponse,
                format!("unreadable response body: {e}"),
            )
            .with_status(raw.status)
        })
    }

    fn preflight(&self, op: Operation, token: &AccessToken) -> Result<(), GraphError> {
        if !self.inner.config.check_permissions || token.roles.is_none() {
            return Ok(());
        }
        let Some(missing) = op.required_permissions().missing(&token.permissions()) else {
            return Ok(());
        };
        let creds = self.inner.tokens.credentials();
        let consent = admin_consent_url(
            &self.inner.config.authority,
            &creds.tenant_id,
            &creds.client_id,
        );
        Err(GraphError::new(
            GraphErrorKind::Forbidden {
                missing_permission: Some(missing),
            },
            format!(
                "{op:?} needs application permission {missing}; add it to the app registration \
                 and have a tenant admin grant consent: {consent}"
            ),
        ))
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        op: Operation,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<Raw, GraphError> {
        let result = self.send_inner(op, method, path, body).await;
        if let Err(e) = &result {
            let local = matches!(e.kind(), GraphErrorKind::InvalidRequest)
                || (matches!(e.kind(), GraphErrorKind::Forbidden { .. }) && e.status().is_none());
            let counter = if local {
                &self.inner.refused_locally
            } else {
                &self.inner.failures
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn send_inner<B: Serialize + ?Sized>(
        &self,
        op: Operation,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<Raw, GraphError> {
        let cfg = &self.inner.config;
        let url = format!("{}{}", cfg.base_url.trim_end_matches('/'), path);
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| GraphError::new(GraphErrorKind::InvalidRequest, e.to_string()))?;
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            let token = self.inner.tokens.token().await?;
            if attempt == 0 {
                self.preflight(op, &token)?;
            }
            let mut rb = self
                .inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.secret.expose())
                .header("client-request-id", &client_request_id)
                .timeout(cfg.request_timeout);
            if let Some(b) = &body {
                rb = rb
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            } else if method == Method::POST {
                rb = rb.header(http::header::CONTENT_LENGTH, "0");
            }
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            if attempt > 0 {
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
            }
            let (err, failure) = match rb.send().await {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let bytes = transport::read_body(&mut resp, cfg.max_response_bytes)
                        .await
                        .map_err(|e| {
                            e.with_status(status)
                                .with_client_request_id(&client_request_id)
                        })?;
                    if (200..300).contains(&status) {
                        let location = headers
                            .get(http::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        return Ok(Raw {
                            status,
                            location,
                            body: bytes,
                        });
                    }
                    if status == 429 {
                        self.inner.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut err =
                        GraphError::from_response(status, &headers, &bytes, &client_request_id);
                    if status == 401 && !reauthenticated {
                        // The token may have been revoked or rotated: fetch a new one once.
                        reauthenticated = true;
                        self.inner.tokens.invalidate();
                        continue;
                    }
                    if status == 403 {
                        let missing = op.required_permissions().missing(&token.permissions());
                        err = err.with_kind(GraphErrorKind::Forbidden {
                            missing_permission: missing.filter(|_| token.roles.is_some()),
                        });
                    }
                    (
                        err,
                        AttemptFailure::Status {
                            status,
                            retry_after: err_retry_after(&headers),
                        },
                    )
                }
                Err(e) => {
                    let (err, failure) = transport::classify_send_error(&e);
                    (err.with_client_request_id(&client_request_id), failure)
                }
            };
            match cfg.retry.decide(
                attempt,
                failure,
                op.is_idempotent(),
                self.inner.jitter.next(),
            ) {
                RetryDecision::RetryAfter(d) => {
                    tracing::debug!(?op, attempt, delay_ms = d.as_millis() as u64, error = %err, "retrying graph request");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                RetryDecision::GiveUp => return Err(err),
            }
        }
    }
}

fn err_retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::error::parse_retry_after)
}

fn call_path(call_id: &str, rest: &str) -> String {
    format!("/communications/calls/{}{}", segment(call_id), rest)
}

fn participant_path(call_id: &str, participant_id: &str, rest: &str) -> String {
    call_path(
        call_id,
        &format!("/participants/{}{}", segment(participant_id), rest),
    )
}

fn check_context(ctx: Option<&str>) -> Result<(), GraphError> {
    match ctx {
        Some(c) if c.chars().count() > MAX_CLIENT_CONTEXT_LEN => Err(GraphError::new(
            GraphErrorKind::InvalidRequest,
            format!("clientContext is longer than {MAX_CLIENT_CONTEXT_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

fn context_body(ctx: Option<&str>) -> Result<ClientContextRequest, GraphError> {
    check_context(ctx)?;
    Ok(ClientContextRequest {
        client_context: ctx.map(str::to_owned),
    })
}
