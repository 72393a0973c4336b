//! The media server: every WebRTC session of this instance on **one UDP socket**, driven by one
//! thread.
//!
//! Each session is a sans-IO `rtc::RTCPeerConnection` (webrtc-rs) configured as an ICE-lite
//! answerer, for SDP and ICE; its DTLS-SRTP, SRTCP and RTCP reports run in the session's own
//! media plane (`transport::direct`, [`MediaServerConfig::direct_media`]; with it off, or for an
//! offer that insists on being the DTLS server, they go through the stack as well). The
//! thread owns the socket and all sessions; it demultiplexes each datagram:
//!
//! ```text
//!  datagram ──▶ classify (RFC 7983)
//!    STUN ──▶ USERNAME "ours:theirs" ──▶ session by local ufrag ──▶ rtc (checks integrity)
//!    DTLS / SRTP / SRTCP ──▶ session by source address, only if that address was sent a
//!         Binding success (it passed ICE with our password) ──▶ pre-checks
//!         ──▶ the direct plane (decrypt, hand on) or rtc
//!    anything else ──▶ dropped, counted
//! ```
//!
//! Pre-checks before any crypto: datagram size, SRTCP rate per session, and the number of
//! distinct SSRCs per session (the SSRC is clear text), so floods cost a few compares.
//! Every session has a handshake deadline and an idle deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::RngCore;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_TELEPHONE_EVENT, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::packet::{self, DatagramKind, ToneTracker};
use super::sdp::{self, OfferAudio, OfferError};
use super::send::{self, AudioSendCore, SendConfig};
use super::{
    CallId, CloseReason, InboundRtp, MediaHandler, SenderReportInfo, SessionId, Ssrc, ToneEvent,
    TransportError,
};
use crate::fasthash::{FastMap, fast_map};

/// Largest datagram accepted; bigger ones are dropped (no WebRTC packet here needs more).
pub const MAX_DATAGRAM: usize = 1500;

/// Setup of the media server.
#[derive(Debug, Clone)]
pub struct MediaServerConfig {
    /// Local address of the one UDP socket (port `0` picks one; tests do that).
    pub bind: SocketAddr,
    /// Address advertised in the ICE candidate when it differs from the bound one (NAT 1:1:
    /// the public IP of a cloud VM or Kubernetes node). `None`: the bound IP, which must then
    /// be specific.
    pub public_ip: Option<IpAddr>,
    /// Port advertised when it differs from the bound one (a port-mapping NAT). `None`: the
    /// bound port.
    pub public_port: Option<u16>,
    /// ICE and DTLS must complete within this time after the answer.
    pub handshake_timeout: Duration,
    /// A connected session with no inbound datagram for this long is closed.
    pub idle_timeout: Duration,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most distinct inbound SSRCs per session; packets of further SSRCs are dropped.
    pub max_ssrcs_per_session: usize,
    /// Most SRTCP packets per session per second; the excess is dropped before decryption.
    pub max_rtcp_per_second: u32,
    /// Most source addresses that may pass ICE for one session.
    pub max_addrs_per_session: usize,
    /// Accept datagrams from loopback sources only (tests and single-host setups): nothing is
    /// ever sent to another address.
    pub loopback_peers_only: bool,
    /// The send path (bot → far side), used when the offer lets us send audio back.
    pub send: SendConfig,
    /// Grid the handler's wake-ups are coalesced on ([`MediaHandler::next_wakeup`]): each
    /// requested instant is rounded up to the next multiple of this step (counted from the
    /// process's grid origin, [`crate::sched::grid_epoch`], which the sink threads' waits
    /// share, so their wake-ups fall on the media thread's), the 10 ms tick falls on the same grid, and `on_tick` runs at most
    /// once per step. This is the bound on the latency the coalescing adds to a frame due
    /// between ticks, and caps handler wake-ups at `1 s / wake_grid` (+ the 10 ms tick)
    /// however many calls have distinct deadlines. While datagrams arrive densely the socket
    /// is read on the same grid too, with `recvmmsg`, instead of on each datagram's readiness
    /// (see `ReadPacer` in this module): a datagram then waits at most one step in the socket. Default 1 ms;
    /// zero wakes at every requested instant and on every datagram's readiness (one wake-up
    /// per distinct deadline and per arrival burst: costly with many streams).
    pub wake_grid: Duration,
    /// Run the media thread under `SCHED_FIFO` at this priority (1-99): it then preempts
    /// every ordinary thread on its core the moment a deadline or a packet wakes it, which is
    /// what bounds per-frame processing latency on a busy core. Needs `CAP_SYS_NICE` (or an
    /// `RLIMIT_RTPRIO` that allows it); when refused the thread runs at normal priority and
    /// says so in the log. The kernel's RT throttling (by default 95 % of each second) keeps a
    /// runaway media thread from locking its core. `None` (default): normal priority.
    pub realtime_priority: Option<u8>,
    /// Run each session's DTLS-SRTP, SRTCP and RTCP reports in mediabot's own media plane
    /// (`transport::direct`) instead of through the WebRTC stack's per-packet pipeline, which
    /// then handles SDP and ICE only. The bot answers as the DTLS server
    /// (`a=setup:passive`); an offer that insists on the opposite stays on the stack path.
    /// Default true: the same crates' DTLS and SRTP, at a fraction of the per-packet cost.
    pub direct_media: bool,
}

impl Default for MediaServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_ip: None,
            public_port: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_sessions: 2000,
            max_ssrcs_per_session: 64,
            max_rtcp_per_second: 200,
            max_addrs_per_session: 4,
            loopback_peers_only: false,
            send: SendConfig::default(),
            wake_grid: Duration::from_millis(1),
            realtime_priority: None,
            direct_media: true,
        }
    }
}

/// Why a session could not be opened. The WHIP layer maps these to HTTP statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The offer was refused before negotiation.
    #[error("bad offer: {0}")]
    Offer(#[from] OfferError),
    /// The WebRTC stack refused the offer or could not answer.
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The server holds [`MediaServerConfig::max_sessions`] sessions.
    #[error("too many sessions")]
    Full,
    /// The media thread is gone.
    #[error("media server stopped")]
    Stopped,
}

/// A session the server opened for an offer.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    /// Its id (the last segment of the WHIP `Location`).
    pub id: SessionId,
    /// The SDP answer for the `201` body.
    pub answer_sdp: String,
}

/// Counters of everything the media thread did and dropped (all monotonic).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Datagrams read from the socket.
    pub datagrams_in: AtomicU64,
    /// Socket reads that failed (other than "nothing queued").
    pub recv_errors: AtomicU64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full
    /// (`SO_RXQ_OVFL`; a total as of the last datagram read, so drops show up with the next
    /// datagram that gets through). Stays 0 where the kernel does not report it.
    pub rx_queue_dropped: AtomicU64,
    /// Datagrams whose arrival time is the kernel's receive timestamp (`SO_TIMESTAMPNS`)
    /// rather than the instant after the read.
    pub kernel_timestamped: AtomicU64,
    /// Datagrams written to the socket.
    pub datagrams_out: AtomicU64,
    /// Datagrams that could not be written (socket full or error).
    pub send_errors: AtomicU64,
    /// Datagrams larger than [`MAX_DATAGRAM`].
    pub oversize_dropped: AtomicU64,
    /// Datagrams from a source the peer filter refuses.
    pub peer_filter_dropped: AtomicU64,
    /// Neither STUN, DTLS nor (S)RTP(C).
    pub unknown_kind_dropped: AtomicU64,
    /// STUN for no known ufrag and from no known address.
    pub stun_unknown_dropped: AtomicU64,
    /// DTLS/SRTP/SRTCP from an address that has not passed ICE.
    pub unauthenticated_dropped: AtomicU64,
    /// RTP of an SSRC beyond [`MediaServerConfig::max_ssrcs_per_session`].
    pub ssrc_limit_dropped: AtomicU64,
    /// SRTCP beyond [`MediaServerConfig::max_rtcp_per_second`].
    pub rtcp_rate_dropped: AtomicU64,
    /// Packets the WebRTC stack rejected (bad STUN integrity, SRTP auth or replay, bad DTLS).
    pub stack_errors: AtomicU64,
    /// SRTP/SRTCP datagrams the stack consumed without yielding a packet: bad auth tag, replay,
    /// undecodable after decryption (the stack itself only logs these).
    pub srtp_rejected: AtomicU64,
    /// Opus RTP packets handed to the handler.
    pub rtp_delivered: AtomicU64,
    /// Decrypted RTP with a payload type that is neither Opus nor telephone-event.
    pub rtp_other_dropped: AtomicU64,
    /// Tone events handed to the handler.
    pub tones_delivered: AtomicU64,
    /// RTCP sender reports handed to the handler.
    pub sender_reports: AtomicU64,
    /// RTP packets of the bot's audio sent (audio and telephone-event).
    pub rtp_sent: AtomicU64,
    /// SRTCP datagrams sent (receiver reports for inbound streams, sender reports for ours).
    pub rtcp_sent: AtomicU64,
    /// Send-path packets that could not be encoded or written.
    pub playback_errors: AtomicU64,
    /// Times the send clock fell over 100 ms behind and skipped ahead.
    pub playback_resyncs: AtomicU64,
    /// Offers refused.
    pub offers_rejected: AtomicU64,
    /// Sessions opened.
    pub sessions_opened: AtomicU64,
    /// Sessions that reached connected.
    pub sessions_connected: AtomicU64,
    /// Sessions opened on the direct media plane ([`MediaServerConfig::direct_media`]); the
    /// rest of `sessions_opened` went through the stack.
    pub direct_sessions: AtomicU64,
    /// Sessions closed (any reason).
    pub sessions_closed: AtomicU64,
    /// Sessions closed because the handshake took too long.
    pub handshake_timeouts: AtomicU64,
    /// Sessions closed for silence.
    pub idle_timeouts: AtomicU64,
}

impl TransportStats {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its Prometheus name and help text, for a metrics endpoint (the
    /// engine's `/metrics` exports them all).
    pub fn metric_counters(&self) -> [(&'static str, &'static str, &AtomicU64); 30] {
        [
            (
                "mediabot_transport_datagrams_in_total",
                "Datagrams read from the media socket.",
                &self.datagrams_in,
            ),
            (
                "mediabot_transport_recv_errors_total",
                "Media socket reads that failed.",
                &self.recv_errors,
            ),
            (
                "mediabot_transport_rx_queue_dropped_total",
                "Datagrams the kernel dropped for a full media socket receive buffer (SO_RXQ_OVFL).",
                &self.rx_queue_dropped,
            ),
            (
                "mediabot_transport_kernel_timestamped_total",
                "Datagrams timed by the kernel's receive timestamp.",
                &self.kernel_timestamped,
            ),
            (
                "mediabot_transport_datagrams_out_total",
                "Datagrams written to the media socket.",
                &self.datagrams_out,
            ),
            (
                "mediabot_transport_send_errors_total",
                "Datagrams that could not be written to the media socket.",
                &self.send_errors,
            ),
            (
                "mediabot_transport_oversize_dropped_total",
                "Datagrams dropped for being larger than 1500 bytes.",
                &self.oversize_dropped,
            ),
            (
                "mediabot_transport_peer_filter_dropped_total",
                "Datagrams dropped from a source the peer filter refuses.",
                &self.peer_filter_dropped,
            ),
            (
                "mediabot_transport_unknown_kind_dropped_total",
                "Datagrams dropped for being neither STUN, DTLS nor (S)RTP(C).",
                &self.unknown_kind_dropped,
            ),
            (
                "mediabot_transport_stun_unknown_dropped_total",
                "STUN dropped for no known ufrag and no known address.",
                &self.stun_unknown_dropped,
            ),
            (
                "mediabot_transport_unauthenticated_dropped_total",
                "DTLS/SRTP/SRTCP dropped from an address that has not passed ICE.",
                &self.unauthenticated_dropped,
            ),
            (
                "mediabot_transport_ssrc_limit_dropped_total",
                "RTP dropped for an SSRC beyond the per-session limit.",
                &self.ssrc_limit_dropped,
            ),
            (
                "mediabot_transport_rtcp_rate_dropped_total",
                "SRTCP dropped beyond the per-session rate limit.",
                &self.rtcp_rate_dropped,
            ),
            (
                "mediabot_transport_stack_errors_total",
                "Datagrams the WebRTC stack or the DTLS plane rejected (bad STUN integrity, bad DTLS).",
                &self.stack_errors,
            ),
            (
                "mediabot_transport_srtp_rejected_total",
                "SRTP/SRTCP datagrams that yielded no packet (bad auth tag, replay, undecodable).",
                &self.srtp_rejected,
            ),
            (
                "mediabot_transport_rtp_delivered_total",
                "Opus RTP packets handed to the pipeline.",
                &self.rtp_delivered,
            ),
            (
                "mediabot_transport_rtp_other_dropped_total",
                "Decrypted RTP dropped for an unexpected payload type or bad padding.",
                &self.rtp_other_dropped,
            ),
            (
                "mediabot_transport_tones_delivered_total",
                "Tone events (RFC 4733) handed on.",
                &self.tones_delivered,
            ),
            (
                "mediabot_transport_sender_reports_total",
                "RTCP sender reports received.",
                &self.sender_reports,
            ),
            (
                "mediabot_transport_rtp_sent_total",
                "RTP packets of the bot's audio sent.",
                &self.rtp_sent,
            ),
            (
                "mediabot_transport_rtcp_sent_total",
                "SRTCP datagrams sent (receiver and sender reports).",
                &self.rtcp_sent,
            ),
            (
                "mediabot_transport_playback_errors_total",
                "Bot audio packets that could not be encoded or written.",
                &self.playback_errors,
            ),
            (
                "mediabot_transport_playback_resyncs_total",
                "Times the bot's send clock fell over 100 ms behind and skipped ahead.",
                &self.playback_resyncs,
            ),
            (
                "mediabot_transport_offers_rejected_total",
                "WHIP offers refused.",
                &self.offers_rejected,
            ),
            (
                "mediabot_transport_sessions_opened_total",
                "Media sessions opened.",
                &self.sessions_opened,
            ),
            (
                "mediabot_transport_sessions_connected_total",
                "Media sessions that completed ICE and DTLS.",
                &self.sessions_connected,
            ),
            (
                "mediabot_transport_direct_sessions_total",
                "Media sessions opened on the direct DTLS-SRTP plane.",
                &self.direct_sessions,
            ),
            (
                "mediabot_transport_sessions_closed_total",
                "Media sessions closed (any reason).",
                &self.sessions_closed,
            ),
            (
                "mediabot_transport_handshake_timeouts_total",
                "Media sessions closed because ICE/DTLS did not complete in time.",
                &self.handshake_timeouts,
            ),
            (
                "mediabot_transport_idle_timeouts_total",
                "Media sessions closed for silence.",
                &self.idle_timeouts,
            ),
        ]
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Copies the counters the load test reports.
    pub fn socket_snapshot(&self) -> SocketStatsSnapshot {
        SocketStatsSnapshot {
            datagrams_in: Self::get(&self.datagrams_in),
            datagrams_out: Self::get(&self.datagrams_out),
            recv_errors: Self::get(&self.recv_errors),
            send_errors: Self::get(&self.send_errors),
            rx_queue_dropped: Self::get(&self.rx_queue_dropped),
            kernel_timestamped: Self::get(&self.kernel_timestamped),
        }
    }
}

/// The socket-level counters of [`TransportStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStatsSnapshot {
    /// See [`TransportStats::datagrams_in`].
    pub datagrams_in: u64,
    /// See [`TransportStats::datagrams_out`].
    pub datagrams_out: u64,
    /// See [`TransportStats::recv_errors`].
    pub recv_errors: u64,
    /// See [`TransportStats::send_errors`].
    pub send_errors: u64,
    /// See [`TransportStats::rx_queue_dropped`].
    pub rx_queue_dropped: u64,
    /// See [`TransportStats::kernel_timestamped`].
    pub kernel_timestamped: u64,
}

enum Command {
    Open {
        call: CallId,
        negotiated: Box<Negotiated>,
        reply: oneshot::Sender<Result<OpenedSession, SessionError>>,
    },
    Close {
        id: SessionId,
        reply: oneshot::Sender<bool>,
    },
    Count {
        reply: oneshot::Sender<usize>,
    },
    Sizes {
        reply: oneshot::Sender<ServerSizes>,
    },
    Shutdown,
}

/// Sizes of the media server's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSizes {
    /// Live sessions.
    pub sessions: usize,
    /// ICE ufrags routed.
    pub ufrags: usize,
    /// Source addresses routed (passed ICE).
    pub addrs: usize,
}

/// Starts media servers.
#[derive(Debug)]
pub struct MediaServer;

impl MediaServer {
    /// Binds the UDP socket and starts the media thread, which hands everything that arrives
    /// to `handler`.
    ///
    /// # Errors
    /// [`TransportError::Socket`] when the socket cannot be bound; [`TransportError::Config`]
    /// when no address can be advertised (unspecified bind IP and no `public_ip`).
    pub fn start(
        config: MediaServerConfig,
        handler: Box<dyn MediaHandler>,
    ) -> Result<MediaServerHandle, TransportError> {
        let std_socket = std::net::UdpSocket::bind(config.bind)?;
        std_socket.set_nonblocking(true)?;
        let local_addr = std_socket.local_addr()?;
        let ip = config.public_ip.unwrap_or(local_addr.ip());
        if ip.is_unspecified() {
            return Err(TransportError::Config(
                "bind address is unspecified: set public_ip to the address peers reach".into(),
            ));
        }
        let advertised = SocketAddr::new(ip, config.public_port.unwrap_or(local_addr.port()));
        let config_direct = config.direct_media;
        let (tx, rx) = mpsc::channel(256);
        let stats = Arc::new(TransportStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("mediabot-udp".into())
            .spawn(move || {
                if let Some(prio) = config.realtime_priority {
                    match crate::sched::set_current_thread_realtime(prio) {
                        Ok(()) => tracing::info!(priority = prio, "media thread runs SCHED_FIFO"),
                        Err(e) => tracing::warn!(
                            priority = prio,
                            error = %e,
                            "media thread real-time priority refused (needs CAP_SYS_NICE); normal priority"
                        ),
                    }
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "media thread runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut core =
                        ServerLoop::new(config, advertised, std_socket, handler, thread_stats);
                    core.run(rx).await;
                });
            })?;
        Ok(MediaServerHandle {
            tx,
            stats,
            local_addr,
            advertised,
            negotiator: Arc::new(Negotiator {
                advertised,
                certificate: std::sync::Mutex::new(None),
                direct: config_direct,
            }),
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }
}

/// A cheap, cloneable handle to a running media server.
#[derive(Clone)]
pub struct MediaServerHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<TransportStats>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    negotiator: Arc<Negotiator>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for MediaServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServerHandle")
            .field("local_addr", &self.local_addr)
            .field("advertised", &self.advertised)
            .finish_non_exhaustive()
    }
}

impl MediaServerHandle {
    /// Negotiates a new session for `call` from a WHIP offer. The negotiation (building the
    /// peer connection, the answer) runs on a blocking-pool thread, not the media thread; the
    /// media thread only inserts the finished session.
    ///
    /// # Errors
    /// [`SessionError`] when the offer is refused, the server is full or stopped.
    pub async fn open_session(
        &self,
        call: CallId,
        offer_sdp: String,
    ) -> Result<OpenedSession, SessionError> {
        let r = self.try_open_session(call, offer_sdp).await;
        if matches!(
            r,
            Err(SessionError::Offer(_) | SessionError::Negotiation(_) | SessionError::Full)
        ) {
            TransportStats::inc(&self.stats.offers_rejected);
        }
        r
    }

    async fn try_open_session(
        &self,
        call: CallId,
        offer_sdp: String,
    ) -> Result<OpenedSession, SessionError> {
        let negotiator = Arc::clone(&self.negotiator);
        let negotiated =
            tokio::task::spawn_blocking(move || negotiator.negotiate(&offer_sdp, Instant::now()))
                .await
                .map_err(|e| SessionError::Negotiation(e.to_string()))??;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Open {
                call,
                negotiated: Box::new(negotiated),
                reply,
            })
            .await
            .map_err(|_| SessionError::Stopped)?;
        rx.await.map_err(|_| SessionError::Stopped)?
    }

    /// Closes a session; `false` when it did not exist (or the server stopped).
    pub async fn close_session(&self, id: SessionId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Close { id, reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Number of live sessions.
    ///
    /// # Errors
    /// [`TransportError::Stopped`] when the media thread is gone.
    pub async fn session_count(&self) -> Result<usize, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Count { reply })
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// Sizes of the server's tables (leak checks).
    ///
    /// # Errors
    /// [`TransportError::Stopped`] when the media thread is gone.
    pub async fn sizes(&self) -> Result<ServerSizes, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Sizes { reply })
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// The counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address put in ICE candidates.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// Closes every session (handler sees `Shutdown`) and joins the media thread.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The audio codecs both ends use: Opus/48000/2 (in-band FEC) and telephone-event/48000.
pub(crate) fn audio_codecs() -> Vec<RTCRtpCodecParameters> {
    vec![
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
                clock_rate: 48000,
                channels: 0,
                sdp_fmtp_line: "0-16".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 101,
        },
    ]
}

/// Builds the media engine both ends use: [`audio_codecs`] and the RFC 6464 audio-level
/// extension.
pub(crate) fn audio_media_engine() -> Result<MediaEngine, rtc::shared::error::Error> {
    let mut me = MediaEngine::default();
    for codec in audio_codecs() {
        me.register_codec(codec, RtpCodecKind::Audio)?;
    }
    me.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: sdp::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverDirection::Sendrecv),
    )?;
    Ok(me)
}

/// An Opus audio track with one SSRC (the bot's voice, or one emulated speaker).
pub(crate) fn opus_track(ssrc: u32, stream: &str) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream.to_owned(),
        format!("audio-{ssrc}"),
        format!("audio-{ssrc}"),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: audio_codecs()[0].rtp_codec.clone(),
            ..Default::default()
        }],
    )
}

/// A host candidate at `addr` in the JSON form `add_local_candidate` takes.
pub(crate) fn host_candidate(
    addr: SocketAddr,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit, rtc::shared::error::Error> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&c).to_json()
}

struct Session {
    id: SessionId,
    call: CallId,
    pc: RTCPeerConnection,
    ufrag: String,
    offer: OfferAudio,
    handshake_deadline: Instant,
    connected: bool,
    last_rx: Instant,
    next_timeout: Option<Instant>,
    addrs: Vec<SocketAddr>,
    ssrcs: Vec<u32>,
    tones: Vec<(u32, ToneTracker)>,
    rtcp_window: (Instant, u32),
    close: Option<CloseReason>,
    playback: Option<Playback>,
    /// The wake-up currently on the timer heap for this session.
    armed: Option<Instant>,
    /// The session's own DTLS-SRTP media plane ([`MediaServerConfig::direct_media`]); `None`:
    /// media goes through the stack.
    direct: Option<super::direct::DirectMedia>,
}

/// The bot's outbound audio on one session.
struct Playback {
    core: AudioSendCore,
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// Next 20 ms media-clock tick; advanced by exactly 20 ms so pacing does not drift.
    next_tick: Instant,
}

/// Builds sessions from offers, off the media thread.
struct Negotiator {
    advertised: SocketAddr,
    /// One DTLS certificate for all sessions (generating one per session costs more than the
    /// rest of the setup), renewed daily.
    certificate: std::sync::Mutex<Option<(RTCCertificate, Instant)>>,
    /// [`MediaServerConfig::direct_media`].
    direct: bool,
}

/// A negotiated session, ready for the media thread.
struct Negotiated {
    pc: RTCPeerConnection,
    ufrag: String,
    offer: OfferAudio,
    out_track: Option<(u32, RTCRtpSenderId)>,
    answer_sdp: String,
    /// The direct media plane's DTLS configuration, when the session takes that path.
    direct: Option<DirectConfig>,
}

/// What a session's direct media plane starts from.
struct DirectConfig {
    config: Arc<rtc::dtls::config::HandshakeConfig>,
    /// Our DTLS role, as the answer states it.
    is_client: bool,
    crypto: Arc<dyn rtc::crypto::RTCCryptoProvider>,
}

impl Negotiator {
    fn certificates(&self, now: Instant) -> Vec<RTCCertificate> {
        let mut slot = self
            .certificate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = slot
            .as_ref()
            .is_some_and(|(_, made)| now.duration_since(*made) < CERTIFICATE_RENEWAL);
        if !fresh {
            *slot = generate_certificate().map(|c| (c, now));
        }
        // On generation failure the stack makes its own certificate per session.
        slot.iter().map(|(c, _)| c.clone()).collect()
    }

    fn negotiate(&self, offer_sdp: &str, now: Instant) -> Result<Negotiated, SessionError> {
        let offer = sdp::inspect_offer(offer_sdp)?;
        let neg = |e: rtc::shared::error::Error| SessionError::Negotiation(e.to_string());
        let mut rng = rand::rng();
        let ufrag = random_token(&mut rng, 16);
        let pwd = random_token(&mut rng, 32);
        let mut settings = SettingEngineBuilder::new();
        if self.direct {
            // The stack never sees this session's DTLS on the direct plane: answering as the
            // server keeps its own DTLS idle (a client would send its own ClientHello).
            settings = settings
                .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server);
        }
        let settings = settings
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            .with_ice_timeouts(
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(2)),
            )
            .build();
        let media_engine = audio_media_engine().map_err(neg)?;
        let certificates = self.certificates(now);
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(certificates.clone())
                    .build(),
            )
            .with_setting_engine(settings)
            .with_media_engine(media_engine)
            .with_interceptor_registry(super::rtcp_tap::registry())
            .build(now)
            .map_err(neg)?;
        let remote = RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(neg)?;
        pc.set_remote_description(now, remote).map_err(neg)?;
        pc.add_local_candidate(host_candidate(self.advertised).map_err(neg)?)
            .map_err(neg)?;
        // If the offerer receives audio, attach our one outbound track (the bot's voice).
        let out_track = if offer.wants_audio_back {
            let ssrc = rng.next_u32();
            let sender = pc.add_track(opus_track(ssrc, "mediabot")).map_err(neg)?;
            Some((ssrc, sender))
        } else {
            None
        };
        let answer = pc.create_answer(None).map_err(neg)?;
        pc.set_local_description(now, answer).map_err(neg)?;
        let mut answer_sdp = pc
            .local_description()
            .map(|d| sdp::finish_answer(&d.sdp))
            .ok_or_else(|| SessionError::Negotiation("no local description".into()))?;
        if !answer_sdp
            .lines()
            .any(|l| l.starts_with("m=audio ") && !l.starts_with("m=audio 0 "))
        {
            return Err(SessionError::Offer(OfferError::NoCommonCodec));
        }
        let direct = if self.direct {
            direct_config(&mut answer_sdp, &certificates, &offer)
        } else {
            None
        };
        Ok(Negotiated {
            pc,
            ufrag,
            offer,
            out_track,
            answer_sdp,
            direct,
        })
    }
}

/// The direct media plane's DTLS configuration for a session, when it can take that path: the
/// stack answered as the DTLS server (`a=setup:passive`; an offer that insists on being the
/// server, `a=setup:passive`, makes the stack the client and keeps the stack path), we hold
/// the certificate the answer's fingerprint names, and the offer has a SHA-256 fingerprint to
/// check the peer against. To an `actpass` offer the answer becomes `a=setup:active` (RFC
/// 5763 lets the answerer pick): we are the client and say hello as soon as ICE connects,
/// rather than wait for the peer's ICE agent to see the pair nominated.
fn direct_config(
    answer_sdp: &mut String,
    certificates: &[RTCCertificate],
    offer: &OfferAudio,
) -> Option<DirectConfig> {
    let passive = answer_sdp
        .lines()
        .any(|l| l.trim_end() == "a=setup:passive");
    if !passive {
        return None;
    }
    let certificate = certificates.first()?;
    let is_client = offer.dtls_setup.as_deref() == Some("actpass");
    let crypto = rtc::crypto::default_provider().ok()?;
    match super::direct::handshake_config(certificate, &offer.fingerprints, &crypto, is_client) {
        Ok(config) => {
            if is_client {
                *answer_sdp = answer_sdp.replace("a=setup:passive", "a=setup:active");
            }
            Some(DirectConfig {
                config,
                is_client,
                crypto,
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, "direct media unavailable; stack path");
            None
        }
    }
}

struct ServerLoop {
    config: MediaServerConfig,
    advertised: SocketAddr,
    /// The socket's registration with the runtime's poller, present only while reads wait for
    /// readiness ([`ReadPacer`]); dropped (deregistered) while reads follow the wake grid.
    /// Declared before `socket` so it is deregistered before the socket closes.
    readiness: Option<AsyncFd<RawSocket>>,
    /// The media socket (non-blocking).
    socket: std::net::UdpSocket,
    handler: Box<dyn MediaHandler>,
    stats: Arc<TransportStats>,
    // Looked up several times per packet: a fast hasher (keys are ours or ICE-authenticated,
    // see `crate::fasthash`).
    sessions: FastMap<SessionId, Session>,
    by_ufrag: FastMap<String, SessionId>,
    by_addr: FastMap<SocketAddr, SessionId>,
    rng: rand::rngs::StdRng,
    /// Session wake-ups, earliest first; entries whose instant no longer matches the
    /// session's `armed` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Arrival of the datagram being handled (kernel stamp when available): the
    /// `received_at` of the RTP it yields.
    arrival: Option<Instant>,
}

const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How far the send clock may fall behind before it skips instead of bursting.
const MAX_PLAYBACK_LAG: Duration = Duration::from_millis(100);
/// Period of [`MediaHandler::on_tick`].
const TICK: Duration = Duration::from_millis(10);
/// Receive buffer asked for: about 50 ms of 2,000 streams' packets (the kernel may grant
/// less: `net.core.rmem_max`, unless the process has `CAP_NET_ADMIN`).
const RECEIVE_BUFFER: usize = 8 << 20;
/// Most datagrams read per wake-up before commands and timers get their turn.
const RECV_PER_WAKE: usize = 4 * super::rx::BATCH;
/// How often an unregistered socket is read when there is no wake grid.
const UNREGISTERED_POLL: Duration = Duration::from_millis(1);
/// Consecutive empty grid-paced reads after which reads wait for readiness again.
const IDLE_READS: u32 = 3;

/// The media socket's descriptor for the runtime's poller; closing stays with the owner.
#[derive(Debug, Clone, Copy)]
struct RawSocket(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Decides when the media thread reads its socket.
///
/// Waiting for readiness wakes the thread once per datagram when datagrams arrive spread
/// out: with hundreds of streams that is thousands of wake-ups (each an `epoll_wait`
/// return, a context switch and a pass of the loop) per second. So while traffic is dense,
/// reads follow the wake grid instead ([`MediaServerConfig::wake_grid`], the grid the
/// handler's play-out already runs on): the socket is taken off the poller and read with
/// `recvmmsg` at each grid point, so wake-ups stay at most one per grid step however many
/// streams there are. A datagram waits at most one step in the socket before it is read; its
/// kernel receive stamp keeps that wait visible in the end-to-end latency. After
/// [`IDLE_READS`] empty grid reads (traffic stopped), reads wait for readiness again, so an
/// idle server does not wake on the grid. With a zero grid, reads always wait for readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReadPacer {
    /// Reads follow the grid (the socket is off the poller).
    paced: bool,
    /// Empty grid reads in a row.
    empty_reads: u32,
    /// Next read, if one is scheduled.
    read_at: Option<Instant>,
}

/// What the loop must do to the socket's registration after [`ReadPacer::after_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// Leave it.
    Keep,
    /// Take the socket off the poller: reads follow the grid.
    Deregister,
    /// Put it back on the poller: reads wait for readiness.
    Register,
}

impl ReadPacer {
    /// Updates the plan after a read at `now` that returned `n` datagrams; `more`: the read
    /// stopped at its cap with datagrams possibly still queued.
    fn after_read(&mut self, n: usize, more: bool, now: Instant, grid: &WakeGrid) -> Registration {
        let was = self.paced;
        if grid.step.is_zero() {
            // No grid: readiness only (a capped read continues at once).
            self.read_at = more.then_some(now);
            return Registration::Keep;
        }
        if n > 0 {
            self.paced = true;
            self.empty_reads = 0;
            self.read_at = Some(if more { now } else { grid.next_after(now) });
        } else if self.paced {
            self.empty_reads += 1;
            if self.empty_reads >= IDLE_READS {
                self.paced = false;
                self.empty_reads = 0;
                self.read_at = None;
            } else {
                self.read_at = Some(grid.next_after(now));
            }
        } else {
            self.read_at = None;
        }
        match (was, self.paced) {
            (false, true) => Registration::Deregister,
            (true, false) => Registration::Register,
            _ => Registration::Keep,
        }
    }

    /// Back to waiting for readiness (the registration failed, or was just restored).
    fn unpace(&mut self) {
        *self = Self::default();
    }
}
const CERTIFICATE_RENEWAL: Duration = Duration::from_secs(24 * 3600);

/// Coalesces the handler's wake-ups on a fixed grid (see [`MediaServerConfig::wake_grid`]).
#[derive(Debug, Clone, Copy)]
struct WakeGrid {
    epoch: Instant,
    step: Duration,
    /// Earliest grid point a handler wake-up may be set for: the one after the last
    /// `on_tick` (so `on_tick` runs at most once per step, even for a handler whose deadline
    /// stays in the past).
    floor: Option<Instant>,
}

impl WakeGrid {
    fn new(epoch: Instant, step: Duration) -> Self {
        Self {
            epoch,
            step,
            floor: None,
        }
    }

    /// Steps from the epoch to `t`, rounded down, and the remainder.
    fn split(&self, t: Instant) -> (u128, u128) {
        let step = self.step.as_nanos().max(1);
        let since = t.saturating_duration_since(self.epoch).as_nanos();
        (since / step, since % step)
    }

    fn at(&self, steps: u128) -> Instant {
        // Saturates far beyond any real deadline (u64 nanoseconds is 584 years).
        let ns = steps.saturating_mul(self.step.as_nanos());
        self.epoch + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The first grid point strictly after `t` (`t` itself with a zero step).
    fn next_after(&self, t: Instant) -> Instant {
        crate::sched::next_point_after(self.epoch, t, self.step)
    }

    /// The first grid point at or after `t` (`t` itself with a zero step).
    fn round_up(&self, t: Instant) -> Instant {
        if self.step.is_zero() || t <= self.epoch {
            return t.max(self.epoch);
        }
        match self.split(t) {
            (n, 0) => self.at(n),
            (n, _) => self.at(n + 1),
        }
    }

    /// Records an `on_tick` at `now`: the next handler wake-up is at the following grid point
    /// at the earliest.
    fn ran(&mut self, now: Instant) {
        if !self.step.is_zero() {
            let (n, _) = self.split(now);
            self.floor = Some(self.at(n + 1));
        }
    }

    /// When the loop should wake for the handler's requested instant.
    fn coalesce(&self, requested: Option<Instant>) -> Option<Instant> {
        let t = self.round_up(requested?);
        Some(self.floor.map_or(t, |f| t.max(f)))
    }
}

fn generate_certificate() -> Option<RTCCertificate> {
    let provider = rtc::crypto::default_provider().ok()?;
    let params = CertificateParams::new(vec!["mediabot".to_owned()]).ok()?;
    RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        params,
    )
    .map_err(|e| tracing::warn!(error = %e, "dtls certificate"))
    .ok()
}

impl ServerLoop {
    fn new(
        config: MediaServerConfig,
        advertised: SocketAddr,
        socket: std::net::UdpSocket,
        handler: Box<dyn MediaHandler>,
        stats: Arc<TransportStats>,
    ) -> Self {
        use rand::SeedableRng;
        Self {
            config,
            advertised,
            readiness: None,
            socket,
            handler,
            stats,
            sessions: fast_map(),
            by_ufrag: fast_map(),
            by_addr: fast_map(),
            rng: rand::rngs::StdRng::from_os_rng(),
            timers: BinaryHeap::new(),
            arrival: None,
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = super::rx::RecvBatch::new();
        let kernel_stamps = super::rx::enable(&self.socket);
        if !kernel_stamps {
            tracing::debug!("no kernel receive timestamps: arrival is stamped after the read");
        }
        let granted = super::rx::set_receive_buffer(&self.socket, RECEIVE_BUFFER);
        tracing::debug!(?granted, "media socket receive buffer");
        let mut timer = super::timer::WakeTimer::new().with_grid(self.config.wake_grid);
        if !timer.is_precise() {
            tracing::debug!("no timerfd: wake-ups have tokio's 1 ms granularity");
        }
        let mut grid = WakeGrid::new(crate::sched::grid_epoch(), self.config.wake_grid);
        let mut pacer = ReadPacer::default();
        if !self.register() {
            // No poller for the socket: read it on the grid (or every millisecond) for good.
            tracing::error!("media socket not registered with the poller: reading on a timer");
        }
        let mut next_tick = grid.round_up(Instant::now() + TICK);
        // Housekeeping on the grid too, rounded once where it is set, not every loop turn.
        let mut next_housekeeping = grid.round_up(Instant::now() + HOUSEKEEPING);
        let mut wake = grid.coalesce(self.handler.next_wakeup());
        loop {
            // Every deadline on the grid: consecutive wake-ups then fall on consecutive grid
            // points and the timer runs periodic (no syscall to re-arm it, see `WakeTimer`).
            // The sessions' stack timers (reports, ICE checks) and send ticks move by less
            // than a step.
            let mut deadline = next_housekeeping.min(next_tick);
            if let Some(Reverse((t, _))) = self.timers.peek() {
                deadline = deadline.min(grid.round_up(*t));
            }
            if let Some(t) = wake {
                deadline = deadline.min(t);
            }
            if self.readiness.is_none() && pacer.read_at.is_none() {
                // Off the poller with no read planned (the registration failed): poll.
                let now = Instant::now();
                pacer.read_at = Some(if grid.step.is_zero() {
                    now + UNREGISTERED_POLL
                } else {
                    grid.next_after(now)
                });
            }
            if let Some(t) = pacer.read_at {
                deadline = deadline.min(t);
            }
            timer.arm(deadline);
            let mut readable = false;
            tokio::select! {
                cmd = rx.recv() => {
                    if !self.command(cmd) {
                        return;
                    }
                }
                r = Self::readable(self.readiness.as_ref()) => {
                    match r {
                        Ok(()) => readable = true,
                        Err(e) => {
                            TransportStats::inc(&self.stats.recv_errors);
                            tracing::warn!(error = %e, "media socket readiness; reading on the grid");
                            self.readiness = None;
                        }
                    }
                }
                () = timer.wait() => {}
            }
            let now = Instant::now();
            if readable || pacer.read_at.is_some_and(|t| t <= now) {
                let (n, more) = self.read_ready(&mut batch);
                match pacer.after_read(n, more, now, &grid) {
                    Registration::Keep => {}
                    Registration::Deregister => self.readiness = None,
                    Registration::Register => {
                        if !self.register() {
                            pacer.unpace();
                        }
                    }
                }
            }
            self.run_due(now);
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = grid.round_up(now + HOUSEKEEPING);
            }
            wake = grid.coalesce(self.handler.next_wakeup());
            if now >= next_tick || wake.is_some_and(|t| t <= now) {
                // The handler's clock: play-out and mixing run even when no packet arrives,
                // and as soon as the handler's own (coalesced) deadline comes.
                self.handler.on_tick(now);
                grid.ran(now);
                if now >= next_tick {
                    next_tick = grid.round_up(now + TICK);
                }
                wake = grid.coalesce(self.handler.next_wakeup());
            }
        }
    }

    /// Registers the socket with the runtime's poller for readability; `false` if refused.
    fn register(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let raw = RawSocket(self.socket.as_raw_fd());
        // SAFETY: the descriptor is `self.socket`'s, open for as long as `self` lives; the
        // registration lives in `self.readiness`, which is declared before `self.socket` (so
        // dropped first) and otherwise only replaced or cleared while the socket is open.
        match unsafe { AsyncFd::register_with_interest(raw, Interest::READABLE) } {
            Ok(fd) => {
                self.readiness = Some(fd);
                true
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                TransportStats::inc(&self.stats.recv_errors);
                tracing::warn!(error = %e, "media socket registration");
                self.readiness = None;
                false
            }
        }
    }

    /// Resolves when the registered socket turns readable (never while unregistered). The
    /// readiness is cleared first: the read that follows drains the socket, and a datagram
    /// arriving after the clear sets it again.
    async fn readable(fd: Option<&AsyncFd<RawSocket>>) -> std::io::Result<()> {
        match fd {
            Some(fd) => {
                let mut guard = fd.readable().await?;
                guard.clear_ready();
                Ok(())
            }
            None => std::future::pending().await,
        }
    }

    /// Reads what the socket holds, a bounded number of datagrams so commands and timers keep
    /// their turn. Returns how many were read and whether the bound stopped it.
    fn read_ready(&mut self, batch: &mut super::rx::RecvBatch) -> (usize, bool) {
        let mut total = 0;
        while total < RECV_PER_WAKE {
            let n = match super::rx::recv_many(&self.socket, batch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (total, false),
                Err(e) => {
                    TransportStats::inc(&self.stats.recv_errors);
                    tracing::debug!(error = %e, "udp recv");
                    return (total, false);
                }
            };
            total += n;
            for i in 0..n {
                let Some((bytes, meta)) = batch.get(i) else {
                    break;
                };
                let Some(m) = meta else {
                    // A source address of an unknown family.
                    TransportStats::inc(&self.stats.datagrams_in);
                    TransportStats::inc(&self.stats.recv_errors);
                    continue;
                };
                if m.kernel_stamped {
                    TransportStats::inc(&self.stats.kernel_timestamped);
                }
                if let Some(total) = m.dropped_total {
                    self.stats
                        .rx_queue_dropped
                        .store(u64::from(total), Ordering::Relaxed);
                }
                // A datagram that filled the buffer may have been truncated: too big.
                if m.len >= super::rx::DATAGRAM_BUF {
                    TransportStats::inc(&self.stats.datagrams_in);
                    TransportStats::inc(&self.stats.oversize_dropped);
                    continue;
                }
                self.arrival = Some(m.arrival);
                self.handle_datagram(bytes, m.from, Instant::now());
                self.arrival = None;
            }
            if n < super::rx::BATCH {
                // The queue is drained.
                return (total, false);
            }
        }
        (total, true)
    }

    /// Runs one command; `false` when the loop must end.
    fn command(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            Some(Command::Open {
                call,
                negotiated,
                reply,
            }) => {
                let r = self.open(call, *negotiated, Instant::now());
                let _ = reply.send(r);
            }
            Some(Command::Close { id, reply }) => {
                let existed = self.sessions.contains_key(&id);
                if existed {
                    self.close(id, CloseReason::Requested);
                }
                let _ = reply.send(existed);
            }
            Some(Command::Count { reply }) => {
                let _ = reply.send(self.sessions.len());
            }
            Some(Command::Sizes { reply }) => {
                let _ = reply.send(ServerSizes {
                    sessions: self.sessions.len(),
                    ufrags: self.by_ufrag.len(),
                    addrs: self.by_addr.len(),
                });
            }
            Some(Command::Shutdown) | None => {
                let ids: Vec<_> = self.sessions.keys().copied().collect();
                for id in ids {
                    self.close(id, CloseReason::Shutdown);
                }
                return false;
            }
        }
        true
    }

    /// Inserts a negotiated session.
    fn open(
        &mut self,
        call: CallId,
        negotiated: Negotiated,
        now: Instant,
    ) -> Result<OpenedSession, SessionError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SessionError::Full);
        }
        let Negotiated {
            pc,
            ufrag,
            offer,
            out_track,
            answer_sdp,
            direct,
        } = negotiated;
        if self.by_ufrag.contains_key(&ufrag) {
            // 16 random alphanumerics: practically never; the far side may simply retry.
            return Err(SessionError::Negotiation("ice ufrag collision".into()));
        }
        let id = loop {
            let id = SessionId(self.rng.next_u64());
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let (playback, writer) = match out_track {
            Some((ssrc, sender)) => {
                let (writer, core) = send::playback(
                    &self.config.send,
                    offer.opus_payload_type,
                    offer.telephone_event_payload_type,
                    self.rng.next_u32() as u16,
                    self.rng.next_u32(),
                )
                .map_err(|e| SessionError::Negotiation(e.to_string()))?;
                (
                    Some(Playback {
                        core,
                        sender,
                        ssrc,
                        next_tick: now,
                    }),
                    Some(writer),
                )
            }
            None => (None, None),
        };
        let direct = direct.map(|d| {
            super::direct::DirectMedia::new(
                d.config,
                d.is_client,
                d.crypto,
                out_track.map(|(ssrc, _)| ssrc),
                self.rng.next_u32(),
                now,
            )
        });
        let session = Session {
            id,
            call: call.clone(),
            pc,
            ufrag: ufrag.clone(),
            offer,
            handshake_deadline: now + self.config.handshake_timeout,
            connected: false,
            last_rx: now,
            next_timeout: None,
            addrs: Vec::new(),
            ssrcs: Vec::new(),
            tones: Vec::new(),
            rtcp_window: (now, 0),
            close: None,
            playback,
            armed: None,
            direct,
        };
        if session.direct.is_some() {
            TransportStats::inc(&self.stats.direct_sessions);
        }
        self.by_ufrag.insert(ufrag, id);
        self.sessions.insert(id, session);
        TransportStats::inc(&self.stats.sessions_opened);
        self.handler.on_session_opened(id, &call);
        if let Some(writer) = writer {
            self.handler.on_playback_ready(id, &call, writer);
        }
        self.pump(id);
        Ok(OpenedSession { id, answer_sdp })
    }

    fn handle_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        TransportStats::inc(&self.stats.datagrams_in);
        if data.len() > MAX_DATAGRAM {
            TransportStats::inc(&self.stats.oversize_dropped);
            return;
        }
        if self.config.loopback_peers_only && !from.ip().is_loopback() {
            TransportStats::inc(&self.stats.peer_filter_dropped);
            return;
        }
        let kind = packet::classify(data);
        let id = match kind {
            DatagramKind::Stun => {
                match packet::stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                    Some(id) => *id,
                    None => match self.by_addr.get(&from) {
                        Some(id) => *id,
                        None => {
                            TransportStats::inc(&self.stats.stun_unknown_dropped);
                            return;
                        }
                    },
                }
            }
            DatagramKind::Dtls | DatagramKind::Rtp | DatagramKind::Rtcp => {
                match self.by_addr.get(&from) {
                    Some(id) => *id,
                    None => {
                        TransportStats::inc(&self.stats.unauthenticated_dropped);
                        return;
                    }
                }
            }
            DatagramKind::Unknown => {
                TransportStats::inc(&self.stats.unknown_kind_dropped);
                return;
            }
        };
        let max_ssrcs = self.config.max_ssrcs_per_session;
        let max_rtcp = self.config.max_rtcp_per_second;
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match kind {
            DatagramKind::Rtp => {
                let Some(ssrc) = packet::rtp_ssrc(data) else {
                    TransportStats::inc(&self.stats.unknown_kind_dropped);
                    return;
                };
                if !s.ssrcs.contains(&ssrc) {
                    if s.ssrcs.len() >= max_ssrcs {
                        TransportStats::inc(&self.stats.ssrc_limit_dropped);
                        return;
                    }
                    s.ssrcs.push(ssrc);
                }
            }
            DatagramKind::Rtcp => {
                if now.duration_since(s.rtcp_window.0) >= Duration::from_secs(1) {
                    s.rtcp_window = (now, 0);
                }
                s.rtcp_window.1 += 1;
                if s.rtcp_window.1 > max_rtcp {
                    TransportStats::inc(&self.stats.rtcp_rate_dropped);
                    return;
                }
            }
            _ => {}
        }
        s.last_rx = now;
        if s.direct.is_some() && kind != DatagramKind::Stun {
            let at = self.arrival.unwrap_or(now);
            let timers_moved = handle_direct(
                s,
                kind,
                data,
                from,
                (now, at),
                &self.socket,
                &mut *self.handler,
                &self.stats,
            );
            if timers_moved {
                self.rearm(id);
            }
            return;
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                // The agent matches the local candidate by this address, so it is the one we
                // advertised (behind NAT 1:1 it is not the socket's own address).
                local_addr: self.advertised,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = s.pc.handle_read(msg) {
            TransportStats::inc(&self.stats.stack_errors);
            tracing::debug!(session = %id, error = %e, "rejected datagram");
        }
        let media_out = self.pump(id);
        if matches!(kind, DatagramKind::Rtp | DatagramKind::Rtcp) && media_out == 0 {
            TransportStats::inc(&self.stats.srtp_rejected);
        }
        // Until the session is up, run the stack's timers once more after each datagram: when
        // a datagram completes ICE, the stack (the DTLS client) queues its first flight but
        // sends it only from its next timer run, up to one ICE check interval (~200 ms) later.
        // Every timer of the stack checks its own deadline, so an early run only flushes what
        // is queued.
        if let Some(s) = self.sessions.get_mut(&id)
            && !s.connected
        {
            if let Err(e) = s.pc.handle_timeout(now) {
                tracing::debug!(session = %id, error = %e, "timeout handling");
            }
            self.pump(id);
        }
    }

    /// Runs every session whose armed deadline has come: stack timers and send ticks. Only due
    /// sessions are touched (a heap of deadlines), so the cost per loop turn does not grow with
    /// the number of sessions.
    fn run_due(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&id) else {
                continue; // closed since
            };
            if s.armed != Some(t) {
                continue; // stale: the session re-armed for another instant
            }
            s.armed = None;
            if s.next_timeout.is_some_and(|d| d <= now) {
                if let Err(e) = s.pc.handle_timeout(now) {
                    tracing::debug!(session = %id, error = %e, "timeout handling");
                }
                if let Some(d) = s.direct.as_mut()
                    && let Err(e) = d.handle_timeout(now)
                {
                    tracing::debug!(session = %id, error = %e, "direct media timeout handling");
                    if !d.is_keyed() {
                        // The handshake gave up retransmitting.
                        s.close.get_or_insert(CloseReason::Failed);
                    }
                }
                flush_direct(&self.socket, &self.stats, s);
                // Avoid spinning if the stack keeps returning a past deadline.
                s.next_timeout = None;
            }
            self.playback_session(id, now);
            self.pump(id);
        }
        // Stale entries pile up when deadlines move; rebuild when they dominate.
        if self.timers.len() > 4 * self.sessions.len() + 1024 {
            self.timers = self
                .sessions
                .values()
                .filter_map(|s| s.armed.map(|t| Reverse((t, s.id))))
                .collect();
        }
    }

    /// Puts the session's next wake-up (stack timer or send tick) on the heap if it changed.
    fn rearm(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let play = s
            .playback
            .as_ref()
            .filter(|_| s.connected)
            .map(|p| p.next_tick);
        let wake = super::timer::earliest(s.next_timeout, play);
        if wake != s.armed {
            s.armed = wake;
            if let Some(t) = wake {
                self.timers.push(Reverse((t, id)));
            }
        }
    }

    /// Sends the bot's audio for one session: one packet per 20 ms media tick that is due.
    fn playback_session(&mut self, id: SessionId, now: Instant) {
        {
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            if !s.connected {
                return;
            }
            let Some(play) = s.playback.as_mut() else {
                return;
            };
            if play.next_tick > now {
                return;
            }
            // Far behind (the thread was starved): skip ahead rather than burst.
            if now.duration_since(play.next_tick) > MAX_PLAYBACK_LAG {
                TransportStats::inc(&self.stats.playback_resyncs);
                play.next_tick = now;
            }
            while play.next_tick <= now {
                play.next_tick += send::FRAME_DURATION;
                let p = match play.core.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        TransportStats::inc(&self.stats.playback_errors);
                        tracing::debug!(session = %id, error = %e, "encode");
                        continue;
                    }
                };
                let header = rtc::rtp::header::Header {
                    version: 2,
                    marker: p.marker,
                    payload_type: p.payload_type,
                    sequence_number: p.sequence,
                    timestamp: p.timestamp,
                    ssrc: play.ssrc,
                    ..Default::default()
                };
                let written = if let Some(d) = s.direct.as_mut() {
                    match (d.protect_rtp(&header, p.payload, now), d.peer()) {
                        (Ok(datagram), Some(to)) => {
                            send_datagram(&self.socket, &self.stats, &datagram, to)
                        }
                        _ => false,
                    }
                } else {
                    let packet = rtc::rtp::packet::Packet {
                        header,
                        payload: bytes::Bytes::copy_from_slice(p.payload),
                    };
                    s.pc.rtp_sender(play.sender)
                        .map(|mut sender| sender.write_rtp(now, packet).is_ok())
                        .unwrap_or(false)
                };
                let counter = if written {
                    &self.stats.rtp_sent
                } else {
                    &self.stats.playback_errors
                };
                TransportStats::inc(counter);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let mut to_close = Vec::new();
        for s in self.sessions.values() {
            if let Some(reason) = s.close {
                to_close.push((s.id, reason));
            } else if !s.connected && now >= s.handshake_deadline {
                TransportStats::inc(&self.stats.handshake_timeouts);
                to_close.push((s.id, CloseReason::HandshakeTimeout));
            } else if s.connected && now.duration_since(s.last_rx) >= self.config.idle_timeout {
                TransportStats::inc(&self.stats.idle_timeouts);
                to_close.push((s.id, CloseReason::Idle));
            }
        }
        for (id, reason) in to_close {
            self.close(id, reason);
        }
    }

    fn close(&mut self, id: SessionId, reason: CloseReason) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let _ = s.pc.close();
        // Flush what close produced (DTLS close_notify).
        while let Some(out) = s.pc.poll_write() {
            self.send(&out.message, out.transport.peer_addr);
        }
        if let Some(d) = s.direct.as_mut() {
            d.close(Instant::now());
        }
        flush_direct(&self.socket, &self.stats, &mut s);
        self.by_ufrag.remove(&s.ufrag);
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        TransportStats::inc(&self.stats.sessions_closed);
        self.handler.on_session_closed(id, &s.call, reason);
    }

    fn send(&self, data: &[u8], to: SocketAddr) {
        send_datagram(&self.socket, &self.stats, data, to);
    }

    /// Drains a session's outputs: datagrams to send, events, decrypted media. Returns how many
    /// decrypted RTP/RTCP messages came out.
    fn pump(&mut self, id: SessionId) -> usize {
        let mut media_out = 0;
        let Some(s) = self.sessions.get_mut(&id) else {
            return media_out;
        };
        let mut moved: Vec<(SessionId, SocketAddr)> = Vec::new();
        while let Some(out) = s.pc.poll_write() {
            let to = out.transport.peer_addr;
            if packet::classify(&out.message) == DatagramKind::Rtcp {
                TransportStats::inc(&self.stats.rtcp_sent);
            }
            if packet::is_stun_binding_success(&out.message) && !s.addrs.contains(&to) {
                if s.addrs.len() < self.config.max_addrs_per_session {
                    s.addrs.push(to);
                    if let Some(prev) = self.by_addr.insert(to, id)
                        && prev != id
                    {
                        // The address moved to a new session (a client reused its port).
                        moved.push((prev, to));
                    }
                } else {
                    // Do not answer from an address we will not accept media from.
                    continue;
                }
            }
            send_datagram(&self.socket, &self.stats, &out.message, to);
        }
        for (prev, addr) in moved {
            if let Some(p) = self.sessions.get_mut(&prev) {
                p.addrs.retain(|a| *a != addr);
            }
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return media_out;
        };
        while let Some(ev) = s.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                rtc::peer_connection::state::RTCIceConnectionState::Connected,
            ) = ev
                && let (Some(d), Some(peer)) = (s.direct.as_mut(), s.addrs.first().copied())
            {
                // ICE is up: as the DTLS client, say hello at once.
                match d.start_client(peer, Instant::now()) {
                    Ok(_) => flush_direct(&self.socket, &self.stats, s),
                    Err(e) => {
                        TransportStats::inc(&self.stats.stack_errors);
                        tracing::debug!(session = %id, error = %e, "dtls client start");
                    }
                }
            }
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
                match state {
                    RTCPeerConnectionState::Connected if !s.connected => {
                        s.connected = true;
                        TransportStats::inc(&self.stats.sessions_connected);
                        self.handler.on_session_connected(id, &s.call);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        s.close.get_or_insert(CloseReason::Failed);
                    }
                    _ => {}
                }
            }
        }
        while let Some(TaggedRTCMessage { now, message }) = s.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, pkt) => {
                    media_out += 1;
                    let at = self.arrival.unwrap_or(now);
                    deliver_rtp(
                        s,
                        &pkt.header,
                        &pkt.payload,
                        at,
                        &mut *self.handler,
                        &self.stats,
                    );
                }
                RTCMessage::RtcpPacket(_, pkts) => {
                    media_out += 1;
                    deliver_rtcp(s, &pkts, &mut *self.handler, &self.stats);
                }
                _ => {}
            }
        }
        s.next_timeout = session_timeout(s);
        self.rearm(id);
        media_out
    }
}

/// A session's DTLS, SRTP and SRTCP datagram on the direct media plane, on the session the
/// caller already looked up (`now`, and `at`: the datagram's arrival). Returns whether the
/// session's deadlines may have moved (a DTLS datagram), so the caller re-arms it.
#[allow(clippy::too_many_arguments)]
fn handle_direct(
    s: &mut Session,
    kind: DatagramKind,
    data: &[u8],
    from: SocketAddr,
    (now, at): (Instant, Instant),
    socket: &std::net::UdpSocket,
    handler: &mut dyn MediaHandler,
    stats: &TransportStats,
) -> bool {
    let id = s.id;
    let Some(d) = s.direct.as_mut() else {
        return false;
    };
    match kind {
        DatagramKind::Dtls => {
            match d.handle_dtls(data, from, now) {
                Ok(super::direct::DtlsOutcome::Connected) if !s.connected => {
                    s.connected = true;
                    TransportStats::inc(&stats.sessions_connected);
                    handler.on_session_connected(id, &s.call);
                }
                Ok(super::direct::DtlsOutcome::Closed) => {
                    // As on the stack path, a close_notify alone does not end the session:
                    // the WHIP DELETE or the idle timeout does (with its reason).
                    tracing::debug!(session = %id, "peer closed dtls");
                }
                Ok(_) => {}
                Err(e) => {
                    TransportStats::inc(&stats.stack_errors);
                    tracing::debug!(session = %id, error = %e, "rejected dtls datagram");
                }
            }
            flush_direct(socket, stats, s);
            s.next_timeout = session_timeout(s);
            return true;
        }
        DatagramKind::Rtp => match d.decrypt_rtp(data, from, at) {
            Ok((header, plain)) => match super::direct::payload(&header, &plain) {
                Some(payload) => deliver_rtp(s, &header, payload, at, handler, stats),
                None => TransportStats::inc(&stats.rtp_other_dropped),
            },
            Err(e) => {
                TransportStats::inc(&stats.srtp_rejected);
                tracing::trace!(session = %id, error = %e, "rejected srtp");
            }
        },
        DatagramKind::Rtcp => match d.decrypt_rtcp(data, from, now) {
            Ok(pkts) => deliver_rtcp(s, &pkts, handler, stats),
            Err(e) => {
                TransportStats::inc(&stats.srtp_rejected);
                tracing::trace!(session = %id, error = %e, "rejected srtcp");
            }
        },
        DatagramKind::Stun | DatagramKind::Unknown => {}
    }
    false
}

/// The session's next stack or direct-plane deadline.
fn session_timeout(s: &mut Session) -> Option<Instant> {
    let stack = s.pc.poll_timeout();
    super::timer::earliest(stack, s.direct.as_ref().and_then(|d| d.poll_timeout()))
}

/// Sends one datagram and counts it (`datagrams_out`, or `send_errors`); whether it went.
fn send_datagram(
    socket: &std::net::UdpSocket,
    stats: &TransportStats,
    data: &[u8],
    to: SocketAddr,
) -> bool {
    match socket.send_to(data, to) {
        Ok(_) => {
            TransportStats::inc(&stats.datagrams_out);
            true
        }
        Err(e) => {
            TransportStats::inc(&stats.send_errors);
            tracing::debug!(error = %e, %to, "udp send");
            false
        }
    }
}

/// Sends what the session's direct media plane queued (DTLS flights, reports) to its peer.
fn flush_direct(socket: &std::net::UdpSocket, stats: &TransportStats, s: &mut Session) {
    let Some(d) = s.direct.as_mut() else {
        return;
    };
    let to = d.peer();
    while let Some(datagram) = d.poll_transmit() {
        let Some(to) = to else {
            continue; // no peer yet: nothing can be addressed
        };
        if packet::classify(&datagram) == DatagramKind::Rtcp {
            TransportStats::inc(&stats.rtcp_sent);
        }
        send_datagram(socket, stats, &datagram, to);
    }
}

/// Hands the sender reports of an inbound RTCP compound to the handler.
fn deliver_rtcp(
    s: &Session,
    pkts: &[Box<dyn rtc::rtcp::packet::Packet>],
    handler: &mut dyn MediaHandler,
    stats: &TransportStats,
) {
    for p in pkts {
        if let Some(sr) = p
            .as_any()
            .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
        {
            TransportStats::inc(&stats.sender_reports);
            handler.on_sender_report(
                s.id,
                &s.call,
                &SenderReportInfo {
                    ssrc: Ssrc(sr.ssrc),
                    ntp_time: sr.ntp_time,
                    rtp_time: sr.rtp_time,
                    packet_count: sr.packet_count,
                },
            );
        }
    }
}

fn deliver_rtp(
    s: &mut Session,
    h: &rtc::rtp::header::Header,
    payload: &[u8],
    now: Instant,
    handler: &mut dyn MediaHandler,
    stats: &TransportStats,
) {
    if h.payload_type == s.offer.opus_payload_type {
        let audio_level = s
            .offer
            .audio_level_id
            .and_then(|id| h.get_extension(id))
            .and_then(|b| packet::parse_audio_level(&b));
        TransportStats::inc(&stats.rtp_delivered);
        handler.on_rtp(&InboundRtp {
            session: s.id,
            call: &s.call,
            received_at: now,
            ssrc: Ssrc(h.ssrc),
            sequence: h.sequence_number,
            timestamp: h.timestamp,
            payload_type: h.payload_type,
            marker: h.marker,
            audio_level,
            payload,
        });
    } else if Some(h.payload_type) == s.offer.telephone_event_payload_type {
        let Some(ev) = packet::parse_telephone_event(payload) else {
            TransportStats::inc(&stats.rtp_other_dropped);
            return;
        };
        let idx = match s.tones.iter().position(|(ssrc, _)| *ssrc == h.ssrc) {
            Some(i) => i,
            None => {
                s.tones.push((h.ssrc, ToneTracker::default()));
                s.tones.len() - 1
            }
        };
        let tracker = &mut s.tones[idx].1;
        let mut phases = Vec::with_capacity(2);
        if let Some(p) = tracker.handle(h.timestamp, &ev) {
            phases.push(p);
            // A press whose first packet we saw already ended: report both.
            if p == super::TonePhase::Start && ev.end {
                phases.push(super::TonePhase::End);
            }
        }
        for phase in phases {
            TransportStats::inc(&stats.tones_delivered);
            handler.on_tone(&ToneEvent {
                session: s.id,
                call: s.call.clone(),
                ssrc: Ssrc(h.ssrc),
                event: ev.event,
                phase,
                duration: ev.duration,
                volume: ev.volume,
                timestamp: h.timestamp,
            });
        }
    } else {
        TransportStats::inc(&stats.rtp_other_dropped);
    }
}

fn random_token(rng: &mut impl RngCore, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn wake_grid_rounds_up_and_runs_at_most_once_per_step() {
        let e = Instant::now();
        let mut g = WakeGrid::new(e, MS);
        assert_eq!(g.round_up(e + 3 * MS), e + 3 * MS);
        assert_eq!(g.round_up(e + 3 * MS + US), e + 4 * MS);
        assert_eq!(g.round_up(e + 2 * MS + 999 * US), e + 3 * MS);
        assert_eq!(g.coalesce(None), None);
        // Never later than one step after the request.
        for k in 0..5000u32 {
            let t = e + k * 7 * US;
            let w = g.coalesce(Some(t)).unwrap();
            assert!(w >= t && w - t < MS, "{k}");
        }
        // After an on_tick at 4.2 ms, a deadline still in the past (or in the same step)
        // waits for the next grid point.
        g.ran(e + 4 * MS + 200 * US);
        assert_eq!(g.coalesce(Some(e + MS)), Some(e + 5 * MS));
        assert_eq!(g.coalesce(Some(e + 4 * MS + 500 * US)), Some(e + 5 * MS));
        assert_eq!(g.coalesce(Some(e + 7 * MS + US)), Some(e + 8 * MS));
    }

    #[test]
    fn zero_grid_wakes_at_each_requested_instant() {
        let e = Instant::now();
        let mut g = WakeGrid::new(e, Duration::ZERO);
        let t = e + 3 * MS + 17 * US;
        assert_eq!(g.coalesce(Some(t)), Some(t));
        g.ran(e + 5 * MS);
        assert_eq!(g.coalesce(Some(t)), Some(t));
        assert_eq!(g.round_up(e + MS + US), e + MS + US);
    }

    #[test]
    fn next_after_is_strictly_later_and_on_the_grid() {
        let e = Instant::now();
        let g = WakeGrid::new(e, MS);
        assert_eq!(g.next_after(e), e + MS);
        assert_eq!(g.next_after(e + 3 * MS), e + 4 * MS);
        assert_eq!(g.next_after(e + 3 * MS + 999 * US), e + 4 * MS);
        let z = WakeGrid::new(e, Duration::ZERO);
        assert_eq!(z.next_after(e + 5 * US), e + 5 * US);
    }

    #[test]
    fn dense_traffic_moves_reads_onto_the_grid_and_silence_moves_them_back() {
        let e = Instant::now();
        let g = WakeGrid::new(e, MS);
        let mut p = ReadPacer::default();
        // Readiness fired and the read found datagrams: off the poller, next read on the grid.
        let t = e + 2 * MS + 300 * US;
        assert_eq!(p.after_read(3, false, t, &g), Registration::Deregister);
        assert_eq!(p.read_at, Some(e + 3 * MS));
        // Datagrams at each grid read: stays paced, one read per step.
        assert_eq!(p.after_read(5, false, e + 3 * MS, &g), Registration::Keep);
        assert_eq!(p.read_at, Some(e + 4 * MS));
        // A read stopped at its cap continues at once.
        assert_eq!(p.after_read(128, true, e + 4 * MS, &g), Registration::Keep);
        assert_eq!(p.read_at, Some(e + 4 * MS));
        // Empty reads: stays paced until IDLE_READS of them in a row ...
        let mut now = e + 5 * MS;
        for _ in 1..IDLE_READS {
            assert_eq!(p.after_read(0, false, now, &g), Registration::Keep);
            assert!(p.paced);
            now += MS;
        }
        // ... a datagram in between resets the count ...
        assert_eq!(p.after_read(1, false, now, &g), Registration::Keep);
        for _ in 1..IDLE_READS {
            now += MS;
            assert_eq!(p.after_read(0, false, now, &g), Registration::Keep);
        }
        // ... and the last one puts the socket back on the poller with nothing scheduled.
        now += MS;
        assert_eq!(p.after_read(0, false, now, &g), Registration::Register);
        assert_eq!(p.read_at, None);
        assert!(!p.paced);
        // Readiness that finds nothing (spurious) changes nothing.
        assert_eq!(p.after_read(0, false, now, &g), Registration::Keep);
        assert_eq!(p.read_at, None);
    }

    #[test]
    fn without_a_grid_reads_always_wait_for_readiness() {
        let e = Instant::now();
        let g = WakeGrid::new(e, Duration::ZERO);
        let mut p = ReadPacer::default();
        assert_eq!(p.after_read(10, false, e, &g), Registration::Keep);
        assert!(!p.paced);
        assert_eq!(p.read_at, None);
        assert_eq!(p.after_read(128, true, e + MS, &g), Registration::Keep);
        assert_eq!(p.read_at, Some(e + MS));
    }
}
