//! A wrong secret key must not hammer HSS: HSS locks an AK after more than 5 failed signatures in a row, so an
//! account whose signature is rejected makes one call per backoff step, across separate `poll` runs (the backoff is
//! read back from the stored history), while the other accounts keep being polled.

mod common;

use common::*;
use serde_json::Value;

const P_ONE: &str = "0123456789abcdef0123456789abcdef";
const P_TWO: &str = "fedcba9876543210fedcba9876543210";
const P_GOOD: &str = "00112233445566778899aabbccddeeff";
const WRONG_SK: &str = "wrongSecretKey000000000000000000000000001";

fn healthy(total: u64) -> String {
    format!("total_num = {total}\nrunning_num = 0\nlast_task_age = \"1h\"")
}

/// Calls the simulator answered for the misconfigured account's AK.
fn bad_calls(sim: &SimServer) -> Vec<scanwatch::simulator::CallRecord> {
    sim.hss_calls().into_iter().filter(|c| c.identity.as_deref() == Some(AK)).collect()
}

/// The rows of one `poll` run for the misconfigured account: the last four stored.
fn bad_rows(rows: &[Value]) -> Vec<&Value> {
    let bad: Vec<&Value> = rows.iter().filter(|r| r["account"] == "bad").collect();
    bad[bad.len().saturating_sub(4)..].to_vec()
}

#[test]
fn a_wrong_secret_key_costs_one_call_per_backoff_step() {
    let mut scenario = scenario_head();
    for project in [P_ONE, P_TWO] {
        scenario.push_str(&series(project, "cluster_scan", None, &healthy(1)));
        scenario.push_str(&series(project, "iac_scan", None, &healthy(2)));
    }
    scenario.push_str(&series(P_GOOD, "cluster_scan", None, &healthy(3)));
    let sim = SimServer::start(&scenario);

    let mut sb = Sandbox::new();
    sb.set_env("SW_WRONG_SK", WRONG_SK);
    // The backoff's first step is the interval: 5m, then 10m.
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&aksk_account("bad", "SW_AK", "SW_WRONG_SK"));
    config.push_str(&aksk_account("good", "SW_OTHER_AK", "SW_OTHER_SK"));
    config.push_str(&target("one", "bad", &sim.url, P_ONE, &["cluster_scan", "iac_scan"], None));
    config.push_str(&target("two", "bad", &sim.url, P_TWO, &["cluster_scan", "iac_scan"], None));
    config.push_str(&target("good", "good", &sim.url, P_GOOD, &["cluster_scan"], None));
    sb.write_config(&config);

    // 1. One call is rejected; the other three series of the account are recorded as not polled.
    let run = sb.run(&["poll", "--format", "json"]);
    run.expect_code(1);
    assert!(run.stderr.contains("4 of 5 polls failed"), "{run}");
    let calls = bad_calls(&sim);
    assert_eq!(calls.len(), 1, "exactly one call with the rejected key: {calls:#?}");
    assert_eq!((calls[0].status, calls[0].error_code.as_deref()), (Some(401), Some("APIGW.0301")));

    let rows = sb.history(&[]);
    let bad = bad_rows(&rows);
    let rejected = bad[0];
    assert_eq!(rejected["error_kind"], "auth", "{rejected:#}");
    assert_eq!(rejected["http_status"], 401, "{rejected:#}");
    assert_eq!(rejected["error_code"], "APIGW.0301", "{rejected:#}");
    assert_eq!(rejected["request_id"], calls[0].request_id.as_str());
    let message = rejected["error_message"].as_str().unwrap_or_default();
    assert!(message.starts_with("signature rejected"), "a clear first word: {rejected:#}");
    for not_polled in &bad[1..] {
        assert_eq!(not_polled["error_kind"], "auth", "{not_polled:#}");
        assert_eq!(not_polled["error_code"], "SCANWATCH.BACKOFF", "{not_polled:#}");
        assert_eq!(not_polled["http_status"], Value::Null, "no call, no status: {not_polled:#}");
        let message = not_polled["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("account `bad`"), "names the account: {not_polled:#}");
        assert!(message.contains("signature rejected"), "says why: {not_polled:#}");
    }
    assert_eq!(row(&rows, "good", "cluster_scan")["ok"], true, "the other account is polled");
    assert_no_secret(&run.all_output(), "poll output");
    assert!(!run.all_output().contains(WRONG_SK), "the wrong key is not printed either");

    // 2. Right after: still backing off, so no call at all — read from the stored history.
    let run = sb.run(&["poll"]);
    run.expect_code(1);
    assert_eq!(bad_calls(&sim).len(), 1, "no call while backing off");
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), 10, "{rows:#?}");
    for not_polled in bad_rows(&rows) {
        assert_eq!(not_polled["error_code"], "SCANWATCH.BACKOFF", "{not_polled:#}");
        let message = not_polled["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("account `bad` is backing off after 1 rejected call"), "{not_polled:#}");
    }
    let good_calls = sim.calls_for(P_GOOD);
    assert_eq!(good_calls.len(), 2, "the other account is polled every time");

    // 3. Past the first step (5m) on both clocks: exactly one more call, rejected again.
    sim.sim.advance(std::time::Duration::from_secs(6 * 60));
    let run = sb.run(&["poll", "--clock-offset", "6m"]);
    run.expect_code(1);
    let calls = bad_calls(&sim);
    assert_eq!(calls.len(), 2, "one more call after the backoff: {calls:#?}");
    assert_eq!(calls[1].status, Some(401), "the date was accepted: the clocks agree");
    let rows = sb.history(&[]);
    assert_eq!(bad_rows(&rows)[0]["error_code"], "APIGW.0301");

    // 4. The second step is longer (10m): right after, no call.
    sb.run(&["poll", "--clock-offset", "6m"]).expect_code(1);
    assert_eq!(bad_calls(&sim).len(), 2, "the backoff grows");
    assert_eq!(sim.calls_for(P_GOOD).len(), 4, "and the other account is still polled");

    assert_no_secret(&database_bytes(&sb.db_path()), "the database");
    assert!(!database_bytes(&sb.db_path()).contains(WRONG_SK));
}

#[test]
fn a_wrong_password_or_token_is_an_auth_failure_that_backs_off_without_leaking_it() {
    const WRONG_PASSWORD: &str = "not-the-iam-password";
    const WRONG_TOKEN: &str = "not-a-token-the-gateway-knows";
    let mut scenario = scenario_head();
    for project in [P_ONE, P_TWO] {
        scenario.push_str(&series(project, "cluster_scan", None, &healthy(1)));
        scenario.push_str(&series(project, "iac_scan", None, &healthy(2)));
    }
    let sim = SimServer::start(&scenario);
    let mut sb = Sandbox::new();
    sb.set_env("SW_WRONG_PASSWORD", WRONG_PASSWORD);
    sb.set_env("SW_WRONG_TOKEN", WRONG_TOKEN);
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&format!(
        "\n[[accounts]]\nname = \"iam\"\nauth = \"password\"\ndomain = \"{DOMAIN}\"\nuser = \"{USER}\"\n\
         password_env = \"SW_WRONG_PASSWORD\"\niam_endpoint = \"{}\"\ncalls_per_minute = 600\n",
        sim.url
    ));
    config.push_str(
        "\n[[accounts]]\nname = \"static\"\nauth = \"token\"\ntoken_env = \"SW_WRONG_TOKEN\"\ncalls_per_minute = 600\n",
    );
    config.push_str(&target("iam", "iam", &sim.url, P_ONE, &["cluster_scan", "iac_scan"], None));
    config.push_str(&target("static", "static", &sim.url, P_TWO, &["cluster_scan", "iac_scan"], None));
    sb.write_config(&config);

    let run = sb.run(&["poll"]);
    run.expect_code(1);
    let calls = sim.sim.calls();
    let logins: Vec<_> = calls.iter().filter(|c| c.path == "/v3/auth/tokens").collect();
    assert_eq!(logins.len(), 1, "one refused login, not one per series: {calls:#?}");
    assert_eq!(logins[0].status, Some(401));
    assert!(sim.calls_for(P_ONE).is_empty(), "no HSS call without a token: {calls:#?}");
    let token_calls = sim.calls_for(P_TWO);
    assert_eq!(token_calls.len(), 1, "one refused token, then backing off: {token_calls:#?}");
    assert_eq!(token_calls[0].error_code.as_deref(), Some("APIGW.0301"));

    let rows = sb.history(&[]);
    let login = row(&rows, "iam", "cluster_scan");
    assert_eq!((&login["error_kind"], &login["http_status"]), (&Value::from("auth"), &Value::from(401)), "{login:#}");
    assert!(
        login["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("IAM login failed: The username or password is wrong"),
        "{login:#}"
    );
    let token = row(&rows, "static", "cluster_scan");
    assert_eq!((&token["error_kind"], &token["error_code"]), (&Value::from("auth"), &Value::from("APIGW.0301")));
    assert!(token["error_message"].as_str().unwrap_or_default().contains("decrypt token fail"), "{token:#}");
    for name in ["iam", "static"] {
        let skipped = row(&rows, name, "iac_scan");
        assert_eq!(skipped["error_code"], "SCANWATCH.BACKOFF", "{skipped:#}");
        assert!(skipped["error_message"].as_str().unwrap_or_default().contains(&format!("account `{name}`")));
    }

    let stored = database_bytes(&sb.db_path());
    for wrong in [WRONG_PASSWORD, WRONG_TOKEN] {
        assert!(!run.all_output().contains(wrong), "the output leaks `{wrong}`\n{run}");
        assert!(!stored.contains(wrong), "the database holds `{wrong}`");
    }
}

/// Project-scoped IAM: HSS denies one project (403 `HSS.0010`), and that target is listed first. The denial is about
/// that project, not the account's credentials: only its series backs off, its `poll_failing` names the project,
/// and the account's other target keeps being polled, run after run.
#[test]
fn a_denied_project_backs_off_alone_and_the_accounts_other_targets_keep_polling() {
    let denied =
        "fault = \"hss_error\"\nstatus = 403\ncode = \"HSS.0010\"\nmessage = \"no permission for this project\"";
    let mut scenario = scenario_head();
    scenario.push_str(&series(P_ONE, "cluster_scan", Some("all_granted_eps"), denied));
    scenario.push_str(&series(P_GOOD, "cluster_scan", None, &healthy(3)));
    let sim = SimServer::start(&scenario);

    let sb = Sandbox::new();
    let mut config = String::from("[schedule]\ninterval = \"5m\"\n");
    config.push_str(&aksk_account("prod", "SW_AK", "SW_SK"));
    config.push_str(&target("denied", "prod", &sim.url, P_ONE, &["cluster_scan"], Some("all_granted_eps")));
    config.push_str(&target("healthy", "prod", &sim.url, P_GOOD, &["cluster_scan"], None));
    sb.write_config(&config);

    for run_no in 0..3 {
        let run = sb.run(&["poll", "--format", "json"]);
        run.expect_code(1);
        assert!(run.stderr.contains("1 of 2 polls failed"), "run {run_no}: {run}");
    }
    // The denied project was called once (then backed off); the healthy one on every run.
    assert_eq!(sim.calls_for(P_ONE).len(), 1, "{:#?}", sim.calls_for(P_ONE));
    assert_eq!(sim.calls_for(P_GOOD).len(), 3);

    let rows = sb.history(&[]);
    let healthy_rows: Vec<&Value> = rows.iter().filter(|r| r["target"] == "healthy").collect();
    assert_eq!(healthy_rows.len(), 3);
    assert!(healthy_rows.iter().all(|r| r["ok"] == true), "{healthy_rows:#?}");
    let denied_rows: Vec<&Value> = rows.iter().filter(|r| r["target"] == "denied").collect();
    assert_eq!(
        (denied_rows[0]["error_kind"].as_str(), denied_rows[0]["http_status"].as_u64()),
        (Some("forbidden"), Some(403))
    );
    for later in &denied_rows[1..] {
        assert_eq!(later["error_code"], "SCANWATCH.BACKOFF", "{later:#}");
        let message = later["error_message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("project {P_ONE} (enterprise project all_granted_eps)")), "{later:#}");
    }

    // Only the denied target alerts, and it says which project HSS denies.
    let alerts: Vec<Value> = parse_rows(&sb.run(&["alerts", "--format", "json"]).expect_code(0).stdout);
    let failing: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "poll_failing").collect();
    assert_eq!(failing.len(), 1, "{alerts:#?}");
    assert_eq!(failing[0]["target"], "denied");
    let summary = failing[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("HSS denies access to project {P_ONE} (enterprise project all_granted_eps)"))
            && summary.contains("HSS.0010"),
        "{summary}"
    );
}
