//! Scan tasks and the clusters or files they scanned: what ListTasks and ListTaskResources answer.
//!
//! A task is scripted by its lifetime in scenario time (`created` → `start` → `end`) and by the state it settles in
//! (its counts and resources as it ends, or, without `end`, as it stays). Its status and numbers at any moment are
//! derived from that, so a test can advance the clock through a task's life. The request side (query, body, filters,
//! paging) is pure too: [`list_tasks`] and [`list_resources`] turn a parsed request and a moment into the JSON body.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::scenario::{ScenarioError, duration, invalid, non_empty};
use crate::model::TaskType;

/// `limit` bounds of both APIs (hss-api.md §4).
pub const MIN_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 200;
pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_OFFSET: u64 = 2_000_000;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value on the wire and in scenario files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }

            fn choices() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" | ")
            }
        }
    };
}

wire_enum!(
    /// How a task was started.
    TriggerType { Manual = "manual", Schedule = "schedule" }
);
wire_enum!(
    /// A task's status. HSS has no "failed" task: failure shows in the counts and the resources.
    TaskStatus { Ready = "ready", Running = "running", Finished = "finished" }
);
wire_enum!(
    /// A cluster's, a file's or a scan detail's status.
    ScanStatus { Scanning = "scanning", Success = "success", Failed = "failed" }
);
wire_enum!(
    /// What a cluster scan checks.
    ScanType { ClusterVul = "cluster_vul", RiskAssessment = "risk_assessment", Benchmark = "benchmark" }
);
wire_enum!(
    /// What an IaC scan reads.
    FileType { Dockerfile = "dockerfile", K8sYaml = "k8s_yaml" }
);
wire_enum!(
    /// Where a cluster runs.
    ClusterType {
        Cce = "cce",
        Ali = "ali",
        Tencent = "tencent",
        Azure = "azure",
        Aws = "aws",
        SelfBuiltHw = "self_built_hw",
        SelfBuiltIdc = "self_built_idc",
    }
);

/// One scripted scan task of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub task_id: String,
    pub task_name: String,
    pub trigger_type: TriggerType,
    /// Scenario time the task appears, as `ready` until `start`.
    pub created: Duration,
    pub start: Duration,
    /// `None`: still running, forever.
    pub end: Option<Duration>,
    /// HSS's estimate of the run's length; `estimated_time` counts it down while the task runs.
    pub estimated_minutes: u64,
    /// cluster_scan: what the task scans.
    pub scan_types: Vec<ScanType>,
    /// iac_scan: the file type scanned.
    pub file_type: FileType,
    /// The counts the task settles in: when it ends, or from its start if it never does.
    pub counts: Counts,
    pub clusters: Vec<Cluster>,
    pub files: Vec<IacFile>,
}

/// Resources scanning, done, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub scanning: u64,
    pub success: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub id: String,
    pub cluster_type: ClusterType,
    pub version: Option<String>,
    pub scan_status: ScanStatus,
    pub details: Vec<ScanDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanDetail {
    pub scan_type: ScanType,
    pub status: ScanStatus,
    pub failed_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IacFile {
    pub name: String,
    pub id: String,
    pub file_type: FileType,
    pub chart_name: Option<String>,
    pub file_size: u64,
    pub scan_status: ScanStatus,
    pub failed_reason: Option<String>,
}

impl Task {
    /// The task's status at scenario time `t`; `None` before it was created.
    pub fn status_at(&self, t: Duration) -> Option<TaskStatus> {
        if t < self.created {
            None
        } else if t < self.start {
            Some(TaskStatus::Ready)
        } else if self.end.is_some_and(|end| t >= end) {
            Some(TaskStatus::Finished)
        } else {
            Some(TaskStatus::Running)
        }
    }

    /// Whether the task shows its settled state at `t`: once finished, or from its start if it never ends.
    fn settled(&self, status: TaskStatus) -> bool {
        status == TaskStatus::Finished || (status == TaskStatus::Running && self.end.is_none())
    }

    /// The counts at `t`: none while ready, everything scanning while a task that will end runs, then the settled
    /// counts.
    pub fn counts_at(&self, status: TaskStatus) -> Counts {
        match status {
            TaskStatus::Ready => Counts::default(),
            s if self.settled(s) => self.counts,
            _ => Counts {
                scanning: self.counts.scanning + self.counts.success + self.counts.failed,
                success: 0,
                failed: 0,
            },
        }
    }
}

// ---- the scenario file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTask {
    task_id: String,
    task_name: String,
    trigger_type: Option<TriggerType>,
    created: Option<String>,
    start: String,
    end: Option<String>,
    estimated_minutes: Option<u64>,
    scan_types: Option<Vec<ScanType>>,
    file_type: Option<FileType>,
    scanning: Option<u64>,
    success: Option<u64>,
    failed: Option<u64>,
    #[serde(default)]
    clusters: Vec<RawCluster>,
    #[serde(default)]
    files: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    cluster_name: String,
    cluster_id: Option<String>,
    cluster_type: Option<ClusterType>,
    cluster_version: Option<String>,
    scan_status: ScanStatus,
    #[serde(default)]
    scan_details: Vec<RawScanDetail>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScanDetail {
    scan_type: ScanType,
    status: ScanStatus,
    failed_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    file_name: String,
    file_id: Option<String>,
    file_type: Option<FileType>,
    chart_name: Option<String>,
    file_size: Option<u64>,
    scan_status: ScanStatus,
    failed_reason: Option<String>,
}

/// A `failed_reason` is required on what failed and refused on what did not.
fn reason(key: &str, status: ScanStatus, reason: Option<String>) -> Result<Option<String>, ScenarioError> {
    match (status, reason) {
        (ScanStatus::Failed, Some(r)) => {
            non_empty(key, &r)?;
            Ok(Some(r))
        }
        (ScanStatus::Failed, None) => Err(invalid(key, "is required when the status is \"failed\"")),
        (_, Some(_)) => Err(invalid(key, "only a \"failed\" scan has a failed_reason")),
        (_, None) => Ok(None),
    }
}

/// Validates the tasks of the series at `key` (`series[0]`); `ids` holds the task ids seen so far in the scenario.
pub(super) fn validate_tasks(
    key: &str,
    task_type: TaskType,
    raw: Vec<RawTask>,
    ids: &mut HashSet<String>,
) -> Result<Vec<Task>, ScenarioError> {
    raw.into_iter().enumerate().map(|(i, t)| validate_task(&format!("{key}.tasks[{i}]"), task_type, t, ids)).collect()
}

fn validate_task(
    key: &str,
    task_type: TaskType,
    raw: RawTask,
    ids: &mut HashSet<String>,
) -> Result<Task, ScenarioError> {
    non_empty(&format!("{key}.task_id"), &raw.task_id)?;
    if !ids.insert(raw.task_id.clone()) {
        return Err(invalid(format!("{key}.task_id"), format!("task {} is listed twice in the scenario", raw.task_id)));
    }
    non_empty(&format!("{key}.task_name"), &raw.task_name)?;
    let start = duration(&format!("{key}.start"), &raw.start)?;
    let created = match &raw.created {
        Some(v) => duration(&format!("{key}.created"), v)?,
        None => start,
    };
    if created > start {
        return Err(invalid(format!("{key}.created"), "a task is created before (or when) it starts"));
    }
    let end = match &raw.end {
        Some(v) => Some(duration(&format!("{key}.end"), v)?),
        None => None,
    };
    if let Some(end) = end
        && end <= start
    {
        return Err(invalid(format!("{key}.end"), "must be after `start`"));
    }

    let (wrong, other) = match task_type {
        TaskType::ClusterScan => {
            ([("files", !raw.files.is_empty()), ("file_type", raw.file_type.is_some())], "an iac_scan series")
        }
        TaskType::IacScan => (
            [("clusters", !raw.clusters.is_empty()), ("scan_types", raw.scan_types.is_some())],
            "a cluster_scan series",
        ),
    };
    if let Some((field, _)) = wrong.iter().find(|(_, set)| *set) {
        return Err(invalid(format!("{key}.{field}"), format!("belongs to a task of {other}, not {task_type}")));
    }

    let scan_types = raw.scan_types.unwrap_or_else(|| ScanType::ALL.to_vec());
    if scan_types.is_empty() {
        return Err(invalid(format!("{key}.scan_types"), format!("needs at least one of {}", ScanType::choices())));
    }
    if scan_types.iter().collect::<HashSet<_>>().len() != scan_types.len() {
        return Err(invalid(format!("{key}.scan_types"), "lists a scan type twice"));
    }
    let file_type = raw.file_type.unwrap_or(FileType::Dockerfile);

    let mut clusters = Vec::with_capacity(raw.clusters.len());
    for (j, c) in raw.clusters.into_iter().enumerate() {
        clusters.push(validate_cluster(&format!("{key}.clusters[{j}]"), &raw.task_id, j, &scan_types, c)?);
    }
    let mut files = Vec::with_capacity(raw.files.len());
    for (j, f) in raw.files.into_iter().enumerate() {
        let fkey = format!("{key}.files[{j}]");
        non_empty(&format!("{fkey}.file_name"), &f.file_name)?;
        files.push(IacFile {
            failed_reason: reason(&format!("{fkey}.failed_reason"), f.scan_status, f.failed_reason)?,
            id: f.file_id.unwrap_or_else(|| format!("{}-file-{j}", raw.task_id)),
            name: f.file_name,
            file_type: f.file_type.unwrap_or(file_type),
            chart_name: f.chart_name,
            file_size: f.file_size.unwrap_or(1024),
            scan_status: f.scan_status,
        });
    }

    let statuses: Vec<ScanStatus> = match task_type {
        TaskType::ClusterScan => clusters.iter().map(|c| c.scan_status).collect(),
        TaskType::IacScan => files.iter().map(|f| f.scan_status).collect(),
    };
    let resource_key = match task_type {
        TaskType::ClusterScan => "clusters",
        TaskType::IacScan => "files",
    };
    if end.is_some()
        && let Some(j) = statuses.iter().position(|s| *s == ScanStatus::Scanning)
    {
        return Err(invalid(
            format!("{key}.{resource_key}[{j}].scan_status"),
            "a task that ends settles every resource as success or failed; drop `end` for a task still running",
        ));
    }
    let count = |field: &str, given: Option<u64>, status: ScanStatus| -> Result<u64, ScenarioError> {
        let listed = statuses.iter().filter(|s| **s == status).count() as u64;
        match given {
            Some(n) if n < listed => Err(invalid(
                format!("{key}.{field}"),
                format!("is {n}, but {listed} of the task's {resource_key} are listed as {}", status.as_str()),
            )),
            Some(n) => Ok(n),
            None => Ok(listed),
        }
    };
    let counts = Counts {
        scanning: count("scanning", raw.scanning, ScanStatus::Scanning)?,
        success: count("success", raw.success, ScanStatus::Success)?,
        failed: count("failed", raw.failed, ScanStatus::Failed)?,
    };
    if end.is_some() && counts.scanning > 0 {
        return Err(invalid(format!("{key}.scanning"), "a task that ends has nothing left scanning"));
    }

    Ok(Task {
        task_id: raw.task_id,
        task_name: raw.task_name,
        trigger_type: raw.trigger_type.unwrap_or(TriggerType::Schedule),
        created,
        start,
        end,
        estimated_minutes: raw.estimated_minutes.unwrap_or(0),
        scan_types,
        file_type,
        counts,
        clusters,
        files,
    })
}

fn validate_cluster(
    key: &str,
    task_id: &str,
    index: usize,
    scan_types: &[ScanType],
    c: RawCluster,
) -> Result<Cluster, ScenarioError> {
    non_empty(&format!("{key}.cluster_name"), &c.cluster_name)?;
    let mut details = Vec::with_capacity(c.scan_details.len());
    for (k, d) in c.scan_details.into_iter().enumerate() {
        let dkey = format!("{key}.scan_details[{k}]");
        if !scan_types.contains(&d.scan_type) {
            return Err(invalid(
                format!("{dkey}.scan_type"),
                format!("the task does not scan {}; its scan_types are {scan_types:?}", d.scan_type.as_str()),
            ));
        }
        details.push(ScanDetail {
            scan_type: d.scan_type,
            status: d.status,
            failed_reason: reason(&format!("{dkey}.failed_reason"), d.status, d.failed_reason)?,
        });
    }
    let has = |s: ScanStatus| details.iter().any(|d| d.status == s);
    match c.scan_status {
        ScanStatus::Failed if !has(ScanStatus::Failed) => {
            return Err(invalid(
                format!("{key}.scan_details"),
                "a failed cluster needs a scan detail with status = \"failed\" and its failed_reason, e.g. \
                 { scan_type = \"cluster_vul\", status = \"failed\", failed_reason = \"...\" }",
            ));
        }
        ScanStatus::Success if has(ScanStatus::Failed) || has(ScanStatus::Scanning) => {
            return Err(invalid(format!("{key}.scan_details"), "a successful cluster has only successful scans"));
        }
        _ => {}
    }
    if details.is_empty() {
        details = scan_types
            .iter()
            .map(|t| ScanDetail { scan_type: *t, status: c.scan_status, failed_reason: None })
            .collect();
    }
    Ok(Cluster {
        id: c.cluster_id.unwrap_or_else(|| format!("{task_id}-cluster-{index}")),
        name: c.cluster_name,
        cluster_type: c.cluster_type.unwrap_or(ClusterType::Cce),
        version: c.cluster_version,
        scan_status: c.scan_status,
        details,
    })
}

// ---- the APIs ----

/// A refused request: status, HSS error code, message.
pub type Refusal = (u16, &'static str, String);

fn bad(message: impl Into<String>) -> Refusal {
    (400, "HSS.0001", format!("invalid parameter: {}", message.into()))
}

/// The query both APIs take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub enterprise_project_id: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// Reads `enterprise_project_id`, `offset` (0–2,000,000) and `limit` (10–200).
pub fn parse_page(query: &[(String, String)]) -> Result<Page, Refusal> {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let number = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| match param(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            bad(format!("{name} must be an integer from {} to {}; got `{v}`", range.start(), range.end()))
        }),
    };
    Ok(Page {
        enterprise_project_id: param("enterprise_project_id").map(str::to_string),
        offset: number("offset", 0, 0..=MAX_OFFSET)?,
        limit: number("limit", DEFAULT_LIMIT, MIN_LIMIT..=MAX_LIMIT)?,
    })
}

/// The request body as JSON, and its required `task_type`.
pub fn parse_body(body: &[u8]) -> Result<(Map<String, Value>, TaskType), Refusal> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| (400, "HSS.0002", format!("request parse failure: {e}")))?;
    let Value::Object(map) = value else {
        return Err((400, "HSS.0002", "request parse failure: the body must be a JSON object".to_string()));
    };
    let task_type = match map.get("task_type") {
        None | Some(Value::Null) => return Err(bad("task_type is required (cluster_scan or iac_scan)")),
        Some(v) => {
            v.as_str().and_then(TaskType::parse).ok_or_else(|| bad("task_type must be cluster_scan or iac_scan"))?
        }
    };
    Ok((map, task_type))
}

/// A string field of `obj`, absent or null being `None`; anything but a string is refused.
fn text<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a str>, Refusal> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{path} must be a string"))),
    }
}

fn choice<T>(
    obj: &Map<String, Value>,
    field: &str,
    path: &str,
    parse: fn(&str) -> Option<T>,
    choices: String,
) -> Result<Option<T>, Refusal> {
    match text(obj, field, path)? {
        None => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| bad(format!("{path} must be one of {choices}; got `{v}`"))),
    }
}

fn object<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, Refusal> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(bad(format!("{field} must be an object"))),
    }
}

fn millis_field(obj: &Map<String, Value>, field: &str) -> Result<Option<i64>, Refusal> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| bad(format!("{field} must be milliseconds since the epoch"))),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Scenario time and its wall-clock anchor, to turn task times into milliseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub started: DateTime<Utc>,
    /// Scenario time now.
    pub t: Duration,
}

impl Moment {
    fn at(&self, d: Duration) -> i64 {
        self.started.timestamp_millis().saturating_add(millis(d))
    }
}

/// The ListTasks body filters.
struct TaskFilter<'a> {
    task_id: Option<&'a str>,
    task_name: Option<&'a str>,
    trigger_type: Option<TriggerType>,
    task_status: Option<TaskStatus>,
    start_create_time: Option<i64>,
    end_create_time: Option<i64>,
    descending: bool,
    scan_types: Option<Vec<ScanType>>,
    file_type: Option<FileType>,
}

fn task_filter(body: &Map<String, Value>) -> Result<TaskFilter<'_>, Refusal> {
    let sort_key = text(body, "sort_key", "sort_key")?;
    if let Some(k) = sort_key
        && k != "start_time"
    {
        return Err(bad(format!("sort_key must be start_time; got `{k}`")));
    }
    let descending = match text(body, "sort_dir", "sort_dir")? {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(v) => return Err(bad(format!("sort_dir must be asc or desc; got `{v}`"))),
    };
    let scan_types = match object(body, "cluster_scan_info")?.and_then(|c| c.get("scan_type_list")) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            Some(items.iter().map(|v| v.as_str().and_then(ScanType::parse)).collect::<Option<Vec<_>>>().ok_or_else(
                || bad(format!("cluster_scan_info.scan_type_list items must be {}", ScanType::choices())),
            )?)
        }
        Some(_) => return Err(bad("cluster_scan_info.scan_type_list must be an array")),
    };
    let file_type = match object(body, "iac_scan_info")? {
        None => None,
        Some(iac) => choice(iac, "file_type", "iac_scan_info.file_type", FileType::parse, FileType::choices())?,
    };
    Ok(TaskFilter {
        task_id: text(body, "task_id", "task_id")?,
        task_name: text(body, "task_name", "task_name")?,
        trigger_type: choice(body, "trigger_type", "trigger_type", TriggerType::parse, TriggerType::choices())?,
        task_status: choice(body, "task_status", "task_status", TaskStatus::parse, TaskStatus::choices())?,
        start_create_time: millis_field(body, "start_create_time")?,
        end_create_time: millis_field(body, "end_create_time")?,
        descending,
        scan_types,
        file_type,
    })
}

/// ListTasks: the tasks of a series that exist at `now`, filtered, sorted by start time, one page of them.
pub fn list_tasks(
    tasks: &[Task],
    task_type: TaskType,
    body: &Map<String, Value>,
    page: &Page,
    now: Moment,
) -> Result<Value, Refusal> {
    let f = task_filter(body)?;
    let mut hits: Vec<(&Task, TaskStatus)> = tasks
        .iter()
        .filter_map(|task| task.status_at(now.t).map(|s| (task, s)))
        .filter(|(task, status)| {
            let created = now.at(task.created);
            f.task_id.is_none_or(|id| task.task_id == id)
                && f.task_name.is_none_or(|n| task.task_name.to_lowercase().contains(&n.to_lowercase()))
                && f.trigger_type.is_none_or(|t| task.trigger_type == t)
                && f.task_status.is_none_or(|s| *status == s)
                && f.start_create_time.is_none_or(|from| created >= from)
                && f.end_create_time.is_none_or(|to| created <= to)
                && f.scan_types.as_ref().is_none_or(|wanted| wanted.iter().any(|w| task.scan_types.contains(w)))
                && f.file_type.is_none_or(|ft| task.file_type == ft)
        })
        .collect();
    hits.sort_by(|(a, _), (b, _)| a.start.cmp(&b.start).then_with(|| a.task_id.cmp(&b.task_id)));
    if f.descending {
        hits.reverse();
    }
    let total = hits.len();
    let data: Vec<Value> = paged(hits, page).map(|(task, status)| task_json(task, task_type, status, now)).collect();
    Ok(json!({ "total_num": total, "data_list": data }))
}

fn paged<T>(items: Vec<T>, page: &Page) -> impl Iterator<Item = T> {
    let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit)
}

fn task_json(task: &Task, task_type: TaskType, status: TaskStatus, now: Moment) -> Value {
    let counts = task.counts_at(status);
    let estimated = match status {
        TaskStatus::Ready => task.estimated_minutes,
        TaskStatus::Running => task.estimated_minutes.saturating_sub(now.t.saturating_sub(task.start).as_secs() / 60),
        TaskStatus::Finished => 0,
    };
    let mut out = Map::new();
    out.insert("task_id".into(), json!(task.task_id));
    out.insert("task_type".into(), json!(task_type.as_str()));
    out.insert("task_name".into(), json!(task.task_name));
    out.insert("trigger_type".into(), json!(task.trigger_type.as_str()));
    out.insert("task_status".into(), json!(status.as_str()));
    out.insert("start_time".into(), json!(now.at(task.start)));
    if let (TaskStatus::Finished, Some(end)) = (status, task.end) {
        out.insert("end_time".into(), json!(now.at(end)));
    }
    out.insert("estimated_time".into(), json!(estimated));
    match task_type {
        TaskType::ClusterScan => out.insert(
            "cluster_scan_info".into(),
            json!({
                "scan_type_list": task.scan_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "scanning_cluster_num": counts.scanning,
                "success_cluster_num": counts.success,
                "failed_cluster_num": counts.failed,
            }),
        ),
        TaskType::IacScan => out.insert(
            "iac_scan_info".into(),
            json!({
                "file_type": task.file_type.as_str(),
                "scan_file_num": counts.scanning,
                "success_file_num": counts.success,
                "failed_file_num": counts.failed,
            }),
        ),
    };
    Value::Object(out)
}

/// ListTaskResources: the clusters or files of one task at `now`, filtered, one page of them. `None` when the
/// task does not exist (yet) in this series.
pub fn list_resources(
    tasks: &[Task],
    task_id: &str,
    task_type: TaskType,
    body: &Map<String, Value>,
    page: &Page,
    now: Moment,
) -> Result<Option<Value>, Refusal> {
    let Some((task, status)) =
        tasks.iter().filter(|t| t.task_id == task_id).find_map(|t| t.status_at(now.t).map(|s| (t, s)))
    else {
        return Ok(None);
    };
    // A ready task has scanned nothing; a running task that will end shows everything scanning.
    let settled = task.settled(status);
    let shown = |s: ScanStatus| if settled { s } else { ScanStatus::Scanning };
    let start_time = (status != TaskStatus::Ready).then(|| now.at(task.start));
    let end_time = |s: ScanStatus| match (s, status, task.end) {
        (ScanStatus::Scanning, _, _) => None,
        (_, TaskStatus::Finished, Some(end)) => Some(now.at(end)),
        _ => None,
    };
    let mut out = Map::new();
    match task_type {
        TaskType::ClusterScan => {
            let filter = object(body, "cluster_scan_info")?;
            let want = |field: &str| filter.map(|f| text(f, field, &format!("cluster_scan_info.{field}"))).transpose();
            let status_filter = match filter {
                Some(f) => {
                    choice(f, "scan_status", "cluster_scan_info.scan_status", ScanStatus::parse, ScanStatus::choices())?
                }
                None => None,
            };
            let (name, id) = (want("cluster_name")?.flatten(), want("cluster_id")?.flatten());
            let cluster_type = match filter {
                Some(f) => choice(
                    f,
                    "cluster_type",
                    "cluster_scan_info.cluster_type",
                    ClusterType::parse,
                    ClusterType::choices(),
                )?,
                None => None,
            };
            let listed: Vec<&Cluster> =
                if status == TaskStatus::Ready { Vec::new() } else { task.clusters.iter().collect() };
            let hits: Vec<&Cluster> = listed
                .into_iter()
                .filter(|c| {
                    status_filter.is_none_or(|s| shown(c.scan_status) == s)
                        && name.is_none_or(|n| c.name.contains(n))
                        && id.is_none_or(|i| c.id == i)
                        && cluster_type.is_none_or(|t| c.cluster_type == t)
                })
                .collect();
            out.insert("total_num".into(), json!(hits.len()));
            let data: Vec<Value> = paged(hits, page)
                .map(|c| {
                    let s = shown(c.scan_status);
                    let details: Vec<Value> = c
                        .details
                        .iter()
                        .map(|d| {
                            let mut m = Map::new();
                            m.insert("scan_type".into(), json!(d.scan_type.as_str()));
                            m.insert("status".into(), json!(shown(d.status).as_str()));
                            if settled && let Some(r) = &d.failed_reason {
                                m.insert("failed_reason".into(), json!(r));
                            }
                            Value::Object(m)
                        })
                        .collect();
                    let mut m = Map::new();
                    m.insert("cluster_name".into(), json!(c.name));
                    m.insert("cluster_id".into(), json!(c.id));
                    m.insert("cluster_type".into(), json!(c.cluster_type.as_str()));
                    if let Some(v) = &c.version {
                        m.insert("cluster_version".into(), json!(v));
                    }
                    m.insert("scan_status".into(), json!(s.as_str()));
                    insert_times(&mut m, start_time, end_time(s));
                    m.insert("scan_detail_list".into(), Value::Array(details));
                    Value::Object(m)
                })
                .collect();
            out.insert("cluster_scan_data_list".into(), Value::Array(data));
        }
        TaskType::IacScan => {
            let filter = object(body, "iac_scan_info")?;
            let want = |field: &str| filter.map(|f| text(f, field, &format!("iac_scan_info.{field}"))).transpose();
            let status_filter = match filter {
                Some(f) => {
                    choice(f, "scan_status", "iac_scan_info.scan_status", ScanStatus::parse, ScanStatus::choices())?
                }
                None => None,
            };
            let (name, chart) = (want("file_name")?.flatten(), want("chart_name")?.flatten());
            let listed: Vec<&IacFile> =
                if status == TaskStatus::Ready { Vec::new() } else { task.files.iter().collect() };
            let hits: Vec<&IacFile> = listed
                .into_iter()
                .filter(|f| {
                    status_filter.is_none_or(|s| shown(f.scan_status) == s)
                        && name.is_none_or(|n| f.name.contains(n))
                        && chart.is_none_or(|c| f.chart_name.as_deref().is_some_and(|x| x.contains(c)))
                })
                .collect();
            out.insert("total_num".into(), json!(hits.len()));
            let data: Vec<Value> = paged(hits, page)
                .map(|f| {
                    let s = shown(f.scan_status);
                    let mut m = Map::new();
                    m.insert("file_name".into(), json!(f.name));
                    m.insert("file_type".into(), json!(f.file_type.as_str()));
                    if let Some(c) = &f.chart_name {
                        m.insert("chart_name".into(), json!(c));
                    }
                    m.insert("file_id".into(), json!(f.id));
                    m.insert("file_size".into(), json!(f.file_size));
                    m.insert("scan_status".into(), json!(s.as_str()));
                    if settled && let Some(r) = &f.failed_reason {
                        m.insert("failed_reason".into(), json!(r));
                    }
                    insert_times(&mut m, start_time, end_time(s));
                    Value::Object(m)
                })
                .collect();
            out.insert("iac_scan_data_list".into(), Value::Array(data));
        }
    }
    Ok(Some(Value::Object(out)))
}

fn insert_times(m: &mut Map<String, Value>, start: Option<i64>, end: Option<i64>) {
    if let Some(s) = start {
        m.insert("start_time".into(), json!(s));
    }
    if let Some(e) = end {
        m.insert("end_time".into(), json!(e));
    }
}

#[cfg(test)]
mod tests {
    use super::super::scenario::{Scenario, ScenarioError};
    use super::*;

    const HEAD: &str = r#"
[[series]]
project_id = "p1"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 1
  running_num = 0
"#;

    const TASK: &str = r#"
  [[series.tasks]]
  task_id = "t1"
  task_name = "scan"
  start = "10m"
  end = "40m"
    [[series.tasks.clusters]]
    cluster_name = "c1"
    scan_status = "failed"
    scan_details = [{ scan_type = "cluster_vul", status = "failed", failed_reason = "timed out" }]
"#;

    fn parse(extra: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml_str(&format!("{HEAD}{extra}"))
    }

    fn key(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("expected an error for:\n{extra}"),
            Err(e) => e.key().to_string(),
        }
    }

    #[test]
    fn a_task_gets_its_defaults_and_counts_from_its_resources() {
        let s = parse(TASK).unwrap();
        let t = &s.series[0].tasks[0];
        assert_eq!(
            (t.created, t.start, t.end),
            (Duration::from_secs(600), Duration::from_secs(600), Some(Duration::from_secs(2400)))
        );
        assert_eq!(t.trigger_type, TriggerType::Schedule);
        assert_eq!(t.scan_types, ScanType::ALL);
        assert_eq!(t.counts, Counts { scanning: 0, success: 0, failed: 1 });
        assert_eq!(t.clusters[0].id, "t1-cluster-0");
        assert_eq!(t.clusters[0].cluster_type, ClusterType::Cce);
        let at = |m: u64| t.status_at(Duration::from_secs(m * 60));
        assert_eq!(
            (at(9), at(10), at(39), at(40)),
            (None, Some(TaskStatus::Running), Some(TaskStatus::Running), Some(TaskStatus::Finished))
        );
        assert_eq!(t.counts_at(TaskStatus::Running), Counts { scanning: 1, success: 0, failed: 0 });
        assert!(s.series[0].tasks_fault.is_none());
    }

    #[test]
    fn task_errors_name_their_key_path() {
        assert_eq!(key(&TASK.replace("end = \"40m\"", "end = \"5m\"")), "series[0].tasks[0].end");
        assert_eq!(
            key(&TASK.replace("start = \"10m\"", "start = \"10m\"\n  created = \"11m\"")),
            "series[0].tasks[0].created"
        );
        assert_eq!(key(&TASK.replace("start = \"10m\"", "start = \"soon\"")), "series[0].tasks[0].start");
        assert_eq!(key(&TASK.replace("task_name = \"scan\"", "")), "series[0].tasks[0]");
        assert_eq!(
            key(&TASK.replace("cluster_name = \"c1\"", "cluster_name = \"c1\"\n    colour = 1")),
            "series[0].tasks[0].clusters[0].colour"
        );
        assert_eq!(
            key(&TASK.replace(", failed_reason = \"timed out\"", "")),
            "series[0].tasks[0].clusters[0].scan_details[0].failed_reason"
        );
        assert_eq!(
            key(&TASK.replace("scan_details = [", "scan_details = [] # [")),
            "series[0].tasks[0].clusters[0].scan_details"
        );
        assert_eq!(
            key(&TASK.replace("\"failed\"\n", "\"scanning\"\n")),
            "series[0].tasks[0].clusters[0].scan_status",
            "a task that ends leaves nothing scanning"
        );
        assert_eq!(
            key(&TASK.replace("cluster_vul", "host_vul")),
            "series[0].tasks[0].clusters[0].scan_details[0].scan_type"
        );
        assert_eq!(
            key(&TASK.replace("end = \"40m\"", "end = \"40m\"\n  scan_types = [\"benchmark\"]")),
            "series[0].tasks[0].clusters[0].scan_details[0].scan_type"
        );
        assert_eq!(key(&TASK.replace("end = \"40m\"", "end = \"40m\"\n  failed = 0")), "series[0].tasks[0].failed");
        assert_eq!(key(&TASK.replace("end = \"40m\"", "end = \"40m\"\n  scanning = 2")), "series[0].tasks[0].scanning");
        assert_eq!(
            key(&TASK.replace("end = \"40m\"", "end = \"40m\"\n  file_type = \"dockerfile\"")),
            "series[0].tasks[0].file_type"
        );
        assert_eq!(key(&format!("{TASK}{TASK}")), "series[0].tasks[1].task_id");
        assert_eq!(
            key(&TASK
                .replace("trigger_type", "x")
                .replace("start = \"10m\"", "start = \"10m\"\n  trigger_type = \"cron\"")),
            "series[0].tasks[0].trigger_type"
        );
    }

    #[test]
    fn a_task_still_running_may_keep_resources_scanning_and_one_that_ends_may_not() {
        let running = TASK.replace("end = \"40m\"\n", "").replace(
            "scan_status = \"failed\"\n    scan_details = [{ scan_type = \"cluster_vul\", status = \"failed\", failed_reason = \"timed out\" }]",
            "scan_status = \"scanning\"",
        );
        let s = parse(&running).unwrap();
        assert_eq!(s.series[0].tasks[0].counts, Counts { scanning: 1, success: 0, failed: 0 });
        let ends = running.replace("start = \"10m\"", "start = \"10m\"\n  end = \"20m\"");
        assert_eq!(key(&ends), "series[0].tasks[0].clusters[0].scan_status");
    }

    #[test]
    fn iac_tasks_take_files_and_cluster_tasks_clusters() {
        let iac = format!(
            "{}\n  [[series.tasks]]\n  task_id = \"f\"\n  task_name = \"iac\"\n  start = \"0s\"\n    [[series.tasks.files]]\n    \
             file_name = \"Dockerfile\"\n    scan_status = \"failed\"\n",
            HEAD.replace("cluster_scan", "iac_scan")
        );
        let e = Scenario::from_toml_str(&iac).unwrap_err();
        assert_eq!(e.key(), "series[0].tasks[0].files[0].failed_reason");
        let s = Scenario::from_toml_str(&iac.replace("\"failed\"\n", "\"success\"\n")).unwrap();
        let f = &s.series[0].tasks[0].files[0];
        assert_eq!((f.file_type, f.id.as_str(), f.file_size), (FileType::Dockerfile, "f-file-0", 1024));
        assert_eq!(
            key(&TASK.replace("[[series.tasks.clusters]]", "[[series.tasks.files]]")),
            "series[0].tasks[0].files[0].cluster_name"
        );
    }

    #[test]
    fn tasks_fault_takes_the_gateway_faults_only() {
        let with = |f: &str| {
            Scenario::from_toml_str(&HEAD.replace(
                "task_type = \"cluster_scan\"",
                &format!("task_type = \"cluster_scan\"\ntasks_fault = \"{f}\""),
            ))
        };
        assert_eq!(with("forbidden").unwrap().series[0].tasks_fault, Some(super::super::Fault::Forbidden));
        assert_eq!(with("truncated").unwrap_err().key(), "series[0].tasks_fault");
    }

    #[test]
    fn page_bounds_are_hss_s() {
        let q = |pairs: &[(&str, &str)]| {
            parse_page(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
        };
        assert_eq!(q(&[]).unwrap(), Page { enterprise_project_id: None, offset: 0, limit: 10 });
        assert_eq!(q(&[("limit", "200"), ("offset", "2000000")]).unwrap().limit, 200);
        for bad in [("limit", "9"), ("limit", "201"), ("offset", "-1"), ("offset", "2000001"), ("limit", "")] {
            assert_eq!(q(&[bad]).unwrap_err().1, "HSS.0001", "{bad:?}");
        }
    }

    #[test]
    fn the_readme_task_example_parses() {
        let readme = include_str!("../../scenarios/README.md");
        let section = &readme[readme.find("## Tasks").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let s = Scenario::from_toml_str(example).unwrap();
        assert_eq!(s.series[0].tasks[0].counts, Counts { scanning: 0, success: 12, failed: 1 });
        assert_eq!(s.series[1].tasks[0].files[0].file_type, FileType::K8sYaml);
    }
}
