//! The recorder: one WAV per participant on the call timeline, a mixed WAV, optional Ogg/Opus of
//! the received packets, and `manifest.json`.
//!
//! **Alignment.** Every track starts at timeline position 0 (the call's media start) and gaps are
//! written as silence, so sample *n* of every file is the same instant of the call. At close all
//! tracks are padded to the same length: the call's end position. A recording tool can overlay
//! them with no offsets.
//!
//! **Ogg/Opus.** With `ogg` on, each participant also gets `participant-<id>.opus`: the Opus
//! packets as received (no re-encoding), copied off the media thread through a bounded packet
//! ring (overflow drops packets and counts them in `opusPacketsDropped`). Granule position *n*
//! is timeline sample *n* at 48 kHz, like sample *n* of the WAVs: the stream is anchored at the
//! timeline position where its first packet arrived, then follows RTP time. Silence before the
//! first packet, gaps (DTX, loss, a participant who left) and the tail up to the call's end are
//! zero-length Opus frames, which decoders play as silence (or a brief concealment fade), so a
//! decoded `.opus` is as long as the WAV (to within 2.5 ms). The RTP clock is not drift-corrected
//! (the WAV path is): a sender whose clock runs 100 ppm off drifts 0.36 s per hour against it. A
//! timestamp jump (sender restart) re-anchors the stream at the packet's arrival.
//!
//! **Passthrough only.** With `participant_wav` off there are no participant WAVs: participant
//! frames are dropped on arrival and each speaker is recorded by the `.opus` file alone (the
//! engine then runs the call at 16 kHz, so `mixed.wav` and `sampleRate` are 16 kHz while Ogg
//! granules stay 48 kHz; [`Recorder::finish`] pads each `.opus` to the mix's end converted to
//! 48 kHz). The trade-off: the `.opus` is bit-exact to what arrived and about a tenth of a
//! 48 kHz WAV, but it is not drift-corrected (above), and nothing per speaker is decoded.
//!
//! **Failures.** A write error (disk full, I/O error) fails that one file: it is checkpointed as
//! far as it got, the error is kept for the manifest and the metric, and the other files go on.
//! The media path never waits for the recorder: frames reach it through lock-free rings, and a
//! ring that fills drops frames (counted by the pipeline).
//!
//! **Crash safety.** WAV headers are rewritten every `checkpoint_every` of audio (default 1 s), so a
//! killed process leaves playable files missing at most that much plus what the writer still
//! buffered (under 32 KiB: 0.34 s of a 48 kHz track; [`super::wav`]); `.opus` files keep whole
//! pages of about a second ([`super::ogg`]). `fdatasync` runs every `fsync_interval` and at
//! close, for both. `manifest.json` is written at start, rewritten after roster
//! changes (at most once a second, by the sink thread) and at close, always through a temporary file and a rename, so it is never half-written.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mediabot_media::{AudioFrame, FrameSource, Ssrc};
use serde::Serialize;

use super::ogg::OggOpusWriter;
use super::packet_ring::TappedPacket;
use super::wav::WavWriter;

/// Recorder settings.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// The call's output folder (created).
    pub dir: PathBuf,
    /// Sample rate of the frames it receives.
    pub sample_rate: u32,
    /// Audio between header checkpoints.
    pub checkpoint_every: Duration,
    /// Audio between `fdatasync`s (zero: only at close).
    pub fsync_every: Duration,
    /// Also write each participant's received Opus packets to `participant-<id>.opus`.
    pub ogg: bool,
    /// Write participant frames to `participant-<id>.wav`. Off, participant frames are skipped
    /// on arrival (no file, no manifest track) and the per-speaker recording is the Ogg/Opus
    /// passthrough; the mix is still written.
    pub participant_wav: bool,
}

/// What the roster says about a source, for file names and the manifest.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantMeta {
    /// Graph participant id.
    pub participant_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// AAD user / application / guest id.
    pub identity_id: Option<String>,
    /// Kind of identity (`user`, `guest`, `application`, `phone`...).
    pub identity_kind: Option<String>,
    /// Joined, milliseconds on the call timeline.
    pub joined_ms: Option<u64>,
    /// Left, milliseconds on the call timeline.
    pub left_ms: Option<u64>,
}

/// One file in the manifest.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackEntry {
    /// File name inside the call folder.
    pub file: String,
    /// `participant` or `mixed`.
    pub kind: &'static str,
    /// Source id (SSRC) for participant tracks.
    pub source_id: Option<u32>,
    /// Roster facts.
    #[serde(flatten)]
    pub meta: ParticipantMeta,
    /// Samples in the file (per channel).
    pub samples: u64,
    /// Samples that carried this source's audio (the rest is silence fill).
    pub audio_samples: u64,
    /// Frames flagged as concealed (PLC/FEC) by the pipeline.
    pub concealed_frames: u64,
    /// Frames not written because the file had failed.
    pub frames_lost_to_errors: u64,
    /// The write error that failed this file, if any.
    pub error: Option<String>,
}

/// One Ogg/Opus file in the manifest.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpusEntry {
    /// File name inside the call folder.
    pub file: String,
    /// Source id (SSRC).
    pub source_id: u32,
    /// Duration in 48 kHz samples (the last granule position).
    pub samples: u64,
    /// Opus packets written as received.
    pub packets: u64,
    /// Samples of silence (zero-length frames) written before, between and after packets.
    pub filled_samples: u64,
    /// Packets whose TOC did not parse.
    pub malformed_packets: u64,
    /// Times the stream was re-anchored (timestamp jump).
    pub reanchors: u64,
    /// The write error that failed this file, if any.
    pub error: Option<String>,
}

/// The manifest written next to the files.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// Graph call id.
    pub call_id: String,
    /// Sample rate of the WAV files and of `timeline_samples`: the call pipeline's rate, 48 kHz
    /// with per-speaker WAVs, 16 kHz with `participant_wav` off (Ogg granules are 48 kHz always).
    pub sample_rate: u32,
    /// Call media start, RFC 3339.
    pub media_start: String,
    /// Whether the call is still being recorded (false once closed).
    pub recording: bool,
    /// Length of the call timeline covered, in samples.
    pub timeline_samples: u64,
    /// The files.
    pub tracks: Vec<TrackEntry>,
    /// Ogg/Opus files of the received packets (when enabled).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opus: Vec<OpusEntry>,
    /// Opus packets that never reached the recorder (its packet ring was full).
    pub opus_packets_dropped: u64,
    /// Counters from the media pipeline, filled in by the engine at close.
    pub media_stats: serde_json::Value,
}

#[derive(Debug)]
struct OpusTrack {
    entry: OpusEntry,
    writer: Option<OggOpusWriter>,
    /// Timeline position (48 kHz) and unwrapped RTP time of the anchor packet.
    anchor_pos: i64,
    anchor_ts: i64,
    /// Last RTP timestamp seen and its unwrapped value.
    last_ts: u32,
    last_ext: i64,
    /// Packets held until the anchor is known (see [`OPUS_HOLD_SAMPLES`]).
    held: Vec<(i64, TappedPacket)>,
    /// Smallest arrival position minus unwrapped RTP time seen while holding.
    min_transit: i64,
    /// Granule (48 kHz) at the last `fdatasync` request.
    synced_granule: u64,
}

/// The first second of a stream is held before it is placed: the WAV path places audio by the
/// lower envelope of transit times (arrival minus media time), and the first packets of a stream
/// often arrive late (connection set-up, a sender catching up), so anchoring on the first packet
/// alone would put the `.opus` behind its WAV.
const OPUS_HOLD_SAMPLES: u64 = 48_000;
/// Most packets held (a second of 10 ms packets).
const OPUS_HOLD_PACKETS: usize = 100;

/// A jump of RTP time (either way) past this re-anchors an Ogg stream (10 minutes at 48 kHz).
const OPUS_REANCHOR: i64 = 10 * 60 * 48_000;

#[derive(Debug)]
struct Track {
    entry: TrackEntry,
    writer: Option<WavWriter>,
    since_checkpoint: u64,
    since_sync: u64,
}

/// Records one call.
#[derive(Debug)]
pub struct Recorder {
    cfg: RecorderConfig,
    call_id: String,
    media_start: String,
    tracks: BTreeMap<Option<u32>, Track>,
    meta: BTreeMap<u32, ParticipantMeta>,
    timeline_end: u64,
    max_tracks: usize,
    /// Frames refused because `max_tracks` was reached.
    pub refused_frames: u64,
    manifest_dirty: bool,
    opus: BTreeMap<u32, OpusTrack>,
    /// Opus packets dropped before reaching the recorder (set by the sink thread).
    pub opus_packets_dropped: u64,
    /// Files that failed so far (create or write errors), for the error metric.
    failures: u64,
}

impl Recorder {
    /// Creates the call folder and an initial manifest.
    ///
    /// # Errors
    /// When the folder or the manifest cannot be written: nothing can be recorded then.
    pub fn create(
        cfg: RecorderConfig,
        call_id: &str,
        media_start: String,
        max_tracks: usize,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(&cfg.dir)?;
        let mut r = Self {
            cfg,
            call_id: call_id.to_string(),
            media_start,
            tracks: BTreeMap::new(),
            meta: BTreeMap::new(),
            timeline_end: 0,
            max_tracks,
            refused_frames: 0,
            manifest_dirty: true,
            opus: BTreeMap::new(),
            opus_packets_dropped: 0,
            failures: 0,
        };
        r.write_manifest(true, serde_json::Value::Null)?;
        Ok(r)
    }

    /// The call folder.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Records roster facts about `source_id` (used in the manifest). Facts equal to those
    /// already recorded change nothing, so a repeated roster does not rewrite the manifest.
    pub fn handle_participant(&mut self, source_id: u32, meta: ParticipantMeta) {
        if self.meta.get(&source_id) == Some(&meta) {
            return;
        }
        if let Some(t) = self.tracks.get_mut(&Some(source_id)) {
            t.entry.meta = meta.clone();
        }
        self.meta.insert(source_id, meta);
        self.manifest_dirty = true;
    }

    /// Files that failed so far (a counter that only grows; the sink thread turns its increase
    /// into `mediabot_recorder_errors_total`).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Writes one received Opus packet to its participant's `.opus` file (when `ogg` is on).
    pub fn handle_packet(&mut self, pkt: &TappedPacket) {
        if !self.cfg.ogg {
            return;
        }
        if !self.opus.contains_key(&pkt.ssrc) {
            if self.opus.len() >= self.max_tracks {
                self.refused_frames += 1;
                return;
            }
            let t = self.open_opus(pkt);
            self.opus.insert(pkt.ssrc, t);
            self.manifest_dirty = true;
        }
        let Some(t) = self.opus.get_mut(&pkt.ssrc) else {
            return;
        };
        if t.writer.is_none() {
            return;
        }
        let ext = t.last_ext + i64::from(pkt.timestamp.wrapping_sub(t.last_ts) as i32);
        if t.min_transit != i64::MAX || (t.held.is_empty() && t.entry.packets == 0) {
            // Still holding: learn the transit envelope, place nothing yet.
            t.min_transit = t.min_transit.min(pkt.arrival_pos as i64 - ext);
            t.last_ts = pkt.timestamp;
            t.last_ext = ext;
            let first = t.held.first().map_or(pkt.arrival_pos, |h| h.1.arrival_pos);
            t.held.push((ext, pkt.clone()));
            if pkt.arrival_pos.saturating_sub(first) < OPUS_HOLD_SAMPLES
                && t.held.len() < OPUS_HOLD_PACKETS
            {
                return;
            }
            t.anchor_ts = 0;
            t.anchor_pos = t.min_transit;
            t.min_transit = i64::MAX;
            let held = std::mem::take(&mut t.held);
            for (ext, p) in &held {
                let pos = (t.anchor_pos + ext).max(0) as u64;
                if !write_opus(t, pos, &p.payload) {
                    self.failures += 1;
                    self.manifest_dirty = true;
                    return;
                }
            }
            return;
        }
        let Some(w) = t.writer.as_mut() else {
            return;
        };
        let mut pos = t.anchor_pos + (ext - t.anchor_ts);
        if (ext - t.last_ext).abs() > OPUS_REANCHOR || pos < 0 {
            // A sender restart or a wild timestamp: place it where it arrived.
            t.entry.reanchors += 1;
            t.anchor_pos = pkt.arrival_pos.max(w.granule()) as i64;
            t.anchor_ts = ext;
            pos = t.anchor_pos;
        }
        t.last_ts = pkt.timestamp;
        t.last_ext = ext;
        let fsync_every = duration_samples(self.cfg.fsync_every, super::ogg::GRANULE_RATE);
        if !write_opus(t, pos as u64, &pkt.payload) || !sync_opus(t, fsync_every) {
            self.failures += 1;
            self.manifest_dirty = true;
        }
    }

    /// Places packets still held (a stream shorter than the hold) before closing.
    fn flush_held(t: &mut OpusTrack) -> bool {
        if t.held.is_empty() {
            return true;
        }
        t.anchor_ts = 0;
        t.anchor_pos = t.min_transit;
        t.min_transit = i64::MAX;
        let held = std::mem::take(&mut t.held);
        held.iter().all(|(ext, p)| {
            let pos = (t.anchor_pos + ext).max(0) as u64;
            write_opus(t, pos, &p.payload)
        })
    }

    fn open_opus(&mut self, pkt: &TappedPacket) -> OpusTrack {
        let file = format!("participant-{}.opus", pkt.ssrc);
        let mut entry = OpusEntry {
            file: file.clone(),
            source_id: pkt.ssrc,
            ..OpusEntry::default()
        };
        let name = self
            .meta
            .get(&pkt.ssrc)
            .and_then(|m| m.display_name.clone())
            .unwrap_or_default();
        let id = pkt.ssrc.to_string();
        let tags = [("SOURCE_ID", id.as_str()), ("TITLE", name.as_str())];
        let writer = match OggOpusWriter::create(self.cfg.dir.join(&file), 2, pkt.ssrc, &tags) {
            Ok(mut w) => {
                w.set_max_gap_fill(u64::MAX);
                w.set_position(0);
                Some(w)
            }
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "recorder: cannot create file");
                entry.error = Some(e.to_string());
                self.failures += 1;
                None
            }
        };
        OpusTrack {
            entry,
            writer,
            anchor_pos: pkt.arrival_pos as i64,
            anchor_ts: i64::from(pkt.timestamp),
            last_ts: pkt.timestamp,
            last_ext: i64::from(pkt.timestamp),
            held: Vec::with_capacity(OPUS_HOLD_PACKETS),
            min_transit: i64::MAX,
            synced_granule: 0,
        }
    }

    /// Writes one frame (a participant's or the mix).
    pub fn handle_frame(&mut self, frame: &AudioFrame<i16>) {
        let key = match frame.source {
            FrameSource::Participant { .. } if !self.cfg.participant_wav => return,
            FrameSource::Participant { ssrc, .. } => Some(ssrc.0),
            FrameSource::Mixed => None,
        };
        if !self.tracks.contains_key(&key) {
            if key.is_some()
                && self.tracks.keys().filter(|k| k.is_some()).count() >= self.max_tracks
            {
                self.refused_frames += 1;
                return;
            }
            let t = self.open_track(key);
            self.tracks.insert(key, t);
            self.manifest_dirty = true;
        }
        let rate = u64::from(self.cfg.sample_rate);
        let checkpoint_every = duration_samples(self.cfg.checkpoint_every, rate);
        let fsync_every = duration_samples(self.cfg.fsync_every, rate);
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        let pos = frame.position.0;
        let end = pos + frame.len() as u64;
        self.timeline_end = self.timeline_end.max(end);
        if frame.flags.concealed {
            track.entry.concealed_frames += 1;
        }
        let Some(w) = track.writer.as_mut() else {
            track.entry.frames_lost_to_errors += 1;
            return;
        };
        let have = w.samples_written();
        let res = if pos >= have {
            // Fill the gap since this track's last frame with silence, then the frame.
            w.write_silence(pos - have)
                .and_then(|()| w.write_samples(frame.samples()))
        } else if end > have {
            // Overlap (should not happen: the pipeline's grid is monotonic): keep the new tail.
            let skip = (have - pos) as usize;
            w.write_samples(&frame.samples()[skip..])
        } else {
            Ok(())
        };
        match res {
            Ok(()) => {
                if !frame.flags.silence {
                    track.entry.audio_samples += frame.len() as u64;
                }
                let written = w.samples_written() - have;
                track.since_checkpoint += written;
                track.since_sync += written;
                if track.since_checkpoint >= checkpoint_every {
                    let sync = fsync_every > 0 && track.since_sync >= fsync_every;
                    track.since_checkpoint = 0;
                    if sync {
                        track.since_sync = 0;
                    }
                    if let Err(e) = w.checkpoint(sync) {
                        fail(track, e);
                        self.failures += 1;
                        self.manifest_dirty = true;
                    }
                }
            }
            Err(e) => {
                fail(track, e);
                self.failures += 1;
                self.manifest_dirty = true;
            }
        }
    }

    /// Rewrites the manifest if the roster or the set of files changed.
    ///
    /// # Errors
    /// I/O errors writing it.
    pub fn flush_manifest(&mut self) -> io::Result<()> {
        if self.manifest_dirty {
            self.write_manifest(true, serde_json::Value::Null)?;
        }
        Ok(())
    }

    /// Pads every track to the call's end, finalizes the files and writes the final manifest.
    ///
    /// # Errors
    /// I/O errors writing the manifest (file errors are reported inside it).
    pub fn finish(mut self, media_stats: serde_json::Value) -> io::Result<Manifest> {
        let end = self.timeline_end;
        for t in self.tracks.values_mut() {
            if let Some(mut w) = t.writer.take() {
                let have = w.samples_written();
                let res = w
                    .write_silence(end.saturating_sub(have))
                    .and_then(|()| w.finalize());
                match res {
                    Ok(n) => t.entry.samples = n,
                    Err(e) => {
                        t.entry.error = Some(e.to_string());
                        self.failures += 1;
                    }
                }
            }
        }
        // The rate check keeps 48 kHz granules and WAV samples the same unit.
        let end48 = end * 48_000 / u64::from(self.cfg.sample_rate.max(1));
        for t in self.opus.values_mut() {
            if !Self::flush_held(t) {
                self.failures += 1;
            }
            if let Some(mut w) = t.writer.take() {
                let padded = w.pad_to(end48);
                t.entry.filled_samples = w.filled_samples;
                t.entry.malformed_packets = w.malformed_packets;
                match padded.and_then(|()| w.finish()) {
                    Ok(n) => t.entry.samples = n,
                    Err(e) => {
                        t.entry.error = Some(e.to_string());
                        self.failures += 1;
                    }
                }
            }
        }
        self.write_manifest(false, media_stats)
    }

    fn open_track(&mut self, key: Option<u32>) -> Track {
        let (file, kind, meta) = match key {
            Some(id) => (
                format!("participant-{id}.wav"),
                "participant",
                self.meta.get(&id).cloned().unwrap_or_default(),
            ),
            None => ("mixed.wav".to_string(), "mixed", ParticipantMeta::default()),
        };
        let mut entry = TrackEntry {
            file: file.clone(),
            kind,
            source_id: key,
            meta,
            samples: 0,
            audio_samples: 0,
            concealed_frames: 0,
            frames_lost_to_errors: 0,
            error: None,
        };
        let writer = match WavWriter::create(self.cfg.dir.join(&file), self.cfg.sample_rate, 1) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "recorder: cannot create file");
                entry.error = Some(e.to_string());
                self.failures += 1;
                None
            }
        };
        Track {
            entry,
            writer,
            since_checkpoint: 0,
            since_sync: 0,
        }
    }

    fn write_manifest(
        &mut self,
        recording: bool,
        media_stats: serde_json::Value,
    ) -> io::Result<Manifest> {
        let tracks = self
            .tracks
            .values()
            .map(|t| {
                let mut e = t.entry.clone();
                if let Some(w) = &t.writer {
                    e.samples = w.samples_written();
                }
                e
            })
            .collect();
        let m = Manifest {
            version: 1,
            call_id: self.call_id.clone(),
            sample_rate: self.cfg.sample_rate,
            media_start: self.media_start.clone(),
            recording,
            timeline_samples: self.timeline_end,
            tracks,
            opus: self
                .opus
                .values()
                .map(|t| {
                    let mut e = t.entry.clone();
                    if let Some(w) = &t.writer {
                        e.samples = w.granule();
                        e.filled_samples = w.filled_samples;
                    }
                    e
                })
                .collect(),
            opus_packets_dropped: self.opus_packets_dropped,
            media_stats,
        };
        let tmp = self.cfg.dir.join(".manifest.json.tmp");
        let body = serde_json::to_vec_pretty(&m).map_err(io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, self.cfg.dir.join("manifest.json"))?;
        self.manifest_dirty = false;
        Ok(m)
    }
}

/// Writes one packet to an Ogg track; on error closes it and returns `false`.
fn write_opus(t: &mut OpusTrack, pos: u64, payload: &[u8]) -> bool {
    let Some(w) = t.writer.as_mut() else {
        return true;
    };
    match w.write_packet(pos, payload) {
        Ok(()) => {
            t.entry.packets += 1;
            true
        }
        Err(e) => close_opus(t, "write", &e),
    }
}

/// Asks for an `fdatasync` of an Ogg track once `every` samples (48 kHz) were written since
/// the last one (never when `every` is 0); on a background sync's error closes the track and
/// returns `false`.
fn sync_opus(t: &mut OpusTrack, every: u64) -> bool {
    let Some(w) = t.writer.as_mut() else {
        return true;
    };
    if every == 0 || w.granule().saturating_sub(t.synced_granule) < every {
        return true;
    }
    t.synced_granule = w.granule();
    match w.request_sync() {
        Ok(()) => true,
        Err(e) => close_opus(t, "sync", &e),
    }
}

/// Closes an Ogg track after its `what` (write, sync) failed with `e`: the error and the
/// duration written go to the manifest, media goes on. Returns `false` (the track failed).
fn close_opus(t: &mut OpusTrack, what: &str, e: &io::Error) -> bool {
    tracing::warn!(file = %t.entry.file, error = %e, "recorder: opus {what} failed; file closed, media continues");
    t.entry.error = Some(e.to_string());
    if let Some(w) = t.writer.take() {
        t.entry.samples = w.granule();
    }
    false
}

fn fail(track: &mut Track, e: io::Error) {
    tracing::warn!(file = %track.entry.file, error = %e, "recorder: write failed; file closed, media continues");
    if let Some(mut w) = track.writer.take() {
        // Keep what was written playable; this may fail too on a full disk.
        let _ = w.checkpoint(false);
        track.entry.samples = w.samples_written();
    }
    track.entry.error = Some(e.to_string());
}

fn duration_samples(d: Duration, rate: u64) -> u64 {
    (d.as_secs_f64() * rate as f64) as u64
}

/// The SSRC of a participant frame, if it is one.
pub fn frame_ssrc(frame: &AudioFrame<i16>) -> Option<Ssrc> {
    match frame.source {
        FrameSource::Participant { ssrc, .. } => Some(ssrc),
        FrameSource::Mixed => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mediabot_media::TimelinePos;

    fn frame(source: FrameSource, pos: u64, value: f32) -> AudioFrame<i16> {
        let mut f = AudioFrame::<i16>::empty();
        f.source = source;
        f.position = TimelinePos(pos);
        f.set_samples_f32(&[value; 960]);
        f.flags.silence = value == 0.0;
        f
    }

    fn p(ssrc: u32) -> FrameSource {
        FrameSource::Participant {
            ssrc: Ssrc(ssrc),
            participant: None,
        }
    }

    fn cfg(name: &str) -> RecorderConfig {
        let dir = std::env::temp_dir().join(format!("mediabot-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        RecorderConfig {
            dir,
            sample_rate: 48_000,
            checkpoint_every: Duration::from_millis(100),
            fsync_every: Duration::from_secs(1),
            ogg: true,
            participant_wav: true,
        }
    }

    #[test]
    fn tracks_line_up_on_the_timeline_and_end_equal() {
        let c = cfg("align");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-a", "2026-11-22T00:00:00Z".into(), 8).unwrap();
        r.handle_participant(
            7,
            ParticipantMeta {
                display_name: Some("Ada".into()),
                ..Default::default()
            },
        );
        // Speaker 7 from 0 to 40 ms; speaker 9 joins at 100 ms for 20 ms; mix runs throughout.
        for i in 0..10u64 {
            r.handle_frame(&frame(FrameSource::Mixed, i * 960, 0.1));
        }
        r.handle_frame(&frame(p(7), 0, 0.5));
        r.handle_frame(&frame(p(7), 960, 0.5));
        r.handle_frame(&frame(p(9), 4800, -0.25));
        let m = r.finish(serde_json::json!({"lost": 0})).unwrap();
        assert_eq!(m.timeline_samples, 9600);
        assert!(!m.recording);
        for t in &m.tracks {
            assert_eq!(t.samples, 9600, "{t:?}");
            let rd = hound::WavReader::open(dir.join(&t.file)).unwrap();
            assert_eq!(rd.len(), 9600);
        }
        let s9: Vec<i16> = hound::WavReader::open(dir.join("participant-9.wav"))
            .unwrap()
            .into_samples()
            .map(|s| s.unwrap())
            .collect();
        assert!(s9[..4800].iter().all(|&s| s == 0));
        assert!(
            s9[4800..5760]
                .iter()
                .all(|&s| s == <i16 as mediabot_media::Sample>::from_f32(-0.25))
        );
        assert!(s9[5760..].iter().all(|&s| s == 0));
        let ada = m.tracks.iter().find(|t| t.source_id == Some(7)).unwrap();
        assert_eq!(ada.meta.display_name.as_deref(), Some("Ada"));
        assert_eq!(ada.audio_samples, 1920);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["tracks"].as_array().unwrap().len(), 3);
        assert_eq!(manifest["mediaStats"]["lost"], 0);
    }

    #[test]
    fn an_unchanged_roster_does_not_rewrite_the_manifest() {
        let c = cfg("roster");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-r", "2026-11-22T00:00:00Z".into(), 8).unwrap();
        let ada = ParticipantMeta {
            display_name: Some("Ada".into()),
            ..Default::default()
        };
        r.handle_participant(7, ada.clone());
        r.handle_frame(&frame(p(7), 0, 0.5));
        r.flush_manifest().unwrap();
        let manifest = dir.join("manifest.json");
        // Remove the file: only a rewrite can bring it back.
        std::fs::remove_file(&manifest).unwrap();
        r.handle_participant(7, ada.clone());
        r.flush_manifest().unwrap();
        assert!(
            !manifest.exists(),
            "the same roster facts rewrote the manifest"
        );
        r.handle_participant(
            7,
            ParticipantMeta {
                display_name: Some("Ada L.".into()),
                ..ada
            },
        );
        r.flush_manifest().unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        assert!(m.to_string().contains("Ada L."));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_file_does_not_stop_the_others() {
        let c = cfg("fail");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-b", "x".into(), 8).unwrap();
        // A directory where the participant file should be: creating it fails.
        std::fs::create_dir_all(dir.join("participant-5.wav")).unwrap();
        r.handle_frame(&frame(p(5), 0, 0.5));
        r.handle_frame(&frame(p(5), 960, 0.5));
        r.handle_frame(&frame(FrameSource::Mixed, 0, 0.5));
        let m = r.finish(serde_json::Value::Null).unwrap();
        let bad = m.tracks.iter().find(|t| t.source_id == Some(5)).unwrap();
        assert!(bad.error.is_some());
        assert_eq!(bad.frames_lost_to_errors, 2);
        let mixed = m.tracks.iter().find(|t| t.kind == "mixed").unwrap();
        assert!(mixed.error.is_none());
        assert_eq!(mixed.samples, 1920);
    }

    /// 20 ms packets of `ssrc` from packet `from` to `to`, as the media thread taps them.
    fn opus_packets(r: &mut Recorder, ssrc: u32, from: u64, to: u64) {
        for i in from..to {
            r.handle_packet(&TappedPacket {
                ssrc,
                timestamp: 1000 + i as u32 * 960,
                sequence: i as u16,
                arrival_pos: i * 960,
                payload: vec![0xf8, 0xff, 0xfe],
            });
        }
    }

    #[test]
    fn ogg_tracks_are_synced_every_fsync_interval_and_a_failed_sync_fails_the_file() {
        for (name, fsync_secs) in [("ogg-sync", 1), ("ogg-nosync", 0)] {
            let mut c = cfg(name);
            c.participant_wav = false;
            c.fsync_every = Duration::from_secs(fsync_secs);
            let mut r = Recorder::create(c, "call-s", "x".into(), 8).unwrap();
            // Past the first second's hold: the track is placed and writing.
            opus_packets(&mut r, 7, 0, 60);
            let t = r.opus.get(&7).unwrap();
            // A background sync of the file fails (an I/O error on the device).
            t.writer
                .as_ref()
                .unwrap()
                .sync_handle()
                .set_error(io::Error::other("EIO from the device"));
            // Another 1.2 s: with syncs every second, the next request meets the error and the
            // file is closed with it; with syncs only at close, nothing asks until the end.
            opus_packets(&mut r, 7, 60, 120);
            let m = r.finish(serde_json::Value::Null);
            if fsync_secs > 0 {
                let m = m.unwrap();
                let e = m.opus[0].error.as_deref().unwrap();
                assert!(e.contains("EIO"), "{e}");
                // What came before the error is counted (not the packets after it).
                assert!((60..120).contains(&m.opus[0].packets), "{:?}", m.opus[0]);
            } else {
                let m = m.unwrap();
                let e = m.opus[0].error.as_deref().unwrap();
                assert!(e.contains("EIO"), "the final sync reports it: {e}");
                assert_eq!(m.opus[0].packets, 120);
            }
        }
    }

    #[test]
    fn disk_full_fails_one_file_and_the_rest_is_complete() {
        let c = cfg("full");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-full", "x".into(), 8).unwrap();
        // Writes to /dev/full fail with ENOSPC, as on a full disk.
        std::os::unix::fs::symlink("/dev/full", dir.join("participant-5.wav")).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.join("participant-6.opus")).unwrap();
        for i in 0..50u64 {
            r.handle_frame(&frame(p(5), i * 960, 0.5));
            r.handle_frame(&frame(p(6), i * 960, 0.25));
            r.handle_frame(&frame(FrameSource::Mixed, i * 960, 0.1));
            for ssrc in [5, 6] {
                opus_packets(&mut r, ssrc, i, i + 1);
            }
        }
        assert_eq!(r.failures(), 2, "one WAV and one Ogg file failed");
        let m = r.finish(serde_json::Value::Null).unwrap();
        let bad = m.tracks.iter().find(|t| t.source_id == Some(5)).unwrap();
        assert!(
            bad.error.as_deref().unwrap().contains("No space left"),
            "{:?}",
            bad.error
        );
        assert_eq!(bad.frames_lost_to_errors, 50);
        for t in m.tracks.iter().filter(|t| t.source_id != Some(5)) {
            assert!(t.error.is_none(), "{t:?}");
            assert_eq!(t.samples, 48_000);
            assert_eq!(
                hound::WavReader::open(dir.join(&t.file)).unwrap().len(),
                48_000
            );
        }
        let ok = m.opus.iter().find(|o| o.source_id == 5).unwrap();
        assert!(ok.error.is_none());
        assert_eq!(ok.packets, 50);
        assert!(
            m.opus
                .iter()
                .find(|o| o.source_id == 6)
                .unwrap()
                .error
                .is_some()
        );
        // The manifest on disk says the same.
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let t5 = on_disk["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["sourceId"] == 5)
            .unwrap();
        assert!(t5["error"].is_string());
    }

    /// Feeds 1 s of a 16 kHz call: two speakers' frames and packets, and the mix.
    fn feed_16k(r: &mut Recorder) {
        let f16 = |source, pos: u64, value: f32| {
            let mut f = AudioFrame::<i16>::empty();
            f.source = source;
            f.position = TimelinePos(pos);
            f.set_samples_f32(&[value; 320]);
            f
        };
        for i in 0..50u64 {
            r.handle_frame(&f16(p(5), i * 320, 0.5));
            r.handle_frame(&f16(p(6), i * 320, 0.25));
            r.handle_frame(&f16(FrameSource::Mixed, i * 320, 0.1));
            for ssrc in [5, 6] {
                opus_packets(r, ssrc, i, i + 1);
            }
        }
    }

    #[test]
    fn participant_wav_off_writes_the_mix_and_the_opus_but_no_participant_wav() {
        let mut c = cfg("nowav");
        c.sample_rate = 16_000;
        c.participant_wav = false;
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-n", "x".into(), 8).unwrap();
        feed_16k(&mut r);
        let m = r.finish(serde_json::Value::Null).unwrap();
        assert_eq!(m.sample_rate, 16_000);
        assert_eq!(m.timeline_samples, 16_000, "one second at 16 kHz");
        assert_eq!(m.tracks.len(), 1, "the mix alone: {:?}", m.tracks);
        assert_eq!(m.tracks[0].kind, "mixed");
        let rd = hound::WavReader::open(dir.join("mixed.wav")).unwrap();
        assert_eq!(rd.spec().sample_rate, 16_000);
        assert_eq!(rd.len(), 16_000);
        for ssrc in [5, 6] {
            assert!(!dir.join(format!("participant-{ssrc}.wav")).exists());
            let o = m.opus.iter().find(|o| o.source_id == ssrc).unwrap();
            assert_eq!(o.packets, 50);
            assert!(o.error.is_none());
            assert_eq!(
                o.samples, 48_000,
                "granules at 48 kHz, padded to the mix's end"
            );
            assert!(dir.join(&o.file).exists());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn participant_wav_on_writes_the_same_input_per_speaker() {
        let mut c = cfg("wav16");
        c.sample_rate = 16_000;
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-w", "x".into(), 8).unwrap();
        feed_16k(&mut r);
        let m = r.finish(serde_json::Value::Null).unwrap();
        assert_eq!(m.tracks.len(), 3);
        for ssrc in [5, 6] {
            let rd = hound::WavReader::open(dir.join(format!("participant-{ssrc}.wav"))).unwrap();
            assert_eq!(rd.len(), 16_000);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn header_is_valid_mid_call() {
        let c = cfg("crash");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-c", "x".into(), 8).unwrap();
        for i in 0..20u64 {
            r.handle_frame(&frame(p(1), i * 960, 0.3));
        }
        // No finish: as if killed. 0.4 s written, checkpointed every 100 ms: the header declares
        // the first chunk, the one whole chunk in the file (0.34 s).
        let rd = hound::WavReader::open(dir.join("participant-1.wav")).unwrap();
        assert_eq!(rd.len(), (32_768 - 44) / 2);
        std::mem::forget(r);
    }
}
