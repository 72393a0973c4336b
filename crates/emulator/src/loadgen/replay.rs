//! The load generator's media peer: pre-encoded Opus packets replayed over WHIP/WebRTC.
//!
//! Speech-like audio ([`crate::media::speech_like`]) is encoded once at start (libopus, 20 ms
//! frames, in-band FEC on, as the emulator's normal peer does) and looped: every stream sends the
//! same packets from its own starting point, with continuous sequence numbers and timestamps,
//! so the bot decodes real speech while the generator spends nothing on encoding. One pacer
//! thread ([`super::pacer`]) owns every stream's schedule; each stream has its own phase inside
//! the 20 ms period, as independent senders would. Each call has one WHIP session
//! (`mediabot-media`'s [`WhipClientPeer`]) on its own UDP socket: a small tokio task per session
//! drives ICE, DTLS and RTCP, while the pacer protects the RTP (SRTP) and hands each session's
//! packets of a tick to the kernel with one `sendmmsg`.
//!
//! Each call's setup is time-stamped ([`SetupTimes`]: media start, roster, WHIP offer sent,
//! answer, ICE/DTLS up, first packet handed to the kernel) for the call-setup breakdown.

use std::collections::HashMap;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabot_media::transport::client::ClientState;
use mediabot_media::transport::client_peer::WhipClientPeer;
use rand::{Rng as _, SeedableRng as _};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::pacer::{self, PacedSession, PacerCmd, StreamState};
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
    /// `sendmmsg` calls (one per session and pacer tick with packets).
    pub send_calls: AtomicU64,
}

/// When each step of one call's media setup happened (generator side).
#[derive(Debug, Clone, Copy)]
pub struct SetupTimes {
    /// The emulator started the call's media (Graph established the call).
    pub media_start: Instant,
    /// The speakers' roster was known.
    pub roster: Option<Instant>,
    /// The WHIP offer was about to be sent.
    pub offer_sent: Option<Instant>,
    /// The WHIP answer was applied.
    pub answered: Option<Instant>,
    /// ICE and DTLS were up.
    pub connected: Option<Instant>,
    /// The call's first packet was handed to the kernel.
    pub first_sent: Option<Instant>,
}

/// Why a call's media did not start, by call id (for the report).
pub type Failures = Arc<Mutex<Vec<(String, String)>>>;

/// The media peer factory of the load generator.
#[derive(Clone)]
pub struct ReplayMedia {
    packets: Packets,
    speakers: usize,
    pacer: std::sync::mpsc::Sender<PacerCmd>,
    stats: Arc<ReplayStats>,
    failures: Failures,
    seed: u64,
    sent_by_call: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    setup: Arc<Mutex<HashMap<String, (SetupTimes, FirstSent)>>>,
}

/// When a call's first packet was handed to the kernel (set by the pacer).
type FirstSent = Arc<Mutex<Option<Instant>>>;

impl std::fmt::Debug for ReplayMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayMedia")
            .field("speakers", &self.speakers)
            .finish_non_exhaustive()
    }
}

impl ReplayMedia {
    /// A factory sending `speakers` streams per call from `packets`; starts the pacer thread.
    ///
    /// # Errors
    /// The pacer thread cannot be started.
    pub fn new(packets: Packets, speakers: usize, seed: u64) -> std::io::Result<Self> {
        let stats = Arc::new(ReplayStats::default());
        let pacer = pacer::spawn(Arc::clone(&packets.frames), Arc::clone(&stats))?;
        Ok(Self {
            packets,
            speakers: speakers.max(1),
            pacer,
            stats,
            failures: Arc::new(Mutex::new(Vec::new())),
            seed,
            sent_by_call: Arc::new(Mutex::new(HashMap::new())),
            setup: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Packets sent so far for the call (or direct session) `key`.
    pub fn sent_for(&self, key: &str) -> u64 {
        self.sent_by_call
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// The setup time stamps of the call `key`, once its media started.
    pub fn setup_times(&self, key: &str) -> Option<SetupTimes> {
        let m = self.setup.lock().ok()?;
        let (t, first) = m.get(key)?;
        let mut t = *t;
        t.first_sent = first.lock().ok().and_then(|f| *f);
        Some(t)
    }

    /// Stops sending on the call `key` (its WHIP session stays up until the call ends).
    pub fn stop(&self, key: &str) {
        let _ = self.pacer.send(PacerCmd::Remove {
            key: key.to_owned(),
            done: None,
        });
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
    /// the streams and closes the session when dropped or closed.
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
        let live = self.open(key, whip_url, token, &ssrcs, None).await?;
        self.stats
            .sessions_connected
            .fetch_add(1, Ordering::Relaxed);
        self.schedule(key, &live, &ssrcs);
        Ok(DirectSession {
            key: key.to_owned(),
            live: Some(live),
        })
    }

    /// Binds a socket, negotiates, starts the session's control task and waits for ICE/DTLS.
    async fn open(
        &self,
        key: &str,
        whip: &str,
        token: &str,
        ssrcs: &[u32],
        times: Option<&mut SetupTimes>,
    ) -> Result<Live, String> {
        // One socket, two handles: the std one (kept; the pacer sends on its descriptor) and a
        // runtime-registered duplicate for the handshake, dropped once the session is up
        // (see `control`).
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| format!("bind: {e}"))?;
        let local = socket.local_addr().map_err(|e| format!("bind: {e}"))?;
        let polled = socket
            .try_clone()
            .and_then(UdpSocket::from_std)
            .map_err(|e| format!("bind: {e}"))?;
        let t_offer = Instant::now();
        let peer = WhipClientPeer::connect(whip, token, ssrcs, local, Duration::from_secs(10))
            .await
            .map_err(|e| format!("whip connect: {e}"))?;
        let t_answer = Instant::now();
        let peer = Arc::new(Mutex::new(peer));
        let socket = Arc::new(socket);
        let (state_tx, mut state_rx) = watch::channel(ClientState::Connecting);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(control(
            key.to_owned(),
            Arc::clone(&peer),
            Arc::clone(&socket),
            polled,
            state_tx,
            stop_rx,
            self.pacer.clone(),
        ));
        let live = Live {
            peer,
            socket,
            stop: Some(stop_tx),
            task: Some(task),
        };
        let wait = state_rx.wait_for(|s| *s != ClientState::Connecting);
        let state = match tokio::time::timeout(Duration::from_secs(15), wait).await {
            Ok(Ok(s)) => *s,
            Ok(Err(_)) => ClientState::Closed,
            Err(_) => return Err("ice/dtls: timed out".into()),
        };
        if state != ClientState::Connected {
            return Err(format!("ice/dtls: {state:?}"));
        }
        if let Some(t) = times {
            t.offer_sent = Some(t_offer);
            t.answered = Some(t_answer);
            t.connected = Some(Instant::now());
        }
        Ok(live)
    }

    fn schedule(&self, key: &str, live: &Live, ssrcs: &[u32]) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ fnv(key));
        let now = Instant::now();
        let sent = match self.sent_by_call.lock() {
            Ok(mut m) => Arc::clone(m.entry(key.to_owned()).or_default()),
            Err(_) => Arc::new(AtomicU64::new(0)),
        };
        let first_sent = self
            .setup
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|(_, f)| Arc::clone(f)))
            .unwrap_or_default();
        let streams = ssrcs
            .iter()
            .map(|&ssrc| StreamState {
                session: 0,
                ssrc,
                seq: rng.random(),
                ts: rng.random(),
                index: rng.random_range(0..self.packets.frames.len().max(1)),
                due: now + Duration::from_micros(rng.random_range(0..20_000)),
                first: true,
            })
            .collect();
        let _ = self.pacer.send(PacerCmd::Add {
            key: key.to_owned(),
            session: PacedSession {
                peer: Arc::clone(&live.peer),
                fd: live.socket.as_raw_fd(),
                sent,
                first_sent,
            },
            streams,
        });
    }

    fn record_setup(&self, key: &str, t: SetupTimes) {
        if let Ok(mut m) = self.setup.lock() {
            let first = m.get(key).map(|(_, f)| Arc::clone(f)).unwrap_or_default();
            m.insert(key.to_owned(), (t, first));
        }
    }
}

/// A live WHIP session: its peer and socket (shared with the pacer) and its control task.
struct Live {
    peer: Arc<Mutex<WhipClientPeer>>,
    socket: Arc<std::net::UdpSocket>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Stops the streams, closes the session and `DELETE`s the WHIP resource.
    async fn close(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// How often a connected session's socket is read: the bot's datagrams to the generator
/// (its RTP, 50 a second per call, and RTCP) wait at most this long.
const CONNECTED_POLL: Duration = Duration::from_millis(20);

/// Drives one session's ICE, DTLS and RTCP on its socket until told to stop (or the stop
/// handle is dropped); then takes the streams off the pacer, waits until the pacer no longer
/// uses the socket, closes the peer and `DELETE`s the WHIP resource.
///
/// Until the session is up, `polled` (the socket registered with the runtime) wakes the task
/// on each datagram. Once it is up, `polled` is dropped, which takes the socket off the
/// runtime's poller, and the socket is read every [`CONNECTED_POLL`] instead. Why: on
/// loopback the sender of a datagram pays for waking its receiver (in the kernel's send path,
/// an inter-processor interrupt when the receiver sleeps on another core), so a generator
/// woken by every datagram the bot sends charged the bot ~40 µs of the ~75 µs each of its
/// sends took on this VM (perf at 100 streams, `docs/performance.md`). A real network card charges the bot nothing of the kind.
async fn control(
    key: String,
    peer: Arc<Mutex<WhipClientPeer>>,
    socket: Arc<std::net::UdpSocket>,
    polled: UdpSocket,
    state: watch::Sender<ClientState>,
    mut stop: oneshot::Receiver<()>,
    pacer: std::sync::mpsc::Sender<PacerCmd>,
) {
    let mut polled = Some(polled);
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    let drain = |p: &mut WhipClientPeer, out: &mut Vec<u8>| {
        while let Some(to) = p.poll_transmit(out) {
            let _ = socket.send_to(out, to);
        }
    };
    loop {
        let (deadline, connected) = {
            let Ok(mut p) = peer.lock() else { break };
            drain(&mut p, &mut out);
            let s = p.state();
            state.send_if_modified(|old| {
                let changed = *old != s;
                *old = s;
                changed
            });
            // The pacer's writes may arm earlier timers (reports): look again at least every
            // 200 ms.
            let cap = Instant::now() + Duration::from_millis(200);
            (
                p.poll_timeout().map_or(cap, |t| t.min(cap)),
                s == ClientState::Connected,
            )
        };
        if connected {
            polled = None;
        }
        if let Some(sock) = &polled {
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    if let (Ok((n, from)), Ok(mut p)) = (r, peer.lock()) {
                        p.handle_datagram(Instant::now(), from, &buf[..n]);
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    if let Ok(mut p) = peer.lock() {
                        p.handle_timeout(Instant::now());
                    }
                }
                _ = &mut stop => break,
            }
        } else {
            let wake = deadline.min(Instant::now() + CONNECTED_POLL);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                _ = &mut stop => break,
            }
            let Ok(mut p) = peer.lock() else { break };
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                p.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            let now = Instant::now();
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
        }
    }
    let (tx, rx) = oneshot::channel();
    if pacer
        .send(PacerCmd::Remove {
            key,
            done: Some(tx),
        })
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
    }
    let delete = match peer.lock() {
        Ok(mut p) => {
            p.close();
            drain(&mut p, &mut out);
            Some(p.delete_resource())
        }
        Err(_) => None,
    };
    let _ = state.send(ClientState::Closed);
    if let Some(d) = delete {
        let _ = d.await;
    }
}

/// A session started with [`ReplayMedia::connect_direct`].
pub struct DirectSession {
    key: String,
    live: Option<Live>,
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
        if let Some(l) = self.live.take() {
            l.close().await;
        }
    }
}

impl MediaPeerFactory for ReplayMedia {
    fn start(&self, session: MediaSession) -> Box<dyn MediaPeer> {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new("waiting for roster".to_owned()));
        let me = self.clone();
        let st = Arc::clone(&status);
        let started = Instant::now();
        tokio::spawn(async move {
            let call_id = session.call_id.clone();
            if let Err(e) = me.run_call(session, rx, Arc::clone(&st), started).await {
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
        started: Instant,
    ) -> Result<(), String> {
        let mut times = SetupTimes {
            media_start: started,
            roster: None,
            offer_sent: None,
            answered: None,
            connected: None,
            first_sent: None,
        };
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
        times.roster = Some(Instant::now());
        set(&status, "connecting".into());
        let key = session.call_id.clone();
        self.record_setup(&key, times);
        let live = self
            .open(
                &key,
                &session.blob.whip,
                &session.blob.token,
                &roster,
                Some(&mut times),
            )
            .await?;
        self.record_setup(&key, times);
        self.stats
            .sessions_connected
            .fetch_add(1, Ordering::Relaxed);
        set(&status, "streaming".into());
        self.schedule(&key, &live, &roster);
        // Roster changes are not followed: the load test's speakers stay for the whole call.
        loop {
            match events.recv().await {
                Some(MediaEvent::Ended) | None => break,
                Some(_) => {}
            }
        }
        live.close().await;
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
