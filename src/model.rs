//! The vocabulary shared by every module: task types, target identity, what a poll returns and how it fails.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The two kinds of HSS scan task that the task-statistics API reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    ClusterScan,
    IacScan,
}

impl TaskType {
    pub const ALL: [TaskType; 2] = [TaskType::ClusterScan, TaskType::IacScan];

    /// The value of the API's `task_type` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::ClusterScan => "cluster_scan",
            TaskType::IacScan => "iac_scan",
        }
    }

    pub fn parse(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Plain words for messages ("cluster scan").
    pub fn human(self) -> &'static str {
        match self {
            TaskType::ClusterScan => "cluster scan",
            TaskType::IacScan => "IaC scan",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One polled series: a configured target and one of its task types. This is what a snapshot belongs to and what
/// rules are evaluated for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The target's configured name.
    pub target: String,
    pub account: String,
    pub region: String,
    pub project_id: String,
    /// `None` when the request carries no `enterprise_project_id` (the API then means the default project, `0`).
    pub enterprise_project_id: Option<String>,
    pub task_type: TaskType,
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.task_type)
    }
}

/// The three numbers HSS reports, validated: present, integral and non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Total tasks ever run.
    pub total_num: u64,
    /// Tasks scanning now.
    pub running_num: u64,
    /// Creation time of the latest task, ms since the epoch; absent when no task ever ran.
    pub last_task_start_time: Option<i64>,
}

/// How a poll failed; the names are the `error_kind` values stored and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: the signature, token or password was rejected.
    Auth,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 429: over the API's rate limit.
    Throttled,
    /// 5xx from HSS or its gateway.
    Server,
    /// The connection could not be made or broke.
    Network,
    /// No complete answer within the configured timeout.
    Timeout,
    /// A 2xx whose body is not the documented JSON (non-JSON, truncated, oversized, wrong types, missing fields).
    BadResponse,
    /// Any other 4xx, usually with an `HSS.xxxx` error code.
    HssError,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Auth,
        ErrorKind::Forbidden,
        ErrorKind::Throttled,
        ErrorKind::Server,
        ErrorKind::Network,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::HssError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::HssError => "hss_error",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Credentials problems: polling the account again only risks locking the key.
    pub fn is_credential_problem(self) -> bool {
        matches!(self, ErrorKind::Auth | ErrorKind::Forbidden)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified poll failure with everything an operator needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}: {message}", fmt_code(.http_status, .error_code))]
pub struct PollError {
    pub kind: ErrorKind,
    pub http_status: Option<u16>,
    /// `error_code` from the body (`HSS.0001`, `APIGW.0301`), or the status as text when the body had none.
    pub error_code: Option<String>,
    /// A short message: `error_msg` from the body, or a description with an excerpt of what came back.
    pub message: String,
    /// `X-Request-Id` of the response, for Huawei support.
    pub request_id: Option<String>,
    /// How long the server asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

fn fmt_code(status: &Option<u16>, code: &Option<String>) -> String {
    match (status, code) {
        (Some(s), Some(c)) if c != &s.to_string() => format!(" (HTTP {s}, {c})"),
        (Some(s), _) => format!(" (HTTP {s})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

impl PollError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PollError {
            kind,
            http_status: None,
            error_code: None,
            message: message.into(),
            request_id: None,
            retry_after: None,
        }
    }
}

/// The result of one poll, as stored: one row per poll, success or failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    pub polled_at: DateTime<Utc>,
    pub latency_ms: u64,
    pub outcome: Result<TaskStats, PollError>,
    /// Status of a successful response (failures carry theirs in the error).
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    /// The latest finished task and its failed resources, when this poll checked them (`scan_failures`): on a
    /// series' first poll and whenever a task finished. Stored with the snapshot, so `replay` sees what live saw.
    pub task: Option<AlertContext>,
}

impl PollRecord {
    /// The snapshot this record becomes once stored with `id` under `series_id`.
    pub fn to_snapshot(&self, id: i64, series_id: i64) -> Snapshot {
        let err = self.outcome.as_ref().err();
        Snapshot {
            id,
            series_id,
            polled_at: self.polled_at,
            stats: self.outcome.as_ref().ok().copied(),
            latency_ms: self.latency_ms,
            http_status: err.and_then(|e| e.http_status).or(self.http_status),
            error_kind: err.map(|e| e.kind),
            error_code: err.and_then(|e| e.error_code.clone()),
            error_message: err.map(|e| e.message.clone()),
            request_id: err.and_then(|e| e.request_id.clone()).or_else(|| self.request_id.clone()),
            task: self.task.clone(),
        }
    }
}

/// A stored snapshot, as rules and the read side see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: i64,
    pub series_id: i64,
    pub polled_at: DateTime<Utc>,
    /// `Some` for a successful poll.
    pub stats: Option<TaskStats>,
    pub latency_ms: u64,
    pub http_status: Option<u16>,
    pub error_kind: Option<ErrorKind>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    /// What the poll learned of the latest finished task (see [`PollRecord::task`]), if it checked.
    pub task: Option<AlertContext>,
}

impl Snapshot {
    pub fn ok(&self) -> bool {
        self.stats.is_some()
    }
}

/// An error and its sources as one line, `a: b: c`, each cause once (libraries often repeat their source's text in
/// their own message).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = s.source();
    }
    chain.join(": ")
}

/// One line of at most `max` bytes (cut on a character boundary, the cut marked) with every run of whitespace
/// folded to a space; used for every excerpt we store or print, so an HTML error page stays one readable line.
pub fn excerpt(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = folded.as_str();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_a_char_boundary() {
        assert_eq!(excerpt("abc", 10), "abc");
        assert_eq!(excerpt("<html>\n  <body>\r\n\tx</body>", 100), "<html> <body> x</body>");
        assert_eq!(excerpt("中文字", 4), "中… (9 bytes in all)");
    }

    #[test]
    fn error_display_names_status_and_code() {
        let mut e = PollError::new(ErrorKind::HssError, "invalid parameter");
        e.http_status = Some(400);
        e.error_code = Some("HSS.0001".into());
        assert_eq!(e.to_string(), "hss_error (HTTP 400, HSS.0001): invalid parameter");
        e.error_code = Some("400".into());
        assert_eq!(e.to_string(), "hss_error (HTTP 400): invalid parameter");
    }
}

/// One scan task as HSS's ListTasks (`POST /v5/{project_id}/common/tasks/batch-query`) describes it: what an alert's
/// context and `scanwatch tasks` show. Text fields come from HSS and are partly user-set: untrusted, shown escaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: String,
    pub task_name: String,
    pub task_type: TaskType,
    /// `manual` | `schedule` (kept as HSS sent it).
    pub trigger_type: String,
    /// `ready` | `running` | `finished` (kept as HSS sent it). There is no "failed": failure is in the counts.
    pub task_status: String,
    /// Milliseconds since the epoch.
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    /// `estimated_time`: minutes left, as HSS estimates them.
    pub estimated_minutes: Option<i64>,
    /// Clusters (cluster_scan) or files (iac_scan) still scanning, done, failed.
    pub scanning: u64,
    pub success: u64,
    pub failed: u64,
}

/// A cluster or file a task failed to scan, with HSS's reason (ListTaskResources, `scan_status = failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedResource {
    /// The cluster's or the file's name.
    pub name: String,
    /// The cluster id or the file id.
    pub id: Option<String>,
    /// `cce`, `self_built_idc`… for a cluster; `dockerfile`, `k8s_yaml` for a file.
    pub kind: Option<String>,
    /// Why it failed (for a cluster: the failed scan details' reasons, joined).
    pub failed_reason: String,
}

/// What scanwatch learned from HSS about the task behind an alert — or why it could not (`unavailable`). Best
/// effort: an alert never waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AlertContext {
    pub task: Option<TaskInfo>,
    /// Up to a handful of failed resources.
    pub failed: Vec<FailedResource>,
    /// How many resources failed in all (more than `failed` lists).
    pub failed_total: u64,
    /// Why there is no context: "API budget exhausted", "HSS answered 403 HSS.0013: …".
    pub unavailable: Option<String>,
}
