//! The `mediabot` command: run a media bot, run the demo, run the emulator, and helpers for
//! operators.

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
    match cli.command {
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
