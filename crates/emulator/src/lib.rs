//! A local stand-in for Microsoft Graph cloud communications, for tests, demos and load tests.
//!
//! In scope: the identity platform's v2.0 token endpoint (client credentials with a secret or a
//! signed certificate assertion; RS256 access tokens with `aud`, `tid`, `appid`, `roles`), OpenID
//! metadata and JWKS (rotation on demand), the Graph `/v1.0/communications/calls` API with
//! Graph's paths, bodies, status codes, `Location` headers, operations and error body,
//! permission checks from the token's roles, signed `commsNotifications` to each call's
//! `callbackUri` (batched or single, optional duplicates, reordering and drops, retries on 5xx,
//! delivery latency recorded), incoming calls with Graph's answer deadlines and the keepAlive
//! rule, scenario files, fault injection, and a control API under `/_emulator`.
//!
//! Out of scope here: sending media. When a call is established with an
//! `appHostedMediaConfig` blob in mediabot's format, the emulator calls a
//! [`media::MediaPeerFactory`]; the default [`media::NoMedia`] sends nothing.
//!
//! The emulator shares no types with the signaling crate: it reads and writes Graph JSON with
//! its own small code, so a serialization bug cannot hide on both sides.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mediabot_emulator::EmulatorError> {
//! use mediabot_emulator::{AppConfig, Emulator, roles};
//! let emu = Emulator::builder()
//!     .app(AppConfig::with_roles(roles::ALL).calling_webhook("http://127.0.0.1:9000/api/calling"))
//!     .start("127.0.0.1:0")
//!     .await?;
//! let app = emu.apps()[0].clone();
//! println!("Graph at {}, token at {}", emu.graph_url(), emu.token_url(&app.tenant_id));
//! let call_id = emu.ring(Default::default())?;
//! # let _ = call_id; Ok(()) }
//! ```

pub mod clock;
pub mod graph_error;
pub mod identity;
pub mod jwt;
/// The load generator and benchmark report (behind the `webrtc` feature).
#[cfg(feature = "webrtc")]
pub mod loadgen;
pub mod media;
pub mod notify;
pub mod scenario;
mod server;
pub mod state;
/// The WHIP/WebRTC media peer (behind the `webrtc` feature: it needs `mediabot-media`).
#[cfg(feature = "webrtc")]
pub mod webrtc_peer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use identity::{AppConfig, RegisteredApp, roles};
pub use media::{MediaPeer, MediaPeerFactory, NoMedia};
pub use notify::{DeliveryRecord, Outcome};
pub use scenario::{NotificationPolicy, Scenario};
pub use state::{Action, IncomingCall, Timing};

use crate::jwt::KeySet;
use crate::notify::{DeliveryLog, Dispatcher, Signer};
use crate::server::Shared;
use crate::state::{Core, CoreConfig};

/// The tenant id apps get when none is configured.
pub const DEFAULT_TENANT: &str = "a1b2c3d4-0000-4000-8000-00000000e7e1";

/// Errors starting or driving the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A key could not be loaded or generated.
    #[error("keys: {0}")]
    Keys(#[from] jwt::JwtError),
    /// An app could not be registered.
    #[error("app registration: {0}")]
    Register(#[from] identity::RegisterError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
    /// A scenario or incoming call could not start.
    #[error("{0}")]
    Control(String),
    /// `advance` on an emulator running on the system clock.
    #[error("the emulator runs on the system clock; use a virtual clock to advance time")]
    NotVirtual,
}

/// Entry point: `Emulator::builder()`.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with defaults: system clock, Graph's timing rules, no media.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Configures an emulator.
pub struct EmulatorBuilder {
    apps: Vec<AppConfig>,
    tenant_id: String,
    virtual_start: Option<Option<u64>>,
    timing: Timing,
    notify: NotificationPolicy,
    require_https: bool,
    media: Arc<dyn MediaPeerFactory>,
    seed: u64,
    scenarios: Vec<Scenario>,
    max_body: usize,
    tick: Duration,
    public_url: Option<String>,
}

impl std::fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorBuilder")
            .field("apps", &self.apps.len())
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            tenant_id: DEFAULT_TENANT.to_owned(),
            virtual_start: None,
            timing: Timing::default(),
            notify: NotificationPolicy::default(),
            require_https: false,
            media: Arc::new(NoMedia),
            seed: 0x6d65_6469_6162_6f74,
            scenarios: Vec::new(),
            max_body: 1024 * 1024,
            tick: Duration::from_millis(20),
            public_url: None,
        }
    }
}

impl EmulatorBuilder {
    /// Registers an app at start (when none is given, one app with all five roles is).
    #[must_use]
    pub fn app(mut self, app: AppConfig) -> Self {
        self.apps.push(app);
        self
    }

    /// The default tenant id.
    #[must_use]
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }

    /// Uses a virtual clock starting at the current wall time; time moves only through
    /// [`EmulatorHandle::advance`] (or `POST /_emulator/clock/advance`).
    #[must_use]
    pub fn virtual_clock(mut self) -> Self {
        self.virtual_start = Some(None);
        self
    }

    /// Uses a virtual clock starting at `start_ms` (epoch milliseconds).
    #[must_use]
    pub fn virtual_clock_at(mut self, start_ms: u64) -> Self {
        self.virtual_start = Some(Some(start_ms));
        self
    }

    /// Timing rules (establish delay, operation delay, deadlines).
    #[must_use]
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Default notification policy for calls not driven by a scenario.
    #[must_use]
    pub fn notifications(mut self, policy: NotificationPolicy) -> Self {
        self.notify = policy;
        self
    }

    /// Refuse `http://` callbackUris as Graph does (off by default for loopback bots).
    #[must_use]
    pub fn require_https_callbacks(mut self, on: bool) -> Self {
        self.require_https = on;
        self
    }

    /// The media hook.
    #[must_use]
    pub fn media(mut self, factory: Arc<dyn MediaPeerFactory>) -> Self {
        self.media = factory;
        self
    }

    /// Seed for ids and notification quirks.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts a scenario as soon as the emulator runs.
    #[must_use]
    pub fn scenario(mut self, scenario: Scenario) -> Self {
        self.scenarios.push(scenario);
        self
    }

    /// The base URL to advertise (Location headers, metadata) instead of `http://<bound addr>`.
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Binds `addr` (e.g. `"127.0.0.1:0"`) and serves. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// Binding, key loading, app registration or an initial scenario failing.
    pub async fn start(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<EmulatorHandle, EmulatorError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        let (clock, virtual_clock): (Arc<dyn Clock>, Option<VirtualClock>) =
            match self.virtual_start {
                Some(start) => {
                    let vc = start.map_or_else(VirtualClock::starting_now, VirtualClock::new);
                    (Arc::new(vc.clone()), Some(vc))
                }
                None => (Arc::new(SystemClock), None),
            };
        let id_keys = Arc::new(RwLock::new(KeySet::from_dev_pool(0, 2, self.seed)?));
        let notif_keys = Arc::new(RwLock::new(KeySet::from_dev_pool(1, 2, self.seed ^ 1)?));
        let mut core = Core::new(CoreConfig {
            tenant_id: self.tenant_id.clone(),
            timing: self.timing,
            require_https_callbacks: self.require_https,
            notify: self.notify,
            seed: self.seed,
        });
        let mut apps = self.apps;
        if apps.is_empty() {
            let mut demo = AppConfig::with_roles(roles::ALL);
            demo.display_name = Some("mediabot-demo".into());
            apps.push(demo);
        }
        for app in apps {
            let tenant = self.tenant_id.clone();
            let mut ids: Vec<String> = (0..3).map(|_| core.uuid()).collect();
            core.dir
                .register(app, &tenant, move || ids.pop().unwrap_or_default())?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| EmulatorError::Http(e.to_string()))?;
        let log = Arc::new(Mutex::new(DeliveryLog::default()));
        let signer = Arc::new(Signer::new(notif_keys.clone()));
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            id_keys,
            notif_keys,
            clock: clock.clone(),
            virtual_clock,
            dispatcher: Dispatcher::new(http, signer, log.clone()),
            log,
            media_factory: self.media,
            media_peers: Mutex::new(std::collections::HashMap::new()),
            base_url: base_url.clone(),
            max_body: self.max_body,
            auth_cache: Mutex::new(std::collections::HashMap::new()),
            timer_wake: tokio::sync::Notify::new(),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = server::router(shared.clone());
        let mut srv_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = srv_stop.changed().await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        let ticker = if clock.is_virtual() {
            None
        } else {
            let sh = shared.clone();
            let mut stop = stop_rx;
            let tick = self.tick;
            Some(tokio::spawn(async move {
                // Timers fire at their due millisecond (sleeping at most `tick`), and at once
                // when a request made one due now.
                loop {
                    let next = sh.with_core(|c, now| {
                        c.run_due(now);
                        c.next_due().map(|d| d.saturating_sub(now))
                    });
                    let wait = next.map_or(tick, |ms| Duration::from_millis(ms).min(tick));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = sh.timer_wake.notified() => {}
                        _ = stop.changed() => break,
                    }
                }
            }))
        };
        tracing::info!(%base_url, virtual_clock = clock.is_virtual(), "emulator listening");
        let handle = EmulatorHandle {
            shared,
            addr: local,
            base_url,
            stop: stop_tx,
            tasks: Mutex::new(vec![server].into_iter().chain(ticker).collect()),
        };
        for s in self.scenarios {
            handle.start_scenario(s)?;
        }
        Ok(handle)
    }
}

/// A running emulator. Dropping it stops the server.
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A started scenario, as the control API reports it.
pub type ScenarioInfo = Value;

impl EmulatorHandle {
    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Graph base URL (`{base}/v1.0`), what a bot configures instead of `https://graph.microsoft.com/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// The token authority for a tenant (`{base}/{tenant}`), instead of `https://login.microsoftonline.com/{tenant}`.
    pub fn authority(&self, tenant: &str) -> String {
        format!("{}/{tenant}", self.base_url)
    }

    /// The token endpoint for a tenant.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url)
    }

    /// OpenID metadata of the token authority.
    pub fn identity_metadata_url(&self, tenant: &str) -> String {
        format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.base_url
        )
    }

    /// OpenID metadata whose `jwks_uri` has the notification signing keys (the emulator's
    /// counterpart of `https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration`).
    pub fn openid_metadata_url(&self) -> String {
        format!("{}/v1/.well-known/OpenIdConfiguration", self.base_url)
    }

    /// Issuer of notification tokens.
    pub fn notification_issuer(&self) -> &'static str {
        notify::NOTIFICATION_ISSUER
    }

    /// Registered apps.
    pub fn apps(&self) -> Vec<RegisteredApp> {
        self.shared.with_core(|c, _| c.dir.apps())
    }

    /// Registers another app.
    ///
    /// # Errors
    /// [`EmulatorError::Register`].
    pub fn register_app(&self, cfg: AppConfig) -> Result<RegisteredApp, EmulatorError> {
        self.shared.with_core(|c, _| {
            let tenant = c.cfg.tenant_id.clone();
            let mut ids: Vec<String> = (0..3).map(|_| c.uuid()).collect();
            c.dir
                .register(cfg, &tenant, move || ids.pop().unwrap_or_default())
                .map_err(EmulatorError::from)
        })
    }

    /// Replaces an app's roles (tokens issued afterwards carry them).
    pub fn set_roles(&self, client_id: &str, roles: &[&str]) -> bool {
        self.shared
            .with_core(|c, _| match c.dir.app_mut(client_id) {
                Some(a) => {
                    a.roles = roles.iter().map(|r| (*r).to_owned()).collect();
                    true
                }
                None => false,
            })
    }

    /// Rings a bot with an incoming call; returns the call id.
    ///
    /// # Errors
    /// [`EmulatorError::Control`] when the app is unknown or has no calling webhook.
    pub fn ring(&self, call: IncomingCall) -> Result<String, EmulatorError> {
        self.shared
            .with_core(|c, now| c.ring(now, &call, None))
            .map_err(EmulatorError::Control)
    }

    /// Starts a scenario; returns what the control API reports (meeting ids, join URL, call).
    ///
    /// # Errors
    /// [`EmulatorError::Control`].
    pub fn start_scenario(&self, scenario: Scenario) -> Result<ScenarioInfo, EmulatorError> {
        let run = self
            .shared
            .with_core(|c, now| c.start_scenario(scenario, now))
            .map_err(EmulatorError::Control)?;
        Ok(serde_json::json!({
            "id": run.id,
            "thread_id": run.thread_id,
            "join_meeting_id": run.join_meeting_id,
            "passcode": run.scenario.meeting.as_ref().and_then(|m| m.passcode.clone()),
            "join_url": run.join_url,
            "organizer_id": run.organizer.as_ref().map(|o| o.0.clone()),
            "tenant_id": run.organizer.as_ref().map(|o| o.1.clone()),
            "incoming_call_id": run.incoming_call_id,
        }))
    }

    /// A participant joins/leaves/mutes/... now.
    ///
    /// # Errors
    /// [`EmulatorError::Control`] when the call or participant is unknown.
    pub fn participant_action(
        &self,
        call_id: &str,
        who: &str,
        action: Action,
    ) -> Result<(), EmulatorError> {
        self.shared
            .with_core(|c, now| c.participant_action(call_id, who, action, now))
            .map_err(EmulatorError::Control)
    }

    /// The far side hangs up.
    pub fn hang_up(&self, call_id: &str) -> bool {
        self.shared
            .with_core(|c, now| c.remote_hangup(call_id, now))
    }

    /// Snapshots of all calls (Graph view plus emulator internals), in creation order.
    pub fn calls(&self) -> Vec<Value> {
        self.shared.with_core(|c, _| {
            c.call_order
                .iter()
                .filter_map(|id| c.calls.get(id))
                .map(state::snapshot)
                .collect()
        })
    }

    /// One call's snapshot.
    pub fn call(&self, id: &str) -> Option<Value> {
        self.shared
            .with_core(|c, _| c.calls.get(id).map(state::snapshot))
    }

    /// Recorded notification POSTs, optionally for one call.
    pub fn deliveries(&self, call_id: Option<&str>) -> Vec<DeliveryRecord> {
        match self.shared.log.lock() {
            Ok(l) => l.list(call_id),
            Err(p) => p.into_inner().list(call_id),
        }
    }

    /// Waits (wall time, up to `timeout`) until `pred` holds for the delivery log.
    pub async fn wait_for_deliveries(
        &self,
        timeout: Duration,
        pred: impl Fn(&[DeliveryRecord]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.deliveries(None)) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Counters of requests and refusals.
    pub fn counters(&self) -> state::Counters {
        self.shared.with_core(|c, _| c.counters.clone())
    }

    /// Adds fault windows (offsets from now).
    pub fn inject_faults(&self, spec: &scenario::FaultSpec) {
        self.shared.with_core(|c, now| c.add_faults(spec, now));
    }

    /// Advances the virtual clock, firing every timer on the way.
    ///
    /// # Errors
    /// [`EmulatorError::NotVirtual`] on the system clock.
    pub fn advance(&self, by: Duration) -> Result<(), EmulatorError> {
        if self.shared.virtual_clock.is_none() {
            return Err(EmulatorError::NotVirtual);
        }
        let target = self
            .shared
            .clock
            .now_ms()
            .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        self.shared.advance_to(target);
        Ok(())
    }

    /// The emulator's current time (epoch ms).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// A notification bearer token for `app_id` in `tenant_id`, signed with the current
    /// notification key exactly as deliveries are (the load generator's webhook phase sends
    /// it; like Graph, one token serves many deliveries).
    pub fn notification_token(&self, app_id: &str, tenant_id: &str) -> String {
        notify::Signer::new(self.shared.notif_keys.clone()).token(app_id, tenant_id)
    }

    /// Rotates the notification signing key; returns the new `kid`. May take seconds once the
    /// shipped key pool is exhausted (it then generates a 2048-bit key).
    ///
    /// # Errors
    /// [`EmulatorError::Control`] if generation fails.
    pub fn rotate_notification_key(&self) -> Result<String, EmulatorError> {
        self.shared.rotate(true).map_err(EmulatorError::Control)
    }

    /// Rotates the access-token signing key; returns the new `kid`.
    ///
    /// # Errors
    /// [`EmulatorError::Control`] if generation fails.
    pub fn rotate_token_key(&self) -> Result<String, EmulatorError> {
        self.shared.rotate(false).map_err(EmulatorError::Control)
    }

    /// Media peer statuses by call id.
    pub fn media_status(&self) -> Vec<(String, String)> {
        match self.shared.media_peers.lock() {
            Ok(p) => p.iter().map(|(k, v)| (k.clone(), v.status())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
