//! Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card in a message envelope, the title
//! coloured `Attention` while anything fires and `Good` when all is resolved, the body at most 28 KB.
//!
//! Workflows answers 202 when the flow run is *queued*: a bad card, an orphaned flow or a private channel fail later,
//! inside the flow, where only its run history shows them. So any 2xx is success, and the delivery detail says so.

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

/// Teams' limit on a card message.
pub const MAX_BODY_BYTES: usize = 28_000;

const SERVICE: &str = "Teams Workflows";

/// A `teams` channel's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://….logic.azure.com/workflows/…";

/// The keys of a `kind = "teams"` channel: its webhook URL, which carries the credential.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct TeamsConfig(pub UrlKeys);

/// A validated `teams` channel.
#[derive(Debug, Clone, Serialize)]
pub struct TeamsSettings {
    pub url: SecretUrl,
}

impl KindConfig for TeamsConfig {
    type Settings = TeamsSettings;
    /// Workflows throttles beyond four requests a second.
    const LIMITS: &'static [(usize, Duration)] = &[(4, SECOND)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<TeamsSettings> {
        let keys = self.0.keys();
        Some(TeamsSettings { url: c.url(ctx, keys, EXAMPLE_URL)? })
    }
}

impl KindSettings for TeamsSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(TeamsChannel::new(common(self.url.expose()))))
    }
}

/// A Teams channel behind a Workflows webhook.
#[derive(Debug, Clone)]
pub struct TeamsChannel {
    common: Common,
}

impl TeamsChannel {
    pub fn new(common: Common) -> Self {
        TeamsChannel { common }
    }

    pub fn payload(&self, n: &Notification) -> Value {
        let title = self.common.title(n);
        let firing = n.alerts.iter().any(|a| a.event != Event::Resolved);
        let envelope = |text: &str| {
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "msteams": {"width": "Full"},
                        "body": [
                            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium",
                             "color": if firing { "Attention" } else { "Good" }, "wrap": true},
                            {"type": "TextBlock", "text": text, "wrap": true},
                        ],
                    },
                }],
            })
        };
        let room = MAX_BODY_BYTES.saturating_sub(envelope("").to_string().len());
        let text = self.common.body(n, Format::Markdown, false, Budget { limit: room, unit: Unit::JsonBytes });
        envelope(&text)
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    answer.classify_status(SERVICE)?;
    let detail = match answer.status {
        202 => "accepted (202): the flow run was queued; if nothing appears in Teams, check the flow's run history"
            .to_string(),
        _ => answer.excerpt(),
    };
    Ok(Delivered { status: answer.status, detail })
}

#[async_trait::async_trait]
impl Channel for TeamsChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "teams"
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
        MARKDOWN, assert_hostile_context_is_inert, assert_says_context_unavailable, batch, common, hostile_context,
        notice, notification, one, unavailable_context, with_context,
    };

    fn channel(url: &url::Url) -> TeamsChannel {
        let url = url
            .join("/workflows/abc/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers&sig=s3cr3tSignature0123")
            .unwrap();
        TeamsChannel::new(common(url))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    #[tokio::test]
    async fn an_adaptive_card_accepted_with_202_is_delivered() {
        let server = spawn(|_| Reply::raw(202, "")).await;
        let d = channel(&server.url).send(&one()).await.unwrap();
        assert_eq!(d.status, 202);
        assert!(d.detail.contains("run history"));
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["type"], "message");
        let card = &body["attachments"][0];
        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["color"], "Attention");
        assert!(card["content"]["body"][1]["text"].as_str().unwrap().contains("- Task type: cluster scan"));
    }

    #[tokio::test]
    async fn any_2xx_is_success_and_resolutions_are_good() {
        let server = spawn(|_| Reply::raw(200, "")).await;
        let d = channel(&server.url).send(&notification(vec![notice(0, Event::Resolved)])).await.unwrap();
        assert_eq!(d.status, 200);
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["attachments"][0]["content"]["body"][0]["color"], "Good");
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retryable_and_other_4xx_permanent() {
        let err = send_against(Reply::raw(429, "").header("Retry-After", "2")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(2)));
        let err = send_against(Reply::raw(504, "")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        let err =
            send_against(Reply::json(400, json!({"error": {"code": "InvalidRequestContent"}}))).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("InvalidRequestContent")));
        let err = send_against(Reply::raw(401, "")).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if !reason.contains("s3cr3t")));
    }

    #[tokio::test]
    async fn fifty_alerts_are_one_card_within_28_kb_ending_with_and_n_more() {
        let server = spawn(|_| Reply::raw(202, "")).await;
        let mut n = batch(50);
        for a in &mut n.alerts {
            a.summary = format!("{} {}", a.summary, "y".repeat(300));
        }
        channel(&server.url).send(&n).await.unwrap();
        let r = server.only_request();
        assert!(r.body.len() <= MAX_BODY_BYTES, "{}", r.body.len());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap();
        let tail = text.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    fn card_text(ch: &TeamsChannel, n: &Notification) -> String {
        ch.payload(n)["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_hostile_task_context_shows_its_facts_and_cannot_mention_or_mark_up() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = card_text(&ch, &with_context(hostile_context()));
            assert_hostile_context_is_inert(&text, language, MARKDOWN);
        }
    }

    #[test]
    fn a_card_says_why_there_is_no_task_context() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            assert_says_context_unavailable(&card_text(&ch, &with_context(unavailable_context())), language);
        }
    }
}
