//! The media hook: what the emulator hands to a media peer when a call with an
//! `appHostedMediaConfig` blob is established.
//!
//! The emulator itself speaks only Graph signaling. When a bot's call reaches `established`
//! and its blob decodes as mediabot's format (`{"v":1,"whip","token","expires"}`, base64 JSON,
//! see `DESIGN.md`), the emulator calls [`MediaPeerFactory::start`] with a [`MediaSession`]:
//! the blob, the roster with each participant's `sourceId` (= SSRC) and the scenario's speech
//! schedule. Roster changes and the end of the call follow as [`MediaEvent`]s.
//!
//! The default factory, [`NoMedia`], records that media would have started and sends nothing.
//! A WHIP/WebRTC client (the media transport work) plugs in by implementing the two traits.

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The decoded `appHostedMediaConfig.blob` (mediabot's format, version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBlob {
    /// Format version; 1.
    pub v: u32,
    /// WHIP endpoint of this call's media session.
    pub whip: String,
    /// Bearer token for the WHIP `POST`.
    pub token: String,
    /// Expiry (RFC 3339).
    pub expires: String,
}

/// Why a blob is not mediabot's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// Not standard base64.
    #[error("blob is not base64")]
    Base64,
    /// Not a JSON object with `v`, `whip`, `token`, `expires`.
    #[error("blob is not mediabot's JSON: {0}")]
    Json(String),
    /// `v` is not 1.
    #[error("unsupported blob version {0}")]
    Version(u32),
    /// `whip` is not an http(s) URL or `expires` is not RFC 3339.
    #[error("blob field {0} is invalid")]
    Field(&'static str),
}

impl MediaBlob {
    /// Decodes and checks a blob.
    ///
    /// # Errors
    /// [`BlobError`]; the emulator then records "no media" for the call (a blob from another
    /// media stack is legal Graph, just not something the emulator can connect to).
    pub fn decode(blob: &str) -> Result<Self, BlobError> {
        if blob.len() > 64 * 1024 {
            return Err(BlobError::Json("blob too large".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob.trim())
            .map_err(|_| BlobError::Base64)?;
        let b: MediaBlob =
            serde_json::from_slice(&bytes).map_err(|e| BlobError::Json(e.to_string()))?;
        if b.v != 1 {
            return Err(BlobError::Version(b.v));
        }
        let url = url::Url::parse(&b.whip).map_err(|_| BlobError::Field("whip"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BlobError::Field("whip"));
        }
        if crate::clock::parse_rfc3339(&b.expires).is_none() {
            return Err(BlobError::Field("expires"));
        }
        Ok(b)
    }

    /// Encodes as the base64 JSON a bot would put in `appHostedMediaConfig.blob`.
    pub fn encode(&self) -> String {
        let json = serde_json::json!({"v": self.v, "whip": self.whip, "token": self.token, "expires": self.expires});
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    }
}

/// A participant as the media side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaParticipant {
    /// Graph participant id.
    pub participant_id: String,
    /// Scenario handle (empty for participants not from a scenario).
    pub handle: String,
    /// Display name.
    pub display_name: String,
    /// Audio `sourceId` (the SSRC of this participant's stream).
    pub source_id: u32,
    /// Muted.
    pub muted: bool,
    /// Waiting in the lobby (no media flows).
    pub in_lobby: bool,
}

/// Where a stretch of speech comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AudioSource {
    /// A WAV file.
    Wav(PathBuf),
    /// Speech-like audio from [`speech_like`] with this seed.
    Synth(u64),
}

/// One stretch of speech on the call's media timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeechSegment {
    /// Scenario handle of the speaker.
    pub handle: String,
    /// Source id (SSRC) of the speaker's stream.
    pub source_id: u32,
    /// Start, milliseconds after the call was established.
    pub start_ms: u64,
    /// Length in milliseconds.
    pub duration_ms: u64,
    /// The audio.
    pub audio: AudioSource,
}

/// Everything a media peer needs to bring a call's media to the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSession {
    /// Graph call id.
    pub call_id: String,
    /// The bot's decoded blob.
    pub blob: MediaBlob,
    /// Who is in the call now (the bot excluded).
    pub participants: Vec<MediaParticipant>,
    /// The bot's own audio source id.
    pub bot_source_id: u32,
    /// The scenario's speech, for every participant (including ones who join later).
    pub speech: Vec<SpeechSegment>,
    /// Emulator time (epoch ms) of establishment: offsets in `speech` count from here.
    pub established_at_ms: u64,
    /// The scenario's network impairment, if it sets one (`[network]`); peers apply it instead
    /// of their default.
    #[serde(default)]
    pub network: Option<crate::scenario::NetworkSpec>,
}

/// Changes after media started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MediaEvent {
    /// The roster changed (join, leave, mute, lobby); the full current roster.
    Roster(Vec<MediaParticipant>),
    /// A DTMF tone pressed by a participant (for RFC 4733 telephone-events).
    Tone {
        /// Source id of the presser.
        source_id: u32,
        /// Graph tone name (`tone5`, `star`, ...).
        tone: String,
    },
    /// The call ended; the peer should close its session.
    Ended,
}

/// A running media session for one call.
pub trait MediaPeer: Send + 'static {
    /// Called for every change after start, in order. Must not block (spawn work instead).
    fn handle_event(&mut self, event: MediaEvent);
    /// A short status for the control API (e.g. `connected`, `whip 401`).
    fn status(&self) -> String;
}

/// Creates media peers. Called from the emulator's async context: implementations spawn their
/// own tasks and return at once.
pub trait MediaPeerFactory: Send + Sync + 'static {
    /// Starts media for an established call.
    fn start(&self, session: MediaSession) -> Box<dyn MediaPeer>;
    /// A name for logs and the control API.
    fn name(&self) -> &'static str;
}

/// The default: no media is sent. The session is kept so tests can see what a media peer
/// would have received.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMedia;

/// The peer [`NoMedia`] returns.
#[derive(Debug)]
pub struct NoMediaPeer {
    events: usize,
    ended: bool,
}

impl MediaPeerFactory for NoMedia {
    fn start(&self, session: MediaSession) -> Box<dyn MediaPeer> {
        tracing::info!(call_id = %session.call_id, whip = %session.blob.whip, speakers = session.speech.len(), "media: no-media peer (nothing is streamed)");
        Box::new(NoMediaPeer {
            events: 0,
            ended: false,
        })
    }
    fn name(&self) -> &'static str {
        "none"
    }
}

impl MediaPeer for NoMediaPeer {
    fn handle_event(&mut self, event: MediaEvent) {
        self.events += 1;
        if event == MediaEvent::Ended {
            self.ended = true;
        }
    }
    fn status(&self) -> String {
        format!(
            "no-media ({} events{})",
            self.events,
            if self.ended { ", ended" } else { "" }
        )
    }
}

/// Speech-like mono audio: a glottal pulse train (f0 around 100-220 Hz with slow drift)
/// through two formant resonators whose centres move per syllable (~4 per second), under a
/// syllabic amplitude envelope with short pauses. Deterministic for a seed.
///
/// Not intelligible, but it has the spectral and temporal shape VAD and codecs react to.
/// At most one hour ([`crate::scenario::MAX_SPEECH_MS`]) is produced.
pub fn speech_like(seed: u64, sample_rate: u32, duration_ms: u64) -> Vec<i16> {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Bounded to one hour of audio at 8-192 kHz, whatever the caller asks.
    let sample_rate = sample_rate.clamp(8000, 192_000);
    let sr = f64::from(sample_rate);
    let duration_ms = duration_ms.min(crate::scenario::MAX_SPEECH_MS);
    let n = usize::try_from(duration_ms.saturating_mul(u64::from(sample_rate)) / 1000).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    let base_f0 = 100.0 + rng.random::<f64>() * 120.0;
    let (mut phase, mut syl_left, mut syl_len) = (0.0f64, 0usize, 1usize);
    let (mut f1, mut f2, mut voiced) = (500.0f64, 1500.0f64, true);
    // Two-pole resonator states.
    let (mut a1, mut a2, mut b1, mut b2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        if syl_left == 0 {
            // 120-320 ms syllables; one in five is a pause.
            syl_len = ((0.12 + rng.random::<f64>() * 0.2) * sr) as usize;
            syl_left = syl_len;
            voiced = rng.random::<f64>() > 0.2;
            f1 = 300.0 + rng.random::<f64>() * 500.0;
            f2 = 900.0 + rng.random::<f64>() * 1400.0;
        }
        let pos = 1.0 - syl_left as f64 / syl_len as f64;
        syl_left -= 1;
        let env = if voiced {
            (std::f64::consts::PI * pos).sin().powf(0.6)
        } else {
            0.0
        };
        let t = i as f64 / sr;
        let f0 = base_f0 * (1.0 + 0.08 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
        phase += f0 / sr;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let excitation = pulse + 0.02 * (rng.random::<f64>() - 0.5);
        let y1 = resonate(excitation, f1, 80.0, sr, &mut a1, &mut a2);
        let y2 = resonate(excitation, f2, 120.0, sr, &mut b1, &mut b2);
        let s = (y1 + 0.5 * y2) * env * 0.25;
        out.push((s.clamp(-1.0, 1.0) * f64::from(i16::MAX)) as i16);
    }
    out
}

fn resonate(x: f64, freq: f64, bw: f64, sr: f64, y1: &mut f64, y2: &mut f64) -> f64 {
    let r = (-std::f64::consts::PI * bw / sr).exp();
    let c = 2.0 * r * (2.0 * std::f64::consts::PI * freq / sr).cos();
    let y = (1.0 - r) * x + c * *y1 - r * r * *y2;
    *y2 = *y1;
    *y1 = y;
    y
}

/// Reads a WAV file as mono 16-bit samples (channels averaged) and its sample rate.
///
/// # Errors
/// The file cannot be read or is not PCM WAV.
pub fn read_wav_mono(path: &std::path::Path) -> Result<(Vec<i16>, u32), hound::Error> {
    let mut r = hound::WavReader::open(path)?;
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let samples: Vec<i32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample).saturating_sub(16);
            r.samples::<i32>()
                .map(|s| s.map(|v| if shift > 0 { v >> shift } else { v << -shift }))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i32))
            .collect::<Result<_, _>>()?,
    };
    let mono = samples
        .chunks(ch)
        .map(|c| {
            let sum: i64 = c.iter().map(|&v| i64::from(v)).sum();
            i16::try_from(sum / i64::try_from(c.len()).unwrap_or(1)).unwrap_or(0)
        })
        .collect();
    Ok((mono, spec.sample_rate))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blob_round_trips_and_rejects_junk() {
        let b = MediaBlob {
            v: 1,
            whip: "https://bot.example/whip/abc".into(),
            token: "t0k".into(),
            expires: "2026-11-22T23:00:00Z".into(),
        };
        assert_eq!(MediaBlob::decode(&b.encode()).unwrap(), b);
        assert_eq!(MediaBlob::decode("%%%"), Err(BlobError::Base64));
        let v2 = MediaBlob { v: 2, ..b.clone() };
        assert_eq!(MediaBlob::decode(&v2.encode()), Err(BlobError::Version(2)));
        let bad = MediaBlob {
            whip: "ftp://x".into(),
            ..b
        };
        assert_eq!(
            MediaBlob::decode(&bad.encode()),
            Err(BlobError::Field("whip"))
        );
    }

    #[test]
    fn speech_like_is_deterministic_voiced_and_paused() {
        let a = speech_like(7, 16_000, 2000);
        assert_eq!(a.len(), 32_000);
        assert_eq!(a, speech_like(7, 16_000, 2000));
        assert_ne!(a, speech_like(8, 16_000, 2000));
        let rms = |s: &[i16]| {
            (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        assert!(rms(&a) > 100.0, "audible: {}", rms(&a));
        // 20 ms frames: some near-silent (pauses, syllable edges), some loud.
        let frames: Vec<f64> = a.chunks(320).map(rms).collect();
        assert!(frames.iter().any(|&r| r < 50.0));
        assert!(frames.iter().any(|&r| r > 300.0));
    }
}
