//! `scanwatch validate` names every problem by its key path and exits 1, or says ok and exits 0; `config show`
//! prints the effective configuration with every secret redacted but says where each one comes from.

mod common;

use common::*;
use serde_json::Value;

const ACCOUNT: &str = r#"
[[accounts]]
name = "prod"
ak_env = "SW_AK"
sk_env = "SW_SK"
"#;

const TARGET: &str = r#"
[[targets]]
name = "prod-cn-north-4"
account = "prod"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcdef"
"#;

/// Runs `validate` on `config` and returns the run after checking it failed with exit code 1 and printed `key`.
fn assert_rejected(config: &str, key: &str, also: &[&str]) -> Run {
    let sb = Sandbox::new();
    sb.write_config(config);
    let run = sb.run(&["validate"]);
    run.expect_code(1);
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("- {key}:")))
        .unwrap_or_else(|| panic!("validate names `{key}`\n{run}"));
    for text in also {
        assert!(line.contains(text), "the problem of `{key}` says `{text}`: {line}");
    }
    assert!(!run.stdout.contains(": ok ("), "a bad config is not ok\n{run}");
    run
}

#[test]
fn a_good_config_validates_ok() {
    let sb = Sandbox::new();
    sb.write_config(&format!("[schedule]\ninterval = \"5m\"\n{ACCOUNT}{TARGET}"));
    let run = sb.run(&["validate"]);
    run.expect_code(0);
    assert!(run.stdout.contains(": ok (1 account, 1 target, 2 polled series every 5m)"), "{run}");
    assert!(!sb.db_path().exists(), "validate opens no database");
}

#[test]
fn validate_names_an_unknown_key() {
    assert_rejected(&format!("{ACCOUNT}{TARGET}colour = \"blue\"\n"), "targets[0].colour", &["unknown key"]);
    assert_rejected(
        &format!("[schedule]\nintervall = \"5m\"\n{ACCOUNT}{TARGET}"),
        "schedule.intervall",
        &["unknown key"],
    );
}

#[test]
fn validate_names_a_bad_duration() {
    assert_rejected(
        &format!("[schedule]\ninterval = \"5 parsecs\"\n{ACCOUNT}{TARGET}"),
        "schedule.interval",
        &["5 parsecs", "not a duration"],
    );
}

#[test]
fn validate_names_a_bad_region() {
    let target = TARGET.replace("cn-north-4", "mars-north-1");
    assert_rejected(&format!("{ACCOUNT}{target}"), "targets[0].region", &["mars-north-1", "not an HSS region"]);
}

#[test]
fn validate_names_a_target_whose_account_does_not_exist() {
    let target = TARGET.replace("account = \"prod\"", "account = \"ghost\"");
    assert_rejected(&format!("{ACCOUNT}{target}"), "targets[0].account", &["ghost", "prod"]);
}

#[test]
fn validate_names_a_missing_secret() {
    let unset = ACCOUNT.replace("SW_SK", "SW_NOT_SET");
    assert_rejected(&format!("{unset}{TARGET}"), "accounts[0].sk_env", &["SW_NOT_SET", "not set"]);
    // Without sk_env the SDK's default variables are tried, and the child's environment has neither.
    let defaults = ACCOUNT.replace("sk_env = \"SW_SK\"\n", "");
    assert_rejected(
        &format!("{defaults}{TARGET}"),
        "accounts[0].sk",
        &["missing secret", "HUAWEICLOUD_SDK_SK", "CLOUD_SDK_SK"],
    );
}

#[test]
fn validate_names_an_interval_the_api_budget_cannot_meet() {
    // Two targets × two task types = 4 calls per cycle at 5 calls a minute need 48s.
    let second = TARGET.replace("prod-cn-north-4", "prod-2").replace("0123456789abcdef", "fedcba9876543210");
    let run = assert_rejected(
        &format!("[schedule]\ninterval = \"30s\"\n{ACCOUNT}calls_per_minute = 5\n{TARGET}{second}"),
        "schedule.interval",
        &["cannot fit the API budget", "48s"],
    );
    assert!(run.stdout.contains("accounts[0] `prod`"), "names the account\n{run}");
}

#[test]
fn validate_refuses_a_duration_that_would_overflow_a_date_later() {
    // Accepted before, then every poll panicked with `DateTime - TimeDelta overflowed`.
    assert_rejected(
        &format!("{ACCOUNT}{TARGET}[rules.total_stalled]\nwindow = \"300000y\"\n"),
        "rules.total_stalled.window",
        &["300000y", "too long", "at most 3650d"],
    );
    assert_rejected(
        &format!("{ACCOUNT}{TARGET}[targets.rules.stuck_running]\nfor = \"18446744073709551615s\"\n"),
        "targets[0].rules.stuck_running.for",
        &["at most 3650d"],
    );
}

#[test]
fn validate_names_a_bad_override_by_its_environment_variable() {
    let sb = Sandbox::new();
    sb.write_config(&format!("{ACCOUNT}{TARGET}"));
    let run = sb.run_with_env(&["validate"], &[("SCANWATCH__STORAGE__RETENTION", "300000y")]);
    run.expect_code(1);
    assert!(run.stdout.contains("- SCANWATCH__STORAGE__RETENTION: `300000y` is too long; at most 36500d"), "{run}");
    assert!(!run.stdout.contains("- storage.retention"), "{run}");
}

#[test]
fn validate_accepts_a_zero_repeat_interval_as_no_reminders() {
    let sb = Sandbox::new();
    sb.write_config(&format!("{ACCOUNT}{TARGET}[alerting]\nrepeat_interval = \"0s\"\n"));
    sb.run(&["validate"]).expect_code(0);
}

#[test]
fn validate_refuses_a_boolean_that_is_not_a_toml_boolean() {
    for value in ["\"yes\"", "\"0\"", "1"] {
        assert_rejected(
            &format!("{ACCOUNT}{TARGET}[alerting]\nsend_resolved = {value}\n"),
            "alerting.send_resolved",
            &["not a boolean", "true"],
        );
    }
}

#[test]
fn validate_refuses_a_project_id_that_is_not_32_hex_characters() {
    let target = TARGET.replace("0123456789abcdef0123456789abcdef", "my-project");
    assert_rejected(&format!("{ACCOUNT}{target}"), "targets[0].project_id", &["my-project", "32", "e.g."]);
}

#[test]
fn validate_warns_with_the_numbers_when_a_cycle_takes_most_of_the_interval() {
    // 7 targets × 2 task types = 14 series at 5 calls/min take 2m48s of every 5m: more than half.
    let targets: String = (1..=7)
        .map(|i| {
            TARGET
                .replace("prod-cn-north-4", &format!("prod-{i}"))
                .replace("0123456789abcdef0123456789abcdef", &format!("{i:032x}"))
        })
        .collect();
    let sb = Sandbox::new();
    sb.write_config(&format!("[schedule]\ninterval = \"5m\"\n{ACCOUNT}{targets}"));
    let run = sb.run(&["validate"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "warning: schedule.interval: accounts[0] `prod`: 14 series at 5 calls/min per user take about 2m48s of every 5m cycle"
        ),
        "{run}"
    );
    assert!(run.stdout.contains(": ok (1 account, 7 targets, 14 polled series every 5m)"), "{run}");
}

#[test]
fn every_problem_is_listed_at_once() {
    let target = TARGET.replace("cn-north-4", "mars-north-1").replace("account = \"prod\"", "account = \"ghost\"");
    let run = assert_rejected(&format!("[schedule]\ninterval = \"soon\"\n{ACCOUNT}{target}"), "schedule.interval", &[]);
    for key in ["targets[0].account", "targets[0].region"] {
        assert!(run.stdout.contains(&format!("- {key}:")), "also names {key}\n{run}");
    }
}

/// Accounts of every kind, with secrets from the environment and from a file beside the config.
fn config_with_every_secret(sb: &Sandbox) -> String {
    std::fs::write(sb.dir().join("hss-sk"), format!("{OTHER_SK}\n")).expect("write the secret file");
    format!(
        r#"
[[accounts]]
name = "temporary"
ak_env = "SW_STS_AK"
sk_env = "SW_STS_SK"
security_token_env = "SW_STS_TOKEN"

[[accounts]]
name = "from-file"
ak_env = "SW_OTHER_AK"
sk_file = "hss-sk"

[[accounts]]
name = "static"
auth = "token"
token_env = "SW_TOKEN"

[[accounts]]
name = "iam"
auth = "password"
domain = "{DOMAIN}"
user = "{USER}"
password_env = "SW_PASSWORD"

[[targets]]
name = "t"
account = "temporary"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcdef"
"#
    )
}

#[test]
fn config_show_prints_no_secret_but_where_each_comes_from() {
    let sb = Sandbox::new();
    sb.write_config(&config_with_every_secret(&sb));

    let toml = sb.run(&["config", "show"]);
    toml.expect_code(0);
    assert_no_secret(&toml.all_output(), "config show");
    for shown in ["SW_STS_SK", "SW_STS_TOKEN", "SW_TOKEN", "SW_PASSWORD", "hss-sk", "[redacted]"] {
        assert!(toml.stdout.contains(shown), "config show mentions {shown}\n{toml}");
    }

    let json = sb.run(&["config", "show", "--format", "json"]);
    json.expect_code(0);
    assert_no_secret(&json.all_output(), "config show --format json");
    let c: Value = serde_json::from_str(&json.stdout).expect("config show --format json is JSON");
    let accounts = c["accounts"].as_array().expect("accounts");
    let auth = |i: usize| accounts[i].clone(); // the auth kind and its secrets sit on the account itself
    let redacted_from = |secret: &Value, from: &str, name: &str| {
        assert_eq!(secret["value"], "[redacted]", "{secret:#}");
        assert_eq!(secret["from"], from, "{secret:#}");
        assert_eq!(secret["name"], name, "{secret:#}");
    };
    redacted_from(&auth(0)["sk"], "env", "SW_STS_SK");
    redacted_from(&auth(0)["security_token"], "env", "SW_STS_TOKEN");
    redacted_from(&auth(1)["ak"], "env", "SW_OTHER_AK");
    redacted_from(&auth(1)["sk"], "file", &sb.dir().join("hss-sk").display().to_string());
    redacted_from(&auth(2)["token"], "env", "SW_TOKEN");
    redacted_from(&auth(3)["password"], "env", "SW_PASSWORD");
}

#[test]
fn a_broken_config_stops_poll_with_the_usage_exit_code() {
    let sb = Sandbox::new();
    sb.write_config(&format!("{ACCOUNT}{TARGET}colour = \"blue\"\n"));
    let run = sb.run(&["poll"]);
    run.expect_code(2);
    assert!(run.stderr.contains("targets[0].colour"), "{run}");
    assert!(!sb.db_path().exists(), "nothing was opened");
}

/// `scanwatch history | head` must end quietly when the reader goes away, like any Unix tool, not panic with
/// "failed printing to stdout" and exit 101.
#[test]
fn a_reader_that_stops_early_ends_history_quietly() {
    use scanwatch::model::{PollRecord, SeriesKey, TaskStats, TaskType};

    let sb = Sandbox::new();
    sb.write_config(&format!("{ACCOUNT}{TARGET}"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = scanwatch::store::Store::open(&sb.db_path()).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let key = SeriesKey {
            target: "prod-cn-north-4".into(),
            account: "prod".into(),
            region: "cn-north-4".into(),
            project_id: "0123456789abcdef0123456789abcdef".into(),
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        };
        let id = tx.ensure_series(&key).await.unwrap();
        // Far more than a pipe buffer (64 KiB) of output, so the writer must meet the closed pipe.
        for i in 0..3_000_i64 {
            let rec = PollRecord {
                task: None,
                polled_at: chrono::DateTime::from_timestamp(1_800_000_000 + i * 300, 0).unwrap(),
                latency_ms: 12,
                outcome: Ok(TaskStats { total_num: i as u64, running_num: 0, last_task_start_time: None }),
                http_status: Some(200),
                request_id: Some(format!("req-{i}")),
            };
            tx.insert_snapshot(id, &rec, true).await.unwrap();
        }
        tx.commit().await.unwrap();
        store.close().await;
    });

    let config = sb.config_path();
    let (status, stderr) = run_with_stdout_closed(&sb, &["--config", config.to_str().unwrap(), "history"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE like `cat`: {status:?} {stderr}");
}

/// `scanwatch demo | head` stops the demo quietly at its first line once the reader is gone, exit 0, no panic.
#[test]
fn a_reader_that_stops_early_ends_the_demo_quietly() {
    let sb = Sandbox::new();
    let (status, stderr) = run_with_stdout_closed(&sb, &["demo"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Runs `scanwatch ARGS` (in the sandbox, with its secrets) with stdout's reader gone before the first line; returns
/// how it ended and its stderr, which must show no panic.
fn run_with_stdout_closed(sb: &Sandbox, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_scanwatch"))
        .args(args)
        .current_dir(sb.dir())
        .env_clear()
        .envs(secret_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked") && !stderr.contains("failed printing"), "{stderr}");
    (out.status, stderr)
}

/// `silence add` refuses a matcher no alert could ever match: a label key no alert has, or an empty value.
#[test]
fn silence_add_refuses_an_unknown_label_key_or_an_empty_value() {
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{ACCOUNT}\n[[targets]]\nname = \"t1\"\naccount = \"prod\"\nregion = \"cn-north-4\"\n\
         project_id = \"0123456789abcdef0123456789abcdef\"\nlabels = {{ team = \"secops\" }}\n"
    ));
    let unknown = sb.run(&["silence", "add", "--match", "tagret=prod-*", "--for", "1h", "--comment", "typo"]);
    unknown.expect_code(1);
    assert!(
        unknown.stderr.contains("no alert has the label `tagret`") && unknown.stderr.contains("target"),
        "{unknown}"
    );
    let empty = sb.run(&["silence", "add", "--match", "target=", "--for", "1h", "--comment", "empty"]);
    empty.expect_code(1);
    assert!(empty.stderr.contains("the value is empty"), "{empty}");
    // A user label of a configured target, and a built-in one, are fine.
    sb.run(&[
        "silence",
        "add",
        "--match",
        "team=secops",
        "--match",
        "rule=stuck_running",
        "--for",
        "1h",
        "--comment",
        "ok",
    ])
    .expect_code(0);
}
