//! The running engine: joins signaling and media, serves HTTP, owns the calls.
//!
//! [`Engine::start`] binds the media UDP port and the HTTP listener, and returns a handle with
//! which the binary (or a test, or the demo) joins meetings, lists calls and shuts down. The
//! HTTP surface is [`crate::server`]'s probe routes plus the webhook, the WHIP endpoint and the
//! operator API defined here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mediabot_media::stats::PROMETHEUS_BOUNDS;
use mediabot_media::transport::whip::{self, WhipConfig, WhipState};
use mediabot_media::transport::{CallId, MediaServer, MediaServerConfig, MediaServerHandle};
use mediabot_media::{CallLatency, CallLatencySnapshot};
use mediabot_signaling::join_url::parse_join_url;
use mediabot_signaling::models::{
    AnswerRequest, Call, CallState, ChangeType, MediaConfig, RejectReason, RejectRequest,
};
use mediabot_signaling::notifications::{
    Notification, NotificationVerifier, Resource, VerifierConfig,
};
use mediabot_signaling::state::RosterMode;
use mediabot_signaling::{Credentials, GraphClient, GraphConfig};
use tokio::sync::{broadcast, mpsc, watch};

use crate::call::{self, CallInfo, CallInfoHandle, CallInput, CallSetup};
use crate::config::{Config, IncomingPolicy};
use crate::health::Health;
use crate::media::{EngineMedia, GlueStats, MediaCommand, MediaEvent};
use crate::metrics::{Histogram, Kind, PromWriter};
use crate::playback::{
    Clip, PlaybackError, PlaybackId, PlaybackOutcome, QueuedClip, convert_pcm, decode_wav,
};
use crate::server::{self, MetricsSource, ProbeState};
use crate::sinks::transcription::{FeedState, VadConfig};
use crate::sinks::transcription_ws::{self, FeedHandle, WsFeedConfig};

/// Errors starting the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// HTTP or media.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// A Graph request failed.
    #[error(transparent)]
    Graph(#[from] mediabot_signaling::GraphError),
}

/// Engine-level counters and latencies.
#[derive(Debug)]
pub struct EngineMetrics {
    /// Notification batches accepted.
    pub notifications_accepted: AtomicU64,
    /// Notification batches refused, by any cause.
    pub notifications_rejected: AtomicU64,
    /// Notifications for calls this instance does not hold.
    pub notifications_unrouted: AtomicU64,
    /// Notification batches posted to another instance's callback path.
    pub notifications_misrouted: AtomicU64,
    /// Webhook handling latency (verify + parse + dispatch).
    pub webhook_latency: Histogram,
    /// Join/answer request to the first participant frame in a sink (see `call.rs`).
    pub setup_latency: Histogram,
    /// Calls answered.
    pub calls_answered: AtomicU64,
    /// Calls rejected (policy, drain, capacity).
    pub calls_rejected: AtomicU64,
    /// Calls joined.
    pub calls_joined: AtomicU64,
    /// Calls ended.
    pub calls_ended: AtomicU64,
    /// Recorder failures: the call folder, the compliance status, or a file (create or write
    /// error, e.g. disk full). Shared with the calls' sink threads.
    pub recorder_errors: Arc<AtomicU64>,
    /// Transcription feed messages that could not be written to a file feed's files. Shared
    /// with the calls' sink threads, which write those files.
    pub transcription_write_errors: Arc<AtomicU64>,
    /// Transcription audio frames dropped from a full feed backlog (a WebSocket consumer away
    /// or too slow; the consumer gets a `gap` message). Shared with the calls' feeds.
    pub transcription_frames_dropped: Arc<AtomicU64>,
    /// DTMF tones received in media.
    pub tones: AtomicU64,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            notifications_accepted: AtomicU64::new(0),
            notifications_rejected: AtomicU64::new(0),
            notifications_unrouted: AtomicU64::new(0),
            notifications_misrouted: AtomicU64::new(0),
            webhook_latency: Histogram::latency(),
            setup_latency: Histogram::latency(),
            calls_answered: AtomicU64::new(0),
            calls_rejected: AtomicU64::new(0),
            calls_joined: AtomicU64::new(0),
            calls_ended: AtomicU64::new(0),
            recorder_errors: Arc::default(),
            transcription_write_errors: Arc::default(),
            transcription_frames_dropped: Arc::default(),
            tones: AtomicU64::new(0),
        }
    }
}

struct CallEntry {
    tx: mpsc::Sender<CallInput>,
    info: CallInfoHandle,
    media_key: CallId,
}

/// What an app built on the engine hears about its calls ([`Engine::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// Graph reports the call established.
    CallEstablished {
        /// Graph call id.
        call_id: String,
    },
    /// The call's media session connected and takes audio: [`Engine::play_wav`] and
    /// [`Engine::play_pcm`] are accepted from now on.
    MediaReady {
        /// Graph call id.
        call_id: String,
    },
    /// A DTMF key arrived in the media (RFC 4733), reported once per press.
    Tone {
        /// Graph call id.
        call_id: String,
        /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 A-D.
        event: u8,
    },
    /// A clip finished playing (or was stopped, or the call ended first).
    PlaybackFinished {
        /// Graph call id.
        call_id: String,
        /// The clip.
        id: PlaybackId,
        /// How it ended.
        outcome: PlaybackOutcome,
    },
    /// The call ended; its files are closed ([`Engine::finished_calls`] has the outcome).
    CallEnded {
        /// Graph call id.
        call_id: String,
    },
}

/// Events buffered per subscriber before the slowest one starts missing them.
const EVENT_BUFFER: usize = 1024;

/// Most notification batches kept for calls not (yet) registered: the 201 of a join can arrive
/// after the first notifications of the call it created.
const MAX_ORPHAN_CALLS: usize = 64;
const MAX_ORPHANS_PER_CALL: usize = 64;
/// Finished calls kept for the operator API.
const MAX_FINISHED: usize = 100;

/// State shared by the HTTP handlers and the call tasks.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Graph client.
    pub graph: GraphClient,
    /// Notification verifier.
    pub verifier: NotificationVerifier,
    /// Health and admission.
    pub health: Arc<Health>,
    /// The WHIP endpoint.
    pub whip: WhipState<MediaServerHandle>,
    /// The media server.
    pub media_server: MediaServerHandle,
    /// Commands to the media thread.
    pub media_tx: SyncSender<MediaCommand>,
    /// Glue counters.
    pub glue_stats: Arc<GlueStats>,
    /// Engine counters.
    pub metrics: EngineMetrics,
    calls: Mutex<HashMap<String, CallEntry>>,
    by_media: Mutex<HashMap<CallId, String>>,
    orphans: Mutex<HashMap<String, (Instant, Vec<Notification>)>>,
    finished: Mutex<VecDeque<CallInfo>>,
    shutdown: watch::Sender<bool>,
    events: broadcast::Sender<EngineEvent>,
    next_playback: AtomicU64,
    /// HTTPS handshake counters (zero when serving plain HTTP).
    pub tls_stats: Arc<crate::tls::TlsStats>,
    /// Frame latency histograms of the calls in progress, by media key.
    latency_live: Mutex<HashMap<CallId, Arc<CallLatency>>>,
    /// The final histograms of every ended call, summed: the exported totals never go back.
    latency_ended: Mutex<CallLatencySnapshot>,
    /// The threads that run every call's sinks (`media.sink_threads`).
    pub sinks: crate::sinks::runner::SinkPool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The transcription feed of a call, when configured: for a WebSocket feed with its driver
    /// task started; for a file feed with the folder its files go to, which the call's sink
    /// thread writes (see [`crate::sinks::runner::SinkSet::feed_dir`]).
    pub fn feed_for(&self, call_id: &str) -> Option<(FeedHandle, Option<PathBuf>)> {
        let t = &self.config.transcription;
        if t.websocket_url.is_none() && t.file_dir.is_none() {
            return None;
        }
        let backlog = t.reconnect_buffer_secs.max(1);
        let feed = FeedHandle::new(
            FeedState::new(
                call_id,
                VadConfig::default(),
                backlog,
                self.config.media.max_streams_per_call,
            )
            .counting_drops_in(Arc::clone(&self.metrics.transcription_frames_dropped)),
        );
        if let Some(url) = &t.websocket_url {
            let sep = if url.contains('?') { '&' } else { '?' };
            let cfg = WsFeedConfig::new(format!("{url}{sep}callId={}", urlencode(call_id)));
            let stop = self.shutdown.subscribe();
            let f = feed.clone();
            tokio::spawn(async move {
                let stats = transcription_ws::run(cfg, f, stop).await;
                tracing::info!(?stats, "transcription feed finished");
            });
        } else if let Some(dir) = &t.file_dir {
            let dir =
                dir.join(call_id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
            return Some((feed, Some(dir)));
        }
        Some((feed, None))
    }

    /// Records a finished call and forgets its routes.
    pub fn call_finished(&self, call_id: &str, media_key: &CallId, info: CallInfo) {
        lock(&self.calls).remove(call_id);
        lock(&self.by_media).remove(media_key);
        {
            let mut f = lock(&self.finished);
            if f.len() >= MAX_FINISHED {
                f.pop_front();
            }
            f.push_back(info);
        }
        self.publish(EngineEvent::CallEnded {
            call_id: call_id.to_string(),
        });
    }

    /// Starts exporting a call's frame latency histograms.
    pub fn latency_started(&self, media_key: &CallId, latency: Arc<CallLatency>) {
        lock(&self.latency_live).insert(media_key.clone(), latency);
    }

    /// Moves an ended call's histograms into the totals (after its pipeline is gone, so nothing
    /// more is recorded into them).
    pub fn latency_ended(&self, media_key: &CallId) {
        if let Some(l) = lock(&self.latency_live).remove(media_key) {
            lock(&self.latency_ended).merge(&l.snapshot());
        }
    }

    /// Frame latencies of all calls, ended and in progress, summed.
    pub fn latency_totals(&self) -> CallLatencySnapshot {
        let mut total = lock(&self.latency_ended).clone();
        for l in lock(&self.latency_live).values() {
            total.merge(&l.snapshot());
        }
        total
    }

    /// Tells [`Engine::events`] subscribers (none listening is fine).
    pub fn publish(&self, ev: EngineEvent) {
        let _ = self.events.send(ev);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Graph client a configuration describes (secret or certificate credentials).
///
/// # Errors
/// [`EngineError::Config`] naming the key when credentials are missing or unreadable.
pub fn graph_client(config: &Config) -> Result<GraphClient, EngineError> {
    let g = &config.graph;
    let tenant = g
        .tenant_id
        .clone()
        .ok_or_else(|| EngineError::Config("graph.tenant_id is required".into()))?;
    let client_id = g
        .client_id
        .clone()
        .ok_or_else(|| EngineError::Config("graph.client_id is required".into()))?;
    let creds = match (&g.certificate_file, &g.private_key_file, &g.client_secret) {
        (Some(cert), Some(key), _) => {
            let key_pem = std::fs::read_to_string(key)
                .map_err(|e| EngineError::Config(format!("graph.private_key_file: {e}")))?;
            let cert_pem = std::fs::read_to_string(cert)
                .map_err(|e| EngineError::Config(format!("graph.certificate_file: {e}")))?;
            let thumb = cert_thumbprint(&cert_pem).ok_or_else(|| {
                EngineError::Config("graph.certificate_file: not a PEM certificate".into())
            })?;
            Credentials::certificate(tenant.clone(), client_id.clone(), &key_pem, &thumb)
                .map_err(|e| EngineError::Config(format!("graph.certificate_file: {e}")))?
        }
        (_, _, Some(secret)) => {
            Credentials::secret(tenant.clone(), client_id.clone(), secret.expose())
        }
        _ => {
            return Err(EngineError::Config(
                "no Graph credentials: set MEDIABOT_GRAPH_CLIENT_SECRET or a certificate".into(),
            ));
        }
    };
    let gcfg = GraphConfig::with_endpoints(g.base_url.clone(), g.authority.clone());
    let graph = GraphClient::new(gcfg.clone(), creds)?;
    Ok(graph)
}

/// Overrides for tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Only loopback peers may send media (tests, demo).
    pub loopback_media_only: bool,
}

/// A running engine.
#[derive(Clone, Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    media_addr: SocketAddr,
}

impl Engine {
    /// Starts media, HTTP and the background tasks.
    ///
    /// # Errors
    /// [`EngineError`] when a socket cannot be bound or the credentials are unusable.
    pub async fn start(mut config: Config, opts: EngineOptions) -> Result<Self, EngineError> {
        // HTTPS in-process when a certificate is configured: checked before anything binds.
        let tls_config = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::tls::load_server_config(cert, key)
                    .map_err(|e| EngineError::Config(e.to_string()))?,
            ),
            (None, None) => None,
            _ => {
                return Err(EngineError::Config(
                    "server.tls_cert and server.tls_key must be set together".into(),
                ));
            }
        };
        let g = &config.graph;
        let client_id = g
            .client_id
            .clone()
            .ok_or_else(|| EngineError::Config("graph.client_id is required".into()))?;
        let graph = graph_client(&config)?;
        let gcfg = GraphConfig::with_endpoints(g.base_url.clone(), g.authority.clone());
        let mut vcfg = VerifierConfig::new(client_id.clone());
        vcfg.openid_metadata_url = g.openid_metadata_url.clone();
        vcfg.max_body_bytes = config.server.max_body_bytes;
        if !g.allowed_tenants.is_empty() {
            vcfg.allowed_tenants = Some(g.allowed_tenants.clone());
        }
        let http = GraphClient::http_client(&gcfg)?;
        let verifier = NotificationVerifier::new(vcfg, http);

        // Media: the one UDP port.
        let (cmd_tx, cmd_rx) = sync_channel(1024);
        let (ev_tx, ev_rx) = sync_channel::<MediaEvent>(4096);
        let glue_stats = Arc::new(GlueStats::default());
        // ForgetClosed keeps the WHIP endpoint's session table in step with sessions the media
        // server ends by itself (ICE timeout, idle, failure); linked once the state exists.
        let handler =
            whip::ForgetClosed::new(EngineMedia::new(cmd_rx, ev_tx, Arc::clone(&glue_stats)));
        let whip_link = handler.link();
        let bind = SocketAddr::new(config.media.bind_ip, config.media.udp_port);
        let mcfg = MediaServerConfig {
            bind,
            public_ip: config.media.public_ip,
            max_sessions: config.media.max_calls * 2,
            max_ssrcs_per_session: config.media.max_streams_per_call,
            loopback_peers_only: opts.loopback_media_only,
            wake_grid: Duration::from_micros(config.media.wake_grid_us),
            realtime_priority: config.media.realtime_priority,
            direct_media: config.media.direct_media,
            send: mediabot_media::transport::SendConfig {
                idle_silence: config.media.idle_silence,
                ..Default::default()
            },
            ..MediaServerConfig::default()
        };
        let media_server =
            MediaServer::start(mcfg, Box::new(handler)).map_err(|e| EngineError::Bind {
                what: "media udp port",
                addr: bind.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| EngineError::Bind {
                what: "http",
                addr: config.server.listen.to_string(),
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| EngineError::Bind {
            what: "http",
            addr: config.server.listen.to_string(),
            source,
        })?;
        // Without a configured public URL (demo, tests) the bound address is the public one.
        let public_url = config.server.public_url.clone().unwrap_or_else(|| {
            let scheme = if tls_config.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{http_addr}")
        });
        config.server.public_url = Some(public_url.clone());
        let whip_state = WhipState::new(
            WhipConfig {
                public_base_url: public_url.trim_end_matches('/').to_string(),
                path_prefix: server::WHIP_PREFIX.into(),
                token_ttl: Duration::from_secs(config.media.whip_token_ttl_secs),
                ..WhipConfig::default()
            },
            media_server.clone(),
        );
        let _ = whip_link.set(whip_state.clone());

        let health = Arc::new(Health::new(config.media.max_calls));
        let (shutdown, _) = watch::channel(false);
        crate::sinks::runner::set_sink_nice(config.media.sink_nice);
        let sinks = crate::sinks::runner::SinkPool::new(
            config.media.sink_workers(),
            config.media.sink_scheduling,
        );
        let shared = Arc::new(Shared {
            config,
            graph,
            verifier,
            health: Arc::clone(&health),
            whip: whip_state.clone(),
            media_server: media_server.clone(),
            media_tx: cmd_tx,
            glue_stats,
            metrics: EngineMetrics::default(),
            calls: Mutex::new(HashMap::new()),
            by_media: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            finished: Mutex::new(VecDeque::new()),
            shutdown,
            events: broadcast::channel(EVENT_BUFFER).0,
            next_playback: AtomicU64::new(1),
            tls_stats: Arc::default(),
            latency_live: Mutex::new(HashMap::new()),
            latency_ended: Mutex::new(CallLatencySnapshot::default()),
            sinks,
        });

        // Media events → call tasks.
        let s = Arc::clone(&shared);
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("media-events".into())
            .spawn(move || {
                while let Ok(ev) = ev_rx.recv() {
                    let key = match &ev {
                        MediaEvent::Connected { call, .. }
                        | MediaEvent::SessionClosed { call, .. }
                        | MediaEvent::StreamAdded { call, .. }
                        | MediaEvent::StreamRemoved { call, .. }
                        | MediaEvent::DominantSpeaker { call, .. }
                        | MediaEvent::PlaybackReady { call }
                        | MediaEvent::PlaybackFinished { call, .. } => call.clone(),
                        MediaEvent::Tone(t) => t.call.clone(),
                    };
                    let Some(call_id) = lock(&s.by_media).get(&key).cloned() else {
                        continue;
                    };
                    match &ev {
                        MediaEvent::PlaybackReady { .. } => {
                            s.publish(EngineEvent::MediaReady {
                                call_id: call_id.clone(),
                            });
                            continue;
                        }
                        MediaEvent::PlaybackFinished { id, outcome, .. } => {
                            s.publish(EngineEvent::PlaybackFinished {
                                call_id: call_id.clone(),
                                id: *id,
                                outcome: *outcome,
                            });
                            continue;
                        }
                        MediaEvent::Tone(t)
                            if t.phase == mediabot_media::transport::TonePhase::Start =>
                        {
                            s.publish(EngineEvent::Tone {
                                call_id: call_id.clone(),
                                event: t.event,
                            });
                        }
                        _ => {}
                    }
                    let tx = lock(&s.calls).get(&call_id).map(|c| c.tx.clone());
                    if let Some(tx) = tx {
                        let _ = rt.block_on(tx.send(CallInput::Media(ev)));
                    }
                }
            })
            .map_err(|source| EngineError::Bind {
                what: "media events thread",
                addr: String::new(),
                source,
            })?;

        let app = router(Arc::clone(&shared));
        let mut stop = shared.shutdown.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match tls_config {
            Some(tls) => {
                let l = crate::tls::TlsListener::new(listener, tls, Arc::clone(&shared.tls_stats))
                    .map_err(|source| EngineError::Bind {
                        what: "https",
                        addr: http_addr.to_string(),
                        source,
                    })?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stopped).await {
                        tracing::error!(error = %e, "https server stopped");
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "http server stopped");
                    }
                });
            }
        }
        health.set_started();
        let media_addr = media_server.local_addr();
        tracing::info!(http = %http_addr, media = %media_addr, "mediabot engine started");
        Ok(Self {
            shared,
            http_addr,
            media_addr,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound media UDP address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Shared state (tests, demo).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Joins a Teams meeting by its join URL.
    ///
    /// # Errors
    /// A bad URL, not ready (draining, at capacity), or Graph's refusal.
    pub async fn join(&self, join_url: &str) -> Result<String, EngineError> {
        let join =
            parse_join_url(join_url).map_err(|e| EngineError::Config(format!("join url: {e}")))?;
        let slot = self
            .shared
            .health
            .try_admit()
            .map_err(|e| EngineError::Config(format!("not accepting calls: {e}")))?;
        let media_key = CallId::new(uuid::Uuid::new_v4().to_string());
        let blob = self.shared.whip.mint_blob(&media_key);
        let body = Call::join_meeting(
            callback_uri(&self.shared),
            join,
            MediaConfig::app_hosted(blob.encoded.clone()),
        );
        let started = Instant::now();
        let created = self.shared.graph.create_call(&body).await?;
        let call_id = created
            .id
            .clone()
            .ok_or_else(|| EngineError::Config("Graph returned a call without id".into()))?;
        self.shared
            .metrics
            .calls_joined
            .fetch_add(1, Ordering::Relaxed);
        spawn_call(
            &self.shared,
            call_id.clone(),
            media_key,
            false,
            started,
            RosterMode::Full,
            slot,
        );
        Ok(call_id)
    }

    /// Calls held now.
    pub fn calls(&self) -> Vec<CallInfo> {
        lock(&self.shared.calls)
            .values()
            .map(|c| lock(&c.info).clone())
            .collect()
    }

    /// Calls that ended (most recent last, bounded).
    pub fn finished_calls(&self) -> Vec<CallInfo> {
        lock(&self.shared.finished).iter().cloned().collect()
    }

    /// Asks a call to end.
    pub async fn hang_up(&self, call_id: &str) -> bool {
        let tx = lock(&self.shared.calls).get(call_id).map(|c| c.tx.clone());
        match tx {
            Some(tx) => tx.send(CallInput::HangUp).await.is_ok(),
            None => false,
        }
    }

    /// Subscribes to [`EngineEvent`]s (call established, media ready, tones, playback finished,
    /// call ended). A subscriber more than 1024 events behind misses the oldest ones
    /// (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.events.subscribe()
    }

    /// Plays a WAV file into a call (PCM 8-32 bit or float, any rate from 8 to 192 kHz, mono or
    /// more channels; converted to 48 kHz mono). Clips queue behind the one playing; the
    /// returned [`Playback`] tells when this one ends, and so does
    /// [`EngineEvent::PlaybackFinished`].
    ///
    /// # Errors
    /// [`PlaybackError`]: unknown call, no media session yet (wait for
    /// [`EngineEvent::MediaReady`]), bad or too long WAV, full queue.
    pub async fn play_wav(
        &self,
        call_id: &str,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Playback, PlaybackError> {
        let media_key = self.media_key(call_id)?;
        let path = path.as_ref().to_path_buf();
        let samples = tokio::task::spawn_blocking(move || decode_wav(&path))
            .await
            .map_err(|_| PlaybackError::MediaUnavailable)??;
        self.enqueue(media_key, samples).await
    }

    /// Plays app PCM into a call: interleaved `channels`, at `rate` Hz (8 to 192 kHz),
    /// converted to 48 kHz mono. Otherwise as [`Engine::play_wav`].
    ///
    /// # Errors
    /// As [`Engine::play_wav`], with [`PlaybackError::BadPcm`] for bad rates or lengths.
    pub async fn play_pcm(
        &self,
        call_id: &str,
        samples: &[i16],
        rate: u32,
        channels: u16,
    ) -> Result<Playback, PlaybackError> {
        let media_key = self.media_key(call_id)?;
        let samples = if rate == crate::playback::PLAYBACK_RATE && channels == 1 {
            convert_pcm(samples, rate, channels)?
        } else {
            let owned = samples.to_vec();
            tokio::task::spawn_blocking(move || convert_pcm(&owned, rate, channels))
                .await
                .map_err(|_| PlaybackError::MediaUnavailable)??
        };
        self.enqueue(media_key, samples).await
    }

    /// Stops the clip playing in a call and drops the ones queued behind it (each reports
    /// [`PlaybackOutcome::Stopped`]); returns how many there were. At most 100 ms already handed
    /// to the transport still plays.
    ///
    /// # Errors
    /// [`PlaybackError::UnknownCall`], [`PlaybackError::MediaUnavailable`].
    pub async fn stop_playback(&self, call_id: &str) -> Result<usize, PlaybackError> {
        let media_key = self.media_key(call_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared
            .media_tx
            .try_send(MediaCommand::StopPlayback {
                call: media_key,
                reply: tx,
            })
            .map_err(|_| PlaybackError::MediaUnavailable)?;
        match tokio::time::timeout(Duration::from_secs(2), rx).await {
            Ok(Ok(Some(n))) => Ok(n),
            Ok(Ok(None)) => Err(PlaybackError::UnknownCall(call_id.to_string())),
            _ => Err(PlaybackError::MediaUnavailable),
        }
    }

    fn media_key(&self, call_id: &str) -> Result<CallId, PlaybackError> {
        lock(&self.shared.calls)
            .get(call_id)
            .map(|c| c.media_key.clone())
            .ok_or_else(|| PlaybackError::UnknownCall(call_id.to_string()))
    }

    async fn enqueue(&self, call: CallId, samples: Vec<i16>) -> Result<Playback, PlaybackError> {
        let id = PlaybackId(self.shared.next_playback.fetch_add(1, Ordering::Relaxed));
        let clip = Clip {
            id,
            samples: samples.into(),
        };
        let duration = clip.duration();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared
            .media_tx
            .try_send(MediaCommand::Play {
                call,
                clip: Box::new(QueuedClip {
                    clip,
                    done: Some(done_tx),
                }),
                reply: tx,
            })
            .map_err(|_| PlaybackError::MediaUnavailable)?;
        match tokio::time::timeout(Duration::from_secs(2), rx).await {
            Ok(Ok(Ok(()))) => Ok(Playback {
                id,
                duration,
                done: done_rx,
            }),
            Ok(Ok(Err(e))) => Err(e),
            _ => Err(PlaybackError::MediaUnavailable),
        }
    }

    /// Graceful shutdown: readiness false, no new calls, calls get `grace` to end by themselves,
    /// then are hung up; files are finalized before this returns.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.health.start_draining();
        tracing::info!(
            calls = self.calls().len(),
            grace_secs = grace.as_secs(),
            "draining"
        );
        let deadline = Instant::now() + grace;
        while !self.calls().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ids: Vec<String> = self.calls().into_iter().map(|c| c.call_id).collect();
        for id in &ids {
            self.hang_up(id).await;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.calls().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.shared.shutdown.send(true);
        self.shared.media_server.shutdown().await;
    }
}

/// A clip queued by [`Engine::play_wav`] or [`Engine::play_pcm`].
#[derive(Debug)]
pub struct Playback {
    /// The clip's id (also in [`EngineEvent::PlaybackFinished`]).
    pub id: PlaybackId,
    /// Its length at 48 kHz.
    pub duration: Duration,
    done: tokio::sync::oneshot::Receiver<PlaybackOutcome>,
}

impl Playback {
    /// Waits until the clip has played out, was stopped, or its call ended.
    pub async fn finished(self) -> PlaybackOutcome {
        self.done.await.unwrap_or(PlaybackOutcome::CallEnded)
    }
}

/// The `callbackUri` this instance puts into every answer and join: its own public URL, plus
/// its instance segment when `server.instance_id` is set, so Graph's notifications for the call
/// reach this instance and no other.
pub fn callback_uri(shared: &Shared) -> String {
    let base = shared
        .config
        .server
        .public_url
        .as_deref()
        .unwrap_or_default();
    let mut uri = format!(
        "{}{}",
        base.trim_end_matches('/'),
        server::NOTIFICATION_PATH
    );
    if let Some(id) = &shared.config.server.instance_id {
        uri.push('/');
        uri.push_str(id);
    }
    uri
}

fn spawn_call(
    shared: &Arc<Shared>,
    call_id: String,
    media_key: CallId,
    incoming: bool,
    started: Instant,
    roster_mode: RosterMode,
    slot: crate::health::CallSlot,
) {
    let (tx, rx) = mpsc::channel(1024);
    let info = Arc::new(Mutex::new(CallInfo {
        call_id: call_id.clone(),
        media_key: media_key.to_string(),
        state: "establishing".into(),
        ..CallInfo::default()
    }));
    let orphans = lock(&shared.orphans)
        .remove(&call_id)
        .map(|(_, v)| v)
        .unwrap_or_default();
    for n in orphans {
        let _ = tx.try_send(CallInput::Notification(Box::new(n)));
    }
    lock(&shared.by_media).insert(media_key.clone(), call_id.clone());
    lock(&shared.calls).insert(
        call_id.clone(),
        CallEntry {
            tx,
            info: Arc::clone(&info),
            media_key: media_key.clone(),
        },
    );
    let setup = CallSetup {
        call_id,
        media_key,
        incoming,
        started,
        roster_mode,
        slot,
        inputs: rx,
        info,
    };
    tokio::spawn(call::run(Arc::clone(shared), setup));
}

/// The whole HTTP surface.
pub fn router(shared: Arc<Shared>) -> Router {
    let probes = server::probe_routes(ProbeState {
        health: Arc::clone(&shared.health),
        metrics: Arc::new(EngineMetricsSource(Arc::clone(&shared))),
    });
    let whip_routes = whip::router(shared.whip.clone());
    let max_body = shared.config.server.max_body_bytes;
    let api = Router::new()
        .route(server::NOTIFICATION_PATH, post(webhook))
        .route(
            &format!("{}/{{instance}}", server::NOTIFICATION_PATH),
            post(webhook_for_instance),
        )
        .route("/api/v1/calls", get(api_list_calls))
        .route("/api/v1/calls/join", post(api_join))
        .route("/api/v1/calls/{id}", get(api_get_call).delete(api_hang_up))
        .route("/api/v1/drain", post(api_drain))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::clone(&shared));
    probes.merge(whip_routes).merge(api)
}

struct EngineMetricsSource(Arc<Shared>);

impl MetricsSource for EngineMetricsSource {
    fn render(&self) -> String {
        render_metrics(&self.0)
    }
}

fn render_metrics(s: &Shared) -> String {
    let mut w = PromWriter::new();
    let m = &s.metrics;
    let calls = lock(&s.calls);
    w.sample(
        "mediabot_calls_active",
        "Calls this instance holds.",
        Kind::Gauge,
        &[],
        calls.len() as f64,
    );
    let mut streams = 0usize;
    for c in calls.values() {
        let info = lock(&c.info);
        streams += info
            .participants
            .iter()
            .filter(|p| !p.left && p.source_id.is_some())
            .count();
    }
    w.sample(
        "mediabot_streams_active",
        "Participants with an audio source in active calls.",
        Kind::Gauge,
        &[],
        streams as f64,
    );
    drop(calls);
    for (name, help, v) in [
        (
            "mediabot_notifications_accepted_total",
            "Notification batches verified and accepted.",
            &m.notifications_accepted,
        ),
        (
            "mediabot_notifications_rejected_total",
            "Notification batches refused (bad token, body, size).",
            &m.notifications_rejected,
        ),
        (
            "mediabot_notifications_unrouted_total",
            "Notifications for calls this instance does not hold.",
            &m.notifications_unrouted,
        ),
        (
            "mediabot_notifications_misrouted_total",
            "Notification batches posted to another instance's callback path (routing mistake).",
            &m.notifications_misrouted,
        ),
        (
            "mediabot_calls_answered_total",
            "Incoming calls answered.",
            &m.calls_answered,
        ),
        (
            "mediabot_calls_rejected_total",
            "Incoming calls rejected (policy, drain, capacity).",
            &m.calls_rejected,
        ),
        (
            "mediabot_calls_joined_total",
            "Meetings joined.",
            &m.calls_joined,
        ),
        ("mediabot_calls_ended_total", "Calls ended.", &m.calls_ended),
        (
            "mediabot_recorder_errors_total",
            "Recorder failures: call folder, compliance status, or a file that could not be \
             created or written (e.g. disk full; the manifest names it).",
            &*m.recorder_errors,
        ),
        (
            "mediabot_recorder_fsync_skipped_total",
            "Periodic fdatasyncs of recording files skipped because the file's previous one had \
             not finished (storage slower than recording.fsync_interval_secs).",
            &crate::sinks::syncer::SKIPPED,
        ),
        (
            "mediabot_transcription_write_errors_total",
            "Transcription feed messages that could not be written to the feed's files.",
            &*m.transcription_write_errors,
        ),
        (
            "mediabot_transcription_frames_dropped_total",
            "Transcription audio frames dropped from a full feed backlog (consumer away or slow).",
            &*m.transcription_frames_dropped,
        ),
        (
            "mediabot_tones_total",
            "DTMF tones received in media (RFC 4733).",
            &m.tones,
        ),
        (
            "mediabot_media_packets_unknown_call_total",
            "RTP packets for calls without a pipeline.",
            &s.glue_stats.packets_unknown_call,
        ),
        (
            "mediabot_media_packets_refused_total",
            "RTP packets the pipeline refused.",
            &s.glue_stats.packets_refused,
        ),
        (
            "mediabot_tls_handshakes_total",
            "HTTPS handshakes completed (in-process TLS).",
            &s.tls_stats.handshakes,
        ),
        (
            "mediabot_tls_handshake_failures_total",
            "HTTPS handshakes that failed or timed out.",
            &s.tls_stats.handshake_failures,
        ),
        (
            "mediabot_media_events_dropped_total",
            "Media events dropped at a full queue.",
            &s.glue_stats.events_dropped,
        ),
        (
            "mediabot_ring_frames_dropped_total",
            "Frames (per speaker and mixed) dropped at a full sink ring: audio the recorder and feed never got.",
            &mediabot_media::stats::RING_FRAMES_DROPPED,
        ),
        (
            "mediabot_ogg_packets_dropped_total",
            "Opus packets not copied to the Ogg/Opus recorder because its ring was full.",
            &s.glue_stats.ogg_packets_dropped,
        ),
        (
            "mediabot_echo_frames_dropped_total",
            "Echo frames dropped because the playback ring was full or a clip was playing.",
            &s.glue_stats.echo_dropped,
        ),
    ]
    .into_iter()
    // The media transport's counters: what the media thread read, sent, and dropped (and why).
    .chain(s.media_server.stats().metric_counters())
    {
        w.sample(
            name,
            help,
            Kind::Counter,
            &[],
            v.load(Ordering::Relaxed) as f64,
        );
    }
    w.histogram(
        "mediabot_webhook_seconds",
        "Notification webhook handling time.",
        &[],
        &m.webhook_latency,
    );
    let sinks = &*crate::sinks::runner::SINK_METRICS;
    w.histogram(
        "mediabot_sink_wake_delay_seconds",
        "How late each scheduled round of a sink thread started after its 20 ms grid point \
         (waiting for the CPU). Rounds taking close to a ring's length mean dropped frames.",
        &[],
        &sinks.wake_delay,
    );
    w.histogram(
        "mediabot_sink_round_seconds",
        "How long one round of a sink thread took to drain all of its calls once (recording \
         writes, transcription feed, control messages).",
        &[],
        &sinks.round,
    );
    w.histogram(
        "mediabot_call_setup_seconds",
        "Join/answer request to the first participant audio frame taken by a sink (recorder or \
         transcription feed).",
        &[],
        &m.setup_latency,
    );
    // Frame latencies from the pipelines (every call since start, ended ones included, so the
    // counts only grow), in exact bucket bounds of the media crate's histograms.
    let lat = s.latency_totals();
    for (name, help, h) in [
        (
            "mediabot_frame_processing_seconds",
            "Per decoded frame: from max(packet arrival, jitter-buffer play-out deadline) to the \
             frame's push into the sink rings (queueing and work, not buffering). All calls.",
            &lat.processing,
        ),
        (
            "mediabot_frame_latency_seconds",
            "Per decoded frame: packet arrival to the frame's push into the sink rings. All calls.",
            &lat.end_to_end,
        ),
        (
            "mediabot_jitter_buffer_seconds",
            "Per decoded frame: time held on purpose in the jitter buffer (play-out deadline \
             minus arrival, at least 0). All calls.",
            &lat.jitter_hold,
        ),
    ] {
        w.histogram_cumulative(
            name,
            help,
            &[],
            h.cumulative_at(PROMETHEUS_BOUNDS),
            h.sum.as_secs_f64(),
        );
    }
    let v = s.verifier.stats();
    w.sample(
        "mediabot_notification_key_fetches_total",
        "OpenID key fetches.",
        Kind::Counter,
        &[],
        v.key_fetches as f64,
    );
    w.finish()
}

/// The webhook under an instance segment (`server.instance_id`). A segment naming another
/// instance means a routing mistake in front of the fleet: it is counted, and the batch is still
/// handled here (this instance may hold the call; if not, it is counted as unrouted).
async fn webhook_for_instance(
    State(s): State<Arc<Shared>>,
    Path(instance): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if s.config.server.instance_id.as_deref() != Some(instance.as_str()) {
        s.metrics
            .notifications_misrouted
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            instance,
            "notification for another instance's callback path"
        );
    }
    webhook(State(s), headers, body).await
}

async fn webhook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let t0 = Instant::now();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verified = match s.verifier.verify(auth, &body).await {
        Ok(v) => v,
        Err(e) => {
            s.metrics
                .notifications_rejected
                .fetch_add(1, Ordering::Relaxed);
            let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return (code, e.to_string()).into_response();
        }
    };
    s.metrics
        .notifications_accepted
        .fetch_add(1, Ordering::Relaxed);
    for n in verified.notifications {
        dispatch(&s, n).await;
    }
    s.metrics.webhook_latency.observe(t0.elapsed());
    StatusCode::ACCEPTED.into_response()
}

async fn dispatch(s: &Arc<Shared>, n: Notification) {
    let Some(call_id) = n.call_id().map(str::to_string) else {
        s.metrics
            .notifications_unrouted
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let tx = lock(&s.calls).get(&call_id).map(|c| c.tx.clone());
    if let Some(tx) = tx {
        // The common case costs no timer: only a full queue waits (bounded) for room.
        let input = match tx.try_send(CallInput::Notification(Box::new(n))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(input)) => input,
        };
        if tokio::time::timeout(Duration::from_secs(2), tx.send(input))
            .await
            .is_err()
        {
            tracing::warn!(call_id, "call task is not keeping up; notification dropped");
        }
        return;
    }
    // An incoming call?
    if let (ChangeType::Created, Resource::Call(call)) = (&n.change_type, &n.resource)
        && call.state.as_ref() == Some(&CallState::Incoming)
    {
        handle_incoming(s, call_id, call).await;
        return;
    }
    // Maybe the call a join is creating: keep it briefly.
    let mut orphans = lock(&s.orphans);
    orphans.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(30));
    if orphans.len() >= MAX_ORPHAN_CALLS && !orphans.contains_key(&call_id) {
        s.metrics
            .notifications_unrouted
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let e = orphans
        .entry(call_id)
        .or_insert_with(|| (Instant::now(), Vec::new()));
    if e.1.len() < MAX_ORPHANS_PER_CALL {
        e.1.push(n);
    } else {
        s.metrics
            .notifications_unrouted
            .fetch_add(1, Ordering::Relaxed);
    }
}

async fn handle_incoming(s: &Arc<Shared>, call_id: String, call: &Call) {
    let policy = &s.config.calls;
    let caller = call
        .source
        .as_ref()
        .and_then(|p| p.identity.as_ref())
        .and_then(|i| {
            i.user
                .as_ref()
                .or(i.application.as_ref())
                .or(i.guest.as_ref())
        })
        .and_then(|i| i.id.clone());
    let refused_caller = caller
        .as_ref()
        .is_some_and(|c| policy.reject_callers.contains(c));
    let slot = match (policy.incoming, refused_caller) {
        (IncomingPolicy::Answer, false) => s.health.try_admit().map_err(|e| e.to_string()),
        (IncomingPolicy::Redirect, false) => Err("redirect".into()),
        _ => Err("policy".into()),
    };
    match slot {
        Ok(slot) => {
            let media_key = CallId::new(uuid::Uuid::new_v4().to_string());
            let blob = s.whip.mint_blob(&media_key);
            let req = AnswerRequest::audio(
                callback_uri(s),
                MediaConfig::app_hosted(blob.encoded.clone()),
            );
            let started = Instant::now();
            spawn_call(
                s,
                call_id.clone(),
                media_key,
                true,
                started,
                RosterMode::Full,
                slot,
            );
            match s.graph.answer(&call_id, &req).await {
                Ok(()) => {
                    s.metrics.calls_answered.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(call_id, "incoming call answered");
                }
                Err(e) => {
                    tracing::warn!(call_id, error = %e, "answer failed");
                    let tx = lock(&s.calls).get(&call_id).map(|c| c.tx.clone());
                    if let Some(tx) = tx {
                        let _ = tx.send(CallInput::HangUp).await;
                    }
                }
            }
        }
        Err(why) => {
            s.metrics.calls_rejected.fetch_add(1, Ordering::Relaxed);
            let result = if why == "redirect" {
                let target = policy.redirect_target.clone().unwrap_or_default();
                let req = mediabot_signaling::models::RedirectRequest {
                    targets: vec![mediabot_signaling::models::InvitationParticipantInfo::new(
                        mediabot_signaling::models::IdentitySet::user(target, None),
                    )],
                    timeout: None,
                    callback_uri: None,
                };
                s.graph.redirect(&call_id, &req).await
            } else {
                s.graph
                    .reject(
                        &call_id,
                        &RejectRequest {
                            reason: Some(RejectReason::Busy),
                            callback_uri: None,
                        },
                    )
                    .await
            };
            tracing::info!(
                call_id,
                why,
                ok = result.is_ok(),
                "incoming call not answered"
            );
        }
    }
}

/// `None` when the request carries the operator token, else the refusal to send.
fn api_auth(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &s.config.server.operator_token else {
        let msg = "operator API disabled: set MEDIABOT_OPERATOR_TOKEN\n";
        return Some((StatusCode::FORBIDDEN, msg).into_response());
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token is a secret.
    let ok = got.is_some_and(|g| {
        let (a, b) = (g.as_bytes(), token.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if ok {
        None
    } else {
        Some((StatusCode::UNAUTHORIZED, "bad or missing operator token\n").into_response())
    }
}

async fn api_list_calls(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = api_auth(&s, &headers) {
        return r;
    }
    let active: Vec<CallInfo> = lock(&s.calls)
        .values()
        .map(|c| lock(&c.info).clone())
        .collect();
    let finished: Vec<CallInfo> = lock(&s.finished).iter().cloned().collect();
    axum::Json(serde_json::json!({"active": active, "finished": finished})).into_response()
}

async fn api_get_call(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = api_auth(&s, &headers) {
        return r;
    }
    let info = lock(&s.calls).get(&id).map(|c| lock(&c.info).clone());
    let info = info.or_else(|| lock(&s.finished).iter().find(|c| c.call_id == id).cloned());
    match info {
        Some(i) => axum::Json(i).into_response(),
        None => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
    }
}

async fn api_hang_up(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = api_auth(&s, &headers) {
        return r;
    }
    let tx = lock(&s.calls).get(&id).map(|c| c.tx.clone());
    match tx {
        Some(tx) => {
            let _ = tx.send(CallInput::HangUp).await;
            StatusCode::ACCEPTED.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
    }
}

/// Starts draining (readiness false, new calls refused) without stopping: for scale-in and
/// maintenance, so a pod can be emptied before it is deleted.
async fn api_drain(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = api_auth(&s, &headers) {
        return r;
    }
    s.health.start_draining();
    let calls = lock(&s.calls).len();
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"draining": true, "activeCalls": calls})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinBody {
    join_url: String,
}

async fn api_join(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = api_auth(&s, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<JoinBody>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be {\"joinUrl\": \"https://teams.microsoft.com/l/meetup-join/...\"}\n",
        )
            .into_response();
    };
    let engine = Engine {
        shared: Arc::clone(&s),
        http_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        media_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    match engine.join(&req.join_url).await {
        Ok(id) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({"callId": id})),
        )
            .into_response(),
        Err(EngineError::Graph(e)) => {
            (StatusCode::BAD_GATEWAY, format!("graph: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// SHA-1 thumbprint (hex) of the first certificate in a PEM file, as Azure shows it.
fn cert_thumbprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    use sha1::Digest as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(
        sha1::Sha1::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}
