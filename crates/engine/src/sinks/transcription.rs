//! The transcription feed: per-speaker 16 kHz mono PCM16 for a speech recognizer, with speaker
//! identity, speaker changes and voice-activity utterance boundaries.
//!
//! [`FeedState`] is the sans-IO core: fed 20 ms frames and roster facts, it produces
//! [`FeedMessage`]s (JSON text and binary audio) in the order a consumer must see them, and keeps
//! a bounded backlog for when the transport is down. Two drivers carry the messages:
//! a WebSocket client with reconnect ([`crate::sinks::transcription_ws`]) and the file variant
//! ([`FileFeed`], JSONL + one WAV per speaker) that `mediabot demo` uses.
//!
//! The wire protocol is documented in `docs/transcription-protocol.md`; in short, one WebSocket per
//! call, JSON text messages (`session.start`, `speaker.add`, `speaker.update`, `speaker.dominant`,
//! `utterance.start`, `utterance.end`, `gap`, `session.stop`) and binary audio messages
//! `[u32 LE sourceId][u64 LE position in 16 kHz samples][PCM16LE samples]`.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::transcription_ws::FeedHandle;
use super::wav::WavWriter;

/// Samples in one 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;

/// Protocol version in `session.start`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of the binary audio message header.
pub const AUDIO_HEADER_LEN: usize = 12;

/// One message for the consumer.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedMessage {
    /// A JSON text message.
    Text(String),
    /// A binary audio message (header + PCM16LE).
    Audio(Vec<u8>),
}

/// Who a stream belongs to, as far as the roster knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeakerInfo {
    /// Graph participant id, when the roster has named the source.
    pub participant_id: Option<String>,
    /// Display name from the participant's identity.
    pub display_name: Option<String>,
    /// AAD user / application id, when known.
    pub identity_id: Option<String>,
}

/// Voice-activity settings for utterance boundaries.
#[derive(Clone, Copy, Debug)]
pub struct VadConfig {
    /// Frame RMS level, in dBFS, above which a frame counts as speech.
    pub threshold_dbfs: f32,
    /// Consecutive speech frames that open an utterance.
    pub start_frames: u32,
    /// Consecutive non-speech frames that close it (hangover).
    pub end_frames: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold_dbfs: -45.0,
            start_frames: 2,
            end_frames: 25,
        }
    }
}

#[derive(Debug)]
struct Speaker {
    source_id: u32,
    info: SpeakerInfo,
    /// Next expected position (16 kHz samples); `None` before the first frame.
    next_pos: Option<u64>,
    speech_run: u32,
    silence_run: u32,
    in_utterance: bool,
    utterance_start: u64,
}

/// The sans-IO feed of one call.
#[derive(Debug)]
pub struct FeedState {
    call_id: String,
    vad: VadConfig,
    speakers: Vec<Speaker>,
    max_speakers: usize,
    dominant: Option<u32>,
    backlog: VecDeque<FeedMessage>,
    /// Backlog bound in audio messages (each 20 ms).
    max_backlog_audio: usize,
    backlog_audio: usize,
    /// Audio frames dropped from the backlog while the consumer was away (per source id, first
    /// dropped position, samples), reported as `gap` messages.
    dropped: Vec<(u32, u64, u64)>,
    /// Total audio frames dropped because the backlog was full.
    pub dropped_frames: u64,
    /// Where each dropped frame is also counted, live (the engine's
    /// `mediabot_transcription_frames_dropped_total`), when set.
    drop_counter: Option<Arc<AtomicU64>>,
    /// Frames refused because the call already has `max_speakers` streams.
    pub refused_frames: u64,
    /// Audio message buffers given back by the writer ([`FeedState::recycle`]) or freed by a
    /// backlog overflow, reused by [`FeedState::handle_frame`]: in steady state a frame allocates
    /// nothing (an allocation on the sink thread freed on the writer's cost both threads).
    spare: Vec<Vec<u8>>,
}

/// Most spare audio buffers a feed keeps: a writer's batch (the frames of one 20 ms poll, one per
/// speaker, plus slack); about 42 KiB per call at 16 kHz.
const MAX_SPARE_BUFFERS: usize = 64;

/// Largest buffer kept for reuse (an audio message of 20 ms at 16 kHz is 652 bytes).
const MAX_SPARE_CAPACITY: usize = 4096;

impl FeedState {
    /// A feed for `call_id` keeping at most `backlog_secs` of audio while the consumer is away.
    pub fn new(
        call_id: impl Into<String>,
        vad: VadConfig,
        backlog_secs: u64,
        max_speakers: usize,
    ) -> Self {
        let call_id = call_id.into();
        let mut s = Self {
            call_id,
            vad,
            speakers: Vec::new(),
            max_speakers,
            dominant: None,
            backlog: VecDeque::new(),
            max_backlog_audio: (backlog_secs as usize * 50).max(1),
            backlog_audio: 0,
            dropped: Vec::new(),
            dropped_frames: 0,
            drop_counter: None,
            refused_frames: 0,
            spare: Vec::new(),
        };
        let start = s.session_start(false);
        s.backlog.push_back(start);
        s
    }

    /// Also counts every audio frame dropped from a full backlog in `counter`, as it happens: a
    /// process-wide metric sees a consumer that falls behind while the call still runs.
    #[must_use]
    pub fn counting_drops_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.drop_counter = Some(counter);
        self
    }

    /// The `session.start` message; sent first on every (re)connection.
    pub fn session_start(&self, resumed: bool) -> FeedMessage {
        FeedMessage::Text(
            json!({
                "type": "session.start",
                "version": PROTOCOL_VERSION,
                "callId": self.call_id,
                "resumed": resumed,
                "audio": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 1, "frameMs": 20},
            })
            .to_string(),
        )
    }

    /// What a new connection must receive before the backlog: `session.start` with
    /// `resumed: true` and a `speaker.add` for every speaker known so far.
    pub fn resume_messages(&self) -> Vec<FeedMessage> {
        let mut v = vec![self.session_start(true)];
        for sp in &self.speakers {
            v.push(FeedMessage::Text(
                speaker_json("speaker.add", sp.source_id, &sp.info).to_string(),
            ));
        }
        v
    }

    /// Announces or updates what the roster knows about `source_id`.
    pub fn handle_speaker_info(&mut self, source_id: u32, info: &SpeakerInfo) {
        let known = self.speakers.iter().any(|s| s.source_id == source_id);
        let kind = if known {
            "speaker.update"
        } else {
            "speaker.add"
        };
        if !known && !self.add_speaker(source_id) {
            return;
        }
        if let Some(sp) = self.speakers.iter_mut().find(|s| s.source_id == source_id) {
            sp.info = info.clone();
        }
        self.push_text(speaker_json(kind, source_id, info));
    }

    /// Reports a dominant-speaker change (`None`: nobody is speaking).
    pub fn handle_dominant(&mut self, source_id: Option<u32>, position: u64) {
        if self.dominant != source_id {
            self.dominant = source_id;
            self.push_text(
                json!({"type": "speaker.dominant", "sourceId": source_id, "position": position}),
            );
        }
    }

    /// Feeds one 20 ms frame of `source_id` at timeline `position` (16 kHz samples).
    pub fn handle_frame(&mut self, source_id: u32, position: u64, pcm: &[i16]) {
        let idx = match self.speakers.iter().position(|s| s.source_id == source_id) {
            Some(i) => i,
            None => {
                if !self.add_speaker(source_id) {
                    self.refused_frames += 1;
                    return;
                }
                self.push_text(json!({"type": "speaker.add", "sourceId": source_id}));
                self.speakers.len() - 1
            }
        };
        // Gaps in one speaker's positions are stated, so consumers can keep time.
        if let Some(next) = self.speakers[idx].next_pos
            && position > next
        {
            self.push_text(json!({
                "type": "gap", "sourceId": source_id, "position": next,
                "samples": position - next, "reason": "no_audio",
            }));
        }
        let end = position + pcm.len() as u64;
        self.speakers[idx].next_pos = Some(end);

        let speech = rms_dbfs(pcm) > self.vad.threshold_dbfs;
        let vad = self.vad;
        let sp = &mut self.speakers[idx];
        let mut boundary = None;
        if speech {
            sp.speech_run += 1;
            sp.silence_run = 0;
            if !sp.in_utterance && sp.speech_run == 1 {
                sp.utterance_start = position;
            }
            if !sp.in_utterance && sp.speech_run >= vad.start_frames {
                sp.in_utterance = true;
                boundary = Some(("utterance.start", sp.utterance_start));
            }
        } else {
            sp.speech_run = 0;
            if sp.in_utterance {
                sp.silence_run += 1;
                if sp.silence_run >= vad.end_frames {
                    sp.in_utterance = false;
                    sp.silence_run = 0;
                    boundary = Some(("utterance.end", end));
                }
            }
        }
        if let Some((kind, at)) = boundary {
            self.push_text(json!({"type": kind, "sourceId": source_id, "position": at}));
        }

        let mut msg = self.spare.pop().unwrap_or_default();
        msg.clear();
        msg.reserve(AUDIO_HEADER_LEN + pcm.len() * 2);
        msg.extend_from_slice(&source_id.to_le_bytes());
        msg.extend_from_slice(&position.to_le_bytes());
        msg.extend_from_slice(&super::wav::le_bytes(pcm));
        self.push_audio(msg);
    }

    /// Ends the session: closes open utterances and queues `session.stop`.
    pub fn handle_stop(&mut self, reason: &str) {
        let ends: Vec<(u32, u64)> = self
            .speakers
            .iter_mut()
            .filter(|s| s.in_utterance)
            .map(|s| {
                s.in_utterance = false;
                (s.source_id, s.next_pos.unwrap_or(0))
            })
            .collect();
        for (id, at) in ends {
            self.push_text(json!({"type": "utterance.end", "sourceId": id, "position": at}));
        }
        self.push_text(json!({"type": "session.stop", "reason": reason}));
    }

    /// Takes the next message to send, oldest first. Gaps caused by a full backlog are reported
    /// before the audio that follows them.
    pub fn poll_message(&mut self) -> Option<FeedMessage> {
        if let Some((id, pos, samples)) = self.dropped.pop() {
            return Some(FeedMessage::Text(
                json!({"type": "gap", "sourceId": id, "position": pos, "samples": samples, "reason": "backlog_overflow"})
                    .to_string(),
            ));
        }
        let m = self.backlog.pop_front()?;
        if matches!(m, FeedMessage::Audio(_)) {
            self.backlog_audio -= 1;
        }
        Some(m)
    }

    /// Moves every message waiting into `out`, in [`FeedState::poll_message`] order: a writer
    /// takes a whole batch under one lock.
    pub fn take_messages(&mut self, out: &mut Vec<FeedMessage>) {
        out.reserve(self.dropped.len() + self.backlog.len());
        while let Some(m) = self.poll_message() {
            out.push(m);
        }
    }

    /// Gives a written audio message's buffer back for reuse by [`FeedState::handle_frame`]
    /// (kept only up to a small bound; the rest is freed).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < MAX_SPARE_BUFFERS && buf.capacity() <= MAX_SPARE_CAPACITY {
            self.spare.push(buf);
        }
    }

    /// Puts a message that could not be sent back at the front (the connection failed mid-send).
    pub fn unpoll(&mut self, m: FeedMessage) {
        if matches!(m, FeedMessage::Audio(_)) {
            self.backlog_audio += 1;
        }
        self.backlog.push_front(m);
    }

    /// Messages waiting.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    fn add_speaker(&mut self, source_id: u32) -> bool {
        if self.speakers.len() >= self.max_speakers {
            return false;
        }
        self.speakers.push(Speaker {
            source_id,
            info: SpeakerInfo::default(),
            next_pos: None,
            speech_run: 0,
            silence_run: 0,
            in_utterance: false,
            utterance_start: 0,
        });
        true
    }

    fn push_text(&mut self, v: serde_json::Value) {
        self.backlog.push_back(FeedMessage::Text(v.to_string()));
    }

    fn push_audio(&mut self, msg: Vec<u8>) {
        if self.backlog_audio >= self.max_backlog_audio {
            // Drop the oldest audio message, remember the hole.
            if let Some(i) = self
                .backlog
                .iter()
                .position(|m| matches!(m, FeedMessage::Audio(_)))
                && let Some(FeedMessage::Audio(old)) = self.backlog.remove(i)
            {
                self.backlog_audio -= 1;
                self.dropped_frames += 1;
                if let Some(c) = &self.drop_counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((id, pos, n)) = parse_audio_header(&old) {
                    match self
                        .dropped
                        .iter_mut()
                        .find(|(d, p, s)| *d == id && *p + *s == pos)
                    {
                        Some(entry) => entry.2 += n,
                        None => self.dropped.push((id, pos, n)),
                    }
                }
                self.recycle(old);
            }
        }
        self.backlog_audio += 1;
        self.backlog.push_back(FeedMessage::Audio(msg));
    }
}

fn speaker_json(kind: &str, source_id: u32, info: &SpeakerInfo) -> serde_json::Value {
    json!({
        "type": kind,
        "sourceId": source_id,
        "participantId": info.participant_id,
        "displayName": info.display_name,
        "identityId": info.identity_id,
    })
}

/// Splits a binary audio message into (source id, position, samples).
pub fn parse_audio_header(msg: &[u8]) -> Option<(u32, u64, u64)> {
    if msg.len() < AUDIO_HEADER_LEN || !(msg.len() - AUDIO_HEADER_LEN).is_multiple_of(2) {
        return None;
    }
    let id = u32::from_le_bytes(msg[0..4].try_into().ok()?);
    let pos = u64::from_le_bytes(msg[4..12].try_into().ok()?);
    Some((id, pos, ((msg.len() - AUDIO_HEADER_LEN) / 2) as u64))
}

/// RMS level of a frame in dBFS (-inf for digital silence).
pub fn rms_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return f32::NEG_INFINITY;
    }
    // Squares summed as integers: exact (each is at most 2^30) and free to vectorize, and the
    // same value the float sum had, which is exact for any frame shorter than 2^23 samples.
    let sum: u64 = pcm
        .iter()
        .map(|&s| u64::from(i32::from(s).unsigned_abs().pow(2)))
        .sum();
    let rms = (sum as f64 / pcm.len() as f64).sqrt() / 32768.0;
    (20.0 * rms.log10()) as f32
}

/// The file variant of the feed: `transcript.jsonl` with every text message, plus one 16 kHz WAV
/// per speaker holding exactly the audio messages (positions filled with silence), so a
/// recognizer can be run over it afterwards.
#[derive(Debug)]
pub struct FileFeed {
    dir: PathBuf,
    jsonl: BufWriter<std::fs::File>,
    wavs: Vec<(u32, WavWriter)>,
    /// Messages taken from the feed, being written (kept for its capacity).
    batch: Vec<FeedMessage>,
    /// Audio buffers written, to give back to the feed.
    written: Vec<Vec<u8>>,
}

/// What one [`FileFeed::pump`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PumpOutcome {
    /// The call's `session.stop` was written: nothing more will come.
    pub stopped: bool,
    /// Messages that could not be written (logged).
    pub write_errors: u64,
}

impl FileFeed {
    /// Creates `dir` and `dir/transcript.jsonl`.
    ///
    /// # Errors
    /// I/O errors creating them.
    pub fn create(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let jsonl = BufWriter::new(std::fs::File::create(dir.join("transcript.jsonl"))?);
        Ok(Self {
            dir,
            jsonl,
            wavs: Vec::new(),
            batch: Vec::new(),
            written: Vec::new(),
        })
    }

    /// Writes one message.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&mut self, m: &FeedMessage) -> io::Result<()> {
        match m {
            FeedMessage::Text(t) => {
                self.jsonl.write_all(t.as_bytes())?;
                self.jsonl.write_all(b"\n")
            }
            FeedMessage::Audio(a) => {
                let Some((id, pos, _)) = parse_audio_header(a) else {
                    return Ok(());
                };
                let i = match self.wavs.iter().position(|(s, _)| *s == id) {
                    Some(i) => i,
                    None => {
                        let w = WavWriter::create(
                            self.dir.join(format!("speaker-{id}.16k.wav")),
                            16_000,
                            1,
                        )?;
                        self.wavs.push((id, w));
                        self.wavs.len() - 1
                    }
                };
                let w = &mut self.wavs[i].1;
                let have = w.samples_written();
                if pos > have {
                    w.write_silence(pos - have)?;
                } else if pos < have {
                    return Ok(()); // overlapping audio is never sent by FeedState; ignore
                }
                // The message's samples are already PCM16LE, the WAV's format: copied as they are.
                w.write_pcm_le(&a[AUDIO_HEADER_LEN..])
            }
        }
    }

    /// Takes every message waiting in `feed` and writes it, until the feed is empty; whether
    /// the call's `session.stop` was among them (the feed is then complete: [`Self::finish`]).
    ///
    /// Each round takes the waiting messages under one lock and, under the next, gives the
    /// written audio buffers back to the feed ([`FeedState::recycle`]), so the frames that follow
    /// allocate nothing. Write errors are logged and counted in the returned
    /// [`PumpOutcome`]: a feed file that cannot be written does not stop the call.
    pub fn pump(&mut self, feed: &FeedHandle) -> PumpOutcome {
        let mut out = PumpOutcome::default();
        loop {
            let (batch, written) = (&mut self.batch, &mut self.written);
            feed.update_quiet(|f| {
                for buf in written.drain(..) {
                    f.recycle(buf);
                }
                f.take_messages(batch);
            });
            if self.batch.is_empty() {
                return out;
            }
            let mut batch = std::mem::take(&mut self.batch);
            for m in batch.drain(..) {
                if let FeedMessage::Text(t) = &m {
                    out.stopped |= t.contains("\"session.stop\"");
                }
                if let Err(e) = self.write(&m) {
                    out.write_errors += 1;
                    tracing::warn!(error = %e, "transcription file feed write");
                }
                if let FeedMessage::Audio(buf) = m {
                    self.written.push(buf);
                }
            }
            self.batch = batch;
        }
    }

    /// Writes a call's feed to files in `dir` until its `session.stop`, polling every `poll`
    /// ([`Self::pump`] each time). The engine does not use it: there the call's sink thread
    /// pumps the feed after each drain, so a file feed costs no thread and no wake-ups of its
    /// own. Errors are logged.
    pub fn run(dir: &Path, feed: &FeedHandle, poll: std::time::Duration) {
        let mut file = match Self::create(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "transcription file feed");
                return;
            }
        };
        while !file.pump(feed).stopped {
            std::thread::sleep(poll);
        }
        if let Err(e) = file.finish() {
            tracing::warn!(error = %e, "transcription file feed close");
        }
    }

    /// Flushes and closes everything; returns the WAV paths written.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> io::Result<Vec<PathBuf>> {
        self.jsonl.flush()?;
        let mut paths = Vec::new();
        for (_, w) in self.wavs {
            paths.push(w.path().to_path_buf());
            w.finalize()?;
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tone(amp: f32) -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|i| (amp * 32767.0 * (i as f32 * 0.2).sin()) as i16)
            .collect()
    }

    fn drain(f: &mut FeedState) -> Vec<FeedMessage> {
        std::iter::from_fn(|| f.poll_message()).collect()
    }

    fn texts(ms: &[FeedMessage]) -> Vec<serde_json::Value> {
        ms.iter()
            .filter_map(|m| match m {
                FeedMessage::Text(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn utterance_boundaries_follow_voice_activity() {
        let mut f = FeedState::new("c1", VadConfig::default(), 10, 8);
        f.handle_speaker_info(
            7,
            &SpeakerInfo {
                display_name: Some("Ada".into()),
                ..Default::default()
            },
        );
        let mut pos = 0;
        for i in 0..100 {
            let pcm = if (10..40).contains(&i) {
                tone(0.3)
            } else {
                vec![0; FRAME_SAMPLES]
            };
            f.handle_frame(7, pos, &pcm);
            pos += FRAME_SAMPLES as u64;
        }
        f.handle_stop("hangup");
        let all = drain(&mut f);
        let t = texts(&all);
        let kinds: Vec<&str> = t.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "session.start",
                "speaker.add",
                "utterance.start",
                "utterance.end",
                "session.stop"
            ]
        );
        assert_eq!(t[1]["displayName"], "Ada");
        assert_eq!(t[2]["position"], 10 * 320);
        // Ends after 25 silent frames of hangover: at the end of frame 40 + 24.
        assert_eq!(t[3]["position"], (40 + 25) * 320);
        let audio = all
            .iter()
            .filter(|m| matches!(m, FeedMessage::Audio(_)))
            .count();
        assert_eq!(audio, 100);
    }

    #[test]
    fn full_backlog_drops_oldest_audio_and_reports_the_gap() {
        let metric = Arc::new(AtomicU64::new(5));
        let mut f = FeedState::new("c1", VadConfig::default(), 1, 8) // 50 frames
            .counting_drops_in(Arc::clone(&metric));
        for i in 0..80u64 {
            f.handle_frame(3, i * 320, &tone(0.0));
        }
        assert_eq!(f.dropped_frames, 30);
        assert_eq!(
            metric.load(Ordering::Relaxed),
            35,
            "added to the shared counter"
        );
        let all = drain(&mut f);
        let t = texts(&all);
        assert_eq!(t[0]["type"], "gap");
        assert_eq!(t[0]["reason"], "backlog_overflow");
        assert_eq!(t[0]["position"], 0);
        assert_eq!(t[0]["samples"], 30 * 320);
        let first_audio = all.iter().find_map(|m| match m {
            FeedMessage::Audio(a) => parse_audio_header(a),
            _ => None,
        });
        assert_eq!(first_audio, Some((3, 30 * 320, 320)));
    }

    #[test]
    fn speaker_bound_and_missing_positions_are_reported() {
        let mut f = FeedState::new("c", VadConfig::default(), 10, 1);
        f.handle_frame(1, 0, &tone(0.0));
        f.handle_frame(2, 0, &tone(0.0));
        assert_eq!(f.refused_frames, 1);
        f.handle_frame(1, 3200, &tone(0.0));
        let t = texts(&drain(&mut f));
        let gap = t.iter().find(|v| v["type"] == "gap").unwrap();
        assert_eq!(gap["position"], 320);
        assert_eq!(gap["samples"], 3200 - 320);
    }

    #[test]
    fn audio_messages_carry_the_samples_little_endian_after_the_header() {
        let mut f = FeedState::new("c", VadConfig::default(), 10, 8);
        let pcm: Vec<i16> = (0..FRAME_SAMPLES as i32)
            .map(|i| (i * 211 - 30_000) as i16)
            .collect();
        f.handle_frame(0x0102_0304, 0x1122_3344_5566, &pcm);
        let audio = drain(&mut f)
            .into_iter()
            .find_map(|m| match m {
                FeedMessage::Audio(a) => Some(a),
                FeedMessage::Text(_) => None,
            })
            .unwrap();
        let mut want = vec![4, 3, 2, 1, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0];
        want.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
        assert_eq!(audio, want);
    }

    #[test]
    fn rms_level_equals_the_float_sum_of_squares() {
        let reference = |pcm: &[i16]| {
            let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (20.0 * ((sum / pcm.len() as f64).sqrt() / 32768.0).log10()) as f32
        };
        let full = vec![i16::MIN; 960];
        let mixed: Vec<i16> = (0..960)
            .map(|i| ((i * 7919) % 65_536 - 32_768) as i16)
            .collect();
        for pcm in [&full[..], &mixed[..], &tone(0.3)[..], &[0, 0, 1][..]] {
            assert_eq!(rms_dbfs(pcm).to_bits(), reference(pcm).to_bits());
        }
        assert_eq!(rms_dbfs(&[0; 320]), f32::NEG_INFINITY);
        assert_eq!(rms_dbfs(&[]), f32::NEG_INFINITY);
    }

    /// The same feed, message for message: two speakers, speech, a gap, a stop.
    fn scripted_feed() -> FeedState {
        let mut f = FeedState::new("c", VadConfig::default(), 10, 8);
        f.handle_speaker_info(5, &SpeakerInfo::default());
        for i in 0..60u64 {
            let pcm = if (5..30).contains(&i) {
                tone(0.4)
            } else {
                vec![3; FRAME_SAMPLES]
            };
            if i != 20 {
                f.handle_frame(5, i * 320, &pcm);
            }
            f.handle_frame(6, i * 320 + 960, &tone(0.1));
        }
        f.handle_stop("done");
        f
    }

    #[test]
    fn the_file_feed_driver_writes_what_message_by_message_writing_does_and_recycles_buffers() {
        let base = std::env::temp_dir().join(format!("mediabot-feed-run-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        let mut f = scripted_feed();
        let mut file = FileFeed::create(&a).unwrap();
        for m in drain(&mut f) {
            file.write(&m).unwrap();
        }
        file.finish().unwrap();

        let feed = FeedHandle::new(scripted_feed());
        FileFeed::run(&b, &feed, std::time::Duration::ZERO);
        for name in ["transcript.jsonl", "speaker-5.16k.wav", "speaker-6.16k.wav"] {
            let want = std::fs::read(a.join(name)).unwrap();
            assert!(want.len() > 300, "{name} has content");
            assert_eq!(std::fs::read(b.join(name)).unwrap(), want, "{name}");
        }
        // Every written audio buffer came back (up to the bound) and the next frame reuses one.
        let (spare, ptr) = feed.update_quiet(|f| (f.spare.len(), f.spare.last().map(Vec::as_ptr)));
        assert_eq!(spare, MAX_SPARE_BUFFERS);
        let reused = feed.update_quiet(|f| {
            f.handle_frame(5, 60 * 320, &tone(0.0));
            match drain(f).pop() {
                Some(FeedMessage::Audio(m)) => m.as_ptr(),
                other => panic!("{other:?}"),
            }
        });
        assert_eq!(Some(reused), ptr);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn recycled_buffers_are_bounded_and_overflowed_audio_is_reused() {
        let mut f = FeedState::new("c", VadConfig::default(), 1, 8); // 50 frames
        for _ in 0..MAX_SPARE_BUFFERS + 10 {
            f.recycle(Vec::with_capacity(652));
        }
        f.recycle(Vec::with_capacity(MAX_SPARE_CAPACITY + 1));
        assert_eq!(f.spare.len(), MAX_SPARE_BUFFERS);
        f.spare.clear();
        for i in 0..51u64 {
            f.handle_frame(3, i * 320, &tone(0.0));
        }
        assert_eq!(f.dropped_frames, 1);
        assert_eq!(
            f.spare.len(),
            1,
            "the dropped message's buffer is kept for the next frame"
        );
    }

    #[test]
    fn file_feed_writes_jsonl_and_aligned_wavs() {
        let dir = std::env::temp_dir().join(format!("mediabot-feed-{}", std::process::id()));
        let mut f = FeedState::new("c", VadConfig::default(), 10, 8);
        f.handle_frame(9, 640, &tone(0.5));
        f.handle_stop("done");
        let mut file = FileFeed::create(&dir).unwrap();
        for m in drain(&mut f) {
            file.write(&m).unwrap();
        }
        let wavs = file.finish().unwrap();
        let r = hound::WavReader::open(&wavs[0]).unwrap();
        assert_eq!(r.len(), 640 + 320);
        let got: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
        assert!(
            got[..640].iter().all(|&s| s == 0),
            "silence before the frame"
        );
        assert_eq!(got[640..], tone(0.5)[..], "the frame's samples as sent");
        let lines = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
        assert!(lines.lines().last().unwrap().contains("session.stop"));
    }
}
