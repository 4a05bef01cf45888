//! The injected clock. Everything that asks "what time is it" for rules, signing or storage asks a [`Clock`], so
//! tests (and the simulator's time travel) can move time without sleeping.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// `t - d`, saturating at the earliest time chrono knows (a config or flag duration of 300,000 years must not
/// panic: it means "since ever").
pub fn earlier(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, saturating at the latest time chrono knows ("never").
pub fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| t.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Exact days, hours, minutes, seconds, milliseconds (`90d`, `1h30m`, `1m30s`): what an operator writes, and what
/// humantime reads back (its own formatter says "2months 29days 2h 52m 48s" for 90 days).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let text: String = parts.iter().filter(|(n, _)| *n > 0).map(|(n, u)| format!("{n}{u}")).collect();
    if text.is_empty() { "0s".into() } else { text }
}

/// A humantime duration (`90s`, `24h`, `7d`), for command-line flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); e.g. `90s`, `24h`"))
}

/// `24h` (that long before `now`, saturating: `300000y` means since ever) or an RFC 3339 time.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(earlier(now, d));
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        anyhow::anyhow!("`{s}` is neither a duration (`24h`) nor an RFC 3339 time (`2026-11-28T08:00:00Z`)")
    })
}

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, shifted by a fixed offset (zero in production; `--clock-offset` rehearses the future against
/// the simulator, whose clock can be advanced the same way).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    offset: TimeDelta,
}

impl SystemClock {
    pub fn shifted(offset: Duration) -> Self {
        SystemClock { offset: TimeDelta::from_std(offset).unwrap_or(TimeDelta::MAX) }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.checked_add_signed(self.offset).unwrap_or(now)
    }
}

/// A clock that only moves when told to (unit tests).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock(std::sync::Mutex::new(at)))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t = later(*t, by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
