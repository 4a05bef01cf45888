//! The call log checked against the API budget by the simulator's own clock, independently of scanwatch's budget.
//! HSS limits each API separately, per user and per client IP, so the audit does too: per (identity, API) and per
//! (source IP, API), the most requests in any sliding window, how many arrived over the limit, and the 429 refusals;
//! per series (identity + path + query), how many polls and the gaps between consecutive ones.
//!
//! Every HSS request counts, whatever it was answered: the gateway refuses the 6th call with a 429, so counting only
//! admitted calls could never show a call over budget.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Api, CallRecord};

/// What one identity (an AK, an IAM user, a static token) or one source IP sent, to one API or (in
/// [`BudgetAudit::identities`]) to all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityAudit {
    pub requests: usize,
    /// The most requests that arrived within any window (a request at `t` is in the window `(t - window, t]`).
    pub max_in_window: usize,
    /// Requests that arrived when `limit` requests of the same key had already arrived within the window.
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
    /// Per identity, over all its APIs: requests, over-budget and throttled summed, `max_in_window` the largest of
    /// any one API (the limit is per API).
    pub identities: BTreeMap<String, IdentityAudit>,
    /// Per (identity, API): what the per-user limit applies to.
    pub by_identity_api: BTreeMap<(String, Api), IdentityAudit>,
    /// Per (source IP, API), across identities: what the per-IP limit applies to. `-` when the address is unknown.
    pub by_ip_api: BTreeMap<(String, Api), IdentityAudit>,
    /// Keyed by (identity, path, query).
    pub series: BTreeMap<(String, String, String), SeriesAudit>,
}

impl BudgetAudit {
    /// The most requests any identity sent to one API within one window.
    pub fn max_in_window(&self) -> usize {
        self.identities.values().map(|i| i.max_in_window).max().unwrap_or(0)
    }

    pub fn over_budget(&self) -> usize {
        self.identities.values().map(|i| i.over_budget).sum()
    }

    pub fn throttled(&self) -> usize {
        self.identities.values().map(|i| i.throttled).sum()
    }

    /// The most requests any source IP sent to one API within one window.
    pub fn ip_max_in_window(&self) -> usize {
        self.by_ip_api.values().map(|i| i.max_in_window).max().unwrap_or(0)
    }

    /// Requests over the per-IP limit given to [`audit_with`].
    pub fn ip_over_budget(&self) -> usize {
        self.by_ip_api.values().map(|i| i.over_budget).sum()
    }

    /// Every gap between consecutive polls of every series, shortest first.
    pub fn gaps_sorted(&self) -> Vec<Duration> {
        let mut gaps: Vec<Duration> = self.series.values().flat_map(SeriesAudit::gaps).collect();
        gaps.sort_unstable();
        gaps
    }
}

/// Audits the HSS requests in `calls` (IAM logins and unknown paths are not part of the budget) against at most
/// `limit` requests per identity and API, and per source IP and API, in any `window`. Requests that named no
/// identity are counted under `-`.
pub fn audit(calls: &[CallRecord], window: Duration, limit: usize) -> BudgetAudit {
    audit_with(calls, window, limit, limit)
}

/// [`audit`] with a per-IP limit of its own.
pub fn audit_with(calls: &[CallRecord], window: Duration, limit: usize, ip_limit: usize) -> BudgetAudit {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let mut per_identity: BTreeMap<(String, Api), Vec<&CallRecord>> = BTreeMap::new();
    let mut per_ip: BTreeMap<(String, Api), Vec<&CallRecord>> = BTreeMap::new();
    let mut out = BudgetAudit::default();
    for call in calls {
        let Some(api) = call.api.filter(|a| a.is_hss()) else { continue };
        let identity = call.identity.clone().unwrap_or_else(|| "-".to_string());
        let ip = call.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "-".to_string());
        per_identity.entry((identity.clone(), api)).or_default().push(call);
        per_ip.entry((ip, api)).or_default().push(call);
        let series = out.series.entry((identity.clone(), call.path.clone(), call.query.clone())).or_insert_with(|| {
            SeriesAudit { identity, path: call.path.clone(), query: call.query.clone(), at: Vec::new(), ok: 0 }
        });
        series.at.push(call.at);
        series.ok += usize::from(call.status == Some(200));
    }
    for series in out.series.values_mut() {
        series.at.sort_unstable();
    }
    for (key, requests) in per_identity {
        let a = window_audit(requests, window, limit);
        let total = out.identities.entry(key.0.clone()).or_default();
        total.requests += a.requests;
        total.max_in_window = total.max_in_window.max(a.max_in_window);
        total.over_budget += a.over_budget;
        total.throttled += a.throttled;
        out.by_identity_api.insert(key, a);
    }
    for (key, requests) in per_ip {
        out.by_ip_api.insert(key, window_audit(requests, window, ip_limit));
    }
    out
}

/// The sliding-window figures of one key's requests.
fn window_audit(mut requests: Vec<&CallRecord>, window: chrono::Duration, limit: usize) -> IdentityAudit {
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
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(identity: &str, project: &str, at_ms: i64, status: u16) -> CallRecord {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        CallRecord {
            at: start + chrono::Duration::milliseconds(at_ms),
            api: Some(Api::TaskStatistics),
            peer: Some(([127, 0, 0, 1], 40000).into()),
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
        login.api = Some(Api::IamTokens);
        calls.push(login);
        assert_eq!(audit(&calls, MINUTE, 5).max_in_window(), 5);
    }

    #[test]
    fn each_api_has_its_own_budget_per_identity_and_per_ip() {
        // One AK: 5 statistics calls and 5 ListTasks calls in a minute — within budget, the APIs count apart.
        let mut calls: Vec<_> = (0..5).map(|i| call("AK", "p", i * 1000, 200)).collect();
        for i in 0..5 {
            let mut c = call("AK", "p", 10_000 + i * 1000, 200);
            c.api = Some(Api::ListTasks);
            c.path = "/v5/p/common/tasks/batch-query".into();
            calls.push(c);
        }
        let a = audit(&calls, MINUTE, 5);
        assert_eq!((a.max_in_window(), a.over_budget()), (5, 0));
        assert_eq!(a.identities["AK"].requests, 10);
        assert_eq!(a.by_identity_api[&("AK".to_string(), Api::ListTasks)].requests, 5);

        // Two more AKs from the same address: each within its own 5, the address over its 5.
        for (j, ak) in ["B", "C"].into_iter().enumerate() {
            for i in 0..3 {
                calls.push(call(ak, "p", 20_000 + (j as i64) * 5000 + i * 1000, 200));
            }
        }
        let a = audit_with(&calls, MINUTE, 5, 5);
        assert_eq!(a.over_budget(), 0, "no identity is over its budget");
        let ip = a.by_ip_api[&("127.0.0.1".to_string(), Api::TaskStatistics)].clone();
        assert_eq!((ip.requests, ip.max_in_window, ip.over_budget), (11, 11, 6));
        assert_eq!((a.ip_max_in_window(), a.ip_over_budget()), (11, 6));
        assert_eq!(a.by_ip_api[&("127.0.0.1".to_string(), Api::ListTasks)].over_budget, 0);
    }
}
