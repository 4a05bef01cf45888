//! Crash safety of `scanwatch run`, the real binary: killed with SIGKILL again and again at varied points (after the
//! n-th delivery attempt, the n-th cycle, the n-th log line) while alerts fire and resolve and a flaky receiver
//! fails every other request. After every kill the database passes `PRAGMA integrity_check`; after a last clean run
//! every firing/resolved transition was delivered, and no alert event was delivered under two webhook-ids.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use scanwatch::store::Store;

/// The scenario keeps flipping until this scenario time (seconds), then every series stays healthy.
const FLIP_UNTIL: u64 = 40;
/// Kills made at most; the loop stops earlier when the scenario is about to settle.
const KILLS: usize = 15;

const ALIVE: &str = "total_num = 10\ntotal_per_hour = 3600.0\nrunning_num = 0\nlast_task_age = \"1s\"";

fn step(at: u64, body: &str) -> String {
    format!("[[series.steps]]\nat = \"{at}s\"\n{body}\n")
}

/// Two series that go stale and recover every 8s (out of phase) and one whose polls fail for 4s of every 8s.
fn flipping_scenario() -> String {
    let s = scenario_head();
    let head = |p: &str| format!("\n[[series]]\nproject_id = \"{}\"\ntask_type = \"cluster_scan\"\n", pid(p));
    let stale = |at: u64| format!("total_num = 1\nrunning_num = 0\nlast_task_at = \"{at}s\"");
    let (mut a, mut b, mut f) = (head("flip-a"), head("flip-b"), head("fail"));
    b += &step(0, ALIVE);
    f += &step(0, ALIVE);
    for t in (0..FLIP_UNTIL).step_by(8) {
        a += &step(t, &stale(t));
        a += &step(t + 4, ALIVE);
        b += &step(t + 4, &stale(t + 4));
        b += &step(t + 8, ALIVE);
        f += &step(t + 2, "fault = \"server_error\"\nstatus = 503");
        f += &step(t + 6, ALIVE);
    }
    s + &a + &b + &f
}

fn config(sim_url: &str, hook_url: &str) -> String {
    let only = |rule: &str| {
        ["no_recent_scan", "stuck_running", "total_stalled", "poll_failing"]
            .iter()
            .filter(|r| **r != rule)
            .map(|r| format!("[targets.rules.{r}]\nenabled = false\n"))
            .collect::<String>()
    };
    let mut c = String::from(
        "[schedule]\ninterval = \"1s\"\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n[rules.no_recent_scan]\nmax_age = \"2s\"\n\
         [rules.poll_failing]\nafter = 2\nfor = \"1m\"\n",
    );
    c += &aksk_account("acct", "SW_AK", "SW_SK");
    for (name, rule) in [("flip-a", "no_recent_scan"), ("flip-b", "no_recent_scan"), ("fail", "poll_failing")] {
        c += &target(name, "acct", sim_url, name, &["cluster_scan"], None);
        c += &only(rule);
    }
    c + &format!("[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook_url}/hook\"\n")
}

fn json_rows(sb: &Sandbox, args: &[&str]) -> Vec<serde_json::Value> {
    let run = sb.run(args);
    run.expect_code(0);
    parse_rows(&run.stdout)
}

fn assert_integrity(rt: &tokio::runtime::Runtime, sb: &Sandbox, when: &str) {
    let check = rt.block_on(async {
        let store = Store::open(&sb.db_path()).await.unwrap_or_else(|e| panic!("reopen after {when}: {e}"));
        let check = store.integrity_check().await;
        store.close().await;
        check
    });
    assert_eq!(check.unwrap_or_else(|e| panic!("integrity_check after {when}: {e}")), "ok", "after {when}");
}

#[test]
fn repeated_kill_9_loses_no_notification_and_never_corrupts_the_database() {
    let sb = Sandbox::new();
    let rx = Receiver::start();
    rx.answer(Answer::Alternate);
    let started = Instant::now();
    let sim = SimServer::start(&flipping_scenario());
    sb.write_config(&config(&sim.url, &rx.url));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");

    let mut kills = Vec::new();
    for i in 0..KILLS {
        if started.elapsed() > Duration::from_secs(FLIP_UNTIL - 10) {
            break;
        }
        while rx.arrivals.try_recv().is_ok() {}
        let (mut child, logs) = sb.spawn_logged(&["run"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let n = 1 + i % 3;
        let point = match i % 3 {
            0 => {
                for k in 0..n {
                    if rx.arrivals.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                        let _ = child.kill();
                        panic!(
                            "kill {i}: only {k} of {n} deliveries arrived; log:\n{}",
                            logs.try_iter().collect::<Vec<_>>().join("\n")
                        );
                    }
                }
                format!("receiver arrival {n}")
            }
            1 => {
                let seen = wait_for_line(&logs, "cycle done", n, deadline);
                assert!(seen.is_ok(), "kill {i}: no {n} cycles");
                format!("cycle {n}")
            }
            _ => {
                let k = 2 + i % 5;
                let seen = wait_for_line(&logs, "", k, deadline);
                assert!(seen.is_ok(), "kill {i}: fewer than {k} log lines");
                format!("log line {k}")
            }
        };
        assert!(child.try_wait().expect("try_wait").is_none(), "kill {i}: the daemon exited on its own before {point}");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        assert_integrity(&rt, &sb, &format!("kill {i} at {point}"));
        kills.push(point);
    }
    assert!(kills.len() >= 10, "only {} kills fitted in the scenario: {kills:?}", kills.len());
    assert!(rx.received().iter().any(|r| r.answer == Answer::Unavailable), "the flaky receiver failed some deliveries");

    // The last, clean run: the receiver is up; run until the scenario has settled and the outbox is empty.
    rx.answer(Answer::Ok);
    let (mut child, logs) = sb.spawn_logged(&["run"]);
    let deadline = started + Duration::from_secs(FLIP_UNTIL + 40);
    let mut log = Vec::new();
    loop {
        match wait_for_line(&logs, "cycle done", 1, deadline) {
            Ok(lines) => log.extend(lines),
            Err(lines) => {
                log.extend(lines);
                panic!("the clean run never settled ({:?}):\n{}", child.try_wait(), log.join("\n"));
            }
        }
        if started.elapsed() < Duration::from_secs(FLIP_UNTIL + 4) {
            continue;
        }
        let rows = json_rows(&sb, &["notifications", "--format", "json", "--limit", "100000"]);
        if rows.iter().all(|n| n["status"] == "delivered") {
            break;
        }
    }
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0, "SIGTERM exits 0");
    assert_integrity(&rt, &sb, "the clean run");

    let transitions = json_rows(&sb, &["transitions", "--format", "json"]);
    let notifications = json_rows(&sb, &["notifications", "--format", "json", "--limit", "100000"]);
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for t in &transitions {
        if matches!(t["event"].as_str(), Some("firing" | "resolved")) {
            *events.entry(t["fingerprint"].as_str().expect("fingerprint").to_string()).or_default() += 1;
        }
    }
    let rules: BTreeSet<&str> = transitions.iter().filter_map(|t| t["rule"].as_str()).collect();
    assert!(rules.contains("no_recent_scan") && rules.contains("poll_failing"), "both rules took part: {rules:?}");
    assert!(events.values().sum::<usize>() >= 8, "alerts fired and resolved several times: {transitions:#?}");

    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for n in &notifications {
        assert_eq!(n["status"], "delivered", "nothing left behind: {n:#}");
        for fp in n["fingerprints"].as_array().expect("fingerprints") {
            *delivered.entry(fp.as_str().expect("a fingerprint").to_string()).or_default() += 1;
        }
    }
    assert_eq!(
        delivered, events,
        "every firing/resolved transition has exactly one delivered notification (fingerprint -> count)"
    );

    // What the receiver accepted: each alert event under one webhook-id only (retries of one id are fine).
    let received = rx.received();
    let accepted_ids: BTreeSet<String> =
        received.iter().filter(|r| r.answer == Answer::Ok).filter_map(|r| r.webhook_id.clone()).collect();
    for n in &notifications {
        assert!(accepted_ids.contains(n["id"].as_str().unwrap_or_default()), "delivered means received: {n:#}");
    }
    // A message also lists its group's alerts that still fire (as Alertmanager does); an event is counted where it
    // was announced, the notification's `fingerprints`.
    let announced: BTreeMap<&str, BTreeSet<&str>> = notifications
        .iter()
        .map(|n| {
            let fps = n["fingerprints"].as_array().expect("fingerprints").iter().filter_map(|f| f.as_str()).collect();
            (n["id"].as_str().unwrap_or_default(), fps)
        })
        .collect();
    let mut ids_per_event: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for r in received.iter().filter(|r| r.answer == Answer::Ok) {
        let id = r.webhook_id.clone().expect("webhook-id on every request");
        let Some(fps) = announced.get(id.as_str()) else { continue };
        for a in r.body["alerts"].as_array().cloned().unwrap_or_default() {
            if !fps.contains(a["fingerprint"].as_str().unwrap_or_default()) {
                continue;
            }
            let key = (
                a["fingerprint"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
                a["startsAt"].as_str().unwrap_or_default().to_string(),
            );
            ids_per_event.entry(key).or_default().insert(id.clone());
        }
    }
    assert!(!ids_per_event.is_empty());
    for (event, ids) in &ids_per_event {
        assert_eq!(ids.len(), 1, "alert event {event:?} delivered under several webhook-ids: {ids:?}");
    }
}
