//! The alert rules: pure functions of one series' history, the rule parameters and the clock.
//!
//! A rule answers [`Outcome::Ok`], [`Outcome::Breach`] or [`Outcome::Unknown`]. Nothing here reads the clock, the
//! database or the network: the caller passes `now` and the history, so live evaluation and `replay` agree.
//!
//! The history is taken in as a [`SeriesState`]: the fold of every snapshot at or before `now`, one at a time. The
//! live path keeps it in the database, updated by each poll's own transaction, so a poll's evaluation reads one row
//! however long the history and the windows are; `replay` and the slice functions ([`evaluate`], [`stuck_running`]
//! …) fold the snapshots they are given. Rules that cannot tell yet — a first start, a history shorter than a
//! window, a run that began before the first poll — answer `Unknown`, never a false alarm or a false all-clear.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{AlertContext, ErrorKind, PollError, SeriesKey, Snapshot, TaskStats, TaskType};

/// The reason data rules give while the series' latest poll failed: the state machine then holds their state, so a
/// monitoring outage neither fires nor resolves `no_recent_scan`, `stuck_running` or `total_stalled`.
pub const HOLD_REASON: &str = "polls failing; holding state";

/// The rules scanwatch knows; the names are the config keys and the `rule` values stored and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// No scan task has started for longer than `max_age`.
    NoRecentScan,
    /// The same task has been running for longer than `for`.
    StuckRunning,
    /// The total task count has not grown for `window`.
    TotalStalled,
    /// The HSS API itself cannot be polled.
    PollFailing,
    /// The latest finished scan task failed on some clusters or files.
    ScanFailures,
    /// A notification channel rejects deliveries permanently; raised by the dispatcher, sent on the other channels.
    ChannelFailing,
}

impl RuleName {
    pub const ALL: [RuleName; 5] = [
        RuleName::NoRecentScan,
        RuleName::StuckRunning,
        RuleName::TotalStalled,
        RuleName::PollFailing,
        RuleName::ScanFailures,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::NoRecentScan => "no_recent_scan",
            RuleName::StuckRunning => "stuck_running",
            RuleName::TotalStalled => "total_stalled",
            RuleName::PollFailing => "poll_failing",
            RuleName::ScanFailures => "scan_failures",
            RuleName::ChannelFailing => "channel_failing",
        }
    }

    /// Any rule name, including `channel_failing`, which no rule function evaluates ([`RuleName::ALL`] omits it).
    pub fn parse(s: &str) -> Option<RuleName> {
        RuleName::ALL.into_iter().chain([RuleName::ChannelFailing]).find(|r| r.as_str() == s)
    }

    /// Data rules look only at successful snapshots and hold their state while polls fail.
    pub fn is_data_rule(self) -> bool {
        !matches!(self, RuleName::PollFailing | RuleName::ChannelFailing)
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How loudly an alert should be routed; channels choose alerts by a minimum severity, hence the ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `no_recent_scan`: how old the latest task start may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRecentScan {
    pub max_age: Duration,
}

impl Default for NoRecentScan {
    fn default() -> Self {
        NoRecentScan { max_age: Duration::from_secs(24 * 3600) }
    }
}

/// `stuck_running`: how long one task may keep running before someone should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckRunning {
    pub for_: Duration,
}

impl Default for StuckRunning {
    fn default() -> Self {
        StuckRunning { for_: Duration::from_secs(2 * 3600) }
    }
}

/// `total_stalled`: how long `total_num` may stay flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalStalled {
    pub window: Duration,
}

impl Default for TotalStalled {
    fn default() -> Self {
        TotalStalled { window: Duration::from_secs(48 * 3600) }
    }
}

/// `poll_failing`: how many failures in a row, or how long without success, before the API outage is an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollFailing {
    pub after: u32,
    pub for_: Duration,
}

impl Default for PollFailing {
    fn default() -> Self {
        PollFailing { after: 3, for_: Duration::from_secs(30 * 60) }
    }
}

/// The effective rule parameters of one series (global config with the target's overrides applied).
/// `None` disables a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub no_recent_scan: Option<(NoRecentScan, Severity)>,
    pub stuck_running: Option<(StuckRunning, Severity)>,
    pub total_stalled: Option<(TotalStalled, Severity)>,
    pub poll_failing: Option<(PollFailing, Severity)>,
    pub scan_failures: Option<(ScanFailures, Severity)>,
}

/// `scan_failures` takes no parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanFailures;

impl Default for RuleSet {
    /// The defaults from DESIGN.md: every rule on.
    fn default() -> Self {
        RuleSet {
            no_recent_scan: Some((NoRecentScan::default(), Severity::Critical)),
            stuck_running: Some((StuckRunning::default(), Severity::Warning)),
            total_stalled: Some((TotalStalled::default(), Severity::Warning)),
            poll_failing: Some((PollFailing::default(), Severity::Critical)),
            scan_failures: Some((ScanFailures, Severity::Warning)),
        }
    }
}

impl RuleSet {
    /// Every rule disabled; a starting point for tests and for configs that enable rules one by one.
    pub fn none() -> Self {
        RuleSet {
            no_recent_scan: None,
            stuck_running: None,
            total_stalled: None,
            poll_failing: None,
            scan_failures: None,
        }
    }

    /// The rule's severity, or `None` when it is disabled.
    pub fn severity(&self, rule: RuleName) -> Option<Severity> {
        match rule {
            RuleName::NoRecentScan => self.no_recent_scan.map(|(_, s)| s),
            RuleName::StuckRunning => self.stuck_running.map(|(_, s)| s),
            RuleName::TotalStalled => self.total_stalled.map(|(_, s)| s),
            RuleName::PollFailing => self.poll_failing.map(|(_, s)| s),
            RuleName::ScanFailures => self.scan_failures.map(|(_, s)| s),
            // Raised by the dispatcher, never by a rule function.
            RuleName::ChannelFailing => None,
        }
    }

    /// The enabled rules, in [`RuleName::ALL`] order.
    pub fn enabled(&self) -> Vec<RuleName> {
        RuleName::ALL.into_iter().filter(|r| self.severity(*r).is_some()).collect()
    }
}

/// A rule's answer for one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The condition does not hold.
    Ok,
    /// The condition holds. `summary` is a plain sentence for messages, `value` the current measure ("31h") that
    /// reminders repeat.
    Breach { summary: String, value: String },
    /// Not enough data to say either way; the alert state machine holds its state.
    Unknown { reason: String },
}

impl Outcome {
    fn unknown(reason: impl Into<String>) -> Self {
        Outcome::Unknown { reason: reason.into() }
    }

    fn breach(summary: impl Into<String>, value: impl Into<String>) -> Self {
        Outcome::Breach { summary: summary.into(), value: value.into() }
    }

    pub fn is_breach(&self) -> bool {
        matches!(self, Outcome::Breach { .. })
    }
}

/// What the rules need to know of one series' history, kept up to date one snapshot at a time: the live path keeps
/// it in the `series_state` row that the poll's own transaction updates, so evaluating a poll reads one row whatever
/// the history's length or the rules' windows; `replay` builds it from the stored snapshots the same way.
///
/// It is the fold ([`SeriesState::fold`]) of every snapshot at or before the evaluation time, in `(polled_at, id)`
/// order, so the rules answer as if they read the whole history: a stuck run, a flat total or a failure streak is
/// measured from where it really began, however long ago.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesState {
    /// The oldest and the newest snapshot folded in; `None` before the first.
    pub first_polled_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    /// The first and the latest successful poll, and what the latest one reported.
    pub first_ok_at: Option<DateTime<Utc>>,
    pub last_ok_at: Option<DateTime<Utc>>,
    pub last_ok: Option<TaskStats>,
    /// Failed polls in a row up to the newest one: 0 when it succeeded (`poll_failing`).
    pub failures: u64,
    /// Why the newest poll failed, while it did.
    pub last_failure: Option<Failure>,
    /// When the current run began: the first of the latest successful polls with `running_num >= 1` and the newest
    /// one's `last_task_start_time` (`stuck_running`); `None` while nothing runs.
    pub running_since: Option<DateTime<Utc>>,
    /// Whether that run reaches back to the first successful poll, so it may have begun before scanwatch looked.
    pub running_from_first: bool,
    /// The first successful poll after `total_num` last grew (`total_stalled`); `None` if it never grew.
    pub grew_at: Option<DateTime<Utc>>,
    /// The latest drop of `total_num` since it last grew, `(from, to)`: a counter reset.
    pub dropped: Option<(u64, u64)>,
    /// The latest task check (`scan_failures`).
    pub task: Option<AlertContext>,
}

/// Why a poll failed, as `poll_failing` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub kind: Option<ErrorKind>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl SeriesState {
    /// The state after every snapshot of `history` (ascending) at or before `now`.
    pub fn of(history: &[Snapshot], now: DateTime<Utc>) -> SeriesState {
        let mut state = SeriesState::default();
        for s in visible(history, now) {
            state.fold(s);
        }
        state
    }

    /// Takes in the next snapshot, which is at or after every one taken in so far.
    pub fn fold(&mut self, s: &Snapshot) {
        let at = s.polled_at;
        self.first_polled_at.get_or_insert(at);
        self.last_polled_at = Some(at);
        if let Some(task) = &s.task {
            self.task = Some(task.clone());
        }
        let Some(stats) = s.stats else {
            self.failures = self.failures.saturating_add(1);
            self.last_failure = Some(Failure {
                kind: s.error_kind,
                http_status: s.http_status,
                error_code: s.error_code.clone(),
                error_message: s.error_message.clone(),
            });
            return;
        };
        let previous = self.last_ok;
        self.failures = 0;
        self.last_failure = None;
        self.first_ok_at.get_or_insert(at);
        let run_goes_on = previous
            .is_some_and(|p| p.running_num >= 1 && p.last_task_start_time == stats.last_task_start_time)
            && self.running_since.is_some();
        if stats.running_num == 0 {
            (self.running_since, self.running_from_first) = (None, false);
        } else if !run_goes_on {
            (self.running_since, self.running_from_first) = (Some(at), previous.is_none());
        }
        match previous {
            Some(p) if stats.total_num > p.total_num => (self.grew_at, self.dropped) = (Some(at), None),
            Some(p) if stats.total_num < p.total_num => self.dropped = Some((p.total_num, stats.total_num)),
            _ => {}
        }
        self.last_ok_at = Some(at);
        self.last_ok = Some(stats);
    }

    /// Evaluates one rule at `now`, or returns `None` when `set` disables it. The series names the scan and the
    /// project in summaries.
    pub fn evaluate(&self, rule: RuleName, set: &RuleSet, series: &SeriesKey, now: DateTime<Utc>) -> Option<Outcome> {
        let task_type = series.task_type;
        Some(match rule {
            RuleName::NoRecentScan => self.no_recent_scan(&set.no_recent_scan?.0, task_type, now),
            RuleName::StuckRunning => self.stuck_running(&set.stuck_running?.0, task_type, now),
            RuleName::TotalStalled => self.total_stalled(&set.total_stalled?.0, task_type, now),
            RuleName::PollFailing => self.poll_failing(&set.poll_failing?.0, &project_of(series), now),
            RuleName::ScanFailures => {
                set.scan_failures?;
                self.scan_failures(task_type)
            }
            RuleName::ChannelFailing => return None,
        })
    }

    /// Evaluates every enabled rule, in [`RuleName::ALL`] order, with its severity.
    pub fn evaluate_all(
        &self,
        set: &RuleSet,
        series: &SeriesKey,
        now: DateTime<Utc>,
    ) -> Vec<(RuleName, Severity, Outcome)> {
        RuleName::ALL
            .into_iter()
            .filter_map(|rule| {
                let severity = set.severity(rule)?;
                Some((rule, severity, self.evaluate(rule, set, series, now)?))
            })
            .collect()
    }

    /// How far in the future the latest successful poll's `last_task_start_time` lies, if it does: rules treat it
    /// as age 0, and the caller logs it (rules do no I/O).
    pub fn future_start_skew(&self, now: DateTime<Utc>) -> Option<TimeDelta> {
        let start_ms = self.last_ok?.last_task_start_time?;
        match DateTime::from_timestamp_millis(start_ms) {
            Some(start) if start > now => Some(start - now),
            Some(_) => None,
            None => Some(TimeDelta::MAX),
        }
    }

    /// The latest poll's stats, or the `Unknown` a data rule answers when there are none or the latest poll failed.
    fn latest_stats(&self) -> Result<TaskStats, Outcome> {
        match (self.last_polled_at, self.last_ok) {
            (None, _) => Err(Outcome::unknown("no polls yet")),
            (Some(_), Some(stats)) if self.failures == 0 => Ok(stats),
            _ => Err(Outcome::unknown(HOLD_REASON)),
        }
    }

    fn no_recent_scan(&self, p: &NoRecentScan, task_type: TaskType, now: DateTime<Utc>) -> Outcome {
        let stats = match self.latest_stats() {
            Ok(s) => s,
            Err(unknown) => return unknown,
        };
        let scan = task_type.human();
        let Some(start_ms) = stats.last_task_start_time else {
            return Outcome::breach(format!("no {scan} has ever started"), "never");
        };
        let age = match DateTime::from_timestamp_millis(start_ms) {
            Some(start) => (now - start).max(TimeDelta::zero()),
            // Beyond chrono's range means far in the future: clock skew or garbage, age 0 either way.
            None => TimeDelta::zero(),
        };
        if age > delta(p.max_age) {
            let age = human_duration(age);
            Outcome::breach(format!("no {scan} has started for {age}; limit {}", human_std(p.max_age)), age)
        } else {
            Outcome::Ok
        }
    }

    fn stuck_running(&self, p: &StuckRunning, task_type: TaskType, now: DateTime<Utc>) -> Outcome {
        let latest = match self.latest_stats() {
            Ok(s) => s,
            Err(unknown) => return unknown,
        };
        let Some(run_began) = self.running_since.filter(|_| latest.running_num >= 1) else {
            return Outcome::Ok;
        };
        let scan = task_type.human();
        if now - run_began >= delta(p.for_) {
            let stuck_for = human_duration(now - run_began);
            let started = match latest.last_task_start_time.and_then(DateTime::from_timestamp_millis) {
                Some(t) => format!("the latest task started {}", t.format("%Y-%m-%d %H:%M UTC")),
                None => "no task start time reported".to_string(),
            };
            return Outcome::breach(
                format!(
                    "{} {scan} task(s) running for {stuck_for} with no new task started ({started}); limit {}",
                    latest.running_num,
                    human_std(p.for_)
                ),
                stuck_for,
            );
        }
        if self.running_from_first {
            return Outcome::unknown(format!(
                "history does not reach back {} (the oldest successful snapshot is {} old)",
                human_std(p.for_),
                human_duration(now - run_began)
            ));
        }
        Outcome::Ok
    }

    fn total_stalled(&self, p: &TotalStalled, task_type: TaskType, now: DateTime<Utc>) -> Outcome {
        let latest = match self.latest_stats() {
            Ok(s) => s,
            Err(unknown) => return unknown,
        };
        let cutoff = ago(now, p.window);
        // The window is covered when a successful poll at or before its start is its baseline.
        let first_ok = match self.first_ok_at {
            Some(first) if first <= cutoff => first,
            first => {
                let covered = first.map_or(TimeDelta::zero(), |at| now - at);
                return Outcome::unknown(format!(
                    "history covers {} of the {} window",
                    human_duration(covered),
                    human_std(p.window)
                ));
            }
        };
        // The total grew between two successful polls inside the window (the later one after the baseline).
        if self.grew_at.is_some_and(|at| at > cutoff) {
            return Outcome::Ok;
        }
        let (flat_since, at_least) = match self.grew_at {
            Some(at) => (at, ""),
            None => (first_ok, "at least "),
        };
        let flat_for = human_duration(now - flat_since);
        let scan = task_type.human();
        let summary = match self.dropped {
            Some((from, to)) => format!(
                "{scan} total has not increased for {at_least}{flat_for} (it dropped from {from} to {to}, a counter \
                 reset; now {}); window {}",
                latest.total_num,
                human_std(p.window)
            ),
            None => format!(
                "{scan} total stayed at {} for {at_least}{flat_for}; window {}",
                latest.total_num,
                human_std(p.window)
            ),
        };
        Outcome::breach(summary, flat_for)
    }

    fn scan_failures(&self, task_type: TaskType) -> Outcome {
        let Some(check) = &self.task else {
            return Outcome::unknown("no finished task checked yet");
        };
        let scan = task_type.human();
        let Some(task) = &check.task else {
            return match &check.unavailable {
                Some(why) => Outcome::unknown(format!("the latest task could not be checked: {why}")),
                // The check found no finished task at all: nothing has failed.
                None => Outcome::Ok,
            };
        };
        if task.failed == 0 {
            return Outcome::Ok;
        }
        let what = if task_type == TaskType::ClusterScan { "clusters" } else { "files" };
        let total = task.scanning + task.success + task.failed;
        // Names and reasons come from HSS and may be set by anyone: they travel in the alert's context, which every
        // channel escapes, never in the summary.
        Outcome::breach(
            format!("the latest finished {scan} task failed on {} of {total} {what}", task.failed),
            format!("{} failed", task.failed),
        )
    }

    fn poll_failing(&self, p: &PollFailing, project: &str, now: DateTime<Utc>) -> Outcome {
        let Some(first_polled_at) = self.first_polled_at else {
            return Outcome::unknown("no polls yet");
        };
        let streak = self.failures;
        let Some(failure) = self.last_failure.as_ref().filter(|_| streak > 0) else {
            return Outcome::Ok;
        };
        // The last success; without one, the first poll.
        let silent_since = self.last_ok_at.unwrap_or(first_polled_at);
        let failures = if streak == 1 { "1 failed poll".to_string() } else { format!("{streak} failed polls") };
        let error = failure.describe();
        match failure.kind {
            Some(ErrorKind::Auth) => {
                return Outcome::breach(format!("HSS rejects the account's credentials: {error}"), failures);
            }
            Some(ErrorKind::Forbidden) => {
                return Outcome::breach(format!("HSS denies access to {project}: {error}"), failures);
            }
            _ => {}
        }
        if streak >= u64::from(p.after) {
            let in_a_row = if streak == 1 {
                "the latest poll failed".to_string()
            } else {
                format!("{streak} polls failed in a row")
            };
            return Outcome::breach(format!("{in_a_row}: {error}"), failures);
        }
        let failing_for = now - silent_since;
        if failing_for >= delta(p.for_) {
            let failing_for = human_duration(failing_for);
            return Outcome::breach(
                format!("no successful poll for {failing_for} ({failures}; limit {}): {error}", human_std(p.for_)),
                format!("{failures} over {failing_for}"),
            );
        }
        if self.last_ok_at.is_none() {
            return Outcome::unknown(format!(
                "{failures} since the first poll passed in, {} ago; not enough to judge",
                human_duration(failing_for)
            ));
        }
        Outcome::Ok
    }
}

impl Failure {
    /// "server (HTTP 503): Service Unavailable".
    fn describe(&self) -> String {
        let Some(kind) = self.kind else {
            return "unclassified error".to_string();
        };
        let described = PollError {
            kind,
            http_status: self.http_status,
            error_code: self.error_code.clone(),
            message: self.error_message.clone().unwrap_or_default(),
            request_id: None,
            retry_after: None,
        }
        .to_string();
        match described.strip_suffix(": ") {
            Some(without_message) => without_message.to_string(),
            None => described,
        }
    }
}

/// Evaluates one rule for `series` over `history` (ascending; snapshots after `now` are ignored), or returns `None`
/// when `set` disables it: [`SeriesState::evaluate`] of the history's fold.
pub fn evaluate(
    rule: RuleName,
    set: &RuleSet,
    series: &SeriesKey,
    history: &[Snapshot],
    now: DateTime<Utc>,
) -> Option<Outcome> {
    SeriesState::of(history, now).evaluate(rule, set, series, now)
}

/// Evaluates every enabled rule over `history`, in [`RuleName::ALL`] order, with its severity.
pub fn evaluate_all(
    set: &RuleSet,
    series: &SeriesKey,
    history: &[Snapshot],
    now: DateTime<Utc>,
) -> Vec<(RuleName, Severity, Outcome)> {
    SeriesState::of(history, now).evaluate_all(set, series, now)
}

/// `no_recent_scan`: breach when the latest successful snapshot shows no task ever started, or the latest task
/// started more than `max_age` ago. A start time in the future counts as age 0 (see [`future_start_skew`]).
pub fn no_recent_scan(p: &NoRecentScan, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    SeriesState::of(history, now).no_recent_scan(p, task_type, now)
}

/// How far in the future the latest successful snapshot's `last_task_start_time` lies, if it does.
pub fn future_start_skew(history: &[Snapshot], now: DateTime<Utc>) -> Option<TimeDelta> {
    SeriesState::of(history, now).future_start_skew(now)
}

/// `stuck_running`: breach when the latest successful snapshots form a run — consecutive successful snapshots with
/// `running_num >= 1` and one unchanged `last_task_start_time` — whose first snapshot is at least `for` old.
/// A changed start time ends a run (a new task started). Unknown while the run reaches back to the first successful
/// snapshot and that one is younger than `for`: the run may have begun before scanwatch looked.
pub fn stuck_running(p: &StuckRunning, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    SeriesState::of(history, now).stuck_running(p, task_type, now)
}

/// `total_stalled`: breach when a successful snapshot at or before `now - window` exists (the window is covered,
/// so a first start or a short history is unknown, never a false alarm) and `total_num` did not increase between
/// any two consecutive successful snapshots from that one on. A decrease is a counter reset: not progress, and not a
/// stall breaker either; the summary names the latest one since the total last grew.
pub fn total_stalled(p: &TotalStalled, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    SeriesState::of(history, now).total_stalled(p, task_type, now)
}

/// `scan_failures`: over the latest task check (polls check the latest *finished* task on a series' first poll and
/// whenever a task finishes — see `poller`), breach when that task failed on some clusters or files (HSS has no
/// task-level "failed": only the failed counts say it; which ones and why is the alert's context); ok when it
/// failed on none, or no task has finished yet. Unknown while no check has been made, or when the latest check
/// could not see the task (its context says why), so a check that failed neither fires nor resolves.
pub fn scan_failures(task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    SeriesState::of(history, now).scan_failures(task_type)
}

/// `poll_failing`: ok when the latest poll succeeded; breach when it failed with `auth`/`forbidden` (at once: more
/// failed signatures lock the key), when the last `after` polls all failed, or when there has been no successful
/// poll for `for` (DESIGN.md). `for` counts from the last successful poll, not from the first failure: what matters
/// is how long scanwatch has not heard from HSS, and a slow schedule or scanwatch's own downtime before the first
/// failure makes that longer than the failures alone. With no success ever, it counts from the first poll.
/// Unknown when there are no polls, or when every poll failed but fewer than `after` and all younger than `for` (a
/// first start: too little history to know).
pub fn poll_failing(p: &PollFailing, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    poll_failing_for(p, "the project", history, now)
}

/// "project 0123… (enterprise project all_granted_eps)": what a 403 is about.
pub fn project_of(series: &SeriesKey) -> String {
    match &series.enterprise_project_id {
        Some(eps) => format!("project {} (enterprise project {eps})", series.project_id),
        None => format!("project {}", series.project_id),
    }
}

/// [`poll_failing`], naming `project` when HSS denies access (a 403 is about one project, not the account).
pub fn poll_failing_for(p: &PollFailing, project: &str, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    SeriesState::of(history, now).poll_failing(p, project, now)
}
/// so the common `24h`/`48h` settings read as configured).
pub fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, mins) = (secs / 86_400, secs / 3600, secs / 60);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{mins}m")
    } else if secs < 72 * 3600 {
        match mins % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    }
}

fn human_std(d: Duration) -> String {
    human_duration(delta(d))
}

/// A std duration as a chrono one, saturating: config durations beyond 292 million years mean "never".
pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `now - d`, saturating at the start of time.
pub(crate) fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    crate::clock::earlier(now, d)
}

/// The snapshots at or before `now` (history is ascending, so a prefix).
fn visible(history: &[Snapshot], now: DateTime<Utc>) -> &[Snapshot] {
    &history[..history.partition_point(|s| s.polled_at <= now)]
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
