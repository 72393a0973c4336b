//! Proves per-instance callback URLs: with `server.instance_id` set, the bot's join carries
//! `callbackUri = public_url/api/calls/notifications/<instance>`, Graph's notifications for the
//! call arrive on that path and drive the call, and a batch posted to another instance's path is
//! counted as misrouted.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mediabot::demo::start_local;
use mediabot::engine::{EngineEvent, callback_uri};

const MEETING: &str = r#"
name = "callback"
end_at = "4s"

[meeting]
subject = "callback"
join_meeting_id = "577215664901"
passcode = "callback"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "1s", synth = 3 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_instance_path_in_the_callback() {
    let dir = std::env::temp_dir().join(format!("mediabot-callback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.server.instance_id = Some("bot-7".into());
        c.transcription.file_dir = None;
        c.recording.enabled = false;
    })
    .await
    .unwrap();
    let cb = callback_uri(engine.shared());
    assert!(
        cb.ends_with("/api/calls/notifications/bot-7"),
        "callback {cb}"
    );
    let mut events = engine.events();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    let t = Instant::now();
    let mut established = false;
    while !engine.finished_calls().iter().any(|c| c.call_id == call_id) {
        assert!(t.elapsed() < Duration::from_secs(30), "call did not end");
        while let Ok(ev) = events.try_recv() {
            established |= ev
                == EngineEvent::CallEstablished {
                    call_id: call_id.clone(),
                };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        established,
        "notifications on the instance path drove the call"
    );
    let m = &engine.shared().metrics;
    assert!(m.notifications_accepted.load(Ordering::Relaxed) >= 2);
    assert_eq!(m.notifications_misrouted.load(Ordering::Relaxed), 0);

    // Another instance's path: counted, and still verified (no token: refused).
    let url = format!(
        "http://{}/api/calls/notifications/bot-8",
        engine.http_addr()
    );
    let r = reqwest::Client::new()
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(m.notifications_misrouted.load(Ordering::Relaxed), 1);
    engine.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
