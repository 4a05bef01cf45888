//! The generic webhook: an Alertmanager-v4 JSON body (so existing receivers work), optional bearer or basic auth,
//! and Standard Webhooks signing with a `whsec_` secret. `webhook-id` (the notification id, stable across
//! retries: the receiver's idempotency key) and `webhook-timestamp` are always sent.
//!
//! Besides the Alertmanager fields the body carries `title` and `message` (the rendered text, or the user
//! template's output) for receivers that only forward text. An alert with task context adds it to its
//! `annotations` as strings (`task_id`, `task_name`, `task_status`, `failed_resources`, `context_unavailable`, …:
//! the full list is on `context_annotations`), cleaned of control characters and mentions, and bounded.
//!
//! Any 2xx is success; 408, 429 and 5xx are retried with `Retry-After`; 410 means "stop sending"; redirects and
//! other 4xx are permanent.

use std::collections::BTreeMap;

use super::settings::{Checker, KindConfig, KindSettings, SecretUrl};
use super::{Common, to_bytes};
use crate::alerting::Event;
use crate::hss::signer::hmac_sha256;
use crate::model::AlertContext;
use crate::notify::message::{Budget, Format, MAX_FAILED_LISTED, MAX_NAME_CHARS, MAX_REASON_CHARS, Unit, untrusted};
use crate::notify::{AlertNotice, Channel, Delivered, DeliveryError, Language, Notification};
use crate::secret::Secret;
use crate::secret::sources::{SecretContext, SecretKeys, SourcedSecret};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The largest body sent. Standard Webhooks suggests small payloads, but a machine receiver needs every alert: a
/// storm of thousands is cut here and counted in `truncatedAlerts`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The `message` text's share of the body.
pub const MESSAGE_LIMIT: usize = 16 * 1024;

/// How the receiver authenticates us, besides the signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer …`
    Bearer(Secret),
    /// `Authorization: Basic …`
    Basic { user: String, password: Secret },
}

/// A Standard Webhooks signing key: the base64-decoded part of a `whsec_…` secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`; the error says what is wrong without repeating the secret.
    pub fn from_whsec(secret: &str) -> Result<SigningKey, String> {
        let Some(encoded) = secret.strip_prefix("whsec_") else {
            return Err("a Standard Webhooks secret starts with `whsec_` followed by base64".to_string());
        };
        match B64.decode(encoded) {
            Ok(key) if key.is_empty() => Err("the key after `whsec_` is empty".to_string()),
            Ok(key) => Ok(SigningKey(key)),
            Err(_) => Err("the part after `whsec_` is not valid base64".to_string()),
        }
    }

    /// The key length in bytes (the spec asks for 24 to 64 random bytes).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn standard_webhooks_signature(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", B64.encode(hmac_sha256(&key.0, &signed)))
}

/// The generic webhook's example URL, shown in problems.
pub const EXAMPLE_URL: &str = "https://hooks.example.com/scanwatch";

/// The keys of a `kind = "webhook"` channel: the receiver's URL, a Standard Webhooks signing secret, and bearer or
/// basic authentication.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub bearer_token: Option<String>,
    pub bearer_token_env: Option<String>,
    pub bearer_token_file: Option<String>,
    pub basic_user: Option<String>,
    pub basic_password: Option<String>,
    pub basic_password_env: Option<String>,
    pub basic_password_file: Option<String>,
}

/// A validated `webhook` channel.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSettings {
    pub url: SecretUrl,
    pub auth: WebhookAuth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<WebhookSigning>,
}

/// How a webhook receiver authenticates scanwatch.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WebhookAuth {
    None,
    Bearer { token: SourcedSecret },
    Basic { user: String, password: SourcedSecret },
}

/// A Standard Webhooks secret and its decoded key.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSigning {
    pub secret: SourcedSecret,
    #[serde(skip)]
    pub key: SigningKey,
}

impl KindConfig for WebhookConfig {
    type Settings = WebhookSettings;

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, _: Duration) -> Option<WebhookSettings> {
        let url = c.url(
            ctx,
            SecretKeys::of("url", self.url.as_deref(), self.url_env.as_deref(), self.url_file.as_deref()),
            EXAMPLE_URL,
        );
        let secret_keys =
            SecretKeys::of("secret", self.secret.as_deref(), self.secret_env.as_deref(), self.secret_file.as_deref());
        let secret_key = secret_keys.written();
        let signing = match c.optional_secret(ctx, secret_keys) {
            // Loaded for reading only: nothing is signed.
            Some(secret) if !secret.is_available() => None,
            Some(secret) => match SigningKey::from_whsec(secret.value.expose().trim()) {
                Ok(key) => {
                    if key.len() < 24 {
                        c.warning(
                            &secret_key,
                            format!(
                                "the signing key is {} bytes; Standard Webhooks asks for 24 to 64 random bytes",
                                key.len()
                            ),
                        );
                    }
                    Some(WebhookSigning { secret, key })
                }
                Err(e) => {
                    c.problem(&secret_key, e);
                    None
                }
            },
            None => None,
        };
        let auth = self.auth(c, ctx);
        Some(WebhookSettings { url: url?, auth: auth?, signing })
    }
}

impl WebhookConfig {
    fn auth(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>) -> Option<WebhookAuth> {
        let bearer = c.optional_secret(
            ctx,
            SecretKeys::of(
                "bearer_token",
                self.bearer_token.as_deref(),
                self.bearer_token_env.as_deref(),
                self.bearer_token_file.as_deref(),
            ),
        );
        let password_keys = SecretKeys::of(
            "basic_password",
            self.basic_password.as_deref(),
            self.basic_password_env.as_deref(),
            self.basic_password_file.as_deref(),
        );
        let password_given = password_keys.given();
        let password = c.optional_secret(ctx, password_keys);
        let user = self.basic_user.as_deref();
        if let Some(u) = user
            && (u.is_empty() || u.contains(':'))
        {
            c.problem("basic_user", "must be non-empty and must not contain `:`");
            return None;
        }
        match (bearer, user, password) {
            (Some(_), Some(_), _) => {
                c.problem("basic_user", "give either a bearer token or basic auth, not both");
                None
            }
            (Some(token), None, _) if !password_given => Some(WebhookAuth::Bearer { token }),
            (Some(_), None, _) => {
                c.problem("basic_password", "give either a bearer token or basic auth, not both");
                None
            }
            (None, Some(u), Some(password)) => Some(WebhookAuth::Basic { user: u.to_string(), password }),
            (None, Some(_), None) if !password_given => {
                c.problem(
                    "basic_password",
                    "is required with basic_user: set `basic_password_env` or `basic_password_file`",
                );
                None
            }
            (None, None, Some(_)) => {
                c.problem("basic_user", "is required with basic_password");
                None
            }
            // A password that could not be resolved was already reported.
            (None, Some(_), None) => None,
            (None, None, None) if password_given => None,
            (None, None, None) => Some(WebhookAuth::None),
        }
    }
}

impl KindSettings for WebhookSettings {
    fn build(&self, common: &dyn Fn(&Url) -> Common) -> Option<Arc<dyn Channel>> {
        let auth = match &self.auth {
            WebhookAuth::None => Auth::None,
            WebhookAuth::Bearer { token } => Auth::Bearer(token.value.clone()),
            WebhookAuth::Basic { user, password } => {
                Auth::Basic { user: user.clone(), password: password.value.clone() }
            }
        };
        let key = self.signing.as_ref().map(|s| s.key.clone());
        Some(Arc::new(WebhookChannel::new(common(self.url.expose()), auth, key)))
    }
}

/// A generic webhook destination.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    common: Common,
    auth: Auth,
    signing_key: Option<SigningKey>,
    max_body: usize,
}

impl WebhookChannel {
    pub fn new(common: Common, auth: Auth, signing_key: Option<SigningKey>) -> Self {
        WebhookChannel { common, auth, signing_key, max_body: MAX_BODY_BYTES }
    }

    /// A smaller body limit (tests of truncation).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The Alertmanager-v4 body, with as many alerts as fit in the body limit.
    pub fn payload(&self, n: &Notification) -> Value {
        let title = self.common.title(n);
        let message = self.common.body(n, Format::Plain, true, Budget { limit: MESSAGE_LIMIT, unit: Unit::JsonBytes });
        let alerts: Vec<Value> = n.alerts.iter().map(|a| alert_json(a, &self.common)).collect();
        let common_labels = intersect(alerts.iter().map(|a| &a["labels"]));
        let common_annotations = intersect(alerts.iter().map(|a| &a["annotations"]));
        let firing = n.alerts.iter().any(|a| a.event != Event::Resolved);
        let envelope = |alerts: &[Value], truncated: usize| {
            json!({
                "version": "4",
                "groupKey": n.group_key(),
                "truncatedAlerts": truncated,
                "status": if firing { "firing" } else { "resolved" },
                "receiver": self.common.name,
                "groupLabels": n.group_labels,
                "commonLabels": common_labels,
                "commonAnnotations": common_annotations,
                "externalURL": "",
                "title": title,
                "message": message,
                "alerts": alerts,
            })
        };
        // The envelope without alerts, with room for the largest truncatedAlerts number.
        let base = envelope(&[], usize::MAX).to_string().len();
        let mut used = base;
        let mut kept = 0;
        for a in &alerts {
            let size = a.to_string().len() + 1;
            if used + size > self.max_body {
                break;
            }
            used += size;
            kept += 1;
        }
        envelope(&alerts[..kept], alerts.len() - kept)
    }
}

fn alert_json(a: &AlertNotice, common: &Common) -> Value {
    let s = &a.series;
    let mut labels: BTreeMap<String, String> = a.labels.clone();
    let builtin = [
        ("alertname", a.rule.as_str().to_string()),
        ("rule", a.rule.as_str().to_string()),
        ("target", s.target.clone()),
        ("account", s.account.clone()),
        ("region", s.region.clone()),
        ("project_id", s.project_id.clone()),
        ("task_type", s.task_type.as_str().to_string()),
        ("severity", a.severity.as_str().to_string()),
    ];
    labels.extend(builtin.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(eps) = &s.enterprise_project_id {
        labels.insert("enterprise_project_id".to_string(), eps.clone());
    }
    let resolved = a.event == Event::Resolved;
    let description = crate::notify::message::describe(a, common.language);
    let mut annotations: BTreeMap<String, String> = [
        ("summary", a.summary.clone()),
        ("value", a.value.clone()),
        ("description", description),
        ("event", a.event.as_str().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(ctx) = &a.context {
        annotations.extend(context_annotations(ctx, common.language));
    }
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": labels,
        "annotations": annotations,
        "startsAt": a.since.to_rfc3339_opts(SecondsFormat::Secs, true),
        "endsAt": if resolved { a.at.to_rfc3339_opts(SecondsFormat::Secs, true) } else { "0001-01-01T00:00:00Z".to_string() },
        "generatorURL": "",
        "fingerprint": a.fingerprint,
    })
}

/// Longest failed reason quoted in the `failed_resources` annotation: it is a one-line overview.
const ANNOTATION_REASON_CHARS: usize = 120;

/// The task context as Alertmanager-style annotations (strings, so templates written for Alertmanager can print
/// them): `task_id`, `task_name`, `task_type`, `task_trigger`, `task_status`, `task_started_at`, `task_ended_at`
/// (RFC 3339 UTC), `task_estimated_minutes`, `task_scanning`, `task_success`, `task_failed`, `failed_total`,
/// `failed_resources` ("name (kind): reason; …; and N more", in the channel's language) and
/// `context_unavailable`; only those that are known. HSS's text is cleaned by [`untrusted`] (one line, bounded,
/// mentions neutralized).
fn context_annotations(ctx: &AlertContext, language: Language) -> Vec<(String, String)> {
    let name = |s: &str| untrusted(Format::Plain, s, MAX_NAME_CHARS);
    let time = |ms: Option<i64>| {
        ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    };
    let mut out: Vec<(&str, Option<String>)> = Vec::new();
    if let Some(t) = &ctx.task {
        out.extend([
            ("task_id", Some(name(&t.task_id))),
            ("task_name", Some(name(&t.task_name))),
            ("task_type", Some(t.task_type.as_str().to_string())),
            ("task_trigger", Some(name(&t.trigger_type))),
            ("task_status", Some(name(&t.task_status))),
            ("task_started_at", time(t.start_time)),
            ("task_ended_at", time(t.end_time)),
            ("task_estimated_minutes", t.estimated_minutes.map(|m| m.to_string())),
            ("task_scanning", Some(t.scanning.to_string())),
            ("task_success", Some(t.success.to_string())),
            ("task_failed", Some(t.failed.to_string())),
        ]);
    }
    let total = ctx.failed_total.max(ctx.failed.len() as u64);
    if total > 0 {
        let listed = ctx.failed.len().min(MAX_FAILED_LISTED);
        let mut items: Vec<String> = ctx.failed[..listed]
            .iter()
            .map(|r| {
                let reason = untrusted(Format::Plain, &r.failed_reason, ANNOTATION_REASON_CHARS);
                match &r.kind {
                    Some(kind) => format!("{} ({}): {reason}", name(&r.name), name(kind)),
                    None => format!("{}: {reason}", name(&r.name)),
                }
            })
            .collect();
        let more = total - listed as u64;
        if more > 0 {
            items.push(match language {
                Language::En => format!("and {more} more"),
                Language::ZhCn => format!("另有 {more} 个"),
            });
        }
        out.push(("failed_total", Some(total.to_string())));
        out.push(("failed_resources", Some(items.join("; "))));
    }
    out.push((
        "context_unavailable",
        ctx.unavailable.as_deref().map(|u| untrusted(Format::Plain, u, MAX_REASON_CHARS)),
    ));
    out.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect()
}

/// The key/value pairs every object has in common (Alertmanager's `commonLabels`).
fn intersect<'a>(mut maps: impl Iterator<Item = &'a Value>) -> Value {
    let Some(Value::Object(first)) = maps.next() else { return json!({}) };
    let mut common = first.clone();
    for m in maps {
        common.retain(|k, v| m.get(k) == Some(v));
    }
    Value::Object(common)
}

/// Standard Webhooks forbids `.` in the id (it separates the signed parts); this keeps the id stable and valid.
fn webhook_id(n: &Notification) -> String {
    n.id.replace('.', "-")
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let body = to_bytes(&self.payload(n));
        let id = webhook_id(n);
        let timestamp = self.common.clock.now().timestamp();
        let mut headers = HeaderMap::new();
        let header = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| DeliveryError::Permanent {
                reason: "a header value has characters HTTP does not allow (check the notification id and the \
                         credentials for line breaks)"
                    .to_string(),
            })
        };
        headers.insert(HeaderName::from_static("webhook-id"), header(&id)?);
        headers.insert(HeaderName::from_static("webhook-timestamp"), header(&timestamp.to_string())?);
        if let Some(key) = &self.signing_key {
            let signature = standard_webhooks_signature(key, &id, timestamp, &body);
            headers.insert(HeaderName::from_static("webhook-signature"), header(&signature)?);
        }
        let mut secrets: Vec<&str> = Vec::new();
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(token) => {
                let mut v = header(&format!("Bearer {}", token.expose()))?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
                secrets.push(token.expose());
            }
            Auth::Basic { user, password } => {
                let encoded = B64.encode(format!("{user}:{}", password.expose()));
                let mut v = header(&format!("Basic {encoded}"))?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
                secrets.push(password.expose());
            }
        }
        let answer = self.common.post_json("the webhook receiver", &self.common.url, headers, body, &secrets).await?;
        answer.classify_status("the webhook receiver")?;
        Ok(Delivered { status: answer.status, detail: answer.excerpt() })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::hss::test_support::{Recorded, Reply, spawn};
    use crate::notify::channels::testkit::{
        assert_hostile_context_is_inert, assert_says_context_unavailable, batch, common, hostile_context, notice,
        notification, one, refused_url, unavailable_context, with_context,
    };

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn channel(url: url::Url, auth: Auth, secret: Option<&str>) -> WebhookChannel {
        WebhookChannel::new(common(url), auth, secret.map(|s| SigningKey::from_whsec(s).unwrap()))
    }

    /// The receiver's check, written from the spec rather than with our signing function.
    fn verify(r: &Recorded, secret: &str) -> Result<(), String> {
        let id = r.header("webhook-id").ok_or("no webhook-id")?;
        let ts = r.header("webhook-timestamp").ok_or("no webhook-timestamp")?;
        let sigs = r.header("webhook-signature").ok_or("no webhook-signature")?;
        let key = B64.decode(secret.trim_start_matches("whsec_")).map_err(|e| e.to_string())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
        if sigs.split(' ').any(|s| s == expected) { Ok(()) } else { Err(format!("bad signature {sigs}")) }
    }

    fn verifying_server_reply(r: &Recorded) -> Reply {
        match verify(r, SECRET) {
            Ok(()) => Reply::raw(200, "accepted"),
            Err(e) => Reply::raw(401, e),
        }
    }

    #[test]
    fn the_standard_webhooks_vector_signs_as_specified() {
        let key = SigningKey::from_whsec(SECRET).unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            standard_webhooks_signature(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_secret_without_the_prefix_or_with_bad_base64_is_rejected() {
        assert!(SigningKey::from_whsec("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_err().contains("whsec_"));
        assert!(SigningKey::from_whsec("whsec_%%%").unwrap_err().contains("base64"));
        assert!(SigningKey::from_whsec("whsec_").is_err());
        assert_eq!(SigningKey::from_whsec(SECRET).unwrap().len(), 24);
        assert_eq!(format!("{:?}", SigningKey::from_whsec(SECRET).unwrap()), "[redacted]");
    }

    #[tokio::test]
    async fn a_signed_alertmanager_body_is_accepted_by_a_verifying_receiver() {
        let server = spawn(verifying_server_reply).await;
        let ch =
            channel(server.url.join("/hooks/scanwatch").unwrap(), Auth::Bearer(Secret::new("tok-123")), Some(SECRET));
        let n = notification(vec![notice(0, Event::Firing), notice(1, Event::Resolved)]);
        let delivered = ch.send(&n).await.unwrap();
        assert_eq!(delivered, Delivered { status: 200, detail: "accepted".into() });

        let r = server.only_request();
        assert_eq!(r.path, "/hooks/scanwatch");
        assert_eq!(r.header("webhook-id"), Some("ntf-0001"));
        assert_eq!(r.header("webhook-timestamp"), Some("1745309051"));
        assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
        assert!(r.header("content-type").unwrap().starts_with("application/json"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "test");
        assert_eq!(body["truncatedAlerts"], 0);
        let a0 = &body["alerts"][0];
        assert_eq!(a0["status"], "firing");
        assert_eq!(a0["labels"]["alertname"], "no_recent_scan");
        assert_eq!(a0["labels"]["target"], "prod-cn-north-4-cluster-000");
        assert_eq!(a0["labels"]["account"], "prod");
        assert_eq!(a0["labels"]["region"], "cn-north-4");
        assert_eq!(a0["labels"]["project_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(a0["labels"]["task_type"], "cluster_scan");
        assert_eq!(a0["labels"]["severity"], "critical");
        assert_eq!(a0["labels"]["env"], "prod");
        assert_eq!(a0["annotations"]["summary"], "no cluster scan has started for 31h; limit 24h");
        assert_eq!(a0["annotations"]["value"], "31h");
        assert_eq!(a0["startsAt"], "2025-04-22T01:04:11Z");
        assert_eq!(a0["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a0["fingerprint"], "0000000000000000");
        let a1 = &body["alerts"][1];
        assert_eq!(a1["status"], "resolved");
        assert_eq!(a1["endsAt"], "2025-04-22T08:04:11Z");
        assert_eq!(body["commonLabels"]["env"], "prod");
        assert!(body["commonLabels"].get("target").is_none());
        assert!(body["title"].as_str().unwrap().starts_with("[FIRING:1] scanwatch: no_recent_scan, stuck_running"));
    }

    #[tokio::test]
    async fn a_groups_body_carries_alertmanagers_group_key_and_stays_firing_while_any_alert_fires() {
        let ch = channel(refused_url().await, Auth::None, None);
        let mut n = notification(vec![notice(0, Event::Repeat), notice(1, Event::Resolved)]);
        n.channel = "ops-hook".into();
        n.group_labels = BTreeMap::from([
            ("target".to_string(), "prod-cn-north-4".to_string()),
            ("env".to_string(), "p\"r\\od\n".to_string()),
        ]);
        let body = ch.payload(&n);
        // As Alertmanager renders a child route's key and a label set (Go's %q for values, names sorted).
        assert_eq!(body["groupKey"], r#"{}/{channel="ops-hook"}:{env="p\"r\\od\n", target="prod-cn-north-4"}"#);
        assert_eq!(body["groupLabels"]["target"], "prod-cn-north-4");
        assert_eq!(body["status"], "firing", "one alert of the group still fires");
        assert_eq!(body["alerts"][0]["status"], "firing");
        assert_eq!(body["alerts"][1]["status"], "resolved");
        n.alerts.remove(0);
        n.group_labels.clear();
        let body = ch.payload(&n);
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["groupKey"], r#"{}/{channel="ops-hook"}:{}"#);
        assert_eq!(body["groupLabels"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn a_wrong_secret_fails_the_receivers_check_and_is_permanent() {
        let server = spawn(verifying_server_reply).await;
        let ch = channel(server.url.clone(), Auth::None, Some("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
        let err = ch.send(&one()).await.unwrap_err();
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("HTTP 401"), "{reason}");
    }

    #[tokio::test]
    async fn the_webhook_id_is_the_same_on_every_retry_and_each_attempt_is_signed() {
        let server = spawn(verifying_server_reply).await;
        let ch = channel(server.url.clone(), Auth::None, Some(SECRET));
        let mut n = one();
        n.id = "ntf.42".to_string();
        ch.send(&n).await.unwrap();
        ch.send(&n).await.unwrap();
        let ids: Vec<_> = server.requests().iter().map(|r| r.header("webhook-id").unwrap().to_string()).collect();
        assert_eq!(ids, ["ntf-42", "ntf-42"]);
    }

    #[tokio::test]
    async fn unsigned_requests_still_carry_id_and_timestamp_and_basic_auth() {
        let server = spawn(|_| Reply::raw(204, "")).await;
        let ch = channel(server.url.clone(), Auth::Basic { user: "sw".into(), password: Secret::new("pw") }, None);
        assert_eq!(ch.send(&one()).await.unwrap().status, 204);
        let r = server.only_request();
        assert!(r.header("webhook-id").is_some() && r.header("webhook-timestamp").is_some());
        assert!(r.header("webhook-signature").is_none());
        assert_eq!(r.header("authorization"), Some("Basic c3c6cHc="));
    }

    #[tokio::test]
    async fn http_statuses_are_classified_as_standard_webhooks_asks() {
        let cases: [(u16, Option<&str>, bool, Option<u64>); 7] = [
            (410, None, false, None),
            (429, Some("30"), true, Some(30)),
            (502, None, true, None),
            (503, Some("5"), true, Some(5)),
            (408, None, true, None),
            (400, None, false, None),
            (302, None, false, None),
        ];
        for (status, retry_after, retryable, wait) in cases {
            let server = spawn(move |_| {
                let reply = Reply::raw(status, "nope");
                match retry_after {
                    Some(v) => reply.header("Retry-After", v),
                    None => reply,
                }
            })
            .await;
            let err = channel(server.url.clone(), Auth::None, None).send(&one()).await.unwrap_err();
            match err {
                DeliveryError::Retryable { retry_after, .. } if retryable => {
                    assert_eq!(retry_after, wait.map(Duration::from_secs), "{status}")
                }
                DeliveryError::Permanent { reason } if !retryable => {
                    assert!(reason.contains(&status.to_string()), "{reason}");
                    if status == 410 {
                        assert!(reason.contains("asked to stop"), "{reason}");
                    }
                }
                other => panic!("HTTP {status}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_and_names_only_the_host() {
        let url = refused_url().await;
        let err = channel(url, Auth::None, None).send(&one()).await.unwrap_err();
        let DeliveryError::Retryable { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.contains("could not connect"), "{reason}");
        assert!(reason.contains("http://127.0.0.1:"), "{reason}");
        assert!(!reason.contains("0123456789abcdef"), "{reason}");
    }

    #[tokio::test]
    async fn a_receiver_that_does_not_answer_in_time_is_retryable() {
        let server = spawn(|_| Reply::raw(200, "late").delay(Duration::from_secs(30))).await;
        let mut ch = channel(server.url.clone(), Auth::None, None);
        ch.common.timeout = Duration::from_millis(300);
        let err = ch.send(&one()).await.unwrap_err();
        let DeliveryError::Retryable { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.contains("did not answer within 300ms"), "{reason}");
    }

    #[tokio::test]
    async fn an_error_body_echoing_the_url_token_is_scrubbed() {
        let server = spawn(|r: &Recorded| Reply::raw(500, format!("no such hook {}", r.path))).await;
        let url = server.url.join("/hook/0123456789abcdef0123456789").unwrap();
        let err = channel(url, Auth::Bearer(Secret::new("bearer-secret")), None).send(&one()).await.unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("no such hook /hook/[redacted]"), "{text}");
    }

    #[tokio::test]
    async fn fifty_alerts_are_one_request_with_every_alert_and_a_cut_message() {
        let server = spawn(|_| Reply::raw(200, "")).await;
        let ch = channel(server.url.clone(), Auth::None, None);
        ch.send(&batch(50)).await.unwrap();
        let r = server.only_request();
        assert!(r.body.len() <= MAX_BODY_BYTES);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["alerts"].as_array().unwrap().len(), 50);
        assert_eq!(body["truncatedAlerts"], 0);
        let message = body["message"].as_str().unwrap();
        assert!(message.len() <= MESSAGE_LIMIT);
        assert!(message.starts_with("[FIRING:50]"), "{message}");
        let tail = message.rsplit("\n\n").next().unwrap();
        assert!(tail.starts_with("… and ") && tail.ends_with(" more"), "{tail}");
    }

    #[tokio::test]
    async fn a_storm_larger_than_the_body_limit_is_truncated_and_counted() {
        let server = spawn(|_| Reply::raw(200, "")).await;
        let ch = channel(server.url.clone(), Auth::None, None).with_max_body(40 * 1024);
        ch.send(&batch(200)).await.unwrap();
        let r = server.only_request();
        assert!(r.body.len() <= 40 * 1024, "{}", r.body.len());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let kept = body["alerts"].as_array().unwrap().len();
        assert!(kept > 0 && kept < 200, "{kept}");
        assert_eq!(body["truncatedAlerts"], 200 - kept);
    }

    #[test]
    fn a_hostile_task_context_goes_into_annotations_and_the_message_cleaned_and_bounded() {
        let mut ch = channel(url::Url::parse("http://127.0.0.1:9/").unwrap(), Auth::None, None);
        for language in [Language::En, Language::ZhCn] {
            ch.common.language = language;
            let body = ch.payload(&with_context(hostile_context()));
            let message = body["message"].as_str().unwrap();
            assert_hostile_context_is_inert(message, language, &[]);
            let ann = &body["alerts"][0]["annotations"];
            for key in ["summary", "value", "description", "event"] {
                assert!(ann[key].is_string(), "{key} kept: {ann}");
            }
            assert_eq!(ann["task_id"], "task-7f3a");
            assert_eq!(ann["task_status"], "finished");
            assert_eq!(ann["task_trigger"], "manual");
            assert_eq!(ann["task_success"], "3");
            assert_eq!(ann["task_failed"], "2");
            assert_eq!(ann["failed_total"], "6");
            assert_eq!(ann["task_started_at"], "2025-04-22T07:04:11Z");
            let name = ann["task_name"].as_str().unwrap();
            assert!(name.chars().count() <= MAX_NAME_CHARS + 16, "{name}");
            assert!(name.ends_with('…') && !name.contains('\n') && !name.contains("<!channel>"), "{name}");
            assert!(!name.contains("@all"), "{name}");
            let failed = ann["failed_resources"].as_str().unwrap();
            assert!(failed.contains("prod-cce-beijing (cce): the agent is offline"), "{failed}");
            assert!(!failed.contains("<!here>") && !failed.contains("<@U024BE7LH>") && !failed.contains('\n'));
            let more = if language == Language::En { "; and 4 more" } else { "; 另有 4 个" };
            assert!(failed.ends_with(more), "{failed}");
            assert!(ann.get("context_unavailable").is_none());
            for (k, v) in ann.as_object().unwrap() {
                assert!(v.is_string(), "annotation {k} is a string: {v}");
            }
        }
    }

    #[test]
    fn annotations_and_the_message_say_why_there_is_no_task_context() {
        let ch = channel(url::Url::parse("http://127.0.0.1:9/").unwrap(), Auth::None, None);
        let body = ch.payload(&with_context(unavailable_context()));
        assert_eq!(body["alerts"][0]["annotations"]["context_unavailable"], "API budget exhausted");
        assert!(body["alerts"][0]["annotations"].get("task_id").is_none());
        assert_says_context_unavailable(body["message"].as_str().unwrap(), Language::En);
        let plain = channel(url::Url::parse("http://127.0.0.1:9/").unwrap(), Auth::None, None).payload(&one());
        assert!(plain["alerts"][0]["annotations"].get("context_unavailable").is_none());
        assert_eq!(plain["alerts"][0]["annotations"].as_object().unwrap().len(), 4, "no context: as before");
    }
}
