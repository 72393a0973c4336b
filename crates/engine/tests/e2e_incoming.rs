//! Proves the incoming-call path over loopback: a policy-recording call rung by the emulator is
//! answered within Graph's 5 s deadline, the compliance gate opens only after
//! `updateRecordingStatus(recording)` succeeded, and a hang-up from the far side finalizes the
//! files.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mediabot::demo::start_local;
use mediabot_emulator::IncomingCall;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_recording_call_is_answered_in_time_and_gated() {
    let dir = std::env::temp_dir().join(format!("mediabot-incoming-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| c.calls.compliance = true)
        .await
        .unwrap();

    let rung = Instant::now();
    let call_id = emulator
        .ring(IncomingCall {
            policy_recording: true,
            caller_name: Some("Carol Caller".into()),
            ..IncomingCall::default()
        })
        .unwrap();

    // Answered and established, with the gate open, well within the 5 s policy deadline.
    let mut established_after = None;
    while rung.elapsed() < Duration::from_secs(5) {
        if let Some(c) = engine.calls().into_iter().find(|c| c.call_id == call_id)
            && c.state == "established"
            && c.recording
        {
            established_after = Some(rung.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = established_after
        .unwrap_or_else(|| panic!("not established+recording in 5 s: {:?}", engine.calls()));
    println!(
        "rung -> established with recording gate open: {} ms",
        after.as_millis()
    );

    // The emulator saw the bot report `recording` (the gate opens only on that success).
    let call = emulator.call(&call_id).unwrap();
    let text = call.to_string();
    assert!(
        text.contains("\"recording\""),
        "emulator state shows the recording status: {text}"
    );

    // The far side hangs up: the engine closes the call and finalizes its files.
    assert!(emulator.hang_up(&call_id));
    let t = Instant::now();
    let done = loop {
        if let Some(c) = engine
            .finished_calls()
            .into_iter()
            .find(|c| c.call_id == call_id)
        {
            break c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "call not finished after hang-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ended = done.ended.unwrap();
    assert!(ended.reason.contains("terminated"), "{}", ended.reason);
    let manifest = ended.manifest.unwrap();
    assert_eq!(manifest["recording"], false, "final manifest written");
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_instance_rejects_new_calls() {
    let dir = std::env::temp_dir().join(format!("mediabot-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |_| {}).await.unwrap();
    engine.shared().health.start_draining();
    let call_id = emulator.ring(IncomingCall::default()).unwrap();
    let t = Instant::now();
    loop {
        let state = emulator
            .call(&call_id)
            .map(|c| c.to_string())
            .unwrap_or_default();
        if state.contains("terminated") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rejected call should end: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(engine.calls().is_empty());
    let m = engine
        .shared()
        .metrics
        .calls_rejected
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(m, 1);
}
