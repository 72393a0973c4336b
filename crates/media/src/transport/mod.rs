//! WebRTC/WHIP transport: how a call's audio reaches the bot.
//!
//! In scope: the media blob and its single-use tokens ([`blob`]), the WHIP (RFC 9725) HTTP
//! endpoint as an axum `Router` the engine mounts ([`whip`]), the WebRTC media server that runs
//! **all sessions on one shared UDP port** ([`server`]), and a WHIP client on the same stack
//! ([`client`]) used by the emulator and tests. Out of scope: jitter buffering, decoding and
//! everything after (the pipeline), and Graph (the engine joins the two).
//!
//! ```text
//!  far side ──POST offer + Bearer──▶ whip::router ──open_session──▶ MediaServer thread
//!           ◀──201 answer, Location──                                 │ one UDP socket
//!  ICE (STUN USERNAME → session) ─▶ demux ─▶ rtc::RTCPeerConnection per session (sans-IO)
//!  DTLS/SRTP (only from the address that passed ICE) ─┘            │
//!                     MediaHandler::on_rtp / on_tone / on_sender_report / on_playback_ready / …
//! ```
//!
//! WebRTC is webrtc-rs's sans-IO core, the `rtc` crate, driven from our own socket loop; see
//! `docs/transport.md` for the threading model and its measured cost.
//!
//! How the engine wires it (one server per instance, the router on its HTTP server):
//!
//! ```no_run
//! use mediabot_media::transport::whip::{WhipConfig, WhipState, router};
//! use mediabot_media::transport::{
//!     CallId, InboundRtp, MediaHandler, MediaServer, MediaServerConfig,
//! };
//!
//! struct Ingest; // in the engine: pushes into the pipeline's rings, never blocks
//! impl MediaHandler for Ingest {
//!     fn on_rtp(&mut self, packet: &InboundRtp<'_>) { let _ = packet.payload; }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MediaServerConfig {
//!     bind: "0.0.0.0:3478".parse()?,              // the one UDP port of this instance
//!     public_ip: Some("203.0.113.7".parse()?),     // NAT 1:1 address peers reach
//!     ..Default::default()
//! };
//! let media = MediaServer::start(config, Box::new(Ingest))?;
//! let whip = WhipState::new(
//!     WhipConfig { public_base_url: "https://bot.example.com".into(), ..Default::default() },
//!     media.clone(),
//! );
//! let app: axum::Router = router(whip.clone()); // merge into the engine's router
//! // Per call: the blob for appHostedMediaConfig.
//! let blob = whip.mint_blob(&CallId::new("9a0b-call-id")).encoded;
//! # let _ = (app, blob);
//! # Ok(())
//! # }
//! ```
//!
//! Minting is sans-IO underneath:
//!
//! ```
//! use mediabot_media::transport::{CallId, blob::TokenRegistry};
//! use rand::SeedableRng;
//! use std::time::{Duration, SystemTime};
//!
//! let mut tokens = TokenRegistry::default();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let call = CallId::new("call-1");
//! let minted = tokens.mint(&call, "https://bot.example/whip/call-1", SystemTime::now(),
//!                          Duration::from_secs(120), &mut rng);
//! assert!(!minted.encoded.is_empty());
//! ```

pub mod blob;
pub mod client;
pub mod client_peer;
mod direct;
pub mod packet;
mod rtcp_tap;
mod rx;
pub mod sdp;
pub mod send;
pub mod server;
mod timer;
pub mod whip;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use send::{DtmfRequest, PlaybackWriter, SendConfig};
pub use server::{MediaServer, MediaServerConfig, MediaServerHandle, SocketStatsSnapshot};

/// The call a media session belongs to (the engine's call id; opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(Arc<str>);

impl CallId {
    /// Wraps a call id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One WebRTC session (one WHIP resource) on the media server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An RTP synchronization source: one speaker's stream (equal to the participant's
/// `mediaStreams[].sourceId` in the roster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// RFC 6464 audio level: `-level` dBov (0 = loudest, 127 = silence), plus the voice bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// Level in -dBov, 0..=127.
    pub level_dbov: u8,
    /// The sender's voice-activity flag.
    pub voice: bool,
}

/// One decrypted inbound audio RTP packet (Opus), as delivered to [`MediaHandler::on_rtp`].
#[derive(Debug)]
pub struct InboundRtp<'a> {
    /// Session it arrived on.
    pub session: SessionId,
    /// Call of that session.
    pub call: &'a CallId,
    /// When the datagram arrived: the kernel's receive timestamp (`SO_TIMESTAMPNS`) where
    /// available, else the instant right after it was read from the socket.
    pub received_at: Instant,
    /// Stream (speaker) id.
    pub ssrc: Ssrc,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp (48 kHz for Opus).
    pub timestamp: u32,
    /// Payload type as negotiated.
    pub payload_type: u8,
    /// RTP marker bit (start of talkspurt for audio).
    pub marker: bool,
    /// RFC 6464 audio level, when the sender includes it.
    pub audio_level: Option<AudioLevel>,
    /// The Opus payload.
    pub payload: &'a [u8],
}

/// Phase of a telephone event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TonePhase {
    /// First packet of the event seen.
    Start,
    /// End bit seen (reported once, though the sender repeats it).
    End,
}

/// An RFC 4733 telephone event (DTMF key), as delivered to [`MediaHandler::on_tone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToneEvent {
    /// Session it arrived on.
    pub session: SessionId,
    /// Call of that session.
    pub call: CallId,
    /// Stream that carried it.
    pub ssrc: Ssrc,
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 A-D.
    pub event: u8,
    /// Start or end.
    pub phase: TonePhase,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
    /// Volume, -dBm0 (0..=63).
    pub volume: u8,
    /// RTP timestamp of the event start.
    pub timestamp: u32,
}

/// A sender report seen on a session: ties an SSRC's RTP clock to the sender's NTP clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportInfo {
    /// The reporting stream.
    pub ssrc: Ssrc,
    /// NTP time of the report (64-bit fixed point).
    pub ntp_time: u64,
    /// RTP timestamp matching `ntp_time`.
    pub rtp_time: u32,
    /// Packets the sender had sent.
    pub packet_count: u32,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// WHIP `DELETE` or the engine asked.
    Requested,
    /// ICE/DTLS did not complete in time.
    HandshakeTimeout,
    /// No packet for the idle timeout.
    Idle,
    /// ICE or DTLS failed (e.g. wrong fingerprint).
    Failed,
    /// The server is shutting down.
    Shutdown,
}

/// Receives what arrives on the media server's sessions.
///
/// Called on the media thread, synchronously: implementations must not block, lock against
/// slow code, or do I/O (push into a ring and return). The pipeline's ingest trait is adapted
/// to this one by the engine.
pub trait MediaHandler: Send + 'static {
    /// A session was created for `call` (its answer is on its way to the far side).
    fn on_session_opened(&mut self, _session: SessionId, _call: &CallId) {}
    /// ICE and DTLS completed: media can flow.
    fn on_session_connected(&mut self, _session: SessionId, _call: &CallId) {}
    /// One decrypted Opus RTP packet.
    fn on_rtp(&mut self, packet: &InboundRtp<'_>);
    /// A telephone-event start or end.
    fn on_tone(&mut self, _tone: &ToneEvent) {}
    /// A sender report (for timeline sync).
    fn on_sender_report(
        &mut self,
        _session: SessionId,
        _call: &CallId,
        _report: &SenderReportInfo,
    ) {
    }
    /// The far side receives audio on this session: `writer` is where the app's PCM for it
    /// goes (48 kHz mono, paced out as Opus by the media thread). Dropped if unused.
    fn on_playback_ready(&mut self, _session: SessionId, _call: &CallId, _writer: PlaybackWriter) {}
    /// The session is gone; nothing more will arrive for it.
    fn on_session_closed(&mut self, _session: SessionId, _call: &CallId, _reason: CloseReason) {}
    /// Called at least every 10 ms on the media thread, packets or not, so the handler can run
    /// time-driven work (jitter-buffer play-out, mixing, closing idle streams); also as soon
    /// as the instant from [`MediaHandler::next_wakeup`] comes.
    fn on_tick(&mut self, _now: Instant) {}
    /// When the handler next has time-driven work due (e.g. the earliest
    /// `CallPipeline::poll` deadline of its calls), asked after every handler call. The media
    /// thread then calls [`MediaHandler::on_tick`] at that instant rounded up to
    /// [`MediaServerConfig::wake_grid`] (default 1 ms; at most one `on_tick` per grid step,
    /// however many distinct deadlines the calls have) instead of waiting for its 10 ms
    /// period, so a frame due between ticks is not held back by more than one grid step.
    /// `None` (the default): the 10 ms period only.
    fn next_wakeup(&mut self) -> Option<Instant> {
        None
    }
}

/// Errors of the transport as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The UDP socket could not be bound or configured.
    #[error("udp socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error("bad transport config: {0}")]
    Config(String),
    /// The media thread is gone.
    #[error("media server stopped")]
    Stopped,
}
