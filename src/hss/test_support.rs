//! Test-only fakes of the HSS gateway and IAM: a recording axum server on 127.0.0.1:0, a raw TCP server for
//! misbehaving peers, and the gateway's signature check.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use super::client::{Account, ClientOptions, Credentials, HssClient};
use super::signer::{self, SignableRequest};
use crate::secret::Secret;

/// The signing vectors' identity: an AK, its SK and a project id.
pub const AK: &str = "HPUAEXAMPLEAK0000001";
pub const SK: &str = "exampleSecretKey0000000000000000000000001";
pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// 2024-01-02T03:04:05Z, the signing vectors' `X-Sdk-Date`: the injected "now" of client tests.
pub fn t0() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single().unwrap_or_default()
}

/// An AK/SK account named `prod` with [`AK`], the given SK and an optional security token.
pub fn aksk(sk: &str, token: Option<&str>) -> Account {
    Account::new(
        "prod".into(),
        Credentials::AkSk { ak: AK.into(), sk: Secret::new(sk), security_token: token.map(Secret::new) },
    )
}

/// A client with default limits and the User-Agent `scanwatch-test/1`.
pub fn test_client() -> HssClient {
    HssClient::new(ClientOptions { user_agent: "scanwatch-test/1".into(), ..ClientOptions::default() }).expect("client")
}

/// A client whose whole-call timeout is `timeout`.
pub fn quick_client(timeout: Duration) -> HssClient {
    HssClient::new(ClientOptions { timeout, ..ClientOptions::default() }).expect("client")
}

/// A gateway that checks the AK/SK signature (body hash included) with [`AK`]/[`SK`]: `ok(request)` when it
/// matches, HSS's 401 `APIGW.0301` with the expected canonical request otherwise.
pub fn signed_gateway(r: &Recorded, ok: impl FnOnce(&Recorded) -> Reply) -> Reply {
    match verify_signature(r, AK, SK) {
        Ok(_) => ok(r),
        Err(why) => Reply::json(
            401,
            serde_json::json!({"error_code": "APIGW.0301", "error_msg": format!("Incorrect IAM authentication information: verify aksk signature fail, {why}")}),
        ),
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The raw (still percent-encoded) path.
    pub path: String,
    pub query: Option<String>,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Option<Duration>,
}

impl Reply {
    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply { status, headers: Vec::new(), body: body.into(), delay: None }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::raw(status, body.to_string()).header("Content-Type", "application/json")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Wait this long before answering (a hung server; the test ends long before).
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

pub struct MockServer {
    pub url: Url,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockServer {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The single request the test expects; panics (failing the test) otherwise.
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:?}");
        all[0].clone()
    }
}

/// An HTTP server on 127.0.0.1:0 answering every request with `handler`, recording what it received.
pub async fn spawn(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> MockServer {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let log = requests.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (handler, log) = (handler.clone(), log.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().map(str::to_string),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body,
            };
            let reply = handler(&recorded);
            if let Ok(mut log) = log.lock() {
                log.push(recorded);
            }
            if let Some(d) = reply.delay {
                tokio::time::sleep(d).await;
            }
            let mut response =
                Response::builder().status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::IM_A_TEAPOT));
            for (n, v) in &reply.headers {
                response = response.header(n, v);
            }
            response.body(Body::from(reply.body)).unwrap_or_default()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockServer { url: Url::parse(&format!("http://{addr}")).expect("url"), requests }
}

/// A TCP server on 127.0.0.1:0 that hands every connection to `serve` (after reading the request head), for
/// peers no well-behaved HTTP server would imitate: trickled bodies, resets, endless chunked bodies.
pub async fn spawn_raw<F, Fut>(serve: F) -> Url
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            read_head(&mut socket).await;
            tokio::spawn(serve(socket));
        }
    });
    Url::parse(&format!("http://{addr}")).expect("url")
}

async fn read_head(socket: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

/// The gateway's check: re-sign what was received with the given AK/SK. Returns the signed header names, or why
/// the signature does not match (wrong Host, query order, date, key…).
pub fn verify_signature(r: &Recorded, ak: &str, sk: &str) -> Result<Vec<String>, String> {
    let auth = r.header("authorization").ok_or("no Authorization header")?;
    let parsed = signer::parse_authorization(auth).ok_or("Authorization is not SDK-HMAC-SHA256")?;
    if parsed.access != ak {
        return Err(format!("unknown access key {}", parsed.access));
    }
    let raw_query = r.query.clone().unwrap_or_default();
    let query: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect();
    if signer::canonical_query(&query) != raw_query {
        return Err(format!("query `{raw_query}` is not in canonical form"));
    }
    let mut headers = Vec::new();
    for name in &parsed.signed_headers {
        let value = r.header(name).ok_or_else(|| format!("signed header {name} was not sent"))?;
        headers.push((name.clone(), value.to_string()));
    }
    let signable =
        SignableRequest { method: &r.method, path: &r.path, query: &query, headers: &headers, body: &r.body };
    let expected = signer::sign(&signable, ak, sk).map_err(|e| e.to_string())?;
    if !signer::constant_time_eq(expected.signature.as_bytes(), parsed.signature.as_bytes()) {
        return Err(format!("canonicalRequest: {}", expected.canonical_request.replace('\n', "|")));
    }
    Ok(parsed.signed_headers)
}
