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
use futures_util::TryStreamExt;

use crate::model::{ErrorKind, PollRecord, Snapshot, TaskStats};
use crate::rules::{Failure, SeriesState};

/// A stored row: the state and the newest `polled_at` among the series' snapshots.
pub(super) struct StateRow {
    state: SeriesState,
    max_polled_at: DateTime<Utc>,
    alerted: bool,
}

impl StateRow {
    /// Whether a snapshot at `at` can be folded into this state: every stored snapshot is in it, and none is later.
    fn takes(&self, at: DateTime<Utc>) -> bool {
        self.state.last_polled_at == Some(self.max_polled_at) && at >= self.max_polled_at
    }
}

pub(super) const STATE_REBUILD: &str =
    "SELECT * FROM snapshots WHERE series_id = ?1 AND polled_at <= ?2 ORDER BY polled_at, id";

/// A series' state row, if it has one, and whether it has any snapshot stored (a series' first poll then knows,
/// from the same read, that there is nothing to rebuild).
pub(super) type Prefetched = (Option<StateRow>, bool);

/// The state rows of the series in `?1` (a JSON array of ids: one bind however many), one row per id, all NULL
/// where it has none, each with its id and whether the series has any snapshot. The one read of state rows: a
/// poll's own, a batch's ([`WriteTx::prefetch_states`]) and a poller's at start ([`Store::known_rule_states`]).
pub(super) const STATES_SELECT: &str = "SELECT j.value AS for_series, st.*,
         EXISTS (SELECT 1 FROM snapshots s WHERE s.series_id = j.value) AS stored
     FROM json_each(?1) j LEFT JOIN series_state st ON st.series_id = j.value";

/// A row of [`STATES_SELECT`]: the series' id and what was read of it.
fn prefetched_from_row(row: &SqliteRow) -> Result<(i64, Prefetched), sqlx::Error> {
    let state = match row.try_get::<Option<i64>, _>("series_id")? {
        Some(_) => Some(state_from_row(row)?),
        None => None,
    };
    Ok((row.try_get("for_series")?, (state, row.try_get("stored")?)))
}

fn ids_json(series: &[i64]) -> String {
    serde_json::to_string(series).unwrap_or_else(|_| "[]".into())
}

async fn read_row(conn: &mut SqliteConnection, series_id: i64) -> Result<Prefetched, sqlx::Error> {
    let row = sqlx::query(STATES_SELECT).bind(ids_json(&[series_id])).fetch_one(&mut *conn).await?;
    Ok(prefetched_from_row(&row)?.1)
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
    Ok(StateRow { state, max_polled_at: millis(row.try_get("max_polled_at")?), alerted: row.try_get("alerted")? })
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

/// The rule state a poll leads to, read in the transaction that will store the poll ([`WriteTx::next_state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NextState {
    /// The state the rules evaluate the poll with.
    pub state: SeriesState,
    /// The newest `polled_at` among the series' snapshots once the poll is stored.
    max_polled_at: DateTime<Utc>,
    /// Whether the series may have alert rows (migration 0013): read from its row, true when the row is missing
    /// or behind. Whoever stores the poll and knows better sets it before [`WriteTx::store_snapshot`].
    pub alerted: bool,
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
        let next = self.next_state(series_id, rec).await?;
        let id = self.store_snapshot(series_id, rec, sent, &next).await?;
        Ok((id, next.state))
    }

    /// The rule state storing `rec` leads to, without writing anything: the stored row with `rec` folded in, or,
    /// when the row is missing or behind, the fold of the stored snapshots at or before it and then `rec`. A
    /// poll reads it first, so that it can stop before its first row when it needs something else first (the task
    /// behind an alert that is about to notify).
    pub async fn next_state(&mut self, series_id: i64, rec: &PollRecord) -> Result<NextState, StoreError> {
        let at = rec.polled_at;
        let (stored, any_snapshot) = match self.prefetched.remove(&series_id) {
            Some(read) => read,
            None => read_row(self.inner(), series_id).await.map_err(self.failed("reading rule state"))?,
        };
        let (mut state, max_polled_at, alerted) = match stored {
            Some(row) if row.takes(at) => (row.state, at, row.alerted),
            // A new series: nothing to rebuild. It may still find alerts another series left under its
            // coordinates (a renamed target), so it reads them.
            None if !any_snapshot => (SeriesState::default(), at, true),
            other => {
                let max = other.map_or(at, |row| row.max_polled_at.max(at));
                (rebuild(self.inner(), series_id, at).await?, max, true)
            }
        };
        // The new snapshot sorts after every stored one at the same time (its id will be the largest).
        state.fold(&stored_form(rec, i64::MAX, series_id));
        Ok(NextState { state, max_polled_at, alerted })
    }

    /// Reads the rule-state rows of `series` in one statement, for the polls of a batch about to be written in this
    /// transaction: each one's [`WriteTx::next_state`] then takes its row instead of reading it. A row is taken
    /// once; a second poll of the same series in the transaction reads again (and sees the first one's write).
    pub async fn prefetch_states(&mut self, series: &[i64]) -> Result<(), StoreError> {
        if series.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(STATES_SELECT)
            .bind(ids_json(series))
            .fetch_all(self.inner())
            .await
            .map_err(self.failed("reading rule states"))?;
        for row in &rows {
            let (id, read) = prefetched_from_row(row).map_err(sql("reading rule states"))?;
            self.prefetched.insert(id, read);
        }
        Ok(())
    }

    /// Inserts the snapshot of `rec` and saves `next` (from [`WriteTx::next_state`] of the same `rec`, in this
    /// transaction) as the series' rule state; returns the snapshot's id.
    pub async fn store_snapshot(
        &mut self,
        series_id: i64,
        rec: &PollRecord,
        sent: bool,
        next: &NextState,
    ) -> Result<i64, StoreError> {
        let id = self.insert_snapshot_row(series_id, rec, sent).await?;
        self.save_state(series_id, next).await?;
        Ok(id)
    }

    async fn save_state(&mut self, series_id: i64, next: &NextState) -> Result<(), StoreError> {
        let (s, max_polled_at) = (&next.state, next.max_polled_at);
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        let failure = s.last_failure.as_ref();
        sqlx::query(
            "INSERT OR REPLACE INTO series_state (series_id, max_polled_at, first_polled_at, last_polled_at,
                 first_ok_at, last_ok_at, total_num, running_num, last_task_start_time, failures, error_kind,
                 http_status, error_code, error_message, running_since, running_from_first, grew_at, dropped_from,
                 dropped_to, task_json, alerted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
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
        .bind(next.alerted)
        .execute(self.inner())
        .await
        .map_err(self.failed("saving rule state"))?;
        Ok(())
    }
}

impl Store {
    /// Calls `each` for every one of `series` whose rule state is known without reading its snapshots, at
    /// start: with its state row when that row is current (it has folded every stored snapshot), or with `None`
    /// for a series with no snapshot at all. One statement, streamed, so that a poller's first cycle need not ask
    /// per series whether its latest call was denied or when it last checked its tasks. A series left out (its
    /// row is behind) is read on its first poll.
    pub async fn known_rule_states(
        &self,
        series: &[i64],
        mut each: impl FnMut(i64, Option<&SeriesState>),
    ) -> Result<(), StoreError> {
        let mut rows = sqlx::query(STATES_SELECT).bind(ids_json(series)).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(sql("reading rule states"))? {
            match prefetched_from_row(&row).map_err(sql("reading rule states"))? {
                (id, (Some(row), _)) if row.state.last_polled_at == Some(row.max_polled_at) => {
                    each(id, Some(&row.state))
                }
                (id, (None, false)) => each(id, None),
                _ => {}
            }
        }
        Ok(())
    }

    /// The stored rule state of a series, and the newest `polled_at` of its snapshots, if it has a row.
    pub async fn rule_state(&self, series_id: i64) -> Result<Option<(SeriesState, DateTime<Utc>)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql("reading rule state"))?;
        let (row, _) = read_row(&mut conn, series_id).await.map_err(sql("reading rule state"))?;
        Ok(row.map(|r| (r.state, r.max_polled_at)))
    }

    /// The rule state from scratch: the fold of the series' stored snapshots at or before `at`.
    pub async fn rebuild_rule_state(&self, series_id: i64, at: DateTime<Utc>) -> Result<SeriesState, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(sql("reading rule state"))?;
        rebuild(&mut conn, series_id, at).await
    }
}
