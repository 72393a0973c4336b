//! A bounded single-producer single-consumer ring of received Opus packets, from the media
//! thread to a call's sink thread (for the Ogg/Opus recorder).
//!
//! Records are variable length in one preallocated byte ring (no allocation per packet): a
//! 20-byte header (SSRC, RTP timestamp, sequence number, timeline position of arrival at 48 kHz,
//! payload length) and the payload. A record that does not fit is dropped whole and counted: the
//! media thread never waits for the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};

const HEADER: usize = 20;
/// Largest payload carried (an Opus packet is at most 1275 bytes; RTP limits the rest).
pub const MAX_PAYLOAD: usize = 1500;

/// One packet as the sink thread sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TappedPacket {
    /// The stream.
    pub ssrc: u32,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// Call timeline position of its arrival, 48 kHz samples.
    pub arrival_pos: u64,
    /// The Opus payload.
    pub payload: Vec<u8>,
}

/// The media thread's end.
pub struct PacketProducer {
    ring: ringbuf::HeapProd<u8>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for PacketProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketProducer")
            .field("vacant", &self.ring.vacant_len())
            .finish_non_exhaustive()
    }
}

/// The sink thread's end.
pub struct PacketConsumer {
    ring: ringbuf::HeapCons<u8>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for PacketConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConsumer")
            .field("occupied", &self.ring.occupied_len())
            .finish_non_exhaustive()
    }
}

/// A ring of `bytes` capacity.
pub fn packet_ring(bytes: usize) -> (PacketProducer, PacketConsumer) {
    let (p, c) = HeapRb::<u8>::new(bytes.max(HEADER + MAX_PAYLOAD)).split();
    let dropped = Arc::new(AtomicU64::new(0));
    (
        PacketProducer {
            ring: p,
            dropped: Arc::clone(&dropped),
        },
        PacketConsumer { ring: c, dropped },
    )
}

impl PacketProducer {
    /// Queues a packet; `false` (and counted) when the ring is full or the payload too long.
    pub fn push(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        sequence: u16,
        arrival_pos: u64,
        payload: &[u8],
    ) -> bool {
        if payload.len() > MAX_PAYLOAD || self.ring.vacant_len() < HEADER + payload.len() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(&ssrc.to_le_bytes());
        h[4..8].copy_from_slice(&timestamp.to_le_bytes());
        h[8..10].copy_from_slice(&sequence.to_le_bytes());
        h[10..18].copy_from_slice(&arrival_pos.to_le_bytes());
        h[18..20].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        // Room was checked above and only this side adds bytes: both writes complete.
        self.ring.push_slice(&h);
        self.ring.push_slice(payload);
        true
    }
}

impl PacketConsumer {
    /// The next packet, if one is queued.
    pub fn pop(&mut self) -> Option<TappedPacket> {
        let mut pkt = TappedPacket::default();
        self.pop_into(&mut pkt).then_some(pkt)
    }

    /// Like [`PacketConsumer::pop`] into `pkt`, reusing its payload buffer (no allocation
    /// once it has grown to the largest payload seen); `false` (and `pkt` unchanged) when no
    /// whole packet is queued.
    pub fn pop_into(&mut self, pkt: &mut TappedPacket) -> bool {
        let mut h = [0u8; HEADER];
        if self.ring.peek_slice(&mut h) < HEADER {
            return false;
        }
        let len = usize::from(u16::from_le_bytes([h[18], h[19]]));
        // The producer pushes header and payload as two writes: wait for the whole record.
        if self.ring.occupied_len() < HEADER + len {
            return false;
        }
        self.ring.skip(HEADER);
        pkt.payload.resize(len, 0);
        self.ring.pop_slice(&mut pkt.payload);
        let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&h[10..18]);
        pkt.ssrc = le32(&h[0..4]);
        pkt.timestamp = le32(&h[4..8]);
        pkt.sequence = u16::from_le_bytes([h[8], h[9]]);
        pkt.arrival_pos = u64::from_le_bytes(pos);
        true
    }

    /// Packets dropped at the producer because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip_and_a_full_ring_drops_whole_records() {
        let (mut p, mut c) = packet_ring(HEADER + MAX_PAYLOAD + 100);
        assert!(p.push(7, 960, 3, 48_000, &[1, 2, 3]));
        assert!(p.push(7, 1920, 4, 48_960, &[9; 200]));
        assert_eq!(
            c.pop().unwrap(),
            TappedPacket {
                ssrc: 7,
                timestamp: 960,
                sequence: 3,
                arrival_pos: 48_000,
                payload: vec![1, 2, 3]
            }
        );
        assert!(!p.push(7, 2880, 5, 0, &[0; 1500]), "does not fit");
        assert!(!p.push(7, 2880, 5, 0, &[0; 1501]), "too long");
        assert_eq!(c.dropped(), 2);
        assert_eq!(c.pop().unwrap().payload, vec![9; 200]);
        assert!(c.pop().is_none());
        // Space is back: wrap-around keeps records intact.
        for i in 0..50u16 {
            assert!(p.push(1, u32::from(i), i, 0, &[i as u8; 300]));
            let got = c.pop().unwrap();
            assert_eq!(got.sequence, i);
            assert_eq!(got.payload, vec![i as u8; 300]);
        }
    }

    #[test]
    fn pop_into_reuses_one_buffer_and_reads_what_pop_reads() {
        let (mut p, mut c) = packet_ring(4 * (HEADER + MAX_PAYLOAD));
        let mut pkt = TappedPacket::default();
        assert!(!c.pop_into(&mut pkt), "empty");
        assert!(p.push(5, 1, 1, 10, &[7; 1200]));
        assert!(c.pop_into(&mut pkt));
        let buf = pkt.payload.as_ptr();
        // Wrap around the ring several times with shorter and longer payloads.
        for i in 0..40u16 {
            let len = [80usize, 1200, 3, 640][usize::from(i % 4)];
            let payload: Vec<u8> = (0..len).map(|k| (k as u16 ^ i) as u8).collect();
            assert!(p.push(6, u32::from(i) * 960, i, u64::from(i) * 7, &payload));
            assert!(p.push(6, u32::from(i) * 960, i, u64::from(i) * 7, &payload));
            assert!(c.pop_into(&mut pkt));
            let want = TappedPacket {
                ssrc: 6,
                timestamp: u32::from(i) * 960,
                sequence: i,
                arrival_pos: u64::from(i) * 7,
                payload,
            };
            assert_eq!(pkt, want);
            assert_eq!(c.pop().unwrap(), want);
            assert_eq!(pkt.payload.as_ptr(), buf, "no new allocation");
        }
        assert!(!c.pop_into(&mut pkt));
        assert_eq!(pkt.sequence, 39, "unchanged when nothing is queued");
    }
}
