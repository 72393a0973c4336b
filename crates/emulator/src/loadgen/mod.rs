//! The load generator: N calls x M speakers on a bot, measured from outside.
//!
//! ```text
//!  generator core                                  bot core
//! ┌───────────────────────────────────────┐       ┌───────────────────────────────┐
//! │ emulator (Graph, notifications)  ─────┼─HTTP─▶│ mediabot run (child process)  │
//! │ ReplayMedia: pre-encoded Opus, pacer ─┼─SRTP─▶│  WHIP/SRTP → jitter → decode   │
//! │ /proc/<bot pid>, /metrics, operator ──┼─HTTP─▶│  → recording + 16 kHz feed     │
//! └───────────────────────────────────────┘       └───────────────────────────────┘
//! ```
//!
//! [`run()`](crate::loadgen::run) spawns the bot pinned to one CPU (or uses one already running, `--bot-url`), pins
//! itself to the other, and for each step of the sweep joins `calls = streams / speakers`
//! simulated meetings through the bot's operator API (ramp), holds them (steady window: CPU per
//! process and thread, RSS, Prometheus histograms), then stops the media and hangs up
//! (teardown) and reads each call's per-stream counters. Around the sweep it measures the
//! webhook (verified notifications per second), the floor (bare libopus decode of the same
//! packets on the bot's core, at the rate the bot's `--bot-recording` mode decodes at) and,
//! optionally, an independent receiver (aiortc) fed the same
//! packets. It writes `result.json`, `report.md`, SVG plots and `report.html` to `--out`.

pub mod bot;
pub mod counters;
pub mod floor;
pub mod pacer;
pub mod peer;
pub mod procfs;
pub mod prom;
pub mod replay;
pub mod report;
pub mod webhook;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use crate::{AppConfig, Emulator, EmulatorHandle, Scenario, roles};
pub use bot::BotRecording;
use bot::{BotEndpoints, BotProcess, LocalBot};
use replay::{Packets, ReplayMedia};
pub use report::LoadtestReport;
use report::{
    CallSetup, Knee, LatencySummary, MediaCounters, PacketInfo, StepResult, WebhookResult,
};

/// The bot's default wake-up grid (`media.wake_grid_us` in mediabot's config), µs: what a
/// spawned bot runs on without `--bot-wake-grid-us`, and so the grid the paced floor uses.
pub const BOT_DEFAULT_WAKE_GRID_US: u64 = 2_000;

/// Names of the bot's per-frame latency histograms (seconds).
pub const FRAME_HISTOGRAMS: [&str; 3] = [
    "mediabot_frame_processing_seconds",
    "mediabot_frame_latency_seconds",
    "mediabot_jitter_buffer_seconds",
];

/// Names of the bot's sink-thread histograms (seconds): how late each sink round started and
/// how long it took, the early sign of sinks falling behind.
pub const SINK_HISTOGRAMS: [&str; 2] = [
    "mediabot_sink_wake_delay_seconds",
    "mediabot_sink_round_seconds",
];

/// Command-line settings of a load test (`mediabot loadtest`, `mediabot-loadgen`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Total inbound streams per step (calls x speakers), comma separated: one sweep step each.
    #[arg(long, value_delimiter = ',', default_value = "100,200,300,500,700")]
    pub streams: Vec<usize>,
    /// Speakers (inbound audio streams) per call.
    #[arg(long, default_value_t = 10)]
    pub speakers: usize,
    /// Seconds over which a step's calls are joined.
    #[arg(long, default_value_t = 5.0)]
    pub ramp_secs: f64,
    /// Seconds of steady state measured per step.
    #[arg(long, default_value_t = 20.0)]
    pub steady_secs: f64,
    /// Seconds after each steady window with hardware counters (instructions, cycles) on the
    /// bot's threads; 0 turns them off. Kept out of the steady window: counting makes every
    /// context switch of the bot save and restore counters, which would add to its CPU time.
    #[arg(long, default_value_t = 3.0)]
    pub counter_secs: f64,
    /// Seconds the bot rests between steps.
    #[arg(long, default_value_t = 2.0)]
    pub cooldown_secs: f64,
    /// Seconds of the webhook blast (0 skips it).
    #[arg(long, default_value_t = 10.0)]
    pub webhook_secs: f64,
    /// Concurrent HTTP/1.1 keep-alive connections of the webhook blast.
    #[arg(long, default_value_t = 4)]
    pub webhook_connections: usize,
    /// The `mediabot` executable to spawn (default: this executable when it is `mediabot`,
    /// else `MEDIABOT_BIN`, else a `mediabot` next to this executable).
    #[arg(long)]
    pub bot_exe: Option<PathBuf>,
    /// Remote mode: base URL of a bot the user starts. The generator writes the config that
    /// bot must use (against this generator's emulator; listening where the URL says) to
    /// `--out/bot-config.toml`, then its secrets to `--out/bot.env`, and waits for the bot to
    /// become ready.
    #[arg(long)]
    pub bot_url: Option<String>,
    /// Remote mode: the media UDP port written into the bot's config.
    #[arg(long, default_value_t = 3478)]
    pub bot_udp_port: u16,
    /// Remote mode: pid of that bot when it runs on this machine (for CPU and memory).
    #[arg(long)]
    pub bot_pid: Option<u32>,
    /// Remote mode: a file the bot's launcher writes the bot's pid to (`echo $! > FILE`),
    /// read once the bot is ready; for a bot started after the generator, whose pid
    /// `--bot-pid` cannot know.
    #[arg(long)]
    pub bot_pid_file: Option<PathBuf>,
    /// Seconds to wait for the bot to become ready (default: 30 for a spawned bot, 300 in
    /// remote mode).
    #[arg(long)]
    pub bot_ready_secs: Option<f64>,
    /// Operator API token of the bot (generated when not given; remote mode writes it to
    /// `--out/bot.env`).
    #[arg(long, env = "MEDIABOT_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Address the in-process emulator listens on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// CPU the bot is pinned to.
    #[arg(long, default_value_t = 1)]
    pub bot_cpu: usize,
    /// CPU the generator is pinned to.
    #[arg(long, default_value_t = 0)]
    pub gen_cpu: usize,
    /// Do not pin anything to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Output folder for result.json, report.md, report.html and the plots.
    #[arg(long, default_value = "loadtest-out")]
    pub out: PathBuf,
    /// Seconds of speech encoded once and looped by every stream.
    #[arg(long, default_value_t = 10)]
    pub audio_secs: u64,
    /// Opus bitrate of the replayed packets, bit/s.
    #[arg(long, default_value_t = 32_000)]
    pub bitrate: i32,
    /// CPU seconds spent on the bare-decode floor (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    pub floor_secs: f64,
    /// Stream counts at which the independent aiortc receiver is measured (empty skips it).
    #[arg(long, value_delimiter = ',')]
    pub peer_streams: Vec<usize>,
    /// Python interpreter with aiortc (created by scripts/setup-interop.sh).
    #[arg(long, default_value = "target/interop-venv/bin/python")]
    pub peer_python: PathBuf,
    /// The aiortc WHIP receiver script.
    #[arg(long, default_value = "scripts/loadtest/aiortc_receiver.py")]
    pub peer_script: PathBuf,
    /// Seconds of steady state for each aiortc measurement.
    #[arg(long, default_value_t = 10.0)]
    pub peer_secs: f64,
    /// Keep sweeping after the knee (default: stop after the first broken step).
    #[arg(long)]
    pub continue_after_knee: bool,
    /// Runs of each stream count, one after the other. With more than one, a stream count
    /// holds when more than half of its runs held, and the knee is the first that did not: on
    /// a host whose speed moves from minute to minute, one run says more about the minute
    /// than about the bot.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub repeat: u16,
    /// Keep the bot's working folder (recordings, transcripts, log) instead of deleting it.
    #[arg(long)]
    pub keep_files: bool,
    /// Seed for phases, sequence numbers and the synthesized speech.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// No live progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// How long the emulated Graph keeps a joined call in `establishing`, ms. Real Graph takes
    /// a few hundred ms (the emulator's default is 300); 0 measures the bot's own setup path.
    #[arg(long, default_value_t = 0)]
    pub graph_establish_ms: u64,
    /// Profile the bot with `perf record -g` during the steady window of the step with this
    /// many streams; writes `perf-<streams>.txt` (top symbols) to `--out`.
    #[arg(long)]
    pub perf_at: Option<usize>,
    /// Spawned bot: `media.realtime_priority` (SCHED_FIFO media thread, 1-99; needs
    /// CAP_SYS_NICE, which root has). Unset: the bot's default, normal priority.
    #[arg(long)]
    pub bot_realtime_priority: Option<u8>,
    /// Spawned bot: `media.wake_grid_us` (play-out wake-up grid, µs). Unset: the bot's default.
    #[arg(long)]
    pub bot_wake_grid_us: Option<u64>,
    /// What the bot records: `wav` (per-speaker 48 kHz WAVs, the engine's default), `wav+ogg`
    /// (and Ogg/Opus passthrough), `ogg` (Ogg/Opus only: the bot decodes at 16 kHz), `off`
    /// (nothing; 16 kHz decode). The 16 kHz transcription feed stays on in every mode. The
    /// floor is measured at the bot's decode rate.
    #[arg(long, value_enum, default_value_t = BotRecording::Wav)]
    pub bot_recording: BotRecording,
    /// Spawned bot: `recording.fsync_interval_secs` (seconds between `fdatasync`s of each open
    /// recording file; 0 syncs only at close). Unset: the bot's default, 5. What durability
    /// costs: on a VM each sync is a journal commit and a cache flush through the hypervisor.
    #[arg(long)]
    pub bot_fsync_secs: Option<u64>,
    /// Spawned bot: `media.idle_silence` (`true`: a silence frame every 20 ms into each call
    /// while the bot has nothing to play; `false`: nothing, as a bot that only listens would
    /// send). Unset: the bot's default, `true`.
    #[arg(long)]
    pub bot_idle_silence: Option<bool>,
    /// Spawned bot: `media.sink_scheduling` (`batch`: nice 10 under `SCHED_BATCH`, the
    /// default; `idle`: `SCHED_IDLE`, only the CPU the media thread leaves; `nice`: nice 10).
    /// Unset: the bot's default, `batch`.
    #[arg(long, value_parser = ["batch", "idle", "nice"])]
    pub bot_sink_scheduling: Option<String>,
    /// Spawned bot: `media.sink_threads` (that many sink workers shared by all calls; 0: a
    /// sink thread per call). Unset: the bot's default, two shared workers.
    #[arg(long)]
    pub bot_sink_threads: Option<usize>,
    /// Spawned bot: `media.sink_nice` (0-19), the sink threads' nice value. Unset: the bot's
    /// default, 10.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub bot_sink_nice: Option<i32>,
    /// Spawned bot: `recording.ring_frames`, each call's speakers' ring to its sinks (20 ms
    /// frames, shared by the call's speakers). Unset: the bot's default, 500.
    #[arg(long)]
    pub bot_ring_frames: Option<usize>,
    /// Spawned bot: `media.direct_media` (`true`: DTLS-SRTP in mediabot's own media plane;
    /// `false`: through the WebRTC stack's pipeline, the path before `70c2388`). Unset: the
    /// bot's default, `true`.
    #[arg(long)]
    pub bot_direct_media: Option<bool>,
}

impl Default for LoadtestArgs {
    fn default() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: LoadtestArgs,
        }
        // The defaults above parse by construction (no required arguments).
        match P::try_parse_from(["loadtest"]) {
            Ok(p) => p.a,
            Err(e) => unreachable!("LoadtestArgs defaults do not parse: {e}"),
        }
    }
}

/// Runs the whole load test and writes the outputs to `args.out`.
///
/// # Errors
/// The bot cannot be started or reached, the emulator cannot start, or outputs cannot be
/// written. A step that breaks is a result, not an error.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<LoadtestReport> {
    if args.speakers == 0 || args.streams.is_empty() || args.streams.contains(&0) {
        bail!("--streams needs positive counts and --speakers at least 1");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    if args.bot_url.is_some() {
        bot::remove_remote_files(&args.out);
    }
    let mut notes: Vec<String> = Vec::new();
    let cpus = procfs::cpus_online();
    let (bot_cpu, gen_cpu) = if args.no_pin {
        (None, None)
    } else if cpus < 2 || args.bot_cpu == args.gen_cpu {
        let msg = format!(
            "{cpus} CPU(s) online (or bot and generator given the same CPU): not pinning; bot and generator share the machine"
        );
        eprintln!("loadtest: warning: {msg}");
        notes.push(msg);
        (None, None)
    } else {
        (Some(args.bot_cpu), Some(args.gen_cpu))
    };
    if let Some(c) = gen_cpu {
        match procfs::pin_self(c) {
            Ok(n) => tracing::info!(cpu = c, threads = n, "generator pinned"),
            Err(e) => {
                notes.push(format!("generator not pinned: {e}"));
                eprintln!("loadtest: warning: cannot pin the generator to CPU {c}: {e}");
            }
        }
    }
    let progress = Progress { quiet: args.quiet };
    progress.line("encoding speech");
    let packets = Packets::encode_speech(args.seed, args.audio_secs, args.bitrate)
        .map_err(|e| anyhow!("opus: {e}"))?;

    let work = std::env::temp_dir().join(format!(
        "mediabot-loadtest-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let _cleanup = CleanupDir {
        path: work.clone(),
        keep: args.keep_files,
    };

    let (http_port, udp_port) = bot::free_ports()?;
    let bot_base = args
        .bot_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{http_port}"))
        .trim_end_matches('/')
        .to_owned();
    let media = ReplayMedia::new(packets.clone(), args.speakers, args.seed)
        .context("start the pacer thread")?;
    let mut app_cfg = AppConfig::with_roles(roles::ALL);
    app_cfg.calling_webhook = Some(format!("{bot_base}/api/calls/notifications"));
    app_cfg.display_name = Some("mediabot-loadtest".into());
    let emu = Emulator::builder()
        .app(app_cfg)
        .media(Arc::new(media.clone()))
        .require_https_callbacks(false)
        .timing(crate::Timing {
            establish_ms: args.graph_establish_ms,
            ..crate::Timing::default()
        })
        .seed(args.seed)
        .start(args.listen.as_str())
        .await
        .context("start the emulator")?;
    let app = emu
        .apps()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("emulator has no app"))?;
    let operator_token = args
        .operator_token
        .clone()
        .unwrap_or_else(|| format!("loadtest-{:016x}", replay::fnv(&work.to_string_lossy())));
    let ep = BotEndpoints {
        graph_url: emu.graph_url(),
        authority: emu.base_url().to_owned(),
        openid_metadata_url: emu.openid_metadata_url(),
    };
    let max_streams_per_call = args.speakers.max(64);
    let mut child: Option<BotProcess> = None;
    let bot_pid = if let Some(url) = &args.bot_url {
        let (http_addr, bind_ip) = bot::remote_addrs(url).map_err(|e| anyhow!(e))?;
        let lb = LocalBot {
            exe: PathBuf::from("mediabot"),
            http: http_addr,
            public_url: Some(bot_base.clone()),
            udp_port: args.bot_udp_port,
            bind_ip,
            work_dir: work.clone(),
            cpu: None,
            max_streams_per_call,
            extra_toml: None,
            realtime_priority: args.bot_realtime_priority,
            wake_grid_us: args.bot_wake_grid_us,
            recording: args.bot_recording,
            fsync_interval_secs: args.bot_fsync_secs,
            idle_silence: args.bot_idle_silence,
            sink_scheduling: args.bot_sink_scheduling.clone(),
            sink_threads: args.bot_sink_threads,
            sink_nice: args.bot_sink_nice,
            ring_frames: args.bot_ring_frames,
            direct_media: args.bot_direct_media,
        };
        let text = bot::config_toml(
            &lb,
            &app,
            &ep,
            &work.join("recordings"),
            &work.join("transcripts"),
        );
        let (cfg, env) = bot::write_remote_files(
            &args.out,
            &text,
            app.client_secret.as_deref().unwrap_or_default(),
            &operator_token,
        )
        .map_err(|e| anyhow!(e))?;
        eprintln!(
            "loadtest: remote mode: start the bot (it must listen on {http_addr}, media UDP port {}) with\n  \
             (set -a; . {}; exec mediabot run --config {}) & echo $! > bot.pid\n\
             and pass --bot-pid-file bot.pid for its CPU and memory; waiting for {bot_base}/readyz",
            args.bot_udp_port,
            env.display(),
            cfg.display()
        );
        args.bot_pid
    } else {
        let exe = bot::locate_bot(args.bot_exe.as_deref()).map_err(|e| anyhow!(e))?;
        let lb = LocalBot {
            exe: exe.clone(),
            http: format!("127.0.0.1:{http_port}").parse()?,
            public_url: None,
            udp_port,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            work_dir: work.clone(),
            cpu: bot_cpu,
            max_streams_per_call,
            extra_toml: None,
            realtime_priority: args.bot_realtime_priority,
            wake_grid_us: args.bot_wake_grid_us,
            recording: args.bot_recording,
            fsync_interval_secs: args.bot_fsync_secs,
            idle_silence: args.bot_idle_silence,
            sink_scheduling: args.bot_sink_scheduling.clone(),
            sink_threads: args.bot_sink_threads,
            sink_nice: args.bot_sink_nice,
            ring_frames: args.bot_ring_frames,
            direct_media: args.bot_direct_media,
        };
        progress.line(&format!("starting bot {}", exe.display()));
        let p = BotProcess::spawn(&lb, &app, &ep, &operator_token).map_err(|e| anyhow!(e))?;
        let pid = p.pid();
        child = Some(p);
        Some(pid)
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let ready_timeout =
        args.bot_ready_secs
            .unwrap_or(if args.bot_url.is_some() { 300.0 } else { 30.0 });
    let ready = bot::wait_ready(
        &http,
        &bot_base,
        Duration::from_secs_f64(ready_timeout.max(0.1)),
        || child.as_mut().and_then(BotProcess::exited),
    )
    .await;
    if let Err(e) = ready {
        let tail = child.as_ref().map(|c| c.log_tail(30)).unwrap_or_default();
        bail!("{e}\n--- bot log ---\n{tail}");
    }
    let bot_pid = match (bot_pid, &args.bot_pid_file) {
        (None, Some(f)) if args.bot_url.is_some() => {
            // The launcher writes it right after starting the bot, so it is there by now;
            // a few seconds of grace for a slow script.
            let t0 = Instant::now();
            loop {
                if let Some(pid) = bot::read_pid_file(f) {
                    break Some(pid);
                }
                if t0.elapsed() > Duration::from_secs(5) {
                    notes.push(format!(
                        "--bot-pid-file {}: no live pid in it; bot CPU and memory not measured",
                        f.display()
                    ));
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        (p, _) => p,
    };
    if args.bot_url.is_some() && bot_pid.is_none() {
        notes.push(
            "remote bot without --bot-pid / --bot-pid-file: its CPU and memory are not measured"
                .into(),
        );
    }
    let ctx = Ctx {
        args: &args,
        emu: &emu,
        media: &media,
        http: &http,
        bot_base: &bot_base,
        operator_token: &operator_token,
        bot_pid,
        hz: procfs::clock_ticks_per_sec(),
        progress: &progress,
        bot_cpu,
        gen_cpu,
        work_dir: (args.bot_url.is_none() && !args.keep_files).then_some(work.as_path()),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bot_pid.and_then(|p| procfs::snapshot(p).ok());
    let idle_rss_kib = idle.as_ref().map(|s| s.rss_kib);

    // Webhook phase: one live call, then the blast.
    let webhook = if args.webhook_secs > 0.0 {
        progress.line("webhook phase");
        match webhook_phase(&ctx, &app).await {
            Ok(w) => Some(w),
            Err(e) => {
                notes.push(format!("webhook phase failed: {e}"));
                None
            }
        }
    } else {
        None
    };

    // The sweep. Each step is bracketed by a short floor measurement (bot idle, its core, the
    // step's stream count), so the step's ratio uses the machine's speed of that minute.
    let rate = args.bot_recording.decode_rate_hz();
    let bracket_secs = args.floor_secs.min(2.0);
    let bracket_floor = |streams: usize| -> Option<Result<floor::Floor, String>> {
        if bracket_secs <= 0.0 || bot_pid.is_none() {
            return None;
        }
        Some(floor::measure(
            &packets,
            bot_cpu,
            streams.max(1),
            Duration::from_secs_f64(bracket_secs),
            rate,
        ))
    };
    let mut steps: Vec<StepResult> = Vec::new();
    let mut knee: Option<Knee> = None;
    let runs = usize::from(args.repeat.max(1));
    let mut bot_exited = false;
    'sweep: for (i, &streams) in args.streams.iter().enumerate() {
        for run in 1..=runs {
            let label = if runs > 1 {
                format!(
                    "step {}/{} ({streams} streams, run {run}/{runs})",
                    i + 1,
                    args.streams.len()
                )
            } else {
                format!("step {}/{} ({streams} streams)", i + 1, args.streams.len())
            };
            progress.line(&format!("{label}: floor before"));
            let before = bracket_floor(streams);
            // `steps.len()`: a number of its own per run, for the meetings' names.
            let mut step = run_step(&ctx, steps.len(), streams, &label, idle_rss_kib)
                .await
                .with_context(|| label.clone())?;
            match (before, bracket_floor(streams)) {
                (Some(Ok(b)), Some(Ok(a))) => {
                    let bracket = report::FloorBracket::new(&b, &a);
                    step.warnings.extend(bracket.drift_warning());
                    step.floor_bracket = Some(bracket);
                }
                (Some(Err(e)), _) | (_, Some(Err(e))) => {
                    // The step falls back to the sweep's floor; say why.
                    notes.push(format!("{label}: floor around the step failed: {e}"));
                }
                _ => {}
            }
            if bracket_secs > 0.0 && bot_pid.is_some() {
                let grid = Duration::from_micros(
                    args.bot_wake_grid_us
                        .unwrap_or(BOT_DEFAULT_WAKE_GRID_US)
                        .max(100),
                );
                let wall = Duration::from_secs_f64(bracket_secs);
                match floor::measure_paced(&packets, bot_cpu, streams, wall, rate, grid) {
                    Ok(f) => step.paced_floor = Some(f),
                    Err(e) => notes.push(format!("{label}: paced floor failed: {e}")),
                }
            }
            step.run = run;
            steps.push(step);
            if let Some(c) = child.as_mut()
                && let Some(why) = c.exited()
            {
                notes.push(format!(
                    "the bot exited during the sweep: {why}; log tail:\n{}",
                    c.log_tail(20)
                ));
                bot_exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs_f64(args.cooldown_secs)).await;
        }
        let verdict = report::StreamCountVerdict::of(&steps, streams);
        if !verdict.held() && knee.is_none() {
            knee = Some(Knee {
                streams,
                reasons: verdict.reasons(),
            });
        }
        if bot_exited || (!verdict.held() && !args.continue_after_knee) {
            break 'sweep;
        }
    }

    // Baselines: the floor on the bot's core while the bot idles, then the aiortc peer.
    // At the bot's decode rate (the target's floor) and, when that is not 48 kHz, at 48 kHz
    // too, for reference.
    let mut floor_at = |rate_hz: u32| -> Option<floor::Floor> {
        if args.floor_secs <= 0.0 {
            return None;
        }
        progress.line(&format!(
            "floor: bare libopus decode at {} kHz",
            rate_hz / 1000
        ));
        let n = args.streams.iter().copied().max().unwrap_or(100).min(1000);
        match floor::measure(
            &packets,
            bot_cpu,
            n,
            Duration::from_secs_f64(args.floor_secs),
            rate_hz,
        ) {
            Ok(f) => Some(f),
            Err(e) => {
                notes.push(format!("floor at {rate_hz} Hz failed: {e}"));
                None
            }
        }
    };
    let floor = floor_at(rate);
    let floor_48k = if rate == 48_000 {
        None
    } else {
        floor_at(48_000)
    };
    // What a timer wake-up costs on the bot's core (the bot idle): 8 threads, 20 ms sleeps,
    // as the per-call sink threads do, on staggered phases and then on one common phase (the
    // sink threads share the media thread's grid); 0.5 s each.
    let mut wake_at = |common: bool| {
        if args.floor_secs <= 0.0 {
            return None;
        }
        progress.line("wake-up cost on the bot's core");
        match floor::wake_cost(bot_cpu, 8, Duration::from_millis(20), 25, common) {
            Ok(w) => Some(w),
            Err(e) => {
                notes.push(format!("wake-up cost: {e}"));
                None
            }
        }
    };
    let wake_cost = wake_at(false);
    let wake_cost_common = wake_at(true);
    let mut peers = Vec::new();
    if !args.peer_streams.is_empty() {
        progress.line("independent peer: aiortc receiver");
        match peer::measure_aiortc(&ctx_peer(&ctx, bot_cpu), &args.peer_streams).await {
            Ok(p) => peers = p,
            Err(e) => notes.push(format!("aiortc baseline failed: {e}")),
        }
    }

    let bot_version = match &child {
        Some(_) => bot::locate_bot(args.bot_exe.as_deref())
            .ok()
            .and_then(|exe| command_line(exe.to_string_lossy().as_ref(), &["version"])),
        None => None,
    };
    if let Some(mut c) = child.take() {
        c.stop(Duration::from_secs(5));
    }
    emu.shutdown().await;
    progress.done();

    let mut report = LoadtestReport {
        schema: report::SCHEMA.into(),
        generated_at: crate::clock::rfc3339(now_ms()),
        machine: report::Machine::detect(bot_version),
        settings: report::Settings::from_args(&args, bot_cpu, gen_cpu, args.bot_url.is_none()),
        packets: PacketInfo {
            count: packets.frames.len(),
            mean_bytes: packets.mean_bytes(),
            bitrate: args.bitrate,
            seconds: args.audio_secs,
        },
        idle_rss_kib,
        webhook,
        steps,
        knee,
        floor,
        floor_48k,
        wake_cost,
        wake_cost_common,
        peers,
        targets: Vec::new(),
        notes,
    };
    report.evaluate();
    report::write_all(&report, &args.out)?;
    Ok(report)
}

/// What the phases share.
struct Ctx<'a> {
    args: &'a LoadtestArgs,
    emu: &'a EmulatorHandle,
    media: &'a ReplayMedia,
    http: &'a reqwest::Client,
    bot_base: &'a str,
    operator_token: &'a str,
    bot_pid: Option<u32>,
    hz: u64,
    progress: &'a Progress,
    /// CPU the bot is pinned to.
    bot_cpu: Option<usize>,
    /// CPU the generator is pinned to.
    gen_cpu: Option<usize>,
    /// The spawned bot's working folder (recordings are emptied after each step).
    work_dir: Option<&'a std::path::Path>,
}

fn ctx_peer<'a>(ctx: &'a Ctx<'a>, cpu: Option<usize>) -> peer::PeerCtx<'a> {
    peer::PeerCtx {
        media: ctx.media,
        python: &ctx.args.peer_python,
        script: &ctx.args.peer_script,
        speakers: ctx.args.speakers,
        secs: ctx.args.peer_secs,
        cpu,
        hz: ctx.hz,
    }
}

/// A meeting with `speakers` participants who are there from the start.
fn meeting_scenario(name: &str, speakers: usize) -> anyhow::Result<Scenario> {
    let mut t = format!("name = \"{name}\"\n[meeting]\nsubject = \"{name}\"\n");
    for j in 0..speakers {
        t.push_str(&format!(
            "[[participant]]\nhandle = \"s{j}\"\ndisplay_name = \"Speaker {j}\"\njoin_at = \"0s\"\n"
        ));
    }
    Scenario::from_toml(&t, None).map_err(|e| anyhow!("scenario: {e}"))
}

async fn join(ctx: &Ctx<'_>, join_url: &str) -> anyhow::Result<String> {
    let r = ctx
        .http
        .post(format!("{}/api/v1/calls/join", ctx.bot_base))
        .bearer_auth(ctx.operator_token)
        .json(&json!({ "joinUrl": join_url }))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("join answered {status}: {body}");
    }
    body["callId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("join answer has no callId: {body}"))
}

async fn hang_up(ctx: &Ctx<'_>, call_id: &str) {
    let _ = ctx
        .http
        .delete(format!("{}/api/v1/calls/{call_id}", ctx.bot_base))
        .bearer_auth(ctx.operator_token)
        .send()
        .await;
}

async fn call_info(ctx: &Ctx<'_>, call_id: &str) -> Option<Value> {
    let r = ctx
        .http
        .get(format!("{}/api/v1/calls/{call_id}", ctx.bot_base))
        .bearer_auth(ctx.operator_token)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The increase of each of the bot's loss and drop counters (`mediabot_*_total` whose name
/// says lost, concealed, dropped, late, duplicate, refused, unknown or overrun) from `before`
/// to `after`.
fn loss_counters(before: &prom::Scrape, after: &prom::Scrape) -> BTreeMap<String, f64> {
    let mut counters = BTreeMap::new();
    for s in &after.samples {
        let n = &s.name;
        let interesting = n.starts_with("mediabot_")
            && n.ends_with("_total")
            && [
                "lost", "conceal", "drop", "late", "dup", "refused", "unknown", "overrun",
            ]
            .iter()
            .any(|w| n.contains(w));
        if interesting && !counters.contains_key(n) {
            let a = after.sum(n).unwrap_or(0.0);
            let b = before.sum(n).unwrap_or(0.0);
            counters.insert(n.clone(), a - b);
        }
    }
    counters
}

async fn scrape(ctx: &Ctx<'_>) -> prom::Scrape {
    match ctx
        .http
        .get(format!("{}/metrics", ctx.bot_base))
        .send()
        .await
    {
        Ok(r) => prom::parse(&r.text().await.unwrap_or_default()),
        Err(_) => prom::Scrape::default(),
    }
}

fn bot_snapshot(ctx: &Ctx<'_>) -> Option<procfs::Snapshot> {
    ctx.bot_pid.and_then(|p| procfs::snapshot(p).ok())
}

async fn webhook_phase(ctx: &Ctx<'_>, app: &crate::RegisteredApp) -> anyhow::Result<WebhookResult> {
    let sc = meeting_scenario("loadtest-webhook", 2)?;
    let info = ctx.emu.start_scenario(sc)?;
    let url = info["join_url"]
        .as_str()
        .ok_or_else(|| anyhow!("no join url"))?
        .to_owned();
    let call_id = join(ctx, &url).await?;
    // Wait for the call to be established and its roster delivered.
    let t0 = Instant::now();
    let body = loop {
        let last = ctx
            .emu
            .deliveries(Some(&call_id))
            .into_iter()
            .rev()
            .find(|d| matches!(d.outcome, crate::Outcome::Delivered));
        if ctx.media.sent_for(&call_id) > 0
            && let Some(d) = last
        {
            break d.body;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("the webhook phase's call did not start media within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ctx.media.stop(&call_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = ctx.emu.notification_token(&app.client_id, &app.tenant_id);
    let body = bytes::Bytes::from(serde_json::to_vec(&body)?);
    let before = scrape(ctx).await;
    let s0 = bot_snapshot(ctx);
    let g0 = floor::process_cpu_secs();
    ctx.progress.line(&format!(
        "webhook: {} connections for {:.0} s",
        ctx.args.webhook_connections, ctx.args.webhook_secs
    ));
    let blast = webhook::blast(
        &format!("{}/api/calls/notifications", ctx.bot_base),
        &token,
        body.clone(),
        ctx.args.webhook_connections,
        Duration::from_secs_f64(ctx.args.webhook_secs),
    )
    .await;
    let gen_cpu = floor::process_cpu_secs() - g0;
    let s1 = bot_snapshot(ctx);
    let after = scrape(ctx).await;
    hang_up(ctx, &call_id).await;
    let cpu = match (s0, s1) {
        (Some(a), Some(b)) => Some(procfs::cpu_between(&a, &b, ctx.hz)),
        _ => None,
    };
    let server_hist = match (
        after.histogram("mediabot_webhook_seconds"),
        before.histogram("mediabot_webhook_seconds"),
    ) {
        (Some(a), Some(b)) => Some(LatencySummary::from_hist(&a.minus(&b))),
        _ => None,
    };
    let bot_cores = cpu.as_ref().map(|c| c.process_cores);
    Ok(WebhookResult {
        body_bytes: body.len(),
        token_reuse: "one token for the whole blast, as Graph and the emulator reuse a notification token for most of its hour (verified in full on every request)".into(),
        per_bot_core: bot_cores
            .filter(|c| *c > 0.01)
            .map(|c| blast.per_sec / c),
        bot_cpu_cores: bot_cores,
        generator_cpu_cores: gen_cpu / blast.secs.max(1e-9),
        server_latency: server_hist,
        blast,
    })
}

async fn run_step(
    ctx: &Ctx<'_>,
    index: usize,
    streams: usize,
    label: &str,
    idle_rss_kib: Option<u64>,
) -> anyhow::Result<StepResult> {
    let args = ctx.args;
    let calls = streams.div_ceil(args.speakers);
    let stats = Arc::clone(ctx.media.stats());
    let connected0 = stats.sessions_connected.load(Ordering::Relaxed);
    let failed0 = stats.sessions_failed.load(Ordering::Relaxed);
    let refused0 = stats.packets_refused.load(Ordering::Relaxed);
    let late0 = stats.packets_late.load(Ordering::Relaxed);
    let calls0 = stats.send_calls.load(Ordering::Relaxed);
    stats.max_late_us.store(0, Ordering::Relaxed);
    let scrape0 = scrape(ctx).await;

    // Ramp.
    let ramp = Duration::from_secs_f64(args.ramp_secs.max(0.0));
    let t_ramp = Instant::now();
    let mut call_ids = Vec::with_capacity(calls);
    let mut join_ms = Vec::with_capacity(calls);
    let mut join_sent: BTreeMap<String, Instant> = BTreeMap::new();
    let mut join_errors = Vec::new();
    for c in 0..calls {
        let sc = meeting_scenario(&format!("loadtest-{index}-{c}"), args.speakers)?;
        let info = ctx.emu.start_scenario(sc)?;
        let url = info["join_url"]
            .as_str()
            .ok_or_else(|| anyhow!("no join url"))?
            .to_owned();
        let t = Instant::now();
        match join(ctx, &url).await {
            Ok(id) => {
                join_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                join_sent.insert(id.clone(), t);
                call_ids.push(id);
            }
            Err(e) => join_errors.push(e.to_string()),
        }
        let due = t_ramp + ramp.mul_f64((c + 1) as f64 / calls as f64);
        tokio::time::sleep_until(due.into()).await;
        ctx.progress.line(&format!(
            "{label}: ramp {} {}/{calls} calls, {} sessions up",
            bar(c + 1, calls),
            c + 1,
            stats.sessions_connected.load(Ordering::Relaxed) - connected0
        ));
    }
    // Wait for the media of every joined call.
    let t_wait = Instant::now();
    loop {
        let up = stats.sessions_connected.load(Ordering::Relaxed) - connected0;
        let failed = stats.sessions_failed.load(Ordering::Relaxed) - failed0;
        if up + failed >= call_ids.len() as u64 || t_wait.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sessions_up = stats.sessions_connected.load(Ordering::Relaxed) - connected0;
    // Let jitter buffers and files settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Steady window.
    let scrape1 = scrape(ctx).await;
    let cores1 = procfs::cpu_times();
    let s1 = bot_snapshot(ctx);
    let g1 = floor::process_cpu_secs();
    let sent1 = stats.packets_sent.load(Ordering::Relaxed);
    let t1 = Instant::now();
    let steady = Duration::from_secs_f64(args.steady_secs.max(0.5));
    let perf = match (args.perf_at, ctx.bot_pid) {
        (Some(n), Some(pid)) if n == streams => perf_start(&args.out, pid, streams),
        _ => None,
    };
    let mut last = s1.clone();
    while t1.elapsed() < steady {
        tokio::time::sleep(Duration::from_secs(1).min(steady.saturating_sub(t1.elapsed()))).await;
        let now = bot_snapshot(ctx);
        let cpu = match (&last, &now) {
            (Some(a), Some(b)) => format!(
                "bot cpu {:.0}%",
                procfs::cpu_between(a, b, ctx.hz).process_cores * 100.0
            ),
            _ => String::new(),
        };
        last = now;
        ctx.progress.line(&format!(
            "{label}: steady {} {:.0}/{:.0} s, {} streams sending, {cpu}, sent {}, refused {}",
            bar(
                t1.elapsed().as_millis() as usize,
                steady.as_millis().max(1) as usize
            ),
            t1.elapsed().as_secs_f64(),
            steady.as_secs_f64(),
            stats.streams_active.load(Ordering::Relaxed),
            stats.packets_sent.load(Ordering::Relaxed),
            stats.packets_refused.load(Ordering::Relaxed) - refused0,
        ));
    }
    let s2 = bot_snapshot(ctx);
    let cores2 = procfs::cpu_times();
    let gen_cpu = floor::process_cpu_secs() - g1;
    if let Some(p) = perf {
        perf_finish(p, &args.out, streams);
    }
    let sent2 = stats.packets_sent.load(Ordering::Relaxed);
    let wall = t1.elapsed().as_secs_f64();
    let scrape2 = scrape(ctx).await;
    let bot_counters = count_bot(ctx, s2.as_ref(), &stats).await;

    // Teardown: stop sending, let the bot drain, hang up, read the calls' counters.
    ctx.progress.line(&format!("{label}: teardown"));
    for id in &call_ids {
        ctx.media.stop(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &call_ids {
        hang_up(ctx, id).await;
    }
    let t_down = Instant::now();
    let mut infos: Vec<Value> = Vec::new();
    for id in &call_ids {
        loop {
            let info = call_info(ctx, id).await;
            let ended = info.as_ref().is_some_and(|i| !i["ended"].is_null());
            if ended || t_down.elapsed() > Duration::from_secs(20) {
                if let Some(i) = info {
                    infos.push(i);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let scrape3 = scrape(ctx).await;
    // Recordings of hundreds of streams add up fast: empty the folders between steps.
    let disk_bytes = ctx.work_dir.map(empty_media_folders);

    // Per-call counters.
    let mut mc = MediaCounters::default();
    let mut setup_ms: Vec<f64> = Vec::new();
    let mut per_stream_frames: Vec<f64> = Vec::new();
    let mut phases = PhaseTimes::default();
    for info in &infos {
        let id = info["callId"].as_str().unwrap_or_default();
        if let Some(ms) = info["setupToFirstAudioMs"].as_f64() {
            setup_ms.push(ms);
            if let (Some(&t0), Some(times)) = (join_sent.get(id), ctx.media.setup_times(id)) {
                phases.add(t0, &times, ms);
            }
        }
        mc.generator_sent += ctx.media.sent_for(id);
        for s in info["ended"]["streams"].as_array().into_iter().flatten() {
            let g = |k: &str| s[k].as_u64().unwrap_or(0);
            mc.streams += 1;
            mc.received += g("received");
            mc.lost += g("lost");
            mc.concealed += g("concealed");
            mc.fec_recovered += g("fecRecovered");
            mc.late += g("late");
            mc.duplicate += g("duplicate");
            mc.dropped_at_ring += g("droppedAtRing");
            mc.frames_out += g("framesOut");
            per_stream_frames.push(g("framesOut") as f64);
        }
    }
    mc.calls_reported = infos.len();
    mc.min_frames_per_stream = per_stream_frames.iter().copied().reduce(f64::min);
    // Prometheus counters about loss and drops, over the whole step and the steady window.
    let counters = loss_counters(&scrape0, &scrape3);
    let steady_counters = loss_counters(&scrape1, &scrape2);
    let mut latency = BTreeMap::new();
    for name in FRAME_HISTOGRAMS.into_iter().chain(SINK_HISTOGRAMS) {
        let v = match (scrape2.histogram(name), scrape1.histogram(name)) {
            (Some(a), Some(b)) => Some(LatencySummary::from_hist(&a.minus(&b))),
            _ => None,
        };
        latency.insert(name.to_owned(), v);
    }
    let cpu = match (&s1, &s2) {
        (Some(a), Some(b)) => Some(procfs::cpu_between(a, b, ctx.hz)),
        _ => None,
    };
    let rss = s2.as_ref().map(|s| s.rss_kib);
    let sent = sent2 - sent1;
    let streams_connected = sessions_up as usize * args.speakers;
    setup_ms.sort_by(f64::total_cmp);
    join_ms.sort_by(f64::total_cmp);
    let mut step = StepResult {
        streams_target: streams,
        run: 1,
        calls,
        speakers_per_call: args.speakers,
        calls_joined: call_ids.len(),
        streams_connected,
        join_errors,
        media_failures: ctx
            .media
            .failures()
            .into_iter()
            .map(|(c, e)| format!("{c}: {e}"))
            .collect(),
        steady_secs: wall,
        bot_cpu: cpu.clone(),
        bot_cores_per_stream: cpu
            .as_ref()
            .map(|c| c.process_cores / streams_connected.max(1) as f64),
        floor_bracket: None,
        paced_floor: None,
        bot_counters,
        rss_kib: rss,
        rss_per_stream_kib: match (rss, idle_rss_kib) {
            (Some(r), Some(i)) => {
                Some(r.saturating_sub(i) as f64 / streams_connected.max(1) as f64)
            }
            _ => None,
        },
        generator_cores: gen_cpu / wall.max(1e-9),
        generator_us_per_packet: if sent > 0 {
            Some(gen_cpu * 1e6 / sent as f64)
        } else {
            None
        },
        generator_packets_per_sec: sent as f64 / wall.max(1e-9),
        generator_refused: stats.packets_refused.load(Ordering::Relaxed) - refused0,
        generator_send_calls: stats.send_calls.load(Ordering::Relaxed) - calls0,
        generator_late: stats.packets_late.load(Ordering::Relaxed) - late0,
        generator_max_late_ms: stats.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        media: mc,
        counters,
        steady_counters,
        latency,
        setup: CallSetup::from_sorted(
            &setup_ms,
            &join_ms,
            scrape3
                .histogram("mediabot_call_setup_seconds")
                .zip(scrape0.histogram("mediabot_call_setup_seconds"))
                .map(|(a, b)| LatencySummary::from_hist(&a.minus(&b))),
        ),
        broken: Vec::new(),
        recorded_bytes: disk_bytes.map(|(r, f)| r + f),
        recording_bytes: disk_bytes.map(|(r, _)| r),
        feed_bytes: disk_bytes.map(|(_, f)| f),
        core_busy: procfs::busy_between(&cores1, &cores2),
        core_interrupts: procfs::share_between(&cores1, &cores2, |t| t.interrupts),
        core_steal: procfs::share_between(&cores1, &cores2, |t| t.steal),
        warnings: Vec::new(),
    };
    step.setup.phases = phases.summary();
    step.broken = step.judge();
    step.warnings = step.measurement_warnings(ctx.bot_cpu, ctx.gen_cpu);
    Ok(step)
}

/// Hardware counters on the bot's threads (those in `snap`) for `--counter-secs`, per packet
/// the generator sent meanwhile. `None` when turned off, without a pid, or on a machine
/// without counters (logged at debug level).
async fn count_bot(
    ctx: &Ctx<'_>,
    snap: Option<&procfs::Snapshot>,
    stats: &replay::ReplayStats,
) -> Option<report::BotCounters> {
    let secs = ctx.args.counter_secs;
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    let tasks: Vec<(u32, String)> = snap?
        .threads
        .iter()
        .map(|(tid, name, _)| (*tid, procfs::thread_group(name)))
        .collect();
    let hw = counters::TaskCounters::open(&tasks)
        .map_err(|e| tracing::debug!(error = %e, "bot hardware counters"))
        .ok()?;
    let sent0 = stats.packets_sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let by = hw.read().ok()?;
    let packets = stats.packets_sent.load(Ordering::Relaxed) - sent0;
    let (threads, kernel_included) = (hw.threads(), hw.kernel_included());
    drop(hw);
    let total: counters::Counts = by.values().sum();
    Some(report::BotCounters {
        packets,
        secs,
        threads,
        kernel_included,
        total: counters::PerPacket::new(total, packets)?,
        by_thread: by
            .into_iter()
            .filter_map(|(g, v)| Some((g, counters::PerPacket::new(v, packets)?)))
            .collect(),
    })
}

/// Per-call durations of the setup phases (ms), from the generator's time stamps and the
/// bot's own join-to-first-frame figure.
#[derive(Default)]
struct PhaseTimes {
    v: [Vec<f64>; 8],
}

impl PhaseTimes {
    const NAMES: [&'static str; 8] = [
        "join request → Graph established, media started (emulator)",
        "media started → speakers' roster known",
        "roster → WHIP offer sent",
        "WHIP offer → answer applied (HTTP, bot creates the session)",
        "answer → ICE + DTLS connected",
        "connected → first packet sent (pacer, stream phase)",
        "first packet sent → first frame in a sink (bot)",
        "total (bot's setupToFirstAudioMs)",
    ];

    fn add(&mut self, join: Instant, t: &replay::SetupTimes, total_ms: f64) {
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| b.saturating_duration_since(a).as_secs_f64() * 1000.0)
        };
        let marks = [
            Some(t.media_start),
            t.roster,
            t.offer_sent,
            t.answered,
            t.connected,
            t.first_sent,
        ];
        let mut prev = join;
        for (i, m) in marks.iter().enumerate() {
            let Some(m) = *m else { break };
            if let Some(d) = ms(prev, Some(m)) {
                self.v[i].push(d);
            }
            prev = m;
        }
        // The bot's clock starts at its join handler, just after `join`.
        if let Some(sent) = ms(join, t.first_sent) {
            self.v[6].push((total_ms - sent).max(0.0));
        }
        self.v[7].push(total_ms);
    }

    fn summary(self) -> Vec<report::SetupPhase> {
        self.v
            .into_iter()
            .zip(Self::NAMES)
            .filter_map(|(v, n)| report::SetupPhase::from_values(n, v))
            .collect()
    }
}

/// Starts `perf record -g` on the bot (it inherits the generator's CPU).
fn perf_start(out: &std::path::Path, pid: u32, streams: usize) -> Option<std::process::Child> {
    std::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "-g",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(out.join(format!("perf-{streams}.data")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("loadtest: perf not started: {e}"))
        .ok()
}

/// Stops perf (SIGINT, as Ctrl-C) and writes the top of its report.
fn perf_finish(mut child: std::process::Child, out: &std::path::Path, streams: usize) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = child.wait();
    let data = out.join(format!("perf-{streams}.data"));
    let report = std::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--percent-limit",
            "0.7",
            "-g",
            "none",
            "--sort",
            "comm,dso,symbol",
            "-i",
        ])
        .arg(&data)
        .output();
    if let Ok(r) = report {
        let _ = std::fs::write(out.join(format!("perf-{streams}.txt")), r.stdout);
    }
}

/// Deletes what the bot wrote under `recordings/` and `transcripts/`; returns the bytes freed
/// in each.
fn empty_media_folders(work: &std::path::Path) -> (u64, u64) {
    fn size(p: &std::path::Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|d| d.flatten().map(|e| size(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let mut total = [0u64; 2];
    for (sub, t) in ["recordings", "transcripts"].into_iter().zip(&mut total) {
        let dir = work.join(sub);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            *t += size(&e.path());
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
    (total[0], total[1])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a command and returns its first line of output.
fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// A 20-cell text progress bar, `[#####---------------]`, for `done` of `total` (clamped).
fn bar(done: usize, total: usize) -> String {
    const CELLS: usize = 20;
    let full = (done.min(total) * CELLS)
        .checked_div(total)
        .unwrap_or(CELLS);
    format!("[{}{}]", "#".repeat(full), "-".repeat(CELLS - full))
}

/// The single live progress line on stderr.
struct Progress {
    quiet: bool,
}

impl Progress {
    fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K[loadtest] {msg}");
        let _ = e.flush();
    }
    fn done(&self) {
        if !self.quiet {
            eprintln!();
        }
    }
}

/// Deletes the bot's working folder (recordings!) when the run ends, however it ends.
struct CleanupDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for CleanupDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("loadtest: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_progress_bar_fills_in_proportion_and_clamps() {
        assert_eq!(bar(0, 10), format!("[{}]", "-".repeat(20)));
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]", "#".repeat(10), "-".repeat(10))
        );
        assert_eq!(bar(10, 10), format!("[{}]", "#".repeat(20)));
        // Past the end (a steady window overrun) and an empty total stay full.
        assert_eq!(bar(12, 10), bar(10, 10));
        assert_eq!(bar(0, 0), bar(10, 10));
    }
}
