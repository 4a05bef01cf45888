use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::model::{ErrorKind, Snapshot, TaskStats, TaskType};
use crate::rules::{NoRecentScan, Outcome};

const M: u64 = 60;

fn at(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, 22, 0, 0, 0).unwrap() + TimeDelta::minutes(min)
}

fn breach(value: &str) -> Outcome {
    Outcome::Breach { summary: format!("no cluster scan has started for {value}"), value: value.to_string() }
}

fn unknown() -> Outcome {
    Outcome::Unknown { reason: crate::rules::HOLD_REASON.to_string() }
}

fn cfg(pending_min: u64, resolve_min: u64, repeat_min: u64, send_resolved: bool) -> Lifecycle {
    Lifecycle {
        pending_for: Duration::from_secs(pending_min * M),
        resolve_after: Duration::from_secs(resolve_min * M),
        repeat_interval: Duration::from_secs(repeat_min * M),
        send_resolved,
    }
}

fn text(value: &str) -> (String, String) {
    (format!("no cluster scan has started for {value}"), value.to_string())
}

fn pending(started: i64) -> Alert {
    let (summary, value) = text("25h");
    Alert {
        state: AlertState::Pending,
        since: Some(at(started)),
        breach_started: Some(at(started)),
        summary,
        value,
        ..Alert::default()
    }
}

fn firing(since: i64, notified: i64) -> Alert {
    let (summary, value) = text("25h");
    Alert {
        state: AlertState::Firing,
        since: Some(at(since)),
        breach_started: Some(at(since)),
        last_notified_at: Some(at(notified)),
        summary,
        value,
        ..Alert::default()
    }
}

fn resolved(when: i64) -> Alert {
    let (summary, value) = text("25h");
    Alert {
        state: AlertState::Resolved,
        since: Some(at(when)),
        last_notified_at: Some(at(when)),
        summary,
        value,
        ..Alert::default()
    }
}

struct Case {
    name: &'static str,
    before: Alert,
    outcome: Outcome,
    cfg: Lifecycle,
    now: i64,
    after: Alert,
    /// `(to, event)` of the expected transition; `from` is always `before.state`.
    transition: Option<(AlertState, Option<Event>)>,
}

#[test]
fn every_state_outcome_and_timing_combination_steps_as_designed() {
    let (s26, v26) = text("26h");
    let defaults = Lifecycle::default();
    let cases = vec![
        // Inactive.
        Case {
            name: "inactive stays inactive on ok",
            before: Alert::default(),
            outcome: Outcome::Ok,
            cfg: defaults,
            now: 60,
            after: Alert::default(),
            transition: None,
        },
        Case {
            name: "inactive holds on unknown",
            before: Alert::default(),
            outcome: unknown(),
            cfg: defaults,
            now: 60,
            after: Alert::default(),
            transition: None,
        },
        Case {
            name: "inactive fires at once on a breach when pending_for is 0",
            before: Alert::default(),
            outcome: breach("26h"),
            cfg: defaults,
            now: 60,
            after: Alert {
                state: AlertState::Firing,
                since: Some(at(60)),
                breach_started: Some(at(60)),
                last_notified_at: Some(at(60)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Firing, Some(Event::Firing))),
        },
        Case {
            name: "inactive goes pending silently on a breach when pending_for is set",
            before: Alert::default(),
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 60,
            after: Alert {
                state: AlertState::Pending,
                since: Some(at(60)),
                breach_started: Some(at(60)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Pending, None)),
        },
        // Resolved.
        Case {
            name: "resolved stays resolved on ok",
            before: resolved(30),
            outcome: Outcome::Ok,
            cfg: defaults,
            now: 60,
            after: resolved(30),
            transition: None,
        },
        Case {
            name: "resolved holds on unknown",
            before: resolved(30),
            outcome: unknown(),
            cfg: defaults,
            now: 60,
            after: resolved(30),
            transition: None,
        },
        Case {
            name: "resolved fires again at once on a breach when pending_for is 0",
            before: resolved(30),
            outcome: breach("26h"),
            cfg: defaults,
            now: 60,
            after: Alert {
                state: AlertState::Firing,
                since: Some(at(60)),
                breach_started: Some(at(60)),
                last_notified_at: Some(at(60)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Firing, Some(Event::Firing))),
        },
        Case {
            name: "resolved goes pending silently on a breach when pending_for is set",
            before: resolved(30),
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 60,
            after: Alert {
                state: AlertState::Pending,
                since: Some(at(60)),
                breach_started: Some(at(60)),
                last_notified_at: Some(at(30)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Pending, None)),
        },
        // Pending.
        Case {
            name: "a pending alert that clears goes inactive and sends nothing",
            before: pending(50),
            outcome: Outcome::Ok,
            cfg: cfg(10, 0, 240, true),
            now: 55,
            after: Alert { state: AlertState::Inactive, since: Some(at(55)), breach_started: None, ..pending(50) },
            transition: Some((AlertState::Inactive, None)),
        },
        Case {
            name: "pending holds on unknown even after pending_for",
            before: pending(50),
            outcome: unknown(),
            cfg: cfg(10, 0, 240, true),
            now: 70,
            after: Alert { unknown_since: Some(at(70)), ..pending(50) },
            transition: None,
        },
        Case {
            name: "pending stays pending before pending_for elapses, with the new value",
            before: pending(50),
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 59,
            after: Alert { summary: s26.clone(), value: v26.clone(), ..pending(50) },
            transition: None,
        },
        Case {
            name: "pending fires once the breach has lasted pending_for",
            before: pending(50),
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 60,
            after: Alert {
                state: AlertState::Firing,
                since: Some(at(60)),
                breach_started: Some(at(50)),
                last_notified_at: Some(at(60)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Firing, Some(Event::Firing))),
        },
        Case {
            name: "pending fires at once when pending_for was lowered to 0",
            before: pending(50),
            outcome: breach("26h"),
            cfg: defaults,
            now: 51,
            after: Alert {
                state: AlertState::Firing,
                since: Some(at(51)),
                breach_started: Some(at(50)),
                last_notified_at: Some(at(51)),
                summary: s26.clone(),
                value: v26.clone(),
                ..Alert::default()
            },
            transition: Some((AlertState::Firing, Some(Event::Firing))),
        },
        Case {
            name: "a pending row without breach_started starts counting now",
            before: Alert { breach_started: None, ..pending(50) },
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 60,
            after: Alert { breach_started: Some(at(60)), summary: s26.clone(), value: v26.clone(), ..pending(50) },
            transition: None,
        },
        // Firing + unknown.
        Case {
            name: "firing holds on unknown, keeping ok_since and noting when the unknown stretch began",
            before: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            outcome: unknown(),
            cfg: cfg(0, 10, 240, true),
            now: 300,
            after: Alert { ok_since: Some(at(50)), unknown_since: Some(at(300)), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "firing without a resolve clock running holds on unknown without noting it",
            before: firing(0, 0),
            outcome: unknown(),
            cfg: cfg(0, 10, 240, true),
            now: 300,
            after: firing(0, 0),
            transition: None,
        },
        Case {
            name: "a longer unknown stretch keeps the time it began",
            before: Alert { unknown_since: Some(at(55)), ..pending(50) },
            outcome: unknown(),
            cfg: cfg(10, 0, 240, true),
            now: 70,
            after: Alert { unknown_since: Some(at(55)), ..pending(50) },
            transition: None,
        },
        Case {
            name: "a pending alert known again moves breach_started past the unknown stretch",
            before: Alert { unknown_since: Some(at(55)), ..pending(50) },
            outcome: breach("26h"),
            cfg: cfg(10, 0, 240, true),
            now: 70,
            after: Alert { breach_started: Some(at(65)), summary: s26.clone(), value: v26.clone(), ..pending(50) },
            transition: None,
        },
        Case {
            name: "a firing alert known again moves ok_since past the unknown stretch",
            before: Alert { ok_since: Some(at(50)), unknown_since: Some(at(52)), ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, true),
            now: 60,
            after: Alert { ok_since: Some(at(58)), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "an unknown stretch that began in the future (clock skew) moves nothing",
            before: Alert { ok_since: Some(at(50)), unknown_since: Some(at(90)), ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, true),
            now: 60,
            after: Alert { since: Some(at(60)), last_notified_at: Some(at(60)), ..resolved(0) },
            transition: Some((AlertState::Resolved, Some(Event::Resolved))),
        },
        // Firing + breach.
        Case {
            name: "firing updates the value without a reminder before repeat_interval",
            before: firing(0, 0),
            outcome: breach("26h"),
            cfg: defaults,
            now: 239,
            after: Alert { summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "firing sends a reminder once repeat_interval has passed",
            before: firing(0, 0),
            outcome: breach("26h"),
            cfg: defaults,
            now: 240,
            after: Alert { last_notified_at: Some(at(240)), summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: Some((AlertState::Firing, Some(Event::Repeat))),
        },
        Case {
            name: "an acked alert sends no reminder when one is due",
            before: Alert { acked: true, ..firing(0, 0) },
            outcome: breach("26h"),
            cfg: defaults,
            now: 480,
            after: Alert { acked: true, summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "an acked alert sends no reminder when none is due",
            before: Alert { acked: true, ..firing(0, 0) },
            outcome: breach("26h"),
            cfg: defaults,
            now: 10,
            after: Alert { acked: true, summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "a zero repeat_interval disables reminders",
            before: firing(0, 0),
            outcome: breach("26h"),
            cfg: cfg(0, 0, 0, true),
            now: 10_000,
            after: Alert { summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "a breach while waiting to resolve clears ok_since",
            before: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            outcome: breach("26h"),
            cfg: cfg(0, 10, 240, true),
            now: 55,
            after: Alert { summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "a firing row never notified gets a reminder",
            before: Alert { last_notified_at: None, ..firing(0, 0) },
            outcome: breach("26h"),
            cfg: defaults,
            now: 1,
            after: Alert { last_notified_at: Some(at(1)), summary: s26.clone(), value: v26.clone(), ..firing(0, 0) },
            transition: Some((AlertState::Firing, Some(Event::Repeat))),
        },
        // Firing + ok.
        Case {
            name: "firing resolves on the first ok when resolve_after is 0, clearing the ack",
            before: Alert { acked: true, ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: defaults,
            now: 60,
            after: Alert {
                state: AlertState::Resolved,
                since: Some(at(60)),
                last_notified_at: Some(at(60)),
                ..resolved(0)
            },
            transition: Some((AlertState::Resolved, Some(Event::Resolved))),
        },
        Case {
            name: "firing resolves silently when send_resolved is off",
            before: Alert { acked: true, ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 0, 240, false),
            now: 60,
            after: Alert { since: Some(at(60)), last_notified_at: Some(at(0)), ..resolved(0) },
            transition: Some((AlertState::Resolved, None)),
        },
        Case {
            name: "the first ok starts the resolve_after clock",
            before: firing(0, 0),
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, true),
            now: 50,
            after: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "firing keeps firing while ok has lasted less than resolve_after",
            before: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, true),
            now: 59,
            after: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            transition: None,
        },
        Case {
            name: "firing resolves once ok has lasted resolve_after",
            before: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, true),
            now: 60,
            after: Alert { since: Some(at(60)), last_notified_at: Some(at(60)), ..resolved(0) },
            transition: Some((AlertState::Resolved, Some(Event::Resolved))),
        },
        Case {
            name: "firing resolves silently after resolve_after when send_resolved is off",
            before: Alert { ok_since: Some(at(50)), ..firing(0, 0) },
            outcome: Outcome::Ok,
            cfg: cfg(0, 10, 240, false),
            now: 60,
            after: Alert { since: Some(at(60)), last_notified_at: Some(at(0)), ..resolved(0) },
            transition: Some((AlertState::Resolved, None)),
        },
    ];
    for c in cases {
        let (after, transition) = step(&c.before, &c.outcome, &c.cfg, at(c.now));
        assert_eq!(after, c.after, "{}: alert", c.name);
        let want = c.transition.map(|(to, event)| Transition {
            from: c.before.state,
            to,
            at: at(c.now),
            event,
            summary: c.after.summary.clone(),
            value: c.after.value.clone(),
        });
        assert_eq!(transition, want, "{}: transition", c.name);
    }
}

#[test]
fn time_while_the_rule_is_unknown_counts_toward_neither_pending_for_nor_resolve_after() {
    let u = unknown;
    let b = || breach("26h");
    let ok = || Outcome::Ok;
    // (name, lifecycle, starting alert, (minute, outcome) evaluations, (minute, to, event) of the transitions)
    type Steps = Vec<(i64, Outcome)>;
    type Want = Vec<(i64, AlertState, Option<Event>)>;
    let cases: Vec<(&str, Lifecycle, Alert, Steps, Want)> = vec![
        (
            "pending_for counts only the known breach before and after an outage",
            cfg(10, 0, 240, true),
            Alert::default(),
            vec![(0, b()), (3, u()), (20, u()), (25, b()), (31, b()), (32, b())],
            // 0→3 and 25→32 breaching: 10 minutes at 32, not 25 minutes at 25.
            vec![(0, AlertState::Pending, None), (32, AlertState::Firing, Some(Event::Firing))],
        ),
        (
            "resolve_after counts only the known ok before and after an outage",
            cfg(0, 10, 240, true),
            firing(0, 0),
            vec![(100, ok()), (105, u()), (130, u()), (140, ok()), (144, ok()), (145, ok())],
            // 100→105 and 140→145 ok.
            vec![(145, AlertState::Resolved, Some(Event::Resolved))],
        ),
        (
            "an outage before the first ok delays nothing",
            cfg(0, 10, 240, true),
            firing(0, 0),
            vec![(10, u()), (50, u()), (60, ok()), (70, ok())],
            vec![(70, AlertState::Resolved, Some(Event::Resolved))],
        ),
        (
            "a pending alert that clears after an outage goes inactive",
            cfg(10, 0, 240, true),
            Alert::default(),
            vec![(0, b()), (5, u()), (50, ok()), (51, b()), (61, b())],
            vec![
                (0, AlertState::Pending, None),
                (50, AlertState::Inactive, None),
                (51, AlertState::Pending, None),
                (61, AlertState::Firing, Some(Event::Firing)),
            ],
        ),
        (
            "two outages both count for nothing",
            cfg(10, 0, 240, true),
            Alert::default(),
            vec![(0, b()), (2, u()), (30, b()), (34, u()), (90, b()), (95, b()), (96, b())],
            // 0→2, 30→34, 90→94 breaching: 10 minutes at 94, first seen at 95.
            vec![(0, AlertState::Pending, None), (95, AlertState::Firing, Some(Event::Firing))],
        ),
    ];
    for (name, cfg, start, steps, want) in cases {
        let mut alert = start;
        let mut got = Vec::new();
        for (min, outcome) in &steps {
            // Through JSON between evaluations: what a restart reloads must be enough.
            let reloaded: Alert = serde_json::from_str(&serde_json::to_string(&alert).unwrap()).unwrap();
            let (next, t) = step(&reloaded, outcome, &cfg, at(*min));
            got.extend(t.map(|t| (*min, t.to, t.event)));
            alert = next;
        }
        assert_eq!(got, want, "{name}");
        assert_eq!(alert.unknown_since, None, "{name}: the last evaluation was known");
    }
}

#[test]
fn ack_only_takes_on_a_firing_alert() {
    assert!(ack(&firing(0, 0)).acked);
    assert_eq!(ack(&firing(0, 0)), Alert { acked: true, ..firing(0, 0) });
    for alert in [Alert::default(), pending(0), resolved(0)] {
        assert_eq!(ack(&alert), alert, "{}", alert.state);
    }
}

#[test]
fn an_ack_stops_reminders_until_resolve_and_then_clears_itself() {
    let cfg = Lifecycle::default();
    let (alert, t) = step(&Alert::default(), &breach("25h"), &cfg, at(0));
    assert_eq!(t.and_then(|t| t.event), Some(Event::Firing));
    let alert = ack(&alert);
    let (alert, t) = step(&alert, &breach("29h"), &cfg, at(240));
    assert_eq!(t, None);
    let (alert, t) = step(&alert, &Outcome::Ok, &cfg, at(300));
    assert_eq!(t.and_then(|t| t.event), Some(Event::Resolved));
    assert!(!alert.acked);
    let (alert, _) = step(&alert, &breach("25h"), &cfg, at(2000));
    let (_, t) = step(&alert, &breach("29h"), &cfg, at(2240));
    assert_eq!(t.and_then(|t| t.event), Some(Event::Repeat), "a new incident reminds again");
}

#[test]
fn names_round_trip_through_as_str_parse_and_serde() {
    for s in AlertState::ALL {
        assert_eq!(AlertState::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    for e in Event::ALL {
        assert_eq!(Event::parse(e.as_str()), Some(e));
        assert_eq!(serde_json::to_string(&e).unwrap(), format!("\"{e}\""));
    }
    assert_eq!(AlertState::parse("Firing"), None);
    let alert = Alert { acked: true, ok_since: Some(at(3)), unknown_since: Some(at(4)), ..firing(1, 2) };
    let back: Alert = serde_json::from_str(&serde_json::to_string(&alert).unwrap()).unwrap();
    assert_eq!(back, alert);
}

fn series() -> SeriesKey {
    SeriesKey {
        target: "prod-cn-north-4".into(),
        account: "prod".into(),
        region: "cn-north-4".into(),
        project_id: "0123456789abcdef0123456789abcdef".into(),
        enterprise_project_id: Some("all_granted_eps".into()),
        task_type: TaskType::ClusterScan,
    }
}

#[test]
fn fingerprints_are_stable_across_releases() {
    // Computed independently: sha256 over length-prefixed (u64 BE) fields, first 8 bytes in hex.
    assert_eq!(fingerprint(RuleName::NoRecentScan, &series()), "f489f9ccac8c8ef6");
    assert_eq!(
        fingerprint(RuleName::PollFailing, &SeriesKey { enterprise_project_id: None, ..series() }),
        "54cf57d8af35b36a"
    );
}

#[test]
fn fingerprints_ignore_the_target_name_but_not_the_identity_labels() {
    let base = fingerprint(RuleName::NoRecentScan, &series());
    assert_eq!(base.len(), 16);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let renamed = SeriesKey { target: "renamed".into(), ..series() };
    assert_eq!(fingerprint(RuleName::NoRecentScan, &renamed), base);

    let variants = [
        SeriesKey { account: "staging".into(), ..series() },
        SeriesKey { region: "cn-south-1".into(), ..series() },
        SeriesKey { project_id: "ffff".into(), ..series() },
        SeriesKey { enterprise_project_id: None, ..series() },
        SeriesKey { enterprise_project_id: Some("0".into()), ..series() },
        SeriesKey { task_type: TaskType::IacScan, ..series() },
    ];
    let mut seen = std::collections::HashSet::from([base]);
    for v in &variants {
        assert!(seen.insert(fingerprint(RuleName::NoRecentScan, v)), "{v:?} collides");
    }
    for rule in RuleName::ALL {
        if rule != RuleName::NoRecentScan {
            assert!(seen.insert(fingerprint(rule, &series())), "{rule} collides");
        }
    }
    // Field boundaries are unambiguous: moving characters between labels changes the fingerprint.
    let shifted = SeriesKey { account: "prodc".into(), region: "n-north-4".into(), ..series() };
    assert_ne!(fingerprint(RuleName::NoRecentScan, &shifted), fingerprint(RuleName::NoRecentScan, &series()));
}

/// Three days of half-hourly polls: a scan every 6h until hour 24, then silence; polls fail from 57h to 59h30; a
/// scan at 59h45 brings the series back.
fn three_days() -> Vec<Snapshot> {
    (0..=144)
        .map(|i: i64| {
            let min = i * 30;
            let polled_at = at(min);
            let failing = (57 * 60..60 * 60).contains(&min);
            let last_start = if min >= 60 * 60 { 59 * 60 + 45 } else { (min.min(24 * 60) / 360) * 360 };
            Snapshot {
                task: None,
                id: i,
                series_id: 7,
                polled_at,
                stats: (!failing).then(|| TaskStats {
                    total_num: u64::try_from(last_start / 360 + 1).unwrap(),
                    running_num: 0,
                    last_task_start_time: Some(at(last_start).timestamp_millis()),
                }),
                latency_ms: 30,
                http_status: Some(if failing { 503 } else { 200 }),
                error_kind: failing.then_some(ErrorKind::Server),
                error_code: None,
                error_message: failing.then(|| "Service Unavailable".to_string()),
                request_id: None,
            }
        })
        .collect()
}

type Brief = (AlertState, AlertState, DateTime<Utc>, Option<Event>, String);

fn brief(ts: &[Transition]) -> Vec<Brief> {
    ts.iter().map(|t| (t.from, t.to, t.at, t.event, t.value.clone())).collect()
}

/// That replay gives the transitions of the live run (`poller::record`, on a real store) is tested there; here,
/// what it gives for a known history, and that it is deterministic and can be split.
#[test]
fn replaying_history_gives_the_expected_transitions_in_one_go_or_in_two_halves() {
    let history = three_days();
    let set = RuleSet {
        no_recent_scan: Some((NoRecentScan::default(), crate::rules::Severity::Critical)),
        ..RuleSet::none()
    };
    let cfg = Lifecycle::default();
    let (end, replayed) = replay(RuleName::NoRecentScan, &set, &cfg, &series(), &history, at(0), Alert::default());

    let h = |hours: i64, mins: i64| at(hours * 60 + mins);
    assert_eq!(
        brief(&replayed),
        vec![
            (AlertState::Inactive, AlertState::Firing, h(48, 30), Some(Event::Firing), "24h30m".to_string()),
            (AlertState::Firing, AlertState::Firing, h(52, 30), Some(Event::Repeat), "28h30m".to_string()),
            (AlertState::Firing, AlertState::Firing, h(56, 30), Some(Event::Repeat), "32h30m".to_string()),
            (AlertState::Firing, AlertState::Resolved, h(60, 0), Some(Event::Resolved), "32h30m".to_string()),
        ]
    );
    assert_eq!(end.state, AlertState::Resolved);

    // The same again: deterministic.
    let (_, again) = replay(RuleName::NoRecentScan, &set, &cfg, &series(), &history, at(0), Alert::default());
    assert_eq!(again, replayed);

    // Replaying in two halves, carrying the alert over, changes nothing either.
    let (mid, first) = replay(RuleName::NoRecentScan, &set, &cfg, &series(), &history[..100], at(0), Alert::default());
    let (_, second) = replay(RuleName::NoRecentScan, &set, &cfg, &series(), &history, history[100].polled_at, mid);
    assert_eq!([first, second].concat(), replayed);
}

#[test]
fn replay_uses_history_before_from_for_windows_but_reports_only_after_it() {
    let history = three_days();
    let set = RuleSet::default();
    let cfg = Lifecycle::default();
    let (_, from_50h) = replay(RuleName::NoRecentScan, &set, &cfg, &series(), &history, at(50 * 60), Alert::default());
    let events: Vec<_> = from_50h.iter().map(|t| (t.at, t.event)).collect();
    assert_eq!(
        events,
        vec![
            (at(50 * 60), Some(Event::Firing)),
            (at(54 * 60), Some(Event::Repeat)),
            (at(60 * 60), Some(Event::Resolved)),
        ]
    );
    let (_, poll_failing) = replay(RuleName::PollFailing, &set, &cfg, &series(), &history, at(0), Alert::default());
    let events: Vec<_> = poll_failing.iter().map(|t| (t.at, t.to, t.event)).collect();
    assert_eq!(
        events,
        vec![
            // The first failure comes 30 minutes after the last success: no successful poll for `for`.
            (at(57 * 60), AlertState::Firing, Some(Event::Firing)),
            (at(60 * 60), AlertState::Resolved, Some(Event::Resolved)),
        ]
    );
}

#[test]
fn replaying_a_disabled_rule_changes_nothing() {
    let start = firing(0, 0);
    let (end, transitions) = replay(
        RuleName::StuckRunning,
        &RuleSet::none(),
        &Lifecycle::default(),
        &series(),
        &three_days(),
        at(0),
        start.clone(),
    );
    assert_eq!((end, transitions), (start, vec![]));
}
