//! Alert state, transitions, silences and acks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, WriteTx, millis, series_from_row, sql};
use crate::alerting::{Alert, AlertState, Event, Transition};
use crate::model::SeriesKey;
use crate::rules::{RuleName, Severity};

/// A stored alert with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub id: i64,
    pub fingerprint: String,
    pub series: SeriesKey,
    pub rule: RuleName,
    pub severity: Severity,
    pub alert: Alert,
    pub ack_comment: Option<String>,
    pub evaluated_snapshot_id: Option<i64>,
    /// Receivers have not been told this alert fires: its firing was suppressed by a silence and has not gone out
    /// since. A silence's end then sends the firing, and a resolve is recorded suppressed rather than sent.
    pub firing_suppressed: bool,
}

/// A stored transition with the alert it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub fingerprint: String,
    pub series: SeriesKey,
    pub rule: RuleName,
    pub snapshot_id: Option<i64>,
    pub transition: Transition,
}

/// A stored silence (the type is [`crate::alerting::silence::Silence`]; alerting owns what a silence means).
pub use crate::alerting::silence::Silence as SilenceRow;

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn opt_millis(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(millis)
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { table: "alerts", detail }
}

fn alert_from_row(row: &SqliteRow) -> Result<AlertRow, StoreError> {
    let read = sql("reading an alert");
    let r = (|| -> Result<_, sqlx::Error> {
        Ok((
            row.try_get::<i64, _>("alert_id")?,
            row.try_get::<String, _>("fingerprint")?,
            row.try_get::<String, _>("rule")?,
            row.try_get::<String, _>("severity")?,
            row.try_get::<String, _>("state")?,
            Alert {
                state: AlertState::Inactive,
                since: opt_millis(row.try_get("since")?),
                breach_started: opt_millis(row.try_get("breach_started")?),
                ok_since: opt_millis(row.try_get("ok_since")?),
                last_notified_at: opt_millis(row.try_get("last_notified_at")?),
                acked: row.try_get("acked")?,
                unknown_since: opt_millis(row.try_get("unknown_since")?),
                summary: row.try_get("summary")?,
                value: row.try_get("value")?,
            },
            row.try_get::<Option<String>, _>("ack_comment")?,
            row.try_get::<Option<i64>, _>("evaluated_snapshot_id")?,
            row.try_get::<bool, _>("firing_suppressed")?,
        ))
    })()
    .map_err(read)?;
    let (id, fingerprint, rule, severity, state, mut alert, ack_comment, evaluated_snapshot_id, firing_suppressed) = r;
    alert.state = AlertState::parse(&state).ok_or_else(|| corrupt(format!("state `{state}`")))?;
    Ok(AlertRow {
        id,
        fingerprint,
        series: series_from_row(row)?.key,
        rule: RuleName::parse(&rule).ok_or_else(|| corrupt(format!("rule `{rule}`")))?,
        severity: Severity::parse(&severity).ok_or_else(|| corrupt(format!("severity `{severity}`")))?,
        alert,
        ack_comment,
        evaluated_snapshot_id,
        firing_suppressed,
    })
}

const ALERT_SELECT: &str =
    "SELECT a.id AS alert_id, a.*, r.id, r.target, r.task_type, r.account, r.region, r.project_id,
        r.enterprise_project_id FROM alerts a JOIN series r ON r.id = a.series_id";

/// The query for the stored alerts among `n` fingerprints (bound as ?1…?n).
fn alerts_among(n: usize) -> String {
    let marks = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    format!("{ALERT_SELECT} WHERE a.fingerprint IN ({marks})")
}

/// The query for a series' alerts (bound as ?{n+1}) and the stored alerts among `n` fingerprints (?1…?n): two index
/// lookups (`alerts` by fingerprint, `alerts_series`).
pub(super) fn series_alerts(n: usize) -> String {
    let marks = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    format!("{ALERT_SELECT} WHERE a.fingerprint IN ({marks}) OR a.series_id = ?{}", n + 1)
}

impl WriteTx {
    /// The stored alerts among `fingerprints`, in one statement (a poll evaluates all its rules at once).
    pub async fn alerts(&mut self, fingerprints: &[String]) -> Result<Vec<AlertRow>, StoreError> {
        if fingerprints.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(alerts_among(fingerprints.len())));
        for fp in fingerprints {
            query = query.bind(fp.as_str());
        }
        let rows = query.fetch_all(&mut *self.tx).await.map_err(self.failed("reading alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The stored alerts among `fingerprints` and every other alert of the series, in one statement: a poll reads
    /// them all, so that it knows whether the series has any (`series_state.alerted`, migration 0013).
    pub async fn series_alerts(
        &mut self,
        series_id: i64,
        fingerprints: &[String],
    ) -> Result<Vec<AlertRow>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(series_alerts(fingerprints.len())));
        for fp in fingerprints {
            query = query.bind(fp.as_str());
        }
        let rows = query.bind(series_id).fetch_all(&mut *self.tx).await.map_err(self.failed("reading alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The stored alert for `fingerprint`, if any.
    pub async fn alert(&mut self, fingerprint: &str) -> Result<Option<AlertRow>, StoreError> {
        Ok(self.alerts(&[fingerprint.to_string()]).await?.pop())
    }

    /// Inserts or updates an alert's state and returns its id.
    #[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
    pub async fn save_alert(
        &mut self,
        fingerprint: &str,
        series_id: i64,
        rule: RuleName,
        severity: Severity,
        alert: &Alert,
        snapshot_id: Option<i64>,
        firing_suppressed: bool,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO alerts (fingerprint, series_id, rule, severity, state, since, breach_started, ok_since,
                                 last_notified_at, acked, summary, value, evaluated_snapshot_id, firing_suppressed,
                                 unknown_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (fingerprint) DO UPDATE SET series_id = excluded.series_id, severity = excluded.severity,
                 state = excluded.state, since = excluded.since, breach_started = excluded.breach_started,
                 ok_since = excluded.ok_since, last_notified_at = excluded.last_notified_at, acked = excluded.acked,
                 ack_comment = CASE WHEN excluded.acked THEN alerts.ack_comment ELSE NULL END,
                 summary = excluded.summary, value = excluded.value,
                 evaluated_snapshot_id = COALESCE(excluded.evaluated_snapshot_id, alerts.evaluated_snapshot_id),
                 firing_suppressed = excluded.firing_suppressed, unknown_since = excluded.unknown_since
             RETURNING id",
        )
        .bind(fingerprint)
        .bind(series_id)
        .bind(rule.as_str())
        .bind(severity.as_str())
        .bind(alert.state.as_str())
        .bind(ms(alert.since))
        .bind(ms(alert.breach_started))
        .bind(ms(alert.ok_since))
        .bind(ms(alert.last_notified_at))
        .bind(alert.acked)
        .bind(&alert.summary)
        .bind(&alert.value)
        .bind(snapshot_id)
        .bind(firing_suppressed)
        .bind(ms(alert.unknown_since))
        .fetch_one(&mut *self.tx)
        .await
        .map_err(self.failed("saving an alert"))?;
        row.try_get(0).map_err(sql("saving an alert"))
    }

    /// Keeps the context a notice of this alert carried, for the read side.
    pub async fn set_alert_context(
        &mut self,
        alert_id: i64,
        context: &crate::model::AlertContext,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(context).map_err(|e| corrupt(e.to_string()))?;
        sqlx::query("UPDATE alerts SET context_json = ?2 WHERE id = ?1")
            .bind(alert_id)
            .bind(json)
            .execute(&mut *self.tx)
            .await
            .map_err(self.failed("saving an alert's context"))?;
        Ok(())
    }

    pub async fn insert_transition(
        &mut self,
        alert_id: i64,
        snapshot_id: Option<i64>,
        t: &Transition,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_transitions (alert_id, snapshot_id, at, from_state, to_state, event, summary, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(alert_id)
        .bind(snapshot_id)
        .bind(t.at.timestamp_millis())
        .bind(t.from.as_str())
        .bind(t.to.as_str())
        .bind(t.event.map(event_str))
        .bind(&t.summary)
        .bind(&t.value)
        .execute(&mut *self.tx)
        .await
        .map_err(self.failed("recording a transition"))?;
        Ok(())
    }
}

pub fn event_str(e: Event) -> &'static str {
    match e {
        Event::Firing => "firing",
        Event::Repeat => "repeat",
        Event::Resolved => "resolved",
    }
}

fn parse_event(s: &str) -> Option<Event> {
    [Event::Firing, Event::Repeat, Event::Resolved].into_iter().find(|e| event_str(*e) == s)
}

impl Store {
    /// The context each alert's latest notification carried, by fingerprint.
    pub async fn alert_contexts(
        &self,
    ) -> Result<std::collections::HashMap<String, crate::model::AlertContext>, StoreError> {
        let rows = sqlx::query("SELECT fingerprint, context_json FROM alerts WHERE context_json IS NOT NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("reading alert contexts"))?;
        let mut out = std::collections::HashMap::new();
        for r in &rows {
            let fp: String = r.try_get(0).map_err(sql("reading alert contexts"))?;
            let json: String = r.try_get(1).map_err(sql("reading alert contexts"))?;
            // A context that no longer parses (a newer release wrote it) is shown as none, not as an error.
            if let Ok(c) = serde_json::from_str(&json) {
                out.insert(fp, c);
            }
        }
        Ok(out)
    }

    /// [`WriteTx::alerts`] outside a write transaction: what a poll's preview reads to know, before it writes,
    /// which alerts it will notify about.
    pub async fn alerts_among(&self, fingerprints: &[String]) -> Result<Vec<AlertRow>, StoreError> {
        if fingerprints.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(alerts_among(fingerprints.len())));
        for fp in fingerprints {
            query = query.bind(fp.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(sql("reading alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Alerts, with their series. `all = false` gives only pending and firing ones.
    pub async fn alerts(&self, all: bool) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{ALERT_SELECT} WHERE ?1 OR a.state IN ('pending', 'firing') ORDER BY r.target, r.task_type, a.rule"
        )))
        .bind(all)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    /// How many alerts are in each (rule, state), for `/metrics`; combinations with no alert are absent.
    pub async fn alert_counts(&self) -> Result<Vec<(RuleName, AlertState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT rule, state, COUNT(*) FROM alerts GROUP BY rule, state ORDER BY rule, state")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("counting alerts"))?;
        rows.iter()
            .map(|row| {
                let (rule, state, n): (String, String, i64) =
                    (|| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))()
                        .map_err(sql("counting alerts"))?;
                Ok((
                    RuleName::parse(&rule).ok_or_else(|| corrupt(format!("rule `{rule}`")))?,
                    AlertState::parse(&state).ok_or_else(|| corrupt(format!("state `{state}`")))?,
                    n,
                ))
            })
            .collect()
    }

    /// Transitions, oldest first; optionally of one alert only, and since a time.
    pub async fn transitions(
        &self,
        fingerprint: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.*, a.fingerprint, a.rule, r.id, r.target, r.task_type, r.account, r.region, r.project_id,
                    r.enterprise_project_id
             FROM alert_transitions t JOIN alerts a ON a.id = t.alert_id JOIN series r ON r.id = a.series_id
             WHERE (?1 IS NULL OR a.fingerprint = ?1) AND (?2 IS NULL OR t.at >= ?2)
             ORDER BY t.at, t.id",
        )
        .bind(fingerprint)
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing transitions"))?;
        rows.iter()
            .map(|row| {
                let read = sql("reading a transition");
                let (rule, from, to, event): (String, String, String, Option<String>) = (|| {
                    Ok::<_, sqlx::Error>((
                        row.try_get("rule")?,
                        row.try_get("from_state")?,
                        row.try_get("to_state")?,
                        row.try_get("event")?,
                    ))
                })()
                .map_err(read)?;
                let state = |s: &str| AlertState::parse(s).ok_or_else(|| corrupt(format!("state `{s}`")));
                let event = match event {
                    Some(e) => Some(parse_event(&e).ok_or_else(|| corrupt(format!("event `{e}`")))?),
                    None => None,
                };
                let get = |c: &str| row.try_get::<String, _>(c).map_err(sql("reading a transition"));
                Ok(TransitionRow {
                    fingerprint: get("fingerprint")?,
                    series: series_from_row(row)?.key,
                    rule: RuleName::parse(&rule).ok_or_else(|| corrupt(format!("rule `{rule}`")))?,
                    snapshot_id: row.try_get("snapshot_id").map_err(sql("reading a transition"))?,
                    transition: Transition {
                        from: state(&from)?,
                        to: state(&to)?,
                        at: millis(row.try_get("at").map_err(sql("reading a transition"))?),
                        event,
                        summary: get("summary")?,
                        value: get("value")?,
                    },
                })
            })
            .collect()
    }

    /// Acknowledges a firing alert: no reminders until it resolves. Returns the alert as it now is, or `None` when
    /// no alert has that fingerprint.
    pub async fn ack(&self, fingerprint: &str, comment: Option<&str>) -> Result<Option<AlertRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = tx.alert(fingerprint).await? else { return Ok(None) };
        let acked = crate::alerting::ack(&row.alert);
        if acked.acked {
            sqlx::query("UPDATE alerts SET acked = TRUE, ack_comment = ?2 WHERE id = ?1")
                .bind(row.id)
                .bind(comment)
                .execute(&mut *tx.tx)
                .await
                .map_err(tx.failed("acknowledging an alert"))?;
        }
        let after = tx.alert(fingerprint).await?;
        tx.commit().await?;
        Ok(after)
    }

    pub async fn add_silence(
        &self,
        matchers: &BTreeMap<String, String>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        created_by: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let json = serde_json::to_string(matchers).map_err(|e| corrupt(e.to_string()))?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(json)
        .bind(starts_at.timestamp_millis())
        .bind(ends_at.timestamp_millis())
        .bind(created_by)
        .bind(comment)
        .bind(now.timestamp_millis())
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(tx.failed("adding a silence"))?;
        tx.commit().await?;
        row.try_get(0).map_err(sql("adding a silence"))
    }

    /// Silences still in force at `now` (or, with `all`, every one).
    pub async fn silences(&self, now: DateTime<Utc>, all: bool) -> Result<Vec<SilenceRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM silences WHERE ?1 OR ends_at > ?2 ORDER BY starts_at, id")
            .bind(all)
            .bind(now.timestamp_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing silences"))?;
        rows.iter()
            .map(|row| {
                let read = |c: &str| row.try_get::<i64, _>(c).map_err(sql("reading a silence"));
                let text = |c: &str| row.try_get::<String, _>(c).map_err(sql("reading a silence"));
                let matchers = serde_json::from_str(&text("matchers")?)
                    .map_err(|e| StoreError::Corrupt { table: "silences", detail: e.to_string() })?;
                Ok(SilenceRow {
                    id: read("id")?,
                    matchers,
                    starts_at: millis(read("starts_at")?),
                    ends_at: millis(read("ends_at")?),
                    created_by: text("created_by")?,
                    comment: text("comment")?,
                    created_at: millis(read("created_at")?),
                })
            })
            .collect()
    }

    /// Ends a silence now. `false` when there is no such silence or it had already ended.
    pub async fn expire_silence(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE silences SET ends_at = ?2 WHERE id = ?1 AND ends_at > ?2")
            .bind(id)
            .bind(now.timestamp_millis())
            .execute(&mut *tx.tx)
            .await
            .map_err(tx.failed("expiring a silence"))?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}
