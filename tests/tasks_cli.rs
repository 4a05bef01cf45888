//! `scanwatch tasks`: a target's scan tasks and one task's resources, live from the simulator over signed POSTs,
//! with the JSON field names of DESIGN.md.

mod common;

use common::*;
use serde_json::Value;

const FINISHED: &str = "3f1c2a9e-0b7d-4c1e-9a55-6d2f0c8e1a01";
const RUNNING: &str = "3f1c2a9e-0b7d-4c1e-9a55-6d2f0c8e1a02";

fn scenario() -> String {
    scenario_head()
        + &series("tasks", "cluster_scan", None, "total_num = 2\nrunning_num = 1\nlast_task_age = \"5m\"")
        + &format!(
            r#"
  [[series.tasks]]
  task_id = "{FINISHED}"
  task_name = "Nightly cluster scan"
  trigger_type = "schedule"
  start = "0s"
  end = "10m"
  estimated_minutes = 10
  scan_types = ["cluster_vul"]
  success = 3
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-1"
    cluster_id = "8c4b1f0e-5d3a-11ef-9e2b-0255ac100031"
    cluster_type = "cce"
    scan_status = "failed"
    scan_details = [{{ scan_type = "cluster_vul", status = "failed", failed_reason = "kube-apiserver unreachable: connection timed out" }}]
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-2"
    scan_status = "success"
  [[series.tasks]]
  task_id = "{RUNNING}"
  task_name = "Manual rescan"
  trigger_type = "manual"
  start = "30m"
  estimated_minutes = 20
  scan_types = ["cluster_vul"]
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-1"
    scan_status = "scanning"
"#
        )
}

fn json(run: &Run) -> Vec<Value> {
    run.expect_code(0);
    serde_json::from_str::<Value>(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {run}"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn tasks_lists_a_targets_tasks_newest_first_and_a_tasks_failed_clusters_with_their_reasons() {
    let sim = SimServer::start(&scenario());
    sim.sim.advance(std::time::Duration::from_secs(3600));
    let sb = Sandbox::new();
    sb.write_config(
        &(aksk_account("acct", "SW_AK", "SW_SK") + &target("t", "acct", &sim.url, "tasks", &["cluster_scan"], None)),
    );
    // The simulator is an hour on: scanwatch follows it, or its signatures would be an hour stale.
    let run = |args: &[&str]| sb.run(&[&["--clock-offset", "1h"], args].concat());

    let tasks = json(&run(&["tasks", "--target", "t", "--format", "json"]));
    let ids: Vec<&str> = tasks.iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [RUNNING, FINISHED], "newest first");
    let names: std::collections::BTreeSet<String> = tasks[1].as_object().unwrap().keys().cloned().collect();
    let want: std::collections::BTreeSet<String> = "task_id task_name task_type trigger_type task_status start_time end_time estimated_minutes scanning success failed"
        .split(' ')
        .map(String::from)
        .collect();
    assert_eq!(names, want);
    let finished = &tasks[1];
    assert_eq!(
        (
            finished["task_status"].as_str(),
            finished["trigger_type"].as_str(),
            finished["failed"].as_u64(),
            finished["success"].as_u64()
        ),
        (Some("finished"), Some("schedule"), Some(1), Some(3))
    );
    assert!(finished["end_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{finished}");
    assert_eq!((tasks[0]["task_status"].as_str(), tasks[0]["end_time"].as_str()), (Some("running"), None));

    let only = json(&run(&["tasks", "--target", "t", "--status", "finished", "--format", "json"]));
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["task_id"], FINISHED);

    let resources = json(&run(&["tasks", "--target", "t", "--task", FINISHED, "--format", "json"]));
    let failed = resources.iter().find(|r| r["scan_status"] == "failed").unwrap_or_else(|| panic!("{resources:#?}"));
    assert_eq!(failed["name"], "prod-cce-1");
    assert_eq!(failed["kind"], "cce");
    assert_eq!(failed["failed_reason"], "kube-apiserver unreachable: connection timed out");

    // The table names the columns; an unknown target or task says so.
    let table = run(&["tasks", "--target", "t"]);
    table.expect_code(0);
    assert!(table.stdout.starts_with("TASK_ID") && table.stdout.contains("Nightly cluster scan"), "{table}");
    let nope = run(&["tasks", "--target", "nope"]);
    nope.expect_code(1);
    assert!(nope.stderr.contains("no target named `nope`"), "{nope}");
    let unknown = run(&["tasks", "--target", "t", "--task", "no-such-task", "--format", "json"]);
    unknown.expect_code(1);
    assert!(unknown.stderr.contains("HSS.0011"), "{unknown}");
    // Every call was a signed POST the simulator accepted (or refused for the unknown task only).
    let task_calls: Vec<_> = sim.sim.calls().into_iter().filter(|c| c.method == "POST").collect();
    assert!(task_calls.len() >= 5 && task_calls.iter().all(|c| c.status != Some(401)), "{task_calls:#?}");
}
