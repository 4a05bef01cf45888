use std::path::Path;

use super::*;
use crate::alerting::Event;
use crate::alerting::silence::glob_match;
use crate::config::secrets::Environment;
use crate::notify::channels::testkit::{client, notice, one};

const WHSEC: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn raw(toml_text: &str) -> RawChannel {
    toml::from_str(toml_text).unwrap()
}

fn check(r: &RawChannel, env: &Environment, dir: &Path) -> (Option<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    validate_channel("channels[3]", r, &SecretContext::new(env, dir))
}

fn validate(toml_text: &str) -> (Option<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    let env = Environment::from_pairs([
        ("HOOK_URL", "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c"),
        ("HOOK_SECRET", WHSEC),
        ("TOKEN", "tok"),
        ("SMTP_PASSWORD", "pw"),
    ]);
    check(&raw(toml_text), &env, Path::new("/nonexistent"))
}

fn keys(issues: &[Issue]) -> Vec<&str> {
    issues.iter().map(|(k, _)| k.as_str()).collect()
}

fn problem<'a>(issues: &'a [Issue], key: &str) -> &'a str {
    issues.iter().find(|(k, _)| k == key).map(|(_, m)| m.as_str()).unwrap_or_else(|| panic!("no {key} in {issues:?}"))
}

#[test]
fn a_complete_webhook_channel_validates() {
    let (cfg, problems, warnings) = validate(
        r#"
        name = "ops-hook"
        kind = "webhook"
        url = "https://hooks.example.com/scanwatch"
        secret_env = "HOOK_SECRET"
        bearer_token_env = "TOKEN"
        language = "zh-CN"
        min_severity = "warning"
        rules = ["no_recent_scan", "poll_failing"]
        match = { env = "prod*", region = "cn-*" }
        timeout = "5s"
        "#,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(warnings.is_empty(), "{warnings:?}");
    let cfg = cfg.unwrap();
    assert_eq!(cfg.name, "ops-hook");
    assert_eq!(cfg.kind(), "webhook");
    assert_eq!(cfg.language, Language::ZhCn);
    assert_eq!(cfg.min_severity, Severity::Warning);
    assert_eq!(cfg.rules, [RuleName::NoRecentScan, RuleName::PollFailing]);
    assert_eq!(cfg.timeout, Duration::from_secs(5));
    let ChannelSettings::Webhook { auth: WebhookAuth::Bearer { .. }, signing: Some(signing), .. } = &cfg.settings
    else {
        panic!("{:?}", cfg.settings)
    };
    assert_eq!(signing.key.len(), 24);
}

#[test]
fn every_missing_or_bad_value_is_named_by_its_key_path() {
    let (cfg, problems, _) = validate(
        r#"
        kind = "pager"
        language = "fr"
        min_severity = "loud"
        rules = ["no_recent_scan", "scan_late"]
        match = { "1bad" = "x", env = "" }
        timeout = "soon"
        "#,
    );
    assert!(cfg.is_none());
    assert_eq!(
        keys(&problems),
        [
            "channels[3].name",
            "channels[3].kind",
            "channels[3].language",
            "channels[3].min_severity",
            "channels[3].rules[1]",
            "channels[3].match.1bad",
            "channels[3].match.env",
            "channels[3].timeout",
        ]
    );
    assert!(problem(&problems, "channels[3].kind").contains("webhook, feishu, dingtalk, wecom, slack, teams, email"));
    assert!(problem(&problems, "channels[3].language").contains("`en` or `zh-CN`"));
}

#[test]
fn keys_of_another_kind_are_errors_naming_the_key_written() {
    let (cfg, problems, _) = validate(
        r#"
        name = "s"
        kind = "slack"
        url_env = "HOOK_URL"
        smtp_host = "smtp.example.com"
        secret_env = "HOOK_SECRET"
        bearer_token_env = "TOKEN"
        "#,
    );
    assert!(cfg.is_none());
    assert_eq!(keys(&problems), ["channels[3].secret_env", "channels[3].bearer_token_env", "channels[3].smtp_host"]);
    assert!(
        problem(&problems, "channels[3].smtp_host").contains("does not apply to kind = \"slack\" (it is for email)")
    );
    let (_, problems, _) = validate(
        r#"
        name = "m"
        kind = "email"
        url = "https://x.example.com"
        smtp_host = "smtp.example.com"
        from = "a@example.com"
        to = ["b@example.com"]
        "#,
    );
    assert_eq!(keys(&problems), ["channels[3].url"]);
}

#[test]
fn a_url_is_required_and_checked_without_being_repeated() {
    let (_, problems, _) = validate("name = \"f\"\nkind = \"feishu\"");
    assert!(problem(&problems, "channels[3].url").contains("url_env"));
    let (_, problems, _) = validate("name = \"f\"\nkind = \"feishu\"\nurl = \"open.feishu.cn/hook/SECRETTOKEN\"");
    let msg = problem(&problems, "channels[3].url");
    assert!(msg.contains("https://open.feishu.cn/open-apis/bot/v2/hook/"), "{msg}");
    assert!(!msg.contains("SECRETTOKEN"), "{msg}");
    let (_, problems, _) = validate("name = \"f\"\nkind = \"slack\"\nurl = \"http://hooks.slack.com/services/T/B/X\"");
    assert!(problem(&problems, "channels[3].url").contains("must be https"));
    let (cfg, problems, _) = validate("name = \"f\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9000/services/T/B/X\"");
    assert!(problems.is_empty() && cfg.is_some(), "{problems:?}");
    let (_, problems, _) =
        validate("name = \"d\"\nkind = \"dingtalk\"\nurl = \"https://oapi.dingtalk.com/robot/send\"");
    assert!(problem(&problems, "channels[3].url").contains("access_token"));
    let (_, problems, _) =
        validate("name = \"w\"\nkind = \"wecom\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send\"");
    assert!(problem(&problems, "channels[3].url").contains("`key`"));
    let (_, problems, _) = validate("name = \"w\"\nkind = \"teams\"\nurl_env = \"UNSET\"");
    assert!(problem(&problems, "channels[3].url_env").contains("UNSET"));
}

#[test]
fn a_literal_chat_url_is_a_warning_and_a_plain_http_webhook_too() {
    let (cfg, problems, warnings) =
        validate("name = \"w\"\nkind = \"wecom\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k\"");
    assert!(cfg.is_some() && problems.is_empty());
    assert_eq!(keys(&warnings), ["channels[3].url"]);
    let (cfg, _, warnings) = validate("name = \"h\"\nkind = \"webhook\"\nurl = \"http://10.0.0.5/hook\"");
    assert!(cfg.is_some());
    assert!(problem(&warnings, "channels[3].url").contains("unencrypted"));
}

#[test]
fn webhook_secrets_must_be_whsec_base64() {
    let (_, problems, _) =
        validate("name = \"h\"\nkind = \"webhook\"\nurl = \"https://h.example.com\"\nsecret_env = \"TOKEN\"");
    assert!(problem(&problems, "channels[3].secret_env").contains("whsec_"));
    let (_, problems, warnings) =
        validate("name = \"h\"\nkind = \"webhook\"\nurl = \"https://h.example.com\"\nsecret = \"whsec_!!\"");
    assert!(problem(&problems, "channels[3].secret").contains("base64"));
    assert!(problem(&warnings, "channels[3].secret").contains("literally"));
    let (cfg, _, warnings) =
        validate("name = \"h\"\nkind = \"webhook\"\nurl = \"https://h.example.com\"\nsecret = \"whsec_c2hvcnQ=\"");
    assert!(cfg.is_some());
    assert!(warnings.iter().any(|(_, m)| m.contains("24 to 64")), "{warnings:?}");
}

#[test]
fn bearer_and_basic_auth_are_exclusive_and_basic_needs_both_halves() {
    let base = "name = \"h\"\nkind = \"webhook\"\nurl = \"https://h.example.com\"\n";
    let (_, problems, _) =
        validate(&format!("{base}bearer_token_env = \"TOKEN\"\nbasic_user = \"u\"\nbasic_password_env = \"TOKEN\""));
    assert!(problem(&problems, "channels[3].basic_user").contains("not both"));
    let (_, problems, _) = validate(&format!("{base}basic_user = \"u\""));
    assert!(problem(&problems, "channels[3].basic_password").contains("required"));
    let (_, problems, _) = validate(&format!("{base}basic_password_env = \"TOKEN\""));
    assert!(problem(&problems, "channels[3].basic_user").contains("required"));
    let (cfg, problems, _) = validate(&format!("{base}basic_user = \"u\"\nbasic_password_env = \"TOKEN\""));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(matches!(cfg.unwrap().settings, ChannelSettings::Webhook { auth: WebhookAuth::Basic { .. }, .. }));
}

#[test]
fn a_dingtalk_secret_without_sec_is_a_warning() {
    let (cfg, _, warnings) =
        validate("name = \"d\"\nkind = \"dingtalk\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"TOKEN\"");
    // HOOK_URL has no access_token: a problem, and the secret still gets its warning.
    assert!(cfg.is_none());
    assert!(problem(&warnings, "channels[3].secret_env").contains("SEC"));
}

#[test]
fn email_settings_get_defaults_by_tls_mode() {
    let (cfg, problems, _) = validate(
        r#"
        name = "mail"
        kind = "email"
        smtp_host = "smtp.example.com"
        username = "scanwatch@example.com"
        password_env = "SMTP_PASSWORD"
        from = "scanwatch <scanwatch@example.com>"
        to = ["secops@example.com"]
        "#,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let ChannelSettings::Email { settings } = cfg.unwrap().settings else { panic!("email") };
    assert_eq!((settings.smtp_port, settings.tls), (465, EmailTls::Implicit));
    assert_eq!(settings.password.unwrap().expose(), "pw");
    assert_eq!(settings.timeout, EMAIL_TIMEOUT);
    let (cfg, _, _) = validate(
        "name = \"m\"\nkind = \"email\"\nsmtp_host = \"s.example.com\"\nsmtp_port = 587\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
    );
    let ChannelSettings::Email { settings } = cfg.unwrap().settings else { panic!("email") };
    assert_eq!((settings.smtp_port, settings.tls), (587, EmailTls::Starttls));
}

#[test]
fn email_problems_name_their_keys() {
    let (cfg, problems, _) = validate(
        r#"
        name = "mail"
        kind = "email"
        smtp_host = "smtp.example.com"
        smtp_port = 70000
        tls = "none"
        username = "u"
        from = "nobody"
        to = ["ok@example.com", "not an address"]
        ca_file = "missing-ca.pem"
        "#,
    );
    assert!(cfg.is_none());
    assert_eq!(
        keys(&problems),
        [
            "channels[3].smtp_port",
            "channels[3].tls",
            "channels[3].password",
            "channels[3].from",
            "channels[3].to[1]",
            "channels[3].ca_file"
        ]
    );
    assert!(problem(&problems, "channels[3].tls").contains("loopback"));
    let (_, problems, _) = validate("name = \"m\"\nkind = \"email\"\nto = []");
    assert_eq!(keys(&problems), ["channels[3].smtp_host", "channels[3].from", "channels[3].to"]);
}

#[test]
fn plain_smtp_is_allowed_to_a_loopback_relay() {
    let (cfg, problems, _) = validate(
        "name = \"m\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let ChannelSettings::Email { settings } = cfg.unwrap().settings else { panic!("email") };
    assert_eq!(settings.smtp_port, 25);
}

#[test]
fn templates_are_checked_against_sample_alerts_and_read_from_files() {
    let base = "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n";
    let (_, problems, _) = validate(&format!("{base}template = \"{{{{ alerts[0].nope }}}}\""));
    assert!(problem(&problems, "channels[3].template").contains("does not render"));
    let (_, problems, _) = validate(&format!("{base}template = \"x\"\ntemplate_file = \"t.j2\""));
    assert!(problem(&problems, "channels[3].template").contains("not both"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg.j2"), "{% for a in alerts %}{{ a.target }}{% endfor %}").unwrap();
    let env = Environment::default();
    let (cfg, problems, _) = check(&raw(&format!("{base}template_file = \"msg.j2\"")), &env, dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(cfg.unwrap().template.as_deref(), Some("{% for a in alerts %}{{ a.target }}{% endfor %}"));
    let (_, problems, _) = check(&raw(&format!("{base}template_file = \"gone.j2\"")), &env, dir.path());
    assert!(problem(&problems, "channels[3].template_file").contains("cannot read"));
}

#[test]
fn channel_names_must_be_unique() {
    let r = raw("name = \"a\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"");
    let env = Environment::default();
    let ctx = SecretContext::new(&env, Path::new("/"));
    let (channels, problems, _) = validate_channels(&[r.clone(), r], &ctx);
    assert_eq!(channels.len(), 2);
    assert_eq!(problems, [("channels[1].name".to_string(), "`a` is already the name of channels[0]".to_string())]);
}

#[test]
fn showing_the_config_never_shows_a_secret() {
    let (cfg, _, _) = validate("name = \"f\"\nkind = \"feishu\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"");
    let cfg = cfg.unwrap();
    let shown = serde_json::to_string(&cfg).unwrap();
    assert!(shown.contains(r#""kind":"feishu""#), "{shown}");
    assert!(shown.contains("https://open.feishu.cn/[redacted]"), "{shown}");
    assert!(!shown.contains("0f1e2d3c") && !shown.contains("C2FVsBQ"), "{shown}");
    assert!(!format!("{cfg:?}").contains("0f1e2d3c"));
    let (cfg, _, _) = validate(
        "name = \"m\"\nkind = \"email\"\nsmtp_host = \"s.example.com\"\nusername = \"u\"\npassword_env = \"SMTP_PASSWORD\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
    );
    let shown = serde_json::to_string(&cfg.unwrap()).unwrap();
    assert!(shown.contains(r#""password":"[redacted]""#), "{shown}");
}

#[test]
fn globs_match_whole_values() {
    assert!(glob_match("prod", "prod"));
    assert!(!glob_match("prod", "prod-2"));
    assert!(glob_match("prod*", "prod-2"));
    assert!(glob_match("*", ""));
    assert!(glob_match("cn-*-4", "cn-north-4"));
    assert!(!glob_match("cn-*-4", "cn-north-1"));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*a*b*", "xxaxxbxx"));
    assert!(glob_match("集群?", "集群a"));
    assert!(!glob_match("", "x"));
}

fn routed(toml_extra: &str) -> ChannelConfig {
    let (cfg, problems, _) = validate(&format!(
        "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n{toml_extra}"
    ));
    assert!(problems.is_empty(), "{problems:?}");
    cfg.unwrap()
}

#[test]
fn routing_takes_alerts_by_minimum_severity() {
    let cfg = routed("min_severity = \"critical\"");
    let critical = notice(0, Event::Firing);
    let warning = notice(1, Event::Firing);
    assert_eq!((critical.severity, warning.severity), (Severity::Critical, Severity::Warning));
    assert!(cfg.matches(&critical));
    assert!(!cfg.matches(&warning));
    assert!(routed("").matches(&warning));
}

#[test]
fn routing_takes_only_the_listed_rules() {
    let cfg = routed("rules = [\"stuck_running\"]");
    assert!(!cfg.matches(&notice(0, Event::Firing)));
    assert!(cfg.matches(&notice(1, Event::Firing)));
}

#[test]
fn routing_needs_every_matcher_to_match_identity_and_user_labels() {
    let cfg = routed("match = { env = \"prod\", target = \"prod-cn-*-00?\", task_type = \"cluster_scan\" }");
    let a = notice(0, Event::Firing);
    assert!(cfg.matches(&a));
    let mut other_env = a.clone();
    other_env.labels.insert("env".into(), "staging".into());
    assert!(!cfg.matches(&other_env));
    let mut no_env = a.clone();
    no_env.labels.remove("env");
    assert!(!cfg.matches(&no_env));
    let iac = notice(1, Event::Firing);
    assert!(!cfg.matches(&iac));
    let by_rule = routed("match = { rule = \"poll_*\", severity = \"critical\", enterprise_project_id = \"all_*\" }");
    let mut p = notice(3, Event::Firing);
    p.severity = Severity::Critical;
    assert!(by_rule.matches(&p));
    assert!(!by_rule.matches(&notice(0, Event::Firing)));
}

#[tokio::test]
async fn build_makes_every_chat_kind_and_leaves_email_to_the_app() {
    let kinds = [
        ("webhook", "https://h.example.com/x"),
        ("feishu", "https://open.feishu.cn/open-apis/bot/v2/hook/t"),
        ("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=t"),
        ("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
        ("slack", "https://hooks.slack.com/services/T/B/X"),
        ("teams", "https://x.logic.azure.com/workflows/w"),
    ];
    for (kind, url) in kinds {
        let (cfg, problems, _) = validate(&format!("name = \"c-{kind}\"\nkind = \"{kind}\"\nurl = \"{url}\""));
        assert!(problems.is_empty(), "{kind}: {problems:?}");
        let ch = build(&cfg.unwrap(), client(), chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!((ch.kind(), ch.name()), (kind, format!("c-{kind}").as_str()));
    }
    let (cfg, _, _) =
        validate("name = \"m\"\nkind = \"email\"\nsmtp_host = \"s.example.com\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]");
    assert!(build(&cfg.unwrap(), client(), chrono_tz::UTC).is_none());
}

#[tokio::test]
async fn a_built_channel_sends_in_its_language_and_zone_with_its_template() {
    let server = crate::hss::test_support::spawn(|_| crate::hss::test_support::Reply::raw(200, "ok")).await;
    let url = server.url.join("/services/T/B/X").unwrap();
    let (cfg, problems, _) = validate(&format!(
        "name = \"s\"\nkind = \"slack\"\nurl = \"{url}\"\nlanguage = \"zh-CN\"\ntemplate = \"{{{{ alerts[0].description }}}} @ {{{{ alerts[0].since }}}}\""
    ));
    assert!(problems.is_empty(), "{problems:?}");
    let ch = build(&cfg.unwrap(), client(), chrono_tz::Asia::Shanghai).unwrap();
    ch.send(&one()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&server.only_request().body).unwrap();
    assert_eq!(body["attachments"][0]["text"], "集群扫描已 31h 未启动新任务(阈值 24h) @ 2025-04-22 09:04 CST");
    assert!(body["text"].as_str().unwrap().starts_with("【告警:1】"));
}

#[test]
fn group_by_takes_label_names_once_each_and_names_the_bad_one() {
    use crate::notify::outbox::Route;
    assert_eq!(routed("group_by = [\"target\", \"env\"]").group_by(), ["target", "env"]);
    assert!(routed("").group_by().is_empty(), "default: one group per channel");
    let (cfg, problems, _) = validate(
        "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ngroup_by = [\"target\", \"9x\", \"target\"]",
    );
    assert!(cfg.is_none());
    assert_eq!(keys(&problems), ["channels[3].group_by[1]", "channels[3].group_by[2]"]);
    assert!(problem(&problems, "channels[3].group_by[2]").contains("twice"));
}
