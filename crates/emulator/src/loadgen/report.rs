//! The load test's result: `result.json` (every number), `report.md` (tables), SVG plots and
//! `report.html` (both together).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::LoadtestArgs;
use super::counters::PerPacket;
use super::floor::{Floor, WakeCost};
use super::peer::PeerResult;
use super::procfs::CpuUse;
use super::prom::Histogram;
use super::webhook::Blast;

/// Version of the JSON layout.
pub const SCHEMA: &str = "mediabot-loadtest/1";

/// The bot's process-wide count of frames dropped at full sink rings (per speaker and mixed).
pub const RING_DROPS: &str = "mediabot_ring_frames_dropped_total";
/// The bot's count of Opus packets its Ogg/Opus recorder's rings had no room for.
pub const OGG_DROPS: &str = "mediabot_ogg_packets_dropped_total";

/// Processing p99 at or above this breaks a step (seconds).
pub const PROCESSING_P99_LIMIT: f64 = 0.002;
/// Bot CPU at or above this (cores) counts as saturated.
pub const CPU_SATURATED: f64 = 0.95;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadtestReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// When (RFC 3339).
    pub generated_at: String,
    /// The machine and the software.
    pub machine: Machine,
    /// How the run was set up.
    pub settings: Settings,
    /// The replayed packets.
    pub packets: PacketInfo,
    /// Bot RSS with no call, KiB.
    pub idle_rss_kib: Option<u64>,
    /// The webhook phase.
    pub webhook: Option<WebhookResult>,
    /// The sweep, in order.
    pub steps: Vec<StepResult>,
    /// The first broken step.
    pub knee: Option<Knee>,
    /// Bare libopus decode of the same packets at the bot's decode rate
    /// ([`Settings::bot_decode_rate_hz`], [`Floor::rate_hz`]): what the target compares to.
    pub floor: Option<Floor>,
    /// The same at 48 kHz, for reference, when the bot decodes at another rate (else null:
    /// `floor` is the 48 kHz one).
    pub floor_48k: Option<Floor>,
    /// CPU per timer wake-up on the bot's core, threads on staggered phases (see
    /// [`WakeCost`]): the price the report's wake-up estimate uses.
    pub wake_cost: Option<WakeCost>,
    /// The same with every thread on one phase.
    pub wake_cost_common: Option<WakeCost>,
    /// The independent receiver (aiortc), per stream count.
    pub peers: Vec<PeerResult>,
    /// Each target of issue 7 against what was measured.
    pub targets: Vec<TargetCheck>,
    /// Warnings and failures of parts of the run.
    pub notes: Vec<String>,
}

impl LoadtestReport {
    /// One line per target (name, met / MISSED / n/a, what was measured): what a command
    /// prints at the end of a run.
    pub fn target_lines(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            out.push_str(&format!("{:<32} {verdict:<10} {}\n", t.name, t.measured));
        }
        out
    }
}

/// Facts about the machine and build.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`, when rustc is on the PATH.
    pub rustc: Option<String>,
    /// `git rev-parse HEAD` of the working directory, when it is a checkout.
    pub git_commit: Option<String>,
    /// `mediabot version` of the bot under test.
    pub bot_version: Option<String>,
    /// Total memory, KiB.
    pub mem_total_kib: Option<u64>,
}

impl Machine {
    /// Reads `/proc` and asks rustc and git.
    pub fn detect(bot_version: Option<String>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpu_model,
            cpus: super::procfs::cpus_online(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            rustc: super::command_line("rustc", &["-V"]),
            git_commit: super::command_line("git", &["rev-parse", "HEAD"]),
            bot_version,
            mem_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Steps (streams).
    pub streams: Vec<usize>,
    /// Runs of each stream count (`--repeat`).
    pub repeat: u16,
    /// Speakers per call.
    pub speakers_per_call: usize,
    /// Ramp seconds.
    pub ramp_secs: f64,
    /// Steady seconds.
    pub steady_secs: f64,
    /// Bot CPU (None: not pinned).
    pub bot_cpu: Option<usize>,
    /// Generator CPU (None: not pinned).
    pub generator_cpu: Option<usize>,
    /// Local (spawned) bot or remote.
    pub local_bot: bool,
    /// Webhook connections.
    pub webhook_connections: usize,
    /// Webhook seconds.
    pub webhook_secs: f64,
    /// What the bot does with each stream.
    pub bot_work: String,
    /// The emulated Graph's establishing delay, ms (part of call setup).
    pub graph_establish_ms: u64,
    /// The spawned bot's `media.realtime_priority` (None: normal priority).
    pub bot_realtime_priority: Option<u8>,
    /// The spawned bot's `media.wake_grid_us` (None: the bot's default,
    /// [`super::BOT_DEFAULT_WAKE_GRID_US`]).
    pub bot_wake_grid_us: Option<u64>,
    /// What the bot records (`--bot-recording`: wav, wav+ogg, ogg, off).
    pub bot_recording: super::BotRecording,
    /// The spawned bot's `recording.fsync_interval_secs` (None: the bot's default, 5).
    pub bot_fsync_secs: Option<u64>,
    /// The spawned bot's `media.idle_silence` (None: the bot's default, on).
    pub bot_idle_silence: Option<bool>,
    /// The spawned bot's `media.sink_scheduling` (None: the bot's default, `batch`).
    #[serde(default)]
    pub bot_sink_scheduling: Option<String>,
    /// The spawned bot's `media.sink_threads` (None: the bot's default, two shared workers; 0: a thread per call).
    #[serde(default)]
    pub bot_sink_threads: Option<usize>,
    /// The spawned bot's `media.sink_nice` (None: the bot's default, 10).
    pub bot_sink_nice: Option<i32>,
    /// The spawned bot's `recording.ring_frames` (None: the bot's default, 500).
    #[serde(default)]
    pub bot_ring_frames: Option<usize>,
    /// The spawned bot's `media.direct_media` (None: the bot's default, on).
    #[serde(default)]
    pub bot_direct_media: Option<bool>,
    /// The rate the bot decodes each stream at in that mode, Hz.
    pub bot_decode_rate_hz: u32,
}

impl Settings {
    /// From the arguments and the pinning that took effect.
    pub fn from_args(
        a: &LoadtestArgs,
        bot_cpu: Option<usize>,
        generator_cpu: Option<usize>,
        local_bot: bool,
    ) -> Self {
        Self {
            streams: a.streams.clone(),
            repeat: a.repeat,
            speakers_per_call: a.speakers,
            ramp_secs: a.ramp_secs,
            steady_secs: a.steady_secs,
            bot_cpu,
            generator_cpu,
            local_bot,
            webhook_connections: a.webhook_connections,
            webhook_secs: a.webhook_secs,
            graph_establish_ms: a.graph_establish_ms,
            bot_realtime_priority: a.bot_realtime_priority,
            bot_wake_grid_us: a.bot_wake_grid_us,
            bot_recording: a.bot_recording,
            bot_fsync_secs: a.bot_fsync_secs,
            bot_idle_silence: a.bot_idle_silence,
            bot_sink_scheduling: a.bot_sink_scheduling.clone(),
            bot_sink_threads: a.bot_sink_threads,
            bot_sink_nice: a.bot_sink_nice,
            bot_ring_frames: a.bot_ring_frames,
            bot_direct_media: a.bot_direct_media,
            bot_decode_rate_hz: a.bot_recording.decode_rate_hz(),
            bot_work: format!(
                "WHIP/DTLS-SRTP in, jitter buffer, Opus decode at {} kHz, {}, 16 kHz per-speaker transcription feed to files",
                a.bot_recording.decode_rate_hz() / 1000,
                a.bot_recording.describe()
            ),
        }
    }
}

/// The replayed packets.
#[derive(Debug, Clone, Serialize)]
pub struct PacketInfo {
    /// Packets in the loop.
    pub count: usize,
    /// Mean Opus payload, bytes.
    pub mean_bytes: f64,
    /// Encoder bitrate, bit/s.
    pub bitrate: i32,
    /// Seconds of speech in the loop.
    pub seconds: u64,
}

/// Percentiles from a histogram (seconds), with the bucket each fell in.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Observations.
    pub count: f64,
    /// Mean (exact, from `_sum`/`_count`).
    pub mean: Option<f64>,
    /// p50 estimate.
    pub p50: Option<f64>,
    /// p90 estimate.
    pub p90: Option<f64>,
    /// p99 estimate.
    pub p99: Option<f64>,
    /// p99.9 estimate.
    pub p999: Option<f64>,
    /// The bucket p99 fell in (low, high); high is null above the last finite bound.
    pub p99_bucket: Option<(f64, f64)>,
    /// The histogram's finite bucket bounds.
    pub bounds: Vec<f64>,
}

impl LatencySummary {
    /// Summarizes a (windowed) histogram.
    pub fn from_hist(h: &Histogram) -> Self {
        let q = |x: f64| h.quantile(x).map(|e| e.value);
        Self {
            count: h.count,
            mean: h.mean(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p99_bucket: h.quantile(0.99).map(|e| (e.bucket_low, e.bucket_high)),
            bounds: h
                .buckets
                .iter()
                .map(|b| b.0)
                .filter(|b| b.is_finite())
                .collect(),
        }
    }
}

/// Call setup of one step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallSetup {
    /// Calls with a first frame.
    pub calls: usize,
    /// Join (operator API) to first audio frame in the bot, as the bot measured it: p50, ms.
    pub first_frame_p50_ms: Option<f64>,
    /// p90, ms.
    pub first_frame_p90_ms: Option<f64>,
    /// Largest, ms.
    pub first_frame_max_ms: Option<f64>,
    /// The join request's round trip seen by the generator: p50, ms.
    pub join_request_p50_ms: Option<f64>,
    /// The bot's `mediabot_call_setup_seconds` over the step.
    pub histogram: Option<LatencySummary>,
    /// Where the setup time goes, phase by phase (generator time stamps; the last phase is
    /// the bot's share after the first packet), p50 and p90 over the step's calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<SetupPhase>,
}

/// One phase of call setup.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupPhase {
    /// What happens in it.
    pub phase: String,
    /// Calls measured.
    pub calls: usize,
    /// p50, ms.
    pub p50_ms: f64,
    /// p90, ms.
    pub p90_ms: f64,
}

impl SetupPhase {
    /// From per-call durations (ms, any order); `None` when there are none.
    pub fn from_values(phase: &str, mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Self {
            phase: phase.to_owned(),
            calls: v.len(),
            p50_ms: pick(0.5),
            p90_ms: pick(0.9),
        })
    }
}

impl CallSetup {
    /// From sorted per-call figures.
    pub fn from_sorted(setup_ms: &[f64], join_ms: &[f64], hist: Option<LatencySummary>) -> Self {
        let pick = |v: &[f64], q: f64| {
            if v.is_empty() {
                None
            } else {
                let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
                Some(v[i])
            }
        };
        Self {
            calls: setup_ms.len(),
            first_frame_p50_ms: pick(setup_ms, 0.5),
            first_frame_p90_ms: pick(setup_ms, 0.9),
            first_frame_max_ms: setup_ms.last().copied(),
            join_request_p50_ms: pick(join_ms, 0.5),
            histogram: hist,
            phases: Vec::new(),
        }
    }
}

/// Per-stream counters summed over a step's calls (from the bot's operator API at call end).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaCounters {
    /// Calls whose final counters were read.
    pub calls_reported: usize,
    /// Streams reported.
    pub streams: usize,
    /// Packets the generator sent on those calls.
    pub generator_sent: u64,
    /// Packets the bot received.
    pub received: u64,
    /// Packets the bot counted lost.
    pub lost: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets recovered by FEC.
    pub fec_recovered: u64,
    /// Packets too late.
    pub late: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// Frames dropped at a full sink ring.
    pub dropped_at_ring: u64,
    /// Frames produced.
    pub frames_out: u64,
    /// Fewest frames any stream produced.
    pub min_frames_per_stream: Option<f64>,
}

/// How the runs of one stream count went (`--repeat`): it holds when more than half of its
/// runs held, so one run on a quiet or a noisy minute does not decide alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCountVerdict {
    /// Streams asked for.
    pub streams: usize,
    /// Runs of it in the sweep.
    pub runs: usize,
    /// Of those, runs that held.
    pub held_runs: usize,
    /// Why the first run that broke broke.
    first_reasons: Vec<String>,
}

impl StreamCountVerdict {
    /// The verdict of the runs of `streams` among `steps`.
    pub fn of(steps: &[StepResult], streams: usize) -> Self {
        let runs: Vec<&StepResult> = steps
            .iter()
            .filter(|s| s.streams_target == streams)
            .collect();
        Self {
            streams,
            runs: runs.len(),
            held_runs: runs.iter().filter(|s| s.broken.is_empty()).count(),
            first_reasons: runs
                .iter()
                .find(|s| !s.broken.is_empty())
                .map(|s| s.broken.clone())
                .unwrap_or_default(),
        }
    }

    /// Every stream count of `steps`, in the order first run.
    pub fn all(steps: &[StepResult]) -> Vec<Self> {
        let mut seen = Vec::new();
        for s in steps {
            if !seen.contains(&s.streams_target) {
                seen.push(s.streams_target);
            }
        }
        seen.into_iter().map(|n| Self::of(steps, n)).collect()
    }

    /// More than half of the runs held.
    pub fn held(&self) -> bool {
        self.held_runs * 2 > self.runs
    }

    /// Why it did not hold: the broken run's reasons, after how many runs broke when there
    /// were several.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if self.runs > 1 {
            r.push(format!(
                "broke in {} of {} runs",
                self.runs - self.held_runs,
                self.runs
            ));
        }
        r.extend(self.first_reasons.iter().cloned());
        r
    }

    /// " in 2 of 3 runs" when there were several runs, else nothing.
    fn runs_note(&self) -> String {
        if self.runs > 1 {
            format!(" in {} of {} runs", self.held_runs, self.runs)
        } else {
            String::new()
        }
    }
}

/// The floor around one step (see [`StepResult::floor_bracket`]).
#[derive(Debug, Clone, Serialize)]
pub struct FloorBracket {
    /// Decode rate, Hz.
    pub rate_hz: u32,
    /// Floor µs per packet measured right before the step.
    pub before_us_per_packet: f64,
    /// Floor µs per packet measured right after the step.
    pub after_us_per_packet: f64,
    /// Mean of the two, as a fraction of one core per 50-packet/s stream.
    pub cores_per_stream: f64,
    /// Mean of the two floors' hardware counts per packet, when both were counted.
    pub counters: Option<PerPacket>,
}

impl FloorBracket {
    /// The bracket of two floor measurements at the same rate.
    pub fn new(before: &Floor, after: &Floor) -> Self {
        Self {
            rate_hz: after.rate_hz,
            before_us_per_packet: before.us_per_packet,
            after_us_per_packet: after.us_per_packet,
            cores_per_stream: (before.cores_per_stream + after.cores_per_stream) / 2.0,
            counters: before.counters.zip(after.counters).map(|(b, a)| PerPacket {
                instructions: (b.instructions + a.instructions) / 2.0,
                cycles: (b.cycles + a.cycles) / 2.0,
            }),
        }
    }

    /// A warning when the floor after the step differs from the one before by more than
    /// [`FLOOR_DRIFT_LIMIT`]: the same decode of the same packets took a different time, so the
    /// host's speed moved during the step (another tenant, frequency, migration) and the step's
    /// CPU figures and verdict belong to that minute more than to the bot.
    pub fn drift_warning(&self) -> Option<String> {
        let (b, a) = (self.before_us_per_packet, self.after_us_per_packet);
        let lo = b.min(a);
        if lo.is_nan() || lo <= 0.0 || b.max(a) / lo <= 1.0 + FLOOR_DRIFT_LIMIT {
            return None;
        }
        Some(format!(
            "the host's speed moved during the step: bare decode took {b:.1} µs per packet before it and {a:.1} after ({:+.0} %)",
            (a / b - 1.0) * 100.0
        ))
    }
}

/// Relative change of the floor across a step above which the step carries a warning. 10 %: of
/// the 414 bracketed steps in `docs/perf/` (2026-11-23/24), half drifted by less than 1.6 % and
/// one in eight by more than 10 %.
pub const FLOOR_DRIFT_LIMIT: f64 = 0.10;

/// The bot's hardware counts over a window right after the steady one (same load; counting is
/// kept out of the steady window because it adds to every context switch).
#[derive(Debug, Clone, Serialize)]
pub struct BotCounters {
    /// Packets the generator sent in the window (the divisor).
    pub packets: u64,
    /// Length of the window, s (`--counter-secs`, right after the steady window).
    pub secs: f64,
    /// Threads counted (those alive when the window started).
    pub threads: usize,
    /// Whether kernel work is in the counts (else user space only, and so is the floor's).
    pub kernel_included: bool,
    /// The whole bot, per packet.
    pub total: PerPacket,
    /// Per thread group (see `procfs::thread_group`), per packet.
    pub by_thread: BTreeMap<String, PerPacket>,
}

impl BotCounters {
    /// Bot ÷ floor, instructions and cycles.
    pub fn ratio(&self, floor: &PerPacket) -> Option<PerPacket> {
        (floor.instructions > 0.0 && floor.cycles > 0.0).then(|| PerPacket {
            instructions: self.total.instructions / floor.instructions,
            cycles: self.total.cycles / floor.cycles,
        })
    }
}

/// One step of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Streams asked for.
    pub streams_target: usize,
    /// Which run of this stream count (1-based; `--repeat`).
    pub run: usize,
    /// Calls.
    pub calls: usize,
    /// Speakers per call.
    pub speakers_per_call: usize,
    /// Calls the bot joined.
    pub calls_joined: usize,
    /// Streams whose WHIP session connected.
    pub streams_connected: usize,
    /// Join failures.
    pub join_errors: Vec<String>,
    /// Media failures so far (all steps).
    pub media_failures: Vec<String>,
    /// Length of the steady window, s.
    pub steady_secs: f64,
    /// Bot CPU in the steady window.
    pub bot_cpu: Option<CpuUse>,
    /// Bot cores per connected stream.
    pub bot_cores_per_stream: Option<f64>,
    /// The floor measured just before and just after this step (the bot idle, same core, same
    /// stream count): the machine's speed drifts by tens of % over minutes on a shared VM, so
    /// the step is compared with the floor of its own minute, not the sweep's end.
    pub floor_bracket: Option<FloorBracket>,
    /// The same decode paced as the bot receives this step's packets (on its wake-up grid,
    /// idle in between; [`super::floor::measure_paced`]), measured right after the step: how
    /// much of the gap to the floor is the platform's cost of idling and waking. For
    /// reference; the targets use [`StepResult::floor_bracket`].
    pub paced_floor: Option<Floor>,
    /// The bot's hardware counts per packet sent in the steady window (see
    /// [`super::counters`]); `None` where the machine has no counters or no bot pid is known.
    pub bot_counters: Option<BotCounters>,
    /// Bot RSS at the end of the steady window, KiB.
    pub rss_kib: Option<u64>,
    /// (RSS steady − RSS idle) / streams, KiB.
    pub rss_per_stream_kib: Option<f64>,
    /// Generator CPU (cores) in the steady window.
    pub generator_cores: f64,
    /// Generator CPU per packet sent, µs.
    pub generator_us_per_packet: Option<f64>,
    /// Packets per second sent in the steady window.
    pub generator_packets_per_sec: f64,
    /// Packets the generator could not hand to a session (loss it caused).
    pub generator_refused: u64,
    /// `sendmmsg` calls the generator made over the step (packets sent / this = batch size).
    pub generator_send_calls: u64,
    /// Packets sent over 10 ms late (the generator fell behind).
    pub generator_late: u64,
    /// Largest lateness, ms.
    pub generator_max_late_ms: f64,
    /// The bot's per-stream counters.
    pub media: MediaCounters,
    /// The bot's Prometheus loss/drop counters over the step (name → increase).
    pub counters: BTreeMap<String, f64>,
    /// The same counters over the steady window alone: drops in `counters` but not here
    /// happened while calls joined or ended.
    pub steady_counters: BTreeMap<String, f64>,
    /// The bot's latency histograms over the steady window (per frame, `FRAME_HISTOGRAMS`, and
    /// the sink threads' rounds, `SINK_HISTOGRAMS`); null when the bot does not export one.
    pub latency: BTreeMap<String, Option<LatencySummary>>,
    /// Join to first frame.
    pub setup: CallSetup,
    /// Why this step counts as broken (empty: it held).
    pub broken: Vec<String>,
    /// Bytes the bot wrote (recordings and transcription feed) in this step, deleted after it.
    pub recorded_bytes: Option<u64>,
    /// Of those, under the recordings folder (WAV and/or Ogg, per `--bot-recording`).
    pub recording_bytes: Option<u64>,
    /// Of those, the transcription feed's files (16 kHz per speaker).
    pub feed_bytes: Option<u64>,
    /// Busy fraction of every CPU in the steady window (`/proc/stat`), by CPU number: the bot's
    /// CPU busy beyond the bot's own use is other processes taking its core.
    pub core_busy: BTreeMap<usize, f64>,
    /// Of that, interrupt handling (irq + softirq), by CPU: on the bot's CPU mostly the
    /// loopback receive path of the bot's own sends and disk completions.
    pub core_interrupts: BTreeMap<usize, f64>,
    /// Of that, steal (the hypervisor ran something else on this virtual CPU), by CPU.
    pub core_steal: BTreeMap<usize, f64>,
    /// Conditions that make this step's figures doubtful (e.g. other processes starving the
    /// generator), without breaking it.
    pub warnings: Vec<String>,
}

impl StepResult {
    /// Warnings about the measurement itself: other processes on the generator's or the bot's
    /// CPU (pinning keeps our two processes apart, not others off their CPUs).
    pub fn measurement_warnings(
        &self,
        bot_cpu: Option<usize>,
        gen_cpu: Option<usize>,
    ) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(busy) = gen_cpu.and_then(|c| self.core_busy.get(&c)) {
            let others = busy - self.generator_cores;
            if others > 0.25 {
                w.push(format!(
                    "other processes took {:.0}% of the generator's CPU (generator {:.0}%)",
                    others * 100.0,
                    self.generator_cores * 100.0
                ));
            }
        }
        if let (Some(busy), Some(cpu)) =
            (bot_cpu.and_then(|c| self.core_busy.get(&c)), &self.bot_cpu)
        {
            let others = busy - cpu.process_cores;
            if others > 0.1 {
                w.push(format!(
                    "other processes took {:.0}% of the bot's CPU (interrupt handling {:.0}%, host steal {:.0}%)",
                    others * 100.0,
                    core_percent(&self.core_interrupts, bot_cpu).unwrap_or(0.0),
                    core_percent(&self.core_steal, bot_cpu).unwrap_or(0.0),
                ));
            }
        }
        w
    }

    /// " (N in the steady window)" for a counter the step read there, else nothing.
    fn in_steady_window(&self, name: &str) -> String {
        self.steady_counters
            .get(name)
            .map(|v| format!(" ({v} in the steady window)"))
            .unwrap_or_default()
    }

    /// The knee rules: ring drops (frames, and the Ogg recorder's packets), processing p99
    /// ≥ 2 ms, loss the generator did not cause, CPU saturation, streams that did not connect.
    pub fn judge(&self) -> Vec<String> {
        let mut why = Vec::new();
        // The bot's process-wide counter includes the mixes' rings; a bot without it (older,
        // or remote) leaves the per-stream sum from its calls' final counters.
        let ring = self
            .counters
            .get(RING_DROPS)
            .map_or(self.media.dropped_at_ring, |v| {
                (*v as u64).max(self.media.dropped_at_ring)
            });
        if ring > 0 {
            why.push(format!(
                "{ring} frames dropped at sink rings{}",
                self.in_steady_window(RING_DROPS)
            ));
        }
        if let Some(ogg) = self.counters.get(OGG_DROPS).filter(|v| **v > 0.0) {
            why.push(format!(
                "{ogg} Opus packets dropped at the Ogg recorder's rings{}",
                self.in_steady_window(OGG_DROPS)
            ));
        }
        if let Some(Some(p)) = self.latency.get(super::FRAME_HISTOGRAMS[0])
            && let Some(p99) = p.p99
            && p99 >= PROCESSING_P99_LIMIT
        {
            why.push(format!(
                "frame processing p99 {:.2} ms ≥ 2 ms",
                p99 * 1000.0
            ));
        }
        let generator_clean = self.generator_refused == 0 && self.generator_late == 0;
        if self.media.lost > 0 && generator_clean {
            why.push(format!(
                "{} packets lost that the generator sent on time",
                self.media.lost
            ));
        } else if self.media.lost > 0 {
            why.push(format!(
                "{} packets lost while the generator itself fell behind ({} refused, {} late): generator-bound",
                self.media.lost, self.generator_refused, self.generator_late
            ));
        }
        if let Some(c) = &self.bot_cpu
            && c.process_cores >= CPU_SATURATED
        {
            why.push(format!(
                "bot CPU saturated ({:.0}% of a core)",
                c.process_cores * 100.0
            ));
        }
        if self.streams_connected < self.streams_target.min(self.calls * self.speakers_per_call) {
            why.push(format!(
                "only {} of {} streams connected",
                self.streams_connected, self.streams_target
            ));
        }
        if !self.join_errors.is_empty() {
            why.push(format!("{} joins failed", self.join_errors.len()));
        }
        why
    }
}

/// The knee of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Knee {
    /// Streams of the first broken step.
    pub streams: usize,
    /// Why it broke.
    pub reasons: Vec<String>,
}

/// The webhook phase.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookResult {
    /// The client's view.
    pub blast: Blast,
    /// Size of each notification body, bytes.
    pub body_bytes: usize,
    /// How the token was used.
    pub token_reuse: String,
    /// Bot CPU during the blast (cores).
    pub bot_cpu_cores: Option<f64>,
    /// Notifications per second per core of bot CPU.
    pub per_bot_core: Option<f64>,
    /// Generator CPU during the blast (cores).
    pub generator_cpu_cores: f64,
    /// The bot's own `mediabot_webhook_seconds` over the blast.
    pub server_latency: Option<LatencySummary>,
}

/// One target of issue 7.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What.
    pub name: String,
    /// The target, in words.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Met, missed, or not measured (null).
    pub met: Option<bool>,
}

impl LoadtestReport {
    /// Fills [`LoadtestReport::targets`].
    pub fn evaluate(&mut self) {
        // The peer's CPU per stream against mediabot's at the nearest held step.
        for p in &mut self.peers {
            p.ratio_to_bot = self
                .steps
                .iter()
                .filter(|s| s.bot_cores_per_stream.is_some())
                .min_by_key(|s| s.streams_connected.abs_diff(p.streams))
                .and_then(|s| s.bot_cores_per_stream)
                .filter(|b| *b > 0.0)
                .map(|b| p.cores_per_stream / b);
        }
        let mut t = Vec::new();
        // 500 streams on one core: the first stream count from 500 up, held when more than
        // half of its runs held (`--repeat`; one run by default), shown by its first held run.
        let verdicts = StreamCountVerdict::all(&self.steps);
        let v500 = verdicts.iter().find(|v| v.streams >= 500);
        let first_held = |v: &StreamCountVerdict| {
            self.steps
                .iter()
                .find(|s| s.streams_target == v.streams && s.broken.is_empty())
        };
        let at500 = v500.filter(|v| v.held()).and_then(first_held);
        let best = verdicts
            .iter()
            .filter(|v| v.held())
            .filter_map(first_held)
            .map(|s| s.streams_connected)
            .max();
        t.push(TargetCheck {
            name: "streams per core".into(),
            target: "≥ 500 inbound streams on one core, zero ring drops, processing p99 < 2 ms"
                .into(),
            measured: match (at500, &self.knee) {
                (Some(s), _) => format!(
                    "{} streams held{} (bot {:.0}% CPU); knee {}",
                    s.streams_connected,
                    v500.map_or(String::new(), StreamCountVerdict::runs_note),
                    s.bot_cpu.as_ref().map_or(0.0, |c| c.process_cores * 100.0),
                    self.knee.as_ref().map_or("not reached".into(), |k| format!(
                        "at {} streams",
                        k.streams
                    ))
                ),
                (_, Some(k)) => format!(
                    "broke at {} streams ({}); best held: {}",
                    k.streams,
                    k.reasons.join("; "),
                    best.map_or("none".into(), |b| b.to_string())
                ),
                _ => "no step of 500 streams run".into(),
            },
            // Held at 500: met. Broke at or below 500 (the knee is the first step that
            // broke), so 500 cannot hold on this machine: missed. Otherwise not measured.
            met: v500.map(StreamCountVerdict::held).or_else(|| {
                self.knee
                    .as_ref()
                    .filter(|k| k.streams <= 500)
                    .map(|_| false)
            }),
        });
        // CPU per stream vs the floor.
        // The 500-stream step when it held, else the largest that held, else the first.
        let ref_step = at500
            .or_else(|| {
                verdicts
                    .iter()
                    .rev()
                    .filter(|v| v.held())
                    .find_map(first_held)
            })
            .or_else(|| self.steps.first());
        let bot_per_stream = ref_step.and_then(|s| s.bot_cores_per_stream);
        let ratio_to = |f: Option<&Floor>| match (bot_per_stream, f) {
            (Some(b), Some(f)) if f.cores_per_stream > 0.0 => Some(b / f.cores_per_stream),
            _ => None,
        };
        // The step's own bracket when it was measured, else the sweep's floor.
        let bracket = ref_step.and_then(|s| s.floor_bracket.as_ref());
        let ratio = match (bracket, bot_per_stream) {
            (Some(fb), Some(b)) if fb.cores_per_stream > 0.0 => Some(b / fb.cores_per_stream),
            _ => ratio_to(self.floor.as_ref()),
        };
        let khz = |hz: u32| format!("{} kHz", f64::from(hz) / 1000.0);
        let rate = self
            .floor
            .as_ref()
            .map_or(self.settings.bot_decode_rate_hz, |f| f.rate_hz);
        t.push(TargetCheck {
            name: "CPU per stream vs bare decode".into(),
            target: format!(
                "≤ 1.5x the bare libopus decode floor at {} (the bot's decode rate)",
                khz(rate)
            ),
            measured: match (ratio, ref_step, &self.floor) {
                (Some(r), Some(s), Some(f)) => {
                    let reference = match (ratio_to(self.floor_48k.as_ref()), &self.floor_48k)
                    {
                        (Some(r48), Some(f48)) => format!(
                            "; for reference {r48:.2}x the {} floor ({:.3}%)",
                            khz(f48.rate_hz),
                            f48.cores_per_stream * 100.0
                        ),
                        _ => String::new(),
                    };
                    let (floor_cores, which) = match bracket {
                        Some(fb) => (
                            fb.cores_per_stream,
                            format!(
                                "{} floor measured around the step: {:.1} / {:.1} µs per packet before / after",
                                khz(fb.rate_hz),
                                fb.before_us_per_packet,
                                fb.after_us_per_packet
                            ),
                        ),
                        None => (f.cores_per_stream, format!("{} floor", khz(f.rate_hz))),
                    };
                    let counted = s
                        .bot_counters
                        .as_ref()
                        .zip(
                            bracket
                                .and_then(|b| b.counters)
                                .or(f.counters),
                        )
                        .and_then(|(c, fl)| c.ratio(&fl))
                        .map_or(String::new(), |r| {
                            format!(
                                "; by hardware counters {:.2}x in cycles, {:.2}x in instructions",
                                r.cycles, r.instructions
                            )
                        });
                    let paced = s
                        .paced_floor
                        .as_ref()
                        .filter(|p| p.cores_per_stream > 0.0)
                        .zip(s.bot_cores_per_stream)
                        .map_or(String::new(), |(p, b)| {
                            format!(
                                "; {:.2}x the paced floor ({:.1} µs per packet, for reference: \
                                 the same decode idling between wake-ups as the bot does)",
                                b / p.cores_per_stream,
                                p.us_per_packet
                            )
                        });
                    format!(
                        "{r:.2}x at {} streams ({:.3}% vs {:.3}% of a core per stream, {which}){reference}{paced}{counted}",
                        s.streams_connected,
                        s.bot_cores_per_stream.unwrap_or(0.0) * 100.0,
                        floor_cores * 100.0,
                    )
                }
                _ => "not measured".into(),
            },
            met: ratio.map(|r| r <= 1.5),
        });
        let mem = ref_step.and_then(|s| s.rss_per_stream_kib);
        t.push(TargetCheck {
            name: "memory per stream".into(),
            target: "≤ 512 KiB per stream in steady state".into(),
            measured: match (mem, ref_step) {
                (Some(m), Some(s)) => {
                    format!("{m:.0} KiB at {} streams", s.streams_connected)
                }
                _ => "not measured".into(),
            },
            met: mem.map(|m| m <= 512.0),
        });
        let wh = self.webhook.as_ref();
        let rate = wh.and_then(|w| w.per_bot_core);
        let p99 = wh.map(|w| w.blast.latency_ms[2]);
        t.push(TargetCheck {
            name: "webhook".into(),
            target: "≥ 5,000 verified notifications/s per core, p99 < 5 ms".into(),
            measured: match wh {
                Some(w) => format!(
                    "{:.0}/s sent ({:.0}/s per bot core at {:.0}% bot CPU), client p99 {:.2} ms",
                    w.blast.per_sec,
                    rate.unwrap_or(0.0),
                    w.bot_cpu_cores.unwrap_or(0.0) * 100.0,
                    w.blast.latency_ms[2]
                ),
                None => "not measured".into(),
            },
            met: match (rate, p99) {
                (Some(r), Some(p)) => Some(r >= 5000.0 && p < 5.0),
                _ => None,
            },
        });
        let setup = self
            .steps
            .iter()
            .find(|s| s.setup.first_frame_p50_ms.is_some())
            .and_then(|s| s.setup.first_frame_p50_ms.map(|p| (p, s.streams_target)));
        t.push(TargetCheck {
            name: "call setup".into(),
            target: "join → first frame in sink, p50 < 300 ms on loopback".into(),
            measured: setup.map_or("not measured".into(), |(p, n)| {
                format!("p50 {p:.0} ms (step of {n} streams)")
            }),
            met: setup.map(|(p, _)| p < 300.0),
        });
        self.targets = t;
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.2}", x * 1000.0))
}

/// The hardware-counter table: the bot's instructions and cycles per packet against the floor
/// of its step, per step, and the bot's split by thread group.
fn write_counters(o: &mut String, r: &LoadtestReport) {
    if r.steps.iter().all(|s| s.bot_counters.is_none()) {
        let _ = writeln!(
            o,
            "\nHardware counters: not available on this machine (or no bot pid), so no \
             instructions/cycles figures.\n"
        );
        return;
    }
    let _ = writeln!(
        o,
        "\n## Hardware counters (per packet, thousands; counted for `--counter-secs` right after the steady window)\n\n\
         Retired instructions do not move with the machine's load the way CPU time does; cycles \
         show cache contention but not time taken by the hypervisor. The floor is the bare \
         decode around the same step.\n"
    );
    let mut groups: Vec<&String> = r
        .steps
        .iter()
        .filter_map(|s| s.bot_counters.as_ref())
        .flat_map(|c| c.by_thread.keys())
        .collect();
    groups.sort();
    groups.dedup();
    let _ = write!(
        o,
        "| streams | bot instr | floor instr | × floor | bot cycles | floor cycles | × floor |"
    );
    for g in &groups {
        let _ = write!(o, " `{g}` instr / cycles |");
    }
    let _ = write!(
        o,
        " bot GHz | floor GHz | kernel counted |\n|---|---|---|---|---|---|---|---|---|"
    );
    for _ in &groups {
        let _ = write!(o, "---|");
    }
    let _ = writeln!(o, "---|");
    let k = |v: f64| format!("{:.1}", v / 1000.0);
    for st in &r.steps {
        let Some(c) = &st.bot_counters else { continue };
        let floor = st
            .floor_bracket
            .as_ref()
            .and_then(|b| b.counters)
            .or_else(|| r.floor.as_ref().and_then(|f| f.counters));
        let ratio = floor.as_ref().and_then(|f| c.ratio(f));
        let _ = write!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            st.streams_connected,
            k(c.total.instructions),
            floor.map_or("–".into(), |f| k(f.instructions)),
            opt(ratio.map(|r| r.instructions), 2),
            k(c.total.cycles),
            floor.map_or("–".into(), |f| k(f.cycles)),
            opt(ratio.map(|r| r.cycles), 2),
        );
        for g in &groups {
            let _ = write!(
                o,
                " {} |",
                c.by_thread.get(*g).map_or("–".into(), |p| format!(
                    "{} / {}",
                    k(p.instructions),
                    k(p.cycles)
                ))
            );
        }
        // Cycles per µs of CPU time: a thread whose CPU time runs far ahead of its cycles
        // lost that time outside its own instructions (a busy neighbour on the core, the
        // hypervisor), so its CPU figures are the machine's as much as the bot's.
        let bot_us = st
            .bot_cores_per_stream
            .map(|cores| cores / 50.0 * 1e6)
            .filter(|us| *us > 0.0);
        let floor_us = st
            .floor_bracket
            .as_ref()
            .map(|b| b.cores_per_stream)
            .or_else(|| r.floor.as_ref().map(|f| f.cores_per_stream))
            .map(|cores| cores / 50.0 * 1e6)
            .filter(|us| *us > 0.0);
        let _ = writeln!(
            o,
            " {} | {} | {} |",
            opt(bot_us.map(|us| c.total.cycles / us / 1000.0), 2),
            opt(floor_us.zip(floor).map(|(us, f)| f.cycles / us / 1000.0), 2),
            if c.kernel_included {
                "yes"
            } else {
                "no (user only)"
            }
        );
    }
}

/// The steps whose bot CPU reading has the per-thread-group figures `field` picks (empty when
/// the bot was remote or `/proc` did not have them).
fn steps_with(
    r: &LoadtestReport,
    field: impl Fn(&CpuUse) -> &BTreeMap<String, f64>,
) -> Vec<(&StepResult, &CpuUse)> {
    r.steps
        .iter()
        .filter_map(|s| Some((s, s.bot_cpu.as_ref()?)))
        .filter(|(_, c)| !field(c).is_empty())
        .collect()
}

/// The sum of a per-thread-group map over the groups not in `named` (never below zero).
fn others(by_group: &BTreeMap<String, f64>, named: &[&str]) -> f64 {
    by_group
        .iter()
        .filter(|(k, _)| !named.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum::<f64>()
        .max(0.0)
}

/// The run-queue table: how long each thread group waited for the core per second of the
/// steady window (`schedstat`). Tells a sink that fell behind for want of CPU from one that
/// was blocked on the disk (which waits asleep, not runnable).
fn write_runqueue(o: &mut String, r: &LoadtestReport) {
    let steps = steps_with(r, |c| &c.runqueue_wait);
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Waiting for the CPU (steady window)\n\nMilliseconds per second each thread group spent runnable but not running (`/proc/<tid>/schedstat`, threads alive through the window; a group's threads add up). Sink workers that wait long fall behind, and their rings fill.\n"
    );
    let _ = writeln!(
        o,
        "| streams | `mediabot-udp` | `sink-*` | `fsync` | other |\n|---|---|---|---|---|"
    );
    for (st, c) in steps {
        let g = |k: &str| c.runqueue_wait.get(k).copied().unwrap_or(0.0);
        let other = others(&c.runqueue_wait, &["mediabot-udp", "sink-*", "fsync"]);
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            st.streams_connected,
            g("mediabot-udp") * 1000.0,
            g("sink-*") * 1000.0,
            g("fsync") * 1000.0,
            other * 1000.0,
        );
    }
}

/// The wake-up table: how often the bot's threads woke per step, and what that costs at the
/// machine's measured price of a wake-up.
fn write_wakes(o: &mut String, r: &LoadtestReport) {
    let steps = steps_with(r, |c| &c.wakes_per_sec);
    if steps.is_empty() {
        return;
    }
    let cost = r.wake_cost.as_ref();
    let _ = writeln!(
        o,
        "\n## Wake-ups (steady window)\n\n{}\n",
        cost.map_or(
            "The machine's cost of a wake-up was not measured.".to_owned(),
            |w| format!(
                "A timer wake-up costs {:.1} µs of CPU on the bot's core ({} threads sleeping {} ms \
                 on staggered phases, bot idle{}); the estimate is wake-ups/s x that.",
                w.us_per_wake,
                w.threads,
                w.sleep_us / 1000,
                r.wake_cost_common.as_ref().map_or(String::new(), |c| format!(
                    "; {:.1} µs when they wake on one common phase",
                    c.us_per_wake
                ))
            )
        )
    );
    let _ = writeln!(
        o,
        "| streams | wake-ups/s | `mediabot-udp` | `sink-*` | `feed-file` | other | est. CPU % of a core | % of the bot's CPU |\n|---|---|---|---|---|---|---|---|"
    );
    for (st, c) in steps {
        let total = c.total_wakes_per_sec();
        let g = |k: &str| c.wakes_per_sec.get(k).copied().unwrap_or(0.0);
        let other = others(&c.wakes_per_sec, &["mediabot-udp", "sink-*", "feed-file"]);
        let est = cost.map(|w| total * w.us_per_wake / 1e6);
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            st.streams_connected,
            total,
            g("mediabot-udp"),
            g("sink-*"),
            g("feed-file"),
            other,
            opt(est.map(|e| e * 100.0), 1),
            opt(
                est.filter(|_| c.process_cores > 0.0)
                    .map(|e| e / c.process_cores * 100.0),
                0
            ),
        );
    }
}

/// The paced floor per step: the same decode as the floor, paced as the bot receives the
/// step's packets, so the gap between the two is the platform's price of idling between
/// wake-ups, and the bot's ratio to it is what its own code adds.
fn write_paced_floor(o: &mut String, r: &LoadtestReport) {
    let steps: Vec<(&StepResult, &Floor)> = r
        .steps
        .iter()
        .filter_map(|s| Some((s, s.paced_floor.as_ref()?)))
        .collect();
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Paced floor (for reference)\n\nThe same bare decode, but paced as the bot \
         receives the step's packets: 50 per stream per second on the bot's wake-up grid, idle \
         in between, measured right after the step on the bot's core. Idling costs: on a \
         virtual machine the core's caches and branch history may go to other guests meanwhile, \
         so each packet decodes slower than in the floor's back-to-back loop. The targets stay \
         judged against the floor; the last column is what the bot adds over the least a paced \
         decoder spends.\n\n| streams | floor µs/packet | paced floor µs/packet | paced / floor \
         | bot CPU/stream ÷ paced floor |\n|---|---|---|---|---|"
    );
    for (st, p) in steps {
        let floor = st
            .floor_bracket
            .as_ref()
            .map(|b| (b.before_us_per_packet + b.after_us_per_packet) / 2.0);
        let _ = writeln!(
            o,
            "| {} | {} | {:.2} | {} | {} |",
            st.streams_connected,
            opt(floor, 2),
            p.us_per_packet,
            opt(floor.filter(|f| *f > 0.0).map(|f| p.us_per_packet / f), 2),
            opt(
                st.bot_cores_per_stream
                    .filter(|_| p.cores_per_stream > 0.0)
                    .map(|b| b / p.cores_per_stream),
                2
            ),
        );
    }
}

/// `cpu`'s entry of a per-CPU fraction map, in %.
fn core_percent(m: &BTreeMap<usize, f64>, cpu: Option<usize>) -> Option<f64> {
    cpu.and_then(|c| m.get(&c)).map(|v| v * 100.0)
}

/// The bot's CPU busy beyond the bot's own use, % of the core, with its interrupt handling and
/// steal shares when `/proc/stat` had them: "7.1 (irq 5.2, steal 0.1)".
fn others_on_bot_cpu(st: &StepResult, bot_cpu: Option<usize>) -> String {
    let Some((busy, cpu)) = bot_cpu
        .and_then(|c| st.core_busy.get(&c))
        .zip(st.bot_cpu.as_ref())
    else {
        return "–".to_owned();
    };
    let others = ((busy - cpu.process_cores) * 100.0).max(0.0);
    match (
        core_percent(&st.core_interrupts, bot_cpu),
        core_percent(&st.core_steal, bot_cpu),
    ) {
        (Some(i), Some(t)) => format!("{others:.1} (irq {i:.1}, steal {t:.1})"),
        _ => format!("{others:.1}"),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// The Markdown report.
pub fn markdown(r: &LoadtestReport) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# mediabot load test\n");
    let _ = writeln!(
        o,
        "{} · {} × {} · kernel {} · {} · commit {} · bot {}\n",
        r.generated_at,
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.rustc.as_deref().unwrap_or("rustc ?"),
        m.git_commit
            .as_deref()
            .map_or("?", |c| &c[..c.len().min(10)]),
        m.bot_version.as_deref().unwrap_or("?")
    );
    let s = &r.settings;
    let sinks = format!(
        "{} at nice {}, {}, speakers' ring {} frames per call",
        s.bot_sink_scheduling
            .as_deref()
            .map_or("`batch` (the default)".into(), |v| format!("`{v}`")),
        s.bot_sink_nice
            .map_or("10 (the default)".into(), |n| n.to_string()),
        match s.bot_sink_threads {
            None => "2 shared (the default)".to_string(),
            Some(0) => "one per call".to_string(),
            Some(n) => format!("{n} shared"),
        },
        s.bot_ring_frames
            .map_or("500 (the default)".into(), |n| n.to_string())
    );
    let _ = writeln!(
        o,
        "Bot pinned to CPU {}, generator to CPU {}; {} speakers per call; ramp {} s, steady {} s per step. Bot media thread: {}, wake-up grid {}; sink threads {}; DTLS-SRTP {}. Bot recording: `{}` (decodes at {} kHz), files synced {}; while idle the bot sends {}. Bot work per stream: {}. Packets: {} × 20 ms Opus at {} bit/s (mean {:.0} B), looped.\n",
        s.bot_cpu.map_or("–".into(), |c| c.to_string()),
        s.generator_cpu.map_or("–".into(), |c| c.to_string()),
        s.speakers_per_call,
        s.ramp_secs,
        s.steady_secs,
        s.bot_realtime_priority
            .map_or("normal priority".into(), |p| format!("SCHED_FIFO {p}")),
        s.bot_wake_grid_us.map_or(
            format!("default ({} µs)", super::BOT_DEFAULT_WAKE_GRID_US),
            |us| format!("{us} µs")
        ),
        sinks,
        if s.bot_direct_media.unwrap_or(true) {
            "in the bot's own media plane"
        } else {
            "through the WebRTC stack (`media.direct_media = false`)"
        },
        s.bot_recording.name(),
        f64::from(s.bot_decode_rate_hz) / 1000.0,
        match s.bot_fsync_secs {
            None => "every 5 s (the default)".to_owned(),
            Some(0) => "only at close".to_owned(),
            Some(n) => format!("every {n} s"),
        },
        if s.bot_idle_silence.unwrap_or(true) {
            "a silence frame every 20 ms into each call (`media.idle_silence`, the default)"
        } else {
            "nothing (`media.idle_silence = false`)"
        },
        s.bot_work,
        r.packets.count,
        r.packets.bitrate,
        r.packets.mean_bytes
    );
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| target | goal | measured | |\n|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            t.name,
            t.target,
            t.measured,
            match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
        );
    }
    let _ = writeln!(o, "\n## Sweep\n");
    let _ = writeln!(
        o,
        "| streams | calls | bot CPU % | others on bot CPU % (irq, steal) | CPU/stream % | × floor ({}) | media thread % | RSS MiB | KiB/stream | gen CPU % | gen µs/pkt | received | lost | concealed | ring drops | frames/stream min | setup p50 ms | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        r.floor.as_ref().map_or_else(
            || format!("{} kHz", f64::from(s.bot_decode_rate_hz) / 1000.0),
            |f| format!("{} kHz", f64::from(f.rate_hz) / 1000.0)
        )
    );
    let floor = r.floor.as_ref().map(|f| f.cores_per_stream);
    let repeated = r.steps.iter().any(|s| s.run > 1);
    for st in &r.steps {
        let cpu = st.bot_cpu.as_ref();
        let media_thread = cpu.and_then(|c| c.threads.get("mediabot-udp").copied());
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if repeated {
                format!("{} (run {})", st.streams_connected, st.run)
            } else {
                st.streams_connected.to_string()
            },
            st.calls_joined,
            opt(cpu.map(|c| c.process_cores * 100.0), 1),
            others_on_bot_cpu(st, r.settings.bot_cpu),
            opt(st.bot_cores_per_stream.map(|c| c * 100.0), 3),
            opt(
                st.bot_cores_per_stream
                    .zip(
                        st.floor_bracket
                            .as_ref()
                            .map(|b| b.cores_per_stream)
                            .or(floor)
                    )
                    .map(|(b, f)| b / f.max(1e-12)),
                2
            ),
            opt(media_thread.map(|c| c * 100.0), 1),
            opt(st.rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(st.rss_per_stream_kib, 0),
            st.generator_cores * 100.0,
            opt(st.generator_us_per_packet, 1),
            st.media.received,
            st.media.lost,
            st.media.concealed,
            st.media.dropped_at_ring,
            opt(st.media.min_frames_per_stream, 0),
            opt(st.setup.first_frame_p50_ms, 0),
            {
                let verdict = if st.broken.is_empty() {
                    "held".to_owned()
                } else {
                    format!("**broke**: {}", st.broken.join("; "))
                };
                if st.warnings.is_empty() {
                    verdict
                } else {
                    format!("{verdict} (warning: {})", st.warnings.join("; "))
                }
            }
        );
    }
    write_counters(&mut o, r);
    write_wakes(&mut o, r);
    write_runqueue(&mut o, r);
    write_paced_floor(&mut o, r);
    let _ = writeln!(
        o,
        "\n## Latency histograms (steady window, from the bot's histograms; ms): per frame, and the sink threads' rounds (`sink_wake_delay`: how late a round started; `sink_round`: how long it took)\n"
    );
    let _ = writeln!(
        o,
        "| streams | histogram | count | mean | p50 | p90 | p99 | p99 bucket |\n|---|---|---|---|---|---|---|---|"
    );
    for st in &r.steps {
        for (name, v) in &st.latency {
            match v {
                Some(l) => {
                    let _ = writeln!(
                        o,
                        "| {} | `{}` | {:.0} | {} | {} | {} | {} | {} |",
                        st.streams_connected,
                        name,
                        l.count,
                        ms(l.mean),
                        ms(l.p50),
                        ms(l.p90),
                        ms(l.p99),
                        l.p99_bucket.map_or("–".into(), |(a, b)| format!(
                            "{:.2}–{}",
                            a * 1000.0,
                            if b.is_finite() {
                                format!("{:.2}", b * 1000.0)
                            } else {
                                "∞".into()
                            }
                        ))
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "| {} | `{}` | not exported by this bot | | | | | |",
                        st.streams_connected, name
                    );
                }
            }
        }
    }
    if r.steps.iter().any(|s| !s.setup.phases.is_empty()) {
        let _ = writeln!(
            o,
            "\n## Call setup breakdown (join request → first frame in a sink; ms)\n"
        );
        let _ = writeln!(
            o,
            "| streams | phase | calls | p50 | p90 |\n|---|---|---|---|---|"
        );
        for st in &r.steps {
            for p in &st.setup.phases {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {:.1} | {:.1} |",
                    st.streams_connected, p.phase, p.calls, p.p50_ms, p.p90_ms
                );
            }
        }
    }
    if r.steps.iter().any(|s| s.recorded_bytes.is_some()) {
        let _ = writeln!(
            o,
            "\n## Disk (what the bot wrote over each step, deleted after it; recording `{}`)\n",
            r.settings.bot_recording.name()
        );
        let _ = writeln!(
            o,
            "| streams | recordings MiB | recordings KiB per stream | feed MiB | feed KiB per stream |\n|---|---|---|---|---|"
        );
        for st in &r.steps {
            let n = st.streams_connected.max(1) as f64;
            let per = |b: Option<u64>| b.map(|b| b as f64 / 1024.0 / n);
            let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                st.streams_connected,
                opt(mib(st.recording_bytes), 1),
                opt(per(st.recording_bytes), 0),
                opt(mib(st.feed_bytes), 1),
                opt(per(st.feed_bytes), 0)
            );
        }
    }
    let _ = writeln!(o, "\n## Threads of the bot (steady window, % of a core)\n");
    for st in &r.steps {
        if let Some(c) = &st.bot_cpu {
            let mut v: Vec<(&String, &f64)> = c.threads.iter().collect();
            v.sort_by(|a, b| b.1.total_cmp(a.1));
            let list: Vec<String> = v
                .iter()
                .filter(|(_, x)| **x > 0.0005)
                .map(|(k, x)| format!("{k} {:.1}", *x * 100.0))
                .collect();
            let _ = writeln!(o, "- {} streams: {}", st.streams_connected, list.join(", "));
        }
    }
    if let Some(w) = &r.webhook {
        let _ = writeln!(o, "\n## Webhook\n");
        let b = &w.blast;
        let _ = writeln!(
            o,
            "{} connections, {:.1} s: {} accepted, {} failed{}; **{:.0}/s**, bot CPU {}% → **{}/s per bot core**; client latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; bot-side `mediabot_webhook_seconds` p50 {} ms, p99 {} ms. Body {} B. Token: {}.",
            b.connections,
            b.secs,
            b.accepted,
            b.failed,
            b.first_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (first: {f})")),
            b.per_sec,
            opt(w.bot_cpu_cores.map(|c| c * 100.0), 0),
            opt(w.per_bot_core, 0),
            b.latency_ms[0],
            b.latency_ms[1],
            b.latency_ms[2],
            b.latency_ms[3],
            ms(w.server_latency.as_ref().and_then(|l| l.p50)),
            ms(w.server_latency.as_ref().and_then(|l| l.p99)),
            w.body_bytes,
            w.token_reuse
        );
    }
    let _ = writeln!(o, "\n## Baselines (same packets)\n");
    for (f, role) in [
        (&r.floor, "the bot's decode rate; the target's floor"),
        (&r.floor_48k, "for reference"),
    ] {
        let Some(f) = f else { continue };
        let _ = writeln!(
            o,
            "- Floor, bare libopus decode at {} kHz ({role}; {} packets on CPU {}): {:.2} µs per packet = {:.3}% of a core per stream = {:.0} streams per core.",
            f64::from(f.rate_hz) / 1000.0,
            f.packets,
            f.cpu.map_or("unpinned".into(), |c| c.to_string()),
            f.us_per_packet,
            f.cores_per_stream * 100.0,
            f.streams_per_core
        );
    }
    for p in &r.peers {
        let _ = writeln!(
            o,
            "- {}: {} streams, CPU {:.1}% = {:.3}% per stream ({} vs mediabot at a similar count), {} frames decoded ({:.1}/s per stream){}",
            p.peer,
            p.streams,
            p.cpu_cores * 100.0,
            p.cores_per_stream * 100.0,
            p.ratio_to_bot
                .map_or("no bot step to compare".into(), |x| format!(
                    "{x:.2}x mediabot"
                )),
            p.frames,
            p.frames_per_stream_per_sec,
            p.error
                .as_ref()
                .map_or(String::new(), |e| format!(" — {e}"))
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {}", n.replace('\n', " "));
        }
    }
    let _ = writeln!(
        o,
        "\nPercentiles from histograms are interpolated inside their bucket; the p99 bucket column gives the resolution. CPU from /proc in clock ticks (10 ms)."
    );
    o
}

/// The three plots as SVG text: (file name, svg).
pub fn plots(r: &LoadtestReport) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let xs: Vec<f64> = r.steps.iter().map(|s| s.streams_connected as f64).collect();
    let cpu: Vec<(f64, f64)> = r
        .steps
        .iter()
        .filter_map(|s| {
            s.bot_cpu
                .as_ref()
                .map(|c| (s.streams_connected as f64, c.process_cores * 100.0))
        })
        .collect();
    let gen_cpu: Vec<(f64, f64)> = r
        .steps
        .iter()
        .map(|s| (s.streams_connected as f64, s.generator_cores * 100.0))
        .collect();
    let mut cpu_series = vec![
        ("bot process".to_owned(), cpu),
        ("generator".to_owned(), gen_cpu),
    ];
    for (f, suffix) in [(&r.floor, ""), (&r.floor_48k, ", reference")] {
        let Some(f) = f else { continue };
        cpu_series.push((
            format!(
                "bare decode floor ({} kHz{suffix})",
                f64::from(f.rate_hz) / 1000.0
            ),
            xs.iter()
                .map(|x| (*x, x * f.cores_per_stream * 100.0))
                .collect(),
        ));
    }
    for p in &r.peers {
        if p.error.is_none() {
            cpu_series.push((
                format!("{} @{}", p.peer, p.streams),
                vec![(p.streams as f64, p.cpu_cores * 100.0)],
            ));
        }
    }
    out.push((
        "cpu.svg".to_owned(),
        line_chart("CPU vs streams", "streams", "% of one core", &cpu_series),
    ));
    let mut lat_series = Vec::new();
    for name in super::FRAME_HISTOGRAMS {
        for (label, pick) in [("p50", 0usize), ("p99", 1)] {
            let pts: Vec<(f64, f64)> = r
                .steps
                .iter()
                .filter_map(|s| {
                    let l = s.latency.get(name)?.as_ref()?;
                    let v = if pick == 0 { l.p50 } else { l.p99 }?;
                    Some((s.streams_connected as f64, v * 1000.0))
                })
                .collect();
            if !pts.is_empty() {
                let short = name
                    .trim_start_matches("mediabot_")
                    .trim_end_matches("_seconds");
                lat_series.push((format!("{short} {label}"), pts));
            }
        }
    }
    let setup: Vec<(f64, f64)> = r
        .steps
        .iter()
        .filter_map(|s| {
            s.setup
                .first_frame_p50_ms
                .map(|v| (s.streams_connected as f64, v))
        })
        .collect();
    out.push((
        "latency.svg".to_owned(),
        line_chart(
            "Per-frame latency percentiles vs streams",
            "streams",
            "ms",
            &lat_series,
        ),
    ));
    out.push((
        "setup.svg".to_owned(),
        line_chart(
            "Join to first frame (p50) vs streams",
            "streams",
            "ms",
            &[("setup p50".to_owned(), setup)],
        ),
    ));
    let mem: Vec<(f64, f64)> = r
        .steps
        .iter()
        .filter_map(|s| {
            s.rss_per_stream_kib
                .map(|m| (s.streams_connected as f64, m))
        })
        .collect();
    out.push((
        "memory.svg".to_owned(),
        line_chart(
            "Memory per stream vs streams",
            "streams",
            "KiB per stream (RSS − idle)",
            &[
                ("RSS per stream".to_owned(), mem),
                (
                    "target 512 KiB".to_owned(),
                    xs.iter().map(|x| (*x, 512.0)).collect(),
                ),
            ],
        ),
    ));
    out
}

/// A line chart; an empty chart says "no data".
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let pts = series.iter().flat_map(|(_, p)| p.iter());
        let (mut x_max, mut y_max) = (1.0f64, 1e-6f64);
        let mut any = false;
        for (x, y) in pts {
            any = true;
            x_max = x_max.max(*x);
            y_max = y_max.max(*y);
        }
        let chart = ChartBuilder::on(&root)
            .caption(
                if any {
                    title.to_owned()
                } else {
                    format!("{title} (no data)")
                },
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.15);
        if let Ok(mut chart) = chart {
            let _ = chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw();
            let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK, &YELLOW];
            for (i, (name, p)) in series.iter().enumerate() {
                if p.is_empty() {
                    continue;
                }
                let color = colors[i % colors.len()];
                if let Ok(s) = chart.draw_series(LineSeries::new(p.iter().copied(), color)) {
                    s.label(name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                }
                let _ = chart.draw_series(
                    p.iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                );
            }
            let _ = chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw();
        }
        let _ = root.present();
    }
    svg
}

/// The HTML page: the plots inline, then the Markdown report as preformatted text.
pub fn html(r: &LoadtestReport, plots: &[(String, String)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut o = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mediabot load test</title>\
         <style>body{font-family:sans-serif;max-width:1500px;margin:1em auto}pre{white-space:pre-wrap;font-size:13px}</style></head><body>\
         <h1>mediabot load test</h1>",
    );
    for (_, svg) in plots {
        o.push_str("<div>");
        o.push_str(svg);
        o.push_str("</div>");
    }
    o.push_str("<pre>");
    o.push_str(&esc(&markdown(r)));
    o.push_str("</pre></body></html>\n");
    o
}

/// Writes `result.json`, `report.md`, the SVGs and `report.html` into `dir`.
///
/// # Errors
/// A file cannot be written.
pub fn write_all(r: &LoadtestReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("result.json"), json)?;
    std::fs::write(dir.join("report.md"), markdown(r))?;
    let plots = plots(r);
    for (name, svg) in &plots {
        std::fs::write(dir.join(name), svg)?;
    }
    std::fs::write(dir.join("report.html"), html(r, &plots))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn step(streams: usize) -> StepResult {
        let mut latency = BTreeMap::new();
        latency.insert(super::super::FRAME_HISTOGRAMS[0].to_owned(), None);
        StepResult {
            streams_target: streams,
            run: 1,
            calls: streams / 10,
            speakers_per_call: 10,
            calls_joined: streams / 10,
            streams_connected: streams,
            join_errors: Vec::new(),
            media_failures: Vec::new(),
            steady_secs: 10.0,
            bot_cpu: Some(CpuUse {
                wall_secs: 10.0,
                process_cores: streams as f64 * 0.001,
                threads: BTreeMap::new(),
                wakes_per_sec: BTreeMap::new(),
                runqueue_wait: BTreeMap::new(),
            }),
            bot_cores_per_stream: Some(0.001),
            floor_bracket: None,
            paced_floor: None,
            bot_counters: None,
            rss_kib: Some(100_000),
            rss_per_stream_kib: Some(300.0),
            generator_cores: 0.2,
            generator_us_per_packet: Some(10.0),
            generator_packets_per_sec: streams as f64 * 50.0,
            generator_refused: 0,
            generator_send_calls: 0,
            generator_late: 0,
            generator_max_late_ms: 1.0,
            media: MediaCounters::default(),
            counters: BTreeMap::new(),
            steady_counters: BTreeMap::new(),
            latency,
            setup: CallSetup::from_sorted(&[100.0, 200.0, 400.0], &[5.0], None),
            broken: Vec::new(),
            recorded_bytes: None,
            recording_bytes: None,
            feed_bytes: None,
            core_busy: BTreeMap::from([(0, 0.9), (1, 0.5)]),
            core_interrupts: BTreeMap::from([(0, 0.02), (1, 0.04)]),
            core_steal: BTreeMap::from([(0, 0.0), (1, 0.01)]),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn knee_rules_separate_bot_loss_from_generator_loss() {
        let mut s = step(100);
        assert!(s.judge().is_empty());
        s.media.dropped_at_ring = 3;
        s.media.lost = 5;
        let why = s.judge();
        assert!(why[0].contains("3 frames dropped"), "{why:?}");
        assert!(why[1].contains("generator sent on time"), "{why:?}");
        s.generator_late = 7;
        assert!(s.judge()[1].contains("generator-bound"));
        // Other processes on the generator's CPU are a warning, not a break.
        let w = s.measurement_warnings(Some(1), Some(0));
        assert!(w[0].contains("70% of the generator's CPU"), "{w:?}");
        assert!(w[1].contains("40% of the bot's CPU"), "{w:?}");
    }

    #[test]
    fn ring_and_ogg_drops_break_a_step_counted_once_and_placed_in_time() {
        let mut s = step(100);
        // The calls' per-stream sum and the process-wide counter see the same drops (the
        // latter also the mixes'): the larger is reported, not their sum.
        s.media.dropped_at_ring = 8;
        s.counters.insert(RING_DROPS.into(), 10.0);
        s.steady_counters.insert(RING_DROPS.into(), 0.0);
        let why = s.judge();
        assert_eq!(
            why[0], "10 frames dropped at sink rings (0 in the steady window)",
            "{why:?}"
        );
        // A bot without the counter: the per-stream sum, no time.
        s.counters.clear();
        s.steady_counters.clear();
        assert_eq!(s.judge()[0], "8 frames dropped at sink rings");
        // The Ogg recorder's packets lost at its ring break the step too.
        s.media.dropped_at_ring = 0;
        s.counters.insert(OGG_DROPS.into(), 4.0);
        s.steady_counters.insert(OGG_DROPS.into(), 4.0);
        assert_eq!(
            s.judge(),
            ["4 Opus packets dropped at the Ogg recorder's rings (4 in the steady window)"]
        );
        s.counters.insert(OGG_DROPS.into(), 0.0);
        assert!(s.judge().is_empty());
    }

    fn floor(rate_hz: u32, us_per_packet: f64) -> Floor {
        Floor {
            rate_hz,
            packets: 1000,
            cpu_secs: 0.05,
            us_per_packet,
            cores_per_stream: us_per_packet * 50.0 / 1e6,
            streams_per_core: 1e6 / (us_per_packet * 50.0),
            cpu: Some(1),
            counters: None,
        }
    }

    fn report() -> LoadtestReport {
        LoadtestReport {
            schema: SCHEMA.into(),
            generated_at: "2026-11-23T00:00:00Z".into(),
            machine: Machine {
                cpu_model: "test cpu".into(),
                cpus: 2,
                kernel: "6".into(),
                rustc: None,
                git_commit: Some("abcdef0123456789".into()),
                bot_version: None,
                mem_total_kib: None,
            },
            settings: Settings::from_args(&LoadtestArgs::default(), Some(1), Some(0), true),
            packets: PacketInfo {
                count: 500,
                mean_bytes: 60.0,
                bitrate: 32_000,
                seconds: 10,
            },
            idle_rss_kib: Some(10_000),
            webhook: None,
            steps: vec![step(100), step(500)],
            knee: None,
            floor: Some(floor(48_000, 50.0)),
            floor_48k: None,
            wake_cost: None,
            wake_cost_common: None,
            peers: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn targets_and_markdown_state_what_is_missing() {
        let mut r = report();
        r.evaluate();
        let by = |n: &str| r.targets.iter().find(|t| t.name == n).unwrap().met;
        assert_eq!(by("streams per core"), Some(true));
        // 0.1 % per stream against a 0.25 % floor.
        assert_eq!(by("CPU per stream vs bare decode"), Some(true));
        assert_eq!(by("memory per stream"), Some(true));
        assert_eq!(by("webhook"), None);
        assert_eq!(by("call setup"), Some(true));
        let md = markdown(&r);
        assert!(md.contains("not exported by this bot"), "{md}");
        assert!(
            md.contains("| webhook |") && md.contains("not measured"),
            "{md}"
        );
        assert!(md.contains("commit abcdef0123"), "{md}");
        let p = plots(&r);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|(_, svg)| svg.starts_with("<svg")));
        assert!(p[1].1.contains("no data"), "no latency histogram exported");
        // The default mode decodes at 48 kHz: one floor, named with its rate.
        let t = &r.targets[1];
        assert!(
            t.target.contains("at 48 kHz (the bot's decode rate)"),
            "{t:?}"
        );
        assert!(!t.measured.contains("reference"), "{t:?}");
        assert!(md.contains("`wav` (decodes at 48 kHz)"), "{md}");
        assert!(md.contains("files synced every 5 s (the default)"), "{md}");
        assert!(md.contains("× floor (48 kHz)"), "{md}");
        assert!(!md.contains("## Disk"), "no step measured its bytes");
    }

    #[test]
    fn a_step_is_judged_against_the_floor_measured_around_it() {
        let mut r = report();
        // The sweep's end-of-run floor says 0.1 % per stream (1.0x: met), but around the
        // reference step the machine was faster: 0.05 % before, 0.07 % after (mean 0.06 %).
        r.floor = Some(floor(48_000, 20.0));
        let (before, after) = (floor(48_000, 10.0), floor(48_000, 14.0));
        for st in &mut r.steps {
            st.floor_bracket = Some(FloorBracket::new(&before, &after));
        }
        r.evaluate();
        let t = &r.targets[1];
        assert_eq!(t.met, Some(false), "{t:?}");
        assert!(t.measured.starts_with("1.67x at "), "{t:?}");
        assert!(
            t.measured
                .contains("floor measured around the step: 10.0 / 14.0 µs per packet"),
            "{t:?}"
        );
        let md = markdown(&r);
        assert!(md.contains("| 1.67 |"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["steps"][0]["floor_bracket"]["after_us_per_packet"],
            14.0
        );
    }

    #[test]
    fn repeated_runs_of_a_stream_count_decide_by_majority() {
        let broke = |mut s: StepResult, run: usize| {
            s.run = run;
            s.broken = vec!["frame processing p99 9.80 ms ≥ 2 ms".into()];
            s
        };
        let held = |mut s: StepResult, run: usize| {
            s.run = run;
            s
        };
        let mut r = report();
        r.steps = vec![
            held(step(460), 1),
            held(step(460), 2),
            held(step(460), 3),
            held(step(500), 1),
            broke(step(500), 2),
            held(step(500), 3),
        ];
        let v = StreamCountVerdict::of(&r.steps, 500);
        assert_eq!((v.runs, v.held_runs, v.held()), (3, 2, true));
        r.evaluate();
        assert_eq!(r.targets[0].met, Some(true), "{:?}", r.targets[0]);
        assert!(
            r.targets[0]
                .measured
                .starts_with("500 streams held in 2 of 3 runs"),
            "{:?}",
            r.targets[0]
        );
        assert!(markdown(&r).contains("| 500 (run 2) |"));

        // Two of three broke: the stream count does not hold, whatever the third did.
        r.steps[3] = broke(step(500), 1);
        let v = StreamCountVerdict::of(&r.steps, 500);
        assert!(!v.held());
        assert_eq!(
            v.reasons(),
            vec![
                "broke in 2 of 3 runs".to_owned(),
                "frame processing p99 9.80 ms ≥ 2 ms".to_owned()
            ]
        );
        r.knee = Some(Knee {
            streams: 500,
            reasons: v.reasons(),
        });
        r.targets.clear();
        r.evaluate();
        assert_eq!(r.targets[0].met, Some(false));
        assert!(
            r.targets[0].measured.contains("best held: 460"),
            "{:?}",
            r.targets[0]
        );
        // One run of one: the run decides, with its own reasons only.
        let one = StreamCountVerdict::of(&[broke(step(540), 1)], 540);
        assert!(!one.held());
        assert_eq!(one.reasons().len(), 1);
        // Two runs, one broken: not more than half held.
        assert!(!StreamCountVerdict::of(&[held(step(540), 1), broke(step(540), 2)], 540).held());
    }

    #[test]
    fn a_floor_that_moved_across_the_step_is_a_warning() {
        let steady = FloorBracket::new(&floor(48_000, 25.0), &floor(48_000, 27.0));
        assert_eq!(steady.drift_warning(), None, "8 % is within the limit");
        let slower = FloorBracket::new(&floor(48_000, 25.0), &floor(48_000, 30.0));
        let w = slower.drift_warning().unwrap();
        assert!(
            w.contains("25.0 µs per packet before it and 30.0 after (+20 %)"),
            "{w}"
        );
        let faster = FloorBracket::new(&floor(48_000, 30.0), &floor(48_000, 25.0));
        assert!(faster.drift_warning().unwrap().contains("(-17 %)"));
        let broken = FloorBracket::new(&floor(48_000, 0.0), &floor(48_000, 25.0));
        assert_eq!(broken.drift_warning(), None, "no floor, no comparison");
    }

    #[test]
    fn a_knee_below_500_streams_misses_the_streams_target_without_a_500_step() {
        let mut r = report();
        r.steps.retain(|s| s.streams_target < 500);
        assert!(!r.steps.is_empty());
        r.evaluate();
        assert_eq!(
            r.targets[0].met, None,
            "no 500 step and no knee: not measured"
        );
        r.knee = Some(Knee {
            streams: 320,
            reasons: vec!["frame processing p99 38.96 ms ≥ 2 ms".into()],
        });
        r.targets.clear();
        r.evaluate();
        assert_eq!(r.targets[0].met, Some(false), "{:?}", r.targets[0]);
        assert!(markdown(&r).contains("broke at 320 streams"));
        // A knee above 500 with no 500 step says nothing about 500.
        r.knee = Some(Knee {
            streams: 600,
            reasons: vec![],
        });
        r.targets.clear();
        r.evaluate();
        assert_eq!(r.targets[0].met, None);
    }

    #[test]
    fn the_paced_floor_is_shown_beside_the_floor_but_does_not_judge() {
        let mut r = report();
        assert!(!markdown(&r).contains("## Paced floor"));
        let (before, after) = (floor(48_000, 10.0), floor(48_000, 14.0));
        for st in &mut r.steps {
            st.floor_bracket = Some(FloorBracket::new(&before, &after));
            st.paced_floor = Some(floor(48_000, 15.0));
        }
        r.evaluate();
        // Judged against the bracket (0.06 % per stream), not the paced floor (0.075 %).
        assert!(
            r.targets[1].measured.starts_with("1.67x at "),
            "{:?}",
            r.targets[1]
        );
        let md = markdown(&r);
        // Floor 12 µs (mean of 10 and 14), paced 15 µs: 1.25x; the bot's 0.1 % per stream
        // over the paced 0.075 %: 1.33x.
        assert!(md.contains("## Paced floor"), "{md}");
        assert!(md.contains("| 100 | 12.00 | 15.00 | 1.25 | 1.33 |"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["steps"][0]["paced_floor"]["us_per_packet"], 15.0);
    }

    #[test]
    fn hardware_counts_are_compared_with_the_floor_around_the_step() {
        let mut r = report();
        let md = markdown(&r);
        assert!(md.contains("Hardware counters: not available"), "{md}");
        let pp = |instructions, cycles| PerPacket {
            instructions,
            cycles,
        };
        let (mut before, mut after) = (floor(48_000, 10.0), floor(48_000, 14.0));
        before.counters = Some(pp(200_000.0, 90_000.0));
        after.counters = Some(pp(220_000.0, 110_000.0));
        for st in &mut r.steps {
            st.floor_bracket = Some(FloorBracket::new(&before, &after));
            st.bot_counters = Some(BotCounters {
                packets: 1000,
                secs: 3.0,
                threads: 3,
                kernel_included: false,
                total: pp(231_000.0, 250_000.0),
                by_thread: BTreeMap::from([
                    ("mediabot-udp".to_owned(), pp(221_000.0, 200_000.0)),
                    ("sink-*".to_owned(), pp(10_000.0, 50_000.0)),
                ]),
            });
        }
        r.evaluate();
        let t = &r.targets[1];
        // Bracket mean: 210k instructions, 100k cycles per packet.
        assert!(
            t.measured
                .contains("by hardware counters 2.50x in cycles, 1.10x in instructions"),
            "{t:?}"
        );
        let md = markdown(&r);
        assert!(
            md.contains(
                "| 500 | 231.0 | 210.0 | 1.10 | 250.0 | 100.0 | 2.50 | 221.0 / 200.0 | 10.0 / 50.0 | 12.50 | 8.33 | no (user only) |"
            ),
            "{md}"
        );
        // Wake-ups: 2,000/s at 20 µs each is 4 % of a core: 40 % of the 100-stream step's
        // 0.1 cores.
        assert!(!md.contains("## Wake-ups"), "no wake counts yet");
        r.wake_cost = Some(WakeCost {
            threads: 8,
            sleep_us: 20_000,
            wakes: 200,
            us_per_wake: 20.0,
            cpu: Some(1),
            common_phase: false,
        });
        for st in &mut r.steps {
            let c = st.bot_cpu.as_mut().unwrap();
            c.wakes_per_sec = BTreeMap::from([
                ("mediabot-udp".to_owned(), 1000.0),
                ("sink-*".to_owned(), 500.0),
                ("feed-file".to_owned(), 400.0),
                ("tokio-rt-worker".to_owned(), 100.0),
            ]);
        }
        assert!(
            !markdown(&r).contains("## Waiting for the CPU"),
            "not read, no table"
        );
        for st in &mut r.steps {
            let c = st.bot_cpu.as_mut().unwrap();
            c.runqueue_wait = BTreeMap::from([
                ("mediabot-udp".to_owned(), 0.012),
                ("sink-*".to_owned(), 0.35),
                ("fsync".to_owned(), 0.02),
                ("tokio-rt-worker".to_owned(), 0.001),
            ]);
        }
        let md = markdown(&r);
        assert!(md.contains("## Waiting for the CPU"), "{md}");
        assert!(md.contains("| 100 | 12 | 350 | 20 | 1 |"), "{md}");
        assert!(md.contains("A timer wake-up costs 20.0 µs"), "{md}");
        assert!(
            md.contains("| 100 | 2000 | 1000 | 500 | 400 | 100 | 4.0 | 40 |"),
            "{md}"
        );
        assert!(!md.contains("common phase"), "not measured, not claimed");
        r.wake_cost_common = Some(WakeCost {
            us_per_wake: 11.5,
            common_phase: true,
            ..r.wake_cost.clone().unwrap()
        });
        let md = markdown(&r);
        assert!(
            md.contains("staggered phases, bot idle; 11.5 µs when they wake on one common phase"),
            "{md}"
        );
        assert!(
            md.contains("| 4.0 | 40 |"),
            "the estimate keeps the staggered price"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["steps"][0]["floor_bracket"]["counters"]["instructions"],
            210_000.0
        );
        assert_eq!(json["steps"][0]["bot_counters"]["packets"], 1000);
    }

    #[test]
    fn a_bot_decoding_at_16_khz_is_judged_against_the_16_khz_floor_with_48_khz_shown() {
        let args = LoadtestArgs {
            bot_recording: super::super::BotRecording::Ogg,
            ..LoadtestArgs::default()
        };
        let mut r = report();
        r.settings = Settings::from_args(&args, Some(1), Some(0), true);
        // The bot spends 0.1 % of a core per stream: 1.6x a 0.0625 % floor at 16 kHz (missed),
        // 0.4x the 0.25 % floor at 48 kHz (which would have passed).
        r.floor = Some(floor(16_000, 12.5));
        // 100 streams for about 10 s: Ogg at ~4.2 kB/s, the feed at 30 kB/s.
        r.steps[0].recording_bytes = Some(4_200_000);
        r.steps[0].feed_bytes = Some(30_000_000);
        r.steps[0].recorded_bytes = Some(34_200_000);
        r.floor_48k = Some(floor(48_000, 50.0));
        r.evaluate();
        let t = &r.targets[1];
        assert_eq!(t.name, "CPU per stream vs bare decode");
        assert_eq!(t.met, Some(false), "{t:?}");
        assert!(
            t.target.contains("at 16 kHz (the bot's decode rate)"),
            "{t:?}"
        );
        assert!(t.measured.starts_with("1.60x at 500 streams"), "{t:?}");
        assert!(
            t.measured.contains("for reference 0.40x the 48 kHz floor"),
            "{t:?}"
        );
        let md = markdown(&r);
        assert!(md.contains("`ogg` (decodes at 16 kHz)"), "{md}");
        assert!(md.contains("Ogg/Opus passthrough"), "{md}");
        assert!(md.contains("| × floor (16 kHz) |"), "{md}");
        assert!(
            md.contains("## Disk") && md.contains("recording `ogg`"),
            "{md}"
        );
        assert!(md.contains("| 100 | 4.0 | 41 | 28.6 | 293 |"), "{md}");
        assert!(
            md.contains("Floor, bare libopus decode at 16 kHz (the bot's decode rate")
                && md.contains("Floor, bare libopus decode at 48 kHz (for reference"),
            "{md}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["floor"]["rate_hz"], 16_000);
        assert_eq!(json["floor_48k"]["rate_hz"], 48_000);
        assert_eq!(json["settings"]["bot_recording"], "ogg");
        assert_eq!(json["settings"]["bot_decode_rate_hz"], 16_000);
        let cpu_svg = &plots(&r)[0].1;
        assert!(cpu_svg.contains("16 kHz") && cpu_svg.contains("48 kHz, reference"));
        assert!(html(&r, &[]).contains("decodes at 16 kHz"));
    }
}
