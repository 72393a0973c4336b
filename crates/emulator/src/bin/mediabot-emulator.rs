//! `mediabot-emulator`: serves the Graph emulator on loopback until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use mediabot_emulator::{AppConfig, Emulator, Scenario, roles};

/// A local Microsoft Graph for calls: token endpoint, /v1.0 calls API, signed notifications,
/// scenarios and a control API under /_emulator.
#[derive(Debug, Parser)]
#[command(name = "mediabot-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8443",
        env = "MEDIABOT_EMULATOR_LISTEN"
    )]
    listen: String,
    /// Client id of the app to register (random when absent).
    #[arg(long)]
    client_id: Option<String>,
    /// Client secret of that app (random when absent).
    #[arg(long)]
    client_secret: Option<String>,
    /// Tenant id.
    #[arg(long)]
    tenant: Option<String>,
    /// Roles of that app (repeatable; default: all five Calls.* permissions).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// The bot's calling webhook (where incoming calls ring).
    #[arg(long)]
    calling_webhook: Option<String>,
    /// Scenario files to start at launch (repeatable).
    #[arg(long = "scenario")]
    scenarios: Vec<PathBuf>,
    /// Use a virtual clock (advance it with POST /_emulator/clock/advance).
    #[arg(long)]
    virtual_clock: bool,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let roles: Vec<String> = if args.roles.is_empty() {
        roles::ALL.iter().map(|r| (*r).to_owned()).collect()
    } else {
        args.roles
    };
    let mut app = AppConfig::with_roles(roles);
    app.client_id = args.client_id;
    app.client_secret = args.client_secret;
    app.calling_webhook = args.calling_webhook;
    app.display_name = Some("mediabot".into());
    let mut b = Emulator::builder().app(app);
    if let Some(t) = args.tenant {
        b = b.tenant(t);
    }
    if args.virtual_clock {
        b = b.virtual_clock();
    }
    for p in &args.scenarios {
        b = b.scenario(Scenario::from_file(p).with_context(|| format!("loading {}", p.display()))?);
    }
    let emu = b
        .start(args.listen.as_str())
        .await
        .context("starting the emulator")?;
    for a in emu.apps() {
        println!(
            "app        client_id={} tenant={} secret={}",
            a.client_id,
            a.tenant_id,
            a.client_secret.as_deref().unwrap_or("-")
        );
        println!("token      {}", emu.token_url(&a.tenant_id));
    }
    println!("graph      {}", emu.graph_url());
    println!("openid     {}", emu.openid_metadata_url());
    println!("control    {}/_emulator/calls", emu.base_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emu.shutdown().await;
    Ok(())
}
