//! Push to an existing Alertmanager (or each member of an HA cluster): `POST {url}/api/v2/alerts` with a JSON
//! array of alerts, each with the labels and annotations the generic webhook sends (one function builds both),
//! `startsAt`, `endsAt` and `generatorURL`.
//!
//! Alertmanager resolves an alert by itself once its `endsAt` passes, so, as Prometheus does, a firing alert is sent
//! with `endsAt` = now + [`ENDS_AT_RESENDS`] × `resend_interval` and re-sent every `resend_interval` while it fires
//! (the dispatcher's [`crate::notify::outbox::Dispatcher::resend_due`] pass): a live alert never expires, and one whose
//! scanwatch died resolves a few intervals later. A resolution is sent with `endsAt` = the time it resolved.
//!
//! A cluster's members are all posted to, at once. As in Prometheus, the delivery counts as done when at least one
//! member accepted it: the others gossip it, and the next resend reaches a member that was down. The members that
//! failed are logged and named in the delivery log's detail.
//!
//! Configuration ([`AlertmanagerConfig`]): `url` (one Alertmanager's base URL) or `urls` (a cluster's members),
//! bearer or basic auth as for the webhook, and `resend_interval`.
//!
//! Answers: 2xx delivered; 400 is Alertmanager's validation error (permanent, with its body); 404 means the URL is
//! not an Alertmanager's base URL; 408, 429 (with `Retry-After`), 5xx and network failures are retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, is_loopback_host};
use super::webhook::{Auth, WebhookAuth, WebhookConfig, alert_annotations, alert_labels};
use super::{Answer, Common, redact_url, to_bytes};
use crate::alerting::Event;
use crate::notify::{AlertNotice, Channel, Delivered, DeliveryError, Notification};
use crate::secret::sources::SecretContext;

/// Prometheus's default `resend_delay` is 1m, and Alertmanager's default `resolve_timeout` 5m: resending every
/// minute keeps an alert alive with room for a few lost resends.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// A firing alert's `endsAt` is this many resend intervals ahead (Prometheus uses 4 × its resend delay).
pub const ENDS_AT_RESENDS: u32 = 4;

/// Alertmanager's API under a base URL.
const API_PATH: &str = "api/v2/alerts";

/// The shortest and longest `resend_interval`: more often only loads Alertmanager; a firing alert stays valid for
/// [`ENDS_AT_RESENDS`] intervals, so much longer would keep an alert of a dead scanwatch alive for hours.
const RESEND_RANGE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));

const EXAMPLE_URL: &str = "http://alertmanager.internal:9093";

/// The keys of a `kind = "alertmanager"` channel. Alertmanager URLs are not secrets (no `_env` / `_file`); the
/// credentials are.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// One Alertmanager's base URL (with its route prefix, if any).
    pub url: Option<String>,
    /// The members of an HA cluster, each posted to.
    pub urls: Option<Vec<String>>,
    pub bearer_token: Option<String>,
    pub bearer_token_env: Option<String>,
    pub bearer_token_file: Option<String>,
    pub basic_user: Option<String>,
    pub basic_password: Option<String>,
    pub basic_password_env: Option<String>,
    pub basic_password_file: Option<String>,
    /// How often firing alerts are re-sent (humantime); default [`DEFAULT_RESEND_INTERVAL`].
    pub resend_interval: Option<String>,
}

/// A validated `alertmanager` channel.
#[derive(Debug, Clone, Serialize)]
pub struct AlertmanagerSettings {
    /// Base URLs; shown without user info or query, which may carry credentials.
    #[serde(serialize_with = "shown_urls")]
    pub urls: Vec<Url>,
    pub auth: WebhookAuth,
    #[serde(serialize_with = "humantime_str")]
    pub resend_interval: Duration,
}

fn shown_urls<S: serde::Serializer>(urls: &[Url], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| format!("{}{}", redact_url(u), u.path())))
}

fn humantime_str<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl KindConfig for AlertmanagerConfig {
    type Settings = AlertmanagerSettings;

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<AlertmanagerSettings> {
        let written: Vec<(String, &str)> = match (&self.url, &self.urls) {
            (Some(_), Some(_)) => {
                c.problem(
                    "urls",
                    "give either `url` (one Alertmanager) or `urls` (the members of a cluster), not both",
                );
                Vec::new()
            }
            (Some(u), None) => vec![("url".to_string(), u.as_str())],
            (None, Some(list)) if list.is_empty() => {
                c.problem("urls", format!("lists no Alertmanager, e.g. [\"{EXAMPLE_URL}\"]"));
                Vec::new()
            }
            (None, Some(list)) => list.iter().enumerate().map(|(i, u)| (format!("urls[{i}]"), u.as_str())).collect(),
            (None, None) => {
                c.problem("url", format!("is required: the Alertmanager's base URL, e.g. `{EXAMPLE_URL}`, or `urls`"));
                Vec::new()
            }
        };
        let mut urls: Vec<Url> = Vec::new();
        for (key, text) in written {
            if let Some(url) = base_url(c, &key, text) {
                if urls.contains(&url) {
                    c.problem(&key, "is listed twice");
                } else {
                    urls.push(url);
                }
            }
        }
        let resend_interval = match self.resend_interval.as_deref() {
            None => DEFAULT_RESEND_INTERVAL,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if (RESEND_RANGE.0..=RESEND_RANGE.1).contains(&d) => d,
                Ok(_) => {
                    c.problem(
                        "resend_interval",
                        format!(
                            "`{text}` is out of range: 5s to 1h (firing alerts stay valid for {ENDS_AT_RESENDS} \
                             intervals; the default, 1m, is Prometheus's)"
                        ),
                    );
                    DEFAULT_RESEND_INTERVAL
                }
                Err(e) => {
                    c.problem("resend_interval", format!("`{text}` is not a duration ({e}); write e.g. `1m`"));
                    DEFAULT_RESEND_INTERVAL
                }
            },
        };
        let auth = WebhookConfig {
            bearer_token: self.bearer_token.clone(),
            bearer_token_env: self.bearer_token_env.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            basic_user: self.basic_user.clone(),
            basic_password: self.basic_password.clone(),
            basic_password_env: self.basic_password_env.clone(),
            basic_password_file: self.basic_password_file.clone(),
            ..WebhookConfig::default()
        }
        .auth(c, ctx);
        if urls.is_empty() {
            return None;
        }
        Some(AlertmanagerSettings { urls, auth: auth?, resend_interval })
    }
}

/// One base URL at `key`: http(s) with a host, not the API path itself; plain http off this host is a warning
/// (Alertmanagers often listen on plain http inside a network).
fn base_url(c: &mut Checker<'_>, key: &str, text: &str) -> Option<Url> {
    let hint = format!("give the Alertmanager's base URL, e.g. `{EXAMPLE_URL}`; scanwatch appends /{API_PATH}");
    let url = match Url::parse(text.trim()) {
        Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => u,
        _ => {
            c.problem(key, format!("is not an http(s) URL with a host; {hint}"));
            return None;
        }
    };
    let path = url.path().trim_end_matches('/');
    if path.ends_with("/api/v2/alerts") || path.contains("/api/v1/") {
        c.problem(key, hint);
        return None;
    }
    if url.scheme() == "http" && !is_loopback_host(url.host_str().unwrap_or("")) {
        c.warning(key, "plain http to a non-loopback host sends alerts (and any auth header) unencrypted");
    }
    Some(url)
}

impl KindSettings for AlertmanagerSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        let first = common(self.urls.first()?);
        Some(Arc::new(AlertmanagerChannel::new(first, self.urls.clone(), self.auth.to_auth(), self.resend_interval)))
    }
}

/// One Alertmanager, or the members of one HA cluster.
#[derive(Debug, Clone)]
pub struct AlertmanagerChannel {
    common: Common,
    /// One per member, each with its base URL as `url` (errors and scrubbing name the member they are about).
    members: Vec<Common>,
    auth: Auth,
    resend_interval: Duration,
}

impl AlertmanagerChannel {
    /// `urls` are the members' base URLs (`http://am-0:9093`, or with a route prefix `http://host/alertmanager`);
    /// with none, `common.url` is the one Alertmanager.
    pub fn new(common: Common, urls: Vec<Url>, auth: Auth, resend_interval: Duration) -> Self {
        let urls = if urls.is_empty() { vec![common.url.clone()] } else { urls };
        let members = urls.into_iter().map(|url| Common { url, ..common.clone() }).collect();
        AlertmanagerChannel { common, members, auth, resend_interval }
    }

    /// The body: one Alertmanager alert per notice, firing ones valid for [`ENDS_AT_RESENDS`] resend intervals from
    /// `now`.
    pub fn payload(&self, n: &Notification, now: DateTime<Utc>) -> Value {
        let valid_until = crate::clock::later(now, self.resend_interval.saturating_mul(ENDS_AT_RESENDS));
        Value::Array(n.alerts.iter().map(|a| self.alert_json(a, valid_until)).collect())
    }

    fn alert_json(&self, a: &AlertNotice, valid_until: DateTime<Utc>) -> Value {
        let ends_at = if a.event == Event::Resolved { a.at } else { valid_until };
        // Alertmanager refuses an alert that ends before it starts (a start in the future, from clock skew).
        let ends_at = ends_at.max(a.since);
        let labels: BTreeMap<String, String> =
            alert_labels(a).into_iter().map(|(k, v)| (label_name(&k), v)).filter(|(_, v)| !v.is_empty()).collect();
        let mut alert = json!({
            "labels": labels,
            "annotations": alert_annotations(a, self.common.language),
            "startsAt": a.since.to_rfc3339_opts(SecondsFormat::Millis, true),
            "endsAt": ends_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if let Some(page) = self.common.alert_page(&a.fingerprint) {
            alert["generatorURL"] = Value::String(page);
        }
        alert
    }

    /// One member's answer, classified.
    async fn post(&self, member: &Common, body: Vec<u8>) -> Result<Answer, DeliveryError> {
        let mut headers = HeaderMap::new();
        let secrets: Vec<&str> = self.auth.apply(&mut headers)?.into_iter().collect();
        let service = format!("Alertmanager {}", redact_url(&member.url));
        let answer = member.post_json(&service, &api_url(&member.url), headers, body, &secrets).await?;
        let excerpt = answer.excerpt();
        match answer.status {
            400 => {
                Err(DeliveryError::Permanent { reason: format!("{service} rejected the alerts (HTTP 400): {excerpt}") })
            }
            404 => Err(DeliveryError::Permanent {
                reason: format!(
                    "{service} answered HTTP 404: give the Alertmanager's base URL (and its route prefix, if any); \
                     scanwatch posts to <url>/{API_PATH}"
                ),
            }),
            _ => answer.classify_status(&service).map(|()| answer),
        }
    }
}

/// `{base}/api/v2/alerts`, keeping a route prefix in the base's path.
pub fn api_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{API_PATH}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// A label name as Alertmanager accepts it (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`.
fn label_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[async_trait::async_trait]
impl Channel for AlertmanagerChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn resend_interval(&self) -> Option<Duration> {
        Some(self.resend_interval)
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        // endsAt counts from when the request goes out, not from when the notification was made: a firing
        // delivered late after retries must not arrive already expired.
        let body = to_bytes(&self.payload(n, self.common.clock.now()));
        let answers = futures_util::future::join_all(self.members.iter().map(|m| self.post(m, body.clone()))).await;
        let total = answers.len();
        let mut accepted = Vec::new();
        let mut failures = Vec::new();
        for (member, answer) in self.members.iter().zip(answers) {
            match answer {
                Ok(a) => accepted.push(a),
                Err(e) => failures.push((redact_url(&member.url), e)),
            }
        }
        let reasons = || {
            failures
                .iter()
                .map(|(_, e)| match e {
                    DeliveryError::Retryable { reason, .. } | DeliveryError::Permanent { reason } => reason.as_str(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if let Some(first) = accepted.first() {
            for (member, e) in &failures {
                tracing::warn!(channel = %self.common.name, alertmanager = %member, error = %e, "an Alertmanager of the cluster did not take the alerts; the others did");
            }
            let detail = if total == 1 {
                first.excerpt()
            } else if failures.is_empty() {
                format!("all {total} Alertmanagers accepted")
            } else {
                format!("{} of {total} Alertmanagers accepted; {}", accepted.len(), reasons())
            };
            return Ok(Delivered { status: first.status, detail });
        }
        let retry_after = failures
            .iter()
            .filter_map(|(_, e)| match e {
                DeliveryError::Retryable { retry_after, .. } => *retry_after,
                _ => None,
            })
            .max();
        let reason = reasons();
        if failures.iter().any(|(_, e)| matches!(e, DeliveryError::Retryable { .. })) {
            Err(DeliveryError::Retryable { reason, retry_after })
        } else {
            Err(DeliveryError::Permanent { reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{Recorded, Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{common, notice, notification, one, refused_url, t0};
    use crate::secret::Secret;

    fn channel(urls: Vec<Url>, auth: Auth) -> AlertmanagerChannel {
        AlertmanagerChannel::new(common(urls[0].clone()), urls, auth, DEFAULT_RESEND_INTERVAL)
    }

    fn body(r: &Recorded) -> Vec<Value> {
        serde_json::from_slice::<Value>(&r.body).unwrap().as_array().unwrap().clone()
    }

    #[tokio::test]
    async fn firing_and_resolved_alerts_are_posted_to_the_v2_api_with_labels_annotations_and_times() {
        let server = spawn(|_| Reply::raw(200, "")).await;
        let mut ch = channel(vec![server.url.join("/am/").unwrap()], Auth::Bearer(Secret::new("am-token-1")));
        ch.common.external_url = Some(Url::parse("https://scanwatch.example.com/").unwrap());
        let n = notification(vec![notice(0, Event::Firing), notice(1, Event::Resolved)]);
        assert_eq!(ch.send(&n).await.unwrap().status, 200);

        let r = server.only_request();
        assert_eq!(r.path, "/am/api/v2/alerts");
        assert_eq!(r.header("authorization"), Some("Bearer am-token-1"));
        let alerts = body(&r);
        assert_eq!(alerts.len(), 2);
        let firing = &alerts[0];
        assert_eq!(firing["labels"]["alertname"], "no_recent_scan");
        assert_eq!(firing["labels"]["target"], "prod-cn-north-4-cluster-000");
        assert_eq!(firing["labels"]["severity"], "critical");
        assert_eq!(firing["labels"]["project_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(firing["labels"]["env"], "prod");
        assert_eq!(firing["annotations"]["summary"], "no cluster scan has started for 31h; limit 24h");
        assert_eq!(firing["annotations"]["value"], "31h");
        assert!(firing["annotations"]["description"].as_str().unwrap().contains("31h"));
        assert_eq!(firing["startsAt"], "2025-04-22T01:04:11.000Z");
        assert_eq!(firing["endsAt"], "2025-04-22T08:08:11.000Z", "now + 4 × 1m");
        assert_eq!(firing["generatorURL"], "https://scanwatch.example.com/alerts/0000000000000000");
        assert!(firing.get("status").is_none() && firing.get("fingerprint").is_none(), "not v2 API fields");
        let resolved = &alerts[1];
        assert_eq!(resolved["endsAt"], "2025-04-22T08:04:11.000Z", "the time it resolved");
    }

    #[test]
    fn without_external_url_there_is_no_generator_url_and_odd_label_names_are_made_valid() {
        let ch = channel(vec![Url::parse("http://127.0.0.1:9/").unwrap()], Auth::None);
        let mut a = notice(0, Event::Firing);
        a.labels.insert("team-name".into(), "secops".into());
        a.labels.insert("9lives".into(), "x".into());
        a.labels.insert("empty".into(), String::new());
        let alerts = ch.payload(&notification(vec![a]), t0());
        let alert = &alerts[0];
        assert!(alert.get("generatorURL").is_none(), "{alert}");
        assert_eq!(alert["labels"]["team_name"], "secops");
        assert_eq!(alert["labels"]["_9lives"], "x");
        assert!(alert["labels"].get("empty").is_none(), "Alertmanager drops empty labels; so do we");
    }

    #[test]
    fn annotations_speak_the_channels_language_and_a_future_start_never_ends_before_it_starts() {
        let mut ch = channel(vec![Url::parse("http://127.0.0.1:9/").unwrap()], Auth::None);
        ch.common.language = Language::ZhCn;
        let mut a = notice(0, Event::Firing);
        a.since = t0() + chrono::TimeDelta::hours(1);
        let alerts = ch.payload(&notification(vec![a.clone()]), t0());
        let en = crate::notify::message::describe(&a, Language::En);
        let zh = alerts[0]["annotations"]["description"].as_str().unwrap();
        assert_ne!(zh, en);
        assert_eq!(zh, crate::notify::message::describe(&a, Language::ZhCn));
        assert_eq!(alerts[0]["endsAt"], alerts[0]["startsAt"]);
    }

    #[tokio::test]
    async fn answers_are_classified_and_a_validation_error_carries_alertmanagers_words() {
        let cases: [(u16, &str, Option<&str>, &str); 6] = [
            (400, r#""start time must be before end time""#, None, "permanent"),
            (404, "404 page not found", None, "permanent"),
            (429, "slow down", Some("17"), "retryable"),
            (500, "internal", None, "retryable"),
            (503, "unavailable", Some("3"), "retryable"),
            (401, "no", None, "permanent"),
        ];
        for (status, text, retry_after, class) in cases {
            let server = spawn(move |_| {
                let reply = Reply::raw(status, text);
                match retry_after {
                    Some(v) => reply.header("Retry-After", v),
                    None => reply,
                }
            })
            .await;
            let err = channel(vec![server.url.clone()], Auth::None).send(&one()).await.unwrap_err();
            match (&err, class) {
                (DeliveryError::Retryable { reason, retry_after: wait }, "retryable") => {
                    assert!(reason.contains(&format!("HTTP {status}")), "{reason}");
                    assert_eq!(*wait, retry_after.map(|s| Duration::from_secs(s.parse().unwrap())), "{status}");
                }
                (DeliveryError::Permanent { reason }, "permanent") => {
                    assert!(reason.contains(&format!("HTTP {status}")), "{reason}");
                    if status == 400 {
                        assert!(reason.contains("start time must be before end time"), "{reason}");
                    }
                    if status == 404 {
                        assert!(reason.contains("base URL"), "{reason}");
                    }
                }
                _ => panic!("HTTP {status}: {err:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_cluster_with_one_member_down_still_delivers_and_names_the_one_that_failed() {
        let up = spawn(|_| Reply::raw(200, "")).await;
        let down = refused_url().await;
        let ch = channel(
            vec![down.clone(), up.url.clone()],
            Auth::Basic { user: "sw".into(), password: Secret::new("pw-1234") },
        );
        let delivered = ch.send(&one()).await.unwrap();
        assert_eq!(delivered.status, 200);
        assert!(delivered.detail.starts_with("1 of 2 Alertmanagers accepted; "), "{}", delivered.detail);
        assert!(delivered.detail.contains(&redact_url(&down)), "{}", delivered.detail);
        assert_eq!(up.only_request().header("authorization"), Some("Basic c3c6cHctMTIzNA=="));
        assert!(!delivered.detail.contains("pw-1234"));
    }

    #[tokio::test]
    async fn a_cluster_with_every_member_failing_retries_unless_every_failure_is_permanent() {
        let busy = spawn(|_| Reply::raw(503, "busy").header("Retry-After", "9")).await;
        let bad = spawn(|_| Reply::raw(400, "bad alert")).await;
        let down = refused_url().await;
        let err =
            channel(vec![down.clone(), busy.url.clone(), bad.url.clone()], Auth::None).send(&one()).await.unwrap_err();
        let DeliveryError::Retryable { reason, retry_after } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(9)));
        assert!(
            reason.contains("could not connect") && reason.contains("HTTP 503") && reason.contains("bad alert"),
            "{reason}"
        );

        let bad2 = spawn(|_| Reply::raw(400, "also bad")).await;
        let err = channel(vec![bad.url.clone(), bad2.url.clone()], Auth::None).send(&one()).await.unwrap_err();
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("bad alert") && reason.contains("also bad"), "{reason}");
    }

    #[test]
    fn the_api_path_is_appended_to_the_base_url_and_its_prefix() {
        let u = |s: &str| api_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(u("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(u("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(u("https://ops.example.com/alertmanager/"), "https://ops.example.com/alertmanager/api/v2/alerts");
    }
}
