//! The send path (sans-IO core): the app writes 48 kHz mono PCM into a lock-free ring; every
//! 20 ms media tick the core takes one frame (silence when the app has nothing), encodes it with
//! Opus (in-band FEC on, bitrate configurable, DTX optional) and returns one RTP packet with
//! continuous sequence numbers and timestamps. DTMF requests become RFC 4733 telephone-event
//! packets that replace the audio while the tone lasts.
//!
//! ```text
//!  app thread ── PlaybackWriter::write(pcm) ──▶ SPSC ring ──▶ AudioSendCore::next_packet()
//!             ── PlaybackWriter::send_dtmf() ─▶ SPSC ring ─┘    (media thread, every 20 ms)
//! ```
//!
//! Nothing here allocates per packet: the frame and output buffers are owned by the core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};

/// Samples per 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// A 20 ms Opus frame (CELT, fullband, mono) that decodes to digital silence.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// One frame of media time.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

/// Setup of the send path.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Opus bitrate, bits per second.
    pub bitrate: i32,
    /// In-band FEC (LBRR) on.
    pub fec: bool,
    /// Expected loss, percent (drives how much FEC the encoder spends).
    pub packet_loss_perc: i32,
    /// Discontinuous transmission: silent frames are not sent.
    pub dtx: bool,
    /// Capacity of the app's PCM ring, milliseconds.
    pub ring_ms: u32,
    /// Opus encoder complexity, 0..=10 (CPU against quality; 5 is plenty for speech).
    pub complexity: i32,
    /// What a tick sends when the app has queued nothing: `true` (the default) the constant
    /// silence frame, so the stream never pauses; `false` nothing, as Opus DTX does (RFC 7587
    /// 3.1.3): timestamps still advance and the next packet carries the marker bit. A bot that
    /// only listens (a recorder) then sends no media at all.
    pub idle_silence: bool,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            bitrate: 32_000,
            fec: true,
            packet_loss_perc: 10,
            dtx: false,
            ring_ms: 2000,
            complexity: 5,
            idle_silence: true,
        }
    }
}

/// Errors of the send path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The Opus encoder refused a setting or a frame.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// A DTMF key to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfRequest {
    /// RFC 4733 event code (0-9, 10 `*`, 11 `#`, 12-15 A-D).
    pub event: u8,
    /// Tone length in milliseconds (rounded up to 20 ms frames).
    pub duration_ms: u16,
    /// Volume, -dBm0 (0..=63).
    pub volume: u8,
}

/// Counters of the send path, shared between the app and media sides.
#[derive(Debug, Default)]
pub struct SendStats {
    /// PCM samples the app could not write because the ring was full.
    pub samples_dropped: AtomicU64,
    /// Frames that were (partly) silence because the ring ran dry.
    pub underruns: AtomicU64,
    /// Audio packets produced.
    pub audio_packets: AtomicU64,
    /// Telephone-event packets produced.
    pub dtmf_packets: AtomicU64,
    /// Ticks that sent nothing: DTX, or nothing queued with [`SendConfig::idle_silence`] off.
    pub dtx_skipped: AtomicU64,
    /// Frames sent as the constant Opus silence packet (the app had nothing; no encoding).
    pub silence_frames: AtomicU64,
}

/// The app's end of a call's playback: write PCM, request DTMF. Never blocks.
pub struct PlaybackWriter {
    pcm: ringbuf::HeapProd<i16>,
    dtmf: ringbuf::HeapProd<DtmfRequest>,
    stats: Arc<SendStats>,
}

impl std::fmt::Debug for PlaybackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackWriter")
            .field("free", &self.pcm.vacant_len())
            .finish()
    }
}

impl PlaybackWriter {
    /// Writes 48 kHz mono samples; returns how many fit. The rest is dropped and counted
    /// (a full ring means the app is ahead of real time).
    pub fn write(&mut self, pcm: &[i16]) -> usize {
        let n = self.pcm.push_slice(pcm);
        if n < pcm.len() {
            self.stats
                .samples_dropped
                .fetch_add((pcm.len() - n) as u64, Ordering::Relaxed);
        }
        n
    }

    /// Free space in the ring, samples.
    pub fn vacant(&self) -> usize {
        self.pcm.vacant_len()
    }

    /// Queues a DTMF key; `false` when the queue (16 keys) is full.
    pub fn send_dtmf(&mut self, request: DtmfRequest) -> bool {
        self.dtmf.try_push(request).is_ok()
    }

    /// The send counters.
    pub fn stats(&self) -> &SendStats {
        &self.stats
    }
}

/// One packet the core produced; the payload borrows the core's buffer.
#[derive(Debug)]
pub struct SendPacket<'a> {
    /// Payload type (Opus or telephone-event).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp (48 kHz).
    pub timestamp: u32,
    /// Marker bit (start of talkspurt / first packet of a tone).
    pub marker: bool,
    /// Payload.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Tone {
    request: DtmfRequest,
    start_ts: u32,
    frames_total: u32,
    frames_sent: u32,
    end_sent: u8,
}

/// The media-thread end: produces one packet per 20 ms tick.
pub struct AudioSendCore {
    encoder: opus::Encoder,
    pcm: ringbuf::HeapCons<i16>,
    dtmf: ringbuf::HeapCons<DtmfRequest>,
    stats: Arc<SendStats>,
    dtx: bool,
    idle_silence: bool,
    opus_pt: u8,
    telephone_event_pt: Option<u8>,
    sequence: u16,
    timestamp: u32,
    frame: [i16; FRAME_SAMPLES],
    out: [u8; 1275],
    tone: Option<Tone>,
    marker_next: bool,
}

impl std::fmt::Debug for AudioSendCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSendCore")
            .field("sequence", &self.sequence)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Creates the two ends of a call's playback. `first_sequence` and `first_timestamp` should be
/// random (RFC 3550).
///
/// # Errors
/// [`SendError::Opus`] when the encoder cannot be set up.
pub fn playback(
    config: &SendConfig,
    opus_pt: u8,
    telephone_event_pt: Option<u8>,
    first_sequence: u16,
    first_timestamp: u32,
) -> Result<(PlaybackWriter, AudioSendCore), SendError> {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
    encoder.set_bitrate(opus::Bitrate::Bits(config.bitrate))?;
    encoder.set_inband_fec(config.fec)?;
    encoder.set_packet_loss_perc(config.packet_loss_perc)?;
    encoder.set_dtx(config.dtx)?;
    encoder.set_complexity(config.complexity.clamp(0, 10))?;
    let samples = (config.ring_ms as usize * 48).max(FRAME_SAMPLES);
    let (pcm_prod, pcm_cons) = HeapRb::<i16>::new(samples).split();
    let (dtmf_prod, dtmf_cons) = HeapRb::<DtmfRequest>::new(16).split();
    let stats = Arc::new(SendStats::default());
    Ok((
        PlaybackWriter {
            pcm: pcm_prod,
            dtmf: dtmf_prod,
            stats: Arc::clone(&stats),
        },
        AudioSendCore {
            encoder,
            pcm: pcm_cons,
            dtmf: dtmf_cons,
            stats,
            dtx: config.dtx,
            idle_silence: config.idle_silence,
            opus_pt,
            telephone_event_pt,
            sequence: first_sequence,
            timestamp: first_timestamp,
            frame: [0; FRAME_SAMPLES],
            out: [0; 1275],
            tone: None,
            marker_next: true,
        },
    ))
}

impl AudioSendCore {
    /// Runs one 20 ms tick. Returns the packet to send, or `None` when DTX suppresses this
    /// frame. Timestamps advance by 960 every tick whether or not a packet goes out.
    ///
    /// # Errors
    /// [`SendError::Opus`] when encoding fails (the tick is still consumed).
    pub fn next_packet(&mut self) -> Result<Option<SendPacket<'_>>, SendError> {
        let tick_ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        // Audio is consumed even while a tone plays, so the app's timeline stays real-time.
        let got = self.pcm.pop_slice(&mut self.frame);
        if got < FRAME_SAMPLES {
            self.frame[got..].fill(0);
            if got > 0 || self.tone.is_none() {
                self.stats.underruns.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.tone.is_none()
            && self.telephone_event_pt.is_some()
            && let Some(request) = self.dtmf.try_pop()
        {
            let frames = u32::from(request.duration_ms).div_ceil(20).max(1);
            self.tone = Some(Tone {
                request,
                start_ts: tick_ts,
                frames_total: frames,
                frames_sent: 0,
                end_sent: 0,
            });
        }
        if let (Some(tone), Some(pt)) = (self.tone.as_mut(), self.telephone_event_pt) {
            let first = tone.frames_sent == 0;
            if tone.frames_sent < tone.frames_total {
                tone.frames_sent += 1;
                if tone.frames_sent == tone.frames_total {
                    tone.end_sent = 1;
                }
            } else {
                // RFC 4733 2.5.1.4: the final packet goes out three times.
                tone.end_sent += 1;
            }
            let end = tone.end_sent > 0;
            let duration = (tone.frames_sent * FRAME_SAMPLES as u32).min(u32::from(u16::MAX));
            self.out[0] = tone.request.event;
            self.out[1] = if end { 0x80 } else { 0 } | (tone.request.volume & 0x3f);
            self.out[2..4].copy_from_slice(&(duration as u16).to_be_bytes());
            let ts = tone.start_ts;
            if tone.end_sent >= 3 {
                self.tone = None;
                self.marker_next = true;
            }
            self.sequence = self.sequence.wrapping_add(1);
            self.stats.dtmf_packets.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(SendPacket {
                payload_type: pt,
                sequence: self.sequence,
                timestamp: ts,
                marker: first,
                payload: &self.out[..4],
            }));
        }
        if got == 0 {
            // Nothing from the app: the constant silence frame costs no encoding, which is most
            // of a silent call's send cost; or, configured so, nothing at all.
            if self.dtx || !self.idle_silence {
                self.stats.dtx_skipped.fetch_add(1, Ordering::Relaxed);
                self.marker_next = true;
                return Ok(None);
            }
            self.sequence = self.sequence.wrapping_add(1);
            self.stats.silence_frames.fetch_add(1, Ordering::Relaxed);
            self.stats.audio_packets.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(SendPacket {
                payload_type: self.opus_pt,
                sequence: self.sequence,
                timestamp: tick_ts,
                marker: std::mem::take(&mut self.marker_next),
                payload: &OPUS_SILENCE,
            }));
        }
        let n = self.encoder.encode(&self.frame, &mut self.out)?;
        if self.dtx && n <= 2 {
            self.stats.dtx_skipped.fetch_add(1, Ordering::Relaxed);
            self.marker_next = true;
            return Ok(None);
        }
        self.sequence = self.sequence.wrapping_add(1);
        let marker = std::mem::take(&mut self.marker_next);
        self.stats.audio_packets.fetch_add(1, Ordering::Relaxed);
        Ok(Some(SendPacket {
            payload_type: self.opus_pt,
            sequence: self.sequence,
            timestamp: tick_ts,
            marker,
            payload: &self.out[..n],
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn continuous_sequence_and_timestamps_with_silence_when_idle() {
        let (mut w, mut core) =
            playback(&SendConfig::default(), 111, Some(101), 65_530, 1000).unwrap();
        w.write(&[1000; FRAME_SAMPLES * 2]);
        let mut last: Option<(u16, u32)> = None;
        for i in 0..10 {
            let p = core.next_packet().unwrap().unwrap();
            assert_eq!(p.payload_type, 111);
            assert_eq!(p.marker, i == 0);
            assert!(!p.payload.is_empty());
            if let Some((s, t)) = last {
                assert_eq!(p.sequence, s.wrapping_add(1), "sequence wraps continuously");
                assert_eq!(p.timestamp, t.wrapping_add(960));
            }
            last = Some((p.sequence, p.timestamp));
        }
        assert_eq!(
            core.stats.underruns.load(Ordering::Relaxed),
            8,
            "silence after 2 frames"
        );
        assert_eq!(core.stats.audio_packets.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn without_idle_silence_an_idle_tick_sends_nothing_and_time_runs_on() {
        let cfg = SendConfig {
            idle_silence: false,
            ..Default::default()
        };
        let (mut w, mut core) = playback(&cfg, 111, None, 100, 0).unwrap();
        for _ in 0..5 {
            assert!(
                core.next_packet().unwrap().is_none(),
                "nothing queued, nothing sent"
            );
        }
        w.write(&[1000; FRAME_SAMPLES]);
        let p = core.next_packet().unwrap().unwrap();
        assert_eq!(p.sequence, 101, "sequence numbers count packets sent");
        assert_eq!(p.timestamp, 5 * 960, "timestamps count the idle ticks");
        assert!(p.marker, "the first packet after a pause is marked");
        let (seq, ts) = (p.sequence, p.timestamp);
        w.write(&[1000; FRAME_SAMPLES]);
        let p = core.next_packet().unwrap().unwrap();
        assert_eq!((p.sequence, p.timestamp), (seq + 1, ts + 960));
        assert!(!p.marker);
        assert!(core.next_packet().unwrap().is_none());
        assert_eq!(core.stats.silence_frames.load(Ordering::Relaxed), 0);
        assert_eq!(core.stats.audio_packets.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn silence_frame_decodes_to_silence() {
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut out = [1i16; 960];
        assert_eq!(dec.decode(&OPUS_SILENCE, &mut out, false).unwrap(), 960);
        assert!(out.iter().all(|s| *s == 0));
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let cfg = SendConfig {
            ring_ms: 20,
            ..Default::default()
        };
        let (mut w, _core) = playback(&cfg, 111, None, 0, 0).unwrap();
        assert_eq!(w.write(&[0; 2000]), 960);
        assert_eq!(w.stats().samples_dropped.load(Ordering::Relaxed), 1040);
    }

    #[test]
    fn dtmf_replaces_audio_and_ends_three_times() {
        let (mut w, mut core) = playback(&SendConfig::default(), 111, Some(101), 0, 0).unwrap();
        core.next_packet().unwrap();
        assert!(w.send_dtmf(DtmfRequest {
            event: 7,
            duration_ms: 60,
            volume: 10
        }));
        let mut tones = Vec::new();
        let mut seqs = Vec::new();
        for _ in 0..7 {
            let p = core.next_packet().unwrap().unwrap();
            seqs.push(p.sequence);
            if p.payload_type == 101 {
                tones.push((p.timestamp, p.marker, p.payload.to_vec()));
            }
        }
        assert_eq!(
            tones.len(),
            5,
            "3 frames of tone, the last sent 3 times: {tones:?}"
        );
        assert!(
            tones.iter().all(|t| t.0 == 960),
            "one timestamp for the whole event"
        );
        assert!(tones[0].1 && !tones[1].1, "marker on the first packet only");
        let durations: Vec<u16> = tones
            .iter()
            .map(|t| u16::from_be_bytes([t.2[2], t.2[3]]))
            .collect();
        assert_eq!(durations, vec![960, 1920, 2880, 2880, 2880]);
        let ends: Vec<bool> = tones.iter().map(|t| t.2[1] & 0x80 != 0).collect();
        assert_eq!(ends, vec![false, false, true, true, true]);
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }
}
