//! The mediabot engine: configuration, the HTTP server (webhook, WHIP, health, metrics, operator
//! API), call orchestration that joins the signaling and media crates, and the sinks (recorder,
//! transcription streamer, playback).

pub mod call;
pub mod config;
pub mod demo;
pub mod engine;
pub mod health;
pub mod media;
pub mod metrics;
pub mod playback;
pub mod server;
pub mod sinks;
pub mod tls;

/// The facts deploy manifests must agree with, as JSON: every environment variable the binary
/// reads, the default HTTP and media ports, and the probe paths. `mediabot deploy-facts` prints
/// it and `scripts/deploy-check.sh` compares the rendered manifests with it, so they cannot drift apart.
pub fn deploy_facts() -> serde_json::Value {
    let d = config::Config::default();
    serde_json::json!({
        "env": config::ENV_KEYS,
        "http_port": d.server.listen.port(),
        "udp_port": d.media.udp_port,
        "liveness_path": server::HEALTH_PATH,
        "readiness_path": server::READY_PATH,
        "metrics_path": server::METRICS_PATH,
        "notification_path": server::NOTIFICATION_PATH,
        "whip_prefix": server::WHIP_PREFIX,
        "healthcheck_command": ["mediabot", "healthcheck"],
    })
}
