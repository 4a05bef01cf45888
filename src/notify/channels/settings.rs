//! The channel kinds as configuration: the `kind`-tagged [`RawKind`] of per-kind key structs (each defined beside
//! its sender, with `deny_unknown_fields`), the validated [`ChannelSettings`], and what every kind's validation
//! shares — the [`Checker`] that collects problems by key path, secret URLs ([`SecretUrl`]) and endpoint checks.
//!
//! The list of kinds is written once, in [`kinds!`]: it makes the enums, the key lists (read from each struct's
//! serde fields, so a key cannot be added to a struct and forgotten here), the default timeouts, the rate limits
//! and the building of channels. Webhook URLs carry credentials, so no message here repeats a URL.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::{Common, dingtalk, discord, email, feishu, googlechat, pagerduty, redact_url, slack, teams, telegram};
use super::{webhook, wecom};
use crate::notify::Channel;
use crate::secret::sources::{SecretContext, SecretKeys, SecretSource, SourcedSecret};

/// A problem or a warning: the key path (`channels[3].url_env`) and what is wrong.
pub type Issue = (String, String);

/// Default attempt timeout of a chat service: they answer in well under a second.
pub const CHAT_TIMEOUT: Duration = Duration::from_secs(10);

/// A second and a minute, for rate limits.
pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// One kind's raw keys: how they validate into that kind's settings.
pub trait KindConfig {
    type Settings;
    /// The default of `timeout` for this kind.
    const TIMEOUT: Duration = CHAT_TIMEOUT;
    /// The service's documented rate limits: each `(calls, window)` must hold at once.
    const LIMITS: &'static [(usize, Duration)] = &[];

    /// The settings, or `None` with the problems recorded in `c`. `timeout` is the channel's attempt timeout.
    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, timeout: Duration) -> Option<Self::Settings>;
}

/// One kind's validated settings: the channel they make.
pub trait KindSettings {
    /// The channel, with `common` giving the shared settings aimed at a URL. `None` for email, which the
    /// application builds (it needs no HTTP client).
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>>;
}

macro_rules! kinds {
    ($($variant:ident($module:ident::$config:ident => $settings:ty) = $name:literal,)*) => {
        /// One `[[channels]]` table's kind-specific keys, tagged by `kind`. Each struct denies keys it does not know.
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(tag = "kind")]
        pub enum RawKind {
            $(#[serde(rename = $name)] $variant($module::$config),)*
        }

        /// A validated channel kind and its settings. Serialized (for `config show`) with secrets redacted.
        #[derive(Debug, Clone, Serialize)]
        #[serde(tag = "kind")]
        pub enum ChannelSettings {
            $(#[serde(rename = $name)] $variant($settings),)*
        }

        /// The channel kinds, as written in `kind`.
        pub const KINDS: &[&str] = &[$($name),*];

        impl RawKind {
            /// The `kind` as written in the config.
            pub fn kind(&self) -> &'static str {
                match self { $(RawKind::$variant(_) => $name,)* }
            }

            /// The default attempt timeout of this kind.
            pub fn default_timeout(&self) -> Duration {
                match self { $(RawKind::$variant(_) => <$module::$config as KindConfig>::TIMEOUT,)* }
            }

            /// Validates the kind's keys into its settings.
            pub fn validate(
                &self,
                c: &mut Checker<'_>,
                ctx: &SecretContext<'_>,
                timeout: Duration,
            ) -> Option<ChannelSettings> {
                match self { $(RawKind::$variant(r) => r.validate(c, ctx, timeout).map(ChannelSettings::$variant),)* }
            }
        }

        impl ChannelSettings {
            /// The `kind` as written in the config.
            pub fn kind(&self) -> &'static str {
                match self { $(ChannelSettings::$variant(_) => $name,)* }
            }

            /// See [`KindSettings::build`].
            pub fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
                match self { $(ChannelSettings::$variant(s) => s.build(common),)* }
            }
        }

        /// The keys of `kind` (empty for no kind), read from its struct.
        pub fn keys_of(kind: &str) -> &'static [&'static str] {
            match kind { $($name => fields_of::<$module::$config>(),)* _ => &[] }
        }

        /// The documented rate limits of `kind`.
        pub fn limits_of(kind: &str) -> &'static [(usize, Duration)] {
            match kind { $($name => <$module::$config as KindConfig>::LIMITS,)* _ => &[] }
        }

        /// Reads the kind-specific keys of one table: `kind` names the struct, keys of another kind are problems
        /// naming the key and the kinds it is for, and a value of the wrong type is a problem naming its key.
        pub fn read_kind(mut table: toml::Table, problems: &mut Vec<Issue>) -> Option<RawKind> {
            let kind = match table.remove("kind") {
                Some(toml::Value::String(k)) if KINDS.contains(&k.as_str()) => k,
                Some(v) => {
                    let shown = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                    problems.push((
                        "kind".into(),
                        format!("`{shown}` is not a channel kind; use one of {}", KINDS.join(", ")),
                    ));
                    return None;
                }
                None => {
                    problems.push(("kind".into(), format!("is required: one of {}", KINDS.join(", "))));
                    return None;
                }
            };
            let own = keys_of(&kind);
            for key in all_kind_keys() {
                if !own.contains(&key) && table.remove(key).is_some() {
                    let owners: Vec<&str> = KINDS.iter().copied().filter(|k| keys_of(k).contains(&key)).collect();
                    problems.push((
                        key.to_string(),
                        format!("does not apply to kind = \"{kind}\" (it is for {})", owners.join(", ")),
                    ));
                }
            }
            match kind.as_str() {
                $($name => read_lenient::<$module::$config>(table, problems).map(RawKind::$variant),)*
                _ => None,
            }
        }
    };
}

kinds! {
    Webhook(webhook::WebhookConfig => webhook::WebhookSettings) = "webhook",
    Feishu(feishu::FeishuConfig => feishu::FeishuSettings) = "feishu",
    DingTalk(dingtalk::DingTalkConfig => dingtalk::DingTalkSettings) = "dingtalk",
    WeCom(wecom::WeComConfig => wecom::WeComSettings) = "wecom",
    Slack(slack::SlackConfig => slack::SlackSettings) = "slack",
    Teams(teams::TeamsConfig => teams::TeamsSettings) = "teams",
    Email(email::EmailConfig => crate::notify::EmailSettings) = "email",
    PagerDuty(pagerduty::PagerDutyConfig => pagerduty::PagerDutySettings) = "pagerduty",
    Telegram(telegram::TelegramConfig => telegram::TelegramSettings) = "telegram",
    Discord(discord::DiscordConfig => discord::DiscordSettings) = "discord",
    GoogleChat(googlechat::GoogleChatConfig => googlechat::GoogleChatSettings) = "googlechat",
}

/// Every kind-specific key, in kind order then struct order (so problems come in a stable, readable order).
pub fn all_kind_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for kind in KINDS {
        for key in keys_of(kind) {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Deserializes `T` from a table; a value of the wrong type is a problem naming its key, and that key is dropped so
/// that the others are still read (and every bad key reported). `None` when a problem cannot be pinned to a key.
pub fn read_lenient<T: DeserializeOwned>(mut table: toml::Table, problems: &mut Vec<Issue>) -> Option<T> {
    loop {
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            Ok(v) => return Some(v),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().to_string().trim().to_string();
                let top = path.split(['.', '[']).next().unwrap_or("").to_string();
                if top.is_empty() || top == "?" || table.remove(&top).is_none() {
                    problems.push((String::new(), message));
                    return None;
                }
                problems.push((path, message));
            }
        }
    }
}

/// The field names of a struct, as serde reads them (renames applied): asked of its `Deserialize` impl.
pub fn fields_of<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Introspect<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("introspection only"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("introspection only"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// The keys of a webhook URL, which carries the credential (Slack, Teams, WeCom, Discord, Google Chat).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlKeys {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
}

impl UrlKeys {
    pub fn keys(&self) -> SecretKeys<'_> {
        SecretKeys::of("url", self.url.as_deref(), self.url_env.as_deref(), self.url_file.as_deref())
    }
}

/// The keys of a bot with a webhook URL and an optional signing secret (Feishu, DingTalk).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBotKeys {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
}

impl SignedBotKeys {
    pub fn url_keys(&self) -> SecretKeys<'_> {
        SecretKeys::of("url", self.url.as_deref(), self.url_env.as_deref(), self.url_file.as_deref())
    }

    pub fn secret_keys(&self) -> SecretKeys<'_> {
        SecretKeys::of("secret", self.secret.as_deref(), self.secret_env.as_deref(), self.secret_file.as_deref())
    }
}

/// Collects the problems and warnings of one `[[channels]]` table, each named by its key path.
pub struct Checker<'a> {
    /// The table's path, `channels[3]`.
    pub key: &'a str,
    pub problems: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl Checker<'_> {
    pub fn new(key: &str) -> Checker<'_> {
        Checker { key, problems: Vec::new(), warnings: Vec::new() }
    }

    pub fn problem(&mut self, sub: &str, message: impl Into<String>) {
        let key = if sub.is_empty() { self.key.to_string() } else { format!("{}.{sub}", self.key) };
        self.problems.push((key, message.into()));
    }

    pub fn warning(&mut self, sub: &str, message: impl Into<String>) {
        self.warnings.push((format!("{}.{sub}", self.key), message.into()));
    }

    /// Resolves a secret; `literal_hint` is the warning for a secret written in the file (None: no warning).
    pub fn secret(
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

    /// A secret that warns when written literally: "prefer `{stem}_env` or `{stem}_file`".
    pub fn optional_secret(&mut self, ctx: &SecretContext<'_>, keys: SecretKeys<'_>) -> Option<SourcedSecret> {
        let stem = keys.stem;
        let hint = format!("secret given literally in the config file; prefer `{stem}_env` or `{stem}_file`");
        self.secret(ctx, keys, false, Some(&hint))
    }

    /// A required secret (a bot token, a routing key) that warns when written literally.
    pub fn required_secret(&mut self, ctx: &SecretContext<'_>, keys: SecretKeys<'_>) -> Option<SourcedSecret> {
        let stem = keys.stem;
        let hint = format!("secret given literally in the config file; prefer `{stem}_env` or `{stem}_file`");
        self.secret(ctx, keys, true, Some(&hint))
    }

    /// A webhook URL (a secret): http(s) with a host; https unless to a loopback host, except for the generic
    /// webhook, where plain http is a warning. `example` shows the service's URL shape.
    pub fn url(&mut self, ctx: &SecretContext<'_>, keys: SecretKeys<'_>, example: &str) -> Option<SecretUrl> {
        let webhook = example == webhook::EXAMPLE_URL;
        let key = keys.written();
        let literal_hint = (!webhook).then_some(
            "the URL carries the bot's key and is written in the config file; prefer `url_env` or `url_file`",
        );
        let secret = self.secret(ctx, keys, true, literal_hint)?;
        if !secret.is_available() {
            // Loaded for reading only (`Config::load_for_reading`): the channel is never built.
            let url = Url::parse("https://unavailable.invalid/").ok()?;
            return Some(SecretUrl { url, source: secret.source });
        }
        let url = match Url::parse(secret.value.expose().trim()) {
            Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => u,
            // The value is a secret: say what is wrong without repeating it.
            _ => {
                self.problem(&key, format!("is not an http(s) URL with a host, e.g. `{example}`"));
                return None;
            }
        };
        if url.scheme() == "http" && !is_loopback_host(url.host_str().unwrap_or("")) {
            if webhook {
                self.warning(&key, "plain http to a non-loopback host sends alerts (and any auth header) unencrypted");
            } else {
                self.problem(
                    &key,
                    format!("must be https (plain http is allowed only to a loopback host), e.g. `{example}`"),
                );
                return None;
            }
        }
        Some(SecretUrl { url, source: secret.source })
    }

    /// Whether the URL has a non-empty query parameter `name` (a DingTalk `access_token`, a WeCom `key`); a
    /// problem at `key` if not.
    pub fn require_query(&mut self, url: &SecretUrl, key: &str, name: &str, example: &str) -> bool {
        if url.source() != &SecretSource::Literal && url.url.host_str() == Some("unavailable.invalid") {
            return true;
        }
        let present = url.url.query_pairs().any(|(k, v)| k == name && !v.is_empty());
        if !present {
            self.problem(key, format!("has no `{name}` query parameter, e.g. `{example}`"));
        }
        present
    }

    /// A service endpoint that is not a secret (PagerDuty's enqueue URL, Telegram's API): https with a host, plain
    /// http only to a loopback host (a test server, a local relay). `default` when not written.
    pub fn endpoint(&mut self, key: &str, written: Option<&str>, default: &str) -> Option<Url> {
        let text = written.unwrap_or(default).trim();
        match Url::parse(text) {
            Ok(u)
                if u.host_str().is_some()
                    && (u.scheme() == "https"
                        || (u.scheme() == "http" && is_loopback_host(u.host_str().unwrap_or("")))) =>
            {
                Some(u)
            }
            _ => {
                self.problem(
                    key,
                    format!("`{text}` is not an https URL with a host (plain http only to a loopback host), e.g. `{default}`"),
                );
                None
            }
        }
    }
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

/// A channel's `proxy`: an http(s) proxy URL whose user and password (if any) are secrets, so it shows (Debug,
/// Serialize) as scheme, `[redacted]@` when it has credentials, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    /// Reads `proxy`; the message never repeats the value (it may carry a password).
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        const EXAMPLE: &str = "http://proxy.example.com:3128";
        match Url::parse(text.trim()) {
            Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => Ok(ProxyUrl(u)),
            Ok(u) if u.host_str().is_some() => Err(format!(
                "the `{}` scheme is not supported; use an http:// or https:// proxy, e.g. `{EXAMPLE}`",
                u.scheme()
            )),
            _ => Err(format!("is not an http(s) URL with a host, e.g. `{EXAMPLE}`")),
        }
    }

    /// The real URL (with credentials), for building the client.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    fn shown(&self) -> String {
        let host = redact_url(&self.0);
        if self.0.username().is_empty() && self.0.password().is_none() {
            host
        } else {
            host.replacen("://", "://[redacted]@", 1)
        }
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for ProxyUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_knows_its_keys_and_no_key_is_a_routing_key() {
        assert_eq!(keys_of("slack"), ["url", "url_env", "url_file"]);
        assert!(keys_of("email").contains(&"smtp_host"));
        assert!(keys_of("telegram").contains(&"bot_token_env") && keys_of("telegram").contains(&"chat_id"));
        assert_eq!(keys_of("discord"), ["url", "url_env", "url_file"]);
        for key in all_kind_keys() {
            assert!(!crate::notify::config::routing_keys().contains(&key), "{key}");
        }
    }

    #[test]
    fn a_proxy_shows_no_credentials() {
        let p = ProxyUrl::parse("http://alice:s3cret@proxy.example.com:3128").unwrap();
        for shown in [format!("{p:?}"), serde_json::to_string(&p).unwrap()] {
            assert!(!shown.contains("s3cret") && !shown.contains("alice"), "{shown}");
            assert!(shown.contains("http://[redacted]@proxy.example.com:3128"), "{shown}");
        }
        assert_eq!(format!("{:?}", ProxyUrl::parse("https://p.example.com").unwrap()), "https://p.example.com");
        let e = ProxyUrl::parse("socks5://bob:pw@p.example.com:1080").unwrap_err();
        assert!(e.contains("socks5") && !e.contains("pw@"), "{e}");
        assert!(ProxyUrl::parse("proxy:3128 with:secret").unwrap_err().contains("not an http(s) URL"));
    }
}
