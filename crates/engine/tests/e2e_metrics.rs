//! Proves the load-test metrics: after a call has ended, `/metrics` still exports its frame
//! latency histograms (processing, end to end, jitter-buffer hold; ended calls are summed in, so
//! counts never go back), the call setup histogram has the call, and the media and sink threads
//! carry the names the load generator reads from /proc.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use mediabot::demo::start_local;

const MEETING: &str = r#"
name = "metrics"
end_at = "5s"

[meeting]
subject = "metrics"
join_meeting_id = "235711131719"
passcode = "metrics"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 21 }]
"#;

/// The value of the sample line `name` (no labels) in an exposition body.
fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not exported"))
        .trim()
        .parse()
        .unwrap()
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_histograms_survive_the_call_and_threads_are_named() {
    let dir = std::env::temp_dir().join(format!("mediabot-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.transcription.file_dir = None;
    })
    .await
    .unwrap();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    let t = Instant::now();
    let mut saw_sink_thread = false;
    while !engine.finished_calls().iter().any(|c| c.call_id == call_id) {
        assert!(t.elapsed() < Duration::from_secs(30), "call did not end");
        saw_sink_thread |= thread_names().iter().any(|n| n.starts_with("sink-"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = thread_names();
    assert!(names.iter().any(|n| n == "mediabot-udp"), "{names:?}");
    assert!(
        saw_sink_thread,
        "a sink thread (a shared worker by default) ran"
    );
    let url = format!("http://{}/metrics", engine.http_addr());
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let frames = value(&body, "mediabot_frame_latency_seconds_count");
    println!(
        "frames {frames}; e2e mean {:.2} ms; hold mean {:.2} ms; processing mean {:.3} ms",
        1e3 * value(&body, "mediabot_frame_latency_seconds_sum") / frames,
        1e3 * value(&body, "mediabot_jitter_buffer_seconds_sum") / frames,
        1e3 * value(&body, "mediabot_frame_processing_seconds_sum") / frames,
    );
    // 2 s of speech in 20 ms packets: at most about 100 decoded frames (a loaded machine may
    // conceal some, which are not timed).
    assert!((50.0..=130.0).contains(&frames), "{frames}");
    assert_eq!(
        value(&body, "mediabot_frame_processing_seconds_count"),
        frames
    );
    assert_eq!(value(&body, "mediabot_jitter_buffer_seconds_count"), frames);
    assert!(body.contains("mediabot_frame_latency_seconds_bucket{le=\"+Inf\"} "));
    assert!(body.contains("mediabot_frame_processing_seconds_bucket{le=\"0.002\"} "));
    assert_eq!(value(&body, "mediabot_call_setup_seconds_count"), 1.0);
    // The media transport's counters are exported: this call's session ran on the direct
    // DTLS-SRTP plane, and its Opus packets were handed on.
    assert_eq!(
        value(&body, "mediabot_transport_sessions_opened_total"),
        1.0
    );
    assert_eq!(
        value(&body, "mediabot_transport_direct_sessions_total"),
        1.0
    );
    assert!(value(&body, "mediabot_transport_rtp_delivered_total") >= frames);
    assert!(body.contains("# TYPE mediabot_transport_srtp_rejected_total counter"));
    // The sink threads' rounds are timed: the call's sinks ran for seconds, 50 rounds a second.
    assert!(value(&body, "mediabot_sink_round_seconds_count") >= 20.0);
    assert!(value(&body, "mediabot_sink_wake_delay_seconds_count") >= 20.0);
    assert!(body.contains("# TYPE mediabot_recorder_fsync_skipped_total counter"));
    // Audio lost at a full sink ring is exported live; a healthy call loses none.
    assert_eq!(value(&body, "mediabot_ring_frames_dropped_total"), 0.0);
    assert_eq!(value(&body, "mediabot_ogg_packets_dropped_total"), 0.0);
    assert!(body.contains("# TYPE mediabot_echo_frames_dropped_total counter"));
    let setup = engine
        .finished_calls()
        .into_iter()
        .find(|c| c.call_id == call_id)
        .unwrap()
        .setup_to_first_audio_ms
        .unwrap();
    // The first frame is Ada's first word, about 1 s into the meeting.
    assert!((900..10_000).contains(&setup), "setup {setup} ms");
    // A second scrape: nothing goes back.
    let again = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(
        value(&again, "mediabot_frame_latency_seconds_count"),
        frames
    );
    engine.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
