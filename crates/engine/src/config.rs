//! Configuration: a TOML file, then `MEDIABOT_*` environment overrides, then validation.
//!
//! Secrets (the Graph client secret, the certificate's private key, the operator API token) are
//! never read from the TOML file itself: only from the environment or from files the TOML names,
//! so a config file can be committed or put in a ConfigMap. `Debug` output redacts them.
//!
//! Every error names the key at fault and says how to fix it; [`ConfigError`] is meant to be
//! printed to an operator as is.
//!
//! Environment overrides use `MEDIABOT_<SECTION>_<KEY>` in upper case, e.g.
//! `MEDIABOT_SERVER_LISTEN=0.0.0.0:9443` or `MEDIABOT_MEDIA_PUBLIC_IP=203.0.113.7`. The full list
//! is [`ENV_KEYS`]; `docs/configuration.md` and the deploy manifests are checked against it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a key of the wrong type / an unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A value is present but wrong.
    #[error("config key `{key}`: {problem}; fix: {fix}")]
    Invalid {
        /// Dotted key, e.g. `media.public_ip`.
        key: &'static str,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: &'static str,
    },
    /// A required value is absent.
    #[error("config key `{key}` is required: {fix}")]
    Missing {
        /// Dotted key.
        key: &'static str,
        /// What to do.
        fix: &'static str,
    },
}

/// The whole configuration of a `mediabot run`.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server: webhook, WHIP, health, metrics, operator API.
    pub server: ServerConfig,
    /// Microsoft Graph (or emulator) credentials and endpoints.
    pub graph: GraphSection,
    /// Media transport: the one UDP port, the public address, limits.
    pub media: MediaSection,
    /// Call policy: incoming calls, keepAlive, compliance recording.
    pub calls: CallsSection,
    /// The WAV/Ogg recorder sink.
    pub recording: RecordingSection,
    /// The live transcription streamer sink.
    pub transcription: TranscriptionSection,
}

/// `[server]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP(S) server binds.
    pub listen: SocketAddr,
    /// The externally reachable base URL of this instance (`https://bot1.example.com`). Callback
    /// and WHIP URLs are built from it, so it must reach *this* instance (per-pod URL in k8s).
    pub public_url: Option<String>,
    /// Names this instance in its callback URLs: with it, every answer and join carries
    /// `callbackUri = public_url + /api/calls/notifications/<instance_id>`, so a fleet behind
    /// ONE shared host can route each call's notifications to the instance that owns it by path
    /// prefix. Without it (per-instance `public_url`, the default deployment) the callback is
    /// `public_url + /api/calls/notifications`. Letters, digits, `-`, `_`, `.`; at most 63.
    pub instance_id: Option<String>,
    /// PEM certificate chain for HTTPS. Without cert and key the server speaks plain HTTP, which
    /// is only allowed with `behind_tls_proxy = true`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Set when a proxy or ingress terminates TLS in front of the bot.
    pub behind_tls_proxy: bool,
    /// File holding the bearer token of the operator API (or env `MEDIABOT_OPERATOR_TOKEN`).
    pub operator_token_file: Option<PathBuf>,
    /// Largest request body accepted by the webhook, in bytes.
    pub max_body_bytes: usize,
    /// Seconds calls get to finish after SIGTERM before they are hung up.
    pub shutdown_grace_secs: u64,
    /// The operator API token, from env or `operator_token_file` (never from TOML).
    #[serde(skip)]
    pub operator_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_url: None,
            instance_id: None,
            tls_cert: None,
            tls_key: None,
            behind_tls_proxy: false,
            operator_token_file: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 300,
            operator_token: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("instance_id", &self.instance_id)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("behind_tls_proxy", &self.behind_tls_proxy)
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .finish_non_exhaustive()
    }
}

/// `[graph]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSection {
    /// Directory (tenant) id of the bot's app registration.
    pub tenant_id: Option<String>,
    /// Application (client) id; also the audience of inbound notification tokens.
    pub client_id: Option<String>,
    /// File holding the client secret (or env `MEDIABOT_GRAPH_CLIENT_SECRET`).
    pub client_secret_file: Option<PathBuf>,
    /// PEM certificate registered on the app, for certificate credentials.
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub private_key_file: Option<PathBuf>,
    /// Graph base URL.
    pub base_url: String,
    /// Token authority.
    pub authority: String,
    /// OpenID metadata used to verify inbound notifications.
    pub openid_metadata_url: String,
    /// Tenants whose notifications and calls are accepted; empty = any.
    pub allowed_tenants: Vec<String>,
    /// The client secret, from env or file (never from TOML).
    #[serde(skip)]
    pub client_secret: Option<Secret>,
}

impl Default for GraphSection {
    fn default() -> Self {
        Self {
            tenant_id: None,
            client_id: None,
            client_secret_file: None,
            certificate_file: None,
            private_key_file: None,
            base_url: "https://graph.microsoft.com/v1.0".into(),
            authority: "https://login.microsoftonline.com".into(),
            openid_metadata_url: "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration"
                .into(),
            allowed_tenants: Vec::new(),
            client_secret: None,
        }
    }
}

impl fmt::Debug for GraphSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphSection")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("certificate_file", &self.certificate_file)
            .field("private_key_file", &self.private_key_file)
            .field("base_url", &self.base_url)
            .field("authority", &self.authority)
            .field("openid_metadata_url", &self.openid_metadata_url)
            .field("allowed_tenants", &self.allowed_tenants)
            .finish_non_exhaustive()
    }
}

impl GraphSection {
    /// True when no tenant is configured: `demo` then runs against the in-process emulator.
    pub fn is_unconfigured(&self) -> bool {
        self.tenant_id.is_none() && self.client_id.is_none()
    }
}

/// `[media]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// The single UDP port all calls' media share.
    pub udp_port: u16,
    /// Local address to bind the media socket to.
    pub bind_ip: IpAddr,
    /// Public IP advertised in ICE candidates (NAT 1:1: cloud VM, Kubernetes node).
    pub public_ip: Option<IpAddr>,
    /// Most concurrent calls this instance accepts; readiness turns false at the limit.
    pub max_calls: usize,
    /// Most inbound audio streams per call.
    pub max_streams_per_call: usize,
    /// Lifetime of a call's WHIP token, seconds.
    pub whip_token_ttl_secs: u64,
    /// Grid the media thread's play-out wake-ups (and its reads under dense traffic) are
    /// coalesced on, microseconds; 1 s / grid caps its wake-ups per second. Each wake-up plays
    /// out one grid step ahead (frames due before the next wake-up, earliest deadline first),
    /// so the grid does not make frames late; a packet lost or reordered is given up that much
    /// sooner. 2000 (2 ms) by default: against 1 ms it halves the wake-ups and took ~3 % less
    /// CPU per stream at 480 streams on a VM, where a core that idles between wake-ups runs
    /// the decoder slower (docs/performance.md).
    pub wake_grid_us: u64,
    /// Run the media thread `SCHED_FIFO` at this priority (1-99), so it preempts every other
    /// thread of its core when a deadline comes. Needs `CAP_SYS_NICE` (Kubernetes:
    /// `securityContext.capabilities.add: [SYS_NICE]`); refused, the thread runs at normal
    /// priority and the log says so. Unset by default.
    pub realtime_priority: Option<u8>,
    /// How the per-call sink threads (recorder, feed) yield to the media thread: `"batch"`
    /// (the default: nice 10 under `SCHED_BATCH`, no wake-up preemption of the media thread),
    /// `"idle"` (`SCHED_IDLE`: only what is left over) or `"nice"` (nice 10 alone).
    pub sink_scheduling: crate::sinks::runner::SinkScheduling,
    /// Nice value of the sink threads and the fsync thread (0-19; 10 by default). Higher
    /// yields more of a busy core to the media thread (lower processing latency near
    /// saturation) at the price of the sinks falling behind sooner when the core is full
    /// (their rings then drop frames, counted); docs/performance.md.
    pub sink_nice: i32,
    /// Threads that run the calls' sinks (recorder, file feed): that many workers shared by all
    /// calls, each waking every 20 ms for all of its calls; 2 by default. `0`: a thread per
    /// call instead. Why shared by default: at nice 10 each, threads per call add up to a
    /// weight that grows with the calls and, from ~36 calls on one core, delays the media
    /// thread's wake-ups (`wav` recording held 360 streams per core that way, 440 on two
    /// workers, with no ring drop even at saturation; docs/performance.md). Periodic
    /// `fdatasync`s run on a sync thread of their own, so slow storage holds up no worker's
    /// other calls. A single worker falls behind on a saturated core and its rings drop
    /// frames (counted); give shared workers spare CPU.
    pub sink_threads: usize,
    /// What the bot sends into a call while it has nothing to play (no clip, no echo):
    /// `true` (the default) a constant 20 ms Opus silence frame every tick, so the call's
    /// stream from the bot never pauses; `false` nothing, as Opus DTX does (RFC 7587 3.1.3),
    /// the choice for a bot that only listens (a recorder): no packets, no encryption, no
    /// bandwidth, and playback still starts at once when a clip is queued (its first packet
    /// marked).
    pub idle_silence: bool,
    /// Where each call's DTLS-SRTP runs: `true` (the default) in mediabot's own media plane,
    /// which decrypts each packet and hands it on directly (the WebRTC stack keeps SDP and
    /// ICE); `false` through the WebRTC stack's whole per-packet pipeline, which costs the
    /// media thread ~10 % of a core more at 200 streams. Both interoperate with browsers and
    /// aiortc; `false` is the fallback should a peer need the stack's behaviour.
    pub direct_media: bool,
}

/// Default `media.sink_threads`: two shared workers.
pub const DEFAULT_SINK_THREADS: usize = 2;

/// Most shared sink workers accepted (`media.sink_threads`).
pub const MAX_SINK_THREADS: usize = 64;

impl MediaSection {
    /// How many shared sink workers to run; `None`: a thread per call (`sink_threads = 0`).
    pub fn sink_workers(&self) -> Option<usize> {
        (self.sink_threads > 0).then_some(self.sink_threads)
    }
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            udp_port: 3478,
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            public_ip: None,
            max_calls: 200,
            max_streams_per_call: 64,
            whip_token_ttl_secs: 300,
            wake_grid_us: 2000,
            realtime_priority: None,
            sink_scheduling: crate::sinks::runner::SinkScheduling::Batch,
            sink_nice: crate::sinks::runner::SINK_THREAD_NICE,
            sink_threads: DEFAULT_SINK_THREADS,
            idle_silence: true,
            direct_media: true,
        }
    }
}

/// What to do with an incoming call.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IncomingPolicy {
    /// Answer with app-hosted media.
    #[default]
    Answer,
    /// Reject (busy).
    Reject,
    /// Redirect to `calls.redirect_target`.
    Redirect,
}

/// `[calls]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsSection {
    /// Policy for incoming calls.
    pub incoming: IncomingPolicy,
    /// Callers (AAD user or application ids) always rejected.
    pub reject_callers: Vec<String>,
    /// Redirect target (user id) when `incoming = "redirect"`.
    pub redirect_target: Option<String>,
    /// Seconds between keepAlive requests (Graph ends a call after 45 min without one).
    pub keepalive_secs: u64,
    /// Compliance mode: no frame reaches a recorder until `updateRecordingStatus(recording)`
    /// succeeded.
    pub compliance: bool,
    /// Echo mode (a test bot): the call's mix is played back into the call. Echo needs the mix
    /// at 48 kHz, so with echo on the call's pipeline runs at 48 kHz whatever `[recording]` says
    /// (then `mixed.wav` is 48 kHz too, also with `recording.participant_wav = false`).
    pub echo: bool,
}

impl Default for CallsSection {
    fn default() -> Self {
        Self {
            incoming: IncomingPolicy::Answer,
            reject_callers: Vec::new(),
            redirect_target: None,
            keepalive_secs: 15 * 60,
            compliance: false,
            echo: false,
        }
    }
}

impl CallsSection {
    /// The keepAlive period.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
}

/// `[recording]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// Record calls at all.
    pub enabled: bool,
    /// Directory under which each call gets its own folder.
    pub dir: PathBuf,
    /// Also write the received Opus packets to Ogg (RFC 7845), without re-encoding.
    pub ogg: bool,
    /// Write one 48 kHz `participant-<id>.wav` per speaker (default). With `false` the
    /// per-speaker recording is the Ogg/Opus passthrough alone (`ogg = true` is then required):
    /// bit-exact to what arrived and about a tenth of a 48 kHz WAV, but not drift-corrected, and
    /// nothing needs 48 kHz PCM any more, so the call's pipeline decodes at 16 kHz (the
    /// transcription feed's rate) and `mixed.wav` is 16 kHz. Echo (`calls.echo`) keeps 48 kHz.
    pub participant_wav: bool,
    /// Seconds between `fdatasync`s of open files (0 = only at close).
    pub fsync_interval_secs: u64,
    /// Most frames (20 ms each) of the ring that carries a call's speakers' frames to the
    /// recorder and the feed. The ring starts at 200 frames (1 s of sink-thread stall for four
    /// speakers) and grows to 50 per speaker (at least 2.5 times at a step) as speakers
    /// arrive, up to this: 500 is 1 s up to ten speakers and less beyond. So a call of up to
    /// four speakers keeps a 200-frame ring (~400 KiB), not 500. The mix ring gets a
    /// quarter of it, at least 50 frames.
    pub ring_frames: usize,
}

impl Default for RecordingSection {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("recordings"),
            ogg: false,
            participant_wav: true,
            fsync_interval_secs: 5,
            ring_frames: 500,
        }
    }
}

impl RecordingSection {
    /// Checks the `[recording]` keys against each other.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `recording.participant_wav` when recording is on with
    /// neither per-speaker WAV nor Ogg/Opus: the call would be recorded as a mix alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && !self.participant_wav && !self.ogg {
            return Err(ConfigError::Invalid {
                key: "recording.participant_wav",
                problem: "participant_wav = false with ogg = false leaves no per-speaker recording"
                    .into(),
                fix: "set recording.ogg = true (per-speaker Ogg/Opus passthrough), or participant_wav = true, or enabled = false",
            });
        }
        Ok(())
    }

    /// Whether a recorder consumes decoded per-speaker audio (the `participant-<id>.wav` files).
    pub fn writes_participant_pcm(&self) -> bool {
        self.enabled && self.participant_wav
    }
}

/// `[transcription]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TranscriptionSection {
    /// Stream per-speaker 16 kHz audio to `websocket_url`.
    pub websocket_url: Option<String>,
    /// Write the same feed to files (JSONL + WAV) under this directory instead / as well.
    pub file_dir: Option<PathBuf>,
    /// Seconds of audio kept per speaker while the WebSocket reconnects; older audio is dropped
    /// and reported as a gap.
    pub reconnect_buffer_secs: u64,
}

/// A secret value whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every environment variable the binary reads. The deploy drift test checks manifests against it.
pub const ENV_KEYS: &[&str] = &[
    "MEDIABOT_CONFIG",
    "MEDIABOT_SERVER_LISTEN",
    "MEDIABOT_SERVER_PUBLIC_URL",
    "MEDIABOT_SERVER_INSTANCE_ID",
    "MEDIABOT_SERVER_TLS_CERT",
    "MEDIABOT_SERVER_TLS_KEY",
    "MEDIABOT_SERVER_BEHIND_TLS_PROXY",
    "MEDIABOT_SERVER_SHUTDOWN_GRACE_SECS",
    "MEDIABOT_OPERATOR_TOKEN",
    "MEDIABOT_GRAPH_TENANT_ID",
    "MEDIABOT_GRAPH_CLIENT_ID",
    "MEDIABOT_GRAPH_CLIENT_SECRET",
    "MEDIABOT_GRAPH_BASE_URL",
    "MEDIABOT_GRAPH_AUTHORITY",
    "MEDIABOT_GRAPH_OPENID_METADATA_URL",
    "MEDIABOT_MEDIA_UDP_PORT",
    "MEDIABOT_MEDIA_BIND_IP",
    "MEDIABOT_MEDIA_PUBLIC_IP",
    "MEDIABOT_MEDIA_MAX_CALLS",
    "MEDIABOT_RECORDING_DIR",
    "MEDIABOT_RECORDING_ENABLED",
    "MEDIABOT_TRANSCRIPTION_WEBSOCKET_URL",
    "MEDIABOT_LOG",
];

impl Config {
    /// Reads `path`, applies overrides from the process environment, validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.load_secrets(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no environment, no validation).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the parser's line/column message.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Applies `MEDIABOT_<SECTION>_<KEY>` overrides read through `env`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a variable does not parse.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(
            key: &'static str,
            v: &str,
            fix: &'static str,
        ) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                key,
                problem: format!("environment value {v:?} does not parse: {e}"),
                fix,
            })
        }
        if let Some(v) = env("MEDIABOT_SERVER_LISTEN") {
            self.server.listen = parsed("server.listen", &v, "use host:port, e.g. 0.0.0.0:8443")?;
        }
        if let Some(v) = env("MEDIABOT_SERVER_PUBLIC_URL") {
            self.server.public_url = Some(v);
        }
        if let Some(v) = env("MEDIABOT_SERVER_INSTANCE_ID") {
            self.server.instance_id = Some(v);
        }
        if let Some(v) = env("MEDIABOT_SERVER_TLS_CERT") {
            self.server.tls_cert = Some(v.into());
        }
        if let Some(v) = env("MEDIABOT_SERVER_TLS_KEY") {
            self.server.tls_key = Some(v.into());
        }
        if let Some(v) = env("MEDIABOT_SERVER_BEHIND_TLS_PROXY") {
            self.server.behind_tls_proxy =
                parsed("server.behind_tls_proxy", &v, "use true or false")?;
        }
        if let Some(v) = env("MEDIABOT_SERVER_SHUTDOWN_GRACE_SECS") {
            self.server.shutdown_grace_secs = parsed(
                "server.shutdown_grace_secs",
                &v,
                "use a whole number of seconds",
            )?;
        }
        if let Some(v) = env("MEDIABOT_GRAPH_TENANT_ID") {
            self.graph.tenant_id = Some(v);
        }
        if let Some(v) = env("MEDIABOT_GRAPH_CLIENT_ID") {
            self.graph.client_id = Some(v);
        }
        if let Some(v) = env("MEDIABOT_GRAPH_BASE_URL") {
            self.graph.base_url = v;
        }
        if let Some(v) = env("MEDIABOT_GRAPH_AUTHORITY") {
            self.graph.authority = v;
        }
        if let Some(v) = env("MEDIABOT_GRAPH_OPENID_METADATA_URL") {
            self.graph.openid_metadata_url = v;
        }
        if let Some(v) = env("MEDIABOT_MEDIA_UDP_PORT") {
            self.media.udp_port = parsed("media.udp_port", &v, "use a UDP port number 1-65535")?;
        }
        if let Some(v) = env("MEDIABOT_MEDIA_BIND_IP") {
            self.media.bind_ip = parsed("media.bind_ip", &v, "use an IP address")?;
        }
        if let Some(v) = env("MEDIABOT_MEDIA_PUBLIC_IP") {
            self.media.public_ip = Some(parsed(
                "media.public_ip",
                &v,
                "use the instance's public IP address (not a hostname)",
            )?);
        }
        if let Some(v) = env("MEDIABOT_MEDIA_MAX_CALLS") {
            self.media.max_calls = parsed("media.max_calls", &v, "use a whole number")?;
        }
        if let Some(v) = env("MEDIABOT_RECORDING_DIR") {
            self.recording.dir = v.into();
        }
        if let Some(v) = env("MEDIABOT_RECORDING_ENABLED") {
            self.recording.enabled = parsed("recording.enabled", &v, "use true or false")?;
        }
        if let Some(v) = env("MEDIABOT_TRANSCRIPTION_WEBSOCKET_URL") {
            self.transcription.websocket_url = Some(v);
        }
        Ok(())
    }

    /// Loads secrets from the environment or from the files the config names.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a named secret file cannot be read or is empty.
    pub fn load_secrets(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn from_file(key: &'static str, path: &Path) -> Result<Secret, ConfigError> {
            let s = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                key,
                problem: format!("cannot read {}: {e}", path.display()),
                fix: "point it at a readable file (a mounted Secret in Kubernetes)",
            })?;
            let s = s.trim();
            if s.is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("{} is empty", path.display()),
                    fix: "put the secret in the file",
                });
            }
            Ok(Secret::new(s))
        }
        self.graph.client_secret = match (
            env("MEDIABOT_GRAPH_CLIENT_SECRET"),
            &self.graph.client_secret_file,
        ) {
            (Some(s), _) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            (_, Some(p)) => Some(from_file("graph.client_secret_file", p)?),
            _ => None,
        };
        self.server.operator_token = match (
            env("MEDIABOT_OPERATOR_TOKEN"),
            &self.server.operator_token_file,
        ) {
            (Some(s), _) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            (_, Some(p)) => Some(from_file("server.operator_token_file", p)?),
            _ => None,
        };
        Ok(())
    }

    /// Checks cross-field rules for `mediabot run` against a real tenant or an emulator.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.graph;
        if g.tenant_id.is_none() {
            return Err(ConfigError::Missing {
                key: "graph.tenant_id",
                fix: "set the Directory (tenant) ID of the bot's app registration, or use `mediabot demo` to run without a tenant",
            });
        }
        if g.client_id.is_none() {
            return Err(ConfigError::Missing {
                key: "graph.client_id",
                fix: "set the Application (client) ID of the bot's app registration",
            });
        }
        let cert = g.certificate_file.is_some() || g.private_key_file.is_some();
        if cert && (g.certificate_file.is_none() || g.private_key_file.is_none()) {
            return Err(ConfigError::Invalid {
                key: "graph.certificate_file",
                problem: "certificate credentials need both certificate_file and private_key_file"
                    .into(),
                fix: "set both, or neither and use a client secret",
            });
        }
        if !cert && g.client_secret.is_none() {
            return Err(ConfigError::Missing {
                key: "graph.client_secret_file",
                fix: "set env MEDIABOT_GRAPH_CLIENT_SECRET, or graph.client_secret_file, or certificate_file + private_key_file",
            });
        }
        for (key, url) in [
            ("graph.base_url", &g.base_url),
            ("graph.authority", &g.authority),
            ("graph.openid_metadata_url", &g.openid_metadata_url),
        ] {
            check_url(key, url)?;
        }
        match &self.server.public_url {
            None => {
                return Err(ConfigError::Missing {
                    key: "server.public_url",
                    fix: "set the https URL at which Graph reaches this instance, e.g. https://bot1.example.com",
                });
            }
            Some(u) => check_url("server.public_url", u)?,
        }
        let s = &self.server;
        if let Some(id) = &s.instance_id
            && (id.is_empty()
                || id.len() > 63
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ConfigError::Invalid {
                key: "server.instance_id",
                problem: format!("{id:?} cannot be a URL path segment"),
                fix: "use 1-63 letters, digits, '-', '_' or '.', e.g. the pod name",
            });
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "server.tls_cert",
                problem: "tls_cert and tls_key must be set together".into(),
                fix: "set both PEM files, or neither with behind_tls_proxy = true",
            });
        }
        if s.tls_cert.is_none() && !s.behind_tls_proxy {
            return Err(ConfigError::Invalid {
                key: "server.behind_tls_proxy",
                problem: "no TLS certificate configured and not behind a TLS proxy".into(),
                fix: "set server.tls_cert + server.tls_key, or behind_tls_proxy = true when an ingress terminates TLS",
            });
        }
        if self.media.udp_port == 0 {
            return Err(ConfigError::Invalid {
                key: "media.udp_port",
                problem: "port 0".into(),
                fix: "choose a fixed UDP port that the firewall / Service exposes",
            });
        }
        if self.media.wake_grid_us > 10_000 {
            return Err(ConfigError::Invalid {
                key: "media.wake_grid_us",
                problem: format!("{} µs", self.media.wake_grid_us),
                fix: "use 0-10000 (default 1000); the 10 ms media tick is the coarsest grid",
            });
        }
        if self.media.sink_threads > MAX_SINK_THREADS {
            return Err(ConfigError::Invalid {
                key: "media.sink_threads",
                problem: format!("{}", self.media.sink_threads),
                fix: "use 1-64 shared workers (default 2; about one per spare core), or 0 for a thread per call",
            });
        }
        if !(0..=19).contains(&self.media.sink_nice) {
            return Err(ConfigError::Invalid {
                key: "media.sink_nice",
                problem: format!("{}", self.media.sink_nice),
                fix: "use a nice value of 0-19 (default 10); higher yields more to the media thread",
            });
        }
        if let Some(p) = self.media.realtime_priority
            && !(1..=99).contains(&p)
        {
            return Err(ConfigError::Invalid {
                key: "media.realtime_priority",
                problem: format!("{p}"),
                fix: "use a SCHED_FIFO priority of 1-99 (e.g. 10), or leave it unset",
            });
        }
        if self.media.max_calls == 0 {
            return Err(ConfigError::Invalid {
                key: "media.max_calls",
                problem: "0 calls allowed".into(),
                fix: "use at least 1",
            });
        }
        if self.calls.incoming == IncomingPolicy::Redirect && self.calls.redirect_target.is_none() {
            return Err(ConfigError::Missing {
                key: "calls.redirect_target",
                fix: "name the user id calls are redirected to, or choose incoming = \"answer\"",
            });
        }
        if self.calls.keepalive_secs == 0 || self.calls.keepalive_secs >= 45 * 60 {
            return Err(ConfigError::Invalid {
                key: "calls.keepalive_secs",
                problem: format!("{} s", self.calls.keepalive_secs),
                fix: "Graph ends calls with no keepAlive for 45 minutes: use 60-2400 (default 900)",
            });
        }
        self.recording.validate()?;
        if let Some(u) = &self.transcription.websocket_url
            && !(u.starts_with("ws://") || u.starts_with("wss://"))
        {
            return Err(ConfigError::Invalid {
                key: "transcription.websocket_url",
                problem: format!("{u:?} is not a ws:// or wss:// URL"),
                fix: "use the WebSocket URL of the speech service",
            });
        }
        Ok(())
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(ConfigError::Invalid {
            key,
            problem: format!("scheme {:?} in {url:?}", u.scheme()),
            fix: "use an https:// URL",
        }),
        Err(e) => Err(ConfigError::Invalid {
            key,
            problem: format!("{url:?} is not a URL: {e}"),
            fix: "use an absolute https:// URL",
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
[server]
public_url = "https://bot1.example.com"
behind_tls_proxy = true

[graph]
tenant_id = "11111111-1111-1111-1111-111111111111"
client_id = "22222222-2222-2222-2222-222222222222"

[media]
udp_port = 40000
public_ip = "203.0.113.7"
"#;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn good_config_with_secret_from_env_validates() {
        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        c.apply_env(env_of(&[("MEDIABOT_MEDIA_UDP_PORT", "40001")]))
            .unwrap();
        c.load_secrets(env_of(&[("MEDIABOT_GRAPH_CLIENT_SECRET", "s3cret")]))
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.media.udp_port, 40001);
        assert_eq!(c.graph.client_secret.as_ref().unwrap().expose(), "s3cret");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "secret leaked into Debug: {dbg}");
    }

    #[test]
    fn the_load_tests_idea_of_the_default_wake_grid_is_the_bots() {
        // The load test paces its reference floor on the grid a spawned bot runs on.
        assert_eq!(
            MediaSection::default().wake_grid_us,
            mediabot_emulator::loadgen::BOT_DEFAULT_WAKE_GRID_US
        );
    }

    #[test]
    fn errors_name_the_key() {
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("graph.client_secret_file"), "{e}");

        let e = Config::parse("[media]\nudp_port = \"x\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp_port"), "{e}");

        let e = Config::parse("[media]\nudpport = 1\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("udpport"), "{e}");

        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        let e = c
            .apply_env(env_of(&[("MEDIABOT_MEDIA_PUBLIC_IP", "bot.example.com")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("media.public_ip"), "{e}");
    }

    #[test]
    fn client_secret_is_not_a_toml_key() {
        let e = Config::parse("[graph]\nclient_secret = \"x\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_secret"), "{e}");
    }

    #[test]
    fn instance_id_must_be_a_path_segment() {
        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        c.load_secrets(env_of(&[("MEDIABOT_GRAPH_CLIENT_SECRET", "s")]))
            .unwrap();
        c.apply_env(env_of(&[("MEDIABOT_SERVER_INSTANCE_ID", "mediabot-3")]))
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.instance_id.as_deref(), Some("mediabot-3"));
        c.server.instance_id = Some("a/b".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("server.instance_id"), "{e}");
    }

    #[test]
    fn keepalive_must_beat_the_45_minute_rule() {
        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        c.load_secrets(env_of(&[("MEDIABOT_GRAPH_CLIENT_SECRET", "s")]))
            .unwrap();
        c.calls.keepalive_secs = 45 * 60;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("calls.keepalive_secs"), "{e}");
    }

    #[test]
    fn recording_needs_a_per_speaker_format() {
        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        c.load_secrets(env_of(&[("MEDIABOT_GRAPH_CLIENT_SECRET", "s")]))
            .unwrap();
        assert!(c.recording.participant_wav, "WAV per speaker by default");
        c.validate().unwrap();
        c.recording.participant_wav = false;
        let e = c.validate().unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    key: "recording.participant_wav",
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("recording.ogg"), "the fix names ogg: {msg}");
        c.recording.ogg = true;
        c.validate().unwrap();
        // Not recording at all: the per-speaker format does not matter.
        c.recording.ogg = false;
        c.recording.enabled = false;
        c.validate().unwrap();
    }

    #[test]
    fn participant_wav_parses_from_toml() {
        let text = format!("{GOOD}\n[recording]\nparticipant_wav = false\nogg = true\n");
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert!(!c.recording.participant_wav);
        assert!(c.recording.ogg);
        assert!(!c.recording.writes_participant_pcm());
        c.recording.validate().unwrap();
    }

    #[test]
    fn media_thread_scheduling_settings_are_bounded() {
        let mut c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        c.load_secrets(env_of(&[("MEDIABOT_GRAPH_CLIENT_SECRET", "s")]))
            .unwrap();
        c.media.wake_grid_us = 250;
        c.media.realtime_priority = Some(10);
        c.validate().unwrap();
        c.media.wake_grid_us = 20_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("media.wake_grid_us"), "{e}");
        c.media.wake_grid_us = 1000;
        c.media.sink_nice = 19;
        c.validate().unwrap();
        c.media.sink_threads = 65;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("media.sink_threads"), "{e}");
        c.media.sink_threads = 0;
        c.validate().unwrap();
        c.media.sink_nice = 20;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("media.sink_nice"), "{e}");
        c.media.sink_nice = 10;
        c.media.realtime_priority = Some(0);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("media.realtime_priority"), "{e}");
    }

    #[test]
    fn idle_silence_defaults_on_and_parses() {
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert!(c.media.idle_silence);
        let text = GOOD.replace("[media]", "[media]\nidle_silence = false");
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert!(!c.media.idle_silence);
    }

    #[test]
    fn sink_threads_default_to_two_shared_workers_and_zero_means_one_per_call() {
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.media.sink_workers(), Some(2), "two shared workers");
        for (n, want) in [(3, Some(3)), (1, Some(1)), (0, None)] {
            let text = GOOD.replace("[media]", &format!("[media]\nsink_threads = {n}"));
            let c = Config::parse(&text, Path::new("t.toml")).unwrap();
            assert_eq!(c.media.sink_workers(), want, "sink_threads = {n}");
        }
    }

    #[test]
    fn sink_scheduling_defaults_to_batch_and_parses() {
        use crate::sinks::runner::SinkScheduling;
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.media.sink_scheduling, SinkScheduling::Batch);
        for (name, want) in [
            ("idle", SinkScheduling::Idle),
            ("nice", SinkScheduling::Nice),
            ("batch", SinkScheduling::Batch),
        ] {
            let text = GOOD.replace("[media]", &format!("[media]\nsink_scheduling = \"{name}\""));
            let c = Config::parse(&text, Path::new("t.toml")).unwrap();
            assert_eq!(c.media.sink_scheduling, want);
        }
        let text = GOOD.replace("[media]", "[media]\nsink_scheduling = \"fifo\"");
        assert!(Config::parse(&text, Path::new("t.toml")).is_err());
    }
}
