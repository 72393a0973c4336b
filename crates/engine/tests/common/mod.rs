//! Steps the engine's end-to-end tests share: start a scenario in the emulator and join its
//! meeting, and wait for a call to end.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mediabot::call::CallInfo;
use mediabot::engine::Engine;
use mediabot_emulator::{EmulatorHandle, Scenario};

/// Starts the scenario `toml` in the emulator and has the engine join its meeting by URL;
/// returns the call id.
pub async fn join_scenario(emulator: &EmulatorHandle, engine: &Engine, toml: &str) -> String {
    let info = emulator
        .start_scenario(Scenario::from_toml(toml, None).unwrap())
        .unwrap();
    engine
        .join(info["join_url"].as_str().unwrap())
        .await
        .unwrap()
}

/// Waits (up to `limit`) until `call_id` is among the engine's finished calls and returns it.
pub async fn wait_call_finished(engine: &Engine, call_id: &str, limit: Duration) -> CallInfo {
    let t = Instant::now();
    loop {
        if let Some(c) = engine
            .finished_calls()
            .into_iter()
            .find(|c| c.call_id == call_id)
        {
            return c;
        }
        assert!(t.elapsed() < limit, "call did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
