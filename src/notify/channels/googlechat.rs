//! Google Chat incoming webhook: the message as `text` (plain, so alert text cannot format or mention: a `<` is
//! followed by a zero-width joiner, which keeps `<users/all>` inert), at most 4000 characters.
//!
//! Google answers 200 with the created message; 429 (the space's quota) and 5xx are retried, any other status is
//! permanent. The URL's `key` and `token` are the credential: they never appear in a log or an error.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, SECOND, SecretUrl, UrlKeys};
use super::{Common, to_bytes};
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use crate::secret::sources::SecretContext;

/// A Google Chat webhook's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://chat.googleapis.com/v1/spaces/…/messages?key=…&token=…";

/// The text of a webhook message is kept within 4000 characters.
pub const MAX_TEXT_CHARS: usize = 4000;

const SERVICE: &str = "Google Chat";

/// The keys of a `kind = "googlechat"` channel: its webhook URL, which carries the key and token.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct GoogleChatConfig(pub UrlKeys);

/// A validated `googlechat` channel.
#[derive(Debug, Clone, Serialize)]
pub struct GoogleChatSettings {
    pub url: SecretUrl,
}

impl KindConfig for GoogleChatConfig {
    type Settings = GoogleChatSettings;
    /// One message a second per space.
    const LIMITS: &'static [(usize, Duration)] = &[(1, SECOND)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<GoogleChatSettings> {
        Some(GoogleChatSettings { url: c.url(ctx, self.0.keys(), EXAMPLE_URL)? })
    }
}

impl KindSettings for GoogleChatSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(GoogleChatChannel::new(common(self.url.expose()))))
    }
}

/// A Google Chat space behind an incoming webhook.
#[derive(Debug, Clone)]
pub struct GoogleChatChannel {
    common: Common,
}

impl GoogleChatChannel {
    pub fn new(common: Common) -> Self {
        GoogleChatChannel { common }
    }

    pub fn payload(&self, n: &Notification) -> Value {
        json!({ "text": self.common.body(n, Format::Plain, true, Budget { limit: MAX_TEXT_CHARS, unit: Unit::Chars }) })
    }
}

#[async_trait::async_trait]
impl Channel for GoogleChatChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "googlechat"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let answer = self.common.post_json(SERVICE, &self.common.url, HeaderMap::new(), body, &[]).await?;
        answer.classify_status(SERVICE)?;
        let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
        let name = parsed.as_ref().and_then(|v| v.get("name")).and_then(Value::as_str).unwrap_or("");
        Ok(Delivered { status: answer.status, detail: format!("created {name}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        assert_hostile_context_is_inert, common, hostile_context, one, with_context,
    };

    fn channel(url: &Url) -> GoogleChatChannel {
        let url = url
            .join("/v1/spaces/AAAAxyz/messages?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI&token=tok3n-s3cret-value")
            .unwrap();
        GoogleChatChannel::new(common(url))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    #[tokio::test]
    async fn a_message_is_created_as_text_in_the_channels_language() {
        let server = spawn(|_| {
            Reply::json(
                200,
                json!({"name": "spaces/AAAAxyz/messages/abc.abc", "thread": {"name": "spaces/AAAAxyz/threads/abc"}}),
            )
        })
        .await;
        let d = channel(&server.url).send(&one()).await.unwrap();
        assert_eq!(d.detail, "created spaces/AAAAxyz/messages/abc.abc");
        let r = server.only_request();
        assert_eq!(r.path, "/v1/spaces/AAAAxyz/messages");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(body["text"].as_str().unwrap().starts_with("[FIRING:1] scanwatch: no_recent_scan"), "{body}");

        let server = spawn(|_| Reply::json(200, json!({"name": "spaces/x/messages/y"}))).await;
        let mut ch = channel(&server.url);
        ch.common.language = Language::ZhCn;
        ch.send(&one()).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert!(body["text"].as_str().unwrap().starts_with("【告警:1】"), "{body}");
    }

    #[tokio::test]
    async fn quota_and_outages_are_retried_and_a_bad_request_or_key_is_permanent() {
        let quota = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}});
        let err = send_against(Reply::json(429, quota)).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        let err = send_against(Reply::raw(503, "unavailable")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        let bad =
            json!({"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}});
        let err = send_against(Reply::json(400, bad)).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("Invalid JSON payload")));
        let denied = json!({"error": {"code": 403, "message": "key tok3n-s3cret-value is invalid", "status": "PERMISSION_DENIED"}});
        let err = send_against(Reply::json(403, denied)).await.unwrap_err();
        let shown = format!("{err:?}");
        assert!(matches!(err, DeliveryError::Permanent { .. }) && !shown.contains("tok3n-s3cret"), "{shown}");
    }

    #[test]
    fn a_hostile_task_context_cannot_mention_anyone() {
        let mut ch = channel(&Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = ch.payload(&with_context(hostile_context()))["text"].as_str().unwrap().to_string();
            assert_hostile_context_is_inert(&text, language, &[]);
            assert!(!text.contains("<users/all>"));
        }
    }
}
