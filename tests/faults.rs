//! Every fault the simulator can inject becomes one stored, failed snapshot with the right `error_kind`, status,
//! code and a message an operator can act on; `poll` exits 1 without hanging or panicking, calls each series once
//! (no hidden retries against a 5-calls-a-minute budget), and keeps polling the healthy series beside it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// One fault, served for `cluster_scan` of its own project, with what must be stored for it.
struct Case {
    /// The target's name (and, prefixed, its project id).
    name: &'static str,
    /// The scenario step's keys.
    step: String,
    /// Where the target points instead of the simulator (a closed port).
    endpoint: Option<String>,
    kind: &'static str,
    http_status: Option<u16>,
    error_code: Option<&'static str>,
    /// The stored message must contain each of these.
    message_has: Vec<&'static str>,
    /// Whether the simulator sees the call.
    reaches_simulator: bool,
}

fn case(name: &'static str, step: &str, kind: &'static str) -> Case {
    Case {
        name,
        step: step.to_string(),
        endpoint: None,
        kind,
        http_status: None,
        error_code: None,
        message_has: Vec::new(),
        reaches_simulator: true,
    }
}

impl Case {
    fn status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.error_code = Some(code);
        self
    }

    fn says(mut self, text: &'static str) -> Self {
        self.message_has.push(text);
        self
    }

    fn at(mut self, endpoint: String) -> Self {
        self.endpoint = Some(endpoint);
        self.reaches_simulator = false;
        self
    }

    fn project(&self) -> String {
        format!("project-{}", self.name)
    }
}

/// The healthy `iac_scan` series beside each fault: total 100 + its index.
fn healthy_step(i: usize) -> String {
    format!("total_num = {}\nrunning_num = 0\nlast_task_age = \"1h\"", 100 + i)
}

/// Polls a config where each case's target has the faulty `cluster_scan` first and a healthy `iac_scan` after it
/// (only the faulty one for a dead endpoint), all on one account, and checks what was stored. `schedule` is the `[schedule]` table's keys.
fn assert_faults_are_stored(schedule: &str, cases: Vec<Case>) -> Vec<Value> {
    let mut scenario = scenario_head();
    for (i, c) in cases.iter().enumerate() {
        scenario.push_str(&series(&c.project(), "cluster_scan", None, &c.step));
        scenario.push_str(&series(&c.project(), "iac_scan", None, &healthy_step(i)));
    }
    let sim = SimServer::start(&scenario);
    let sb = Sandbox::new();
    let mut config = format!("[schedule]\ninterval = \"5m\"\n{schedule}\n");
    config.push_str(&aksk_account("main", "SW_AK", "SW_SK"));
    for c in &cases {
        config.push_str(&match &c.endpoint {
            None => target(c.name, "main", &sim.url, &c.project(), &["cluster_scan", "iac_scan"], None),
            // Nothing healthy can be polled at a dead endpoint.
            Some(dead) => target(c.name, "main", dead, &c.project(), &["cluster_scan"], None),
        });
    }
    sb.write_config(&config);

    let run = sb.run(&["poll", "--format", "json"]);
    run.expect_code(1);
    let polls = cases.iter().map(|c| if c.endpoint.is_some() { 1 } else { 2 }).sum::<usize>();
    assert!(
        run.stderr.contains(&format!("{} of {polls} polls failed", cases.len())),
        "poll says how many polls failed\n{run}"
    );
    assert_eq!(parse_rows(&run.stdout).len(), polls, "poll prints every result\n{run}");

    let rows = sb.history(&[]);
    assert_eq!(rows.len(), polls, "{rows:#?}");
    for (i, c) in cases.iter().enumerate() {
        let r = row(&rows, c.name, "cluster_scan");
        assert_history_fields(r);
        let what = format!("{}: {r:#}", c.name);
        assert_eq!(r["ok"], false, "{what}");
        assert_eq!(r["total_num"], Value::Null, "a failed poll carries no data: {what}");
        assert_eq!(r["error_kind"], c.kind, "{what}");
        assert_eq!(r["http_status"].as_u64(), c.http_status.map(u64::from), "{what}");
        if let Some(code) = c.error_code {
            assert_eq!(r["error_code"], code, "{what}");
        }
        let message = r["error_message"].as_str().unwrap_or_default();
        for part in &c.message_has {
            assert!(message.contains(part), "the message mentions `{part}`: {what}");
        }
        assert!(message.len() <= 2048, "the stored message is an excerpt: {what}");

        let calls = sim.calls_for(&c.project());
        let cluster_calls: Vec<_> = calls.iter().filter(|c| c.query == "task_type=cluster_scan").collect();
        assert_eq!(cluster_calls.len(), usize::from(c.reaches_simulator), "called once, never retried: {what}");
        if let Some(call) = cluster_calls.first().filter(|_| c.http_status.is_some()) {
            assert_eq!(r["request_id"], call.request_id.as_str(), "the failure keeps its X-Request-Id: {what}");
        }

        if c.endpoint.is_some() {
            continue;
        }
        let healthy = row(&rows, c.name, "iac_scan");
        assert_eq!(healthy["ok"], true, "the series after the fault is still polled: {healthy:#}");
        assert_eq!(healthy["total_num"], 100 + i as u64, "{healthy:#}");
    }
    assert_no_secret(&run.all_output(), "poll output");
    rows
}

#[test]
fn server_errors_are_stored_as_server_failures() {
    assert_faults_are_stored(
        "",
        vec![
            case("html-500", "fault = \"server_error\"\nstatus = 500", "server")
                .status(500)
                .code("500")
                .says("500 Internal Server Error"),
            case("json-502", "fault = \"server_error\"\nstatus = 502\nbody = \"json\"", "server")
                .status(502)
                .code("APIGW.0202")
                .says("Backend unavailable"),
            case("html-503", "fault = \"server_error\"\nstatus = 503", "server")
                .status(503)
                .code("503")
                .says("503 Service Temporarily Unavailable"),
            case(
                "json-503",
                "fault = \"server_error\"\nstatus = 503\nbody = \"json\"\ncode = \"APIGW.0299\"\nmessage = \"maintenance\"",
                "server",
            )
            .status(503)
            .code("APIGW.0299")
            .says("maintenance"),
        ],
    );
}

#[test]
fn broken_bodies_are_bad_responses_that_name_what_is_wrong() {
    assert_faults_are_stored(
        "max_response_bytes = 4096",
        vec![
            case("malformed", "fault = \"malformed\"", "bad_response")
                .status(200)
                .says("not valid JSON")
                .says("<html>"),
            case("truncated", "fault = \"truncated\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("not valid JSON")
                .says("{\"total_num\":17"),
            case("oversized", "fault = \"oversized\"\nbytes = 65536\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("exceeds 4096 bytes"),
            case("wrong-types", "fault = \"wrong_types\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("`total_num`")
                .says("\"17\""),
            case("negative", "fault = \"negative\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("`running_num`")
                .says("-1"),
            case("float", "fault = \"float\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("`total_num`")
                .says("17.5"),
            case("missing-field", "fault = \"missing_field\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("`total_num` is missing"),
            case("null-field", "fault = \"null_field\"\ntotal_num = 17\nrunning_num = 1", "bad_response")
                .status(200)
                .says("`total_num` is null"),
        ],
    );
}

#[test]
fn hss_errors_keep_their_code_in_every_body_shape() {
    assert_faults_are_stored(
        "",
        vec![
            case("flat", "fault = \"hss_error\"\ncode = \"HSS.1001\"\nmessage = \"flat message\"", "hss_error")
                .status(400)
                .code("HSS.1001")
                .says("flat message"),
            case(
                "camel",
                "fault = \"hss_error\"\nshape = \"camel\"\ncode = \"HSS.1002\"\nmessage = \"camel message\"",
                "hss_error",
            )
            .status(400)
            .code("HSS.1002")
            .says("camel message"),
            case(
                "nested",
                "fault = \"hss_error\"\nshape = \"nested\"\nstatus = 422\ncode = \"HSS.1003\"\nmessage = \"nested message\"",
                "hss_error",
            )
            .status(422)
            .code("HSS.1003")
            .says("nested message"),
            case("not-found", "fault = \"not_found\"", "hss_error").status(404).code("404").says("404 Not Found"),
        ],
    );
}

#[test]
fn broken_connections_are_network_errors() {
    assert_faults_are_stored(
        "",
        vec![
            case("reset", "fault = \"reset\"", "network").says("connection closed"),
            case("closed-port", "total_num = 1\nrunning_num = 0", "network")
                .at(closed_port_url())
                .says("could not connect to HSS"),
        ],
    );
}

#[test]
fn a_slow_answer_times_out_at_the_configured_timeout() {
    let started = std::time::Instant::now();
    assert_faults_are_stored(
        "timeout = \"1s\"\nconnect_timeout = \"1s\"",
        vec![
            case("slow", "fault = \"slow\"\ndelay = \"20s\"\ntotal_num = 1\nrunning_num = 0", "timeout")
                .says("HSS did not answer within 1s"),
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(15), "the poll gave up after 1s, not after the 20s delay");
}

/// A 429 with `Retry-After: 1` and one without; each account's next series waits (1s for the first).
#[test]
fn throttling_is_stored_with_the_gateway_code_and_retry_after_is_honoured() {
    let mut scenario = scenario_head();
    scenario.push_str(&series("project-retry", "cluster_scan", None, "fault = \"throttled\"\nretry_after = 1"));
    scenario.push_str(&series("project-retry", "iac_scan", None, &healthy_step(0)));
    scenario.push_str(&series("project-bare", "cluster_scan", None, "fault = \"throttled\""));
    scenario.push_str(&series("project-ok", "cluster_scan", None, &healthy_step(1)));
    let sim = SimServer::start(&scenario);
    let sb = Sandbox::new();
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&aksk_account("retry", "SW_AK", "SW_SK"));
    config.push_str(&aksk_account("bare", "SW_OTHER_AK", "SW_OTHER_SK"));
    config.push_str(&target("retry", "retry", &sim.url, "project-retry", &["cluster_scan", "iac_scan"], None));
    config.push_str(&target("bare", "bare", &sim.url, "project-bare", &["cluster_scan"], None));
    config.push_str(&aksk_account("ok", "SW_STS_AK", "SW_STS_SK"));
    config.push_str("security_token_env = \"SW_STS_TOKEN\"\n");
    config.push_str(&target("ok", "ok", &sim.url, "project-ok", &["cluster_scan"], None));
    sb.write_config(&config);

    sb.run(&["poll"]).expect_code(1);
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for name in ["retry", "bare"] {
        let r = row(&rows, name, "cluster_scan");
        assert_eq!(r["error_kind"], "throttled", "{r:#}");
        assert_eq!(r["http_status"], 429, "{r:#}");
        assert_eq!(r["error_code"], "APIGW.0308", "{r:#}");
        assert!(r["error_message"].as_str().unwrap_or("").contains("throttling threshold"), "{r:#}");
    }
    assert_eq!(row(&rows, "retry", "iac_scan")["ok"], true);
    assert_eq!(row(&rows, "ok", "cluster_scan")["ok"], true, "another account is not held back");

    let calls = sim.calls_for("project-retry");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(950),
        "the next call of the account waited for Retry-After: 1 (waited {waited})"
    );
    assert_eq!(sim.calls_for("project-bare").len(), 1);
}

/// A 429 without `Retry-After` pauses the account for 30 s. Its next series is recorded as not polled (throttled,
/// no call) instead of holding the whole cycle — and every other account's next one — back for half a minute.
#[test]
fn a_long_throttle_pause_records_the_accounts_next_series_as_not_polled() {
    let mut scenario = scenario_head();
    scenario.push_str(&series("project-bare", "cluster_scan", None, "fault = \"throttled\""));
    scenario.push_str(&series("project-bare", "iac_scan", None, &healthy_step(0)));
    scenario.push_str(&series("project-ok", "cluster_scan", None, &healthy_step(1)));
    let sim = SimServer::start(&scenario);
    let sb = Sandbox::new();
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&aksk_account("bare", "SW_OTHER_AK", "SW_OTHER_SK"));
    config.push_str(&target("bare", "bare", &sim.url, "project-bare", &["cluster_scan", "iac_scan"], None));
    config.push_str(&aksk_account("ok", "SW_AK", "SW_SK"));
    config.push_str(&target("ok", "ok", &sim.url, "project-ok", &["cluster_scan"], None));
    sb.write_config(&config);

    sb.run(&["poll"]).expect_code(1);
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(row(&rows, "bare", "cluster_scan")["http_status"], 429);
    let held = row(&rows, "bare", "iac_scan");
    assert_eq!(held["error_kind"], "throttled", "{held:#}");
    assert_eq!(held["error_code"], "SCANWATCH.BACKOFF", "{held:#}");
    assert_eq!(held["http_status"], Value::Null, "no call was made: {held:#}");
    let message = held["error_message"].as_str().unwrap_or("");
    assert!(message.contains("not polled") && message.contains("throttled by HSS (429)"), "{held:#}");
    assert_eq!(sim.calls_for("project-bare").len(), 1, "the throttled account was not called again");
    assert_eq!(row(&rows, "ok", "cluster_scan")["ok"], true);
}

#[test]
fn rejected_and_forbidden_credentials_are_auth_and_forbidden_failures() {
    let mut scenario = scenario_head();
    scenario.push_str(&series("project-unauthorized", "cluster_scan", None, "fault = \"unauthorized\""));
    scenario.push_str(&series("project-forbidden", "cluster_scan", None, "fault = \"forbidden\""));
    scenario.push_str(&series("project-ok", "cluster_scan", None, &healthy_step(0)));
    let sim = SimServer::start(&scenario);
    let sb = Sandbox::new();
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&aksk_account("unauthorized", "SW_AK", "SW_SK"));
    config.push_str(&aksk_account("forbidden", "SW_OTHER_AK", "SW_OTHER_SK"));
    config.push_str(
        "\n[[accounts]]\nname = \"ok\"\nauth = \"token\"\ntoken_env = \"SW_TOKEN\"\ncalls_per_minute = 600\n",
    );
    config.push_str(&target("unauthorized", "unauthorized", &sim.url, "project-unauthorized", &["cluster_scan"], None));
    config.push_str(&target("forbidden", "forbidden", &sim.url, "project-forbidden", &["cluster_scan"], None));
    config.push_str(&target("ok", "ok", &sim.url, "project-ok", &["cluster_scan"], None));
    sb.write_config(&config);

    let run = sb.run(&["poll"]);
    run.expect_code(1);
    assert!(run.stderr.contains("2 of 3 polls failed"), "{run}");
    let rows = sb.history(&[]);
    let unauthorized = row(&rows, "unauthorized", "cluster_scan");
    assert_eq!(
        (&unauthorized["error_kind"], &unauthorized["http_status"], &unauthorized["error_code"]),
        (&Value::from("auth"), &Value::from(401), &Value::from("APIGW.0301")),
        "{unauthorized:#}"
    );
    assert!(unauthorized["error_message"].as_str().unwrap_or("").contains("signature rejected"), "{unauthorized:#}");
    let forbidden = row(&rows, "forbidden", "cluster_scan");
    assert_eq!(
        (&forbidden["error_kind"], &forbidden["http_status"], &forbidden["error_code"]),
        (&Value::from("forbidden"), &Value::from(403), &Value::from("APIGW.0306")),
        "{forbidden:#}"
    );
    assert!(forbidden["error_message"].as_str().unwrap_or("").contains("API access denied"), "{forbidden:#}");
    assert_eq!(row(&rows, "ok", "cluster_scan")["ok"], true);
    assert_eq!(sim.hss_calls().len(), 3, "one call each");
}
