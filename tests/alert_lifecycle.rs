//! The alert lifecycle end to end: the real binary polls the simulator hour by hour (both clocks advanced, no
//! sleeping) through stale → fresh, stuck → unstuck, stalled → increasing and failing → recovered, checking
//! `alerts --format json` after each poll; a restart repeats no transition; `replay` reproduces the live log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use scanwatch::simulator::{Scenario, Simulator};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "exampleSecretKey0000000000000000000000001";

const SCENARIO: &str = r#"
[simulator]
calls_per_minute = 0

[[credentials]]
ak = "HPUAEXAMPLEAK0000001"
sk = "exampleSecretKey0000000000000000000000001"

# stale -> fresh: the last task stays at 0s until 4h, then tasks start again
[[series]]
project_id = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 10
  total_per_hour = 1.0
  running_num = 0
  last_task_at = "0s"
  [[series.steps]]
  at = "4h"
  total_num = 20
  total_per_hour = 1.0
  running_num = 0
  last_task_age = "1m"

# stuck -> unstuck: one task runs from 0s and nothing new starts until 4h
[[series]]
project_id = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 5
  running_num = 1
  last_task_at = "0s"
  [[series.steps]]
  at = "4h"
  total_num = 6
  running_num = 0
  last_task_age = "1m"

# stalled -> increasing: the total stays at 50 until 4h, then grows by 2 an hour
[[series]]
project_id = "cccccccccccccccccccccccccccccccc"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 50
  running_num = 0
  last_task_age = "1m"
  [[series.steps]]
  at = "4h"
  total_num = 50
  total_per_hour = 2.0
  running_num = 0
  last_task_age = "1m"

# failing -> recovered: 503 from 1h to 3h
[[series]]
project_id = "dddddddddddddddddddddddddddddddd"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 7
  total_per_hour = 1.0
  running_num = 0
  last_task_age = "1m"
  [[series.steps]]
  at = "1h"
  fault = "server_error"
  status = 503
  [[series.steps]]
  at = "3h"
  total_num = 9
  total_per_hour = 1.0
  running_num = 0
  last_task_age = "1m"
"#;

/// One target per project, each with only the rule it exercises switched on.
fn config(dir: &Path, port: u16) -> PathBuf {
    let only = |rule: &str| {
        ["no_recent_scan", "stuck_running", "total_stalled", "poll_failing"]
            .iter()
            .filter(|r| **r != rule)
            .map(|r| format!("[targets.rules.{r}]\nenabled = false\n"))
            .collect::<String>()
    };
    let target = |name: &str, project: &str, rule: &str| {
        format!(
            "[[targets]]\nname = \"{name}\"\naccount = \"acct\"\nregion = \"cn-north-4\"\nendpoint = \"http://127.0.0.1:{port}\"\nproject_id = \"{project}\"\ntask_types = [\"cluster_scan\"]\n{}\n",
            only(rule)
        )
    };
    let text = format!(
        r#"[storage]
path = "{db}"
[schedule]
host_calls_per_minute = 1000000
interval = "1m"
[[accounts]]
name = "acct"
ak_env = "T_AK"
sk_env = "T_SK"
calls_per_minute = 600
[rules.no_recent_scan]
max_age = "150m"
[rules.stuck_running]
for = "2h"
[rules.total_stalled]
window = "2h"
[rules.poll_failing]
after = 2
for = "5h"
{a}{b}{c}{d}"#,
        db = dir.join("sw.db").display(),
        a = target("stale", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "no_recent_scan"),
        b = target("stuck", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "stuck_running"),
        c = target("stalled", "cccccccccccccccccccccccccccccccc", "total_stalled"),
        d = target("failing", "dddddddddddddddddddddddddddddddd", "poll_failing"),
    );
    let path = dir.join("scanwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn scanwatch(config: &Path, hours: u64, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_scanwatch"))
        .arg("--config")
        .arg(config)
        .arg("--clock-offset")
        .arg(format!("{hours}h"))
        .args(args)
        .env("T_AK", AK)
        .env("T_SK", SK)
        .env_remove("RUST_LOG")
        .output()
        .expect("run scanwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

fn json(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_array().expect("array").clone()
}

/// (target, rule, state) of every alert, sorted.
fn states(config: &Path, hours: u64) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = json(&scanwatch(config, hours, &["alerts", "--all", "--format", "json"]))
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            (s("target"), s("rule"), s("state"))
        })
        .collect();
    v.sort();
    v
}

fn st(target: &str, rule: &str, state: &str) -> (String, String, String) {
    (target.into(), rule.into(), state.into())
}

#[test]
fn every_rule_fires_and_resolves_across_restarts_and_replay_agrees() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Simulator::new(Scenario::from_toml_str(SCENARIO).unwrap());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    rt.spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port);

    // Hour by hour: what every alert should be after that hour's poll (each poll is a fresh process: a restart).
    let expected: Vec<Vec<(String, String, String)>> = vec![
        vec![],
        vec![],
        vec![
            st("failing", "poll_failing", "firing"),
            st("stalled", "total_stalled", "firing"),
            st("stuck", "stuck_running", "firing"),
        ],
        vec![
            st("failing", "poll_failing", "resolved"),
            st("stale", "no_recent_scan", "firing"),
            st("stalled", "total_stalled", "firing"),
            st("stuck", "stuck_running", "firing"),
        ],
        vec![
            st("failing", "poll_failing", "resolved"),
            st("stale", "no_recent_scan", "resolved"),
            st("stalled", "total_stalled", "firing"),
            st("stuck", "stuck_running", "resolved"),
        ],
        vec![
            st("failing", "poll_failing", "resolved"),
            st("stale", "no_recent_scan", "resolved"),
            st("stalled", "total_stalled", "resolved"),
            st("stuck", "stuck_running", "resolved"),
        ],
    ];
    for (hour, want) in expected.iter().enumerate() {
        let hour = hour as u64;
        if hour > 0 {
            sim.advance(Duration::from_secs(3600));
        }
        scanwatch(&cfg, hour, &["poll"]);
        assert_eq!(&states(&cfg, hour), want, "after the poll at {hour}h");
    }

    // A restart changes nothing: another process polls again at the same time, and the log, the states and the
    // outbox stay as they were (no duplicate "firing", no lost "resolved").
    let log = json(&scanwatch(&cfg, 5, &["transitions", "--format", "json"]));
    let before = states(&cfg, 5);
    let sent = json(&scanwatch(&cfg, 5, &["notifications", "--format", "json"])).len();
    let polls = json(&scanwatch(&cfg, 5, &["history", "--format", "json"])).len();
    scanwatch(&cfg, 5, &["poll"]);
    assert_eq!(json(&scanwatch(&cfg, 5, &["history", "--format", "json"])).len(), polls + 4, "it really polled");
    assert_eq!(states(&cfg, 5), before);
    assert_eq!(json(&scanwatch(&cfg, 5, &["transitions", "--format", "json"])), log);
    assert_eq!(json(&scanwatch(&cfg, 5, &["notifications", "--format", "json"])).len(), sent);
    // Each alert fired exactly once and resolved exactly once.
    let events: Vec<(String, String)> = log
        .iter()
        .filter_map(|t| Some((t["target"].as_str()?.to_string(), t["event"].as_str()?.to_string())))
        .collect();
    for target in ["stale", "stuck", "stalled", "failing"] {
        let of = |e: &str| events.iter().filter(|(t, ev)| t == target && ev == e).count();
        assert_eq!((of("firing"), of("resolved")), (1, 1), "{target}: {events:?}");
    }

    // Replay over the recorded history gives exactly the live transitions, and changes nothing.
    let replayed = json(&scanwatch(&cfg, 5, &["replay", "--since", "6h", "--format", "json"]));
    let key = |t: &Value| ["fingerprint", "rule", "at", "from", "to", "event"].map(|k| t[k].to_string()).join("|");
    let mut live: Vec<String> = log.iter().map(key).collect();
    let mut again: Vec<String> = replayed.iter().map(key).collect();
    live.sort();
    again.sort();
    assert_eq!(again, live);
    assert_eq!(json(&scanwatch(&cfg, 5, &["transitions", "--format", "json"])), log, "replay wrote nothing");
    stop.cancel();
}

#[test]
fn ack_and_silence_show_in_alerts_and_ack_clears_on_resolve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Simulator::new(Scenario::from_toml_str(SCENARIO).unwrap());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    rt.spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), port);
    for hour in 0..=2 {
        if hour > 0 {
            sim.advance(Duration::from_secs(3600));
        }
        scanwatch(&cfg, hour, &["poll"]);
    }
    let alerts = json(&scanwatch(&cfg, 2, &["alerts", "--format", "json"]));
    let failing = alerts.iter().find(|a| a["target"] == "failing").expect("poll_failing fires at 2h");
    let fp = failing["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(failing["acked"], false);

    let out = scanwatch(&cfg, 2, &["ack", &fp, "--comment", "looking"]);
    assert!(out.status.success());
    let out = scanwatch(&cfg, 2, &["silence", "add", "--match", "target=stal*", "--for", "1h", "--comment", "maint"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts = json(&scanwatch(&cfg, 2, &["alerts", "--format", "json"]));
    let by = |t: &str| alerts.iter().find(|a| a["target"] == t).unwrap().clone();
    assert_eq!(by("failing")["acked"], true);
    assert_eq!(by("stalled")["silenced"], true);
    assert_eq!(by("stuck")["silenced"], false);
    // The silence ends after its hour.
    let alerts = json(&scanwatch(&cfg, 4, &["alerts", "--format", "json"]));
    assert_eq!(alerts.iter().find(|a| a["target"] == "stalled").unwrap()["silenced"], false);

    // An unknown fingerprint is an error, not a silent success.
    assert!(!scanwatch(&cfg, 2, &["ack", "0000000000000000"]).status.success());

    // Resolving clears the ack.
    sim.advance(Duration::from_secs(3600));
    scanwatch(&cfg, 3, &["poll"]);
    let all = json(&scanwatch(&cfg, 3, &["alerts", "--all", "--format", "json"]));
    let failing = all.iter().find(|a| a["fingerprint"] == fp.as_str()).unwrap();
    assert_eq!((failing["state"].as_str(), failing["acked"].as_bool()), (Some("resolved"), Some(false)));
    stop.cancel();
}
