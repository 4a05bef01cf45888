//! Alertmanager push against the REAL Alertmanager (Debian's `prometheus-alertmanager`), started by each test on a
//! free loopback port with a null receiver: the real binary polls the simulator, an alert fires and Alertmanager
//! holds it active with scanwatch's labels, annotations and generatorURL; each later poll re-sends it with `endsAt`
//! further ahead; the resolve ends it. With one member of a cluster down, the other still gets every alert.
//!
//! A series recovers by pointing its target at a second, healthy simulator (the simulator checks signing dates against
//! its own clock, and Alertmanager compares `endsAt` with the real one, so neither clock is moved).
//!
//! Under `CI=true` a missing `prometheus-alertmanager` fails these tests (`.ci/run` installs it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;

/// One Alertmanager process with its own storage and config, killed on drop.
struct Alertmanager {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
    dir: tempfile::TempDir,
}

const NULL_RECEIVER: &str = "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n";

impl Alertmanager {
    /// Starts Alertmanager on a free loopback port (gossip off) and waits until `/-/ready` answers 200.
    fn start(bin: &Path) -> Alertmanager {
        Alertmanager::start_with(bin, NULL_RECEIVER)
    }

    /// [`Alertmanager::start`] with the configuration `yml`.
    fn start_with(bin: &Path, yml: &str) -> Alertmanager {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("alertmanager.yml"), yml).unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
            let child = Command::new(bin)
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address=")
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus-alertmanager");
            let mut am = Alertmanager { child, addr, dir };
            if am.wait_ready() {
                return am;
            }
            // Most likely the port was taken between choosing and binding it: try another.
            eprintln!("alertmanager did not start:\n{}", am.log());
        }
        panic!("prometheus-alertmanager did not become ready in three tries");
    }

    /// Polls `/-/ready` (at most 200 times, 50 ms apart); false if the process exits or never gets ready.
    fn wait_ready(&mut self) -> bool {
        for _ in 0..200 {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if http_get(&self.addr, "/-/ready").is_some_and(|(status, _)| status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds as active (resolved ones are not listed).
    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(&self.addr, "/api/v2/alerts").expect("Alertmanager answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().clone()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.0 GET (the server closes the connection, so the body is whatever follows the headers).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

fn alertmanager_bin() -> Option<PathBuf> {
    installed("prometheus-alertmanager", "scanwatch's Alertmanager push against a real Alertmanager")
}

/// The series' polls fail with HTTP 503 (`failing`) or succeed with fresh scans. The simulator checks signing
/// dates against its own clock, so a recovery is a second simulator the target is pointed at, not a jump in time.
fn scenario(failing: bool) -> String {
    let step = if failing {
        "fault = \"server_error\"\nstatus = 503"
    } else {
        "total_num = 9\ntotal_per_hour = 1.0\nrunning_num = 0\nlast_task_age = \"1m\""
    };
    format!("{}{}", scenario_head(), series("am-push", "cluster_scan", None, step))
}

/// Only poll_failing, firing on the first failed poll; one Alertmanager channel posting to `urls`.
fn config(sim: &SimServer, urls: &[String]) -> String {
    let urls = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    let off = ["no_recent_scan", "stuck_running", "total_stalled", "scan_failures"]
        .iter()
        .map(|r| format!("[targets.rules.{r}]\nenabled = false\n"))
        .collect::<String>();
    format!(
        "[schedule]\ninterval = \"5m\"\n{account}{target}labels = {{ env = \"prod\", team = \"sec-ops\" }}\n{off}\
         [rules.poll_failing]\nafter = 1\n\
         [server]\nlisten = \"127.0.0.1:9464\"\nexternal_url = \"https://scanwatch.example.com/ops/\"\n\
         [[channels]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [{urls}]\n",
        account = aksk_account("acct", "SW_AK", "SW_SK"),
        target = target("edge", "acct", &sim.url, "am-push", &["cluster_scan"], None),
    )
}

fn alerts_json(sandbox: &Sandbox) -> Vec<Value> {
    let run = sandbox.run(&["alerts", "--format", "json"]);
    run.expect_code(0);
    serde_json::from_str::<Value>(&run.stdout).unwrap().as_array().unwrap().clone()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

fn only_alert(am: &Alertmanager) -> Value {
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    alerts[0].clone()
}

#[test]
fn an_alert_fires_in_a_real_alertmanager_stays_alive_through_resends_and_resolves() {
    let Some(bin) = alertmanager_bin() else { return };
    let am = Alertmanager::start(&bin);
    let (sim, healthy) = (SimServer::start(&scenario(true)), SimServer::start(&scenario(false)));
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(&sim, &[am.url()]));
    sandbox.run(&["validate"]).expect_code(0);

    // The first poll fails: poll_failing fires and is pushed.
    let before = Utc::now();
    sandbox.run(&["poll"]).expect_code(1);
    let ours = alerts_json(&sandbox);
    assert_eq!(ours.len(), 1, "{ours:?}");
    let fingerprint = ours[0]["fingerprint"].as_str().unwrap().to_string();
    let held = only_alert(&am);
    assert_eq!(held["status"]["state"], "active", "{held:#}");
    let labels = &held["labels"];
    for (k, v) in [
        ("alertname", "poll_failing"),
        ("target", "edge"),
        ("account", "acct"),
        ("region", "cn-north-4"),
        ("project_id", pid("am-push").as_str()),
        ("task_type", "cluster_scan"),
        ("severity", "critical"),
        ("env", "prod"),
        ("team", "sec-ops"),
    ] {
        assert_eq!(labels[k], v, "label {k}: {held:#}");
    }
    let annotations = &held["annotations"];
    assert!(annotations["summary"].as_str().unwrap().contains("poll"), "{held:#}");
    assert!(!annotations["value"].as_str().unwrap().is_empty(), "{held:#}");
    assert!(!annotations["description"].as_str().unwrap().is_empty(), "{held:#}");
    assert_eq!(held["generatorURL"], format!("https://scanwatch.example.com/ops/alerts/{fingerprint}"));
    let first_end = time(&held["endsAt"]);
    let starts = time(&held["startsAt"]);
    assert!(first_end >= before + chrono::TimeDelta::minutes(3), "endsAt is 4 resend intervals ahead: {held:#}");
    assert!(first_end <= Utc::now() + chrono::TimeDelta::minutes(4), "{held:#}");

    // Still failing: nothing changes, but the alert is re-sent and its endsAt moves forward; it starts as before.
    sandbox.run(&["poll"]).expect_code(1);
    let held = only_alert(&am);
    assert_eq!(held["status"]["state"], "active");
    assert!(time(&held["endsAt"]) > first_end, "the resend moved endsAt: {first_end} → {}", held["endsAt"]);
    assert_eq!(time(&held["startsAt"]), starts);
    let second_end = time(&held["endsAt"]);
    sandbox.run(&["poll"]).expect_code(1);
    assert!(time(&only_alert(&am)["endsAt"]) > second_end, "and again");

    // The series recovers: the resolve sets endsAt to now, and Alertmanager no longer lists it as active.
    sandbox.write_config(&config(&healthy, &[am.url()]));
    sandbox.run(&["poll"]).expect_code(0);
    assert!(alerts_json(&sandbox).is_empty());
    let left = am.alerts();
    assert!(left.is_empty(), "resolved in Alertmanager: {left:#?}");
    let log = sandbox.run(&["notifications", "--format", "json"]);
    let log: Vec<Value> = serde_json::from_str(&log.stdout).unwrap();
    let events: Vec<(&str, &str)> =
        log.iter().map(|n| (n["event"].as_str().unwrap(), n["status"].as_str().unwrap())).collect();
    assert!(events.contains(&("firing", "delivered")) && events.contains(&("resolved", "delivered")), "{events:?}");
    assert_eq!(log.len(), 2, "resends are not notifications: {events:?}");
}

#[test]
fn with_one_alertmanager_of_a_cluster_down_the_other_gets_every_alert_and_the_failure_is_logged() {
    let Some(bin) = alertmanager_bin() else { return };
    let up = Alertmanager::start(&bin);
    let mut down = Alertmanager::start(&bin);
    let down_url = down.url();
    down.stop();
    let (sim, healthy) = (SimServer::start(&scenario(true)), SimServer::start(&scenario(false)));
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(&sim, &[down_url.clone(), up.url()]));

    let run = sandbox.run(&["poll"]);
    run.expect_code(1);
    let held = only_alert(&up);
    assert_eq!(
        (held["labels"]["alertname"].as_str(), held["status"]["state"].as_str()),
        (Some("poll_failing"), Some("active"))
    );
    assert!(run.all_output().contains(&down_url), "the member that failed is named:\n{run}");
    let log = sandbox.run(&["notifications", "--format", "json"]);
    let log: Vec<Value> = serde_json::from_str(&log.stdout).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "delivered", "one member accepting is a delivery: {log:?}");

    // Resends keep reaching the live member.
    let end = time(&held["endsAt"]);
    sandbox.run(&["poll"]).expect_code(1);
    assert!(time(&only_alert(&up)["endsAt"]) > end);

    // Both down: the resolve stays pending for a retry instead of being lost.
    let mut up = up;
    up.stop();
    sandbox.write_config(&config(&healthy, &[down_url.clone(), up.url()]));
    sandbox.run(&["poll", "--deliver-timeout", "1s"]);
    let log = sandbox.run(&["notifications", "--format", "json"]);
    let log: Vec<Value> = serde_json::from_str(&log.stdout).unwrap();
    let resolved = log.iter().find(|n| n["event"] == "resolved").expect("a resolved notification");
    assert_eq!(resolved["status"], "pending", "{log:?}");
    assert!(resolved["last_error"].as_str().unwrap().contains("could not connect"), "{log:?}");
}

/// Our `groupKey` is Alertmanager's own: a real Alertmanager, routing by `channel` to a child route that groups by
/// `target` and `env`, sends its webhook for alerts with awkward label values, and the `groupKey` and `groupLabels`
/// it sends are exactly what scanwatch renders for that channel and group.
#[test]
fn the_group_key_is_rendered_exactly_as_a_real_alertmanager_renders_it() {
    let Some(bin) = alertmanager_bin() else { return };
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let yml = format!(
        "route:\n  receiver: \"null\"\n  routes:\n    - matchers: ['channel=\"ops-hook\"']\n      receiver: hook\n      group_by: [target, env]\n      group_wait: 0s\nreceivers:\n  - name: \"null\"\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/hook\n"
    );
    let am = Alertmanager::start_with(&bin, &yml);
    let target = "prod \"north\" \\ 集群\t";
    let env = "p,r=o{d}";
    let alert = serde_json::json!([{
        "labels": { "alertname": "no_recent_scan", "channel": "ops-hook", "target": target, "env": env, "team": "secops" },
        "annotations": { "summary": "s" },
        "startsAt": Utc::now().to_rfc3339(),
    }]);
    let body = alert.to_string();
    let mut s = TcpStream::connect(&am.addr).unwrap();
    write!(
        s,
        "POST /api/v2/alerts HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        am.addr,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Alertmanager's webhook: accept one request (bounded: it sends within its group_wait of 0s).
    hook.set_nonblocking(false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = hook.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = c.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if rest.len() >= len {
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = tx.send(rest[..len].to_string());
                    break;
                }
            }
        }
    });
    let sent = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no webhook from Alertmanager:\n{}", am.log()));
    let sent: Value = serde_json::from_str(&sent).unwrap();
    let group = std::collections::BTreeMap::from([
        ("env".to_string(), env.to_string()),
        ("target".to_string(), target.to_string()),
    ]);
    assert_eq!(sent["groupKey"], scanwatch::notify::group_key("ops-hook", &group), "{sent:#}");
    assert_eq!(sent["groupLabels"], serde_json::to_value(&group).unwrap());
    assert_eq!(sent["status"], "firing");
}
