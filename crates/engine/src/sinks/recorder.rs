//! The recorder: one WAV per participant on the call timeline, a mixed WAV, optional Ogg/Opus of
//! the received packets, and `manifest.json`.
//!
//! **Alignment.** Every track starts at timeline position 0 (the call's media start) and gaps are
//! written as silence, so sample *n* of every file is the same instant of the call. At close all
//! tracks are padded to the same length: the call's end position. A recording tool can overlay
//! them with no offsets.
//!
//! **Failures.** A write error (disk full, I/O error) fails that one file: it is checkpointed as
//! far as it got, the error is kept for the manifest and the metric, and the other files go on.
//! The media path never waits for the recorder: frames reach it through lock-free rings, and a
//! ring that fills drops frames (counted by the pipeline).
//!
//! **Crash safety.** WAV headers are rewritten every `checkpoint_every` of audio (default 1 s), so a
//! killed process leaves playable files missing at most that much; `fdatasync` runs every
//! `fsync_interval` and at close. `manifest.json` is written at start, rewritten on roster changes
//! and at close, always through a temporary file and a rename, so it is never half-written.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mediabot_media::{AudioFrame, FrameSource, Ssrc};
use serde::Serialize;

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

/// The manifest written next to the files.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// Graph call id.
    pub call_id: String,
    /// Sample rate of the WAV files.
    pub sample_rate: u32,
    /// Call media start, RFC 3339.
    pub media_start: String,
    /// Whether the call is still being recorded (false once closed).
    pub recording: bool,
    /// Length of the call timeline covered, in samples.
    pub timeline_samples: u64,
    /// The files.
    pub tracks: Vec<TrackEntry>,
    /// Counters from the media pipeline, filled in by the engine at close.
    pub media_stats: serde_json::Value,
}

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
        };
        r.write_manifest(true, serde_json::Value::Null)?;
        Ok(r)
    }

    /// The call folder.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Records roster facts about `source_id` (used in the manifest).
    pub fn handle_participant(&mut self, source_id: u32, meta: ParticipantMeta) {
        if let Some(t) = self.tracks.get_mut(&Some(source_id)) {
            t.entry.meta = meta.clone();
        }
        self.meta.insert(source_id, meta);
        self.manifest_dirty = true;
    }

    /// Writes one frame (a participant's or the mix).
    pub fn handle_frame(&mut self, frame: &AudioFrame<i16>) {
        let key = match frame.source {
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
                    }
                }
            }
            Err(e) => fail(track, e),
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
                    Err(e) => t.entry.error = Some(e.to_string()),
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

    #[test]
    fn header_is_valid_mid_call() {
        let c = cfg("crash");
        let dir = c.dir.clone();
        let mut r = Recorder::create(c, "call-c", "x".into(), 8).unwrap();
        for i in 0..20u64 {
            r.handle_frame(&frame(p(1), i * 960, 0.3));
        }
        // No finish: as if killed. The header declares at least the checkpointed 100 ms.
        let rd = hound::WavReader::open(dir.join("participant-1.wav")).unwrap();
        assert!(rd.len() >= 4800, "{}", rd.len());
        std::mem::forget(r);
    }
}
