//! The bot under test: a `mediabot run` child process configured against the in-process
//! emulator, or a bot someone else started (remote mode).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::identity::RegisteredApp;

/// Endpoints the bot's config must name.
#[derive(Debug, Clone)]
pub struct BotEndpoints {
    /// Graph base URL of the emulator.
    pub graph_url: String,
    /// Token authority (emulator base URL).
    pub authority: String,
    /// OpenID metadata for notification keys.
    pub openid_metadata_url: String,
}

/// What the bot under test records (`--bot-recording`); the transcription feed (16 kHz per
/// speaker, to files) stays on in every mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum BotRecording {
    /// Per-speaker 48 kHz WAVs (`[recording] enabled = true`): the engine's default.
    #[default]
    #[value(name = "wav")]
    #[serde(rename = "wav")]
    Wav,
    /// WAVs and the received Opus packets in Ogg (`ogg = true`).
    #[value(name = "wav+ogg")]
    #[serde(rename = "wav+ogg")]
    WavOgg,
    /// Only Ogg/Opus passthrough (`ogg = true, participant_wav = false`): no 48 kHz PCM.
    #[value(name = "ogg")]
    #[serde(rename = "ogg")]
    Ogg,
    /// Nothing recorded (`enabled = false`).
    #[value(name = "off")]
    #[serde(rename = "off")]
    Off,
}

impl BotRecording {
    /// The rate the bot decodes each stream at in this mode, Hz: 48 kHz when it writes
    /// per-speaker WAVs, else 16 kHz (what the transcription feed needs).
    pub fn decode_rate_hz(self) -> u32 {
        match self {
            Self::Wav | Self::WavOgg => 48_000,
            Self::Ogg | Self::Off => 16_000,
        }
    }

    /// The `--bot-recording` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::WavOgg => "wav+ogg",
            Self::Ogg => "ogg",
            Self::Off => "off",
        }
    }

    /// What the bot writes per stream, in words (for the report).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Wav => "48 kHz per-speaker WAV recording (and the call's 48 kHz mix) to disk",
            Self::WavOgg => {
                "48 kHz per-speaker WAV recording (and the call's mix) plus Ogg/Opus passthrough of the received packets to disk"
            }
            Self::Ogg => {
                "per-speaker Ogg/Opus passthrough of the received packets to disk (no per-speaker WAV; the call's mix as a 16 kHz WAV)"
            }
            Self::Off => "no recording",
        }
    }

    /// The `[recording]` keys of this mode, one per line (without `dir`).
    fn toml_keys(self) -> &'static str {
        match self {
            Self::Wav => "enabled = true\n",
            Self::WavOgg => "enabled = true\nogg = true\n",
            Self::Ogg => "enabled = true\nogg = true\nparticipant_wav = false\n",
            Self::Off => "enabled = false\n",
        }
    }
}

/// Settings of a spawned bot.
#[derive(Debug, Clone)]
pub struct LocalBot {
    /// The `mediabot` executable.
    pub exe: PathBuf,
    /// HTTP listen address (loopback).
    pub http: SocketAddr,
    /// `server.public_url` (None: `http://<http>`).
    pub public_url: Option<String>,
    /// Media UDP port.
    pub udp_port: u16,
    /// `media.bind_ip`.
    pub bind_ip: std::net::IpAddr,
    /// Working folder: config, logs, recordings, transcripts.
    pub work_dir: PathBuf,
    /// CPU to pin the bot to.
    pub cpu: Option<usize>,
    /// Streams per call the bot must accept.
    pub max_streams_per_call: usize,
    /// Extra TOML appended to the generated config (power users).
    pub extra_toml: Option<String>,
    /// `media.realtime_priority` for the bot, when set.
    pub realtime_priority: Option<u8>,
    /// `media.wake_grid_us` for the bot, when set.
    pub wake_grid_us: Option<u64>,
    /// What the bot records.
    pub recording: BotRecording,
    /// `recording.fsync_interval_secs` for the bot, when set (0: sync only at close).
    pub fsync_interval_secs: Option<u64>,
    /// `recording.ring_frames` for the bot (the speakers' ring of each call), when set.
    pub ring_frames: Option<usize>,
    /// `media.idle_silence` for the bot, when set (false: the bot sends nothing while it has
    /// nothing to play).
    pub idle_silence: Option<bool>,
    /// `media.sink_scheduling` for the bot (`batch`, `idle`, `nice`), when set.
    pub sink_scheduling: Option<String>,
    /// `media.sink_nice` for the bot (0-19), when set.
    pub sink_nice: Option<i32>,
    /// `media.sink_threads` for the bot (shared sink workers), when set.
    pub sink_threads: Option<usize>,
    /// `media.direct_media` for the bot, when set.
    pub direct_media: Option<bool>,
}

/// The generated `mediabot.toml` text.
pub fn config_toml(
    bot: &LocalBot,
    app: &RegisteredApp,
    ep: &BotEndpoints,
    recordings: &Path,
    transcripts: &Path,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        "# Generated by the mediabot load generator.\n\
         [server]\nlisten = {listen}\npublic_url = {public}\nbehind_tls_proxy = true\nshutdown_grace_secs = 2\n\n\
         [graph]\ntenant_id = {tenant}\nclient_id = {client}\nbase_url = {graph}\nauthority = {auth}\nopenid_metadata_url = {oid}\n\n\
         [media]\nudp_port = {udp}\nbind_ip = {bind}\nmax_calls = 2000\nmax_streams_per_call = {mspc}\n{media_extra}\n\
         [recording]\n{rec_keys}{fsync}{ring}dir = {rec}\n\n\
         [transcription]\nfile_dir = {tr}\nreconnect_buffer_secs = 10\n{extra}",
        listen = q(&bot.http.to_string()),
        public = q(&bot
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", bot.http))),
        bind = q(&bot.bind_ip.to_string()),
        tenant = q(&app.tenant_id),
        client = q(&app.client_id),
        graph = q(&ep.graph_url),
        auth = q(&ep.authority),
        oid = q(&ep.openid_metadata_url),
        udp = bot.udp_port,
        mspc = bot.max_streams_per_call.max(1),
        rec_keys = bot.recording.toml_keys(),
        fsync = bot
            .fsync_interval_secs
            .map_or(String::new(), |s| format!("fsync_interval_secs = {s}\n")),
        ring = bot
            .ring_frames
            .map_or(String::new(), |n| format!("ring_frames = {n}\n")),
        rec = q(&recordings.to_string_lossy()),
        tr = q(&transcripts.to_string_lossy()),
        extra = bot.extra_toml.as_deref().unwrap_or(""),
        media_extra = media_extra(bot),
    )
}

/// The optional `[media]` scheduling keys, one per line (unset ones are left to the bot's
/// defaults).
fn media_extra(bot: &LocalBot) -> String {
    let keys = [
        (
            "realtime_priority",
            bot.realtime_priority.map(|p| p.to_string()),
        ),
        ("wake_grid_us", bot.wake_grid_us.map(|us| us.to_string())),
        ("idle_silence", bot.idle_silence.map(|on| on.to_string())),
        (
            "sink_scheduling",
            bot.sink_scheduling.as_ref().map(|s| format!("\"{s}\"")),
        ),
        ("sink_nice", bot.sink_nice.map(|n| n.to_string())),
        ("sink_threads", bot.sink_threads.map(|n| n.to_string())),
        ("direct_media", bot.direct_media.map(|on| on.to_string())),
    ];
    keys.iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {v}\n")))
        .collect()
}

/// Where a bot started by the user (remote mode) must listen, from its `--bot-url`: the HTTP
/// listen address and the media bind IP. An IP literal host is used as is, `localhost` is
/// 127.0.0.1, any other name listens on every address (`0.0.0.0`); the port is the URL's
/// (80/443 when it has none).
///
/// # Errors
/// The URL does not parse or has no host.
pub fn remote_addrs(bot_url: &str) -> Result<(SocketAddr, std::net::IpAddr), String> {
    use std::net::{IpAddr, Ipv4Addr};
    let u = url::Url::parse(bot_url).map_err(|e| format!("--bot-url {bot_url}: {e}"))?;
    let port = u
        .port_or_known_default()
        .ok_or_else(|| format!("--bot-url {bot_url}: no port"))?;
    let ip = match u.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        Some(url::Host::Domain(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => return Err(format!("--bot-url {bot_url}: no host")),
    };
    Ok((SocketAddr::new(ip, port), ip))
}

/// Name of the config file remote mode writes into `--out`.
pub const REMOTE_CONFIG_FILE: &str = "bot-config.toml";
/// Name of the environment file remote mode writes into `--out`, after the config: the
/// secrets the bot reads from its environment, as `KEY='value'` lines a POSIX shell can
/// source. Its appearance means both files are complete.
pub const REMOTE_ENV_FILE: &str = "bot.env";

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees a
/// partial file; `mode` sets the permission bits (Unix).
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    r.map_err(|e| format!("write {}: {e}", path.display()))
}

/// Quotes `v` for a POSIX shell (single quotes; a quote inside becomes `'\''`).
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Remote mode: removes the files a previous run left in `out`, so whoever waits for
/// [`REMOTE_ENV_FILE`] does not pick up stale ones.
pub fn remove_remote_files(out: &Path) {
    for f in [REMOTE_ENV_FILE, REMOTE_CONFIG_FILE] {
        let _ = std::fs::remove_file(out.join(f));
    }
}

/// Remote mode: writes `out/bot-config.toml` (`config`), then `out/bot.env` (mode 0600) with
/// `MEDIABOT_GRAPH_CLIENT_SECRET` and `MEDIABOT_OPERATOR_TOKEN`, each atomically. Returns both
/// paths.
///
/// # Errors
/// A file cannot be written.
pub fn write_remote_files(
    out: &Path,
    config: &str,
    client_secret: &str,
    operator_token: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let cfg = out.join(REMOTE_CONFIG_FILE);
    write_atomic(&cfg, config, 0o644)?;
    let env = out.join(REMOTE_ENV_FILE);
    let text = format!(
        "# Generated by the mediabot load generator: the bot's secrets for this run.\n\
         MEDIABOT_GRAPH_CLIENT_SECRET={}\nMEDIABOT_OPERATOR_TOKEN={}\n",
        sh_quote(client_secret),
        sh_quote(operator_token)
    );
    write_atomic(&env, &text, 0o600)?;
    Ok((cfg, env))
}

/// Reads a `KEY='value'` file as [`write_remote_files`] writes it (comments and blank lines
/// skipped; unquoted values taken as they are).
///
/// # Errors
/// The file cannot be read, or a line is not `KEY=value`.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: not KEY=value: {line}", path.display()))?;
        let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) => inner.replace("'\\''", "'"),
            None => v.to_owned(),
        };
        out.push((k.to_owned(), v));
    }
    Ok(out)
}

/// Reads a pid from `path` (as `echo $! > path` writes it); `None` when the file is missing,
/// does not hold a number, or names no live process.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Makes `cmd`'s process start pinned to `cpu` (all its threads inherit the mask).
pub fn pin_command(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec; it only calls the async-signal-safe
    // sched_setaffinity on a stack value.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running child bot; killed on drop.
#[derive(Debug)]
pub struct BotProcess {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl BotProcess {
    /// Writes the config and starts `<exe> run --config <file>`, pinned to `bot.cpu`.
    ///
    /// # Errors
    /// The config cannot be written or the process cannot start.
    pub fn spawn(
        bot: &LocalBot,
        app: &RegisteredApp,
        ep: &BotEndpoints,
        operator_token: &str,
    ) -> Result<Self, String> {
        let recordings = bot.work_dir.join("recordings");
        let transcripts = bot.work_dir.join("transcripts");
        std::fs::create_dir_all(&recordings).map_err(|e| format!("create recordings: {e}"))?;
        let cfg_path = bot.work_dir.join("mediabot.toml");
        let text = config_toml(bot, app, ep, &recordings, &transcripts);
        std::fs::File::create(&cfg_path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("write {}: {e}", cfg_path.display()))?;
        let log = bot.work_dir.join("bot.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("bot log: {e}"))?;
        let mut cmd = Command::new(&bot.exe);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .env(
                "MEDIABOT_GRAPH_CLIENT_SECRET",
                app.client_secret.clone().unwrap_or_default(),
            )
            .env("MEDIABOT_OPERATOR_TOKEN", operator_token)
            .env(
                "MEDIABOT_LOG",
                std::env::var("LOADGEN_BOT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("MEDIABOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(cpu) = bot.cpu {
            pin_command(&mut cmd, cpu);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bot.exe.display()))?;
        Ok(Self { child, log })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` when the bot has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The last lines of the bot's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback TCP port and a free UDP port for a bot the generator (or a test) starts.
///
/// The ports are released before the bot binds them, so they come from below the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`): in that gap no `bind(0)` or `connect`
/// of another process (a parallel test, the generator's own HTTP clients) is handed one of
/// them. A random start spreads concurrent callers apart, and each pick is bound once (TCP
/// and UDP) to check it is free. Falls back to ports the kernel picks when the gap is too
/// small or all tries are taken.
///
/// # Errors
/// Binding failed.
pub fn free_ports() -> std::io::Result<(u16, u16)> {
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if let Some(ports) = ports_below(ephemeral_lo) {
        return Ok(ports);
    }
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok((tcp.local_addr()?.port(), udp.local_addr()?.port()))
}

/// Lowest port [`free_ports`] picks: above the registered services users run on loopback.
const PICK_FLOOR: u16 = 10_000;

/// A TCP and a UDP port in `PICK_FLOOR..ephemeral_lo` that bind now; `None` when the range
/// is under 1,000 ports or 64 random tries found nothing free.
fn ports_below(ephemeral_lo: u16) -> Option<(u16, u16)> {
    use rand::Rng;
    let span = ephemeral_lo
        .checked_sub(PICK_FLOOR)
        .filter(|s| *s >= 1_000)?;
    let mut rng = rand::rng();
    let mut pick = |bind: &dyn Fn(u16) -> bool| {
        (0..64)
            .map(|_| PICK_FLOOR + rng.random_range(0..span))
            .find(|p| bind(*p))
    };
    let tcp = pick(&|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())?;
    let udp = pick(&|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())?;
    Some((tcp, udp))
}

/// Finds the `mediabot` executable: `explicit`, else `MEDIABOT_BIN`, else next to the current
/// executable (or one folder up, for test binaries in `target/<profile>/deps`).
///
/// # Errors
/// None of those exists; the message says how to build it.
pub fn locate_bot(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("bot executable {} does not exist", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("MEDIABOT_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("MEDIABOT_BIN={} does not exist", p.display()))
        };
    }
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    if me.file_stem().is_some_and(|s| s == "mediabot") {
        return Ok(me);
    }
    let mut dir = me.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let cand = d.join("mediabot");
        if cand.is_file() {
            return Ok(cand);
        }
        dir = d.parent();
    }
    Err(format!(
        "cannot find the `mediabot` executable near {} — build it (`cargo build -p mediabot`), \
         or pass --bot-exe / set MEDIABOT_BIN",
        me.display()
    ))
}

/// Waits until `GET {base}/readyz` answers 200.
///
/// # Errors
/// Not ready within `timeout`, or `check` reports the process died.
pub async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if let Some(why) = check() {
            return Err(format!("the bot exited: {why}"));
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "the bot at {base} was not ready within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range_and_bind() {
        let (tcp, udp) = ports_below(20_000).unwrap();
        assert!((PICK_FLOOR..20_000).contains(&tcp), "{tcp}");
        assert!((PICK_FLOOR..20_000).contains(&udp), "{udp}");
        // Free now: the caller's bot can bind them.
        drop(std::net::TcpListener::bind(("127.0.0.1", tcp)).unwrap());
        drop(std::net::UdpSocket::bind(("127.0.0.1", udp)).unwrap());
        // A gap under 1,000 ports is not used; free_ports then lets the kernel pick.
        assert_eq!(ports_below(10_500), None);
        assert_eq!(ports_below(PICK_FLOOR - 1), None);
        let (a, b) = free_ports().unwrap();
        assert!(a > 0 && b > 0);
    }

    fn app() -> RegisteredApp {
        RegisteredApp {
            client_id: "cid".into(),
            tenant_id: "tid".into(),
            display_name: "d".into(),
            client_secret: Some("s".into()),
            public_key_pem: None,
            key_thumbprint: None,
            private_key_pem: None,
            roles: Vec::new(),
            calling_webhook: None,
            service_principal_id: "sp".into(),
        }
    }

    fn local_bot() -> LocalBot {
        LocalBot {
            exe: "mediabot".into(),
            http: "127.0.0.1:9000".parse().unwrap(),
            public_url: None,
            udp_port: 40000,
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            work_dir: "/tmp/x".into(),
            cpu: None,
            max_streams_per_call: 10,
            extra_toml: None,
            realtime_priority: Some(10),
            wake_grid_us: None,
            recording: BotRecording::Wav,
            fsync_interval_secs: Some(0),
            ring_frames: Some(200),
            idle_silence: Some(false),
            sink_scheduling: Some("idle".into()),
            sink_threads: Some(2),
            sink_nice: Some(15),
            direct_media: Some(false),
        }
    }

    fn endpoints() -> BotEndpoints {
        BotEndpoints {
            graph_url: "http://127.0.0.1:1/v1.0".into(),
            authority: "http://127.0.0.1:1".into(),
            openid_metadata_url: "http://127.0.0.1:1/v1/.well-known/OpenIdConfiguration".into(),
        }
    }

    #[test]
    fn generated_config_quotes_values_and_names_every_endpoint() {
        let bot = local_bot();
        let t = config_toml(
            &bot,
            &app(),
            &endpoints(),
            Path::new("/r \"q\""),
            Path::new("/t"),
        );
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["media"]["udp_port"].as_integer(), Some(40000));
        assert_eq!(v["media"]["bind_ip"].as_str(), Some("127.0.0.1"));
        assert_eq!(v["graph"]["client_id"].as_str(), Some("cid"));
        assert_eq!(v["recording"]["dir"].as_str(), Some("/r \"q\""));
        assert_eq!(v["recording"]["fsync_interval_secs"].as_integer(), Some(0));
        assert_eq!(v["recording"]["ring_frames"].as_integer(), Some(200));
        assert_eq!(v["media"]["idle_silence"].as_bool(), Some(false));
        assert_eq!(v["media"]["sink_scheduling"].as_str(), Some("idle"));
        assert_eq!(v["media"]["sink_threads"].as_integer(), Some(2));
        assert_eq!(v["media"]["sink_nice"].as_integer(), Some(15));
        assert_eq!(v["media"]["direct_media"].as_bool(), Some(false));
        assert_eq!(
            v["server"]["public_url"].as_str(),
            Some("http://127.0.0.1:9000")
        );
        assert!(!t.contains("\"s\""), "secret must not be in the file");
        assert_eq!(v["media"]["realtime_priority"].as_integer(), Some(10));
        assert!(
            v["media"].get("wake_grid_us").is_none(),
            "unset keys stay out"
        );
    }

    #[test]
    fn each_recording_mode_writes_its_recording_keys_and_keeps_the_feed() {
        // (mode, enabled, ogg, participant_wav, decode rate); None: key absent (engine default).
        let cases = [
            (BotRecording::Wav, true, None, None, 48_000),
            (BotRecording::WavOgg, true, Some(true), None, 48_000),
            (BotRecording::Ogg, true, Some(true), Some(false), 16_000),
            (BotRecording::Off, false, None, None, 16_000),
        ];
        for (mode, enabled, ogg, wav, rate) in cases {
            let mut bot = local_bot();
            bot.recording = mode;
            bot.fsync_interval_secs = None;
            bot.ring_frames = None;
            let t = config_toml(&bot, &app(), &endpoints(), Path::new("/r"), Path::new("/t"));
            let v: toml::Value = toml::from_str(&t).unwrap();
            let rec = v["recording"].as_table().unwrap();
            assert_eq!(rec["enabled"].as_bool(), Some(enabled), "{mode:?}: {t}");
            assert_eq!(
                rec.get("ogg").and_then(toml::Value::as_bool),
                ogg,
                "{mode:?}"
            );
            assert_eq!(
                rec.get("participant_wav").and_then(toml::Value::as_bool),
                wav,
                "{mode:?}"
            );
            assert_eq!(rec["dir"].as_str(), Some("/r"), "{mode:?}");
            assert!(
                rec.get("fsync_interval_secs").is_none(),
                "unset: the default"
            );
            assert_eq!(
                rec.len(),
                1 + [Some(enabled), ogg, wav].iter().flatten().count()
            );
            assert_eq!(
                v["transcription"]["file_dir"].as_str(),
                Some("/t"),
                "{mode:?}"
            );
            assert_eq!(mode.decode_rate_hz(), rate, "{mode:?}");
        }
    }

    #[test]
    fn recording_mode_flag_values_parse() {
        use clap::ValueEnum as _;
        for (s, m) in [
            ("wav", BotRecording::Wav),
            ("wav+ogg", BotRecording::WavOgg),
            ("ogg", BotRecording::Ogg),
            ("off", BotRecording::Off),
        ] {
            assert_eq!(BotRecording::from_str(s, false).unwrap(), m);
            assert_eq!(m.name(), s);
            assert_eq!(serde_json::to_value(m).unwrap(), s);
        }
        assert!(BotRecording::from_str("mp3", false).is_err());
    }

    #[test]
    fn remote_addresses_follow_the_bot_url() {
        let (a, ip) = remote_addrs("http://127.0.0.1:18443").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:18443");
        assert_eq!(ip.to_string(), "127.0.0.1");
        let (a, _) = remote_addrs("http://localhost:9/").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:9");
        let (a, ip) = remote_addrs("https://bot.example.test").unwrap();
        assert_eq!(
            (a.to_string(), ip.to_string()),
            ("0.0.0.0:443".into(), "0.0.0.0".into())
        );
        assert_eq!(
            remote_addrs("http://[::1]:8000").unwrap().0.to_string(),
            "[::1]:8000"
        );
        assert!(remote_addrs("not a url").is_err());
    }

    #[test]
    fn remote_files_round_trip_and_keep_the_secrets_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("loadgen-remote-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cfg, env) = write_remote_files(&dir, "x = 1\n", "emu~ab'c d", "tok$en").unwrap();
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "x = 1\n");
        let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let vars = read_env_file(&env).unwrap();
        assert_eq!(
            vars,
            vec![
                ("MEDIABOT_GRAPH_CLIENT_SECRET".into(), "emu~ab'c d".into()),
                ("MEDIABOT_OPERATOR_TOKEN".into(), "tok$en".into()),
            ]
        );
        // The file is valid shell: sh reads the same values back.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}; printf '%s|%s' \"$MEDIABOT_GRAPH_CLIENT_SECRET\" \"$MEDIABOT_OPERATOR_TOKEN\"",
                env.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "emu~ab'c d|tok$en");
        remove_remote_files(&dir);
        assert!(!cfg.exists() && !env.exists());
        // A pid file names a live process or nothing.
        let pid = dir.join("bot.pid");
        std::fs::write(&pid, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(read_pid_file(&pid), Some(std::process::id()));
        std::fs::write(&pid, "nope").unwrap();
        assert_eq!(read_pid_file(&pid), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
