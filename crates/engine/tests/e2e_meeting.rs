//! Proves the product end to end over loopback: the engine joins an emulated meeting by URL,
//! real WebRTC media arrives, and the recordings, manifest and transcription feed are right.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use mediabot::demo::{DemoOptions, run};
use mediabot_emulator::media::speech_like;

const SCENARIO: &str = r#"
name = "e2e"
end_at = "9s"

[meeting]
subject = "e2e"
join_meeting_id = "271828182845"
passcode = "e2e"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "3s", synth = 7 }]

[[participant]]
handle = "bob"
display_name = "Bob Builder"
join_at = "0s"
speak = [{ at = "3s", duration = "4s", synth = 8 }]
leave_at = "8s"
"#;

fn read_wav(p: &Path) -> (u32, Vec<i16>) {
    let r = hound::WavReader::open(p).unwrap();
    let rate = r.spec().sample_rate;
    (rate, r.into_samples().map(|s| s.unwrap()).collect())
}

/// Best normalized cross-correlation of `needle` inside `hay`: a coarse search on 8x
/// block-averaged signals, then a fine search at full rate around the coarse peak.
fn best_correlation(hay: &[i16], needle: &[i16]) -> (f64, usize) {
    fn ncc(h: &[f64], n: &[f64]) -> f64 {
        let (mut hn, mut hh, mut nn) = (0.0, 0.0, 0.0);
        for (a, b) in h.iter().zip(n) {
            hn += a * b;
            hh += a * a;
            nn += b * b;
        }
        if hh == 0.0 || nn == 0.0 {
            0.0
        } else {
            hn / (hh * nn).sqrt()
        }
    }
    let blocks = |v: &[i16]| -> Vec<f64> {
        v.chunks(8)
            .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>())
            .collect()
    };
    let (hc, nc) = (blocks(hay), blocks(needle));
    let mut coarse = (f64::MIN, 0);
    for lag in 0..hc.len().saturating_sub(nc.len()) {
        let c = ncc(&hc[lag..lag + nc.len()], &nc);
        if c > coarse.0 {
            coarse = (c, lag * 8);
        }
    }
    let h: Vec<f64> = hay.iter().map(|&x| f64::from(x)).collect();
    let n: Vec<f64> = needle.iter().map(|&x| f64::from(x)).collect();
    let max_lag = h.len().saturating_sub(n.len());
    let mut best = (f64::MIN, 0);
    for lag in coarse.1.saturating_sub(16)..(coarse.1 + 16).min(max_lag) {
        let c = ncc(&h[lag..lag + n.len()], &n);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_records_aligned_tracks_and_streams_the_feed() {
    let dir = std::env::temp_dir().join(format!("mediabot-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let opts = DemoOptions {
        out_dir: dir.join("out"),
        scenario: Some(scenario),
        progress: false,
        timeout: Duration::from_secs(90),
    };
    let r = run(&opts).await.unwrap();

    let ended = r.call.ended.clone().unwrap();
    assert!(ended.reason.contains("terminated"), "{}", ended.reason);
    assert!(ended.errors.is_empty(), "{:?}", ended.errors);
    let call_dir = Path::new(r.call.recording_dir.as_deref().unwrap()).to_path_buf();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(call_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["recording"], false, "final manifest");
    let timeline = manifest["timelineSamples"].as_u64().unwrap();
    // The meeting lasts 9 s after the bot joined; the timeline covers it (setup adds a little).
    assert!(
        (8 * 48_000..14 * 48_000).contains(&timeline),
        "timeline {timeline}"
    );

    let tracks = manifest["tracks"].as_array().unwrap();
    let names: Vec<&str> = tracks
        .iter()
        .filter_map(|t| t["displayName"].as_str())
        .collect();
    assert!(
        names.contains(&"Ada Lovelace") && names.contains(&"Bob Builder"),
        "{names:?}"
    );
    assert!(tracks.iter().any(|t| t["kind"] == "mixed"));
    assert!(
        !names.iter().any(|n| n.starts_with("bot-")),
        "the bot's own stream is not a speaker: {names:?}"
    );

    // Every file: 48 kHz, exactly the timeline's length, so they line up sample for sample.
    for t in tracks {
        let (rate, samples) = read_wav(&call_dir.join(t["file"].as_str().unwrap()));
        assert_eq!(rate, 48_000);
        assert_eq!(samples.len() as u64, timeline, "{}", t["file"]);
    }

    // Content: each speaker's track holds that speaker's audio (Opus-coded, so correlation, not
    // equality), and not the other's.
    let track_of = |name: &str| {
        let t = tracks.iter().find(|t| t["displayName"] == name).unwrap();
        read_wav(&call_dir.join(t["file"].as_str().unwrap())).1
    };
    let ada = track_of("Ada Lovelace");
    let bob = track_of("Bob Builder");
    let ada_src = speech_like(7, 48_000, 3000);
    let bob_src = speech_like(8, 48_000, 4000);
    let (c_ada, lag_ada) = best_correlation(&ada, &ada_src[..48_000]);
    let (c_bob, lag_bob) = best_correlation(&bob, &bob_src[..48_000]);
    let (c_cross, _) = best_correlation(&ada, &bob_src[..48_000]);
    println!(
        "ada corr {c_ada:.3} at {lag_ada}, bob corr {c_bob:.3} at {lag_bob}, cross {c_cross:.3}"
    );
    // Measured: 0.63-0.87 for the right speaker against ~0.16 for the wrong one (Opus at the
    // default bitrate, and the pipeline's drift correction, smear a 1 s window).
    assert!(c_ada > 0.45, "ada's track holds ada's audio: {c_ada}");
    assert!(c_bob > 0.45, "bob's track holds bob's audio: {c_bob}");
    assert!(
        c_cross < 0.3,
        "ada's track does not hold bob's audio: {c_cross}"
    );
    // Bob started 2 s after Ada on the shared timeline.
    let gap = lag_bob as f64 - lag_ada as f64;
    assert!(
        (gap - 96_000.0).abs() < 0.1 * 48_000.0,
        "speech offsets on the shared timeline: {gap}"
    );

    // The transcription feed (file variant).
    let feed_dir = std::fs::read_dir(&r.transcripts_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let jsonl = std::fs::read_to_string(feed_dir.join("transcript.jsonl")).unwrap();
    let msgs: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs[0]["type"], "session.start");
    assert_eq!(msgs.last().unwrap()["type"], "session.stop");
    assert!(
        msgs.iter()
            .any(|m| m["type"] == "speaker.add" && m["displayName"] == "Ada Lovelace")
    );
    let starts = msgs
        .iter()
        .filter(|m| m["type"] == "utterance.start")
        .count();
    let ends = msgs.iter().filter(|m| m["type"] == "utterance.end").count();
    assert!(starts >= 2 && starts == ends, "utterances {starts}/{ends}");
    let wavs: Vec<_> = std::fs::read_dir(&feed_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wav"))
        .collect();
    assert!(wavs.len() >= 2, "16 kHz per-speaker feed files");
    for w in wavs {
        assert_eq!(read_wav(&w.path()).0, 16_000);
    }
}
