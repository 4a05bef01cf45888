//! `scanwatch tasks --target T`: the target's scan tasks (ListTasks), or with `--task ID` that task's clusters or
//! files (ListTaskResources), live from HSS. Each API allows 5 calls a minute per user and per client IP, so every
//! page passes both budgets, and the command says when it waits for one.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::hss::Page;
use crate::hss::budget::RateBudget;
use crate::hss::task_resources::{ScanStatus, TaskResource, TaskResourcesRequest};
use crate::hss::tasks::{LIMIT_RANGE, ListTasksRequest, SortDir, TaskStatus};
use crate::model::{PollError, TaskInfo, TaskType};
use crate::output::{self, Format};

/// What `tasks` was asked for.
#[derive(Debug, Clone)]
pub struct TasksQuery {
    pub target: String,
    pub task_type: Option<TaskType>,
    pub status: Option<TaskStatus>,
    pub limit: u32,
    pub task: Option<String>,
    pub format: Format,
}

/// One task, with the field names of DESIGN.md.
#[derive(Debug, Clone, Serialize)]
pub struct TaskJson {
    pub task_id: String,
    pub task_name: String,
    pub task_type: String,
    pub trigger_type: String,
    pub task_status: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub estimated_minutes: Option<i64>,
    pub scanning: u64,
    pub success: u64,
    pub failed: u64,
}

impl From<&TaskInfo> for TaskJson {
    fn from(t: &TaskInfo) -> Self {
        TaskJson {
            task_id: t.task_id.clone(),
            task_name: t.task_name.clone(),
            task_type: t.task_type.as_str().to_string(),
            trigger_type: t.trigger_type.clone(),
            task_status: t.task_status.clone(),
            start_time: t.start_time.map(output::rfc3339_millis),
            end_time: t.end_time.map(output::rfc3339_millis),
            estimated_minutes: t.estimated_minutes,
            scanning: t.scanning,
            success: t.success,
            failed: t.failed,
        }
    }
}

/// One cluster or file of a task.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceJson {
    pub name: String,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub scan_status: String,
    pub failed_reason: String,
}

impl From<&TaskResource> for ResourceJson {
    fn from(r: &TaskResource) -> Self {
        ResourceJson {
            name: r.resource.name.clone(),
            id: r.resource.id.clone(),
            kind: r.resource.kind.clone(),
            scan_status: r.scan_status.clone(),
            failed_reason: r.resource.failed_reason.clone(),
        }
    }
}

/// The budgets one API's calls pass in this process: the account's and the endpoint host's.
struct Budgets {
    account: RateBudget,
    host: RateBudget,
}

impl Budgets {
    fn new(config: &Config, account_calls_per_minute: u32) -> Self {
        Budgets {
            account: RateBudget::new(account_calls_per_minute),
            host: RateBudget::new(config.schedule.host_calls_per_minute),
        }
    }

    /// Waits for a slot in both, saying so on stderr when it must wait.
    async fn admit(&self, api: &str) {
        loop {
            let wait = match (self.account.try_admit(), self.host.try_admit()) {
                (Ok(_), Ok(_)) => return,
                (Ok(a), Err(w)) => {
                    self.account.cancel(a);
                    w
                }
                (Err(w), Ok(h)) => {
                    self.host.cancel(h);
                    w
                }
                (Err(a), Err(h)) => a.max(h),
            };
            eprintln!(
                "waiting {} for the {api} API budget (HSS allows 5 calls a minute per user and per client IP)",
                crate::config::format_duration(Duration::from_secs(wait.as_secs().max(1)))
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Runs `tasks` and returns what to print.
pub async fn run(config: &Config, clock: &dyn Clock, q: &TasksQuery) -> anyhow::Result<String> {
    let Some(target) = config.targets.iter().find(|t| t.name == q.target) else {
        let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!("no target named `{}` (targets: {})", q.target, names.join(", "));
    };
    let account = config
        .account(&target.account)
        .ok_or_else(|| anyhow::anyhow!("target `{}` names unknown account `{}`", target.name, target.account))?;
    let task_types: Vec<TaskType> = match q.task_type {
        Some(t) if target.task_types.contains(&t) => vec![t],
        Some(t) => anyhow::bail!("target `{}` does not poll {} (it polls {:?})", target.name, t, target.task_types),
        None => target.task_types.clone(),
    };
    let client = crate::poller::hss_client(config).context("cannot build the HSS client")?;
    let hss_account = crate::poller::hss_account(account, &target.region);
    let eps = target.enterprise_project_id.as_deref();

    let limit = q.limit as usize;
    if let Some(task_id) = &q.task {
        // One task's resources; the task's type decides which list HSS answers with.
        let task_type = task_types.first().copied().unwrap_or(TaskType::ClusterScan);
        let budgets = Budgets::new(config, account.calls_per_minute);
        let resources = all_pages(limit, &budgets, "ListTaskResources", async |offset, size| {
            let req = TaskResourcesRequest {
                endpoint: &target.endpoint,
                project_id: &target.project_id,
                enterprise_project_id: eps,
                task_id,
                task_type,
                scan_status: None::<ScanStatus>,
                offset,
                limit: size,
            };
            client.list_task_resources(&hss_account, &req, clock.now()).await
        })
        .await
        .map_err(|e| anyhow::anyhow!("ListTaskResources for task {task_id}: {e}"))?;
        let rows: Vec<ResourceJson> = resources.iter().map(ResourceJson::from).collect();
        let headers = ["name", "id", "kind", "scan_status", "failed_reason"];
        return Ok(match q.format {
            Format::Table => output::render(q.format, &["NAME", "ID", "KIND", "STATUS", "FAILED_REASON"], &rows, |r| {
                vec![
                    r.name.clone(),
                    r.id.clone().unwrap_or_default(),
                    r.kind.clone().unwrap_or_default(),
                    r.scan_status.clone(),
                    crate::model::excerpt(&r.failed_reason, 160),
                ]
            }),
            _ => output::render(q.format, &headers, &rows, |_| Vec::new()),
        });
    }

    let budgets = Budgets::new(config, account.calls_per_minute);
    let mut rows: Vec<TaskJson> = Vec::new();
    for task_type in task_types {
        let tasks = all_pages(limit, &budgets, "ListTasks", async |offset, size| {
            let req = ListTasksRequest {
                endpoint: &target.endpoint,
                project_id: &target.project_id,
                enterprise_project_id: eps,
                offset,
                limit: size,
                task_type,
                task_status: q.status,
                sort: Some(SortDir::Desc),
                task_id: None,
            };
            client.list_tasks(&hss_account, &req, clock.now()).await
        })
        .await
        .map_err(|e| anyhow::anyhow!("ListTasks ({task_type}) for target `{}`: {e}", target.name))?;
        rows.extend(tasks.iter().map(TaskJson::from));
    }
    let headers = [
        "task_id",
        "task_name",
        "task_type",
        "trigger_type",
        "task_status",
        "start_time",
        "end_time",
        "estimated_minutes",
        "scanning",
        "success",
        "failed",
    ];
    Ok(match q.format {
        Format::Table => output::render(
            q.format,
            &["TASK_ID", "NAME", "TYPE", "TRIGGER", "STATUS", "START", "END", "EST_MIN", "SCANNING", "OK", "FAILED"],
            &rows,
            |t| {
                vec![
                    t.task_id.clone(),
                    crate::model::excerpt(&t.task_name, 40),
                    t.task_type.clone(),
                    t.trigger_type.clone(),
                    t.task_status.clone(),
                    t.start_time.clone().unwrap_or_else(|| "-".into()),
                    t.end_time.clone().unwrap_or_else(|| "-".into()),
                    t.estimated_minutes.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    t.scanning.to_string(),
                    t.success.to_string(),
                    t.failed.to_string(),
                ]
            },
        ),
        _ => output::render(q.format, &headers, &rows, |_| Vec::new()),
    })
}

/// Up to `limit` items, a page at a time (HSS pages 10 to 200), each page within `budgets`.
async fn all_pages<T>(
    limit: usize,
    budgets: &Budgets,
    api: &str,
    mut page: impl AsyncFnMut(u32, u32) -> Result<Page<T>, PollError>,
) -> Result<Vec<T>, PollError> {
    let mut items = Vec::new();
    let mut offset = 0u32;
    while items.len() < limit {
        budgets.admit(api).await;
        let size = page_size(limit - items.len());
        let answer = page(offset, size).await?;
        let got = answer.items.len();
        offset = offset.saturating_add(u32::try_from(got).unwrap_or(u32::MAX));
        items.extend(answer.items);
        if got < size as usize || u64::from(offset) >= answer.total_num {
            break;
        }
    }
    items.truncate(limit);
    Ok(items)
}

/// HSS's page size for `want` more rows: 10 to 200.
fn page_size(want: usize) -> u32 {
    u32::try_from(want).unwrap_or(u32::MAX).clamp(*LIMIT_RANGE.start(), *LIMIT_RANGE.end())
}
