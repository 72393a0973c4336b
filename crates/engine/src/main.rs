//! The `mediabot` command: run a media bot, run the demo, run the emulator, and helpers for
//! operators.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mediabot: a Linux-native engine for application-hosted media bots on Microsoft Graph calls.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bot: answer and join calls, record, stream transcription feeds.
    Run {
        /// Config file (TOML); also `MEDIABOT_CONFIG`.
        #[arg(long, env = "MEDIABOT_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole thing locally with no tenant: the emulator, a bot joining a simulated
    /// meeting, recordings and a transcription feed. Takes about a minute.
    Demo {
        /// Where the recordings and transcripts go.
        #[arg(long, default_value = "mediabot-demo")]
        out: PathBuf,
        /// A scenario file instead of the bundled meeting (see docs/emulator.md).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Probe a running instance's health endpoint (the container HEALTHCHECK uses this, since the
    /// runtime image has no curl). Exit 0 when it answers 200.
    Healthcheck {
        /// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8443/healthz")]
        url: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Print, as JSON, the facts deploy manifests must agree with: environment variables read,
    /// default ports, probe paths. The deploy drift check compares manifests with this.
    DeployFacts,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Demo { .. }));
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Demo { out, scenario } => demo(out, scenario),
        Command::Version => {
            println!("mediabot {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Healthcheck { url, timeout_secs } => {
            healthcheck(&url, Duration::from_secs(timeout_secs))
        }
        Command::DeployFacts => {
            println!("{}", mediabot::deploy_facts());
            ExitCode::SUCCESS
        }
    }
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healthcheck: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        client.get(url).send().await
    });
    match result {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("healthcheck: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDIABOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            None
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let cfg = match mediabot::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mediabot: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
        let engine =
            match mediabot::engine::Engine::start(cfg, mediabot::engine::EngineOptions::default())
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("mediabot: {e}");
                    return ExitCode::FAILURE;
                }
            };
        wait_for_signal().await;
        tracing::info!("signal received: draining");
        engine.shutdown(grace).await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn demo(out: PathBuf, scenario: Option<PathBuf>) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let opts = mediabot::demo::DemoOptions {
        out_dir: out,
        scenario,
        progress: true,
        timeout: Duration::from_secs(180),
    };
    println!("mediabot demo: emulator + bot + a simulated meeting (about 40 s of meeting)");
    match rt.block_on(mediabot::demo::run(&opts)) {
        Ok(r) => {
            mediabot::demo::print_summary(&r);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mediabot: {e}");
            ExitCode::FAILURE
        }
    }
}
