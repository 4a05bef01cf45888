//! No secret value ever leaves scanwatch: with every kind of credential and channel secret configured, debug-level
//! logs of `poll` and of `run`, `config show`, the read commands and the database file (and its WAL) carry none of
//! them.

mod common;

use std::time::{Duration, Instant};

use common::*;

const WHSEC: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The key inside the `whsec_` secret, which must not show up decoded-from or on its own either.
const WHSEC_KEY: &str = "C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const BEARER: &str = "webhook-bearer-token-value-0002";
const FEISHU_TOKEN: &str = "feishu0hook0url0token0777";
const FEISHU_SECRET: &str = "feishu-signing-secret-0003";
const SMTP_PASSWORD: &str = "smtp-password-value-0004";
const HEARTBEAT_TOKEN: &str = "heartbeat0uuid0secret0005";

fn extra_secrets() -> [&'static str; 7] {
    [WHSEC, WHSEC_KEY, BEARER, FEISHU_TOKEN, FEISHU_SECRET, SMTP_PASSWORD, HEARTBEAT_TOKEN]
}

fn assert_clean(text: &str, what: &str) {
    assert_no_secret(text, what);
    for secret in extra_secrets() {
        assert!(!text.contains(secret), "{what} leaks the secret `{secret}`:\n{text}");
    }
}

/// Everything configured at once, each secret from the environment. Returns the receivers that must stay alive.
fn setup(sb: &mut Sandbox) -> (SimServer, Receiver, Receiver, Receiver) {
    let sim = SimServer::start(
        &(scenario_head()
            + &series("p-aksk", "cluster_scan", None, "fault = \"server_error\"\nstatus = 503")
            + &series("p-sts", "cluster_scan", None, "total_num = 3\nrunning_num = 0\nlast_task_age = \"1m\"")
            + &series("p-iam", "cluster_scan", None, "total_num = 4\nrunning_num = 0\nlast_task_age = \"1m\"")
            + &series("p-tok", "cluster_scan", None, "total_num = 5\nrunning_num = 0\nlast_task_age = \"1m\"")),
    );
    let (hook, feishu, heartbeat) = (Receiver::start(), Receiver::start(), Receiver::start());
    for (name, value) in [
        ("SW_WHSEC", WHSEC.to_string()),
        ("SW_BEARER", BEARER.to_string()),
        ("SW_FEISHU_URL", format!("{}/open-apis/bot/v2/hook/{FEISHU_TOKEN}", feishu.url)),
        ("SW_FEISHU_SECRET", FEISHU_SECRET.to_string()),
        ("SW_SMTP_PASSWORD", SMTP_PASSWORD.to_string()),
        ("SW_HEARTBEAT_URL", format!("{}/ping/{HEARTBEAT_TOKEN}", heartbeat.url)),
    ] {
        sb.set_env(name, &value);
    }
    let smtp_port = closed_port_url().rsplit(':').next().expect("a port").to_string();
    let mut config = String::from("[schedule]\ninterval = \"1s\"\n[rules.poll_failing]\nafter = 1\n");
    config += &aksk_account("aksk", "SW_AK", "SW_SK");
    config += &aksk_account("sts", "SW_STS_AK", "SW_STS_SK");
    config += "security_token_env = \"SW_STS_TOKEN\"\n";
    config += &format!(
        "\n[[accounts]]\nname = \"iam\"\nauth = \"password\"\ndomain = \"{DOMAIN}\"\nuser = \"{USER}\"\n\
         password_env = \"SW_PASSWORD\"\niam_endpoint = \"{}\"\ncalls_per_minute = 600\n",
        sim.url
    );
    config += "\n[[accounts]]\nname = \"tok\"\nauth = \"token\"\ntoken_env = \"SW_TOKEN\"\ncalls_per_minute = 600\n";
    for (t, account) in [("p-aksk", "aksk"), ("p-sts", "sts"), ("p-iam", "iam"), ("p-tok", "tok")] {
        config += &target(t, account, &sim.url, t, &["cluster_scan"], None);
    }
    config += &format!(
        "\n[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_env = \"SW_WHSEC\"\n\
         bearer_token_env = \"SW_BEARER\"\n\
         \n[[channels]]\nname = \"feishu\"\nkind = \"feishu\"\nurl_env = \"SW_FEISHU_URL\"\nsecret_env = \"SW_FEISHU_SECRET\"\n\
         \n[[channels]]\nname = \"mail\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\n\
         tls = \"none\"\nusername = \"scanwatch\"\npassword_env = \"SW_SMTP_PASSWORD\"\n\
         from = \"scanwatch <scanwatch@example.com>\"\nto = [\"secops@example.com\"]\n\
         \n[heartbeat]\nurl_env = \"SW_HEARTBEAT_URL\"\n",
        hook.url
    );
    sb.write_config(&config);
    (sim, hook, feishu, heartbeat)
}

/// The read side and the database, after the runs.
fn assert_read_side_clean(sb: &Sandbox) {
    for args in [
        &["config", "show"][..],
        &["notifications", "--format", "json"],
        &["notifications"],
        &["history", "--format", "json"],
        &["alerts", "--all", "--format", "json"],
        &["transitions", "--format", "json"],
    ] {
        let run = sb.run(args);
        run.expect_code(0);
        assert_clean(&run.all_output(), &format!("`scanwatch {}`", args.join(" ")));
    }
    let notifications = parse_rows(&sb.run(&["notifications", "--format", "json"]).stdout);
    assert!(notifications.len() >= 3, "every channel was tried: {notifications:#?}");
    assert_clean(&database_bytes(&sb.db_path()), "the database file");
}

#[test]
fn a_debug_poll_with_every_kind_of_secret_prints_and_stores_none_of_them() {
    let mut sb = Sandbox::new();
    let (sim, hook, _feishu, _heartbeat) = setup(&mut sb);
    let run = sb.run(&["--log-level", "debug", "poll", "--deliver-timeout", "5s"]);
    run.expect_code(1);
    assert_clean(&run.all_output(), "`poll --log-level debug`");
    assert!(run.stderr.lines().count() > 10, "debug logging was on:\n{run}");
    assert!(!hook.received().is_empty(), "the webhook was called");
    assert_eq!(sim.hss_calls().len(), 4, "every account authenticated and polled");
    let ok = sb.history(&[]).iter().filter(|r| r["ok"] == true).count();
    assert_eq!(ok, 3, "AK/SK+token, IAM password and static token accounts polled fine");
    assert_read_side_clean(&sb);
}

#[test]
fn a_debug_daemon_run_with_every_kind_of_secret_logs_and_stores_none_of_them() {
    let mut sb = Sandbox::new();
    let (_sim, hook, _feishu, heartbeat) = setup(&mut sb);
    let (mut child, logs) = sb.spawn_logged(&["--log-level", "debug", "run"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut lines = wait_for_line(&logs, "cycle done", 3, deadline).unwrap_or_else(|lines| {
        let _ = child.kill();
        panic!("no 3 cycles:\n{}", lines.join("\n"));
    });
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0, "SIGTERM exits 0");
    lines.extend(logs.try_iter());
    let log = lines.join("\n");
    assert!(lines.iter().any(|l| l.contains("DEBUG")), "debug logging was on:\n{log}");
    assert_clean(&log, "`run --log-level debug`");
    assert!(!hook.received().is_empty(), "the webhook was called");
    assert!(!heartbeat.received().is_empty(), "the heartbeat was pinged");
    assert_read_side_clean(&sb);
}

/// An operator's shell beside the service has no account secrets: the commands that only read the database need
/// only `[storage]`, while the ones that call HSS still say which secret is missing.
#[test]
fn read_only_commands_need_only_storage_and_never_the_account_secrets() {
    let scenario =
        scenario_head() + &series("ro", "cluster_scan", None, "total_num = 1\nrunning_num = 0\nlast_task_age = \"1h\"");
    let sim = SimServer::start(&scenario);
    let mut sb = Sandbox::new();
    sb.write_config(
        &(aksk_account("acct", "SW_AK", "SW_SK") + &target("ro", "acct", &sim.url, "ro", &["cluster_scan"], None)),
    );
    sb.run(&["poll"]).expect_code(0);

    sb.unset_env("SW_AK");
    sb.unset_env("SW_SK");
    for args in [
        &["history", "--format", "json"][..],
        &["alerts"],
        &["alerts", "--all"],
        &["transitions"],
        &["notifications"],
        &["replay", "--since", "1d"],
        &["silence", "list"],
    ] {
        let run = sb.run(args);
        run.expect_code(0);
        assert!(!run.stderr.contains("SW_SK"), "{args:?} does not even mention the secret: {run}");
    }
    assert_eq!(sb.history(&[]).len(), 1, "and the rows are there");

    let poll = sb.run(&["poll"]);
    poll.expect_code(2);
    assert!(poll.all_output().contains("SW_SK"), "poll names the missing variable: {poll}");
}
