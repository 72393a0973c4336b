//! mediabot's real-time media pipeline.
//!
//! In scope: everything between an ingest adapter and a sink. Per sender (SSRC): receive state
//! ([`receive`]), an adaptive jitter buffer ([`jitter`]), Opus decoding with FEC/PLC
//! ([`decode`]), resampling with drift compensation ([`resample`]) and placement on the call's
//! media timeline; per call: a mixer with active/dominant speakers ([`mixer`]) and lock-free
//! SPSC rings of fixed-size frames to each sink ([`frame`]), with atomic counters readable from
//! any thread ([`stats`]). [`pipeline::MediaIngest`] is the one seam every adapter feeds: RTP
//! and RTCP bytes from the WebRTC [`transport`], PCM frames from the planned media bridge.
//!
//! Out of scope: sockets and threads (the cores are sans-IO: every call takes `now`), Graph,
//! the roster (the engine maps SSRCs to participants with [`CallPipeline::set_participant`]),
//! and sinks themselves (recorders, ASR streamers live in the engine).
//!
//! ```text
//!  RTP bytes ─▶ parse ─▶ probation ─▶ ReceiveState ─▶ JitterBuffer ─▶ Opus (FEC/PLC, DTX→0)
//!        ─▶ DriftResampler (rubato) ─▶ frame grid on the call timeline ─┬▶ sink rings (SPSC)
//!                                                                      └▶ Mixer ─▶ mixed ring
//! ```
//!
//! ```
//! use mediabot_media::{CallConfig, CallPipeline, CallTag, MediaIngest, TrackSelect};
//! use std::time::{Duration, Instant, SystemTime};
//!
//! let start = Instant::now();
//! let mut call = CallPipeline::new(CallConfig::new(CallTag(1)), start, SystemTime::now());
//! let mut mixed = call.add_sink_i16(TrackSelect::Mixed, 64).expect("first sink");
//! // Garbage is counted and refused, never a panic.
//! assert!(call.ingest_rtp(start, &[0xff; 3]).is_err());
//! call.poll(start + Duration::from_secs(1));
//! let frame = mixed.pop().expect("the mix runs even when nobody speaks");
//! assert_eq!(frame.len(), 320);
//! assert!(frame.flags.silence);
//! ```
//!
//! `docs/media-pipeline.md` explains the design choices and the measured costs.

pub mod decode;
pub mod fasthash;
pub mod frame;
pub mod jitter;
pub mod mixer;
pub mod pipeline;
pub mod receive;
pub mod resample;
pub mod rtp;
pub mod sched;
pub mod stats;
mod stream;
pub mod transport;
pub mod units;

pub use frame::{ActiveSpeakers, AudioFrame, FrameConsumer, FrameFlags, FrameSource, Sample};
pub use jitter::JitterConfig;
pub use mixer::MixerConfig;
pub use pipeline::{
    CallConfig, CallPipeline, IngestError, MediaClock, MediaIngest, PcmInput, PipelineEvent,
    PlayoutQueue, RingGrowth, TrackSelect,
};
pub use stats::{
    CallLatency, CallLatencySnapshot, CallStats, CallStatsSnapshot, LatencyHistogram,
    LatencySnapshot, StreamStats, StreamStatsSnapshot,
};
pub use units::{
    CallTag, ExtSeq, ExtTimestamp, FrameDuration, ParticipantTag, PayloadType, RtpTimestamp,
    SampleRate, SeqNo, Ssrc, TimelinePos, WallClock100ns,
};
