//! `history` read straight from SQLite on the calling thread, for the CLI (issue 13: "history at raw-SQLite
//! speed").
//!
//! Through sqlx each row is copied value by value on the connection's worker thread and handed over a channel, and
//! opening a [`Store`] runs the migrator and opens its pools: a week of one target (2,000 rows) took 1.7 times the
//! instructions of the sqlite3 shell running the same query (BENCHMARKS.md). Here the same query runs through
//! rusqlite — the same SQLite library, linked once — on one read-only connection, reading each column in place by
//! its position. It serves only a database that needs nothing done to it: the file exists and every migration of
//! this release is applied. Anything else (no file, an older schema to migrate, a file SQLite cannot open
//! read-only) goes through [`Store::open_existing`], which migrates or says what is wrong.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use super::{
    BUSY_TIMEOUT, Columns, HISTORY_OF_ALL, HISTORY_OF_TARGET, HistoryQuery, HistoryRow, SERIES_OF_ALL,
    SERIES_OF_TARGET, StoreError, history_bounds, latest_migration, series_from_row, snapshot_from_row,
};
use crate::model::SeriesKey;

/// A read-only connection to a current database.
pub struct DirectReader {
    conn: Connection,
}

fn failed(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Direct { doing, reason: e.to_string() }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, _: &'static str, index: usize) -> Result<Option<i64>, StoreError> {
        self.get(index).map_err(failed("reading a row"))
    }
    fn text(&self, _: &'static str, index: usize) -> Result<Option<String>, StoreError> {
        self.get(index).map_err(failed("reading a row"))
    }
}

impl DirectReader {
    /// Opens `path` read-only when it can be read as it is: the file exists, SQLite opens it, and every migration
    /// of this release is applied (none newer either). Otherwise `None`, and the caller opens the store.
    pub fn open(path: &Path) -> Option<DirectReader> {
        if !path.is_file() {
            return None;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).ok()?;
        conn.busy_timeout(BUSY_TIMEOUT).ok()?;
        // Reading the migrations table also opens the WAL index: a database SQLite cannot read here fails now.
        let (applied, newest): (i64, Option<i64>) = conn
            .query_row("SELECT COUNT(*), MAX(version) FROM _sqlx_migrations WHERE success", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok()?;
        let (count, latest) = latest_migration();
        (applied == count && newest == Some(latest)).then_some(DirectReader { conn })
    }

    /// [`super::Store::history_each`], from this connection.
    pub fn history_each<E: From<StoreError>>(
        &self,
        q: &HistoryQuery,
        mut each: impl FnMut(HistoryRow) -> Result<(), E>,
    ) -> Result<(), E> {
        // One read transaction, so the series and the snapshots are read from the same state of the file.
        self.conn.execute_batch("BEGIN").map_err(failed("reading history"))?;
        let series = self.series(q.target.as_deref())?;
        let (since, until, limit) = history_bounds(q);
        let text = if q.target.is_some() { HISTORY_OF_TARGET } else { HISTORY_OF_ALL };
        let mut stmt = self.conn.prepare(text).map_err(failed("reading history"))?;
        let mut rows = match &q.target {
            Some(target) => stmt.query(rusqlite::params![since, until, limit, target]),
            None => stmt.query(rusqlite::params![since, until, limit]),
        }
        .map_err(failed("reading history"))?;
        while let Some(row) = rows.next().map_err(failed("reading history"))? {
            let snapshot = snapshot_from_row(row)?;
            let series = super::series_of(&series, &snapshot)?;
            each(HistoryRow { series, snapshot })?;
        }
        drop(rows);
        drop(stmt);
        self.conn.execute_batch("COMMIT").map_err(failed("reading history"))?;
        Ok(())
    }

    fn series(&self, target: Option<&str>) -> Result<HashMap<i64, Arc<SeriesKey>>, StoreError> {
        let text = if target.is_some() { SERIES_OF_TARGET } else { SERIES_OF_ALL };
        let mut stmt = self.conn.prepare(text).map_err(failed("listing series"))?;
        let mut rows = match target {
            Some(t) => stmt.query([t]),
            None => stmt.query([]),
        }
        .map_err(failed("listing series"))?;
        let mut out = HashMap::new();
        while let Some(row) = rows.next().map_err(failed("listing series"))? {
            let s = series_from_row(row)?;
            out.insert(s.id, Arc::new(s.key));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Only a current database is read directly; anything else is left to the store, which migrates it or says
    /// what is wrong.
    #[tokio::test]
    async fn only_a_database_with_exactly_this_releases_migrations_is_read_directly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        assert!(DirectReader::open(&path).is_none(), "no file");
        assert!(!path.exists(), "and none was created");
        let store = Store::open(&path).await.unwrap();
        assert!(DirectReader::open(&path).is_some(), "a current database");
        let (_, latest) = latest_migration();
        let set = async |sql: String| {
            let mut tx = store.begin_write().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(tx.inner()).await.unwrap();
            tx.commit().await.unwrap();
        };
        // A newer release's migration applied: this release must not read what it may not understand.
        set(format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ({}, 'from the future', TRUE, x'00', 0)",
            latest + 1
        ))
        .await;
        assert!(DirectReader::open(&path).is_none(), "a newer schema");
        set(format!("DELETE FROM _sqlx_migrations WHERE version >= {latest}")).await;
        assert!(DirectReader::open(&path).is_none(), "an older schema, to be migrated first");
        std::fs::write(dir.path().join("junk.db"), b"not a database").unwrap();
        assert!(DirectReader::open(&dir.path().join("junk.db")).is_none(), "not SQLite");
    }
}
