//! DingTalk custom robot: a markdown message, optional signing in the query, and the answer read from the body's
//! `errcode` — DingTalk reports failures as HTTP 200 with `errcode != 0`.
//!
//! Signing: `sign = urlencode(base64(HMAC-SHA256(key = secret, message = "{timestamp}\n{secret}")))` with the
//! timestamp in milliseconds, appended as `&timestamp=…&sign=…`. (Unlike Feishu: key and message swapped,
//! milliseconds, query not body.) Error 310000 covers a missing keyword, a bad signature or timestamp and an IP
//! outside the allowlist, told apart only by `errmsg`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, MINUTE, SecretUrl, SignedBotKeys};
use super::{Answer, Common, to_bytes};
use crate::hss::signer::hmac_sha256;
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use crate::secret::Secret;
use crate::secret::sources::{SecretContext, SourcedSecret};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// DingTalk refuses messages over 20,000 bytes; the whole body is kept under it.
pub const MAX_BODY_BYTES: usize = 20_000;

/// Going over 20 messages a minute throttles the robot for 10 minutes.
const THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

const SERVICE: &str = "DingTalk";

/// The hint for error 310000 "keywords not in content".
pub const KEYWORD_HINT: &str =
    "the robot's security settings require a keyword: add it to the message template or use signing";

/// `base64(HMAC-SHA256(key = secret, message = "{timestamp_ms}\n{secret}"))`, not yet URL-encoded.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    B64.encode(hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes()))
}

/// The robot URL with `timestamp` and `sign` appended (form-encoded, so `+ / =` are percent-encoded).
pub fn signed_url(url: &Url, secret: &str, timestamp_ms: i64) -> Url {
    let mut url = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "timestamp" && k != "sign")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &dingtalk_sign(secret, timestamp_ms));
    url
}

/// A DingTalk robot's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://oapi.dingtalk.com/robot/send?access_token=…";

/// The keys of a `kind = "dingtalk"` channel: the robot's webhook URL and its optional signing secret.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct DingTalkConfig(pub SignedBotKeys);

/// A validated `dingtalk` channel.
#[derive(Debug, Clone, Serialize)]
pub struct DingTalkSettings {
    pub url: SecretUrl,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SourcedSecret>,
}

impl KindConfig for DingTalkConfig {
    type Settings = DingTalkSettings;
    /// 20 messages a minute per robot.
    const LIMITS: &'static [(usize, Duration)] = &[(20, MINUTE)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<DingTalkSettings> {
        let url_keys = self.0.url_keys();
        let url_key = url_keys.written();
        let url = c.url(ctx, url_keys, EXAMPLE_URL);
        let secret_keys = self.0.secret_keys();
        let secret_key = secret_keys.written();
        let secret = c.optional_secret(ctx, secret_keys);
        if let Some(s) = &secret
            && s.is_available()
            && !s.value.expose().starts_with("SEC")
        {
            c.warning(
                &secret_key,
                "DingTalk signing secrets start with `SEC`; check that this is the robot's signing secret",
            );
        }
        let url = url?;
        c.require_query(&url, &url_key, "access_token", EXAMPLE_URL).then_some(DingTalkSettings { url, secret })
    }
}

impl KindSettings for DingTalkSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        let secret = self.secret.as_ref().map(|s| s.value.clone());
        Some(Arc::new(DingTalkChannel::new(common(self.url.expose()), secret)))
    }
}

/// A DingTalk group robot.
#[derive(Debug, Clone)]
pub struct DingTalkChannel {
    common: Common,
    secret: Option<Secret>,
}

impl DingTalkChannel {
    pub fn new(common: Common, secret: Option<Secret>) -> Self {
        DingTalkChannel { common, secret }
    }

    /// The markdown message within [`MAX_BODY_BYTES`]; the title is the notification preview, the text repeats it
    /// as a heading.
    pub fn payload(&self, n: &Notification) -> Value {
        let title = self.common.title(n);
        let envelope = |text: &str| json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}});
        let room = MAX_BODY_BYTES.saturating_sub(envelope("").to_string().len());
        let text = self.common.body(n, Format::DingTalk, true, Budget { limit: room, unit: Unit::JsonBytes });
        envelope(&text)
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    let (code, msg) = answer.errcode(SERVICE, "a DingTalk robot webhook")?;
    match code {
        0 => {
            answer.classify_status(SERVICE)?;
            Ok(Delivered { status: answer.status, detail: answer.excerpt() })
        }
        130101 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} rate limit (errcode 130101: {msg}); the robot is throttled for 10 minutes"),
            retry_after: answer.retry_after.or(Some(THROTTLE_WAIT)),
        }),
        -1 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} is busy (errcode -1: {msg})"),
            retry_after: answer.retry_after,
        }),
        310000 => {
            let lower = msg.to_lowercase();
            let hint = if lower.contains("keyword") {
                KEYWORD_HINT
            } else if lower.contains("sign") || lower.contains("timestamp") {
                "check the channel's `secret` (SEC…) against the robot's signing secret, and this host's clock"
            } else if lower.contains("ip") || lower.contains("whitelist") {
                "this host's IP address is not in the robot's IP allowlist"
            } else {
                "the robot's security settings rejected the message"
            };
            Err(DeliveryError::Permanent { reason: format!("{SERVICE} errcode 310000 ({msg}): {hint}") })
        }
        300001 | 400102 => Err(DeliveryError::Permanent {
            reason: format!("{SERVICE} errcode {code} ({msg}): the access_token is invalid or the robot is disabled"),
        }),
        _ => Err(DeliveryError::Permanent { reason: format!("{SERVICE} errcode {code}: {msg}") }),
    }
}

#[async_trait::async_trait]
impl Channel for DingTalkChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "dingtalk"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let url = match &self.secret {
            Some(secret) => signed_url(&self.common.url, secret.expose(), self.common.clock.now().timestamp_millis()),
            None => self.common.url.clone(),
        };
        let secrets: Vec<&str> = self.secret.iter().map(Secret::expose).collect();
        let answer = self.common.post_json(SERVICE, &url, HeaderMap::new(), body, &secrets).await?;
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
        one, unavailable_context, with_context,
    };

    const SECRET: &str = "SECdemo-secret";

    fn ok() -> Reply {
        Reply::json(200, json!({"errcode": 0, "errmsg": "ok"}))
    }

    /// DingTalk's check, from the documented algorithm, on the raw query as received.
    fn verifying(r: &Recorded) -> Reply {
        let query = r.query.clone().unwrap_or_default();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("access_token").as_deref() != Some("tok0123456789") {
            return Reply::json(200, json!({"errcode": 300001, "errmsg": "token is not exist"}));
        }
        let (Some(ts), Some(sign)) = (get("timestamp"), get("sign")) else {
            return Reply::json(200, json!({"errcode": 310000, "errmsg": "sign not match"}));
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}\n{SECRET}").as_bytes());
        if B64.encode(mac.finalize().into_bytes()) == sign {
            ok()
        } else {
            Reply::json(
                200,
                json!({"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}),
            )
        }
    }

    fn channel(url: &Url, secret: Option<&str>) -> DingTalkChannel {
        let url = url.join("/robot/send?access_token=tok0123456789").unwrap();
        DingTalkChannel::new(common(url), secret.map(Secret::new))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url, None).send(&one()).await
    }

    #[test]
    fn the_dingtalk_vector_signs_and_encodes_as_documented() {
        assert_eq!(dingtalk_sign(SECRET, 1599360473000), "w/wgdHDpwiLO5I/XMzzFJTfSmWkrZOMm4h0XT46ZVQY=");
        let url = Url::parse("https://oapi.dingtalk.com/robot/send?access_token=XXX").unwrap();
        assert_eq!(
            signed_url(&url, SECRET, 1599360473000).query(),
            Some("access_token=XXX&timestamp=1599360473000&sign=w%2FwgdHDpwiLO5I%2FXMzzFJTfSmWkrZOMm4h0XT46ZVQY%3D")
        );
    }

    #[tokio::test]
    async fn a_signed_markdown_message_is_accepted_by_a_verifying_robot() {
        let server = spawn(verifying).await;
        let d = channel(&server.url, Some(SECRET)).send(&one()).await.unwrap();
        assert_eq!(d.status, 200);
        let r = server.only_request();
        assert!(r.query.as_deref().unwrap().contains("timestamp=1745309051000"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        assert!(body["markdown"]["title"].as_str().unwrap().starts_with("[FIRING:1]"));
        let text = body["markdown"]["text"].as_str().unwrap();
        assert!(text.starts_with("### [FIRING:1]"), "{text}");
        assert!(text.contains("no cluster scan has started for 31h"), "{text}");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_a_permanent_signature_error_that_hides_the_secret() {
        let server = spawn(verifying).await;
        let err = channel(&server.url, Some("SECwrong-secret")).send(&one()).await.unwrap_err();
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("310000") && reason.contains("signing secret"), "{reason}");
        assert!(!reason.contains("SECwrong") && !reason.contains("tok0123456789"), "{reason}");
    }

    #[tokio::test]
    async fn a_missing_keyword_names_the_fix() {
        let err = send_against(Reply::json(200, json!({"errcode": 310000, "errmsg": "keywords not in content"}))).await;
        assert_eq!(
            err,
            Err(DeliveryError::Permanent {
                reason: format!("DingTalk errcode 310000 (keywords not in content): {KEYWORD_HINT}")
            })
        );
    }

    #[tokio::test]
    async fn an_ip_outside_the_allowlist_is_permanent() {
        let err = send_against(Reply::json(200, json!({"errcode": 310000, "errmsg": "ip 1.2.3.4 not in whitelist"})))
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("allowlist")), "{err:?}");
    }

    #[tokio::test]
    async fn rate_limit_and_busy_codes_are_retryable() {
        let err = send_against(Reply::json(
            200,
            json!({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
        ))
        .await
        .unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(THROTTLE_WAIT), .. }), "{err:?}");
        let err = send_against(Reply::json(200, json!({"errcode": -1, "errmsg": "系统繁忙"}))).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: None, .. }), "{err:?}");
        let err = send_against(Reply::raw(429, "").header("Retry-After", "12")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(12)));
        let err = send_against(Reply::raw(502, "bad gateway")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_invalid_token_is_permanent() {
        let err = send_against(Reply::json(200, json!({"errcode": 300001, "errmsg": "token is not exist"})))
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("access_token")), "{err:?}");
    }

    #[tokio::test]
    async fn fifty_alerts_are_one_message_within_20000_bytes_ending_with_and_n_more() {
        let server = spawn(|_| ok()).await;
        channel(&server.url, Some(SECRET)).send(&batch(50)).await.unwrap();
        let r = server.only_request();
        assert!(r.body.len() <= MAX_BODY_BYTES, "{}", r.body.len());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["markdown"]["text"].as_str().unwrap();
        let tail = text.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    fn markdown_text(ch: &DingTalkChannel, n: &Notification) -> String {
        ch.payload(n)["markdown"]["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_hostile_task_context_shows_its_facts_and_cannot_mention_or_mark_up() {
        let mut ch = channel(&Url::parse("http://127.0.0.1:9/").unwrap(), None);
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let body = ch.payload(&with_context(hostile_context()));
            assert!(body.get("at").is_none(), "no one is @-mentioned: {body}");
            let text = markdown_text(&ch, &with_context(hostile_context()));
            assert_hostile_context_is_inert(&text, language, MARKDOWN);
        }
    }

    #[test]
    fn a_message_says_why_there_is_no_task_context() {
        let mut ch = channel(&Url::parse("http://127.0.0.1:9/").unwrap(), None);
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            assert_says_context_unavailable(&markdown_text(&ch, &with_context(unavailable_context())), language);
        }
    }
}
