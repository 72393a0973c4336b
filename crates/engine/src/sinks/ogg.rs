//! Ogg/Opus (RFC 7845) writer for received Opus packets, without re-encoding.
//!
//! The recorder can keep the exact packets a participant sent, which is smaller than WAV and
//! bit-exact to what arrived. Lost or silence-suppressed stretches are filled with zero-length
//! Opus frames (a TOC byte alone, RFC 6716 §3.2.1: 20 ms ones, then 2.5 ms ones for the rest),
//! which decoders conceal or play as silence, so the file's duration matches the RTP timeline to
//! within 2.5 ms. A single gap is filled up to [`OggOpusWriter::set_max_gap_fill`] (default
//! [`MAX_GAP_FILL_SAMPLES`]); longer pauses are shortened to that and counted. A filler costs two
//! bytes per 20 ms (0.36 MB per hour), so the recorder, which must stay aligned with its WAV
//! tracks, lifts the limit.
//!
//! [`OggOpusWriter::set_position`] places the stream on a timeline that starts before its first
//! packet (a participant who joins late): the lead-in is filled the same way, so granule position
//! *n* is timeline sample *n* (48 kHz) in every file of a call.
//!
//! Pages are flushed about once per second of audio: a killed process loses at most that, and
//! every page on disk is complete and checksummed, so the file stays playable. What reaches the
//! disk itself (against a power loss or a host crash) is what the last `fdatasync` saw: the
//! recorder asks for one every `fsync_interval` ([`OggOpusWriter::request_sync`], run by the
//! sync thread as for WAV files) and `finish` syncs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use super::syncer::SyncHandle;

/// The writer's file, shared with its [`SyncHandle`] for background `fdatasync`s.
#[derive(Debug)]
struct SharedFile(Arc<File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// Opus always counts granule positions at 48 kHz.
pub const GRANULE_RATE: u64 = 48_000;

/// Longest gap (in 48 kHz samples) filled with zero-length frames: 10 minutes.
pub const MAX_GAP_FILL_SAMPLES: u64 = 10 * 60 * GRANULE_RATE;

/// Packets per page before a page is flushed (50 x 20 ms = 1 s).
const PACKETS_PER_PAGE: usize = 50;

/// Zero-length CELT fullband 20 ms frame, code 0: one TOC byte (config 31).
const FILLER_20MS: u8 = 31 << 3;
/// Zero-length CELT fullband 2.5 ms frame (config 28), for gap remainders.
const FILLER_2_5MS: u8 = 28 << 3;

/// Duration in 48 kHz samples of an Opus packet, from its TOC (RFC 6716 §3.1).
///
/// Returns `None` for an empty or malformed packet, or one longer than 120 ms.
pub fn packet_samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in 48 kHz samples.
    let frame: u64 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u64 = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    (frames > 0 && total <= 5760).then_some(total)
}

/// Writes one logical Opus stream to an Ogg file.
#[derive(Debug)]
pub struct OggOpusWriter {
    out: BufWriter<SharedFile>,
    sync: SyncHandle,
    serial: u32,
    page_seq: u32,
    /// Granule position after the last packet added.
    granule: u64,
    /// RTP timestamp (48 kHz, unwrapped) expected for the next packet, once started.
    next_rtp: Option<u64>,
    seg_table: Vec<u8>,
    body: Vec<u8>,
    packets_in_page: usize,
    /// Samples of filler written for gaps.
    pub filled_samples: u64,
    /// Samples of gaps longer than [`MAX_GAP_FILL_SAMPLES`] that were cut.
    pub cut_samples: u64,
    /// Packets refused because their TOC did not parse.
    pub malformed_packets: u64,
    max_gap_fill: u64,
}

impl OggOpusWriter {
    /// Creates `path` and writes the OpusHead and OpusTags pages. `tags` become user comments
    /// (`KEY=value`), e.g. the participant's display name and source id.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn create(
        path: impl AsRef<Path>,
        channels: u8,
        serial: u32,
        tags: &[(&str, &str)],
    ) -> io::Result<Self> {
        let file = Arc::new(File::create(path)?);
        let sync = SyncHandle::new(Arc::clone(&file));
        let out = BufWriter::with_capacity(32 * 1024, SharedFile(file));
        let mut w = Self {
            out,
            sync,
            serial,
            page_seq: 0,
            granule: 0,
            next_rtp: None,
            seg_table: Vec::with_capacity(255),
            body: Vec::with_capacity(16 * 1024),
            packets_in_page: 0,
            filled_samples: 0,
            cut_samples: 0,
            malformed_packets: 0,
            max_gap_fill: MAX_GAP_FILL_SAMPLES,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels.max(1));
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: packets are as received
        head.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate (informational)
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0
        w.write_page(&[&head], 0x02, 0)?;

        let vendor = concat!("mediabot ", env!("CARGO_PKG_VERSION"));
        let mut t = Vec::new();
        t.extend_from_slice(b"OpusTags");
        t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        t.extend_from_slice(vendor.as_bytes());
        t.extend_from_slice(&(tags.len() as u32).to_le_bytes());
        for (k, v) in tags {
            let c = format!("{k}={v}");
            t.extend_from_slice(&(c.len() as u32).to_le_bytes());
            t.extend_from_slice(c.as_bytes());
        }
        w.write_page(&[&t], 0, 0)?;
        w.out.flush()?;
        Ok(w)
    }

    /// Adds a packet whose (unwrapped, 48 kHz) RTP timestamp is `rtp_ts`. A timestamp ahead of
    /// the expected one is a gap (loss or DTX) and is filled; one behind it (a late duplicate)
    /// is dropped.
    ///
    /// # Errors
    /// Any I/O error while flushing a page.
    pub fn write_packet(&mut self, rtp_ts: u64, packet: &[u8]) -> io::Result<()> {
        let Some(samples) = packet_samples(packet) else {
            self.malformed_packets += 1;
            return Ok(());
        };
        if let Some(expected) = self.next_rtp {
            if rtp_ts < expected {
                return Ok(());
            }
            let gap = rtp_ts - expected;
            let fill = gap.min(self.max_gap_fill);
            self.cut_samples += gap - fill;
            self.fill(fill)?;
        }
        self.next_rtp = Some(rtp_ts + samples);
        self.push_packet(packet, samples)
    }

    /// Lifts or lowers the longest gap filled (48 kHz samples); `u64::MAX`: fill every gap.
    pub fn set_max_gap_fill(&mut self, samples: u64) {
        self.max_gap_fill = samples;
    }

    /// Before the first packet: the timeline position (48 kHz) the stream starts from, usually 0,
    /// so the first packet's lead-in is filled like a gap. Ignored once packets were written.
    pub fn set_position(&mut self, pos: u64) {
        if self.next_rtp.is_none() {
            self.next_rtp = Some(pos);
        }
    }

    /// Fills with silence up to timeline position `end` (the call's end), so the file is as long
    /// as the call's other tracks (to within 2.5 ms).
    ///
    /// # Errors
    /// Any I/O error while flushing a page.
    pub fn pad_to(&mut self, end: u64) -> io::Result<()> {
        let Some(next) = self.next_rtp else {
            return Ok(());
        };
        if end > next {
            self.fill(end - next)?;
            self.next_rtp = Some(end);
        }
        Ok(())
    }

    /// Writes `samples` of zero-length frames (20 ms, then 2.5 ms; under 2.5 ms is dropped).
    fn fill(&mut self, samples: u64) -> io::Result<()> {
        let mut left = samples;
        while left >= 960 {
            self.push_packet(&[FILLER_20MS], 960)?;
            left -= 960;
        }
        while left >= 120 {
            self.push_packet(&[FILLER_2_5MS], 120)?;
            left -= 120;
        }
        self.filled_samples += samples - left;
        Ok(())
    }

    /// Duration written so far, 48 kHz samples.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Asks the sync thread for an `fdatasync` of the pages written so far (complete pages
    /// only: the one being filled is under a second), without waiting for it.
    ///
    /// # Errors
    /// The error a background sync of this file met since the last request.
    pub fn request_sync(&mut self) -> io::Result<()> {
        if let Some(e) = self.sync.take_error() {
            return Err(e);
        }
        self.sync.request();
        Ok(())
    }

    /// The file's link to the sync thread (tests inject a background sync's error through it).
    #[cfg(test)]
    pub(crate) fn sync_handle(&self) -> &SyncHandle {
        &self.sync
    }

    /// Flushes the last page with the end-of-stream flag and closes the file; returns the
    /// stream's duration in 48 kHz samples.
    ///
    /// # Errors
    /// Any I/O error, including one a background sync met.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(e) = self.sync.take_error() {
            return Err(e);
        }
        self.flush_page(0x04)?;
        self.out.flush()?;
        self.out.get_ref().0.sync_data()?;
        Ok(self.granule)
    }

    fn push_packet(&mut self, packet: &[u8], samples: u64) -> io::Result<()> {
        let lacing = packet.len() / 255 + 1;
        if self.seg_table.len() + lacing > 255 {
            self.flush_page(0)?;
        }
        let mut left = packet.len();
        while left >= 255 {
            self.seg_table.push(255);
            left -= 255;
        }
        self.seg_table.push(left as u8);
        self.body.extend_from_slice(packet);
        self.granule += samples;
        self.packets_in_page += 1;
        if self.packets_in_page >= PACKETS_PER_PAGE {
            self.flush_page(0)?;
        }
        Ok(())
    }

    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        if self.seg_table.is_empty() && flags & 0x04 == 0 {
            return Ok(());
        }
        let seg = std::mem::take(&mut self.seg_table);
        let body = std::mem::take(&mut self.body);
        self.write_raw_page(&seg, &body, flags, self.granule)?;
        self.out.flush()?;
        self.seg_table = seg;
        self.seg_table.clear();
        self.body = body;
        self.body.clear();
        self.packets_in_page = 0;
        Ok(())
    }

    fn write_page(&mut self, packets: &[&[u8]], flags: u8, granule: u64) -> io::Result<()> {
        let mut seg = Vec::new();
        let mut body = Vec::new();
        for p in packets {
            let mut left = p.len();
            while left >= 255 {
                seg.push(255);
                left -= 255;
            }
            seg.push(left as u8);
            body.extend_from_slice(p);
        }
        self.write_raw_page(&seg, &body, flags, granule)
    }

    fn write_raw_page(
        &mut self,
        seg: &[u8],
        body: &[u8],
        flags: u8,
        granule: u64,
    ) -> io::Result<()> {
        let mut page = Vec::with_capacity(27 + seg.len() + body.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.page_seq.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(seg.len() as u8);
        page.extend_from_slice(seg);
        page.extend_from_slice(body);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.page_seq += 1;
        self.out.write_all(&page)
    }
}

/// The Ogg CRC-32: polynomial 0x04c11db7, not reflected, initial value 0, no final xor.
fn ogg_crc(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut r = (i as u32) << 24;
            let mut b = 0;
            while b < 8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04c1_1db7
                } else {
                    r << 1
                };
                b += 1;
            }
            t[i] = r;
            i += 1;
        }
        t
    };
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn toc_durations() {
        assert_eq!(packet_samples(&[FILLER_20MS]), Some(960));
        assert_eq!(packet_samples(&[(1 << 3), 0]), Some(960)); // SILK NB 20 ms
        assert_eq!(packet_samples(&[(3 << 3) | 1, 0]), Some(5760)); // 2 x 60 ms
        assert_eq!(packet_samples(&[(16 << 3) | 3, 4]), Some(480)); // 4 x 2.5 ms
        assert_eq!(packet_samples(&[(11 << 3) | 3, 3]), None); // 3 x 60 ms > 120 ms
        assert_eq!(packet_samples(&[(16 << 3) | 3]), None); // code 3 without count byte
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn crc_matches_known_page_checksum_property() {
        // A page with its CRC field in place must checksum to the same value when recomputed
        // with the field zeroed; and the CRC of "OggS" alone is a fixed, known-nonzero value.
        assert_ne!(ogg_crc(b"OggS"), 0);
        assert_eq!(ogg_crc(&[]), 0);
    }

    fn read_pages(bytes: &[u8]) -> Vec<(u8, u64, Vec<Vec<u8>>)> {
        let mut pages = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            assert_eq!(&bytes[i..i + 4], b"OggS");
            let flags = bytes[i + 5];
            let granule = u64::from_le_bytes(bytes[i + 6..i + 14].try_into().unwrap());
            let nseg = bytes[i + 26] as usize;
            let seg = &bytes[i + 27..i + 27 + nseg];
            let len: usize = seg.iter().map(|&s| s as usize).sum();
            let start = i + 27 + nseg;
            let mut page = bytes[i..start + len].to_vec();
            let stored = u32::from_le_bytes(page[22..26].try_into().unwrap());
            page[22..26].copy_from_slice(&[0; 4]);
            assert_eq!(ogg_crc(&page), stored, "page crc");
            let mut packets = Vec::new();
            let mut cur = Vec::new();
            let mut off = start;
            for &s in seg {
                cur.extend_from_slice(&bytes[off..off + s as usize]);
                off += s as usize;
                if s < 255 {
                    packets.push(std::mem::take(&mut cur));
                }
            }
            pages.push((flags, granule, packets));
            i = start + len;
        }
        pages
    }

    #[test]
    fn gaps_are_filled_and_granules_follow_rtp_time() {
        let path = std::env::temp_dir().join(format!("mediabot-ogg-{}.opus", std::process::id()));
        let mut w = OggOpusWriter::create(&path, 2, 7, &[("SOURCE_ID", "42")]).unwrap();
        let pkt = [FILLER_20MS, 0xAB, 0xCD];
        let big = {
            let mut b = vec![FILLER_20MS];
            b.resize(600, 0x11);
            b
        };
        w.write_packet(1000, &pkt).unwrap();
        w.write_packet(1000 + 960, &big).unwrap();
        // 3 packets lost.
        w.write_packet(1000 + 5 * 960, &pkt).unwrap();
        // Late duplicate: dropped.
        w.write_packet(1000 + 960, &pkt).unwrap();
        w.write_packet(1000, &[0xff]).unwrap(); // code 3 without count: malformed
        assert_eq!(w.malformed_packets, 1);
        assert_eq!(w.filled_samples, 3 * 960);
        let total = w.finish().unwrap();
        assert_eq!(total, 6 * 960);

        let pages = read_pages(&std::fs::read(&path).unwrap());
        assert_eq!(pages[0].0, 0x02);
        assert_eq!(&pages[0].2[0][..8], b"OpusHead");
        assert_eq!(&pages[1].2[0][..8], b"OpusTags");
        let last = pages.last().unwrap();
        assert_eq!(last.0 & 0x04, 0x04);
        assert_eq!(last.1, 6 * 960);
        let audio: Vec<Vec<u8>> = pages[2..].iter().flat_map(|p| p.2.clone()).collect();
        assert_eq!(audio.len(), 6);
        assert_eq!(audio[1], big);
        assert_eq!(audio[2], vec![FILLER_20MS]);
    }

    #[test]
    fn lead_in_and_tail_put_the_stream_on_the_call_timeline() {
        let path =
            std::env::temp_dir().join(format!("mediabot-ogg-pos-{}.opus", std::process::id()));
        let mut w = OggOpusWriter::create(&path, 1, 3, &[]).unwrap();
        w.set_max_gap_fill(u64::MAX);
        w.set_position(0);
        // First packet at timeline 1.0025 s: 20 ms fillers, then 2.5 ms ones for the remainder.
        w.write_packet(48_120, &[FILLER_20MS, 1]).unwrap();
        assert_eq!(w.granule(), 48_120 + 960);
        w.pad_to(96_000 + 100).unwrap();
        assert_eq!(w.filled_samples, 48_120 + 96_000 - 49_080);
        let total = w.finish().unwrap();
        assert_eq!(total, 96_000, "to within 2.5 ms of the end");
        let pages = read_pages(&std::fs::read(&path).unwrap());
        let audio: Vec<Vec<u8>> = pages[2..].iter().flat_map(|p| p.2.clone()).collect();
        assert_eq!(audio[0], vec![FILLER_20MS]);
        assert_eq!(audio[50], vec![FILLER_2_5MS]);
        assert_eq!(audio[51], vec![FILLER_20MS, 1]);
        let sum: u64 = audio.iter().map(|p| packet_samples(p).unwrap()).sum();
        assert_eq!(sum, total, "granule = sum of packet durations");
    }

    #[test]
    fn long_pause_is_cut_not_filled_for_hours() {
        let path =
            std::env::temp_dir().join(format!("mediabot-ogg-cut-{}.opus", std::process::id()));
        let mut w = OggOpusWriter::create(&path, 1, 1, &[]).unwrap();
        w.write_packet(0, &[FILLER_20MS]).unwrap();
        w.write_packet(3 * 3600 * GRANULE_RATE, &[FILLER_20MS])
            .unwrap();
        assert_eq!(w.filled_samples, MAX_GAP_FILL_SAMPLES);
        assert!(w.cut_samples > 2 * 3600 * GRANULE_RATE);
        let total = w.finish().unwrap();
        assert_eq!(total, MAX_GAP_FILL_SAMPLES + 2 * 960);
    }
}
