//! Live evaluation: one poll result → one transaction holding the snapshot, every alert state it changed and every
//! transition. A crash before the commit leaves none of them; after it, all of them. Evaluation time is the
//! snapshot's `polled_at`, which is also what `replay` uses, so replaying stored history gives the live transitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::alerting::silence::silenced_by;
use crate::alerting::{Alert, AlertState, Event, Lifecycle, Transition, fingerprint, step};
use crate::model::{AlertContext, PollRecord, SeriesKey};
use crate::notify::AlertNotice;
use crate::notify::outbox::{Route, route};
use crate::rules::{self, RuleName, RuleSet, Severity};
use crate::store::SilenceRow;
use crate::store::{Store, StoreError, WriteJob, WriteTx};
use futures_util::future::BoxFuture;

/// One alert's change of state, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertChange {
    pub fingerprint: String,
    pub rule: RuleName,
    pub severity: Severity,
    pub series: SeriesKey,
    pub transition: Transition,
    /// The alert after the change.
    pub alert: Alert,
}

/// What recording one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub snapshot_id: i64,
    pub changes: Vec<AlertChange>,
}

/// Where alert changes go: the target's user labels, the channels' routes and the silences in force.
#[derive(Clone, Copy, Default)]
pub struct Outbox<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub routes: &'a [Arc<dyn Route>],
    pub silences: &'a [SilenceRow],
    /// The task behind an alert, per rule, fetched before recording (see [`PollWrite::contexts`]); a notice of such
    /// a rule carries it.
    pub contexts: &'a [(RuleName, AlertContext)],
}

/// Stores `record` for the series, evaluates its rules and writes the outbox notices of every change, all in one
/// transaction of its own (the poller commits its polls together instead: [`PollWrite`]).
#[allow(clippy::too_many_arguments)]
pub async fn record_and_evaluate(
    store: &Store,
    series_id: i64,
    key: &SeriesKey,
    rule_set: &RuleSet,
    lifecycle: &Lifecycle,
    record: &PollRecord,
    sent: bool,
    outbox: Outbox<'_>,
) -> Result<Recorded, StoreError> {
    let mut tx = store.begin_write().await?;
    let poll = Poll { series_id, key, rule_set, lifecycle, record, sent };
    let written = write_poll(&mut tx, &poll, outbox, true).await?;
    tx.commit().await?;
    match written {
        Written::Recorded(r) => {
            log_changes(key, &r.changes);
            Ok(r)
        }
        // Not with contexts known; kept total rather than unreachable.
        Written::NeedsContexts(_) => Err(StoreError::Shared { cause: "the poll was not recorded".into() }),
    }
}

/// One poll to record, owned, so that the store's writer can commit it together with other polls
/// ([`Store::write`]).
#[derive(Clone)]
pub struct PollWrite {
    pub series_id: i64,
    pub key: SeriesKey,
    pub rules: RuleSet,
    pub lifecycle: Lifecycle,
    pub record: PollRecord,
    pub sent: bool,
    pub labels: Arc<BTreeMap<String, String>>,
    pub routes: Arc<[Arc<dyn Route>]>,
    pub silences: Arc<[SilenceRow]>,
    /// The task behind an alert, per rule, fetched from HSS for this poll; `None` when not fetched yet. Then a poll
    /// whose data alert (other than `scan_failures`, which carries its own check) is about to fire or remind writes
    /// nothing and answers [`Written::NeedsContexts`]: the poller fetches them and writes again, so that every
    /// notice goes out with its context or says why it has none. Only then: a context costs calls.
    pub contexts: Option<Vec<(RuleName, AlertContext)>>,
}

/// What writing a [`PollWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Recorded(Recorded),
    /// Nothing was written: these rules' alerts are about to notify, and their contexts are wanted first.
    NeedsContexts(Vec<RuleName>),
}

impl WriteJob for PollWrite {
    type Output = Written;

    fn write<'t>(&'t mut self, tx: &'t mut WriteTx) -> BoxFuture<'t, Result<Written, StoreError>> {
        Box::pin(async move {
            let poll = Poll {
                series_id: self.series_id,
                key: &self.key,
                rule_set: &self.rules,
                lifecycle: &self.lifecycle,
                record: &self.record,
                sent: self.sent,
            };
            let outbox = Outbox {
                labels: Some(&self.labels),
                routes: &self.routes,
                silences: &self.silences,
                contexts: self.contexts.as_deref().unwrap_or_default(),
            };
            write_poll(tx, &poll, outbox, self.contexts.is_some()).await
        })
    }

    fn reads_state_of(&self) -> Option<i64> {
        Some(self.series_id)
    }
}

/// The poll being recorded.
struct Poll<'a> {
    series_id: i64,
    key: &'a SeriesKey,
    rule_set: &'a RuleSet,
    lifecycle: &'a Lifecycle,
    record: &'a PollRecord,
    sent: bool,
}

/// Logs each transition, once its poll is committed.
pub fn log_changes(key: &SeriesKey, changes: &[AlertChange]) {
    for c in changes {
        let t = &c.transition;
        tracing::info!(series = %key, rule = %c.rule, from = t.from.as_str(), to = t.to.as_str(), summary = %t.summary, "alert transition");
    }
}

/// One rule's evaluation of a poll: its alert as stored (if it has a row), before and after, and the transition.
struct Step {
    rule: RuleName,
    severity: Severity,
    fp: String,
    stored: Option<crate::store::AlertRow>,
    current: Alert,
    next: Alert,
    transition: Option<Transition>,
}

/// Reads the series' rule state and alerts, evaluates the poll, and — unless a context is wanted first and
/// `contexts_known` is false — writes the snapshot, the rule state, the alert rows and the outbox notices.
async fn write_poll(
    tx: &mut WriteTx,
    poll: &Poll<'_>,
    outbox: Outbox<'_>,
    contexts_known: bool,
) -> Result<Written, StoreError> {
    let Poll { series_id, key, rule_set, lifecycle, record, sent } = *poll;
    // The rule state this poll leads to: one row read, however long the history.
    let mut next = tx.next_state(series_id, record).await?;
    let now = record.polled_at;
    let outcomes = next.state.evaluate_all(rule_set, key, now);
    let fingerprints: Vec<String> = outcomes.iter().map(|(rule, _, _)| fingerprint(*rule, key)).collect();
    // A series that has never had an alert row (most of a healthy fleet) reads none.
    let mut stored_alerts = if next.alerted { tx.series_alerts(series_id, &fingerprints).await? } else { Vec::new() };
    let had_alerts = !stored_alerts.is_empty();
    let steps: Vec<Step> = outcomes
        .into_iter()
        .zip(fingerprints)
        .map(|((rule, severity, outcome), fp)| {
            let stored = stored_alerts.iter().position(|a| a.fingerprint == fp).map(|i| stored_alerts.swap_remove(i));
            let current = stored.as_ref().map(|r| r.alert.clone()).unwrap_or_default();
            let (next, transition) = step(&current, &outcome, lifecycle, now);
            Step { rule, severity, fp, stored, current, next, transition }
        })
        .collect();
    if !contexts_known && record.outcome.is_ok() {
        let notifying: Vec<RuleName> = steps
            .iter()
            .filter(|s| {
                s.transition.as_ref().and_then(|t| t.event).is_some_and(|e| matches!(e, Event::Firing | Event::Repeat))
            })
            .map(|s| s.rule)
            .collect();
        if notifying.iter().any(|r| r.is_data_rule() && *r != RuleName::ScanFailures) {
            return Ok(Written::NeedsContexts(notifying));
        }
    }
    // Rows read stay (alerts are never deleted), and a breach saves one: then the series reads its alerts again.
    next.alerted = had_alerts || steps.iter().any(|s| s.next != Alert::default());
    let snapshot_id = tx.store_snapshot(series_id, record, sent, &next).await?;
    let state = &next.state;
    // scan_failures' alerts carry what the latest task check found: which clusters or files failed, and why.
    let latest_check = state.task.clone();
    if let Some(skew) = state.future_start_skew(now) {
        tracing::warn!(series = %key, ahead = %rules::human_duration(skew), "last_task_start_time is in the future (clock skew?); treating its age as 0");
    }
    let mut changes = Vec::new();
    for Step { rule, severity, fp, stored, current, next, transition } in steps {
        // Series that never breached keep no row; everything else is saved so the state survives a restart.
        if stored.is_none() && next == Alert::default() {
            continue;
        }
        let untold = stored.as_ref().is_some_and(|r| r.firing_suppressed);
        let event = transition.as_ref().and_then(|t| t.event);
        let notice = |event: Event| AlertNotice {
            fingerprint: fp.clone(),
            rule,
            severity,
            event,
            series: key.clone(),
            labels: outbox.labels.cloned().unwrap_or_default(),
            summary: next.summary.clone(),
            value: next.value.clone(),
            // A new alert fires now; reminders and resolutions count from when it started firing.
            since: if event == Event::Firing && current.state != AlertState::Firing {
                now
            } else {
                current.since.unwrap_or(now)
            },
            at: now,
            context: if rule == RuleName::ScanFailures {
                latest_check.clone()
            } else {
                outbox.contexts.iter().find(|(r, _)| *r == rule).map(|(_, c)| c.clone())
            },
        };
        let silenced = {
            let probe = notice(Event::Firing);
            silenced_by(outbox.silences, &crate::notify::outbox::notice_labels(&probe), now).is_some()
        };
        let (to_write, untold_after) = notice_to_write(event, next.state == AlertState::Firing, untold, silenced);
        let alert_id = tx.save_alert(&fp, series_id, rule, severity, &next, Some(snapshot_id), untold_after).await?;
        if let Some((e, suppressed)) = to_write {
            let n = notice(e);
            if let Some(context) = &n.context {
                tx.set_alert_context(alert_id, context).await?;
            }
            for channel in route(outbox.routes, &n) {
                tx.insert_notice(channel, &n, suppressed).await?;
            }
        }
        if let Some(t) = transition {
            tx.insert_transition(alert_id, Some(snapshot_id), &t).await?;
            changes.push(AlertChange {
                fingerprint: fp,
                rule,
                severity,
                series: key.clone(),
                transition: t,
                alert: next,
            });
        }
    }
    Ok(Written::Recorded(Recorded { snapshot_id, changes }))
}

/// What one evaluation writes to the outbox — `(event, suppressed)` — and whether receivers are still untold
/// afterwards (the alert's `firing_suppressed`), given the transition's `event`, whether the alert now fires,
/// whether receivers were `untold` it fires, and whether a silence covers it now.
///
/// A silence mutes firings and reminders, which are recorded as suppressed. It never swallows the resolve of an
/// incident receivers were told about; a resolve nobody was told about is recorded as suppressed. Once the silence
/// is over, an alert that still fires and was never told goes out as a firing — once, and as a firing even when a
/// reminder falls due at that moment, since receivers cannot be reminded of what they never had.
fn notice_to_write(event: Option<Event>, firing: bool, untold: bool, silenced: bool) -> (Option<(Event, bool)>, bool) {
    match event {
        Some(Event::Firing) => (Some((Event::Firing, silenced)), silenced),
        Some(Event::Repeat) if silenced => (Some((Event::Repeat, true)), untold),
        Some(Event::Repeat) if untold => (Some((Event::Firing, false)), false),
        Some(Event::Repeat) => (Some((Event::Repeat, false)), false),
        Some(Event::Resolved) => (Some((Event::Resolved, untold)), false),
        None if firing && untold && !silenced => (Some((Event::Firing, false)), false),
        None => (None, firing && untold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::AlertState;
    use crate::model::{ErrorKind, PollError, TaskStats, TaskType};
    use chrono::{DateTime, Utc};

    fn key() -> SeriesKey {
        SeriesKey {
            target: "t".into(),
            account: "a".into(),
            region: "cn-north-4".into(),
            project_id: "p".into(),
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        }
    }

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + min * 60, 0).unwrap()
    }

    fn fresh(min: i64) -> PollRecord {
        PollRecord {
            task: None,
            polled_at: at(min),
            latency_ms: 5,
            outcome: Ok(TaskStats {
                total_num: 10,
                running_num: 0,
                last_task_start_time: Some(at(min).timestamp_millis()),
            }),
            http_status: Some(200),
            request_id: None,
        }
    }

    fn failing(min: i64) -> PollRecord {
        PollRecord {
            task: None,
            polled_at: at(min),
            latency_ms: 5,
            outcome: Err(PollError::new(ErrorKind::Server, "503")),
            http_status: None,
            request_id: None,
        }
    }

    /// A new database on a real file, with the test series registered.
    async fn fresh_store() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let id = store.ensure_series(&key()).await.unwrap();
        (dir, store, id)
    }

    /// Only `poll_failing`, firing after `after` failed polls (or an hour without a good one).
    fn poll_failing_after(after: u32) -> RuleSet {
        let mut set = RuleSet::none();
        set.poll_failing =
            Some((rules::PollFailing { after, for_: std::time::Duration::from_secs(3600) }, Severity::Critical));
        set
    }

    #[tokio::test]
    async fn poll_failing_fires_once_and_resolves_with_every_transition_stored() {
        let (_dir, store, id) = fresh_store().await;
        let set = poll_failing_after(2);
        let lc = Lifecycle::default();
        let mut events = Vec::new();
        for (i, rec) in [fresh(0), failing(1), failing(2), failing(3), fresh(4)].iter().enumerate() {
            let r = record_and_evaluate(&store, id, &key(), &set, &lc, rec, true, Outbox::default()).await.unwrap();
            for c in r.changes {
                events.push((i, c.transition.to, c.transition.event));
            }
        }
        use crate::alerting::Event;
        assert_eq!(
            events,
            vec![(2, AlertState::Firing, Some(Event::Firing)), (4, AlertState::Resolved, Some(Event::Resolved))]
        );
        let log = store.transitions(None, None).await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(store.alerts(false).await.unwrap().len(), 0, "nothing active after resolving");
        assert_eq!(store.alerts(true).await.unwrap()[0].alert.state, AlertState::Resolved);
    }

    async fn alerted(store: &Store, id: i64) -> bool {
        let mut tx = store.begin_write().await.unwrap();
        let flag: bool = sqlx::query_scalar("SELECT alerted FROM series_state WHERE series_id = ?1")
            .bind(id)
            .fetch_one(tx.inner())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        flag
    }

    /// A series that never had an alert row skips reading its alerts (`series_state.alerted`); one that moves to
    /// other HSS coordinates reads them again, and resolves the alert another series left under them — without the
    /// migration's trigger it would skip the read, and that alert would fire forever.
    #[tokio::test]
    async fn a_series_reads_its_alerts_again_when_it_moves_to_coordinates_with_an_alert() {
        let (_dir, store, a) = fresh_store().await;
        let set = poll_failing_after(1);
        let lc = Lifecycle::default();
        let other = SeriesKey { target: "u".into(), project_id: "q".into(), ..key() };
        let b = store.ensure_series(&other).await.unwrap();
        record_and_evaluate(&store, a, &key(), &set, &lc, &failing(0), true, Outbox::default()).await.unwrap();
        record_and_evaluate(&store, b, &other, &set, &lc, &fresh(0), true, Outbox::default()).await.unwrap();
        assert!(alerted(&store, a).await, "a series with an alert reads its alerts");
        assert!(!alerted(&store, b).await, "a healthy series with no alert row skips the read");
        record_and_evaluate(&store, b, &other, &set, &lc, &fresh(1), true, Outbox::default()).await.unwrap();
        // Registering the same coordinates again (every start does) changes nothing.
        assert_eq!(store.ensure_series(&other).await.unwrap(), b);
        assert!(!alerted(&store, b).await);

        // `u` is pointed at the coordinates of `t` (whose target is gone from the config): the alert `t` left
        // firing is `u`'s now, and `u` is healthy.
        let moved = SeriesKey { target: "u".into(), ..key() };
        assert_eq!(store.ensure_series(&moved).await.unwrap(), b);
        assert!(alerted(&store, b).await, "the coordinates changed: read the alerts again");
        let r = record_and_evaluate(&store, b, &moved, &set, &lc, &fresh(2), true, Outbox::default()).await.unwrap();
        assert_eq!(r.changes.len(), 1, "{r:?}");
        assert_eq!(r.changes[0].transition.to, AlertState::Resolved);
        assert!(store.alerts(false).await.unwrap().is_empty(), "nothing left firing");
        assert!(alerted(&store, b).await, "it has an alert row now");
    }

    #[tokio::test]
    async fn a_series_that_never_breaches_keeps_no_alert_rows() {
        let (_dir, store, id) = fresh_store().await;
        for m in 0..3 {
            let (set, lc) = (RuleSet::default(), Lifecycle::default());
            record_and_evaluate(&store, id, &key(), &set, &lc, &fresh(m), true, Outbox::default()).await.unwrap();
        }
        assert!(store.alerts(true).await.unwrap().is_empty());
    }

    struct All;
    impl Route for All {
        fn channel(&self) -> &str {
            "hook"
        }
        fn accepts(&self, _: &AlertNotice) -> bool {
            true
        }
    }

    /// A channel that records what it is sent.
    #[derive(Default)]
    struct Inbox(std::sync::Mutex<Vec<crate::notify::Notification>>);

    #[async_trait::async_trait]
    impl crate::notify::Channel for Inbox {
        fn name(&self) -> &str {
            "hook"
        }
        fn kind(&self) -> &'static str {
            "webhook"
        }
        async fn send(
            &self,
            n: &crate::notify::Notification,
        ) -> Result<crate::notify::Delivered, crate::notify::DeliveryError> {
            self.0.lock().unwrap().push(n.clone());
            Ok(crate::notify::Delivered { status: 200, detail: "ok".into() })
        }
    }

    /// Channel `hook`, taking every alert, grouped by `group_by`.
    struct Grouped(Vec<String>);
    impl Route for Grouped {
        fn channel(&self) -> &str {
            "hook"
        }
        fn accepts(&self, _: &AlertNotice) -> bool {
            true
        }
        fn group_by(&self) -> &[String] {
            &self.0
        }
    }

    /// Three series — target `t` cluster and IaC scans, target `u` cluster scans — each polled by `poll_failing`
    /// (after 1) through `lc`, dispatched after every minute's polls through the real dispatcher grouping by
    /// `group_by`. `script[m]` says, per series, whether its poll at minute `m + 1` fails. Returns each minute's
    /// messages as (group key, [(target/task type, event)]), plus the webhook body of the last one.
    async fn grouped_messages(
        group_by: &[&str],
        lc: Lifecycle,
        script: &[[bool; 3]],
        silence_t_cluster_from: Option<i64>,
    ) -> Vec<Vec<(String, Vec<(String, Event)>)>> {
        use crate::model::TaskType;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).await.unwrap();
        let series = [("t", TaskType::ClusterScan), ("t", TaskType::IacScan), ("u", TaskType::ClusterScan)].map(
            |(target, task_type)| SeriesKey {
                target: target.into(),
                project_id: if target == "t" { "p" } else { "q" }.into(),
                task_type,
                ..key()
            },
        );
        let mut ids = Vec::new();
        for k in &series {
            ids.push(store.ensure_series(k).await.unwrap());
        }
        let set = poll_failing_after(1);
        let route = Arc::new(Grouped(group_by.iter().map(|s| s.to_string()).collect()));
        let routes: Vec<Arc<dyn Route>> = vec![route];
        let inbox = Arc::new(Inbox::default());
        let dispatcher =
            crate::notify::outbox::Dispatcher::new(vec![inbox.clone()], std::time::Duration::from_secs(3600))
                .with_routes(routes.clone());
        if let Some(from) = silence_t_cluster_from {
            let matchers = BTreeMap::from([
                ("target".to_string(), "t".to_string()),
                ("task_type".to_string(), "cluster_scan".to_string()),
            ]);
            store.add_silence(&matchers, at(from), at(1000), "me", "maintenance", at(from)).await.unwrap();
        }
        let mut minutes = Vec::new();
        for (m, fails) in script.iter().enumerate() {
            let minute = i64::try_from(m).unwrap() + 1;
            let silences = store.silences(at(minute), false).await.unwrap();
            let outbox = Outbox { labels: None, routes: &routes, silences: &silences, contexts: &[] };
            for ((k, id), fail) in series.iter().zip(&ids).zip(fails) {
                let rec = if *fail { failing(minute) } else { fresh(minute) };
                record_and_evaluate(&store, *id, k, &set, &lc, &rec, true, outbox).await.unwrap();
            }
            let far = std::time::Instant::now() + std::time::Duration::from_secs(30);
            dispatcher.dispatch_due(&store, at(minute), far).await.unwrap();
            // A notification announces what changed; what it only lists (still firing, as `Repeat`: these scripts
            // are too short for reminders) is not among its fingerprints.
            for row in store.notifications(None, 100).await.unwrap() {
                let announced: Vec<&str> = row
                    .notification
                    .alerts
                    .iter()
                    .filter(|a| a.event != Event::Repeat)
                    .map(|a| a.fingerprint.as_str())
                    .collect();
                let mut fps: Vec<&str> = row.fingerprints.iter().map(String::as_str).collect();
                fps.sort_unstable();
                let mut announced = announced;
                announced.sort_unstable();
                assert_eq!(fps, announced);
            }
            let sent = std::mem::take(&mut *inbox.0.lock().unwrap());
            let mut this: Vec<(String, Vec<(String, Event)>)> = sent
                .iter()
                .map(|n| {
                    let alerts = n
                        .alerts
                        .iter()
                        .map(|a| (format!("{}/{}", a.series.target, a.series.task_type), a.event))
                        .collect();
                    (n.group_key(), alerts)
                })
                .collect();
            this.sort_by(|a, b| a.0.cmp(&b.0));
            minutes.push(this);
        }
        minutes
    }

    const T: &str = "{}/{channel=\"hook\"}:{target=\"t\"}";
    const U: &str = "{}/{channel=\"hook\"}:{target=\"u\"}";

    fn listed(items: &[(&str, Event)]) -> Vec<(String, Event)> {
        items.iter().map(|(s, e)| (s.to_string(), *e)).collect()
    }

    #[tokio::test]
    async fn a_grouped_channel_sends_one_message_per_group_listing_the_groups_alerts_that_still_fire() {
        let minutes = grouped_messages(
            &["target"],
            Lifecycle::default(),
            &[[true, true, true], [true, false, true], [true, true, true], [false, false, false]],
            None,
        )
        .await;
        // Minute 1: everything fires; one message per target.
        assert_eq!(
            minutes[0],
            vec![
                (T.to_string(), listed(&[("t/cluster_scan", Event::Firing), ("t/iac_scan", Event::Firing)])),
                (U.to_string(), listed(&[("u/cluster_scan", Event::Firing)])),
            ]
        );
        // Minute 2: t's IaC scans recover. t's message says so and lists t's cluster alert, still firing; u's group
        // did not change and gets nothing.
        assert_eq!(
            minutes[1],
            vec![(T.to_string(), listed(&[("t/cluster_scan", Event::Repeat), ("t/iac_scan", Event::Resolved)]))]
        );
        // Minute 3: it fires again.
        assert_eq!(
            minutes[2],
            vec![(T.to_string(), listed(&[("t/iac_scan", Event::Firing), ("t/cluster_scan", Event::Repeat)]))]
        );
        // Minute 4: all resolve; each group's message holds only resolutions.
        assert_eq!(
            minutes[3],
            vec![
                (T.to_string(), listed(&[("t/cluster_scan", Event::Resolved), ("t/iac_scan", Event::Resolved)])),
                (U.to_string(), listed(&[("u/cluster_scan", Event::Resolved)])),
            ]
        );
    }

    #[tokio::test]
    async fn without_group_by_a_channel_is_one_group_and_every_message_lists_all_that_still_fires() {
        let minutes =
            grouped_messages(&[], Lifecycle::default(), &[[true, true, false], [true, true, true]], None).await;
        let one = "{}/{channel=\"hook\"}:{}".to_string();
        assert_eq!(
            minutes[0],
            vec![(one.clone(), listed(&[("t/cluster_scan", Event::Firing), ("t/iac_scan", Event::Firing)]))]
        );
        assert_eq!(
            minutes[1],
            vec![(
                one,
                listed(&[
                    ("u/cluster_scan", Event::Firing),
                    ("t/cluster_scan", Event::Repeat),
                    ("t/iac_scan", Event::Repeat)
                ])
            )]
        );
    }

    #[tokio::test]
    async fn a_group_never_lists_an_alert_that_resolved_without_a_message_or_is_silenced() {
        // With send_resolved off, t's IaC alert resolves at minute 2 and nothing is sent. At minute 3 u fires: the
        // one group's message lists t's cluster alert, still firing, and not the quietly resolved one.
        let quiet = Lifecycle { send_resolved: false, ..Lifecycle::default() };
        let script = [[true, true, false], [true, false, false], [true, false, true]];
        let minutes = grouped_messages(&[], quiet, &script, None).await;
        let one = "{}/{channel=\"hook\"}:{}".to_string();
        assert_eq!(minutes[1], vec![], "a resolution without send_resolved sends nothing");
        assert_eq!(
            minutes[2],
            vec![(one, listed(&[("u/cluster_scan", Event::Firing), ("t/cluster_scan", Event::Repeat)]))]
        );
        // t's cluster alert is silenced from minute 2: when t's IaC alert fires again at minute 3, t's message
        // does not list it.
        let script = [[true, true, false], [true, false, false], [true, true, false]];
        let minutes = grouped_messages(&["target"], Lifecycle::default(), &script, Some(2)).await;
        assert_eq!(minutes[2], vec![(T.to_string(), listed(&[("t/iac_scan", Event::Firing)]))]);
    }

    #[tokio::test]
    async fn a_silenced_firing_is_recorded_suppressed_and_sent_when_the_silence_ends() {
        let (_dir, store, id) = fresh_store().await;
        let set = poll_failing_after(1);
        let lc = Lifecycle::default();
        let routes: Vec<Arc<dyn Route>> = vec![Arc::new(All)];
        let matchers = BTreeMap::from([("target".to_string(), "t".to_string())]);
        store.add_silence(&matchers, at(0), at(10), "me", "maintenance", at(0)).await.unwrap();
        let silences = store.silences(at(1), false).await.unwrap();
        let outbox_at = |silences| Outbox { labels: None, routes: &routes, silences, contexts: &[] };
        record_and_evaluate(&store, id, &key(), &set, &lc, &failing(1), true, outbox_at(&silences)).await.unwrap();
        record_and_evaluate(&store, id, &key(), &set, &lc, &failing(5), true, outbox_at(&silences)).await.unwrap();
        // The silence has ended by minute 11: the alert still fires, so its firing goes out now.
        record_and_evaluate(&store, id, &key(), &set, &lc, &failing(11), true, outbox_at(&[])).await.unwrap();
        record_and_evaluate(&store, id, &key(), &set, &lc, &failing(12), true, outbox_at(&[])).await.unwrap();
        store.seal_notices(at(12), |_| {}, crate::notify::outbox::new_uid).await.unwrap();
        let log = store.notifications(None, 10).await.unwrap();
        let mut statuses: Vec<_> = log.iter().map(|n| (n.status, n.event)).collect();
        statuses.sort_by_key(|(s, _)| s.as_str());
        use crate::alerting::Event;
        use crate::store::DeliveryStatus;
        assert_eq!(
            statuses,
            vec![(DeliveryStatus::Pending, Event::Firing), (DeliveryStatus::Suppressed, Event::Firing)]
        );
        let sent = log.iter().find(|n| n.status == DeliveryStatus::Pending).unwrap();
        assert_eq!(sent.notification.alerts[0].since, at(1), "it has been firing since the first failure");
    }

    /// A silence over minutes `from..until` matching the test series.
    fn silence(from: i64, until: i64) -> SilenceRow {
        SilenceRow {
            id: 1,
            matchers: BTreeMap::from([("target".to_string(), "t".to_string())]),
            starts_at: at(from),
            ends_at: at(until),
            created_by: "me".into(),
            comment: "maintenance".into(),
            created_at: at(from),
        }
    }

    /// Records `polls` one by one under `silences` with `poll_failing` (after 1) as the only rule, sealing the outbox
    /// after each poll as the dispatcher does; returns every notification as (event, status), oldest first.
    async fn notifications_after(
        lc: Lifecycle,
        silences: &[SilenceRow],
        polls: &[PollRecord],
    ) -> Vec<(Event, crate::store::DeliveryStatus)> {
        let (_dir, store, id) = fresh_store().await;
        let set = poll_failing_after(1);
        let routes: Vec<Arc<dyn Route>> = vec![Arc::new(All)];
        let outbox = Outbox { labels: None, routes: &routes, silences, contexts: &[] };
        for rec in polls {
            record_and_evaluate(&store, id, &key(), &set, &lc, rec, true, outbox).await.unwrap();
            store.seal_notices(rec.polled_at, |_| {}, crate::notify::outbox::new_uid).await.unwrap();
        }
        let mut log = store.notifications(None, 100).await.unwrap();
        log.sort_by_key(|n| n.id);
        log.iter().map(|n| (n.event, n.status)).collect()
    }

    fn reminding_every(minutes: u64) -> Lifecycle {
        Lifecycle { repeat_interval: std::time::Duration::from_secs(minutes * 60), ..Lifecycle::default() }
    }

    #[tokio::test]
    async fn a_silence_never_swallows_the_resolve_of_a_firing_receivers_were_told_about() {
        use crate::store::DeliveryStatus::*;
        let polls = [failing(1), failing(3), fresh(4)];
        let log = notifications_after(Lifecycle::default(), &[silence(2, 20)], &polls).await;
        assert_eq!(log, vec![(Event::Firing, Pending), (Event::Resolved, Pending)], "the resolve closes the incident");
    }

    #[tokio::test]
    async fn a_reminder_muted_by_a_silence_does_not_resend_the_firing_when_the_silence_ends() {
        use crate::store::DeliveryStatus::*;
        // Fires at 1 (told), reminds at 12 inside the silence, the silence ends at 20, the next reminder is due at 22.
        let polls = [failing(1), failing(12), failing(21), failing(22)];
        let log = notifications_after(reminding_every(10), &[silence(2, 20)], &polls).await;
        assert_eq!(log, vec![(Event::Firing, Pending), (Event::Repeat, Suppressed), (Event::Repeat, Pending)]);
    }

    #[tokio::test]
    async fn a_firing_muted_by_a_silence_goes_out_once_as_a_firing_when_the_silence_ends() {
        use crate::store::DeliveryStatus::*;
        // Receivers first hear of it at 11, when a reminder is also due: they get the firing, not a reminder.
        let polls = [failing(1), failing(5), failing(11), failing(12), failing(13)];
        let log = notifications_after(reminding_every(10), &[silence(0, 10)], &polls).await;
        assert_eq!(log, vec![(Event::Firing, Suppressed), (Event::Firing, Pending)]);
        // Without a reminder due, the firing still goes out exactly once after the silence.
        let log = notifications_after(Lifecycle::default(), &[silence(0, 10)], &polls).await;
        assert_eq!(log, vec![(Event::Firing, Suppressed), (Event::Firing, Pending)]);
    }

    #[tokio::test]
    async fn an_alert_that_fires_and_resolves_unheard_records_its_resolve_as_suppressed() {
        use crate::store::DeliveryStatus::*;
        let log = notifications_after(Lifecycle::default(), &[silence(0, 10)], &[failing(1), fresh(2)]).await;
        assert_eq!(log, vec![(Event::Firing, Suppressed), (Event::Resolved, Suppressed)]);
        // Also when the silence ended just before the resolve: nobody was told it fired.
        let log = notifications_after(Lifecycle::default(), &[silence(0, 10)], &[failing(1), fresh(11)]).await;
        assert_eq!(log, vec![(Event::Firing, Suppressed), (Event::Resolved, Suppressed)]);
    }

    /// What a series is doing during a stretch of polls.
    #[derive(Debug, Clone, Copy)]
    enum Phase {
        /// Scans start every third poll and the total grows.
        Healthy,
        /// One task keeps running and no new one starts.
        Stuck,
        /// Nothing moves; halfway through, the total drops (a counter reset).
        Stalled,
        /// HSS answers 503.
        Failing,
        /// HSS rejects the credentials.
        Denied,
        /// scanwatch itself is down: no polls for `n` × 30 minutes.
        Downtime,
    }

    /// Polls five minutes apart (seven while failing) through `phases`, each `(phase, n)` lasting `n` polls. Before the
    /// first `Healthy` phase no scan has ever started.
    /// A task check: the latest finished task failed on `failed` of 5 clusters.
    fn task_check(failed: u64) -> crate::model::AlertContext {
        let task = crate::model::TaskInfo {
            task_id: format!("task-{failed}"),
            task_name: "Nightly cluster scan".into(),
            task_type: TaskType::ClusterScan,
            trigger_type: "schedule".into(),
            task_status: "finished".into(),
            start_time: Some(0),
            end_time: Some(60_000),
            estimated_minutes: Some(0),
            scanning: 0,
            success: 5 - failed,
            failed,
        };
        let failed_list = (0..failed)
            .map(|i| crate::model::FailedResource {
                name: format!("cce-{i}"),
                id: None,
                kind: Some("cce".into()),
                failed_reason: "kube-apiserver unreachable".into(),
            })
            .collect();
        crate::model::AlertContext { task: Some(task), failed: failed_list, failed_total: failed, unavailable: None }
    }

    fn history_of(phases: &[(Phase, u32)]) -> Vec<PollRecord> {
        let (mut min, mut total, mut last_start) = (0i64, 40u64, None::<i64>);
        let mut polls = Vec::new();
        // Each healthy stretch begins with a task check; they alternate between a task that failed on two clusters
        // and a clean one, so scan_failures fires and resolves too.
        let mut checks = 0u64;
        for &(phase, n) in phases {
            if let Phase::Stuck = phase {
                last_start = Some(min);
                total += 1;
            }
            for i in 0..n {
                let stats = |running: u64, total: u64, start: Option<i64>| PollRecord {
                    outcome: Ok(TaskStats {
                        total_num: total,
                        running_num: running,
                        last_task_start_time: start.map(|m| at(m).timestamp_millis()),
                    }),
                    ..fresh(min)
                };
                let rec = match phase {
                    Phase::Healthy => {
                        if i % 3 == 0 {
                            last_start = Some(min);
                            total += 1;
                        }
                        let mut rec = stats(u64::from(i % 3 == 1), total, last_start);
                        if i == 0 {
                            checks += 1;
                            rec.task = Some(task_check(if checks % 2 == 1 { 2 } else { 0 }));
                        }
                        rec
                    }
                    Phase::Stuck => stats(1, total, last_start),
                    Phase::Stalled => {
                        if i == n / 2 && total > 5 {
                            total -= 5;
                        }
                        stats(0, total, last_start)
                    }
                    Phase::Failing => failing(min),
                    Phase::Denied => PollRecord {
                        outcome: Err(PollError::new(ErrorKind::Auth, "APIGW.0301")),
                        http_status: Some(401),
                        ..failing(min)
                    },
                    Phase::Downtime => {
                        min += 30;
                        continue;
                    }
                };
                polls.push(rec);
                min += if let Phase::Failing = phase { 7 } else { 5 };
            }
        }
        polls
    }

    /// Every rule on, with windows short enough for a few hundred polls to fire and resolve each of them.
    fn short_windows() -> RuleSet {
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        RuleSet {
            no_recent_scan: Some((rules::NoRecentScan { max_age: minutes(90) }, Severity::Critical)),
            stuck_running: Some((rules::StuckRunning { for_: minutes(45) }, Severity::Warning)),
            total_stalled: Some((rules::TotalStalled { window: minutes(120) }, Severity::Warning)),
            poll_failing: Some((rules::PollFailing { after: 3, for_: minutes(20) }, Severity::Critical)),
            scan_failures: Some((rules::ScanFailures, Severity::Warning)),
        }
    }

    /// Records `polls` live, one transaction each, then replays every rule over the stored snapshots; returns the
    /// stored transitions per rule after asserting that replay gives exactly them and ends in the stored state.
    async fn assert_replay_matches_the_live_run(
        lc: &Lifecycle,
        polls: &[PollRecord],
    ) -> Vec<(RuleName, Vec<Transition>)> {
        let (_dir, store, id) = fresh_store().await;
        let set = short_windows();
        for rec in polls {
            record_and_evaluate(&store, id, &key(), &set, lc, rec, true, Outbox::default()).await.unwrap();
        }
        let stored = store.snapshots_since(id, DateTime::<Utc>::MIN_UTC).await.unwrap();
        assert_eq!(stored.len(), polls.len());
        let alerts = store.alerts(true).await.unwrap();
        let mut out = Vec::new();
        for rule in set.enabled() {
            let fp = fingerprint(rule, &key());
            let live: Vec<Transition> =
                store.transitions(Some(&fp), None).await.unwrap().into_iter().map(|t| t.transition).collect();
            let (end, replayed) =
                crate::alerting::replay(rule, &set, lc, &key(), &stored, stored[0].polled_at, Alert::default());
            assert_eq!(replayed, live, "{rule}: replay differs from the live run");
            let stored_end = alerts.iter().find(|a| a.fingerprint == fp).map(|a| a.alert.clone()).unwrap_or_default();
            assert_eq!(end, stored_end, "{rule}: replay ends in another state than the live run");
            out.push((rule, live));
        }
        out
    }

    #[tokio::test]
    async fn replaying_stored_snapshots_gives_exactly_the_transitions_recorded_live() {
        use Phase::*;
        let polls = history_of(&[
            (Stalled, 10),
            (Healthy, 30),
            (Stuck, 20),
            (Healthy, 10),
            (Failing, 8),
            (Healthy, 5),
            (Stalled, 40),
            (Denied, 2),
            (Stalled, 5),
            (Downtime, 8),
            (Healthy, 20),
            (Failing, 2),
            (Healthy, 2),
            (Failing, 12),
            (Stuck, 15),
            (Failing, 3),
            (Stuck, 15),
            (Healthy, 30),
            (Stalled, 30),
            (Downtime, 2),
            (Healthy, 30),
        ]);
        assert!(polls.len() > 250);
        let hysteresis = Lifecycle {
            pending_for: std::time::Duration::from_secs(10 * 60),
            resolve_after: std::time::Duration::from_secs(15 * 60),
            repeat_interval: std::time::Duration::from_secs(3600),
            send_resolved: true,
        };
        for lc in [Lifecycle::default(), hysteresis] {
            let by_rule = assert_replay_matches_the_live_run(&lc, &polls).await;
            for (rule, transitions) in by_rule {
                let fired = transitions.iter().filter(|t| t.event == Some(Event::Firing)).count();
                let resolved = transitions.iter().filter(|t| t.to == AlertState::Resolved).count();
                assert!(fired >= 1 && resolved >= 1, "{rule} under {lc:?} should fire and resolve: {transitions:?}");
            }
        }
    }

    fn phase() -> impl proptest::strategy::Strategy<Value = (Phase, u32)> {
        use proptest::prelude::*;
        let phase = prop_oneof![
            Just(Phase::Healthy),
            Just(Phase::Stuck),
            Just(Phase::Stalled),
            Just(Phase::Failing),
            Just(Phase::Denied),
            Just(Phase::Downtime),
        ];
        (phase, 1u32..30)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 8,
            failure_persistence: None,
            ..Default::default()
        })]
        #[test]
        fn replay_matches_the_live_run_over_random_histories(
            phases in proptest::collection::vec(phase(), 1..12),
            pending in 0u64..3,
            resolve in 0u64..3,
        ) {
            let polls = history_of(&phases);
            proptest::prop_assume!(!polls.is_empty());
            let lc = Lifecycle {
                pending_for: std::time::Duration::from_secs(pending * 10 * 60),
                resolve_after: std::time::Duration::from_secs(resolve * 10 * 60),
                repeat_interval: std::time::Duration::from_secs(3600),
                send_resolved: true,
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(assert_replay_matches_the_live_run(&lc, &polls));
        }
    }

    /// Records `polls` live, then after each one checks that the stored rule state — kept incrementally by each
    /// poll's transaction — is the state rebuilt from scratch out of the stored snapshots at or before that poll,
    /// that the state read before anything is written (which decides whether a poll first fetches its alerts'
    /// contexts) is that same state, and that both evaluate alike.
    async fn assert_incremental_state_matches_a_rebuild(polls: &[PollRecord]) {
        let (_dir, store, id) = fresh_store().await;
        let set = short_windows();
        for (i, rec) in polls.iter().enumerate() {
            let mut tx = store.begin_write().await.unwrap();
            let previewed = tx.next_state(id, rec).await.unwrap().state;
            tx.rollback().await.unwrap();
            record_and_evaluate(&store, id, &key(), &set, &Lifecycle::default(), rec, true, Outbox::default())
                .await
                .unwrap();
            let (kept, _) = store.rule_state(id).await.unwrap().expect("a state row after a poll");
            let rebuilt = store.rebuild_rule_state(id, rec.polled_at).await.unwrap();
            assert_eq!(kept, rebuilt, "poll {i} at {}: incremental state differs from a rebuild", rec.polled_at);
            assert_eq!(previewed, kept, "poll {i}: the state read before writing differs from the one recorded");
            let from_rows = rules::evaluate_all(
                &set,
                &key(),
                &store.snapshots_since(id, DateTime::<Utc>::MIN_UTC).await.unwrap(),
                rec.polled_at,
            );
            assert_eq!(kept.evaluate_all(&set, &key(), rec.polled_at), from_rows, "poll {i}: outcomes differ");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 6,
            failure_persistence: None,
            ..Default::default()
        })]
        /// Long random histories with outages, downtime and the clock jumping back (NTP steps, a VM restored from a
        /// snapshot): the state row always equals the fold of the stored snapshots the rules would read.
        #[test]
        fn the_stored_rule_state_is_always_the_fold_of_the_stored_snapshots(
            phases in proptest::collection::vec(phase(), 1..10),
            jumps in proptest::collection::vec((0usize..300, 1i64..400), 0..4),
        ) {
            let mut polls = history_of(&phases);
            proptest::prop_assume!(!polls.is_empty());
            for (at, back) in jumps {
                for rec in polls.iter_mut().skip(at) {
                    rec.polled_at -= chrono::TimeDelta::minutes(back);
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(assert_incremental_state_matches_a_rebuild(&polls));
        }
    }

    /// A database from before the state table (or a row lost) rebuilds the state from the stored snapshots on the
    /// next poll, and evaluation goes on as if the row had always been kept.
    #[tokio::test]
    async fn a_missing_state_row_is_rebuilt_from_the_stored_snapshots() {
        let (_dir, store, id) = fresh_store().await;
        let set = short_windows();
        let polls = history_of(&[(Phase::Healthy, 10), (Phase::Stuck, 20), (Phase::Failing, 4)]);
        let (before, after) = polls.split_at(polls.len() / 2);
        for rec in before {
            record_and_evaluate(&store, id, &key(), &set, &Lifecycle::default(), rec, true, Outbox::default())
                .await
                .unwrap();
        }
        let kept = store.rule_state(id).await.unwrap().unwrap();
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("DELETE FROM series_state").execute(tx.inner()).await.unwrap();
        tx.commit().await.unwrap();
        assert!(store.rule_state(id).await.unwrap().is_none());
        for rec in after {
            record_and_evaluate(&store, id, &key(), &set, &Lifecycle::default(), rec, true, Outbox::default())
                .await
                .unwrap();
        }
        let (state, max) = store.rule_state(id).await.unwrap().unwrap();
        assert_eq!(state, store.rebuild_rule_state(id, max).await.unwrap());
        assert!(state.running_since.is_some() && state.failures == 4, "{state:?}");
        assert_eq!(kept.0.first_polled_at, state.first_polled_at, "rebuilt from the first stored snapshot");
    }

    #[tokio::test]
    async fn an_outage_counts_toward_pending_for_neither_live_nor_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut set = RuleSet::none();
        set.no_recent_scan =
            Some((rules::NoRecentScan { max_age: std::time::Duration::from_secs(3600) }, Severity::Critical));
        let lc = Lifecycle { pending_for: std::time::Duration::from_secs(10 * 60), ..Lifecycle::default() };
        // The latest scan started two hours before each poll: `no_recent_scan` breaches whenever polls succeed.
        let stale = |min: i64| PollRecord {
            outcome: Ok(TaskStats {
                total_num: 10,
                running_num: 0,
                last_task_start_time: Some(at(min - 120).timestamp_millis()),
            }),
            ..fresh(min)
        };
        let polls = [stale(0), failing(3), failing(20), stale(25), stale(31), stale(32)];
        for rec in &polls {
            // A restart before every poll: the unknown stretch must survive in the database.
            let store = Store::open(&path).await.unwrap();
            let id = store.ensure_series(&key()).await.unwrap();
            record_and_evaluate(&store, id, &key(), &set, &lc, rec, true, Outbox::default()).await.unwrap();
            store.close().await;
        }
        let store = Store::open(&path).await.unwrap();
        let log: Vec<_> = store
            .transitions(None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.transition.at, t.transition.to))
            .collect();
        // Breaching 0→3 and 25→32: ten minutes at 32, not 25 minutes at 25.
        assert_eq!(log, vec![(at(0), AlertState::Pending), (at(32), AlertState::Firing)]);
    }
}
