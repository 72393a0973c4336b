//! Injectable time: the emulator's scheduler (answer deadlines, keepAlive, scenario timelines,
//! operation completions) reads time only through [`Clock`].
//!
//! Tokens (access tokens and notification JWTs) are always stamped with wall time, because the
//! bot verifies them against its own wall clock; see `docs/emulator.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on the emulator's timeline.
pub type Millis = u64;

/// A source of "now" for the emulator's scheduler.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
    /// Whether the emulator must drive time itself (a ticker) or wait for `advance` calls.
    fn is_virtual(&self) -> bool;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        wall_ms()
    }
    fn is_virtual(&self) -> bool {
        false
    }
}

/// A clock that moves only when told to (tests replay a 45-minute keepAlive in microseconds).
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<AtomicU64>,
}

impl VirtualClock {
    /// A virtual clock starting at `start_ms`.
    pub fn new(start_ms: Millis) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// A virtual clock starting at the current wall time.
    pub fn starting_now() -> Self {
        Self::new(wall_ms())
    }

    /// Sets the time; never moves backwards.
    pub fn set(&self, to_ms: Millis) {
        self.now.fetch_max(to_ms, Ordering::SeqCst);
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
    fn is_virtual(&self) -> bool {
        true
    }
}

/// Wall time in milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Wall time in whole seconds (JWT `iat`/`nbf`/`exp`).
pub fn wall_secs() -> u64 {
    wall_ms() / 1000
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision (`2026-11-22T22:25:12.000Z`).
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)` into epoch milliseconds (UTC offsets only
/// `Z`/`+hh:mm`/`-hh:mm`).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let mut ms3: String = digits.chars().take(3).collect();
        while ms3.len() < 3 {
            ms3.push('0');
        }
        frac_ms = ms3.parse().ok()?;
        rest = &r[digits.len()..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    u64::try_from(secs * 1000 + frac_ms).ok()
}

// Howard Hinnant's civil-date algorithms (public domain description), for UTC formatting.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let ms = 1_795_392_312_123;
        let s = rfc3339(ms);
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339("2026-11-22T22:25:12+01:00"),
            parse_rfc3339("2026-11-22T21:25:12Z")
        );
        assert_eq!(parse_rfc3339("nonsense"), None);
        assert_eq!(parse_rfc3339("2026-13-22T22:25:12Z"), None);
    }

    #[test]
    fn virtual_clock_moves_only_forward() {
        let c = VirtualClock::new(1000);
        c.advance(Duration::from_millis(500));
        assert_eq!(c.now_ms(), 1500);
        c.set(10);
        assert_eq!(c.now_ms(), 1500);
        assert!(c.is_virtual());
    }
}
