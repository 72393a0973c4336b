//! Proves `recording.participant_wav = false`: each speaker is recorded as Ogg/Opus passthrough
//! alone (decodable `.opus` files holding what was said, no `participant-*.wav`), the call runs
//! at 16 kHz (`mixed.wav` and the manifest say 16000, the mix holds the speech at 16 kHz and is
//! as long as the `.opus` files), the transcription feed is still produced, and without a feed
//! (no per-speaker ring attached) the recording and the setup metric still work.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mediabot::demo::start_local;
use mediabot_emulator::media::speech_like;

const MEETING: &str = r#"
name = "oggonly"
end_at = "7s"

[meeting]
subject = "oggonly"
join_meeting_id = "173205080757"
passcode = "oggonly"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 51 }]

[[participant]]
handle = "bob"
display_name = "Bob Builder"
join_at = "1s"
speak = [{ at = "4s", duration = "2s", synth = 52 }]
"#;

const SHORT_MEETING: &str = r#"
name = "oggonly-nofeed"
end_at = "4s"

[meeting]
subject = "oggonly-nofeed"
join_meeting_id = "173205080758"
passcode = "oggonly"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 53 }]
"#;

/// The packets of an Ogg file (headers included) and its last granule position.
fn ogg_packets(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let (mut packets, mut cur, mut last_granule) = (Vec::new(), Vec::new(), 0);
    let mut i = 0;
    while i < bytes.len() {
        assert_eq!(&bytes[i..i + 4], b"OggS");
        last_granule = u64::from_le_bytes(bytes[i + 6..i + 14].try_into().unwrap());
        let nseg = bytes[i + 26] as usize;
        let seg = &bytes[i + 27..i + 27 + nseg];
        let mut off = i + 27 + nseg;
        for &s in seg {
            cur.extend_from_slice(&bytes[off..off + s as usize]);
            off += s as usize;
            if s < 255 {
                packets.push(std::mem::take(&mut cur));
            }
        }
        i = off;
    }
    (packets, last_granule)
}

/// Decodes an Ogg/Opus file with libopus at 48 kHz.
fn decode_opus(path: &Path) -> (Vec<i16>, u64) {
    let (packets, granule) = ogg_packets(&std::fs::read(path).unwrap());
    assert!(packets[0].starts_with(b"OpusHead"));
    assert!(packets[1].starts_with(b"OpusTags"));
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut out = Vec::new();
    let mut buf = [0i16; 5760];
    for p in &packets[2..] {
        let n = dec.decode(p, &mut buf, false).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    (out, granule)
}

fn wav(path: &Path) -> (u32, Vec<i16>) {
    let r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    (rate, r.into_samples().map(|s| s.unwrap()).collect())
}

/// Best normalized correlation of `needle` anywhere in `hay` (offsets on a `step` grid), in
/// `block`-sample sums (from a prefix sum, so a debug build scans seconds of audio fast; the
/// blocks forgive the codec's phase smear).
fn best_correlation(hay: &[i16], needle: &[i16], step: usize, block: usize) -> f64 {
    let mut prefix = Vec::with_capacity(hay.len() + 1);
    prefix.push(0i64);
    for &x in hay {
        prefix.push(prefix.last().unwrap() + i64::from(x));
    }
    let n: Vec<f64> = needle
        .chunks_exact(block)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum())
        .collect();
    let nn = n.iter().map(|x| x * x).sum::<f64>().sqrt();
    let span = n.len() * block;
    let mut best = 0.0f64;
    for start in (0..hay.len().saturating_sub(span)).step_by(step) {
        let (mut dot, mut hh) = (0.0f64, 0.0f64);
        for (k, b) in n.iter().enumerate() {
            let at = start + block * k;
            let h = (prefix[at + block] - prefix[at]) as f64;
            dot += h * b;
            hh += h * h;
        }
        if hh > 0.0 {
            best = best.max(dot / (hh.sqrt() * nn));
        }
    }
    best
}

/// 48 kHz to 16 kHz by averaging each three samples (enough for block correlation).
fn to_16k(v: &[i16]) -> Vec<i16> {
    v.chunks_exact(3)
        .map(|c| ((i32::from(c[0]) + i32::from(c[1]) + i32::from(c[2])) / 3) as i16)
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Checks the recording folder of an Ogg-only call; returns the manifest.
fn check_recording(rec: &Path, speakers: &[(&str, u64)], min_secs: u64) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("manifest.json")).unwrap()).unwrap();
    let files = files_in(rec);
    println!("files: {files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("participant-") && f.ends_with(".wav")),
        "no participant WAV: {files:?}"
    );
    assert_eq!(manifest["sampleRate"], 16_000, "{manifest:#}");
    let tracks = manifest["tracks"].as_array().unwrap();
    assert_eq!(
        tracks.len(),
        1,
        "the mix is the only WAV track: {manifest:#}"
    );
    assert_eq!(tracks[0]["kind"], "mixed");
    assert!(tracks[0]["error"].is_null());
    let (rate, mixed) = wav(&rec.join("mixed.wav"));
    assert_eq!(rate, 16_000, "mixed.wav header");
    let timeline = manifest["timelineSamples"].as_u64().unwrap();
    assert_eq!(
        mixed.len() as u64,
        timeline,
        "mixed.wav covers the timeline"
    );
    assert_eq!(tracks[0]["samples"].as_u64().unwrap(), timeline);
    assert!(
        timeline >= 16_000 * min_secs,
        "the mix spans the meeting: {timeline} samples at 16 kHz"
    );
    let opus = manifest["opus"].as_array().unwrap();
    assert_eq!(
        opus.len(),
        speakers.len(),
        "one .opus per speaker: {manifest:#}"
    );
    assert_eq!(manifest["opusPacketsDropped"], 0);
    for o in opus {
        assert!(o["error"].is_null(), "{o}");
        let (decoded, granule) = decode_opus(&rec.join(o["file"].as_str().unwrap()));
        assert_eq!(
            decoded.len() as u64,
            granule,
            "decoder output = final granule"
        );
        assert_eq!(o["samples"].as_u64().unwrap(), granule);
        // 48 kHz granules and the 16 kHz mix end at the same instant (to 2.5 ms).
        let diff = granule.abs_diff(3 * mixed.len() as u64);
        println!(
            "{}: {} packets, {granule} samples at 48 kHz; mix {} at 16 kHz",
            o["file"],
            o["packets"],
            mixed.len()
        );
        assert!(diff <= 120, ".opus and mix lengths match: {diff}");
        // Compactness: against the 48 kHz 16-bit WAV the same speaker would have had.
        let bytes = std::fs::metadata(rec.join(o["file"].as_str().unwrap()))
            .unwrap()
            .len();
        let wav48 = 44 + 2 * granule;
        println!(
            "{}: {bytes} bytes, a 48 kHz WAV would be {wav48} ({:.1}x)",
            o["file"],
            wav48 as f64 / bytes as f64
        );
        assert!(
            bytes * 5 < wav48,
            "passthrough is compact: {bytes} vs {wav48}"
        );
        // The .opus holds one of the speakers' source signals.
        let best = speakers
            .iter()
            .map(|(_, synth)| {
                let src = speech_like(*synth, 48_000, 1000);
                best_correlation(&decoded, &src[12_000..24_000], 4, 8)
            })
            .fold(0.0f64, f64::max);
        println!(
            "{}: a speaker's source found with corr {best:.3}",
            o["file"]
        );
        assert!(best > 0.8, "the .opus holds what was said: {best}");
    }
    // The 16 kHz mix holds each speaker's speech (at 16 kHz: a mix mislabeled or resampled
    // wrongly would not correlate), and not a signal nobody sent.
    for (name, synth) in speakers {
        let src = to_16k(&speech_like(*synth, 48_000, 1000));
        let c = best_correlation(&mixed, &src[4_000..12_000], 2, 3);
        println!("mix holds {name} with corr {c:.3}");
        assert!(c > 0.6, "the mix holds {name}'s speech: {c}");
    }
    let stranger = to_16k(&speech_like(99, 48_000, 1000));
    let c = best_correlation(&mixed, &stranger[4_000..12_000], 2, 3);
    println!("mix vs a signal nobody sent: corr {c:.3}");
    assert!(c < 0.5, "control: {c}");
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_only_recording_runs_at_16k_and_keeps_the_feed() {
    let dir = std::env::temp_dir().join(format!("mediabot-oggonly-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.recording.ogg = true;
        c.recording.participant_wav = false;
        assert!(c.transcription.file_dir.is_some(), "demo writes the feed");
    })
    .await
    .unwrap();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    let call = common::wait_call_finished(&engine, &call_id, Duration::from_secs(60)).await;
    engine.shutdown(Duration::from_secs(1)).await;
    assert!(call.setup_to_first_audio_ms.is_some(), "setup measured");
    let rec = PathBuf::from(call.recording_dir.unwrap());
    check_recording(&rec, &[("Ada Lovelace", 51), ("Bob Builder", 52)], 6);

    // The transcription feed (file variant) is produced as with WAV recording.
    let feed_dir = std::fs::read_dir(dir.join("transcripts"))
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
    for name in ["Ada Lovelace", "Bob Builder"] {
        assert!(
            msgs.iter()
                .any(|m| m["type"] == "speaker.add" && m["displayName"] == name),
            "{name} announced"
        );
    }
    let wavs: Vec<PathBuf> = std::fs::read_dir(&feed_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    assert_eq!(wavs.len(), 2, "one 16 kHz feed file per speaker: {wavs:?}");
    // Each feed file holds one speaker's speech, a different one each.
    let mut heard = Vec::new();
    for w in &wavs {
        let (rate, samples) = wav(w);
        assert_eq!(rate, 16_000);
        let (c, synth) = [51u64, 52]
            .into_iter()
            .map(|synth| {
                let src = to_16k(&speech_like(synth, 48_000, 1000));
                (best_correlation(&samples, &src[4_000..12_000], 2, 3), synth)
            })
            .fold((0.0f64, 0), |a, b| if b.0 > a.0 { b } else { a });
        println!("{}: speaker {synth} with corr {c:.3}", w.display());
        assert!(c > 0.6, "{} holds a speaker's speech: {c}", w.display());
        heard.push(synth);
    }
    heard.sort_unstable();
    assert_eq!(heard, [51, 52], "one file per speaker");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_only_recording_without_a_feed_needs_no_speaker_ring() {
    let dir = std::env::temp_dir().join(format!("mediabot-oggonly-nofeed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.recording.ogg = true;
        c.recording.participant_wav = false;
        c.transcription.file_dir = None;
    })
    .await
    .unwrap();
    let call_id = common::join_scenario(&emulator, &engine, SHORT_MEETING).await;
    let call = common::wait_call_finished(&engine, &call_id, Duration::from_secs(60)).await;
    engine.shutdown(Duration::from_secs(1)).await;
    assert!(
        call.setup_to_first_audio_ms.is_some(),
        "setup measured on the mix when no speaker ring is attached"
    );
    let rec = PathBuf::from(call.recording_dir.unwrap());
    check_recording(&rec, &[("Ada Lovelace", 53)], 3);
    assert!(!dir.join("transcripts").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
