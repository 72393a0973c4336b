//! Proves DTMF in media does not count as audio loss: RFC 4733 tone packets share the speaker's
//! sequence space, yet a clean call with tones between talkspurts reports 0 lost packets, and the
//! tones are reported (metric and event).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mediabot::demo::start_local;
use mediabot::engine::EngineEvent;

const MEETING: &str = r##"
name = "tones"
end_at = "8s"

[meeting]
subject = "tones"
join_meeting_id = "161803398874"
passcode = "tones"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 11 }, { at = "4500ms", duration = "2s", synth = 12 }]
tone = [{ at = "3500ms", tone = "5" }, { at = "4s", tone = "#" }]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tones_between_talkspurts_are_not_lost_audio() {
    let dir = std::env::temp_dir().join(format!("mediabot-tones-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.transcription.file_dir = None;
        c.recording.enabled = false;
    })
    .await
    .unwrap();
    let mut events = engine.events();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    let call = common::wait_call_finished(&engine, &call_id, Duration::from_secs(60)).await;
    let mut keys = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::Tone { event, .. } = ev {
            keys.push(event);
        }
    }
    let glue = &engine.shared().glue_stats;
    let skipped = glue.tone_seqs_skipped.load(Ordering::Relaxed);
    let tones = engine.shared().metrics.tones.load(Ordering::Relaxed);
    engine.shutdown(Duration::from_secs(1)).await;
    let streams = call.ended.unwrap().streams;
    println!("streams: {streams:?}; tone seqs skipped {skipped}; keys {keys:?}");
    assert_eq!(keys, vec![5, 11], "both presses reported once, in order");
    assert!(tones >= 2, "tones metric: {tones}");
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert!(s.received > 150, "both talkspurts arrived: {}", s.received);
    assert_eq!(s.lost, 0, "tone packets are not lost audio");
    assert!(skipped >= 8, "two tones of 4 packets each: {skipped}");
    let _ = std::fs::remove_dir_all(&dir);
}
