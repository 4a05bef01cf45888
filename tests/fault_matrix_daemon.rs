//! Every HSS fault at once under `scanwatch run`, the real binary, for a few cycles: each faulty series (on an
//! account of its own, so credential backoff and Retry-After hold back nothing else) keeps being stored as classified
//! failed snapshots, the healthy series beside them get an OK snapshot every cycle, nothing panics, and SIGTERM
//! exits 0.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// One faulty series: its scenario step and what each of its snapshots must say.
struct Fault {
    name: &'static str,
    step: &'static str,
    kind: &'static str,
    http_status: Option<u64>,
    /// Rejected credentials back the account off: later cycles may skip it, so one snapshot is enough.
    backs_off: bool,
}

const fn fault(name: &'static str, step: &'static str, kind: &'static str, http_status: Option<u64>) -> Fault {
    Fault { name, step, kind, http_status, backs_off: false }
}

fn faults() -> Vec<Fault> {
    vec![
        Fault { backs_off: true, ..fault("unauthorized", "fault = \"unauthorized\"", "auth", Some(401)) },
        Fault { backs_off: true, ..fault("forbidden", "fault = \"forbidden\"", "forbidden", Some(403)) },
        fault("not-found", "fault = \"not_found\"", "hss_error", Some(404)),
        fault("throttled-retry-after", "fault = \"throttled\"\nretry_after = 1", "throttled", Some(429)),
        fault("throttled", "fault = \"throttled\"", "throttled", Some(429)),
        fault("e500", "fault = \"server_error\"\nstatus = 500", "server", Some(500)),
        fault("e502", "fault = \"server_error\"\nstatus = 502\nbody = \"json\"", "server", Some(502)),
        fault("e503", "fault = \"server_error\"\nstatus = 503", "server", Some(503)),
        fault("reset", "fault = \"reset\"", "network", None),
        fault("slow", "fault = \"slow\"\ndelay = \"20s\"\ntotal_num = 1\nrunning_num = 0", "timeout", None),
        fault("non-json", "fault = \"malformed\"", "bad_response", Some(200)),
        fault("truncated", "fault = \"truncated\"\ntotal_num = 17\nrunning_num = 1", "bad_response", Some(200)),
        fault(
            "oversized",
            "fault = \"oversized\"\nbytes = 65536\ntotal_num = 17\nrunning_num = 1",
            "bad_response",
            Some(200),
        ),
        fault("negative", "fault = \"negative\"\ntotal_num = 17\nrunning_num = 1", "bad_response", Some(200)),
        fault("float", "fault = \"float\"\ntotal_num = 17\nrunning_num = 1", "bad_response", Some(200)),
        fault("missing-field", "fault = \"missing_field\"\ntotal_num = 17\nrunning_num = 1", "bad_response", Some(200)),
    ]
}

const HEALTHY: &str = "total_num = 5\nrunning_num = 0\nlast_task_age = \"1m\"";
const CYCLES: usize = 3;

#[test]
fn every_fault_at_once_is_classified_each_cycle_while_healthy_series_keep_polling() {
    let faults = faults();
    let mut sb = Sandbox::new();
    let mut scenario = scenario_head();
    let mut config = String::from(
        "[schedule]\ninterval = \"2s\"\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\nmax_response_bytes = 4096\n",
    );
    for (i, f) in faults.iter().enumerate() {
        let (ak, sk) = (format!("HPUAFAULTAK{i:09}"), format!("faultSecretKey{i:026}"));
        scenario += &format!("\n[[credentials]]\nak = \"{ak}\"\nsk = \"{sk}\"\n");
        scenario += &series(f.name, "cluster_scan", None, f.step);
        let (ak_env, sk_env) = (format!("SW_F{i}_AK"), format!("SW_F{i}_SK"));
        sb.set_env(&ak_env, &ak);
        sb.set_env(&sk_env, &sk);
        config += &aksk_account(f.name, &ak_env, &sk_env);
    }
    // Healthy series: beside a fault on its account (e503's iac_scan), on an AK/SK account and on a token account.
    scenario += &series("e503", "iac_scan", None, HEALTHY);
    scenario += &series("healthy-aksk", "cluster_scan", None, HEALTHY);
    scenario += &series("healthy-token", "iac_scan", None, HEALTHY);
    let sim = SimServer::start(&scenario);
    for f in &faults {
        let types: &[&str] = if f.name == "e503" { &["cluster_scan", "iac_scan"] } else { &["cluster_scan"] };
        config += &target(f.name, f.name, &sim.url, f.name, types, None);
    }
    config += &aksk_account("main", "SW_AK", "SW_SK");
    config += "\n[[accounts]]\nname = \"tok\"\nauth = \"token\"\ntoken_env = \"SW_TOKEN\"\ncalls_per_minute = 600\n";
    config += &target("healthy-aksk", "main", &sim.url, "healthy-aksk", &["cluster_scan"], None);
    config += &target("healthy-token", "tok", &sim.url, "healthy-token", &["iac_scan"], None);
    sb.write_config(&config);

    let (mut child, logs) = sb.spawn_logged(&["run"]);
    // A 429 without Retry-After pauses its account for 30s, and a cycle waits for every account: a cycle after it
    // takes about 30s.
    let deadline = Instant::now() + Duration::from_secs(120);
    let lines = wait_for_line(&logs, "cycle done", CYCLES, deadline).unwrap_or_else(|lines| {
        let _ = child.kill();
        panic!("no {CYCLES} cycles within two minutes:\n{}", lines.join("\n"));
    });
    assert!(child.try_wait().expect("try_wait").is_none(), "still running");
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0, "SIGTERM exits 0");
    let rest: Vec<String> = logs.try_iter().collect();
    let log = [lines, rest].concat().join("\n");
    assert!(!log.contains("panicked"), "no panic:\n{log}");

    let rows = sb.history(&["--limit", "10000"]);
    for f in &faults {
        let mine: Vec<_> = rows.iter().filter(|r| r["target"] == f.name && r["task_type"] == "cluster_scan").collect();
        let least = if f.backs_off { 1 } else { CYCLES };
        assert!(mine.len() >= least, "{}: {} snapshots, expected at least {least}: {mine:#?}", f.name, mine.len());
        for r in &mine {
            assert_history_fields(r);
            assert_eq!(r["ok"], false, "{}: {r:#}", f.name);
            assert_eq!(r["error_kind"], f.kind, "{}: {r:#}", f.name);
            // A series recorded as not polled (the account backing off after a 401/403) has no HTTP status.
            if r["error_code"] != "SCANWATCH.BACKOFF" {
                assert_eq!(r["http_status"].as_u64(), f.http_status, "{}: {r:#}", f.name);
            }
            assert!(!r["error_message"].as_str().unwrap_or_default().is_empty(), "{}: says why: {r:#}", f.name);
        }
    }
    for (name, task_type) in [("e503", "iac_scan"), ("healthy-aksk", "cluster_scan"), ("healthy-token", "iac_scan")] {
        let mine: Vec<_> = rows.iter().filter(|r| r["target"] == name && r["task_type"] == task_type).collect();
        assert!(mine.len() >= CYCLES, "{name}/{task_type} polled every cycle: {mine:#?}");
        assert!(mine.iter().all(|r| r["ok"] == true && r["total_num"] == 5), "{name}/{task_type}: {mine:#?}");
    }
    assert_no_secret(&log, "the daemon's log");
}
