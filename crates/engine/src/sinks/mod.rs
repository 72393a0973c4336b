//! Sinks: where frames go after the media pipeline (recorder, transcription streamer, app code).

pub mod ogg;
pub mod wav;
