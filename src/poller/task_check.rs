//! The task check behind `scanwatch`'s `scan_failures` rule: which task finished last, and which of its clusters or
//! files failed and why (ListTasks, then ListTaskResources for the failed ones).
//!
//! It costs calls only when something changed: on a series' first poll ever, and whenever a task has finished since
//! the previous poll (the total grew, or fewer tasks run) — judged from the stored history, so a timer's `poll` every
//! five minutes costs no more than the daemon. Each of those APIs allows 5 calls a minute per user and per client
//! IP, apart from task-statistics' own 5, so a check never waits: without a slot in both budgets it is recorded as
//! not made (the rule holds its state) and owed to the next poll, and the statistics polls go on at their pace.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::hss::budget::RateBudget;
use crate::hss::client::{Account, HssClient};
use crate::hss::task_resources::{ScanStatus, TaskResourcesRequest};
use crate::hss::tasks::{ListTasksRequest, SortDir, TaskStatus};
use crate::model::{AlertContext, TaskInfo, TaskStats};
use crate::store::{Store, StoreError};

use super::PolledSeries;

/// How many failed clusters or files a check fetches (messages list up to five).
const FAILED_LISTED: u32 = 10;

/// The two task APIs' budgets for one account, or for one endpoint host (shared by its accounts).
#[derive(Debug)]
pub struct TaskApiBudgets {
    tasks: RateBudget,
    resources: RateBudget,
}

impl TaskApiBudgets {
    pub fn new(calls_per_minute: u32) -> Self {
        TaskApiBudgets { tasks: RateBudget::new(calls_per_minute), resources: RateBudget::new(calls_per_minute) }
    }
}

/// Takes a slot in both budgets now, or neither.
fn take(account: &RateBudget, host: &RateBudget) -> bool {
    match (account.try_admit(), host.try_admit()) {
        (Ok(_), Ok(_)) => true,
        (Ok(a), Err(_)) => {
            account.cancel(a);
            false
        }
        (Err(_), Ok(h)) => {
            host.cancel(h);
            false
        }
        (Err(_), Err(_)) => false,
    }
}

/// The `unavailable` of a check that was not made for want of budget: stored, so it is owed across processes.
pub const NOT_CHECKED: &str = "not checked: the task APIs' budget (5 calls a minute) is spent; the next poll checks";

/// Per series: the last statistics seen and whether a check is owed — read from the store on a series' first poll
/// in this process, then kept here.
#[derive(Debug, Default)]
pub struct TaskChecks {
    seen: Mutex<HashMap<i64, (Option<TaskStats>, bool)>>,
}

impl TaskChecks {
    /// Whether this successful poll calls for a check: none was ever made, one is owed (skipped, or HSS answered
    /// an error), or a task finished since the previous successful poll (the total grew, or fewer run).
    pub async fn due(&self, store: &Store, series_id: i64, stats: &TaskStats) -> Result<bool, StoreError> {
        let known = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&series_id).copied();
        let (last, owed) = match known {
            Some(k) => k,
            None => {
                let (ok, check) = store.latest_ok_and_check(series_id).await?;
                let Some(check) = check else { return Ok(true) };
                (ok.and_then(|s| s.stats), check.task.is_none() && check.unavailable.is_some())
            }
        };
        Ok(owed || last.is_none_or(|l| stats.total_num > l.total_num || stats.running_num < l.running_num))
    }

    /// What a series' stored rule state says, at start: the latest successful statistics and whether a check is
    /// owed, as [`TaskChecks::due`] would read them from the store. Without a check ever made, a check is due.
    pub fn prime(&self, series_id: i64, state: Option<&crate::rules::SeriesState>) {
        let known = match state.and_then(|s| s.task.as_ref().map(|check| (s.last_ok, check))) {
            Some((last_ok, check)) => (last_ok, check.task.is_none() && check.unavailable.is_some()),
            None => (None, false),
        };
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(series_id, known);
    }

    /// Remembers this poll's statistics, and whether the check it called for is still owed.
    pub fn done(&self, series_id: i64, stats: TaskStats, owed: bool) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(series_id, (Some(stats), owed));
    }
}

/// The latest finished task of `s` and its failed resources, within the budgets; with `unavailable` set to
/// [`NOT_CHECKED`] when a budget had no slot, or to HSS's error.
pub async fn check(
    client: &HssClient,
    account: &Account,
    s: &PolledSeries,
    budgets: (&TaskApiBudgets, &TaskApiBudgets),
    now: DateTime<Utc>,
) -> AlertContext {
    let (mine, host) = budgets;
    if !take(&mine.tasks, &host.tasks) {
        return AlertContext { unavailable: Some(NOT_CHECKED.into()), ..AlertContext::default() };
    }
    let task = match latest_task(client, account, s, Some(TaskStatus::Finished), now).await {
        Ok(Some(task)) => task,
        // Nothing has finished yet: nothing has failed.
        Ok(None) => return AlertContext::default(),
        Err(e) => {
            tracing::warn!(series = %s.key, error = %e, "task check failed");
            return AlertContext { unavailable: Some(e), ..AlertContext::default() };
        }
    };
    with_failures(client, account, s, budgets, task, None, now).await
}

/// The newest task of `s` (in `status`, if given): ListTasks sorted by start time, newest first.
async fn latest_task(
    client: &HssClient,
    account: &Account,
    s: &PolledSeries,
    status: Option<TaskStatus>,
    now: DateTime<Utc>,
) -> Result<Option<TaskInfo>, String> {
    let req = ListTasksRequest {
        endpoint: &s.endpoint,
        project_id: &s.key.project_id,
        enterprise_project_id: s.key.enterprise_project_id.as_deref(),
        offset: 0,
        limit: 10,
        task_type: s.key.task_type,
        task_status: status,
        sort: Some(SortDir::Desc),
        task_id: None,
    };
    match client.list_tasks(account, &req, now).await {
        Ok(t) => Ok(t.items.into_iter().next()),
        Err(e) => Err(format!("ListTasks: {e}")),
    }
}

/// `task` with its failed clusters or files (ListTaskResources, within the budgets), from `cache` for a finished
/// task seen before, and kept there.
async fn with_failures(
    client: &HssClient,
    account: &Account,
    s: &PolledSeries,
    (mine, host): (&TaskApiBudgets, &TaskApiBudgets),
    task: TaskInfo,
    cache: Option<&ResourceCache>,
    now: DateTime<Utc>,
) -> AlertContext {
    let mut context = AlertContext { failed_total: task.failed, ..AlertContext::default() };
    let finished = task.task_status == "finished";
    let cached = cache.filter(|_| finished).and_then(|c| c.get(&task.task_id));
    if let Some((failed, total)) = cached {
        (context.failed, context.failed_total) = (failed, total);
    } else if task.failed > 0 {
        if take(&mine.resources, &host.resources) {
            let req = TaskResourcesRequest {
                endpoint: &s.endpoint,
                project_id: &s.key.project_id,
                enterprise_project_id: s.key.enterprise_project_id.as_deref(),
                task_id: &task.task_id,
                task_type: s.key.task_type,
                scan_status: Some(ScanStatus::Failed),
                offset: 0,
                limit: FAILED_LISTED,
            };
            match client.list_task_resources(account, &req, now).await {
                Ok(r) => {
                    context.failed_total = r.total_num.max(task.failed);
                    context.failed = r.items.into_iter().map(|r| r.resource).collect();
                    if let Some(cache) = cache.filter(|_| finished) {
                        cache.put(task.task_id.clone(), (context.failed.clone(), context.failed_total));
                    }
                }
                Err(e) => context.unavailable = Some(format!("ListTaskResources: {e}")),
            }
        } else {
            context.unavailable =
                Some("the failed clusters or files were not fetched: the task APIs' budget is spent".into());
        }
    }
    context.task = Some(task);
    context
}

/// How long fetching an alert's context may take before the alert goes out without it.
pub const CONTEXT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A finished task's failed clusters or files, cached by task id: they no longer change, and a reminder every few
/// hours about the same task needs no new call. Holds at most [`ResourceCache::CAPACITY`] tasks, dropping the
/// oldest: every finished task with failures behind an alert adds one, so unbounded it grew for the life of the
/// daemon (the soak benchmark, BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct ResourceCache {
    finished: Mutex<FinishedTasks>,
}

type Failures = (Vec<crate::model::FailedResource>, u64);

#[derive(Debug, Default)]
struct FinishedTasks {
    by_id: HashMap<String, Failures>,
    /// Task ids, oldest first.
    order: std::collections::VecDeque<String>,
}

impl ResourceCache {
    /// A task per alerting series and then some: a reminder finds its task here unless hundreds of other
    /// tasks with failures finished since.
    pub const CAPACITY: usize = 512;

    fn get(&self, task_id: &str) -> Option<Failures> {
        self.finished.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(task_id).cloned()
    }

    fn put(&self, task_id: String, failures: Failures) {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if f.by_id.insert(task_id.clone(), failures).is_none() {
            f.order.push_back(task_id);
        }
        while f.order.len() > Self::CAPACITY {
            if let Some(oldest) = f.order.pop_front() {
                f.by_id.remove(&oldest);
            }
        }
    }

    /// How many tasks are held.
    pub fn len(&self) -> usize {
        self.finished.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The task behind each of `rules`' alerts (`no_recent_scan`, `stuck_running`, `total_stalled` firing or
/// reminding): the running tasks for `stuck_running`, otherwise the latest task, with its failed clusters or files.
/// Best effort within the budgets and [`CONTEXT_TIMEOUT`]: without a slot, or on an error, the context says why.
pub async fn contexts(
    client: &HssClient,
    account: &Account,
    s: &PolledSeries,
    budgets: (&TaskApiBudgets, &TaskApiBudgets),
    rules: &[crate::rules::RuleName],
    cache: &ResourceCache,
    now: DateTime<Utc>,
) -> Vec<(crate::rules::RuleName, AlertContext)> {
    use crate::rules::RuleName;
    let mut out: Vec<(RuleName, AlertContext)> = Vec::new();
    // One question per kind: "which tasks run" (stuck_running), "which task came last" (the others).
    for running in [true, false] {
        let wanted: Vec<RuleName> = rules
            .iter()
            .copied()
            .filter(|r| matches!(r, RuleName::NoRecentScan | RuleName::StuckRunning | RuleName::TotalStalled))
            .filter(|r| (*r == RuleName::StuckRunning) == running)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let context =
            match tokio::time::timeout(CONTEXT_TIMEOUT, task_behind(client, account, s, budgets, running, cache, now))
                .await
            {
                Ok(c) => c,
                Err(_) => AlertContext {
                    unavailable: Some(format!("HSS did not answer within {}s", CONTEXT_TIMEOUT.as_secs())),
                    ..AlertContext::default()
                },
            };
        out.extend(wanted.into_iter().map(|r| (r, context.clone())));
    }
    out
}

async fn task_behind(
    client: &HssClient,
    account: &Account,
    s: &PolledSeries,
    budgets: (&TaskApiBudgets, &TaskApiBudgets),
    running: bool,
    cache: &ResourceCache,
    now: DateTime<Utc>,
) -> AlertContext {
    let (mine, host) = budgets;
    if !take(&mine.tasks, &host.tasks) {
        return AlertContext {
            unavailable: Some("the task APIs' budget (5 calls a minute) is spent".into()),
            ..AlertContext::default()
        };
    }
    match latest_task(client, account, s, running.then_some(TaskStatus::Running), now).await {
        Ok(Some(task)) => with_failures(client, account, s, budgets, task, Some(cache), now).await,
        Ok(None) => {
            let what = if running { "no task is running" } else { "HSS lists no task" };
            AlertContext { unavailable: Some(what.into()), ..AlertContext::default() }
        }
        Err(e) => AlertContext { unavailable: Some(e), ..AlertContext::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_cache_keeps_the_newest_tasks_up_to_its_capacity() {
        let cache = ResourceCache::default();
        let n = ResourceCache::CAPACITY + 10;
        for i in 0..n {
            cache.put(format!("task-{i}"), (Vec::new(), i as u64));
            // The same task again neither grows it nor pushes another out.
            cache.put(format!("task-{i}"), (Vec::new(), i as u64));
        }
        assert_eq!(cache.len(), ResourceCache::CAPACITY);
        assert_eq!(cache.get("task-0"), None, "the oldest went first");
        assert_eq!(cache.get("task-9"), None);
        assert_eq!(cache.get("task-10").map(|f| f.1), Some(10));
        assert_eq!(cache.get(&format!("task-{}", n - 1)).map(|f| f.1), Some(n as u64 - 1));
    }
}
