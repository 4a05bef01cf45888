//! Property tests for the parsers that take input from outside: the HSS response parser and error classifier, the
//! config loader, and the signer's canonicalisation. The same properties run for much longer as the cargo-fuzz
//! targets in `fuzz/` (see FUZZING.md); here the case counts are modest so the suite stays fast.

use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use scanwatch::config::{Config, Environment};
use scanwatch::hss::client::{
    ERROR_CODE_BYTES, ERROR_MSG_BYTES, EXCERPT_BYTES, MAX_RETRY_AFTER, classify_error, parse_retry_after,
    parse_task_stats,
};
use scanwatch::hss::signer::{
    HEADER_SDK_DATE, SignableRequest, canonical_query, canonical_uri, encode, parse_authorization, sign,
};
use scanwatch::hss::task_resources::parse_task_resources;
use scanwatch::hss::tasks::parse_tasks;
use scanwatch::model::{ErrorKind, TaskType};
use serde_json::{Value, json};

mod encoding;
use encoding::is_encoded;

/// What an excerpt may add to its `max` bytes (`… (N bytes in all)`) plus the fixed words around it.
const SLACK: usize = 200;

// ---------------------------------------------------------------------------------------------------------------
// HSS responses

/// JSON values of every type, small and occasionally long, to put where counts and error codes are expected.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        (1usize..4000).prop_map(|n| Value::from("x".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies shaped like HSS answers (stats, error objects, nested errors) and plain bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("total_num"),
        Just("running_num"),
        Just("last_task_start_time"),
        Just("error_code"),
        Just("error_msg"),
        Just("errorCode"),
        Just("errorMsg"),
        Just("code"),
        Just("message"),
        Just("error"),
    ];
    let object = prop::collection::vec((key, json_value()), 0..6)
        .prop_map(|members| Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![
        3 => object.prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..600),
        1 => "<html><head><title>.{0,400}</title></head>.{0,200}".prop_map(String::into_bytes),
    ]
}

fn counts_as_parsed(body: &[u8]) -> Option<(u64, u64, Option<i64>)> {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else { return None };
    let total = o.get("total_num")?.as_u64()?;
    let running = o.get("running_num")?.as_u64()?;
    let start = match o.get("last_task_start_time") {
        None | Some(Value::Null) => None,
        Some(v) => Some(i64::try_from(v.as_u64()?).ok()?),
    };
    Some((total, running, start))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_200_body_parses_to_exactly_its_counts_or_is_a_bounded_bad_response(body in body()) {
        match parse_task_stats(&body) {
            Ok(s) => prop_assert_eq!(Some((s.total_num, s.running_num, s.last_task_start_time)), counts_as_parsed(&body)),
            Err(e) => {
                prop_assert_eq!(counts_as_parsed(&body), None);
                prop_assert_eq!(e.kind, ErrorKind::BadResponse);
                prop_assert!(e.message.len() <= 2 * EXCERPT_BYTES + SLACK, "{} bytes: {}", e.message.len(), e.message);
            }
        }
    }

    #[test]
    fn an_error_answer_is_classified_with_a_bounded_message_and_code(status in 0u16..1000, body in body()) {
        let e = classify_error(status, None, Some(Duration::from_secs(9)), &body);
        prop_assert_eq!(e.http_status, Some(status));
        prop_assert!(e.message.len() <= ERROR_MSG_BYTES + SLACK, "{} bytes: {}", e.message.len(), e.message);
        let code = e.error_code.unwrap_or_default();
        prop_assert!(code.len() <= ERROR_CODE_BYTES + SLACK, "{} byte code", code.len());
        prop_assert_eq!(e.kind == ErrorKind::Throttled, status == 429);
        prop_assert_eq!(e.retry_after.is_some(), status == 429);
    }

    #[test]
    fn retry_after_never_exceeds_the_cap(value in prop_oneof![".{0,40}", any::<u64>().prop_map(|n| n.to_string())]) {
        let now = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        if let Some(wait) = parse_retry_after(&value, now) {
            prop_assert!(wait <= MAX_RETRY_AFTER);
        }
    }
}

#[test]
fn a_long_count_of_the_wrong_type_is_shown_as_an_excerpt() {
    // Found by the hss_response fuzz target: the offending value was printed whole.
    let body = json!({"total_num": "9".repeat(100_000), "running_num": 0}).to_string();
    let e = parse_task_stats(body.as_bytes()).unwrap_err();
    assert!(e.message.starts_with("`total_num` must be an integer >= 0, got \"999"), "{}", e.message);
    assert!(e.message.len() <= 2 * EXCERPT_BYTES + SLACK, "{} bytes", e.message.len());
}

#[test]
fn a_long_error_code_is_cut_to_an_excerpt() {
    // Found by the hss_response fuzz target: a code that is not a short string (here an object) was kept whole.
    let body = json!({"error_code": {"nested": "c".repeat(100_000)}, "error_msg": "m"}).to_string();
    let e = classify_error(400, None, None, body.as_bytes());
    let code = e.error_code.unwrap();
    assert!(code.starts_with("{\"nested\":\"ccc"), "{code}");
    assert!(code.len() <= ERROR_CODE_BYTES + SLACK, "{} bytes", code.len());
    assert_eq!(e.message, "m");
    let short = classify_error(401, None, None, br#"{"error_code":"APIGW.0301","error_msg":"x"}"#);
    assert_eq!(short.error_code.as_deref(), Some("APIGW.0301"));
}

// ---------------------------------------------------------------------------------------------------------------
// ListTasks and ListTaskResources answers

/// A value for a member of a task or resource row: mostly well-typed (ids, names with control characters and
/// CJK, long text, counts), sometimes any JSON value at all.
fn row_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z0-9-]{1,12}".prop_map(Value::from),
        1 => "[\\PC\n\t\u{1b}扫描]{0,40}".prop_map(Value::from),
        1 => (200usize..3000).prop_map(|n| Value::from("名".repeat(n))),
        2 => any::<u32>().prop_map(Value::from),
        2 => json_value(),
    ]
}

/// Rows shaped like `data_list`, `cluster_scan_data_list` or `iac_scan_data_list` items: the real member names
/// with values of any type, nested count and detail objects included.
fn row() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "task_id",
        "task_type",
        "task_name",
        "trigger_type",
        "task_status",
        "start_time",
        "end_time",
        "estimated_time",
        "cluster_name",
        "cluster_id",
        "cluster_type",
        "scan_status",
        "file_name",
        "file_id",
        "file_type",
        "failed_reason",
    ]);
    let counts = prop::collection::vec(
        (
            prop::sample::select(vec![
                "scanning_cluster_num",
                "success_cluster_num",
                "failed_cluster_num",
                "scan_file_num",
                "success_file_num",
                "failed_file_num",
            ]),
            prop_oneof![3 => any::<u32>().prop_map(Value::from), 1 => json_value()],
        ),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let detail = prop::collection::vec(
        (
            prop::sample::select(vec!["status", "failed_reason", "scan_type"]),
            prop_oneof![Just(Value::from("failed")), row_value()],
        ),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    (
        prop::collection::vec((key, row_value()), 0..10),
        prop::option::of(counts),
        prop::option::of(prop::collection::vec(detail, 0..4)),
    )
        .prop_map(|(members, counts, details)| {
            let mut row: serde_json::Map<String, Value> =
                members.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Some(c) = counts {
                row.insert("cluster_scan_info".into(), c.clone());
                row.insert("iac_scan_info".into(), c);
            }
            if let Some(d) = details {
                row.insert("scan_detail_list".into(), Value::from(d));
            }
            Value::Object(row)
        })
}

/// Whole answers: a list under each of the three list names, a `total_num` of any type, or plain bytes, or the
/// front part of a well-formed answer (a truncated body).
fn list_body() -> impl Strategy<Value = Vec<u8>> {
    let answer = (
        prop::option::of(prop_oneof![3 => (0u64..5).prop_map(Value::from), 1 => json_value()]),
        prop::collection::vec(row(), 0..4),
    )
        .prop_map(|(total, rows)| {
            let mut o = serde_json::Map::new();
            if let Some(t) = total {
                o.insert("total_num".into(), t);
            }
            for list in ["data_list", "cluster_scan_data_list", "iac_scan_data_list"] {
                o.insert(list.into(), Value::from(rows.clone()));
            }
            Value::Object(o).to_string().into_bytes()
        })
        .boxed();
    prop_oneof![
        6 => answer.clone(),
        1 => (answer, any::<prop::sample::Index>()).prop_map(|(b, i)| b[..i.index(b.len().max(1)).min(b.len())].to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn is_clean(s: &str, max_chars: usize) -> bool {
    s.chars().count() <= max_chars + 1 && !s.chars().any(char::is_control)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_list_tasks_answer_parses_to_bounded_tasks_or_is_a_bounded_bad_response(
        body in list_body(),
        task_type in prop::sample::select(TaskType::ALL.to_vec()),
    ) {
        match parse_tasks(&body, task_type) {
            Ok((_, tasks)) => {
                let listed = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["data_list"].as_array().map(Vec::len));
                prop_assert_eq!(Some(tasks.len()).filter(|n| *n > 0), listed.filter(|n| *n > 0));
                for t in &tasks {
                    prop_assert!(!t.task_id.is_empty() && t.task_id.chars().count() <= 256);
                    prop_assert!(is_clean(&t.task_name, 256), "{:?}", t.task_name);
                    prop_assert!(is_clean(&t.task_status, 64) && is_clean(&t.trigger_type, 64));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind, ErrorKind::BadResponse);
                prop_assert!(e.message.len() <= 2 * EXCERPT_BYTES + SLACK, "{} bytes: {}", e.message.len(), e.message);
            }
        }
    }

    #[test]
    fn a_task_resources_answer_parses_to_bounded_rows_or_is_a_bounded_bad_response(
        body in list_body(),
        task_type in prop::sample::select(TaskType::ALL.to_vec()),
    ) {
        match parse_task_resources(&body, task_type) {
            Ok((_, rows)) => {
                for r in &rows {
                    prop_assert!(is_clean(&r.resource.name, 256), "{:?}", r.resource.name);
                    prop_assert!(is_clean(&r.resource.failed_reason, 512), "{:?}", r.resource.failed_reason);
                    prop_assert!(r.resource.kind.as_deref().is_none_or(|k| is_clean(k, 64)));
                    prop_assert!(r.resource.id.as_deref().is_none_or(|id| !id.is_empty() && id.chars().count() <= 256));
                    prop_assert!(is_clean(&r.scan_status, 64));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind, ErrorKind::BadResponse);
                prop_assert!(e.message.len() <= 2 * EXCERPT_BYTES + SLACK, "{} bytes: {}", e.message.len(), e.message);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Config

const AK: &str = "AKPROP0000000000";
const SK: &str = "SKPROPsecret00000000";
const PASSWORD: &str = "PWPROPsecret11111111";

fn env() -> Environment {
    env_with(&[])
}

/// The secrets, plus `SCANWATCH__{name}` overrides.
fn env_with(overrides: &[(String, String)]) -> Environment {
    let mut vars = vec![
        ("HUAWEICLOUD_SDK_AK".to_string(), AK.to_string()),
        ("HUAWEICLOUD_SDK_SK".to_string(), SK.to_string()),
        ("PROP_PASSWORD".to_string(), PASSWORD.to_string()),
    ];
    vars.extend(overrides.iter().map(|(k, v)| (format!("SCANWATCH__{k}"), v.clone())));
    Environment::from_pairs(vars)
}

/// Override names: real keys, misspelled ones, and ones with empty segments (`SCANWATCH__`, `SCANWATCH____X`).
fn overrides() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("STORAGE__RETENTION".to_string()),
        Just("SCHEDULE__INTERVAL".to_string()),
        Just("SERVER__LISTEN".to_string()),
        Just("STORAGE".to_string()),
        "[A-Z_]{0,16}",
    ];
    prop::collection::vec((name, prop_oneof![Just("30d".to_string()), "[ -~]{0,10}"]), 0..3)
}

/// A TOML value, well- or ill-typed for whatever key it lands on.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        prop_oneof![
            Just("5m"),
            Just("0s"),
            Just("-1h"),
            Just("cn-north-4"),
            Just("mars-1"),
            Just("aksk"),
            Just("password"),
            Just("token"),
            Just("PROP_PASSWORD"),
            Just("prod"),
            Just("0.0.0.0:9464"),
            Just("127.0.0.1:0"),
            Just("*/5 * * * *"),
            Just("61 * * * *"),
            Just("Asia/Shanghai"),
            Just("Mars/Olympus"),
            Just("critical"),
            Just("https://hooks.example.com/x"),
            Just("http://10.0.0.1/x"),
            Just("iac_scan"),
            Just(""),
        ]
        .prop_map(|s| format!("{s:?}")),
        "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
        Just("[\"cluster_scan\", \"bogus\"]".to_string()),
        Just("{ env = \"prod\" }".to_string()),
        Just("[]".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("3.5".to_string()),
    ]
}

/// Lines of a config file: table headers, known keys with any value, and the occasional line of noise.
fn config_text() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just("[storage]"),
        Just("[schedule]"),
        Just("[[accounts]]"),
        Just("[[targets]]"),
        Just("[rules.no_recent_scan]"),
        Just("[rules.stuck_running]"),
        Just("[rules.poll_failing]"),
        Just("[targets.rules.total_stalled]"),
        Just("[alerting]"),
        Just("[server]"),
        Just("[[channels]]"),
        Just("[heartbeat]"),
        Just("[bogus]"),
    ]
    .prop_map(str::to_string);
    let key = prop_oneof![
        Just("name"),
        Just("account"),
        Just("region"),
        Just("project_id"),
        Just("auth"),
        Just("ak"),
        Just("sk"),
        Just("sk_env"),
        Just("password_env"),
        Just("domain"),
        Just("user"),
        Just("interval"),
        Just("cron"),
        Just("timezone"),
        Just("timeout"),
        Just("retention"),
        Just("path"),
        Just("listen"),
        Just("token_env"),
        Just("task_types"),
        Just("labels"),
        Just("max_age"),
        Just("for"),
        Just("severity"),
        Just("enabled"),
        Just("type"),
        Just("url"),
        Just("url_env"),
        Just("endpoint"),
        Just("calls_per_minute"),
        Just("colour"),
    ];
    let line = prop_oneof![
        3 => (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => header,
        1 => "[ -~]{0,30}",
    ];
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

const MINIMAL: &str = "[[accounts]]\nname = \"prod\"\n[[targets]]\nname = \"t1\"\naccount = \"prod\"\n\
                       region = \"cn-north-4\"\nproject_id = \"0123456789abcdef0123456789abcdef\"\n";

fn leaks(s: &str) -> bool {
    s.contains(SK) || s.contains(PASSWORD)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn every_config_problem_names_its_key_or_line_and_no_secret_shows(
        text in prop_oneof![config_text(), config_text().prop_map(|t| format!("{MINIMAL}\n{t}"))],
        overrides in overrides(),
    ) {
        match Config::from_toml_str(&text, Path::new("/nonexistent"), &env_with(&overrides)) {
            Ok(config) => {
                prop_assert!(!leaks(&serde_json::to_string(&config).unwrap()));
                let debug = format!("{config:?}");
                prop_assert!(!leaks(&debug));
                prop_assert!(config.warnings.iter().all(|w| !leaks(&w.to_string())));
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(!p.key.is_empty() || p.message.contains("line"), "{p:?} in\n{text}\n{overrides:?}");
                    prop_assert!(!leaks(&p.to_string()), "{p}");
                }
            }
        }
    }

    #[test]
    fn config_text_that_is_not_toml_is_reported_by_line(text in "[ -~\n]{0,200}") {
        if let Err(e) = Config::from_toml_str(&text, Path::new("/nonexistent"), &env()) {
            for p in &e.problems {
                prop_assert!(!p.key.is_empty() || p.message.contains("line"), "{p:?} in\n{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Signer

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..8)
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    // Header names are HTTP tokens; values anything printable.
    prop::collection::vec(("[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}", "\\PC{0,16}"), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_emits_only_unreserved_and_escapes_and_decodes_back(s in "\\PC{0,40}|.{0,40}") {
        let e = encode(&s);
        prop_assert!(is_encoded(&e, b""), "{e}");
        prop_assert_eq!(percent_decode_str(&e).decode_utf8().unwrap(), s);
    }

    #[test]
    fn the_canonical_uri_is_encoded_segments_ending_in_a_slash(path in "(/|%[0-9A-Fa-f]{2}|%|\\PC){0,30}") {
        let uri = canonical_uri(&path);
        prop_assert!(uri.ends_with('/'), "{uri}");
        prop_assert!(is_encoded(&uri, b"/"), "{uri}");
        prop_assert_eq!(canonical_uri(&uri), uri.clone(), "not idempotent");
    }

    #[test]
    fn the_canonical_query_does_not_depend_on_pair_order(query in pairs(), seed in any::<u64>()) {
        let mut shuffled = query.clone();
        shuffled.reverse();
        if !shuffled.is_empty() {
            let n = (seed % shuffled.len() as u64) as usize;
            shuffled.rotate_left(n);
        }
        let canonical = canonical_query(&query);
        prop_assert!(is_encoded(&canonical, b"=&"), "{canonical}");
        prop_assert_eq!(canonical_query(&shuffled), canonical);
    }

    #[test]
    fn signing_is_deterministic_and_the_header_parses_back(
        method in "[A-Za-z]{1,7}",
        path in "\\PC{0,30}",
        query in pairs(),
        mut headers in headers(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        ak in "[A-Za-z0-9]{0,24}",
        sk in "\\PC{0,40}",
    ) {
        headers.push((HEADER_SDK_DATE.to_string(), "20240102T030405Z".to_string()));
        let req = SignableRequest { method: &method, path: &path, query: &query, headers: &headers, body: &body };
        let first = sign(&req, &ak, &sk).unwrap();
        let mut reversed = query.clone();
        reversed.reverse();
        prop_assert_eq!(sign(&SignableRequest { query: &reversed, ..req }, &ak, &sk).unwrap(), first.clone());
        let parsed = parse_authorization(&first.authorization).unwrap();
        prop_assert_eq!(parsed.access, ak);
        prop_assert_eq!(parsed.signature, first.signature);
        prop_assert_eq!(parsed.signed_headers.join(";"), first.signed_headers);
    }

    #[test]
    fn parse_authorization_takes_any_text(value in "\\PC{0,80}|SDK-HMAC-SHA256 [ -~]{0,80}") {
        let _ = parse_authorization(&value);
    }
}
