//! `scan_failures` end to end with the real binary: the simulator's task finishes with a failed cluster, the poll
//! that sees a task finish checks it over the task APIs, the alert fires naming the cluster and HSS's reason in the
//! message, and a later clean task resolves it. Checks cost calls only when something changed.

mod common;

use std::time::Duration;

use common::*;

fn scenario() -> String {
    scenario_head()
        + &series("sf", "cluster_scan", None, "total_num = 0\nrunning_num = 1\nlast_task_at = \"0s\"")
        + r#"
  [[series.steps]]
  at = "10m"
  total_num = 1
  running_num = 0
  last_task_at = "0s"
  [[series.steps]]
  at = "40m"
  total_num = 2
  running_num = 0
  last_task_at = "30m"
  [[series.tasks]]
  task_id = "3f1c2a9e-0b7d-4c1e-9a55-6d2f0c8e1a01"
  task_name = "Nightly cluster scan"
  start = "0s"
  end = "10m"
  scan_types = ["cluster_vul"]
  success = 2
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-1"
    cluster_type = "cce"
    scan_status = "failed"
    scan_details = [{ scan_type = "cluster_vul", status = "failed", failed_reason = "kube-apiserver unreachable: connection timed out" }]
  [[series.tasks]]
  task_id = "3f1c2a9e-0b7d-4c1e-9a55-6d2f0c8e1a02"
  task_name = "Rescan"
  start = "30m"
  end = "35m"
  scan_types = ["cluster_vul"]
  success = 3
"#
}

#[test]
fn scan_failures_fires_naming_the_failed_cluster_and_resolves_when_a_clean_task_finishes() {
    let sim = SimServer::start(&scenario());
    let rx = Receiver::start();
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}{}[rules.no_recent_scan]\nenabled = false\n[rules.total_stalled]\nenabled = false\n\
         [rules.stuck_running]\nenabled = false\n[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
        aksk_account("acct", "SW_AK", "SW_SK"),
        target("t", "acct", &sim.url, "sf", &["cluster_scan"], None),
        rx.url
    ));
    let task_calls = || sim.sim.calls().into_iter().filter(|c| c.method == "POST").count();
    let poll_at = |minutes: u64| {
        let offset = format!("{minutes}m");
        sb.run(&["--clock-offset", &offset, "poll", "--deliver-timeout", "5s"]).expect_code(0);
    };

    // The first poll checks: nothing has finished yet.
    poll_at(0);
    assert_eq!(task_calls(), 1, "a series' first poll checks its latest finished task");
    poll_at(0);
    assert_eq!(
        task_calls(),
        1,
        "nothing changed: no call, though this is a new process (it judges from the stored history)"
    );

    // The task finishes (running drops): the check sees the failed cluster and the alert fires.
    sim.sim.advance(Duration::from_secs(15 * 60));
    poll_at(15);
    let alerts = parse_rows(&sb.run(&["--clock-offset", "15m", "alerts", "--format", "json"]).expect_code(0).stdout);
    let fired = alerts.iter().find(|a| a["rule"] == "scan_failures").unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(fired["state"], "firing");
    assert_eq!(fired["summary"], "the latest finished cluster scan task failed on 1 of 3 clusters");
    let sent = rx.received();
    let message = sent.last().expect("the firing was delivered");
    let alert = message.body["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["alertname"] == "scan_failures"))
        .unwrap_or_else(|| panic!("{:#}", message.body));
    let annotations = &alert["annotations"];
    assert_eq!(annotations["task_id"], "3f1c2a9e-0b7d-4c1e-9a55-6d2f0c8e1a01");
    let failed = annotations["failed_resources"].as_str().unwrap_or_default();
    assert!(failed.contains("prod-cce-1") && failed.contains("kube-apiserver unreachable"), "{annotations:#}");
    assert!(message.body["message"].as_str().unwrap_or_default().contains("prod-cce-1"), "{:#}", message.body);

    // A clean task finishes (the total grows): resolved.
    sim.sim.advance(Duration::from_secs(30 * 60));
    poll_at(45);
    let all =
        parse_rows(&sb.run(&["--clock-offset", "45m", "alerts", "--all", "--format", "json"]).expect_code(0).stdout);
    let resolved = all.iter().find(|a| a["rule"] == "scan_failures").unwrap();
    assert_eq!(resolved["state"], "resolved", "{all:#?}");
    assert!(rx.received().iter().any(|r| r.body["status"] == "resolved"), "the resolve was delivered");

    // What the checks found is stored with the snapshots: replay gives the same story.
    let replayed = parse_rows(
        &sb.run(&["--clock-offset", "45m", "replay", "--since", "1h", "--format", "json"]).expect_code(0).stdout,
    );
    let events: Vec<&str> =
        replayed.iter().filter(|t| t["rule"] == "scan_failures").filter_map(|t| t["event"].as_str()).collect();
    assert_eq!(events, ["firing", "resolved"], "{replayed:#?}");
}
