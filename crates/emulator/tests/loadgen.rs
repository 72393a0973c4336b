//! The load generator end to end, small: 2 calls x 2 speakers and a short webhook phase against
//! the real `mediabot` binary; the report's numbers must be sane and the files written.
#![allow(clippy::unwrap_used)]

use mediabot_emulator::loadgen::{self, LoadtestArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_two_calls_two_speakers_against_the_real_binary() {
    // CI builds the binary (`--all-targets`); a missing one must fail, not skip.
    let exe = loadgen::bot::locate_bot(None).unwrap_or_else(|e| panic!("{e}"));
    let out = std::env::temp_dir().join(format!("loadgen-smoke-{}", std::process::id()));
    let args = LoadtestArgs {
        streams: vec![4],
        speakers: 2,
        ramp_secs: 0.5,
        steady_secs: 3.0,
        cooldown_secs: 0.0,
        webhook_secs: 1.0,
        webhook_connections: 2,
        bot_exe: Some(exe),
        out: out.clone(),
        floor_secs: 0.2,
        audio_secs: 2,
        no_pin: true,
        quiet: true,
        ..LoadtestArgs::default()
    };
    let r = loadgen::run(args).await.unwrap();
    assert_eq!(r.steps.len(), 1, "{:#?}", r.notes);
    let s = &r.steps[0];
    assert_eq!(s.calls_joined, 2, "{:?}", s.join_errors);
    assert_eq!(s.streams_connected, 4, "{:?}", s.media_failures);
    let m = &s.media;
    assert_eq!(m.streams, 4, "every stream reported at call end: {m:?}");
    // The bot must have received what was sent (loopback: no loss), and made frames of it.
    assert!(m.generator_sent > 0);
    assert!(m.received > 0, "the bot received nothing: {m:?}");
    assert_eq!(m.lost, 0, "{m:?}");
    assert!(
        m.received as f64 >= m.generator_sent as f64 * 0.99,
        "received {} of {} sent",
        m.received,
        m.generator_sent
    );
    // Each stream ran at least the steady window: 3 s x 50 frames/s.
    let min = m.min_frames_per_stream.unwrap();
    assert!(min >= 150.0 * 0.9, "fewest frames per stream {min}: {m:?}");
    assert!(m.frames_out as f64 >= m.received as f64 * 0.9, "{m:?}");
    assert_eq!(m.dropped_at_ring, 0);
    // The bot's frame and sink-round histograms were read over the steady window.
    for name in loadgen::FRAME_HISTOGRAMS
        .into_iter()
        .chain(loadgen::SINK_HISTOGRAMS)
    {
        let l = s.latency.get(name).and_then(Option::as_ref);
        assert!(l.is_some_and(|l| l.count > 0.0), "{name}: {l:?}");
    }
    // The default recording mode: 48 kHz WAVs of 4 speakers for at least 3 s (2 bytes a
    // sample; the call's mix on top), and the 16 kHz feed of the same, were written (then
    // deleted).
    assert_eq!(r.settings.bot_recording, loadgen::BotRecording::Wav);
    let rec = s.recording_bytes.unwrap();
    assert!(rec >= 4 * 3 * 96_000, "the bot recorded {rec} bytes");
    let feed = s.feed_bytes.unwrap();
    assert!(feed >= 4 * 3 * 32_000, "the bot's feed wrote {feed} bytes");
    assert_eq!(s.recorded_bytes, Some(rec + feed));
    assert!(s.bot_cpu.as_ref().unwrap().process_cores > 0.0);
    assert!(s.rss_kib.unwrap() > 0);
    assert!(s.generator_packets_per_sec > 4.0 * 50.0 * 0.8);
    assert!(s.setup.first_frame_p50_ms.is_some(), "{:?}", s.setup);
    // The setup breakdown: every phase measured on both calls, the phases summing (per call)
    // to the total, so the p50s cannot exceed it by much.
    assert_eq!(s.setup.phases.len(), 8, "{:?}", s.setup.phases);
    assert!(
        s.setup.phases.iter().all(|p| p.calls == 2),
        "{:?}",
        s.setup.phases
    );
    let total = s.setup.phases[7].p50_ms;
    let parts: f64 = s.setup.phases[..7].iter().map(|p| p.p50_ms).sum();
    assert!(
        parts <= total * 2.0 + 5.0,
        "phases {parts} ms vs total {total} ms"
    );
    // The pacer batches: at most one sendmmsg per session and tick.
    assert!(s.generator_send_calls > 0 && s.generator_send_calls <= s.media.generator_sent);
    // Webhook: verified and accepted, none refused.
    let w = r.webhook.as_ref().unwrap();
    assert!(w.blast.accepted > 0, "{w:?}");
    assert_eq!(w.blast.failed, 0, "{:?}", w.blast.first_failure);
    // WAV recording means a 48 kHz decode: one floor, at that rate.
    let floor = r.floor.as_ref().unwrap();
    assert!(floor.us_per_packet > 0.0);
    assert_eq!(floor.rate_hz, 48_000);
    assert!(r.floor_48k.is_none());
    assert_eq!(r.targets.len(), 5);
    // Files: JSON with the schema fields, Markdown, SVG, HTML.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "mediabot-loadtest/1");
    for key in [
        "machine", "settings", "packets", "steps", "targets", "webhook", "floor",
    ] {
        assert!(!json[key].is_null(), "result.json lacks {key}");
    }
    assert_eq!(json["steps"][0]["media"]["lost"], 0);
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| target |") && md.contains("## Sweep"), "{md}");
    assert!(
        md.contains("## Disk") && md.contains("decodes at 48 kHz"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.join("cpu.svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(
        std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains("<svg")
    );
    let _ = std::fs::remove_dir_all(&out);
}
