//! PagerDuty Events API v2: one event per alert, so each alert is one PagerDuty incident. A firing alert (and each
//! reminder) is a `trigger` and a resolved one a `resolve`, both with `dedup_key` = the alert's fingerprint, so the
//! resolve closes the incident the trigger opened and a repeated trigger (a reminder, a retried notification)
//! folds into it. Severity maps one to one (critical, warning, info).
//!
//! PagerDuty answers 202 once it has queued the event; 400 is an invalid event (not retried), 429 and 5xx are
//! retried. A notification with several alerts stops at the first failing event: the retry sends the earlier ones
//! again, which PagerDuty deduplicates by `dedup_key`. The routing key is a secret: it is scrubbed from every answer
//! and error, and `config show` prints it redacted.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::settings::{Checker, KindConfig, KindSettings, MINUTE};
use super::{Common, to_bytes};
use crate::alerting::Event;
use crate::notify::message::{self, Budget, Format, Unit, untrusted};
use crate::notify::{AlertNotice, Channel, Delivered, DeliveryError, Notification};
use crate::rules::Severity;
use crate::secret::Secret;
use crate::secret::sources::{SecretContext, SecretKeys, SourcedSecret};

/// The Events API v2 endpoint (the EU service is `https://events.eu.pagerduty.com/v2/enqueue`).
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limit on `payload.summary`.
pub const MAX_SUMMARY_CHARS: usize = 1024;

/// The message body in `custom_details`: well inside PagerDuty's 512 KB event.
const MAX_DETAILS_BYTES: usize = 16 * 1024;

const SERVICE: &str = "PagerDuty";

/// The keys of a `kind = "pagerduty"` channel: the integration's routing key and, for the EU service or a relay,
/// the enqueue URL.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    pub routing_key: Option<String>,
    pub routing_key_env: Option<String>,
    pub routing_key_file: Option<String>,
    pub url: Option<String>,
}

/// A validated `pagerduty` channel.
#[derive(Debug, Clone, Serialize)]
pub struct PagerDutySettings {
    pub url: Url,
    pub routing_key: SourcedSecret,
}

impl KindConfig for PagerDutyConfig {
    type Settings = PagerDutySettings;
    /// About 120 events a minute per routing key.
    const LIMITS: &'static [(usize, Duration)] = &[(120, MINUTE)];

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<PagerDutySettings> {
        let keys = SecretKeys::of(
            "routing_key",
            self.routing_key.as_deref(),
            self.routing_key_env.as_deref(),
            self.routing_key_file.as_deref(),
        );
        let key = keys.written();
        let routing_key = c.required_secret(ctx, keys);
        if let Some(k) = &routing_key
            && k.is_available()
            && k.value.expose().trim().len() != 32
        {
            c.warning(&key, "PagerDuty integration (routing) keys are 32 characters; check that this is one");
        }
        let url = c.endpoint("url", self.url.as_deref(), DEFAULT_URL);
        Some(PagerDutySettings { url: url?, routing_key: routing_key? })
    }
}

impl KindSettings for PagerDutySettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        Some(Arc::new(PagerDutyChannel::new(common(&self.url), self.routing_key.value.clone())))
    }
}

/// A PagerDuty service integration (Events API v2).
#[derive(Debug, Clone)]
pub struct PagerDutyChannel {
    common: Common,
    routing_key: Secret,
}

impl PagerDutyChannel {
    pub fn new(common: Common, routing_key: Secret) -> Self {
        PagerDutyChannel { common, routing_key: Secret::new(routing_key.expose().trim()) }
    }

    /// The event for one alert of `n`.
    pub fn event(&self, n: &Notification, a: &AlertNotice) -> Value {
        let key = self.routing_key.expose();
        if a.event == Event::Resolved {
            return json!({"routing_key": key, "event_action": "resolve", "dedup_key": a.fingerprint});
        }
        let language = self.common.language;
        let summary = format!(
            "{}: {} — {}",
            message::rule_title(a.rule, language),
            a.series.target,
            message::describe(a, language)
        );
        let single = Notification { alerts: vec![a.clone()], ..n.clone() };
        let details =
            self.common.body(&single, Format::Plain, false, Budget { limit: MAX_DETAILS_BYTES, unit: Unit::Bytes });
        json!({
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": a.fingerprint,
            "client": "scanwatch",
            "payload": {
                "summary": untrusted(Format::Plain, &summary, MAX_SUMMARY_CHARS),
                "source": a.series.target,
                "severity": severity(a.severity),
                "timestamp": a.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "component": a.series.task_type.as_str(),
                "group": a.series.account,
                "class": a.rule.as_str(),
                "custom_details": {
                    "details": details,
                    "value": a.value,
                    "region": a.series.region,
                    "project_id": a.series.project_id,
                    "labels": a.labels,
                },
            },
        })
    }
}

/// scanwatch's severities are a subset of PagerDuty's (critical, error, warning, info).
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

#[async_trait::async_trait]
impl Channel for PagerDutyChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let mut last = None;
        for a in &n.alerts {
            let body = to_bytes(&self.event(n, a));
            let secrets = [self.routing_key.expose()];
            let answer = self.common.post_json(SERVICE, &self.common.url, HeaderMap::new(), body, &secrets).await?;
            answer.classify_status(SERVICE)?;
            last = Some(answer);
        }
        Ok(match last {
            Some(answer) => Delivered {
                status: answer.status,
                detail: format!("{} event(s) accepted; last: {}", n.alerts.len(), answer.excerpt()),
            },
            None => Delivered { status: 0, detail: "no alert to send".to_string() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{Reply, spawn};
    use crate::notify::Language;
    use crate::notify::channels::testkit::{common, notice, notification, one, refused_url};

    const KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

    fn channel(url: &Url) -> PagerDutyChannel {
        PagerDutyChannel::new(common(url.join("/v2/enqueue").unwrap()), Secret::new(KEY))
    }

    fn accepted() -> Reply {
        Reply::json(202, json!({"status": "success", "message": "Event processed", "dedup_key": "x"}))
    }

    async fn send_against(reply: Reply) -> Result<Delivered, DeliveryError> {
        let server = spawn(move |_| reply.clone()).await;
        channel(&server.url).send(&one()).await
    }

    #[tokio::test]
    async fn a_firing_alert_triggers_with_its_fingerprint_and_severity_and_its_resolution_resolves_the_same_key() {
        let server = spawn(|_| accepted()).await;
        let ch = channel(&server.url);
        let d = ch.send(&one()).await.unwrap();
        assert_eq!(d.status, 202);
        let r = server.only_request();
        assert_eq!(r.path, "/v2/enqueue");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["routing_key"], KEY);
        assert_eq!(body["dedup_key"], one().alerts[0].fingerprint);
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["source"], "prod-cn-north-4-cluster-000");
        assert!(body["payload"]["summary"].as_str().unwrap().starts_with("no_recent_scan: prod-cn-north-4"));

        let server = spawn(|_| accepted()).await;
        channel(&server.url).send(&notification(vec![notice(0, Event::Resolved)])).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(
            body,
            json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": one().alerts[0].fingerprint})
        );
    }

    #[tokio::test]
    async fn several_alerts_are_one_event_each_with_mapped_severities() {
        let server = spawn(|_| accepted()).await;
        let n = notification(vec![notice(0, Event::Firing), notice(1, Event::Repeat), notice(2, Event::Resolved)]);
        let d = channel(&server.url).send(&n).await.unwrap();
        assert!(d.detail.starts_with("3 event(s) accepted"), "{d:?}");
        let bodies: Vec<Value> = server.requests().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
        let actions: Vec<&str> = bodies.iter().map(|b| b["event_action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["trigger", "trigger", "resolve"]);
        assert_eq!(bodies[1]["payload"]["severity"], "warning");
        let keys: Vec<&str> = bodies.iter().map(|b| b["dedup_key"].as_str().unwrap()).collect();
        assert_eq!(keys, n.alerts.iter().map(|a| a.fingerprint.as_str()).collect::<Vec<_>>());
        assert_eq!(severity(Severity::Info), "info");
    }

    #[tokio::test]
    async fn an_invalid_event_is_permanent_and_throttling_and_outages_are_retried() {
        let err = send_against(Reply::json(
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["'routing_key' is invalid"]}),
        ))
        .await
        .unwrap_err();
        assert!(matches!(&err, DeliveryError::Permanent { reason } if reason.contains("Event object is invalid")));
        let err = send_against(Reply::raw(429, "").header("Retry-After", "30")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(30)));
        let err = send_against(Reply::raw(502, "bad gateway")).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn the_routing_key_never_appears_in_an_error() {
        let err = send_against(Reply::json(400, json!({"message": format!("bad key {KEY}")}))).await.unwrap_err();
        assert!(!format!("{err:?}").contains(KEY), "{err:?}");
        let err = channel(&refused_url().await).send(&one()).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Retryable { .. }) && !format!("{err:?}").contains(KEY), "{err:?}");
    }

    #[tokio::test]
    async fn a_chinese_channel_summarises_in_chinese() {
        let server = spawn(|_| accepted()).await;
        let mut ch = channel(&server.url);
        ch.common.language = Language::ZhCn;
        ch.send(&one()).await.unwrap();
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert!(summary.contains("未启动新任务"), "{summary}");
    }
}
