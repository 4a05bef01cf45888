//! `scanwatch demo`: the whole pipeline in one process, on the real code paths — the HSS simulator on an ephemeral
//! loopback port playing `scenarios/demo.toml`, signed HTTP polls, a temporary SQLite database, the rules and the
//! alert state machine — with a short schedule and short rule windows, so every rule fires and resolves within
//! about a minute. Then it prints the history and the alert log and exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{Config, Environment};
use crate::daemon::Daemon;
use crate::simulator::{Scenario, Simulator};

/// `println!` that ends the demo quietly when the reader has gone (`scanwatch demo | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// The scenario the demo plays (also a worked example of the format).
pub const SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The demo's configuration; `{port}` is the simulator's. Short windows so that a minute shows everything.
const CONFIG: &str = r#"
[storage]
path = "{db}"
[schedule]
host_calls_per_minute = 600      # the simulator allows it; real HSS allows 5 per client IP
interval = "2s"
timeout = "5s"
connect_timeout = "2s"

[[accounts]]
name = "demo"
ak_env = "SCANWATCH_DEMO_AK"
sk_env = "SCANWATCH_DEMO_SK"
calls_per_minute = 600          # the simulator allows it; real HSS allows 5

[[targets]]
name = "prod"
account = "demo"
region = "cn-north-4"
endpoint = "http://127.0.0.1:{port}"
project_id = "0123456789abcdef0123456789abcdef"
labels = { env = "prod" }

[[targets]]
name = "staging"
account = "demo"
region = "cn-north-4"
endpoint = "http://127.0.0.1:{port}"
project_id = "fedcba9876543210fedcba9876543210"
labels = { env = "staging" }

[[channels]]
name = "demo-receiver"
kind = "webhook"
url = "http://127.0.0.1:{hook}/alerts"

[rules.no_recent_scan]
max_age = "20s"
[rules.stuck_running]
for = "15s"
[rules.total_stalled]
window = "20s"
[rules.poll_failing]
after = 3
for = "30s"
"#;

/// Runs the demo for `duration` and prints what happened. Returns an error only when the machinery fails.
pub async fn run(duration: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let db = dir.path().join("demo.db");

    let scenario = Scenario::from_toml_str(SCENARIO).context("the built-in demo scenario")?;
    let sim = Simulator::new(scenario);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let port = listener.local_addr()?.port();
    let sim_stop = CancellationToken::new();
    let server = tokio::spawn({
        let (sim, stop) = (sim.clone(), sim_stop.clone());
        async move { sim.serve(listener, stop).await }
    });

    // The local webhook receiver: prints every message it gets, as an on-call chat would show it.
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the receiver")?;
    let hook_port = hook_listener.local_addr()?.port();
    let started = std::time::Instant::now();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = {
        let received = received.clone();
        axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                print_message(started, &body);
                async { "ok" }
            }),
        )
    };
    let hook_stop = CancellationToken::new();
    let hook_server = tokio::spawn({
        let stop = hook_stop.clone();
        async move { axum::serve(hook_listener, receiver).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    let text = CONFIG
        .replace("{port}", &port.to_string())
        .replace("{hook}", &hook_port.to_string())
        .replace("{db}", &db.display().to_string());
    let env = Environment::from_pairs([
        ("SCANWATCH_DEMO_AK", "HPUAEXAMPLEAK0000001"),
        ("SCANWATCH_DEMO_SK", "exampleSecretKey0000000000000000000000001"),
    ]);
    let config_path = dir.path().join("demo.toml");
    std::fs::write(&config_path, &text)?;
    let config = Config::load_with(&config_path, &env)?;
    let interval = config.schedule.interval;
    let mut daemon = Daemon::start(&config_path, config, Arc::new(SystemClock::default())).await?;
    let store = daemon.store().clone();

    say!("scanwatch demo: simulator on http://127.0.0.1:{port}, webhook receiver on http://127.0.0.1:{hook_port}");
    say!(
        "polling 4 series every {}; rule windows: no scan for 20s, running for 15s, total flat for 20s, 3 failed polls",
        crate::config::format_duration(interval)
    );
    say!("watching for {}; messages as the receiver gets them:\n", crate::config::format_duration(duration));

    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `--duration 300000y` means until Ctrl-C, not a panic.
    let deadline = tokio::time::Instant::now().checked_add(duration);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        daemon.run_cycle().await?;
    }

    say!("\nlast snapshots:");
    let q = crate::store::HistoryQuery { limit: Some(8), ..Default::default() };
    for row in store.history(&q).await? {
        let s = &row.snapshot;
        let what = match (&s.stats, &s.error_kind) {
            (Some(st), _) => format!("total {} running {}", st.total_num, st.running_num),
            (None, Some(k)) => format!("FAILED {k}: {}", s.error_message.as_deref().unwrap_or("")),
            (None, None) => "?".into(),
        };
        say!("  {}  {:<22} {what}", crate::output::rfc3339(s.polled_at), row.series.to_string());
    }
    let log = store.transitions(None, None).await?;
    let fired = log.iter().filter(|t| t.transition.event == Some(crate::alerting::Event::Firing)).count();
    let resolved = log.iter().filter(|t| t.transition.event == Some(crate::alerting::Event::Resolved)).count();
    say!("\nalert log: {} transitions, {fired} fired, {resolved} resolved", log.len());
    for t in &log {
        say!(
            "  {}  {:<15} {:<22} {} -> {}",
            crate::output::rfc3339(t.transition.at),
            t.rule.as_str(),
            t.series.to_string(),
            t.transition.from.as_str(),
            t.transition.to.as_str()
        );
    }
    let pending = store.pending_count().await?;
    say!(
        "\nthe simulator answered {} calls; the receiver got {} messages; {pending} notifications pending.",
        sim.calls().len(),
        received.load(std::sync::atomic::Ordering::Relaxed)
    );
    say!("Rehearse your own setup against the simulator: README.md, \"Rehearse with the simulator\".");

    hook_stop.cancel();
    let _ = hook_server.await;
    sim_stop.cancel();
    let _ = server.await;
    store.close().await;
    Ok(())
}

/// One received Alertmanager-style message, one line per alert.
fn print_message(started: std::time::Instant, body: &serde_json::Value) {
    let at = started.elapsed().as_secs_f64();
    for a in body["alerts"].as_array().into_iter().flatten() {
        let status = a["status"].as_str().unwrap_or("?").to_uppercase();
        let rule = a["labels"]["alertname"].as_str().unwrap_or("?");
        let series = format!(
            "{}/{}",
            a["labels"]["target"].as_str().unwrap_or("?"),
            a["labels"]["task_type"].as_str().unwrap_or("?")
        );
        let summary = a["annotations"]["summary"].as_str().unwrap_or("");
        let summary =
            if status == "RESOLVED" { format!("back to normal (was: {summary})") } else { summary.to_string() };
        say!("[{at:>4.1}s] {status:<9} {rule:<15} {series:<22} {summary}");
        // The task behind it, as HSS told it (ListTasks / ListTaskResources): which one, which clusters, why.
        if status != "RESOLVED"
            && let Some(task) = a["annotations"]["task_name"].as_str()
        {
            let id = a["annotations"]["task_id"].as_str().unwrap_or("?");
            say!("{:58}task: {task} ({id})", "");
            if let Some(failed) = a["annotations"]["failed_resources"].as_str() {
                say!("{:58}failed: {failed}", "");
            }
        }
    }
}
