//! Scenario files: a meeting or an incoming call, its participants' timelines, notification
//! delivery quirks and fault injection, in TOML.
//!
//! Times are offsets: participant events from the moment the bot's call is established; faults
//! from the moment the scenario is started. A time is a number of seconds (`2.5`) or a string with
//! a unit (`"500ms"`, `"2s"`, `"1.5m"`, `"1h"`).
//!
//! ```toml
//! name = "standup"
//! end_at = "2m"                      # the meeting ends (optional)
//!
//! [meeting]                          # the bot joins by threadId or joinMeetingId
//! subject = "Daily standup"
//! join_meeting_id = "1234567890"
//! passcode = "xyz"
//!
//! [[participant]]
//! handle = "alice"
//! display_name = "Alice Example"
//! join_at = "0s"
//! speak = [{ at = "1s", duration = "4s", synth = 7 }]
//! tone = [{ at = "6s", tone = "5" }]
//!
//! [[participant]]
//! handle = "guest"
//! display_name = "Visitor"
//! guest = true
//! join_at = "3s"
//! lobby_until = "5s"
//! leave_at = "30s"
//!
//! [notifications]
//! batch = true
//! duplicate_probability = 0.1
//!
//! [[fault.throttle]]
//! at = "0s"
//! duration = "2s"
//! retry_after = 1
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::clock::Millis;

/// Longest single stretch of speech (bounds what a media peer synthesizes or reads).
pub const MAX_SPEECH_MS: Millis = 3_600_000;

/// A parsed scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (shown in the control API and logs).
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// A meeting the bot joins.
    #[serde(default)]
    pub meeting: Option<MeetingSpec>,
    /// An incoming call that rings the bot when the scenario starts.
    #[serde(default)]
    pub incoming: Option<IncomingSpec>,
    /// When the meeting/call ends for the bot (offset from establishment).
    #[serde(default, deserialize_with = "opt_offset")]
    pub end_at: Option<Millis>,
    /// The other people in the call.
    #[serde(default, rename = "participant")]
    pub participants: Vec<ParticipantSpec>,
    /// Notification delivery quirks for calls of this scenario.
    #[serde(default)]
    pub notifications: Option<NotificationPolicy>,
    /// Fault injection on the Graph API.
    #[serde(default)]
    pub fault: FaultSpec,
    /// Network impairment on the media the emulator sends into this scenario's calls
    /// (`[network]`); overrides the media peer's default when present.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

/// Seeded network impairment for a scenario's media (`[network]` in a scenario file).
///
/// Loss is independent (`loss`) plus Gilbert-Elliott bursts (`burst_enter`, `burst_exit`,
/// `burst_loss`); `jitter_ms` delays each packet by 0..=jitter (reordering above 20 ms);
/// `duplicate` sends a packet twice. Probabilities are within 0..=1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Independent loss probability per packet.
    #[serde(default)]
    pub loss: f64,
    /// Probability per packet of entering the bursty (bad) state.
    #[serde(default)]
    pub burst_enter: f64,
    /// Probability per packet of leaving the bad state.
    #[serde(default = "one_f64")]
    pub burst_exit: f64,
    /// Loss probability while in the bad state.
    #[serde(default)]
    pub burst_loss: f64,
    /// Largest extra delay per packet, in milliseconds (at most [`MAX_JITTER_MS`]).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Duplication probability per packet.
    #[serde(default)]
    pub duplicate: f64,
    /// RNG seed; the same seed replays the same losses.
    #[serde(default = "one")]
    pub seed: u64,
}

/// Largest `[network] jitter_ms` a scenario may ask for.
pub const MAX_JITTER_MS: u64 = 2_000;

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst_enter: 0.0,
            burst_exit: 1.0,
            burst_loss: 0.0,
            jitter_ms: 0,
            duplicate: 0.0,
            seed: 1,
        }
    }
}

fn one_f64() -> f64 {
    1.0
}

/// A meeting.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MeetingSpec {
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Chat thread id (`19:meeting_...@thread.v2`); generated when absent.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Numeric meeting id for `joinMeetingIdMeetingInfo`; generated when absent.
    #[serde(default)]
    pub join_meeting_id: Option<String>,
    /// Passcode for `joinMeetingIdMeetingInfo` (optional).
    #[serde(default)]
    pub passcode: Option<String>,
    /// Handle of the organizer among the participants (optional).
    #[serde(default)]
    pub organizer: Option<String>,
    /// Organizer's tenant (defaults to the emulator's tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// An incoming call that rings a bot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IncomingSpec {
    /// Client id of the app to ring (defaults to the first registered app).
    #[serde(default)]
    pub app: Option<String>,
    /// Handle of the caller among the participants (defaults to the first).
    #[serde(default)]
    pub caller: Option<String>,
    /// Policy-based (compliance) recording: 5 s answer deadline, `incomingContext` set.
    #[serde(default)]
    pub policy_recording: bool,
}

/// One person in the call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSpec {
    /// Scenario-local name used by control API events.
    pub handle: String,
    /// Display name in the roster.
    #[serde(default)]
    pub display_name: Option<String>,
    /// AAD object id; generated when absent.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Joins as a guest (`identity.guest` instead of `identity.user`).
    #[serde(default)]
    pub guest: bool,
    /// When they join.
    #[serde(default, deserialize_with = "offset")]
    pub join_at: Millis,
    /// When they leave (optional).
    #[serde(default, deserialize_with = "opt_offset")]
    pub leave_at: Option<Millis>,
    /// They wait in the lobby until this time (optional).
    #[serde(default, deserialize_with = "opt_offset")]
    pub lobby_until: Option<Millis>,
    /// Speech.
    #[serde(default)]
    pub speak: Vec<SpeakSpec>,
    /// Mutes at these times.
    #[serde(default)]
    pub mute: Vec<AtSpec>,
    /// Unmutes at these times.
    #[serde(default)]
    pub unmute: Vec<AtSpec>,
    /// DTMF tones.
    #[serde(default)]
    pub tone: Vec<ToneSpec>,
}

/// A point in time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AtSpec {
    /// Offset.
    #[serde(deserialize_with = "offset")]
    pub at: Millis,
}

/// A tone press.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToneSpec {
    /// Offset.
    #[serde(deserialize_with = "offset")]
    pub at: Millis,
    /// `0`-`9`, `*`, `#`, `A`-`D`, `flash`, or Graph's names (`tone5`, `star`, `pound`).
    pub tone: String,
}

/// A stretch of speech.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpeakSpec {
    /// Offset.
    #[serde(deserialize_with = "offset")]
    pub at: Millis,
    /// Length.
    #[serde(deserialize_with = "offset")]
    pub duration: Millis,
    /// A WAV file (relative paths resolve against the scenario file's folder).
    #[serde(default)]
    pub wav: Option<PathBuf>,
    /// Synthesized speech-like audio with this seed (used when `wav` is absent).
    #[serde(default)]
    pub synth: Option<u64>,
}

/// How notifications reach the bot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationPolicy {
    /// Merge notifications already queued for a call into one POST (`value[]` with several items).
    pub batch: bool,
    /// Most items in one POST when batching.
    pub max_batch: usize,
    /// Probability that a POST is delivered twice.
    pub duplicate_probability: f64,
    /// Probability that a POST is held back and sent after the next one.
    pub reorder_probability: f64,
    /// Probability that a POST is dropped (never sent; recorded as dropped).
    pub drop_probability: f64,
    /// Send `established` before `establishing` (Graph documents either order).
    pub establish_out_of_order: bool,
    /// Retries when the bot answers 5xx or the connection fails.
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    pub retry_backoff_ms: u64,
    /// Seed for the probabilities above.
    pub seed: u64,
}

impl Default for NotificationPolicy {
    fn default() -> Self {
        Self {
            batch: false,
            max_batch: 10,
            duplicate_probability: 0.0,
            reorder_probability: 0.0,
            drop_probability: 0.0,
            establish_out_of_order: false,
            max_retries: 3,
            retry_backoff_ms: 100,
            seed: 1,
        }
    }
}

/// Fault injection on the Graph API (times from scenario start).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// 429 + `Retry-After` windows.
    pub throttle: Vec<ThrottleSpec>,
    /// Bursts of server errors.
    pub server_error: Vec<ServerErrorSpec>,
    /// Slow-response windows.
    pub slow: Vec<SlowSpec>,
}

/// Every Graph request in `[at, at+duration)` gets 429.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Start.
    #[serde(deserialize_with = "offset")]
    pub at: Millis,
    /// Length.
    #[serde(deserialize_with = "offset")]
    pub duration: Millis,
    /// `Retry-After` seconds.
    #[serde(default = "one")]
    pub retry_after: u64,
}

/// The next `count` Graph requests from `at` get `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerErrorSpec {
    /// Start.
    #[serde(deserialize_with = "offset", default)]
    pub at: Millis,
    /// How many requests fail.
    pub count: u32,
    /// 500, 502, 503 or 504.
    #[serde(default = "s503")]
    pub status: u16,
}

/// Graph responses in `[at, at+duration)` are delayed by `delay_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SlowSpec {
    /// Start.
    #[serde(deserialize_with = "offset", default)]
    pub at: Millis,
    /// Length.
    #[serde(deserialize_with = "offset")]
    pub duration: Millis,
    /// Added latency.
    pub delay_ms: u64,
}

fn one() -> u64 {
    1
}
fn s503() -> u16 {
    503
}

/// Errors loading a scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid scenario TOML.
    #[error("scenario TOML: {0}")]
    Toml(String),
    /// Valid TOML, invalid meaning (duplicate handle, unknown tone, both meeting and incoming...).
    #[error("scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses TOML text; relative WAV paths resolve against `base_dir`.
    ///
    /// # Errors
    /// [`ScenarioError::Toml`] or [`ScenarioError::Invalid`].
    pub fn from_toml(text: &str, base_dir: Option<&Path>) -> Result<Self, ScenarioError> {
        let mut s: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        if let Some(dir) = base_dir {
            for p in &mut s.participants {
                for sp in &mut p.speak {
                    if let Some(w) = &sp.wav
                        && w.is_relative()
                    {
                        sp.wav = Some(dir.join(w));
                    }
                }
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Reads and parses a scenario file.
    ///
    /// # Errors
    /// See [`ScenarioError`].
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        let s = Self::from_toml(&text, path.parent())?;
        // Catch a wrong WAV path when the scenario is loaded, not when media starts.
        for p in &s.participants {
            for sp in &p.speak {
                if let Some(w) = &sp.wav
                    && !w.is_file()
                {
                    return Err(ScenarioError::Invalid(format!(
                        "{}: WAV file {} does not exist",
                        p.handle,
                        w.display()
                    )));
                }
            }
        }
        Ok(s)
    }

    /// Checks cross-field rules.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`].
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if self.meeting.is_some() && self.incoming.is_some() {
            return bad("a scenario is either a [meeting] or an [incoming] call, not both".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.participants {
            if p.handle.is_empty() {
                return bad("participant handle must not be empty".into());
            }
            if !seen.insert(p.handle.as_str()) {
                return bad(format!("duplicate participant handle {:?}", p.handle));
            }
            if let Some(l) = p.leave_at
                && l < p.join_at
            {
                return bad(format!("{}: leave_at before join_at", p.handle));
            }
            for t in &p.tone {
                if graph_tone(&t.tone).is_none() {
                    return bad(format!("{}: unknown tone {:?}", p.handle, t.tone));
                }
            }
            for s in &p.speak {
                if s.duration == 0 || s.duration > MAX_SPEECH_MS {
                    return bad(format!(
                        "{}: speech duration must be between 1 ms and 1 h",
                        p.handle
                    ));
                }
            }
        }
        if let Some(inc) = &self.incoming {
            if self.participants.is_empty() {
                return bad(
                    "an [incoming] scenario needs at least one participant (the caller)".into(),
                );
            }
            if let Some(c) = &inc.caller
                && !seen.contains(c.as_str())
            {
                return bad(format!("caller {c:?} is not a participant"));
            }
        }
        if let Some(m) = &self.meeting
            && let Some(o) = &m.organizer
            && !seen.contains(o.as_str())
        {
            return bad(format!("organizer {o:?} is not a participant"));
        }
        if let Some(n) = &self.notifications {
            for (name, p) in [
                ("duplicate_probability", n.duplicate_probability),
                ("reorder_probability", n.reorder_probability),
                ("drop_probability", n.drop_probability),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return bad(format!("{name} must be within 0..=1"));
                }
            }
        }
        if let Some(n) = &self.network {
            for (name, p) in [
                ("loss", n.loss),
                ("burst_enter", n.burst_enter),
                ("burst_exit", n.burst_exit),
                ("burst_loss", n.burst_loss),
                ("duplicate", n.duplicate),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return bad(format!("[network] {name} must be within 0..=1"));
                }
            }
            if n.jitter_ms > MAX_JITTER_MS {
                return bad(format!(
                    "[network] jitter_ms must be at most {MAX_JITTER_MS}"
                ));
            }
        }
        for e in &self.fault.server_error {
            if !matches!(e.status, 500 | 502 | 503 | 504) {
                return bad(format!(
                    "server_error status {} is not 500/502/503/504",
                    e.status
                ));
            }
        }
        Ok(())
    }
}

/// Graph's `tone` enum value for a key name (`5` -> `tone5`, `*` -> `star`, `#` -> `pound`).
pub fn graph_tone(key: &str) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "tone0", "tone1", "tone2", "tone3", "tone4", "tone5", "tone6", "tone7", "tone8", "tone9",
        "star", "pound", "a", "b", "c", "d", "flash",
    ];
    let k = key.trim().to_ascii_lowercase();
    let idx = match k.as_str() {
        "*" | "star" => 10,
        "#" | "pound" => 11,
        "a" => 12,
        "b" => 13,
        "c" => 14,
        "d" => 15,
        "flash" => 16,
        _ => {
            let digit = k.strip_prefix("tone").unwrap_or(&k);
            match digit.as_bytes() {
                [d @ b'0'..=b'9'] => usize::from(d - b'0'),
                _ => return None,
            }
        }
    };
    Some(NAMES[idx])
}

/// Parses `"500ms"`, `"2s"`, `"1.5m"`, `"1h"` or a bare number of seconds into milliseconds.
pub fn parse_offset(s: &str) -> Option<Millis> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1000.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    secs_to_ms(v * mult / 1000.0)
}

fn secs_to_ms(v: f64) -> Option<Millis> {
    if !v.is_finite() || !(0.0..=1.0e9).contains(&v) {
        return None;
    }
    // Bounded above, non-negative and finite: the cast cannot wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((v * 1000.0).round() as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawOffset {
    Int(u64),
    Float(f64),
    Text(String),
}

fn to_ms<E: serde::de::Error>(raw: RawOffset) -> Result<Millis, E> {
    match raw {
        RawOffset::Int(i) => i
            .checked_mul(1000)
            .ok_or_else(|| E::custom("time too large")),
        RawOffset::Float(f) => {
            secs_to_ms(f).ok_or_else(|| E::custom("time must be a non-negative number of seconds"))
        }
        RawOffset::Text(t) => parse_offset(&t).ok_or_else(|| {
            E::custom(format!(
                "bad time {t:?}: use e.g. 2.5, \"500ms\", \"2s\", \"1m\""
            ))
        }),
    }
}

fn offset<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    to_ms(RawOffset::deserialize(d)?)
}

fn opt_offset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
    Option::<RawOffset>::deserialize(d)?.map(to_ms).transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("500ms"), Some(500));
        assert_eq!(parse_offset("2s"), Some(2000));
        assert_eq!(parse_offset("1.5m"), Some(90_000));
        assert_eq!(parse_offset("3"), Some(3000));
        assert_eq!(parse_offset("-1s"), None);
        assert_eq!(parse_offset("abc"), None);
    }

    #[test]
    fn tones_map_to_graph_names() {
        assert_eq!(graph_tone("5"), Some("tone5"));
        assert_eq!(graph_tone("tone0"), Some("tone0"));
        assert_eq!(graph_tone("#"), Some("pound"));
        assert_eq!(graph_tone("D"), Some("d"));
        assert_eq!(graph_tone("12"), None);
    }

    #[test]
    fn rejects_bad_scenarios() {
        let dup = "[[participant]]\nhandle='a'\n[[participant]]\nhandle='a'\n";
        assert!(matches!(
            Scenario::from_toml(dup, None),
            Err(ScenarioError::Invalid(_))
        ));
        let typo = "[[participant]]\nhandle='a'\njoin_att=1\n";
        assert!(matches!(
            Scenario::from_toml(typo, None),
            Err(ScenarioError::Toml(_))
        ));
        let both = "[meeting]\n[incoming]\n[[participant]]\nhandle='a'\n";
        assert!(matches!(
            Scenario::from_toml(both, None),
            Err(ScenarioError::Invalid(_))
        ));
        let tone = "[[participant]]\nhandle='a'\ntone=[{at=1, tone='x'}]\n";
        assert!(matches!(
            Scenario::from_toml(tone, None),
            Err(ScenarioError::Invalid(_))
        ));
    }

    #[test]
    fn network_section_parses_and_is_checked() {
        let ok = "[network]\nloss = 0.05\nburst_enter = 0.01\nburst_loss = 0.8\njitter_ms = 40\n";
        let n = Scenario::from_toml(ok, None).unwrap().network.unwrap();
        assert_eq!(
            (n.loss, n.burst_exit, n.jitter_ms, n.seed),
            (0.05, 1.0, 40, 1)
        );
        for bad in [
            "[network]\nloss = 1.5\n",
            "[network]\nduplicate = -0.1\n",
            "[network]\njitter_ms = 5000\n",
        ] {
            assert!(
                matches!(
                    Scenario::from_toml(bad, None),
                    Err(ScenarioError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Scenario::from_toml("[network]\nlos = 0.1\n", None),
            Err(ScenarioError::Toml(_))
        ));
    }

    #[test]
    fn missing_wav_files_are_reported_at_load() {
        let dir = std::env::temp_dir().join(format!("emu-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(
            &f,
            "[[participant]]\nhandle='a'\nspeak=[{at=0, duration=1, wav='nope.wav'}]\n",
        )
        .unwrap();
        let e = Scenario::from_file(&f).unwrap_err();
        assert!(e.to_string().contains("nope.wav"), "{e}");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(dir.join("nope.wav"), spec).unwrap();
        for s in crate::media::speech_like(1, 16_000, 100) {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let s = Scenario::from_file(&f).unwrap();
        let wav = s.participants[0].speak[0].wav.clone().unwrap();
        assert!(wav.is_absolute() || wav.starts_with(&dir));
        let (samples, rate) = crate::media::read_wav_mono(&wav).unwrap();
        assert_eq!((samples.len(), rate), (1600, 16_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                Scenario::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the example scenarios, found {n}");
    }
}
