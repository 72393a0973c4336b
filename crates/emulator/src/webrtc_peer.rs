//! The emulator's media side: a WHIP/WebRTC peer that plays the Teams media processor.
//!
//! When a bot's call is established with mediabot's blob, [`WhipMedia`](crate::webrtc_peer::WhipMedia) connects to the blob's
//! WHIP URL with its token (the WebRTC stack of `mediabot-media`), opens one Opus track per
//! speaking participant with SSRC = the participant's `sourceId`, and streams the scenario's
//! speech on a 20 ms media clock: synthesized speech-like audio or WAV files, encoded with libopus
//! (in-band FEC on). Participants who are silent, muted, in the lobby or gone send nothing, as
//! Teams does with discontinuous transmission; the RTP timestamp keeps counting real time, so the
//! bot sees DTX gaps, not time warps. Tones pressed in the scenario go out as RFC 4733 events.
//!
//! A seeded [`Impairment`](crate::webrtc_peer::Impairment) model sits between the encoder and the socket: independent and
//! Gilbert-Elliott burst loss, jitter (delay drawn per packet, which also reorders), and
//! duplication.
//!
//! With [`WhipMedia::save_dir`](crate::webrtc_peer::WhipMedia::save_dir) set, what the bot sends back into the call is decoded and saved
//! as a WAV per call, so echo and playback bots can be checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::mpsc;

use crate::media::{
    AudioSource, MediaEvent, MediaParticipant, MediaPeer, MediaPeerFactory, MediaSession,
    speech_like,
};

/// Network impairment applied to every outgoing packet. All probabilities are 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Independent loss probability.
    pub loss: f64,
    /// Gilbert-Elliott: probability of entering the bad state per packet.
    pub burst_enter: f64,
    /// Gilbert-Elliott: probability of leaving the bad state per packet.
    pub burst_exit: f64,
    /// Loss probability in the bad state.
    pub burst_loss: f64,
    /// Largest extra delay per packet (uniform 0..=jitter); reorders when above 20 ms.
    pub jitter: Duration,
    /// Duplication probability.
    pub duplicate: f64,
    /// RNG seed.
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst_enter: 0.0,
            burst_exit: 1.0,
            burst_loss: 0.0,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            seed: 1,
        }
    }
}

impl From<&crate::scenario::NetworkSpec> for Impairment {
    fn from(n: &crate::scenario::NetworkSpec) -> Self {
        Self {
            loss: n.loss,
            burst_enter: n.burst_enter,
            burst_exit: n.burst_exit,
            burst_loss: n.burst_loss,
            jitter: Duration::from_millis(n.jitter_ms),
            duplicate: n.duplicate,
            seed: n.seed,
        }
    }
}

/// Media peer factory streaming the scenario's audio over WHIP/WebRTC.
#[derive(Debug, Clone, Default)]
pub struct WhipMedia {
    /// Impairment applied to every call.
    pub impairment: Impairment,
    /// Opus bitrate in bit/s.
    pub bitrate: Option<i32>,
    /// Where to save what the bot sends into each call (`bot-audio-<call id>.wav`, 48 kHz
    /// mono, on the RTP timeline: silence where nothing came), so echo and playback can be
    /// checked. `None`: received audio is counted and dropped.
    pub save_dir: Option<std::path::PathBuf>,
}

/// Counters of one peer, readable through [`MediaPeer::status`].
#[derive(Debug, Default)]
struct PeerState {
    status: String,
    packets_sent: u64,
    packets_dropped: u64,
    packets_received: u64,
}

struct WhipPeer {
    events: mpsc::UnboundedSender<MediaEvent>,
    state: Arc<Mutex<PeerState>>,
}

impl MediaPeerFactory for WhipMedia {
    fn start(&self, session: MediaSession) -> Box<dyn MediaPeer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(PeerState {
            status: "connecting".into(),
            ..PeerState::default()
        }));
        let mut cfg = self.clone();
        if let Some(n) = &session.network {
            cfg.impairment = Impairment::from(n);
        }
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let call_id = session.call_id.clone();
            if let Err(e) = run(cfg, session, rx, Arc::clone(&st)).await {
                tracing::warn!(call_id = %call_id, error = %e, "emulator media peer failed");
                lock(&st).status = format!("failed: {e}");
            }
        });
        Box::new(WhipPeer { events: tx, state })
    }

    fn name(&self) -> &'static str {
        "whip"
    }
}

impl MediaPeer for WhipPeer {
    fn handle_event(&mut self, event: MediaEvent) {
        // The channel is drained by the peer task; it ends with the call (bounded by the
        // scenario's events).
        let _ = self.events.send(event);
    }

    fn status(&self) -> String {
        let s = lock(&self.state);
        format!(
            "{} (sent {}, dropped {}, received {})",
            s.status, s.packets_sent, s.packets_dropped, s.packets_received
        )
    }
}

fn lock(m: &Mutex<PeerState>) -> std::sync::MutexGuard<'_, PeerState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per-speaker encoder state.
struct Speaker {
    encoder: opus::Encoder,
    seq: u16,
    ts_base: u32,
    /// Samples (48 kHz) of the segment being played and where in it we are.
    audio: Vec<i16>,
    cursor: usize,
    talkspurt_start: bool,
}

const FRAME: usize = 960;

async fn run(
    cfg: WhipMedia,
    session: MediaSession,
    mut events: mpsc::UnboundedReceiver<MediaEvent>,
    state: Arc<Mutex<PeerState>>,
) -> Result<(), String> {
    let mut ssrcs: Vec<u32> = session.speech.iter().map(|s| s.source_id).collect();
    ssrcs.extend(session.participants.iter().map(|p| p.source_id));
    ssrcs.sort_unstable();
    ssrcs.dedup();
    if ssrcs.is_empty() {
        lock(&state).status = "no speakers".into();
        return Ok(());
    }
    let client_cfg = WhipClientConfig {
        ssrcs: ssrcs.clone(),
        ..WhipClientConfig::default()
    };
    let mut client =
        WhipClientSession::connect(&session.blob.whip, &session.blob.token, client_cfg)
            .await
            .map_err(|e| format!("whip connect: {e}"))?;
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .map_err(|e| format!("ice/dtls: {e}"))?;
    lock(&state).status = "connected".into();
    let tone_pt = client.telephone_event_payload_type();
    let mut received = match &cfg.save_dir {
        Some(dir) => Some(
            BotAudio::create(dir, &session.call_id).map_err(|e| format!("save bot audio: {e}"))?,
        ),
        None => None,
    };

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.impairment.seed);
    let mut speakers: HashMap<u32, Speaker> = HashMap::new();
    for &ssrc in &ssrcs {
        let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| format!("opus encoder: {e}"))?;
        let _ = encoder.set_inband_fec(true);
        let _ = encoder.set_packet_loss_perc(10);
        if let Some(b) = cfg.bitrate {
            let _ = encoder.set_bitrate(opus::Bitrate::Bits(b));
        }
        speakers.insert(
            ssrc,
            Speaker {
                encoder,
                seq: rng.random(),
                ts_base: rng.random(),
                audio: Vec::new(),
                cursor: 0,
                talkspurt_start: true,
            },
        );
    }
    let mut roster: HashMap<u32, MediaParticipant> = session
        .participants
        .iter()
        .map(|p| (p.source_id, p.clone()))
        .collect();
    // Segments by start time.
    let mut pending: Vec<_> = session.speech.clone();
    pending.sort_by_key(|s| s.start_ms);
    let mut pending = pending.into_iter().peekable();
    // Packets held back by jitter, by due tick (5 ms units).
    let mut delayed: BTreeMap<u64, Vec<OutboundRtp>> = BTreeMap::new();
    let mut bad_state = false;
    let mut pcm = [0i16; FRAME];
    let mut out = [0u8; 1500];

    // The media clock: 5 ms ticks, a frame every fourth.
    let start = tokio::time::Instant::now();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Offsets in the schedule count from establishment; we may start a little after it.
    let skew_ms = now_ms.saturating_sub(session.established_at_ms);
    let mut tick: u64 = 0;
    let mut ended = false;
    let mut interval = tokio::time::interval(Duration::from_millis(5));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while !ended {
        interval.tick().await;
        while let Some(p) = client.try_recv_rtp() {
            lock(&state).packets_received += 1;
            if let Some(rx) = received.as_mut()
                && p.payload_type == client.opus_payload_type()
            {
                rx.handle(p.timestamp, &p.payload);
            }
        }
        while let Ok(ev) = events.try_recv() {
            match ev {
                MediaEvent::Roster(list) => {
                    roster = list.into_iter().map(|p| (p.source_id, p)).collect();
                }
                MediaEvent::Tone { source_id, tone } => {
                    if let (Some(pt), Some(code)) = (tone_pt, tone_code(&tone))
                        && let Some(sp) = speakers.get_mut(&source_id)
                    {
                        let ts = sp.ts_base.wrapping_add((tick * 240) as u32);
                        for (i, end) in [(0u16, false), (1, false), (2, true), (3, true)] {
                            let mut p = [0u8; 4];
                            p[0] = code;
                            p[1] = if end { 0x80 | 10 } else { 10 };
                            p[2..4].copy_from_slice(&((i + 1) * 960).to_be_bytes());
                            sp.seq = sp.seq.wrapping_add(1);
                            let _ = client.send_rtp(OutboundRtp {
                                ssrc: source_id,
                                sequence: sp.seq,
                                timestamp: ts,
                                marker: i == 0,
                                payload_type: Some(pt),
                                audio_level: None,
                                payload: Bytes::copy_from_slice(&p),
                            });
                        }
                    }
                }
                MediaEvent::Ended => ended = true,
            }
        }
        let media_ms = skew_ms + tick * 5;
        // Start segments that are due.
        while pending.peek().is_some_and(|s| s.start_ms <= media_ms) {
            let Some(seg) = pending.next() else { break };
            if let Some(sp) = speakers.get_mut(&seg.source_id) {
                sp.audio = match &seg.audio {
                    AudioSource::Synth(seed) => speech_like(*seed, 48_000, seg.duration_ms),
                    AudioSource::Wav(path) => {
                        read_wav_48k(path, seg.duration_ms).unwrap_or_default()
                    }
                };
                sp.cursor = 0;
                sp.talkspurt_start = true;
            }
        }
        if tick.is_multiple_of(4) {
            for (&ssrc, sp) in speakers.iter_mut() {
                if sp.cursor >= sp.audio.len() {
                    continue;
                }
                let n = (sp.audio.len() - sp.cursor).min(FRAME);
                pcm[..n].copy_from_slice(&sp.audio[sp.cursor..sp.cursor + n]);
                pcm[n..].fill(0);
                // RTP time follows the media clock even where nothing was sent (DTX).
                let ts = sp.ts_base.wrapping_add((tick * 240) as u32);
                sp.cursor += FRAME;
                let audible = roster.get(&ssrc).is_none_or(|p| !p.muted && !p.in_lobby);
                if !audible {
                    sp.talkspurt_start = true;
                    continue;
                }
                let Ok(len) = sp.encoder.encode(&pcm, &mut out) else {
                    continue;
                };
                sp.seq = sp.seq.wrapping_add(1);
                let pkt = OutboundRtp {
                    ssrc,
                    sequence: sp.seq,
                    timestamp: ts,
                    marker: std::mem::take(&mut sp.talkspurt_start),
                    payload_type: None,
                    audio_level: None,
                    payload: Bytes::copy_from_slice(&out[..len]),
                };
                // Impairment.
                let imp = &cfg.impairment;
                bad_state = if bad_state {
                    rng.random::<f64>() >= imp.burst_exit
                } else {
                    rng.random::<f64>() < imp.burst_enter
                };
                let lost = rng.random::<f64>() < imp.loss
                    || (bad_state && rng.random::<f64>() < imp.burst_loss);
                if lost {
                    lock(&state).packets_dropped += 1;
                    continue;
                }
                let copies = if rng.random::<f64>() < imp.duplicate {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay_ticks = if imp.jitter.is_zero() {
                        0
                    } else {
                        (rng.random::<f64>() * imp.jitter.as_millis() as f64 / 5.0) as u64
                    };
                    delayed
                        .entry(tick + delay_ticks)
                        .or_default()
                        .push(pkt.clone());
                }
            }
        }
        // Send what is due.
        let due: Vec<u64> = delayed.range(..=tick).map(|(k, _)| *k).collect();
        for k in due {
            for p in delayed.remove(&k).unwrap_or_default() {
                if client.send_rtp(p).is_ok() {
                    lock(&state).packets_sent += 1;
                }
            }
        }
        tick += 1;
        // Nothing more to play and nobody left to speak: keep the session until the call ends.
        let _ = start;
    }
    let _ = client.close().await;
    if let Some(rx) = received {
        rx.finish().map_err(|e| format!("save bot audio: {e}"))?;
    }
    lock(&state).status = "closed".into();
    Ok(())
}

/// RFC 4733 event code of a Graph tone name (`tone0`..`tone9`, `star`, `pound`, `a`..`d`).
fn tone_code(tone: &str) -> Option<u8> {
    let t = tone.to_ascii_lowercase();
    if let Some(d) = t.strip_prefix("tone") {
        return d.parse::<u8>().ok().filter(|d| *d <= 9);
    }
    match t.as_str() {
        "star" => Some(10),
        "pound" => Some(11),
        "a" => Some(12),
        "b" => Some(13),
        "c" => Some(14),
        "d" => Some(15),
        _ => None,
    }
}

/// Reads a WAV file as 48 kHz mono (first channel; linear interpolation from other rates),
/// at most `duration_ms` long.
fn read_wav_48k(path: &std::path::Path, duration_ms: u64) -> Option<Vec<i16>> {
    let mut r = hound::WavReader::open(path).ok()?;
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let src: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int if spec.bits_per_sample == 16 => r
            .samples::<i16>()
            .step_by(ch)
            .filter_map(Result::ok)
            .collect(),
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .step_by(ch)
            .filter_map(Result::ok)
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect(),
        _ => return None,
    };
    let ratio = f64::from(spec.sample_rate) / 48_000.0;
    let n = ((src.len() as f64 / ratio) as usize).min((duration_ms * 48) as usize);
    Some(
        (0..n)
            .map(|i| {
                let x = i as f64 * ratio;
                let j = x as usize;
                let f = x - j as f64;
                let a = f64::from(*src.get(j).unwrap_or(&0));
                let b = f64::from(*src.get(j + 1).unwrap_or(&0));
                (a + (b - a) * f) as i16
            })
            .collect(),
    )
}

/// What the bot sends into a call, decoded and written on its RTP timeline.
struct BotAudio {
    decoder: opus::Decoder,
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    /// RTP timestamp of sample 0 of the file.
    first_ts: Option<u32>,
    written: u64,
    pcm: Vec<i16>,
}

/// Longest silence inserted for one gap in the bot's stream (a paused sender).
const MAX_SAVED_GAP: u64 = 48_000 * 60;

impl BotAudio {
    fn create(dir: &std::path::Path, call_id: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let safe: String = call_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(dir.join(format!("bot-audio-{safe}.wav")), spec)
            .map_err(|e| e.to_string())?;
        let decoder =
            opus::Decoder::new(48_000, opus::Channels::Mono).map_err(|e| e.to_string())?;
        Ok(Self {
            decoder,
            writer,
            first_ts: None,
            written: 0,
            pcm: vec![0; 5760],
        })
    }

    fn handle(&mut self, ts: u32, payload: &[u8]) {
        let first = *self.first_ts.get_or_insert(ts);
        let pos = u64::from(ts.wrapping_sub(first));
        if pos < self.written {
            return; // late or duplicate
        }
        let mut gap = pos - self.written;
        if gap > MAX_SAVED_GAP {
            // A long pause: keep a minute of it and move the file's origin up by the rest, so
            // later packets stay contiguous.
            self.first_ts = Some(first.wrapping_add((gap - MAX_SAVED_GAP) as u32));
            gap = MAX_SAVED_GAP;
        }
        for _ in 0..gap {
            let _ = self.writer.write_sample(0i16);
        }
        self.written += gap;
        if let Ok(n) = self.decoder.decode(payload, &mut self.pcm, false) {
            for &s in &self.pcm[..n] {
                let _ = self.writer.write_sample(s);
            }
            self.written += n as u64;
        }
    }

    fn finish(self) -> Result<(), String> {
        self.writer.finalize().map_err(|e| e.to_string())
    }
}
