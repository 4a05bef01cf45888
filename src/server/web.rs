//! The read-only web page on `[server] listen`: `/` (targets with their latest poll, the pending and firing alerts
//! with their context, per-series charts of total and running tasks, the delivery log) and `/alerts/{fingerprint}`
//! (one alert: state, labels, context, silences, ack, transitions, deliveries). Same bearer-token rule as the API.
//!
//! Everything shown comes from the store through the read methods the `/api/v1` handlers use. Target labels, HSS
//! task names and failure reasons are untrusted: every page is a minijinja template named `*.html`, so auto-escaping
//! is on for every value, and the charts are SVG drawn by a template from numbers computed here. No JavaScript at
//! all; each answer carries a Content-Security-Policy that allows only the stylesheet at [`STYLESHEET_PATH`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use super::ServerState;
use crate::config::format_duration;
use crate::model::{AlertContext, Snapshot, excerpt};
use crate::output::{AlertJson, rfc3339, rfc3339_millis};
use crate::store::{NotificationRow, StoreError};

/// What a chart shows when no `since` is given.
pub const DEFAULT_CHART_SPAN: TimeDelta = TimeDelta::days(7);
/// The most points a chart line has: a longer history is bucketed down to this many, so a page stays small
/// whatever the interval and the span.
pub const MAX_CHART_POINTS: usize = 240;
/// Deliveries the front page lists (the newest).
pub const DELIVERY_LOG_ROWS: u32 = 50;
/// Deliveries an alert page searches for its own (the newest); older ones are in `scanwatch notifications`.
pub const ALERT_DELIVERY_SCAN: u32 = 2000;
/// Transitions an alert page lists (the newest).
pub const ALERT_TRANSITION_ROWS: usize = 50;
/// Bytes of an error message or failure reason shown in a table cell.
const EXCERPT_BYTES: usize = 200;
/// A longer path segment is no fingerprint (they are 16 hex characters): answered 404 without a lookup.
const MAX_FINGERPRINT_BYTES: usize = 128;
/// Where the stylesheet is served: the only resource the pages load.
pub const STYLESHEET_PATH: &str = "/static/style.css";

/// Nothing but the same-origin stylesheet (and `data:` images) may load; no script, no form, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLESHEET: &str = include_str!("templates/style.css");
const TEMPLATES: [(&str, &str); 5] = [
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("index.html", include_str!("templates/index.html")),
    ("alert.html", include_str!("templates/alert.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The page routes, to be guarded like the API and wrapped in [`security_headers`] by the caller.
pub fn routes() -> Router<ServerState> {
    Router::new()
        .route("/", get(index))
        .route("/alerts/{fingerprint}", get(alert_page))
        .route(STYLESHEET_PATH, get(stylesheet))
}

/// Adds the Content-Security-Policy and the other protective headers to every answer it wraps, errors included.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The pages can sit behind a token: no shared cache may keep them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}

/// The templates, parsed once. An `Err` only if a built-in template does not parse (a test renders every one).
fn environment() -> Result<&'static Environment<'static>, &'static str> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names turn HTML auto-escaping on (minijinja's default callback); strict undefined turns a typo in
        // a template into an error a test sees, rather than a blank cell.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(text) if text.chars().any(is_bidi_control) => {
                minijinja::escape_formatter(out, state, &minijinja::Value::from(show_bidi_controls(text)))
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source).map_err(|e| format!("template {name}: {e:#}"))?;
        }
        Ok(env)
    })
    .as_ref()
    .map_err(String::as_str)
}

/// Unicode's explicit directional formatting characters: in untrusted text they could reorder what the page shows
/// (a reason that reads as something else). Shown as visible `<U+202E>` marks instead.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn show_bidi_controls(text: &str) -> String {
    text.chars().map(|c| if is_bidi_control(c) { format!("<U+{:04X}>", u32::from(c)) } else { c.to_string() }).collect()
}

/// An HTML answer: a rendered page, or an error page with its status.
#[derive(Debug)]
pub struct Page {
    status: StatusCode,
    html: String,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.status, Html(self.html)).into_response()
    }
}

#[derive(Serialize)]
struct ErrorView<'a> {
    root: &'a str,
    title: &'a str,
    status: u16,
    message: &'a str,
}

fn render<T: Serialize>(name: &str, status: StatusCode, view: &T) -> Page {
    let rendered = environment().map_err(str::to_string).and_then(|env| {
        env.get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(view))))
            .map_err(|e| format!("{e:#}"))
    });
    match rendered {
        Ok(html) => Page { status, html },
        Err(e) => {
            tracing::warn!(error = %e, template = name, "web page: cannot render");
            Page {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                html: "<!doctype html><title>scanwatch: error</title><p>The page could not be rendered; the log \
                       says why.</p>"
                    .to_string(),
            }
        }
    }
}

/// The relative way back to `/` from the front page and from an alert page: links stay right behind a reverse
/// proxy that serves the pages under a path prefix.
const FROM_INDEX: &str = "./";
const FROM_ALERT: &str = "../";

fn error_page(status: StatusCode, message: &str, root: &str) -> Page {
    let title = status.canonical_reason().unwrap_or("error");
    render("error.html", status, &ErrorView { root, title, status: status.as_u16(), message })
}

/// The link to an alert's page from a page at `root`.
fn alert_href(root: &str, fingerprint: &str) -> String {
    format!("{root}alerts/{}", percent_encoding::utf8_percent_encode(fingerprint, percent_encoding::NON_ALPHANUMERIC))
}

impl From<StoreError> for Page {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "web page: store error");
        error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), FROM_INDEX)
    }
}

impl From<QueryRejection> for Page {
    fn from(e: QueryRejection) -> Self {
        error_page(StatusCode::BAD_REQUEST, &e.body_text(), FROM_INDEX)
    }
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

/// A time for people: RFC 3339 and how long before `now`.
#[derive(Debug, Clone, Serialize)]
struct When {
    at: String,
    ago: String,
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> When {
    let ago = match (now - t).to_std() {
        Ok(d) => format!("{} ago", format_duration(d)),
        Err(_) => "in the future".to_string(),
    };
    When { at: rfc3339(t), ago }
}

#[derive(Debug, Serialize)]
struct TargetView {
    target: String,
    task_type: String,
    account: String,
    region: String,
    project_id: String,
    labels: BTreeMap<String, String>,
    /// `ok`, `error`, or `never` (not polled yet).
    state: &'static str,
    polled: Option<When>,
    total: Option<u64>,
    running: Option<u64>,
    last_scan: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct TaskView {
    id: String,
    name: String,
    trigger: String,
    status: String,
    start: Option<String>,
    end: Option<String>,
    scanning: u64,
    success: u64,
    failed: u64,
}

#[derive(Debug, Serialize)]
struct FailedView {
    name: String,
    id: Option<String>,
    kind: Option<String>,
    reason: String,
}

#[derive(Debug, Serialize)]
struct ContextView {
    task: Option<TaskView>,
    failed: Vec<FailedView>,
    failed_total: u64,
    /// How many failed resources are not listed.
    more: u64,
    unavailable: Option<String>,
}

impl From<&AlertContext> for ContextView {
    fn from(c: &AlertContext) -> Self {
        ContextView {
            task: c.task.as_ref().map(|t| TaskView {
                id: t.task_id.clone(),
                name: t.task_name.clone(),
                trigger: t.trigger_type.clone(),
                status: t.task_status.clone(),
                start: t.start_time.map(rfc3339_millis),
                end: t.end_time.map(rfc3339_millis),
                scanning: t.scanning,
                success: t.success,
                failed: t.failed,
            }),
            failed: c
                .failed
                .iter()
                .map(|f| FailedView {
                    name: f.name.clone(),
                    id: f.id.clone(),
                    kind: f.kind.clone(),
                    reason: excerpt(&f.failed_reason, EXCERPT_BYTES),
                })
                .collect(),
            failed_total: c.failed_total,
            more: c.failed_total.saturating_sub(c.failed.len() as u64),
            unavailable: c.unavailable.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct AlertView {
    fingerprint: String,
    href: String,
    target: String,
    task_type: String,
    rule: String,
    severity: String,
    state: String,
    since: Option<When>,
    summary: String,
    value: String,
    last_notified: Option<When>,
    acked: bool,
    silenced: bool,
    context: Option<ContextView>,
}

fn alert_view(
    a: &AlertJson,
    since: Option<DateTime<Utc>>,
    notified: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    root: &str,
) -> AlertView {
    AlertView {
        fingerprint: a.fingerprint.clone(),
        href: alert_href(root, &a.fingerprint),
        target: a.target.clone(),
        task_type: a.task_type.clone(),
        rule: a.rule.clone(),
        severity: a.severity.clone(),
        state: a.state.clone(),
        since: since.map(|t| when(t, now)),
        summary: a.summary.clone(),
        value: a.value.clone(),
        last_notified: notified.map(|t| when(t, now)),
        acked: a.acked,
        silenced: a.silenced,
        context: a.context.as_ref().map(ContextView::from),
    }
}

#[derive(Debug, Serialize)]
struct DeliveryView {
    id: String,
    channel: String,
    event: String,
    status: String,
    attempts: u32,
    created: When,
    delivered: Option<String>,
    error: Option<String>,
    fingerprints: Vec<AlertLink>,
}

#[derive(Debug, Serialize)]
struct AlertLink {
    fingerprint: String,
    href: String,
}

fn delivery_view(r: &NotificationRow, now: DateTime<Utc>, root: &str) -> DeliveryView {
    DeliveryView {
        id: r.notification.id.clone(),
        channel: r.notification.channel.clone(),
        event: crate::store::alerts::event_str(r.event).to_string(),
        status: r.status.as_str().to_string(),
        attempts: r.attempts,
        created: when(r.notification.created_at, now),
        delivered: r.delivered_at.map(rfc3339),
        error: r.last_error.as_deref().map(|e| excerpt(e, EXCERPT_BYTES)),
        fingerprints: r
            .notification
            .alerts
            .iter()
            .map(|a| AlertLink { fingerprint: a.fingerprint.clone(), href: alert_href(root, &a.fingerprint) })
            .collect(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexQuery {
    since: Option<String>,
}

#[derive(Debug, Serialize)]
struct IndexView {
    root: &'static str,
    now: String,
    since: String,
    targets: Vec<TargetView>,
    alerts: Vec<AlertView>,
    charts: Vec<Chart>,
    deliveries: Vec<DeliveryView>,
    delivery_rows: u32,
}

async fn index(State(s): State<ServerState>, query: Result<Query<IndexQuery>, QueryRejection>) -> Page {
    match index_page(s, query).await {
        Ok(page) | Err(page) => page,
    }
}

async fn index_page(s: ServerState, query: Result<Query<IndexQuery>, QueryRejection>) -> Result<Page, Page> {
    let Query(q) = query?;
    let now = s.clock.now();
    let since = match q.since.as_deref() {
        None => now.checked_sub_signed(DEFAULT_CHART_SPAN).unwrap_or(DateTime::<Utc>::MIN_UTC),
        Some(text) => crate::clock::parse_time(text, now)
            .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("since: {e}"), FROM_INDEX))?,
    };

    let latest = s.store.latest_per_series().await?;
    let targets = s
        .config
        .series()
        .map(|(t, key)| {
            let last = latest.iter().find(|r| r.series.target == key.target && r.series.task_type == key.task_type);
            let snap = last.map(|r| &r.snapshot);
            TargetView {
                target: key.target.clone(),
                task_type: key.task_type.as_str().to_string(),
                account: key.account.clone(),
                region: key.region.clone(),
                project_id: key.project_id.clone(),
                labels: t.labels.clone(),
                state: match snap {
                    None => "never",
                    Some(s) if s.ok() => "ok",
                    Some(_) => "error",
                },
                polled: snap.map(|s| when(s.polled_at, now)),
                total: snap.and_then(|s| s.stats).map(|x| x.total_num),
                running: snap.and_then(|s| s.stats).map(|x| x.running_num),
                last_scan: snap.and_then(|s| s.stats).and_then(|x| x.last_task_start_time).map(rfc3339_millis),
                error: snap.filter(|s| !s.ok()).map(poll_error_text),
            }
        })
        .collect();

    let (stored, rows) = active_alerts(&s, now, false).await?;
    let alerts = stored
        .iter()
        .zip(&rows)
        .map(|(r, a)| alert_view(a, r.alert.since, r.alert.last_notified_at, now, FROM_INDEX))
        .collect();

    let mut charts = Vec::new();
    let stored = s.store.series().await?;
    for (_, key) in s.config.series() {
        let Some(row) = stored.iter().find(|r| r.key.target == key.target && r.key.task_type == key.task_type) else {
            continue;
        };
        let snapshots = s.store.snapshots_since(row.id, since).await?;
        charts.push(Chart::draw(&format!("{} / {}", key.target, key.task_type.as_str()), &snapshots, since, now));
    }

    let deliveries = s
        .store
        .notifications(None, DELIVERY_LOG_ROWS)
        .await?
        .iter()
        .map(|r| delivery_view(r, now, FROM_INDEX))
        .collect();
    let view = IndexView {
        root: FROM_INDEX,
        now: rfc3339(now),
        since: rfc3339(since),
        targets,
        alerts,
        charts,
        deliveries,
        delivery_rows: DELIVERY_LOG_ROWS,
    };
    Ok(render("index.html", StatusCode::OK, &view))
}

/// A failed poll's error in one line: its class, status, code and message excerpt.
fn poll_error_text(s: &Snapshot) -> String {
    let mut head = s.error_kind.map_or("error", |k| k.as_str()).to_string();
    let detail: Vec<String> =
        s.http_status.map(|h| format!("HTTP {h}")).into_iter().chain(s.error_code.clone()).collect();
    if !detail.is_empty() {
        head = format!("{head} ({})", detail.join(", "));
    }
    match &s.error_message {
        Some(m) => format!("{head}: {}", excerpt(m, EXCERPT_BYTES)),
        None => head,
    }
}

/// The stored alerts (all, or only pending and firing) and their API rows (silenced, context), in the same order.
async fn active_alerts(
    s: &ServerState,
    now: DateTime<Utc>,
    all: bool,
) -> Result<(Vec<crate::store::AlertRow>, Vec<AlertJson>), StoreError> {
    let stored = s.store.alerts(all).await?;
    let silences = s.store.silences(now, false).await?;
    let rows = AlertJson::rows(stored.clone(), &silences, &s.config.targets, now);
    Ok((stored, AlertJson::with_context(rows, &s.store.alert_contexts().await?)))
}

#[derive(Debug, Serialize)]
struct SilenceView {
    id: i64,
    matchers: BTreeMap<String, String>,
    starts: String,
    ends: String,
    in_force: bool,
    created_by: String,
    comment: String,
}

#[derive(Debug, Serialize)]
struct TransitionView {
    at: String,
    from: String,
    to: String,
    event: Option<String>,
    summary: String,
}

#[derive(Debug, Serialize)]
struct AlertPageView {
    root: &'static str,
    now: String,
    alert: AlertView,
    account: String,
    region: String,
    project_id: String,
    labels: BTreeMap<String, String>,
    ack_comment: Option<String>,
    silences: Vec<SilenceView>,
    transitions: Vec<TransitionView>,
    transitions_shown: usize,
    transitions_total: usize,
    deliveries: Vec<DeliveryView>,
    delivery_scan: u32,
}

async fn alert_page(
    State(s): State<ServerState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Page {
    match alert_page_of(s, path.ok().map(|Path(p)| p)).await {
        Ok(page) | Err(page) => page,
    }
}

async fn alert_page_of(s: ServerState, fingerprint: Option<String>) -> Result<Page, Page> {
    let unknown = || error_page(StatusCode::NOT_FOUND, "no alert has this fingerprint", FROM_ALERT);
    let fingerprint = fingerprint.filter(|f| !f.is_empty() && f.len() <= MAX_FINGERPRINT_BYTES).ok_or_else(unknown)?;
    let now = s.clock.now();
    let (stored, rows) = active_alerts(&s, now, true).await?;
    let Some((row, json)) = stored.iter().zip(&rows).find(|(r, _)| r.fingerprint == fingerprint) else {
        return Err(unknown());
    };
    let user = s.config.targets.iter().find(|t| t.name == row.series.target).map(|t| t.labels.clone());
    let labels = crate::alerting::silence::alert_labels(&row.series, row.rule, row.severity, &user.unwrap_or_default());
    let silences = s
        .store
        .silences(now, false)
        .await?
        .into_iter()
        .filter(|x| crate::alerting::silence::matches_all(&x.matchers, &labels))
        .map(|x| SilenceView {
            id: x.id,
            in_force: x.starts_at <= now && now < x.ends_at,
            matchers: x.matchers,
            starts: rfc3339(x.starts_at),
            ends: rfc3339(x.ends_at),
            created_by: x.created_by,
            comment: x.comment,
        })
        .collect();
    let all_transitions = s.store.transitions(Some(&fingerprint), None).await?;
    let transitions_total = all_transitions.len();
    let transitions: Vec<TransitionView> = all_transitions
        .iter()
        .rev()
        .take(ALERT_TRANSITION_ROWS)
        .map(|t| TransitionView {
            at: rfc3339(t.transition.at),
            from: t.transition.from.as_str().to_string(),
            to: t.transition.to.as_str().to_string(),
            event: t.transition.event.map(|e| crate::store::alerts::event_str(e).to_string()),
            summary: t.transition.summary.clone(),
        })
        .collect();
    let deliveries = s
        .store
        .notifications(None, ALERT_DELIVERY_SCAN)
        .await?
        .iter()
        .filter(|n| n.notification.alerts.iter().any(|a| a.fingerprint == fingerprint))
        .map(|n| delivery_view(n, now, FROM_ALERT))
        .collect();
    let view = AlertPageView {
        root: FROM_ALERT,
        now: rfc3339(now),
        alert: alert_view(json, row.alert.since, row.alert.last_notified_at, now, FROM_ALERT),
        account: row.series.account.clone(),
        region: row.series.region.clone(),
        project_id: row.series.project_id.clone(),
        labels,
        ack_comment: row.ack_comment.clone(),
        silences,
        transitions_shown: transitions.len(),
        transitions,
        transitions_total,
        deliveries,
        delivery_scan: ALERT_DELIVERY_SCAN,
    };
    Ok(render("alert.html", StatusCode::OK, &view))
}

/// One series' chart: geometry in SVG user units, drawn by `chart.html`. Numbers only besides `title` and the
/// tick labels, which the template escapes like everything else.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub width: u32,
    pub height: u32,
    /// The plot area: left, top, right, bottom.
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    /// `x,y x,y …` per unbroken run of good polls; a failed stretch ends a run.
    pub total_lines: Vec<String>,
    pub running_lines: Vec<String>,
    /// Where polls failed (x of each bucket with failures only).
    pub failures: Vec<f64>,
    pub x_ticks: Vec<Tick>,
    pub total_ticks: Vec<Tick>,
    pub running_ticks: Vec<Tick>,
    pub polls: usize,
    pub failed_polls: usize,
    pub points: usize,
}

/// An axis label at `at` (x for the time axis, y for the value axes).
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// A bucket of polls: the last good values in it (total as it stood, the most running seen) and whether any failed.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    at: Option<DateTime<Utc>>,
    total: u64,
    running: u64,
    failed: bool,
}

const W: u32 = 760;
const H: u32 = 220;
const LEFT: u32 = 64;
const RIGHT: u32 = W - 48;
const TOP: u32 = 16;
const BOTTOM: u32 = H - 36;

/// The smallest "nice" number (1, 2 or 5 times a power of ten) at or above `n`, at least 1.
fn nice_ceiling(n: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let v = step.saturating_mul(m);
            if v >= n || v == u64::MAX {
                return v;
            }
        }
        step = step.saturating_mul(10);
    }
}

impl Chart {
    /// Buckets `snapshots` (oldest first, all of one series) over `[from, to]` into at most [`MAX_CHART_POINTS`]
    /// points. `from` moves up to the first snapshot when that is later (a `since` of years shows what there is).
    pub fn draw(title: &str, snapshots: &[Snapshot], from: DateTime<Utc>, to: DateTime<Utc>) -> Chart {
        let from = snapshots.first().map_or(from, |s| s.polled_at.max(from));
        let to = snapshots.last().map_or(to, |s| s.polled_at.max(to)).max(from);
        let span_ms = (to - from).num_milliseconds().max(1);
        let n = MAX_CHART_POINTS;
        let mut buckets = vec![Bucket::default(); n];
        for s in snapshots {
            let offset = (s.polled_at - from).num_milliseconds().clamp(0, span_ms);
            let i = usize::try_from(i128::from(offset) * (n as i128 - 1) / i128::from(span_ms)).unwrap_or(0).min(n - 1);
            let b = &mut buckets[i];
            match s.stats {
                Some(stats) => {
                    b.running = if b.at.is_some() { b.running.max(stats.running_num) } else { stats.running_num };
                    b.total = stats.total_num;
                    b.at = Some(s.polled_at);
                }
                None => b.failed = true,
            }
        }
        let good: Vec<&Bucket> = buckets.iter().filter(|b| b.at.is_some()).collect();
        // Total counts every task ever run: its own range (not from 0), so a step of one task shows.
        let (t_lo, t_hi) = match (good.iter().map(|b| b.total).min(), good.iter().map(|b| b.total).max()) {
            (Some(lo), Some(hi)) if lo == hi => (lo.saturating_sub(1), hi.saturating_add(1)),
            (Some(lo), Some(hi)) => (lo, hi),
            _ => (0, 1),
        };
        let r_hi = nice_ceiling(good.iter().map(|b| b.running).max().unwrap_or(0));

        let x_of = |t: DateTime<Utc>| {
            let ms = (t - from).num_milliseconds().clamp(0, span_ms) as f64;
            round1(f64::from(LEFT) + ms / span_ms as f64 * f64::from(RIGHT - LEFT))
        };
        let y_of = |v: u64, lo: u64, hi: u64| {
            let frac = (v.saturating_sub(lo)) as f64 / (hi.saturating_sub(lo)).max(1) as f64;
            round1(f64::from(BOTTOM) - frac.min(1.0) * f64::from(BOTTOM - TOP))
        };

        let (mut total_lines, mut running_lines, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        let (mut t_run, mut r_run): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        let mut flush = |t_run: &mut Vec<String>, r_run: &mut Vec<String>| {
            if t_run.len() == 1 {
                // A lone point: a zero-length line, which the round line cap draws as a dot.
                t_run.push(t_run[0].clone());
                r_run.push(r_run[0].clone());
            }
            if !t_run.is_empty() {
                total_lines.push(t_run.join(" "));
                running_lines.push(r_run.join(" "));
            }
            t_run.clear();
            r_run.clear();
        };
        for (i, b) in buckets.iter().enumerate() {
            match b.at {
                Some(at) => {
                    let x = x_of(at);
                    t_run.push(format!("{x},{}", y_of(b.total, t_lo, t_hi)));
                    r_run.push(format!("{x},{}", y_of(b.running, 0, r_hi)));
                    if b.failed {
                        failures.push(x);
                    }
                }
                None if b.failed => {
                    flush(&mut t_run, &mut r_run);
                    let ms = span_ms as i128 * i as i128 / (n as i128 - 1);
                    failures.push(x_of(from + TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(0))));
                }
                None => {}
            }
        }
        flush(&mut t_run, &mut r_run);

        let x_ticks = (0..=4)
            .map(|k| {
                let t = from + TimeDelta::milliseconds(span_ms / 4 * k);
                let label = if span_ms > 2 * 86_400_000 {
                    t.format("%m-%d %H:%M").to_string()
                } else {
                    t.format("%H:%M").to_string()
                };
                Tick { at: x_of(t), label }
            })
            .collect();
        let value_ticks = |lo: u64, hi: u64| -> Vec<Tick> {
            let mut ticks: Vec<Tick> = (0..=4u64)
                .map(|k| {
                    let step = u128::from(hi.saturating_sub(lo)) * u128::from(k) / 4;
                    let v = lo.saturating_add(u64::try_from(step).unwrap_or(u64::MAX));
                    Tick { at: y_of(v, lo, hi), label: v.to_string() }
                })
                .collect();
            ticks.dedup_by(|a, b| a.label == b.label);
            ticks
        };
        Chart {
            title: title.to_string(),
            width: W,
            height: H,
            left: LEFT,
            top: TOP,
            right: RIGHT,
            bottom: BOTTOM,
            points: good.len(),
            total_lines,
            running_lines,
            failures,
            x_ticks,
            total_ticks: value_ticks(t_lo, t_hi),
            running_ticks: value_ticks(0, r_hi),
            polls: snapshots.len(),
            failed_polls: snapshots.iter().filter(|s| !s.ok()).count(),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
