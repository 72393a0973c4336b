//! A session's own DTLS-SRTP media plane: the "direct" path.
//!
//! On the stack path every media datagram runs through the whole `RTCPeerConnection`
//! pipeline (demuxer, ICE, DTLS, SRTP, the interceptor chain, the endpoint's track lookup),
//! each stage moving the message through its own queue: a load-test profile put that at
//! ~10 % of a core at 200 streams, beside ~2.5 % of copies. Here the peer connection keeps SDP
//! and ICE only. The DTLS handshake, SRTP and SRTCP in both directions and the RTCP reports run
//! in this module, with the same crates the stack uses (`rtc::dtls`, `rtc::srtp`,
//! `rtc::rtcp`), so an inbound packet costs one header parse, one decrypt and a call.
//!
//! The DTLS role is the one our answer states (RFC 5763): `a=setup:active` (the stack's
//! default answer to an `actpass` offer) makes us the client, which sends its `ClientHello` as
//! soon as ICE connects; `a=setup:passive` the server, which waits for the peer's. The peer's
//! certificate must match a SHA-256 fingerprint from its offer (RFC 8122), and the SRTP keys
//! come from the DTLS exporter (RFC 5764).
//!
//! Reports: once a second, a receiver report block per inbound SSRC (RFC 3550 §6.4.1, A.3,
//! A.8: highest sequence, cumulative and fractional loss, interarrival jitter, LSR/DLSR), in a
//! sender report when the bot sends audio on the session, else in a receiver report.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::rtcp::packet::Packet as RtcpPacket;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use rtc::shared::TransportProtocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// How often reports go out.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Replay windows (packets), as the stack uses.
const SRTP_REPLAY_WINDOW: usize = 64;
const SRTCP_REPLAY_WINDOW: usize = 64;
/// Most report blocks in one report (the RTCP header's 5-bit count).
const MAX_REPORT_BLOCKS: usize = 31;
/// RTP clock of Opus (RFC 7587).
const CLOCK_RATE: f64 = 48_000.0;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Datagrams queued for the peer before further ones are dropped (DTLS flights are a few
/// records; reports one per second).
const MAX_QUEUED: usize = 64;

/// The one key the DTLS endpoint files the association under: the association follows the
/// session, not an address (the peer's address may change under ICE), so datagrams from any
/// of the session's ICE-checked addresses reach the same association.
const ASSOCIATION: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9));

/// SRTP protection profiles offered, in order of preference.
const PROFILES: [SrtpProtectionProfile; 3] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

/// What a DTLS datagram led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DtlsOutcome {
    /// Handshake in progress (or a retransmission handled).
    Progress,
    /// The handshake completed and the SRTP keys are in place: media may flow.
    Connected,
    /// The peer closed the association (`close_notify`).
    Closed,
}

/// Builds the DTLS configuration for one session: our certificate, the SRTP profiles, the
/// peer's certificate required (as a server: a client certificate) and checked against the
/// offer's SHA-256 fingerprints.
///
/// # Errors
/// When the offer has no SHA-256 fingerprint (the caller then keeps the stack path, which
/// reports the same), or the DTLS crate rejects the configuration.
pub(crate) fn handshake_config(
    certificate: &rtc::peer_connection::certificate::RTCCertificate,
    fingerprints: &[(String, String)],
    crypto: &Arc<dyn RTCCryptoProvider>,
    is_client: bool,
) -> Result<Arc<HandshakeConfig>, Error> {
    let wanted: Vec<String> = fingerprints
        .iter()
        .filter(|(hash, _)| hash == "sha-256")
        .map(|(_, hex)| hex.clone())
        .collect();
    if wanted.is_empty() {
        return Err(Error::ErrUnsupportedFingerprintAlgorithm);
    }
    let hasher = crypto.clone();
    let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _chains| {
        let leaf = certs.first().ok_or(Error::ErrNonCertificate)?;
        let digest = hasher
            .crypto()
            .hash(HashAlgorithm::Sha256, leaf)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let hex = colon_hex(&digest);
        if wanted.contains(&hex) {
            Ok(())
        } else {
            Err(Error::ErrNoMatchingCertificateFingerprint)
        }
    });
    let config = ConfigBuilder::default()
        .with_crypto_provider(crypto.clone())
        .with_certificates(vec![certificate.dtls_certificate.clone()])
        .with_srtp_protection_profiles(PROFILES.to_vec())
        .with_client_auth(ClientAuthType::RequireAnyClientCert)
        // Self-signed certificates: the fingerprint check above is the verification.
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(verify))
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .build(is_client, None)?;
    Ok(Arc::new(config))
}

/// Lower-case hex with colons, as SDP fingerprints are written.
fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reception statistics of one inbound SSRC (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
pub(crate) struct Reception {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    /// Sequence cycles, shifted (count << 16).
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Last relative transit time, in RTP units.
    transit: Option<i64>,
    /// Interarrival jitter estimate, in RTP units.
    jitter: f64,
    /// Middle 32 bits of the last sender report's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl Reception {
    fn new(ssrc: u32, seq: u16) -> Self {
        Self {
            ssrc,
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            last_sr: None,
        }
    }

    /// Counts one authenticated packet: sequence (with wrap), count, jitter. `arrival_rtp` is
    /// the arrival time in RTP units on any fixed origin.
    pub(crate) fn packet(&mut self, seq: u16, timestamp: u32, arrival_rtp: i64) {
        let delta = seq.wrapping_sub(self.max_seq);
        if delta != 0 && delta < 0x8000 {
            // Forward (in order, or after a gap): a smaller number means the counter wrapped.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        }
        self.received = self.received.wrapping_add(1);
        let transit = arrival_rtp - i64::from(timestamp);
        if let Some(prev) = self.transit {
            // Wrapped difference of two 32-bit clocks.
            let d = (transit - prev) as i32;
            let d = f64::from(d.unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// The report block as of `now`; advances the interval counters (fraction lost is per
    /// report interval).
    pub(crate) fn report(&mut self, now: Instant) -> ReceptionReport {
        let extended = self.extended_max();
        let expected = extended.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let total_lost = lost.clamp(0, 0x7F_FFFF) as u32;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => {
                let since = now.saturating_duration_since(at).as_secs_f64();
                (lsr, (since * 65_536.0).min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost,
            last_sequence_number: extended,
            jitter: self.jitter as u32,
            last_sender_report,
            delay,
        }
    }
}

/// What the bot sent on the session, for its sender reports.
#[derive(Debug, Clone, Copy)]
struct Sending {
    ssrc: u32,
    packets: u32,
    octets: u32,
    /// RTP timestamp of the last packet sent and when.
    last: Option<(u32, Instant)>,
}

/// The session's DTLS association, SRTP contexts and report state.
pub(crate) struct DirectMedia {
    endpoint: Endpoint,
    /// As the DTLS client: the configuration until [`Self::start_client`] uses it.
    client: Option<Arc<HandshakeConfig>>,
    crypto: Arc<dyn RTCCryptoProvider>,
    /// (outbound, inbound) SRTP contexts, once the handshake completed.
    srtp: Option<(Context, Context)>,
    /// Where the peer is: the source of its last DTLS record or authenticated packet.
    peer: Option<SocketAddr>,
    /// Datagrams for the peer (DTLS flights, SRTCP reports).
    out: VecDeque<BytesMut>,
    /// Datagrams dropped because `out` was full.
    dropped: u64,
    receptions: Vec<Reception>,
    sending: Option<Sending>,
    /// Sender SSRC of receiver reports when the bot does not send.
    report_ssrc: u32,
    next_report: Option<Instant>,
    /// Origin of arrival times in RTP units (jitter).
    epoch: Instant,
}

impl std::fmt::Debug for DirectMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectMedia")
            .field("keyed", &self.srtp.is_some())
            .field("peer", &self.peer)
            .field("receptions", &self.receptions.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl DirectMedia {
    /// A media plane before its handshake: as the server it waits for the peer's
    /// `ClientHello`, as the client for [`Self::start_client`]. `send_ssrc` is the bot's
    /// outbound SSRC when it sends audio on the session; `report_ssrc` signs receiver reports
    /// otherwise.
    pub(crate) fn new(
        config: Arc<HandshakeConfig>,
        is_client: bool,
        crypto: Arc<dyn RTCCryptoProvider>,
        send_ssrc: Option<u32>,
        report_ssrc: u32,
        now: Instant,
    ) -> Self {
        let server = (!is_client).then(|| Arc::clone(&config));
        Self {
            endpoint: Endpoint::new(ASSOCIATION, TransportProtocol::UDP, server),
            client: is_client.then_some(config),
            crypto,
            srtp: None,
            peer: None,
            out: VecDeque::new(),
            dropped: 0,
            receptions: Vec::new(),
            sending: send_ssrc.map(|ssrc| Sending {
                ssrc,
                packets: 0,
                octets: 0,
                last: None,
            }),
            report_ssrc,
            next_report: None,
            epoch: now,
        }
    }

    /// As the DTLS client, starts the handshake towards `peer` (the address that passed ICE);
    /// `false` when there is nothing to start (the server role, or already started).
    ///
    /// # Errors
    /// The DTLS crate refused to start the association.
    pub(crate) fn start_client(&mut self, peer: SocketAddr, now: Instant) -> Result<bool, Error> {
        let Some(config) = self.client.take() else {
            return Ok(false);
        };
        self.peer = Some(peer);
        let started = self.endpoint.connect(now, ASSOCIATION, config, None);
        self.collect_transmits();
        started.map(|()| true)
    }

    /// Whether SRTP keys are in place.
    pub(crate) fn is_keyed(&self) -> bool {
        self.srtp.is_some()
    }

    /// Where datagrams for the peer go.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Takes the next datagram for the peer.
    pub(crate) fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.out.pop_front()
    }

    fn queue(&mut self, datagram: BytesMut) {
        if self.out.len() >= MAX_QUEUED {
            self.dropped += 1;
        } else {
            self.out.push_back(datagram);
        }
    }

    fn collect_transmits(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.queue(t.message);
        }
    }

    /// Handles one DTLS datagram from `from`.
    ///
    /// # Errors
    /// The DTLS error (a bad record, a failed handshake step, a certificate that matches no
    /// fingerprint); whatever the association queued in reply (an alert) is still sent.
    pub(crate) fn handle_dtls(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<DtlsOutcome, Error> {
        self.peer = Some(from);
        let result = self
            .endpoint
            .read(now, ASSOCIATION, None, BytesMut::from(data));
        self.collect_transmits();
        let mut outcome = DtlsOutcome::Progress;
        for event in result? {
            match event {
                EndpointEvent::HandshakeComplete => {
                    // A later handshake (the peer closed its association and started a new
                    // one) re-keys: its SRTP follows the new keys, reception state stays.
                    let first = self.srtp.is_none();
                    self.srtp = Some(self.keys()?);
                    if first {
                        self.next_report = Some(now + REPORT_INTERVAL);
                        outcome = DtlsOutcome::Connected;
                    }
                }
                EndpointEvent::PeerClosed => return Ok(DtlsOutcome::Closed),
                // Data channels are not negotiated; application data is ignored.
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// Derives both SRTP contexts from the completed handshake (RFC 5764 §4.2).
    fn keys(&self) -> Result<(Context, Context), Error> {
        let state = self
            .endpoint
            .get_connection_state(ASSOCIATION)
            .ok_or(Error::ErrDtlsTransportNotStarted)?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            _ => return Err(Error::ErrNoSuchSrtpProfile),
        };
        let mut config = rtc::srtp::config::Config {
            profile,
            ..Default::default()
        };
        let material = state.export_keying_material(
            rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
            &[],
            config.keying_material_len(),
        )?;
        config.set_session_keys_from_keying_material(material.as_ref(), state.is_client())?;
        let crypto = self.crypto.crypto();
        let local = Context::new(
            &config.keys.local_master_key,
            &config.keys.local_master_salt,
            profile,
            None,
            None,
            crypto,
        )?;
        let remote = Context::new(
            &config.keys.remote_master_key,
            &config.keys.remote_master_salt,
            profile,
            Some(rtc::srtp::option::srtp_replay_protection(
                SRTP_REPLAY_WINDOW,
            )),
            Some(rtc::srtp::option::srtcp_replay_protection(
                SRTCP_REPLAY_WINDOW,
            )),
            crypto,
        )?;
        Ok((local, remote))
    }

    /// Authenticates and decrypts one SRTP packet from `from`; returns its header and the
    /// plaintext packet (header included: the payload is [`payload`] of it). Counts it for
    /// the reports.
    ///
    /// # Errors
    /// Not keyed yet, a malformed header, a failed authentication, a replay.
    pub(crate) fn decrypt_rtp(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        arrival: Instant,
    ) -> Result<(Header, BytesMut), Error> {
        let Some((_, remote)) = self.srtp.as_mut() else {
            return Err(Error::Other(
                "srtp before the dtls handshake completed".into(),
            ));
        };
        let header = Header::unmarshal(&mut &data[..])?;
        let plain = remote.decrypt_rtp_with_header(data, &header)?;
        self.peer = Some(from);
        let arrival_rtp =
            (arrival.saturating_duration_since(self.epoch).as_secs_f64() * CLOCK_RATE) as i64;
        let idx = match self.receptions.iter().position(|r| r.ssrc == header.ssrc) {
            Some(i) => i,
            None => {
                self.receptions
                    .push(Reception::new(header.ssrc, header.sequence_number));
                self.receptions.len() - 1
            }
        };
        self.receptions[idx].packet(header.sequence_number, header.timestamp, arrival_rtp);
        Ok((header, plain))
    }

    /// Authenticates and decrypts one SRTCP compound from `from`; sender reports are noted for
    /// the LSR/DLSR of our reports.
    ///
    /// # Errors
    /// Not keyed yet, a failed authentication, a replay, a malformed compound.
    pub(crate) fn decrypt_rtcp(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<Vec<Box<dyn RtcpPacket>>, Error> {
        let Some((_, remote)) = self.srtp.as_mut() else {
            return Err(Error::Other(
                "srtcp before the dtls handshake completed".into(),
            ));
        };
        let plain = remote.decrypt_rtcp(data)?;
        let packets = rtc::rtcp::packet::unmarshal(&mut &plain[..])?;
        self.peer = Some(from);
        for p in &packets {
            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>()
                && let Some(r) = self.receptions.iter_mut().find(|r| r.ssrc == sr.ssrc)
            {
                r.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
            }
        }
        Ok(packets)
    }

    /// Protects one outbound RTP packet; returns the datagram.
    ///
    /// # Errors
    /// Not keyed yet, or the SRTP context refused (key exhausted).
    pub(crate) fn protect_rtp(
        &mut self,
        header: &Header,
        payload: &[u8],
        now: Instant,
    ) -> Result<BytesMut, Error> {
        let Some((local, _)) = self.srtp.as_mut() else {
            return Err(Error::Other(
                "srtp before the dtls handshake completed".into(),
            ));
        };
        let mut plain = BytesMut::with_capacity(header.marshal_size() + payload.len());
        plain.resize(header.marshal_size(), 0);
        header.marshal_to(&mut plain[..])?;
        plain.extend_from_slice(payload);
        let protected = local.encrypt_rtp_with_header(&plain, header)?;
        if let Some(s) = self.sending.as_mut() {
            s.packets = s.packets.wrapping_add(1);
            s.octets = s.octets.wrapping_add(payload.len() as u32);
            s.last = Some((header.timestamp, now));
        }
        Ok(protected)
    }

    /// When [`Self::handle_timeout`] is next needed: a DTLS retransmission or a report.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let dtls = self.endpoint.poll_timeout(&ASSOCIATION);
        super::timer::earliest(dtls, self.next_report)
    }

    /// Runs what is due: DTLS retransmissions, the periodic report. Output is queued for
    /// [`Self::poll_transmit`].
    ///
    /// # Errors
    /// The handshake ran out of retransmissions, or a report could not be built.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let dtls = if self
            .endpoint
            .poll_timeout(&ASSOCIATION)
            .is_some_and(|t| t <= now)
        {
            let r = self.endpoint.handle_timeout(ASSOCIATION, now);
            self.collect_transmits();
            r
        } else {
            Ok(())
        };
        if self.next_report.is_some_and(|t| t <= now) {
            // The next report a whole interval on, skipping any missed while starved.
            let mut next = self.next_report.unwrap_or(now) + REPORT_INTERVAL;
            if next <= now {
                next = now + REPORT_INTERVAL;
            }
            self.next_report = Some(next);
            if let Some(datagram) = self.report(now, SystemTime::now())? {
                self.queue(datagram);
            }
        }
        dtls
    }

    /// The protected report for `now` (`None` when there is nothing to report yet).
    fn report(&mut self, now: Instant, wall: SystemTime) -> Result<Option<BytesMut>, Error> {
        let blocks: Vec<ReceptionReport> = self
            .receptions
            .iter_mut()
            .take(MAX_REPORT_BLOCKS)
            .map(|r| r.report(now))
            .collect();
        let packet: Box<dyn RtcpPacket> = match self.sending {
            Some(s) if s.packets > 0 => {
                let rtp_time = match s.last {
                    Some((ts, at)) => ts.wrapping_add(
                        (now.saturating_duration_since(at).as_secs_f64() * CLOCK_RATE) as u32,
                    ),
                    None => 0,
                };
                Box::new(SenderReport {
                    ssrc: s.ssrc,
                    ntp_time: ntp(wall),
                    rtp_time,
                    packet_count: s.packets,
                    octet_count: s.octets,
                    reports: blocks,
                    ..Default::default()
                })
            }
            _ if blocks.is_empty() => return Ok(None),
            _ => Box::new(ReceiverReport {
                ssrc: self.sending.map_or(self.report_ssrc, |s| s.ssrc),
                reports: blocks,
                ..Default::default()
            }),
        };
        let Some((local, _)) = self.srtp.as_mut() else {
            return Ok(None);
        };
        let plain = rtc::rtcp::packet::marshal(&[packet])?;
        Ok(Some(local.encrypt_rtcp(&plain)?))
    }

    /// Starts closing the association (`close_notify` queued for the peer).
    pub(crate) fn close(&mut self, now: Instant) {
        let _ = self.endpoint.stop(now, ASSOCIATION);
        self.collect_transmits();
    }
}

/// The payload of a plaintext RTP packet: after the header, before any padding (RFC 3550
/// §5.1). `None` when the padding count does not fit.
pub(crate) fn payload<'a>(header: &Header, plain: &'a [u8]) -> Option<&'a [u8]> {
    let start = header.marshal_size();
    let mut end = plain.len();
    if header.padding {
        let pad = usize::from(*plain.last()?);
        if pad == 0 || pad > end.saturating_sub(start) {
            return None;
        }
        end -= pad;
    }
    plain.get(start..end)
}

/// A wall-clock instant as a 64-bit NTP timestamp (RFC 3550 §4).
fn ntp(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reception_counts_loss_across_the_sequence_wrap() {
        let t0 = Instant::now();
        let mut r = Reception::new(7, 65_530);
        // 65530..=65535 and 0..=9, with 65533 and 4 missing: 16 expected, 14 received.
        let seqs = (65_530u16..=65_535)
            .chain(0..=9)
            .filter(|s| *s != 65_533 && *s != 4);
        for (i, s) in seqs.enumerate() {
            r.packet(s, i as u32 * 960, i as i64 * 960);
        }
        let rep = r.report(t0);
        assert_eq!(rep.ssrc, 7);
        assert_eq!(rep.last_sequence_number, (1 << 16) + 9);
        assert_eq!(rep.total_lost, 2);
        assert_eq!(rep.fraction_lost, (2 * 256 / 16) as u8);
        // Next interval: nothing lost, fraction back to zero, total kept.
        r.packet(10, 20 * 960, 20 * 960);
        let rep = r.report(t0);
        assert_eq!(rep.fraction_lost, 0);
        assert_eq!(rep.total_lost, 2);
    }

    #[test]
    fn late_and_duplicate_packets_do_not_move_the_highest_sequence() {
        let mut r = Reception::new(1, 100);
        r.packet(100, 0, 0);
        r.packet(102, 1920, 1920);
        r.packet(101, 960, 960); // late
        r.packet(102, 1920, 1920); // duplicate
        let rep = r.report(Instant::now());
        assert_eq!(rep.last_sequence_number, 102);
        // 3 expected, 4 received (a duplicate): loss never goes negative.
        assert_eq!(rep.total_lost, 0);
        assert_eq!(rep.fraction_lost, 0);
    }

    #[test]
    fn jitter_follows_the_transit_variation() {
        let mut r = Reception::new(1, 0);
        // Perfectly paced: zero jitter.
        for i in 0..50u16 {
            r.packet(i, u32::from(i) * 960, i64::from(i) * 960);
        }
        assert_eq!(r.report(Instant::now()).jitter, 0);
        // Alternating 480 units (10 ms) early/late: converges towards 960 (|D| = 960).
        for i in 50..400u16 {
            let wobble = if i % 2 == 0 { 480 } else { -480 };
            r.packet(i, u32::from(i) * 960, i64::from(i) * 960 + wobble);
        }
        let j = r.report(Instant::now()).jitter;
        assert!((900..=960).contains(&j), "jitter {j}");
    }

    #[test]
    fn dlsr_counts_from_the_sender_report_arrival() {
        let t0 = Instant::now();
        let mut r = Reception::new(1, 0);
        r.packet(0, 0, 0);
        r.last_sr = Some((0x1234_5678, t0));
        let rep = r.report(t0 + Duration::from_millis(500));
        assert_eq!(rep.last_sender_report, 0x1234_5678);
        assert_eq!(rep.delay, 32_768);
    }

    #[test]
    fn payload_strips_padding_and_refuses_bad_counts() {
        let header = Header {
            version: 2,
            padding: true,
            ..Default::default()
        };
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[1, 2, 3, 0, 0, 3]);
        assert_eq!(payload(&header, &p), Some(&[1u8, 2, 3][..]));
        *p.last_mut().unwrap() = 0;
        assert_eq!(payload(&header, &p), None);
        *p.last_mut().unwrap() = 9;
        assert_eq!(payload(&header, &p), None);
        let plain = Header {
            version: 2,
            ..Default::default()
        };
        assert_eq!(payload(&plain, &p[..14]), Some(&[1u8, 2][..]));
    }

    #[test]
    fn ntp_time_of_the_unix_epoch() {
        assert_eq!(ntp(UNIX_EPOCH) >> 32, NTP_UNIX_OFFSET);
        let half = UNIX_EPOCH + Duration::from_millis(500);
        assert_eq!(ntp(half) & 0xFFFF_FFFF, 1 << 31);
    }

    fn certificate() -> rtc::peer_connection::certificate::RTCCertificate {
        let provider = rtc::crypto::default_provider().unwrap();
        let params =
            rtc::peer_connection::certificate::CertificateParams::new(vec!["t".into()]).unwrap();
        rtc::peer_connection::certificate::RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .unwrap()
    }

    fn plane(
        ours: &rtc::peer_connection::certificate::RTCCertificate,
        theirs: &rtc::peer_connection::certificate::RTCCertificate,
        is_client: bool,
        now: Instant,
    ) -> DirectMedia {
        let crypto = rtc::crypto::default_provider().unwrap();
        let fp: Vec<(String, String)> = theirs
            .get_fingerprints(crypto.crypto())
            .unwrap()
            .into_iter()
            .map(|f| (f.algorithm, f.value))
            .collect();
        let config = handshake_config(ours, &fp, &crypto, is_client).unwrap();
        DirectMedia::new(config, is_client, crypto, Some(1), 2, now)
    }

    /// Moves datagrams both ways until neither side has any; returns the server's outcomes.
    fn shuttle(c: &mut DirectMedia, s: &mut DirectMedia, now: Instant) -> Vec<DtlsOutcome> {
        let (ca, sa): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:2000".parse().unwrap(),
        );
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let mut moved = false;
            while let Some(d) = c.poll_transmit() {
                outcomes.push(s.handle_dtls(&d, ca, now).unwrap());
                moved = true;
            }
            while let Some(d) = s.poll_transmit() {
                // A closed client has no association left for the bot's close_notify reply.
                let _ = c.handle_dtls(&d, sa, now);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        outcomes
    }

    fn rtp(seq: u16) -> Header {
        Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc: 7,
            ..Default::default()
        }
    }

    #[test]
    fn handshake_keys_both_sides_and_a_new_association_rekeys() {
        let now = Instant::now();
        let (bot_cert, peer_cert) = (certificate(), certificate());
        let mut bot = plane(&bot_cert, &peer_cert, false, now);
        let peer_addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut peer = plane(&peer_cert, &bot_cert, true, now);
        assert!(peer.start_client(peer_addr, now).unwrap());
        let outcomes = shuttle(&mut peer, &mut bot, now);
        assert!(outcomes.contains(&DtlsOutcome::Connected), "{outcomes:?}");
        assert!(bot.is_keyed() && peer.is_keyed());
        let sent = peer.protect_rtp(&rtp(1), b"hello", now).unwrap();
        let (h, plain) = bot.decrypt_rtp(&sent, peer_addr, now).unwrap();
        assert_eq!(payload(&h, &plain), Some(&b"hello"[..]));

        // The peer closes its association and a new one (new keys) takes its place.
        peer.close(now);
        let outcomes = shuttle(&mut peer, &mut bot, now);
        assert!(outcomes.contains(&DtlsOutcome::Closed), "{outcomes:?}");
        let mut peer2 = plane(&peer_cert, &bot_cert, true, now);
        assert!(peer2.start_client(peer_addr, now).unwrap());
        let outcomes = shuttle(&mut peer2, &mut bot, now);
        assert!(
            !outcomes.contains(&DtlsOutcome::Connected),
            "connected once only"
        );
        let sent = peer2.protect_rtp(&rtp(2), b"again", now).unwrap();
        let (h, plain) = bot.decrypt_rtp(&sent, peer_addr, now).unwrap();
        assert_eq!(payload(&h, &plain), Some(&b"again"[..]));
    }

    #[test]
    fn a_peer_certificate_off_the_offer_never_keys() {
        let now = Instant::now();
        let (bot_cert, peer_cert, other) = (certificate(), certificate(), certificate());
        // The bot expects `other`'s fingerprint; the peer presents its own certificate.
        let mut bot = plane(&bot_cert, &other, false, now);
        let mut peer = plane(&peer_cert, &bot_cert, true, now);
        peer.start_client("127.0.0.1:1000".parse().unwrap(), now)
            .unwrap();
        let ca: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let sa: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut refused = false;
        for _ in 0..20 {
            while let Some(d) = peer.poll_transmit() {
                refused |= bot.handle_dtls(&d, ca, now).is_err();
            }
            while let Some(d) = bot.poll_transmit() {
                let _ = peer.handle_dtls(&d, sa, now);
            }
        }
        assert!(refused, "the handshake failed on the bot's side");
        assert!(!bot.is_keyed());
    }

    #[test]
    fn fingerprints_are_written_as_sdp_writes_them() {
        assert_eq!(colon_hex(&[0xab, 0x01, 0xff]), "ab:01:ff");
    }
}
