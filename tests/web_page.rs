//! The web page (`/`, `/alerts/{fingerprint}`) served by the real server on 127.0.0.1:0 over a real SQLite store
//! with snapshots (some failed), a firing alert with HSS task context, a silence and a notification, and values an
//! attacker controls (target names and labels, HSS task names, failure reasons, error messages) in every place they
//! show. Loaded in headless Chromium (Debian's `chromium`): the DOM shows the data, the hostile values as text and
//! never as markup, the charts as SVG polylines, and the console reports no Content-Security-Policy violation.
//! Screenshots go to `<target dir>/test-artifacts/web-*.png`.
//!
//! Without `chromium` the browser checks print a loud note and pass, except under `CI=true`, where they fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use scanwatch::alerting::{Alert, AlertState, Event, Transition};
use scanwatch::clock::ManualClock;
use scanwatch::config::{Config, Environment};
use scanwatch::model::{AlertContext, ErrorKind, FailedResource, PollError, PollRecord, TaskInfo, TaskStats, TaskType};
use scanwatch::notify::AlertNotice;
use scanwatch::rules::{RuleName, Severity};
use scanwatch::secret::Secret;
use scanwatch::server::{self, Health, Metrics, ServerState};
use scanwatch::store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "web-page-token-0123456789";

/// Markup, an event handler breaking out of an attribute, template syntax and a right-to-left override: each must
/// come out as the text it is.
const SCRIPT: &str = "<script>document.title='pwned'</script>";
const IMG: &str = "\"><img src=x onerror=document.title='pwned'>";
const TEMPLATE: &str = "{{ 7*7 }}{% raw %}";
const BIDI: &str = "report\u{202E}fdp.exe";

/// `s` as a TOML basic string, its characters as they are (a `\u{202E}` stays the character itself).
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn config() -> Config {
    let text = format!(
        r#"
[schedule]
interval = "30m"
[[accounts]]
name = "prod"
[[targets]]
name = "prod-north"
account = "prod"
region = "cn-north-4"
project_id = "0000000000000000000000000000a001"
task_types = ["cluster_scan"]
labels = {{ env = {script}, note = {img}, tmpl = {template}, bidi = {bidi} }}
[[targets]]
name = "evil<b>&\"'</b>"
account = "prod"
region = "cn-north-4"
project_id = "0000000000000000000000000000a002"
task_types = ["iac_scan"]
"#,
        script = toml_string(SCRIPT),
        img = toml_string(IMG),
        template = toml_string(TEMPLATE),
        bidi = toml_string(BIDI),
    );
    let env = Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK1"), ("HUAWEICLOUD_SDK_SK", "SK1")]);
    Config::from_toml_str(&text, Path::new("/nonexistent"), &env).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

fn poll(at: DateTime<Utc>, outcome: Result<(u64, u64), &str>) -> PollRecord {
    let (outcome, http_status) = match outcome {
        Ok((total_num, running_num)) => (
            Ok(TaskStats { total_num, running_num, last_task_start_time: Some(at.timestamp_millis() - 60_000) }),
            Some(200),
        ),
        Err(message) => {
            let mut e = PollError::new(ErrorKind::Server, message);
            e.http_status = Some(503);
            (Err(e), None)
        }
    };
    PollRecord { polled_at: at, latency_ms: 80, outcome, http_status, request_id: None, task: None }
}

fn hostile_context() -> AlertContext {
    AlertContext {
        task: Some(TaskInfo {
            task_id: "task-0001".into(),
            task_name: format!("nightly {IMG}"),
            task_type: TaskType::ClusterScan,
            trigger_type: "schedule".into(),
            task_status: "finished".into(),
            start_time: Some(t0().timestamp_millis() - 3_600_000),
            end_time: Some(t0().timestamp_millis() - 600_000),
            estimated_minutes: None,
            scanning: 0,
            success: 3,
            failed: 2,
        }),
        failed: vec![
            FailedResource {
                name: format!("cluster {SCRIPT}"),
                id: Some("c-1".into()),
                kind: Some("cce".into()),
                failed_reason: format!("agent offline {TEMPLATE}"),
            },
            FailedResource {
                name: "cluster-b".into(),
                id: None,
                kind: Some("cce".into()),
                failed_reason: format!("image pull failed {BIDI}"),
            },
        ],
        failed_total: 5,
        unavailable: None,
    }
}

/// Two days of polls every 30 minutes for prod-north (an outage of three polls in the middle, the latest one
/// failed), one good poll for the hostile target, a firing alert with task context, its transition, a silence that
/// matches it and its notification.
async fn seeded(dir: &Path, config: &Config) -> (Store, String) {
    let store = Store::open(&dir.join("web.db")).await.unwrap();
    let mut keys = config.series().map(|(_, k)| k);
    let (north, evil) = (keys.next().unwrap(), keys.next().unwrap());
    let id = store.ensure_series(&north).await.unwrap();
    for i in 0..96i64 {
        let at = t0() - TimeDelta::minutes(30 * (96 - i));
        let outcome =
            if (40..43).contains(&i) || i == 95 { Err(SCRIPT) } else { Ok((100 + i as u64 / 8, (i % 5) as u64)) };
        store.record_poll(id, &poll(at, outcome), true).await.unwrap();
    }
    let evil_id = store.ensure_series(&evil).await.unwrap();
    store.record_poll(evil_id, &poll(t0() - TimeDelta::minutes(5), Ok((7, 0))), true).await.unwrap();

    let fingerprint = scanwatch::alerting::fingerprint(RuleName::ScanFailures, &north);
    let since = t0() - TimeDelta::hours(2);
    let summary = format!("2 of 5 clusters failed to scan {SCRIPT}");
    let alert = Alert {
        state: AlertState::Firing,
        since: Some(since),
        summary: summary.clone(),
        value: "2".into(),
        last_notified_at: Some(since),
        ..Alert::default()
    };
    let mut tx = store.begin_write().await.unwrap();
    let alert_id =
        tx.save_alert(&fingerprint, id, RuleName::ScanFailures, Severity::Warning, &alert, None, false).await.unwrap();
    tx.set_alert_context(alert_id, &hostile_context()).await.unwrap();
    let transition = Transition {
        from: AlertState::Pending,
        to: AlertState::Firing,
        at: since,
        event: Some(Event::Firing),
        summary: summary.clone(),
        value: "2".into(),
    };
    tx.insert_transition(alert_id, None, &transition).await.unwrap();
    let notice = AlertNotice {
        fingerprint: fingerprint.clone(),
        rule: RuleName::ScanFailures,
        severity: Severity::Warning,
        event: Event::Firing,
        series: north.clone(),
        labels: BTreeMap::new(),
        summary,
        value: "2".into(),
        since,
        at: since,
        context: Some(hostile_context()),
    };
    tx.insert_notice("ops-hook", &notice, false).await.unwrap();
    tx.commit().await.unwrap();
    store.seal_notices(since, |_| {}, || "msg_web_1".to_string()).await.unwrap();
    let matchers = BTreeMap::from([("rule".to_string(), "scan_failures".to_string())]);
    store.add_silence(&matchers, since, t0() + TimeDelta::hours(4), "ops", "cluster upgrade", since).await.unwrap();
    (store, fingerprint)
}

struct App {
    base: String,
    fingerprint: String,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn(token: Option<&str>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config());
    let (store, fingerprint) = seeded(dir.path(), &config).await;
    let health = Arc::new(Health::new(config.schedule.interval));
    health.record_cycle(t0(), true);
    let state = ServerState { store, health, metrics: Arc::new(Metrics::new()), clock: ManualClock::new(t0()), config };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(listener, server::router(state, token.map(Secret::new)), shutdown.clone()));
    App { base, fingerprint, _dir: dir, shutdown }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(url: &str, token: Option<&str>) -> Answer {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    Answer { status: resp.status().as_u16(), headers: resp.headers().clone(), body: resp.text().await.unwrap() }
}

fn assert_protective_headers(a: &Answer, what: &str) {
    let header = |name: &str| a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let csp = header("content-security-policy");
    for directive in
        ["default-src 'none'", "style-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"]
    {
        assert!(csp.contains(directive), "{what}: CSP `{csp}` lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"), "{what}: {csp}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
}

/// What the raw HTML must and must not contain when the hostile values are escaped.
fn assert_escaped(html: &str, what: &str) {
    for raw in ["<script", "<img", "\u{202E}", "<b>&"] {
        assert!(!html.contains(raw), "{what}: `{raw}` came out unescaped");
    }
    assert!(!html.contains(">49<"), "{what}: template syntax was evaluated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answer_with_protective_headers_and_escape_every_hostile_value() {
    let app = spawn(None).await;
    let index = get(&format!("{}/", app.base), None).await;
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(index.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_protective_headers(&index, "/");
    assert_escaped(&index.body, "/");
    assert!(
        index.body.contains("&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;&#x2f;script&gt;"),
        "{}",
        index.body
    );
    assert!(index.body.contains("{{ 7*7 }}{% raw %}"));
    assert!(index.body.contains("&quot;&gt;&lt;img src=x onerror=document.title=&#x27;pwned&#x27;&gt;"));
    assert!(index.body.contains("report&lt;U+202E&gt;fdp.exe"));
    assert!(index.body.contains("evil&lt;b&gt;&amp;&quot;&#x27;&lt;&#x2f;b&gt;"));
    assert!(index.body.contains(&format!("href=\".&#x2f;alerts&#x2f;{}\"", app.fingerprint)));

    let alert = get(&format!("{}/alerts/{}", app.base, app.fingerprint), None).await;
    assert_eq!(alert.status, 200, "{}", alert.body);
    assert_protective_headers(&alert, "alert page");
    assert_escaped(&alert.body, "alert page");
    for shown in
        ["task-0001", "agent offline", "cluster upgrade", "msg_web_1", "ops-hook", "scan_failures", "… and 3 more"]
    {
        assert!(alert.body.contains(shown), "the alert page lacks `{shown}`");
    }

    let css = get(&format!("{}/static/style.css", app.base), None).await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.body.contains("polyline"));
    assert_protective_headers(&css, "stylesheet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_alerts_and_bad_parameters_get_error_pages_not_panics() {
    let app = spawn(None).await;
    let long = "f".repeat(5000);
    for path in [
        "/alerts/0000000000000000",
        "/alerts/%00%FF",
        "/alerts/..%2F..%2Fetc",
        "/alerts/%3Cscript%3E",
        &format!("/alerts/{long}"),
    ] {
        let a = get(&format!("{}{path}", app.base), None).await;
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(a.body.contains("no alert has this fingerprint"), "{path}: {}", a.body);
        assert_protective_headers(&a, path);
        assert!(!a.body.contains("<script"), "{path}");
    }
    for (path, says) in [("/?since=yesterday", "since"), ("/?colour=red", "colour"), ("/?since=", "since")] {
        let a = get(&format!("{}{path}", app.base), None).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert!(a.body.contains(says), "{path}: {}", a.body);
        assert_protective_headers(&a, path);
    }
    // `since` narrows the charts: 24 hours hold 48 of prod-north's polls, the whole history 96.
    let day = get(&format!("{}/?since=24h", app.base), None).await;
    assert_eq!(day.status, 200);
    assert!(day.body.contains("48 polls, 1 failed"), "{}", day.body);
    let all = get(&format!("{}/?since=300000y", app.base), None).await;
    assert!(all.body.contains("96 polls, 4 failed"), "{}", all.body);
    let week = get(&format!("{}/", app.base), None).await;
    assert!(week.body.contains("96 polls, 4 failed"), "the default week covers the two days: {}", week.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_configured_the_pages_answer_401_without_it_like_the_api() {
    let app = spawn(Some(TOKEN)).await;
    let alert = format!("/alerts/{}", app.fingerprint);
    for path in ["/", alert.as_str(), "/static/style.css", "/api/v1/alerts"] {
        for token in [None, Some("wrong")] {
            let a = get(&format!("{}{path}", app.base), token).await;
            assert_eq!(a.status, 401, "{path} with {token:?}");
            assert_eq!(a.headers["www-authenticate"], "Bearer", "{path}");
            assert!(!a.body.contains("prod-north"), "{path}: a 401 shows nothing");
        }
        let a = get(&format!("{}{path}", app.base), Some(TOKEN)).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    let a = get(&format!("{}/", app.base), None).await;
    assert_protective_headers(&a, "401 of /");
}

/// `chromium`'s path, or `None` (after a loud note) where it is not installed; under CI its absence fails.
fn chromium() -> Option<PathBuf> {
    common::installed("chromium", "the web page in a real browser: DOM, escaping, CSP, screenshot")
}

/// Loads `url` in headless Chromium with `action` (`--dump-dom`, `--screenshot=…`); returns stdout and the browser's
/// log, which carries the page's console messages (CSP violations among them).
fn browse(chromium: &Path, url: &str, action: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(action)
        .arg(url);
    let run = common::run_command(format!("chromium {}", action.join(" ")), command);
    assert_eq!(run.code, Some(0), "chromium failed on {url}\n{run}");
    (run.stdout, run.stderr)
}

fn console_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn browse_async(chromium: &Path, url: String, action: Vec<String>) -> (String, String) {
    let chromium = chromium.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let action: Vec<&str> = action.iter().map(String::as_str).collect();
        browse(&chromium, &url, &action)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_targets_alerts_charts_and_deliveries_with_hostile_values_as_text() {
    let Some(chromium) = chromium() else { return };
    let app = spawn(None).await;
    let (dom, log) = browse_async(&chromium, format!("{}/", app.base), vec!["--dump-dom".into()]).await;

    assert!(dom.contains("<title>scanwatch</title>"), "a script changed the title or the page did not load:\n{dom}");
    assert_eq!(dom.matches("<tr class=\"target\">").count(), 2, "{dom}");
    assert!(dom.contains("prod-north") && dom.contains("cluster_scan") && dom.contains("iac_scan"));
    assert!(dom.contains("state-ok") && dom.contains("state-error"), "one target's latest poll failed: {dom}");
    // The alert with its context: the task, a failed cluster and its reason.
    assert_eq!(dom.matches("<tr class=\"alert\">").count(), 1, "{dom}");
    assert!(dom.contains("task-0001") && dom.contains("agent offline") && dom.contains("… and 3 more"), "{dom}");
    assert!(dom.contains(">silenced<"), "the matching silence marks it: {dom}");
    // Two charts (one per polled series), each with a total and a running line; prod-north's broken by its outage.
    assert_eq!(dom.matches("<svg").count(), 2, "{dom}");
    assert_eq!(
        dom.matches("<polyline class=\"total\"").count(),
        3,
        "two runs for prod-north, one for the other: {dom}"
    );
    assert!(dom.matches("<polyline class=\"running\"").count() >= 3);
    assert!(dom.contains("class=\"failure\""));
    // The delivery log links to the alert's page.
    assert!(dom.contains("msg_web_1") || dom.contains("ops-hook"), "{dom}");
    assert!(dom.contains(&format!("href=\"./alerts/{}\"", app.fingerprint)));
    // Hostile values: text, never elements; nothing ran.
    assert!(!dom.contains("<script") && !dom.contains("<img"), "{dom}");
    assert!(!dom.contains("pwned</title>"));
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "{dom}");
    assert!(dom.contains("\"&gt;&lt;img src=x onerror=document.title='pwned'&gt;"), "{dom}");
    assert!(dom.contains("{{ 7*7 }}{% raw %}"));
    assert!(dom.contains("report&lt;U+202E&gt;fdp.exe") && !dom.contains('\u{202E}'));
    assert!(dom.contains("evil&lt;b&gt;&amp;\"'&lt;/b&gt;"), "{dom}");
    assert!(console_lines(&log).is_empty(), "the console reported: {:#?}", console_lines(&log));

    let shot = artifact("web-index.png");
    let _ = std::fs::remove_file(&shot);
    let args = vec![format!("--screenshot={}", shot.display()), "--window-size=1280,2000".into()];
    let (_, log) = browse_async(&chromium, format!("{}/", app.base), args).await;
    assert!(console_lines(&log).is_empty(), "{log}");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_one_alert_page_with_labels_context_silence_and_deliveries() {
    let Some(chromium) = chromium() else { return };
    let app = spawn(None).await;
    let url = format!("{}/alerts/{}", app.base, app.fingerprint);
    let (dom, log) = browse_async(&chromium, url.clone(), vec!["--dump-dom".into()]).await;
    for shown in
        ["firing", "scan_failures", "2 of 5 clusters failed", "task-0001", "cluster upgrade", "ops-hook", "pending"]
    {
        assert!(dom.contains(shown), "the alert page lacks `{shown}`:\n{dom}");
    }
    assert!(dom.contains("&lt;script&gt;") && !dom.contains("<script") && !dom.contains("<img"), "{dom}");
    // Its stylesheet loaded through a relative link from one level down.
    assert!(dom.contains("href=\"../static/style.css\""));
    assert!(console_lines(&log).is_empty(), "the console reported: {:#?}", console_lines(&log));
    let shot = artifact("web-alert.png");
    let _ = std::fs::remove_file(&shot);
    let args = vec![format!("--screenshot={}", shot.display()), "--window-size=1280,2000".into()];
    browse_async(&chromium, url, args).await;
    assert!(shot.exists());

    let (dom, log) = browse_async(&chromium, format!("{}/alerts/nope", app.base), vec!["--dump-dom".into()]).await;
    assert!(dom.contains("404") && dom.contains("no alert has this fingerprint"), "{dom}");
    assert!(console_lines(&log).is_empty(), "{log}");
}

/// The console check above means something: Chromium does report a CSP violation in the log it is read from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reports_a_csp_violation_where_one_happens() {
    let Some(chromium) = chromium() else { return };
    let html =
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\"><p style=\"color:red\">x</p>";
    let page =
        format!("data:text/html,{}", percent_encoding::utf8_percent_encode(html, percent_encoding::NON_ALPHANUMERIC));
    let (_, log) = browse_async(&chromium, page, vec!["--dump-dom".into()]).await;
    let lines = console_lines(&log);
    assert!(lines.iter().any(|l| l.contains("Content Security Policy")), "{log}");
}
