//! Zero-copy parsing of the RTP fixed header (RFC 3550 5.1) and of RTCP sender reports
//! (RFC 3550 6.4.1) inside compound packets. Everything here borrows the caller's bytes; no
//! allocation, no panic on any input.

use crate::units::{PayloadType, RtpTimestamp, SeqNo, Ssrc};

/// Largest datagram the pipeline accepts (a typical Ethernet MTU; anything bigger is not a
/// sane voice packet and is rejected before it can reach a fixed-size buffer).
pub const MAX_PACKET_LEN: usize = 1500;

/// Why an RTP or RTCP packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than its fixed header or than the lengths it declares.
    #[error("truncated packet ({len} bytes)")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Longer than [`MAX_PACKET_LEN`].
    #[error("oversized packet ({len} bytes)")]
    Oversized {
        /// Bytes received.
        len: usize,
    },
    /// RTP version field is not 2.
    #[error("bad rtp version {version}")]
    BadVersion {
        /// The version bits found.
        version: u8,
    },
    /// Padding length larger than the payload.
    #[error("bad padding")]
    BadPadding,
    /// An RTCP packet (or compound) that is not well-formed.
    #[error("malformed rtcp")]
    MalformedRtcp,
}

/// A parsed view of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit (for audio: first packet of a talkspurt).
    pub marker: bool,
    /// Payload type.
    pub payload_type: PayloadType,
    /// Sequence number.
    pub seq: SeqNo,
    /// Timestamp (48 kHz for Opus).
    pub timestamp: RtpTimestamp,
    /// Sender's stream id.
    pub ssrc: Ssrc,
    /// The payload, without header, CSRCs, extension and padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses an RTP packet.
    ///
    /// # Errors
    /// [`RtpError`] when the bytes are not a well-formed RTP v2 packet within the size bounds.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() > MAX_PACKET_LEN {
            return Err(RtpError::Oversized { len: buf.len() });
        }
        if buf.len() < 12 {
            return Err(RtpError::Truncated { len: buf.len() });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion { version });
        }
        let has_padding = buf[0] & 0x20 != 0;
        let has_extension = buf[0] & 0x10 != 0;
        let csrc_count = usize::from(buf[0] & 0x0f);
        let mut offset = 12 + 4 * csrc_count;
        if has_extension {
            let ext = buf
                .get(offset..offset + 4)
                .ok_or(RtpError::Truncated { len: buf.len() })?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset += 4 + 4 * words;
        }
        if offset > buf.len() {
            return Err(RtpError::Truncated { len: buf.len() });
        }
        let mut end = buf.len();
        if has_padding {
            let pad = usize::from(buf[end - 1]);
            if pad == 0 || pad > end - offset {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpPacket {
            marker: buf[1] & 0x80 != 0,
            payload_type: PayloadType(buf[1] & 0x7f),
            seq: SeqNo(u16::from_be_bytes([buf[2], buf[3]])),
            timestamp: RtpTimestamp(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])),
            ssrc: Ssrc(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]])),
            payload: &buf[offset..end],
        })
    }

    /// Writes this packet (fixed header, no CSRC/extension) into `out`; returns its length.
    /// Used by tests, benches and simulators; `None` when `out` is too small.
    pub fn write_to(&self, out: &mut [u8]) -> Option<usize> {
        let len = 12 + self.payload.len();
        let out = out.get_mut(..len)?;
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type.0 & 0x7f);
        out[2..4].copy_from_slice(&self.seq.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        out[12..].copy_from_slice(self.payload);
        Some(len)
    }
}

/// Whether a datagram on a muxed RTP/RTCP flow is RTCP (RFC 5761 4: packet types 192..=223).
pub fn is_rtcp(buf: &[u8]) -> bool {
    matches!(buf.get(1), Some(192..=223))
}

/// The part of an RTCP sender report the pipeline uses: the sender's RTP clock against its NTP
/// wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    /// The reporting stream.
    pub ssrc: Ssrc,
    /// NTP timestamp (64-bit fixed point, seconds since 1900).
    pub ntp_time: u64,
    /// RTP timestamp that corresponds to `ntp_time`.
    pub rtp_time: RtpTimestamp,
    /// Packets sent so far.
    pub packet_count: u32,
}

/// Iterates over the sender reports in a compound RTCP packet, validating every header.
///
/// Yields `Err` once (then stops) when the compound is malformed.
pub fn sender_reports(buf: &[u8]) -> SenderReports<'_> {
    SenderReports {
        buf,
        done: buf.len() > MAX_PACKET_LEN,
    }
}

/// Iterator returned by [`sender_reports`].
#[derive(Debug)]
pub struct SenderReports<'a> {
    buf: &'a [u8],
    done: bool,
}

impl Iterator for SenderReports<'_> {
    type Item = Result<SenderReport, RtpError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && !self.buf.is_empty() {
            let buf = self.buf;
            if buf.len() < 4 || buf[0] >> 6 != 2 {
                self.done = true;
                return Some(Err(RtpError::MalformedRtcp));
            }
            let words = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let len = 4 * (words + 1);
            if len > buf.len() {
                self.done = true;
                return Some(Err(RtpError::MalformedRtcp));
            }
            let (packet, rest) = buf.split_at(len);
            self.buf = rest;
            if packet[1] == 200 {
                if packet.len() < 28 {
                    self.done = true;
                    return Some(Err(RtpError::MalformedRtcp));
                }
                let be32 = |i: usize| {
                    u32::from_be_bytes([packet[i], packet[i + 1], packet[i + 2], packet[i + 3]])
                };
                return Some(Ok(SenderReport {
                    ssrc: Ssrc(be32(4)),
                    ntp_time: (u64::from(be32(8)) << 32) | u64::from(be32(12)),
                    rtp_time: RtpTimestamp(be32(16)),
                    packet_count: be32(20),
                }));
            }
        }
        None
    }
}

impl SenderReport {
    /// Writes a minimal SR (no report blocks) into `out`; returns its length (28), or `None`
    /// when `out` is too small. Used by tests and simulators.
    pub fn write_to(&self, out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..28)?;
        out[0] = 0x80;
        out[1] = 200;
        out[2..4].copy_from_slice(&6u16.to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.ntp_time.to_be_bytes());
        out[16..20].copy_from_slice(&self.rtp_time.0.to_be_bytes());
        out[20..24].copy_from_slice(&self.packet_count.to_be_bytes());
        out[24..28].copy_from_slice(&0u32.to_be_bytes());
        Some(28)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_extension() {
        let p = RtpPacket {
            marker: true,
            payload_type: PayloadType(111),
            seq: SeqNo(65535),
            timestamp: RtpTimestamp(0xdead_beef),
            ssrc: Ssrc(7),
            payload: &[1, 2, 3],
        };
        let mut buf = [0u8; 64];
        let n = p.write_to(&mut buf).unwrap();
        assert_eq!(RtpPacket::parse(&buf[..n]).unwrap(), p);

        // Same packet with a one-word header extension and 2 bytes of padding.
        let mut ext = buf[..12].to_vec();
        ext[0] |= 0x10 | 0x20;
        ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
        ext.extend_from_slice(&[1, 2, 3, 0, 2]);
        assert_eq!(RtpPacket::parse(&ext).unwrap().payload, &[1, 2, 3]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            RtpPacket::parse(&[0x80; 5]),
            Err(RtpError::Truncated { .. })
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x40; 20]),
            Err(RtpError::BadVersion { .. })
        ));
        let mut pad = [0u8; 13];
        pad[0] = 0xa0;
        pad[12] = 9;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding));
        // CSRC count larger than the packet.
        let mut csrc = [0u8; 14];
        csrc[0] = 0x8f;
        assert!(matches!(
            RtpPacket::parse(&csrc),
            Err(RtpError::Truncated { .. })
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x80; 2000]),
            Err(RtpError::Oversized { .. })
        ));
    }

    #[test]
    fn compound_rtcp() {
        let sr = SenderReport {
            ssrc: Ssrc(9),
            ntp_time: 0x0102_0304_0506_0708,
            rtp_time: RtpTimestamp(42),
            packet_count: 3,
        };
        let mut buf = [0u8; 40];
        let n = sr.write_to(&mut buf).unwrap();
        // Append an (empty) RR after the SR.
        buf[n..n + 8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 9]);
        assert!(is_rtcp(&buf));
        let got: Vec<_> = sender_reports(&buf[..n + 8]).collect();
        assert_eq!(got, vec![Ok(sr)]);
        // A length field pointing past the end.
        let bad = [0x80, 200, 0, 50, 0, 0, 0, 0];
        assert_eq!(
            sender_reports(&bad).collect::<Vec<_>>(),
            vec![Err(RtpError::MalformedRtcp)]
        );
    }
}
