//! The load generator's media peer: pre-encoded Opus packets replayed over WHIP/WebRTC.
//!
//! Speech-like audio ([`crate::media::speech_like`]) is encoded once at start (libopus, 20 ms
//! frames, in-band FEC on, as the emulator's normal peer does) and looped: every stream sends the
//! same packets from its own starting point, with continuous sequence numbers and timestamps,
//! so the bot decodes real speech while the generator spends nothing on encoding. One pacer
//! task owns every stream's schedule (a heap of due times); each stream has its own phase
//! inside the 20 ms period, as independent senders would. SRTP is done by the WHIP client
//! session of `mediabot-media`, one per call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabot_media::transport::client::{OutboundRtp, WhipClientConfig, WhipClientSession};
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::mpsc;

use crate::media::{MediaEvent, MediaPeer, MediaPeerFactory, MediaSession, speech_like};

/// Samples in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// Pre-encoded Opus packets (20 ms each, 48 kHz mono).
#[derive(Debug, Clone)]
pub struct Packets {
    /// The packets in order.
    pub frames: Arc<Vec<Bytes>>,
}

impl Packets {
    /// Encodes `secs` seconds of speech-like audio (seed `seed`) once.
    ///
    /// # Errors
    /// libopus refused the encoder or a frame.
    pub fn encode_speech(seed: u64, secs: u64, bitrate: i32) -> Result<Self, opus::Error> {
        let pcm = speech_like(seed, 48_000, secs.max(1) * 1000);
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(10)?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate))?;
        let mut out = [0u8; 1500];
        let mut frames = Vec::with_capacity(pcm.len() / FRAME_SAMPLES);
        for chunk in pcm.chunks_exact(FRAME_SAMPLES) {
            let n = enc.encode(chunk, &mut out)?;
            frames.push(Bytes::copy_from_slice(&out[..n]));
        }
        Ok(Self {
            frames: Arc::new(frames),
        })
    }

    /// Mean payload size in bytes.
    pub fn mean_bytes(&self) -> f64 {
        if self.frames.is_empty() {
            return 0.0;
        }
        self.frames.iter().map(Bytes::len).sum::<usize>() as f64 / self.frames.len() as f64
    }
}

/// Counters of the generator's media side (all calls).
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// WHIP sessions connected (ICE+DTLS up).
    pub sessions_connected: AtomicU64,
    /// WHIP sessions that failed to connect.
    pub sessions_failed: AtomicU64,
    /// Streams currently scheduled.
    pub streams_active: AtomicU64,
    /// RTP packets handed to a session.
    pub packets_sent: AtomicU64,
    /// Packets the session refused (queue full or closed): loss the generator caused.
    pub packets_refused: AtomicU64,
    /// Packets sent more than 10 ms after their due time (the generator fell behind).
    pub packets_late: AtomicU64,
    /// Largest lateness seen, microseconds.
    pub max_late_us: AtomicU64,
}

/// Why a call's media did not start, by call id (for the report).
pub type Failures = Arc<Mutex<Vec<(String, String)>>>;

/// The media peer factory of the load generator.
#[derive(Clone)]
pub struct ReplayMedia {
    packets: Packets,
    speakers: usize,
    pacer: mpsc::UnboundedSender<PacerCmd>,
    stats: Arc<ReplayStats>,
    failures: Failures,
    seed: u64,
    sent_by_call: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
}

impl std::fmt::Debug for ReplayMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayMedia")
            .field("speakers", &self.speakers)
            .finish_non_exhaustive()
    }
}

impl ReplayMedia {
    /// A factory sending `speakers` streams per call from `packets`; starts the pacer task
    /// (call inside a tokio runtime).
    pub fn new(packets: Packets, speakers: usize, seed: u64) -> Self {
        let stats = Arc::new(ReplayStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pacer(rx, packets.clone(), Arc::clone(&stats)));
        Self {
            packets,
            speakers: speakers.max(1),
            pacer: tx,
            stats,
            failures: Arc::new(Mutex::new(Vec::new())),
            seed,
            sent_by_call: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Packets sent so far for the call (or direct session) `key`.
    pub fn sent_for(&self, key: &str) -> u64 {
        self.sent_by_call
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Stops sending on the call `key` (its WHIP session stays up until the call ends).
    pub fn stop(&self, key: &str) {
        let _ = self.pacer.send(PacerCmd::Remove(key.to_owned()));
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ReplayStats> {
        &self.stats
    }

    /// Calls whose media failed, with the reason.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Connects a WHIP session to `whip_url` with `ssrcs` and schedules its streams, outside
    /// Graph signaling (the independent-peer baseline uses it). Returns a handle that stops
    /// the streams when dropped or closed.
    ///
    /// # Errors
    /// The WHIP exchange or ICE/DTLS failed.
    pub async fn connect_direct(
        &self,
        key: &str,
        whip_url: &str,
        token: &str,
        ssrcs: Vec<u32>,
    ) -> Result<DirectSession, String> {
        let client = connect(whip_url, token, ssrcs.clone()).await?;
        self.stats
            .sessions_connected
            .fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(client);
        self.schedule(key, &client, &ssrcs);
        Ok(DirectSession {
            key: key.to_owned(),
            client: Some(client),
            pacer: self.pacer.clone(),
        })
    }

    fn schedule(&self, key: &str, client: &Arc<WhipClientSession>, ssrcs: &[u32]) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ fnv(key));
        let now = Instant::now();
        let sent = match self.sent_by_call.lock() {
            Ok(mut m) => Arc::clone(m.entry(key.to_owned()).or_default()),
            Err(_) => Arc::new(AtomicU64::new(0)),
        };
        for &ssrc in ssrcs {
            let phase = Duration::from_micros(rng.random_range(0..20_000));
            let _ = self.pacer.send(PacerCmd::Add(Stream {
                key: key.to_owned(),
                client: Arc::clone(client),
                ssrc,
                seq: rng.random(),
                ts: rng.random(),
                index: rng.random_range(0..self.packets.frames.len().max(1)),
                due: now + phase,
                first: true,
                sent: Arc::clone(&sent),
            }));
        }
    }
}

/// A session started with [`ReplayMedia::connect_direct`].
pub struct DirectSession {
    key: String,
    client: Option<Arc<WhipClientSession>>,
    pacer: mpsc::UnboundedSender<PacerCmd>,
}

impl std::fmt::Debug for DirectSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSession")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl DirectSession {
    /// Stops the streams and `DELETE`s the WHIP resource.
    pub async fn close(mut self) {
        let _ = self.pacer.send(PacerCmd::Remove(self.key.clone()));
        if let Some(c) = self.client.take() {
            close_when_released(c).await;
        }
    }
}

impl Drop for DirectSession {
    fn drop(&mut self) {
        let _ = self.pacer.send(PacerCmd::Remove(self.key.clone()));
    }
}

impl MediaPeerFactory for ReplayMedia {
    fn start(&self, session: MediaSession) -> Box<dyn MediaPeer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new("waiting for roster".to_owned()));
        let me = self.clone();
        let st = Arc::clone(&status);
        tokio::spawn(async move {
            let call_id = session.call_id.clone();
            if let Err(e) = me.run_call(session, rx, Arc::clone(&st)).await {
                me.stats.sessions_failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = me.failures.lock() {
                    f.push((call_id, e.clone()));
                }
                set(&st, format!("failed: {e}"));
            }
        });
        Box::new(ReplayPeer { events: tx, status })
    }

    fn name(&self) -> &'static str {
        "loadgen-replay"
    }
}

impl ReplayMedia {
    async fn run_call(
        &self,
        session: MediaSession,
        mut events: mpsc::UnboundedReceiver<MediaEvent>,
        status: Arc<Mutex<String>>,
    ) -> Result<(), String> {
        // The scenario's participants join at establishment; their roster may come just after
        // the media start, so wait (briefly) for all the speakers.
        let mut roster: Vec<u32> = audible(&session.participants);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while roster.len() < self.speakers {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(MediaEvent::Roster(list))) => roster = audible(&list),
                Ok(Some(MediaEvent::Ended)) | Ok(None) => return Ok(()),
                Ok(Some(_)) => {}
                Err(_) => break,
            }
        }
        if roster.is_empty() {
            return Err("no speakers in the roster".into());
        }
        roster.truncate(self.speakers);
        set(&status, "connecting".into());
        let client = connect(&session.blob.whip, &session.blob.token, roster.clone()).await?;
        self.stats
            .sessions_connected
            .fetch_add(1, Ordering::Relaxed);
        set(&status, "streaming".into());
        let client = Arc::new(client);
        self.schedule(&session.call_id, &client, &roster);
        // Roster changes are not followed: the load test's speakers stay for the whole call.
        loop {
            match events.recv().await {
                Some(MediaEvent::Ended) | None => break,
                Some(_) => {}
            }
        }
        let _ = self.pacer.send(PacerCmd::Remove(session.call_id.clone()));
        close_when_released(client).await;
        set(&status, "closed".into());
        Ok(())
    }
}

fn audible(list: &[crate::media::MediaParticipant]) -> Vec<u32> {
    let mut v: Vec<u32> = list
        .iter()
        .filter(|p| !p.muted && !p.in_lobby)
        .map(|p| p.source_id)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

async fn connect(whip: &str, token: &str, ssrcs: Vec<u32>) -> Result<WhipClientSession, String> {
    let cfg = WhipClientConfig {
        ssrcs,
        queue: 4096,
        ..WhipClientConfig::default()
    };
    let mut client = WhipClientSession::connect(whip, token, cfg)
        .await
        .map_err(|e| format!("whip connect: {e}"))?;
    client
        .wait_connected(Duration::from_secs(15))
        .await
        .map_err(|e| format!("ice/dtls: {e}"))?;
    Ok(client)
}

/// Waits until the pacer dropped its references, then closes (WHIP `DELETE`).
async fn close_when_released(mut client: Arc<WhipClientSession>) {
    for _ in 0..100 {
        match Arc::try_unwrap(client) {
            Ok(c) => {
                let _ = c.close().await;
                return;
            }
            Err(c) => client = c,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set(m: &Mutex<String>, s: String) {
    if let Ok(mut g) = m.lock() {
        *g = s;
    }
}

struct ReplayPeer {
    events: mpsc::UnboundedSender<MediaEvent>,
    status: Arc<Mutex<String>>,
}

impl MediaPeer for ReplayPeer {
    fn handle_event(&mut self, event: MediaEvent) {
        let _ = self.events.send(event);
    }
    fn status(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct Stream {
    key: String,
    client: Arc<WhipClientSession>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    index: usize,
    due: Instant,
    first: bool,
    sent: Arc<AtomicU64>,
}

enum PacerCmd {
    Add(Stream),
    Remove(String),
}

/// Sends every stream's next packet when due. Streams live in a slab; the heap holds
/// `(due, slot)`.
async fn pacer(
    mut cmds: mpsc::UnboundedReceiver<PacerCmd>,
    packets: Packets,
    stats: Arc<ReplayStats>,
) {
    let period = Duration::from_millis(20);
    let frames = packets.frames;
    if frames.is_empty() {
        return;
    }
    let mut slots: Vec<Option<Stream>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(PacerCmd::Add(s)) => {
                    let due = s.due;
                    let key = s.key.clone();
                    let slot = if let Some(i) = free.pop() {
                        slots[i] = Some(s);
                        i
                    } else {
                        slots.push(Some(s));
                        slots.len() - 1
                    };
                    by_key.entry(key).or_default().push(slot);
                    heap.push(Reverse((due, slot)));
                    stats.streams_active.fetch_add(1, Ordering::Relaxed);
                }
                Some(PacerCmd::Remove(key)) => {
                    for slot in by_key.remove(&key).unwrap_or_default() {
                        if slots[slot].take().is_some() {
                            free.push(slot);
                            stats.streams_active.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                while let Some(Reverse((due, slot))) = heap.peek().copied() {
                    if due > now {
                        break;
                    }
                    heap.pop();
                    // A removed stream's entry (or a reused slot with a later due) is stale.
                    let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    if s.due != due {
                        continue;
                    }
                    let late = now.saturating_duration_since(due);
                    if late > Duration::from_millis(10) {
                        stats.packets_late.fetch_add(1, Ordering::Relaxed);
                    }
                    stats
                        .max_late_us
                        .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                    let payload = frames[s.index % frames.len()].clone();
                    let pkt = OutboundRtp {
                        ssrc: s.ssrc,
                        sequence: s.seq,
                        timestamp: s.ts,
                        marker: std::mem::take(&mut s.first),
                        payload_type: None,
                        audio_level: None,
                        payload,
                    };
                    match s.client.send_rtp(pkt) {
                        Ok(()) => {
                            s.sent.fetch_add(1, Ordering::Relaxed);
                            stats.packets_sent.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => stats.packets_refused.fetch_add(1, Ordering::Relaxed),
                    };
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(FRAME_SAMPLES as u32);
                    s.index = (s.index + 1) % frames.len();
                    s.due += period;
                    heap.push(Reverse((s.due, slot)));
                }
            }
        }
    }
}

/// FNV-1a of a string, to derive per-call seeds.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encodes_fifty_packets_per_second_of_speech() {
        let p = Packets::encode_speech(3, 2, 32_000).unwrap();
        assert_eq!(p.frames.len(), 100);
        assert!(p.mean_bytes() > 10.0, "{}", p.mean_bytes());
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = vec![0i16; 5760];
        assert_eq!(dec.decode(&p.frames[10], &mut pcm, false).unwrap(), 960);
    }
}
