//! `[[channels]]` routing: the keys every kind shares ([`RawRouting`]: name, language, which alerts, template,
//! timeout, `group_by`, `proxy`), the table as read ([`RawChannel`]: those keys plus the kind's own, see
//! [`super::channels::settings`]), its validation into a [`ChannelConfig`] with every problem named by its key path,
//! routing ([`ChannelConfig::matches`]) and building the channel ([`build`]).
//!
//! Each kind's keys, validation, construction and rate limits live beside its sender (`channels/slack.rs` holds
//! `SlackConfig`); this module only splits a table between the shared keys and the kind's. Validation is pure apart
//! from reading secret and template files. A key of another kind is a problem naming the key and the kinds it is
//! for (`smtp_host` on a Slack channel); a key that no channel knows is reported by the top-level parse
//! (`serde_ignored`), like every other unknown key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::channels::settings::{
    CHAT_TIMEOUT, Checker, ProxyUrl, RawKind, all_kind_keys, fields_of, read_kind, read_lenient,
};
use super::channels::{self, Common};
use super::message::check_template;
use super::{AlertNotice, Channel, Language};
use crate::rules::{RuleName, Severity};
use crate::secret::sources::SecretContext;

pub use super::channels::settings::{ChannelSettings, Issue, KINDS, SecretUrl};
pub use super::channels::webhook::{WebhookAuth, WebhookSigning};

/// The longest `timeout` of one delivery attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The keys every `[[channels]]` table may have, whatever its kind.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub name: Option<String>,
    pub language: Option<String>,
    pub min_severity: Option<String>,
    pub rules: Option<Vec<String>>,
    #[serde(rename = "match")]
    pub match_: Option<BTreeMap<String, String>>,
    pub template: Option<String>,
    pub template_file: Option<String>,
    pub timeout: Option<String>,
    /// Label names whose values split alerts into groups; none is one group per channel.
    pub group_by: Option<Vec<String>>,
    /// An http(s) proxy for this channel's requests.
    pub proxy: Option<String>,
}

/// The keys every kind shares, as serde names them.
pub fn routing_keys() -> &'static [&'static str] {
    fields_of::<RawRouting>()
}

/// One `[[channels]]` table as read: the shared keys, the kind's keys, and what could not be read. Reading never
/// fails on a bad value, so that validation can report every problem of the table at once.
#[derive(Debug, Default, Clone)]
pub struct RawChannel {
    pub routing: RawRouting,
    /// `None` when `kind` is missing or unknown, or its keys could not be read (see `problems`).
    pub kind: Option<RawKind>,
    /// What reading found wrong, by key relative to the table: a missing or unknown `kind`, a key of another kind,
    /// a value of the wrong type.
    pub problems: Vec<Issue>,
}

impl RawChannel {
    /// Splits a table between the shared keys and the kind's, and reads each.
    pub fn from_table(table: toml::Table) -> RawChannel {
        let routing_keys = routing_keys();
        let (routing, kind): (toml::Table, toml::Table) =
            table.into_iter().partition(|(k, _)| routing_keys.contains(&k.as_str()));
        let mut problems = Vec::new();
        let routing = read_lenient::<RawRouting>(routing, &mut problems).unwrap_or_default();
        let kind = read_kind(kind, &mut problems);
        RawChannel { routing, kind, problems }
    }
}

/// Takes the shared keys, `kind` and every kind's keys; any other key is left to the caller's unknown-key report
/// (deserialized as ignored, which `serde_ignored` sees).
impl<'de> Deserialize<'de> for RawChannel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawChannel, D::Error> {
        struct TableVisitor;

        impl<'de> Visitor<'de> for TableVisitor {
            type Value = RawChannel;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [[channels]] table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawChannel, A::Error> {
                let known: Vec<&str> = routing_keys().iter().copied().chain(["kind"]).chain(all_kind_keys()).collect();
                let mut table = toml::Table::new();
                while let Some(key) = map.next_key::<String>()? {
                    if known.contains(&key.as_str()) {
                        let value: toml::Value = map.next_value()?;
                        table.insert(key, value);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(RawChannel::from_table(table))
            }
        }

        d.deserialize_map(TableVisitor)
    }
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
    /// The user's message template (the text of `template`, or of the file `template_file`), checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// One delivery attempt, start to end.
    #[serde(serialize_with = "humantime_str")]
    pub timeout: Duration,
    /// Label names whose values split this channel's alerts into groups; empty is one group for the channel
    /// (Alertmanager's default route).
    pub group_by: Vec<String>,
    /// Every request of this channel goes through this proxy; `None` connects directly (proxy variables of the
    /// environment are not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyUrl>,
}

fn humantime_str<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
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

/// Validates one `[[channels]]` table at `key` (`channels[3]`). Returns the channel when there is no problem, the
/// problems, and warnings (a literal secret, a short signing key…), each with its key path.
pub fn validate_channel(
    key: &str,
    raw: &RawChannel,
    ctx: &SecretContext<'_>,
) -> (Option<ChannelConfig>, Vec<Issue>, Vec<Issue>) {
    let mut c = Checker::new(key);
    let r = &raw.routing;
    let name = match r.name.as_deref().map(str::trim) {
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
    // A missing or unknown kind, keys of another kind, values of the wrong type.
    let reading = c.problems.len()..c.problems.len() + raw.problems.len();
    for (sub, message) in &raw.problems {
        c.problem(sub, message.clone());
    }
    let language = match r.language.as_deref() {
        None | Some("en") => Language::En,
        Some("zh-CN") => Language::ZhCn,
        Some(other) => {
            c.problem("language", format!("`{other}` is not a message language; use `en` or `zh-CN`"));
            Language::En
        }
    };
    let min_severity = match r.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => Severity::parse(s).unwrap_or_else(|| {
            c.problem("min_severity", format!("`{s}` is not a severity; use info, warning or critical"));
            Severity::Info
        }),
    };
    let mut rules = Vec::new();
    match &r.rules {
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
    for (label, pattern) in r.match_.iter().flatten() {
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
    let template = template(&mut c, r, ctx.config_dir);
    let default_timeout = raw.kind.as_ref().map_or(CHAT_TIMEOUT, RawKind::default_timeout);
    let timeout = match r.timeout.as_deref() {
        None => default_timeout,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                c.problem("timeout", "must be greater than zero");
                default_timeout
            }
            Ok(d) if d > MAX_TIMEOUT => {
                let max = crate::clock::format_duration(MAX_TIMEOUT);
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
    let group_by = group_by(&mut c, r);
    let proxy = r.proxy.as_deref().and_then(|text| match ProxyUrl::parse(text) {
        Ok(p) => Some(p),
        Err(e) => {
            c.problem("proxy", e);
            None
        }
    });
    if r.proxy.is_some()
        && let Some(kind) = raw.kind.as_ref().map(RawKind::kind).filter(|k| *k == "email")
    {
        c.problem("proxy", format!("does not apply to kind = \"{kind}\" (it is for the HTTP kinds)"));
    }
    let settings = raw.kind.as_ref().and_then(|k| k.validate(&mut c, ctx, timeout));
    // A key dropped for its type is not also "required".
    let unreadable: Vec<String> = c.problems[reading.clone()].iter().map(|(k, _)| k.clone()).collect();
    let mut index = 0;
    c.problems.retain(|(k, _)| {
        index += 1;
        reading.contains(&(index - 1)) || !unreadable.contains(k)
    });
    let config = match settings {
        Some(settings) if c.problems.is_empty() => Some(ChannelConfig {
            name,
            settings,
            language,
            min_severity,
            rules,
            matchers,
            template,
            timeout,
            group_by,
            proxy,
        }),
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
        if let Some(name) = raw.routing.name.as_deref().map(str::trim).filter(|n| !n.is_empty())
            && let Some(first) = names.insert(name.to_string(), i)
        {
            problems.push((format!("{key}.name"), format!("`{name}` is already the name of channels[{first}]")));
        }
        channels.extend(channel);
    }
    (channels, problems, warnings)
}

/// `group_by`: label names, each once.
fn group_by(c: &mut Checker<'_>, raw: &RawRouting) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, label) in raw.group_by.iter().flatten().enumerate() {
        let label = label.trim();
        if label.is_empty() {
            c.problem(&format!("group_by[{i}]"), "is empty; write a label name such as `target` or `env`");
        } else if !(label.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
            && label.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
        {
            c.problem(&format!("group_by[{i}]"), "label names are letters, digits and `_`, not starting with a digit");
        } else if out.iter().any(|l| l == label) {
            c.problem(&format!("group_by[{i}]"), format!("`{label}` is listed twice"));
        } else {
            out.push(label.to_string());
        }
    }
    out
}

fn template(c: &mut Checker<'_>, raw: &RawRouting, config_dir: &Path) -> Option<String> {
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

/// The channel for a validated config, sending through `http` (or, with `proxy`, a client of its own), showing times
/// in `tz`. `None` for email, which the application builds from its `EmailSettings`, and when the proxied client
/// cannot be made.
pub fn build(cfg: &ChannelConfig, http: reqwest::Client, tz: Tz) -> Option<Arc<dyn Channel>> {
    let http = match &cfg.proxy {
        Some(proxy) => channels::channel_client(Some(proxy.expose())).ok()?,
        None => http,
    };
    let common = |url: &url::Url| {
        let mut c = Common::new(cfg.name.clone(), url.clone(), http.clone());
        c.language = cfg.language;
        c.tz = tz;
        c.template = cfg.template.clone();
        c.timeout = cfg.timeout;
        c
    };
    cfg.settings.build(&common)
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
