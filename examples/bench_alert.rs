//! Figure 7 of BENCHMARKS.md: alert latency, from the start of the `daemon::Daemon::run_cycle` whose poll breaches
//! (`poll_failing` with `after = 1`, `pending_for = 0s`) to an in-process axum webhook receiver holding the message.
//! Baseline: the same two HTTP exchanges bare — one signed GET to the simulator, one POST to the receiver.
//!
//! `cargo run --release --example bench_alert -- [RUNS]` (default 20); each run is a fresh daemon and database.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scanwatch::clock::SystemClock;
use scanwatch::config::{Config, Environment};
use scanwatch::daemon::Daemon;
use scanwatch::hss::signer::{self, SignableRequest};
use scanwatch::simulator::{Scenario, Simulator};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "exampleSecretKey0000000000000000000000001";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";

const SCENARIO: &str = r#"
[simulator]
calls_per_minute = 0
[[credentials]]
ak = "HPUAEXAMPLEAK0000001"
sk = "exampleSecretKey0000000000000000000000001"
[[series]]
project_id = "0123456789abcdef0123456789abcdef"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  fault = "server_error"
  status = 503
"#;

const CONFIG: &str = r#"
[storage]
path = "{db}"
[schedule]
host_calls_per_minute = 1000000
interval = "1m"
[[accounts]]
name = "bench"
ak_env = "BENCH_AK"
sk_env = "BENCH_SK"
calls_per_minute = 100000
[[targets]]
name = "prod"
account = "bench"
region = "cn-north-4"
endpoint = "http://127.0.0.1:{port}"
project_id = "0123456789abcdef0123456789abcdef"
task_types = ["cluster_scan"]
[[channels]]
name = "receiver"
kind = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
[alerting]
pending_for = "0s"
[rules.poll_failing]
after = 1
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let sim = Simulator::new(Scenario::from_toml_str(SCENARIO)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_port = hook.local_addr()?.port();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |_body: bytes::Bytes| {
            let _ = tx.send(Instant::now());
            async { "ok" }
        }),
    );
    tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(hook, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    let http = scanwatch::tls::client();
    let (mut base, mut full) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // Baseline: the breaching GET, then the webhook POST, nothing in between.
        let t0 = Instant::now();
        let path = format!("/v5/{PROJECT}/common/task-statistics");
        let query = vec![("task_type".to_string(), "cluster_scan".to_string())];
        let headers = vec![
            (signer::HEADER_SDK_DATE.to_string(), chrono::Utc::now().format(signer::SDK_DATE_FORMAT).to_string()),
            ("Host".to_string(), format!("127.0.0.1:{port}")),
        ];
        let req = SignableRequest { method: "GET", path: &path, query: &query, headers: &headers, body: b"" };
        let sig = signer::sign(&req, AK, SK)?;
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}?task_type=cluster_scan"))
            .header(signer::HEADER_SDK_DATE, &headers[0].1)
            .header("Authorization", sig.authorization)
            .send()
            .await?;
        if r.status().as_u16() != 503 {
            bail!("the scenario should fail the poll, got {}", r.status());
        }
        http.post(format!("http://127.0.0.1:{hook_port}/alerts")).body("{\"alerts\":[]}").send().await?;
        let got = rx.recv().await.context("receiver")?;
        base.push(got - t0);

        // scanwatch: a fresh daemon whose first cycle breaches, fires and delivers.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.toml");
        let text = CONFIG
            .replace("{db}", &dir.path().join("bench.db").display().to_string())
            .replace("{port}", &port.to_string())
            .replace("{hook}", &hook_port.to_string());
        std::fs::write(&path, text)?;
        let env = Environment::from_pairs([("BENCH_AK", AK), ("BENCH_SK", SK)]);
        let config = Config::load_with(&path, &env).map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        let mut daemon = Daemon::start(&path, config, Arc::new(SystemClock::default())).await?;
        let t0 = Instant::now();
        let report = daemon.run_cycle().await?;
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?.context("receiver")?;
        full.push(got - t0);
        if report.transitions == 0 {
            bail!("the cycle should have fired poll_failing");
        }
        daemon.store().close().await;
    }
    base.sort();
    full.sort();
    println!("figure 7: alert latency over {runs} runs (breaching poll -> webhook receiver has the message)");
    for (name, t) in [("baseline (bare GET + POST)", &base), ("Daemon::run_cycle", &full)] {
        println!(
            "  {name:<28} p50 {:>7.2} ms  p99/max {:>7.2} ms",
            support::percentile_ms(t, 50.0),
            support::percentile_ms(t, 100.0)
        );
    }
    stop.cancel();
    Ok(())
}
