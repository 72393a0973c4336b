//! Proves the send path through the engine: in echo mode the bot plays the call's mix back into
//! the call, and the emulator's media side receives that audio (the speaker's own voice).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use mediabot::demo::start_local;
use mediabot_emulator::media::speech_like;

const MEETING: &str = r#"
name = "echo"
end_at = "7s"

[meeting]
subject = "echo"
join_meeting_id = "173205080756"
passcode = "echo"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "3s", synth = 77 }]
"#;

fn blocks(v: &[i16]) -> Vec<f64> {
    v.chunks(8)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum())
        .collect()
}

/// Best normalized correlation of `needle` in `hay` (8x block-averaged: echo is Opus-coded twice).
fn best_correlation(hay: &[i16], needle: &[i16]) -> f64 {
    let (h, n) = (blocks(hay), blocks(needle));
    let nn: f64 = n.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut best = 0.0f64;
    for lag in 0..h.len().saturating_sub(n.len()) {
        let w = &h[lag..lag + n.len()];
        let hh: f64 = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if hh > 0.0 {
            best = best.max(w.iter().zip(&n).map(|(a, b)| a * b).sum::<f64>() / (hh * nn));
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_plays_the_mix_back_into_the_call() {
    let dir = std::env::temp_dir().join(format!("mediabot-echo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.calls.echo = true;
        c.transcription.file_dir = None;
    })
    .await
    .unwrap();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    common::wait_call_finished(&engine, &call_id, Duration::from_secs(60)).await;
    engine.shutdown(Duration::from_secs(1)).await;
    // The emulator finalizes its copy when its peer closes.
    let file = dir
        .join("emulator-received")
        .join(format!("bot-audio-{call_id}.wav"));
    let t = Instant::now();
    let samples: Vec<i16> = loop {
        if let Ok(r) = hound::WavReader::open(&file)
            && r.duration() > 0
        {
            break r.into_samples().map(|s| s.unwrap()).collect();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no bot audio saved at {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let src = speech_like(77, 48_000, 3000);
    let c = best_correlation(&samples, &src[..48_000]);
    let other = best_correlation(&samples, &speech_like(78, 48_000, 1000));
    println!(
        "echo: {} samples back; correlation with the speaker {c:.3}, with unrelated speech {other:.3}",
        samples.len()
    );
    assert!(c > 0.4, "the speaker's voice comes back: {c}");
    assert!(c > 2.0 * other, "and not just any signal: {c} vs {other}");
}
