use super::*;

const MINIMAL: &str = r#"
[[accounts]]
name = "prod"
[[targets]]
name = "t1"
account = "prod"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcd01"
"#;

fn env() -> Environment {
    Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK1"), ("HUAWEICLOUD_SDK_SK", "SK1")])
}

fn load(text: &str, env: &Environment) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/nonexistent"), env)
}

fn keys(err: ConfigError) -> Vec<String> {
    err.problems.into_iter().map(|p| p.key).collect()
}

#[test]
fn the_example_config_parses_and_validates() {
    let text = include_str!("../../config/scanwatch.example.toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hss-ak"), "AKFILE\n").unwrap();
    std::fs::write(dir.path().join("hss-sk"), "SKFILE\n").unwrap();
    let env = Environment::from_pairs([
        ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
        ("STAGING_HSS_AK", "a"),
        ("STAGING_HSS_SK", "b"),
        ("PARTNER_IAM_PASSWORD", "c"),
        ("SCANWATCH_HOOK_URL", "https://hooks.example.com/scanwatch"),
        ("SCANWATCH_FEISHU_URL", "https://open.feishu.cn/open-apis/bot/v2/hook/x"),
        ("SCANWATCH_FEISHU_SECRET", "s"),
        ("SCANWATCH_SMTP_PASSWORD", "p"),
        ("SCANWATCH_HEARTBEAT_URL", "https://hc-ping.com/u"),
    ]);
    let c = Config::from_toml_str(text, Path::new("/etc/scanwatch"), &env).unwrap();
    assert_eq!(c.targets.len(), 4);
    assert_eq!(c.series().count(), 6);
    assert_eq!(c.targets[3].endpoint.as_str(), "https://hss.eu-west-101.myhuaweicloud.eu/");
    assert_eq!(c.targets[1].rules.no_recent_scan.max_age, hours(7 * 24));
    assert_eq!(c.targets[0].rules.no_recent_scan.max_age, hours(24));
    assert!(!c.targets[2].rules.total_stalled.enabled);
    let AccountAuth::Aksk { sk, .. } = &c.accounts[0].auth else { panic!("aksk") };
    assert_eq!(sk.value.expose(), "SKFILE");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.channels.len(), 3);
    assert!(c.heartbeat.is_some());
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let c = load(MINIMAL, &env()).unwrap();
    assert_eq!(c.schedule.interval, Duration::from_secs(300));
    assert_eq!(c.storage.path, PathBuf::from("scanwatch.db"));
    assert_eq!(c.targets[0].task_types, TaskType::ALL.to_vec());
    assert_eq!(c.accounts[0].calls_per_minute, 5);
    assert_eq!(c.rules, Rules::default());
    assert_eq!(c.alerting, Alerting::default());
}

#[test]
fn state_directory_sets_the_default_database_path() {
    let mut e = env().vars().clone();
    e.insert("STATE_DIRECTORY".into(), "/var/lib/scanwatch".into());
    let c = load(MINIMAL, &Environment::from_pairs(e)).unwrap();
    assert_eq!(c.storage.path, PathBuf::from("/var/lib/scanwatch/scanwatch.db"));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
[schedule]
interval = "5 parsecs"
[[accounts]]
name = "prod"
sk_env = "NOPE_NOT_SET"
[[targets]]
name = "t1"
account = "ghost"
region = "mars-north-1"
project_id = "0123456789abcdef0123456789abcd01"
task_types = ["cluster_scan", "vuln_scan"]
"#;
    let env = Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK1")]);
    let k = keys(load(text, &env).unwrap_err());
    for expected in [
        "schedule.interval",
        "accounts[0].sk_env",
        "targets[0].account",
        "targets[0].region",
        "targets[0].task_types[1]",
    ] {
        assert!(k.contains(&expected.to_string()), "{expected} missing from {k:?}");
    }
}

#[test]
fn unknown_keys_are_all_named() {
    let text = format!(
        "{MINIMAL}\n[storage]\nretension = \"9d\"\n[[targets]]\nname=\"t2\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"0123456789abcdef0123456789abcd02\"\ncolour = \"red\"\n"
    );
    let k = keys(load(&text, &env()).unwrap_err());
    assert_eq!(k, vec!["storage.retension", "targets[1].colour"]);
}

#[test]
fn without_a_server_section_there_is_no_http_server() {
    assert!(load(MINIMAL, &env()).unwrap().server.is_none());
}

#[test]
fn a_loopback_listen_needs_no_token() {
    for listen in ["127.0.0.1:9464", "[::1]:9464", "[::ffff:127.0.0.1]:9464"] {
        let text = format!("{MINIMAL}\n[server]\nlisten = \"{listen}\"\n");
        let server = load(&text, &env()).unwrap().server.unwrap();
        assert_eq!(server.listen, listen.parse().unwrap());
        assert!(server.token.is_none());
    }
}

#[test]
fn a_non_loopback_listen_without_a_token_is_refused_and_says_why() {
    for listen in ["0.0.0.0:9464", "10.0.0.5:9464", "[::]:9464"] {
        let text = format!("{MINIMAL}\n[server]\nlisten = \"{listen}\"\n");
        let e = load(&text, &env()).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["server.token"], "{listen}");
        assert!(e.problems[0].message.contains("bearer token is required"), "{e}");
    }
}

#[test]
fn a_non_loopback_listen_with_a_token_from_the_environment_is_accepted_and_never_shown() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"0.0.0.0:9464\"\ntoken_env = \"SCANWATCH_API_TOKEN\"\n");
    let mut e = env().vars().clone();
    e.insert("SCANWATCH_API_TOKEN".into(), "s3cret-api-token".into());
    let c = load(&text, &Environment::from_pairs(e)).unwrap();
    let server = c.server.as_ref().unwrap();
    assert_eq!(server.token.as_ref().unwrap().value.expose(), "s3cret-api-token");
    let shown = serde_json::to_string(&c).unwrap();
    assert!(!shown.contains("s3cret-api-token") && shown.contains("SCANWATCH_API_TOKEN"), "{shown}");
}

#[test]
fn a_server_token_from_a_missing_file_or_unset_variable_names_its_key() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:9464\"\ntoken_file = \"api-token\"\n");
    assert_eq!(keys(load(&text, &env()).unwrap_err()), vec!["server.token_file"]);
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:9464\"\ntoken_env = \"NOPE\"\n");
    assert_eq!(keys(load(&text, &env()).unwrap_err()), vec!["server.token_env"]);
}

#[test]
fn a_server_listen_that_is_missing_or_not_an_address_is_named() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"localhost\"\n");
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(e.problems[0].key, "server.listen");
    assert!(e.problems[0].message.contains("127.0.0.1:9464"), "{e}");
    let text = format!("{MINIMAL}\n[server]\ntoken = \"x\"\n");
    assert_eq!(keys(load(&text, &env()).unwrap_err()), vec!["server.listen"]);
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:9464\"\nport = 1\n");
    assert_eq!(keys(load(&text, &env()).unwrap_err()), vec!["server.port"]);
}

#[test]
fn the_listen_address_can_be_overridden_from_the_environment() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:9464\"\n");
    let mut e = env().vars().clone();
    e.insert("SCANWATCH__SERVER__LISTEN".into(), "127.0.0.1:9999".into());
    let c = load(&text, &Environment::from_pairs(e)).unwrap();
    assert_eq!(c.server.unwrap().listen.port(), 9999);
}

#[test]
fn a_wrong_type_names_its_key() {
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\ncalls_per_minute = \"lots\"");
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(e.problems[0].key, "accounts[0].calls_per_minute", "{e}");
}

#[test]
fn a_missing_secret_names_the_key_and_the_variables_tried() {
    let e = load(MINIMAL, &Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "x")])).unwrap_err();
    assert_eq!(e.problems[0].key, "accounts[0].sk");
    assert!(e.problems[0].message.contains("HUAWEICLOUD_SDK_SK or CLOUD_SDK_SK"), "{e}");
}

#[test]
fn an_infeasible_interval_says_which_interval_would_fit() {
    let text = MINIMAL.replace("project_id = \"0123456789abcdef0123456789abcd01\"", "project_id = \"0123456789abcdef0123456789abcd01\"\n[[targets]]\nname=\"t2\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"0123456789abcdef0123456789abcd02\"\n[[targets]]\nname=\"t3\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"0123456789abcdef0123456789abcd03\"\n[[targets]]\nname=\"t4\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"0123456789abcdef0123456789abcd04\"\n")
        + "[schedule]\ninterval = \"1m\"\n";
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(e.problems[0].key, "schedule.interval");
    // 8 polls at 5/min need 96 s.
    assert!(e.problems[0].message.contains("1m36s"), "{e}");
}

#[test]
fn environment_overrides_scalar_keys() {
    let mut e = env().vars().clone();
    e.insert("SCANWATCH__STORAGE__RETENTION".into(), "30d".into());
    e.insert("SCANWATCH__SCHEDULE__INTERVAL".into(), "10m".into());
    let c = load(MINIMAL, &Environment::from_pairs(e)).unwrap();
    assert_eq!(c.storage.retention, hours(30 * 24));
    assert_eq!(c.schedule.interval, Duration::from_secs(600));
}

#[test]
fn a_misspelled_override_is_an_unknown_key() {
    let mut e = env().vars().clone();
    e.insert("SCANWATCH__STORAGE__RETENTON".into(), "30d".into());
    let k = keys(load(MINIMAL, &Environment::from_pairs(e)).unwrap_err());
    assert_eq!(k, vec!["SCANWATCH__STORAGE__RETENTON"], "named by the variable the operator set");
}

#[test]
fn an_override_that_names_no_key_is_reported_by_its_variable() {
    // Found by the config_load fuzz target: `SCANWATCH__=x` was an "unknown key" with an empty name.
    for var in ["SCANWATCH__", "SCANWATCH____RETENTION", "SCANWATCH__STORAGE__", "SCANWATCH__STORAGE____RETENTION"] {
        let mut e = env().vars().clone();
        e.insert(var.into(), "30d".into());
        let err = load(MINIMAL, &Environment::from_pairs(e)).unwrap_err();
        assert_eq!(keys(err.clone()), vec![var], "{err}");
        assert!(err.problems[0].message.contains("names no config key"), "{err}");
    }
}

#[test]
fn an_unknown_empty_key_is_named_as_toml_writes_it() {
    // Found by the config_load fuzz target: `'' = ''` was an "unknown key" with an empty name.
    let k = keys(load(&format!("'' = ''\n{MINIMAL}\n[storage]\n\"\" = 1\n"), &env()).unwrap_err());
    assert_eq!(k, vec!["\"\"", "storage.\"\""]);
}

#[test]
fn an_integer_too_large_for_toml_is_reported_with_its_line() {
    // Found by the config_load fuzz target: the `config` crate's message named neither key nor line.
    let text = format!("{MINIMAL}calls_per_minute = 29999999999999999999999\n");
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(e.problems[0].message.contains("line 9"), "{e}");
}

#[test]
fn plain_http_is_only_for_loopback() {
    let with = |endpoint: &str, extra: &str| {
        MINIMAL.replace(
            "project_id = \"0123456789abcdef0123456789abcd01\"",
            &format!("project_id = \"0123456789abcdef0123456789abcd01\"\nendpoint = \"{endpoint}\"\n{extra}"),
        )
    };
    assert!(load(&with("http://127.0.0.1:8080", ""), &env()).is_ok());
    assert!(load(&with("http://localhost:8080", ""), &env()).is_ok());
    let e = load(&with("http://10.0.0.5:8080", ""), &env()).unwrap_err();
    assert_eq!(e.problems[0].key, "targets[0].endpoint");
    assert!(load(&with("http://10.0.0.5:8080", "allow_insecure_http = true"), &env()).is_ok());
}

#[test]
fn config_show_never_prints_a_secret() {
    let c = load(MINIMAL, &env()).unwrap();
    let shown = serde_json::to_string(&c).unwrap();
    assert!(!shown.contains("SK1") && !shown.contains("AK1"), "{shown}");
    assert!(shown.contains("HUAWEICLOUD_SDK_SK"), "the source is shown: {shown}");
}

#[test]
fn a_literal_secret_works_but_is_warned_about() {
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\nak = \"A\"\nsk = \"S\"");
    let c = load(&text, &Environment::default()).unwrap();
    assert_eq!(c.warnings.len(), 2);
    assert_eq!(c.warnings[0].key, "accounts[0].ak");
}

#[test]
fn keys_of_another_auth_kind_are_rejected() {
    let text =
        MINIMAL.replace("name = \"prod\"", "name = \"prod\"\nauth = \"token\"\ntoken_env = \"T\"\nsk_env = \"S\"");
    let e = load(&text, &Environment::from_pairs([("T", "tok"), ("S", "s")])).unwrap_err();
    assert_eq!(keys(e), vec!["accounts[0].sk"]);
}

#[test]
fn duplicate_names_and_identities_are_rejected() {
    let text = format!(
        "{MINIMAL}\n[[targets]]\nname=\"t1\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"0123456789abcdef0123456789abcd01\"\n"
    );
    let k = keys(load(&text, &env()).unwrap_err());
    assert!(k.contains(&"targets[1].name".to_string()) && k.contains(&"targets[1]".to_string()), "{k:?}");
}

#[test]
fn rule_settings_become_the_rule_functions_parameters() {
    let text = format!(
        "{MINIMAL}\n[rules.stuck_running]\nenabled = false\n[rules.poll_failing]\nafter = 5\nseverity = \"warning\"\n"
    );
    let c = load(&text, &env()).unwrap();
    let set = c.targets[0].rules.rule_set();
    assert!(set.stuck_running.is_none());
    let (pf, sev) = set.poll_failing.unwrap();
    assert_eq!((pf.after, sev), (5, Severity::Warning));
    assert_eq!(set.no_recent_scan.unwrap().0.max_age, hours(24));
}

#[test]
fn durations_are_shown_the_way_operators_write_them_and_read_back() {
    for (d, text) in [
        (hours(90 * 24), "90d"),
        (Duration::from_secs(5400), "1h30m"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::ZERO, "0s"),
        (Duration::from_millis(1500), "1s500ms"),
    ] {
        assert_eq!(format_duration(d), text);
        assert_eq!(humantime::parse_duration(text).unwrap(), d);
    }
}

#[test]
fn a_heartbeat_url_must_be_http() {
    let c = load(&format!("{MINIMAL}\n[heartbeat]\nurl = \"https://hc-ping.com/abc\"\n"), &env()).unwrap();
    assert_eq!(c.heartbeat.unwrap().value.expose(), "https://hc-ping.com/abc");
    assert!(c.warnings.is_empty());
    let e = load(&format!("{MINIMAL}\n[heartbeat]\nurl = \"hc-ping.com/abc\"\n"), &env()).unwrap_err();
    assert_eq!(keys(e), vec!["heartbeat.url"]);
}

#[test]
fn a_cron_schedule_is_checked_against_the_budget_by_its_tightest_gap() {
    let c = load(&format!("{MINIMAL}\n[schedule]\ncron = \"*/5 * * * *\"\ntimezone = \"Europe/Berlin\"\n"), &env())
        .unwrap();
    assert_eq!(c.schedule.interval, Duration::from_secs(300));
    assert!(matches!(c.schedule.plan(), crate::schedule::Schedule::Cron { .. }));
    let e = load(&format!("{MINIMAL}\n[schedule]\ncron = \"* * * * * *\"\n"), &env()).unwrap_err();
    assert_eq!(keys(e), vec!["schedule.cron"], "every second cannot fit 2 polls at 5/min");
    let e = load(&format!("{MINIMAL}\n[schedule]\ncron = \"often\"\n"), &env()).unwrap_err();
    assert_eq!(keys(e), vec!["schedule.cron"]);
    let e = load(&format!("{MINIMAL}\n[schedule]\ncron = \"*/5 * * * *\"\ninterval = \"5m\"\n"), &env()).unwrap_err();
    assert_eq!(keys(e), vec!["schedule.cron"]);
}

/// The one problem named `key`, for asserting on its message.
fn problem_at(err: &ConfigError, key: &str) -> String {
    let found: Vec<&Problem> = err.problems.iter().filter(|p| p.key == key).collect();
    assert_eq!(found.len(), 1, "one problem at {key}: {err}");
    found[0].message.clone()
}

fn with_env(extra: &[(&str, &str)]) -> Environment {
    let mut e = env().vars().clone();
    e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Environment::from_pairs(e)
}

/// `MINIMAL` with `n` targets (t1 … tn) of the account `prod`, each polling both task types.
fn with_targets(n: usize) -> String {
    let mut text = "[[accounts]]\nname = \"prod\"\n".to_string();
    for i in 1..=n {
        text.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\naccount = \"prod\"\nregion = \"cn-north-4\"\nproject_id = \"{i:032x}\"\n"
        ));
    }
    text
}

#[test]
fn a_duration_beyond_its_limit_is_refused_before_it_can_overflow_a_date() {
    // Both passed validate and then panicked with `DateTime - TimeDelta overflowed` on the first poll.
    let e = load(&format!("{MINIMAL}[rules.total_stalled]\nwindow = \"300000y\"\n"), &env()).unwrap_err();
    let message = problem_at(&e, "rules.total_stalled.window");
    assert!(message.contains("300000y") && message.contains("too long") && message.contains("at most 3650d"), "{e}");
    let e = load(&format!("{MINIMAL}[rules.stuck_running]\nfor = \"18446744073709551615s\"\n"), &env()).unwrap_err();
    assert!(problem_at(&e, "rules.stuck_running.for").contains("at most 3650d"), "{e}");
}

#[test]
fn every_duration_key_is_bounded_with_its_own_limit() {
    let per_target = MINIMAL.to_string();
    for (section, key, too_long, limit) in [
        ("storage", "retention", "36501d", "36500d"),
        ("schedule", "interval", "8d", "7d"),
        ("schedule", "timeout", "6m", "5m"),
        ("schedule", "connect_timeout", "2m", "1m"),
        ("rules.no_recent_scan", "max_age", "3651d", "3650d"),
        ("rules.stuck_running", "for", "3651d", "3650d"),
        ("rules.total_stalled", "window", "3651d", "3650d"),
        ("rules.poll_failing", "for", "3651d", "3650d"),
        ("alerting", "pending_for", "31d", "30d"),
        ("alerting", "resolve_after", "31d", "30d"),
        ("alerting", "repeat_interval", "31d", "30d"),
        ("alerting", "max_delivery_age", "31d", "30d"),
    ] {
        let e = load(&format!("{MINIMAL}[{section}]\n{key} = \"{too_long}\"\n"), &env()).unwrap_err();
        let message = problem_at(&e, &format!("{section}.{key}"));
        assert!(message.contains(&format!("at most {limit}")), "{section}.{key}: {e}");
        let ok = load(&format!("{MINIMAL}[{section}]\n{key} = \"{limit}\"\n"), &env());
        // The longest interval leaves the budget plenty; only the timeouts interact (connect ≤ total).
        assert!(ok.is_ok() || key == "connect_timeout", "{section}.{key} = {limit} is allowed: {ok:?}");
    }
    for (rule, key) in
        [("no_recent_scan", "max_age"), ("stuck_running", "for"), ("total_stalled", "window"), ("poll_failing", "for")]
    {
        let text = format!("{per_target}[targets.rules.{rule}]\n{key} = \"300000y\"\n");
        let e = load(&text, &env()).unwrap_err();
        assert!(problem_at(&e, &format!("targets[0].rules.{rule}.{key}")).contains("at most 3650d"), "{e}");
    }
}

#[test]
fn integer_keys_are_bounded() {
    for (text, key, says) in [
        ("[rules.poll_failing]\nafter = 0\n", "rules.poll_failing.after", "1 to 1000"),
        ("[rules.poll_failing]\nafter = 1001\n", "rules.poll_failing.after", "1 to 1000"),
        ("[targets.rules.poll_failing]\nafter = 4000000000\n", "targets[0].rules.poll_failing.after", "1 to 1000"),
        ("[schedule]\nmax_response_bytes = 1099511627776\n", "schedule.max_response_bytes", "1024 to"),
    ] {
        let e = load(&format!("{MINIMAL}{text}"), &env()).unwrap_err();
        assert!(problem_at(&e, key).contains(says), "{e}");
    }
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\ncalls_per_minute = 1000001");
    let e = load(&text, &env()).unwrap_err();
    assert!(problem_at(&e, "accounts[0].calls_per_minute").contains("1 to 1000000"), "{e}");
    let e = load(&format!("{MINIMAL}[schedule]\nhost_calls_per_minute = 0\n"), &env()).unwrap_err();
    assert!(problem_at(&e, "schedule.host_calls_per_minute").contains("1 to 1000000"), "{e}");
}

#[test]
fn an_override_from_the_environment_is_bounded_and_named_by_its_variable() {
    let e = load(MINIMAL, &with_env(&[("SCANWATCH__STORAGE__RETENTION", "300000y")])).unwrap_err();
    assert_eq!(keys(e.clone()), vec!["SCANWATCH__STORAGE__RETENTION"], "{e}");
    assert!(e.problems[0].message.contains("at most 36500d"), "{e}");
    assert!(e.to_string().contains("SCANWATCH__STORAGE__RETENTION: `300000y` is too long; at most 36500d"), "{e}");
    let e = load(MINIMAL, &with_env(&[("SCANWATCH__RULES__TOTAL_STALLED__WINDOW", "300000y")])).unwrap_err();
    assert_eq!(keys(e), vec!["SCANWATCH__RULES__TOTAL_STALLED__WINDOW"]);
    let e = load(MINIMAL, &with_env(&[("SCANWATCH__SCHEDULE__INTERVAL", "0s")])).unwrap_err();
    assert_eq!(keys(e), vec!["SCANWATCH__SCHEDULE__INTERVAL"]);
}

#[test]
fn a_zero_repeat_interval_turns_reminders_off() {
    let c = load(&format!("{MINIMAL}[alerting]\nrepeat_interval = \"0s\"\n"), &env()).unwrap();
    assert_eq!(c.alerting.lifecycle().repeat_interval, Duration::ZERO);
    let c = load(&format!("{MINIMAL}[alerting]\npending_for = \"0s\"\nresolve_after = \"0s\"\n"), &env()).unwrap();
    assert_eq!((c.alerting.pending_for, c.alerting.resolve_after), (Duration::ZERO, Duration::ZERO));
    for (section, key) in [("schedule", "interval"), ("alerting", "max_delivery_age"), ("storage", "retention")] {
        let e = load(&format!("{MINIMAL}[{section}]\n{key} = \"0s\"\n"), &env()).unwrap_err();
        assert!(problem_at(&e, &format!("{section}.{key}")).contains("greater than zero"), "{e}");
    }
}

#[test]
fn a_project_id_must_be_32_lowercase_hex_characters() {
    for bad in [
        "p1",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcde",
        "g123456789abcdef0123456789abcdef",
    ] {
        let text = MINIMAL.replace("0123456789abcdef0123456789abcd01", bad);
        let e = load(&text, &env()).unwrap_err();
        let message = problem_at(&e, "targets[0].project_id");
        assert!(message.contains(bad) && message.contains("32") && message.contains("0123456789abcdef"), "{e}");
    }
    let long = "a".repeat(300);
    let e = load(&MINIMAL.replace("0123456789abcdef0123456789abcd01", &long), &env()).unwrap_err();
    assert!(problem_at(&e, "targets[0].project_id").contains("300 characters"), "{e}");
}

#[test]
fn a_region_is_checked_even_when_an_endpoint_is_set() {
    let text =
        MINIMAL.replace("region = \"cn-north-4\"", "region = \"mars-north-1\"\nendpoint = \"https://hss.example.com\"");
    let e = load(&text, &env()).unwrap_err();
    assert!(problem_at(&e, "targets[0].region").contains("`mars-north-1` is not an HSS region"), "{e}");
    let text =
        MINIMAL.replace("region = \"cn-north-4\"", "region = \"cn-north-4\"\nendpoint = \"https://hss.example.com\"");
    assert_eq!(load(&text, &env()).unwrap().targets[0].endpoint.as_str(), "https://hss.example.com/");
}

#[test]
fn booleans_are_toml_booleans_only() {
    for value in ["\"yes\"", "\"0\"", "1", "\"true\""] {
        for (text, key) in [
            (format!("{MINIMAL}[alerting]\nsend_resolved = {value}\n"), "alerting.send_resolved"),
            (format!("{MINIMAL}[rules.stuck_running]\nenabled = {value}\n"), "rules.stuck_running.enabled"),
            (
                format!("{MINIMAL}[targets.rules.poll_failing]\nenabled = {value}\n"),
                "targets[0].rules.poll_failing.enabled",
            ),
            (format!("{MINIMAL}allow_insecure_http = {value}\n"), "targets[0].allow_insecure_http"),
        ] {
            let e = load(&text, &env()).unwrap_err();
            assert!(problem_at(&e, key).contains("not a boolean"), "{value}: {e}");
        }
    }
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\ncalls_per_minute = \"5\"");
    assert!(problem_at(&load(&text, &env()).unwrap_err(), "accounts[0].calls_per_minute").contains("not an integer"));
    let c = load(&format!("{MINIMAL}[alerting]\nsend_resolved = false\n"), &env()).unwrap();
    assert!(!c.alerting.send_resolved);
}

#[test]
fn a_boolean_override_is_true_or_false_and_anything_else_is_named_by_its_variable() {
    let c = load(MINIMAL, &with_env(&[("SCANWATCH__ALERTING__SEND_RESOLVED", "false")])).unwrap();
    assert!(!c.alerting.send_resolved);
    for value in ["yes", "0", "1", "on"] {
        let e = load(MINIMAL, &with_env(&[("SCANWATCH__ALERTING__SEND_RESOLVED", value)])).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["SCANWATCH__ALERTING__SEND_RESOLVED"], "{value}: {e}");
        assert!(e.problems[0].message.contains("true` or `false"), "{e}");
    }
}

#[test]
fn a_secret_of_only_whitespace_is_refused_naming_the_variable_and_never_the_value() {
    let e = load(MINIMAL, &Environment::from_pairs([("HUAWEICLOUD_SDK_AK", "AK1"), ("HUAWEICLOUD_SDK_SK", " \t ")]))
        .unwrap_err();
    let message = problem_at(&e, "accounts[0].sk");
    assert!(message.contains("HUAWEICLOUD_SDK_SK") && message.contains("whitespace"), "{e}");
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\nsk_env = \"MY_SK\"");
    let e = load(&text, &with_env(&[("MY_SK", "   ")])).unwrap_err();
    assert!(problem_at(&e, "accounts[0].sk_env").contains("MY_SK"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sk"), "  \n").unwrap();
    let text = MINIMAL.replace("name = \"prod\"", "name = \"prod\"\nsk_file = \"sk\"");
    let e = Config::from_toml_str(&text, dir.path(), &env()).unwrap_err();
    assert!(problem_at(&e, "accounts[0].sk_file").contains(&dir.path().join("sk").display().to_string()), "{e}");
}

#[test]
fn a_problem_found_twice_is_listed_once_in_order() {
    let p = |key: &str, message: &str| Problem { key: key.into(), message: message.into() };
    let problems = vec![p("a", "x"), p("b", "y"), p("a", "x"), p("a", "z"), p("b", "y")];
    let overridden = BTreeMap::from([("b".to_string(), "SCANWATCH__B".to_string())]);
    assert_eq!(tidy(problems, &overridden), vec![p("a", "x"), p("SCANWATCH__B", "y"), p("a", "z")]);
}

#[test]
fn a_cycle_is_the_series_times_the_spacing_the_budget_allows() {
    assert_eq!(cycle_time(12, 5), Duration::from_secs(144));
    assert_eq!(cycle_time(8, 5), Duration::from_secs(96));
    assert_eq!(cycle_time(7, 600), Duration::from_secs(1), "rounded up to whole seconds");
    assert_eq!(CycleFit::of(Duration::from_secs(144), Duration::from_secs(300)), CycleFit::Fits);
    assert_eq!(CycleFit::of(Duration::from_secs(151), Duration::from_secs(300)), CycleFit::Long);
    assert_eq!(CycleFit::of(Duration::from_secs(301), Duration::from_secs(300)), CycleFit::TooLong);
}

#[test]
fn a_cycle_longer_than_half_the_interval_is_a_warning_with_its_numbers() {
    // 7 targets × 2 task types = 14 series at 5 calls/min: 2m48s of every 5m.
    let c = load(&with_targets(7), &env()).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].key, "schedule.interval");
    let w = &c.warnings[0].message;
    assert!(
        w.starts_with("accounts[0] `prod`: 14 series at 5 calls/min per user take about 2m48s of every 5m cycle"),
        "{w}"
    );
    assert!(w.contains("5m36s"), "suggests twice the cycle: {w}");
    // 6 targets: 12 series take 2m24s, under half of 5m.
    assert!(load(&with_targets(6), &env()).unwrap().warnings.is_empty());
}

#[test]
fn a_cycle_longer_than_the_interval_is_an_error_with_its_numbers() {
    let e = load(&format!("{}[schedule]\ninterval = \"2m\"\n", with_targets(6)), &env()).unwrap_err();
    let message = problem_at(&e, "schedule.interval");
    assert!(
        message.starts_with("2m cannot fit the API budget: accounts[0] `prod`: 12 series at 5 calls/min per user take about 2m24s; use interval = \"2m24s\" or more"),
        "{e}"
    );
    let e = load(&format!("{}[schedule]\ncron = \"*/2 * * * *\"\n", with_targets(6)), &env()).unwrap_err();
    assert!(problem_at(&e, "schedule.cron").contains("a cron expression whose fires are at least 2m24s apart"), "{e}");
}

const UNRESOLVABLE: &str = r#"
[storage]
path = "/var/lib/scanwatch/scanwatch.db"
[[accounts]]
name = "prod"
ak_env = "UNSET_AK"
sk_file = "missing-sk"
[[accounts]]
name = "defaults"
[[accounts]]
name = "iam"
auth = "password"
domain = "d"
user = "u"
password_env = "UNSET_PASSWORD"
[[targets]]
name = "t1"
account = "prod"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcd01"
[[channels]]
name = "hook"
kind = "webhook"
url_env = "UNSET_HOOK_URL"
secret_env = "UNSET_HOOK_SECRET"
[[channels]]
name = "ding"
kind = "dingtalk"
url_file = "missing-url"
secret_env = "UNSET_DING_SECRET"
[heartbeat]
url_env = "UNSET_HEARTBEAT"
[server]
listen = "0.0.0.0:9464"
token_env = "UNSET_API_TOKEN"
"#;

#[test]
fn a_config_whose_secrets_cannot_be_resolved_loads_for_reading_but_not_for_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scanwatch.toml");
    std::fs::write(&path, UNRESOLVABLE).unwrap();
    let env = Environment::default();
    let e = Config::load_with(&path, &env).unwrap_err();
    for key in
        ["accounts[0].ak_env", "accounts[0].sk_file", "accounts[1].sk", "channels[0].url_env", "server.token_env"]
    {
        assert!(keys(e.clone()).contains(&key.to_string()), "{key}: {e}");
    }
    let c = Config::load_for_reading_with(&path, &env).unwrap();
    assert_eq!(c.storage.path, PathBuf::from("/var/lib/scanwatch/scanwatch.db"));
    assert_eq!(c.targets.len(), 1);
    assert_eq!(c.channels.len(), 2);
    let AccountAuth::Aksk { ak, sk, .. } = &c.accounts[0].auth else { panic!("aksk") };
    assert!(!ak.is_available() && !sk.is_available());
    assert_eq!(ak.source, SecretSource::Env("UNSET_AK".into()));
}

#[test]
fn loading_for_reading_still_validates_everything_that_is_not_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scanwatch.toml");
    let text = UNRESOLVABLE
        .replace("region = \"cn-north-4\"", "region = \"mars-north-1\"")
        .replace("path = \"/var/lib/scanwatch/scanwatch.db\"", "path = \"\"\nretention = \"300000y\"");
    std::fs::write(&path, format!("{text}[rules.total_stalled]\nwindow = \"0s\"\n")).unwrap();
    let e = Config::load_for_reading_with(&path, &Environment::default()).unwrap_err();
    assert_eq!(
        keys(e.clone()),
        vec!["storage.path", "storage.retention", "rules.total_stalled.window", "targets[0].region"],
        "{e}"
    );
    // A secret given twice is the file's mistake, not an unavailable secret.
    std::fs::write(&path, UNRESOLVABLE.replace("ak_env = \"UNSET_AK\"", "ak_env = \"UNSET_AK\"\nak_file = \"ak\""))
        .unwrap();
    let e = Config::load_for_reading_with(&path, &Environment::default()).unwrap_err();
    assert_eq!(keys(e), vec!["accounts[0].ak"]);
}

/// Three accounts × 3 targets × 2 task types on one regional endpoint: 6 series each (72 s at 5 a minute per user)
/// but 18 on the host (3m36s at 5 a minute per IP). The host binds, and validate names it and its fix.
fn three_accounts_on_one_host(interval: &str) -> String {
    let mut text = format!("[schedule]\ninterval = \"{interval}\"\n");
    for a in 0..3 {
        text.push_str(&format!("[[accounts]]\nname = \"a{a}\"\n"));
        for t in 0..3 {
            text.push_str(&format!(
                "[[targets]]\nname = \"t{a}{t}\"\naccount = \"a{a}\"\nregion = \"cn-north-4\"\nproject_id = \"{:032x}\"\n",
                a * 10 + t + 1
            ));
        }
    }
    text
}

#[test]
fn validate_checks_the_interval_against_the_per_ip_budget_of_each_endpoint_host_and_names_it_when_it_binds() {
    let e = load(&three_accounts_on_one_host("3m"), &env()).unwrap_err();
    let message = problem_at(&e, "schedule.interval");
    assert!(
        message.contains(
            "18 series on hss.cn-north-4.myhuaweicloud.com:443 at 5 calls/min per IP take about 3m36s; use interval = \"3m36s\" or more (or raise schedule.host_calls_per_minute"
        ),
        "{message}"
    );
    assert!(!message.contains("accounts["), "the accounts alone fit; only the host is named: {message}");

    let config = load(&three_accounts_on_one_host("5m"), &env()).unwrap();
    assert_eq!(config.schedule.host_calls_per_minute, 5, "HSS's per-IP limit is the default");
    assert!(
        config.warnings.iter().any(|w| w.message.starts_with(
            "18 series on hss.cn-north-4.myhuaweicloud.com:443 at 5 calls/min per IP take about 3m36s of every 5m cycle"
        )),
        "{:?}",
        config.warnings
    );
    // A higher per-IP allowance (HSS raised it for you): the accounts' own budgets are all that is left.
    let raised = three_accounts_on_one_host("3m").replace("[schedule]\n", "[schedule]\nhost_calls_per_minute = 20\n");
    let config = load(&raised, &env()).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn a_channel_key_no_kind_knows_is_an_unknown_key_and_a_key_of_another_kind_names_its_kind() {
    let text = format!(
        "{MINIMAL}[[channels]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ncolour = \"red\"\n"
    );
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(keys(e.clone()), ["channels[0].colour"], "{e}");
    assert!(e.problems[0].message.contains("unknown key"), "{e}");
    let text = format!(
        "{MINIMAL}[[channels]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\nsmtp_host = \"smtp.example.com\"\n"
    );
    let e = load(&text, &env()).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(
        e.problems[0].to_string(),
        "channels[0].smtp_host: does not apply to kind = \"slack\" (it is for email)"
    );
}

#[test]
fn the_commented_channel_kinds_of_the_example_config_validate_when_uncommented() {
    let text = include_str!("../../config/scanwatch.example.toml");
    let start = text.find("# More channel kinds").unwrap();
    let block: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut vars = env().vars().clone();
    for (k, v) in [
        ("SCANWATCH_PAGERDUTY_KEY", "0123456789abcdef0123456789abcdef"),
        ("SCANWATCH_TELEGRAM_TOKEN", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
        ("SCANWATCH_DISCORD_URL", "https://discord.com/api/webhooks/1/t"),
        ("SCANWATCH_GOOGLECHAT_URL", "https://chat.googleapis.com/v1/spaces/A/messages?key=k&token=t"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let c = load(&format!("{MINIMAL}{block}"), &Environment::from_pairs(vars)).unwrap();
    let kinds: Vec<&str> = c.channels.iter().map(|ch| ch.kind()).collect();
    assert_eq!(kinds, ["pagerduty", "telegram", "discord", "googlechat"]);
    assert!(c.channels[1].proxy.is_some());
}
