//! The HTTP API (axum), served only when `[server] listen` is set: `/healthz` for service monitors, `/metrics` in
//! the Prometheus text or OpenMetrics format (see [`metrics`]), read-only JSON under `/api/v1/` with exactly the
//! fields of the CLI's `--format json`, and a read-only web page at `/` ([`web`]). A configured bearer token guards
//! every route but `/healthz` and is compared in constant time.
//!
//! The daemon owns the moving parts and tells this module about them: [`Health::record_cycle`] after every cycle,
//! [`Metrics::declare`] at start and reload, [`Metrics::poll`] after every poll and [`Metrics::delivery`] after
//! every delivery attempt. Alert counts, the outbox depth and whether the database is writable are read from the
//! store when asked: writable means this process's latest write transaction did not fail for want of space or access
//! ([`Store::last_write_failure`], so a failed commit shows at once) and a write lock can be taken now.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, format_duration};
use crate::hss::signer::constant_time_eq;
use crate::output::{AlertJson, HistoryJson, NotificationJson, TargetJson, rfc3339};
use crate::secret::Secret;
use crate::store::{DeliveryStatus, HistoryQuery, Store};

/// `/healthz` turns unhealthy when the last good cycle is older than this many intervals.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// How long the writability probe may wait for the write lock before the database counts as not writable: a
/// writer holding it longer than this is itself a sign of trouble, and a health check must answer promptly.
pub const WRITE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows `/api/v1/snapshots` returns when no `limit` is given (the latest ones).
pub const DEFAULT_SNAPSHOT_LIMIT: u32 = 1000;
/// Rows `/api/v1/notifications` returns when no `limit` is given, as the CLI.
pub const DEFAULT_NOTIFICATION_LIMIT: u32 = 100;
/// The largest `limit` accepted, so that one request cannot hold the whole history in memory.
pub const MAX_LIMIT: u32 = 10_000;

/// What the daemon tells the server about its cycles; shared, updated after every cycle.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<HealthState>,
}

#[derive(Debug, Clone, Copy)]
struct HealthState {
    interval: Duration,
    /// When watching began: the grace period before the first good cycle counts from here.
    started_at: Option<DateTime<Utc>>,
    last_cycle: Option<(DateTime<Utc>, bool)>,
    last_good: Option<DateTime<Utc>>,
}

impl Health {
    /// A health record for cycles every `interval`. Until a cycle succeeds it is unhealthy, unless a start time
    /// is given with [`Health::since`].
    pub fn new(interval: Duration) -> Self {
        Health { inner: Mutex::new(HealthState { interval, started_at: None, last_cycle: None, last_good: None }) }
    }

    /// Counts the start as a good cycle for freshness, so that a daemon that just started is healthy for three
    /// intervals while its first cycle (spread over the interval by the rate budget) runs.
    pub fn since(self, started_at: DateTime<Utc>) -> Self {
        self.lock().started_at = Some(started_at);
        self
    }

    /// A reloaded config may change the interval.
    pub fn set_interval(&self, interval: Duration) {
        self.lock().interval = interval;
    }

    /// Records a finished cycle. `ok` means scanwatch did its job (polled, stored, evaluated): HSS answering with
    /// errors is an alert about HSS, not scanwatch being unhealthy.
    pub fn record_cycle(&self, at: DateTime<Utc>, ok: bool) {
        let mut s = self.lock();
        s.last_cycle = Some((at, ok));
        if ok && s.last_good.is_none_or(|g| g <= at) {
            s.last_good = Some(at);
        }
    }

    /// When the latest good cycle finished.
    pub fn last_good_cycle(&self) -> Option<DateTime<Utc>> {
        self.lock().last_good
    }

    /// `Err(reason)` when the last good cycle (or the start, before any) is older than three intervals at `now`.
    pub fn freshness(&self, now: DateTime<Utc>) -> Result<(), String> {
        let s = *self.lock();
        let limit = s.interval.saturating_mul(STALE_AFTER_INTERVALS);
        let limit_delta = TimeDelta::from_std(limit).unwrap_or(TimeDelta::MAX);
        let age = |t: DateTime<Utc>| format_duration((now - t).to_std().unwrap_or_default());
        match (s.last_good, s.started_at) {
            (Some(good), _) if now - good <= limit_delta => Ok(()),
            (Some(good), _) => Err(format!(
                "the last good cycle finished {} ago (at {}), more than {STALE_AFTER_INTERVALS} intervals of {}",
                age(good),
                rfc3339(good),
                format_duration(s.interval)
            )),
            (None, Some(start)) if now - start <= limit_delta => Ok(()),
            (None, Some(start)) => Err(format!(
                "no cycle has succeeded in the {} since the start, more than {STALE_AFTER_INTERVALS} intervals of {}",
                age(start),
                format_duration(s.interval)
            )),
            (None, None) => Err("no cycle has succeeded yet".to_string()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub store: Store,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
}

/// The routes. With `token`, every route but `/healthz` demands `Authorization: Bearer <token>`.
pub fn router(state: ServerState, token: Option<Secret>) -> Router {
    let expected = Arc::new(token.filter(|t| !t.is_empty()).map(|t| digest(t.expose().as_bytes())));
    let pages = web::routes()
        .route_layer(middleware::from_fn_with_state(expected.clone(), require_token))
        .layer(middleware::from_fn(web::security_headers));
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/snapshots", get(snapshots))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/notifications", get(notifications))
        .route_layer(middleware::from_fn_with_state(expected, require_token));
    Router::new().route("/healthz", get(healthz)).merge(guarded).merge(pages).fallback(not_found).with_state(state)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Tokens are compared as SHA-256 digests so that the comparison takes the same time whatever the length.
fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

async fn require_token(State(expected): State<Arc<Option<[u8; 32]>>>, req: Request, next: Next) -> Response {
    let Some(expected) = expected.as_ref() else { return next.run(req).await };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(token) if constant_time_eq(&digest(token.as_bytes()), expected) => next.run(req).await,
        Some(_) => unauthorized("the bearer token is not the configured one"),
        None => unauthorized("this API needs `Authorization: Bearer <token>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// An error answer: `{"error": "…"}` with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "HTTP API: store error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; try /, /healthz, /metrics, /api/v1/targets, /api/v1/snapshots, /api/v1/alerts, /api/v1/notifications",
    )
}

/// Whether the database takes writes now, with the reason when not: the latest write transaction's outcome first
/// (a full disk fails real writes, while the probe, which writes no page, still passes), then the probe.
async fn probe_writable(store: &Store) -> Result<(), String> {
    if let Some(failure) = store.last_write_failure() {
        return Err(format!("the database is not writable: the last write failed: {failure}"));
    }
    match tokio::time::timeout(WRITE_PROBE_TIMEOUT, store.check_writable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the database is not writable: {e}")),
        Err(_) => {
            Err(format!("the database is not writable: no write lock within {}", format_duration(WRITE_PROBE_TIMEOUT)))
        }
    }
}

#[derive(Debug, Serialize)]
struct HealthJson {
    status: &'static str,
    /// Why it is unhealthy; absent when healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    last_good_cycle: Option<String>,
    last_cycle: Option<String>,
    last_cycle_ok: Option<bool>,
    interval: String,
    database_writable: bool,
}

async fn healthz(State(s): State<ServerState>) -> Response {
    let now = s.clock.now();
    let fresh = s.health.freshness(now);
    let writable = probe_writable(&s.store).await;
    let snapshot = *s.health.lock();
    let reasons: Vec<String> = [fresh.err(), writable.clone().err()].into_iter().flatten().collect();
    let body = HealthJson {
        status: if reasons.is_empty() { "ok" } else { "unhealthy" },
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        last_good_cycle: snapshot.last_good.map(rfc3339),
        last_cycle: snapshot.last_cycle.map(|(t, _)| rfc3339(t)),
        last_cycle_ok: snapshot.last_cycle.map(|(_, ok)| ok),
        interval: format_duration(snapshot.interval),
        database_writable: writable.is_ok(),
    };
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `/metrics` in the format the `Accept` header asks for (text 0.0.4 unless it asks for OpenMetrics).
async fn metrics(State(s): State<ServerState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let alerts = s.store.alert_counts().await.inspect_err(|e| tracing::warn!(error = %e, "/metrics: alerts")).ok();
    let outbox_pending =
        s.store.pending_count().await.inspect_err(|e| tracing::warn!(error = %e, "/metrics: outbox")).ok();
    let database_writable = probe_writable(&s.store).await.is_ok();
    let scrape =
        ScrapeValues { alerts, outbox_pending, database_writable, last_good_cycle: s.health.last_good_cycle() };
    let text = s
        .metrics
        .render(&scrape, format)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

async fn targets(State(s): State<ServerState>) -> Result<Json<Vec<TargetJson>>, ApiError> {
    let latest = s.store.latest_per_series().await?;
    let rows = s
        .config
        .series()
        .map(|(t, key)| TargetJson {
            target: key.target.clone(),
            account: key.account.clone(),
            region: key.region.clone(),
            project_id: key.project_id.clone(),
            enterprise_project_id: key.enterprise_project_id.clone(),
            task_type: key.task_type.as_str().to_string(),
            endpoint: t.endpoint.to_string(),
            labels: t.labels.clone(),
            latest: latest
                .iter()
                .find(|r| r.series.target == key.target && r.series.task_type == key.task_type)
                .map(HistoryJson::from),
        })
        .collect();
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotsQuery {
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

fn limit(given: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match given.unwrap_or(default) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}; got {n}"))),
    }
}

async fn snapshots(
    State(s): State<ServerState>,
    query: Result<Query<SnapshotsQuery>, QueryRejection>,
) -> Result<Json<Vec<HistoryJson>>, ApiError> {
    let Query(q) = query?;
    let now = s.clock.now();
    let time = |name: &str, v: Option<String>| {
        v.map(|t| crate::clock::parse_time(&t, now))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    let hq = HistoryQuery {
        target: q.target,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        limit: Some(limit(q.limit, DEFAULT_SNAPSHOT_LIMIT)?),
    };
    Ok(Json(s.store.history(&hq).await?.iter().map(HistoryJson::from).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    #[serde(default)]
    all: bool,
}

async fn alerts(
    State(s): State<ServerState>,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Vec<AlertJson>>, ApiError> {
    let Query(q) = query?;
    let now = s.clock.now();
    let silences = s.store.silences(now, false).await?;
    let rows = AlertJson::rows(s.store.alerts(q.all).await?, &silences, &s.config.targets, now);
    Ok(Json(AlertJson::with_context(rows, &s.store.alert_contexts().await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsQuery {
    status: Option<String>,
    limit: Option<u32>,
}

async fn notifications(
    State(s): State<ServerState>,
    query: Result<Query<NotificationsQuery>, QueryRejection>,
) -> Result<Json<Vec<NotificationJson>>, ApiError> {
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = DeliveryStatus::ALL.iter().map(|d| d.as_str()).collect();
            ApiError::bad_request(format!("status `{text}` is not one of {}", known.join(", ")))
        })?),
    };
    let limit = limit(q.limit, DEFAULT_NOTIFICATION_LIMIT)?;
    Ok(Json(s.store.notifications(status, limit).await?.iter().map(NotificationJson::from).collect()))
}

mod metrics;
pub use metrics::{
    DELIVERY_OUTCOMES, Format, Metrics, OPENMETRICS_CONTENT_TYPE, ProcessStats, ScrapeValues, TEXT_CONTENT_TYPE,
};
pub mod web;

#[cfg(test)]
mod tests;
