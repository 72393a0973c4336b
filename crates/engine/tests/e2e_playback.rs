//! Proves the playback API end to end: a prompt WAV (16 kHz, so it is resampled) played with
//! `Engine::play_wav` once the call's media is ready arrives at the emulator's side of the call,
//! recognisably the prompt; a stopped clip reports `Stopped`; bad requests are typed errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use mediabot::demo::start_local;
use mediabot::engine::EngineEvent;
use mediabot::playback::{PlaybackError, PlaybackOutcome};
use mediabot_emulator::media::speech_like;

const MEETING: &str = r#"
name = "prompt"
end_at = "9s"

[meeting]
subject = "prompt"
join_meeting_id = "271828182845"
passcode = "prompt"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
# The emulator opens media for calls with a speaker; Ada talks after the prompt.
speak = [{ at = "8s", duration = "500ms", synth = 5 }]
"#;

/// `v` (48 kHz) brought to 16 kHz by averaging groups of three.
fn to_16k(v: &[i16]) -> Vec<f64> {
    v.chunks_exact(3)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() / 3.0)
        .collect()
}

/// Best normalized correlation of `needle` in `hay`, both 16 kHz, 2x block-averaged (the
/// prompt went through resampling and Opus; coarser blocks keep a debug build fast).
fn best_correlation(hay: &[f64], needle: &[i16]) -> f64 {
    let b = |v: Vec<f64>| -> Vec<f64> { v.chunks(2).map(|c| c.iter().sum()).collect() };
    let h = b(hay.to_vec());
    let n = b(needle.iter().map(|&x| f64::from(x)).collect());
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
async fn prompt_wav_reaches_the_far_side_of_the_call() {
    let dir = std::env::temp_dir().join(format!("mediabot-playback-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The prompt: 2 s of speech-like audio at 16 kHz mono.
    let prompt = speech_like(91, 16_000, 2000);
    let prompt_path = dir.join("prompt.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&prompt_path, spec).unwrap();
    for &s in &prompt {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    std::fs::write(dir.join("junk.wav"), b"not a wav").unwrap();

    let (emulator, engine) = start_local(&dir, |c| {
        c.transcription.file_dir = None;
        c.recording.enabled = false;
    })
    .await
    .unwrap();
    let mut events = engine.events();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    assert!(matches!(
        engine.play_wav("no-such-call", &prompt_path).await,
        Err(PlaybackError::UnknownCall(_))
    ));
    // Wait for the media (the bot's send path) to be ready.
    let t = Instant::now();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("media ready in time")
            .unwrap();
        println!("event: {ev:?}");
        if ev
            == (EngineEvent::MediaReady {
                call_id: call_id.clone(),
            })
        {
            break;
        }
    }
    println!("media ready after {:?}", t.elapsed());
    assert!(matches!(
        engine.play_wav(&call_id, dir.join("junk.wav")).await,
        Err(PlaybackError::BadWav { .. })
    ));
    let played = engine.play_wav(&call_id, &prompt_path).await.unwrap();
    assert!((played.duration.as_secs_f64() - 2.0).abs() < 0.01);
    let id = played.id;
    let t = Instant::now();
    assert_eq!(played.finished().await, PlaybackOutcome::Completed);
    let took = t.elapsed();
    println!("prompt played in {took:?}");
    assert!(
        took >= Duration::from_millis(1800),
        "paced in real time: {took:?}"
    );
    // A second clip, stopped early.
    let tone: Vec<i16> = (0..48_000 * 3)
        .map(|i| ((i as f64 * 0.05).sin() * 5000.0) as i16)
        .collect();
    let long = engine.play_pcm(&call_id, &tone, 48_000, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.stop_playback(&call_id).await.unwrap(), 1);
    assert_eq!(long.finished().await, PlaybackOutcome::Stopped);

    let mut saw_finished_event = false;
    let t = Instant::now();
    while !engine.finished_calls().iter().any(|c| c.call_id == call_id) {
        assert!(t.elapsed() < Duration::from_secs(60), "call did not end");
        while let Ok(ev) = events.try_recv() {
            if let EngineEvent::PlaybackFinished {
                id: done,
                outcome: PlaybackOutcome::Completed,
                ..
            } = ev
            {
                saw_finished_event |= done == id;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("call ended after {:?}", t.elapsed());
    assert!(saw_finished_event, "PlaybackFinished event published");
    engine.shutdown(Duration::from_secs(1)).await;

    println!("engine shut down after {:?}", t.elapsed());
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
    // The prompt went out within the first seconds of the session: search only there.
    let hay = to_16k(&samples[..samples.len().min(48_000 * 5)]);
    let c = best_correlation(&hay, &prompt[8_000..12_000]);
    let other = best_correlation(&hay, &speech_like(92, 16_000, 750)[8_000..]);
    println!(
        "prompt: {} samples at the far side; correlation with the prompt {c:.3}, with unrelated speech {other:.3}",
        samples.len()
    );
    assert!(c > 0.6, "the prompt arrives: {c}");
    assert!(c > 2.0 * other, "and not just any signal: {c} vs {other}");
    let _ = std::fs::remove_dir_all(&dir);
}
