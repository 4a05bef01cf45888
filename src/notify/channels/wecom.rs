//! WeCom (企业微信) group robot: a `markdown` message (colours on every client version), at most 4096 bytes of
//! content, and the answer read from the body's `errcode` — WeCom reports failures as HTTP 200 with
//! `errcode != 0`. There is no signing: the `key` in the URL is the credential.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{Answer, Common, to_bytes};
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, MINUTE, SecretUrl, UrlKeys};
use crate::secret::sources::SecretContext;

/// WeCom's limit on markdown content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// 20 messages a minute per robot, failed sends included: wait out the minute.
const RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

const SERVICE: &str = "WeCom";

/// A `wecom` channel's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…";

/// The keys of a `kind = "wecom"` channel: its webhook URL, which carries the credential.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(transparent)]
pub struct WeComConfig(pub UrlKeys);

/// A validated `wecom` channel.
#[derive(Debug, Clone, Serialize)]
pub struct WeComSettings {
    pub url: SecretUrl,
}

impl KindConfig for WeComConfig {
    type Settings = WeComSettings;
    /// 20 messages a minute per robot.
    const LIMITS: &'static [(usize, Duration)] = &[(20, MINUTE)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<WeComSettings> {
        let keys = self.0.keys();
        let key = keys.written();
        let url = c.url(ctx, keys, EXAMPLE_URL)?;
        c.require_query(&url, &key, "key", EXAMPLE_URL).then_some(WeComSettings { url })
    }
}

impl KindSettings for WeComSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(WeComChannel::new(common(self.url.expose()))))
    }
}

/// A WeCom group robot.
#[derive(Debug, Clone)]
pub struct WeComChannel {
    common: Common,
}

impl WeComChannel {
    pub fn new(common: Common) -> Self {
        WeComChannel { common }
    }

    /// The markdown message; the content starts with the title (WeCom has no title field).
    pub fn payload(&self, n: &Notification) -> Value {
        let text = self.common.body(n, Format::WeCom, true, Budget { limit: MAX_CONTENT_BYTES, unit: Unit::Bytes });
        json!({"msgtype": "markdown", "markdown": {"content": text}})
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    let (code, msg) = answer.errcode(SERVICE, "a WeCom robot webhook")?;
    match code {
        0 => {
            answer.classify_status(SERVICE)?;
            Ok(Delivered { status: answer.status, detail: answer.excerpt() })
        }
        45009 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} rate limit (errcode 45009: {msg}); 20 messages a minute per robot"),
            retry_after: answer.retry_after.or(Some(RATE_LIMIT_WAIT)),
        }),
        -1 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} is busy (errcode -1: {msg})"),
            retry_after: answer.retry_after,
        }),
        93000 => Err(DeliveryError::Permanent {
            reason: format!("{SERVICE} errcode 93000 ({msg}): the webhook key is invalid or the robot was removed"),
        }),
        45002 => Err(DeliveryError::Permanent {
            reason: format!("{SERVICE} errcode 45002 ({msg}): the message is too large"),
        }),
        _ => Err(DeliveryError::Permanent { reason: format!("{SERVICE} errcode {code}: {msg}") }),
    }
}

#[async_trait::async_trait]
impl Channel for WeComChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "wecom"
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
    use crate::alerting::Event;
    use crate::hss::test_support::{Recorded, Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        MARKDOWN, assert_hostile_context_is_inert, assert_says_context_unavailable, batch, common, hostile_context,
        notice, notification, one, unavailable_context, with_context,
    };

    fn ok() -> Reply {
        Reply::json(200, json!({"errcode": 0, "errmsg": "ok"}))
    }

    fn channel(url: &url::Url) -> WeComChannel {
        WeComChannel::new(common(url.join("/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa").unwrap()))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    /// WeCom's own checks: the key, and the content size.
    fn checking(r: &Recorded) -> Reply {
        if r.query.as_deref() != Some("key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa") {
            return Reply::json(200, json!({"errcode": 93000, "errmsg": "invalid webhook url"}));
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        match body["markdown"]["content"].as_str() {
            Some(c) if c.len() > MAX_CONTENT_BYTES => {
                Reply::json(200, json!({"errcode": 45002, "errmsg": "content exceed max length"}))
            }
            Some(_) => ok(),
            None => Reply::json(200, json!({"errcode": 44004, "errmsg": "empty content"})),
        }
    }

    #[tokio::test]
    async fn a_markdown_message_with_the_title_first_is_delivered() {
        let server = spawn(checking).await;
        let n = notification(vec![notice(0, Event::Firing), notice(1, Event::Resolved)]);
        let d = channel(&server.url).send(&n).await.unwrap();
        assert_eq!(d.status, 200);
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.starts_with("**[FIRING:1] scanwatch: no_recent_scan, stuck_running**"), "{content}");
        assert!(content.contains("<font color=\"warning\">"), "{content}");
        assert!(content.contains("<font color=\"info\">"), "{content}");
    }

    #[tokio::test]
    async fn fifty_alerts_fit_in_4096_bytes_ending_with_and_n_more() {
        let server = spawn(checking).await;
        channel(&server.url).send(&batch(50)).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.len() <= MAX_CONTENT_BYTES, "{}", content.len());
        let tail = content.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    #[tokio::test]
    async fn a_chinese_storm_fits_in_4096_bytes_too() {
        let server = spawn(checking).await;
        let mut ch = channel(&server.url);
        ch.common.language = Language::ZhCn;
        ch.send(&batch(50)).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.len() <= MAX_CONTENT_BYTES, "{}", content.len());
        assert!(content.starts_with("**【告警:50】"), "{content}");
        assert!(content.ends_with(" 条"), "{content}");
    }

    #[tokio::test]
    async fn error_codes_in_an_http_200_body_are_classified() {
        let err = send_against(Reply::json(200, json!({"errcode": 45009, "errmsg": "api freq out of limit"})))
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(RATE_LIMIT_WAIT), .. }), "{err:?}");
        let err = send_against(Reply::json(200, json!({"errcode": -1, "errmsg": "system busy"}))).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
        let err = send_against(Reply::json(200, json!({"errcode": 93000, "errmsg": "invalid webhook url"})))
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("key is invalid")), "{err:?}");
        let err = send_against(Reply::json(200, json!({"errcode": 40008, "errmsg": "invalid message type"})))
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("40008")), "{err:?}");
    }

    #[tokio::test]
    async fn http_429_and_5xx_are_retryable() {
        let err = send_against(Reply::raw(429, "").header("Retry-After", "9")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(9)));
        let err = send_against(Reply::raw(500, "")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_template_that_fails_at_send_time_still_sends_the_built_in_message() {
        let server = spawn(checking).await;
        let mut ch = channel(&server.url);
        ch.common.template = Some("{{ title }}{% for a in alerts %}{{ a.labels.missing_label }}{% endfor %}".into());
        ch.send(&one()).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.starts_with("**[FIRING:1]"), "{content}");
        assert!(content.contains("no cluster scan has started for 31h"), "{content}");
    }

    #[tokio::test]
    async fn an_error_message_never_shows_the_key() {
        let server = spawn(|r: &Recorded| {
            Reply::json(200, json!({"errcode": 93000, "errmsg": format!("invalid webhook url, {}", r.query.clone().unwrap_or_default())}))
        })
        .await;
        let err = channel(&server.url).send(&one()).await.unwrap_err();
        assert!(!err.to_string().contains("693a91f6"), "{err}");
    }

    fn content(ch: &WeComChannel, n: &Notification) -> String {
        ch.payload(n)["markdown"]["content"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_hostile_task_context_shows_its_facts_and_cannot_mention_or_mark_up() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = content(&ch, &with_context(hostile_context()));
            assert!(text.len() <= MAX_CONTENT_BYTES, "{}", text.len());
            assert_hostile_context_is_inert(&text, language, MARKDOWN);
            assert!(!text.contains("<@"), "{text}");
        }
    }

    #[test]
    fn a_message_says_why_there_is_no_task_context() {
        let mut ch = channel(&url::Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            assert_says_context_unavailable(&content(&ch, &with_context(unavailable_context())), language);
        }
    }
}
