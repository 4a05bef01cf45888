//! The rules as they were written before issue 13, over a whole history slice: the reference the incremental
//! [`super::SeriesState`] is checked against (`incremental_evaluation_agrees_with_the_reference_over_random_histories`).
//! Kept verbatim but for one change: a counter reset in `total_stalled`'s summary is the latest drop since the total
//! last grew (before: the first drop inside the window), which the incremental state can keep in O(1).

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::model::{ErrorKind, PollError, SeriesKey, Snapshot, TaskStats, TaskType};

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
    // The one change: the latest drop since the last increase, wherever it lies.
    let after_increase = &successes[last_increase.map_or(0, |i| i + 1)..];
    let reset = after_increase.windows(2).rfind(|w| w[1].1 < w[0].1);
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
