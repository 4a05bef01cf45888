//! Getting one request to HSS (or IAM) and its answer back, safely: signing (`SDK-HMAC-SHA256` over the exact
//! bytes sent, GET or POST) or token headers, the connect and total timeouts, the response body cap, request ids,
//! `Retry-After`, and the scrubbing of every secret out of anything a server echoes back.
//!
//! Nothing here knows an API: the per-API modules build an [`HssRequest`], and [`super::client::HssClient`] picks
//! the credentials and parses the answer.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use url::Url;

use super::client::ClientOptions;
use super::errors::{ErrorContext, classify_error_in};
use super::signer::{self, SignableRequest};
use crate::model::{ErrorKind, PollError};

/// The longest `Retry-After` honoured; a larger value (or a bogus date) would silently stop monitoring.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The HTTP methods HSS's read APIs use: statistics are a GET, the batch queries a POST with a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }

    fn to_reqwest(self) -> reqwest::Method {
        match self {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        }
    }
}

/// One HSS API call before authentication: what the per-API modules build.
#[derive(Clone)]
pub struct HssRequest<'a> {
    pub method: HttpMethod,
    /// The endpoint with the API's path (any query or fragment is replaced by the canonical query).
    pub url: Url,
    /// Query pairs in any order; they are sent in canonical order, as the SDK sends them.
    pub query: Vec<(String, String)>,
    /// Sent (and signed) as `X-Project-Id`, as the SDK's `BasicCredentials` do.
    pub project_id: &'a str,
    /// The exact JSON bytes of a POST (empty for a GET): these bytes are hashed into the signature and sent.
    pub body: Vec<u8>,
    /// The API's name for logs (`task-statistics`, `ListTasks`).
    pub api: &'static str,
    /// The task the call is about (ListTaskResources), so that "not found" can name it.
    pub task_id: Option<&'a str>,
}

impl fmt::Debug for HssRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HssRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("query", &self.query)
            .field("project_id", &self.project_id)
            .field("body_bytes", &self.body.len())
            .field("api", &self.api)
            .field("task_id", &self.task_id)
            .finish()
    }
}

/// How an HSS call authenticates.
#[derive(Clone, Copy)]
pub enum HssAuth<'a> {
    /// AK/SK signing; `security_token` (temporary credentials) is sent and signed as `X-Security-Token`.
    Signed { ak: &'a str, sk: &'a str, security_token: Option<&'a str> },
    /// `X-Auth-Token`: a static token or an IAM token; no signature, no `X-Sdk-Date`.
    Token(&'a str),
}

impl fmt::Debug for HssAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HssAuth::Signed { ak, security_token, .. } => f
                .debug_struct("Signed")
                .field("ak", ak)
                .field("sk", &crate::secret::REDACTED)
                .field("security_token", &security_token.map(|_| crate::secret::REDACTED))
                .finish(),
            HssAuth::Token(_) => f.debug_tuple("Token").field(&crate::secret::REDACTED).finish(),
        }
    }
}

/// A request ready for the wire: the URL with its canonical query, every header (`Authorization` included) and
/// the body bytes the signature covers. Tests and the signing vectors compare it with what Huawei's SDK sends.
#[derive(Clone)]
pub struct PreparedRequest {
    pub method: HttpMethod,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Lower-case names of headers that carry a credential (`authorization`, `x-auth-token`,
    /// `x-security-token`): marked sensitive so that no debug output of the HTTP stack shows them.
    pub sensitive: Vec<&'static str>,
}

impl PreparedRequest {
    /// The value of a header, whatever the case of its name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let hidden = self.sensitive.iter().any(|s| n.eq_ignore_ascii_case(s));
                (n.as_str(), if hidden { crate::secret::REDACTED } else { v.as_str() })
            })
            .collect();
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Builds the wire request exactly as Huawei's SDK does for an HSS call: `Content-Type: application/json` (even
/// on a GET), `User-Agent`, `X-Project-Id`, then either `X-Sdk-Date` + `Host` (+ `X-Security-Token`) and the
/// `Authorization` signature over the canonical request — whose last line is the SHA-256 of `req.body`, the very
/// bytes that are sent — or `X-Auth-Token`. `now` is the injected clock: it becomes `X-Sdk-Date`.
pub fn prepare(
    req: &HssRequest<'_>,
    auth: &HssAuth<'_>,
    user_agent: &str,
    now: DateTime<Utc>,
) -> Result<PreparedRequest, PollError> {
    let mut url = req.url.clone();
    let query = signer::canonical_query(&req.query);
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    url.set_fragment(None);
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        ("User-Agent".into(), user_agent.to_string()),
        ("X-Project-Id".into(), req.project_id.into()),
    ];
    let mut sensitive = Vec::new();
    match auth {
        HssAuth::Signed { ak, sk, security_token } => {
            let host = host_header(&url).ok_or_else(|| not_sent(format!("endpoint {url} has no host")))?;
            headers.push((signer::HEADER_SDK_DATE.into(), now.format(signer::SDK_DATE_FORMAT).to_string()));
            headers.push(("Host".into(), host));
            if let Some(token) = security_token {
                headers.push(("X-Security-Token".into(), token.trim().to_string()));
                sensitive.push("x-security-token");
            }
            let signable = SignableRequest {
                method: req.method.as_str(),
                path: url.path(),
                query: &req.query,
                headers: &headers,
                body: &req.body,
            };
            let signature = signer::sign(&signable, ak, sk).map_err(|e| not_sent(e.to_string()))?;
            headers.push(("Authorization".into(), signature.authorization));
            sensitive.push("authorization");
        }
        HssAuth::Token(token) => {
            headers.push(("X-Auth-Token".into(), token.trim().to_string()));
            sensitive.push("x-auth-token");
        }
    }
    Ok(PreparedRequest { method: req.method, url, headers, body: req.body.clone(), sensitive })
}

/// A response whose body was read (up to the cap).
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub request_id: Option<String>,
    pub body: Vec<u8>,
    /// The body was longer than `max_body_bytes`; `body` holds its first `max_body_bytes` bytes.
    pub truncated: bool,
}

impl RawResponse {
    /// `Retry-After`, read relative to `now`.
    pub fn retry_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    }
}

/// The shared HTTP stack: one connection pool and the fixed limits of [`ClientOptions`].
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    opts: ClientOptions,
}

impl Transport {
    /// Connect and total timeouts, idle connections dropped after a minute (polls are minutes apart), redirects
    /// off (a redirect would carry our token elsewhere), no automatic retries (every call counts against the
    /// 5/min budget).
    pub fn new(opts: ClientOptions) -> Result<Transport, reqwest::Error> {
        let http = crate::tls::client_builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .build()?;
        Ok(Transport { http, opts })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a prepared HSS request and reads the answer (up to the cap), logging method, URL, status, latency
    /// and request id — never a header value.
    pub async fn send(&self, prepared: PreparedRequest, api: &str) -> Result<RawResponse, PollError> {
        let header_map = to_header_map(&prepared.headers, &prepared.sensitive)?;
        let mut request = self.http.request(prepared.method.to_reqwest(), prepared.url.clone()).headers(header_map);
        if prepared.method == HttpMethod::Post {
            request = request.body(prepared.body);
        }
        let started = Instant::now();
        let raw = self.fetch(request, "HSS").await?;
        tracing::debug!(
            method = prepared.method.as_str(),
            url = %prepared.url,
            api,
            status = raw.status,
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_id = raw.request_id.as_deref().unwrap_or(""),
            "HSS call"
        );
        Ok(raw)
    }

    /// Sends `request` and reads its body with the hard cap; transport failures come back classified.
    /// `service` names the far end in messages ("HSS", "IAM").
    pub async fn fetch(&self, request: reqwest::RequestBuilder, service: &str) -> Result<RawResponse, PollError> {
        let mut response = request.send().await.map_err(|e| transport_error(e, service, &self.opts))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let cap = self.opts.max_body_bytes;

        let declared_too_large = response.content_length().is_some_and(|len| len > cap as u64);
        if declared_too_large && (200..300).contains(&status) {
            return Ok(RawResponse { status, headers, request_id, body: Vec::new(), truncated: true });
        }
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            let chunk: Option<Bytes> = response.chunk().await.map_err(|e| {
                let mut err = transport_error(e, service, &self.opts);
                err.http_status = Some(status);
                err.request_id.clone_from(&request_id);
                err
            })?;
            let Some(chunk) = chunk else { break };
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse { status, headers, request_id, body, truncated })
    }
}

/// The error a read answer stands for, if any: a non-2xx status classified from its body (with every secret
/// scrubbed out first; `ctx` names the project and region in the advice), or a 2xx body cut off at the cap. Both
/// carry the status and the request id.
pub(crate) fn answer_error(
    raw: &RawResponse,
    secrets: &[&str],
    now: DateTime<Utc>,
    cap: usize,
    ctx: &ErrorContext<'_>,
) -> Option<PollError> {
    if !(200..300).contains(&raw.status) {
        let body = scrub(&raw.body, secrets);
        let retry_after = raw.retry_after(now);
        return Some(classify_error_in(raw.status, raw.request_id.clone(), retry_after, body.as_bytes(), ctx));
    }
    raw.truncated.then(|| {
        let mut e = body_too_large(cap);
        e.http_status = Some(raw.status);
        e.request_id.clone_from(&raw.request_id);
        e
    })
}

/// The `Host` header reqwest (hyper) sends for `url`: the host, plus `:port` only when the URL has an explicit
/// non-default port (`Url` already drops a default one). It is signed, so it must match byte for byte.
pub fn host_header(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// `Retry-After` as seconds or an HTTP-date (relative to `now`), capped at [`MAX_RETRY_AFTER`]; `None` when it
/// cannot be read. A date in the past means "now".
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

pub(crate) fn body_too_large(cap: usize) -> PollError {
    PollError::new(ErrorKind::BadResponse, format!("response body exceeds {cap} bytes"))
}

/// A request that could not even be built (a header value with control characters, an endpoint without a host):
/// a configuration problem, reported as `hss_error` without an HTTP status.
pub(crate) fn not_sent(why: String) -> PollError {
    PollError::new(ErrorKind::HssError, format!("request not sent: {why}"))
}

fn to_header_map(headers: &[(String, String)], sensitive: &[&str]) -> Result<HeaderMap, PollError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| not_sent(format!("`{name}` is not a valid header name")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| not_sent(format!("the value of `{name}` is not a valid HTTP header value")))?;
        if sensitive.contains(&header.as_str()) {
            value.set_sensitive(true);
        }
        map.insert(header, value);
    }
    Ok(map)
}

/// A transport failure: a timeout (connect or total, including a body that trickles) is `timeout`, anything else
/// (refused, reset, DNS, TLS) is `network`. The message is the error chain without the URL.
pub(crate) fn transport_error(err: reqwest::Error, service: &str, opts: &ClientOptions) -> PollError {
    let timed_out = err.is_timeout();
    let connect = err.is_connect();
    let chain = crate::model::error_chain(&err.without_url());
    if timed_out {
        let limit = if connect { opts.connect_timeout } else { opts.timeout };
        PollError::new(
            ErrorKind::Timeout,
            format!("{service} did not answer within {} ({chain})", humantime::format_duration(limit)),
        )
    } else if connect {
        PollError::new(ErrorKind::Network, format!("could not connect to {service}: {chain}"))
    } else {
        PollError::new(ErrorKind::Network, format!("{service} connection failed: {chain}"))
    }
}

/// Replaces every secret in `body` with `[redacted]`, including a secret cut off at the end of a capped body.
pub(crate) fn scrub(body: &[u8], secrets: &[&str]) -> String {
    redact(&String::from_utf8_lossy(body), secrets)
}

/// The shortest piece of a secret worth redacting; shorter ones would mangle ordinary text.
const MIN_SECRET_LEN: usize = 6;

pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().map(|s| s.trim()).filter(|s| s.len() >= MIN_SECRET_LEN) {
        out = out.replace(secret, crate::secret::REDACTED);
        let cut =
            (MIN_SECRET_LEN..secret.len()).rev().find(|&n| secret.get(..n).is_some_and(|prefix| out.ends_with(prefix)));
        if let Some(n) = cut {
            out.truncate(out.len() - n);
            out.push_str(crate::secret::REDACTED);
        }
    }
    out
}

/// Redacts the message and the error code: JSON escapes (`\u0041…`) hide a secret from the raw-body scrub, and
/// the decoded text can land in either.
pub(crate) fn scrub_error(mut err: PollError, secrets: &[&str]) -> PollError {
    err.message = redact(&err.message, secrets);
    err.error_code = err.error_code.map(|code| redact(&code, secrets));
    err
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single().unwrap_or_default()
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 30 ", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Tue, 02 Jan 2024 03:04:35 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Tue, 02 Jan 2024 03:00:00 GMT", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn a_secret_cut_off_at_the_end_of_a_capped_body_is_still_redacted() {
        let out = redact("token=abcdefghijkl and abcdefgh", &["abcdefghijkl"]);
        assert_eq!(out, "token=[redacted] and [redacted]");
        assert_eq!(redact("short abc", &["abc"]), "short abc");
    }

    #[test]
    fn the_host_header_carries_a_port_only_when_it_is_not_the_default() {
        let host = |u: &str| Url::parse(u).ok().as_ref().and_then(host_header);
        assert_eq!(
            host("https://hss.cn-north-4.myhuaweicloud.com").as_deref(),
            Some("hss.cn-north-4.myhuaweicloud.com")
        );
        assert_eq!(host("https://hss.example.com:443/x").as_deref(), Some("hss.example.com"));
        assert_eq!(host("https://hss.example.com:8443").as_deref(), Some("hss.example.com:8443"));
        assert_eq!(host("http://127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("http://127.0.0.1:443").as_deref(), Some("127.0.0.1:443"));
        assert_eq!(host("http://[::1]:8080").as_deref(), Some("[::1]:8080"));
    }
}

#[cfg(test)]
mod scrub_properties {
    use super::*;
    use crate::hss::errors::classify_error;

    /// `"\u0041…"`: every character of `s` as a JSON unicode escape, which the raw-body scrub cannot see.
    fn json_escaped(s: &str) -> String {
        s.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect()
    }

    #[test]
    fn a_json_escaped_secret_in_the_error_code_is_redacted() {
        // Found by the property below: the raw-body scrub cannot see `\u0041…`, and the code was never scrubbed.
        let secret = "Aaa000secret";
        let body = format!(r#"{{"error_code":"{}","error_msg":"m"}}"#, json_escaped(secret));
        let e = scrub_error(classify_error(400, None, None, scrub(body.as_bytes(), &[secret]).as_bytes()), &[secret]);
        assert_eq!(e.error_code.as_deref(), Some(crate::secret::REDACTED));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn a_secret_echoed_in_an_error_body_in_any_form_reaches_neither_message_nor_code(
            secret in "[A-Za-z0-9]{6,40}",
            padding in "[ .,:-]{0,1100}",
            form in 0usize..5,
            status in proptest::sample::select(vec![400u16, 401, 403, 429, 500, 503]),
        ) {
            let body = match form {
                0 => format!("{padding}{secret}{padding}"),
                // A capped body that ends inside the secret.
                1 => format!("{padding}{}", &secret[..secret.len() - 1]),
                2 => format!(r#"{{"error_code":"X.1","error_msg":"{padding}{secret}"}}"#),
                3 => format!(r#"{{"error_code":"X.1","error_msg":"{}{padding}"}}"#, json_escaped(&secret)),
                _ => format!(r#"{{"error_code":"{}","error_msg":"{padding}m"}}"#, json_escaped(&secret)),
            };
            let secrets = [secret.as_str()];
            let e = scrub_error(classify_error(status, None, None, scrub(body.as_bytes(), &secrets).as_bytes()), &secrets);
            proptest::prop_assert!(!e.message.contains(&secret), "message {:?}", e.message);
            let code = e.error_code.unwrap_or_default();
            proptest::prop_assert!(!code.contains(&secret), "error code {code:?}");
        }
    }
}
