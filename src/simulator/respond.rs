//! What a series answers at a given moment: the step's values and the exact bytes of every fault.
//!
//! Pure functions of (step, scenario start, now), so each documented response can be checked without a server.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::scenario::{ErrorBody, ErrorShape, Fault, LastTask, Step};

/// The numbers a step reports at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    pub total_num: u64,
    pub running_num: u64,
    /// Milliseconds since the epoch; `None` leaves the field out.
    pub last_task_start_time: Option<i64>,
}

/// How the HTTP layer should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering (`slow`).
    pub delay: Option<Duration>,
    /// Close the connection instead of answering (`reset`).
    pub reset: bool,
    /// The error code in the body, for the call log.
    pub error_code: Option<String>,
}

pub const JSON: &str = "application/json;charset=UTF-8";
pub const HTML: &str = "text/html";

impl Plan {
    fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Plan {
        Plan {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            delay: None,
            reset: false,
            error_code: None,
        }
    }

    /// A gateway-style JSON error: `{"error_code","error_msg","request_id"}`.
    pub fn gateway_error(status: u16, code: &str, message: &str, request_id: &str) -> Plan {
        let body = serde_json::json!({ "error_code": code, "error_msg": message, "request_id": request_id });
        Plan { error_code: Some(code.to_string()), ..Plan::new(status, JSON, body.to_string()) }
    }
}

/// The step's values at `now`, for a scenario that started at `started`.
pub fn values_at(step: &Step, started: DateTime<Utc>, now: DateTime<Utc>) -> Values {
    let scenario_t = (now - started).to_std().unwrap_or(Duration::ZERO);
    let in_step = scenario_t.saturating_sub(step.at);
    let grown = (in_step.as_secs_f64() / 3600.0 * step.total_per_hour).floor();
    // `as` saturates for floats, and the rate is validated finite and non-negative.
    let total_num = step.total_num.saturating_add(grown as u64);
    let last_task_start_time = match step.last_task {
        LastTask::Absent => None,
        LastTask::Age(age) => Some(now.timestamp_millis().saturating_sub(millis(age))),
        LastTask::At(at) => Some(started.timestamp_millis().saturating_add(millis(at))),
        LastTask::Start(t) => Some(t.timestamp_millis()),
    };
    Values { total_num, running_num: step.running_num, last_task_start_time }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The JSON the real API returns, field for field in its documented order.
pub fn stats_json(v: &Values) -> String {
    stats_with(Some(&v.total_num.to_string()), &v.running_num.to_string(), v.last_task_start_time)
}

/// Builds the body from already-rendered values; `total = None` leaves `total_num` out.
fn stats_with(total: Option<&str>, running: &str, last: Option<i64>) -> String {
    let mut fields = Vec::with_capacity(3);
    if let Some(total) = total {
        fields.push(format!("\"total_num\":{total}"));
    }
    fields.push(format!("\"running_num\":{running}"));
    if let Some(last) = last {
        fields.push(format!("\"last_task_start_time\":{last}"));
    }
    format!("{{{}}}", fields.join(","))
}

/// The answer of a step: its values, or its fault rendered as documented in `scenarios/README.md`.
/// `calls_per_minute` only shapes the message of a `throttled` fault.
pub fn plan(step: &Step, values: &Values, request_id: &str, calls_per_minute: u32) -> Plan {
    match &step.fault {
        None => Plan::new(200, JSON, stats_json(values)),
        Some(fault) => fault_plan(fault, values, request_id, calls_per_minute),
    }
}

/// A 200 with a JSON body (the task APIs' answers).
pub fn ok_json(body: &serde_json::Value) -> Plan {
    Plan::new(200, JSON, body.to_string())
}

/// A fault rendered as documented; `values` only matter to `slow` and the body faults.
pub fn fault_plan(fault: &Fault, values: &Values, request_id: &str, calls_per_minute: u32) -> Plan {
    let ok = || Plan::new(200, JSON, stats_json(values));
    let total = values.total_num.to_string();
    let running = values.running_num.to_string();
    let last = values.last_task_start_time;
    match fault {
        Fault::ServerError { status, body: ErrorBody::Html, .. } => Plan {
            error_code: Some(status.to_string()),
            ..Plan::new(*status, HTML, html_page(*status, reason(*status)))
        },
        Fault::ServerError { status, body: ErrorBody::Json, code, message } => {
            let (default_code, default_message) = match status {
                502 | 503 => ("APIGW.0202", "Backend unavailable"),
                504 => ("APIGW.0203", "Backend timeout"),
                _ => ("APIGW.0103", "The backend does not exist"),
            };
            Plan::gateway_error(
                *status,
                code.as_deref().unwrap_or(default_code),
                message.as_deref().unwrap_or(default_message),
                request_id,
            )
        }
        Fault::Throttled { retry_after } => {
            let mut p = Plan::gateway_error(429, "APIGW.0308", &throttle_message(calls_per_minute), request_id);
            if let Some(secs) = retry_after {
                p.headers.push(("Retry-After", secs.to_string()));
            }
            p
        }
        Fault::Slow { delay } => Plan { delay: Some(*delay), ..ok() },
        Fault::Malformed => Plan::new(200, HTML, html_page(200, "Welcome")),
        Fault::Truncated => {
            let full = stats_json(values);
            let cut = full.len() / 2;
            Plan::new(200, JSON, full[..cut].to_string())
        }
        Fault::Oversized { bytes } => Plan::new(200, JSON, oversized(values, *bytes)),
        Fault::WrongTypes => Plan::new(200, JSON, stats_with(Some(&format!("\"{total}\"")), &running, last)),
        Fault::Negative => Plan::new(200, JSON, stats_with(Some(&total), "-1", last)),
        Fault::Float => Plan::new(200, JSON, stats_with(Some(&format!("{total}.5")), &running, last)),
        Fault::MissingField => Plan::new(200, JSON, stats_with(None, &running, last)),
        Fault::NullField => Plan::new(200, JSON, stats_with(Some("null"), &running, last)),
        Fault::HssError { status, code, message, shape } => {
            let body = match shape {
                ErrorShape::Flat => serde_json::json!({ "error_code": code, "error_msg": message }),
                ErrorShape::Camel => serde_json::json!({ "errorCode": code, "errorMsg": message }),
                ErrorShape::Nested => serde_json::json!({ "error": { "code": code, "message": message } }),
            };
            Plan { error_code: Some(code.clone()), ..Plan::new(*status, JSON, body.to_string()) }
        }
        Fault::Unauthorized => Plan::gateway_error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: verify aksk signature fail",
            request_id,
        ),
        Fault::Forbidden => Plan::gateway_error(403, "APIGW.0306", "API access denied", request_id),
        Fault::NotFound => Plan { error_code: Some("404".into()), ..Plan::new(404, HTML, html_page(404, "Not Found")) },
        // Only a server that is not `Simulator::serve` ever sends this placeholder: an empty 502.
        Fault::Reset => Plan { reset: true, ..Plan::new(502, JSON, Bytes::new()) },
    }
}

/// The gateway's message for a throttled call; HSS names the limit it applied.
pub fn throttle_message(limit: u32) -> String {
    format!("The throttling threshold has been reached: policy user over ratelimit,limit:{limit},time:1 minute")
}

/// The gateway's message for a call over the per-client-IP limit.
pub fn throttle_message_ip(limit: u32) -> String {
    format!("The throttling threshold has been reached: policy ip over ratelimit,limit:{limit},time:1 minute")
}

/// A page like the ones nginx in front of a gateway serves.
fn html_page(status: u16, title: &str) -> String {
    format!(
        "<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n<center><h1>{status} {title}</h1></center>\r\n\
         <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => "Server Error",
    }
}

/// Valid JSON of exactly `bytes` bytes (or the bare values if they are longer): the values plus a padding field,
/// so only a client-side size limit can reject it.
fn oversized(values: &Values, bytes: usize) -> Vec<u8> {
    let head = stats_json(values);
    let prefix = format!("{},\"padding\":\"", &head[..head.len() - 1]);
    let suffix = "\"}";
    let pad = bytes.saturating_sub(prefix.len() + suffix.len());
    let mut out = Vec::with_capacity(prefix.len() + pad + suffix.len());
    out.extend_from_slice(prefix.as_bytes());
    out.resize(prefix.len() + pad, b'x');
    out.extend_from_slice(suffix.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn step(fault: Option<Fault>) -> Step {
        Step {
            at: Duration::ZERO,
            total_num: 17,
            total_per_hour: 0.0,
            running_num: 1,
            last_task: LastTask::Start(DateTime::from_timestamp_millis(1_745_311_451_000).unwrap()),
            fault,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn render(fault: Fault) -> Plan {
        let s = step(Some(fault));
        plan(&s, &values_at(&s, start(), start()), "rid", 5)
    }

    fn body(p: &Plan) -> String {
        String::from_utf8(p.body.to_vec()).unwrap()
    }

    #[test]
    fn a_plain_step_answers_the_documented_example() {
        let s = step(None);
        let p = plan(&s, &values_at(&s, start(), start()), "rid", 5);
        assert_eq!((p.status, p.content_type), (200, JSON));
        assert_eq!(body(&p), r#"{"total_num":17,"running_num":1,"last_task_start_time":1745311451000}"#);
    }

    #[test]
    fn total_grows_with_the_hours_since_the_step_began() {
        let mut s = step(None);
        s.at = Duration::from_secs(3600);
        s.total_per_hour = 2.0;
        let at = |mins: i64| values_at(&s, start(), start() + chrono::Duration::minutes(mins)).total_num;
        assert_eq!(at(60), 17);
        assert_eq!(at(60 + 29), 17);
        assert_eq!(at(60 + 30), 18);
        assert_eq!(at(60 + 150), 22);
    }

    #[test]
    fn last_task_age_moves_with_now_and_last_task_at_stays_put() {
        let now = start() + chrono::Duration::hours(5);
        let mut s = step(None);
        s.last_task = LastTask::Age(Duration::from_secs(3600));
        assert_eq!(values_at(&s, start(), now).last_task_start_time, Some((now.timestamp() - 3600) * 1000));
        s.last_task = LastTask::At(Duration::from_secs(600));
        assert_eq!(values_at(&s, start(), now).last_task_start_time, Some((start().timestamp() + 600) * 1000));
        s.last_task = LastTask::Absent;
        let p = plan(&s, &values_at(&s, start(), now), "rid", 5);
        assert_eq!(body(&p), r#"{"total_num":17,"running_num":1}"#);
    }

    #[test]
    fn server_error_serves_html_or_gateway_json() {
        let html = render(Fault::ServerError { status: 503, body: ErrorBody::Html, code: None, message: None });
        assert_eq!((html.status, html.content_type), (503, HTML));
        assert!(body(&html).contains("503 Service Temporarily Unavailable"));
        let json = render(Fault::ServerError { status: 502, body: ErrorBody::Json, code: None, message: None });
        let v: Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(
            (json.status, v["error_code"].as_str(), v["request_id"].as_str()),
            (502, Some("APIGW.0202"), Some("rid"))
        );
    }

    #[test]
    fn throttled_names_the_limit_and_sends_retry_after_only_when_asked() {
        let p = render(Fault::Throttled { retry_after: Some(7) });
        assert_eq!(p.status, 429);
        assert_eq!(p.headers, vec![("Retry-After", "7".to_string())]);
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["error_code"], "APIGW.0308");
        assert!(v["error_msg"].as_str().unwrap().contains("limit:5,time:1 minute"));
        assert!(render(Fault::Throttled { retry_after: None }).headers.is_empty());
    }

    #[test]
    fn slow_delays_then_answers_the_values() {
        let p = render(Fault::Slow { delay: Duration::from_secs(5) });
        assert_eq!((p.status, p.delay), (200, Some(Duration::from_secs(5))));
        assert!(body(&p).starts_with(r#"{"total_num":17"#));
    }

    #[test]
    fn body_faults_break_exactly_the_documented_thing() {
        assert!(body(&render(Fault::Malformed)).starts_with("<html>"));
        let t = body(&render(Fault::Truncated));
        assert!(serde_json::from_str::<Value>(&t).is_err() && t.starts_with("{\"total_num\":17"), "{t}");
        assert!(body(&render(Fault::WrongTypes)).contains(r#""total_num":"17""#));
        assert!(body(&render(Fault::Negative)).contains(r#""running_num":-1"#));
        assert!(body(&render(Fault::Float)).contains(r#""total_num":17.5"#));
        assert!(!body(&render(Fault::MissingField)).contains("total_num"));
        assert!(body(&render(Fault::NullField)).contains(r#""total_num":null"#));
        for f in [Fault::WrongTypes, Fault::Negative, Fault::Float, Fault::MissingField, Fault::NullField] {
            serde_json::from_slice::<Value>(&render(f).body).unwrap();
        }
    }

    #[test]
    fn oversized_is_valid_json_of_exactly_the_asked_size() {
        let p = render(Fault::Oversized { bytes: 4096 });
        assert_eq!(p.body.len(), 4096);
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["total_num"], 17);
    }

    #[test]
    fn hss_error_comes_in_every_shape_the_sdk_parses() {
        let e = |shape| render(Fault::HssError { status: 400, code: "HSS.0002".into(), message: "bad".into(), shape });
        assert_eq!(body(&e(ErrorShape::Flat)), r#"{"error_code":"HSS.0002","error_msg":"bad"}"#);
        assert_eq!(body(&e(ErrorShape::Camel)), r#"{"errorCode":"HSS.0002","errorMsg":"bad"}"#);
        assert_eq!(body(&e(ErrorShape::Nested)), r#"{"error":{"code":"HSS.0002","message":"bad"}}"#);
        assert_eq!(e(ErrorShape::Flat).error_code.as_deref(), Some("HSS.0002"));
    }

    #[test]
    fn auth_and_routing_faults_use_gateway_codes() {
        assert_eq!(render(Fault::Unauthorized).error_code.as_deref(), Some("APIGW.0301"));
        assert_eq!(render(Fault::Unauthorized).status, 401);
        assert_eq!(render(Fault::Forbidden).error_code.as_deref(), Some("APIGW.0306"));
        assert_eq!(render(Fault::Forbidden).status, 403);
        let nf = render(Fault::NotFound);
        assert_eq!((nf.status, nf.content_type), (404, HTML));
        let reset = render(Fault::Reset);
        assert!(reset.reset);
        assert_eq!(reset.status, 502, "served by a plain axum server, a reset is at least an error");
    }
}
