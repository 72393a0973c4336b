//! The sinks of the calls: drain each call's frame rings into the recorder and the transcription
//! feed, off the media thread.
//!
//! Sink threads ([`SinkPool`], `media.sink_threads`: a few workers shared by all calls, two by
//! default, or one per call) run every call's sinks. A thread wakes every [`SINK_WAKE_INTERVAL`]
//! (20 ms, on the process's shared grid) and, for each of its calls, drains everything queued,
//! writes a file-based transcription feed's messages and applies the control messages waiting
//! (roster facts, compliance gate, stop). On stop it drains the call's rings one last time and
//! finalizes the files (a shared worker hands that to a short-lived thread). A thread that
//! falls behind lets its calls' rings fill; the pipeline then drops (and counts) frames per
//! call. [`spawn`] runs one call on a thread of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mediabot_media::{AudioFrame, FrameConsumer, FrameSource};

use super::packet_ring::{PacketConsumer, TappedPacket};
use super::recorder::{Manifest, ParticipantMeta, Recorder};
use super::transcription::{FRAME_SAMPLES, FileFeed, SpeakerInfo};
use super::transcription_ws::FeedHandle;

/// Control messages for a sink thread.
#[derive(Debug)]
pub enum SinkControl {
    /// Start consuming a ring (the recorder's, once compliance allows, or the feed's).
    AddRing(FrameConsumer<i16>),
    /// Start consuming the call's received Opus packets (Ogg/Opus recording).
    AddPacketRing(PacketConsumer),
    /// Roster facts about a source.
    Participant {
        /// Source id.
        source_id: u32,
        /// For the recorder.
        meta: ParticipantMeta,
    },
    /// The dominant speaker changed (`None`: nobody), at a timeline position (output rate).
    Dominant(Option<u32>, u64),
    /// Drain and finish; media stats go into the manifest.
    Stop(serde_json::Value),
}

/// What the thread produced.
#[derive(Debug, Default)]
pub struct SinkOutcome {
    /// The final recorder manifest, if recording ran.
    pub manifest: Option<Manifest>,
    /// Errors finishing files.
    pub errors: Vec<String>,
    /// Frames consumed.
    pub frames: u64,
    /// Transcription feed messages that could not be written to the feed's files (logged).
    pub feed_write_errors: u64,
}

/// The sinks of one call.
pub struct SinkSet {
    /// Recorder (48 kHz or whatever the pipeline's rate is).
    pub recorder: Option<Recorder>,
    /// Transcription feed (16 kHz).
    pub feed: Option<FeedHandle>,
    /// Where the feed's messages are written, when the feed goes to files
    /// (`transcription.file_dir`) rather than to a WebSocket: the sink thread writes them itself
    /// after each drain ([`FileFeed::pump`]), so a file feed costs no thread and no wake-ups of
    /// its own (it had a thread per call, waking every 20 ms: half the sink side's wake-ups).
    pub feed_dir: Option<PathBuf>,
    /// The pipeline's output rate; frames are decimated to 16 kHz for the feed when it is 48 kHz.
    pub rate: u32,
    /// Recorder file failures are added here (`mediabot_recorder_errors_total`).
    pub errors: Arc<AtomicU64>,
    /// Feed messages that could not be written to the feed's files are added here, as they
    /// happen (`mediabot_transcription_write_errors_total`).
    pub feed_errors: Arc<AtomicU64>,
    /// Called once, with the time, when the first participant frame (or, with no per-speaker
    /// ring, the first audible mixed frame) reaches a sink (the call setup metric's end point).
    pub on_first_frame: Option<Box<dyn FnOnce(std::time::Instant) + Send>>,
}

impl SinkSet {
    /// No sinks (what a finished call's task keeps once its sinks went to be finished).
    fn empty() -> Self {
        Self {
            recorder: None,
            feed: None,
            feed_dir: None,
            rate: 0,
            errors: Arc::default(),
            feed_errors: Arc::default(),
            on_first_frame: None,
        }
    }
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// How long a sink worker sleeps between drains.
///
/// 20 ms, one frame: each wake-up drains one frame per speaker, where the earlier 10 ms woke
/// twice per frame and found nothing half the time (16 calls: 1,600 wake-ups a second, now 800).
/// Why it is safe: the rings hold far more than a wait plus a scheduling hiccup. The speakers'
/// ring holds 1 s per speaker up to `recording.ring_frames` (500 by default): 1 s up to 10
/// speakers and 156 ms (7.8 waits) at the 64-speaker bound of `media.max_streams_per_call`;
/// the mix ring holds at least 50 frames (1 s); the Ogg packet ring, 256 KiB, about half a second at 64 speakers. What the
/// wait delays: control messages (applied at the next wake-up, so a call's end waits up to
/// 20 ms more). What it does not delay: the latency histograms (taken when the media thread
/// pushes a frame into the ring); the call setup metric's end point, the first frame reaching the
/// sink (until then the thread waits [`FIRST_FRAME_WAKE_INTERVAL`], 10 ms, as before). What it
/// delays, by at most 10 ms more: the transcription feed's audio.
pub const SINK_WAKE_INTERVAL: Duration = Duration::from_millis(20);

/// The wait until the first frame has reached the sink (while `on_first_frame` is pending): the
/// call setup metric ends there, so the longer [`SINK_WAKE_INTERVAL`] does not add to it.
pub const FIRST_FRAME_WAKE_INTERVAL: Duration = Duration::from_millis(10);

/// Shortest time between two rewrites of a call's manifest for roster changes (the final one,
/// at the call's end, is always written).
pub const MANIFEST_INTERVAL: Duration = Duration::from_secs(1);

/// Default nice value of the sink threads (`media.sink_nice`). The media thread (nice 0) has
/// play-out deadlines; a sink thread only drains rings that hold seconds, so on a busy core it
/// yields: the media thread's wake-ups are not queued behind a sink thread's burst of file
/// writes and filtering.
pub const SINK_THREAD_NICE: i32 = 10;

/// The nice value sink threads (and the fsync thread) take when they start: process-wide, set
/// once from the config at engine start ([`set_sink_nice`]).
static SINK_NICE: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(SINK_THREAD_NICE);

/// Sets the nice value (0-19, clamped) of sink threads started from now on.
pub fn set_sink_nice(nice: i32) {
    SINK_NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
}

/// The nice value sink threads take ([`set_sink_nice`]).
pub fn sink_nice() -> i32 {
    SINK_NICE.load(Ordering::Relaxed)
}

/// How the sink threads yield to the media thread (`media.sink_scheduling`).
///
/// Measured at 160 streams on one core, three runs each (`docs/performance.md`): frame
/// processing p99 1.62-1.94 ms with `batch`, 1.71-3.42 ms with `idle`, 1.70-2.70 ms with `nice`;
/// the spread between runs on this VM is as large as the differences, so the default is chosen
/// for its guarantees: `batch` never starves and is never refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkScheduling {
    /// Nice [`sink_nice`] (10 by default) under `SCHED_BATCH`: a sink thread waking does not preempt the
    /// media thread, and keeps its fair share of a saturated core (recordings keep up).
    #[default]
    Batch,
    /// `SCHED_IDLE`: a sink thread runs only on what every other thread of the core leaves. On
    /// a saturated or shared core its rings fill and drop frames (counted), and an
    /// unprivileged thread cannot leave the policy again.
    Idle,
    /// Nice [`sink_nice`] only (wake-up preemption stays on).
    Nice,
}

/// Applies `scheduling` to the calling thread; what the OS refuses is logged and skipped.
fn apply_scheduling(scheduling: SinkScheduling) {
    use mediabot_media::sched;
    if scheduling == SinkScheduling::Idle {
        match sched::set_current_thread_idle() {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "sink thread: no SCHED_IDLE, nice instead"),
        }
    }
    if let Err(e) = sched::set_current_thread_nice(sink_nice()) {
        tracing::debug!(error = %e, "sink thread keeps the default priority");
    }
    if scheduling == SinkScheduling::Batch
        && let Err(e) = sched::set_current_thread_batch()
    {
        tracing::debug!(error = %e, "sink thread: no SCHED_BATCH");
    }
}

/// Runs a call's sinks on a thread of its own (a worker that exits once the call is
/// finished): what [`SinkPool`] does for each call by default, and what tools and tests that
/// run one call use directly.
///
/// # Errors
/// When the OS refuses a thread.
pub fn spawn(
    name: &str,
    sinks: SinkSet,
    control: Receiver<SinkControl>,
    scheduling: SinkScheduling,
) -> std::io::Result<SinkJoin> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (task, join) = SinkTask::new(sinks, control);
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            apply_scheduling(scheduling);
            worker(&rx, vec![task], &AtomicUsize::new(1), Ending::Here);
        })?;
    drop(tx);
    Ok(join)
}

/// The end of a call's sinks: [`SinkJoin::join`] waits for its outcome.
#[derive(Debug)]
pub struct SinkJoin(Receiver<SinkOutcome>);

impl SinkJoin {
    /// Blocks until the call's sinks are finished (after [`SinkControl::Stop`], or once the
    /// control sender is dropped) and returns what they produced; `None` if they died
    /// (a panic, logged) without an outcome.
    pub fn join(self) -> Option<SinkOutcome> {
        self.0.recv().ok()
    }
}

/// The threads that run the calls' sinks (`media.sink_threads`): a few workers shared by all
/// calls (two by default), or one per call.
///
/// **Shared workers** wake less: a thread per call wakes every 20 ms (2,500 wake-ups a second
/// at 50 calls, a few % of a core on the load test's VM) to drain a few frames, a worker drains
/// all of its calls per wake-up. And they keep out of the media thread's way: sink threads run
/// at nice 10, and threads per call add their weights up with the calls, so from ~36 calls on
/// one core they outweigh the media thread and delay its wake-ups (processing p99 past 2 ms at
/// 400 `wav` streams, where two workers held 440; `docs/performance.md`). What they trade: a
/// worker's calls share its time, so a disk that stalls one call's writes delays the others on
/// that worker too (the periodic `fdatasync`s, the slow part, run on the sync thread,
/// [`super::syncer`]); and on **a saturated core** a worker gets about a tenth of the media
/// thread's share: one worker at 320 streams on one core (wav, 95 % busy) fell behind and the
/// rings dropped 71,304 frames, two did not at 480. Give shared workers spare CPU.
///
/// On a shared worker, a call's end (the final flush, `fdatasync` and manifest, which can take
/// tens of milliseconds) runs on a short-lived thread of its own, so it never holds up the
/// worker's other calls; a thread per call closes its files itself.
#[derive(Debug)]
pub struct SinkPool {
    workers: std::sync::Mutex<Vec<Worker>>,
    /// `None`: a thread per call.
    max_workers: Option<usize>,
    scheduling: SinkScheduling,
}

#[derive(Debug)]
struct Worker {
    tx: std::sync::mpsc::Sender<SinkTask>,
    /// Calls on the worker.
    load: Arc<AtomicUsize>,
}

impl SinkPool {
    /// A pool of at most `max_workers` threads (at least one), started as calls come; with
    /// `None`, a thread per call.
    pub fn new(max_workers: Option<usize>, scheduling: SinkScheduling) -> Self {
        Self {
            workers: std::sync::Mutex::new(Vec::new()),
            max_workers: max_workers.map(|n| n.max(1)),
            scheduling,
        }
    }

    /// Starts running a call's sinks: on a thread of its own named after `name`, or on the
    /// least loaded worker (a new one while the pool has fewer than its maximum).
    ///
    /// # Errors
    /// When the OS refuses a new thread.
    pub fn start(
        &self,
        name: &str,
        sinks: SinkSet,
        control: Receiver<SinkControl>,
    ) -> std::io::Result<SinkJoin> {
        let Some(max_workers) = self.max_workers else {
            return spawn(name, sinks, control, self.scheduling);
        };
        let (task, join) = SinkTask::new(sinks, control);
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A worker that died (a panic outside a call's step) refuses the task: replace it.
        workers.retain(|w| w.load.load(Ordering::Relaxed) != usize::MAX);
        let idle = workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .filter(|w| workers.len() >= max_workers || w.load.load(Ordering::Relaxed) == 0);
        let task = match idle {
            Some(w) => {
                w.load.fetch_add(1, Ordering::Relaxed);
                match w.tx.send(task) {
                    Ok(()) => return Ok(join),
                    Err(std::sync::mpsc::SendError(task)) => {
                        w.load.store(usize::MAX, Ordering::Relaxed);
                        task
                    }
                }
            }
            None => task,
        };
        workers.retain(|w| w.load.load(Ordering::Relaxed) != usize::MAX);
        let (tx, rx) = std::sync::mpsc::channel();
        let load = Arc::new(AtomicUsize::new(1));
        let scheduling = self.scheduling;
        let worker_load = Arc::clone(&load);
        std::thread::Builder::new()
            .name(format!("sink-{}", workers.len()))
            .spawn(move || {
                apply_scheduling(scheduling);
                worker(&rx, vec![task], &worker_load, Ending::HandOff);
                worker_load.store(usize::MAX, Ordering::Relaxed);
            })?;
        workers.push(Worker { tx, load });
        Ok(join)
    }
}

/// Where a finished call's files are closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// On the thread that ran the call (it has no other call to hold up).
    Here,
    /// On a short-lived thread of its own, so the worker's other calls go on draining; on
    /// the worker itself when the OS refuses that thread.
    HandOff,
}

/// A worker's loop: every 20 ms, on the process's shared grid (10 ms while a call still
/// waits for its first frame), runs each of its calls once; takes new calls as they come.
/// Returns when it has no call left and no more can come.
fn worker(new: &Receiver<SinkTask>, mut tasks: Vec<SinkTask>, load: &AtomicUsize, ending: Ending) {
    let mut open = true;
    loop {
        let step = if tasks.iter().any(SinkTask::awaits_first_frame) {
            FIRST_FRAME_WAKE_INTERVAL
        } else {
            SINK_WAKE_INTERVAL
        };
        // Until the next point of the process's grid, which the media thread's wake-ups and
        // every other sink worker's share: one timer interrupt wakes them all.
        let now = Instant::now();
        let due = mediabot_media::sched::next_grid_point(now, step);
        let wait = due - now;
        // Whether this round is the scheduled one (not one started early by a new call).
        let mut scheduled = true;
        if open {
            match new.recv_timeout(wait) {
                Ok(t) => {
                    tasks.push(t);
                    scheduled = false;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else if tasks.is_empty() {
            return;
        } else {
            std::thread::sleep(wait);
        }
        let start = Instant::now();
        if scheduled && !tasks.is_empty() {
            SINK_METRICS
                .wake_delay
                .observe(start.saturating_duration_since(due));
        }
        tasks.retain_mut(|t| {
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.step(ending)));
            match done {
                Ok(false) => true,
                Ok(true) => {
                    load.fetch_sub(1, Ordering::Relaxed);
                    false
                }
                Err(_) => {
                    // The call's outcome sender goes with it: its join returns `None`.
                    tracing::error!("sink: a call's sinks panicked; dropping them");
                    load.fetch_sub(1, Ordering::Relaxed);
                    false
                }
            }
        });
        if !tasks.is_empty() {
            SINK_METRICS.round.observe(start.elapsed());
        }
    }
}

/// How the sink threads keep up, for the process's metrics: a thread that falls behind shows
/// here before its calls' rings fill and drop frames.
#[derive(Debug)]
pub struct SinkMetrics {
    /// How late each scheduled round of a sink thread started after its grid point: the
    /// thread waited for the CPU (`mediabot_sink_wake_delay_seconds`).
    pub wake_delay: crate::metrics::Histogram,
    /// How long each round took to drain all of the thread's calls once (writes, feed,
    /// control messages; `mediabot_sink_round_seconds`).
    pub round: crate::metrics::Histogram,
}

/// The process's sink thread metrics (every worker and per-call thread records here).
pub static SINK_METRICS: std::sync::LazyLock<SinkMetrics> =
    std::sync::LazyLock::new(|| SinkMetrics {
        wake_delay: crate::metrics::Histogram::latency(),
        round: crate::metrics::Histogram::latency(),
    });

/// One call's sinks, as a worker runs them.
struct SinkTask {
    sinks: SinkSet,
    control: Receiver<SinkControl>,
    rings: Vec<FrameConsumer<i16>>,
    packets: Option<PacketConsumer>,
    reported_failures: u64,
    out: SinkOutcome,
    scratch: Scratch,
    /// The feed's files; opened at the first step (on the worker, not the caller's thread).
    feed_file: Option<FileFeed>,
    feed_opened: bool,
    /// When the recorder's manifest was last brought up to date with the roster.
    manifest_flushed: Option<Instant>,
    /// Where the call's outcome goes.
    done: std::sync::mpsc::Sender<SinkOutcome>,
}

impl std::fmt::Debug for SinkTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTask")
            .field("rings", &self.rings.len())
            .finish_non_exhaustive()
    }
}

impl SinkTask {
    fn new(sinks: SinkSet, control: Receiver<SinkControl>) -> (Self, SinkJoin) {
        let (done, join) = std::sync::mpsc::channel();
        let task = Self {
            sinks,
            control,
            rings: Vec::new(),
            packets: None,
            reported_failures: 0,
            manifest_flushed: None,
            out: SinkOutcome::default(),
            scratch: Scratch {
                decimators: Vec::new(),
                pcm16: Vec::with_capacity(FRAME_SAMPLES),
                packet: TappedPacket::default(),
            },
            feed_file: None,
            feed_opened: false,
            done,
        };
        (task, SinkJoin(join))
    }

    fn awaits_first_frame(&self) -> bool {
        self.sinks.on_first_frame.is_some()
    }

    fn drain(&mut self) {
        drain(
            &mut self.rings,
            &mut self.packets,
            &mut self.sinks,
            &mut self.scratch,
            &mut self.out,
        );
    }

    /// One round: drains the rings, writes the feed's files, applies the control messages
    /// waiting. `true` once the call is finished (its files closed, or being closed, as
    /// `ending` says).
    fn step(&mut self, ending: Ending) -> bool {
        if !self.feed_opened {
            self.feed_opened = true;
            self.feed_file = open_feed_file(&mut self.sinks);
        }
        self.drain();
        pump_feed_file(&self.sinks, self.feed_file.as_mut(), &mut self.out);
        report_failures(&self.sinks, &mut self.reported_failures);
        loop {
            let stats = match self.control.try_recv() {
                Ok(SinkControl::Stop(stats)) => stats,
                Ok(msg) => {
                    self.apply(msg);
                    continue;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.flush_manifest();
                    return false;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => serde_json::Value::Null,
            };
            // Frames pushed since the drain above; then the files.
            self.drain();
            let end = Finish {
                sinks: std::mem::replace(&mut self.sinks, SinkSet::empty()),
                packets: self.packets.take(),
                feed_file: self.feed_file.take(),
                out: std::mem::take(&mut self.out),
                reported_failures: self.reported_failures,
                done: self.done.clone(),
            };
            if ending == Ending::Here {
                end.run(stats);
                return true;
            }
            // The thread takes the end from the slot; if the OS refuses the thread, the
            // worker still has it and closes the files itself: recorded audio is never lost
            // for want of a thread.
            let slot = Arc::new(std::sync::Mutex::new(Some((end, stats))));
            let theirs = Arc::clone(&slot);
            let spawned = std::thread::Builder::new()
                .name("sink-finish".into())
                .spawn(move || {
                    let job = theirs.lock().ok().and_then(|mut s| s.take());
                    if let Some((end, stats)) = job {
                        end.run(stats);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "sink: no thread to finish a call's files; closing them here");
                let job = slot.lock().ok().and_then(|mut s| s.take());
                if let Some((end, stats)) = job {
                    end.run(stats);
                }
            }
            return true;
        }
    }

    /// Rewrites the manifest if the roster changed, at most once per [`MANIFEST_INTERVAL`]:
    /// a 10-speaker call's joins were ten rewrites (a file write and a rename each) in its
    /// first second, and a shared worker starting many calls at once ran them all in turn
    /// while its other calls' rings filled.
    fn flush_manifest(&mut self) {
        let Some(r) = &mut self.sinks.recorder else {
            return;
        };
        let now = Instant::now();
        if self
            .manifest_flushed
            .is_some_and(|t| now.duration_since(t) < MANIFEST_INTERVAL)
        {
            return;
        }
        self.manifest_flushed = Some(now);
        if let Err(e) = r.flush_manifest() {
            self.out.errors.push(format!("manifest: {e}"));
        }
    }

    fn apply(&mut self, msg: SinkControl) {
        let sinks = &mut self.sinks;
        match msg {
            SinkControl::AddRing(r) => self.rings.push(r),
            SinkControl::AddPacketRing(r) => self.packets = Some(r),
            SinkControl::Participant { source_id, meta } => {
                if let Some(feed) = &sinks.feed {
                    let info = SpeakerInfo {
                        participant_id: meta.participant_id.clone(),
                        display_name: meta.display_name.clone(),
                        identity_id: meta.identity_id.clone(),
                    };
                    feed.update(|f| f.handle_speaker_info(source_id, &info));
                }
                if let Some(r) = &mut sinks.recorder {
                    // Written by the step, at most once per MANIFEST_INTERVAL.
                    r.handle_participant(source_id, meta);
                }
            }
            SinkControl::Dominant(id, pos) => {
                if let Some(feed) = &sinks.feed {
                    let pos16 = pos * 16_000 / u64::from(sinks.rate.max(1));
                    feed.update(|f| f.handle_dominant(id, pos16));
                }
            }
            SinkControl::Stop(_) => {}
        }
    }
}

/// The end of a call's sinks: the feed's `session.stop` and files, the recorder's final flush,
/// `fdatasync` and manifest.
struct Finish {
    sinks: SinkSet,
    packets: Option<PacketConsumer>,
    feed_file: Option<FileFeed>,
    out: SinkOutcome,
    reported_failures: u64,
    done: std::sync::mpsc::Sender<SinkOutcome>,
}

impl Finish {
    fn run(mut self, stats: serde_json::Value) {
        let (sinks, out) = (&mut self.sinks, &mut self.out);
        if let Some(feed) = &sinks.feed {
            feed.update(|f| f.handle_stop("call ended"));
        }
        pump_feed_file(sinks, self.feed_file.as_mut(), out);
        if let Some(f) = self.feed_file.take()
            && let Err(e) = f.finish()
        {
            out.feed_write_errors += 1;
            sinks.feed_errors.fetch_add(1, Ordering::Relaxed);
            out.errors.push(format!("transcription feed files: {e}"));
        }
        if let Some(mut r) = sinks.recorder.take() {
            r.opus_packets_dropped = self.packets.as_ref().map_or(0, PacketConsumer::dropped);
            match r.finish(stats) {
                Ok(m) => {
                    // Every failed file carries its error in the manifest, once; those not
                    // reported while writing failed at close.
                    let failed = m.tracks.iter().filter(|t| t.error.is_some()).count()
                        + m.opus.iter().filter(|t| t.error.is_some()).count();
                    sinks.errors.fetch_add(
                        (failed as u64).saturating_sub(self.reported_failures),
                        Ordering::Relaxed,
                    );
                    out.manifest = Some(m);
                }
                Err(e) => {
                    sinks.errors.fetch_add(1, Ordering::Relaxed);
                    out.errors.push(format!("manifest: {e}"));
                }
            }
        }
        let _ = self.done.send(std::mem::take(&mut self.out));
    }
}

/// The feed's files, when the feed goes to files; an error creating them is logged and the
/// feed's messages are then left to its bounded queue (which counts what it drops).
fn open_feed_file(sinks: &mut SinkSet) -> Option<FileFeed> {
    let dir = sinks.feed_dir.take()?;
    sinks.feed.as_ref()?;
    match FileFeed::create(&dir) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "transcription file feed");
            None
        }
    }
}

/// Writes what the feed has queued to its files.
fn pump_feed_file(sinks: &SinkSet, file: Option<&mut FileFeed>, out: &mut SinkOutcome) {
    if let (Some(file), Some(feed)) = (file, &sinks.feed) {
        let failed = file.pump(feed).write_errors;
        if failed > 0 {
            out.feed_write_errors += failed;
            sinks.feed_errors.fetch_add(failed, Ordering::Relaxed);
        }
    }
}

/// Adds the recorder's new file failures to the shared error counter.
fn report_failures(sinks: &SinkSet, reported: &mut u64) {
    if let Some(r) = &sinks.recorder {
        let now = r.failures();
        if now > *reported {
            sinks.errors.fetch_add(now - *reported, Ordering::Relaxed);
            *reported = now;
        }
    }
}

/// Buffers the sink thread reuses from one drain to the next (no allocation per frame or
/// packet).
struct Scratch {
    /// One 48 kHz to 16 kHz decimator per speaker (by SSRC).
    decimators: Vec<(u32, Decimator)>,
    /// A decimated frame.
    pcm16: Vec<i16>,
    /// The packet being handed to the Ogg recorder.
    packet: TappedPacket,
}

fn drain(
    rings: &mut Vec<FrameConsumer<i16>>,
    packets: &mut Option<PacketConsumer>,
    sinks: &mut SinkSet,
    scratch: &mut Scratch,
    out: &mut SinkOutcome,
) {
    if let Some(p) = packets.as_mut() {
        while p.pop_into(&mut scratch.packet) {
            if let Some(r) = &mut sinks.recorder {
                r.handle_packet(&scratch.packet);
            }
        }
    }
    let mut fed = false;
    for ring in rings.iter_mut() {
        // Each frame is read where it lies in the ring (no copy out).
        while ring
            .pop_with(|frame| {
                fed |= handle_frame(frame, sinks, &mut scratch.decimators, &mut scratch.pcm16);
            })
            .is_some()
        {
            out.frames += 1;
        }
    }
    // A ring the media thread replaced by a larger one (or let go at the call's end) is dropped
    // once drained. `is_abandoned` first: with the writer gone, empty stays empty.
    rings.retain(|r| !(r.is_abandoned() && r.is_empty()));
    if fed && let Some(feed) = &sinks.feed {
        feed.wake();
    }
}

/// One frame to the recorder and the feed; whether it went to the feed.
fn handle_frame(
    frame: &AudioFrame<i16>,
    sinks: &mut SinkSet,
    decimators: &mut Vec<(u32, Decimator)>,
    pcm16: &mut Vec<i16>,
) -> bool {
    // A participant's frame; without a per-speaker ring, the first audible mix.
    let first = match frame.source {
        FrameSource::Participant { .. } => true,
        FrameSource::Mixed => !frame.flags.silence,
    };
    if first && let Some(f) = sinks.on_first_frame.take() {
        f(std::time::Instant::now());
    }
    if let Some(r) = &mut sinks.recorder {
        r.handle_frame(frame);
    }
    if let (Some(feed), FrameSource::Participant { ssrc, .. }) = (&sinks.feed, frame.source) {
        let pos = frame.position.0 * 16_000 / u64::from(sinks.rate.max(1));
        let pcm = to_16k(frame, sinks.rate, ssrc.0, decimators, pcm16);
        feed.update_quiet(|f| f.handle_frame(ssrc.0, pos, pcm));
        return true;
    }
    false
}

/// The frame's samples at 16 kHz: its own samples when it is at 16 kHz (no copy), else
/// decimated into `out`.
fn to_16k<'a>(
    frame: &'a AudioFrame<i16>,
    rate: u32,
    id: u32,
    decimators: &mut Vec<(u32, Decimator)>,
    out: &'a mut Vec<i16>,
) -> &'a [i16] {
    out.clear();
    if rate == 16_000 {
        return frame.samples();
    }
    let i = match decimators.iter().position(|(d, _)| *d == id) {
        Some(i) => i,
        None => {
            decimators.push((id, Decimator::default()));
            decimators.len() - 1
        }
    };
    decimators[i].1.process(frame.samples(), out);
    out
}

/// A 48 kHz to 16 kHz decimator: a 48-tap windowed-sinc low-pass at 7.2 kHz, keeping every third
/// sample. Cheap enough for the sink thread and clean enough for speech recognition.
///
/// Polyphase in effect: the filter runs only at the kept outputs, over a contiguous window of a
/// linear history (no modulo indexing). Integer arithmetic: Q15 taps times 16-bit samples summed
/// in 32 bits, which the compiler turns into `pmaddwd` (eight products per instruction), exact
/// and the same on every machine. About 1 µs per 20 ms frame where the earlier ring-indexed float
/// loop took tens.
#[derive(Debug, Clone)]
pub struct Decimator {
    /// The last `TAPS - 1` inputs.
    hist: [i16; TAPS - 1],
    /// Inputs still to come before the next output (1..=3).
    until_next: usize,
}

const TAPS: usize = 48;
const FACTOR: usize = 3;
/// Fixed-point scale of the taps (Q15).
const TAP_SHIFT: u32 = 15;

/// The filter in Q15. Its absolute sum is about 1.2 x 2^15, so a 48-term sum of 16-bit samples
/// stays below 2^31.
fn taps() -> &'static [i16; TAPS] {
    static T: std::sync::OnceLock<[i16; TAPS]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0f64; TAPS];
        let fc = 7_200.0 / 48_000.0;
        let mid = (TAPS - 1) as f64 / 2.0;
        for (i, v) in t.iter_mut().enumerate() {
            let x = i as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (TAPS - 1) as f64).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / (TAPS - 1) as f64).cos();
            *v = sinc * w;
        }
        let sum: f64 = t.iter().sum();
        let scale = f64::from(1u32 << TAP_SHIFT) / sum;
        // Unity DC gain; the largest tap (~0.3) is far from the i16 limit.
        t.map(|v| (v * scale).round() as i16)
    })
}

impl Default for Decimator {
    fn default() -> Self {
        Self {
            hist: [0; TAPS - 1],
            until_next: FACTOR,
        }
    }
}

/// One output: `taps · window`, rounded back to 16 bits.
#[inline]
fn fir(t: &[i16; TAPS], window: &[i16]) -> i16 {
    from_q15(dot_i16(t, window))
}

/// A Q15 sum of products rounded back to a 16-bit sample (saturating).
#[inline]
fn from_q15(acc: i32) -> i16 {
    let rounded = (acc + (1 << (TAP_SHIFT - 1))) >> TAP_SHIFT;
    rounded.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// `t · window[..TAPS]` in 32 bits with SSE2's `pmaddwd` (eight 16-bit products per
/// instruction; SSE2 is part of every x86-64 CPU). The compiler does not find this form on its
/// own: its loop measured 5x slower.
#[cfg(target_arch = "x86_64")]
#[inline]
fn dot_i16(t: &[i16; TAPS], window: &[i16]) -> i32 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_loadu_si128, _mm_madd_epi16,
        _mm_setzero_si128, _mm_shuffle_epi32,
    };
    let w = &window[..TAPS];
    // SAFETY: SSE2 is in the x86-64 baseline; every load reads 8 i16 inside `t` or `w`, both
    // exactly TAPS (a multiple of 8) long; unaligned loads have no alignment requirement.
    unsafe {
        let mut s = _mm_setzero_si128();
        for k in (0..TAPS).step_by(8) {
            let a = _mm_loadu_si128(t.as_ptr().add(k).cast::<__m128i>());
            let b = _mm_loadu_si128(w.as_ptr().add(k).cast::<__m128i>());
            s = _mm_add_epi32(s, _mm_madd_epi16(a, b));
        }
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

/// `dst[j] = fir(t, windows[3j .. 3j + TAPS])` for every `j`: the baseline form.
fn fir_all(t: &[i16; TAPS], windows: &[i16], dst: &mut [i16]) {
    for (j, d) in dst.iter_mut().enumerate() {
        *d = fir(t, &windows[j * FACTOR..j * FACTOR + TAPS]);
    }
}

/// [`fir_all`] with AVX2: sixteen 16-bit products per `vpmaddwd`, the taps held in three
/// registers for the whole call. Outputs go in blocks of eight: their eight partial-sum
/// vectors are reduced together by a `vphaddd` tree, then rounded and saturated eight at a
/// time (one lane's reduction and rounding per output took as many instructions as its
/// products). The sums are the same integers, so the output is identical.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fir_all_avx2(t: &[i16; TAPS], windows: &[i16], dst: &mut [i16]) {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_shuffle_epi32, _mm_storeu_si128,
        _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_hadd_epi32,
        _mm256_loadu_si256, _mm256_madd_epi16, _mm256_packs_epi32, _mm256_permute2x128_si256,
        _mm256_permute4x64_epi64, _mm256_set1_epi32, _mm256_srai_epi32,
    };
    const _: () = assert!(TAPS == 48, "three 16-lane registers of taps");
    let load = |p: &[i16]| -> __m256i {
        assert!(p.len() >= 16);
        // SAFETY: 16 i16 (32 bytes) inside `p`, checked; unaligned load.
        unsafe { _mm256_loadu_si256(p.as_ptr().cast::<__m256i>()) }
    };
    let (t0, t1, t2) = (load(&t[..]), load(&t[16..]), load(&t[32..]));
    // The eight 32-bit partial sums of output `j`.
    let partial = |j: usize| -> __m256i {
        let w = &windows[j * FACTOR..j * FACTOR + TAPS];
        _mm256_add_epi32(
            _mm256_add_epi32(
                _mm256_madd_epi16(t0, load(w)),
                _mm256_madd_epi16(t1, load(&w[16..])),
            ),
            _mm256_madd_epi16(t2, load(&w[32..])),
        )
    };
    let blocks = dst.len() / 8;
    let round = _mm256_set1_epi32(1 << (TAP_SHIFT - 1));
    for b in 0..blocks {
        let j = b * 8;
        let p: [__m256i; 8] = std::array::from_fn(|k| partial(j + k));
        // Pairwise sums: after two levels, lane k of the low half holds output k's sum over
        // the low 128 bits (k < 4 from `h0123`, 4.. from `h4567`), the high half the rest.
        let h0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        let h4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(h0123, h4567),
            _mm256_permute2x128_si256::<0x31>(h0123, h4567),
        );
        // `from_q15` eight at a time: round, shift, saturate to 16 bits.
        let q = _mm256_srai_epi32::<{ TAP_SHIFT as i32 }>(_mm256_add_epi32(sums, round));
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q, q));
        let out = &mut dst[j..j + 8];
        // SAFETY: `out` is 8 i16 (16 bytes); unaligned store.
        unsafe {
            _mm_storeu_si128(
                out.as_mut_ptr().cast::<__m128i>(),
                _mm256_castsi256_si128(packed),
            );
        }
    }
    for (j, d) in dst.iter_mut().enumerate().skip(blocks * 8) {
        let s = partial(j);
        let mut h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
        h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b10_11_00_01>(h));
        *d = from_q15(_mm_cvtsi128_si32(h));
    }
}

/// `t · window[..TAPS]` in 32 bits (portable form).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn dot_i16(t: &[i16; TAPS], window: &[i16]) -> i32 {
    t.iter()
        .zip(&window[..TAPS])
        .map(|(&c, &x)| i32::from(c) * i32::from(x))
        .sum()
}

impl Decimator {
    /// Filters `input` (48 kHz) and appends the 16 kHz samples to `out`.
    ///
    /// The input is read where it lies: only the outputs whose window reaches back into the
    /// history go through a small stitched copy (at most 2 × 47 samples), the rest run over
    /// `input` itself. Copying each 20 ms frame behind the history first cost a sink worker
    /// about a third as much as writing the frame to its WAV file did.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        const H: usize = TAPS - 1;
        // The window of the output at input index `i` is the joined `history ++ input` at
        // `i .. i + TAPS` (it ends at `input[i]`); outputs are due at i = first, first + 3, ...
        // below input.len(). Those with i < H reach into the history.
        let first = self.until_next - 1;
        let count = input.len().saturating_sub(first).div_ceil(FACTOR);
        let start = out.len();
        out.resize(start + count, 0);
        let dst = &mut out[start..];
        let stitched = H.saturating_sub(first).div_ceil(FACTOR).min(count);
        let mut joined = [0i16; 2 * H + 1];
        let head = input.len().min(H);
        joined[..H].copy_from_slice(&self.hist);
        joined[H..H + head].copy_from_slice(&input[..head]);
        // Outputs `..stitched` end at input index < H (inside `joined`); the rest start at
        // input index first + 3 * stitched - H >= 0 and run over `input` alone.
        let (near, far) = dst.split_at_mut(stitched);
        let from = (first + FACTOR * stitched).saturating_sub(H);
        fir_dispatch(&joined[first..H + head], near);
        if !far.is_empty() {
            fir_dispatch(&input[from..], far);
        }
        let i = first + count * FACTOR;
        self.until_next = i - input.len() + 1;
        // The new history: the last H samples of `history ++ input`.
        if input.len() >= H {
            self.hist.copy_from_slice(&input[input.len() - H..]);
        } else {
            self.hist.copy_within(input.len().., 0);
            self.hist[H - input.len()..].copy_from_slice(input);
        }
    }
}

/// [`fir_all`] with AVX2 where the CPU has it.
fn fir_dispatch(windows: &[i16], dst: &mut [i16]) {
    let t = taps();
    if dst.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { fir_all_avx2(t, windows, dst) };
        return;
    }
    fir_all(t, windows, dst);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A sink thread with a transcription feed to files in `dir`, no recorder; stopped at once.
    fn run_feed_only(dir: std::path::PathBuf) -> (SinkOutcome, FeedHandle) {
        use crate::sinks::transcription::{FeedState, VadConfig};
        let feed = FeedHandle::new(FeedState::new("call-f", VadConfig::default(), 1, 4));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn(
            "feed",
            SinkSet {
                recorder: None,
                feed: Some(feed.clone()),
                feed_dir: Some(dir),
                rate: 48_000,
                errors: Arc::new(AtomicU64::new(0)),
                feed_errors: Arc::new(AtomicU64::new(0)),
                on_first_frame: None,
            },
            rx,
            SinkScheduling::Batch,
        )
        .unwrap();
        tx.send(SinkControl::Stop(serde_json::Value::Null)).unwrap();
        (t.join().unwrap(), feed)
    }

    #[test]
    fn the_sink_thread_writes_a_file_feed_to_its_end() {
        let dir = std::env::temp_dir().join(format!("mediabot-runner-feed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (out, feed) = run_feed_only(dir.clone());
        assert_eq!(out.feed_write_errors, 0);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.contains("\"session.stop\""), "complete: {text}");
        // Everything the feed queued was taken.
        let mut left = Vec::new();
        feed.update_quiet(|f| f.take_messages(&mut left));
        assert!(left.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pool_runs_many_calls_on_few_workers_and_finishes_each() {
        use crate::sinks::transcription::{FeedState, VadConfig};
        let root =
            std::env::temp_dir().join(format!("mediabot-runner-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pool = SinkPool::new(Some(2), SinkScheduling::Nice);
        let mut calls = Vec::new();
        for i in 0..5u64 {
            let feed = FeedHandle::new(FeedState::new(
                format!("call-{i}"),
                VadConfig::default(),
                1,
                4,
            ));
            let (tx, rx) = std::sync::mpsc::channel();
            let join = pool
                .start(
                    "pool",
                    SinkSet {
                        recorder: None,
                        feed: Some(feed.clone()),
                        feed_dir: Some(root.join(i.to_string())),
                        rate: 16_000,
                        errors: Arc::default(),
                        feed_errors: Arc::default(),
                        on_first_frame: None,
                    },
                    rx,
                )
                .unwrap();
            calls.push((i, feed, tx, join));
        }
        assert_eq!(
            pool.workers.lock().unwrap().len(),
            2,
            "never more workers than allowed"
        );
        // Each call gets frames while the others run; the first stops early.
        let pcm = vec![100i16; 320];
        for (i, feed, _, _) in &calls {
            for k in 0..=*i {
                feed.update(|f| f.handle_frame(7, k * 320, &pcm));
            }
        }
        let (_, _, tx0, join0) = calls.remove(0);
        tx0.send(SinkControl::Stop(serde_json::Value::Null))
            .unwrap();
        assert!(
            join0.join().is_some(),
            "the first call finished while the others run"
        );
        for (i, _, tx, join) in calls {
            // A dropped control sender ends a call as a stop does.
            drop(tx);
            let out = join.join().unwrap();
            assert_eq!(out.feed_write_errors, 0);
            let dir = root.join(i.to_string());
            let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
            assert!(
                text.lines().last().unwrap().contains("\"session.stop\""),
                "{text}"
            );
            let wav = hound::WavReader::open(dir.join("speaker-7.16k.wav")).unwrap();
            assert_eq!(
                wav.duration(),
                (i as u32 + 1) * 320,
                "every frame of call {i} written"
            );
        }
        // Workers stay for the next calls: a new call finds one.
        let (tx, rx) = std::sync::mpsc::channel();
        let join = pool
            .start(
                "pool",
                SinkSet {
                    feed_dir: None,
                    ..SinkSet::empty()
                },
                rx,
            )
            .unwrap();
        drop(tx);
        assert!(join.join().is_some());
        assert_eq!(pool.workers.lock().unwrap().len(), 2);
        // The default: a thread per call, no shared workers.
        let per_call = SinkPool::new(None, SinkScheduling::Nice);
        let (tx, rx) = std::sync::mpsc::channel();
        let join = per_call.start("own", SinkSet::empty(), rx).unwrap();
        tx.send(SinkControl::Stop(serde_json::Value::Null)).unwrap();
        assert!(join.join().is_some());
        assert!(per_call.workers.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn feed_file_write_errors_reach_the_metric_while_the_call_runs() {
        use crate::sinks::transcription::{FeedState, VadConfig};
        let dir =
            std::env::temp_dir().join(format!("mediabot-runner-feederr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Speaker 7's 16 kHz file cannot be written (a full device): each of its audio messages
        // fails; the text messages still go to transcript.jsonl.
        std::os::unix::fs::symlink("/dev/full", dir.join("speaker-7.16k.wav")).unwrap();
        let feed = FeedHandle::new(FeedState::new("call-e", VadConfig::default(), 1, 4));
        let feed_errors = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn(
            "feederr",
            SinkSet {
                recorder: None,
                feed: Some(feed.clone()),
                feed_dir: Some(dir.clone()),
                rate: 48_000,
                errors: Arc::new(AtomicU64::new(0)),
                feed_errors: Arc::clone(&feed_errors),
                on_first_frame: None,
            },
            rx,
            SinkScheduling::Batch,
        )
        .unwrap();
        let pcm = vec![0i16; 320];
        for i in 0..3u64 {
            feed.update(|f| f.handle_frame(7, i * 320, &pcm));
        }
        let t0 = Instant::now();
        while feed_errors.load(Ordering::Relaxed) < 3 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            feed_errors.load(Ordering::Relaxed),
            3,
            "counted while running"
        );
        tx.send(SinkControl::Stop(serde_json::Value::Null)).unwrap();
        let out = t.join().unwrap();
        assert_eq!(out.feed_write_errors, 3);
        assert_eq!(feed_errors.load(Ordering::Relaxed), 3, "each counted once");
        let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
        assert!(text.lines().last().unwrap().contains("\"session.stop\""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_feed_folder_that_cannot_be_made_leaves_the_call_running() {
        // Under a regular file: creating the folder fails.
        let file =
            std::env::temp_dir().join(format!("mediabot-runner-nofeed-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let (out, _) = run_feed_only(file.join("feed"));
        assert_eq!(out.feed_write_errors, 0, "nothing was tried");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn a_write_error_is_counted_in_the_metric_and_media_goes_on() {
        use crate::sinks::recorder::RecorderConfig;
        use mediabot_media::{CallConfig, CallPipeline, CallTag, SampleRate, TrackSelect};
        use std::time::Instant;
        let dir = std::env::temp_dir().join(format!("mediabot-runner-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Recorder::create(
            RecorderConfig {
                dir: dir.clone(),
                sample_rate: 48_000,
                checkpoint_every: Duration::from_millis(100),
                fsync_every: Duration::ZERO,
                ogg: false,
                participant_wav: true,
            },
            "call-x",
            "x".into(),
            4,
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.join("mixed.wav")).unwrap();
        let errors = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn(
            "test",
            SinkSet {
                recorder: Some(recorder),
                feed: None,
                feed_dir: None,
                rate: 48_000,
                errors: Arc::clone(&errors),
                feed_errors: Arc::new(AtomicU64::new(0)),
                on_first_frame: None,
            },
            rx,
            SinkScheduling::Batch,
        )
        .unwrap();
        let start = Instant::now();
        let mut call = CallPipeline::new(
            CallConfig::new(CallTag(1)).with_rate(SampleRate::HZ_48000),
            start,
            std::time::SystemTime::now(),
        );
        tx.send(SinkControl::AddRing(
            call.add_sink_i16(TrackSelect::Mixed, 64).unwrap(),
        ))
        .unwrap();
        // One second of media: the pipeline keeps producing the mix whatever the disk does.
        call.poll(start + Duration::from_secs(1));
        let mixed = call.stats().snapshot().mixed_frames;
        let t0 = Instant::now();
        while errors.load(Ordering::Relaxed) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(errors.load(Ordering::Relaxed), 1, "reported while running");
        tx.send(SinkControl::Stop(serde_json::Value::Null)).unwrap();
        let out = t.join().unwrap();
        assert_eq!(errors.load(Ordering::Relaxed), 1, "counted once");
        assert!(mixed > 0);
        assert_eq!(out.frames, mixed, "every frame reached the sink thread");
        let m = out.manifest.unwrap();
        assert!(m.tracks[0].error.is_some());
        assert_eq!(m.tracks[0].frames_lost_to_errors, mixed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fast_dot_product_equals_the_plain_sum_even_at_full_scale() {
        let t = taps();
        let abs: i64 = t.iter().map(|&c| i64::from(c).abs()).sum();
        assert!(
            abs * 32_768 < i64::from(i32::MAX),
            "no 32-bit overflow: {abs}"
        );
        let worst: Vec<i16> = t
            .iter()
            .map(|&c| if c >= 0 { i16::MAX } else { i16::MIN })
            .collect();
        let ramp: Vec<i16> = (0..TAPS as i32)
            .map(|i| (i * 1361 - 30_000) as i16)
            .collect();
        for w in [worst, ramp] {
            let plain: i32 = t
                .iter()
                .zip(&w)
                .map(|(&c, &x)| i32::from(c) * i32::from(x))
                .sum();
            assert_eq!(dot_i16(t, &w), plain);
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_filter_gives_the_baseline_filters_samples() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return; // nothing to compare on this CPU
        }
        // Full-scale noise, and the extremes that make the rounding and the clamp matter.
        let mut windows: Vec<i16> = (0..3000)
            .map(|i: i32| ((i.wrapping_mul(7919) ^ (i >> 3)) % 65_536 - 32_768) as i16)
            .collect();
        windows[100..160].fill(i16::MAX);
        windows[400..460].fill(i16::MIN);
        let n = (windows.len() - TAPS) / FACTOR + 1;
        let (mut a, mut b) = (vec![0i16; n], vec![0i16; n]);
        fir_all(taps(), &windows, &mut a);
        // SAFETY: AVX2 checked above.
        unsafe { fir_all_avx2(taps(), &windows, &mut b) };
        assert_eq!(a, b);
        assert!(a.contains(&i16::MAX) && a.contains(&i16::MIN));
        // Every count of outputs around the blocks of eight, at every start in a block.
        for count in 0..=25 {
            for start in 0..8 {
                let w = &windows[start * FACTOR..];
                let (mut a, mut b) = (vec![0i16; count], vec![1i16; count]);
                fir_all(taps(), w, &mut a);
                // SAFETY: AVX2 checked above.
                unsafe { fir_all_avx2(taps(), w, &mut b) };
                assert_eq!(a, b, "{count} outputs from {start}");
            }
        }
    }

    #[test]
    fn decimator_output_does_not_depend_on_how_input_is_split() {
        let input: Vec<i16> = (0..4801)
            .map(|i| ((i * 7919) % 20_001) as i16 - 10_000)
            .collect();
        let mut whole = Vec::new();
        Decimator::default().process(&input, &mut whole);
        assert_eq!(whole.len(), 1600, "every third of 4801 samples");
        let mut d = Decimator::default();
        let mut split = Vec::new();
        let mut rest = &input[..];
        for n in [1, 2, 7, 960, 100, 3, 1000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at((*n).min(rest.len()));
            d.process(a, &mut split);
            rest = b;
        }
        assert_eq!(whole, split);
        // And both are the filter's definition: output k ends at input 2 + 3k, over a history
        // of zeros before the first sample.
        let t = taps();
        let reference: Vec<i16> = (0..1600)
            .map(|k| {
                let end = 2 + 3 * k as i64;
                let acc: i32 = (0..TAPS)
                    .map(|m| {
                        let x = end - (TAPS as i64 - 1) + m as i64;
                        let v = if x < 0 { 0 } else { input[x as usize] };
                        i32::from(t[m]) * i32::from(v)
                    })
                    .sum();
                from_q15(acc)
            })
            .collect();
        assert_eq!(whole, reference);
    }

    #[test]
    fn decimator_keeps_speech_band_and_removes_aliases() {
        let tone = |f: f64| -> Vec<i16> {
            (0..4800)
                .map(|i| {
                    (10_000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 48_000.0).sin()) as i16
                })
                .collect()
        };
        let rms = |v: &[i16]| {
            (v.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let mut d = Decimator::default();
        let mut out = Vec::new();
        d.process(&tone(1000.0), &mut out);
        assert_eq!(out.len(), 1600);
        let pass = rms(&out[100..]);
        assert!((pass - 7071.0).abs() < 500.0, "1 kHz passes: {pass}");
        let mut d = Decimator::default();
        let mut out = Vec::new();
        d.process(&tone(12_000.0), &mut out);
        let stop = rms(&out[100..]);
        assert!(
            stop < 300.0,
            "12 kHz (would alias to 4 kHz) is removed: {stop}"
        );
    }
}
