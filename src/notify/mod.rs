//! Notifications: what a channel is asked to deliver, and how a delivery attempt ends.
//!
//! The [`outbox`] turns alert transitions into [`Notification`]s — one per channel per evaluation cycle, listing
//! every alert that changed — and hands them to a [`Channel`]. Each channel lives in its own file under
//! `channels/`, classifies the service's answer as delivered / retryable / permanent, and never logs a secret.
//!
//! - [`message`]: titles and per-alert blocks in English and Chinese, each service's markup, user templates, and
//!   [`message::fit`], which cuts a message to a service's size limit with "… and N more".
//! - [`channels`]: email and the HTTP channels (webhook, Feishu, DingTalk, WeCom, Slack, Teams, PagerDuty,
//!   Telegram, Discord, Google Chat), and each kind's config type beside its sender.
//! - [`outbox`]: routing, sealing a cycle's notices into one message per channel, and the dispatcher.
//! - [`config`]: `[[channels]]` validation, routing ([`config::ChannelConfig::matches`]) and [`config::build`].

pub mod channels;
pub mod config;
pub mod message;
pub mod outbox;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alerting::Event;
use crate::model::SeriesKey;
use crate::rules::{RuleName, Severity};

/// One alert inside a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotice {
    /// Stable per (rule, series identity): receivers dedupe and thread on it.
    pub fingerprint: String,
    pub rule: RuleName,
    pub severity: Severity,
    /// Firing, a reminder while still firing, or resolved.
    pub event: Event,
    pub series: SeriesKey,
    /// The target's user labels (`env`, `team`, …).
    pub labels: BTreeMap<String, String>,
    /// Plain words, e.g. "no cluster scan has started for 31h; limit 24h".
    pub summary: String,
    /// The measured value, e.g. "31h".
    pub value: String,
    /// When the alert started firing.
    pub since: DateTime<Utc>,
    /// When this event happened (for a resolution: when it resolved).
    pub at: DateTime<Utc>,
    /// The HSS task behind the alert and what it failed to scan, or why that is unknown; `None` when nobody asked
    /// (rules without a task, alerts stored before context existed). Its text comes from HSS and is partly
    /// user-set: every channel renders it through [`message::untrusted`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::model::AlertContext>,
}

impl AlertNotice {
    /// How long the alert has been (or was) firing at this event.
    pub fn lasted(&self) -> chrono::TimeDelta {
        (self.at - self.since).max(chrono::TimeDelta::zero())
    }
}

/// What one channel is asked to deliver in one go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across retries: the Standard Webhooks `webhook-id`, the email Message-ID seed.
    pub id: String,
    pub channel: String,
    pub created_at: DateTime<Utc>,
    /// Never empty. Ordered: firing first, then repeats, then resolved; within each by severity (critical first).
    /// Besides the alerts that changed, a grouped notification lists its group's other alerts that still fire (as
    /// [`Event::Repeat`]), as Alertmanager lists a group's current alerts.
    pub alerts: Vec<AlertNotice>,
    /// The group's labels: the alerts' labels named by the channel's `group_by` (Alertmanager's `groupLabels`);
    /// empty for one group per channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_labels: BTreeMap<String, String>,
}

impl Notification {
    /// Alertmanager's `groupKey` of this notification's group: the channel as a route below the root route, then the
    /// group's labels, rendered as Alertmanager renders them — `{}/{channel="ops"}:{env="prod", target="a"}`.
    pub fn group_key(&self) -> String {
        group_key(&self.channel, &self.group_labels)
    }
}

/// See [`Notification::group_key`].
pub fn group_key(channel: &str, labels: &BTreeMap<String, String>) -> String {
    let set = labels.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join(", ");
    format!("{{}}/{{channel={}}}:{{{set}}}", go_quote(channel))
}

/// A string quoted as Go's `%q` quotes it (Alertmanager renders label values so): printable characters as they are,
/// `"` and `\` escaped, control characters as `\n`, `\t`, `\xNN` or `\uNNNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A successful delivery, with what the service said (for `notify-test` and the delivery log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    /// A short excerpt of the response body.
    pub detail: String,
}

/// Why a delivery failed, classified so the dispatcher knows whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Worth retrying: network, timeout, 408, 429, 5xx, a service's rate-limit or busy code.
    #[error("retryable: {reason}")]
    Retryable {
        reason: String,
        /// `Retry-After` / `retry_after` from the service.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: bad signature, keyword or IP not allowed, invalid token, other 4xx.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

/// One destination. Implementations are cheap to share (`Arc<dyn Channel>`).
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// The configured channel name.
    fn name(&self) -> &str;
    /// The `kind` as configured: one of `settings::KINDS` (`webhook`, `slack`, `telegram`, `email`, …).
    fn kind(&self) -> &'static str;
    /// Delivers one notification (one attempt; the dispatcher owns retries).
    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError>;
}

/// Message language, per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "en")]
    En,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

/// SMTP settings of an `email` channel, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<crate::secret::Secret>,
    /// `scanwatch <scanwatch@example.com>`
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file with extra trusted root certificates (a private CA, or a test server's self-signed cert).
    pub ca_file: Option<std::path::PathBuf>,
    /// The whole SMTP conversation, not just the connect.
    pub timeout: Duration,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS, required: a server that does not offer it is an error (port 587).
    Starttls,
    /// Plain text; allowed only to a loopback host.
    None,
}

/// Builds every configured channel, sharing one HTTP client (per-channel timeouts are applied per request).
pub fn build_channels(
    configs: &[config::ChannelConfig],
    tz: chrono_tz::Tz,
) -> anyhow::Result<Vec<std::sync::Arc<dyn Channel>>> {
    let http = channels::channel_client(None)?;
    configs
        .iter()
        .map(|c| match &c.settings {
            config::ChannelSettings::Email(settings) => {
                channels::email::EmailChannel::new(c.name.clone(), settings.clone(), c.language, tz)
                    .map(|e| std::sync::Arc::new(e) as std::sync::Arc<dyn Channel>)
                    .map_err(|e| anyhow::anyhow!("channel `{}`: {e}", c.name))
            }
            _ => config::build(c, http.clone(), tz)
                .ok_or_else(|| anyhow::anyhow!("channel `{}` cannot be built", c.name)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_stored_before_context_existed_still_loads_and_one_without_context_is_stored_as_before() {
        let mut notice = message::sample_notification().alerts[1].clone();
        notice.context = None;
        let json = serde_json::to_value(&notice).unwrap();
        assert!(json.get("context").is_none(), "no context is not written: {json}");
        let old = json.to_string();
        let loaded: AlertNotice = serde_json::from_str(&old).unwrap();
        assert_eq!(loaded, notice);

        let with = message::sample_notification().alerts[0].clone();
        assert!(with.context.is_some());
        let back: AlertNotice = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
