//! The mediabot engine: configuration, the HTTP server (webhook, WHIP, health, metrics, operator
//! API), call orchestration that joins the signaling and media crates, and the sinks (recorder,
//! transcription streamer, playback).

pub mod config;
pub mod metrics;
pub mod sinks;
