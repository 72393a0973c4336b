//! Cheap, allocation-free looks at datagrams before they reach the WebRTC stack: which
//! protocol (RFC 7983), the STUN `USERNAME` (to find the session by ICE ufrag), the clear-text
//! RTP SSRC (to bound streams per session before decryption), and the RFC 6464 / RFC 4733
//! payload parsers used after decryption.

use super::{AudioLevel, TonePhase};

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (ICE connectivity checks).
    Stun,
    /// DTLS record.
    Dtls,
    /// SRTP media.
    Rtp,
    /// SRTCP (RTCP packet types 192..=223, RFC 5761).
    Rtcp,
    /// Anything else: dropped.
    Unknown,
}

/// Classifies a datagram.
pub fn classify(buf: &[u8]) -> DatagramKind {
    match buf.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => match buf.get(1) {
            Some(pt) if (192..=223).contains(pt) => DatagramKind::Rtcp,
            Some(_) => DatagramKind::Rtp,
            None => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local ICE ufrag a STUN binding request is addressed to: the part of `USERNAME` before
/// the colon (RFC 8445 7.2.2). `None` when the message is not STUN or has no usable username.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < 20 || buf[4..8] != STUN_MAGIC {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let end = 20usize.checked_add(body_len)?;
    let body = buf.get(20..end)?;
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == ATTR_USERNAME {
            let text = std::str::from_utf8(value).ok()?;
            return text.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Whether an outgoing datagram is a STUN Binding success response: the ICE agent sends one
/// only after checking the request's MESSAGE-INTEGRITY with our password, so its destination
/// is an address that passed ICE.
pub fn is_stun_binding_success(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] == 0x01 && buf[1] == 0x01 && buf[4..8] == STUN_MAGIC
}

/// The SSRC of an RTP packet (clear text even under SRTP).
pub fn rtp_ssrc(buf: &[u8]) -> Option<u32> {
    let b = buf.get(8..12)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses an RFC 6464 one-byte audio level extension payload.
pub fn parse_audio_level(payload: &[u8]) -> Option<AudioLevel> {
    let b = *payload.first()?;
    Some(AudioLevel {
        level_dbov: b & 0x7f,
        voice: b & 0x80 != 0,
    })
}

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code.
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Volume (-dBm0).
    pub volume: u8,
    /// Duration in timestamp units.
    pub duration: u16,
}

/// Parses an RFC 4733 payload (4 bytes; only the first event block is read).
pub fn parse_telephone_event(payload: &[u8]) -> Option<TelephoneEvent> {
    if payload.len() < 4 {
        return None;
    }
    Some(TelephoneEvent {
        event: payload[0],
        end: payload[1] & 0x80 != 0,
        volume: payload[1] & 0x3f,
        duration: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// Turns the redundant stream of telephone-event packets of one SSRC into one `Start` and one
/// `End` per key press (the sender repeats packets, and repeats the end packet three times).
#[derive(Debug, Default, Clone)]
pub struct ToneTracker {
    current: Option<(u32, bool)>,
}

impl ToneTracker {
    /// Feeds one telephone-event packet with RTP timestamp `ts`; returns the phase to report,
    /// if any.
    pub fn handle(&mut self, ts: u32, ev: &TelephoneEvent) -> Option<TonePhase> {
        match self.current {
            Some((cur, ended)) if cur == ts => {
                if ev.end && !ended {
                    self.current = Some((ts, true));
                    Some(TonePhase::End)
                } else {
                    None
                }
            }
            _ => {
                self.current = Some((ts, ev.end));
                // A lost start: report Start anyway so each press is seen; End follows at once
                // below only when this very packet ends it.
                Some(TonePhase::Start)
            }
        }
    }

    /// Whether the event at `ts` already reported its end.
    pub fn ended(&self, ts: u32) -> bool {
        self.current == Some((ts, true))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stun_with_username(user: &str) -> Vec<u8> {
        let mut v = vec![0x00, 0x01, 0, 0];
        v.extend_from_slice(&STUN_MAGIC);
        v.extend_from_slice(&[7u8; 12]);
        // An unrelated attribute first (PRIORITY), then USERNAME with padding.
        v.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        v.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        v.extend_from_slice(&(user.len() as u16).to_be_bytes());
        v.extend_from_slice(user.as_bytes());
        while v.len() % 4 != 0 {
            v.push(0);
        }
        let body = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&body.to_be_bytes());
        v
    }

    #[test]
    fn finds_ufrag() {
        assert_eq!(
            stun_local_ufrag(&stun_with_username("srv1:cli")),
            Some("srv1")
        );
        assert_eq!(stun_local_ufrag(&stun_with_username(":cli")), None);
        let mut trunc = stun_with_username("srv1:cli");
        trunc.truncate(30);
        assert_eq!(stun_local_ufrag(&trunc), None);
        assert_eq!(stun_local_ufrag(&[0u8; 10]), None);
    }

    #[test]
    fn classifies() {
        assert_eq!(classify(&[0, 1]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 111]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 200]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x80]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[255]), DatagramKind::Unknown);
    }

    #[test]
    fn tones_reported_once_per_phase() {
        let mut t = ToneTracker::default();
        let ev = |end| TelephoneEvent {
            event: 5,
            end,
            volume: 10,
            duration: 160,
        };
        assert_eq!(t.handle(1000, &ev(false)), Some(TonePhase::Start));
        assert_eq!(t.handle(1000, &ev(false)), None);
        assert_eq!(t.handle(1000, &ev(true)), Some(TonePhase::End));
        assert_eq!(t.handle(1000, &ev(true)), None);
        assert_eq!(t.handle(1000, &ev(true)), None);
        assert_eq!(t.handle(5000, &ev(false)), Some(TonePhase::Start));
        let p = parse_telephone_event(&[11, 0x80 | 7, 0x01, 0x40]).unwrap();
        assert_eq!(
            p,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 7,
                duration: 320
            }
        );
        assert_eq!(parse_telephone_event(&[1, 2]), None);
        assert_eq!(
            parse_audio_level(&[0x80 | 30]),
            Some(AudioLevel {
                level_dbov: 30,
                voice: true
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn stun_peek_never_panics(v in proptest::collection::vec(0u8..=255, 0..200)) {
            let _ = stun_local_ufrag(&v);
            let _ = classify(&v);
            let _ = rtp_ssrc(&v);
        }
    }
}
