//! Sinks: where frames go after the media pipeline (recorder, transcription streamer, app code).

pub mod ogg;
pub mod packet_ring;
pub mod recorder;
pub mod runner;
pub mod syncer;
pub mod transcription;
pub mod transcription_ws;
pub mod wav;
