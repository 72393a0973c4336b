//! A WHIP client peer without a task or socket of its own: the caller owns the UDP socket,
//! feeds it datagrams and timeouts, and takes the datagrams to send into its own buffers.
//!
//! [`super::client::WhipClientSession`] runs one tokio task per session and takes RTP through a
//! channel: right for tests and the emulator's speakers, too dear for a load generator that
//! sends tens of thousands of packets a second from one core (a channel hop and a task wake-up
//! per packet). With [`WhipClientPeer`] one pacer thread writes every session's RTP directly,
//! collects the protected datagrams in reusable buffers and hands them to the kernel in batches
//! (`sendmmsg`), while a light task per session keeps ICE, DTLS and RTCP going.
//!
//! Same negotiation as `WhipClientSession::connect`: one Opus track per SSRC, telephone-event
//! offered, a host candidate at the caller's socket address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::client::{ClientState, WhipClientError};
use super::server::audio_media_engine;

/// Pacing of ICE connectivity checks: RFC 8445's Ta (50 ms), as browsers pace them. The
/// stack's default (200 ms) would add up to 200 ms to every session's setup, since the
/// controlling side nominates the pair on the check after the first success.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A negotiated WHIP client peer driven by its caller (sans-IO apart from the HTTP exchange).
pub struct WhipClientPeer {
    pc: rtc::peer_connection::RTCPeerConnection,
    local_addr: SocketAddr,
    senders: HashMap<u32, RTCRtpSenderId>,
    opus_pt: u8,
    state: ClientState,
    http: reqwest::Client,
    resource: reqwest::Url,
    token: String,
}

impl std::fmt::Debug for WhipClientPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipClientPeer")
            .field("local_addr", &self.local_addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl WhipClientPeer {
    /// Creates the offer for `ssrcs` with a host candidate at `local_addr` (the caller's bound
    /// UDP socket), `POST`s it to `whip_url` with `token` and applies the answer. ICE and DTLS
    /// then run as the caller feeds [`WhipClientPeer::handle_datagram`] and
    /// [`WhipClientPeer::handle_timeout`] and sends what [`WhipClientPeer::poll_transmit`] gives.
    ///
    /// # Errors
    /// As `WhipClientSession::connect`.
    pub async fn connect(
        whip_url: &str,
        token: &str,
        ssrcs: &[u32],
        local_addr: SocketAddr,
        http_timeout: Duration,
    ) -> Result<Self, WhipClientError> {
        let neg = |e: rtc::shared::error::Error| WhipClientError::Negotiation(e.to_string());
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(shared_certificate())
                    .build(),
            )
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), None)
                    .build(),
            )
            .with_media_engine(audio_media_engine().map_err(neg)?)
            .with_interceptor_registry(super::rtcp_tap::registry())
            .build(Instant::now())
            .map_err(neg)?;
        let (senders, offer_sdp, offer_info) =
            super::client::make_offer(&mut pc, ssrcs, local_addr)?;
        let http = reqwest::Client::builder().timeout(http_timeout).build()?;
        let url = reqwest::Url::parse(whip_url)
            .map_err(|e| WhipClientError::Negotiation(format!("whip url: {e}")))?;
        let resp = http
            .post(url.clone())
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer_sdp)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status != 201 {
            let body: String = resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect();
            return Err(WhipClientError::Status { status, body });
        }
        let resource = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or(WhipClientError::NoLocation)?;
        let answer = RTCSessionDescription::answer(resp.text().await?).map_err(neg)?;
        pc.set_remote_description(Instant::now(), answer)
            .map_err(neg)?;
        let mut peer = Self {
            pc,
            local_addr,
            senders,
            opus_pt: offer_info.opus_payload_type,
            state: ClientState::Connecting,
            http,
            resource,
            token: token.to_owned(),
        };
        // Start ICE now rather than at the caller's first timeout.
        let _ = peer.pc.handle_timeout(Instant::now());
        Ok(peer)
    }

    /// Feeds one datagram read from the caller's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let _ = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
        // Until connected, run the stack's timers once more after each datagram: when a
        // datagram completes ICE the stack's DTLS client queues its ClientHello but sends it
        // only from its next timer run, up to an ICE check interval later (browsers send it
        // at once). Each timer checks its own deadline, so an early run only flushes.
        if self.state == ClientState::Connecting {
            let _ = self.pc.handle_timeout(now);
        }
        self.poll_events();
    }

    /// Runs the stack's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
        self.poll_events();
    }

    /// When [`WhipClientPeer::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Protects and queues one Opus RTP packet on the track `ssrc` (take it with
    /// [`WhipClientPeer::poll_transmit`]).
    ///
    /// # Errors
    /// [`WhipClientError::UnknownSsrc`], or [`WhipClientError::Closed`] when the stack refused
    /// it (not connected, closed).
    pub fn write_opus(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    ) -> Result<(), WhipClientError> {
        let id = *self
            .senders
            .get(&ssrc)
            .ok_or(WhipClientError::UnknownSsrc(ssrc))?;
        let packet = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: self.opus_pt,
                sequence_number: sequence,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload,
        };
        match self.pc.rtp_sender(id).map(|mut s| s.write_rtp(now, packet)) {
            Some(Ok(())) => Ok(()),
            _ => Err(WhipClientError::Closed),
        }
    }

    /// Moves the next datagram to send into `buf` (cleared first) and returns where it goes.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let out = self.pc.poll_write()?;
        buf.clear();
        buf.extend_from_slice(&out.message);
        Some(out.transport.peer_addr)
    }

    /// The connection state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The caller's socket address this peer was negotiated for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the stack (queue its last datagrams with [`WhipClientPeer::poll_transmit`]).
    pub fn close(&mut self) {
        let _ = self.pc.close();
        self.state = ClientState::Closed;
    }

    /// A future that `DELETE`s the WHIP resource (independent of the peer, so it can be awaited
    /// without holding it); resolves to the HTTP status.
    pub fn delete_resource(
        &self,
    ) -> impl std::future::Future<Output = Result<u16, WhipClientError>> + Send + 'static {
        let req = self
            .http
            .delete(self.resource.clone())
            .bearer_auth(&self.token);
        async move { Ok(req.send().await?.status().as_u16()) }
    }

    fn poll_events(&mut self) {
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected => self.state = ClientState::Connected,
                    RTCPeerConnectionState::Failed => self.state = ClientState::Failed,
                    RTCPeerConnectionState::Closed => self.state = ClientState::Closed,
                    _ => {}
                }
            }
        }
        // Inbound RTP/RTCP (the bot's audio, reports) is not needed by a pure sender: drain it.
        while self.pc.poll_read().is_some() {}
    }
}

/// One DTLS certificate for every client peer of the process, made on first use (an ECDSA key
/// per session would cost a key generation on every setup, as the server avoids too). Empty
/// when generation fails: the stack then makes its own per session.
fn shared_certificate() -> Vec<RTCCertificate> {
    static CERT: std::sync::Mutex<Option<RTCCertificate>> = std::sync::Mutex::new(None);
    let Ok(mut slot) = CERT.lock() else {
        return Vec::new();
    };
    if slot.is_none() {
        *slot = rtc::crypto::default_provider().ok().and_then(|provider| {
            let params = CertificateParams::new(vec!["mediabot-client".to_owned()]).ok()?;
            RTCCertificate::generate(
                provider.crypto(),
                rtc::crypto::SignatureScheme::EcdsaP256Sha256,
                params,
            )
            .ok()
        });
    }
    slot.iter().cloned().collect()
}
