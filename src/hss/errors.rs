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

/// Classifies a non-2xx answer: 401 `auth`, 403 `forbidden`, 429 `throttled`, 5xx `server`, other 4xx
/// `hss_error`, anything else (a redirect) `bad_response`. `error_code` / `error_msg` are found the way the SDK
/// finds them; without them the code is the status and the message an excerpt of the body.
pub fn classify_error(
    status: u16,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
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
    let (error_code, mut message) = match found {
        Some((code, msg)) if !msg.trim().is_empty() => (code, excerpt(msg.trim(), ERROR_MSG_BYTES)),
        Some((code, _)) => (code, format!("HTTP {status} with error code but no message")),
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
    // A rejection is scoped by what it is about, whatever status carries it: these codes say the credentials are
    // bad (the account's problem), those that the identity may not use this project (the series' problem).
    let kind = match error_code.as_str() {
        _ if !(400..500).contains(&status) => kind,
        "APIGW.0301" | "APIGW.0101" | "APIGW.0307" => ErrorKind::Auth,
        "HSS.0010" | "HSS.0013" | "APIGW.0306" => ErrorKind::Forbidden,
        _ => kind,
    };
    if status == 401
        && error_code == "APIGW.0301"
        && message.to_ascii_lowercase().contains("verify aksk signature fail")
    {
        message = format!("signature rejected: {message}");
    }
    PollError {
        kind,
        http_status: Some(status),
        error_code: Some(error_code),
        message,
        request_id,
        retry_after: if kind == ErrorKind::Throttled { retry_after } else { None },
    }
}

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
