//! `scanwatch poll` against the simulator over real TCP, with every kind of credentials, then `history` in every
//! format; `--no-store`; and `SCANWATCH__…` environment overrides.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};

const P_EPS: &str = "0123456789abcdef0123456789abcdef";
const P_PLAIN: &str = "fedcba9876543210fedcba9876543210";
const P_STS: &str = "11111111111111111111111111111111";
const P_IAM: &str = "22222222222222222222222222222222";
const P_TOKEN: &str = "33333333333333333333333333333333";

/// What each (target, task type) must end up as: account, project, enterprise project, the values the scenario
/// serves, the identity the simulator must see and the exact query it must receive.
struct Expected {
    target: &'static str,
    account: &'static str,
    project_id: &'static str,
    eps: Option<&'static str>,
    task_type: &'static str,
    total_num: u64,
    running_num: u64,
    last_task_start_time: Option<&'static str>,
    identity: &'static str,
}

/// The first row is the API documentation's example: `{"total_num":17,"running_num":1,
/// "last_task_start_time":1745311451000}`; the second has no `last_task_start_time` (no task ever ran).
fn expected() -> Vec<Expected> {
    let e = |target, account, project_id, eps, task_type, total_num, running_num, last, identity| Expected {
        target,
        account,
        project_id,
        eps,
        task_type,
        total_num,
        running_num,
        last_task_start_time: last,
        identity,
    };
    vec![
        e("with-eps", "aksk", P_EPS, Some("all_granted_eps"), "cluster_scan", 17, 1, Some("2025-04-22T08:44:11Z"), AK),
        e("with-eps", "aksk", P_EPS, Some("all_granted_eps"), "iac_scan", 4, 0, None, AK),
        e("no-eps", "aksk", P_PLAIN, None, "cluster_scan", 120, 2, Some("2026-01-01T00:00:00Z"), AK),
        e("no-eps", "aksk", P_PLAIN, None, "iac_scan", 30, 0, Some("2026-01-02T03:04:05Z"), AK),
        e("sts", "temporary", P_STS, None, "cluster_scan", 7, 0, Some("2026-02-01T00:00:00Z"), STS_AK),
        e("sts", "temporary", P_STS, None, "iac_scan", 8, 1, Some("2026-02-02T00:00:00Z"), STS_AK),
        e("iam", "iam", P_IAM, None, "cluster_scan", 9, 0, Some("2026-03-01T00:00:00Z"), "acme/watcher"),
        e("iam", "iam", P_IAM, None, "iac_scan", 10, 0, Some("2026-03-02T00:00:00Z"), "acme/watcher"),
        e("static", "static", P_TOKEN, None, "cluster_scan", 11, 3, Some("2026-04-01T00:00:00Z"), "token"),
        e("static", "static", P_TOKEN, None, "iac_scan", 12, 0, Some("2026-04-02T00:00:00Z"), "token"),
    ]
}

fn scenario() -> String {
    let mut s = scenario_head();
    for x in expected() {
        let last = x.last_task_start_time.map(|t| format!("last_task_start = \"{t}\"")).unwrap_or_default();
        let step = format!("total_num = {}\nrunning_num = {}\n{last}", x.total_num, x.running_num);
        // The enterprise project series matches only that exact value: a request without it would get 400.
        s.push_str(&series(x.project_id, x.task_type, x.eps, &step));
    }
    s
}

fn config(sim_url: &str) -> String {
    let both = ["cluster_scan", "iac_scan"];
    let mut c = String::from("[schedule]\ninterval = \"5m\"\n");
    c.push_str(&aksk_account("aksk", "SW_AK", "SW_SK"));
    c.push_str(
        "\n[[accounts]]\nname = \"temporary\"\nauth = \"aksk\"\nak_env = \"SW_STS_AK\"\nsk_env = \"SW_STS_SK\"\n\
         security_token_env = \"SW_STS_TOKEN\"\ncalls_per_minute = 600\n",
    );
    c.push_str(&format!(
        "\n[[accounts]]\nname = \"iam\"\nauth = \"password\"\ndomain = \"{DOMAIN}\"\nuser = \"{USER}\"\n\
         password_env = \"SW_PASSWORD\"\niam_endpoint = \"{sim_url}\"\ncalls_per_minute = 600\n"
    ));
    c.push_str(
        "\n[[accounts]]\nname = \"static\"\nauth = \"token\"\ntoken_env = \"SW_TOKEN\"\ncalls_per_minute = 600\n",
    );
    c.push_str(&target("with-eps", "aksk", sim_url, P_EPS, &both, Some("all_granted_eps")));
    c.push_str(&target("no-eps", "aksk", sim_url, P_PLAIN, &both, None));
    c.push_str(&target("sts", "temporary", sim_url, P_STS, &both, None));
    c.push_str(&target("iam", "iam", sim_url, P_IAM, &both, None));
    c.push_str(&target("static", "static", sim_url, P_TOKEN, &both, None));
    c
}

/// A simulator and a sandbox after one successful `poll` of all ten series.
fn polled() -> (SimServer, Sandbox, Run) {
    let sim = SimServer::start(&scenario());
    let sb = Sandbox::new();
    sb.write_config(&config(&sim.url));
    let run = sb.run(&["poll"]);
    run.expect_code(0);
    (sim, sb, run)
}

#[test]
fn poll_stores_a_snapshot_of_every_series_for_every_kind_of_credentials() {
    let (sim, sb, run) = polled();
    for x in expected() {
        assert!(run.stdout.contains(x.target), "the poll table names {}:\n{run}", x.target);
    }

    let rows = sb.history(&[]);
    assert_eq!(rows.len(), expected().len(), "{rows:#?}");
    let now = Utc::now();
    for x in expected() {
        let r = row(&rows, x.target, x.task_type);
        assert_history_fields(r);
        let calls: Vec<_> =
            sim.calls_for(x.project_id).into_iter().filter(|c| c.query.ends_with(x.task_type)).collect();
        assert_eq!(calls.len(), 1, "one call for {}/{}: {calls:#?}", x.target, x.task_type);
        let call = &calls[0];
        assert_eq!(call.status, Some(200), "{call:?}");
        assert_eq!(call.identity.as_deref(), Some(x.identity), "{call:?}");
        let query = match x.eps {
            Some(eps) => format!("enterprise_project_id={eps}&task_type={}", x.task_type),
            None => format!("task_type={}", x.task_type),
        };
        assert_eq!(call.query, query, "enterprise_project_id is sent only when configured");

        assert_eq!(r["account"], x.account);
        assert_eq!(r["region"], "cn-north-4");
        assert_eq!(r["project_id"], x.project_id);
        assert_eq!(r["enterprise_project_id"], json!(x.eps));
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["total_num"], x.total_num, "{r:#}");
        assert_eq!(r["running_num"], x.running_num, "{r:#}");
        assert_eq!(r["last_task_start_time"], json!(x.last_task_start_time), "{r:#}");
        assert_eq!(r["http_status"], 200);
        assert_eq!(r["error_kind"], Value::Null);
        assert_eq!(r["error_code"], Value::Null);
        assert_eq!(r["error_message"], Value::Null);
        assert_eq!(r["request_id"], call.request_id.as_str(), "the row keeps the X-Request-Id of its call");
        assert!(r["latency_ms"].is_u64(), "{r:#}");
        let polled_at = r["polled_at"].as_str().expect("polled_at is text");
        assert!(polled_at.ends_with('Z'), "polled_at is RFC 3339 UTC: {polled_at}");
        let polled_at = DateTime::parse_from_rfc3339(polled_at).expect("polled_at is RFC 3339").with_timezone(&Utc);
        assert!((now - polled_at).num_seconds().abs() < 120, "polled_at {polled_at} is about now ({now})");
    }

    let logins: Vec<_> = sim.sim.calls().into_iter().filter(|c| c.path == "/v3/auth/tokens").collect();
    assert_eq!(logins.len(), 1, "one IAM login serves both series of the account: {logins:#?}");
    assert_eq!((logins[0].method.as_str(), logins[0].status), ("POST", Some(201)));
    assert_eq!(logins[0].identity.as_deref(), Some("acme/watcher"));

    assert_no_secret(&run.all_output(), "poll output");
    assert_no_secret(&database_bytes(&sb.db_path()), "the database");
}

#[test]
fn history_prints_the_same_snapshots_as_csv_and_as_a_table() {
    let (_sim, sb, _run) = polled();
    let json_rows = sb.history(&[]);

    let csv_run = sb.run(&["history", "--format", "csv"]);
    csv_run.expect_code(0);
    let mut reader = csv::Reader::from_reader(csv_run.stdout.as_bytes());
    let headers: Vec<String> = reader.headers().expect("a header row").iter().map(str::to_string).collect();
    assert_eq!(headers, HISTORY_FIELDS.to_vec(), "csv columns are DESIGN.md's field names, in order");
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid csv");
    assert_eq!(records.len(), json_rows.len(), "{}", csv_run.stdout);
    let col = |name: &str| HISTORY_FIELDS.iter().position(|h| *h == name).expect("a known column");
    for x in expected() {
        let rec = records
            .iter()
            .find(|r| &r[col("target")] == x.target && &r[col("task_type")] == x.task_type)
            .unwrap_or_else(|| panic!("a csv row for {}/{}:\n{}", x.target, x.task_type, csv_run.stdout));
        let json = row(&json_rows, x.target, x.task_type);
        assert_eq!(&rec[col("ok")], "true");
        assert_eq!(&rec[col("total_num")], x.total_num.to_string());
        assert_eq!(&rec[col("running_num")], x.running_num.to_string());
        assert_eq!(&rec[col("last_task_start_time")], x.last_task_start_time.unwrap_or(""));
        assert_eq!(&rec[col("http_status")], "200");
        assert_eq!(&rec[col("error_kind")], "");
        assert_eq!(&rec[col("polled_at")], json["polled_at"].as_str().unwrap_or("?"));
        assert_eq!(&rec[col("request_id")], json["request_id"].as_str().unwrap_or("?"));
        assert_eq!(&rec[col("enterprise_project_id")], x.eps.unwrap_or(""));
    }

    let table = sb.run(&["history"]);
    table.expect_code(0);
    let mut lines = table.stdout.lines();
    let header = lines.next().unwrap_or_default();
    for h in ["POLLED_AT", "TARGET", "TASK_TYPE", "OK", "TOTAL", "RUNNING", "LAST_TASK_START", "LATENCY", "ERROR"] {
        assert!(header.contains(h), "table header has {h}: {header}");
    }
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), expected().len(), "{}", table.stdout);
    for x in expected() {
        let line = body
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(x.target) && l.contains(x.task_type))
            .unwrap_or_else(|| panic!("a table row for {}/{}:\n{}", x.target, x.task_type, table.stdout));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.get(3), Some(&"ok"), "{line}");
        assert_eq!(cells.get(4).copied(), Some(x.total_num.to_string().as_str()), "{line}");
        assert_eq!(cells.get(5).copied(), Some(x.running_num.to_string().as_str()), "{line}");
        assert_eq!(cells.get(6).copied(), Some(x.last_task_start_time.unwrap_or("-")), "{line}");
    }

    let limited = sb.history(&["--target", "sts", "--limit", "1"]);
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert_eq!(limited[0]["target"], "sts");
}

#[test]
fn poll_with_no_store_prints_the_results_but_stores_nothing() {
    let sim = SimServer::start(&scenario());
    let sb = Sandbox::new();
    sb.write_config(&config(&sim.url));

    let run = sb.run(&["poll", "--no-store", "--format", "json"]);
    run.expect_code(0);
    let printed = parse_rows(&run.stdout);
    assert_eq!(printed.len(), expected().len(), "{run}");
    for x in expected() {
        let r = row(&printed, x.target, x.task_type);
        assert_history_fields(r);
        assert_eq!((r["ok"].as_bool(), r["total_num"].as_u64()), (Some(true), Some(x.total_num)), "{r:#}");
    }
    assert_eq!(sim.hss_calls().len(), expected().len(), "the series were really polled");

    assert!(!sb.db_path().exists(), "nothing was stored: not even a database was created");
    // And a read does not create one either: it names the missing file.
    let read = sb.run(&["history"]);
    read.expect_code(1);
    assert!(read.stderr.contains(&format!("no database at {}", sb.db_path().display())), "{read}");
    assert!(!sb.db_path().exists(), "a read never creates a database");
}

#[test]
fn an_environment_override_moves_the_database() {
    let sim = SimServer::start(&scenario());
    let mut sb = Sandbox::new();
    sb.write_config(&config(&sim.url));
    let moved = sb.dir().join("elsewhere").join("from-env.db");
    sb.set_env("SCANWATCH__STORAGE__PATH", &moved.display().to_string());

    let shown = sb.run(&["config", "show", "--format", "json"]);
    shown.expect_code(0);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("config show --format json is JSON");
    assert_eq!(shown["storage"]["path"], moved.display().to_string());

    sb.run(&["poll"]).expect_code(0);
    assert!(moved.is_file(), "the database is where SCANWATCH__STORAGE__PATH says");
    assert!(!sb.db_path().exists(), "and not where the file says");
    assert_eq!(sb.history(&[]).len(), expected().len());

    sb.unset_env("SCANWATCH__STORAGE__PATH");
    let read = sb.run(&["history"]);
    read.expect_code(1);
    assert!(read.stderr.contains("no database at"), "the file's database was never created: {read}");
}

#[test]
fn an_environment_override_shortens_the_poll_timeout() {
    let mut s = scenario_head();
    s.push_str(&series(
        P_PLAIN,
        "cluster_scan",
        None,
        "fault = \"slow\"\ndelay = \"10s\"\ntotal_num = 1\nrunning_num = 0",
    ));
    let sim = SimServer::start(&s);
    let mut sb = Sandbox::new();
    let mut c = String::from("[schedule]\ninterval = \"5m\"\ntimeout = \"30s\"\nconnect_timeout = \"1s\"\n");
    c.push_str(&aksk_account("aksk", "SW_AK", "SW_SK"));
    c.push_str(&target("slow", "aksk", &sim.url, P_PLAIN, &["cluster_scan"], None));
    sb.write_config(&c);
    sb.set_env("SCANWATCH__SCHEDULE__TIMEOUT", "1s");

    let started = std::time::Instant::now();
    sb.run(&["poll"]).expect_code(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(9), "gave up after the overridden 1s, not 10s");
    let rows = sb.history(&[]);
    let r = row(&rows, "slow", "cluster_scan");
    assert_eq!(r["error_kind"], "timeout", "{r:#}");
    assert!(r["error_message"].as_str().unwrap_or("").contains("within 1s"), "{r:#}");
}
