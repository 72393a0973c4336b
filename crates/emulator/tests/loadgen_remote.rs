//! Remote mode end to end, small: the load generator writes the bot's config and secrets to
//! `--out`, the test starts the real `mediabot` binary from them as a separate process (as a
//! user would), writes its pid to the `--bot-pid-file`, and the generator runs 2 calls x 2
//! speakers against it over loopback. The bot records in the `ogg` mode (Ogg/Opus passthrough
//! only, 16 kHz decode), which the spawned-bot smoke test (`loadgen.rs`, default `wav`) does not
//! cover.
#![cfg(feature = "webrtc")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mediabot_emulator::loadgen::{self, BotRecording, LoadtestArgs, bot};

/// The bot the test started; killed on every path out of the test.
struct BotGuard {
    child: Child,
    log: std::path::PathBuf,
}

impl BotGuard {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for BotGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the test's output folder however the test ends.
struct OutDir(std::path::PathBuf);

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_runs_against_a_bot_started_from_the_written_config() {
    // CI builds the binary (`--all-targets`); a missing one must fail, not skip.
    let exe = bot::locate_bot(None).unwrap_or_else(|e| panic!("{e}"));
    let out = std::env::temp_dir().join(format!("loadgen-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let _out_guard = OutDir(out.clone());
    let (http_port, udp_port) = bot::free_ports().unwrap();
    let pid_file = out.join("bot.pid");
    let recording = BotRecording::Ogg;
    let args = LoadtestArgs {
        streams: vec![4],
        speakers: 2,
        ramp_secs: 0.5,
        steady_secs: 3.0,
        cooldown_secs: 0.0,
        webhook_secs: 0.5,
        webhook_connections: 1,
        bot_url: Some(format!("http://127.0.0.1:{http_port}")),
        bot_udp_port: udp_port,
        bot_pid_file: Some(pid_file.clone()),
        bot_ready_secs: Some(60.0),
        bot_recording: recording,
        out: out.clone(),
        floor_secs: 0.1,
        audio_secs: 2,
        no_pin: true,
        quiet: true,
        ..LoadtestArgs::default()
    };
    let mut run = tokio::spawn(loadgen::run(args));

    // The generator writes the config, then the secrets: the second file means both are there.
    let env_file = out.join(bot::REMOTE_ENV_FILE);
    let t0 = Instant::now();
    while !env_file.exists() {
        assert!(
            !run.is_finished(),
            "the generator ended before writing the bot's files: {:?}",
            (&mut run).await
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no {} within 30 s",
            env_file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cfg_file = out.join(bot::REMOTE_CONFIG_FILE);
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap();
    // The config listens where --bot-url says, on the media port given, loopback only.
    assert_eq!(
        cfg["server"]["listen"].as_str(),
        Some(format!("127.0.0.1:{http_port}").as_str())
    );
    assert_eq!(
        cfg["server"]["public_url"].as_str(),
        Some(format!("http://127.0.0.1:{http_port}").as_str())
    );
    assert_eq!(
        cfg["media"]["udp_port"].as_integer(),
        Some(i64::from(udp_port))
    );
    assert_eq!(cfg["media"]["bind_ip"].as_str(), Some("127.0.0.1"));
    assert_eq!(cfg["recording"]["participant_wav"].as_bool(), Some(false));
    assert_eq!(cfg["recording"]["ogg"].as_bool(), Some(true));
    let vars = bot::read_env_file(&env_file).unwrap();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["MEDIABOT_GRAPH_CLIENT_SECRET", "MEDIABOT_OPERATOR_TOKEN"]
    );

    // Start the bot as a user would, and say where its pid is.
    let log = out.join("bot.log");
    let child = Command::new(&exe)
        .arg("run")
        .arg("--config")
        .arg(&cfg_file)
        .envs(vars)
        .env("MEDIABOT_LOG", "warn")
        .env_remove("MEDIABOT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut bot = BotGuard { child, log };
    let bot_pid = bot.child.id();
    write_atomic(&pid_file, &format!("{bot_pid}\n"));

    // The whole run, bounded; a bot that dies fails the test at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        if run.is_finished() {
            break (&mut run).await.unwrap().unwrap_or_else(|e| {
                panic!(
                    "loadtest failed: {e:#}\n--- bot log ---\n{}",
                    bot.log_tail()
                )
            });
        }
        if let Some(status) = bot.child.try_wait().unwrap() {
            panic!("the bot exited ({status}):\n{}", bot.log_tail());
        }
        assert!(
            Instant::now() < deadline,
            "the load test did not finish within 120 s\n--- bot log ---\n{}",
            bot.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        bot.child.try_wait().unwrap().is_none(),
        "the generator must leave a remote bot running"
    );

    assert!(!r.settings.local_bot);
    assert_eq!(r.settings.bot_recording, recording);
    assert_eq!(r.steps.len(), 1, "{:#?}", r.notes);
    let s = &r.steps[0];
    assert_eq!(s.calls_joined, 2, "{:?}", s.join_errors);
    assert_eq!(s.streams_connected, 4, "{:?}", s.media_failures);
    let m = &s.media;
    assert_eq!(m.streams, 4, "every stream reported at call end: {m:?}");
    assert!(m.generator_sent > 0);
    assert_eq!(m.lost, 0, "{m:?}");
    assert!(
        m.received as f64 >= m.generator_sent as f64 * 0.99,
        "received {} of {} sent",
        m.received,
        m.generator_sent
    );
    let min = m.min_frames_per_stream.unwrap();
    assert!(min >= 150.0 * 0.9, "fewest frames per stream {min}: {m:?}");
    assert_eq!(m.dropped_at_ring, 0);
    assert!(s.setup.first_frame_p50_ms.is_some(), "{:?}", s.setup);
    // CPU and memory come from /proc/<pid> of the pid in the file.
    let cpu = s
        .bot_cpu
        .as_ref()
        .unwrap_or_else(|| panic!("{:#?}", r.notes));
    assert!(cpu.process_cores > 0.0, "{cpu:?}");
    assert!(!cpu.threads.is_empty());
    assert!(s.bot_cores_per_stream.unwrap() > 0.0);
    assert!(s.rss_kib.unwrap() > 0 && r.idle_rss_kib.unwrap() > 0);
    assert!(
        !r.notes.iter().any(|n| n.contains("not measured")),
        "{:#?}",
        r.notes
    );
    // A remote bot's files are its own: not measured.
    assert_eq!(s.recorded_bytes, None);
    let w = r.webhook.as_ref().unwrap();
    assert!(w.blast.accepted > 0, "{w:?}");
    assert_eq!(w.blast.failed, 0, "{:?}", w.blast.first_failure);
    assert!(w.bot_cpu_cores.is_some());
    // The bot decodes at 16 kHz in this mode: the floor too, with 48 kHz for reference.
    assert_eq!(r.settings.bot_decode_rate_hz, 16_000);
    assert_eq!(r.floor.as_ref().unwrap().rate_hz, 16_000);
    assert_eq!(r.floor_48k.as_ref().unwrap().rate_hz, 48_000);
    let t = r
        .targets
        .iter()
        .find(|t| t.name == "CPU per stream vs bare decode")
        .unwrap();
    assert!(
        t.target.contains("16 kHz") && t.measured.contains("48 kHz floor"),
        "{t:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(json["settings"]["local_bot"], false);
    assert!(
        json["steps"][0]["bot_cpu"]["process_cores"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    drop(bot);
}
