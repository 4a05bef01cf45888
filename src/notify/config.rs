//! `[[channels]]`: the raw table as written ([`RawChannel`]), its validation into a [`ChannelConfig`] with every
//! problem named by its key path, routing ([`ChannelConfig::matches`]) and building the channel ([`build`]).
//!
//! Validation is pure apart from reading secret and template files: it resolves `*_env` / `*_file` secrets through
//! [`SecretContext`], renders user templates against sample data, and says which keys do not belong to the
//! channel's kind (`smtp_host` on a Slack channel). Keys that no channel knows are reported by the top-level parse
//! (`serde_ignored`), like every other unknown key. Webhook URLs carry credentials, so no message here repeats a URL.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use url::Url;

use super::channels::dingtalk::DingTalkChannel;
use super::channels::feishu::FeishuChannel;
use super::channels::slack::SlackChannel;
use super::channels::teams::TeamsChannel;
use super::channels::webhook::{self, SigningKey, WebhookChannel};
use super::channels::wecom::WeComChannel;
use super::channels::{Common, redact_url};
use super::message::check_template;
use super::{AlertNotice, Channel, EmailSettings, EmailTls, Language};
use crate::config::secrets::{SecretContext, SecretKeys, SecretSource, SourcedSecret};
use crate::rules::{RuleName, Severity};

/// A problem or a warning: the key path (`channels[3].url_env`) and what is wrong.
pub type Issue = (String, String);

/// One `[[channels]]` table as written. Everything is optional here so that validation can report every problem.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawChannel {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub bearer_token: Option<String>,
    pub bearer_token_env: Option<String>,
    pub bearer_token_file: Option<String>,
    pub basic_user: Option<String>,
    pub basic_password: Option<String>,
    pub basic_password_env: Option<String>,
    pub basic_password_file: Option<String>,
    pub language: Option<String>,
    pub min_severity: Option<String>,
    pub rules: Option<Vec<String>>,
    #[serde(rename = "match")]
    pub match_: Option<BTreeMap<String, String>>,
    pub group_by: Option<Vec<String>>,
    pub template: Option<String>,
    pub template_file: Option<String>,
    pub timeout: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i64>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub ca_file: Option<String>,
}

/// A validated channel: where it sends, in which language, and which alerts it takes.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(flatten)]
    pub settings: ChannelSettings,
    pub language: Language,
    /// Alerts below this severity are not sent here.
    pub min_severity: Severity,
    /// Only these rules; empty means every rule.
    pub rules: Vec<RuleName>,
    /// Label → glob pattern (`*`, `?`); every one must match.
    #[serde(rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Labels that split this channel's alerts into groups, one message per group (Alertmanager's `group_by`);
    /// empty: one group for the channel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// The user's message template (the text of `template`, or of the file `template_file`), checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// One delivery attempt, start to end.
    #[serde(serialize_with = "humantime_str")]
    pub timeout: Duration,
}

/// The kind of a channel and its kind-specific settings.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelSettings {
    Webhook {
        url: SecretUrl,
        auth: WebhookAuth,
        #[serde(skip_serializing_if = "Option::is_none")]
        signing: Option<WebhookSigning>,
    },
    Feishu {
        url: SecretUrl,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<SourcedSecret>,
    },
    DingTalk {
        url: SecretUrl,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<SourcedSecret>,
    },
    WeCom {
        url: SecretUrl,
    },
    Slack {
        url: SecretUrl,
    },
    Teams {
        url: SecretUrl,
    },
    Email {
        #[serde(serialize_with = "email_settings")]
        settings: EmailSettings,
    },
}

impl ChannelSettings {
    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSettings::Webhook { .. } => "webhook",
            ChannelSettings::Feishu { .. } => "feishu",
            ChannelSettings::DingTalk { .. } => "dingtalk",
            ChannelSettings::WeCom { .. } => "wecom",
            ChannelSettings::Slack { .. } => "slack",
            ChannelSettings::Teams { .. } => "teams",
            ChannelSettings::Email { .. } => "email",
        }
    }
}

/// How a webhook receiver authenticates scanwatch.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WebhookAuth {
    None,
    Bearer { token: SourcedSecret },
    Basic { user: String, password: SourcedSecret },
}

/// A Standard Webhooks secret and its decoded key.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSigning {
    pub secret: SourcedSecret,
    #[serde(skip)]
    pub key: SigningKey,
}

/// A webhook URL, which carries the bot's key: shown (Debug, Serialize) as scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    url: Url,
    source: SecretSource,
}

impl SecretUrl {
    /// The real URL, for the one place that sends to it.
    pub fn expose(&self) -> &Url {
        &self.url
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/[redacted]", redact_url(&self.url))
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            value: String,
            #[serde(flatten)]
            source: &'a SecretSource,
        }
        Shown { value: format!("{}/[redacted]", redact_url(&self.url)), source: &self.source }.serialize(s)
    }
}

fn humantime_str<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn email_settings<S: serde::Serializer>(e: &EmailSettings, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown<'a> {
        smtp_host: &'a str,
        smtp_port: u16,
        tls: EmailTls,
        username: &'a Option<String>,
        password: &'a Option<crate::secret::Secret>,
        from: &'a str,
        to: &'a [String],
        ca_file: &'a Option<PathBuf>,
    }
    Shown {
        smtp_host: &e.smtp_host,
        smtp_port: e.smtp_port,
        tls: e.tls,
        username: &e.username,
        password: &e.password,
        from: &e.from,
        to: &e.to,
        ca_file: &e.ca_file,
    }
    .serialize(s)
}

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        self.settings.kind()
    }

    /// Whether this channel takes the alert: severity at least `min_severity`, the rule in `rules` (when set), and
    /// every matcher's glob matching the label — `target`, `account`, `region`, `project_id`,
    /// `enterprise_project_id`, `task_type`, `rule`, `severity` or a user label (a missing label is empty).
    pub fn matches(&self, notice: &AlertNotice) -> bool {
        notice.severity >= self.min_severity
            && (self.rules.is_empty() || self.rules.contains(&notice.rule))
            && crate::alerting::silence::matches_all(&self.matchers, &crate::notify::outbox::notice_labels(notice))
    }
}

/// The channel kinds, as written in `kind`.
pub const KINDS: [&str; 7] = ["webhook", "feishu", "dingtalk", "wecom", "slack", "teams", "email"];

/// Which kinds use each kind-specific key (the key stems; `_env` / `_file` variants follow their stem).
const KEY_OWNERS: [(&str, &[&str]); 13] = [
    ("url", &["webhook", "feishu", "dingtalk", "wecom", "slack", "teams"]),
    ("secret", &["webhook", "feishu", "dingtalk"]),
    ("bearer_token", &["webhook"]),
    ("basic_user", &["webhook"]),
    ("basic_password", &["webhook"]),
    ("smtp_host", &["email"]),
    ("smtp_port", &["email"]),
    ("tls", &["email"]),
    ("username", &["email"]),
    ("password", &["email"]),
    ("from", &["email"]),
    ("to", &["email"]),
    ("ca_file", &["email"]),
];

/// Default attempt timeouts: chat services answer in well under a second; SMTP takes a few round trips.
const CHAT_TIMEOUT: Duration = Duration::from_secs(10);
const EMAIL_TIMEOUT: Duration = Duration::from_secs(30);

struct Checker<'a> {
    key: &'a str,
    problems: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Checker<'_> {
    fn problem(&mut self, sub: &str, message: impl Into<String>) {
        self.problems.push((format!("{}.{sub}", self.key), message.into()));
    }

    fn warning(&mut self, sub: &str, message: impl Into<String>) {
        self.warnings.push((format!("{}.{sub}", self.key), message.into()));
    }

    /// Resolves a secret; `literal_hint` is the warning for a secret written in the file (None: no warning).
    fn secret(
        &mut self,
        ctx: &SecretContext<'_>,
        keys: SecretKeys<'_>,
        required: bool,
        literal_hint: Option<&str>,
    ) -> Option<SourcedSecret> {
        let stem = keys.stem.to_string();
        match ctx.resolve(&keys) {
            Ok(Some(s)) => {
                if s.source == SecretSource::Literal
                    && let Some(hint) = literal_hint
                {
                    self.warning(&stem, hint.to_string());
                }
                Some(s)
            }
            Ok(None) if required => {
                self.problem(&stem, format!("is required: set `{stem}`, `{stem}_env` or `{stem}_file`"));
                None
            }
            Ok(None) => None,
            Err(p) => {
                self.problem(&p.key, p.message);
                None
            }
        }
    }

    fn url(&mut self, ctx: &SecretContext<'_>, raw: &RawChannel, kind: &str) -> Option<SecretUrl> {
        let literal_hint = (kind != "webhook").then_some(
            "the URL carries the bot's key and is written in the config file; prefer `url_env` or `url_file`",
        );
        let secret = self.secret(
            ctx,
            SecretKeys {
                stem: "url",
                literal: raw.url.as_deref(),
                env: raw.url_env.as_deref(),
                file: raw.url_file.as_deref(),
                default_envs: &[],
            },
            true,
            literal_hint,
        )?;
        if !secret.is_available() {
            // Loaded for reading only (`Config::load_for_reading`): the channel is never built.
            let url = Url::parse("https://unavailable.invalid/").ok()?;
            return Some(SecretUrl { url, source: secret.source });
        }
        let key = exact_key(raw, "url");
        let example = match kind {
            "feishu" => "https://open.feishu.cn/open-apis/bot/v2/hook/…",
            "dingtalk" => "https://oapi.dingtalk.com/robot/send?access_token=…",
            "wecom" => "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…",
            "slack" => "https://hooks.slack.com/services/…",
            "teams" => "https://….logic.azure.com/workflows/…",
            _ => "https://hooks.example.com/scanwatch",
        };
        let url = match Url::parse(secret.value.expose().trim()) {
            Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => u,
            // The value is a secret: say what is wrong without repeating it.
            _ => {
                self.problem(&key, format!("is not an http(s) URL with a host, e.g. `{example}`"));
                return None;
            }
        };
        if url.scheme() == "http" && !is_loopback_host(url.host_str().unwrap_or("")) {
            if kind == "webhook" {
                self.warning(&key, "plain http to a non-loopback host sends alerts (and any auth header) unencrypted");
            } else {
                self.problem(
                    &key,
                    format!("must be https (plain http is allowed only to a loopback host), e.g. `{example}`"),
                );
                return None;
            }
        }
        let has_query = |name: &str| url.query_pairs().any(|(k, v)| k == name && !v.is_empty());
        if kind == "dingtalk" && !has_query("access_token") {
            self.problem(&key, format!("has no `access_token` query parameter, e.g. `{example}`"));
            return None;
        }
        if kind == "wecom" && !has_query("key") {
            self.problem(&key, format!("has no `key` query parameter, e.g. `{example}`"));
            return None;
        }
        Some(SecretUrl { url, source: secret.source })
    }
}

/// Validates one `[[channels]]` table at `key` (`channels[3]`). Returns the channel when there is no problem, the
/// problems, and warnings (a literal secret, a short signing key…), each with its key path.
pub fn validate_channel(
    key: &str,
    raw: &RawChannel,
    ctx: &SecretContext<'_>,
) -> (Option<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    let mut c = Checker { key, problems: Vec::new(), warnings: Vec::new() };
    let name = match raw.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        Some(_) => {
            c.problem("name", "must not be empty");
            String::new()
        }
        None => {
            c.problem("name", "is required");
            String::new()
        }
    };
    let kind = match raw.kind.as_deref() {
        Some(k) if KINDS.contains(&k) => Some(k),
        Some(k) => {
            c.problem("kind", format!("`{k}` is not a channel kind; use one of {}", KINDS.join(", ")));
            None
        }
        None => {
            c.problem("kind", format!("is required: one of {}", KINDS.join(", ")));
            None
        }
    };
    if let Some(kind) = kind {
        foreign_keys(&mut c, raw, kind);
    }
    let language = match raw.language.as_deref() {
        None | Some("en") => Language::En,
        Some("zh-CN") => Language::ZhCn,
        Some(other) => {
            c.problem("language", format!("`{other}` is not a message language; use `en` or `zh-CN`"));
            Language::En
        }
    };
    let min_severity = match raw.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => Severity::parse(s).unwrap_or_else(|| {
            c.problem("min_severity", format!("`{s}` is not a severity; use info, warning or critical"));
            Severity::Info
        }),
    };
    let mut rules = Vec::new();
    match &raw.rules {
        None => {}
        Some(list) if list.is_empty() => {
            c.problem("rules", "lists no rule; remove `rules` to take every rule");
        }
        Some(list) => {
            for (i, r) in list.iter().enumerate() {
                match RuleName::parse(r) {
                    Some(rule) if !rules.contains(&rule) => rules.push(rule),
                    Some(_) => {}
                    None => c.problem(
                        &format!("rules[{i}]"),
                        format!(
                            "`{r}` is not a rule; use {}",
                            RuleName::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ),
                }
            }
        }
    }
    let mut matchers = BTreeMap::new();
    for (label, pattern) in raw.match_.iter().flatten() {
        let valid = label.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && label.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            c.problem(&format!("match.{label}"), "label names are letters, digits and `_`, not starting with a digit");
        } else if pattern.is_empty() {
            c.problem(&format!("match.{label}"), "is empty; use `*` to match any value, or remove the matcher");
        } else {
            matchers.insert(label.clone(), pattern.clone());
        }
    }
    let mut group_by: Vec<String> = Vec::new();
    for (i, label) in raw.group_by.iter().flatten().enumerate() {
        let valid = label.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && label.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            c.problem(&format!("group_by[{i}]"), "label names are letters, digits and `_`, not starting with a digit");
        } else if group_by.contains(label) {
            c.problem(&format!("group_by[{i}]"), format!("`{label}` is listed twice"));
        } else {
            group_by.push(label.clone());
        }
    }
    let template = template(&mut c, raw, ctx.config_dir);
    let default_timeout = if kind == Some("email") { EMAIL_TIMEOUT } else { CHAT_TIMEOUT };
    let timeout = match raw.timeout.as_deref() {
        None => default_timeout,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                c.problem("timeout", "must be greater than zero");
                default_timeout
            }
            Ok(d) if d > crate::config::limits::CHANNEL_TIMEOUT => {
                let max = crate::config::format_duration(crate::config::limits::CHANNEL_TIMEOUT);
                c.problem("timeout", format!("`{text}` is too long; at most {max}"));
                default_timeout
            }
            Ok(d) => d,
            Err(e) => {
                c.problem("timeout", format!("`{text}` is not a duration ({e}); write e.g. `10s`"));
                default_timeout
            }
        },
    };
    let settings = match kind {
        None => None,
        Some("email") => email(&mut c, raw, ctx, timeout).map(|settings| ChannelSettings::Email { settings }),
        Some(kind) => chat(&mut c, raw, ctx, kind),
    };
    let config = match settings {
        Some(settings) if c.problems.is_empty() => {
            Some(ChannelConfig { name, settings, language, min_severity, rules, matchers, group_by, template, timeout })
        }
        _ => None,
    };
    (config, c.problems, c.warnings)
}

/// Validates every `[[channels]]` table, and that names are unique.
pub fn validate_channels(raws: &[RawChannel], ctx: &SecretContext<'_>) -> (Vec<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    let (mut channels, mut problems, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        let key = format!("channels[{i}]");
        let (channel, p, w) = validate_channel(&key, raw, ctx);
        problems.extend(p);
        warnings.extend(w);
        if let Some(name) = raw.name.as_deref().map(str::trim).filter(|n| !n.is_empty())
            && let Some(first) = names.insert(name.to_string(), i)
        {
            problems.push((format!("{key}.name"), format!("`{name}` is already the name of channels[{first}]")));
        }
        channels.extend(channel);
    }
    (channels, problems, warnings)
}

fn foreign_keys(c: &mut Checker<'_>, raw: &RawChannel, kind: &str) {
    let given: [(&str, bool); 13] = [
        ("url", raw.url.is_some() || raw.url_env.is_some() || raw.url_file.is_some()),
        ("secret", raw.secret.is_some() || raw.secret_env.is_some() || raw.secret_file.is_some()),
        (
            "bearer_token",
            raw.bearer_token.is_some() || raw.bearer_token_env.is_some() || raw.bearer_token_file.is_some(),
        ),
        ("basic_user", raw.basic_user.is_some()),
        (
            "basic_password",
            raw.basic_password.is_some() || raw.basic_password_env.is_some() || raw.basic_password_file.is_some(),
        ),
        ("smtp_host", raw.smtp_host.is_some()),
        ("smtp_port", raw.smtp_port.is_some()),
        ("tls", raw.tls.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some()),
        ("from", raw.from.is_some()),
        ("to", raw.to.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    for ((stem, present), (_, owners)) in given.iter().zip(KEY_OWNERS.iter()) {
        if *present && !owners.contains(&kind) {
            // Name the exact key written (`secret_env`, not `secret`).
            let written = exact_key(raw, stem);
            c.problem(&written, format!("does not apply to kind = \"{kind}\" (it is for {})", owners.join(", ")));
        }
    }
}

fn exact_key(raw: &RawChannel, stem: &str) -> String {
    let (env, file) = match stem {
        "url" => (raw.url_env.is_some(), raw.url_file.is_some()),
        "secret" => (raw.secret_env.is_some(), raw.secret_file.is_some()),
        "bearer_token" => (raw.bearer_token_env.is_some(), raw.bearer_token_file.is_some()),
        "basic_password" => (raw.basic_password_env.is_some(), raw.basic_password_file.is_some()),
        "password" => (raw.password_env.is_some(), raw.password_file.is_some()),
        _ => (false, false),
    };
    let literal = match stem {
        "url" => raw.url.is_some(),
        "secret" => raw.secret.is_some(),
        "bearer_token" => raw.bearer_token.is_some(),
        "basic_password" => raw.basic_password.is_some(),
        "password" => raw.password.is_some(),
        _ => true,
    };
    if literal {
        stem.to_string()
    } else if env {
        format!("{stem}_env")
    } else if file {
        format!("{stem}_file")
    } else {
        stem.to_string()
    }
}

fn template(c: &mut Checker<'_>, raw: &RawChannel, config_dir: &Path) -> Option<String> {
    let (key, source) = match (&raw.template, &raw.template_file) {
        (Some(_), Some(_)) => {
            c.problem("template", "give either `template` or `template_file`, not both");
            return None;
        }
        (Some(t), None) => ("template", t.clone()),
        (None, Some(f)) => {
            let path = config_dir.join(f);
            match std::fs::read_to_string(&path) {
                Ok(t) => ("template_file", t),
                Err(e) => {
                    c.problem("template_file", format!("cannot read {}: {e}", path.display()));
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    match check_template(&source) {
        Ok(()) => Some(source),
        Err(e) => {
            c.problem(key, format!("the template does not render against sample alerts: {e}"));
            None
        }
    }
}

fn chat(c: &mut Checker<'_>, raw: &RawChannel, ctx: &SecretContext<'_>, kind: &str) -> Option<ChannelSettings> {
    let url = c.url(ctx, raw, kind);
    let literal_secret = Some("secret given literally in the config file; prefer `secret_env` or `secret_file`");
    let takes_secret = matches!(kind, "webhook" | "feishu" | "dingtalk");
    let secret = if takes_secret {
        c.secret(
            ctx,
            SecretKeys {
                stem: "secret",
                literal: raw.secret.as_deref(),
                env: raw.secret_env.as_deref(),
                file: raw.secret_file.as_deref(),
                default_envs: &[],
            },
            false,
            literal_secret,
        )
    } else {
        None
    };
    let secret_key = exact_key(raw, "secret");
    match kind {
        "webhook" => {
            let signing = match secret {
                // Loaded for reading only: nothing is signed.
                Some(secret) if !secret.is_available() => None,
                Some(secret) => match SigningKey::from_whsec(secret.value.expose().trim()) {
                    Ok(key) => {
                        if key.len() < 24 {
                            c.warning(
                                &secret_key,
                                format!(
                                    "the signing key is {} bytes; Standard Webhooks asks for 24 to 64 random bytes",
                                    key.len()
                                ),
                            );
                        }
                        Some(WebhookSigning { secret, key })
                    }
                    Err(e) => {
                        c.problem(&secret_key, e);
                        None
                    }
                },
                None => None,
            };
            let auth = webhook_auth(c, raw, ctx);
            Some(ChannelSettings::Webhook { url: url?, auth: auth?, signing })
        }
        "feishu" => Some(ChannelSettings::Feishu { url: url?, secret }),
        "dingtalk" => {
            if let Some(s) = &secret
                && s.is_available()
                && !s.value.expose().starts_with("SEC")
            {
                c.warning(
                    &secret_key,
                    "DingTalk signing secrets start with `SEC`; check that this is the robot's signing secret",
                );
            }
            Some(ChannelSettings::DingTalk { url: url?, secret })
        }
        "wecom" => Some(ChannelSettings::WeCom { url: url? }),
        "slack" => Some(ChannelSettings::Slack { url: url? }),
        "teams" => Some(ChannelSettings::Teams { url: url? }),
        _ => None,
    }
}

fn webhook_auth(c: &mut Checker<'_>, raw: &RawChannel, ctx: &SecretContext<'_>) -> Option<WebhookAuth> {
    let literal =
        |stem: &str| format!("secret given literally in the config file; prefer `{stem}_env` or `{stem}_file`");
    let bearer_hint = literal("bearer_token");
    let bearer = c.secret(
        ctx,
        SecretKeys {
            stem: "bearer_token",
            literal: raw.bearer_token.as_deref(),
            env: raw.bearer_token_env.as_deref(),
            file: raw.bearer_token_file.as_deref(),
            default_envs: &[],
        },
        false,
        Some(&bearer_hint),
    );
    let password_hint = literal("basic_password");
    let password = c.secret(
        ctx,
        SecretKeys {
            stem: "basic_password",
            literal: raw.basic_password.as_deref(),
            env: raw.basic_password_env.as_deref(),
            file: raw.basic_password_file.as_deref(),
            default_envs: &[],
        },
        false,
        Some(&password_hint),
    );
    let password_given =
        raw.basic_password.is_some() || raw.basic_password_env.is_some() || raw.basic_password_file.is_some();
    let user = raw.basic_user.as_deref();
    if let Some(u) = user
        && (u.is_empty() || u.contains(':'))
    {
        c.problem("basic_user", "must be non-empty and must not contain `:`");
        return None;
    }
    match (bearer, user, password) {
        (Some(_), Some(_), _) => {
            c.problem("basic_user", "give either a bearer token or basic auth, not both");
            None
        }
        (Some(token), None, _) if !password_given => Some(WebhookAuth::Bearer { token }),
        (Some(_), None, _) => {
            c.problem("basic_password", "give either a bearer token or basic auth, not both");
            None
        }
        (None, Some(u), Some(password)) => Some(WebhookAuth::Basic { user: u.to_string(), password }),
        (None, Some(_), None) if !password_given => {
            c.problem(
                "basic_password",
                "is required with basic_user: set `basic_password_env` or `basic_password_file`",
            );
            None
        }
        (None, None, Some(_)) => {
            c.problem("basic_user", "is required with basic_password");
            None
        }
        // A password that could not be resolved was already reported.
        (None, Some(_), None) => None,
        (None, None, None) if password_given => None,
        (None, None, None) => Some(WebhookAuth::None),
    }
}

fn email(c: &mut Checker<'_>, raw: &RawChannel, ctx: &SecretContext<'_>, timeout: Duration) -> Option<EmailSettings> {
    let host = match raw.smtp_host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => h.to_string(),
        Some(_) => {
            c.problem("smtp_host", "must not be empty");
            String::new()
        }
        None => {
            c.problem("smtp_host", "is required, e.g. `smtp.example.com`");
            String::new()
        }
    };
    let tls = match raw.tls.as_deref() {
        Some("implicit") => EmailTls::Implicit,
        Some("starttls") => EmailTls::Starttls,
        Some("none") => EmailTls::None,
        Some(other) => {
            c.problem(
                "tls",
                format!("`{other}` is not a TLS mode; use implicit (port 465), starttls (587) or none (loopback only)"),
            );
            EmailTls::Implicit
        }
        None if raw.smtp_port == Some(587) => EmailTls::Starttls,
        None => EmailTls::Implicit,
    };
    let default_port = match tls {
        EmailTls::Implicit => 465,
        EmailTls::Starttls => 587,
        EmailTls::None => 25,
    };
    let port = match raw.smtp_port {
        None => default_port,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => p,
            _ => {
                c.problem("smtp_port", format!("`{p}` is not a port number (1 to 65535)"));
                default_port
            }
        },
    };
    match (tls, port) {
        (EmailTls::Implicit, 587) => {
            c.warning("tls", "port 587 usually speaks STARTTLS; set tls = \"starttls\" if the connection fails")
        }
        (EmailTls::Starttls, 465) => {
            c.warning("tls", "port 465 usually speaks implicit TLS; set tls = \"implicit\" if the connection fails")
        }
        _ => {}
    }
    if tls == EmailTls::None && !host.is_empty() && !is_loopback_host(&host) {
        c.problem("tls", "`none` sends mail and the SMTP password unencrypted and is allowed only to a loopback host; use implicit or starttls");
    }
    let password = c.secret(
        ctx,
        SecretKeys {
            stem: "password",
            literal: raw.password.as_deref(),
            env: raw.password_env.as_deref(),
            file: raw.password_file.as_deref(),
            default_envs: &[],
        },
        false,
        Some("secret given literally in the config file; prefer `password_env` or `password_file`"),
    );
    let password_given = raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some();
    let username = raw.username.clone();
    match (&username, password_given) {
        (Some(u), _) if u.trim().is_empty() => c.problem("username", "must not be empty"),
        (Some(_), false) => c.problem("password", "is required with username: set `password_env` or `password_file`"),
        (None, true) => c.problem("username", "is required with a password"),
        _ => {}
    }
    let from = match raw.from.as_deref().map(str::trim) {
        Some(f) if looks_like_address(f) => f.to_string(),
        Some(f) => {
            c.problem("from", format!("`{f}` is not an email address, e.g. `scanwatch <scanwatch@example.com>`"));
            String::new()
        }
        None => {
            c.problem("from", "is required, e.g. `scanwatch <scanwatch@example.com>`");
            String::new()
        }
    };
    let mut to = Vec::new();
    match &raw.to {
        None => c.problem("to", "is required: a list of recipients, e.g. [\"secops@example.com\"]"),
        Some(list) if list.is_empty() => c.problem("to", "lists no recipient"),
        Some(list) => {
            for (i, addr) in list.iter().enumerate() {
                if looks_like_address(addr.trim()) {
                    to.push(addr.trim().to_string());
                } else {
                    c.problem(&format!("to[{i}]"), format!("`{addr}` is not an email address"));
                }
            }
        }
    }
    let ca_file = raw.ca_file.as_deref().and_then(|f| {
        let path = ctx.config_dir.join(f);
        if path.is_file() {
            Some(path)
        } else {
            c.problem("ca_file", format!("{} is not a readable file", path.display()));
            None
        }
    });
    Some(EmailSettings {
        smtp_host: host,
        smtp_port: port,
        tls,
        username,
        password: password.map(|p| p.value),
        from,
        to,
        ca_file,
        timeout,
    })
}

/// `a@b.c` or `Name <a@b.c>`: one `@` with something on both sides. The SMTP library does the real parsing.
fn looks_like_address(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        _ => s,
    };
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !addr.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The channel for a validated non-email config, sending through the shared client, showing times in `tz`.
/// `None` for email, which the application builds from its `EmailSettings`.
pub fn build(cfg: &ChannelConfig, http: reqwest::Client, tz: Tz) -> Option<Arc<dyn Channel>> {
    let common = |url: &SecretUrl| {
        let mut c = Common::new(cfg.name.clone(), url.expose().clone(), http.clone());
        c.language = cfg.language;
        c.tz = tz;
        c.template = cfg.template.clone();
        c.timeout = cfg.timeout;
        c
    };
    let secret = |s: &Option<SourcedSecret>| s.as_ref().map(|s| s.value.clone());
    Some(match &cfg.settings {
        ChannelSettings::Webhook { url, auth, signing } => {
            let auth = match auth {
                WebhookAuth::None => webhook::Auth::None,
                WebhookAuth::Bearer { token } => webhook::Auth::Bearer(token.value.clone()),
                WebhookAuth::Basic { user, password } => {
                    webhook::Auth::Basic { user: user.clone(), password: password.value.clone() }
                }
            };
            Arc::new(WebhookChannel::new(common(url), auth, signing.as_ref().map(|s| s.key.clone())))
        }
        ChannelSettings::Feishu { url, secret: s } => Arc::new(FeishuChannel::new(common(url), secret(s))),
        ChannelSettings::DingTalk { url, secret: s } => Arc::new(DingTalkChannel::new(common(url), secret(s))),
        ChannelSettings::WeCom { url } => Arc::new(WeComChannel::new(common(url))),
        ChannelSettings::Slack { url } => Arc::new(SlackChannel::new(common(url))),
        ChannelSettings::Teams { url } => Arc::new(TeamsChannel::new(common(url))),
        ChannelSettings::Email { .. } => return None,
    })
}

#[cfg(test)]
mod tests;

/// Routing: a channel takes the alerts its `min_severity`, `rules` and `match` select.
impl crate::notify::outbox::Route for ChannelConfig {
    fn channel(&self) -> &str {
        &self.name
    }

    fn accepts(&self, notice: &AlertNotice) -> bool {
        self.matches(notice)
    }

    fn group_by(&self) -> &[String] {
        &self.group_by
    }
}
