//! One call's pipeline: the streams of its senders, the mixer, and the sinks' rings, behind the
//! [`MediaIngest`] seam. Sans-IO: every input carries `now`, and [`CallPipeline::poll`] does the
//! time-driven work (play-out, mixing) and says when it next needs to run.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::frame::{AudioFrame, FrameConsumer, Sample, SinkProducer, ring};
use crate::jitter::JitterConfig;
use crate::mixer::{Mixer, MixerConfig};
use crate::rtp::{RtpError, RtpPacket, is_rtcp, sender_reports};
use crate::stats::{CallLatency, CallStats, StreamStats};
use crate::stream::{Emit, Stream, StreamParams};
use crate::units::{
    CallTag, FrameDuration, ParticipantTag, PayloadType, SampleRate, Ssrc, TimelinePos,
    WallClock100ns,
};

/// Most PCM samples accepted in one [`PcmInput`] (120 ms at 48 kHz).
pub const MAX_PCM_SAMPLES: usize = 5760;
/// Most sinks per call.
pub const MAX_SINKS: usize = 16;
/// SSRCs seen once and waiting for a second packet before they get a stream.
const PROBATION_SLOTS: usize = 16;
/// Largest pre-roll accepted ([`CallConfig::release_lead`]): a few grid steps at most.
const MAX_RELEASE_LEAD: Duration = Duration::from_millis(5);
/// Size of the table of expected sequence numbers of sources on probation.
const PROBATION_TABLE: usize = 4096;

/// The ingest seam: every adapter (WebRTC transport, media bridge, tests) feeds a call through
/// this trait. Calls never block and never allocate in steady state; bad input is counted and
/// reported as an error the caller may ignore.
pub trait MediaIngest {
    /// One decrypted RTP packet (Opus) received at `now`.
    ///
    /// # Errors
    /// [`IngestError`] when the packet is malformed or refused (it is counted either way).
    fn ingest_rtp(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngestError>;

    /// One RTP packet already parsed by the adapter (e.g. the WebRTC stack's own view of it):
    /// build an [`RtpPacket`] from its fields and payload.
    ///
    /// # Errors
    /// [`IngestError`] when the packet is refused (it is counted either way).
    fn ingest_rtp_packet(
        &mut self,
        now: Instant,
        packet: &RtpPacket<'_>,
    ) -> Result<(), IngestError>;

    /// One decrypted RTCP (compound) packet received at `now`; sender reports are used.
    ///
    /// # Errors
    /// [`IngestError::Rtp`] when the compound packet is malformed.
    fn ingest_rtcp(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngestError>;

    /// One PCM frame from the media bridge.
    ///
    /// # Errors
    /// [`IngestError`] when the frame is refused (bad size, rate, or stream limit).
    fn ingest_pcm(&mut self, now: Instant, frame: &PcmInput<'_>) -> Result<(), IngestError>;

    /// A datagram from a muxed RTP/RTCP flow (RFC 5761): dispatched by packet type.
    ///
    /// # Errors
    /// As [`MediaIngest::ingest_rtp`] / [`MediaIngest::ingest_rtcp`].
    fn ingest_datagram(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngestError> {
        if is_rtcp(packet) {
            self.ingest_rtcp(now, packet)
        } else {
            self.ingest_rtp(now, packet)
        }
    }
}

/// A raw PCM frame from an adapter that decodes elsewhere (the planned media bridge).
#[derive(Debug, Clone, Copy)]
pub struct PcmInput<'a> {
    /// The source's id (the MSI / SSRC of the speaker).
    pub source: Ssrc,
    /// Rate of `samples`.
    pub rate: SampleRate,
    /// Mono 16-bit samples.
    pub samples: &'a [i16],
    /// The source's media timestamp in 100 ns units, when it has one (Microsoft's frames do);
    /// gaps between timestamps become silence like DTX.
    pub timestamp_100ns: Option<u64>,
}

/// Why an ingest call refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Malformed RTP/RTCP.
    #[error(transparent)]
    Rtp(#[from] RtpError),
    /// A new source, but the call already has its maximum number of streams.
    #[error("too many streams in call (max {max})")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
    /// A PCM frame that is empty, too long, or changes its source's rate.
    #[error("bad pcm frame")]
    BadPcm,
    /// The stream could not be set up.
    #[error("stream setup failed: {0}")]
    Setup(String),
    /// RTP for a source id that is already a PCM (media bridge) source, or the reverse.
    #[error("source {0} is already fed by another kind of input")]
    SourceConflict(Ssrc),
}

/// Call pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CallConfig {
    /// The engine's handle for the call, copied onto every frame.
    pub call: CallTag,
    /// Rate of every track (per speaker and mixed).
    pub output_rate: SampleRate,
    /// Frame size.
    pub frame: FrameDuration,
    /// Most concurrent streams (SSRCs); extra sources are refused and counted.
    pub max_streams: usize,
    /// The negotiated Opus payload type; other types are counted and dropped.
    pub opus_payload_type: PayloadType,
    /// Jitter buffer settings for every stream.
    pub jitter: JitterConfig,
    /// Mixer settings; `None` runs no mixer (per-speaker tracks only).
    pub mixer: Option<MixerConfig>,
    /// Longest gap in one stream filled with exact silence; a longer pause becomes a marked gap
    /// (no frames; the next frame has `discontinuity` and its true position).
    pub max_silence_fill: Duration,
    /// A stream silent this long is closed (its slot freed; a later packet starts a new one).
    pub stream_idle_timeout: Duration,
    /// Play-out runs this much ahead of each frame's deadline (pre-roll). A media thread that
    /// coalesces its wake-ups on a grid (see the transport's `wake_grid`) sets it to the grid
    /// step: a deadline inside a step is then served at the grid point before it instead of
    /// the one after it, so the coalescing makes no frame late. The cost: each packet is held
    /// in the jitter buffer up to this much less than the buffer's target (a packet arriving
    /// in that last moment is late). Default zero (release exactly at the deadline).
    pub release_lead: Duration,
    /// The real clock read when a frame is pushed into the sink rings, for the latency
    /// histograms ([`CallPipeline::latency`]); everything else runs on the `now` passed in.
    pub clock: MediaClock,
}

/// A clock the pipeline reads only to time-stamp frame pushes for [`CallLatency`]: the
/// monotonic clock by default, a virtual one in tests. (Cores take `now` as input; the push
/// instant is the one moment that needs a real reading, after the work is done.)
#[derive(Clone, Copy)]
pub struct MediaClock(pub fn() -> Instant);

impl Default for MediaClock {
    fn default() -> Self {
        MediaClock(Instant::now)
    }
}

impl std::fmt::Debug for MediaClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaClock")
    }
}

impl PartialEq for MediaClock {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl CallConfig {
    /// Defaults: 16 kHz, 20 ms frames, 32 streams, PT 111, mixer on, 10 s silence fill,
    /// 30 s idle timeout.
    pub fn new(call: CallTag) -> Self {
        CallConfig {
            call,
            output_rate: SampleRate::HZ_16000,
            frame: FrameDuration::Ms20,
            max_streams: 32,
            opus_payload_type: PayloadType(111),
            jitter: JitterConfig::default(),
            mixer: Some(MixerConfig::default()),
            max_silence_fill: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(30),
            release_lead: Duration::ZERO,
            clock: MediaClock::default(),
        }
    }

    /// Sets the pre-roll ([`CallConfig::release_lead`]), capped at 5 ms.
    pub fn with_release_lead(mut self, lead: Duration) -> Self {
        self.release_lead = lead.min(MAX_RELEASE_LEAD);
        self
    }

    /// Sets the clock read at each frame push for the latency histograms (default
    /// `Instant::now`; tests inject a virtual clock).
    pub fn with_clock(mut self, clock: fn() -> Instant) -> Self {
        self.clock = MediaClock(clock);
        self
    }

    /// Sets the output rate.
    pub fn with_rate(mut self, rate: SampleRate) -> Self {
        self.output_rate = rate;
        self
    }

    /// Sets the frame size.
    pub fn with_frame(mut self, frame: FrameDuration) -> Self {
        self.frame = frame;
        self
    }

    /// Sets (or removes) the mixer.
    pub fn with_mixer(mut self, mixer: Option<MixerConfig>) -> Self {
        self.mixer = mixer;
        self
    }

    /// Sets the jitter buffer settings.
    pub fn with_jitter(mut self, jitter: JitterConfig) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the stream limit.
    pub fn with_max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }
}

/// Which frames a sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackSelect {
    /// Every participant's frames (tagged by source).
    AllParticipants,
    /// One stream's frames.
    Participant(Ssrc),
    /// The mixed track.
    Mixed,
}

/// Something the engine should know about, from [`CallPipeline::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipelineEvent {
    /// A new stream started.
    StreamAdded(Ssrc),
    /// A stream was closed (idle or removed).
    StreamRemoved(Ssrc),
    /// The dominant speaker changed (`Ssrc::NONE`: nobody), like the SDK's
    /// `DominantSpeakerChanged`.
    DominantSpeakerChanged(Ssrc),
}

pub(crate) struct Sink {
    pub select: TrackSelect,
    pub producer: SinkProducer,
    /// The ring's capacity in frames.
    capacity: usize,
    /// Set for a ring that follows the call's size ([`CallPipeline::add_sink_i16_growing`]).
    growth: Option<RingGrowth>,
}

/// How a sink's ring follows the number of streams in its call
/// ([`CallPipeline::add_sink_i16_growing`]). A ring per call shared by its speakers, sized for
/// the largest call, costs a 4-speaker call's streams 2.5 times the memory of a 10-speaker
/// call's; sized per stream, every stream gets the same seconds of slack.
pub struct RingGrowth {
    /// Frames the ring holds per stream of the call (50: one second of 20 ms frames).
    pub per_stream: usize,
    /// Frames of the first ring, whatever the streams: most calls never need another.
    pub min: usize,
    /// The most frames the ring grows to.
    pub max: usize,
    /// Receives each replacement ring's consumer. The ring it replaces gets no more frames and
    /// its producer is dropped at once, so its reader drains what is left, sees
    /// [`crate::FrameConsumer::is_abandoned`], and drops it; reading the rings in the order
    /// they were handed over keeps each stream's frames in order.
    pub on_grow: Box<dyn FnMut(FrameConsumer<i16>) + Send>,
}

impl std::fmt::Debug for RingGrowth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingGrowth")
            .field("per_stream", &self.per_stream)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl RingGrowth {
    /// The capacity `streams` streams need: `per_stream` each, at least `min`, at most `max`.
    fn capacity_for(&self, streams: usize) -> usize {
        self.per_stream
            .saturating_mul(streams)
            .max(self.min)
            .min(self.max)
            .max(1)
    }

    /// The next ring's capacity once `streams` need more than `current`: at least 2.5 times
    /// `current` (at most `max`), so that a call growing one speaker at a time replaces its
    /// ring only a few times. Each ring replaced is freed, but the allocator may keep it: a
    /// ring per speaker joined (50, 100, 150, 200 frames at 4 speakers) left a 4-speaker
    /// call's streams with as much memory as one fixed 500-frame ring.
    fn next_capacity(&self, streams: usize, current: usize) -> usize {
        self.capacity_for(streams)
            .max(current.saturating_mul(5) / 2)
            .min(self.max)
            .max(1)
    }
}

/// One stream's entry in [`CallPipeline`]'s index: refreshed after every call into the stream.
#[derive(Clone, Copy, Debug)]
struct StreamIndex {
    ssrc: Ssrc,
    pcm: bool,
    /// [`Stream::next_due`] (infinite: nothing to play).
    due: f64,
    /// [`Stream::last_arrival`].
    last_arrival: f64,
}

impl StreamIndex {
    fn of(s: &Stream) -> Self {
        StreamIndex {
            ssrc: s.ssrc,
            pcm: s.is_pcm(),
            due: s.next_due().unwrap_or(f64::INFINITY),
            last_arrival: s.last_arrival,
        }
    }
}

/// A call's media pipeline.
pub struct CallPipeline {
    cfg: CallConfig,
    media_start: Instant,
    wall_start: WallClock100ns,
    frame_len: usize,
    streams: Vec<Stream>,
    /// What the per-packet lookup and the play-out scan read of each stream, side by side
    /// (`index[i]` is `streams[i]`'s): a `Stream` is ~4.5 KiB and cold after 20 ms of other
    /// calls, so scanning the streams themselves for an SSRC or a deadline took a cache miss
    /// per stream (a quarter of `poll`'s own time at 440 streams); the index is a few lines.
    index: Vec<StreamIndex>,
    probation: Box<[Probation; PROBATION_SLOTS]>,
    probation_seq: Box<[u64; PROBATION_TABLE]>,
    sinks: Vec<Sink>,
    mixer: Option<Mixer>,
    stats: Arc<CallStats>,
    latency: Arc<CallLatency>,
    events: VecDeque<PipelineEvent>,
    scratch: Box<AudioFrame<f32>>,
    /// The streams a [`CallPipeline::poll`] plays out, as (seconds to the deadline, slot),
    /// sorted by deadline (reused: no allocation per poll).
    due: Vec<(f64, u32)>,
    /// A PCM input frame as floats (reused: no per-frame zeroing of a largest-frame buffer).
    pcm: Vec<f32>,
}

impl std::fmt::Debug for CallPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPipeline")
            .field("call", &self.cfg.call)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl CallPipeline {
    /// A pipeline whose media timeline starts at `now` (wall clock `wall_now`).
    pub fn new(cfg: CallConfig, now: Instant, wall_now: SystemTime) -> Self {
        let frame_len = cfg.frame.samples(cfg.output_rate);
        let max_streams = cfg.max_streams.clamp(1, 256);
        // The mix must wait for the slowest stream: jitter buffer maximum, one packet, one
        // resampler chunk and one frame of assembly.
        let mixer_cfg = cfg.mixer.map(|m| MixerConfig {
            delay: m
                .delay
                .max(cfg.jitter.max_delay + Duration::from_millis(60)),
            ..m
        });
        CallPipeline {
            cfg: CallConfig {
                max_streams,
                mixer: mixer_cfg,
                ..cfg
            },
            media_start: now,
            wall_start: WallClock100ns::from_system_time(wall_now),
            frame_len,
            streams: Vec::with_capacity(max_streams),
            index: Vec::with_capacity(max_streams),
            probation: Box::new(std::array::from_fn(|_| Probation::default())),
            probation_seq: Box::new([0; PROBATION_TABLE]),
            sinks: Vec::with_capacity(MAX_SINKS),
            mixer: mixer_cfg.map(|m| Mixer::new(m, cfg.output_rate, frame_len)),
            stats: Arc::new(CallStats::default()),
            latency: Arc::new(CallLatency::default()),
            events: VecDeque::with_capacity(64),
            scratch: Box::new(AudioFrame::empty()),
            due: Vec::with_capacity(max_streams),
            pcm: Vec::with_capacity(MAX_PCM_SAMPLES),
        }
    }

    /// Adds a sink of `i16` frames with a ring of `capacity` frames; `None` past
    /// [`MAX_SINKS`].
    pub fn add_sink_i16(
        &mut self,
        select: TrackSelect,
        capacity: usize,
    ) -> Option<FrameConsumer<i16>> {
        self.add_sink::<i16>(select, capacity, SinkProducer::I16)
    }

    /// Adds a sink of `f32` frames with a ring of `capacity` frames; `None` past
    /// [`MAX_SINKS`].
    pub fn add_sink_f32(
        &mut self,
        select: TrackSelect,
        capacity: usize,
    ) -> Option<FrameConsumer<f32>> {
        self.add_sink::<f32>(select, capacity, SinkProducer::F32)
    }

    fn add_sink<S: Sample>(
        &mut self,
        select: TrackSelect,
        capacity: usize,
        wrap: fn(ringbuf::HeapProd<AudioFrame<S>>) -> SinkProducer,
    ) -> Option<FrameConsumer<S>> {
        if self.sinks.len() >= MAX_SINKS {
            return None;
        }
        let (p, c) = ring::<S>(capacity);
        self.sinks.push(Sink {
            select,
            producer: wrap(p),
            capacity: capacity.max(1),
            growth: None,
        });
        Some(c)
    }

    /// Adds a sink of `i16` frames whose ring holds `growth.per_stream` frames per stream of
    /// the call (up to `growth.max`): when a stream arrives and the ring holds fewer, the
    /// pipeline puts a ring of the new size in its place and hands its consumer to
    /// `growth.on_grow` (see [`RingGrowth`]). The first ring's consumer goes the same way,
    /// before this returns, so the reader gets every ring in the order they were written. The
    /// ring allocated when a stream arrives is the only allocation. `false` past
    /// [`MAX_SINKS`].
    pub fn add_sink_i16_growing(&mut self, select: TrackSelect, mut growth: RingGrowth) -> bool {
        if self.sinks.len() >= MAX_SINKS {
            return false;
        }
        let capacity = growth.capacity_for(self.streams.len());
        let (p, c) = ring::<i16>(capacity);
        (growth.on_grow)(c);
        self.sinks.push(Sink {
            select,
            producer: SinkProducer::I16(p),
            capacity,
            growth: Some(growth),
        });
        true
    }

    /// Replaces the rings that follow the call's size and hold fewer frames than its streams
    /// now need (see [`RingGrowth`]).
    fn grow_rings(&mut self) {
        let streams = self.streams.len();
        for sink in &mut self.sinks {
            let Some(g) = &mut sink.growth else { continue };
            if g.capacity_for(streams) <= sink.capacity {
                continue;
            }
            let want = g.next_capacity(streams, sink.capacity);
            let (p, c) = ring::<i16>(want);
            // The old producer is dropped here: its consumer drains it and lets it go.
            sink.producer = SinkProducer::I16(p);
            sink.capacity = want;
            StreamStats::add(&self.stats.rings_grown, 1);
            (g.on_grow)(c);
        }
    }

    /// Tags a stream's frames with a roster participant (from `mediaStreams[].sourceId`).
    pub fn set_participant(&mut self, ssrc: Ssrc, participant: Option<ParticipantTag>) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            s.participant = participant;
        }
    }

    /// Counters of one stream, shareable with a metrics thread.
    pub fn stream_stats(&self, ssrc: Ssrc) -> Option<Arc<StreamStats>> {
        self.streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| Arc::clone(&s.stats))
    }

    /// The call's counters, shareable with a metrics thread.
    pub fn stats(&self) -> Arc<CallStats> {
        Arc::clone(&self.stats)
    }

    /// The call's frame latency histograms (end to end, jitter hold, processing), shareable
    /// with a metrics thread. Definitions: [`CallLatency`] and `docs/media-pipeline.md`.
    pub fn latency(&self) -> Arc<CallLatency> {
        Arc::clone(&self.latency)
    }

    /// SSRCs of the current streams.
    pub fn streams(&self) -> impl Iterator<Item = Ssrc> + '_ {
        self.streams.iter().map(|s| s.ssrc)
    }

    /// The current dominant speaker (`Ssrc::NONE` when nobody or no mixer).
    pub fn dominant_speaker(&self) -> Ssrc {
        self.mixer.as_ref().map_or(Ssrc::NONE, Mixer::dominant)
    }

    /// The timeline position of `now`.
    pub fn position_at(&self, now: Instant) -> TimelinePos {
        let d = now.saturating_duration_since(self.media_start);
        TimelinePos(self.cfg.output_rate.samples_in(d) as u64)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PipelineEvent> {
        self.events.pop_front()
    }

    /// Does the time-driven work due at `now`: play-out of every stream (earliest deadline
    /// first), idle-stream removal, mixing. Returns when it next needs to run.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.each_due(now, |d, slot| due.push((d, slot)));
        due.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for &(_, slot) in &due {
            self.play_slot(now, slot as usize);
        }
        self.due = due;
        self.finish_tick(now)
    }

    /// When `ssrc`'s stream next needs play-out (its deadline less the pre-roll), `None` when
    /// it has nothing to play or does not exist. What an arrival may bring forward, for a
    /// caller that ingests packets without polling the call after each and plays out on its
    /// own clock ([`PlayoutQueue`]).
    pub fn stream_wakeup(&self, ssrc: Ssrc) -> Option<Instant> {
        let s = self.index.iter().find(|s| s.ssrc == ssrc)?;
        s.due.is_finite().then(|| {
            self.media_start + Duration::from_secs_f64((s.due - self.lead_secs()).max(0.0))
        })
    }

    /// Calls `f(seconds from now to the deadline, slot)` for each stream with a frame due by
    /// `now` plus the pre-roll (negative: overdue).
    fn each_due(&self, now: Instant, mut f: impl FnMut(f64, u32)) {
        let t = self.secs(now);
        let release = t + self.lead_secs();
        for (slot, s) in self.index.iter().enumerate() {
            if s.due <= release {
                f(s.due - t, slot as u32);
            }
        }
    }

    /// Plays out what stream `slot` has due by `now` plus the pre-roll.
    fn play_slot(&mut self, now: Instant, slot: usize) {
        let release = self.secs(now) + self.lead_secs();
        let (streams, mut emit) = self.split();
        streams[slot].poll(release, &mut emit);
        self.index[slot] = StreamIndex::of(&self.streams[slot]);
    }

    /// The rest of a tick after the streams played out: closes the streams idle for longer
    /// than the idle timeout and mixes what is due; returns the next deadline as
    /// [`CallPipeline::poll`] does. [`PlayoutQueue::play`] leaves this to its caller.
    pub fn finish_tick(&mut self, now: Instant) -> Option<Instant> {
        let t = self.secs(now);
        let idle = self.cfg.stream_idle_timeout.as_secs_f64();
        let mut i = 0;
        while i < self.index.len() {
            if t - self.index[i].last_arrival > idle {
                let (streams, mut emit) = self.split();
                streams[i].finish(&mut emit);
                self.index.swap_remove(i);
                let gone = self.streams.swap_remove(i);
                if let Some(m) = self.mixer.as_mut() {
                    m.forget(gone.ssrc);
                }
                self.push_event(PipelineEvent::StreamRemoved(gone.ssrc));
            } else {
                i += 1;
            }
        }
        let now_pos = self.position_at(now).0;
        if let Some(mixer) = self.mixer.as_mut() {
            while let Some((frame, change)) = mixer.poll(now_pos) {
                let f = &mut *self.scratch;
                *f = *frame;
                f.call = self.cfg.call;
                f.capture_time = self
                    .wall_start
                    .plus(self.cfg.output_rate.duration_of(f.position.0));
                StreamStats::add(&self.stats.mixed_frames, 1);
                for sink in self
                    .sinks
                    .iter_mut()
                    .filter(|s| s.select == TrackSelect::Mixed)
                {
                    if !sink.producer.push(f) {
                        StreamStats::add(&self.stats.mixed_dropped_at_ring, 1);
                        StreamStats::add(&crate::stats::RING_FRAMES_DROPPED, 1);
                    }
                }
                if let Some(ssrc) = change {
                    StreamStats::add(&self.stats.dominant_changes, 1);
                    if self.events.len() < self.events.capacity() {
                        self.events
                            .push_back(PipelineEvent::DominantSpeakerChanged(ssrc));
                    }
                }
            }
        }
        self.next_timeout()
    }

    /// Closes a stream now (e.g. the participant left), emitting its last partial frame.
    pub fn remove_stream(&mut self, ssrc: Ssrc) {
        if let Some(i) = self.position(ssrc) {
            let (streams, mut emit) = self.split();
            streams[i].finish(&mut emit);
            self.index.swap_remove(i);
            self.streams.swap_remove(i);
            if let Some(m) = self.mixer.as_mut() {
                m.forget(ssrc);
            }
            self.push_event(PipelineEvent::StreamRemoved(ssrc));
        }
    }

    fn lead_secs(&self) -> f64 {
        self.cfg.release_lead.min(MAX_RELEASE_LEAD).as_secs_f64()
    }

    fn next_timeout(&self) -> Option<Instant> {
        // Every test that polls a pipeline checks that the index is current.
        debug_assert!(
            self.index.len() == self.streams.len()
                && self.index.iter().zip(&self.streams).all(|(x, s)| {
                    let now = StreamIndex::of(s);
                    x.ssrc == now.ssrc
                        && x.pcm == now.pcm
                        && x.due.to_bits() == now.due.to_bits()
                        && x.last_arrival.to_bits() == now.last_arrival.to_bits()
                }),
            "stream index out of date"
        );
        let mut next: Option<f64> = None;
        let lead = self.lead_secs();
        for s in &self.index {
            if s.due.is_finite() {
                let d = s.due - lead;
                next = Some(next.map_or(d, |n: f64| n.min(d)));
            }
        }
        if let Some(m) = &self.mixer {
            let fl = self.frame_len as f64;
            let delay = self.cfg.mixer.map_or(0.0, |c| c.delay.as_secs_f64());
            let due =
                (m.next_position() as f64 + fl) / f64::from(self.cfg.output_rate.hz()) + delay;
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next.map(|s| self.media_start + Duration::from_secs_f64(s.max(0.0)))
    }

    /// The index of `ssrc`'s stream.
    fn position(&self, ssrc: Ssrc) -> Option<usize> {
        self.index.iter().position(|s| s.ssrc == ssrc)
    }

    fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.media_start)
            .as_secs_f64()
    }

    fn push_event(&mut self, e: PipelineEvent) {
        if self.events.len() < self.events.capacity() {
            self.events.push_back(e);
        }
    }

    fn split(&mut self) -> (&mut [Stream], Emit<'_>) {
        split_with(
            &mut self.streams,
            &mut self.sinks,
            self.mixer.as_mut(),
            &self.stats,
            &mut self.scratch,
            self.cfg.call,
            self.wall_start,
            self.cfg.output_rate,
            (&self.latency, self.cfg.clock.0, self.media_start),
        )
    }

    fn params(&self, ssrc: Ssrc) -> StreamParams {
        StreamParams {
            ssrc,
            out_rate: self.cfg.output_rate,
            frame_len: self.frame_len,
            jitter: self.cfg.jitter,
            max_fill_secs: self.cfg.max_silence_fill.as_secs_f64(),
            payload_type: self.cfg.opus_payload_type,
        }
    }

    /// Finds the stream of `ssrc`, creating it when allowed.
    fn stream_index(
        &mut self,
        ssrc: Ssrc,
        make: impl FnOnce(&StreamParams) -> Result<Stream, IngestError>,
    ) -> Result<usize, IngestError> {
        if let Some(i) = self.position(ssrc) {
            return Ok(i);
        }
        if self.streams.len() >= self.cfg.max_streams {
            StreamStats::add(&self.stats.streams_refused, 1);
            return Err(IngestError::TooManyStreams {
                max: self.cfg.max_streams,
            });
        }
        let stream = make(&self.params(ssrc))?;
        self.index.push(StreamIndex::of(&stream));
        self.streams.push(stream);
        self.grow_rings();
        StreamStats::add(&self.stats.streams_created, 1);
        self.push_event(PipelineEvent::StreamAdded(ssrc));
        Ok(self.streams.len() - 1)
    }

    /// RFC 3550 A.1 probation: a new SSRC gets a stream on its second packet within 4
    /// sequence numbers of the first, so a flood of random SSRCs never allocates. The last
    /// sequence number of each source on probation lives in a fixed table indexed by a hash of
    /// the SSRC (entries carry the SSRC, so a flood cannot confirm anything by chance), and the
    /// last packet is held in a small fixed set of slots and replayed when the stream is
    /// created (best effort: under a flood it may be evicted).
    /// Returns `Some(held slot)` when the source is confirmed.
    fn probation(&mut self, now: Instant, pkt: &RtpPacket<'_>) -> Option<Option<usize>> {
        let h = (pkt.ssrc.0.wrapping_mul(0x9e37_79b1) >> 20) as usize % PROBATION_TABLE;
        let entry = self.probation_seq[h];
        let held = self.probation.iter().position(|p| p.ssrc == Some(pkt.ssrc));
        let valid = entry >> 48 == 1 && entry as u32 == pkt.ssrc.0;
        let last = (entry >> 32) as u16;
        let distance = pkt.seq.0.wrapping_sub(last) as i16;
        if valid && distance != 0 && distance.unsigned_abs() <= 4 {
            self.probation_seq[h] = 0;
            if let Some(i) = held {
                self.probation[i].ssrc = None;
            }
            return Some(held);
        }
        self.probation_seq[h] = (1 << 48) | (u64::from(pkt.seq.0) << 32) | u64::from(pkt.ssrc.0);
        let slot = match held {
            Some(i) => &mut self.probation[i],
            None => self
                .probation
                .iter_mut()
                .min_by_key(|p| (p.ssrc.is_some(), p.at))?,
        };
        slot.hold(pkt, now);
        None
    }
}

/// A new SSRC's first packet, held until a second one confirms the source.
struct Probation {
    ssrc: Option<Ssrc>,
    seq: u16,
    at: Option<Instant>,
    len: usize,
    data: [u8; crate::rtp::MAX_PACKET_LEN],
}

impl Default for Probation {
    fn default() -> Self {
        Probation {
            ssrc: None,
            seq: 0,
            at: None,
            len: 0,
            data: [0; crate::rtp::MAX_PACKET_LEN],
        }
    }
}

impl Probation {
    fn hold(&mut self, pkt: &RtpPacket<'_>, now: Instant) {
        // Kept as a plain RTP packet (fixed header + payload); the payload size was checked.
        self.len = pkt.write_to(&mut self.data).unwrap_or(0);
        self.ssrc = (self.len > 0).then_some(pkt.ssrc);
        self.seq = pkt.seq.0;
        self.at = Some(now);
    }
}

/// Plays out the streams of many calls in one order, earliest deadline first, on a thread
/// that serves them all (the media thread's tick).
///
/// Polling call after call plays each call's due streams together: at a few hundred streams a
/// tick has a millisecond or more of decoding to do, and a frame that was due first could wait
/// behind all of it because its call came last. Ordered by deadline, each frame waits only for
/// the frames due before it, so the lateness of a tick's last frame is what the tick's work
/// exceeds its lead, not the whole of it. The queue reuses its buffer (no allocation per tick
/// once it has grown to the streams due in one).
#[derive(Debug, Default)]
pub struct PlayoutQueue {
    /// (seconds from now to the deadline, call, slot).
    due: Vec<(f64, u32, u32)>,
}

impl PlayoutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plays out every stream of `calls` (each reached through `pipeline`) with a frame due by
    /// `now` plus its call's pre-roll, earliest deadline first. Returns how many streams it
    /// played. The rest of each call's tick (idle streams, the mix, the next deadline) is the
    /// caller's: [`CallPipeline::finish_tick`].
    pub fn play<T>(
        &mut self,
        now: Instant,
        calls: &mut [T],
        mut pipeline: impl FnMut(&mut T) -> &mut CallPipeline,
    ) -> usize {
        self.due.clear();
        for (c, call) in calls.iter_mut().enumerate() {
            let due = &mut self.due;
            pipeline(call).each_due(now, |d, slot| due.push((d, c as u32, slot)));
        }
        self.due.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for &(_, c, slot) in &self.due {
            pipeline(&mut calls[c as usize]).play_slot(now, slot as usize);
        }
        self.due.len()
    }
}

#[allow(clippy::too_many_arguments)]
fn split_with<'a>(
    streams: &'a mut [Stream],
    sinks: &'a mut [Sink],
    mixer: Option<&'a mut Mixer>,
    call_stats: &'a CallStats,
    scratch: &'a mut AudioFrame<f32>,
    call: CallTag,
    wall_start: WallClock100ns,
    rate: SampleRate,
    (latency, clock, media_start): (&'a CallLatency, fn() -> Instant, Instant),
) -> (&'a mut [Stream], Emit<'a>) {
    (
        streams,
        Emit {
            call,
            wall_start,
            rate,
            sinks,
            mixer,
            call_stats,
            scratch,
            latency,
            clock,
            media_start,
            timing: None,
        },
    )
}

impl MediaIngest for CallPipeline {
    fn ingest_rtp(&mut self, now: Instant, packet: &[u8]) -> Result<(), IngestError> {
        match RtpPacket::parse(packet) {
            Ok(p) => self.ingest_rtp_packet(now, &p),
            Err(e) => {
                StreamStats::add(&self.stats.malformed, 1);
                Err(e.into())
            }
        }
    }

    fn ingest_rtp_packet(&mut self, now: Instant, pkt: &RtpPacket<'_>) -> Result<(), IngestError> {
        let pkt = *pkt;
        if pkt.payload.len() > crate::jitter::MAX_PAYLOAD {
            StreamStats::add(&self.stats.malformed, 1);
            return Err(RtpError::Oversized {
                len: pkt.payload.len() + 12,
            }
            .into());
        }
        let known = self.index.iter().any(|s| s.ssrc == pkt.ssrc && !s.pcm);
        if !known {
            if self.position(pkt.ssrc).is_some() {
                return Err(IngestError::SourceConflict(pkt.ssrc));
            }
            if self.streams.len() >= self.cfg.max_streams {
                StreamStats::add(&self.stats.streams_refused, 1);
                return Err(IngestError::TooManyStreams {
                    max: self.cfg.max_streams,
                });
            }
            let Some(held) = self.probation(now, &pkt) else {
                return Ok(());
            };
            let i = self.stream_index(pkt.ssrc, |p| {
                Stream::new_opus(p).map_err(|e| IngestError::Setup(e.to_string()))
            })?;
            let media_start = self.media_start;
            let probation = &self.probation;
            let first_held = held.and_then(|h| {
                let p = &probation[h];
                let t = p.at.map_or(0.0, |at| {
                    at.saturating_duration_since(media_start).as_secs_f64()
                });
                RtpPacket::parse(&p.data[..p.len]).ok().map(|f| (t, f))
            });
            if let Some((t_held, first)) = first_held
                && (pkt.seq.0.wrapping_sub(first.seq.0) as i16) > 0
            {
                let (streams, mut emit) = split_with(
                    &mut self.streams,
                    &mut self.sinks,
                    self.mixer.as_mut(),
                    &self.stats,
                    &mut self.scratch,
                    self.cfg.call,
                    self.wall_start,
                    self.cfg.output_rate,
                    (&self.latency, self.cfg.clock.0, self.media_start),
                );
                streams[i].handle_rtp(t_held, &first, &mut emit);
                self.index[i] = StreamIndex::of(&self.streams[i]);
            } else if let Some((t_held, first)) = first_held {
                // The held packet is newer than this one: this one first, then the held one.
                let t = self.secs(now);
                let (streams, mut emit) = split_with(
                    &mut self.streams,
                    &mut self.sinks,
                    self.mixer.as_mut(),
                    &self.stats,
                    &mut self.scratch,
                    self.cfg.call,
                    self.wall_start,
                    self.cfg.output_rate,
                    (&self.latency, self.cfg.clock.0, self.media_start),
                );
                streams[i].handle_rtp(t, &pkt, &mut emit);
                streams[i].handle_rtp(t_held, &first, &mut emit);
                self.index[i] = StreamIndex::of(&self.streams[i]);
                return Ok(());
            }
        }
        let i = self.stream_index(pkt.ssrc, |p| {
            Stream::new_opus(p).map_err(|e| IngestError::Setup(e.to_string()))
        })?;
        let t = self.secs(now);
        let (streams, mut emit) = self.split();
        streams[i].handle_rtp(t, &pkt, &mut emit);
        self.index[i] = StreamIndex::of(&self.streams[i]);
        Ok(())
    }

    fn ingest_rtcp(&mut self, _now: Instant, packet: &[u8]) -> Result<(), IngestError> {
        for sr in sender_reports(packet) {
            match sr {
                Ok(sr) => {
                    if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == sr.ssrc) {
                        s.handle_sender_report(sr.ntp_time, sr.rtp_time);
                    }
                }
                Err(e) => {
                    StreamStats::add(&self.stats.malformed, 1);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn ingest_pcm(&mut self, now: Instant, frame: &PcmInput<'_>) -> Result<(), IngestError> {
        if frame.samples.is_empty() || frame.samples.len() > MAX_PCM_SAMPLES {
            StreamStats::add(&self.stats.pcm_rejected, 1);
            return Err(IngestError::BadPcm);
        }
        let rate = frame.rate;
        let i = self.stream_index(frame.source, |p| {
            Stream::new_pcm(p, rate).map_err(|e| IngestError::Setup(e.to_string()))
        })?;
        if !self.streams[i].is_pcm() {
            return Err(IngestError::SourceConflict(frame.source));
        }
        if self.streams[i].pcm_rate() != Some(rate) {
            StreamStats::add(&self.stats.pcm_rejected, 1);
            return Err(IngestError::BadPcm);
        }
        let ts = frame
            .timestamp_100ns
            .map(|t| (u128::from(t) * u128::from(rate.hz()) / 10_000_000) as i64);
        // Taken out while the streams and sinks are borrowed, put back after: no allocation
        // (its capacity, `MAX_PCM_SAMPLES`, is never exceeded).
        let mut buf = std::mem::take(&mut self.pcm);
        buf.clear();
        buf.extend(frame.samples.iter().map(|s| s.to_f32()));
        let t = self.secs(now);
        let (streams, mut emit) = self.split();
        streams[i].handle_pcm(t, &buf, ts, &mut emit);
        self.index[i] = StreamIndex::of(&self.streams[i]);
        self.pcm = buf;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::units::{RtpTimestamp, SeqNo};

    #[test]
    fn a_growing_ring_follows_the_streams_and_keeps_each_streams_frames_in_order() {
        let start = Instant::now();
        let mut call = CallPipeline::new(
            CallConfig::new(CallTag(1)).with_mixer(None),
            start,
            SystemTime::now(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(call.add_sink_i16_growing(
            TrackSelect::AllParticipants,
            RingGrowth {
                per_stream: 3,
                min: 6,
                max: 20,
                on_grow: Box::new(move |c| tx.send(c).unwrap()),
            },
        ));
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut buf = [0u8; 400];
        let n = enc.encode_float(&[0.1f32; 960], &mut buf).unwrap();
        // The sink's side: rings in the order handed over, each dropped once abandoned and
        // drained; the positions of each stream's frames as read.
        let mut rings: Vec<FrameConsumer<i16>> = Vec::new();
        let mut capacities = Vec::new();
        let mut seen: std::collections::HashMap<u32, Vec<(u64, u64)>> = Default::default();
        // Seven streams, joining 10 packets apart; 60 packets each.
        for step in 0..130u16 {
            let now = start + Duration::from_millis(20 * u64::from(step));
            for k in 0..7u16 {
                let Some(i) = step.checked_sub(10 * k).filter(|i| *i < 60) else {
                    continue;
                };
                let pkt = RtpPacket {
                    marker: i == 0,
                    payload_type: PayloadType(111),
                    seq: SeqNo(i),
                    timestamp: RtpTimestamp(u32::from(i) * 960),
                    ssrc: Ssrc(10 + u32::from(k)),
                    payload: &buf[..n],
                };
                call.ingest_rtp_packet(now, &pkt).unwrap();
            }
            call.poll(now);
            while let Ok(c) = rx.try_recv() {
                capacities.push(c.capacity());
                rings.push(c);
            }
            for r in &mut rings {
                while r
                    .pop_with(|f| {
                        let crate::FrameSource::Participant { ssrc, .. } = f.source else {
                            panic!("a participant ring holds participants' frames");
                        };
                        seen.entry(ssrc.0)
                            .or_default()
                            .push((f.position.0, f.len() as u64));
                    })
                    .is_some()
                {}
            }
            rings.retain(|r| !(r.is_abandoned() && r.is_empty()));
        }
        // 6 (the least) for up to two streams; three need 9, so 2.5 x 6 = 15, enough for five;
        // six need 18: 2.5 x 15 capped at the most, 20, enough for the seventh too.
        assert_eq!(capacities, [6, 15, 20]);
        assert_eq!(call.stats().snapshot().rings_grown, 2);
        assert_eq!(rings.len(), 1, "the replaced rings were let go");
        assert_eq!(seen.len(), 7);
        for (ssrc, pos) in &seen {
            assert!(pos.len() > 40, "{ssrc}: {} frames", pos.len());
            assert!(
                pos.windows(2)
                    .all(|w| w[1].0 == w[0].0 + w[0].1 && w[0].1 > 0),
                "{ssrc}: in order, none missing: {pos:?}"
            );
            let s = call.stream_stats(Ssrc(*ssrc)).unwrap().snapshot();
            assert_eq!(s.dropped_at_ring, 0, "{ssrc}");
        }
    }

    #[test]
    fn parsed_packets_enter_like_bytes() {
        let start = Instant::now();
        let mut call = CallPipeline::new(CallConfig::new(CallTag(1)), start, SystemTime::now());
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut buf = [0u8; 400];
        let pcm = [0.1f32; 960];
        for i in 0..20u16 {
            let n = enc.encode_float(&pcm, &mut buf).unwrap();
            let pkt = RtpPacket {
                marker: i == 0,
                payload_type: PayloadType(111),
                seq: SeqNo(i),
                timestamp: RtpTimestamp(u32::from(i) * 960),
                ssrc: Ssrc(3),
                payload: &buf[..n],
            };
            let now = start + Duration::from_millis(20 * u64::from(i));
            call.ingest_rtp_packet(now, &pkt).unwrap();
        }
        assert_eq!(call.poll_event(), Some(PipelineEvent::StreamAdded(Ssrc(3))));
        let s = call.stream_stats(Ssrc(3)).unwrap().snapshot();
        assert_eq!(s.received, 20);
        assert!(s.frames_out > 5, "{s:?}");
        let big = [0u8; 1600];
        let pkt = RtpPacket {
            marker: false,
            payload_type: PayloadType(111),
            seq: SeqNo(21),
            timestamp: RtpTimestamp(0),
            ssrc: Ssrc(3),
            payload: &big,
        };
        assert!(call.ingest_rtp_packet(start, &pkt).is_err());
    }
}
