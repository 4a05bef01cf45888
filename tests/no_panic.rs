//! No input may panic the process: every flag of every command (but the long-running `run`, `demo` and `simulate`,
//! whose flags are covered by the same parsers) is driven with extreme and garbage values through the real command
//! line and the real command functions, in-process, against a real database. Each run ends in a result — success or
//! a clear error — never a panic.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use clap::Parser;
use futures_util::FutureExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use scanwatch::cli::{Cli, run};

/// Values at and past every edge a time, a duration or a count can have, and plain garbage.
fn extreme() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("300000y".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("99999999999999999999999d".to_string()),
        Just("0s".to_string()),
        Just("1ns".to_string()),
        Just("+262143-12-31T23:59:59Z".to_string()),
        Just("-262143-01-01T00:00:00Z".to_string()),
        Just("4294967295".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just(String::new()),
        (0u64..u64::MAX, prop_oneof![Just("s"), Just("m"), Just("h"), Just("d"), Just("y"), Just("ms")])
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        "\\PC{0,20}",
    ]
}

/// A config with one target (its endpoint a closed loopback port, so `poll` fails fast) and one webhook channel
/// (also a closed port), and a database that exists.
fn sandbox(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("ak"), "HPUANOPANIC000000001\n").unwrap();
    std::fs::write(dir.join("sk"), "noPanicSecret000000000000000000000000001\n").unwrap();
    let config = format!(
        r#"[storage]
path = "{db}"
[[accounts]]
name = "prod"
ak_file = "{ak}"
sk_file = "{sk}"
[[targets]]
name = "t1"
account = "prod"
region = "cn-north-4"
endpoint = "http://127.0.0.1:9"
project_id = "0123456789abcdef0123456789abcdef"
task_types = ["cluster_scan"]
labels = {{ env = "prod" }}
[[channels]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#,
        db = dir.join("scanwatch.db").display(),
        ak = dir.join("ak").display(),
        sk = dir.join("sk").display(),
    );
    let path = dir.join("scanwatch.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// One command line per command, each flag given a drawn value.
fn command_lines(v: &mut impl FnMut() -> String) -> Vec<Vec<String>> {
    let s = |x: &str| x.to_string();
    vec![
        vec![s("history"), s("--since"), v(), s("--until"), v()],
        vec![s("history"), s("--limit"), v(), s("--target"), v(), s("--format"), v()],
        vec![s("alerts"), s("--all"), s("--format"), s("json")],
        vec![s("transitions"), s("--since"), v(), s("--fingerprint"), v()],
        vec![s("notifications"), s("--status"), v(), s("--limit"), v()],
        vec![s("replay"), s("--since"), v(), s("--target"), v()],
        vec![s("replay"), s("--since"), v(), s("--format"), s("csv")],
        vec![s("silence"), s("add"), s("--match"), format!("target={}", v()), s("--for"), v(), s("--comment"), v()],
        vec![s("silence"), s("add"), s("--match"), v(), s("--until"), v(), s("--comment"), s("c"), s("--author"), v()],
        vec![s("silence"), s("list"), s("--all"), s("--format"), v()],
        vec![s("silence"), s("expire"), v()],
        vec![s("ack"), v(), s("--comment"), v()],
        vec![s("config"), s("show"), s("--format"), v()],
        vec![s("validate")],
        vec![s("--clock-offset"), v(), s("history"), s("--since"), v()],
        vec![s("poll"), s("--no-store"), s("--deliver-timeout"), v(), s("--format"), s("csv")],
        vec![s("notify-test"), s("--channel"), s("hook"), s("--target"), v()],
    ]
}

#[test]
fn no_flag_value_of_any_command_panics() {
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The database exists (read-only commands never create one).
    let store = rt.block_on(scanwatch::store::Store::open(&dir.path().join("scanwatch.db"))).unwrap();
    rt.block_on(store.close());

    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut draw = || extreme().new_tree(&mut runner).unwrap().current();
    let mut ran = 0;
    for _ in 0..12 {
        for line in command_lines(&mut draw) {
            let args: Vec<String> = ["scanwatch", "--config", &config.display().to_string()]
                .into_iter()
                .map(String::from)
                .chain(line)
                .collect();
            // A value clap refuses is a usage error, printed and exit 2: fine. The rest runs the command.
            let Ok(cli) = Cli::try_parse_from(&args) else { continue };
            let outcome = rt.block_on(AssertUnwindSafe(run(cli)).catch_unwind());
            assert!(outcome.is_ok(), "panicked: {args:?}");
            ran += 1;
        }
    }
    assert!(ran > 60, "most command lines parse and run: {ran}");

    // The issue's cases, exactly.
    for line in [
        vec!["history", "--since", "300000y"],
        vec!["silence", "add", "--match", "target=t1", "--for", "300000y", "--comment", "long"],
        vec!["transitions", "--since", "18446744073709551615s"],
        vec!["replay", "--since", "300000y"],
    ] {
        let args: Vec<String> = ["scanwatch", "--config", &config.display().to_string()]
            .into_iter()
            .chain(line)
            .map(String::from)
            .collect();
        let cli = Cli::try_parse_from(&args).unwrap();
        let outcome = rt.block_on(AssertUnwindSafe(run(cli)).catch_unwind());
        let result = outcome.unwrap_or_else(|_| panic!("panicked: {args:?}"));
        assert!(result.is_ok(), "{args:?}: {result:?}");
    }
}

/// Extreme durations and counts in every rule and lifecycle key, through config → poll: `validate` refuses what is
/// out of bounds (naming the key), and whatever it accepts is recorded and evaluated by the live path — a real
/// SQLite file, polls a minute apart, the rules over stored history — without a panic. `window = "300000y"` used
/// to pass `validate` and then panic on the first poll (`DateTime - TimeDelta overflowed`).
#[test]
fn every_duration_validate_accepts_can_be_polled_and_evaluated() {
    use scanwatch::config::{Config, Environment};
    use scanwatch::model::{PollRecord, TaskStats};
    use scanwatch::poller::{Outbox, record_and_evaluate};

    use scanwatch::config::limits::{ALERTING, RETENTION, RULE_WINDOW};
    let keys = [
        ("rules.no_recent_scan", "max_age", RULE_WINDOW),
        ("rules.stuck_running", "for", RULE_WINDOW),
        ("rules.total_stalled", "window", RULE_WINDOW),
        ("rules.poll_failing", "for", RULE_WINDOW),
        ("alerting", "pending_for", ALERTING),
        ("alerting", "resolve_after", ALERTING),
        ("alerting", "repeat_interval", ALERTING),
        ("alerting", "max_delivery_age", ALERTING),
        ("storage", "retention", RETENTION),
    ];
    // Mostly the largest values validate accepts (where overflow would bite), sometimes anything at all.
    let value_for = |limit: std::time::Duration| {
        let secs = limit.as_secs();
        prop_oneof![
            4 => Just(format!("{secs}s")),
            2 => Just(format!("{}s", secs - 1)),
            1 => Just("1s".to_string()),
            1 => extreme(),
        ]
    };
    let env = Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK"), ("HUAWEICLOUD_SDK_SK", "SK")]);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(scanwatch::store::Store::open(&dir.path().join("p.db"))).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..40 {
        let mut text = String::from(
            "[[accounts]]\nname = \"prod\"\n[[targets]]\nname = \"t\"\naccount = \"prod\"\nregion = \"cn-north-4\"\n\
             project_id = \"0123456789abcdef0123456789abcdef\"\ntask_types = [\"cluster_scan\"]\n",
        );
        let mut sections: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (section, key, limit) in keys {
            let value = value_for(limit).new_tree(&mut runner).unwrap().current();
            sections.entry(section).or_default().push(format!("{key} = {}", toml_string(&value)));
        }
        sections
            .entry("rules.poll_failing")
            .or_default()
            .push(format!("after = {}", [1u64, 3, 1000, 1, 0, 1001, i64::MAX as u64][case % 7]));
        for (section, lines) in &sections {
            text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
        }
        let config = match Config::from_toml_str(&text, dir.path(), &env) {
            Ok(c) => c,
            Err(e) => {
                assert!(!e.problems.is_empty() && e.problems.iter().all(|p| !p.key.is_empty()), "{e:?}");
                refused += 1;
                continue;
            }
        };
        accepted += 1;
        let (target, key) = config.series().next().unwrap();
        let (rules, lifecycle) = (target.rules.rule_set(), config.alerting.lifecycle());
        let id = rt.block_on(store.ensure_series(&key)).unwrap();
        let start = chrono::Utc::now() + chrono::TimeDelta::days(case as i64);
        for minute in 0..3 {
            let at = start + chrono::TimeDelta::minutes(minute);
            let record = PollRecord {
                task: None,
                polled_at: at,
                latency_ms: 1,
                outcome: Ok(TaskStats { total_num: 1, running_num: 1, last_task_start_time: Some(0) }),
                http_status: Some(200),
                request_id: None,
            };
            let outcome = rt.block_on(
                AssertUnwindSafe(record_and_evaluate(
                    &store,
                    id,
                    &key,
                    &rules,
                    &lifecycle,
                    &record,
                    true,
                    Outbox::default(),
                ))
                .catch_unwind(),
            );
            assert!(outcome.is_ok_and(|r| r.is_ok()), "case {case} panicked or failed:\n{text}");
        }
    }
    assert!(accepted > 0 && refused > 0, "both sides of the bounds were drawn: {accepted} accepted, {refused} refused");
    // The issue's values, exactly: refused, naming the key.
    for (section, key, value) in
        [("rules.total_stalled", "window", "300000y"), ("rules.stuck_running", "for", "18446744073709551615s")]
    {
        let text = format!(
            "[[accounts]]\nname = \"prod\"\n[[targets]]\nname = \"t\"\naccount = \"prod\"\nregion = \"cn-north-4\"\n\
             project_id = \"0123456789abcdef0123456789abcdef\"\n[{section}]\n{key} = \"{value}\"\n"
        );
        let e = Config::from_toml_str(&text, dir.path(), &env).unwrap_err();
        assert!(e.problems.iter().any(|p| p.key == format!("{section}.{key}")), "{e:?}");
    }
}

/// A drawn value as a TOML string (quoted and escaped).
fn toml_string(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}
