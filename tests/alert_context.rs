//! The task behind an alert, end to end with the real binary: when `no_recent_scan` fires, scanwatch asks HSS which
//! task came last and which of its clusters failed and why, and the message carries it. Context is best effort: a
//! task API that refuses, or a budget already spent, never holds the alert back — it goes out at once, saying why
//! it has no context.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A series whose last task started at scenario time 0 and finished with a failed cluster.
fn stale_series(project: &str, extra: &str) -> String {
    series(project, "cluster_scan", None, &format!("total_num = 1\nrunning_num = 0\nlast_task_at = \"0s\"\n{extra}"))
        + &format!(
            r#"
  [[series.tasks]]
  task_id = "{project}-task-0001"
  task_name = "Nightly cluster scan"
  start = "0s"
  end = "10m"
  scan_types = ["cluster_vul"]
  success = 4
    [[series.tasks.clusters]]
    cluster_name = "{project}-cce"
    cluster_type = "cce"
    scan_status = "failed"
    scan_details = [{{ scan_type = "cluster_vul", status = "failed", failed_reason = "kube-apiserver unreachable" }}]
"#
        )
}

fn alert_for<'a>(messages: &'a [Received], target: &str) -> &'a Value {
    messages
        .iter()
        .flat_map(|m| m.body["alerts"].as_array().into_iter().flatten())
        .find(|a| a["labels"]["target"] == target && a["labels"]["alertname"] == "no_recent_scan")
        .unwrap_or_else(|| panic!("no no_recent_scan message for {target}: {messages:#?}"))
}

#[test]
fn a_firing_alert_names_the_task_behind_it_or_says_why_not_and_is_never_held_back() {
    let mut scenario = scenario_head();
    for p in ["ctx-a", "ctx-b", "ctx-c"] {
        scenario += &stale_series(p, "");
    }
    scenario += &stale_series("ctx-denied", "");
    scenario = scenario.replacen(
        &format!("project_id = \"{}\"\ntask_type = \"cluster_scan\"\n", pid("ctx-denied")),
        &format!("project_id = \"{}\"\ntask_type = \"cluster_scan\"\ntasks_fault = \"forbidden\"\n", pid("ctx-denied")),
        1,
    );
    let sim = SimServer::start(&scenario);
    sim.sim.advance(Duration::from_secs(2 * 3600));
    let rx = Receiver::start();
    let sb = Sandbox::new();
    // One account at HSS's own budgets: 5 calls a minute per API, per user and per IP.
    let account = aksk_account("acct", "SW_AK", "SW_SK").replace("calls_per_minute = 600", "calls_per_minute = 5");
    let mut config = format!(
        "[schedule]\nhost_calls_per_minute = 5\n{account}[rules.no_recent_scan]\nmax_age = \"1h\"\n\
         [[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
        rx.url
    );
    for p in ["ctx-a", "ctx-b", "ctx-c", "ctx-denied"] {
        config += &target(p, "acct", &sim.url, p, &["cluster_scan"], None);
    }
    sb.write_config(&config);

    sb.run(&["--clock-offset", "2h", "poll", "--deliver-timeout", "10s"]).expect_code(0);
    let messages = rx.received();

    // The first alerts carry the task and its failed cluster, with HSS's reason.
    let a = &alert_for(&messages, "ctx-a")["annotations"];
    assert_eq!(a["task_id"], "ctx-a-task-0001", "{a:#}");
    let failed = a["failed_resources"].as_str().unwrap_or_default();
    assert!(failed.contains("ctx-a-cce") && failed.contains("kube-apiserver unreachable"), "{a:#}");
    assert!(a.get("context_unavailable").is_none_or(Value::is_null), "{a:#}");

    // Each series' first poll also checks its latest finished task (scan_failures), and both share ListTasks' 5 a
    // minute: by the third series the budget is spent. That alert goes out all the same, saying why.
    let c = &alert_for(&messages, "ctx-c")["annotations"];
    let why = c["context_unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("budget"), "{c:#}");

    // A task API that refuses: the alert goes out, and says what HSS answered.
    let d = &alert_for(&messages, "ctx-denied")["annotations"];
    let why = d["context_unavailable"].as_str().unwrap_or_default();
    assert!(!why.is_empty() && d.get("task_id").is_none_or(Value::is_null), "{d:#}");

    // `alerts --format json` carries the same context (and /api/v1/alerts, which shares its rows).
    let alerts = parse_rows(&sb.run(&["--clock-offset", "2h", "alerts", "--format", "json"]).expect_code(0).stdout);
    let stale = alerts.iter().find(|a| a["target"] == "ctx-a" && a["rule"] == "no_recent_scan").unwrap();
    assert_eq!(stale["context"]["task"]["task_id"], "ctx-a-task-0001", "{stale:#}");
    assert_eq!(stale["context"]["failed"][0]["failed_reason"], "kube-apiserver unreachable", "{stale:#}");

    // Nothing waited for a budget (the third alert says the budget was spent instead), and nothing went over one.
    let over = scanwatch::simulator::audit::audit_with(&sim.sim.calls(), Duration::from_secs(60), 5, 5);
    assert_eq!((over.over_budget(), over.throttled(), over.ip_over_budget()), (0, 0, 0));
}
