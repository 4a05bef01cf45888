//! The channels, one file each (email over SMTP, the rest over HTTP), and what they share: the settings every channel has ([`Common`]), one POST
//! with a capped response, `Retry-After`, the HTTP status classes, and redaction.
//!
//! - [`email`]: SMTP with lettre over rustls, multipart text + HTML, one thread per alert.
//! - [`webhook`]: Alertmanager-v4 JSON, bearer/basic auth, Standard Webhooks signing.
//! - [`feishu`]: Feishu/Lark interactive card, optional signing, `code` in the body.
//! - [`dingtalk`]: DingTalk markdown, signing in the query, `errcode` in the body.
//! - [`wecom`]: WeCom group-robot markdown (4096 bytes), `errcode` in the body.
//! - [`slack`]: Slack incoming webhook, text + coloured attachment, body `ok`.
//! - [`teams`]: Microsoft Teams Workflows, an Adaptive Card in a message envelope.
//! - [`pagerduty`]: PagerDuty Events API v2, one event per alert, `dedup_key` = the fingerprint.
//! - [`telegram`]: Telegram bot `sendMessage`, plain text, `parameters.retry_after` honoured.
//! - [`discord`]: Discord webhook, an embed, no mentions, `retry_after` from the body honoured.
//! - [`googlechat`]: Google Chat incoming webhook, plain text.
//! - [`settings`]: each kind's keys and validated settings, and what their validation shares.
//!
//! Webhook URLs carry credentials (a token in the path or the query): no URL, secret or token ever goes into a log
//! line or an error message — [`redact_url`] keeps scheme and host, and response excerpts are scrubbed.

pub mod dingtalk;
pub mod discord;
pub mod email;
pub mod feishu;
pub mod googlechat;
pub mod pagerduty;
pub mod settings;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod webhook;
pub mod wecom;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use super::message::{self, Budget, Format, Style};
use super::{DeliveryError, Language, Notification};
use crate::clock::{Clock, SystemClock};

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("scanwatch/", env!("CARGO_PKG_VERSION"));

/// The longest response body read; services answer with a few hundred bytes, a proxy error page may be larger.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How much of a response body goes into a reason or a delivery log detail.
const EXCERPT_BYTES: usize = 300;

/// A `Retry-After` longer than this is clamped: the dispatcher's `max_delivery_age` decides when to give up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long a channel's client waits for a connection, and the longest any request may take (each request also
/// carries its channel's own, shorter, timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The client every channel shares: rustls, no redirects (a redirect would carry the body and signature to a host
/// nobody configured), no automatic retries (the dispatcher owns them), bounded connect and idle times, and no proxy
/// from the environment (`HTTPS_PROXY` meant for other programs must not divert alerts; a channel names its own
/// `proxy`). Each request also carries its channel's own total timeout.
pub fn http_client(connect_timeout: Duration, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    client_builder(connect_timeout, timeout).build()
}

/// The client of a channel with its own `proxy` (every request through it), or the shared kind of client.
pub fn channel_client(proxy: Option<&Url>) -> reqwest::Result<reqwest::Client> {
    let builder = client_builder(CONNECT_TIMEOUT, CLIENT_TIMEOUT);
    match proxy {
        Some(p) => builder.proxy(reqwest::Proxy::all(p.clone())?).build(),
        None => builder.build(),
    }
}

fn client_builder(connect_timeout: Duration, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .user_agent(USER_AGENT)
}

/// What every HTTP channel is built from.
#[derive(Clone)]
pub struct Common {
    /// The configured channel name (logs, delivery log).
    pub name: String,
    /// The destination; a secret (it carries the bot's key). Never printed: see [`redact_url`].
    pub url: Url,
    pub language: Language,
    /// Times in messages are shown in this zone.
    pub tz: Tz,
    /// A user template for the body, already checked by `validate`.
    pub template: Option<String>,
    /// The whole request, connect to last byte.
    pub timeout: Duration,
    pub http: reqwest::Client,
    /// Signing timestamps and `Retry-After` dates.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("language", &self.language)
            .field("tz", &self.tz)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Common {
    /// Settings with the system clock, no template, English and a 10 s timeout; adjust the public fields.
    pub fn new(name: impl Into<String>, url: Url, http: reqwest::Client) -> Common {
        Common {
            name: name.into(),
            url,
            language: Language::En,
            tz: Tz::UTC,
            template: None,
            timeout: Duration::from_secs(10),
            http,
            clock: Arc::new(SystemClock::default()),
        }
    }

    pub(crate) fn style(&self, format: Format) -> Style {
        Style { language: self.language, tz: self.tz, format }
    }

    /// The message body in `format`, cut to `budget`.
    pub(crate) fn body(&self, n: &Notification, format: Format, with_title: bool, budget: Budget) -> String {
        message::body(n, &self.style(format), self.template.as_deref(), with_title, budget, &self.name)
    }

    pub(crate) fn title(&self, n: &Notification) -> String {
        message::title(n, self.language)
    }

    /// Pieces of the URL that are credentials: query values, user info and long path segments (tokens).
    fn url_secrets(&self) -> Vec<String> {
        let u = &self.url;
        let mut secrets: Vec<String> = u.query_pairs().map(|(_, v)| v.into_owned()).collect();
        secrets.extend(u.path_segments().into_iter().flatten().filter(|s| s.len() >= 16).map(str::to_string));
        secrets.push(u.username().to_string());
        secrets.extend(u.password().map(str::to_string));
        secrets.push(u.as_str().to_string());
        secrets
    }

    /// Replaces every credential of the URL (and `extra` secrets) in `text`.
    pub(crate) fn scrub(&self, text: &str, extra: &[&str]) -> String {
        let mut secrets = self.url_secrets();
        secrets.extend(extra.iter().map(|s| s.to_string()));
        // Longest first, so a whole URL goes before the token inside it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in secrets.iter().filter(|s| s.len() >= 6) {
            out = out.replace(s.as_str(), crate::secret::REDACTED);
        }
        out
    }

    /// One POST of a JSON body. Transport failures are retryable; the answer comes back whatever its status, with
    /// the body capped, scrubbed of credentials, and `Retry-After` parsed.
    pub(crate) async fn post_json(
        &self,
        service: &str,
        url: &Url,
        mut headers: HeaderMap,
        body: Vec<u8>,
        secrets: &[&str],
    ) -> Result<Answer, DeliveryError> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        let request = self.http.post(url.clone()).headers(headers).timeout(self.timeout).body(body);
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(service, e, secrets)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES - bytes.len();
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if bytes.len() >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // A body cut short is classified on what arrived; no body at all is a transport failure.
                Err(e) if bytes.is_empty() => {
                    return Err(self.transport_error(service, e, secrets));
                }
                Err(_) => break,
            }
        }
        let body = self.scrub(&String::from_utf8_lossy(&bytes), secrets);
        Ok(Answer { status, retry_after, body })
    }

    fn transport_error(&self, service: &str, err: reqwest::Error, secrets: &[&str]) -> DeliveryError {
        let timed_out = err.is_timeout();
        let connect = err.is_connect();
        let chain = self.scrub(&crate::model::error_chain(&err.without_url()), secrets);
        let host = redact_url(&self.url);
        let reason = if timed_out {
            format!("{service} ({host}) did not answer within {}: {chain}", humantime::format_duration(self.timeout))
        } else if connect {
            format!("could not connect to {service} ({host}): {chain}")
        } else {
            format!("{service} ({host}) request failed: {chain}")
        };
        DeliveryError::Retryable { reason, retry_after: None }
    }
}

/// A service's answer to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// Capped and scrubbed of credentials.
    pub body: String,
}

impl Answer {
    /// The `errcode` / `errmsg` pair that DingTalk and WeCom put in every answer, HTTP 200 included. Throttling and
    /// server statuses are classified first; an answer without an `errcode` is a permanent error (`what` names the
    /// kind of URL expected).
    pub fn errcode(&self, service: &str, what: &str) -> Result<(i64, String), DeliveryError> {
        if matches!(self.status, 408 | 429 | 500..=599) {
            self.classify_status(service)?;
        }
        let parsed: Option<serde_json::Value> = serde_json::from_str(&self.body).ok();
        let Some(code) = parsed.as_ref().and_then(|v| v.get("errcode")).and_then(serde_json::Value::as_i64) else {
            self.classify_status(service)?;
            return Err(DeliveryError::Permanent {
                reason: format!(
                    "{service} answered HTTP {} without an `errcode`: is the URL {what}? ({})",
                    self.status,
                    self.excerpt()
                ),
            });
        };
        let msg =
            parsed.as_ref().and_then(|v| v.get("errmsg")).and_then(serde_json::Value::as_str).unwrap_or("").to_string();
        Ok((code, msg))
    }

    pub fn excerpt(&self) -> String {
        crate::model::excerpt(self.body.trim(), EXCERPT_BYTES)
    }

    /// The generic HTTP classes: 2xx delivered; 408, 429 and 5xx retryable with the service's `Retry-After`;
    /// 3xx (redirects are not followed), 404, 410 and every other 4xx permanent.
    pub fn classify_status(&self, service: &str) -> Result<(), DeliveryError> {
        let status = self.status;
        let body = match self.excerpt() {
            e if e.is_empty() => String::new(),
            e => format!(": {e}"),
        };
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(DeliveryError::Retryable {
                reason: format!("{service} answered HTTP {status}{body}"),
                retry_after: self.retry_after,
            }),
            300..=399 => Err(DeliveryError::Permanent {
                reason: format!(
                    "{service} answered HTTP {status} (a redirect): redirects are not followed; configure the final URL"
                ),
            }),
            404 => Err(DeliveryError::Permanent {
                reason: format!("{service} answered HTTP 404: the webhook URL is wrong or was deleted{body}"),
            }),
            410 => Err(DeliveryError::Permanent {
                reason: format!(
                    "{service} answered HTTP 410 Gone: the receiver asked to stop; replace or remove this channel{body}"
                ),
            }),
            401 | 403 => Err(DeliveryError::Permanent {
                reason: format!("{service} answered HTTP {status}: check the channel's credentials{body}"),
            }),
            _ => Err(DeliveryError::Permanent { reason: format!("{service} answered HTTP {status}{body}") }),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (relative to `now`), clamped to a day.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `https://open.feishu.cn` from a webhook URL: scheme, host and port only — what logs and errors may show.
pub fn redact_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// A JSON body as bytes. Serializing a `serde_json::Value` cannot fail.
pub(crate) fn to_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_redacted_url_keeps_only_scheme_host_and_port() {
        let u = Url::parse("https://oapi.dingtalk.com/robot/send?access_token=abcdef123456").unwrap();
        assert_eq!(redact_url(&u), "https://oapi.dingtalk.com");
        let u = Url::parse("http://127.0.0.1:8080/hook/0123456789abcdef0123").unwrap();
        assert_eq!(redact_url(&u), "http://127.0.0.1:8080");
    }

    #[test]
    fn scrubbing_removes_every_credential_of_the_url() {
        let http = http_client(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let url =
            Url::parse("https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0?k=sekrit1")
                .unwrap();
        let c = Common::new("f", url.clone(), http);
        let text = format!("bad token 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, key sekrit1, url {url}, sig whsec_xyz123");
        let scrubbed = c.scrub(&text, &["whsec_xyz123"]);
        assert!(!scrubbed.contains("0f1e2d3c"), "{scrubbed}");
        assert!(!scrubbed.contains("sekrit1"), "{scrubbed}");
        assert!(!scrubbed.contains("whsec_xyz123"), "{scrubbed}");
        assert!(scrubbed.contains("bad token [redacted]"), "{scrubbed}");
        assert!(!format!("{c:?}").contains("0f1e2d3c"));
    }

    #[test]
    fn status_classes_follow_the_generic_rules() {
        let answer = |status: u16| Answer { status, retry_after: Some(Duration::from_secs(7)), body: "x".into() };
        assert!(answer(204).classify_status("S").is_ok());
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                answer(s).classify_status("S"),
                Err(DeliveryError::Retryable {
                    reason: format!("S answered HTTP {s}: x"),
                    retry_after: Some(Duration::from_secs(7))
                })
            );
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert!(matches!(answer(s).classify_status("S"), Err(DeliveryError::Permanent { .. })), "{s}");
        }
    }
}
