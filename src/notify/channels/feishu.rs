//! Feishu / Lark custom bot: an interactive card (schema 2.0) with a red header while anything fires and a green
//! one when all is resolved, optional signing, and the answer read from the body's `code` — Feishu reports most
//! failures as HTTP 200 with `code != 0`.
//!
//! Signing: `sign = base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = ""))` with the timestamp in
//! seconds, sent as top-level `timestamp` and `sign` fields of the body. The request body may be at most 20 KB.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::settings::{Checker, KindConfig, KindSettings, MINUTE, SECOND, SecretUrl, SignedBotKeys};
use super::{Answer, Common, to_bytes};
use crate::alerting::Event;
use crate::hss::signer::hmac_sha256;
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use crate::secret::Secret;
use crate::secret::sources::{SecretContext, SourcedSecret};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Feishu's limit on the request body.
pub const MAX_BODY_BYTES: usize = 20_000;

/// How long to wait after Feishu's frequency limit (11232): its limits are per second and per minute.
const RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

const SERVICE: &str = "Feishu";

/// `base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = ""))`: the secret is part of the key and the
/// message is empty (unlike DingTalk).
pub fn feishu_sign(secret: &str, timestamp_secs: i64) -> String {
    let key = format!("{timestamp_secs}\n{secret}");
    B64.encode(hmac_sha256(key.as_bytes(), b""))
}

/// A Feishu bot's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://open.feishu.cn/open-apis/bot/v2/hook/…";

/// The keys of a `kind = "feishu"` channel: the bot's webhook URL and its optional signing secret.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct FeishuConfig(pub SignedBotKeys);

/// A validated `feishu` channel.
#[derive(Debug, Clone, Serialize)]
pub struct FeishuSettings {
    pub url: SecretUrl,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SourcedSecret>,
}

impl KindConfig for FeishuConfig {
    type Settings = FeishuSettings;
    /// 5 a second and 100 a minute per bot.
    const LIMITS: &'static [(usize, Duration)] = &[(5, SECOND), (100, MINUTE)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<FeishuSettings> {
        let url = c.url(ctx, self.0.url_keys(), EXAMPLE_URL);
        let secret = c.optional_secret(ctx, self.0.secret_keys());
        Some(FeishuSettings { url: url?, secret })
    }
}

impl KindSettings for FeishuSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        let secret = self.secret.as_ref().map(|s| s.value.clone());
        Some(Arc::new(FeishuChannel::new(common(self.url.expose()), secret)))
    }
}

/// A Feishu or Lark group bot.
#[derive(Debug, Clone)]
pub struct FeishuChannel {
    common: Common,
    secret: Option<Secret>,
}

impl FeishuChannel {
    pub fn new(common: Common, secret: Option<Secret>) -> Self {
        FeishuChannel { common, secret }
    }

    /// The request body, signed when a secret is set, within [`MAX_BODY_BYTES`].
    pub fn payload(&self, n: &Notification) -> Value {
        let firing = n.alerts.iter().any(|a| a.event != Event::Resolved);
        let card = |text: &str| {
            let mut body = json!({
                "msg_type": "interactive",
                "card": {
                    "schema": "2.0",
                    "header": {
                        "title": {"tag": "plain_text", "content": self.common.title(n)},
                        "template": if firing { "red" } else { "green" },
                    },
                    "body": {"elements": [{"tag": "markdown", "content": text}]},
                },
            });
            if let Some(secret) = &self.secret {
                let ts = self.common.clock.now().timestamp();
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(secret.expose(), ts));
            }
            body
        };
        let room = MAX_BODY_BYTES.saturating_sub(card("").to_string().len());
        let text = self.common.body(n, Format::Markdown, false, Budget { limit: room, unit: Unit::JsonBytes });
        card(&text)
    }
}

/// Feishu's answer: `code` (or the legacy `StatusCode`) 0 is success; 11232 is its rate limit; the rest say what
/// to fix. HTTP 429/5xx are retried whatever the body says.
fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
    let code = parsed.as_ref().and_then(|v| v.get("code").or_else(|| v.get("StatusCode"))).and_then(Value::as_i64);
    let msg = parsed
        .as_ref()
        .and_then(|v| v.get("msg").or_else(|| v.get("StatusMessage")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if matches!(answer.status, 408 | 429 | 500..=599) {
        answer.classify_status(SERVICE)?;
    }
    let Some(code) = code else {
        answer.classify_status(SERVICE)?;
        return Err(DeliveryError::Permanent {
            reason: format!(
                "{SERVICE} answered HTTP {} without a `code`: is the URL a Feishu bot webhook? ({})",
                answer.status,
                answer.excerpt()
            ),
        });
    };
    let hint = match code {
        0 => {
            // `code: 0` under a 3xx/4xx status is not a delivery: the status decides.
            answer.classify_status(SERVICE)?;
            return Ok(Delivered { status: answer.status, detail: answer.excerpt() });
        }
        11232 => {
            return Err(DeliveryError::Retryable {
                reason: format!("{SERVICE} rate limit (code 11232: {msg})"),
                retry_after: answer.retry_after.or(Some(RATE_LIMIT_WAIT)),
            });
        }
        19021 => {
            "the signature does not match or the timestamp is more than an hour off: check the channel's \
                  `secret` against the bot's signing secret, and this host's clock"
        }
        19022 => "this host's IP address is not in the bot's IP allowlist",
        19024 => "the bot's security settings require a keyword: add it to the message template or use signing",
        19001 => "the webhook token is invalid: the bot was removed or the URL is wrong",
        9499 => "Feishu rejected the request as malformed or too large (over 20 KB)",
        _ => "",
    };
    let reason = match hint {
        "" => format!("{SERVICE} error code {code}: {msg}"),
        hint => format!("{SERVICE} error code {code} ({msg}): {hint}"),
    };
    Err(DeliveryError::Permanent { reason })
}

#[async_trait::async_trait]
impl Channel for FeishuChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "feishu"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let secrets: Vec<&str> = self.secret.iter().map(Secret::expose).collect();
        let answer = self.common.post_json(SERVICE, &self.common.url, HeaderMap::new(), body, &secrets).await?;
        classify(&answer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::hss::test_support::{Recorded, Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        MARKDOWN, assert_hostile_context_is_inert, assert_says_context_unavailable, batch, common, hostile_context,
        notice, notification, one, unavailable_context, with_context,
    };

    const SECRET: &str = "demo-secret";

    fn ok() -> Reply {
        Reply::json(200, json!({"code": 0, "msg": "success", "data": {}}))
    }

    /// Feishu's check, from its documented algorithm.
    fn verifying(r: &Recorded) -> Reply {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let (Some(ts), Some(sign)) = (body["timestamp"].as_str(), body["sign"].as_str()) else {
            return Reply::json(
                200,
                json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}),
            );
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(format!("{ts}\n{SECRET}").as_bytes()).unwrap();
        mac.update(b"");
        if B64.encode(mac.finalize().into_bytes()) == sign {
            ok()
        } else {
            Reply::json(
                200,
                json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}),
            )
        }
    }

    fn channel(url: url::Url, secret: Option<&str>) -> FeishuChannel {
        FeishuChannel::new(
            common(url.join("/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap()),
            secret.map(Secret::new),
        )
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(server.url.clone(), None).send(&one()).await
    }

    #[test]
    fn the_feishu_vector_signs_as_documented() {
        assert_eq!(feishu_sign("demo-secret", 1599360473), "3/MaVZ8JLIy4TUG+7KSFJqvUkTKd+HWY8g+56DZWq8s=");
    }

    #[tokio::test]
    async fn a_signed_card_is_accepted_by_a_verifying_bot() {
        let server = spawn(verifying).await;
        let delivered = channel(server.url.clone(), Some(SECRET)).send(&one()).await.unwrap();
        assert_eq!(delivered.status, 200);
        let r = server.only_request();
        assert_eq!(r.path, "/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["timestamp"], "1745309051");
        assert_eq!(body["card"]["header"]["template"], "red");
        assert_eq!(
            body["card"]["header"]["title"]["content"],
            "[FIRING:1] scanwatch: no_recent_scan (prod-cn-north-4-cluster-000)"
        );
        let text = body["card"]["body"]["elements"][0]["content"].as_str().unwrap();
        assert!(text.contains("no cluster scan has started for 31h; limit 24h"), "{text}");
        assert!(text.contains("Since: 2025-04-22 09:04 CST"), "{text}");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_a_permanent_signature_error() {
        let server = spawn(verifying).await;
        let err = channel(server.url.clone(), Some("other-secret")).send(&one()).await.unwrap_err();
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("19021") && reason.contains("signing secret"), "{reason}");
        assert!(!reason.contains("other-secret"), "{reason}");
    }

    #[tokio::test]
    async fn all_resolved_turns_the_header_green() {
        let server = spawn(|_| ok()).await;
        let n = notification(vec![notice(0, Event::Resolved)]);
        channel(server.url.clone(), None).send(&n).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["card"]["header"]["template"], "green");
        assert!(body["card"]["header"]["title"]["content"].as_str().unwrap().starts_with("[RESOLVED]"));
        assert!(body.get("sign").is_none());
    }

    #[tokio::test]
    async fn error_codes_in_an_http_200_body_are_classified() {
        for (code, hint) in [
            (19022, "allowlist"),
            (19024, "keyword"),
            (19001, "token is invalid"),
            (9499, "too large"),
            (12345, "12345"),
        ] {
            let err = send_against(Reply::json(200, json!({"code": code, "msg": "x"}))).await.unwrap_err();
            let DeliveryError::Permanent { reason } = err else { panic!("{code}: {err:?}") };
            assert!(reason.contains(hint), "{code}: {reason}");
        }
    }

    #[tokio::test]
    async fn the_frequency_limit_code_is_retryable_with_a_wait() {
        let err = send_against(Reply::json(200, json!({"code": 11232, "msg": "frequency limited"}))).await.unwrap_err();
        assert_eq!(
            err,
            DeliveryError::Retryable {
                reason: "Feishu rate limit (code 11232: frequency limited)".into(),
                retry_after: Some(RATE_LIMIT_WAIT)
            }
        );
    }

    #[tokio::test]
    async fn http_429_and_5xx_are_retryable_and_400_with_9499_is_permanent() {
        let err = send_against(Reply::raw(429, "").header("Retry-After", "3")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(3)));
        let err = send_against(Reply::raw(503, "busy")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        let err = send_against(Reply::json(400, json!({"code": 9499, "msg": "Bad Request"}))).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("9499")), "{err:?}");
    }

    #[tokio::test]
    async fn a_200_that_is_not_feishus_json_is_not_taken_for_success() {
        let err = send_against(Reply::raw(200, "<html>captive portal</html>")).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("without a `code`")), "{err:?}");
    }

    #[tokio::test]
    async fn the_legacy_status_code_field_is_understood() {
        let d = send_against(Reply::json(200, json!({"StatusCode": 0, "StatusMessage": "success"}))).await.unwrap();
        assert_eq!(d.status, 200);
    }

    #[tokio::test]
    async fn fifty_alerts_are_one_card_within_20_kb_ending_with_and_n_more() {
        let server = spawn(|_| ok()).await;
        channel(server.url.clone(), Some(SECRET)).send(&batch(50)).await.unwrap();
        let r = server.only_request();
        assert!(r.body.len() <= MAX_BODY_BYTES, "{}", r.body.len());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["card"]["body"]["elements"][0]["content"].as_str().unwrap();
        let tail = text.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    #[tokio::test]
    async fn a_chinese_card_uses_chinese_words_and_the_chinese_more_line() {
        let server = spawn(|_| ok()).await;
        let mut ch = channel(server.url.clone(), None);
        ch.common.language = Language::ZhCn;
        ch.send(&batch(80)).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert!(body["card"]["header"]["title"]["content"].as_str().unwrap().starts_with("【告警:80】"));
        let text = body["card"]["body"]["elements"][0]["content"].as_str().unwrap();
        assert!(text.contains("集群扫描已 31h 未启动新任务(阈值 24h)"), "{text}");
        assert!(text.contains("…… 另有 "), "{text}");
    }

    fn card_text(ch: &FeishuChannel, n: &Notification) -> String {
        ch.payload(n)["card"]["body"]["elements"][0]["content"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_hostile_task_context_shows_its_facts_and_cannot_mention_or_mark_up() {
        let mut ch = channel(url::Url::parse("http://127.0.0.1:9/").unwrap(), None);
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = card_text(&ch, &with_context(hostile_context()));
            assert_hostile_context_is_inert(&text, language, MARKDOWN);
            assert!(text.contains("＜at id=all＞"), "{text}");
        }
    }

    #[test]
    fn a_card_says_why_there_is_no_task_context() {
        let mut ch = channel(url::Url::parse("http://127.0.0.1:9/").unwrap(), None);
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            assert_says_context_unavailable(&card_text(&ch, &with_context(unavailable_context())), language);
        }
    }
}
