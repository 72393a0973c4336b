//! A WHIP client on the same WebRTC stack (webrtc-rs `rtc`, sans-IO, our own socket loop):
//! the emulator and the tests use it to push Opus RTP to a bot, one SSRC per speaker.
//!
//! One tokio task and one UDP socket per client session; the caller hands it ready RTP
//! (sequence numbers and timestamps are the caller's, so impairment models can reorder,
//! duplicate or drop).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::blob::MediaBlob;
use super::sdp::{self, OfferAudio};
use super::server::{audio_codecs, audio_media_engine, host_candidate, opus_track};
use super::{AudioLevel, Ssrc};

/// Setup of a WHIP client session.
#[derive(Debug, Clone)]
pub struct WhipClientConfig {
    /// Local IP to bind the client's UDP socket to (loopback in tests).
    pub bind_ip: IpAddr,
    /// One audio track per SSRC (one per speaker).
    pub ssrcs: Vec<u32>,
    /// HTTP request timeout.
    pub http_timeout: Duration,
    /// Capacity of the send queue (packets); beyond it `send_rtp` refuses.
    pub queue: usize,
    /// Fault injection: rewrites the offer on its way to the server (the local description
    /// stays as generated), e.g. to forge the DTLS fingerprint. `None` in normal use.
    pub offer_rewrite: Option<fn(String) -> String>,
}

impl Default for WhipClientConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ssrcs: vec![1],
            http_timeout: Duration::from_secs(10),
            queue: 1024,
            offer_rewrite: None,
        }
    }
}

/// Connection state of a client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// ICE/DTLS in progress.
    Connecting,
    /// Media can flow.
    Connected,
    /// ICE or DTLS failed.
    Failed,
    /// Closed locally.
    Closed,
}

/// Errors of the WHIP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhipClientError {
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The WHIP endpoint answered with an error status.
    #[error("whip endpoint answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The answer had no usable `Location`.
    #[error("answer without a usable location")]
    NoLocation,
    /// Local WebRTC setup or the answer failed.
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// The UDP socket failed.
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The blob is unusable.
    #[error("blob: {0}")]
    Blob(#[from] super::blob::BlobError),
    /// Waiting timed out.
    #[error("timed out")]
    Timeout,
    /// The session failed or is closed.
    #[error("session failed or closed")]
    Closed,
    /// The send queue is full.
    #[error("send queue full")]
    QueueFull,
    /// No track carries that SSRC.
    #[error("unknown ssrc {0}")]
    UnknownSsrc(u32),
}

/// One RTP packet to send.
#[derive(Debug, Clone)]
pub struct OutboundRtp {
    /// Track (speaker) to send on; must be one of [`WhipClientConfig::ssrcs`].
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload type; `None` = the negotiated Opus type.
    pub payload_type: Option<u8>,
    /// RFC 6464 audio level to attach, if negotiated.
    pub audio_level: Option<AudioLevel>,
    /// Payload bytes.
    pub payload: Bytes,
}

/// Capacity of the received-RTP queue (packets).
const INBOUND_QUEUE: usize = 4096;

/// One RTP packet received from the server (the bot's outbound audio).
#[derive(Debug, Clone)]
pub struct ReceivedRtp {
    /// When it was read.
    pub received_at: Instant,
    /// Stream.
    pub ssrc: u32,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
}

enum ClientCmd {
    Rtp(OutboundRtp),
    Raw(Bytes),
    ReplayLast(usize),
    Close,
}

/// Counters of a client session.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// RTP packets handed to the stack.
    pub rtp_sent: AtomicU64,
    /// RTP packets the stack refused.
    pub rtp_errors: AtomicU64,
    /// Datagrams written.
    pub datagrams_out: AtomicU64,
    /// Datagrams read.
    pub datagrams_in: AtomicU64,
    /// RTP packets received from the server (the bot's audio).
    pub rtp_received: AtomicU64,
    /// Received RTP dropped because the caller did not drain [`WhipClientSession::recv_rtp`].
    pub rtp_received_dropped: AtomicU64,
    /// RTCP sender reports received.
    pub sender_reports: AtomicU64,
}

/// A live WHIP session pushing media to a bot.
#[derive(Debug)]
pub struct WhipClientSession {
    http: reqwest::Client,
    resource: reqwest::Url,
    token: String,
    cmd: mpsc::Sender<ClientCmd>,
    state: watch::Receiver<ClientState>,
    inbound: mpsc::Receiver<ReceivedRtp>,
    task: Option<tokio::task::JoinHandle<()>>,
    offer: OfferAudio,
    local_addr: SocketAddr,
    stats: Arc<ClientStats>,
}

impl WhipClientSession {
    /// Starts a session from a media blob.
    ///
    /// # Errors
    /// See [`WhipClientSession::connect`].
    pub async fn connect_blob(
        blob: &MediaBlob,
        config: WhipClientConfig,
    ) -> Result<Self, WhipClientError> {
        Self::connect(&blob.whip, &blob.token, config).await
    }

    /// Creates the offer, `POST`s it to `whip_url` with `token`, applies the answer and starts
    /// the session's task. Returns once the answer is applied (ICE may still be running: see
    /// [`WhipClientSession::wait_connected`]).
    ///
    /// # Errors
    /// [`WhipClientError`] for HTTP failures, error statuses, a bad answer or socket errors.
    pub async fn connect(
        whip_url: &str,
        token: &str,
        config: WhipClientConfig,
    ) -> Result<Self, WhipClientError> {
        let neg = |e: rtc::shared::error::Error| WhipClientError::Negotiation(e.to_string());
        let socket = UdpSocket::bind(SocketAddr::new(config.bind_ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let settings = SettingEngineBuilder::new().build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(audio_media_engine().map_err(neg)?)
            .with_interceptor_registry(super::rtcp_tap::registry())
            .build(Instant::now())
            .map_err(neg)?;
        let (senders, offer_sdp, offer_info) = make_offer(&mut pc, &config.ssrcs, local_addr)?;

        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()?;
        let url = reqwest::Url::parse(whip_url)
            .map_err(|e| WhipClientError::Negotiation(format!("whip url: {e}")))?;
        let resp = http
            .post(url.clone())
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(match config.offer_rewrite {
                Some(rewrite) => rewrite(offer_sdp),
                None => offer_sdp,
            })
            .send()
            .await?;
        let status = resp.status();
        if status.as_u16() != 201 {
            let body: String = resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect();
            return Err(WhipClientError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or(WhipClientError::NoLocation)?;
        let answer_sdp = resp.text().await?;
        let answer = RTCSessionDescription::answer(answer_sdp).map_err(neg)?;
        pc.set_remote_description(Instant::now(), answer)
            .map_err(neg)?;

        let (cmd_tx, cmd_rx) = mpsc::channel(config.queue.max(1));
        let (state_tx, state_rx) = watch::channel(ClientState::Connecting);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let stats = Arc::new(ClientStats::default());
        let driver = ClientDriver {
            pc,
            socket,
            local_addr,
            senders,
            opus_pt: offer_info.opus_payload_type,
            audio_level_id: offer_info.audio_level_id,
            state: state_tx,
            inbound: inbound_tx,
            stats: Arc::clone(&stats),
            peer: None,
            last_srtp: None,
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        Ok(Self {
            http,
            resource: location,
            token: token.to_owned(),
            cmd: cmd_tx,
            state: state_rx,
            inbound: inbound_rx,
            task: Some(task),
            offer: offer_info,
            local_addr,
            stats,
        })
    }

    /// Waits until ICE and DTLS are up.
    ///
    /// # Errors
    /// [`WhipClientError::Timeout`] after `timeout`; [`WhipClientError::Closed`] if the session
    /// failed.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), WhipClientError> {
        let wait = self.state.wait_for(|s| *s != ClientState::Connecting);
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(WhipClientError::Timeout),
            Ok(Err(_)) => Err(WhipClientError::Closed),
            Ok(Ok(s)) if *s == ClientState::Connected => Ok(()),
            Ok(Ok(_)) => Err(WhipClientError::Closed),
        }
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        *self.state.borrow()
    }

    /// Queues one RTP packet.
    ///
    /// # Errors
    /// [`WhipClientError::QueueFull`] when the queue is full, [`WhipClientError::Closed`] when
    /// the session ended.
    pub fn send_rtp(&self, packet: OutboundRtp) -> Result<(), WhipClientError> {
        self.cmd
            .try_send(ClientCmd::Rtp(packet))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WhipClientError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => WhipClientError::Closed,
            })
    }

    /// Fault injection: sends `datagram` as is from this session's socket to the server.
    ///
    /// # Errors
    /// As [`WhipClientSession::send_rtp`].
    pub fn send_raw_datagram(&self, datagram: Bytes) -> Result<(), WhipClientError> {
        self.command(ClientCmd::Raw(datagram))
    }

    /// Fault injection: sends the last SRTP datagram again `times` times (a replay attack).
    ///
    /// # Errors
    /// As [`WhipClientSession::send_rtp`].
    pub fn replay_last_rtp(&self, times: usize) -> Result<(), WhipClientError> {
        self.command(ClientCmd::ReplayLast(times))
    }

    fn command(&self, cmd: ClientCmd) -> Result<(), WhipClientError> {
        self.cmd.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WhipClientError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => WhipClientError::Closed,
        })
    }

    /// Waits for the next RTP packet the server sent (the bot's audio); `None` once the
    /// session is closed. Packets not taken are dropped beyond 4,096 and counted.
    pub async fn recv_rtp(&mut self) -> Option<ReceivedRtp> {
        self.inbound.recv().await
    }

    /// The next received RTP packet if one is queued.
    pub fn try_recv_rtp(&mut self) -> Option<ReceivedRtp> {
        self.inbound.try_recv().ok()
    }

    /// Negotiated Opus payload type.
    pub fn opus_payload_type(&self) -> u8 {
        self.offer.opus_payload_type
    }

    /// Negotiated telephone-event payload type, if any.
    pub fn telephone_event_payload_type(&self) -> Option<u8> {
        self.offer.telephone_event_payload_type
    }

    /// The WHIP session resource URL (from `Location`).
    pub fn resource_url(&self) -> &str {
        self.resource.as_str()
    }

    /// The client's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Stops media and `DELETE`s the WHIP resource; returns the DELETE status.
    ///
    /// # Errors
    /// [`WhipClientError::Http`] when the DELETE cannot be sent.
    pub async fn close(mut self) -> Result<u16, WhipClientError> {
        let _ = self.cmd.send(ClientCmd::Close).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let resp = self
            .http
            .delete(self.resource.clone())
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    /// A `Ssrc` list helper for tests and the emulator.
    pub fn ssrcs_of(config: &WhipClientConfig) -> Vec<Ssrc> {
        config.ssrcs.iter().copied().map(Ssrc).collect()
    }
}

impl Drop for WhipClientSession {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct ClientDriver {
    pc: rtc::peer_connection::RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    senders: HashMap<u32, RTCRtpSenderId>,
    opus_pt: u8,
    audio_level_id: Option<u8>,
    state: watch::Sender<ClientState>,
    inbound: mpsc::Sender<ReceivedRtp>,
    stats: Arc<ClientStats>,
    /// Where the stack last sent to (the server), for fault injection.
    peer: Option<SocketAddr>,
    /// The last SRTP datagram sent, for replay tests.
    last_srtp: Option<Bytes>,
}

impl ClientDriver {
    async fn run(mut self, mut cmds: mpsc::Receiver<ClientCmd>) {
        let mut buf = vec![0u8; 2048];
        loop {
            self.pump();
            if matches!(*self.state.borrow(), ClientState::Failed) {
                break;
            }
            let deadline = self
                .pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(ClientCmd::Rtp(p)) => self.write_rtp(p),
                    Some(ClientCmd::Raw(b)) => {
                        if let Some(to) = self.peer {
                            let _ = self.socket.try_send_to(&b, to);
                        }
                    }
                    Some(ClientCmd::ReplayLast(times)) => {
                        if let (Some(to), Some(last)) = (self.peer, self.last_srtp.as_ref()) {
                            for _ in 0..times {
                                let _ = self.socket.try_send_to(last, to);
                            }
                        }
                    }
                    Some(ClientCmd::Close) | None => break,
                },
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                        let _ = self.pc.handle_read(TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr: self.local_addr,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: BytesMut::from(&buf[..n]),
                        });
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let _ = self.pc.handle_timeout(Instant::now());
                }
            }
        }
        let _ = self.pc.close();
        self.pump();
        let _ = self.state.send(ClientState::Closed);
    }

    fn write_rtp(&mut self, p: OutboundRtp) {
        let Some(sender_id) = self.senders.get(&p.ssrc).copied() else {
            self.stats.rtp_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut header = rtc::rtp::header::Header {
            version: 2,
            marker: p.marker,
            payload_type: p.payload_type.unwrap_or(self.opus_pt),
            sequence_number: p.sequence,
            timestamp: p.timestamp,
            ssrc: p.ssrc,
            ..Default::default()
        };
        if let (Some(level), Some(id)) = (p.audio_level, self.audio_level_id) {
            let byte = (level.level_dbov & 0x7f) | if level.voice { 0x80 } else { 0 };
            if header
                .set_extension(id, Bytes::copy_from_slice(&[byte]))
                .is_err()
            {
                self.stats.rtp_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let packet = rtc::rtp::packet::Packet {
            header,
            payload: p.payload,
        };
        let ok = self
            .pc
            .rtp_sender(sender_id)
            .map(|mut s| s.write_rtp(Instant::now(), packet).is_ok())
            .unwrap_or(false);
        let counter = if ok {
            &self.stats.rtp_sent
        } else {
            &self.stats.rtp_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn pump(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            self.peer = Some(out.transport.peer_addr);
            if super::packet::classify(&out.message) == super::packet::DatagramKind::Rtp {
                self.last_srtp = Some(Bytes::copy_from_slice(&out.message));
            }
            if self
                .socket
                .try_send_to(&out.message, out.transport.peer_addr)
                .is_ok()
            {
                self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                let mapped = match s {
                    RTCPeerConnectionState::Connected => Some(ClientState::Connected),
                    RTCPeerConnectionState::Failed => Some(ClientState::Failed),
                    RTCPeerConnectionState::Closed => Some(ClientState::Closed),
                    _ => None,
                };
                if let Some(m) = mapped {
                    let _ = self.state.send(m);
                }
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, p) => {
                    self.stats.rtp_received.fetch_add(1, Ordering::Relaxed);
                    let r = ReceivedRtp {
                        received_at: msg.now,
                        ssrc: p.header.ssrc,
                        sequence: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        payload_type: p.header.payload_type,
                        marker: p.header.marker,
                        payload: p.payload,
                    };
                    if self.inbound.try_send(r).is_err() {
                        self.stats
                            .rtp_received_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                RTCMessage::RtcpPacket(_, pkts) => {
                    let srs = pkts
                        .iter()
                        .filter(|p| {
                            p.as_any()
                                .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                                .is_some()
                        })
                        .count();
                    self.stats
                        .sender_reports
                        .fetch_add(srs as u64, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
}

/// The offer side shared by [`WhipClientSession`] and `WhipClientPeer`: one Opus track per SSRC,
/// codec preferences that also offer telephone-event (DTMF), a host candidate at `local_addr`,
/// the local description set. Returns the senders by SSRC, the offer SDP and what it says.
pub(crate) fn make_offer(
    pc: &mut rtc::peer_connection::RTCPeerConnection,
    ssrcs: &[u32],
    local_addr: SocketAddr,
) -> Result<(HashMap<u32, RTCRtpSenderId>, String, sdp::OfferAudio), WhipClientError> {
    let neg = |e: rtc::shared::error::Error| WhipClientError::Negotiation(e.to_string());
    let mut senders: HashMap<u32, RTCRtpSenderId> = HashMap::new();
    for (i, ssrc) in ssrcs.iter().copied().enumerate() {
        let track = opus_track(ssrc, &format!("mediabot-{i}"));
        senders.insert(ssrc, pc.add_track(track).map_err(neg)?);
    }
    // add_track narrows each transceiver to the track's one codec; offer telephone-event
    // too, so DTMF can be sent on the same stream.
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    for t in transceivers {
        if let Some(mut t) = pc.rtp_transceiver(t) {
            t.set_codec_preferences(audio_codecs()).map_err(neg)?;
        }
    }
    pc.add_local_candidate(host_candidate(local_addr).map_err(neg)?)
        .map_err(neg)?;
    let offer = pc.create_offer(None).map_err(neg)?;
    pc.set_local_description(Instant::now(), offer)
        .map_err(neg)?;
    let offer_sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| WhipClientError::Negotiation("no local description".into()))?;
    let offer_info = sdp::inspect_offer(&offer_sdp)
        .map_err(|e| WhipClientError::Negotiation(format!("own offer: {e}")))?;
    Ok((senders, offer_sdp, offer_info))
}
