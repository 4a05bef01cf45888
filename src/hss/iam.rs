//! IAM password login: fetching a project-scoped token, caching it per account, and refreshing it before it
//! expires or after HSS rejects it.
//!
//! `POST {iam}/v3/auth/tokens` answers 201 with the token in `X-Subject-Token` and `token.expires_at` in the body
//! (24 h lifetime, revocable earlier). Huawei's SDK never refreshes tokens; we refresh when less than an hour (or a
//! tenth of the lifetime, whichever is smaller) remains, and keep using a still-valid token if a refresh fails, so
//! an IAM hiccup does not turn into missed polls.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use super::errors::classify_error;
use super::transport::{Transport, body_too_large, scrub};
use crate::model::{ErrorKind, PollError, excerpt};
use crate::secret::Secret;

/// What a password login needs. The project scope matters: a token is only valid for the project (region) it was
/// issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordLogin {
    /// `https://iam.{region}.myhuaweicloud.com` (see [`super::regions::iam_endpoint`]); a path prefix is kept.
    pub iam_endpoint: Url,
    /// The account (domain) name.
    pub domain: String,
    /// The IAM user name.
    pub user: String,
    pub password: Secret,
    pub project: ProjectScope,
}

/// `scope.project` of the login: by name (the region id, e.g. `cn-north-4`) or by project id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectScope {
    Name(String),
    Id(String),
}

/// A token IAM issued, with its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamToken {
    pub value: Secret,
    /// From the body's `issued_at`, or the injected `now` of the login when IAM did not say.
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl IamToken {
    /// How long before expiry the token is replaced: 1 h, or a tenth of its lifetime when that is smaller.
    pub fn refresh_margin(&self) -> TimeDelta {
        let tenth = (self.expires_at - self.issued_at) / 10;
        tenth.min(TimeDelta::hours(1)).max(TimeDelta::zero())
    }

    /// Whether a new token should be fetched before using this one at `now`.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        self.expires_at - now <= self.refresh_margin()
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }
}

/// The per-account token slot. Locked across a login, so concurrent polls of one account log in once.
#[derive(Debug, Default)]
pub(crate) struct TokenCache(Mutex<Option<IamToken>>);

impl TokenCache {
    /// The account's token, logging in when there is none or it is due for refresh. If a refresh fails while the
    /// cached token is still valid, the cached one is used (and the refresh retried on the next call).
    pub(crate) async fn token(
        &self,
        transport: &Transport,
        account: &str,
        login: &PasswordLogin,
        now: DateTime<Utc>,
    ) -> Result<IamToken, PollError> {
        let mut slot = self.0.lock().await;
        if let Some(cached) = slot.as_ref().filter(|t| !t.needs_refresh(now)) {
            return Ok(cached.clone());
        }
        match self::login(transport, login, now).await {
            Ok(token) => {
                tracing::info!(account, expires_at = %token.expires_at, "IAM token obtained");
                *slot = Some(token.clone());
                Ok(token)
            }
            Err(e) => match slot.as_ref().filter(|t| !t.is_expired(now)) {
                Some(still_valid) => {
                    tracing::warn!(account, error = %e, "IAM token refresh failed; using the current token");
                    Ok(still_valid.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forgets `used` after HSS rejected it, unless another poll already replaced it.
    pub(crate) async fn invalidate(&self, used: &IamToken) {
        let mut slot = self.0.lock().await;
        if slot.as_ref().is_some_and(|cached| cached.value == used.value) {
            *slot = None;
        }
    }
}

/// `{iam_endpoint}/v3/auth/tokens?nocatalog=true` (the service catalog is large and unused).
pub fn login_url(iam_endpoint: &Url) -> Url {
    let mut url = iam_endpoint.clone();
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}/v3/auth/tokens"));
    url.set_query(Some("nocatalog=true"));
    url.set_fragment(None);
    url
}

/// The password login body of hss-api.md §1e. It contains the password: it goes only into the request body.
pub fn login_body(login: &PasswordLogin) -> Vec<u8> {
    let project = match &login.project {
        ProjectScope::Name(name) => json!({ "name": name }),
        ProjectScope::Id(id) => json!({ "id": id }),
    };
    let body = json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "domain": { "name": login.domain },
                        "name": login.user,
                        "password": login.password.expose(),
                    }
                }
            },
            "scope": { "project": project }
        }
    });
    body.to_string().into_bytes()
}

/// Reads a 201 login answer: the token from `X-Subject-Token`, its validity from `token.expires_at` /
/// `token.issued_at` (ISO 8601). Anything missing is `bad_response`.
pub fn parse_login_response(
    subject_token: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<IamToken, PollError> {
    let bad = |what: &str| {
        PollError::new(
            ErrorKind::BadResponse,
            format!("IAM login failed: {what}; body: {}", excerpt(&String::from_utf8_lossy(body), 300)),
        )
    };
    let token = subject_token.map(str::trim).filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(PollError::new(ErrorKind::BadResponse, "IAM login failed: the answer has no X-Subject-Token"));
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not JSON"))?;
    let time = |field: &str| {
        value
            .pointer(&format!("/token/{field}"))
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let expires_at = time("expires_at").ok_or_else(|| bad("`token.expires_at` is missing or not an ISO 8601 time"))?;
    let issued_at = time("issued_at").filter(|t| *t <= expires_at).unwrap_or(now.min(expires_at));
    Ok(IamToken { value: Secret::new(token), issued_at, expires_at })
}

/// Logs in with a password and returns the token (see [`super::client::HssClient::iam_login`]).
pub(crate) async fn login(
    transport: &Transport,
    login: &PasswordLogin,
    now: DateTime<Utc>,
) -> Result<IamToken, PollError> {
    let secrets = [login.password.expose()];
    let request = transport
        .http()
        .post(login_url(&login.iam_endpoint))
        .header(reqwest::header::CONTENT_TYPE, "application/json;charset=utf-8")
        .header(reqwest::header::USER_AGENT, transport.options().user_agent.as_str())
        .body(login_body(login));
    let raw = transport.fetch(request, "IAM").await.map_err(failed_login)?;
    tracing::debug!(
        method = "POST",
        status = raw.status,
        request_id = raw.request_id.as_deref().unwrap_or(""),
        "IAM login"
    );
    match raw.status {
        201 => {
            if raw.truncated {
                return Err(failed_login(body_too_large(transport.options().max_body_bytes)));
            }
            let subject = raw.headers.get("x-subject-token").and_then(|v| v.to_str().ok());
            parse_login_response(subject, &raw.body, now).map_err(|mut e| {
                e.http_status = Some(201);
                e.request_id = raw.request_id.clone();
                e
            })
        }
        status @ 200..=299 => {
            let mut e = PollError::new(
                ErrorKind::BadResponse,
                format!("IAM login failed: expected HTTP 201 with a token, got {status}"),
            );
            e.http_status = Some(status);
            e.request_id = raw.request_id;
            Err(e)
        }
        status => {
            let retry_after = raw.retry_after(now);
            let body = scrub(&raw.body, &secrets);
            let mut e = classify_error(status, raw.request_id, retry_after, body.as_bytes());
            if status == 400 || status == 401 {
                e.kind = ErrorKind::Auth;
            }
            Err(failed_login(e))
        }
    }
}

fn failed_login(mut e: PollError) -> PollError {
    if !e.message.starts_with("IAM login failed") {
        e.message = format!("IAM login failed: {}", e.message);
    }
    e
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::TimeZone;

    use super::*;
    use crate::hss::client::{Account, ClientOptions, Credentials, HssClient, StatsRequest};
    use crate::hss::test_support::{Recorded, Reply, spawn};
    use crate::model::TaskType;

    const PASSWORD: &str = "correct horse battery staple";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single().unwrap_or_default()
    }

    fn login(endpoint: &Url, project: ProjectScope) -> PasswordLogin {
        PasswordLogin {
            iam_endpoint: endpoint.clone(),
            domain: "acme".into(),
            user: "scanwatch".into(),
            password: Secret::new(PASSWORD),
            project,
        }
    }

    fn client() -> HssClient {
        HssClient::new(ClientOptions::default()).unwrap()
    }

    fn stats_request(endpoint: &Url) -> StatsRequest<'_> {
        StatsRequest { endpoint, project_id: "p1", enterprise_project_id: None, task_type: TaskType::ClusterScan }
    }

    /// IAM + HSS on one server. Token n (1-based) is issued at t0 + (n-1) * 24 h and lives 24 h; HSS accepts a
    /// token when `accepts(n)` says so.
    struct Cloud {
        logins: Arc<AtomicUsize>,
        hss_calls: Arc<AtomicUsize>,
    }

    fn cloud(
        iam_status: impl Fn(usize) -> u16 + Send + Sync + 'static,
        accepts: impl Fn(usize) -> bool + Send + Sync + 'static,
    ) -> (Cloud, impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        let logins = Arc::new(AtomicUsize::new(0));
        let hss_calls = Arc::new(AtomicUsize::new(0));
        let (l, h) = (logins.clone(), hss_calls.clone());
        let handler = move |r: &Recorded| {
            if r.path == "/v3/auth/tokens" {
                let n = l.fetch_add(1, Ordering::SeqCst) + 1;
                let status = iam_status(n);
                if status != 201 {
                    return Reply::json(status, json!({"error": {"code": status, "message": "The username or password is wrong.", "title": "Unauthorized"}}))
                        .header("X-Request-Id", "iam-rid");
                }
                let issued = t0() + TimeDelta::hours(24) * (n as i32 - 1);
                let expires = issued + TimeDelta::hours(24);
                let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
                return Reply::json(
                    201,
                    json!({"token": {"issued_at": fmt(issued), "expires_at": fmt(expires), "methods": ["password"]}}),
                )
                .header("X-Subject-Token", &format!("tok-{n}"));
            }
            h.fetch_add(1, Ordering::SeqCst);
            let n = r.header("x-auth-token").and_then(|t| t.strip_prefix("tok-")).and_then(|n| n.parse().ok());
            match n {
                Some(n) if accepts(n) => Reply::json(200, json!({"total_num": n, "running_num": 0})),
                _ => Reply::json(401, json!({"error_code": "APIGW.0307", "error_msg": "The token must be updated"})),
            }
        };
        (Cloud { logins, hss_calls }, handler)
    }

    impl Cloud {
        fn counts(&self) -> (usize, usize) {
            (self.logins.load(Ordering::SeqCst), self.hss_calls.load(Ordering::SeqCst))
        }
    }

    fn total(r: Result<crate::hss::client::StatsResponse, PollError>) -> Result<u64, PollError> {
        r.map(|r| r.stats.total_num)
    }

    #[test]
    fn the_login_body_is_the_documented_password_login() {
        let url = Url::parse("https://iam.cn-north-4.myhuaweicloud.com").unwrap();
        let body: Value =
            serde_json::from_slice(&login_body(&login(&url, ProjectScope::Name("cn-north-4".into())))).unwrap();
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"domain": {"name": "acme"}, "name": "scanwatch", "password": PASSWORD}}},
                "scope": {"project": {"name": "cn-north-4"}}}})
        );
        let by_id: Value = serde_json::from_slice(&login_body(&login(&url, ProjectScope::Id("abc".into())))).unwrap();
        assert_eq!(by_id["auth"]["scope"], json!({"project": {"id": "abc"}}));
        assert_eq!(login_url(&url).as_str(), "https://iam.cn-north-4.myhuaweicloud.com/v3/auth/tokens?nocatalog=true");
        let prefixed = Url::parse("http://127.0.0.1:9/iam/").unwrap();
        assert_eq!(login_url(&prefixed).as_str(), "http://127.0.0.1:9/iam/v3/auth/tokens?nocatalog=true");
    }

    #[test]
    fn a_token_is_refreshed_an_hour_before_expiry_or_at_a_tenth_of_a_short_lifetime() {
        let day = IamToken { value: Secret::new("t"), issued_at: t0(), expires_at: t0() + TimeDelta::hours(24) };
        assert!(!day.needs_refresh(t0() + TimeDelta::minutes(22 * 60 + 59)));
        assert!(day.needs_refresh(t0() + TimeDelta::hours(23)));
        assert!(day.needs_refresh(t0() + TimeDelta::hours(30)));
        let short = IamToken { expires_at: t0() + TimeDelta::hours(2), ..day.clone() };
        assert_eq!(short.refresh_margin(), TimeDelta::minutes(12));
        assert!(!short.needs_refresh(t0() + TimeDelta::minutes(107)));
        assert!(short.needs_refresh(t0() + TimeDelta::minutes(108)));
        assert!(!short.is_expired(t0() + TimeDelta::minutes(119)));
        assert!(short.is_expired(t0() + TimeDelta::hours(2)));
    }

    #[test]
    fn a_login_answer_without_token_or_expiry_is_a_bad_response() {
        let body =
            br#"{"token":{"expires_at":"2024-01-03T03:04:05.123000Z","issued_at":"2024-01-02T03:04:05.123000Z"}}"#;
        let ok = parse_login_response(Some("abc"), body, t0()).unwrap();
        assert_eq!(ok.expires_at - ok.issued_at, TimeDelta::hours(24));
        assert_eq!(ok.value.expose(), "abc");
        for (token, body, says) in [
            (None, &body[..], "no X-Subject-Token"),
            (Some(" "), &body[..], "no X-Subject-Token"),
            (Some("abc"), &b"{\"token\":{}}"[..], "`token.expires_at`"),
            (Some("abc"), &b"{\"token\":{\"expires_at\":\"tomorrow\"}}"[..], "`token.expires_at`"),
            (Some("abc"), &b"<html>"[..], "not JSON"),
        ] {
            let err = parse_login_response(token, body, t0()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadResponse);
            assert!(err.message.starts_with("IAM login failed") && err.message.contains(says), "{}", err.message);
        }
        let without_issued =
            parse_login_response(Some("abc"), br#"{"token":{"expires_at":"2024-01-03T03:04:05Z"}}"#, t0()).unwrap();
        assert_eq!(without_issued.issued_at, t0());
    }

    #[tokio::test]
    async fn a_password_account_logs_in_once_and_reuses_the_token() {
        let (cloud, handler) = cloud(|_| 201, |_| true);
        let server = spawn(handler).await;
        let account = Account::new(
            "pw".into(),
            Credentials::Password(login(&server.url, ProjectScope::Name("cn-north-4".into()))),
        );
        let c = client();
        assert_eq!(total(c.task_statistics(&account, &stats_request(&server.url), t0()).await), Ok(1));
        assert_eq!(
            total(c.task_statistics(&account, &stats_request(&server.url), t0() + TimeDelta::hours(1)).await),
            Ok(1)
        );
        assert_eq!(cloud.counts(), (1, 2));

        let sent = server.requests();
        let iam = &sent[0];
        assert_eq!((iam.method.as_str(), iam.query.as_deref()), ("POST", Some("nocatalog=true")));
        assert_eq!(iam.header("content-type"), Some("application/json;charset=utf-8"));
        assert_eq!(iam.header("authorization"), None, "the login is unsigned");
        let body: Value = serde_json::from_slice(&iam.body).unwrap();
        assert_eq!(body["auth"]["identity"]["password"]["user"]["password"], PASSWORD);
        let hss = &sent[1];
        assert_eq!((hss.header("x-auth-token"), hss.header("x-project-id")), (Some("tok-1"), Some("p1")));
        assert_eq!((hss.header("authorization"), hss.header("x-sdk-date")), (None, None));
    }

    #[tokio::test]
    async fn the_token_is_refreshed_when_it_nears_expiry() {
        let (cloud, handler) = cloud(|_| 201, |_| true);
        let server = spawn(handler).await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let c = client();
        let mut seen = Vec::new();
        for hours_later in [0.0, 22.5, 23.5, 24.0, 46.0] {
            let now = t0() + TimeDelta::minutes((hours_later * 60.0) as i64);
            seen.push(total(c.task_statistics(&account, &stats_request(&server.url), now).await));
        }
        assert_eq!(seen, vec![Ok(1), Ok(1), Ok(2), Ok(2), Ok(2)]);
        assert_eq!(cloud.counts(), (2, 5));
    }

    #[tokio::test]
    async fn an_hss_401_triggers_exactly_one_new_login_and_one_retry() {
        // Token 1 was revoked early; token 2 works.
        let (cloud, handler) = cloud(|_| 201, |n| n != 1);
        let server = spawn(handler).await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let got = total(client().task_statistics(&account, &stats_request(&server.url), t0()).await);
        assert_eq!(got, Ok(2));
        assert_eq!(cloud.counts(), (2, 2));
    }

    #[tokio::test]
    async fn a_token_hss_keeps_rejecting_is_an_auth_error_after_one_retry_not_a_loop() {
        let (cloud, handler) = cloud(|_| 201, |_| false);
        let server = spawn(handler).await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let err = client().task_statistics(&account, &stats_request(&server.url), t0()).await.unwrap_err();
        assert_eq!((err.kind, err.error_code.as_deref()), (ErrorKind::Auth, Some("APIGW.0307")));
        assert_eq!(cloud.counts(), (2, 2));
    }

    #[tokio::test]
    async fn a_rejected_password_is_an_auth_error_that_never_shows_the_password() {
        let (cloud, handler) = cloud(|_| 401, |_| true);
        let server = spawn(handler).await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let err = client().task_statistics(&account, &stats_request(&server.url), t0()).await.unwrap_err();
        assert_eq!((err.kind, err.http_status, err.error_code.as_deref()), (ErrorKind::Auth, Some(401), Some("401")));
        assert_eq!(err.request_id.as_deref(), Some("iam-rid"));
        assert_eq!(err.message, "IAM login failed: The username or password is wrong.");
        assert!(!format!("{err} {err:?}").contains(PASSWORD));
        assert_eq!(cloud.counts(), (1, 0), "HSS is not called without a token");
    }

    #[tokio::test]
    async fn iam_errors_other_than_bad_credentials_keep_their_class() {
        let (_cloud, handler) = cloud(|n| if n == 1 { 400 } else { 503 }, |_| true);
        let server = spawn(handler).await;
        let c = client();
        let l = login(&server.url, ProjectScope::Name("r".into()));
        assert_eq!(c.iam_login(&l, t0()).await.map_err(|e| e.kind), Err(ErrorKind::Auth));
        let err = c.iam_login(&l, t0()).await.unwrap_err();
        assert_eq!((err.kind, err.http_status), (ErrorKind::Server, Some(503)));
        assert!(err.message.starts_with("IAM login failed: "), "{}", err.message);
    }

    #[tokio::test]
    async fn an_unreachable_iam_is_a_network_error_saying_the_login_failed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let err = client().iam_login(&login(&url, ProjectScope::Name("r".into())), t0()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Network);
        assert!(err.message.starts_with("IAM login failed: could not connect to IAM"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_using_the_still_valid_token() {
        let (cloud, handler) = cloud(|n| if n == 1 { 201 } else { 500 }, |_| true);
        let server = spawn(handler).await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let c = client();
        let req = stats_request(&server.url);
        assert_eq!(total(c.task_statistics(&account, &req, t0()).await), Ok(1));
        // Inside the refresh margin: IAM fails, the current token is still good.
        assert_eq!(total(c.task_statistics(&account, &req, t0() + TimeDelta::minutes(23 * 60 + 30)).await), Ok(1));
        assert_eq!(cloud.counts(), (2, 2));
        // Once it has expired there is nothing to fall back on.
        let err = c.task_statistics(&account, &req, t0() + TimeDelta::hours(24)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Server);
        assert_eq!(cloud.counts(), (3, 2));
    }

    #[tokio::test]
    async fn a_token_echoed_in_an_hss_error_is_redacted() {
        let server = spawn(|r: &Recorded| {
            if r.path == "/v3/auth/tokens" {
                return Reply::json(201, json!({"token": {"expires_at": "2024-01-03T03:04:05Z"}}))
                    .header("X-Subject-Token", "secret-iam-token-1234");
            }
            let echoed = r.header("x-auth-token").unwrap_or_default().to_string();
            Reply::json(403, json!({"error_code": "APIGW.0306", "error_msg": format!("denied for token {echoed}")}))
        })
        .await;
        let account =
            Account::new("pw".into(), Credentials::Password(login(&server.url, ProjectScope::Name("r".into()))));
        let err = client().task_statistics(&account, &stats_request(&server.url), t0()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Forbidden);
        assert!(err.message.ends_with("; HSS says: denied for token [redacted]"), "{}", err.message);
        assert!(!err.message.contains("secret-iam-token-1234"), "{}", err.message);
    }
}
