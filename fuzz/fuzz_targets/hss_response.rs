//! The HSS response parser and error classifier on arbitrary bytes.
//!
//! Input: two bytes of HTTP status (big-endian), then the body. Properties: nothing panics; a 200 body either parses
//! to exactly the counts its JSON holds or is `bad_response`; every error carries a bounded message and error code
//! (the body is an excerpt, never the whole thing); `Retry-After` is never longer than the cap.

#![no_main]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use scanwatch::hss::client::{
    ERROR_CODE_BYTES, ERROR_MSG_BYTES, EXCERPT_BYTES, MAX_RETRY_AFTER, classify_error, parse_retry_after,
    parse_task_stats,
};
use scanwatch::model::ErrorKind;
use serde_json::Value;

/// What an excerpt may add to its `max` bytes: `… (N bytes in all)`, plus the fixed words around it.
const SLACK: usize = 200;

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else { return };
    let status = u16::from_be_bytes(*status);

    match parse_task_stats(body) {
        Ok(stats) => {
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
                panic!("parsed stats from a body that is not a JSON object");
            };
            assert_eq!(object.get("total_num").and_then(Value::as_u64), Some(stats.total_num));
            assert_eq!(object.get("running_num").and_then(Value::as_u64), Some(stats.running_num));
            let start = object.get("last_task_start_time").and_then(Value::as_u64);
            assert_eq!(start.and_then(|ms| i64::try_from(ms).ok()), stats.last_task_start_time);
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::BadResponse);
            assert!(e.message.len() <= 2 * EXCERPT_BYTES + SLACK, "{} byte message", e.message.len());
        }
    }

    let retry = Some(Duration::from_secs(7));
    let e = classify_error(status, Some("req-1".into()), retry, body);
    assert_eq!(e.http_status, Some(status));
    assert!(e.message.len() <= ERROR_MSG_BYTES + SLACK, "{} byte message", e.message.len());
    let code = e.error_code.as_deref().unwrap_or_default();
    assert!(code.len() <= ERROR_CODE_BYTES + SLACK, "{} byte error code", code.len());
    assert_eq!(e.retry_after.is_some(), e.kind == ErrorKind::Throttled);
    assert_eq!(e.kind == ErrorKind::Throttled, status == 429);

    if let Ok(text) = std::str::from_utf8(body) {
        let now = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single().unwrap_or_default();
        if let Some(wait) = parse_retry_after(text, now) {
            assert!(wait <= MAX_RETRY_AFTER);
        }
    }
});
