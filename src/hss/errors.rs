//! What a non-2xx answer from HSS, its gateway or IAM means: the error code and message found the way Huawei's SDK
//! finds them, and the class (`auth`, `forbidden`, `throttled`, `server`, `hss_error`) callers branch on.
//!
//! Pure functions of (status, headers already read, body): no I/O, so the table is tested without a server.

use std::time::Duration;

use serde_json::Value;

use crate::model::{ErrorKind, PollError, excerpt};

/// The longest excerpt of a response body kept in an error message.
pub const EXCERPT_BYTES: usize = 300;
/// The longest `error_msg` kept from an error body: the gateway's signature errors carry its canonical request,
/// which is worth keeping whole when debugging a signature mismatch.
pub const ERROR_MSG_BYTES: usize = 1024;
/// The longest `error_code` kept: real ones are short (`APIGW.0301`, `HSS.1001`, IAM's `401`), but a body may put
/// anything there, an object or a megabyte of text, and the code goes into every message and snapshot row.
pub const ERROR_CODE_BYTES: usize = 64;

/// The `<title>` of an HTML page, if the body is one.
fn html_title(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text.get(start..end)?.trim();
    (!title.is_empty()).then(|| title.to_string())
}

/// Where a failed call went, so that the advice for a code can name it. Every part is optional: an IAM login has
/// no project, and a caller that knows nothing more still gets the advice in general words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorContext<'a> {
    pub project_id: Option<&'a str>,
    /// The region id (`cn-north-4`) when the endpoint is a known region's.
    pub region: Option<&'a str>,
    /// The endpoint's host, named when the region is not known (a configured endpoint).
    pub endpoint_host: Option<&'a str>,
    /// The task the call was about (ListTaskResources), named by `HSS.0011`'s advice.
    pub task_id: Option<&'a str>,
}

impl ErrorContext<'_> {
    /// `project 0123…` or `the project`.
    fn project(&self) -> String {
        match self.project_id {
            Some(p) => format!("project {}", excerpt(p, CONTEXT_BYTES)),
            None => "the project".to_string(),
        }
    }

    /// ` in region cn-north-4`, ` at hss.example.com`, or nothing.
    fn place(&self) -> String {
        match (self.region, self.endpoint_host) {
            (Some(r), _) => format!(" in region {}", excerpt(r, CONTEXT_BYTES)),
            (None, Some(h)) => format!(" at {}", excerpt(h, CONTEXT_BYTES)),
            (None, None) => String::new(),
        }
    }
}

/// The longest piece of context (a project id, a region) put into advice.
const CONTEXT_BYTES: usize = 64;

/// A code HSS or its API gateway documents (hss-api.md §3), what it means for scanwatch, and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCode {
    pub code: &'static str,
    /// The class a 4xx answer with this code gets, whatever its status: the credentials' fault (`auth`, the
    /// account's polls back off) or the project's (`forbidden`, only that series backs off). `None`: by status.
    pub kind: Option<ErrorKind>,
    /// What to do, with `{project}` and `{place}` filled from the [`ErrorContext`].
    pub advice: &'static str,
}

/// Every code with its own advice. Unknown codes are classified by HTTP status alone.
pub const KNOWN_CODES: [KnownCode; 10] = [
    KnownCode {
        code: "APIGW.0301",
        kind: Some(ErrorKind::Auth),
        advice: "authentication rejected: the AK/SK signature or the token is not valid; check the credentials \
                 and this host's clock",
    },
    KnownCode {
        code: "APIGW.0101",
        kind: Some(ErrorKind::Auth),
        advice: "unknown access key: the AK does not exist or was deleted; check the account's AK",
    },
    KnownCode {
        code: "APIGW.0307",
        kind: Some(ErrorKind::Auth),
        advice: "the token has expired: replace a static token (password logins renew theirs)",
    },
    KnownCode {
        code: "APIGW.0308",
        kind: None,
        advice: "throttled by the API gateway: HSS allows 5 calls a minute per user and per IP for each API; \
                 scanwatch waits and retries",
    },
    KnownCode {
        code: "APIGW.0306",
        kind: Some(ErrorKind::Forbidden),
        advice: "API access denied for {project}{place}: grant the IAM user HSS ReadOnlyAccess for this project",
    },
    KnownCode {
        code: "HSS.0010",
        kind: Some(ErrorKind::Forbidden),
        advice: "permission denied: IAM denies {project}{place}; grant the IAM user HSS ReadOnlyAccess for this \
                 project",
    },
    KnownCode {
        code: "HSS.0013",
        kind: Some(ErrorKind::Forbidden),
        advice: "insufficient permission: IAM denies {project}{place}; grant the IAM user HSS ReadOnlyAccess for \
                 this project",
    },
    KnownCode {
        code: "HSS.0011",
        kind: None,
        advice: "{project} not found{place}: wrong project_id, or HSS not enabled there",
    },
    KnownCode {
        code: "HSS.0001",
        kind: None,
        advice: "HSS refused a parameter scanwatch sent: a scanwatch bug, please report it with this message",
    },
    KnownCode {
        code: "HSS.0002",
        kind: None,
        advice: "HSS could not parse the request scanwatch sent: a scanwatch bug, please report it with this message",
    },
];

/// The table entry of `code`, if it has one.
pub fn known_code(code: &str) -> Option<&'static KnownCode> {
    KNOWN_CODES.iter().find(|k| k.code == code)
}

/// The advice for a 4xx answer with `code` and HSS's `message`, filled from `ctx`; `None` for an unknown code.
pub fn advice(code: &str, message: &str, ctx: &ErrorContext<'_>) -> Option<String> {
    let known = known_code(code)?;
    let text = match code {
        // APIGW.0301 covers both a bad signature and a bad token; the gateway's message says which.
        "APIGW.0301" if message.to_ascii_lowercase().contains("verify aksk signature fail") => {
            "signature rejected: check the AK/SK pair and this host's clock (X-Sdk-Date must be within 15 minutes \
             of Huawei's)"
                .to_string()
        }
        "HSS.0011" if ctx.task_id.is_some() => format!(
            "task {} not found in {}{}: it may have been deleted, or the project_id is wrong",
            excerpt(ctx.task_id.unwrap_or_default(), CONTEXT_BYTES),
            ctx.project(),
            ctx.place()
        ),
        _ => known.advice.replace("{project}", &ctx.project()).replace("{place}", &ctx.place()),
    };
    Some(text)
}

/// [`classify_error_in`] without context: the advice speaks of "the project".
pub fn classify_error(
    status: u16,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> PollError {
    classify_error_in(status, request_id, retry_after, body, &ErrorContext::default())
}

/// Classifies a non-2xx answer: 401 `auth`, 403 `forbidden`, 429 `throttled`, 5xx `server`, other 4xx
/// `hss_error`, anything else (a redirect) `bad_response`. `error_code` / `error_msg` are found the way the SDK
/// finds them; without them the code is the status and the message an excerpt of the body.
///
/// A 4xx with a code of [`KNOWN_CODES`] gets that code's class and a message that starts with what to do and
/// ends with HSS's own words (`…; HSS says: …`), together still at most [`ERROR_MSG_BYTES`] plus an excerpt's
/// ellipsis.
pub fn classify_error_in(
    status: u16,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
    ctx: &ErrorContext<'_>,
) -> PollError {
    let kind = match status {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Forbidden,
        429 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Server,
        400..=499 => ErrorKind::HssError,
        _ => ErrorKind::BadResponse,
    };
    let text = String::from_utf8_lossy(body);
    let found = OrderedJson::parse(body)
        .as_ref()
        .and_then(find_error_code)
        .map(|(code, msg)| (excerpt(&code, ERROR_CODE_BYTES), msg));
    let client_error = (400..500).contains(&status);
    let (error_code, mut message) = match found {
        Some((code, msg)) => {
            let msg = msg.trim();
            let advice = if client_error { advice(&code, msg, ctx) } else { None };
            let message = match (advice, msg.is_empty()) {
                (Some(advice), true) => advice,
                (Some(advice), false) => {
                    let room = ERROR_MSG_BYTES.saturating_sub(advice.len() + HSS_SAYS.len()).max(EXCERPT_BYTES);
                    format!("{advice}{HSS_SAYS}{}", excerpt(msg, room))
                }
                (None, false) => excerpt(msg, ERROR_MSG_BYTES),
                (None, true) => format!("HTTP {status} with error code but no message"),
            };
            (code, message)
        }
        None if text.trim().is_empty() => (status.to_string(), format!("HTTP {status} with an empty body")),
        None => match html_title(&text) {
            // An HTML error page (a proxy or load balancer): its title says it all, the markup says nothing.
            Some(title) => (status.to_string(), format!("HTML page: {}", excerpt(&title, EXCERPT_BYTES))),
            None => (status.to_string(), excerpt(text.trim(), EXCERPT_BYTES)),
        },
    };
    if (300..400).contains(&status) {
        message = format!("unexpected redirect (redirects are not followed): {message}");
    }
    // A rejection is scoped by what it is about, whatever status carries it: some codes say the credentials are
    // bad (the account's problem), others that the identity may not use this project (the series' problem).
    let kind = match known_code(&error_code).and_then(|k| k.kind) {
        Some(scoped) if client_error => scoped,
        _ => kind,
    };
    PollError {
        kind,
        http_status: Some(status),
        error_code: Some(error_code),
        message,
        request_id,
        retry_after: if kind == ErrorKind::Throttled { retry_after } else { None },
    }
}

/// Between the advice and HSS's own message.
const HSS_SAYS: &str = "; HSS says: ";

/// The SDK's lookup: in an object, the first pair present among `error_code`+`error_msg`, `errorCode`+`errorMsg`,
/// `code`+`message`; otherwise recurse into object members, a later nested match (in document order) overwriting
/// an earlier one.
fn find_error_code(value: &OrderedJson) -> Option<(String, String)> {
    const PAIRS: [(&str, &str); 3] = [("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message")];
    let OrderedJson::Object(members) = value else { return None };
    for (code, msg) in PAIRS {
        if let (Some(c), Some(m)) = (value.get(code), value.get(msg)) {
            return Some((c.text(), m.text()));
        }
    }
    members.iter().map(|(_, v)| v).filter_map(find_error_code).next_back()
}

/// JSON whose objects keep their members in document order. serde_json's `Map` sorts keys (no `preserve_order`),
/// but the SDK's "later nested match wins" is about document order, as in a Python dict.
#[derive(Debug, Clone, PartialEq)]
enum OrderedJson {
    Object(Vec<(String, OrderedJson)>),
    Array(Vec<OrderedJson>),
    Scalar(Value),
}

impl OrderedJson {
    fn parse(body: &[u8]) -> Option<OrderedJson> {
        serde_json::from_slice(body).ok()
    }

    /// A member of an object; with duplicate keys the last one counts, as in Python's `json`.
    fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string as itself, anything else (IAM's numeric `code`) as JSON text.
    fn text(&self) -> String {
        match self {
            OrderedJson::Scalar(Value::String(s)) => s.clone(),
            other => other.to_value().to_string(),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            OrderedJson::Object(members) => {
                Value::Object(members.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
            OrderedJson::Array(items) => Value::Array(items.iter().map(OrderedJson::to_value).collect()),
            OrderedJson::Scalar(v) => v.clone(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedJsonVisitor)
    }
}

struct OrderedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedJsonVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Scalar(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry::<String, OrderedJson>()? {
            members.push(entry);
        }
        Ok(OrderedJson::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_found_the_way_the_sdk_finds_them() {
        let cases: [(&str, &str, &str); 9] = [
            (r#"{"error_code":"A","error_msg":"a","code":"B","message":"b"}"#, "A", "a"),
            (r#"{"code":"B","message":"b","errorCode":"C","errorMsg":"c"}"#, "C", "c"),
            (r#"{"x":{"code":"X1","message":"first"},"y":{"code":"X2","message":"second"}}"#, "X2", "second"),
            (r#"{"z":{"code":"Z1","message":"first"},"a":{"code":"A2","message":"second"}}"#, "A2", "second"),
            (r#"{"outer":{"inner":{"error_code":"DEEP","error_msg":"deep"}},"n":1}"#, "DEEP", "deep"),
            (r#"{"error":{"code":401,"message":"wrong password"}}"#, "401", "wrong password"),
            (r#"{"error_code":"only the code"}"#, "400", r#"{"error_code":"only the code"}"#),
            (r#"["error_code","error_msg"]"#, "400", r#"["error_code","error_msg"]"#),
            ("not json at all", "400", "not json at all"),
        ];
        for (body, code, message) in cases {
            let err = classify_error(400, None, Some(Duration::from_secs(9)), body.as_bytes());
            assert_eq!((err.error_code.as_deref(), err.message.as_str()), (Some(code), message), "{body}");
            assert_eq!(err.retry_after, None, "only a 429 carries retry_after");
        }
        let long = "x".repeat(5000);
        assert!(classify_error(500, None, None, long.as_bytes()).message.len() < EXCERPT_BYTES + 40);
    }

    fn body(code: &str, msg: &str) -> Vec<u8> {
        serde_json::json!({"error_code": code, "error_msg": msg}).to_string().into_bytes()
    }

    const CTX: ErrorContext<'static> = ErrorContext {
        project_id: Some("0123456789abcdef0123456789abcdef"),
        region: Some("cn-north-4"),
        endpoint_host: Some("hss.cn-north-4.myhuaweicloud.com"),
        task_id: None,
    };

    #[test]
    fn every_known_code_gets_its_advice_and_class_and_keeps_status_code_request_id_and_hss_words() {
        use ErrorKind::*;
        let p = "project 0123456789abcdef0123456789abcdef in region cn-north-4";
        let cases: Vec<(u16, &str, &str, ErrorKind, String)> = vec![
            (
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information: verify aksk signature fail, canonicalRequest: GET|/x/",
                Auth,
                "signature rejected: check the AK/SK pair and this host's clock (X-Sdk-Date must be within 15 \
                 minutes of Huawei's)"
                    .into(),
            ),
            (
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information: decrypt token fail",
                Auth,
                "authentication rejected: the AK/SK signature or the token is not valid; check the credentials and \
                 this host's clock"
                    .into(),
            ),
            (
                401,
                "APIGW.0101",
                "The API does not exist or has not been published",
                Auth,
                "unknown access key: the AK does not exist or was deleted; check the account's AK".into(),
            ),
            (
                401,
                "APIGW.0307",
                "The token must be updated",
                Auth,
                "the token has expired: replace a static token (password logins renew theirs)".into(),
            ),
            (
                429,
                "APIGW.0308",
                "The throttling threshold has been reached",
                Throttled,
                "throttled by the API gateway: HSS allows 5 calls a minute per user and per IP for each API; \
                 scanwatch waits and retries"
                    .into(),
            ),
            (
                403,
                "APIGW.0306",
                "API access denied",
                Forbidden,
                format!("API access denied for {p}: grant the IAM user HSS ReadOnlyAccess for this project"),
            ),
            (
                400,
                "HSS.0010",
                "access denied",
                Forbidden,
                format!("permission denied: IAM denies {p}; grant the IAM user HSS ReadOnlyAccess for this project"),
            ),
            (
                400,
                "HSS.0013",
                "insufficient permission",
                Forbidden,
                format!(
                    "insufficient permission: IAM denies {p}; grant the IAM user HSS ReadOnlyAccess for this project"
                ),
            ),
            (
                404,
                "HSS.0011",
                "resource does not exist",
                HssError,
                "project 0123456789abcdef0123456789abcdef not found in region cn-north-4: wrong project_id, or HSS \
                 not enabled there"
                    .into(),
            ),
            (
                400,
                "HSS.0001",
                "invalid parameter",
                HssError,
                "HSS refused a parameter scanwatch sent: a scanwatch bug, please report it with this message".into(),
            ),
            (
                400,
                "HSS.0002",
                "request parse failure",
                HssError,
                "HSS could not parse the request scanwatch sent: a scanwatch bug, please report it with this message"
                    .into(),
            ),
        ];
        for (status, code, msg, kind, advice) in cases {
            let e = classify_error_in(status, Some("rid".into()), Some(Duration::from_secs(3)), &body(code, msg), &CTX);
            assert_eq!(e.message, format!("{advice}; HSS says: {msg}"), "{code}");
            assert_eq!(
                (e.kind, e.http_status, e.error_code.as_deref(), e.request_id.as_deref()),
                (kind, Some(status), Some(code), Some("rid")),
                "{code}"
            );
            assert_eq!(e.retry_after.is_some(), kind == Throttled, "{code}");
        }
        let covered: Vec<&str> = KNOWN_CODES.iter().map(|k| k.code).collect();
        assert_eq!(covered.len(), 10);
    }

    #[test]
    fn the_scope_codes_decide_the_class_whatever_the_4xx_status() {
        for status in [400, 401, 403, 404, 418] {
            for (code, kind) in [
                ("APIGW.0301", ErrorKind::Auth),
                ("APIGW.0101", ErrorKind::Auth),
                ("APIGW.0307", ErrorKind::Auth),
                ("HSS.0010", ErrorKind::Forbidden),
                ("HSS.0013", ErrorKind::Forbidden),
                ("APIGW.0306", ErrorKind::Forbidden),
            ] {
                assert_eq!(classify_error(status, None, None, &body(code, "m")).kind, kind, "{status} {code}");
            }
        }
        // Outside 4xx the status decides, and a 5xx gets no advice.
        let e = classify_error(500, None, None, &body("HSS.0013", "m"));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Server, "m"));
    }

    #[test]
    fn unknown_codes_stay_classified_by_status_with_hss_words_only() {
        for (status, kind) in [(400, ErrorKind::HssError), (401, ErrorKind::Auth), (403, ErrorKind::Forbidden)] {
            let e = classify_error_in(status, None, None, &body("HSS.1001", "feature message"), &CTX);
            assert_eq!((e.kind, e.message.as_str()), (kind, "feature message"), "{status}");
        }
    }

    #[test]
    fn advice_without_context_speaks_of_the_project_and_names_a_task_when_it_has_one() {
        let none = classify_error(404, None, None, &body("HSS.0011", "resource does not exist"));
        assert!(none.message.starts_with("the project not found: wrong project_id"), "{}", none.message);
        let host = ErrorContext { region: None, endpoint_host: Some("hss.example.com"), ..CTX };
        let e = classify_error_in(403, None, None, &body("APIGW.0306", "x"), &host);
        assert!(e.message.contains("project 0123456789abcdef0123456789abcdef at hss.example.com:"), "{}", e.message);
        let task = ErrorContext { task_id: Some("t-9"), ..CTX };
        let e = classify_error_in(400, None, None, &body("HSS.0011", "resource does not exist"), &task);
        assert!(
            e.message.starts_with(
                "task t-9 not found in project 0123456789abcdef0123456789abcdef in region cn-north-4: it may have \
                 been deleted"
            ),
            "{}",
            e.message
        );
        let bare = classify_error(401, None, None, br#"{"error_code":"APIGW.0307","error_msg":" "}"#);
        assert_eq!(bare.message, "the token has expired: replace a static token (password logins renew theirs)");
    }

    #[test]
    fn advice_and_a_long_hss_message_together_stay_within_the_message_limit() {
        let long = format!("verify aksk signature fail, canonicalRequest: {}", "x|".repeat(5000));
        let e = classify_error_in(401, None, None, &body("APIGW.0301", &long), &CTX);
        assert!(e.message.starts_with("signature rejected: "), "{}", e.message);
        assert!(e.message.len() <= ERROR_MSG_BYTES + 40, "{} bytes", e.message.len());
        let huge_ctx = ErrorContext { project_id: Some(&long), region: Some(&long), ..CTX };
        let e = classify_error_in(403, None, None, &body("APIGW.0306", &long), &huge_ctx);
        assert!(e.message.len() <= ERROR_MSG_BYTES + 40, "{} bytes", e.message.len());
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes() {
        let bodies: [&[u8]; 6] = [b"\xff\xfe\x00", b"{", b"{\"total_num\":", b"null", b"\"str\"", &[b'['; 10_000]];
        for body in bodies {
            let _ = classify_error(500, None, None, body);
        }
        let deep = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        assert_eq!(classify_error(500, None, None, deep.as_bytes()).error_code.as_deref(), Some("500"));
    }

    #[test]
    fn an_html_error_page_is_summed_up_by_its_title() {
        let page =
            b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>";
        let e = super::classify_error(503, None, None, page);
        assert_eq!(e.message, "HTML page: 503 Service Temporarily Unavailable");
        assert_eq!(e.error_code.as_deref(), Some("503"));
        let e = super::classify_error(502, None, None, b"<html><body>bad gateway</body></html>");
        assert_eq!(e.message, "<html><body>bad gateway</body></html>", "no title: the excerpt");
    }
}
