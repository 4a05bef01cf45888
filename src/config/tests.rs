use super::*;

const MINIMAL: &str = r#"
[[accounts]]
name = "prod"
[[targets]]
name = "t1"
account = "prod"
region = "cn-north-4"
project_id = "p1"
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
project_id = "p1"
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
        "{MINIMAL}\n[storage]\nretension = \"9d\"\n[[targets]]\nname=\"t2\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"p2\"\ncolour = \"red\"\n"
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
    let text = MINIMAL.replace("project_id = \"p1\"", "project_id = \"p1\"\n[[targets]]\nname=\"t2\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"p2\"\n[[targets]]\nname=\"t3\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"p3\"\n[[targets]]\nname=\"t4\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"p4\"\n")
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
    assert_eq!(k, vec!["storage.retenton"]);
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
        MINIMAL.replace("project_id = \"p1\"", &format!("project_id = \"p1\"\nendpoint = \"{endpoint}\"\n{extra}"))
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
    let text =
        format!("{MINIMAL}\n[[targets]]\nname=\"t1\"\naccount=\"prod\"\nregion=\"cn-north-4\"\nproject_id=\"p1\"\n");
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
