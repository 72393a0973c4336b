//! `mediabot-loadgen`: the load generator on its own (the same code as `mediabot loadtest`).
//!
//! Spawns the `mediabot` next to it (or `--bot-exe`), sweeps the stream counts and writes the
//! report to `--out`. See `docs/performance.md`.

use std::process::ExitCode;

use clap::Parser;
use mediabot_emulator::loadgen::{self, LoadtestArgs};

/// Load-test a mediabot: N calls x M speakers through the emulator, with a report.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOADGEN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,rtc_dtls=error,rtc_ice=error,rtc=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mediabot-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = cli.args.out.clone();
    match rt.block_on(loadgen::run(cli.args)) {
        Ok(report) => {
            print!("{}", report.target_lines());
            println!("report: {}", out.join("report.md").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mediabot-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
