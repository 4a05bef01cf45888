use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::TimeZone;
use serde_json::Value;

use super::*;
use crate::alerting::{Alert, AlertState, Event};
use crate::clock::ManualClock;
use crate::config::Environment;
use crate::model::{ErrorKind, PollError, PollRecord, SeriesKey, TaskStats, TaskType};
use crate::notify::AlertNotice;
use crate::rules::{RuleName, Severity};

const CONFIG: &str = r#"
[schedule]
interval = "5m"
[[accounts]]
name = "prod"
[[targets]]
name = "t1"
account = "prod"
region = "cn-north-4"
project_id = "0000000000000000000000000000a001"
labels = { env = "prod" }
[[targets]]
name = "t2"
account = "prod"
region = "cn-north-4"
project_id = "0000000000000000000000000000a002"
task_types = ["iac_scan"]
"#;

const TOKEN: &str = "correct-horse-battery-staple";
/// The `Accept` header Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

fn config() -> Config {
    let env = Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK1"), ("HUAWEICLOUD_SDK_SK", "SK1")]);
    Config::from_toml_str(CONFIG, Path::new("/nonexistent"), &env).unwrap()
}

fn key(config: &Config, target: &str, task_type: TaskType) -> SeriesKey {
    config.series().map(|(_, k)| k).find(|k| k.target == target && k.task_type == task_type).unwrap()
}

fn ok_poll(at: DateTime<Utc>, total: u64, last_start: Option<i64>) -> PollRecord {
    PollRecord {
        task: None,
        polled_at: at,
        latency_ms: 120,
        outcome: Ok(TaskStats { total_num: total, running_num: 1, last_task_start_time: last_start }),
        http_status: Some(200),
        request_id: Some("req-ok".into()),
    }
}

fn failed_poll(at: DateTime<Utc>) -> PollRecord {
    let mut e = PollError::new(ErrorKind::Server, "service unavailable");
    e.http_status = Some(503);
    e.request_id = Some("req-503".into());
    PollRecord { task: None, polled_at: at, latency_ms: 3000, outcome: Err(e), http_status: None, request_id: None }
}

fn notice(fingerprint: &str, series: SeriesKey) -> AlertNotice {
    AlertNotice {
        fingerprint: fingerprint.into(),
        rule: RuleName::NoRecentScan,
        severity: Severity::Critical,
        event: Event::Firing,
        series,
        labels: BTreeMap::new(),
        summary: "no cluster scan has started for 31h; limit 24h".into(),
        value: "31h".into(),
        since: t0(),
        at: t0(),
        context: None,
    }
}

/// A database with three snapshots of t1/cluster_scan (two good, one failed), nothing for the other series, a
/// firing alert and a resolved one on t1, a silence matching t1 and two notifications.
async fn seeded_store(dir: &Path, config: &Config) -> Store {
    let store = Store::open(&dir.join("api.db")).await.unwrap();
    let k = key(config, "t1", TaskType::ClusterScan);
    let id = store.ensure_series(&k).await.unwrap();
    store.ensure_series(&key(config, "t1", TaskType::IacScan)).await.unwrap();
    let minutes = |m: i64| t0() - TimeDelta::minutes(m);
    store.record_poll(id, &ok_poll(minutes(20), 16, Some(1_799_990_000_000)), true).await.unwrap();
    store.record_poll(id, &ok_poll(minutes(10), 17, None), true).await.unwrap();
    store.record_poll(id, &failed_poll(minutes(5)), true).await.unwrap();

    let mut tx = store.begin_write().await.unwrap();
    let firing = Alert {
        state: AlertState::Firing,
        since: Some(minutes(10)),
        summary: "no cluster scan has started for 31h; limit 24h".into(),
        value: "31h".into(),
        last_notified_at: Some(minutes(10)),
        ..Alert::default()
    };
    tx.save_alert("fp-firing", id, RuleName::NoRecentScan, Severity::Critical, &firing, None, false).await.unwrap();
    let resolved = Alert { state: AlertState::Resolved, since: Some(minutes(30)), ..Alert::default() };
    tx.save_alert("fp-resolved", id, RuleName::PollFailing, Severity::Critical, &resolved, None, false).await.unwrap();
    tx.insert_notice("ops-hook", &notice("fp-firing", k.clone()), false).await.unwrap();
    tx.insert_notice("quiet", &notice("fp-firing", k.clone()), true).await.unwrap();
    tx.commit().await.unwrap();
    let mut n = 0;
    store
        .seal_notices(
            t0(),
            |_| {},
            || {
                n += 1;
                format!("msg_{n}")
            },
        )
        .await
        .unwrap();
    let matchers = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    store.add_silence(&matchers, minutes(60), t0() + TimeDelta::hours(1), "ops", "maintenance", t0()).await.unwrap();
    store
}

struct App {
    base: String,
    client: reqwest::Client,
    clock: Arc<ManualClock>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    store: Store,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<io::Result<()>>,
}

impl App {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_with(path, Some(TOKEN)).await
    }

    async fn get_with(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body:?}")))
    }

    async fn status_of(&self, path: &str, token: Option<&str>) -> u16 {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// `/metrics` as OpenMetrics (what Prometheus asks for).
    async fn metrics_text(&self) -> String {
        let (ct, text) = self.metrics_as(Some(PROMETHEUS_ACCEPT)).await;
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        text
    }

    /// `/metrics` with this `Accept` header: (content type, body).
    async fn metrics_as(&self, accept: Option<&str>) -> (String, String) {
        let mut req =
            self.client.get(format!("{}/metrics", self.base)).header("authorization", format!("Bearer {TOKEN}"));
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        (ct, resp.text().await.unwrap())
    }
}

/// A server on 127.0.0.1:0 over `store` (a seeded one when `None`), with a token, a good cycle just now.
async fn spawn(token: Option<&str>, store: Option<Store>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config());
    let store = match store {
        Some(s) => s,
        None => seeded_store(dir.path(), &config).await,
    };
    let clock = ManualClock::new(t0());
    let health = Arc::new(Health::new(config.schedule.interval));
    health.record_cycle(t0(), true);
    let metrics = Arc::new(Metrics::new());
    let state = ServerState {
        store: store.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        config: config.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, router(state, token.map(Secret::new)), shutdown.clone()));
    App { base, client: crate::tls::client(), clock, health, metrics, store, config, _dir: dir, shutdown, server }
}

fn field_names(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn names(list: &str) -> BTreeSet<String> {
    list.split_whitespace().map(String::from).collect()
}

#[tokio::test]
async fn snapshots_have_the_history_fields_and_equal_what_the_cli_prints() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get("/api/v1/snapshots").await;
    assert_eq!(status, StatusCode::OK);
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        field_names(&rows[0]),
        names(
            "target account region project_id enterprise_project_id task_type polled_at ok total_num running_num \
             last_task_start_time latency_ms http_status error_kind error_code error_message request_id"
        )
    );
    let cli: Vec<HistoryJson> =
        app.store.history(&HistoryQuery::default()).await.unwrap().iter().map(HistoryJson::from).collect();
    assert_eq!(body, serde_json::to_value(&cli).unwrap());
    assert_eq!(rows[2]["ok"], false);
    assert_eq!(rows[2]["error_kind"], "server");
    assert_eq!(rows[0]["last_task_start_time"], "2027-01-15T05:13:20Z");
}

#[tokio::test]
async fn snapshots_filter_by_target_time_and_limit_like_history() {
    let app = spawn(Some(TOKEN), None).await;
    let (_, body) = app.get("/api/v1/snapshots?limit=2").await;
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 2, "the latest two, oldest first");
    assert_eq!(rows[0]["total_num"], 17);
    assert_eq!(rows[1]["ok"], false);
    let (_, body) = app.get("/api/v1/snapshots?since=15m").await;
    assert_eq!(body.as_array().unwrap().len(), 2);
    let (_, body) = app.get("/api/v1/snapshots?until=2027-01-15T07:45:00Z").await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = app.get("/api/v1/snapshots?target=t2").await;
    assert!(body.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_query_parameters_are_json_errors_that_say_what_is_wrong() {
    let app = spawn(Some(TOKEN), None).await;
    for (path, needle) in [
        ("/api/v1/snapshots?since=yesterday", "since"),
        ("/api/v1/snapshots?limit=0", "limit"),
        ("/api/v1/snapshots?limit=many", "limit"),
        ("/api/v1/snapshots?limit=10001", "10000"),
        ("/api/v1/snapshots?taget=t1", "taget"),
        ("/api/v1/alerts?all=maybe", "all"),
        ("/api/v1/notifications?status=lost", "pending, delivered, failed, expired, suppressed"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(error.contains(needle), "{path}: {error}");
    }
}

#[tokio::test]
async fn alerts_are_the_active_ones_unless_all_and_carry_silenced() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get("/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK);
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        field_names(&rows[0]),
        names(
            "fingerprint target task_type rule severity state since summary value last_notified_at acked silenced context"
        )
    );
    assert!(rows[0]["context"].is_null(), "no context stored yet: {}", rows[0]);
    assert_eq!(rows[0]["fingerprint"], "fp-firing");
    assert_eq!(rows[0]["state"], "firing");
    assert_eq!(rows[0]["silenced"], true, "the env=prod silence matches t1's user label");
    assert_eq!(rows[0]["since"], "2027-01-15T07:50:00Z");
    let (_, body) = app.get("/api/v1/alerts?all=true").await;
    let states: Vec<&str> = body.as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&"resolved"), "{states:?}");
}

#[tokio::test]
async fn notifications_have_the_cli_fields_and_filter_by_status() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get("/api/v1/notifications").await;
    assert_eq!(status, StatusCode::OK);
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        field_names(&rows[0]),
        names("id channel fingerprints event status attempts created_at delivered_at last_error")
    );
    let cli: Vec<NotificationJson> =
        app.store.notifications(None, 100).await.unwrap().iter().map(NotificationJson::from).collect();
    assert_eq!(body, serde_json::to_value(&cli).unwrap());
    let (_, body) = app.get("/api/v1/notifications?status=suppressed").await;
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["channel"], "quiet");
    assert_eq!(rows[0]["fingerprints"], serde_json::json!(["fp-firing"]));
    let (_, body) = app.get("/api/v1/notifications?limit=1").await;
    assert_eq!(body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn targets_list_every_configured_series_with_its_latest_poll() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get("/api/v1/targets").await;
    assert_eq!(status, StatusCode::OK);
    let rows = body.as_array().unwrap();
    let ids: Vec<(String, String)> =
        rows.iter().map(|r| (r["target"].as_str().unwrap().into(), r["task_type"].as_str().unwrap().into())).collect();
    assert_eq!(
        ids,
        [("t1", "cluster_scan"), ("t1", "iac_scan"), ("t2", "iac_scan")].map(|(a, b)| (a.into(), b.into()))
    );
    assert_eq!(
        field_names(&rows[0]),
        names("target account region project_id enterprise_project_id task_type endpoint labels latest")
    );
    assert_eq!(rows[0]["labels"], serde_json::json!({"env": "prod"}));
    assert_eq!(rows[0]["latest"]["error_kind"], "server", "the latest poll is the failed one");
    assert_eq!(rows[0]["latest"]["polled_at"], "2027-01-15T07:55:00Z");
    assert_eq!(rows[1]["latest"], Value::Null, "registered but never polled");
    assert_eq!(rows[2]["latest"], Value::Null, "never seen by the store");
    assert_eq!(app.config.targets.len(), 2);
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| {
            panic!("no {metric} {labels:?} in {:#?}", scrape.samples.iter().map(|s| &s.metric).collect::<Vec<_>>())
        })
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{} is not a number: {other:?}", s.metric),
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_carry_every_family() {
    let app = spawn(Some(TOKEN), None).await;
    let k = key(&app.config, "t1", TaskType::ClusterScan);
    app.metrics.poll(&k, &ok_poll(t0(), 17, Some(1_799_990_000_000)), Duration::from_micros(120_400));
    app.metrics.poll(&k, &failed_poll(t0()), Duration::from_secs(3));
    app.metrics.poll(&k, &failed_poll(t0()), Duration::from_secs(3));
    app.metrics.delivery("ops-hook", "delivered");
    app.metrics.delivery("ops-hook", "retrying");
    app.metrics.delivery("ops-hook", "retrying");
    let text = app.metrics_text().await;

    // Every line is a comment or a sample the parser understands: nothing is silently skipped.
    for line in text.lines() {
        let info = prometheus_parse::LineInfo::parse(line);
        assert!(
            line.starts_with('#') || matches!(info, prometheus_parse::LineInfo::Sample { .. }),
            "not a sample: {line}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let series = [
        ("target", "t1"),
        ("task_type", "cluster_scan"),
        ("account", "prod"),
        ("project_id", "0000000000000000000000000000a001"),
    ];
    assert_eq!(value(sample(&scrape, "scanwatch_hss_total_num", &series)), 17.0);
    assert_eq!(value(sample(&scrape, "scanwatch_hss_running_num", &series)), 1.0);
    assert_eq!(value(sample(&scrape, "scanwatch_hss_last_task_start_timestamp_seconds", &series)), 1_799_990_000.0);
    assert_eq!(value(sample(&scrape, "scanwatch_poll_last_ok", &series)), 0.0);
    let errors = sample(&scrape, "scanwatch_poll_errors_total", &[("target", "t1"), ("kind", "server")]);
    assert_eq!(value(errors), 2.0);
    let latency = sample(&scrape, "scanwatch_poll_duration_seconds", &[("account", "prod")]);
    let prometheus_parse::Value::Histogram(buckets) = &latency.value else { panic!("{latency:?}") };
    let le = |bound: f64| buckets.iter().find(|b| b.less_than == bound).unwrap().count;
    assert_eq!((le(0.1), le(0.25), le(5.0), le(f64::INFINITY)), (0.0, 1.0, 3.0, 3.0));
    let delivered = [("channel", "ops-hook"), ("outcome", "retrying")];
    assert_eq!(value(sample(&scrape, "scanwatch_deliveries_total", &delivered)), 2.0);
    let firing = [("rule", "no_recent_scan"), ("state", "firing")];
    assert_eq!(value(sample(&scrape, "scanwatch_alerts", &firing)), 1.0);
    assert_eq!(value(sample(&scrape, "scanwatch_alerts", &[("rule", "stuck_running"), ("state", "firing")])), 0.0);
    assert_eq!(value(sample(&scrape, "scanwatch_outbox_pending", &[])), 1.0, "the suppressed one is not pending");
    assert_eq!(value(sample(&scrape, "scanwatch_database_writable", &[])), 1.0);
    assert_eq!(value(sample(&scrape, "scanwatch_last_good_cycle_timestamp_seconds", &[])), 1_800_000_000.0);
    for family in ["scanwatch_hss_total_num", "scanwatch_alerts", "scanwatch_poll_duration_seconds"] {
        assert!(scrape.docs.contains_key(family), "{family} has HELP");
    }
}

#[test]
fn a_success_without_a_last_task_start_drops_the_gauge_rather_than_showing_1970() {
    let config = config();
    let k = key(&config, "t1", TaskType::ClusterScan);
    let m = Metrics::new();
    m.poll(&k, &ok_poll(t0(), 3, Some(1_799_990_000_000)), Duration::ZERO);
    assert!(
        m.render(&ScrapeValues::default(), Format::OpenMetrics)
            .unwrap()
            .contains("scanwatch_hss_last_task_start_timestamp_seconds{")
    );
    m.poll(&k, &ok_poll(t0(), 3, None), Duration::ZERO);
    let text = m.render(&ScrapeValues::default(), Format::OpenMetrics).unwrap();
    assert!(!text.contains("scanwatch_hss_last_task_start_timestamp_seconds{"), "{text}");
    assert!(text.contains("scanwatch_poll_last_ok{") && text.contains("scanwatch_database_writable 0"), "{text}");
}

#[tokio::test]
async fn healthz_is_ok_after_a_recent_good_cycle_and_503_once_polling_stops() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database_writable"], true);
    assert_eq!(body["last_good_cycle"], "2027-01-15T08:00:00Z");
    assert_eq!(body["interval"], "5m");

    // Failed cycles keep coming but do not count as good.
    app.clock.advance(Duration::from_secs(15 * 60));
    app.health.record_cycle(app.clock.now(), false);
    let (status, _) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "exactly three intervals is still fresh");
    app.clock.advance(Duration::from_secs(1));
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["last_cycle_ok"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("15m1s ago") && reason.contains("3 intervals of 5m"), "{reason}");

    app.health.record_cycle(app.clock.now(), true);
    let (status, _) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "a good cycle heals it");
}

#[tokio::test]
async fn healthz_is_503_when_the_database_is_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seeded_store(dir.path(), &config()).await;
    seeded.close().await;
    // Root ignores file modes, so the database is opened read-only instead.
    let read_only = Store::open_read_only(&dir.path().join("api.db")).await.unwrap();
    let app = spawn(Some(TOKEN), Some(read_only)).await;
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database_writable"], false);
    assert!(body["reason"].as_str().unwrap().contains("not writable"), "{body}");
    let text = app.metrics_text().await;
    assert!(text.contains("scanwatch_database_writable 0"), "{text}");
    let (status, body) = app.get("/api/v1/snapshots").await;
    assert_eq!((status, body.as_array().unwrap().len()), (StatusCode::OK, 3), "reads still work");
}

#[tokio::test]
async fn healthz_says_not_writable_right_after_a_write_fails_and_writable_after_the_next_commit() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!((status, &body["database_writable"]), (StatusCode::OK, &Value::Bool(true)), "{body}");

    // The disk fills up: the write connection may not grow the file by a single page (SQLITE_FULL).
    app.store.cap_growth_for_tests().await;
    let template = key(&app.config, "t1", TaskType::IacScan);
    let keys: Vec<SeriesKey> = (0..400)
        .map(|i| SeriesKey { target: format!("target-{i:04}-{}", "x".repeat(200)), ..template.clone() })
        .collect();
    let e = app.store.ensure_all_series(&keys).await.unwrap_err();
    assert!(e.to_string().contains("full"), "{e}");

    // At once, not cycles later: the write probe alone still passes (it writes no page).
    app.store.check_writable().await.unwrap();
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database_writable"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("the last write failed") && reason.contains("full"), "{reason}");
    assert!(app.metrics_text().await.contains("scanwatch_database_writable 0"));

    // Space again (the failed transaction's connection was closed, and its cap with it): the next commit heals it.
    app.store.ensure_all_series(&keys[..2]).await.unwrap();
    let (status, body) = app.get_with("/healthz", None).await;
    assert_eq!((status, &body["database_writable"]), (StatusCode::OK, &Value::Bool(true)), "{body}");
    assert!(app.metrics_text().await.contains("scanwatch_database_writable 1"));
}

#[test]
fn a_fresh_start_is_healthy_for_three_intervals_only_when_its_start_is_given() {
    let interval = Duration::from_secs(60);
    assert!(Health::new(interval).freshness(t0()).unwrap_err().contains("no cycle has succeeded yet"));
    let h = Health::new(interval).since(t0());
    assert!(h.freshness(t0() + TimeDelta::seconds(180)).is_ok());
    let e = h.freshness(t0() + TimeDelta::seconds(181)).unwrap_err();
    assert!(e.contains("since the start"), "{e}");
    h.record_cycle(t0() + TimeDelta::seconds(170), true);
    assert!(h.freshness(t0() + TimeDelta::seconds(300)).is_ok());
    h.set_interval(Duration::from_secs(10));
    assert!(h.freshness(t0() + TimeDelta::seconds(300)).is_err(), "a shorter interval after a reload applies");
    h.record_cycle(t0(), true);
    assert_eq!(h.last_good_cycle(), Some(t0() + TimeDelta::seconds(170)), "a late report of an older cycle");
}

#[tokio::test]
async fn the_token_is_required_on_every_route_but_healthz() {
    let app = spawn(Some(TOKEN), None).await;
    for path in ["/metrics", "/api/v1/targets", "/api/v1/snapshots", "/api/v1/alerts", "/api/v1/notifications"] {
        for token in [None, Some("wrong"), Some(""), Some("correct-horse-battery-stapl")] {
            let (status, body) = app.get_with(path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
        assert_eq!(app.status_of(path, Some(TOKEN)).await, 200, "{path}");
    }
    let resp = app
        .client
        .get(format!("{}/api/v1/alerts", app.base))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "only the Bearer scheme");
    assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer");
    let (status, _) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_the_api_is_open_and_unknown_routes_are_json_404s() {
    let app = spawn(None, None).await;
    let (status, _) = app.get_with("/api/v1/alerts", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get_with("/api/v2/everything", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("/api/v1/snapshots"), "{body}");
}

#[tokio::test]
async fn serve_returns_once_shutdown_is_cancelled() {
    let app = spawn(Some(TOKEN), None).await;
    let (status, _) = app.get_with("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    app.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), app.server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    assert!(app.client.get(format!("{}/healthz", app.base)).send().await.is_err(), "no longer listening");
}

/// Values at and past every edge a time, a duration or a count can have, and plain garbage.
fn extreme_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("300000y".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("99999999999999999999999d".to_string()),
        Just("0s".to_string()),
        Just("+262143-12-31T23:59:59Z".to_string()),
        Just("-262143-01-01T00:00:00Z".to_string()),
        Just("9999-12-31T23:59:59.999999999+14:00".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("-1".to_string()),
        Just("".to_string()),
        (0u64..u64::MAX, prop_oneof![Just("s"), Just("m"), Just("h"), Just("d"), Just("y"), Just("ns")])
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        any::<i64>()
            .prop_map(|s| chrono::DateTime::from_timestamp(s / 1000, 0).map(|t| t.to_rfc3339()).unwrap_or_default()),
        "\\PC{0,24}",
    ]
}

/// Every `/api/v1/*` parameter and the web page's, driven with extreme values: the answer is always a 200 or 400
/// (404 for an alert page), never a panic (axum does not catch one: the connection would drop) and never a 500.
#[tokio::test]
async fn no_api_parameter_value_panics_the_server() {
    use proptest::strategy::{Strategy, ValueTree};
    let app = spawn(Some(TOKEN), None).await;
    let params = [
        ("/api/v1/snapshots", "since"),
        ("/api/v1/snapshots", "until"),
        ("/api/v1/snapshots", "limit"),
        ("/api/v1/snapshots", "target"),
        ("/api/v1/alerts", "all"),
        ("/api/v1/notifications", "status"),
        ("/api/v1/notifications", "limit"),
        ("/", "since"),
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..40 {
        for (path, param) in params {
            let value = extreme_value().new_tree(&mut runner).unwrap().current();
            let query: String =
                url::form_urlencoded::Serializer::new(String::new()).append_pair(param, &value).finish();
            let url = format!("{path}?{query}");
            let status = app.status_of(&url, Some(TOKEN)).await;
            assert!(status == 200 || status == 400, "{url}: HTTP {status}");
        }
        // The web page's path parameter: an alert's page or a 404 page, whatever the segment holds.
        let value = extreme_value().new_tree(&mut runner).unwrap().current();
        let segment = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC);
        let url = format!("/alerts/{segment}");
        let status = app.status_of(&url, Some(TOKEN)).await;
        assert_eq!(status, 404, "{url}");
    }
    assert_eq!(app.status_of("/alerts/fp-firing", Some(TOKEN)).await, 200);
    // The issue's case: a duration far past chrono's range means "since ever".
    let (status, body) = app.get("/api/v1/snapshots?since=300000y").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 3);
}

#[test]
fn the_accept_header_chooses_openmetrics_only_when_it_asks_for_it() {
    for (accept, want) in [
        (None, Format::Text),
        (Some(""), Format::Text),
        (Some("*/*"), Format::Text),
        (Some("text/plain"), Format::Text),
        (Some("text/plain;version=0.0.4"), Format::Text),
        (Some(PROMETHEUS_ACCEPT), Format::OpenMetrics),
        (Some("application/openmetrics-text"), Format::OpenMetrics),
        (Some("Application/OpenMetrics-Text; Version=\"1.0.0\""), Format::OpenMetrics),
        (Some("application/openmetrics-text; version=0.0.1; charset=utf-8"), Format::OpenMetrics),
        (Some("application/openmetrics-text;version=2.0.0"), Format::Text),
        (Some("application/openmetrics-text;q=0.2,text/plain;version=0.0.4;q=0.9"), Format::Text),
        (Some("text/plain;version=0.0.4;q=0.3,application/openmetrics-text;q=0.7"), Format::OpenMetrics),
        (Some("application/openmetrics-text;q=0"), Format::Text),
        (Some("application/openmetrics-text;q=banana"), Format::Text),
        (
            Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"),
            Format::Text,
        ),
        (Some("text/html,application/xhtml+xml"), Format::Text),
        (Some(";;;,,=;q=="), Format::Text),
    ] {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
}

#[tokio::test]
async fn metrics_answer_text_0_0_4_by_default_and_openmetrics_when_asked() {
    let app = spawn(Some(TOKEN), None).await;
    app.metrics.delivery("ops-hook", "delivered");
    let (ct, text) = app.metrics_as(None).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# HELP scanwatch_deliveries_total ")
            && text.contains("# TYPE scanwatch_deliveries_total counter\n")
    );
    assert_eq!(app.metrics_as(Some("text/plain;version=0.0.4")).await.0, TEXT_CONTENT_TYPE);
    let (ct, om) = app.metrics_as(Some("application/openmetrics-text;version=1.0.0")).await;
    assert_eq!(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE scanwatch_deliveries counter\n"), "{om}");
    // The same samples in both: only the descriptor lines differ.
    let samples = |t: &str| -> BTreeSet<String> {
        t.lines().filter(|l| !l.starts_with('#') && !l.starts_with("process_")).map(String::from).collect()
    };
    assert_eq!(samples(&text), samples(&om));
}

#[test]
fn counters_and_the_latency_histogram_exist_at_zero_for_every_configured_series_channel_and_account() {
    let text = format!(
        "{CONFIG}\n[[channels]]\nname = \"ops-hook\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\n\
         [[channels]]\nname = \"second\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\n"
    );
    let env = Environment::from_pairs([
        ("HUAWEICLOUD_SDK_AK", "AK1"),
        ("HUAWEICLOUD_SDK_SK", "SK1"),
        ("HOOK", "https://hooks.example.com/x"),
    ]);
    let config = Config::from_toml_str(&text, Path::new("/nonexistent"), &env).unwrap();
    let m = Metrics::new();
    assert!(!m.render(&ScrapeValues::default(), Format::Text).unwrap().contains("scanwatch_deliveries_total{"));
    m.declare(&config);
    let text = m.render(&ScrapeValues::default(), Format::Text).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let count = |metric: &str| scrape.samples.iter().filter(|s| s.metric == metric).count();
    for channel in ["ops-hook", "second"] {
        for outcome in DELIVERY_OUTCOMES {
            let labels = [("channel", channel), ("outcome", outcome)];
            assert_eq!(value(sample(&scrape, "scanwatch_deliveries_total", &labels)), 0.0);
        }
    }
    assert_eq!(count("scanwatch_deliveries_total"), 2 * DELIVERY_OUTCOMES.len());
    for (target, task_type) in [("t1", "cluster_scan"), ("t1", "iac_scan"), ("t2", "iac_scan")] {
        for kind in ErrorKind::ALL {
            let labels = [("target", target), ("task_type", task_type), ("kind", kind.as_str())];
            assert_eq!(value(sample(&scrape, "scanwatch_poll_errors_total", &labels)), 0.0);
        }
    }
    assert_eq!(count("scanwatch_poll_errors_total"), 3 * ErrorKind::ALL.len());
    let latency = sample(&scrape, "scanwatch_poll_duration_seconds", &[("account", "prod")]);
    let prometheus_parse::Value::Histogram(buckets) = &latency.value else { panic!("{latency:?}") };
    assert!(buckets.iter().all(|b| b.count == 0.0), "{buckets:?}");
    assert!(text.contains("scanwatch_poll_duration_seconds_count{account=\"prod\"} 0\n"), "{text}");

    // A reload declares what is new and keeps what was counted.
    m.delivery("ops-hook", "failed");
    m.declare(&config);
    let text = m.render(&ScrapeValues::default(), Format::Text).unwrap();
    assert!(text.contains("scanwatch_deliveries_total{channel=\"ops-hook\",outcome=\"failed\"} 1\n"), "{text}");
}

#[test]
fn latency_keeps_sub_millisecond_precision() {
    let config = config();
    let k = key(&config, "t1", TaskType::ClusterScan);
    let m = Metrics::new();
    m.poll(&k, &ok_poll(t0(), 3, None), Duration::from_micros(350));
    m.poll(&k, &ok_poll(t0(), 3, None), Duration::from_micros(4_250));
    let text = m.render(&ScrapeValues::default(), Format::Text).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let latency = sample(&scrape, "scanwatch_poll_duration_seconds", &[("account", "prod")]);
    let prometheus_parse::Value::Histogram(buckets) = &latency.value else { panic!("{latency:?}") };
    assert_eq!(buckets.iter().find(|b| b.less_than == 0.005).unwrap().count, 2.0, "{buckets:?}");
    let sum = text.lines().find_map(|l| l.strip_prefix("scanwatch_poll_duration_seconds_sum{account=\"prod\"} "));
    let sum: f64 = sum.unwrap().parse().unwrap();
    assert!((sum - 0.0046).abs() < 1e-9, "0.35 ms + 4.25 ms, not rounded to whole milliseconds: {sum}");
}

#[test]
fn build_info_and_process_metrics_carry_client_golangs_names() {
    let text = Metrics::new().render(&ScrapeValues::default(), Format::Text).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("scanwatch_build_info{{version=\"{version}\"}} 1\n")), "{text}");
    for (name, help) in [
        ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."),
        ("process_resident_memory_bytes", "Resident memory size in bytes."),
        ("process_open_fds", "Number of open file descriptors."),
        ("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
    ] {
        assert!(text.contains(&format!("# HELP {name} {help}\n")), "{name}: {text}");
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let rss = value(sample(&scrape, "process_resident_memory_bytes", &[]));
    assert!(rss > 1_000_000.0, "a test binary holds more than 1 MB: {rss}");
    let fds = value(sample(&scrape, "process_open_fds", &[]));
    assert!(fds >= 3.0 && fds <= value(sample(&scrape, "process_max_fds", &[])), "{fds}");
    let started = value(sample(&scrape, "process_start_time_seconds", &[]));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started <= now + 1.0 && started > now - 3600.0, "this test process started within the hour: {started}");
}

#[test]
fn process_stats_parse_the_proc_files_and_refuse_what_linux_does_not_write() {
    // A command name with spaces and parentheses: the fields start after the last `)`.
    let stat = "4242 (sc (an) watch) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 130 0 0 20 0 9 0 \
                1500 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    let boot = "cpu  1 2 3\nbtime 1800000000\nprocesses 99\n";
    let p = ProcessStats::parse(stat, boot, 100, 4096).unwrap();
    assert_eq!(p.cpu_seconds, 3.8, "utime 250 + stime 130 ticks at 100 Hz");
    assert_eq!(p.start_time_seconds, 1_800_000_015.0, "btime + 1500 ticks");
    assert_eq!(p.virtual_bytes, 123_456_789);
    assert_eq!(p.resident_bytes, 2048 * 4096);
    assert_eq!(ProcessStats::parse(stat, "cpu 1\n", 100, 4096), None, "no btime");
    assert_eq!(ProcessStats::parse("4242 (x) S 1 2", boot, 100, 4096), None, "truncated");
    assert_eq!(ProcessStats::parse(stat, boot, 0, 4096), None, "no clock rate");
    assert_eq!(ProcessStats::parse("", "", 100, 4096), None);
}

#[test]
fn text_0_0_4_names_a_counter_by_its_sample_and_drops_what_openmetrics_alone_has() {
    let om = "# HELP a_things Things.\n# TYPE a_things counter\n# UNIT a_things things\na_things_total{x=\"1\"} 2\n\
              # HELP b_level Level.\n# TYPE b_level gauge\nb_level 3\n# HELP c_odd Odd.\n# TYPE c_odd unknown\nc_odd 4\n# EOF\n";
    assert_eq!(
        super::metrics::to_text_004(om),
        "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total{x=\"1\"} 2\n\
         # HELP b_level Level.\n# TYPE b_level gauge\nb_level 3\n# HELP c_odd Odd.\n# TYPE c_odd untyped\nc_odd 4\n"
    );
}
