//! Slack incoming webhook: the title as `text` (the notification preview) and the alerts in one attachment
//! coloured `danger` while anything fires and `good` when all is resolved (colour exists only in attachments).
//! Success is HTTP 200 with the body `ok` (or JSON `{"ok":true}`); 429 carries `Retry-After`; 404/410 mean the
//! channel is gone.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{Answer, Common, to_bytes};
use crate::alerting::Event;
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, SECOND, SecretUrl, UrlKeys};
use crate::secret::sources::SecretContext;

/// Slack truncates message text over 40,000 characters; the attachment text is kept within it.
pub const MAX_TEXT_CHARS: usize = 40_000;

const SERVICE: &str = "Slack";

/// A `slack` channel's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://hooks.slack.com/services/…";

/// The keys of a `kind = "slack"` channel: its webhook URL, which carries the credential.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct SlackConfig(pub UrlKeys);

/// A validated `slack` channel.
#[derive(Debug, Clone, Serialize)]
pub struct SlackSettings {
    pub url: SecretUrl,
}

impl KindConfig for SlackConfig {
    type Settings = SlackSettings;
    /// About one message a second per channel.
    const LIMITS: &'static [(usize, Duration)] = &[(1, SECOND)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<SlackSettings> {
        let keys = self.0.keys();
        Some(SlackSettings { url: c.url(ctx, keys, EXAMPLE_URL)? })
    }
}

impl KindSettings for SlackSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(SlackChannel::new(common(self.url.expose()))))
    }
}

/// A Slack incoming webhook.
#[derive(Debug, Clone)]
pub struct SlackChannel {
    common: Common,
}

impl SlackChannel {
    pub fn new(common: Common) -> Self {
        SlackChannel { common }
    }

    pub fn payload(&self, n: &Notification) -> Value {
        let title = self.common.title(n);
        let firing = n.alerts.iter().any(|a| a.event != Event::Resolved);
        let text = self.common.body(n, Format::Slack, false, Budget { limit: MAX_TEXT_CHARS, unit: Unit::Chars });
        json!({
            "text": crate::notify::message::escape(Format::Slack, &title),
            "attachments": [{
                "color": if firing { "danger" } else { "good" },
                "fallback": title,
                "text": text,
                "mrkdwn_in": ["text"],
            }],
        })
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    answer.classify_status(SERVICE).map_err(|e| match (answer.status, e) {
        (404 | 410, _) => DeliveryError::Permanent {
            reason: format!(
                "{SERVICE} answered HTTP {} ({}): the channel is gone or archived, or the webhook was revoked",
                answer.status,
                answer.excerpt()
            ),
        },
        (_, e) => e,
    })?;
    let body = answer.body.trim();
    let json_ok = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("ok").and_then(Value::as_bool));
    if body == "ok" || json_ok == Some(true) {
        return Ok(Delivered { status: answer.status, detail: body.to_string() });
    }
    Err(DeliveryError::Permanent {
        reason: format!("{SERVICE} answered HTTP {} without `ok`: {}", answer.status, answer.excerpt()),
    })
}

#[async_trait::async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let answer = self.common.post_json(SERVICE, &self.common.url, HeaderMap::new(), body, &[]).await?;
        classify(&answer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hss::test_support::{Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        MRKDWN, assert_hostile_context_is_inert, assert_says_context_unavailable, batch, common, hostile_context,
        notice, notification, one, unavailable_context, with_context,
    };

    fn channel(url: &url::Url) -> SlackChannel {
        SlackChannel::new(common(url.join("/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX").unwrap()))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    #[tokio::test]
    async fn a_message_answered_ok_is_delivered_with_a_danger_attachment() {
        let server = spawn(|_| Reply::raw(200, "ok")).await;
        let d = channel(&server.url).send(&one()).await.unwrap();
        assert_eq!(d, Delivered { status: 200, detail: "ok".into() });
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert!(body["text"].as_str().unwrap().starts_with("[FIRING:1] scanwatch: no_recent_scan"));
        assert_eq!(body["attachments"][0]["color"], "danger");
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("*🔴 FIRING · critical · no_recent_scan"), "{text}");
        assert!(text.contains("\n• Region: cn-north-4"), "{text}");
    }

    #[tokio::test]
    async fn a_resolution_is_green() {
        let server = spawn(|_| Reply::raw(200, "ok")).await;
        channel(&server.url).send(&notification(vec![notice(2, Event::Resolved)])).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["attachments"][0]["color"], "good");
        assert!(body["attachments"][0]["text"].as_str().unwrap().contains("resolved after 7h"));
    }

    #[tokio::test]
    async fn a_200_without_ok_is_not_success() {
        let err = send_against(Reply::raw(200, "")).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("without `ok`")), "{err:?}");
        assert!(send_against(Reply::json(200, json!({"ok": true}))).await.is_ok());
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retryable_and_gone_channels_permanent() {
        let err = send_against(Reply::raw(429, "rate_limited").header("Retry-After", "1")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(1)));
        let err = send_against(Reply::raw(500, "rollup_error")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        for (status, text) in [(404, "channel_not_found"), (410, "channel_is_archived")] {
            let err = send_against(Reply::raw(status, text)).await.unwrap_err();
            assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains(text)), "{err:?}");
        }
        let err = send_against(Reply::raw(400, "invalid_payload")).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("invalid_payload")));
        let err = send_against(Reply::raw(403, "action_prohibited")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Permanent { .. }));
    }

    #[tokio::test]
    async fn fifty_long_alerts_are_one_message_within_40000_chars_ending_with_and_n_more() {
        let server = spawn(|_| Reply::raw(200, "ok")).await;
        let mut n = batch(50);
        for a in &mut n.alerts {
            a.summary = format!("{} {}", a.summary, "x".repeat(1000));
        }
        channel(&server.url).send(&n).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert!(text.chars().count() <= MAX_TEXT_CHARS);
        let tail = text.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    #[tokio::test]
    async fn markup_in_alert_text_cannot_ping_the_channel() {
        let server = spawn(|_| Reply::raw(200, "ok")).await;
        let mut n = one();
        n.alerts[0].summary = "HSS said <!channel> & <@U123>".to_string();
        channel(&server.url).send(&n).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let text = body["attachments"][0]["text"].as_str().unwrap();
        assert!(text.contains("HSS said &lt;!channel&gt; &amp; &lt;@U123&gt;"), "{text}");
    }

    fn attachment_text(ch: &SlackChannel, n: &Notification) -> String {
        ch.payload(n)["attachments"][0]["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_hostile_task_context_shows_its_facts_and_cannot_mention_or_mark_up() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = attachment_text(&ch, &with_context(hostile_context()));
            assert_hostile_context_is_inert(&text, language, MRKDWN);
            assert!(text.contains("&lt;!channel&gt;") && text.contains("&lt;@\u{200D}U024BE7LH&gt;"), "{text}");
        }
    }

    #[test]
    fn a_message_says_why_there_is_no_task_context() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            assert_says_context_unavailable(&attachment_text(&ch, &with_context(unavailable_context())), language);
        }
    }
}
