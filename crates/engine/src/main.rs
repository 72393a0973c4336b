//! The `mediabot` command: run a media bot, run the demo, run the emulator, and helpers for
//! operators.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mediabot: a Linux-native engine for application-hosted media bots on Microsoft Graph calls.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "mediabot: a Linux-native engine for application-hosted media bots on Microsoft Graph calls",
    after_help = "First time? `mediabot demo` runs everything locally (no tenant needed).\n\
                  Configuration reference and deployment: README.md and docs/."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bot: answer and join calls, record, stream transcription feeds.
    ///
    /// Serves the webhook, WHIP, /healthz, /readyz, /metrics and the operator API (/api/v1, bearer token
    /// from MEDIABOT_OPERATOR_TOKEN) over HTTPS (server.tls_cert/tls_key) or plain HTTP behind a
    /// TLS proxy (server.behind_tls_proxy = true). SIGTERM drains, then exits.
    Run {
        /// Config file (TOML); also `MEDIABOT_CONFIG`.
        #[arg(long, env = "MEDIABOT_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole thing locally with no tenant: the emulator, a bot joining a simulated
    /// meeting, recordings and a transcription feed. Takes about a minute.
    ///
    /// Prints a one-off operator API token (the API is bearer-token protected) to try
    /// `/api/v1/calls` while the meeting runs.
    Demo {
        /// Where the recordings and transcripts go.
        #[arg(long, default_value = "mediabot-demo")]
        out: PathBuf,
        /// A scenario file instead of the bundled meeting (see docs/emulator.md).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Which Graph permissions this configuration needs, which the app's token grants, and
    /// how to consent to the missing ones. Exit 1 when something is missing.
    Permissions {
        /// Config file (TOML); also `MEDIABOT_CONFIG`.
        #[arg(long, env = "MEDIABOT_CONFIG")]
        config: PathBuf,
    },
    /// Ask a running instance to join a Teams meeting (through its operator API).
    Join {
        /// The meeting's join URL.
        url: String,
        /// Base URL of the running instance.
        #[arg(long, default_value = "http://127.0.0.1:8443")]
        api: String,
        /// Operator token (also `MEDIABOT_OPERATOR_TOKEN`).
        #[arg(long, env = "MEDIABOT_OPERATOR_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Run the Graph emulator with its WebRTC media side, standalone (see docs/emulator.md).
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Scenario files to load (started on demand through the control API).
        #[arg(long)]
        scenario: Vec<PathBuf>,
    },
    /// Load-test a bot: N calls x M speakers through the emulator's signaling and replayed
    /// Opus media, sweeping stream counts; CPU, memory, latency, loss, webhook throughput and
    /// call setup, beside a bare-libopus floor (and aiortc when asked). Writes result.json,
    /// report.md and report.html with plots. See docs/performance.md.
    Loadtest {
        #[command(flatten)]
        args: Box<mediabot_emulator::loadgen::LoadtestArgs>,
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
    init_logging(match cli.command {
        Command::Demo { .. } => "warn",
        // The generator's WebRTC stack warns about every ICE check it drops under load.
        Command::Loadtest { .. } => "warn,rtc_dtls=error,rtc_ice=error,rtc=error",
        _ => "info",
    });
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Demo { out, scenario } => demo(out, scenario),
        Command::Permissions { config } => permissions(&config),
        Command::Join { url, api, token } => join(&url, &api, &token),
        Command::Emulator { listen, scenario } => emulator(&listen, &scenario),
        Command::Loadtest { args } => loadtest(*args),
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

fn init_logging(default: &str) {
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

fn loadtest(args: mediabot_emulator::loadgen::LoadtestArgs) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let out = args.out.clone();
    match rt.block_on(mediabot_emulator::loadgen::run(args)) {
        Ok(report) => {
            print!("{}", report.target_lines());
            println!("report: {}", out.join("report.md").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mediabot loadtest: {e:#}");
            ExitCode::FAILURE
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

fn permissions(path: &Path) -> ExitCode {
    use mediabot_signaling::auth::{BotProfile, admin_consent_url};
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
    let client = match mediabot::engine::graph_client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mediabot: {e}");
            return ExitCode::from(2);
        }
    };
    let profile = BotProfile {
        answers_calls: cfg.calls.incoming == mediabot::config::IncomingPolicy::Answer,
        joins_meetings: true,
        app_hosted_media: true,
        ..BotProfile::default()
    };
    match rt.block_on(client.permission_report(&profile)) {
        Ok(r) => {
            println!("needed by this configuration:");
            for n in &r.needed {
                let mark = if r.missing.contains(&n.permission) {
                    "MISSING"
                } else {
                    "granted"
                };
                println!("  {:<32} {mark:<8} {}", n.permission.name(), n.reason);
            }
            if !r.other_roles.is_empty() {
                println!("other roles in the token: {}", r.other_roles.join(", "));
            }
            if r.is_complete() {
                println!("all needed permissions are granted");
                ExitCode::SUCCESS
            } else {
                let tenant = cfg.graph.tenant_id.clone().unwrap_or_default();
                let client_id = cfg.graph.client_id.clone().unwrap_or_default();
                println!();
                println!(
                    "to fix: in the app registration, add these Microsoft Graph *application* permissions,"
                );
                println!(
                    "then have a tenant admin grant consent (Azure portal, or open this URL):"
                );
                println!(
                    "  {}",
                    admin_consent_url(&cfg.graph.authority, &tenant, &client_id)
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("mediabot: cannot get a token to read its roles: {e}");
            ExitCode::FAILURE
        }
    }
}

fn join(url: &str, api: &str, token: &str) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let endpoint = format!("{}/api/v1/calls/join", api.trim_end_matches('/'));
    let res = rt.block_on(async {
        reqwest::Client::new()
            .post(&endpoint)
            .bearer_auth(token)
            .json(&serde_json::json!({ "joinUrl": url }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
    });
    match res {
        Ok(r) => {
            let status = r.status();
            let body = rt.block_on(r.text()).unwrap_or_default();
            if status.is_success() {
                println!("{body}");
                ExitCode::SUCCESS
            } else {
                eprintln!("mediabot: {endpoint} answered {status}: {body}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mediabot: {endpoint}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn emulator(listen: &str, scenarios: &[PathBuf]) -> ExitCode {
    use mediabot_emulator::webrtc_peer::WhipMedia;
    use mediabot_emulator::{AppConfig, Emulator, Scenario, roles};
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let mut b = Emulator::builder()
            .app(AppConfig::with_roles(roles::ALL))
            .media(std::sync::Arc::new(WhipMedia::default()))
            .require_https_callbacks(false);
        for p in scenarios {
            match Scenario::from_file(p) {
                Ok(s) => b = b.scenario(s),
                Err(e) => {
                    eprintln!("mediabot: scenario {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
        let emu = match b.start(listen).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("mediabot: emulator: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("emulator listening on {}", emu.base_url());
        println!("  graph base url      {}", emu.graph_url());
        println!("  authority           {}", emu.base_url());
        println!("  openid metadata     {}", emu.openid_metadata_url());
        for app in emu.apps() {
            println!(
                "  app                 client_id={} tenant={} secret={}",
                app.client_id,
                app.tenant_id,
                app.client_secret.unwrap_or_default()
            );
        }
        println!(
            "control API: {}/_emulator/  (Ctrl-C to stop)",
            emu.base_url()
        );
        wait_for_signal().await;
        ExitCode::SUCCESS
    })
}
