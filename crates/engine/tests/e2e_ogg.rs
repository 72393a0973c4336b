//! Proves Ogg/Opus recording: with `recording.ogg` on, each participant's received Opus packets
//! land in `participant-<id>.opus` without re-encoding; a real decoder (libopus) decodes every
//! file to the same length as the participant's WAV track, with the same content at the same
//! timeline position (a late joiner's lead-in and gaps are silence), and the `.opus` holds what
//! the participant said (the emulator's source signal) whatever the jitter buffer concealed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use mediabot::demo::start_local;
use mediabot_emulator::media::speech_like;

const MEETING: &str = r#"
name = "ogg"
end_at = "7s"

[meeting]
subject = "ogg"
join_meeting_id = "141421356238"
passcode = "ogg"
organizer = "ada"

[[participant]]
handle = "ada"
display_name = "Ada Lovelace"
join_at = "0s"
speak = [{ at = "1s", duration = "2s", synth = 41 }, { at = "4s", duration = "1s", synth = 42 }]

[[participant]]
handle = "bob"
display_name = "Bob Builder"
join_at = "2s"
speak = [{ at = "3s", duration = "1s", synth = 43 }]
"#;

/// The packets of an Ogg file (headers included), checking each page's capture pattern.
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

fn wav(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap()
        .into_samples()
        .map(|s| s.unwrap())
        .collect()
}

/// Normalized correlation of `a[start..start+len]` with `b` shifted by `lag` samples, in 8-sample
/// blocks.
fn corr_at(a: &[i16], b: &[i16], start: usize, len: usize, lag: i64) -> f64 {
    let blocks = |v: &[i16], s: usize| -> Vec<f64> {
        v[s..s + len]
            .chunks(8)
            .map(|c| c.iter().map(|&x| f64::from(x)).sum())
            .collect()
    };
    let x = blocks(a, start);
    let y = blocks(b, (start as i64 + lag) as usize);
    let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    let n = (x.iter().map(|v| v * v).sum::<f64>() * y.iter().map(|v| v * v).sum::<f64>()).sqrt();
    if n > 0.0 { dot / n } else { 0.0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_opus_tracks_decode_to_the_wav_timeline() {
    let dir = std::env::temp_dir().join(format!("mediabot-ogg-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (emulator, engine) = start_local(&dir, |c| {
        c.transcription.file_dir = None;
        c.recording.ogg = true;
    })
    .await
    .unwrap();
    let call_id = common::join_scenario(&emulator, &engine, MEETING).await;
    let call = common::wait_call_finished(&engine, &call_id, Duration::from_secs(60)).await;
    engine.shutdown(Duration::from_secs(1)).await;
    let rec = std::path::PathBuf::from(call.recording_dir.unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("manifest.json")).unwrap()).unwrap();
    let opus = manifest["opus"].as_array().unwrap();
    assert_eq!(opus.len(), 2, "one .opus per participant: {manifest:#}");
    assert_eq!(manifest["opusPacketsDropped"], 0);
    for o in opus {
        let src = o["sourceId"].as_u64().unwrap();
        assert!(o["error"].is_null());
        let track = manifest["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["sourceId"].as_u64() == Some(src))
            .unwrap();
        let w = wav(&rec.join(track["file"].as_str().unwrap()));
        let (decoded, granule) = decode_opus(&rec.join(o["file"].as_str().unwrap()));
        assert_eq!(
            decoded.len() as u64,
            granule,
            "decoder output = final granule"
        );
        assert_eq!(o["samples"].as_u64().unwrap(), granule);
        let diff = decoded.len().abs_diff(w.len());
        // The first voiced second of this speaker in the WAV, found by energy.
        let energy: Vec<i64> = w
            .chunks(960)
            .map(|c| c.iter().map(|&s| i64::from(s).abs()).sum())
            .collect();
        let loud = energy.iter().max().unwrap() / 4;
        let start = energy.iter().position(|&e| e > loud).unwrap() * 960;
        let len = 48_000.min(w.len() - start - 9_600);
        let (mut best, mut best_lag) = (0.0f64, 0i64);
        for lag in (-4_800i64..=4_800).step_by(8) {
            if start as i64 + lag < 0 || start as i64 + lag + len as i64 > decoded.len() as i64 {
                continue;
            }
            let c = corr_at(&w, &decoded, start, len, lag);
            if c > best {
                (best, best_lag) = (c, lag);
            }
        }
        println!(
            "source {src}: wav {} samples, opus {} ({} packets, {} filled); content corr {best:.3} at lag {:.1} ms",
            w.len(),
            decoded.len(),
            o["packets"],
            o["filledSamples"],
            best_lag as f64 / 48.0
        );
        // The source the emulator encoded for this speaker, found in the decoded .opus near
        // where the WAV has it: the .opus holds the packets as sent, so it matches the source
        // closely even when a loaded machine made the WAV path conceal some frames.
        let synth = match track["displayName"].as_str().unwrap() {
            "Ada Lovelace" => 41,
            _ => 43,
        };
        let signal = speech_like(synth, 48_000, 1000);
        let needle = &signal[12_000..24_000];
        let mut src_best = 0.0f64;
        for at in (start.saturating_sub(12_000)..start + 12_000).step_by(8) {
            if at + needle.len() > decoded.len() {
                break;
            }
            src_best = src_best.max(corr_at(&decoded[at..], needle, 0, needle.len(), 0));
        }
        println!("source {src}: the speaker's source signal found with corr {src_best:.3}");
        assert!(diff <= 120, "lengths match to 2.5 ms: {diff}");
        assert!(src_best > 0.8, "the .opus holds what was said: {src_best}");
        assert!(best > 0.5, "same audio as the WAV track: {best}");
        assert!(
            best_lag.abs() <= 2_880,
            "same place on the timeline: {best_lag}"
        );
        // Before the first voiced audio the .opus is silent too.
        let lead = decoded[..start.saturating_sub(24_000)]
            .iter()
            .map(|&s| i32::from(s).abs())
            .max()
            .unwrap_or(0);
        assert!(lead < 300, "silent lead-in: {lead}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
