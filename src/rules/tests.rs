use chrono::TimeZone;

use super::*;
use crate::model::TaskStats;

const H: i64 = 60;

fn at(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, 22, 0, 0, 0).unwrap() + TimeDelta::minutes(min)
}

fn ms(min: i64) -> i64 {
    at(min).timestamp_millis()
}

/// A successful poll at minute `min`; `start` is the minute the latest task started.
fn ok(min: i64, total: u64, running: u64, start: Option<i64>) -> Snapshot {
    Snapshot {
        task: None,
        id: min,
        series_id: 1,
        polled_at: at(min),
        stats: Some(TaskStats { total_num: total, running_num: running, last_task_start_time: start.map(ms) }),
        latency_ms: 40,
        http_status: Some(200),
        error_kind: None,
        error_code: None,
        error_message: None,
        request_id: Some(format!("req-{min}")),
    }
}

fn fail(min: i64, kind: ErrorKind) -> Snapshot {
    let (status, code, message) = match kind {
        ErrorKind::Auth => (Some(401), Some("APIGW.0301"), "Incorrect IAM authentication information"),
        ErrorKind::Forbidden => (Some(403), Some("APIGW.0302"), "The IAM user is not authorized"),
        ErrorKind::Throttled => (Some(429), Some("APIGW.0308"), "The throttling threshold has been reached"),
        ErrorKind::Server => (Some(503), None, "Service Unavailable"),
        ErrorKind::HssError => (Some(400), Some("HSS.0001"), "invalid parameter"),
        _ => (None, None, "connection refused"),
    };
    Snapshot {
        task: None,
        id: min,
        series_id: 1,
        polled_at: at(min),
        stats: None,
        latency_ms: 10,
        http_status: status,
        error_kind: Some(kind),
        error_code: code.map(str::to_string),
        error_message: Some(message.to_string()),
        request_id: None,
    }
}

/// What a case expects: breach summaries are matched by substring, values exactly, unknown reasons by substring.
#[derive(Debug)]
enum Want {
    Ok,
    Breach(&'static str, &'static str),
    Unknown(&'static str),
}

fn check(name: &str, got: &Outcome, want: &Want) {
    match (got, want) {
        (Outcome::Ok, Want::Ok) => {}
        (Outcome::Breach { summary, value }, Want::Breach(s, v)) => {
            assert!(summary.contains(s), "{name}: summary {summary:?} lacks {s:?}");
            assert_eq!(value, v, "{name}: value");
        }
        (Outcome::Unknown { reason }, Want::Unknown(r)) => {
            assert!(reason.contains(r), "{name}: reason {reason:?} lacks {r:?}");
        }
        _ => panic!("{name}: got {got:?}, want {want:?}"),
    }
}

/// Snapshots every `step` minutes from `from` to `to` inclusive, built by `f(minute)`.
fn every(step: i64, from: i64, to: i64, f: impl Fn(i64) -> Snapshot) -> Vec<Snapshot> {
    (from..=to).step_by(usize::try_from(step).unwrap()).map(f).collect()
}

fn cat(parts: Vec<Vec<Snapshot>>) -> Vec<Snapshot> {
    parts.into_iter().flatten().collect()
}

#[test]
fn no_recent_scan_answers_every_edge_case() {
    let now = at(48 * H);
    let p = NoRecentScan::default();
    let cases: Vec<(&str, TaskType, Vec<Snapshot>, Want)> = vec![
        ("a first start with no polls is unknown", TaskType::ClusterScan, vec![], Want::Unknown("no polls yet")),
        (
            "a target that never scanned breaches at once",
            TaskType::ClusterScan,
            vec![ok(48 * H, 0, 0, None)],
            Want::Breach("no cluster scan has ever started", "never"),
        ),
        (
            "the summary names the task type",
            TaskType::IacScan,
            vec![ok(48 * H, 0, 0, None)],
            Want::Breach("no IaC scan has ever started", "never"),
        ),
        ("a scan an hour ago is ok", TaskType::ClusterScan, vec![ok(48 * H, 5, 0, Some(47 * H))], Want::Ok),
        (
            "a scan 31 hours ago breaches",
            TaskType::ClusterScan,
            vec![ok(48 * H, 5, 0, Some(17 * H))],
            Want::Breach("no cluster scan has started for 31h; limit 24h", "31h"),
        ),
        (
            "a scan exactly max_age ago is still ok",
            TaskType::ClusterScan,
            vec![ok(48 * H, 5, 0, Some(24 * H))],
            Want::Ok,
        ),
        (
            "a scan a minute past max_age breaches",
            TaskType::ClusterScan,
            vec![ok(48 * H, 5, 0, Some(24 * H - 1))],
            Want::Breach("no cluster scan has started for 24h1m; limit 24h", "24h1m"),
        ),
        (
            "a start time in the future counts as age 0",
            TaskType::ClusterScan,
            vec![ok(48 * H, 5, 0, Some(50 * H))],
            Want::Ok,
        ),
        (
            "a failed latest poll holds even when old data would breach",
            TaskType::ClusterScan,
            vec![ok(47 * H, 5, 0, Some(0)), fail(48 * H, ErrorKind::Server)],
            Want::Unknown(HOLD_REASON),
        ),
        (
            "a failed latest poll holds a target that never scanned",
            TaskType::ClusterScan,
            vec![ok(47 * H, 0, 0, None), fail(48 * H, ErrorKind::Timeout)],
            Want::Unknown(HOLD_REASON),
        ),
        (
            "failed polls in the middle do not matter once a poll succeeds",
            TaskType::ClusterScan,
            vec![ok(46 * H, 5, 0, Some(10)), fail(47 * H, ErrorKind::Server), ok(48 * H, 6, 0, Some(47 * H + 30))],
            Want::Ok,
        ),
        (
            "after a gap in history the latest success decides",
            TaskType::ClusterScan,
            vec![ok(0, 5, 0, None), ok(48 * H, 6, 0, Some(40 * H))],
            Want::Ok,
        ),
        (
            "snapshots after now are ignored",
            TaskType::ClusterScan,
            vec![ok(48 * H, 5, 0, Some(47 * H)), ok(48 * H + 5, 5, 0, None)],
            Want::Ok,
        ),
    ];
    for (name, task_type, history, want) in cases {
        check(name, &no_recent_scan(&p, task_type, &history, now), &want);
    }
}

#[test]
fn a_start_time_beyond_chronos_range_counts_as_age_zero() {
    let mut s = ok(10, 1, 0, None);
    s.stats = Some(TaskStats { total_num: 1, running_num: 0, last_task_start_time: Some(i64::MAX) });
    assert_eq!(no_recent_scan(&NoRecentScan::default(), TaskType::ClusterScan, &[s.clone()], at(10)), Outcome::Ok);
    assert_eq!(future_start_skew(&[s], at(10)), Some(TimeDelta::MAX));
}

#[test]
fn future_start_skew_reports_how_far_ahead_the_start_time_is() {
    let now = at(100);
    assert_eq!(future_start_skew(&[ok(100, 1, 0, Some(105))], now), Some(TimeDelta::minutes(5)));
    assert_eq!(future_start_skew(&[ok(100, 1, 0, Some(95))], now), None);
    assert_eq!(future_start_skew(&[ok(100, 1, 0, None)], now), None);
    assert_eq!(future_start_skew(&[], now), None);
}

#[test]
fn stuck_running_answers_every_edge_case() {
    let now = at(10 * H);
    let p = StuckRunning::default();
    let running_since = |from: i64| every(30, from, 10 * H, |m| ok(m, 9, 1, Some(5 * H)));
    let cases: Vec<(&str, Vec<Snapshot>, Want)> = vec![
        ("a first start with no polls is unknown", vec![], Want::Unknown("no polls yet")),
        ("nothing running is ok", vec![ok(10 * H, 9, 0, Some(5 * H))], Want::Ok),
        (
            "nothing running now is ok after a long run",
            cat(vec![every(30, 5 * H, 9 * H + 30, |m| ok(m, 9, 1, Some(5 * H))), vec![ok(10 * H, 9, 0, Some(5 * H))]]),
            Want::Ok,
        ),
        (
            "one task running for 3h breaches",
            cat(vec![vec![ok(6 * H + 30, 8, 0, Some(2 * H))], running_since(7 * H)]),
            Want::Breach("1 cluster scan task(s) running for 3h with no new task started", "3h"),
        ),
        (
            "a run that began exactly `for` ago breaches",
            cat(vec![vec![ok(7 * H + 30, 8, 0, Some(2 * H))], running_since(8 * H)]),
            Want::Breach("limit 2h", "2h"),
        ),
        (
            "a run of 1h after an idle snapshot is ok",
            cat(vec![vec![ok(8 * H + 30, 8, 0, Some(2 * H))], running_since(9 * H)]),
            Want::Ok,
        ),
        (
            "history that does not reach back `for` is unknown",
            running_since(9 * H),
            Want::Unknown("history does not reach back 2h (the oldest successful snapshot is 1h old)"),
        ),
        (
            "a task that finishes while a new one starts with running_num staying 1 is not stuck",
            cat(vec![
                every(30, 6 * H, 8 * H + 30, |m| ok(m, 8, 1, Some(5 * H))),
                every(30, 9 * H, 10 * H, |m| ok(m, 9, 1, Some(8 * H + 45))),
            ]),
            Want::Ok,
        ),
        (
            "a new task that started 2h ago and is still running is stuck",
            cat(vec![
                every(30, 6 * H, 7 * H + 30, |m| ok(m, 8, 1, Some(5 * H))),
                every(30, 8 * H, 10 * H, |m| ok(m, 9, 1, Some(7 * H + 45))),
            ]),
            Want::Breach("running for 2h", "2h"),
        ),
        (
            "failed polls in the middle of the run are skipped",
            cat(vec![
                vec![ok(7 * H, 9, 1, Some(5 * H)), fail(7 * H + 30, ErrorKind::Server)],
                vec![fail(8 * H, ErrorKind::Timeout), fail(9 * H, ErrorKind::Network)],
                vec![ok(10 * H, 9, 1, Some(5 * H))],
            ]),
            Want::Breach("running for 3h", "3h"),
        ),
        (
            "the latest poll failing holds",
            cat(vec![
                every(30, 6 * H, 9 * H + 30, |m| ok(m, 9, 1, Some(5 * H))),
                vec![fail(10 * H, ErrorKind::Server)],
            ]),
            Want::Unknown(HOLD_REASON),
        ),
        (
            "a gap in history does not break the run",
            vec![ok(5 * H, 9, 1, Some(5 * H)), ok(10 * H, 9, 1, Some(5 * H))],
            Want::Breach("running for 5h", "5h"),
        ),
        (
            "an idle snapshot inside the window ends the run",
            running_since(6 * H)
                .into_iter()
                .map(|s| if s.polled_at == at(9 * H) { ok(9 * H, 9, 0, Some(5 * H)) } else { s })
                .collect(),
            Want::Ok,
        ),
        (
            "failed polls before a young run are not history",
            cat(vec![every(30, 6 * H, 8 * H + 30, |m| fail(m, ErrorKind::Server)), running_since(9 * H)]),
            Want::Unknown("history does not reach back 2h"),
        ),
        (
            "the summary says how many tasks run",
            cat(vec![vec![ok(6 * H, 8, 0, None)], every(30, 7 * H, 10 * H, |m| ok(m, 9, 2, Some(6 * H + 30)))]),
            Want::Breach("2 cluster scan task(s) running for 3h", "3h"),
        ),
    ];
    for (name, history, want) in cases {
        check(name, &stuck_running(&p, TaskType::ClusterScan, &history, now), &want);
    }
}

#[test]
fn stuck_running_names_the_start_time_of_the_stuck_task() {
    let history = every(30, 7 * H, 10 * H, |m| ok(m, 9, 1, Some(6 * H + 30)));
    let Outcome::Breach { summary, .. } =
        stuck_running(&StuckRunning::default(), TaskType::IacScan, &history, at(10 * H))
    else {
        panic!("expected a breach");
    };
    assert!(summary.contains("the latest task started 2025-04-22 06:30 UTC"), "{summary}");
}

#[test]
fn total_stalled_answers_every_edge_case() {
    let now = at(100 * H);
    let p = TotalStalled::default();
    let flat = |from: i64, to: i64, total: u64| every(H, from, to, move |m| ok(m, total, 0, Some(0)));
    let cases: Vec<(&str, Vec<Snapshot>, Want)> = vec![
        ("a first start with no polls is unknown", vec![], Want::Unknown("no polls yet")),
        (
            "history younger than the window is unknown, not ok and not breach",
            flat(90 * H, 100 * H, 17),
            Want::Unknown("history covers 10h of the 48h window"),
        ),
        (
            "a flat total over a covered window breaches",
            flat(40 * H, 100 * H, 17),
            Want::Breach("cluster scan total stayed at 17 for at least 60h; window 48h", "60h"),
        ),
        (
            "a total flat since a visible increase says since when",
            cat(vec![flat(30 * H, 39 * H, 16), flat(40 * H, 100 * H, 17)]),
            Want::Breach("stayed at 17 for 60h; window 48h", "60h"),
        ),
        (
            "a snapshot exactly at the window's start covers it",
            flat(52 * H, 100 * H, 17),
            Want::Breach("for at least 48h", "48h"),
        ),
        (
            "an increase inside the window is ok",
            cat(vec![flat(40 * H, 70 * H, 17), flat(71 * H, 100 * H, 18)]),
            Want::Ok,
        ),
        (
            "an increase between the baseline and the window's first snapshot is ok",
            cat(vec![flat(40 * H, 51 * H, 17), flat(53 * H, 100 * H, 18)]),
            Want::Ok,
        ),
        (
            "a counter that goes down is a reset, not progress",
            cat(vec![flat(40 * H, 70 * H, 17), flat(71 * H, 100 * H, 3)]),
            Want::Breach("it dropped from 17 to 3, a counter reset; now 3", "60h"),
        ),
        (
            "growth after a reset is progress",
            cat(vec![flat(40 * H, 70 * H, 17), flat(71 * H, 80 * H, 3), flat(81 * H, 100 * H, 4)]),
            Want::Ok,
        ),
        (
            "failed polls in the middle of a flat window still breach",
            cat(vec![
                flat(40 * H, 60 * H, 17),
                every(H, 61 * H, 80 * H, |m| fail(m, ErrorKind::Server)),
                flat(81 * H, 100 * H, 17),
            ]),
            Want::Breach("stayed at 17", "60h"),
        ),
        (
            "an increase across failed polls in the middle is progress",
            cat(vec![
                flat(40 * H, 60 * H, 17),
                every(H, 61 * H, 80 * H, |m| fail(m, ErrorKind::Server)),
                flat(81 * H, 100 * H, 18),
            ]),
            Want::Ok,
        ),
        (
            "the latest poll failing holds",
            cat(vec![flat(40 * H, 99 * H, 17), vec![fail(100 * H, ErrorKind::Network)]]),
            Want::Unknown(HOLD_REASON),
        ),
        (
            "a gap in history still covers the window",
            vec![ok(40 * H, 17, 0, Some(0)), ok(100 * H, 17, 0, Some(0))],
            Want::Breach("stayed at 17", "60h"),
        ),
        (
            "only failed polls before the window do not cover it",
            cat(vec![every(H, 40 * H, 60 * H, |m| fail(m, ErrorKind::Server)), flat(61 * H, 100 * H, 17)]),
            Want::Unknown("history covers 39h of the 48h window"),
        ),
    ];
    for (name, history, want) in cases {
        check(name, &total_stalled(&p, TaskType::ClusterScan, &history, now), &want);
    }
}

#[test]
fn poll_failing_answers_every_edge_case() {
    let now = at(10 * H);
    let p = PollFailing::default();
    let good = every(5, 8 * H, 9 * H + 30, |m| ok(m, 9, 0, Some(0)));
    let with = |tail: Vec<Snapshot>| cat(vec![good.clone(), tail]);
    let mut no_kind = fail(10 * H, ErrorKind::Server);
    no_kind.error_kind = None;
    let mut no_message = fail(10 * H, ErrorKind::Timeout);
    no_message.error_message = None;
    let cases: Vec<(&str, PollFailing, Vec<Snapshot>, Want)> = vec![
        ("a first start with no polls is unknown", p, vec![], Want::Unknown("no polls yet")),
        (
            "a successful latest poll is ok",
            p,
            with(vec![fail(9 * H + 55, ErrorKind::Server), ok(10 * H, 9, 0, None)]),
            Want::Ok,
        ),
        (
            "one failure shortly after a success is ok",
            p,
            with(vec![ok(9 * H + 45, 9, 0, None), fail(10 * H, ErrorKind::Server)]),
            Want::Ok,
        ),
        (
            "`after` failures in a row breach, naming the latest error",
            p,
            with(every(5, 9 * H + 50, 10 * H, |m| fail(m, ErrorKind::Server))),
            Want::Breach("3 polls failed in a row: server (HTTP 503): Service Unavailable", "3 failed polls"),
        ),
        (
            "the summary describes the latest of several failures",
            p,
            with(vec![
                fail(9 * H + 40, ErrorKind::Timeout),
                fail(9 * H + 45, ErrorKind::Server),
                fail(9 * H + 50, ErrorKind::Server),
                fail(9 * H + 55, ErrorKind::Server),
                fail(10 * H, ErrorKind::HssError),
            ]),
            Want::Breach(
                "5 polls failed in a row: hss_error (HTTP 400, HSS.0001): invalid parameter",
                "5 failed polls",
            ),
        ),
        (
            "an auth error breaches on the first failure",
            p,
            with(vec![fail(10 * H, ErrorKind::Auth)]),
            Want::Breach(
                "HSS rejects the account's credentials: auth (HTTP 401, APIGW.0301): Incorrect IAM authentication",
                "1 failed poll",
            ),
        ),
        (
            "a forbidden error breaches on the first failure",
            p,
            with(vec![fail(10 * H, ErrorKind::Forbidden)]),
            Want::Breach("HSS denies access to the project: forbidden (HTTP 403, APIGW.0302)", "1 failed poll"),
        ),
        (
            "an auth error breaches on the very first poll after a first start",
            p,
            vec![fail(10 * H, ErrorKind::Auth)],
            Want::Breach("rejects the account's credentials", "1 failed poll"),
        ),
        (
            "an auth error after other failures still names auth",
            p,
            with(vec![fail(9 * H + 55, ErrorKind::Server), fail(10 * H, ErrorKind::Auth)]),
            Want::Breach("auth (HTTP 401", "2 failed polls"),
        ),
        (
            "failing for `for` on a slow schedule breaches before `after` polls",
            p,
            cat(vec![
                vec![ok(9 * H, 9, 0, None)],
                vec![fail(9 * H + 20, ErrorKind::Timeout), fail(10 * H, ErrorKind::Timeout)],
            ]),
            Want::Breach(
                "no successful poll for 1h (2 failed polls; limit 30m): timeout: connection refused",
                "2 failed polls over 1h",
            ),
        ),
        (
            "a short streak long after the last success breaches: `for` counts from the last success",
            p,
            cat(vec![
                vec![ok(9 * H + 20, 9, 0, None)],
                vec![fail(9 * H + 55, ErrorKind::Server), fail(10 * H, ErrorKind::Server)],
            ]),
            Want::Breach(
                "no successful poll for 40m (2 failed polls; limit 30m): server (HTTP 503)",
                "2 failed polls over 40m",
            ),
        ),
        (
            "fewer than `after` failures on a first start are unknown",
            p,
            vec![fail(9 * H + 55, ErrorKind::Server), fail(10 * H, ErrorKind::Server)],
            Want::Unknown("2 failed polls since the first poll passed in, 5m ago"),
        ),
        (
            "the first failure after a long gap breaches: there has been no successful poll for `for`",
            p,
            vec![ok(8 * H, 9, 0, None), fail(10 * H, ErrorKind::Server)],
            Want::Breach("no successful poll for 2h (1 failed poll; limit 30m)", "1 failed poll over 2h"),
        ),
        (
            "without a success in the history, `for` counts from the first poll",
            p,
            vec![fail(9 * H + 20, ErrorKind::Server), fail(10 * H, ErrorKind::Server)],
            Want::Breach("no successful poll for 40m (2 failed polls; limit 30m)", "2 failed polls over 40m"),
        ),
        (
            "a success in the middle breaks the streak",
            p,
            with(vec![
                fail(9 * H + 40, ErrorKind::Server),
                fail(9 * H + 45, ErrorKind::Server),
                ok(9 * H + 50, 9, 0, None),
                fail(9 * H + 55, ErrorKind::Server),
                fail(10 * H, ErrorKind::Server),
            ]),
            Want::Ok,
        ),
        (
            "after = 1 breaches on any failure",
            PollFailing { after: 1, ..p },
            with(vec![fail(10 * H, ErrorKind::Throttled)]),
            Want::Breach("the latest poll failed: throttled (HTTP 429, APIGW.0308)", "1 failed poll"),
        ),
        (
            "a failure without an error kind is still described",
            PollFailing { after: 1, ..p },
            with(vec![no_kind]),
            Want::Breach("the latest poll failed: unclassified error", "1 failed poll"),
        ),
    ];
    for (name, p, history, want) in cases {
        check(name, &poll_failing(&p, &history, now), &want);
    }
    let got = poll_failing(&PollFailing { after: 1, ..p }, &with(vec![no_message]), now);
    assert_eq!(
        got,
        Outcome::Breach { summary: "the latest poll failed: timeout".into(), value: "1 failed poll".into() }
    );
}

/// One step of a random history: a poll `gap` minutes after the previous one.
#[derive(Debug, Clone)]
enum Step {
    /// A success: the total moves by `grow` (negative: a counter reset), `running` tasks, and a new task started
    /// when `started`; `check` carries a task check that failed on that many of 3 clusters.
    Ok { gap: i64, grow: i8, running: u8, started: bool, check: Option<u8> },
    /// A failure of the given kind (index into a few kinds, auth and forbidden among them).
    Fail { gap: i64, kind: u8 },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    // Mostly 5-minute polls, sometimes an outage or scanwatch's own downtime of up to two days.
    let gap = prop_oneof![8 => Just(5i64), 2 => 0i64..20, 1 => 20i64..3000];
    prop_oneof![
        4 => (gap.clone(), -3i8..4, 0u8..3, proptest::bool::weighted(0.2), proptest::option::weighted(0.1, 0u8..3))
            .prop_map(|(gap, grow, running, started, check)| Step::Ok { gap, grow, running, started, check }),
        1 => (gap, 0u8..6).prop_map(|(gap, kind)| Step::Fail { gap, kind }),
    ]
}

fn history_from(steps: &[Step]) -> Vec<Snapshot> {
    let kinds = [ErrorKind::Server, ErrorKind::Network, ErrorKind::Throttled, ErrorKind::Auth, ErrorKind::Forbidden];
    let (mut min, mut total, mut start) = (0i64, 50u64, None::<i64>);
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let mut s = match step {
            Step::Ok { gap, grow, running, started, check } => {
                min += gap;
                total = total.saturating_add_signed(i64::from(*grow)).max(1);
                if *started {
                    start = Some(min);
                }
                let check = check.map(|failed| crate::model::AlertContext {
                    task: Some(crate::model::TaskInfo {
                        task_id: format!("t{i}"),
                        task_name: "nightly".into(),
                        task_type: TaskType::ClusterScan,
                        trigger_type: "schedule".into(),
                        task_status: "finished".into(),
                        start_time: None,
                        end_time: None,
                        estimated_minutes: None,
                        scanning: 0,
                        success: 3 - u64::from(failed),
                        failed: u64::from(failed),
                    }),
                    ..crate::model::AlertContext::default()
                });
                Snapshot { task: check, ..ok(min, total, u64::from(*running), start) }
            }
            Step::Fail { gap, kind } => {
                min += gap;
                kinds
                    .get(usize::from(*kind))
                    .map_or_else(|| Snapshot { error_kind: None, ..fail(min, ErrorKind::Server) }, |k| fail(min, *k))
            }
        };
        s.id = i64::try_from(i).unwrap();
        out.push(s);
    }
    out
}

fn rule_set() -> impl proptest::strategy::Strategy<Value = RuleSet> {
    use proptest::prelude::*;
    let minutes = |m: u64| Duration::from_secs(m * 60);
    (1u64..600, 1u64..300, 1u64..900, 1u32..6, 1u64..120).prop_map(move |(age, stuck, window, after, silent)| RuleSet {
        no_recent_scan: Some((NoRecentScan { max_age: minutes(age) }, Severity::Critical)),
        stuck_running: Some((StuckRunning { for_: minutes(stuck) }, Severity::Warning)),
        total_stalled: Some((TotalStalled { window: minutes(window) }, Severity::Warning)),
        poll_failing: Some((PollFailing { after, for_: minutes(silent) }, Severity::Critical)),
        scan_failures: Some((ScanFailures, Severity::Info)),
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]
    /// The state folded one snapshot at a time (as the live path keeps it) answers exactly what the rules as written
    /// over the whole history answer (`reference`), after every poll of a long random history — polls, failures of
    /// every kind, counter resets, runs, task checks, outages and downtime — and also some time after the poll (a
    /// later `now`, as between polls), every rule with every outcome, summary and value.
    #[test]
    fn incremental_evaluation_agrees_with_the_reference_over_random_histories(
        steps in proptest::collection::vec(step(), 1..400),
        set in rule_set(),
        later in 0i64..600,
    ) {
        let history = history_from(&steps);
        let key = series_key();
        let mut state = SeriesState::default();
        for (i, s) in history.iter().enumerate() {
            state.fold(s);
            for now in [s.polled_at, s.polled_at + TimeDelta::minutes(later)] {
                let view = &history[..=i];
                proptest::prop_assert_eq!(
                    state.evaluate_all(&set, &key, now),
                    super::reference::evaluate_all(&set, &key, view, now),
                    "after poll {} at {}", i, now
                );
                proptest::prop_assert_eq!(state.future_start_skew(now), super::reference::future_start_skew(view, now));
            }
        }
        proptest::prop_assert_eq!(&state, &SeriesState::of(&history, history[history.len() - 1].polled_at));
    }
}

fn series_key() -> crate::model::SeriesKey {
    crate::model::SeriesKey {
        target: "t".into(),
        account: "a".into(),
        region: "cn-north-4".into(),
        project_id: "0123456789abcdef0123456789abcdef".into(),
        enterprise_project_id: Some("all_granted_eps".into()),
        task_type: TaskType::ClusterScan,
    }
}

#[test]
fn a_denied_project_is_named_in_poll_failing() {
    let mut denied = ok(10, 0, 0, None);
    denied.stats = None;
    denied.error_kind = Some(crate::model::ErrorKind::Forbidden);
    denied.http_status = Some(403);
    denied.error_code = Some("HSS.0010".into());
    denied.error_message = Some("no permission".into());
    let got = evaluate(RuleName::PollFailing, &RuleSet::default(), &series_key(), &[denied], at(10)).unwrap();
    let Outcome::Breach { summary, .. } = got else { panic!("{got:?}") };
    assert!(
        summary.starts_with(
            "HSS denies access to project 0123456789abcdef0123456789abcdef (enterprise project all_granted_eps): "
        ) && summary.contains("HSS.0010"),
        "{summary}"
    );
}

#[test]
fn evaluate_skips_disabled_rules_and_dispatches_enabled_ones() {
    let history = vec![ok(10, 0, 0, None)];
    assert_eq!(evaluate(RuleName::NoRecentScan, &RuleSet::none(), &series_key(), &history, at(10)), None);
    let got = evaluate(RuleName::NoRecentScan, &RuleSet::default(), &series_key(), &history, at(10));
    assert!(got.as_ref().is_some_and(Outcome::is_breach), "{got:?}");

    let all = evaluate_all(&RuleSet::default(), &series_key(), &history, at(10));
    let names: Vec<(RuleName, Severity, bool)> = all.iter().map(|(r, s, o)| (*r, *s, o.is_breach())).collect();
    assert_eq!(
        names,
        vec![
            (RuleName::NoRecentScan, Severity::Critical, true),
            (RuleName::StuckRunning, Severity::Warning, false),
            (RuleName::TotalStalled, Severity::Warning, false),
            (RuleName::PollFailing, Severity::Critical, false),
            (RuleName::ScanFailures, Severity::Warning, false),
        ]
    );
    let set = RuleSet { stuck_running: None, ..RuleSet::default() };
    assert_eq!(
        set.enabled(),
        vec![RuleName::NoRecentScan, RuleName::TotalStalled, RuleName::PollFailing, RuleName::ScanFailures]
    );
    assert_eq!(evaluate_all(&set, &series_key(), &history, at(10)).len(), 4);
}

/// scan_failures looks at the latest task check in view: a task that failed on some clusters breaches (the
/// summary counts; the names travel in the context), a clean one is ok, no check is unknown, and a check that could
/// not see the task holds (unknown), so a failing task API neither fires nor resolves the alert.
#[test]
fn scan_failures_follows_the_latest_task_check() {
    use crate::model::{AlertContext, TaskInfo};
    let task = |failed: u64| TaskInfo {
        task_id: "t1".into(),
        task_name: "<!channel> nightly".into(),
        task_type: TaskType::ClusterScan,
        trigger_type: "schedule".into(),
        task_status: "finished".into(),
        start_time: None,
        end_time: None,
        estimated_minutes: None,
        scanning: 0,
        success: 3 - failed,
        failed,
    };
    let with = |min: i64, check: Option<AlertContext>| Snapshot { task: check, ..ok(min, 5, 0, Some(min)) };
    let failed = AlertContext { task: Some(task(2)), failed_total: 2, ..AlertContext::default() };
    let clean = AlertContext { task: Some(task(0)), ..AlertContext::default() };
    let blind = AlertContext { unavailable: Some("ListTasks: forbidden".into()), ..AlertContext::default() };
    let eval = |h: &[Snapshot]| scan_failures(TaskType::ClusterScan, h, at(30));

    assert!(matches!(eval(&[with(0, None)]), Outcome::Unknown { .. }), "no check yet");
    match eval(&[with(0, Some(failed.clone())), with(5, None)]) {
        Outcome::Breach { summary, value } => {
            assert_eq!(summary, "the latest finished cluster scan task failed on 2 of 3 clusters");
            assert_eq!(value, "2 failed");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(eval(&[with(0, Some(failed.clone())), with(5, Some(clean))]), Outcome::Ok, "a later clean task");
    assert!(matches!(eval(&[with(0, Some(failed)), with(5, Some(blind))]), Outcome::Unknown { .. }), "holds");
    assert_eq!(eval(&[with(0, Some(AlertContext::default()))]), Outcome::Ok, "nothing finished yet");
}

#[test]
fn rule_and_severity_names_round_trip_and_match_the_config_keys() {
    for rule in RuleName::ALL {
        assert_eq!(RuleName::parse(rule.as_str()), Some(rule));
        assert_eq!(serde_json::to_string(&rule).unwrap(), format!("\"{rule}\""));
    }
    assert_eq!(RuleName::parse("poll_failing"), Some(RuleName::PollFailing));
    assert_eq!(RuleName::parse("PollFailing"), None);
    for severity in Severity::ALL {
        assert_eq!(Severity::parse(severity.as_str()), Some(severity));
        assert_eq!(serde_json::to_string(&severity).unwrap(), format!("\"{severity}\""));
    }
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    assert!(!RuleName::PollFailing.is_data_rule() && RuleName::TotalStalled.is_data_rule());
}

#[test]
fn outcomes_serialize_with_a_tag() {
    let breach = Outcome::Breach { summary: "s".into(), value: "v".into() };
    assert_eq!(serde_json::to_string(&breach).unwrap(), r#"{"outcome":"breach","summary":"s","value":"v"}"#);
    assert_eq!(serde_json::to_string(&Outcome::Ok).unwrap(), r#"{"outcome":"ok"}"#);
}

#[test]
fn human_duration_picks_readable_units() {
    let cases = [
        (TimeDelta::seconds(-5), "0s"),
        (TimeDelta::seconds(45), "45s"),
        (TimeDelta::minutes(12), "12m"),
        (TimeDelta::hours(3), "3h"),
        (TimeDelta::minutes(200), "3h20m"),
        (TimeDelta::hours(31), "31h"),
        (TimeDelta::hours(48), "48h"),
        (TimeDelta::minutes(71 * 60 + 59), "71h59m"),
        (TimeDelta::hours(72), "3d"),
        (TimeDelta::hours(76), "3d4h"),
        (TimeDelta::MAX, "106751991167d7h"),
    ];
    for (d, want) in cases {
        assert_eq!(human_duration(d), want, "{d:?}");
    }
}

#[test]
fn huge_durations_saturate_instead_of_overflowing() {
    let forever = Duration::from_secs(u64::MAX);
    assert_eq!(delta(forever), TimeDelta::MAX);
    assert_eq!(ago(at(0), forever), DateTime::<Utc>::MIN_UTC);
    let p = TotalStalled { window: forever };
    let got = total_stalled(&p, TaskType::ClusterScan, &[ok(0, 1, 0, None)], at(0));
    assert!(matches!(got, Outcome::Unknown { .. }), "{got:?}");
}
