//! The `series_state` rows: each series' [`SeriesState`], kept by the transaction that stores each of its
//! snapshots, so that evaluating a poll reads one row rather than its rule windows' snapshots (issue 13).
//!
//! A row is current when it has folded every stored snapshot of its series: its `last_polled_at` is the series'
//! newest `polled_at` (`max_polled_at`). A new snapshot at or after that is folded into it. Otherwise — no row yet (a
//! database from before migration 0010, or a series' first poll), or a clock that went back so the new snapshot
//! lands before stored ones — the state is rebuilt from the stored snapshots at or before the new one, which is
//! what the rules would read from scratch. Retention pruning leaves the rows alone: they remember what was pruned.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::{Store, StoreError, WriteTx, millis, snapshot_from_row, sql};
use crate::model::{ErrorKind, PollRecord, Snapshot, TaskStats};
use crate::rules::{Failure, SeriesState};

/// A stored row: the state and the newest `polled_at` among the series' snapshots.
struct StateRow {
    state: SeriesState,
    max_polled_at: DateTime<Utc>,
}

impl StateRow {
    /// Whether a snapshot at `at` can be folded into this state: every stored snapshot is in it, and none is later.
    fn takes(&self, at: DateTime<Utc>) -> bool {
        self.state.last_polled_at == Some(self.max_polled_at) && at >= self.max_polled_at
    }
}

pub(super) const STATE_SELECT: &str = "SELECT * FROM series_state WHERE series_id = ?1";
pub(super) const STATE_REBUILD: &str =
    "SELECT * FROM snapshots WHERE series_id = ?1 AND polled_at <= ?2 ORDER BY polled_at, id";

async fn read_row(conn: &mut SqliteConnection, series_id: i64) -> Result<Option<StateRow>, sqlx::Error> {
    let row = sqlx::query(STATE_SELECT).bind(series_id).fetch_optional(&mut *conn).await?;
    row.as_ref().map(state_from_row).transpose()
}

/// The state from scratch: every stored snapshot of the series at or before `at`, folded in order.
async fn rebuild(conn: &mut SqliteConnection, series_id: i64, at: DateTime<Utc>) -> Result<SeriesState, StoreError> {
    let rows = sqlx::query(STATE_REBUILD)
        .bind(series_id)
        .bind(at.timestamp_millis())
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("rebuilding rule state"))?;
    let mut state = SeriesState::default();
    for row in &rows {
        state.fold(&snapshot_from_row(row)?);
    }
    Ok(state)
}

fn state_from_row(row: &SqliteRow) -> Result<StateRow, sqlx::Error> {
    let at = |col: &str| row.try_get::<Option<i64>, _>(col).map(|v| v.map(millis));
    let last_ok = match (row.try_get::<Option<i64>, _>("total_num")?, row.try_get::<Option<i64>, _>("running_num")?) {
        (Some(total), Some(running)) => Some(TaskStats {
            total_num: u64::try_from(total).unwrap_or(0),
            running_num: u64::try_from(running).unwrap_or(0),
            last_task_start_time: row.try_get("last_task_start_time")?,
        }),
        _ => None,
    };
    let failures = u64::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(0);
    let kind: Option<String> = row.try_get("error_kind")?;
    let last_failure = (failures > 0).then(|| -> Result<Failure, sqlx::Error> {
        Ok(Failure {
            kind: kind.as_deref().and_then(ErrorKind::parse),
            http_status: row.try_get::<Option<i64>, _>("http_status")?.and_then(|s| u16::try_from(s).ok()),
            error_code: row.try_get("error_code")?,
            error_message: row.try_get("error_message")?,
        })
    });
    let dropped = match (row.try_get::<Option<i64>, _>("dropped_from")?, row.try_get::<Option<i64>, _>("dropped_to")?) {
        (Some(from), Some(to)) => Some((u64::try_from(from).unwrap_or(0), u64::try_from(to).unwrap_or(0))),
        _ => None,
    };
    let state = SeriesState {
        first_polled_at: at("first_polled_at")?,
        last_polled_at: at("last_polled_at")?,
        first_ok_at: at("first_ok_at")?,
        last_ok_at: at("last_ok_at")?,
        last_ok,
        failures,
        last_failure: last_failure.transpose()?,
        running_since: at("running_since")?,
        running_from_first: row.try_get("running_from_first")?,
        grew_at: at("grew_at")?,
        dropped,
        // A check that no longer parses (written by a newer release) reads as none, as in snapshots.
        task: row.try_get::<Option<String>, _>("task_json")?.and_then(|t| serde_json::from_str(&t).ok()),
    };
    Ok(StateRow { state, max_polled_at: millis(row.try_get("max_polled_at")?) })
}

/// `rec` as a snapshot read back from the database would be: times in whole milliseconds, so that a state folded
/// live and one rebuilt from the stored rows are the same.
fn stored_form(rec: &PollRecord, id: i64, series_id: i64) -> Snapshot {
    let mut s = rec.to_snapshot(id, series_id);
    s.polled_at = millis(s.polled_at.timestamp_millis());
    s
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl WriteTx {
    /// Inserts one snapshot and brings the series' rule state up to it, in this transaction; returns the snapshot's
    /// id and the state the rules evaluate this poll with.
    pub async fn record_snapshot(
        &mut self,
        series_id: i64,
        rec: &PollRecord,
        sent: bool,
    ) -> Result<(i64, SeriesState), StoreError> {
        let id = self.insert_snapshot_row(series_id, rec, sent).await?;
        let at = rec.polled_at;
        let stored = read_row(self.inner(), series_id).await.map_err(self.failed("reading rule state"))?;
        let (state, max_polled_at) = match stored {
            Some(mut row) if row.takes(at) => {
                row.state.fold(&stored_form(rec, id, series_id));
                (row.state, at)
            }
            other => {
                let max = other.map_or(at, |row| row.max_polled_at.max(at));
                (rebuild(self.inner(), series_id, at).await?, max)
            }
        };
        self.save_state(series_id, &state, max_polled_at).await?;
        Ok((id, state))
    }

    async fn save_state(
        &mut self,
        series_id: i64,
        s: &SeriesState,
        max_polled_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        let failure = s.last_failure.as_ref();
        sqlx::query(
            "INSERT OR REPLACE INTO series_state (series_id, max_polled_at, first_polled_at, last_polled_at,
                 first_ok_at, last_ok_at, total_num, running_num, last_task_start_time, failures, error_kind,
                 http_status, error_code, error_message, running_since, running_from_first, grew_at, dropped_from,
                 dropped_to, task_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )
        .bind(series_id)
        .bind(max_polled_at.timestamp_millis())
        .bind(ms(s.first_polled_at).unwrap_or(max_polled_at.timestamp_millis()))
        .bind(ms(s.last_polled_at).unwrap_or(max_polled_at.timestamp_millis()))
        .bind(ms(s.first_ok_at))
        .bind(ms(s.last_ok_at))
        .bind(s.last_ok.map(|x| clamp(x.total_num)))
        .bind(s.last_ok.map(|x| clamp(x.running_num)))
        .bind(s.last_ok.and_then(|x| x.last_task_start_time))
        .bind(clamp(s.failures))
        .bind(failure.and_then(|f| f.kind).map(ErrorKind::as_str))
        .bind(failure.and_then(|f| f.http_status).map(i64::from))
        .bind(failure.and_then(|f| f.error_code.as_deref()))
        .bind(failure.and_then(|f| f.error_message.as_deref()))
        .bind(ms(s.running_since))
        .bind(s.running_from_first)
        .bind(ms(s.grew_at))
        .bind(s.dropped.map(|(from, _)| clamp(from)))
        .bind(s.dropped.map(|(_, to)| clamp(to)))
        .bind(s.task.as_ref().and_then(|t| serde_json::to_string(t).ok()))
        .execute(self.inner())
        .await
        .map_err(self.failed("saving rule state"))?;
        Ok(())
    }
}

impl Store {
    /// The rule state recording `rec` would give the series, without writing anything (a poll's preview): the
    /// stored row with `rec` folded in, or the stored snapshots' fold when the row is missing or behind.
    pub async fn rule_state_with(&self, series_id: i64, rec: &PollRecord) -> Result<SeriesState, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql("reading rule state"))?;
        let at = rec.polled_at;
        let mut state = match read_row(&mut conn, series_id).await.map_err(sql("reading rule state"))? {
            Some(row) if row.takes(at) => row.state,
            _ => rebuild(&mut conn, series_id, at).await?,
        };
        // The new snapshot sorts after every stored one at the same time (its id will be the largest).
        state.fold(&stored_form(rec, i64::MAX, series_id));
        Ok(state)
    }

    /// The stored rule state of a series, and the newest `polled_at` of its snapshots, if it has a row.
    pub async fn rule_state(&self, series_id: i64) -> Result<Option<(SeriesState, DateTime<Utc>)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql("reading rule state"))?;
        let row = read_row(&mut conn, series_id).await.map_err(sql("reading rule state"))?;
        Ok(row.map(|r| (r.state, r.max_polled_at)))
    }

    /// The rule state from scratch: the fold of the series' stored snapshots at or before `at`.
    pub async fn rebuild_rule_state(&self, series_id: i64, at: DateTime<Utc>) -> Result<SeriesState, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql("reading rule state"))?;
        rebuild(&mut conn, series_id, at).await
    }
}
