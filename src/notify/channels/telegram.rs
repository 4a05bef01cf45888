//! Telegram bot: `POST {api_url}/bot{token}/sendMessage` with the message as plain text (no `parse_mode`, so no
//! alert text can break entity parsing or turn into markup), at most 4096 characters.
//!
//! Telegram answers `{"ok":true,…}` or `{"ok":false,"error_code":…,"description":…,"parameters":…}` with the
//! HTTP status matching `error_code`. 429 carries `parameters.retry_after` (seconds), which is honoured; a group
//! that became a supergroup answers 400 with `parameters.migrate_to_chat_id`, which the error names; 401 (a wrong
//! or revoked token) and 403 (the bot was blocked or removed) are permanent. The token is in the URL path: it is
//! scrubbed from every answer and error, and the channel's shown URL is the API's host only.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, MINUTE, SECOND};
use super::{Answer, Common, to_bytes};
use crate::notify::message::{Budget, Format, Unit};
use crate::notify::{Channel, Delivered, DeliveryError, Notification};
use crate::secret::Secret;
use crate::secret::sources::{SecretContext, SecretKeys, SourcedSecret};

/// Telegram's Bot API.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Telegram's limit on a message's text.
pub const MAX_TEXT_CHARS: usize = 4096;

const SERVICE: &str = "Telegram";

/// A chat: its numeric id (`-1001234567890` for a supergroup or channel) or a public channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Name(String),
}

/// The keys of a `kind = "telegram"` channel: the bot's token, the chat, and the API's URL (a local Bot API server
/// or a relay).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub bot_token: Option<String>,
    pub bot_token_env: Option<String>,
    pub bot_token_file: Option<String>,
    pub chat_id: Option<ChatId>,
    pub api_url: Option<String>,
}

/// A validated `telegram` channel.
#[derive(Debug, Clone, Serialize)]
pub struct TelegramSettings {
    pub api_url: Url,
    pub bot_token: SourcedSecret,
    pub chat_id: ChatId,
}

impl KindConfig for TelegramConfig {
    type Settings = TelegramSettings;
    /// About one message a second per chat, and 20 a minute in a group.
    const LIMITS: &'static [(usize, Duration)] = &[(1, SECOND), (20, MINUTE)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<TelegramSettings> {
        let keys = SecretKeys::of(
            "bot_token",
            self.bot_token.as_deref(),
            self.bot_token_env.as_deref(),
            self.bot_token_file.as_deref(),
        );
        let key = keys.written();
        let token = c.required_secret(ctx, keys).filter(|t| {
            let value = t.value.expose().trim();
            let shaped = value.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            // The value is a secret: say what is wrong without repeating it.
            if t.is_available() && !shaped {
                c.problem(&key, "is not a bot token: BotFather gives one like `123456789:AAH…`");
            }
            shaped || !t.is_available()
        });
        let chat_id = match &self.chat_id {
            None => {
                c.problem("chat_id", "is required: the chat's id, e.g. -1001234567890, or a channel's `@username`");
                None
            }
            Some(ChatId::Name(name)) => match name.trim().parse::<i64>() {
                Ok(id) => Some(ChatId::Id(id)),
                Err(_) if name.starts_with('@') && name.len() > 1 && !name.contains(char::is_whitespace) => {
                    Some(ChatId::Name(name.clone()))
                }
                Err(_) => {
                    c.problem(
                        "chat_id",
                        format!(
                            "`{name}` is not a chat: write its id, e.g. -1001234567890, or a channel's `@username`"
                        ),
                    );
                    None
                }
            },
            Some(id) => Some(id.clone()),
        };
        let api_url = c.endpoint("api_url", self.api_url.as_deref(), DEFAULT_API_URL);
        Some(TelegramSettings { api_url: api_url?, bot_token: token?, chat_id: chat_id? })
    }
}

impl KindSettings for TelegramSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        let token = Secret::new(self.bot_token.value.expose().trim());
        Some(Arc::new(TelegramChannel::new(common(&self.api_url), token, self.chat_id.clone())))
    }
}

/// A Telegram chat that a bot posts to. `common.url` is the API's base URL, without the token.
#[derive(Debug, Clone)]
pub struct TelegramChannel {
    common: Common,
    token: Secret,
    chat_id: ChatId,
}

impl TelegramChannel {
    pub fn new(common: Common, token: Secret, chat_id: ChatId) -> Self {
        TelegramChannel { common, token, chat_id }
    }

    pub fn payload(&self, n: &Notification) -> Value {
        let text = self.common.body(n, Format::Plain, true, Budget { limit: MAX_TEXT_CHARS, unit: Unit::Chars });
        json!({
            "chat_id": self.chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": true},
        })
    }

    fn send_url(&self) -> Result<Url, DeliveryError> {
        let base = self.common.url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/bot{}/sendMessage", self.token.expose())).map_err(|_| DeliveryError::Permanent {
            reason: format!("{SERVICE}: the bot token does not fit in a URL; check `bot_token`"),
        })
    }
}

fn classify(answer: &Answer) -> Result<Delivered, DeliveryError> {
    let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name));
    if field("ok").and_then(Value::as_bool) == Some(true) && (200..300).contains(&answer.status) {
        let id = field("result").and_then(|r| r.get("message_id")).map(Value::to_string).unwrap_or_default();
        return Ok(Delivered { status: answer.status, detail: format!("ok, message_id {id}") });
    }
    let code = field("error_code").and_then(Value::as_i64).unwrap_or(i64::from(answer.status));
    let description =
        field("description").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| answer.excerpt());
    let parameters = field("parameters");
    let retry_after = parameters.and_then(|p| p.get("retry_after")).and_then(Value::as_u64).map(Duration::from_secs);
    if let Some(to) = parameters.and_then(|p| p.get("migrate_to_chat_id")).and_then(Value::as_i64) {
        return Err(DeliveryError::Permanent {
            reason: format!("{SERVICE}: the group became a supergroup; set chat_id = {to} ({description})"),
        });
    }
    match code {
        429 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} answered 429: {description}"),
            retry_after: retry_after.or(answer.retry_after),
        }),
        500..=599 => Err(DeliveryError::Retryable {
            reason: format!("{SERVICE} answered {code}: {description}"),
            retry_after: answer.retry_after,
        }),
        401 | 404 => Err(DeliveryError::Permanent {
            reason: format!("{SERVICE} answered {code}: the bot token is wrong or revoked ({description})"),
        }),
        403 => Err(DeliveryError::Permanent {
            reason: format!("{SERVICE} answered 403: the bot cannot post to this chat ({description})"),
        }),
        _ if parsed.is_none() => {
            answer.classify_status(SERVICE)?;
            Err(DeliveryError::Permanent {
                reason: format!("{SERVICE} answered HTTP {} without `ok`: {}", answer.status, answer.excerpt()),
            })
        }
        _ => Err(DeliveryError::Permanent { reason: format!("{SERVICE} answered {code}: {description}") }),
    }
}

#[async_trait::async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let url = self.send_url()?;
        let body = to_bytes(&self.payload(n));
        let answer = self.common.post_json(SERVICE, &url, HeaderMap::new(), body, &[self.token.expose()]).await?;
        classify(&answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{
        assert_hostile_context_is_inert, common, hostile_context, one, refused_url, with_context,
    };

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn channel(url: &Url) -> TelegramChannel {
        TelegramChannel::new(common(url.clone()), Secret::new(TOKEN), ChatId::Id(-1001234567890))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    fn sent() -> Reply {
        Reply::json(200, json!({"ok": true, "result": {"message_id": 42, "chat": {"id": -1001234567890_i64}}}))
    }

    #[tokio::test]
    async fn a_message_goes_to_the_bots_send_message_as_plain_text() {
        let server = spawn(|_| sent()).await;
        let d = channel(&server.url).send(&one()).await.unwrap();
        assert_eq!(d, Delivered { status: 200, detail: "ok, message_id 42".into() });
        let r = server.only_request();
        assert_eq!(r.path, format!("/bot{TOKEN}/sendMessage"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["chat_id"], -1001234567890_i64);
        assert!(body.get("parse_mode").is_none());
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("[FIRING:1] scanwatch: no_recent_scan"), "{text}");
    }

    #[tokio::test]
    async fn a_chinese_channel_writes_chinese_and_a_channel_username_is_sent_as_text() {
        let server = spawn(|_| sent()).await;
        let mut ch = channel(&server.url);
        ch.common.language = Language::ZhCn;
        ch.chat_id = ChatId::Name("@secops_alerts".into());
        ch.send(&one()).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body["chat_id"], "@secops_alerts");
        assert!(body["text"].as_str().unwrap().starts_with("【告警:1】"), "{body}");
    }

    #[tokio::test]
    async fn too_many_requests_waits_as_long_as_telegram_says() {
        let err = send_against(Reply::json(
            429,
            json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 5", "parameters": {"retry_after": 5}}),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Retryable { retry_after: Some(d), reason } if *d == Duration::from_secs(5) && reason.contains("retry after 5")),
            "{err:?}"
        );
        let err = send_against(Reply::raw(502, "Bad Gateway")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_migrated_group_a_blocked_bot_and_a_bad_chat_are_permanent() {
        let err = send_against(Reply::json(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat", "parameters": {"migrate_to_chat_id": -1009876543210_i64}}),
        ))
        .await
        .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("chat_id = -1009876543210")));
        let err = send_against(Reply::json(
            403,
            json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was kicked from the supergroup chat"}),
        ))
        .await
        .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("bot was kicked")));
        let err = send_against(Reply::json(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
        ))
        .await
        .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("chat not found")));
        let err = send_against(Reply::raw(200, "<html>captive portal</html>")).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("without `ok`")), "{err:?}");
    }

    #[tokio::test]
    async fn the_token_never_appears_in_an_error() {
        let echo = format!("Unauthorized: token {TOKEN} at /bot{TOKEN}/sendMessage");
        let err = send_against(Reply::json(401, json!({"ok": false, "error_code": 401, "description": echo})))
            .await
            .unwrap_err();
        let shown = format!("{err:?} {err}");
        assert!(matches!(err, DeliveryError::Permanent { .. }) && shown.contains("wrong or revoked"), "{shown}");
        assert!(!shown.contains(TOKEN) && !shown.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{shown}");
        let err = channel(&refused_url().await).send(&one()).await.unwrap_err();
        let shown = format!("{err:?} {err}");
        assert!(matches!(err, DeliveryError::Retryable { .. }) && !shown.contains("AAHdqTcv"), "{shown}");
        let ch = channel(&refused_url().await);
        assert!(!format!("{ch:?}").contains("AAHdqTcv"));
    }

    #[test]
    fn a_hostile_task_context_stays_plain_text() {
        let mut ch = channel(&Url::parse("http://127.0.0.1:9/").unwrap());
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let text = ch.payload(&with_context(hostile_context()))["text"].as_str().unwrap().to_string();
            assert_hostile_context_is_inert(&text, language, &[]);
        }
    }
}
