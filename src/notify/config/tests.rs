use std::path::Path;

use super::*;
use crate::alerting::Event;
use crate::alerting::silence::glob_match;
use crate::notify::EmailTls;
use crate::notify::channels::settings::KindConfig;
use crate::notify::channels::testkit::{client, notice, one};
use crate::notify::channels::webhook::WebhookSettings;
use crate::secret::sources::Environment;

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
    let ChannelSettings::Webhook(WebhookSettings { auth: WebhookAuth::Bearer { .. }, signing: Some(signing), .. }) =
        &cfg.settings
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
    assert!(matches!(
        cfg.unwrap().settings,
        ChannelSettings::Webhook(WebhookSettings { auth: WebhookAuth::Basic { .. }, .. })
    ));
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
    let ChannelSettings::Email(settings) = cfg.unwrap().settings else { panic!("email") };
    assert_eq!((settings.smtp_port, settings.tls), (465, EmailTls::Implicit));
    assert_eq!(settings.password.unwrap().expose(), "pw");
    assert_eq!(settings.timeout, crate::notify::channels::email::EmailConfig::TIMEOUT);
    let (cfg, _, _) = validate(
        "name = \"m\"\nkind = \"email\"\nsmtp_host = \"s.example.com\"\nsmtp_port = 587\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
    );
    let ChannelSettings::Email(settings) = cfg.unwrap().settings else { panic!("email") };
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
    let ChannelSettings::Email(settings) = cfg.unwrap().settings else { panic!("email") };
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

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key_and_the_other_keys_are_still_checked() {
    let (cfg, problems, _) = validate("name = \"s\"\nkind = \"slack\"\nurl = 3\ntimeout = 5\nlanguage = \"fr\"");
    assert!(cfg.is_none());
    assert_eq!(keys(&problems), ["channels[3].timeout", "channels[3].url", "channels[3].language"]);
    assert!(problem(&problems, "channels[3].url").contains("invalid type: integer `3`"), "{problems:?}");
    let (_, problems, _) = validate("name = \"m\"\nkind = \"email\"\nto = \"a@b.c\"\nsmtp_host = \"s.example.com\"");
    assert!(problem(&problems, "channels[3].to").contains("expected a sequence"), "{problems:?}");
}

#[test]
fn a_kind_that_is_not_text_is_named_as_written() {
    let (_, problems, _) = validate("name = \"s\"\nkind = 7");
    assert!(problem(&problems, "channels[3].kind").contains("`7` is not a channel kind"), "{problems:?}");
}

#[test]
fn group_by_takes_label_names_once_each_and_defaults_to_one_group() {
    assert!(routed("").group_by.is_empty());
    assert_eq!(routed("group_by = [\"target\", \"env\"]").group_by, ["target", "env"]);
    let (cfg, problems, _) = validate(
        "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\ngroup_by = [\"env\", \" \", \"env\"]",
    );
    assert!(cfg.is_none());
    assert_eq!(keys(&problems), ["channels[3].group_by[1]", "channels[3].group_by[2]"]);
    assert!(problem(&problems, "channels[3].group_by[2]").contains("`env` is listed twice"));
    let shown = serde_json::to_string(&routed("group_by = [\"team\"]")).unwrap();
    assert!(shown.contains(r#""group_by":["team"]"#), "{shown}");
}

#[test]
fn a_proxy_is_an_http_url_whose_credentials_are_never_shown_and_not_for_email() {
    let cfg = routed("proxy = \"http://alice:pr0xy-pass@127.0.0.1:3128\"");
    assert_eq!(cfg.proxy.as_ref().unwrap().expose().port(), Some(3128));
    let shown = format!("{} {cfg:?}", serde_json::to_string(&cfg).unwrap());
    assert!(!shown.contains("pr0xy-pass") && !shown.contains("alice"), "{shown}");
    assert!(shown.contains("http://[redacted]@127.0.0.1:3128"), "{shown}");
    let (_, problems, _) = validate(
        "name = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\nproxy = \"socks5://u:pw@p:1080\"",
    );
    let msg = problem(&problems, "channels[3].proxy");
    assert!(msg.contains("http:// or https://") && !msg.contains("pw"), "{msg}");
    let (_, problems, _) = validate(
        "name = \"m\"\nkind = \"email\"\nsmtp_host = \"s.example.com\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nproxy = \"http://p.example.com:3128\"",
    );
    assert!(problem(&problems, "channels[3].proxy").contains("does not apply to kind = \"email\""));
}

const TG_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn validate_with(toml_text: &str, pairs: &[(&str, &str)]) -> (Option<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    let env = Environment::from_pairs(pairs.iter().copied());
    check(&raw(toml_text), &env, Path::new("/nonexistent"))
}

#[test]
fn a_pagerduty_channel_needs_a_routing_key_and_defaults_to_the_events_v2_endpoint() {
    let (cfg, problems, warnings) = validate_with(
        "name = \"pd\"\nkind = \"pagerduty\"\nrouting_key_env = \"PD_KEY\"",
        &[("PD_KEY", "0123456789abcdef0123456789abcdef")],
    );
    assert!(problems.is_empty() && warnings.is_empty(), "{problems:?} {warnings:?}");
    let cfg = cfg.unwrap();
    let ChannelSettings::PagerDuty(pd) = &cfg.settings else { panic!("{:?}", cfg.settings) };
    assert_eq!(pd.url.as_str(), "https://events.pagerduty.com/v2/enqueue");
    let shown = serde_json::to_string(&cfg).unwrap();
    assert!(!shown.contains("0123456789abcdef0123456789abcdef") && shown.contains("PD_KEY"), "{shown}");
    let (_, problems, _) =
        validate("name = \"pd\"\nkind = \"pagerduty\"\nurl = \"http://events.example.com/v2/enqueue\"");
    assert_eq!(keys(&problems), ["channels[3].routing_key", "channels[3].url"]);
    assert!(problem(&problems, "channels[3].routing_key").contains("routing_key_env"));
    let (_, _, warnings) =
        validate_with("name = \"pd\"\nkind = \"pagerduty\"\nrouting_key_env = \"K\"", &[("K", "short")]);
    assert!(problem(&warnings, "channels[3].routing_key_env").contains("32 characters"));
}

#[test]
fn a_telegram_channel_needs_a_token_shaped_like_one_and_a_chat() {
    let base = "name = \"tg\"\nkind = \"telegram\"\nbot_token_env = \"TG\"\n";
    let (cfg, problems, _) = validate_with(&format!("{base}chat_id = -1001234567890"), &[("TG", TG_TOKEN)]);
    assert!(problems.is_empty(), "{problems:?}");
    let cfg = cfg.unwrap();
    let shown = format!("{} {cfg:?}", serde_json::to_string(&cfg).unwrap());
    assert!(!shown.contains("AAHdqTcv") && shown.contains("api.telegram.org"), "{shown}");
    let (cfg, _, _) = validate_with(&format!("{base}chat_id = \"@secops\""), &[("TG", TG_TOKEN)]);
    let ChannelSettings::Telegram(tg) = cfg.unwrap().settings else { panic!("telegram") };
    assert_eq!(tg.chat_id, crate::notify::channels::telegram::ChatId::Name("@secops".into()));
    let (_, problems, _) = validate_with(&format!("{base}chat_id = \"secops\""), &[("TG", "not-a-token-AAHdq")]);
    assert_eq!(keys(&problems), ["channels[3].bot_token_env", "channels[3].chat_id"]);
    assert!(!problem(&problems, "channels[3].bot_token_env").contains("not-a-token"));
    let (_, problems, _) = validate("name = \"tg\"\nkind = \"telegram\"\nurl = \"https://x.example.com\"");
    assert_eq!(keys(&problems), ["channels[3].url", "channels[3].bot_token", "channels[3].chat_id"]);
    assert!(problem(&problems, "channels[3].url").contains("does not apply to kind = \"telegram\""));
}

#[test]
fn discord_and_google_chat_urls_must_be_https_and_are_shown_redacted() {
    let (_, problems, _) = validate("name = \"d\"\nkind = \"discord\"\nurl = \"http://discord.com/api/webhooks/1/t\"");
    assert!(problem(&problems, "channels[3].url").contains("https://discord.com/api/webhooks/"));
    let (cfg, problems, _) = validate_with(
        "name = \"g\"\nkind = \"googlechat\"\nurl_env = \"GC\"",
        &[("GC", "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k3y&token=t0ken-value")],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let shown = serde_json::to_string(&cfg.unwrap()).unwrap();
    assert!(shown.contains("https://chat.googleapis.com/[redacted]") && !shown.contains("t0ken-value"), "{shown}");
}

#[tokio::test]
async fn build_makes_the_new_kinds() {
    let pairs = [("TG", TG_TOKEN), ("PD", "0123456789abcdef0123456789abcdef")];
    for (kind, extra) in [
        ("pagerduty", "routing_key_env = \"PD\""),
        ("telegram", "bot_token_env = \"TG\"\nchat_id = 1"),
        ("discord", "url = \"https://discord.com/api/webhooks/1/t\""),
        ("googlechat", "url = \"https://chat.googleapis.com/v1/spaces/A/messages?key=k&token=t\""),
    ] {
        let (cfg, problems, _) = validate_with(&format!("name = \"c-{kind}\"\nkind = \"{kind}\"\n{extra}"), &pairs);
        assert!(problems.is_empty(), "{kind}: {problems:?}");
        let ch = build(&cfg.unwrap(), client(), chrono_tz::UTC).unwrap();
        assert_eq!((ch.kind(), ch.name()), (kind, format!("c-{kind}").as_str()));
    }
}

/// A forward proxy on 127.0.0.1 that records each request line and `Proxy-Authorization`, and answers `ok` itself.
async fn recording_proxy() -> (url::Url, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.lines();
                let mut entry = lines.next().unwrap_or_default().to_string();
                if let Some(auth) = lines.find(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:")) {
                    entry.push_str(&format!(" | {auth}"));
                }
                log.lock().unwrap().push(entry);
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });
    (url::Url::parse(&format!("http://{addr}")).unwrap(), seen)
}

#[tokio::test]
async fn a_channel_with_a_proxy_sends_through_it_with_the_proxys_credentials() {
    let (proxy, seen) = recording_proxy().await;
    // Nothing listens at the destination: only the proxy can have answered.
    let dest = crate::notify::channels::testkit::refused_url().await;
    let dest = dest.join("/services/T/B/X").unwrap();
    let proxy_url = format!("http://alice:pr0xy@{}:{}", proxy.host_str().unwrap(), proxy.port().unwrap());
    let (cfg, problems, _) =
        validate(&format!("name = \"s\"\nkind = \"slack\"\nurl = \"{dest}\"\nproxy = \"{proxy_url}\""));
    assert!(problems.is_empty(), "{problems:?}");
    let ch = build(&cfg.unwrap(), client(), chrono_tz::UTC).unwrap();
    let d = ch.send(&one()).await.unwrap();
    assert_eq!(d.detail, "ok");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with(&format!("POST {dest} HTTP/1.1")), "{seen:?}");
    // `alice:pr0xy` in base64.
    assert!(seen[0].ends_with("Basic YWxpY2U6cHIweHk="), "{seen:?}");
}
