//! The scenario file: what the simulator accepts as credentials and what each series answers over time.
//!
//! Parsed strictly (unknown keys are errors), then validated without I/O into [`Scenario`]. Every error names the
//! key path it is about (`series[1].steps[2].fault`), because a scenario that silently means something else would
//! make a rehearsal lie. The format is documented in `scenarios/README.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::tasks::{self, RawTask, Task};
use crate::model::TaskType;
use crate::secret::Secret;

/// Accepted calls per identity per minute unless the scenario says otherwise: HSS's own per-user limit.
pub const DEFAULT_CALLS_PER_MINUTE: u32 = 5;
/// How far `X-Sdk-Date` may be from the simulator clock, like the real gateway.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Lifetime of an IAM token, like the real IAM.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Size of an `oversized` body unless the step gives `bytes`.
pub const DEFAULT_OVERSIZED_BYTES: usize = 10 * 1024 * 1024;
/// Largest `oversized` body a scenario may ask for, so a typo cannot exhaust memory.
pub const MAX_OVERSIZED_BYTES: usize = 512 * 1024 * 1024;

/// Why a scenario could not be used. Every variant names the key it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("scenario {key}: {message}")]
    Parse { key: String, message: String },
    /// Well-formed TOML whose values make no sense together.
    #[error("scenario {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ScenarioError {
    /// The key path the error is about (`series[0].steps[1].at`), or `(document)` for a syntax error.
    pub fn key(&self) -> &str {
        match self {
            ScenarioError::Io { .. } => "(file)",
            ScenarioError::Parse { key, .. } | ScenarioError::Invalid { key, .. } => key,
        }
    }
}

/// A parsed and validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Accepted calls per identity and API in any 60 s window; 0 means unlimited.
    pub calls_per_minute: u32,
    /// Accepted calls per client IP and API in any 60 s window, across identities; 0 (the default when the file
    /// does not set it) means unlimited. HSS's own is 5.
    pub calls_per_minute_per_ip: u32,
    /// How far `X-Sdk-Date` may be from the simulator clock.
    pub max_clock_skew: Duration,
    /// Lifetime of the IAM tokens the simulator issues.
    pub token_ttl: Duration,
    pub credentials: Vec<Credential>,
    pub users: Vec<User>,
    /// Static `X-Auth-Token` values accepted as they are.
    pub tokens: Vec<Secret>,
    pub series: Vec<Series>,
}

/// An AK/SK pair the simulator accepts.
#[derive(Debug, Clone)]
pub struct Credential {
    pub ak: String,
    pub sk: Secret,
    /// Temporary credentials: requests must carry this value in a signed `X-Security-Token`.
    pub security_token: Option<Secret>,
}

/// An IAM user who may log in with a password.
#[derive(Debug, Clone)]
pub struct User {
    pub domain: String,
    pub name: String,
    pub password: Secret,
}

/// What one (project, task type, enterprise project) answers over scenario time.
#[derive(Debug, Clone)]
pub struct Series {
    pub project_id: String,
    pub task_type: TaskType,
    /// `None` matches any `enterprise_project_id`, including none.
    pub enterprise_project_id: Option<String>,
    /// Sorted by `at`, the first at zero.
    pub steps: Vec<Step>,
    /// The scan tasks ListTasks and ListTaskResources report for this series (none: empty lists).
    pub tasks: Vec<Task>,
    /// When set, ListTasks and ListTaskResources answer this fault for this series all the time (the statistics
    /// API is unaffected).
    pub tasks_fault: Option<Fault>,
}

impl Series {
    /// The step in force at scenario time `t`: the last one that started at or before it.
    pub fn step_at(&self, t: Duration) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.at <= t)
    }
}

/// One stretch of a series' behaviour, from `at` until the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Scenario time this step starts.
    pub at: Duration,
    pub total_num: u64,
    /// `total_num` grows by floor(hours since the step began × this rate).
    pub total_per_hour: f64,
    pub running_num: u64,
    pub last_task: LastTask,
    /// `None`: answer the values with 200.
    pub fault: Option<Fault>,
}

/// Where `last_task_start_time` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastTask {
    /// The field is left out of the response (no task ever ran).
    Absent,
    /// Always this long before now: scanning is alive.
    Age(Duration),
    /// A fixed scenario time: the value stays put, so scanning goes stale.
    At(Duration),
    /// A fixed wall-clock time.
    Start(DateTime<Utc>),
}

/// A misbehaviour a step can ask for. Each is rendered by `respond` exactly as `scenarios/README.md` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 5xx with an HTML page or a gateway JSON error.
    ServerError { status: u16, body: ErrorBody, code: Option<String>, message: Option<String> },
    /// 429 `APIGW.0308`, optionally with `Retry-After`.
    Throttled { retry_after: Option<u64> },
    /// Wait, then answer the step's values.
    Slow { delay: Duration },
    /// 200 with an HTML body.
    Malformed,
    /// 200 with the JSON cut in the middle.
    Truncated,
    /// 200 with valid JSON padded to this many bytes.
    Oversized { bytes: usize },
    /// `"total_num":"17"`.
    WrongTypes,
    /// `"running_num":-1`.
    Negative,
    /// `"total_num":17.5`.
    Float,
    /// No `total_num`.
    MissingField,
    /// `"total_num":null`.
    NullField,
    /// A 4xx HSS error in one of the shapes Huawei's SDK understands.
    HssError { status: u16, code: String, message: String, shape: ErrorShape },
    /// 401 `APIGW.0301` although the credentials were fine.
    Unauthorized,
    /// 403 `APIGW.0306`.
    Forbidden,
    /// 404 with an HTML page.
    NotFound,
    /// The connection is closed without any response.
    Reset,
}

impl Fault {
    /// Whether the task APIs answer this fault too when a statistics step has it: the gateway and transport faults
    /// do (the backend is down, the caller is refused, the connection drops); the faults that break the statistics
    /// body in a particular way (`truncated`, `wrong_types`…) concern that body only.
    pub fn applies_to_task_apis(&self) -> bool {
        matches!(
            self,
            Fault::ServerError { .. }
                | Fault::Throttled { .. }
                | Fault::Slow { .. }
                | Fault::Malformed
                | Fault::HssError { .. }
                | Fault::Unauthorized
                | Fault::Forbidden
                | Fault::NotFound
                | Fault::Reset
        )
    }

    /// The name used in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ServerError { .. } => "server_error",
            Fault::Throttled { .. } => "throttled",
            Fault::Slow { .. } => "slow",
            Fault::Malformed => "malformed",
            Fault::Truncated => "truncated",
            Fault::Oversized { .. } => "oversized",
            Fault::WrongTypes => "wrong_types",
            Fault::Negative => "negative",
            Fault::Float => "float",
            Fault::MissingField => "missing_field",
            Fault::NullField => "null_field",
            Fault::HssError { .. } => "hss_error",
            Fault::Unauthorized => "unauthorized",
            Fault::Forbidden => "forbidden",
            Fault::NotFound => "not_found",
            Fault::Reset => "reset",
        }
    }
}

/// The body of a `server_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBody {
    Html,
    Json,
}

/// The JSON shape of an `hss_error` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// `{"error_code":..,"error_msg":..}`
    Flat,
    /// `{"errorCode":..,"errorMsg":..}`
    Camel,
    /// `{"error":{"code":..,"message":..}}`
    Nested,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    simulator: RawSimulator,
    #[serde(default)]
    credentials: Vec<RawCredential>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    series: Vec<RawSeries>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    calls_per_minute: Option<u32>,
    calls_per_minute_per_ip: Option<u32>,
    max_clock_skew: Option<String>,
    token_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    ak: String,
    sk: String,
    security_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    domain: String,
    name: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeries {
    project_id: String,
    task_type: TaskType,
    enterprise_project_id: Option<String>,
    tasks_fault: Option<RawTasksFault>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    tasks: Vec<RawTask>,
}

/// The faults `tasks_fault` takes, each with its default options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawTasksFault {
    ServerError,
    Throttled,
    Malformed,
    HssError,
    Unauthorized,
    Forbidden,
    NotFound,
    Reset,
}

impl RawTasksFault {
    fn fault(self) -> Fault {
        match self {
            RawTasksFault::ServerError => {
                Fault::ServerError { status: 503, body: ErrorBody::Html, code: None, message: None }
            }
            RawTasksFault::Throttled => Fault::Throttled { retry_after: None },
            RawTasksFault::Malformed => Fault::Malformed,
            RawTasksFault::HssError => Fault::HssError {
                status: 400,
                code: "HSS.0001".into(),
                message: "invalid parameter".into(),
                shape: ErrorShape::Flat,
            },
            RawTasksFault::Unauthorized => Fault::Unauthorized,
            RawTasksFault::Forbidden => Fault::Forbidden,
            RawTasksFault::NotFound => Fault::NotFound,
            RawTasksFault::Reset => Fault::Reset,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: String,
    total_num: Option<u64>,
    total_per_hour: Option<f64>,
    running_num: Option<u64>,
    last_task_age: Option<String>,
    last_task_at: Option<String>,
    last_task_start: Option<String>,
    fault: Option<RawFaultKind>,
    status: Option<u16>,
    body: Option<ErrorBody>,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<u64>,
    delay: Option<String>,
    bytes: Option<usize>,
    shape: Option<ErrorShape>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawFaultKind {
    ServerError,
    Throttled,
    Slow,
    Malformed,
    Truncated,
    Oversized,
    WrongTypes,
    Negative,
    Float,
    MissingField,
    NullField,
    HssError,
    Unauthorized,
    Forbidden,
    NotFound,
    Reset,
}

impl Scenario {
    /// Parses and validates a scenario given as TOML text.
    pub fn from_toml_str(s: &str) -> Result<Scenario, ScenarioError> {
        let de = toml::Deserializer::parse(s)
            .map_err(|e| ScenarioError::Parse { key: "(document)".into(), message: toml_message(&e, s) })?;
        let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = toml_message(e.inner(), s);
            ScenarioError::Parse { key, message }
        })?;
        validate(raw)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { path: path.to_path_buf(), source })?;
        Scenario::from_toml_str(&text)
    }

    /// The credential for an access key.
    pub fn credential(&self, ak: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.ak == ak)
    }

    /// Whether any series belongs to this project.
    pub fn knows_project(&self, project_id: &str) -> bool {
        self.series.iter().any(|s| s.project_id == project_id)
    }

    /// The series answering a request: an exact `enterprise_project_id` match wins over a series that leaves it open.
    pub fn find_series(
        &self,
        project_id: &str,
        task_type: TaskType,
        enterprise_project_id: Option<&str>,
    ) -> Option<&Series> {
        let candidates = || self.series.iter().filter(|s| s.project_id == project_id && s.task_type == task_type);
        candidates()
            .find(|s| s.enterprise_project_id.is_some() && s.enterprise_project_id.as_deref() == enterprise_project_id)
            .or_else(|| candidates().find(|s| s.enterprise_project_id.is_none()))
    }
}

/// The message of a TOML error with the line it happened on, without the multi-line source excerpt.
fn toml_message(e: &toml::de::Error, source: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = source[..span.start.min(source.len())].matches('\n').count() + 1;
            format!("{} (line {line})", e.message().trim_end())
        }
        None => e.message().trim_end().to_string(),
    }
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid { key: key.into(), message: message.into() }
}

pub(super) fn duration(key: &str, value: &str) -> Result<Duration, ScenarioError> {
    humantime::parse_duration(value)
        .map_err(|e| invalid(key, format!("`{value}` is not a duration ({e}); write e.g. \"90s\", \"15m\" or \"2h\"")))
}

pub(super) fn non_empty(key: &str, value: &str) -> Result<(), ScenarioError> {
    if value.trim().is_empty() { Err(invalid(key, "must not be empty")) } else { Ok(()) }
}

fn validate(raw: RawScenario) -> Result<Scenario, ScenarioError> {
    let max_clock_skew = match &raw.simulator.max_clock_skew {
        Some(v) => duration("simulator.max_clock_skew", v)?,
        None => DEFAULT_MAX_CLOCK_SKEW,
    };
    let token_ttl = match &raw.simulator.token_ttl {
        Some(v) => duration("simulator.token_ttl", v)?,
        None => DEFAULT_TOKEN_TTL,
    };
    if token_ttl.is_zero() {
        return Err(invalid("simulator.token_ttl", "must be longer than 0s, e.g. \"24h\""));
    }

    let mut credentials = Vec::with_capacity(raw.credentials.len());
    let mut aks = HashSet::new();
    for (i, c) in raw.credentials.into_iter().enumerate() {
        non_empty(&format!("credentials[{i}].ak"), &c.ak)?;
        non_empty(&format!("credentials[{i}].sk"), &c.sk)?;
        if !aks.insert(c.ak.clone()) {
            return Err(invalid(format!("credentials[{i}].ak"), format!("access key {} is listed twice", c.ak)));
        }
        if let Some(t) = &c.security_token {
            non_empty(&format!("credentials[{i}].security_token"), t)?;
        }
        credentials.push(Credential {
            ak: c.ak,
            sk: Secret::new(c.sk),
            security_token: c.security_token.map(Secret::new),
        });
    }

    let mut users = Vec::with_capacity(raw.users.len());
    let mut user_names = HashSet::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        non_empty(&format!("users[{i}].domain"), &u.domain)?;
        non_empty(&format!("users[{i}].name"), &u.name)?;
        non_empty(&format!("users[{i}].password"), &u.password)?;
        if !user_names.insert((u.domain.clone(), u.name.clone())) {
            return Err(invalid(format!("users[{i}].name"), format!("user {}/{} is listed twice", u.domain, u.name)));
        }
        users.push(User { domain: u.domain, name: u.name, password: Secret::new(u.password) });
    }

    let mut tokens = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.into_iter().enumerate() {
        non_empty(&format!("tokens[{i}].token"), &t.token)?;
        tokens.push(Secret::new(t.token));
    }

    if raw.series.is_empty() {
        return Err(invalid("series", "at least one [[series]] is needed, or the simulator has nothing to answer"));
    }
    let mut series = Vec::with_capacity(raw.series.len());
    let mut identities = HashSet::new();
    let mut task_ids = HashSet::new();
    for (i, s) in raw.series.into_iter().enumerate() {
        let key = format!("series[{i}]");
        non_empty(&format!("{key}.project_id"), &s.project_id)?;
        if let Some(eps) = &s.enterprise_project_id {
            non_empty(&format!("{key}.enterprise_project_id"), eps)?;
        }
        if !identities.insert((s.project_id.clone(), s.task_type, s.enterprise_project_id.clone())) {
            return Err(invalid(
                key,
                format!(
                    "another series already answers project {} / {} / enterprise project {}",
                    s.project_id,
                    s.task_type,
                    s.enterprise_project_id.as_deref().unwrap_or("(any)")
                ),
            ));
        }
        if s.steps.is_empty() {
            return Err(invalid(format!("{key}.steps"), "at least one [[series.steps]] is needed, starting at \"0s\""));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(s.steps.len());
        for (j, raw_step) in s.steps.into_iter().enumerate() {
            let step_key = format!("{key}.steps[{j}]");
            let step = validate_step(&step_key, raw_step)?;
            match steps.last() {
                None if !step.at.is_zero() => {
                    return Err(invalid(format!("{step_key}.at"), "the first step must start at \"0s\""));
                }
                Some(prev) if step.at <= prev.at => {
                    return Err(invalid(
                        format!("{step_key}.at"),
                        format!(
                            "steps must be in increasing order of `at`; {} is not after {}",
                            humantime::format_duration(step.at),
                            humantime::format_duration(prev.at)
                        ),
                    ));
                }
                _ => {}
            }
            steps.push(step);
        }
        let tasks = tasks::validate_tasks(&key, s.task_type, s.tasks, &mut task_ids)?;
        series.push(Series {
            project_id: s.project_id,
            task_type: s.task_type,
            enterprise_project_id: s.enterprise_project_id,
            steps,
            tasks,
            tasks_fault: s.tasks_fault.map(RawTasksFault::fault),
        });
    }

    Ok(Scenario {
        calls_per_minute: raw.simulator.calls_per_minute.unwrap_or(DEFAULT_CALLS_PER_MINUTE),
        calls_per_minute_per_ip: raw.simulator.calls_per_minute_per_ip.unwrap_or(0),
        max_clock_skew,
        token_ttl,
        credentials,
        users,
        tokens,
        series,
    })
}

fn validate_step(key: &str, raw: RawStep) -> Result<Step, ScenarioError> {
    let at = duration(&format!("{key}.at"), &raw.at)?;

    let given = [
        ("last_task_age", raw.last_task_age.is_some()),
        ("last_task_at", raw.last_task_at.is_some()),
        ("last_task_start", raw.last_task_start.is_some()),
    ];
    let chosen: Vec<&str> = given.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
    if chosen.len() > 1 {
        return Err(invalid(
            format!("{key}.{}", chosen[1]),
            format!("give at most one of last_task_age, last_task_at, last_task_start (got {})", chosen.join(", ")),
        ));
    }
    let last_task = if let Some(v) = &raw.last_task_age {
        LastTask::Age(duration(&format!("{key}.last_task_age"), v)?)
    } else if let Some(v) = &raw.last_task_at {
        LastTask::At(duration(&format!("{key}.last_task_at"), v)?)
    } else if let Some(v) = &raw.last_task_start {
        let t = DateTime::parse_from_rfc3339(v).map_err(|e| {
            invalid(
                format!("{key}.last_task_start"),
                format!("`{v}` is not an RFC 3339 time ({e}); write e.g. \"2026-01-01T00:00:00Z\""),
            )
        })?;
        LastTask::Start(t.with_timezone(&Utc))
    } else {
        LastTask::Absent
    };

    let total_per_hour = raw.total_per_hour.unwrap_or(0.0);
    if !total_per_hour.is_finite() || total_per_hour < 0.0 {
        return Err(invalid(format!("{key}.total_per_hour"), "must be a number of tasks per hour, 0 or more"));
    }

    let fault = build_fault(key, &raw)?;
    let needs_values = matches!(fault, None | Some(Fault::Slow { .. }));
    if needs_values {
        if raw.total_num.is_none() {
            return Err(invalid(format!("{key}.total_num"), "is required on a step that answers values"));
        }
        if raw.running_num.is_none() {
            return Err(invalid(format!("{key}.running_num"), "is required on a step that answers values"));
        }
    }

    Ok(Step {
        at,
        total_num: raw.total_num.unwrap_or(0),
        total_per_hour,
        running_num: raw.running_num.unwrap_or(0),
        last_task,
        fault,
    })
}

fn build_fault(key: &str, raw: &RawStep) -> Result<Option<Fault>, ScenarioError> {
    let Some(kind) = raw.fault else {
        if let Some(field) = first_fault_option(raw, &[]) {
            return Err(invalid(format!("{key}.{field}"), "only applies to a fault step; add `fault = \"...\"`"));
        }
        return Ok(None);
    };
    let allowed: &[&str] = match kind {
        RawFaultKind::ServerError => &["status", "body", "code", "message"],
        RawFaultKind::Throttled => &["retry_after"],
        RawFaultKind::Slow => &["delay"],
        RawFaultKind::Oversized => &["bytes"],
        RawFaultKind::HssError => &["status", "code", "message", "shape"],
        _ => &[],
    };
    let fault = match kind {
        RawFaultKind::ServerError => {
            let status = raw.status.unwrap_or(503);
            if !(500..=599).contains(&status) {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{status} is not a 5xx status; use 500, 502 or 503"),
                ));
            }
            Fault::ServerError {
                status,
                body: raw.body.unwrap_or(ErrorBody::Html),
                code: raw.code.clone(),
                message: raw.message.clone(),
            }
        }
        RawFaultKind::Throttled => Fault::Throttled { retry_after: raw.retry_after },
        RawFaultKind::Slow => {
            let Some(delay) = &raw.delay else {
                return Err(invalid(format!("{key}.delay"), "is required for fault \"slow\", e.g. delay = \"5s\""));
            };
            Fault::Slow { delay: duration(&format!("{key}.delay"), delay)? }
        }
        RawFaultKind::Malformed => Fault::Malformed,
        RawFaultKind::Truncated => Fault::Truncated,
        RawFaultKind::Oversized => {
            let bytes = raw.bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES);
            if !(64..=MAX_OVERSIZED_BYTES).contains(&bytes) {
                return Err(invalid(
                    format!("{key}.bytes"),
                    format!("must be between 64 and {MAX_OVERSIZED_BYTES}; got {bytes}"),
                ));
            }
            Fault::Oversized { bytes }
        }
        RawFaultKind::WrongTypes => Fault::WrongTypes,
        RawFaultKind::Negative => Fault::Negative,
        RawFaultKind::Float => Fault::Float,
        RawFaultKind::MissingField => Fault::MissingField,
        RawFaultKind::NullField => Fault::NullField,
        RawFaultKind::HssError => {
            let status = raw.status.unwrap_or(400);
            if !(400..=499).contains(&status) {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{status} is not a 4xx status; HSS errors are 400"),
                ));
            }
            Fault::HssError {
                status,
                code: raw.code.clone().unwrap_or_else(|| "HSS.0001".into()),
                message: raw.message.clone().unwrap_or_else(|| "invalid parameter".into()),
                shape: raw.shape.unwrap_or(ErrorShape::Flat),
            }
        }
        RawFaultKind::Unauthorized => Fault::Unauthorized,
        RawFaultKind::Forbidden => Fault::Forbidden,
        RawFaultKind::NotFound => Fault::NotFound,
        RawFaultKind::Reset => Fault::Reset,
    };
    if let Some(field) = first_fault_option(raw, allowed) {
        return Err(invalid(format!("{key}.{field}"), format!("is not used by fault \"{}\"", fault.name())));
    }
    Ok(Some(fault))
}

/// The first fault option set on the step that is not in `allowed`.
fn first_fault_option(raw: &RawStep, allowed: &[&str]) -> Option<&'static str> {
    [
        ("status", raw.status.is_some()),
        ("body", raw.body.is_some()),
        ("code", raw.code.is_some()),
        ("message", raw.message.is_some()),
        ("retry_after", raw.retry_after.is_some()),
        ("delay", raw.delay.is_some()),
        ("bytes", raw.bytes.is_some()),
        ("shape", raw.shape.is_some()),
    ]
    .into_iter()
    .find(|(name, set)| *set && !allowed.contains(name))
    .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[series]]
project_id = "p1"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 1
  running_num = 0
"#;

    fn err(s: &str) -> ScenarioError {
        match Scenario::from_toml_str(s) {
            Ok(_) => panic!("expected an error for:\n{s}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_minimal_scenario_gets_the_documented_defaults() {
        let s = Scenario::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.calls_per_minute, 5);
        assert_eq!(s.max_clock_skew, Duration::from_secs(900));
        assert_eq!(s.token_ttl, Duration::from_secs(86400));
        assert_eq!(s.series[0].steps[0].last_task, LastTask::Absent);
        assert_eq!(s.series[0].steps[0].fault, None);
    }

    #[test]
    fn an_unknown_top_level_key_is_named() {
        let e = err(&format!("bogus = 1\n{MINIMAL}"));
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(matches!(e, ScenarioError::Parse { .. }));
    }

    #[test]
    fn an_unknown_key_inside_a_step_is_named_with_its_path() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  runing = 3"));
        assert_eq!(e.key(), "series[0].steps[0].runing");
        assert!(e.to_string().contains("runing"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = err(&MINIMAL.replace("total_num = 1", "total_num = \"lots\""));
        assert_eq!(e.key(), "series[0].steps[0].total_num");
    }

    #[test]
    fn an_unknown_task_type_names_the_key_and_the_accepted_values() {
        let e = err(&MINIMAL.replace("cluster_scan", "host_scan"));
        assert_eq!(e.key(), "series[0].task_type");
        assert!(e.to_string().contains("iac_scan"), "{e}");
    }

    #[test]
    fn an_unknown_fault_names_the_key() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  fault = \"explode\""));
        assert_eq!(e.key(), "series[0].steps[0].fault");
    }

    #[test]
    fn a_bad_duration_names_the_key_and_shows_an_example() {
        let e = err(&format!("[simulator]\nmax_clock_skew = \"soon\"\n{MINIMAL}"));
        assert_eq!(e.key(), "simulator.max_clock_skew");
        assert!(e.to_string().contains("15m"), "{e}");
    }

    #[test]
    fn the_first_step_must_start_at_zero() {
        let e = err(&MINIMAL.replace("at = \"0s\"", "at = \"5s\""));
        assert_eq!(e.key(), "series[0].steps[0].at");
    }

    #[test]
    fn steps_out_of_order_are_rejected() {
        let s = format!("{MINIMAL}\n  [[series.steps]]\n  at = \"0s\"\n  total_num = 2\n  running_num = 0\n");
        assert_eq!(err(&s).key(), "series[0].steps[1].at");
    }

    #[test]
    fn two_last_task_sources_are_rejected() {
        let s =
            MINIMAL.replace("running_num = 0", "running_num = 0\n  last_task_age = \"1h\"\n  last_task_at = \"0s\"");
        let e = err(&s);
        assert_eq!(e.key(), "series[0].steps[0].last_task_at");
    }

    #[test]
    fn a_value_step_without_total_num_is_rejected() {
        let e = err(&MINIMAL.replace("total_num = 1", ""));
        assert_eq!(e.key(), "series[0].steps[0].total_num");
    }

    #[test]
    fn a_fault_step_needs_no_values() {
        let s = MINIMAL.replace("total_num = 1\n  running_num = 0", "fault = \"malformed\"");
        assert_eq!(Scenario::from_toml_str(&s).unwrap().series[0].steps[0].fault, Some(Fault::Malformed));
    }

    #[test]
    fn an_option_of_another_fault_is_rejected() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  fault = \"throttled\"\n  status = 503"));
        assert_eq!(e.key(), "series[0].steps[0].status");
        assert!(e.to_string().contains("throttled"), "{e}");
    }

    #[test]
    fn a_fault_option_without_a_fault_is_rejected() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  delay = \"5s\""));
        assert_eq!(e.key(), "series[0].steps[0].delay");
    }

    #[test]
    fn a_server_error_must_be_5xx() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  fault = \"server_error\"\n  status = 404"));
        assert_eq!(e.key(), "series[0].steps[0].status");
    }

    #[test]
    fn slow_needs_a_delay() {
        let e = err(&MINIMAL.replace("running_num = 0", "running_num = 0\n  fault = \"slow\""));
        assert_eq!(e.key(), "series[0].steps[0].delay");
    }

    #[test]
    fn duplicate_series_are_rejected() {
        let e = err(&format!("{MINIMAL}{MINIMAL}"));
        assert_eq!(e.key(), "series[1]");
    }

    #[test]
    fn a_scenario_without_series_is_rejected() {
        assert_eq!(err("[simulator]\ncalls_per_minute = 1\n").key(), "series");
    }

    #[test]
    fn duplicate_access_keys_are_rejected() {
        let c = "[[credentials]]\nak = \"A\"\nsk = \"S\"\n";
        assert_eq!(err(&format!("{c}{c}{MINIMAL}")).key(), "credentials[1].ak");
    }

    #[test]
    fn invalid_toml_is_a_parse_error_with_a_line() {
        let e = err("[[series]\n");
        assert!(matches!(e, ScenarioError::Parse { .. }));
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn an_exact_enterprise_project_wins_over_an_open_series() {
        let s = format!(
            "{MINIMAL}\n[[series]]\nproject_id = \"p1\"\ntask_type = \"cluster_scan\"\nenterprise_project_id = \"e1\"\n  \
             [[series.steps]]\n  at = \"0s\"\n  total_num = 9\n  running_num = 0\n"
        );
        let s = Scenario::from_toml_str(&s).unwrap();
        let hit = |eps| s.find_series("p1", TaskType::ClusterScan, eps).map(|x| x.steps[0].total_num);
        assert_eq!(hit(Some("e1")), Some(9));
        assert_eq!(hit(Some("e2")), Some(1));
        assert_eq!(hit(None), Some(1));
        assert!(s.find_series("p1", TaskType::IacScan, None).is_none());
        assert!(s.knows_project("p1") && !s.knows_project("p2"));
    }

    #[test]
    fn the_demo_scenario_parses() {
        let text = include_str!("../../scenarios/demo.toml");
        let s = Scenario::from_toml_str(text).unwrap();
        assert_eq!(s.series.len(), 4);
        assert!(s.credential("HPUAEXAMPLEAK0000001").is_some());
        let projects: HashSet<&str> = s.series.iter().map(|x| x.project_id.as_str()).collect();
        assert_eq!(projects.len(), 2);
        let types: HashSet<TaskType> = s.series.iter().map(|x| x.task_type).collect();
        assert_eq!(types.len(), 2);
        assert!(s.series.iter().any(|x| x.steps.iter().any(|st| st.fault.is_some())));
        // A finished task with a failed cluster and its reason, for scan_failures to name.
        let failed = s.series[0].tasks.iter().find(|t| t.end.is_some() && t.counts.failed > 0).unwrap();
        let cluster = failed.clusters.iter().find(|c| c.scan_status == super::super::ScanStatus::Failed).unwrap();
        assert_eq!(cluster.name, "prod-cce-1");
        assert_eq!(
            cluster.details[0].failed_reason.as_deref(),
            Some("kube-apiserver unreachable: connection timed out")
        );
        assert!(s.series[1].tasks.iter().any(|t| t.file_type == super::super::FileType::K8sYaml));
    }
}
