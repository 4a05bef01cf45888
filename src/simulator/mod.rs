//! The HSS simulator: a real HTTP server that answers `GET /v5/{project_id}/common/task-statistics` like Huawei's
//! gateway and HSS do — AK/SK signatures checked with the same signer, IAM tokens, the AK lockout, the 5-calls-a-minute
//! limits per user and per client IP, and every way the API has been seen to misbehave — following a scripted
//! [`Scenario`].
//!
//! It owns its own clock (wall clock + an offset moved by [`Simulator::advance`] or `POST /__sim/advance`), so tests
//! and rehearsals can jump hours ahead without sleeping. `/__sim/*` is a control API for tests, not part of HSS.
//! The scenario format is documented in `scenarios/README.md`.

pub mod audit;
mod auth;
mod respond;
mod scenario;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, SystemClock};
use crate::model::TaskType;
use auth::{Gate, Limits, RequestParts};
use respond::{JSON, Plan};

pub use auth::{LOCKOUT, MAX_FAILED_SIGNATURES};
pub use scenario::{Credential, ErrorBody, ErrorShape, Fault, LastTask, Scenario, ScenarioError, Series, Step, User};
pub use tasks::{
    Cluster, ClusterType, Counts, FileType, IacFile, ScanDetail, ScanStatus, ScanType, Task, TaskStatus, TriggerType,
};

/// The call log keeps this many records by default, dropping the oldest, so a long `simulate` run stays small.
pub const MAX_CALL_RECORDS: usize = 10_000;
/// How long in-flight requests get to finish after shutdown before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// A client that opens a connection and sends no complete header block is dropped after this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The response header carrying the request id, as on the real gateway.
const REQUEST_ID: &str = "x-request-id";

/// The API a request was for. HSS counts its rate limits per API, so the gateway and the audit do too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Api {
    /// `GET /v5/{project_id}/common/task-statistics` (ShowTaskStatistics).
    TaskStatistics,
    /// `POST /v5/{project_id}/common/tasks/batch-query` (ListTasks).
    ListTasks,
    /// `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query` (ListTaskResources).
    ListTaskResources,
    /// `POST /v3/auth/tokens` (IAM password login; not rate-limited, not part of the HSS budget).
    IamTokens,
}

impl Api {
    /// The name used in the call log and the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::TaskStatistics => "task_statistics",
            Api::ListTasks => "list_tasks",
            Api::ListTaskResources => "list_task_resources",
            Api::IamTokens => "iam_tokens",
        }
    }

    /// Whether calls to it count toward HSS's per-API limits.
    pub fn is_hss(self) -> bool {
        !matches!(self, Api::IamTokens)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request the simulator answered (or refused), as `GET /__sim/calls` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// Simulator time the request arrived.
    pub at: DateTime<Utc>,
    /// The API the path belongs to; `None` for a path no API has.
    pub api: Option<Api>,
    /// The client's address, as the per-IP limit sees it; `None` when the server could not tell (the router mounted
    /// in a server other than [`Simulator::serve`]).
    pub peer: Option<SocketAddr>,
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The AK, the IAM user as `domain/name`, `token` for a static token, or `None` when the request named no one.
    pub identity: Option<String>,
    /// The status returned; `None` when the connection was reset without a response.
    pub status: Option<u16>,
    /// The error code in the body (`APIGW.0301`, `HSS.0001`), or the status for bodies without one.
    pub error_code: Option<String>,
    /// The `X-Request-Id` sent back.
    pub request_id: String,
}

/// The simulator: a scenario, its clock and the gateway's memory. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

struct Shared {
    scenario: Scenario,
    /// The clock simulator time is read from (before the `advance` offset): the system clock, or a test's.
    clock: Arc<dyn Clock>,
    /// Clock time the simulator was created: scenario time zero.
    started: DateTime<Utc>,
    state: Mutex<SimState>,
}

/// How a [`Simulator`] is built; the defaults are what `scanwatch simulate` uses.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Where simulator time comes from. A test that runs scanwatch on a paused tokio clock gives the simulator the
    /// same clock, so both sides count the rate window in the same time.
    pub clock: Arc<dyn Clock>,
    /// How many call records [`Simulator::calls`] keeps (a long audited run needs every call).
    pub max_call_records: usize,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        SimulatorOptions { clock: Arc::new(SystemClock::default()), max_call_records: MAX_CALL_RECORDS }
    }
}

struct SimState {
    /// What `advance` has added to the wall clock.
    offset: chrono::Duration,
    gate: Gate,
    calls: VecDeque<CallRecord>,
    /// How many call records the log keeps.
    max_call_records: usize,
}

/// The client's address, put on every request by [`Simulator::serve`]'s accept loop.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// Marks a response the connection layer must replace by closing the connection.
#[derive(Debug, Clone, Copy)]
struct ResetConnection;

/// The error a connection's service returns to make hyper drop the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("the scenario asked for the connection to be reset")]
struct ResetRequested;

impl Simulator {
    /// A simulator whose scenario time starts now.
    pub fn new(scenario: Scenario) -> Simulator {
        Simulator::with_options(scenario, SimulatorOptions::default())
    }

    /// A simulator on the given clock and call-log size; its scenario time starts at the clock's now.
    pub fn with_options(scenario: Scenario, options: SimulatorOptions) -> Simulator {
        Simulator {
            shared: Arc::new(Shared {
                scenario,
                started: options.clock.now(),
                clock: options.clock,
                state: Mutex::new(SimState {
                    offset: chrono::Duration::zero(),
                    gate: Gate::default(),
                    calls: VecDeque::new(),
                    max_call_records: options.max_call_records,
                }),
            }),
        }
    }

    /// The scenario being played.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// All endpoints: the HSS API, IAM password login and the `/__sim` control API. Served by anything but
    /// [`Simulator::serve`], a `reset` fault answers an empty 502 instead of closing the connection.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v5/{project_id}/common/task-statistics", get(task_statistics))
            .route("/v5/{project_id}/common/task-statistics/", get(task_statistics))
            .route("/v5/{project_id}/common/tasks/batch-query", post(list_tasks))
            .route("/v5/{project_id}/common/tasks/batch-query/", post(list_tasks))
            .route("/v5/{project_id}/common/tasks/{task_id}/resources/batch-query", post(list_task_resources))
            .route("/v5/{project_id}/common/tasks/{task_id}/resources/batch-query/", post(list_task_resources))
            .route("/v3/auth/tokens", post(iam_tokens))
            .route("/__sim/calls", get(control_calls))
            .route("/__sim/now", get(control_now))
            .route("/__sim/advance", post(control_advance))
            .fallback(unknown_api)
            .layer(middleware::from_fn(ensure_request_id))
            .with_state(self.clone())
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then lets in-flight requests finish (briefly).
    /// Uses its own accept loop so that the `reset` fault can close a connection without answering.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let router = self.router();
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, router.clone(), shutdown.clone()));
                }
                Err(e) if is_per_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "simulator: accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        connections.close();
        connections.wait().await;
        Ok(())
    }

    /// Moves the simulator clock forward: steps, token expiry, the rate window and lockouts all follow.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        state.offset = state.offset.checked_add(&by).unwrap_or(chrono::Duration::MAX);
    }

    /// How far [`Simulator::advance`] has moved the simulator's clock ahead of the clock it reads.
    pub fn offset(&self) -> chrono::Duration {
        self.lock().offset
    }

    /// Simulator time: the clock (the wall clock unless [`SimulatorOptions`] gave another) plus everything
    /// [`Simulator::advance`] added.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self.lock().offset;
        let wall = self.shared.clock.now();
        wall.checked_add_signed(offset).unwrap_or(wall)
    }

    /// How far into the scenario the simulator is.
    pub fn scenario_time(&self) -> Duration {
        (self.now() - self.shared.started).to_std().unwrap_or(Duration::ZERO)
    }

    /// Every request answered so far (at most [`SimulatorOptions::max_call_records`], oldest first).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // The state stays consistent even if a holder panicked: every update is a single assignment or push.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SimState {
    fn record(&mut self, call: CallRecord) {
        while !self.calls.is_empty() && self.calls.len() >= self.max_call_records {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }
}

/// Loads `scenario`, binds `listen`, announces the address on stdout and serves until `shutdown`.
pub async fn run(listen: SocketAddr, scenario: &Path, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scenario = Scenario::load(scenario)?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("cannot read the listening address")?;
    announce(&format!("scanwatch simulator listening on http://{addr}"));
    Simulator::new(scenario).serve(listener, shutdown).await.context("the simulator stopped serving")?;
    Ok(())
}

/// Prints the line scripts and the `demo` command wait for; a closed stdout is logged, not a panic as with `println!`.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "{line} (could not write to stdout)");
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let tower = TowerToHyperService::new(router.clone());
        req.extensions_mut().insert(PeerAddr(peer));
        async move {
            let response = match hyper::service::Service::call(&tower, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<ResetConnection>().is_some() {
                // hyper drops a connection whose service fails, without writing a response.
                return Err(ResetRequested);
            }
            Ok(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "simulator: connection closed");
    }
}

/// Errors that concern one incoming connection only; the listener itself is fine.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted)
}

/// 32 random hex characters, like the gateway's request ids.
fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every response carries an `X-Request-Id`; handlers that put one in the body set it themselves.
async fn ensure_request_id(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if !response.headers().contains_key(REQUEST_ID)
        && let Ok(value) = HeaderValue::from_str(&new_request_id())
    {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn into_response(plan: Plan, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(plan.body));
    *response.status_mut() = StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(plan.content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    for (name, value) in plan.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    if plan.reset {
        response.extensions_mut().insert(ResetConnection);
    }
    response
}

fn json_response(status: StatusCode, body: Value, request_id: &str) -> Response {
    let plan = Plan {
        status: status.as_u16(),
        content_type: JSON,
        body: Bytes::from(body.to_string()),
        headers: Vec::new(),
        delay: None,
        reset: false,
        error_code: None,
    };
    into_response(plan, request_id)
}

/// `GET /v5/{project_id}/common/task-statistics`: gateway checks, then the scenario's answer.
async fn task_statistics(
    State(sim): State<Simulator>,
    UrlPath(project_id): UrlPath<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call { api: Api::TaskStatistics, peer: peer.map(|p| p.0.0), method, uri, headers, body };
    let raw_query = call.uri.query().unwrap_or("").to_string();
    gateway(&sim, call, |sim, now, request_id| answer(sim, &project_id, &raw_query, now, request_id)).await
}

/// `POST /v5/{project_id}/common/tasks/batch-query` (ListTasks).
async fn list_tasks(
    State(sim): State<Simulator>,
    UrlPath(project_id): UrlPath<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call { api: Api::ListTasks, peer: peer.map(|p| p.0.0), method, uri, headers, body };
    let raw_query = call.uri.query().unwrap_or("").to_string();
    let request_body = call.body.clone();
    gateway(&sim, call, |sim, now, request_id| {
        let ask = TaskAsk { project_id: &project_id, task_id: None, raw_query: &raw_query, body: &request_body };
        answer_tasks(sim, &ask, now, request_id)
    })
    .await
}

/// `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query` (ListTaskResources).
async fn list_task_resources(
    State(sim): State<Simulator>,
    UrlPath((project_id, task_id)): UrlPath<(String, String)>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call { api: Api::ListTaskResources, peer: peer.map(|p| p.0.0), method, uri, headers, body };
    let raw_query = call.uri.query().unwrap_or("").to_string();
    let request_body = call.body.clone();
    gateway(&sim, call, |sim, now, request_id| {
        let ask =
            TaskAsk { project_id: &project_id, task_id: Some(&task_id), raw_query: &raw_query, body: &request_body };
        answer_tasks(sim, &ask, now, request_id)
    })
    .await
}

/// An HSS request as it arrived.
struct Call {
    api: Api,
    peer: Option<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// The gateway in front of every HSS API: authentication, the per-identity and per-IP limits of `call.api`, then
/// `answer` for an admitted call; every call is logged.
async fn gateway(
    sim: &Simulator,
    call: Call,
    answer: impl FnOnce(&Simulator, DateTime<Utc>, &str) -> Plan,
) -> Response {
    let request_id = new_request_id();
    let now = sim.now();
    let raw_query = call.uri.query().unwrap_or("");
    let parts = RequestParts {
        method: call.method.as_str(),
        path: call.uri.path(),
        raw_query,
        headers: &call.headers,
        body: &call.body,
    };
    let scenario = &sim.shared.scenario;
    let limits = Limits { per_identity: scenario.calls_per_minute, per_ip: scenario.calls_per_minute_per_ip };
    let ip: Option<IpAddr> = call.peer.map(|p| p.ip());

    let plan = {
        let mut state = sim.lock();
        let checked = state
            .gate
            .authenticate(scenario, &parts, now)
            .and_then(|identity| state.gate.admit(&identity, ip, call.api, limits, now).map(|()| identity));
        let (identity, plan) = match checked {
            Err(rejection) => (
                rejection.identity,
                Plan::gateway_error(rejection.status, rejection.code, &rejection.message, &request_id),
            ),
            Ok(identity) => (Some(identity.label()), answer(sim, now, &request_id)),
        };
        state.record(CallRecord {
            at: now,
            api: Some(call.api),
            peer: call.peer,
            method: call.method.to_string(),
            path: call.uri.path().to_string(),
            query: raw_query.to_string(),
            identity,
            status: (!plan.reset).then_some(plan.status),
            error_code: plan.error_code.clone(),
            request_id: request_id.clone(),
        });
        plan
    };
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    into_response(plan, &request_id)
}

/// What the scenario says for an authenticated, admitted request.
fn answer(sim: &Simulator, project_id: &str, raw_query: &str, now: DateTime<Utc>, request_id: &str) -> Plan {
    let scenario = &sim.shared.scenario;
    let query = auth::parse_query(raw_query);
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(task_type) = param("task_type").and_then(TaskType::parse) else {
        return Plan::gateway_error(
            400,
            "HSS.0001",
            "invalid parameter: task_type must be cluster_scan or iac_scan",
            request_id,
        );
    };
    if !scenario.knows_project(project_id) {
        return Plan::gateway_error(
            404,
            "HSS.0011",
            &format!("resource does not exist: no project {project_id} in this scenario"),
            request_id,
        );
    }
    let eps = param("enterprise_project_id");
    let Some(series) = scenario.find_series(project_id, task_type, eps) else {
        return Plan::gateway_error(400, "HSS.0001", "invalid parameter", request_id);
    };
    let t = (now - sim.shared.started).to_std().unwrap_or(Duration::ZERO);
    let Some(step) = series.step_at(t).or(series.steps.first()) else {
        return Plan::gateway_error(400, "HSS.0001", "invalid parameter", request_id);
    };
    let values = respond::values_at(step, sim.shared.started, now);
    let limit = match scenario.calls_per_minute {
        0 => scenario::DEFAULT_CALLS_PER_MINUTE,
        n => n,
    };
    respond::plan(step, &values, request_id, limit)
}

/// A ListTasks or ListTaskResources request, past the gateway.
struct TaskAsk<'a> {
    project_id: &'a str,
    /// ListTaskResources' task; `None` for ListTasks.
    task_id: Option<&'a str>,
    raw_query: &'a str,
    body: &'a [u8],
}

/// What the scenario says to an admitted ListTasks / ListTaskResources: parameter errors first, then the series'
/// `tasks_fault` or the fault of the statistics step in force (where it applies), then the tasks at this moment.
fn answer_tasks(sim: &Simulator, ask: &TaskAsk<'_>, now: DateTime<Utc>, request_id: &str) -> Plan {
    let scenario = &sim.shared.scenario;
    let refuse = |(status, code, message): tasks::Refusal| Plan::gateway_error(status, code, &message, request_id);
    let query = auth::parse_query(ask.raw_query);
    let page = match tasks::parse_page(&query) {
        Ok(page) => page,
        Err(refusal) => return refuse(refusal),
    };
    let (body, task_type) = match tasks::parse_body(ask.body) {
        Ok(parsed) => parsed,
        Err(refusal) => return refuse(refusal),
    };
    if !scenario.knows_project(ask.project_id) {
        return Plan::gateway_error(
            404,
            "HSS.0011",
            &format!("resource does not exist: no project {} in this scenario", ask.project_id),
            request_id,
        );
    }
    let Some(series) = scenario.find_series(ask.project_id, task_type, page.enterprise_project_id.as_deref()) else {
        return Plan::gateway_error(400, "HSS.0001", "invalid parameter", request_id);
    };
    let t = (now - sim.shared.started).to_std().unwrap_or(Duration::ZERO);
    let limit = match scenario.calls_per_minute {
        0 => scenario::DEFAULT_CALLS_PER_MINUTE,
        n => n,
    };
    let step_fault = series.step_at(t).and_then(|s| s.fault.as_ref()).filter(|f| f.applies_to_task_apis());
    let mut delay = None;
    match series.tasks_fault.as_ref().or(step_fault) {
        Some(Fault::Slow { delay: d }) => delay = Some(*d),
        Some(fault) => {
            let none = respond::Values { total_num: 0, running_num: 0, last_task_start_time: None };
            return respond::fault_plan(fault, &none, request_id, limit);
        }
        None => {}
    }
    let moment = tasks::Moment { started: sim.shared.started, t };
    let answer = match ask.task_id {
        None => tasks::list_tasks(&series.tasks, task_type, &body, &page, moment).map(Some),
        Some(task_id) => tasks::list_resources(&series.tasks, task_id, task_type, &body, &page, moment),
    };
    let plan = match answer {
        Ok(Some(value)) => respond::ok_json(&value),
        Ok(None) => Plan::gateway_error(
            400,
            "HSS.0011",
            &format!(
                "resource does not exist: no {task_type} task {} in project {}",
                ask.task_id.unwrap_or_default(),
                ask.project_id
            ),
            request_id,
        ),
        Err(refusal) => refuse(refusal),
    };
    Plan { delay, ..plan }
}

/// The parts of an IAM password login the simulator checks.
struct Login {
    domain: String,
    name: String,
    password: String,
}

/// Reads an IAM `POST /v3/auth/tokens` body; the error names the first missing or wrong field.
fn parse_login(body: &[u8]) -> Result<Login, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let identity = &v["auth"]["identity"];
    let methods = identity["methods"].as_array().ok_or("auth.identity.methods is required")?;
    if !methods.iter().any(|m| m == "password") {
        return Err("auth.identity.methods must contain \"password\"".into());
    }
    let user = &identity["password"]["user"];
    let field = |value: &Value, key: &str| {
        value.as_str().map(str::to_string).ok_or_else(|| format!("{key} is required and must be a string"))
    };
    let login = Login {
        domain: field(&user["domain"]["name"], "auth.identity.password.user.domain.name")?,
        name: field(&user["name"], "auth.identity.password.user.name")?,
        password: field(&user["password"], "auth.identity.password.user.password")?,
    };
    let project = &v["auth"]["scope"]["project"];
    if project["name"].as_str().or(project["id"].as_str()).is_none() {
        return Err("auth.scope.project.name or auth.scope.project.id is required".into());
    }
    Ok(login)
}

fn iam_error(status: StatusCode, message: &str, request_id: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    json_response(
        status,
        json!({ "error": { "code": status.as_u16(), "message": message, "title": title } }),
        request_id,
    )
}

/// `POST /v3/auth/tokens`: IAM password login issuing a token in `X-Subject-Token`.
async fn iam_tokens(
    State(sim): State<Simulator>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let request_id = new_request_id();
    let now = sim.now();
    let scenario = &sim.shared.scenario;
    let mut state = sim.lock();
    let (identity, response) = match parse_login(&body) {
        Err(message) => (None, iam_error(StatusCode::BAD_REQUEST, &message, &request_id)),
        Ok(login) => {
            let label = format!("{}/{}", login.domain, login.name);
            let user = scenario.users.iter().find(|u| {
                u.domain == login.domain
                    && u.name == login.name
                    && crate::hss::signer::constant_time_eq(u.password.expose().as_bytes(), login.password.as_bytes())
            });
            match user {
                None => (
                    Some(label),
                    iam_error(StatusCode::UNAUTHORIZED, "The username or password is wrong.", &request_id),
                ),
                Some(user) => {
                    let (token, expires_at) = state.gate.issue_token(user, now, scenario.token_ttl);
                    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
                    let body = json!({ "token": {
                        "expires_at": stamp(expires_at),
                        "issued_at": stamp(now),
                        "methods": ["password"],
                    }});
                    let mut response = json_response(StatusCode::CREATED, body, &request_id);
                    if let Ok(value) = HeaderValue::from_str(&token) {
                        response.headers_mut().insert("x-subject-token", value);
                    }
                    (Some(label), response)
                }
            }
        }
    };
    let status = response.status().as_u16();
    state.record(CallRecord {
        at: now,
        api: Some(Api::IamTokens),
        peer: peer.map(|p| p.0.0),
        method: "POST".into(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        identity,
        status: Some(status),
        error_code: (status >= 400).then(|| status.to_string()),
        request_id: request_id.clone(),
    });
    response
}

/// Any other path: the gateway's "no such API".
async fn unknown_api(
    State(sim): State<Simulator>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
) -> Response {
    let request_id = new_request_id();
    let plan = Plan::gateway_error(
        404,
        "APIGW.0101",
        "The API does not exist or has not been published in the environment",
        &request_id,
    );
    let now = sim.now();
    sim.lock().record(CallRecord {
        at: now,
        api: None,
        peer: peer.map(|p| p.0.0),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        identity: None,
        status: Some(404),
        error_code: plan.error_code.clone(),
        request_id: request_id.clone(),
    });
    into_response(plan, &request_id)
}

/// `GET /__sim/calls`: the call log.
async fn control_calls(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.calls()).into_response()
}

/// `GET /__sim/now`: the simulator time, and how far `advance` has moved it (`offset`, the `--clock-offset` a
/// rehearsing scanwatch takes so that its signatures and its rules follow simulator time).
async fn control_now(State(sim): State<Simulator>) -> Response {
    axum::Json(clock_json(&sim)).into_response()
}

fn clock_json(sim: &Simulator) -> Value {
    let offset = sim.offset().to_std().unwrap_or_default();
    json!({ "now": rfc3339(sim.now()), "offset": crate::config::format_duration(offset) })
}

/// `POST /__sim/advance` with `{"by":"90m"}`: moves the simulator clock.
async fn control_advance(State(sim): State<Simulator>, body: Bytes) -> Response {
    let by = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["by"].as_str().map(str::to_string))
        .ok_or_else(|| "the body must be JSON like {\"by\":\"90m\"}".to_string())
        .and_then(|by| {
            humantime::parse_duration(&by).map_err(|e| format!("`by` is not a duration ({e}), e.g. \"90m\""))
        });
    match by {
        Ok(by) => {
            sim.advance(by);
            axum::Json(clock_json(&sim)).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": message }))).into_response(),
    }
}
