//! scanwatch as Prometheus sees it, checked with the tools of Debian's `prometheus` package:
//! - `/metrics`, served over HTTP in both formats it negotiates, passes `promtool check metrics` without a complaint;
//! - a real Prometheus server scrapes it (asking for OpenMetrics, as Prometheus does) and stores every family;
//! - the example rule file `packaging/prometheus/scanwatch.rules.yml` passes `promtool check rules`, its unit tests
//!   pass `promtool test rules` (and a wrong expectation fails them, so their success means something), and every
//!   scanwatch metric it names is one `/metrics` exports.
//!
//! Under `CI=true` a missing `promtool` or `prometheus` fails these tests (`common::installed`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header;
use chrono::{TimeZone, Utc};
use scanwatch::clock::ManualClock;
use scanwatch::config::{Config, Environment};
use scanwatch::model::{ErrorKind, PollError, PollRecord, TaskStats};
use scanwatch::secret::Secret;
use scanwatch::server::{
    Format, Health, Metrics, OPENMETRICS_CONTENT_TYPE, ScrapeValues, ServerState, TEXT_CONTENT_TYPE, router, serve,
};
use scanwatch::store::Store;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::installed;

const TOKEN: &str = "scrape-token-0123456789";

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
[[targets]]
name = "t2 \"quoted\" \\ name"
account = "prod"
region = "cn-north-4"
project_id = "0000000000000000000000000000a002"
task_types = ["iac_scan"]
[[channels]]
name = "ops-hook"
kind = "webhook"
url_env = "HOOK"
"#;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus")
}

fn config() -> Config {
    let env = Environment::from_pairs([
        ("HUAWEICLOUD_SDK_AK", "AK1"),
        ("HUAWEICLOUD_SDK_SK", "SK1"),
        ("HOOK", "https://hooks.example.com/x"),
    ]);
    Config::from_toml_str(CONFIG, Path::new("/nonexistent"), &env).expect("the test config is valid")
}

/// A scanwatch HTTP API on 127.0.0.1 over a real store, its metrics declared from the config and fed a
/// success, a failure and deliveries; every response's content type is kept in `served`.
struct Served {
    addr: String,
    served: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve_metrics() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config());
    let store = Store::open(&dir.path().join("scanwatch.db")).await.unwrap();
    let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let metrics = Arc::new(Metrics::new());
    metrics.declare(&config);
    let mut series = config.series().map(|(_, k)| k);
    let (first, second) = (series.next().unwrap(), series.last().unwrap());
    let ok = PollRecord {
        task: None,
        polled_at: t0,
        latency_ms: 84,
        outcome: Ok(TaskStats { total_num: 12, running_num: 1, last_task_start_time: Some(1_799_990_000_000) }),
        http_status: Some(200),
        request_id: None,
    };
    metrics.poll(&first, &ok, Duration::from_micros(84_321));
    let failed = PollRecord { outcome: Err(PollError::new(ErrorKind::Server, "HTTP 503")), ..ok };
    metrics.poll(&second, &failed, Duration::from_micros(2_500_000));
    metrics.delivery("ops-hook", "retrying");
    metrics.delivery("ops-hook", "delivered");
    let health = Arc::new(Health::new(config.schedule.interval));
    health.record_cycle(t0, true);
    let state = ServerState { store, health, metrics, clock: ManualClock::new(t0), config };
    let served = Arc::new(Mutex::new(Vec::new()));
    let seen = served.clone();
    let app = router(state, Some(Secret::new(TOKEN))).layer(axum::middleware::map_response(
        move |resp: axum::response::Response| {
            let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            seen.lock().unwrap().push(ct.to_string());
            async move { resp }
        },
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, app, shutdown.clone()));
    Served { addr, served, shutdown, _dir: dir }
}

async fn get_metrics(addr: &str, accept: &str) -> (String, String) {
    let resp = scanwatch::tls::client()
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(TOKEN)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    (ct, resp.text().await.unwrap())
}

/// `promtool ARGS` with `stdin` on its standard input: (success, everything it printed).
fn promtool(tool: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(rules_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn promtool_check_metrics_passes_the_text_format_without_a_complaint() {
    let Some(tool) = installed("promtool", "/metrics against promtool check metrics") else { return };
    let app = serve_metrics().await;
    let (ct, text) = get_metrics(&app.addr, "text/plain;version=0.0.4").await;
    assert_eq!(ct, TEXT_CONTENT_TYPE);
    let (ok, said) = promtool(&tool, &["check", "metrics"], &text);
    assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}\non:\n{text}");
    for family in ["scanwatch_deliveries_total", "scanwatch_poll_errors_total", "process_cpu_seconds_total"] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has help:\n{text}");
    }
    assert!(text.contains(r#"target="t2 \"quoted\" \\ name""#), "label values are escaped:\n{text}");

    // A daemon that has recorded nothing yet: families without samples are fine too.
    let fresh = Metrics::new().render(&ScrapeValues::default(), Format::Text).unwrap();
    let (ok, said) = promtool(&tool, &["check", "metrics"], &fresh);
    assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}\non:\n{fresh}");

    // The check has teeth: the OpenMetrics descriptors read as 0.0.4 are exactly what the issue saw.
    let (ct, om) = get_metrics(&app.addr, "application/openmetrics-text;version=1.0.0").await;
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    let (ok, said) = promtool(&tool, &["check", "metrics"], &om);
    assert!(!ok && said.contains("scanwatch_deliveries_total no help text"), "{said}");
    app.shutdown.cancel();
}

/// promtool 2.42 lints only the 0.0.4 format, so the OpenMetrics answer goes through Prometheus's own OpenMetrics
/// parser twice: `promtool tsdb create-blocks-from openmetrics` (the backfill reader, which needs a timestamp on
/// every sample, added here) and a real Prometheus server's scrape (next test).
#[tokio::test]
async fn the_openmetrics_answer_passes_prometheus_openmetrics_parser() {
    let Some(tool) = installed("promtool", "/metrics against Prometheus's OpenMetrics parser") else { return };
    let app = serve_metrics().await;
    let (_, om) = get_metrics(&app.addr, "application/openmetrics-text").await;
    assert!(om.ends_with("# EOF\n"));
    let stamped: String =
        om.lines().map(|l| if l.starts_with('#') { format!("{l}\n") } else { format!("{l} 1800000000\n") }).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.om");
    std::fs::write(&file, &stamped).unwrap();
    let out = Command::new(&tool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.path().join("blocks"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}\non:\n{stamped}");
    // Without `# EOF` the same parser refuses it, so the success above is the parser's verdict.
    std::fs::write(&file, stamped.replace("# EOF\n", "")).unwrap();
    let out = Command::new(&tool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.path().join("blocks2"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an OpenMetrics text without # EOF was accepted");
    app.shutdown.cancel();
}

/// A free loopback port for a child process to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The JSON body of a GET, or `None` while the server is not answering yet.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let body = client.get(url).send().await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_every_family_over_openmetrics() {
    let Some(prometheus) = installed("prometheus", "a real Prometheus scraping /metrics") else { return };
    let app = serve_metrics().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: scanwatch\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{}']\n",
        rules_dir().join("scanwatch.rules.yml").display(),
        app.addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Child(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let client = scanwatch::tls::client();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: &str| {
        let (client, api, q) = (client.clone(), api.clone(), q.to_string());
        async move {
            let url = url::Url::parse_with_params(&format!("{api}/query"), [("query", q)]).ok()?;
            get_json(&client, url.as_str()).await
        }
    };
    // Wait (up to a minute: a cold start on a loaded machine) for the first scrape to be stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        let targets = get_json(&client, &format!("{api}/targets")).await;
        let target = targets.and_then(|t| t["data"]["activeTargets"].get(0).cloned());
        if let Some(t) = target.filter(|t| t["health"] != "unknown")
            && query("scanwatch_build_info")
                .await
                .is_some_and(|v| v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()))
        {
            break t;
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "Prometheus never scraped scanwatch:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    assert!(
        app.served.lock().unwrap().iter().any(|ct| ct == OPENMETRICS_CONTENT_TYPE),
        "Prometheus asks for OpenMetrics and got it: {:?}",
        app.served.lock().unwrap()
    );
    let count = |v: &Value| v["data"]["result"].as_array().map_or(0, Vec::len);
    for (q, n) in [
        ("scanwatch_deliveries_total", 4),
        ("scanwatch_deliveries_total == 0", 2),
        ("scanwatch_poll_errors_total", 3 * ErrorKind::ALL.len()),
        ("scanwatch_poll_errors_total > 0", 1),
        ("scanwatch_poll_duration_seconds_count", 1),
        ("scanwatch_hss_total_num", 1),
        ("scanwatch_database_writable == 1", 1),
        ("scanwatch_last_good_cycle_timestamp_seconds", 1),
        ("process_cpu_seconds_total", 1),
        ("process_resident_memory_bytes > 0", 1),
        ("process_open_fds", 1),
        ("process_start_time_seconds", 1),
    ] {
        let v = query(q).await.unwrap_or_default();
        assert_eq!(count(&v), n, "{q}: {v}");
    }
    let sum = query("scanwatch_poll_duration_seconds_sum").await.unwrap();
    let sum: f64 = sum["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((sum - 2.584321).abs() < 1e-9, "microseconds survive: {sum}");
    let rules = get_json(&client, &format!("{api}/rules")).await.unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    assert_eq!(loaded, 5, "the example rule file loads into a real Prometheus: {rules}");
    drop(child);
    app.shutdown.cancel();
}

#[test]
fn promtool_checks_the_example_rule_file_and_its_unit_tests_pass() {
    let Some(tool) = installed("promtool", "packaging/prometheus with promtool check/test rules") else { return };
    let (ok, said) = promtool(&tool, &["check", "rules", "scanwatch.rules.yml"], "");
    assert!(ok && said.contains("SUCCESS: 5 rules found"), "{said}");
    let (ok, said) = promtool(&tool, &["test", "rules", "scanwatch.rules.test.yml"], "");
    assert!(ok && said.contains("SUCCESS"), "{said}");

    // A wrong expectation fails, so the pass above is the rules' doing.
    let tests = std::fs::read_to_string(rules_dir().join("scanwatch.rules.test.yml")).unwrap();
    let broken = tests.replacen("eval_time: 8m", "eval_time: 6m", 1);
    assert_ne!(broken, tests);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(rules_dir().join("scanwatch.rules.yml"), dir.path().join("scanwatch.rules.yml")).unwrap();
    std::fs::write(dir.path().join("broken.test.yml"), broken).unwrap();
    let out = Command::new(&tool).args(["test", "rules", "broken.test.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success(), "a ScanwatchDown at 6m (still pending) was expected and promtool agreed");
}

#[tokio::test]
async fn every_scanwatch_metric_the_rule_file_names_is_exported() {
    let rules = std::fs::read_to_string(rules_dir().join("scanwatch.rules.yml")).unwrap();
    let named: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("scanwatch_") && *w != "scanwatch_")
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    let app = serve_metrics().await;
    let (_, text) = get_metrics(&app.addr, "text/plain").await;
    for name in named {
        assert!(text.contains(&format!("# TYPE {name} ")), "the rules use {name}, which /metrics does not export");
    }
    app.shutdown.cancel();
}
