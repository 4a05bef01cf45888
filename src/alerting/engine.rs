//! Live evaluation: one poll result → one transaction holding the snapshot, every alert state it changed and every
//! transition. A crash before the commit leaves none of them; after it, all of them. Evaluation time is the
//! snapshot's `polled_at`, which is also what `replay` uses, so replaying stored history gives the live transitions.

use chrono::TimeDelta;

use super::{Alert, Lifecycle, Transition, fingerprint, step};
use crate::model::{PollRecord, SeriesKey};
use crate::rules::{self, RuleName, RuleSet, Severity};
use crate::store::{Store, StoreError};

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

/// Stores `record` for the series and evaluates its rules over the stored history, all in one transaction.
pub async fn record_and_evaluate(
    store: &Store,
    series_id: i64,
    key: &SeriesKey,
    rule_set: &RuleSet,
    lifecycle: &Lifecycle,
    record: &PollRecord,
    sent: bool,
) -> Result<Recorded, StoreError> {
    let mut tx = store.begin_write().await?;
    let snapshot_id = tx.insert_snapshot(series_id, record, sent).await?;
    let now = record.polled_at;
    let window_start = now - TimeDelta::from_std(rules::lookback(rule_set)).unwrap_or(TimeDelta::MAX);
    let min_polls = u32::try_from(rules::min_polls(rule_set)).unwrap_or(u32::MAX);
    let history = tx.rule_history(series_id, window_start, min_polls).await?;
    if let Some(skew) = rules::future_start_skew(&history, now) {
        tracing::warn!(series = %key, ahead = %rules::human_duration(skew), "last_task_start_time is in the future (clock skew?); treating its age as 0");
    }
    let mut changes = Vec::new();
    for (rule, severity, outcome) in rules::evaluate_all(rule_set, key.task_type, &history, now) {
        let fp = fingerprint(rule, key);
        let stored = tx.alert(&fp).await?;
        let current = stored.as_ref().map(|r| r.alert.clone()).unwrap_or_default();
        let (next, transition) = step(&current, &outcome, lifecycle, now);
        // Series that never breached keep no row; everything else is saved so the state survives a restart.
        if stored.is_none() && next == Alert::default() {
            continue;
        }
        let alert_id = tx.save_alert(&fp, series_id, rule, severity, &next, Some(snapshot_id)).await?;
        if let Some(t) = transition {
            tx.insert_transition(alert_id, Some(snapshot_id), &t).await?;
            tracing::info!(series = %key, rule = %rule, from = t.from.as_str(), to = t.to.as_str(), summary = %t.summary, "alert transition");
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
    tx.commit().await?;
    Ok(Recorded { snapshot_id, changes })
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
            polled_at: at(min),
            latency_ms: 5,
            outcome: Err(PollError::new(ErrorKind::Server, "503")),
            http_status: None,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn poll_failing_fires_once_and_resolves_with_every_transition_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let id = store.ensure_series(&key()).await.unwrap();
        let mut set = RuleSet::none();
        set.poll_failing =
            Some((rules::PollFailing { after: 2, for_: std::time::Duration::from_secs(3600) }, Severity::Critical));
        let lc = Lifecycle::default();
        let mut events = Vec::new();
        for (i, rec) in [fresh(0), failing(1), failing(2), failing(3), fresh(4)].iter().enumerate() {
            let r = record_and_evaluate(&store, id, &key(), &set, &lc, rec, true).await.unwrap();
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

    #[tokio::test]
    async fn a_series_that_never_breaches_keeps_no_alert_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let id = store.ensure_series(&key()).await.unwrap();
        for m in 0..3 {
            record_and_evaluate(&store, id, &key(), &RuleSet::default(), &Lifecycle::default(), &fresh(m), true)
                .await
                .unwrap();
        }
        assert!(store.alerts(true).await.unwrap().is_empty());
    }
}
