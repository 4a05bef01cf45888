//! The README's rehearsal, end to end with the real binary: advance the simulator's clock over its HTTP control
//! API, then run scanwatch with the same `--clock-offset`. Without the offset every call is rejected (its
//! `X-Sdk-Date` is a day off); with it the polls succeed and the rules see simulated time.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::Value;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// One HTTP/1.1 request to the simulator's control API; the JSON body of the answer.
fn control(sim_url: &str, method: &str, path: &str, body: &str) -> Value {
    let addr = sim_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the simulator");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (_, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

#[test]
fn advancing_the_simulator_and_passing_the_same_clock_offset_rehearses_the_future() {
    let mut scenario = scenario_head();
    // The last task started at scenario time 0 and none since: stale after 24h.
    scenario.push_str(&series(PROJECT, "cluster_scan", None, "total_num = 5\nrunning_num = 0\nlast_task_at = \"0s\""));
    let sim = SimServer::start(&scenario);
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}{}",
        aksk_account("acct", "SW_AK", "SW_SK"),
        target("t1", "acct", &sim.url, PROJECT, &["cluster_scan"], None)
    ));

    sb.run(&["poll"]).expect_code(0);
    assert_eq!(control(&sim.url, "GET", "/__sim/now", "")["offset"], "0s");

    let advanced = control(&sim.url, "POST", "/__sim/advance", r#"{"by":"25h"}"#);
    assert_eq!(advanced["offset"], "1d1h", "{advanced}");
    let offset = advanced["offset"].as_str().unwrap().to_string();

    // Without the offset: a day-old signature date, rejected (what the README used to leave users with).
    let stale = sb.run(&["poll", "--format", "json"]);
    stale.expect_code(1);
    assert_eq!(parse_rows(&stale.stdout)[0]["error_kind"], "auth", "{stale}");

    // With the offset the simulator reports: the poll goes through and no_recent_scan sees the 25 hours.
    let rehearsed = sb.run(&["poll", "--clock-offset", &offset, "--format", "json"]);
    rehearsed.expect_code(0);
    assert_eq!(parse_rows(&rehearsed.stdout)[0]["ok"], true, "{rehearsed}");
    let alerts = parse_rows(&sb.run(&["alerts", "--format", "json"]).expect_code(0).stdout);
    let stale_alert = alerts.iter().find(|a| a["rule"] == "no_recent_scan").unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(stale_alert["state"], "firing");
    assert!(stale_alert["summary"].as_str().unwrap_or_default().contains("25h"), "{stale_alert:#}");

    // The environment variable works the same way.
    sb.run_with_env(&["poll"], &[("SCANWATCH_CLOCK_OFFSET", &offset)]).expect_code(0);
}
