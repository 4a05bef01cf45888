//! The gateway in front of the simulated API: AK/SK verification (over the exact body bytes received), IAM and static
//! tokens, the AK lockout, and the two rate limits HSS applies per API: per identity and per client IP.
//!
//! A plain state machine over (scenario, request parts, now) with no I/O, so the HTTP layer only holds a lock around
//! it and every rule can be read in one place.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;

use super::Api;
use super::respond::{throttle_message, throttle_message_ip};
use super::scenario::{Scenario, User};
use crate::hss::signer::{self, SignableRequest};

/// HSS locks an AK after more than this many failed signature checks in a row.
pub const MAX_FAILED_SIGNATURES: u32 = 5;
/// How long a locked AK stays locked.
pub const LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// The window of the rate limit.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Who a request authenticated as; the key of the rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    AccessKey(String),
    User {
        domain: String,
        name: String,
    },
    /// The index of a static token in the scenario (the value itself is never shown).
    StaticToken(usize),
}

impl Identity {
    /// How the call log shows the identity: the AK, `domain/user`, or `token`.
    pub fn label(&self) -> String {
        match self {
            Identity::AccessKey(ak) => ak.clone(),
            Identity::User { domain, name } => format!("{domain}/{name}"),
            Identity::StaticToken(_) => "token".to_string(),
        }
    }
}

/// A refused request: what to answer, and who it claimed to be (for the call log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub identity: Option<String>,
}

impl Rejection {
    fn auth(identity: Option<&str>, detail: impl AsRef<str>) -> Rejection {
        Rejection {
            status: 401,
            code: "APIGW.0301",
            message: format!("Incorrect IAM authentication information: {}", detail.as_ref()),
            identity: identity.map(str::to_string),
        }
    }
}

/// The parts of an HTTP request the gateway looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as received, escapes included.
    pub path: &'a str,
    /// The query exactly as received, without `?`.
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

#[derive(Debug, Default)]
struct AkState {
    consecutive_failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct IssuedToken {
    identity: Identity,
    expires_at: DateTime<Utc>,
}

/// The two limits a call must fit, per API: accepted calls in any sliding [`RATE_WINDOW`]; 0 = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_identity: u32,
    pub per_ip: u32,
}

/// The gateway's memory: failure counts, issued tokens and recent accepted calls.
#[derive(Debug, Default)]
pub struct Gate {
    access_keys: HashMap<String, AkState>,
    tokens: HashMap<String, IssuedToken>,
    /// Accepted calls per (identity, API).
    windows: HashMap<(Identity, Api), VecDeque<DateTime<Utc>>>,
    /// Accepted calls per (client address, API); `None` when the server could not tell the address.
    ip_windows: HashMap<(Option<IpAddr>, Api), VecDeque<DateTime<Utc>>>,
}

impl Gate {
    /// Authenticates an HSS request by AK/SK signature or `X-Auth-Token`, exactly one of them.
    pub fn authenticate(
        &mut self,
        scenario: &Scenario,
        req: &RequestParts<'_>,
        now: DateTime<Utc>,
    ) -> Result<Identity, Rejection> {
        let authorization = header(req.headers, "authorization");
        let token = header(req.headers, "x-auth-token");
        match (authorization, token) {
            (Some(_), Some(_)) => {
                Err(Rejection::auth(None, "send either X-Auth-Token or an AK/SK Authorization header, not both"))
            }
            (None, None) => Err(Rejection::auth(None, "x-auth-token not found")),
            (None, Some(token)) => self.check_token(scenario, token, now),
            (Some(authorization), None) => self.check_signature(scenario, authorization, req, now),
        }
    }

    /// Counts an accepted call of `api` against the identity's window and the client address's window, or refuses
    /// it with a 429 naming the limit it hit (the identity's first). A refused call takes a slot in neither window.
    pub fn admit(
        &mut self,
        identity: &Identity,
        peer: Option<IpAddr>,
        api: Api,
        limits: Limits,
        now: DateTime<Utc>,
    ) -> Result<(), Rejection> {
        let horizon = now - chrono::Duration::from_std(RATE_WINDOW).unwrap_or(chrono::Duration::MAX);
        let by_identity = self.windows.entry((identity.clone(), api)).or_default();
        if is_full(by_identity, limits.per_identity, horizon) {
            return Err(throttled(throttle_message(limits.per_identity), identity));
        }
        let by_ip = self.ip_windows.entry((peer, api)).or_default();
        if is_full(by_ip, limits.per_ip, horizon) {
            return Err(throttled(throttle_message_ip(limits.per_ip), identity));
        }
        if limits.per_identity > 0 {
            by_identity.push_back(now);
        }
        if limits.per_ip > 0 {
            by_ip.push_back(now);
        }
        Ok(())
    }

    /// Issues an IAM token for a user who logged in; returns the token and its expiry.
    pub fn issue_token(&mut self, user: &User, now: DateTime<Utc>, ttl: Duration) -> (String, DateTime<Utc>) {
        self.tokens.retain(|_, t| t.expires_at > now);
        let token: String = rand::rng().sample_iter(&Alphanumeric).take(96).map(char::from).collect();
        let token = format!("MII{token}");
        let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let identity = Identity::User { domain: user.domain.clone(), name: user.name.clone() };
        self.tokens.insert(token.clone(), IssuedToken { identity, expires_at });
        (token, expires_at)
    }

    fn check_token(&mut self, scenario: &Scenario, token: &str, now: DateTime<Utc>) -> Result<Identity, Rejection> {
        if let Some(issued) = self.tokens.get(token) {
            if issued.expires_at <= now {
                return Err(Rejection {
                    status: 401,
                    code: "APIGW.0307",
                    message: "The token must be updated".to_string(),
                    identity: Some(issued.identity.label()),
                });
            }
            return Ok(issued.identity.clone());
        }
        scenario
            .tokens
            .iter()
            .position(|t| signer::constant_time_eq(t.expose().as_bytes(), token.as_bytes()))
            .map(Identity::StaticToken)
            .ok_or_else(|| Rejection::auth(None, "decrypt token fail"))
    }

    fn check_signature(
        &mut self,
        scenario: &Scenario,
        authorization: &str,
        req: &RequestParts<'_>,
        now: DateTime<Utc>,
    ) -> Result<Identity, Rejection> {
        let Some(parsed) = signer::parse_authorization(authorization) else {
            return Err(Rejection::auth(
                None,
                "the Authorization header is not `SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..`",
            ));
        };
        let ak = parsed.access.as_str();
        let Some(credential) = scenario.credential(ak) else {
            return Err(Rejection::auth(Some(ak), "verify aksk signature fail, the access key does not exist"));
        };
        if let Some(until) = self.access_keys.get(ak).and_then(|s| s.locked_until).filter(|until| *until > now) {
            return Err(locked(ak, until));
        }
        for required in ["host", "x-sdk-date"] {
            if !parsed.signed_headers.iter().any(|h| h == required) {
                return Err(Rejection::auth(Some(ak), format!("SignedHeaders must include {required}")));
            }
        }
        check_date(req.headers, now, scenario.max_clock_skew).map_err(|detail| Rejection::auth(Some(ak), detail))?;

        if let Some(expected) = &credential.security_token {
            let signed = parsed.signed_headers.iter().any(|h| h == "x-security-token");
            let given = header(req.headers, "x-security-token").unwrap_or("");
            if !signed || !signer::constant_time_eq(expected.expose().as_bytes(), given.as_bytes()) {
                return Err(self.failed(ak, now, "verify aksk signature fail, a signed X-Security-Token is required"));
            }
        }

        let mut headers = Vec::with_capacity(parsed.signed_headers.len());
        for name in &parsed.signed_headers {
            match header(req.headers, name) {
                Some(value) => headers.push((name.clone(), value.to_string())),
                None => {
                    let detail = format!("verify aksk signature fail, signed header {name} is not in the request");
                    return Err(self.failed(ak, now, &detail));
                }
            }
        }
        if let Some(detail) = payload_hash_problem(&headers, req.body) {
            return Err(self.failed(ak, now, &detail));
        }
        let query = parse_query(req.raw_query);
        let signable =
            SignableRequest { method: req.method, path: req.path, query: &query, headers: &headers, body: req.body };
        let ours = match signer::sign(&signable, ak, credential.sk.expose()) {
            Ok(s) => s,
            Err(e) => return Err(Rejection::auth(Some(ak), e.to_string())),
        };
        if !signer::constant_time_eq(ours.signature.as_bytes(), parsed.signature.as_bytes()) {
            let shown = redact_security_token(&ours.canonical_request).replace('\n', "|");
            let detail = format!("verify aksk signature fail, canonicalRequest: {shown}");
            return Err(self.failed(ak, now, &detail));
        }
        self.access_keys.remove(ak);
        Ok(Identity::AccessKey(ak.to_string()))
    }

    /// Records a failed signature check; the one that goes over the limit locks the AK and says so.
    fn failed(&mut self, ak: &str, now: DateTime<Utc>, detail: &str) -> Rejection {
        let state = self.access_keys.entry(ak.to_string()).or_default();
        state.consecutive_failures += 1;
        if state.consecutive_failures > MAX_FAILED_SIGNATURES {
            let until = now + chrono::Duration::from_std(LOCKOUT).unwrap_or(chrono::Duration::minutes(5));
            state.consecutive_failures = 0;
            state.locked_until = Some(until);
            return locked(ak, until);
        }
        Rejection::auth(Some(ak), detail)
    }
}

/// Drops the calls that left the window; whether `limit` calls remain in it (never, for an unlimited 0).
fn is_full(window: &mut VecDeque<DateTime<Utc>>, limit: u32, horizon: DateTime<Utc>) -> bool {
    while window.front().is_some_and(|t| *t <= horizon) {
        window.pop_front();
    }
    limit > 0 && window.len() >= limit as usize
}

fn throttled(message: String, identity: &Identity) -> Rejection {
    Rejection { status: 429, code: "APIGW.0308", message, identity: Some(identity.label()) }
}

fn locked(ak: &str, until: DateTime<Utc>) -> Rejection {
    Rejection::auth(
        Some(ak),
        format!(
            "the access key is locked after more than {MAX_FAILED_SIGNATURES} failed authentications in a row, \
             until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
}

/// A signed `X-Sdk-Content-Sha256` replaces the body's hash in the canonical request, so it is only taken when it
/// is the body's real hash, or `UNSIGNED-PAYLOAD` on a body that is not JSON (the only case the SDK sends it).
/// Otherwise a client could sign one body and send another. Unsigned, the header plays no part: the body is hashed.
fn payload_hash_problem(signed: &[(String, String)], body: &[u8]) -> Option<String> {
    let value = |name: &str| signed.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    let claimed = value("x-sdk-content-sha256")?;
    if body.is_empty() {
        return None;
    }
    let content_type = value("content-type").unwrap_or("").to_ascii_lowercase();
    let json = content_type.starts_with("application/json") || content_type.starts_with("application/bson");
    if claimed == "UNSIGNED-PAYLOAD" && !json {
        return None;
    }
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
    if claimed.eq_ignore_ascii_case(&actual) {
        return None;
    }
    Some(format!(
        "verify aksk signature fail, X-Sdk-Content-Sha256 `{claimed}` is not the SHA-256 of the body received \
         ({actual})"
    ))
}

/// The X-Sdk-Date check: present, well-formed and within `max_skew` of now.
fn check_date(headers: &HeaderMap, now: DateTime<Utc>, max_skew: Duration) -> Result<(), String> {
    let Some(raw) = header(headers, "x-sdk-date") else {
        return Err("the request date is out of range: X-Sdk-Date is missing".to_string());
    };
    let Ok(date) = NaiveDateTime::parse_from_str(raw, signer::SDK_DATE_FORMAT) else {
        return Err(format!("the request date is out of range: X-Sdk-Date `{raw}` is not YYYYMMDDTHHMMSSZ"));
    };
    let skew = (date.and_utc() - now).abs().to_std().unwrap_or(Duration::MAX);
    if skew > max_skew {
        return Err(format!(
            "the request date is out of range: X-Sdk-Date {raw} is {} away from server time {}, at most {} allowed",
            humantime::format_duration(Duration::from_secs(skew.as_secs())),
            now.format(signer::SDK_DATE_FORMAT),
            humantime::format_duration(max_skew)
        ));
    }
    Ok(())
}

/// The query pairs as the client signed them: split on `&` and `=`, each part percent-decoded.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The first value of a header, if it is valid text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Our canonical request goes back to the client in the 401 message, as the real gateway does; the security token
/// in it is a credential, so it is masked before anyone stores that message.
fn redact_security_token(canonical: &str) -> String {
    canonical
        .split('\n')
        .map(|line| match line.strip_prefix("x-security-token:") {
            Some(_) => format!("x-security-token:{}", crate::secret::REDACTED),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_split_and_decoded_pair_by_pair() {
        let q = parse_query("task_type=iac_scan&enterprise_project_id=all%5Fgranted_eps&flag&empty=");
        assert_eq!(
            q,
            vec![
                ("task_type".into(), "iac_scan".into()),
                ("enterprise_project_id".into(), "all_granted_eps".into()),
                ("flag".into(), "".into()),
                ("empty".into(), "".into()),
            ]
        );
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn the_security_token_is_masked_in_the_echoed_canonical_request() {
        let shown = redact_security_token("GET\n/\n\nhost:h\nx-security-token:SECRET\n\nhost;x-security-token\nabc");
        assert!(!shown.contains("SECRET"));
        assert!(shown.contains("x-security-token:[redacted]"));
    }

    fn lim(per_identity: u32, per_ip: u32) -> Limits {
        Limits { per_identity, per_ip }
    }

    #[test]
    fn the_rate_window_slides_and_refusals_do_not_count() {
        let mut gate = Gate::default();
        let id = Identity::AccessKey("AK".into());
        let api = Api::TaskStatistics;
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        for s in 0..3 {
            gate.admit(&id, None, api, lim(3, 0), at(s * 10)).unwrap();
        }
        assert_eq!(gate.admit(&id, None, api, lim(3, 0), at(30)).unwrap_err().status, 429);
        assert_eq!(gate.admit(&id, None, api, lim(3, 0), at(59)).unwrap_err().status, 429);
        // The first call (t=0) leaves the window at t=60; the refusals at 30 and 59 took no slot.
        gate.admit(&id, None, api, lim(3, 0), at(60)).unwrap();
        assert!(gate.admit(&id, None, api, lim(3, 0), at(61)).is_err());
        let other = Identity::StaticToken(0);
        assert!(gate.admit(&other, None, api, lim(3, 0), at(61)).is_ok(), "identities have separate windows");
        assert!(gate.admit(&id, None, Api::ListTasks, lim(3, 0), at(61)).is_ok(), "so do APIs");
        for _ in 0..100 {
            gate.admit(&id, None, api, lim(0, 0), at(62)).unwrap();
        }
    }

    #[test]
    fn the_address_limit_is_shared_by_identities_and_counted_per_api() {
        let mut gate = Gate::default();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let other_ip: Option<IpAddr> = Some([10, 0, 0, 2].into());
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ids: Vec<Identity> = (0..3).map(|i| Identity::AccessKey(format!("AK{i}"))).collect();
        for id in &ids[..2] {
            gate.admit(id, ip, Api::ListTasks, lim(5, 2), t0).unwrap();
        }
        let refused = gate.admit(&ids[2], ip, Api::ListTasks, lim(5, 2), t0).unwrap_err();
        assert_eq!((refused.status, refused.code), (429, "APIGW.0308"));
        assert!(refused.message.contains("policy ip over ratelimit,limit:2"), "{}", refused.message);
        assert_eq!(refused.identity.as_deref(), Some("AK2"));
        gate.admit(&ids[2], other_ip, Api::ListTasks, lim(5, 2), t0).unwrap();
        gate.admit(&ids[2], ip, Api::ListTaskResources, lim(5, 2), t0).unwrap();
        gate.admit(&ids[2], ip, Api::TaskStatistics, lim(5, 2), t0).unwrap();
        // The identity limit is checked first and named as the user's.
        let user = gate.admit(&ids[0], other_ip, Api::ListTasks, lim(1, 0), t0).unwrap_err();
        assert!(user.message.contains("policy user over ratelimit,limit:1"), "{}", user.message);
    }

    #[test]
    fn a_signed_content_hash_must_be_the_body_s() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let body = br#"{"task_type":"cluster_scan"}"#;
        let real = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
        assert_eq!(payload_hash_problem(&h(&[("content-type", "application/json")]), body), None);
        let claims =
            |v: &str, ct: &str| payload_hash_problem(&h(&[("content-type", ct), ("x-sdk-content-sha256", v)]), body);
        assert_eq!(claims(&real, "application/json"), None);
        assert!(claims("UNSIGNED-PAYLOAD", "application/json").is_some(), "the SDK never skips a JSON body");
        assert_eq!(claims("UNSIGNED-PAYLOAD", "application/octet-stream"), None);
        assert!(claims(crate::hss::signer::EMPTY_SHA256, "application/json").unwrap().contains("not the SHA-256"));
    }

    #[test]
    fn dates_outside_the_skew_or_unparseable_are_refused() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-sdk-date", v.parse().unwrap());
            h
        };
        let skew = Duration::from_secs(900);
        assert!(check_date(&with("20260102T031905Z"), now, skew).is_ok());
        assert!(check_date(&with("20260102T031906Z"), now, skew).unwrap_err().contains("out of range"));
        assert!(check_date(&with("20260102T024904Z"), now, skew).is_err());
        assert!(check_date(&with("2026-01-02T03:04:05Z"), now, skew).unwrap_err().contains("YYYYMMDD"));
        assert!(check_date(&HeaderMap::new(), now, skew).unwrap_err().contains("missing"));
    }
}
