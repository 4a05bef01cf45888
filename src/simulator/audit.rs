//! The call log checked against the API budget by the simulator's own clock, independently of scanwatch's budget:
//! per identity, the most requests in any sliding window, how many arrived over the limit, and the 429 refusals;
//! per series (identity + path + query), how many polls and the gaps between consecutive ones.
//!
//! Every HSS request counts, whatever it was answered: the gateway refuses the 6th call with a 429, so counting only
//! admitted calls could never show a call over budget.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::CallRecord;

/// What one identity (an AK, an IAM user, a static token) sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityAudit {
    pub requests: usize,
    /// The most requests that arrived within any window (a request at `t` is in the window `(t - window, t]`).
    pub max_in_window: usize,
    /// Requests that arrived when `limit` requests of the same identity had already arrived within the window.
    pub over_budget: usize,
    /// Requests answered 429.
    pub throttled: usize,
}

/// The polls of one series: one identity asking for one path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesAudit {
    pub identity: String,
    pub path: String,
    pub query: String,
    /// Simulator times of the requests, oldest first.
    pub at: Vec<DateTime<Utc>>,
    /// Requests answered 200.
    pub ok: usize,
}

impl SeriesAudit {
    pub fn polls(&self) -> usize {
        self.at.len()
    }

    /// The time between consecutive polls.
    pub fn gaps(&self) -> Vec<Duration> {
        self.at.windows(2).map(|w| (w[1] - w[0]).to_std().unwrap_or(Duration::ZERO)).collect()
    }
}

/// The audit of a whole call log.
#[derive(Debug, Clone, Default)]
pub struct BudgetAudit {
    pub identities: BTreeMap<String, IdentityAudit>,
    /// Keyed by (identity, path, query).
    pub series: BTreeMap<(String, String, String), SeriesAudit>,
}

impl BudgetAudit {
    /// The most requests any identity sent within one window.
    pub fn max_in_window(&self) -> usize {
        self.identities.values().map(|i| i.max_in_window).max().unwrap_or(0)
    }

    pub fn over_budget(&self) -> usize {
        self.identities.values().map(|i| i.over_budget).sum()
    }

    pub fn throttled(&self) -> usize {
        self.identities.values().map(|i| i.throttled).sum()
    }

    /// Every gap between consecutive polls of every series, shortest first.
    pub fn gaps_sorted(&self) -> Vec<Duration> {
        let mut gaps: Vec<Duration> = self.series.values().flat_map(SeriesAudit::gaps).collect();
        gaps.sort_unstable();
        gaps
    }
}

/// Audits the task-statistics requests in `calls` (IAM logins and unknown paths are not part of the budget) against
/// at most `limit` requests per identity in any `window`. Requests that named no identity are counted under `-`.
pub fn audit(calls: &[CallRecord], window: Duration, limit: usize) -> BudgetAudit {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let mut per_identity: BTreeMap<String, Vec<&CallRecord>> = BTreeMap::new();
    let mut out = BudgetAudit::default();
    for call in calls.iter().filter(|c| c.path.starts_with("/v5/")) {
        let identity = call.identity.clone().unwrap_or_else(|| "-".to_string());
        per_identity.entry(identity.clone()).or_default().push(call);
        let series = out.series.entry((identity.clone(), call.path.clone(), call.query.clone())).or_insert_with(|| {
            SeriesAudit { identity, path: call.path.clone(), query: call.query.clone(), at: Vec::new(), ok: 0 }
        });
        series.at.push(call.at);
        series.ok += usize::from(call.status == Some(200));
    }
    for series in out.series.values_mut() {
        series.at.sort_unstable();
    }
    for (identity, mut requests) in per_identity {
        // The log is in arrival order up to the lock; sort so the window arithmetic does not depend on it.
        requests.sort_by_key(|c| c.at);
        let mut a = IdentityAudit { requests: requests.len(), ..IdentityAudit::default() };
        let mut first = 0;
        for (i, call) in requests.iter().enumerate() {
            while call.at - requests[first].at >= window {
                first += 1;
            }
            // Requests first..i arrived within the window ending at this one; i - first of them before it.
            a.max_in_window = a.max_in_window.max(i - first + 1);
            a.over_budget += usize::from(i - first >= limit);
            a.throttled += usize::from(call.status == Some(429));
        }
        out.identities.insert(identity, a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(identity: &str, project: &str, at_ms: i64, status: u16) -> CallRecord {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        CallRecord {
            at: start + chrono::Duration::milliseconds(at_ms),
            method: "GET".into(),
            path: format!("/v5/{project}/common/task-statistics"),
            query: "task_type=cluster_scan".into(),
            identity: Some(identity.into()),
            status: Some(status),
            error_code: None,
            request_id: String::new(),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn five_calls_a_minute_exactly_60_seconds_apart_are_within_budget() {
        let calls: Vec<_> = (0..20).map(|i| call("AK", &format!("p{}", i % 5), i * 12_000, 200)).collect();
        let a = audit(&calls, MINUTE, 5);
        assert_eq!(a.max_in_window(), 5);
        assert_eq!(a.over_budget(), 0);
        assert_eq!(a.series.len(), 5);
        assert!(a.series.values().all(|s| s.polls() == 4 && s.ok == 4));
        assert!(a.gaps_sorted().iter().all(|g| *g == MINUTE));
    }

    #[test]
    fn a_sixth_call_a_millisecond_inside_the_window_is_over_budget_even_when_refused() {
        let mut calls: Vec<_> = (0..5).map(|i| call("AK", "p", i * 1000, 200)).collect();
        calls.push(call("AK", "p", 59_999, 429));
        calls.push(call("OTHER", "p", 59_999, 200));
        let a = audit(&calls, MINUTE, 5);
        assert_eq!(a.identities["AK"], IdentityAudit { requests: 6, max_in_window: 6, over_budget: 1, throttled: 1 });
        assert_eq!(a.identities["OTHER"].over_budget, 0);
        assert_eq!((a.over_budget(), a.throttled()), (1, 1));
    }

    #[test]
    fn iam_logins_are_not_part_of_the_api_budget() {
        let mut calls: Vec<_> = (0..5).map(|i| call("AK", "p", i, 200)).collect();
        let mut login = call("AK", "p", 10, 201);
        login.path = "/v3/auth/tokens".into();
        calls.push(login);
        assert_eq!(audit(&calls, MINUTE, 5).max_in_window(), 5);
    }
}
