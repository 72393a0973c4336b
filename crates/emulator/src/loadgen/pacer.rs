//! The load generator's pacer: one thread sends every stream's packets when due.
//!
//! ```text
//!  commands (add/remove a session's streams)
//!        │
//!  ┌─────▼──────────────────────────── pacer thread (generator core) ──────────────────┐
//!  │ Schedule: heap of (due, stream)  ──▶ due streams this tick, in due order           │
//!  │   per packet: lock the session's WhipClientPeer, protect (SRTP), copy the datagram │
//!  │               into the session's reusable batch buffer                             │
//!  │   per session and tick: one sendmmsg(2) with all its datagrams                     │
//!  │   lateness = (after the hand-over) − due, per packet; > 10 ms counts as late       │
//!  └────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! [`Schedule`] is the sans-IO core (virtual time in the tests): streams keep the phase they
//! were added with, advance by one 20 ms period per packet, and a stream that fell behind sends
//! each missed packet (late) rather than skipping, so lateness is counted, never hidden. The
//! thread wakes at most once per [`TICK`] while streams are due and sleeps until the next due
//! time otherwise; no tokio task or channel sits on the per-packet path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabot_media::transport::client_peer::WhipClientPeer;

use super::replay::{FRAME_SAMPLES, ReplayStats};

/// Packet period of every stream.
pub const PERIOD: Duration = Duration::from_millis(20);
/// A packet handed to the kernel later than this after its due time is counted late.
pub const LATE: Duration = Duration::from_millis(10);
/// Shortest sleep of the pacer thread while streams are due (packets due within one tick go
/// out together).
pub const TICK: Duration = Duration::from_millis(1);

/// One stream's sending state.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// Index of the session (socket) the stream is sent on.
    pub session: usize,
    /// SSRC (the speaker's source id).
    pub ssrc: u32,
    /// Next sequence number.
    pub seq: u16,
    /// Next RTP timestamp.
    pub ts: u32,
    /// Next packet of the pre-encoded loop.
    pub index: usize,
    /// When the next packet is due.
    pub due: Instant,
    /// The next packet is the stream's first (marker bit).
    pub first: bool,
}

/// The sans-IO schedule: a slab of streams and a heap of due times.
#[derive(Debug, Default)]
pub struct Schedule {
    slots: Vec<Option<StreamState>>,
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    active: usize,
}

impl Schedule {
    /// Adds a stream (its first packet is due at `s.due`).
    pub fn add(&mut self, s: StreamState) {
        let due = s.due;
        let slot = if let Some(i) = self.free.pop() {
            self.slots[i] = Some(s);
            i
        } else {
            self.slots.push(Some(s));
            self.slots.len() - 1
        };
        self.heap.push(Reverse((due, slot)));
        self.active += 1;
    }

    /// Removes every stream of `session`; returns how many.
    pub fn remove_session(&mut self, session: usize) -> usize {
        let mut n = 0;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.as_ref().is_some_and(|s| s.session == session) {
                *s = None;
                self.free.push(i);
                n += 1;
            }
        }
        self.active -= n;
        n
    }

    /// Streams scheduled.
    pub fn len(&self) -> usize {
        self.active
    }

    /// Whether no stream is scheduled.
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    /// The earliest due time, if any stream is scheduled (stale heap entries of removed
    /// streams are dropped on the way).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(&Reverse((due, slot))) = self.heap.peek() {
            if self.slots[slot].as_ref().is_some_and(|s| s.due == due) {
                return Some(due);
            }
            self.heap.pop();
        }
        None
    }

    /// Calls `send` for every packet due at or before `now`, in due order, with the stream as
    /// it is for that packet; then advances the stream by one period. Returns the packets.
    pub fn pop_due(&mut self, now: Instant, mut send: impl FnMut(&StreamState)) -> usize {
        let mut n = 0;
        while let Some(&Reverse((due, slot))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            // A removed stream's entry (or a reused slot with another due) is stale.
            let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if s.due != due {
                continue;
            }
            send(s);
            n += 1;
            s.seq = s.seq.wrapping_add(1);
            s.ts = s.ts.wrapping_add(FRAME_SAMPLES as u32);
            s.index += 1;
            s.first = false;
            s.due += PERIOD;
            self.heap.push(Reverse((s.due, slot)));
        }
        n
    }
}

/// What the pacer thread needs of a session: its peer (shared with the session's control
/// task, which drives ICE/DTLS/RTCP on the same socket) and the socket's descriptor.
pub struct PacedSession {
    /// The peer; the pacer locks it once per packet.
    pub peer: Arc<Mutex<WhipClientPeer>>,
    /// The session's UDP socket (non-blocking), owned by its control task, which outlives
    /// the pacer's use of it (it waits for [`PacerCmd::Remove`] to be processed).
    pub fd: RawFd,
    /// Packets sent for the session's call.
    pub sent: Arc<AtomicU64>,
    /// When the call's first packet was handed to the kernel (set once).
    pub first_sent: Arc<Mutex<Option<Instant>>>,
}

/// Commands to the pacer thread.
pub enum PacerCmd {
    /// Schedules the session `key`'s streams.
    Add {
        /// Call or direct-session key.
        key: String,
        /// The session.
        session: PacedSession,
        /// Its streams (`session` field ignored).
        streams: Vec<StreamState>,
    },
    /// Stops the streams of `key`; `done` is signalled once the pacer no longer touches it.
    Remove {
        /// Call or direct-session key.
        key: String,
        /// Signalled when removed.
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

/// One session's datagrams of the current tick.
struct Batch {
    session: PacedSession,
    bufs: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    dues: Vec<Instant>,
    len: usize,
    first: bool,
}

/// Starts the pacer thread; it ends when every sender of the command channel is gone.
pub fn spawn(
    frames: Arc<Vec<Bytes>>,
    stats: Arc<ReplayStats>,
) -> std::io::Result<mpsc::Sender<PacerCmd>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || run(&rx, &frames, &stats))?;
    Ok(tx)
}

/// The pacer's state besides the schedule.
#[derive(Default)]
struct Sessions {
    batches: Vec<Option<Batch>>,
    keys: HashMap<String, usize>,
}

impl Sessions {
    fn apply(&mut self, cmd: PacerCmd, sched: &mut Schedule, stats: &ReplayStats) {
        match cmd {
            PacerCmd::Add {
                key,
                session,
                streams,
            } => {
                if let Some(old) = self.keys.remove(&key) {
                    self.drop_session(old, sched, stats);
                }
                let idx = match self.batches.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.batches.push(None);
                        self.batches.len() - 1
                    }
                };
                self.batches[idx] = Some(Batch {
                    session,
                    bufs: Vec::new(),
                    to: Vec::new(),
                    dues: Vec::new(),
                    len: 0,
                    first: true,
                });
                self.keys.insert(key, idx);
                for mut s in streams {
                    s.session = idx;
                    sched.add(s);
                    stats.streams_active.fetch_add(1, Ordering::Relaxed);
                }
            }
            PacerCmd::Remove { key, done } => {
                if let Some(idx) = self.keys.remove(&key) {
                    self.drop_session(idx, sched, stats);
                }
                if let Some(d) = done {
                    let _ = d.send(());
                }
            }
        }
    }

    fn drop_session(&mut self, idx: usize, sched: &mut Schedule, stats: &ReplayStats) {
        let n = sched.remove_session(idx);
        stats.streams_active.fetch_sub(n as u64, Ordering::Relaxed);
        self.batches[idx] = None;
    }
}

fn run(cmds: &mpsc::Receiver<PacerCmd>, frames: &[Bytes], stats: &ReplayStats) {
    if frames.is_empty() {
        return;
    }
    let mut sched = Schedule::default();
    let mut sessions = Sessions::default();
    let mut dirty: Vec<usize> = Vec::new();
    let mut scratch = Scratch::default();
    loop {
        if sched.is_empty() {
            // Idle: block on the next command.
            match cmds.recv() {
                Ok(c) => sessions.apply(c, &mut sched, stats),
                Err(_) => return,
            }
            continue;
        }
        loop {
            match cmds.try_recv() {
                Ok(c) => sessions.apply(c, &mut sched, stats),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        let batches = &mut sessions.batches;
        sched.pop_due(now, |s| {
            let Some(b) = batches.get_mut(s.session).and_then(Option::as_mut) else {
                return;
            };
            let payload = frames[s.index % frames.len()].clone();
            let Ok(mut peer) = b.session.peer.lock() else {
                stats.packets_refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if peer
                .write_opus(now, s.ssrc, s.seq, s.ts, s.first, payload)
                .is_err()
            {
                stats.packets_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if b.len == 0 {
                dirty.push(s.session);
            }
            // Usually exactly one datagram (the SRTP packet); anything else queued goes too.
            loop {
                if b.bufs.len() == b.len {
                    b.bufs.push(Vec::with_capacity(256));
                    b.to.push(SocketAddr::from(([0, 0, 0, 0], 0)));
                    b.dues.push(s.due);
                }
                let Some(to) = peer.poll_transmit(&mut b.bufs[b.len]) else {
                    break;
                };
                b.to[b.len] = to;
                b.dues[b.len] = s.due;
                b.len += 1;
            }
        });
        for idx in dirty.drain(..) {
            let Some(b) = batches.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            flush(b, &mut scratch, stats);
        }
        // Sleep until the next due time, at least one tick (batching); a command wakes it.
        let after = Instant::now();
        let wake = sched
            .next_due()
            .map_or(after + TICK, |d| d.max(after + TICK));
        match cmds.recv_timeout(wake.saturating_duration_since(after)) {
            Ok(c) => sessions.apply(c, &mut sched, stats),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Hands one session's datagrams of this tick to the kernel and does the accounting.
fn flush(b: &mut Batch, scratch: &mut Scratch, stats: &ReplayStats) {
    let n = b.len;
    b.len = 0;
    if n == 0 {
        return;
    }
    let sent = scratch.send(b.session.fd, &b.bufs[..n], &b.to[..n]);
    stats.send_calls.fetch_add(1, Ordering::Relaxed);
    let handed = Instant::now();
    let mut max_late = Duration::ZERO;
    let mut late = 0;
    for due in &b.dues[..sent] {
        let l = handed.saturating_duration_since(*due);
        late += u64::from(l > LATE);
        max_late = max_late.max(l);
    }
    if late > 0 {
        stats.packets_late.fetch_add(late, Ordering::Relaxed);
    }
    stats
        .max_late_us
        .fetch_max(max_late.as_micros() as u64, Ordering::Relaxed);
    stats.packets_sent.fetch_add(sent as u64, Ordering::Relaxed);
    if sent < n {
        stats
            .packets_refused
            .fetch_add((n - sent) as u64, Ordering::Relaxed);
    }
    b.session.sent.fetch_add(sent as u64, Ordering::Relaxed);
    if b.first && sent > 0 {
        b.first = false;
        if let Ok(mut f) = b.session.first_sent.lock() {
            f.get_or_insert(handed);
        }
    }
}

/// Reusable `sendmmsg` arguments.
#[derive(Default)]
struct Scratch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Scratch {
    /// Sends `bufs[i]` to `to[i]` on `fd` with as few `sendmmsg` calls as possible; returns
    /// how many the kernel took (stops at the first error, e.g. a full socket buffer).
    fn send(&mut self, fd: RawFd, bufs: &[Vec<u8>], to: &[SocketAddr]) -> usize {
        let n = bufs.len();
        if n == 0 {
            return 0;
        }
        self.names.clear();
        self.iovs.clear();
        self.msgs.clear();
        for (b, addr) in bufs.iter().zip(to) {
            self.names.push(sockaddr(*addr));
            self.iovs.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
        for (i, addr) in to.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is a valid empty message header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            m.msg_hdr.msg_namelen = sockaddr_len(addr);
            m.msg_hdr.msg_iov = &raw mut self.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        let mut done = 0;
        while done < n {
            // SAFETY: `msgs[done..n]` are valid headers pointing into `names`, `iovs` and
            // `bufs`, all alive and unmoved for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr().add(done),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
            } else if r < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                break;
            }
        }
        done
    }
}

fn sockaddr_len(addr: &SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
    }
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: an all-zero sockaddr_storage is valid (AF_UNSPEC).
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
    ss
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stream(session: usize, ssrc: u32, due: Instant) -> StreamState {
        StreamState {
            session,
            ssrc,
            seq: u16::MAX,
            ts: u32::MAX - 100,
            index: 0,
            due,
            first: true,
        }
    }

    /// Every packet of every stream, on virtual time stepped by `tick`, as (ssrc, due, seq,
    /// ts, first, sent at).
    fn run_for(
        sched: &mut Schedule,
        t0: Instant,
        tick: Duration,
        until: Duration,
    ) -> Vec<(u32, Instant, u16, u32, bool, Instant)> {
        let mut out = Vec::new();
        let mut now = t0;
        while now < t0 + until {
            sched.pop_due(now, |s| {
                out.push((s.ssrc, s.due, s.seq, s.ts, s.first, now))
            });
            now += tick;
        }
        out
    }

    #[test]
    fn streams_keep_their_phase_and_period_and_wrap_counters() {
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        let phases = [0u64, 3_300, 19_999];
        for (i, p) in phases.iter().enumerate() {
            sched.add(stream(0, i as u32, t0 + Duration::from_micros(*p)));
        }
        let sent = run_for(
            &mut sched,
            t0,
            Duration::from_micros(250),
            Duration::from_millis(1020),
        );
        for (i, p) in phases.iter().enumerate() {
            // The packets due in the first second: 50 per stream whatever its phase.
            let mine: Vec<_> = sent
                .iter()
                .filter(|x| x.0 == i as u32 && x.1 < t0 + Duration::from_secs(1))
                .collect();
            assert_eq!(mine.len(), 50, "stream {i}");
            for (k, x) in mine.iter().enumerate() {
                assert_eq!(x.1, t0 + Duration::from_micros(*p) + PERIOD * k as u32);
                // Sent at the first tick at or after its due time, never before.
                assert!(x.5 >= x.1 && x.5 - x.1 < Duration::from_micros(250));
                assert_eq!(x.2, u16::MAX.wrapping_add(k as u16));
                assert_eq!(x.3, (u32::MAX - 100).wrapping_add(960 * k as u32));
                assert_eq!(x.4, k == 0, "marker only on the first packet");
            }
        }
        // Due order overall.
        assert!(sent.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn a_late_pacer_sends_every_missed_packet_late_rather_than_skipping() {
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        sched.add(stream(0, 7, t0));
        // Stalled for 65 ms: the packets due at 0, 20, 40 and 60 ms all go at 65 ms.
        let mut late = Vec::new();
        let n = sched.pop_due(t0 + Duration::from_millis(65), |s| late.push(s.due));
        assert_eq!(n, 4);
        assert_eq!(late, (0..4).map(|k| t0 + PERIOD * k).collect::<Vec<_>>(),);
        assert_eq!(sched.next_due(), Some(t0 + Duration::from_millis(80)));
    }

    #[test]
    fn removing_a_session_stops_only_its_streams_and_slots_are_reused() {
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        sched.add(stream(0, 1, t0));
        sched.add(stream(1, 2, t0 + Duration::from_millis(1)));
        sched.add(stream(0, 3, t0 + Duration::from_millis(2)));
        assert_eq!(sched.len(), 3);
        assert_eq!(sched.remove_session(0), 2);
        assert_eq!(sched.len(), 1);
        assert_eq!(sched.next_due(), Some(t0 + Duration::from_millis(1)));
        // A new stream takes a freed slot; the stale heap entries of the old ones do not fire.
        sched.add(stream(2, 4, t0 + Duration::from_millis(5)));
        let sent = run_for(
            &mut sched,
            t0,
            Duration::from_millis(1),
            Duration::from_millis(40),
        );
        let ssrcs: Vec<u32> = sent.iter().map(|x| x.0).collect();
        assert_eq!(ssrcs, vec![2, 4, 2, 4]);
        assert_eq!(sched.remove_session(1) + sched.remove_session(2), 2);
        assert!(sched.is_empty());
        assert_eq!(sched.next_due(), None);
    }

    #[test]
    fn sendmmsg_batch_reaches_a_loopback_socket() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let bufs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut scratch = Scratch::default();
        use std::os::fd::AsRawFd as _;
        assert_eq!(scratch.send(tx.as_raw_fd(), &bufs, &[to; 5]), 5);
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..n], &vec![i; 10 + usize::from(i)][..]);
        }
    }
}
