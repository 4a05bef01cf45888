//! When to poll: a fixed interval, or a cron expression (5 or 6 fields) in a time zone.
//!
//! Cron is evaluated with croner and driven by our own loop (see [`Ticker`]): tokio-cron-scheduler was measured to
//! drop fires under load (a 200-slot broadcast channel), fire late, accept only 6 fields, and keep a fixed UTC
//! offset per job so that a DST change moves the schedule (its issue #87). croner computes each next occurrence in
//! the zone with documented DST rules: a fixed-time job in a spring-forward gap runs right after the gap, and runs
//! once (the first time) in a fall-back overlap. The next fire is always computed from *now*, so a pause never
//! causes a burst of catch-up fires, and a fire is never doubled.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Parses a 5-field (minute precision) or 6-field (with seconds) cron expression.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a cron expression ({e}); e.g. `*/5 * * * *` or `0 */5 * * * *`"))
}

/// The poll schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron { cron: Box<Cron>, tz: Tz },
}

impl Schedule {
    /// The first fire strictly after `now`; `None` when a cron expression never fires again.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(now + TimeDelta::from_std(*d).unwrap_or(TimeDelta::MAX)),
            Schedule::Cron { cron, tz } => {
                cron.find_next_occurrence(&now.with_timezone(tz), false).ok().map(|t| t.with_timezone(&Utc))
            }
        }
    }

    /// The shortest gap between two fires over the next `horizon` from `from` (what the API budget must fit).
    pub fn min_gap(&self, from: DateTime<Utc>, horizon: Duration) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { .. } => {
                let end = from + TimeDelta::from_std(horizon).unwrap_or(TimeDelta::MAX);
                let mut min = horizon;
                let Some(mut prev) = self.next_after(from) else { return min };
                // Bounded: at most one fire a second over the horizon, and a cap on the count.
                for _ in 0..20_000 {
                    let Some(next) = self.next_after(prev) else { break };
                    if next > end {
                        break;
                    }
                    min = min.min((next - prev).to_std().unwrap_or_default());
                    prev = next;
                }
                min
            }
        }
    }
}

/// Waits for the schedule's next fire. Interval schedules use a tokio interval that skips missed ticks; cron
/// schedules sleep until the next occurrence computed from the clock at each call.
pub struct Ticker {
    inner: TickerKind,
}

enum TickerKind {
    Every(tokio::time::Interval),
    Cron(Schedule),
}

impl Ticker {
    /// `first_delay` offsets an interval schedule (per-process jitter); cron fires at its times.
    pub fn new(schedule: &Schedule, first_delay: Duration) -> Ticker {
        let inner = match schedule {
            Schedule::Every(d) => {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + first_delay, *d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                TickerKind::Every(i)
            }
            s @ Schedule::Cron { .. } => TickerKind::Cron(s.clone()),
        };
        Ticker { inner }
    }

    /// Resolves at the next fire. A cron schedule that never fires again waits forever (shutdown still works).
    pub async fn tick(&mut self) {
        match &mut self.inner {
            TickerKind::Every(i) => {
                i.tick().await;
            }
            TickerKind::Cron(s) => {
                let now = Utc::now();
                match s.next_after(now) {
                    Some(next) => tokio::time::sleep((next - now).to_std().unwrap_or_default()).await,
                    None => std::future::pending::<()>().await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn berlin(expr: &str) -> Schedule {
        Schedule::Cron { cron: Box::new(parse_cron(expr).unwrap()), tz: chrono_tz::Europe::Berlin }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn fires(s: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn five_and_six_field_expressions_parse_and_garbage_does_not() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("0 */5 * * * *").is_ok());
        assert!(parse_cron("every five minutes").unwrap_err().contains("not a cron expression"));
    }

    #[test]
    fn a_daily_job_keeps_its_local_time_across_both_dst_changes_in_berlin() {
        // 09:00 local every day: 08:00 UTC in winter, 07:00 UTC in summer.
        let s = berlin("0 9 * * *");
        let spring = fires(&s, utc(2026, 3, 27, 12, 0), 3);
        assert_eq!(spring, vec![utc(2026, 3, 28, 8, 0), utc(2026, 3, 29, 7, 0), utc(2026, 3, 30, 7, 0)]);
        let autumn = fires(&s, utc(2026, 10, 23, 12, 0), 3);
        assert_eq!(autumn, vec![utc(2026, 10, 24, 7, 0), utc(2026, 10, 25, 8, 0), utc(2026, 10, 26, 8, 0)]);
    }

    #[test]
    fn a_job_in_the_spring_gap_runs_once_right_after_it_and_once_in_the_autumn_overlap() {
        // 02:30 local does not exist on 2026-03-29 (02:00 -> 03:00) and happens twice on 2026-10-25.
        let s = berlin("30 2 * * *");
        let spring = fires(&s, utc(2026, 3, 28, 12, 0), 2);
        // Right after the gap: 03:00 CEST = 01:00 UTC; the next day 02:30 CEST = 00:30 UTC.
        assert_eq!(spring, vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]);
        let autumn = fires(&s, utc(2026, 10, 24, 12, 0), 2);
        // Once, at the first 02:30 (CEST, 00:30 UTC); not again at 02:30 CET; then 02:30 CET the next day.
        assert_eq!(autumn, vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]);
    }

    #[test]
    fn every_five_minutes_never_doubles_or_skips_across_the_autumn_overlap() {
        let s = berlin("*/5 * * * *");
        let f = fires(&s, utc(2026, 10, 24, 23, 0), 36); // 01:00 .. 04:00 CEST/CET local
        for w in f.windows(2) {
            assert_eq!(w[1] - w[0], TimeDelta::minutes(5), "{w:?}");
        }
    }

    #[test]
    fn the_budget_sees_the_shortest_gap_of_a_cron_schedule() {
        let s = berlin("0,1 * * * *"); // two fires a minute apart each hour
        assert_eq!(s.min_gap(utc(2026, 1, 1, 0, 0), Duration::from_secs(3 * 3600)), Duration::from_secs(60));
        assert_eq!(
            Schedule::Every(Duration::from_secs(300)).min_gap(utc(2026, 1, 1, 0, 0), Duration::ZERO),
            Duration::from_secs(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_ticker_skips_missed_fires_instead_of_bursting() {
        let mut t = Ticker::new(&Schedule::Every(Duration::from_secs(60)), Duration::ZERO);
        t.tick().await; // the first fire is immediate
        tokio::time::advance(Duration::from_secs(600)).await; // a long pause: 10 fires missed
        let start = tokio::time::Instant::now();
        t.tick().await; // one fire for the whole pause
        t.tick().await; // then the regular period again, not a burst
        assert!(tokio::time::Instant::now() - start >= Duration::from_secs(59));
    }
}
