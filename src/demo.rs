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
use crate::poller::Poller;
use crate::simulator::{Scenario, Simulator};
use crate::store::Store;

/// The scenario the demo plays (also a worked example of the format).
pub const SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The demo's configuration; `{port}` is the simulator's. Short windows so that a minute shows everything.
const CONFIG: &str = r#"
[storage]
path = "{db}"
[schedule]
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

    let text = CONFIG.replace("{port}", &port.to_string()).replace("{db}", &db.display().to_string());
    let env = Environment::from_pairs([
        ("SCANWATCH_DEMO_AK", "HPUAEXAMPLEAK0000001"),
        ("SCANWATCH_DEMO_SK", "exampleSecretKey0000000000000000000000001"),
    ]);
    let config = Config::from_toml_str(&text, dir.path(), &env)?;
    let store = Store::open(&db).await?;
    let poller = Poller::new(&config, store.clone(), Arc::new(SystemClock::default())).await?;

    println!("scanwatch demo: simulator on http://127.0.0.1:{port}, database {}", db.display());
    println!(
        "polling {} series every {}; rule windows: no scan for 20s, running for 15s, total flat for 20s, 3 failed polls",
        poller.series().count(),
        crate::config::format_duration(config.schedule.interval)
    );
    println!("watching for {} …\n", crate::config::format_duration(duration));

    let mut tick = tokio::time::interval(config.schedule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::Instant::now() + duration;
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        for r in poller.poll_all(true).await? {
            for c in &r.changes {
                let what = match c.transition.event {
                    Some(e) => format!("{e:?}").to_uppercase(),
                    None => format!("{} -> {}", c.transition.from.as_str(), c.transition.to.as_str()),
                };
                let summary = match c.transition.event {
                    Some(crate::alerting::Event::Resolved) => format!("back to normal (was: {})", c.transition.summary),
                    _ => c.transition.summary.clone(),
                };
                println!(
                    "[{:>4.1}s] {what:<9} {:<15} {:<22} {summary}",
                    started.elapsed().as_secs_f64(),
                    c.rule.as_str(),
                    c.series.to_string(),
                );
            }
        }
    }

    println!("\nlast snapshots:");
    let q = crate::store::HistoryQuery { limit: Some(8), ..Default::default() };
    for row in store.history(&q).await? {
        let s = &row.snapshot;
        let what = match (&s.stats, &s.error_kind) {
            (Some(st), _) => format!("total {} running {}", st.total_num, st.running_num),
            (None, Some(k)) => format!("FAILED {k}: {}", s.error_message.as_deref().unwrap_or("")),
            (None, None) => "?".into(),
        };
        println!("  {}  {:<22} {what}", crate::output::rfc3339(s.polled_at), row.series.to_string());
    }
    let log = store.transitions(None, None).await?;
    let fired = log.iter().filter(|t| t.transition.event == Some(crate::alerting::Event::Firing)).count();
    let resolved = log.iter().filter(|t| t.transition.event == Some(crate::alerting::Event::Resolved)).count();
    println!("\nalert log: {} transitions, {fired} fired, {resolved} resolved", log.len());
    for t in &log {
        println!(
            "  {}  {:<15} {:<22} {} -> {}",
            crate::output::rfc3339(t.transition.at),
            t.rule.as_str(),
            t.series.to_string(),
            t.transition.from.as_str(),
            t.transition.to.as_str()
        );
    }
    println!(
        "\nsimulator answered {} calls. Try it yourself: see README.md, \"Rehearse with the simulator\".",
        sim.calls().len()
    );

    sim_stop.cancel();
    let _ = server.await;
    store.close().await;
    Ok(())
}
