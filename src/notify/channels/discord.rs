//! Discord webhook: the title as `content` and the alerts in one embed coloured red while anything fires and green
//! when all is resolved, with `allowed_mentions.parse = []` so no alert text can ping `@everyone` or a role.
//!
//! The URL gets `wait=true`, so Discord answers 200 with the saved message (without it, 204 comes back even for a
//! message Discord did not save); 204 also counts as success. 429 carries `retry_after` in seconds (a float) in
//! the JSON body, which is honoured; 401 and 404 mean the webhook was deleted or its token is wrong.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, SecretUrl, UrlKeys};
use super::{Answer, Common, to_bytes};
use crate::alerting::Event;
use crate::notify::message::{self, Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use crate::secret::sources::SecretContext;

/// A Discord webhook's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://discord.com/api/webhooks/…/…";

/// Discord's limits: message content 2000 characters, an embed's description 4096.
pub const MAX_CONTENT_CHARS: usize = 2000;
pub const MAX_DESCRIPTION_CHARS: usize = 4096;

/// Embed colours (Alertmanager's): dark red while firing, green when resolved.
const FIRING_COLOUR: u32 = 0x992D22;
const RESOLVED_COLOUR: u32 = 0x2ECC71;

/// The longest `retry_after` taken from a body; longer waits are the dispatcher's `max_delivery_age` to judge.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

const SERVICE: &str = "Discord";

/// The keys of a `kind = "discord"` channel: its webhook URL, which carries the webhook's token.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct DiscordConfig(pub UrlKeys);

/// A validated `discord` channel.
#[derive(Debug, Clone, Serialize)]
pub struct DiscordSettings {
    pub url: SecretUrl,
}

impl KindConfig for DiscordConfig {
    type Settings = DiscordSettings;

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<DiscordSettings> {
        Some(DiscordSettings { url: c.url(ctx, self.0.keys(), EXAMPLE_URL)? })
    }
}

impl KindSettings for DiscordSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(DiscordChannel::new(common(self.url.expose()))))
    }
}

/// A Discord channel behind a webhook. Discord rate-limits per webhook and says so in every answer, so no limit is
/// assumed here; its 429 answers are honoured.
#[derive(Debug, Clone)]
pub struct DiscordChannel {
    common: Common,
}

impl DiscordChannel {
    pub fn new(common: Common) -> Self {
        DiscordChannel { common }
    }

    pub fn payload(&self, n: &Notification) -> Value {
        let title: String =
            message::escape(Format::Markdown, &self.common.title(n)).chars().take(MAX_CONTENT_CHARS).collect();
        let firing = n.alerts.iter().any(|a| a.event != Event::Resolved);
        let description =
            self.common.body(n, Format::Markdown, false, Budget { limit: MAX_DESCRIPTION_CHARS, unit: Unit::Chars });
        json!({
            "content": title,
            "allowed_mentions": {"parse": []},
            "embeds": [{
                "description": description,
                "color": if firing { FIRING_COLOUR } else { RESOLVED_COLOUR },
            }],
        })
    }

    /// The webhook URL with `wait=true` (kept if the user set it).
    fn send_url(&self) -> Url {
        let mut url = self.common.url.clone();
        if !url.query_pairs().any(|(k, _)| k == "wait") {
            url.query_pairs_mut().append_pair("wait", "true");
        }
        url
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
    match answer.status {
        200..=299 => {
            let id = parsed.as_ref().and_then(|v| v.get("id")).and_then(Value::as_str).unwrap_or("");
            Ok(Delivered {
                status: answer.status,
                detail: if id.is_empty() { "sent".into() } else { format!("message {id}") },
            })
        }
        429 => {
            let wait = parsed
                .as_ref()
                .and_then(|v| v.get("retry_after"))
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())));
            Err(DeliveryError::Retryable {
                reason: format!("{SERVICE} answered HTTP 429: {}", answer.excerpt()),
                retry_after: wait.or(answer.retry_after),
            })
        }
        401 | 404 => Err(DeliveryError::Permanent {
            reason: format!(
                "{SERVICE} answered HTTP {}: the webhook was deleted or its token is wrong ({})",
                answer.status,
                answer.excerpt()
            ),
        }),
        _ => answer.classify_status(SERVICE).map(|()| Delivered { status: answer.status, detail: String::new() }),
    }
}

#[async_trait::async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "discord"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let answer = self.common.post_json(SERVICE, &self.send_url(), HeaderMap::new(), body, &[]).await?;
        classify(&answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        MARKDOWN, assert_hostile_context_is_inert, common, hostile_context, notice, notification, one, with_context,
    };

    const PATH: &str = "/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

    fn channel(url: &Url) -> DiscordChannel {
        DiscordChannel::new(common(url.join(PATH).unwrap()))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    #[tokio::test]
    async fn a_message_waits_for_discord_to_save_it_and_mentions_nobody() {
        let server = spawn(|_| Reply::json(200, json!({"id": "1100000000000000001", "type": 0}))).await;
        let d = channel(&server.url).send(&one()).await.unwrap();
        assert_eq!(d, Delivered { status: 200, detail: "message 1100000000000000001".into() });
        let r = server.only_request();
        assert_eq!((r.path.as_str(), r.query.as_deref()), (PATH, Some("wait=true")));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(body["embeds"][0]["color"], FIRING_COLOUR);
        assert!(body["content"].as_str().unwrap().starts_with("[FIRING:1] scanwatch: no"), "{body}");
        assert!(send_against(Reply::raw(204, "")).await.is_ok());
    }

    #[tokio::test]
    async fn a_resolution_is_green_and_a_chinese_channel_writes_chinese() {
        let server = spawn(|_| Reply::raw(204, "")).await;
        let mut ch = channel(&server.url);
        ch.common.language = Language::ZhCn;
        ch.send(&notification(vec![notice(2, Event::Resolved)])).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["embeds"][0]["color"], RESOLVED_COLOUR);
        assert!(body["content"].as_str().unwrap().starts_with("【恢复】"), "{body}");
    }

    #[tokio::test]
    async fn a_rate_limit_waits_the_seconds_in_the_body() {
        let err = send_against(Reply::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false}),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_millis(1500))
        );
        let err = send_against(Reply::raw(503, "upstream")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_deleted_webhook_and_an_invalid_body_are_permanent() {
        let err =
            send_against(Reply::json(404, json!({"message": "Unknown Webhook", "code": 10015}))).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("deleted")), "{err:?}");
        let err =
            send_against(Reply::json(400, json!({"message": "Invalid Form Body", "code": 50035}))).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("Invalid Form Body")));
        assert!(!format!("{err:?}").contains("AbCdEfGhIjKlMnOp"));
    }

    #[test]
    fn a_hostile_task_context_cannot_mention_or_mark_up() {
        let mut ch = channel(&Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let payload = ch.payload(&with_context(hostile_context()));
            let text = payload["embeds"][0]["description"].as_str().unwrap();
            assert_hostile_context_is_inert(text, language, MARKDOWN);
        }
    }
}
