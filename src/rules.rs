//! The alert rules: pure functions of one series' snapshot history, the rule parameters and the clock.
//!
//! A rule answers [`Outcome::Ok`], [`Outcome::Breach`] or [`Outcome::Unknown`]. Nothing here reads the clock, the
//! database or the network: the caller passes `now` and the history, so live evaluation and `replay` agree.
//!
//! What history the caller must pass, per evaluation at `now` (ascending `polled_at`, failed polls included):
//! - every snapshot with `polled_at >= now - lookback(set)`,
//! - at least the latest [`min_polls`] snapshots, however old,
//! - and the newest *successful* snapshot older than `now - lookback(set)`, if any.
//!
//! Passing less never produces a false alarm or a false all-clear: the rules that need the missing part answer
//! `Unknown`. Snapshots with `polled_at > now` are ignored, so `replay` may pass a longer slice.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ErrorKind, PollError, SeriesKey, Snapshot, TaskStats, TaskType};

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

/// How far back the caller must load snapshots (see the module doc for the two additions): the longest window of
/// the enabled rules. `no_recent_scan` needs only the latest snapshots, so it adds nothing. `poll_failing.for`
/// counts from the last success, which the caller passes however old it is (the second addition); without any
/// success, `for` counts from the first poll, and covering `for` here lets the window reach back to it.
pub fn lookback(set: &RuleSet) -> Duration {
    [
        set.stuck_running.map(|(p, _)| p.for_),
        set.total_stalled.map(|(p, _)| p.window),
        set.poll_failing.map(|(p, _)| p.for_),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(Duration::ZERO)
}

/// How many of the latest snapshots the caller must load whatever their age: `poll_failing.after` counts polls, and
/// a slow schedule can spread them over more than `lookback`. Never less than 1 (every rule needs the latest poll).
pub fn min_polls(set: &RuleSet) -> usize {
    set.poll_failing.map_or(1, |(p, _)| usize::try_from(p.after).unwrap_or(usize::MAX).max(1))
}

/// The part of `history` (ascending, as stored) the live path passes to the rules at `now`, exactly as the store's
/// rule history selects it: the snapshots since `now - lookback(set)`, the latest [`min_polls`] ones, and the newest
/// successful one before the window. [`crate::alerting::replay`] evaluates over this rather than over all it was
/// given, so a replay's summaries and values are the live ones: a rule that looks back as far as the history goes
/// (a failure streak, a stuck run, a flat total) would otherwise see further back than the live run did. Borrowed
/// unless the newest success before the window is separated from it by failures.
pub fn live_view<'a>(set: &RuleSet, history: &'a [Snapshot], now: DateTime<Utc>) -> Cow<'a, [Snapshot]> {
    let h = visible(history, now);
    // Compared in milliseconds, as the store compares them.
    let window_start = ago(now, lookback(set)).timestamp_millis();
    let in_window = h.partition_point(|s| s.polled_at.timestamp_millis() < window_start);
    let start = in_window.min(h.len().saturating_sub(min_polls(set)));
    match h[..in_window].iter().rposition(Snapshot::ok) {
        Some(i) if i + 1 == start => Cow::Borrowed(&h[i..]),
        Some(i) if i < start => Cow::Owned([&h[i..=i], &h[start..]].concat()),
        _ => Cow::Borrowed(&h[start..]),
    }
}

/// Evaluates one rule for `series`, or returns `None` when `set` disables it. The series names the scan and the
/// project in summaries.
pub fn evaluate(
    rule: RuleName,
    set: &RuleSet,
    series: &SeriesKey,
    history: &[Snapshot],
    now: DateTime<Utc>,
) -> Option<Outcome> {
    let task_type = series.task_type;
    Some(match rule {
        RuleName::NoRecentScan => no_recent_scan(&set.no_recent_scan?.0, task_type, history, now),
        RuleName::StuckRunning => stuck_running(&set.stuck_running?.0, task_type, history, now),
        RuleName::TotalStalled => total_stalled(&set.total_stalled?.0, task_type, history, now),
        RuleName::PollFailing => poll_failing_for(&set.poll_failing?.0, &project_of(series), history, now),
        RuleName::ScanFailures => {
            set.scan_failures?;
            scan_failures(task_type, history, now)
        }
        RuleName::ChannelFailing => return None,
    })
}

/// Evaluates every enabled rule, in [`RuleName::ALL`] order, with its severity.
pub fn evaluate_all(
    set: &RuleSet,
    series: &SeriesKey,
    history: &[Snapshot],
    now: DateTime<Utc>,
) -> Vec<(RuleName, Severity, Outcome)> {
    RuleName::ALL
        .into_iter()
        .filter_map(|rule| {
            let severity = set.severity(rule)?;
            Some((rule, severity, evaluate(rule, set, series, history, now)?))
        })
        .collect()
}

/// `no_recent_scan`: breach when the latest successful snapshot shows no task ever started, or the latest task
/// started more than `max_age` ago. A start time in the future counts as age 0 (see [`future_start_skew`]).
pub fn no_recent_scan(p: &NoRecentScan, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    let stats = match latest_stats(history, now) {
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

/// How far in the future the latest successful snapshot's `last_task_start_time` lies, if it does: rules treat it
/// as age 0, and the caller logs it (rules do no I/O).
pub fn future_start_skew(history: &[Snapshot], now: DateTime<Utc>) -> Option<TimeDelta> {
    let start_ms = visible(history, now).iter().rev().find_map(|s| s.stats)?.last_task_start_time?;
    match DateTime::from_timestamp_millis(start_ms) {
        Some(start) if start > now => Some(start - now),
        Some(_) => None,
        None => Some(TimeDelta::MAX),
    }
}

/// `stuck_running`: breach when the latest successful snapshots form a run — consecutive successful snapshots with
/// `running_num >= 1` and one unchanged `last_task_start_time` — whose first snapshot is at least `for` old.
/// A changed start time ends a run (a new task started). Unknown while the run reaches back to the oldest snapshot
/// passed in and that one is younger than `for`: the run may have begun earlier.
pub fn stuck_running(p: &StuckRunning, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    let latest = match latest_stats(history, now) {
        Ok(s) => s,
        Err(unknown) => return unknown,
    };
    if latest.running_num == 0 {
        return Outcome::Ok;
    }
    let successes: Vec<(DateTime<Utc>, TaskStats)> =
        visible(history, now).iter().filter_map(|s| s.stats.map(|st| (s.polled_at, st))).collect();
    let in_run = |st: &TaskStats| st.running_num >= 1 && st.last_task_start_time == latest.last_task_start_time;
    let run_len = successes.iter().rev().take_while(|(_, st)| in_run(st)).count();
    // The latest snapshot is a success in the run, so the run is not empty and this index is in range.
    let first_of_run = successes.len() - run_len;
    let run_began = successes[first_of_run].0;
    let limit = delta(p.for_);
    let scan = task_type.human();
    if now - run_began >= limit {
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
    if first_of_run == 0 {
        return Outcome::unknown(format!(
            "history does not reach back {} (the oldest successful snapshot is {} old)",
            human_std(p.for_),
            human_duration(now - run_began)
        ));
    }
    Outcome::Ok
}

/// `total_stalled`: breach when a successful snapshot at or before `now - window` exists (the window is covered)
/// and `total_num` did not increase between any two consecutive successful snapshots from that one on. A decrease
/// is a counter reset: not progress, and not a stall breaker either.
pub fn total_stalled(p: &TotalStalled, task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    let latest = match latest_stats(history, now) {
        Ok(s) => s,
        Err(unknown) => return unknown,
    };
    let successes: Vec<(DateTime<Utc>, u64)> =
        visible(history, now).iter().filter_map(|s| s.stats.map(|st| (s.polled_at, st.total_num))).collect();
    let cutoff = ago(now, p.window);
    // Index of the newest success at or before the cutoff: the window's baseline.
    let Some(anchor) = successes.iter().rposition(|(at, _)| *at <= cutoff) else {
        let covered = successes.first().map_or(TimeDelta::zero(), |(at, _)| now - *at);
        return Outcome::unknown(format!(
            "history covers {} of the {} window",
            human_duration(covered),
            human_std(p.window)
        ));
    };
    let window = &successes[anchor..];
    if window.windows(2).any(|w| w[1].1 > w[0].1) {
        return Outcome::Ok;
    }
    // How long it has really been flat: back to the last increase we can see, or at least the whole history.
    let last_increase = successes[..=anchor].windows(2).rposition(|w| w[1].1 > w[0].1);
    let (flat_since, at_least) = match last_increase {
        Some(i) => (successes[i + 1].0, ""),
        None => (successes[0].0, "at least "),
    };
    let flat_for = human_duration(now - flat_since);
    let reset = window.windows(2).find(|w| w[1].1 < w[0].1);
    let scan = task_type.human();
    let summary = match reset {
        Some(w) => format!(
            "{scan} total has not increased for {at_least}{flat_for} (it dropped from {} to {}, a counter reset; \
             now {}); window {}",
            w[0].1,
            w[1].1,
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

/// `scan_failures`: over the latest task check in view (polls check the latest *finished* task on a series' first
/// poll and whenever a task finishes — see `poller`), breach when that task failed on some clusters or files
/// (HSS has no task-level "failed": only the failed counts say it; which ones and why is the alert's context); ok when it
/// failed on none, or no task has finished yet. Unknown while no check is in view, or when the latest check could
/// not see the task (its context says why), so a check that failed neither fires nor resolves.
pub fn scan_failures(task_type: TaskType, history: &[Snapshot], now: DateTime<Utc>) -> Outcome {
    let Some(check) = visible(history, now).iter().rev().find_map(|s| s.task.as_ref()) else {
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

/// `poll_failing`: ok when the latest poll succeeded; breach when it failed with `auth`/`forbidden` (at once: more
/// failed signatures lock the key), when the last `after` polls all failed, or when there has been no successful
/// poll for `for` (DESIGN.md). `for` counts from the last successful poll, not from the first failure: what matters
/// is how long scanwatch has not heard from HSS, and a slow schedule or scanwatch's own downtime before the first
/// failure makes that longer than the failures alone. With no success in the history, it counts from the first poll
/// passed in.
/// Unknown when there are no polls, or when every poll passed in failed but fewer than `after` and all younger than
/// `for` (a first start, or too little history to know).
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
    let polls = visible(history, now);
    let Some(latest) = polls.last() else {
        return Outcome::unknown("no polls yet");
    };
    if latest.ok() {
        return Outcome::Ok;
    }
    let streak = polls.iter().rev().take_while(|s| !s.ok()).count();
    // The last success is the poll just before the streak; without one, the first poll passed in.
    let silent_since = polls[polls.len().saturating_sub(streak + 1)].polled_at;
    let failures = if streak == 1 { "1 failed poll".to_string() } else { format!("{streak} failed polls") };
    let error = describe_failure(latest);
    match latest.error_kind {
        Some(ErrorKind::Auth) => {
            return Outcome::breach(format!("HSS rejects the account's credentials: {error}"), failures);
        }
        Some(ErrorKind::Forbidden) => {
            return Outcome::breach(format!("HSS denies access to {project}: {error}"), failures);
        }
        _ => {}
    }
    if u64::try_from(streak).unwrap_or(u64::MAX) >= u64::from(p.after) {
        let in_a_row =
            if streak == 1 { "the latest poll failed".to_string() } else { format!("{streak} polls failed in a row") };
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
    if streak == polls.len() {
        return Outcome::unknown(format!(
            "{failures} since the first poll passed in, {} ago; not enough to judge",
            human_duration(failing_for)
        ));
    }
    Outcome::Ok
}

/// Formats a span the way messages show it: `45s`, `12m`, `3h`, `3h20m`, `48h`, `3d`, `3d4h` (hours up to 3 days,
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

/// The latest snapshot's stats, or the `Unknown` a data rule answers when there are none or the latest poll failed.
fn latest_stats(history: &[Snapshot], now: DateTime<Utc>) -> Result<TaskStats, Outcome> {
    match visible(history, now).last() {
        None => Err(Outcome::unknown("no polls yet")),
        Some(s) => s.stats.ok_or_else(|| Outcome::unknown(HOLD_REASON)),
    }
}

/// "server (HTTP 503): Service Unavailable" from a failed snapshot.
fn describe_failure(s: &Snapshot) -> String {
    let Some(kind) = s.error_kind else {
        return "unclassified error".to_string();
    };
    let message = s.error_message.clone().unwrap_or_default();
    let described = PollError {
        kind,
        http_status: s.http_status,
        error_code: s.error_code.clone(),
        message,
        request_id: None,
        retry_after: None,
    }
    .to_string();
    match described.strip_suffix(": ") {
        Some(without_message) => without_message.to_string(),
        None => described,
    }
}

#[cfg(test)]
mod tests;
