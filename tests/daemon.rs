//! `scanwatch run`, the real binary: against the simulator and a local webhook receiver every rule fires and
//! resolves as messages; SIGTERM exits 0 with nothing pending lost; SIGHUP with a broken config keeps it running on
//! the old config and names the key at fault.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Seconds-long versions of the four stories; each target has only its own rule on.
fn stories(sim_url: &str) -> (String, String) {
    let mut scenario = scenario_head();
    let step = |at: &str, body: &str| format!("[[series.steps]]\nat = \"{at}\"\n{body}\n");
    let head = |p: &str| format!("\n[[series]]\nproject_id = \"{}\"\ntask_type = \"cluster_scan\"\n", pid(p));
    let alive = "total_num = 10\ntotal_per_hour = 3600.0\nrunning_num = 0\nlast_task_age = \"1s\"";
    scenario +=
        &(head("stale") + &step("0s", "total_num = 1\nrunning_num = 0\nlast_task_at = \"0s\"") + &step("5s", alive));
    scenario +=
        &(head("stuck") + &step("0s", "total_num = 1\nrunning_num = 1\nlast_task_at = \"0s\"") + &step("5s", alive));
    scenario += &(head("stalled")
        + &step("0s", "total_num = 50\nrunning_num = 0\nlast_task_age = \"1s\"")
        + &step("5s", alive));
    scenario += &(head("failing")
        + &step("0s", alive)
        + &step("1s", "fault = \"server_error\"\nstatus = 503")
        + &step("4s", alive));
    let only = |rule: &str| {
        ["no_recent_scan", "stuck_running", "total_stalled", "poll_failing"]
            .iter()
            .filter(|r| **r != rule)
            .map(|r| format!("[targets.rules.{r}]\nenabled = false\n"))
            .collect::<String>()
    };
    let mut config = aksk_account("acct", "SW_AK", "SW_SK");
    for (name, rule) in [
        ("stale", "no_recent_scan"),
        ("stuck", "stuck_running"),
        ("stalled", "total_stalled"),
        ("failing", "poll_failing"),
    ] {
        config += &target(name, "acct", sim_url, name, &["cluster_scan"], None);
        config += &only(rule);
    }
    let rules = "[rules.no_recent_scan]\nmax_age = \"2s\"\n[rules.stuck_running]\nfor = \"2s\"\n\
                 [rules.total_stalled]\nwindow = \"2s\"\n[rules.poll_failing]\nafter = 2\nfor = \"1m\"\n";
    (scenario, format!("[schedule]\ninterval = \"1s\"\n{rules}{config}"))
}

/// The daemon with its log lines forwarded to a channel (so a test waits for a line, not for time).
fn start(sb: &Sandbox) -> (Child, mpsc::Receiver<String>) {
    sb.spawn_logged(&["run"])
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig}");
}

/// Waits for the child to exit, at most `limit`; kills it and fails otherwise.
fn wait_exit(mut child: Child, limit: Duration) -> i32 {
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code().unwrap_or(-1)));
    });
    match rx.recv_timeout(limit) {
        Ok(code) => code.expect("wait for scanwatch run"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("scanwatch run did not exit within {limit:?}");
        }
    }
}

#[test]
fn the_daemon_fires_and_resolves_every_rule_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    let rx = Receiver::start();
    let heartbeat = Receiver::start();
    let placeholder = "{SIM}";
    let (scenario, config) = stories(placeholder);
    let sim = SimServer::start(&scenario);
    let api = closed_port_url().replace("http://", "");
    sb.write_config(&format!(
        "[server]\nlisten = \"{api}\"\n[heartbeat]\nurl = \"{}/hb\"\n{}\n[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
        heartbeat.url,
        config.replace(placeholder, &sim.url),
        rx.url
    ));
    let (mut child, logs) = start(&sb);

    let want: BTreeSet<(String, String)> = ["no_recent_scan", "stuck_running", "total_stalled", "poll_failing"]
        .iter()
        .flat_map(|r| [(r.to_string(), "firing".to_string()), (r.to_string(), "resolved".to_string())])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.arrivals.recv_timeout(left).is_err() {
            let _ = child.kill();
            let lines: Vec<String> = logs.try_iter().collect();
            panic!("missing {:?}\nlog:\n{}", want.difference(&seen).collect::<Vec<_>>(), lines.join("\n"));
        }
        seen = rx
            .received()
            .iter()
            .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some((a["labels"]["alertname"].as_str()?.to_string(), a["status"].as_str()?.to_string())))
            .collect();
    }

    // The HTTP API of the running daemon: healthy, and its metrics carry what was polled and delivered.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (health, metrics) = rt.block_on(async {
        let get = |path: &str| scanwatch::tls::client().get(format!("http://{api}{path}")).send();
        let h = get("/healthz").await.unwrap();
        let m = get("/metrics").await.unwrap().text().await.unwrap();
        (h.status().as_u16(), m)
    });
    assert_eq!(health, 200);
    for family in [
        "scanwatch_hss_total_num",
        "scanwatch_poll_errors_total",
        "scanwatch_deliveries_total",
        "scanwatch_outbox_pending",
    ] {
        assert!(metrics.contains(family), "{family} in /metrics:\n{metrics}");
    }
    // Declared at 0 from the start (what never happened is still there for rate()), and the process itself.
    for line in [
        "scanwatch_deliveries_total{channel=\"hook\",outcome=\"expired\"} 0\n",
        "scanwatch_poll_errors_total{target=\"stale\",task_type=\"cluster_scan\",kind=\"auth\"} 0\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "scanwatch_build_info{version=",
    ] {
        assert!(metrics.contains(line), "{line:?} in /metrics:\n{metrics}");
    }

    // The heartbeat was pinged after good cycles, and with /fail after the cycles whose polls failed (503s).
    let pings: BTreeSet<String> = heartbeat.received().iter().map(|r| r.path.clone()).collect();
    assert!(pings.contains("/hb") && pings.contains("/hb/fail"), "{pings:?}");

    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0, "SIGTERM exits 0");
    let run = sb.run(&["notifications", "--format", "json"]);
    run.expect_code(0);
    let rows = parse_rows(&run.stdout);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|n| n["status"] == "delivered"), "nothing pending lost: {rows:#?}");
    assert_eq!(sb.run(&["history", "--format", "json", "--limit", "1"]).code, Some(0));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_names_the_key() {
    let sb = Sandbox::new();
    let sim = SimServer::start(
        &(scenario_head()
            + &series("p1", "cluster_scan", None, "total_num = 1\nrunning_num = 0\nlast_task_age = \"1s\"")),
    );
    let good = format!(
        "[schedule]\ninterval = \"1s\"\n{}{}",
        aksk_account("acct", "SW_AK", "SW_SK"),
        target("t1", "acct", &sim.url, "p1", &["cluster_scan"], None)
    );
    sb.write_config(&good);
    let (mut child, logs) = start(&sb);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with `{needle}`"),
            }
        }
    };
    wait_for("cycle done");

    sb.write_config(&good.replace("interval = \"1s\"", "interval = \"soon\""));
    signal(&child, "-HUP");
    let line = wait_for("reload refused");
    assert!(line.contains("schedule.interval"), "names the key: {line}");
    // Still polling on the old config.
    let before = sim.hss_calls().len();
    wait_for("cycle done");
    assert!(sim.hss_calls().len() > before, "kept polling");
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // A good config is taken.
    sb.write_config(&good.replace("t1", "renamed"));
    signal(&child, "-HUP");
    wait_for("configuration reloaded");
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0);
}

/// SIGTERM in the middle of a long cycle (12 series at 5 calls/min, spread over half the default interval) does
/// what README.md and the unit say: no new poll starts, the process exits 0 within seconds rather than when the
/// cycle would have ended (over two minutes later), and every poll that was made is stored whole.
#[test]
fn sigterm_mid_cycle_starts_no_new_poll_and_exits_at_once_with_whole_polls_stored() {
    let sb = Sandbox::new();
    let mut scenario = scenario_head().replace("calls_per_minute = 600", "calls_per_minute = 5");
    // The first series fails, so its poll announces itself in the log; the rest are healthy.
    scenario += &series("first", "cluster_scan", None, "fault = \"server_error\"\nstatus = 503");
    let mut config = String::from("[[accounts]]\nname = \"acct\"\nak_env = \"SW_AK\"\nsk_env = \"SW_SK\"\n");
    let sim_placeholder = "{SIM}";
    config += &target("first", "acct", sim_placeholder, "first", &["cluster_scan"], None);
    for i in 1..12 {
        let name = format!("s{i:02}");
        scenario += &series(&name, "cluster_scan", None, "total_num = 1\nrunning_num = 0\nlast_task_age = \"1h\"");
        config += &target(&name, "acct", sim_placeholder, &name, &["cluster_scan"], None);
    }
    let sim = SimServer::start(&scenario);
    sb.write_config(&config.replace(sim_placeholder, &sim.url));
    let (child, logs) = start(&sb);
    if let Err(lines) = wait_for_line(&logs, "poll failed", 1, Instant::now() + Duration::from_secs(30)) {
        panic!("the first poll never came:\n{}", lines.join("\n"));
    }
    let stopping = Instant::now();
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(15)), 0, "SIGTERM exits 0");
    assert!(stopping.elapsed() < Duration::from_secs(15), "it did not wait for the cycle to end");
    let lines: Vec<String> = logs.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("no new polls")), "says what it does:\n{}", lines.join("\n"));

    let calls = sim.hss_calls().len();
    assert!(calls < 12, "the cycle did not run on after SIGTERM: {calls} calls");
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), calls, "every call made is stored, and nothing else: {rows:#?}");
}
