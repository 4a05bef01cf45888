//! The only place with SQL. SQLite through sqlx, WAL, migrations from `migrations/` embedded at build time.
//!
//! Writes go through [`WriteTx`], opened with `BEGIN IMMEDIATE`: in WAL mode a deferred transaction that reads and
//! then writes fails at once with SQLITE_BUSY when another writer committed in between, whatever the busy timeout.
//! One poll result is one transaction; later layers (alert state, the outbox) add their rows to the same one.
//! The SQL sticks to what PostgreSQL also accepts where that costs nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

pub mod alerts;
mod direct;
pub mod outbox;
mod state;
mod writer;

use crate::model::{ErrorKind, PollRecord, SeriesKey, Snapshot, TaskStats, TaskType};
pub use alerts::{AlertRow, SilenceRow, TransitionRow};
pub use direct::DirectReader;
pub use outbox::{AttemptResult, Claimant, DeliveryStatus, Grouper, NotificationRow};
pub use state::NextState;
pub use writer::{MAX_BATCH, WriteJob};

/// Errors from the store; all carry what failed.
///
/// Each message says its cause once: sqlx's errors repeat their cause in their own text and again as their source,
/// so the variants keep the cause as text (or, for [`StoreError::Sql`], as a field that is not a `source`) and
/// `{:#}` chains print it once ("cannot open database /x.db: unable to open database file", not that three times).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A command that only reads found no database; nothing was created.
    #[error("no database at {path} (check [storage] path; scanwatch creates it on the first poll)")]
    Missing { path: String },
    /// The database file could not be opened or created.
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    /// Applying the embedded migrations failed (a newer or foreign database?).
    #[error("cannot migrate database {path}: {reason}")]
    Migrate { path: String, reason: String },
    /// The open lock `{db}.lock` could not be created or taken.
    #[error("cannot lock {path} to create or migrate the database: {reason}")]
    Lock { path: String, reason: String },
    /// A statement failed; `error` is sqlx's, for callers that look at SQLite's code.
    #[error("database error while {doing}: {}", one_line(.error))]
    Sql { doing: &'static str, error: sqlx::Error },
    /// A row holds a value this release does not understand.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// A write committed with others (see [`Store::write`]) failed with the transaction they shared: `cause` is
    /// that transaction's error, which the first of them received as it was.
    #[error("{cause}")]
    Shared { cause: String },
    /// A statement of the direct reader ([`DirectReader`]) failed.
    #[error("database error while {doing}: {reason}")]
    Direct { doing: &'static str, reason: String },
}

fn sql(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| StoreError::Sql { doing, error }
}

/// An error and its sources as one line, each distinct text once. A database error is SQLite's message alone
/// (sqlx wraps it as "error returned from database: (code: 14) …" and then returns the same error as its source).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let (text, last) = match err.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => (db.message().to_string(), true),
            _ => (err.to_string().replace("error returned from database: ", ""), false),
        };
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = if last { None } else { err.source() };
    }
    out
}

/// Why a read-write open failed, and whether it was for want of write access (then a read-only open may work).
struct OpenFailure {
    error: StoreError,
    no_write_access: bool,
}

impl From<StoreError> for OpenFailure {
    fn from(error: StoreError) -> Self {
        OpenFailure { error, no_write_access: false }
    }
}

impl OpenFailure {
    fn open(path: &Path, e: sqlx::Error) -> OpenFailure {
        OpenFailure {
            no_write_access: lacks_write_access(&e),
            error: StoreError::Open { path: path.display().to_string(), reason: one_line(&e) },
        }
    }

    fn migrate(path: &Path, e: sqlx::migrate::MigrateError) -> OpenFailure {
        let no_write_access = match &e {
            sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
                lacks_write_access(e)
            }
            _ => false,
        };
        OpenFailure {
            no_write_access,
            error: StoreError::Migrate { path: path.display().to_string(), reason: one_line(&e) },
        }
    }
}

/// SQLite's answers when the file or its directory cannot be written: READONLY (8, and its extended codes),
/// CANTOPEN (14: WAL's `-shm` cannot be created on a read-only mount), PERM (3).
fn lacks_write_access(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else { return false };
    let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    matches!(code & 0xff, 3 | 8 | 14)
}

/// How long a writer waits for another one before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pruning deletes in batches so that pollers never wait long for the write lock.
const PRUNE_BATCH: i64 = 5_000;

/// Every series, and the series of one target (`?1`).
const SERIES_OF_ALL: &str = "SELECT id, target, task_type, account, region, project_id, enterprise_project_id FROM series ORDER BY target, task_type";
const SERIES_OF_TARGET: &str =
    "SELECT id, target, task_type, account, region, project_id, enterprise_project_id FROM series WHERE target = ?1";

/// `history` for one target: `?1 <= polled_at < ?2`, the latest `?3` (`-1`: all), `target = ?4`, oldest first.
/// Plain comparisons only, so the plan is the target's series then a range of the primary key `(series_id,
/// polled_at)` each, whose rows lie side by side (tested in store/tests.rs). The series columns are read once per
/// series, not once per row.
const HISTORY_OF_TARGET: &str = "SELECT * FROM (SELECT s.* FROM snapshots s
     WHERE s.series_id IN (SELECT id FROM series WHERE target = ?4) AND s.polled_at >= ?1 AND s.polled_at < ?2
     ORDER BY s.polled_at DESC, s.id DESC LIMIT ?3) ORDER BY polled_at, id";
/// `history` for every target: a `snapshots_time` range walked newest first, so `LIMIT` stops early.
const HISTORY_OF_ALL: &str = "SELECT * FROM (SELECT s.* FROM snapshots s
     WHERE s.polled_at >= ?1 AND s.polled_at < ?2
     ORDER BY s.polled_at DESC, s.id DESC LIMIT ?3) ORDER BY polled_at, id";

/// An account's latest `?2` calls: per series (by `series_account`) a walk of its primary key newest first
/// that stops after `?2`, merged. One join ordered by time walked the time index backwards through every other
/// account's calls instead, and through the whole table for an account with none yet. Only read when
/// [`ACCOUNTS_REJECTED_SINCE`] says a backoff may be running.
const LATEST_CALLS: &str = "SELECT s.* FROM series r CROSS JOIN snapshots s
     WHERE r.account = ?1 AND s.id IN (SELECT l.id FROM snapshots l WHERE l.series_id = r.id AND l.sent
                                       ORDER BY l.polled_at DESC, l.id DESC LIMIT ?2)
     ORDER BY s.polled_at DESC, s.id DESC LIMIT ?2";
/// Every call sent since `?1`, with its account: one range of `snapshots_time` (the budget window holds at most the
/// fleet's calls per minute), read once at start for every account's and host's budget. Per account and per host it
/// was one range per series: 1,000 index probes for an account of 1,000 series, however few calls it made.
const CALLS_SINCE: &str = "SELECT r.account, s.series_id, s.polled_at FROM snapshots s CROSS JOIN series r
     ON r.id = s.series_id WHERE s.polled_at >= ?1 AND s.sent ORDER BY s.polled_at";
/// The accounts with a rejected-credential call since `?1`: a range of the partial `snapshots_auth_failures` index,
/// which holds only such calls; read once per cycle for every account.
const ACCOUNTS_REJECTED_SINCE: &str = "SELECT DISTINCT r.account FROM snapshots s CROSS JOIN series r
     ON r.id = s.series_id WHERE s.error_kind = 'auth' AND s.sent AND s.polled_at >= ?1";

/// A call sent to HSS, as the rate budgets count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub account: String,
    pub series_id: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Store {
    /// Readers.
    pool: SqlitePool,
    /// The one connection this process writes through, so its page cache stays valid between transactions (a
    /// connection that sees another one's commit drops its cache and reads the pages again).
    write_pool: SqlitePool,
    /// Write transactions of this process queue here, in order and without a deadline, before they take the write
    /// connection. Before this, pooled connections raced for SQLite's write lock and the losers slept in its busy
    /// handler (1, 2, 5, 10 … ms) while the holder needed ~0.3 ms: the poll cycle of 10,000 series ran 5.6x a bare
    /// client's time (BENCHMARKS.md §2). Other processes (a CLI `ack` beside the daemon) still meet at SQLite's lock.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// How this process's latest write transaction ended, for `/healthz`: a write that fails for want of space or
    /// access turns the database unwritable at once, and the next commit turns it writable again. The write probe
    /// alone cannot see a full disk: it writes no page.
    writes: Arc<WriteHealth>,
    /// Where [`Store::write`] queues jobs for group commit.
    writer: Arc<writer::Writer>,
}

/// Why the latest write transaction failed, or `None` when it committed (or none has failed yet).
#[derive(Debug, Default)]
struct WriteHealth {
    failure: std::sync::Mutex<Option<String>>,
}

impl WriteHealth {
    fn set(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }

    /// Notes `e` if it says the database cannot take writes: full, read-only, an I/O error, gone or corrupt.
    /// Lock timeouts and constraint errors say nothing about the database itself (the probe sees locks live).
    fn note(&self, doing: &str, e: &sqlx::Error) {
        let unwritable = match e {
            sqlx::Error::Io(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                // PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
                matches!(code & 0xff, 3 | 8 | 10 | 11 | 13 | 14 | 26)
            }
            _ => false,
        };
        if unwritable {
            self.set(Some(format!("{} (while {doing})", one_line(e))));
        }
    }
}

/// A pool of read-only connections that has read the schema: SQLite opens the file lazily, so a WAL database whose
/// `-shm` cannot be created fails only at the first read.
async fn read_only_pool(opts: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let pool = SqlitePoolOptions::new().max_connections(2).connect_with(opts).await?;
    if let Err(e) = sqlx::query("SELECT COUNT(*) FROM sqlite_master").fetch_one(&pool).await {
        pool.close().await;
        return Err(e);
    }
    Ok(pool)
}

/// The cause part of an open error, to combine two attempts' causes.
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Open { reason, .. } | StoreError::Migrate { reason, .. } | StoreError::Lock { reason, .. } => {
            reason.clone()
        }
        other => other.to_string(),
    }
}

/// What every read-write connection of a store is opened with. No journal mode: [`Store::prepare`] sets WAL once,
/// under its lock.
/// How long a pooled reader stays open unused.
const READER_IDLE: Duration = Duration::from_secs(60);

/// A reader's page cache (`PRAGMA cache_size`, negative = KiB): enough for the index pages of the hot queries.
const READER_CACHE: &str = "-512";

fn connect_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: one_line(&e) })?;
    Ok(opts.filename(path).synchronous(SqliteSynchronous::Normal).busy_timeout(BUSY_TIMEOUT).foreign_keys(true))
}

/// `{db}{suffix}`, beside the database (SQLite's own `-wal` and `-shm` are named the same way).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes the exclusive lock of `{db}.lock` (creating the file), waiting for another opener that holds it. The lock
/// lasts as long as the returned file is open.
async fn lock_sidecar(path: &Path) -> Result<Option<std::fs::File>, OpenFailure> {
    let lock_path = sidecar(path, ".lock");
    let shown = lock_path.display().to_string();
    let taken = tokio::task::spawn_blocking(move || {
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        match file.lock() {
            Ok(()) => Ok(Some(file)),
            // A filesystem without locks: open as before rather than not at all.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(lock = %lock_path.display(), "file locks are not supported here; concurrent first runs may fail");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })
    .await;
    match taken {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(OpenFailure {
            no_write_access: matches!(
                e.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ),
            error: StoreError::Lock { path: shown, reason: e.to_string() },
        }),
        Err(e) => Err(StoreError::Lock { path: shown, reason: e.to_string() }.into()),
    }
}

/// A stored series row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    pub id: i64,
    pub key: SeriesKey,
}

/// What `history` selects; all filters optional.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The latest `limit` rows of the selection (still returned oldest first).
    pub limit: Option<u32>,
}

/// A snapshot with its series, as the read side shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Shared by every row of the series.
    pub series: Arc<SeriesKey>,
    pub snapshot: Snapshot,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    ///
    /// Any number of processes may open one new database at once (two `poll`s from timers, `run` beside them): see
    /// [`Store::prepare`].
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_read_write(path, true).await.map_err(|f| f.error)
    }

    /// Opens the database at `path` for a command that reads: never creates it. A missing file is
    /// [`StoreError::Missing`]. An existing one is opened read-write and migrated if needed; where it cannot be
    /// written (a read-only mount, a file of another user) it is opened read-only instead, and writes through the
    /// store fail. When neither works, the error gives each distinct cause once.
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        match tokio::fs::try_exists(path).await {
            Ok(true) => {}
            Ok(false) => return Err(StoreError::Missing { path: shown }),
            Err(e) => return Err(StoreError::Open { path: shown, reason: e.to_string() }),
        }
        let rw = match Store::open_read_write(path, false).await {
            Ok(store) => return Ok(store),
            Err(f) if f.no_write_access => f.error,
            Err(f) => return Err(f.error),
        };
        match Store::open_read_only(path).await {
            Ok(store) => {
                tracing::debug!(database = %shown, error = %rw, "opened read-only: the database cannot be written");
                Ok(store)
            }
            Err(ro) => {
                let (rw, ro) = (reason(&rw), reason(&ro));
                let reason = if rw == ro { rw } else { format!("{rw}; read-only, {ro}") };
                Err(StoreError::Open { path: shown, reason })
            }
        }
    }

    async fn open_read_write(path: &Path, create: bool) -> Result<Store, OpenFailure> {
        let opts = connect_options(path)?.create_if_missing(create);
        Store::prepare(path, &opts).await?;
        // No `test_before_acquire`: its ping is one more round trip to the connection's worker thread per
        // transaction, and a broken connection fails its statement anyway, which closes it (see `WriteTx`).
        // Readers keep a smaller page cache than SQLite's 2 MB each and close a minute after their last use: the
        // daemon between cycles then holds one reader (its scrapes'), not four full caches (BENCHMARKS.md, "Soak").
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .idle_timeout(READER_IDLE)
            .connect_with(opts.clone().pragma("cache_size", READER_CACHE))
            .await
            .map_err(|e| OpenFailure::open(path, e))?;
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(|e| OpenFailure::open(path, e))?;
        Ok(Store { pool, write_pool, turn: Arc::default(), writes: Arc::default(), writer: Arc::default() })
    }

    /// Creates the file if `opts` say so, switches it to WAL and applies the migrations, on one connection and
    /// under an exclusive lock of the sidecar file `{path}.lock`, so that concurrent openers take turns.
    ///
    /// Without the lock, two processes opening a new database together both saw no migration applied and both ran
    /// the first one (`table series already exists`), or met SQLite's lock while switching to WAL, which needs an
    /// exclusive lock that SQLite's busy timeout does not wait for (`database is locked`). sqlx's migrator runs each
    /// migration in its own transaction and takes no lock of its own on SQLite, so a surrounding `BEGIN EXCLUSIVE`
    /// cannot hold it; an OS file lock can, and the kernel releases it if its holder dies. The pools opened after
    /// this never set the journal mode: WAL is a property of the file by then.
    async fn prepare(path: &Path, opts: &SqliteConnectOptions) -> Result<(), OpenFailure> {
        let _turn = lock_sidecar(path).await?;
        // One connection, as a pool: `Migrator::run` on a bare `&mut SqliteConnection` makes the future not `Send`.
        let one = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(|e| OpenFailure::open(path, e))?;
        let migrated = sqlx::migrate!("./migrations").run(&one).await.map_err(|e| OpenFailure::migrate(path, e));
        one.close().await;
        migrated
    }

    /// Opens an existing, already migrated database without write access (a read-only mount or replica). Writes
    /// through this store fail, and [`Store::check_writable`] says so.
    ///
    /// SQLite opens a WAL database read-only only if its `-shm` file exists or can be created, which it cannot on
    /// a read-only mount after the last writer closed cleanly (`unable to open database file`). Then, and only
    /// when there is no `-wal` file with content (every commit is in the main file), it is opened as immutable.
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| StoreError::Open { path: shown.clone(), reason: one_line(&e) })?
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = match read_only_pool(opts.clone()).await {
            Ok(pool) => pool,
            Err(e) => {
                let wal_is_empty = std::fs::metadata(sidecar(path, "-wal")).map_or(true, |m| m.len() == 0);
                if !(wal_is_empty && lacks_write_access(&e)) {
                    return Err(StoreError::Open { path: shown, reason: one_line(&e) });
                }
                read_only_pool(opts.immutable(true))
                    .await
                    .map_err(|_| StoreError::Open { path: shown.clone(), reason: one_line(&e) })?
            }
        };
        Ok(Store {
            write_pool: pool.clone(),
            pool,
            turn: Arc::default(),
            writes: Arc::default(),
            writer: Arc::default(),
        })
    }

    /// Whether a write could start now: takes the write lock (`BEGIN IMMEDIATE`) and rolls back at once, so it
    /// changes nothing. Fails on a read-only or locked database (after the busy timeout) and on a full disk's
    /// journal errors; cheap enough for every health check.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // A write that touches no row still needs write access; on a read-only connection it fails here.
        sqlx::query("DELETE FROM snapshots WHERE 0").execute(tx.inner()).await.map_err(sql("probing write access"))?;
        tx.rollback().await
    }

    /// Why this process's latest write transaction failed for want of space or access ("database or disk is
    /// full (while storing a snapshot)"), or `None` when its latest one committed. Cheap: no I/O.
    pub fn last_write_failure(&self) -> Option<String> {
        self.writes.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The latest snapshot of every stored series (series never polled are absent).
    pub async fn latest_per_series(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.*, r.target, r.task_type, r.account, r.region, r.project_id, r.enterprise_project_id
             FROM series r JOIN snapshots s ON s.id = (
                 SELECT l.id FROM snapshots l WHERE l.series_id = r.id ORDER BY l.polled_at DESC, l.id DESC LIMIT 1)
             ORDER BY r.target, r.task_type",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql("reading the latest snapshots"))?;
        rows.iter()
            .map(|row| {
                Ok(HistoryRow { series: Arc::new(series_from_row(row)?.key), snapshot: snapshot_from_row(row)? })
            })
            .collect()
    }

    pub async fn close(&self) {
        self.write_pool.close().await;
        self.pool.close().await;
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let mut conn = self.write_pool.acquire().await.map_err(sql("beginning a write"))?;
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            conn.close_on_drop();
            self.writes.note("beginning a write", &e);
            return Err(sql("beginning a write")(e));
        }
        Ok(WriteTx { tx: conn, open: true, writes: Arc::clone(&self.writes), prefetched: HashMap::new(), _turn: turn })
    }

    /// Inserts or refreshes a series and returns its id.
    pub async fn ensure_series(&self, key: &SeriesKey) -> Result<i64, StoreError> {
        let ids = self.ensure_all_series([key]).await?;
        Ok(ids[0])
    }

    /// Inserts or refreshes every series in one transaction and returns their ids, in order.
    pub async fn ensure_all_series<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k SeriesKey>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::new();
        for key in keys {
            ids.push(tx.ensure_series(key).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Stores one poll result in its own transaction and returns the snapshot id.
    pub async fn record_poll(&self, series_id: i64, rec: &PollRecord, sent: bool) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = tx.insert_snapshot(series_id, rec, sent).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn series(&self) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SERIES_OF_ALL))
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing series"))?;
        rows.iter().map(series_from_row).collect()
    }

    /// The series of one target (one per task type).
    async fn series_where_target(&self, target: &str) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SERIES_OF_TARGET))
            .bind(target)
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing series"))?;
        rows.iter().map(series_from_row).collect()
    }

    /// Snapshots of one series with `polled_at >= since`, oldest first (what rules read).
    pub async fn snapshots_since(&self, series_id: i64, since: DateTime<Utc>) -> Result<Vec<Snapshot>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM snapshots WHERE series_id = ?1 AND polled_at >= ?2 ORDER BY polled_at, id")
                .bind(series_id)
                .bind(since.timestamp_millis())
                .fetch_all(&self.pool)
                .await
                .map_err(sql("reading snapshots"))?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// The latest `n` snapshots of one series, oldest first.
    pub async fn latest(&self, series_id: i64, n: u32) -> Result<Vec<Snapshot>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM snapshots WHERE series_id = ?1 ORDER BY polled_at DESC, id DESC LIMIT ?2")
                .bind(series_id)
                .bind(i64::from(n))
                .fetch_all(&self.pool)
                .await
                .map_err(sql("reading the latest snapshots"))?;
        let mut out = rows.iter().map(snapshot_from_row).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Snapshots joined with their series, filtered as `q` says, oldest first.
    ///
    /// Every filter is a plain comparison the planner can use: an absent time bound becomes the widest one rather
    /// than `(?1 IS NULL OR ...)`, which SQLite cannot turn into an index range (it scanned the whole time index,
    /// ~0.5 s on 3 million rows). With a target the plan is `series(target)` → primary-key ranges, each series' rows side by side; for
    /// all targets it is a range of `snapshots_time`, walked newest first so `LIMIT` stops early. BENCHMARKS.md §5.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRow>, StoreError> {
        let mut out = Vec::new();
        self.history_each(q, |row| {
            out.push(row);
            Ok::<(), StoreError>(())
        })
        .await?;
        Ok(out)
    }

    /// [`Store::history`] one row at a time, oldest first, as SQLite returns them: `history` writes each row out
    /// before the next is read, instead of holding the whole selection (and its rendering) in memory.
    pub async fn history_each<E: From<StoreError>>(
        &self,
        q: &HistoryQuery,
        mut each: impl FnMut(HistoryRow) -> Result<(), E>,
    ) -> Result<(), E> {
        use futures_util::TryStreamExt;
        let (since, until, limit) = history_bounds(q);
        // Before the snapshots: a series is never deleted, and one created meanwhile has no snapshot in this read.
        let series: HashMap<i64, Arc<SeriesKey>> = match &q.target {
            Some(target) => self.series_where_target(target).await?,
            None => self.series().await?,
        }
        .into_iter()
        .map(|s| (s.id, Arc::new(s.key)))
        .collect();
        let text = if q.target.is_some() { HISTORY_OF_TARGET } else { HISTORY_OF_ALL };
        let mut query = sqlx::query(text).bind(since).bind(until).bind(limit);
        if let Some(target) = &q.target {
            query = query.bind(target.as_str());
        }
        let mut rows = query.fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(sql("reading history"))? {
            let snapshot = snapshot_from_row(&row)?;
            let series = series_of(&series, &snapshot)?;
            each(HistoryRow { series, snapshot })?;
        }
        Ok(())
    }

    /// Every call sent since `since`, oldest first, with its account and series (to prime the rate budgets of
    /// every account and endpoint host after a restart).
    pub async fn calls_since(&self, since: DateTime<Utc>) -> Result<Vec<Call>, StoreError> {
        let rows = sqlx::query(CALLS_SINCE)
            .bind(since.timestamp_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(sql("reading recent calls"))?;
        let read = |r: &SqliteRow| -> Result<Call, sqlx::Error> {
            Ok(Call { account: r.try_get(0)?, series_id: r.try_get(1)?, at: millis(r.try_get(2)?) })
        };
        rows.iter().map(|r| read(r).map_err(sql("reading recent calls"))).collect()
    }

    /// The accounts that had a call rejected for their credentials (`auth`) since `since`.
    pub async fn accounts_rejected_since(&self, since: DateTime<Utc>) -> Result<HashSet<String>, StoreError> {
        sqlx::query_scalar(ACCOUNTS_REJECTED_SINCE)
            .bind(since.timestamp_millis())
            .fetch_all(&self.pool)
            .await
            .map(|accounts| accounts.into_iter().collect())
            .map_err(sql("reading recent calls"))
    }

    /// The latest calls sent for `account`, newest first (to rebuild its auth backoff after a restart).
    pub async fn latest_calls(&self, account: &str, n: u32) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sqlx::query(LATEST_CALLS)
            .bind(account)
            .bind(i64::from(n))
            .fetch_all(&self.pool)
            .await
            .map_err(sql("reading recent calls"))?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// The latest successful snapshot of a series, and its latest task check (`scan_failures`), each by one index
    /// range: what a process needs to know, once per series, whether a poll calls for a new check.
    pub async fn latest_ok_and_check(
        &self,
        series_id: i64,
    ) -> Result<(Option<Snapshot>, Option<crate::model::AlertContext>), StoreError> {
        let ok =
            sqlx::query("SELECT * FROM snapshots WHERE series_id = ?1 AND ok ORDER BY polled_at DESC, id DESC LIMIT 1")
                .bind(series_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql("reading the latest snapshot"))?;
        let check = sqlx::query(
            "SELECT * FROM snapshots WHERE series_id = ?1 AND task_json IS NOT NULL ORDER BY polled_at DESC LIMIT 1",
        )
        .bind(series_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("reading the latest task check"))?;
        let ok = ok.as_ref().map(snapshot_from_row).transpose()?;
        let check = check.as_ref().map(snapshot_from_row).transpose()?.and_then(|s| s.task);
        Ok((ok, check))
    }

    /// The latest `n` calls sent for one series, newest first (to rebuild its permission backoff after a restart).
    pub async fn latest_series_calls(&self, series_id: i64, n: u32) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE series_id = ?1 AND sent ORDER BY polled_at DESC, id DESC LIMIT ?2",
        )
        .bind(series_id)
        .bind(i64::from(n))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("reading recent calls"))?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// Deletes snapshots older than `cutoff`, never the latest one of a series. Returns how many were deleted.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let n = sqlx::query(
                "DELETE FROM snapshots WHERE id IN (
                     SELECT s.id FROM snapshots s
                     WHERE s.polled_at < ?1
                       AND s.id <> (SELECT l.id FROM snapshots l WHERE l.series_id = s.series_id
                                    ORDER BY l.polled_at DESC, l.id DESC LIMIT 1)
                     LIMIT ?2)",
            )
            .bind(cutoff.timestamp_millis())
            .bind(PRUNE_BATCH)
            .execute(&mut *tx.tx)
            .await
            .map_err(tx.failed("pruning snapshots"))?
            .rows_affected();
            tx.commit().await?;
            deleted += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// A full disk, for tests: the write connection may not grow the file by one more page, so the next write that
    /// needs one fails with SQLITE_FULL. Lasts as long as that connection (a failed transaction closes it).
    #[cfg(test)]
    pub(crate) async fn cap_growth_for_tests(&self) {
        let mut tx = self.begin_write().await.expect("a write transaction");
        // `max_page_count` never goes below the current size: asking for 1 pins it there.
        sqlx::query("PRAGMA max_page_count = 1").execute(tx.inner()).await.expect("PRAGMA max_page_count");
        tx.rollback().await.expect("rollback");
    }

    /// `PRAGMA integrity_check` — `ok` on a healthy database.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row =
            sqlx::query("PRAGMA integrity_check").fetch_one(&self.pool).await.map_err(sql("checking integrity"))?;
        row.try_get::<String, _>(0).map_err(sql("checking integrity"))
    }
}

/// One write transaction. Dropping it without [`WriteTx::commit`], or a failed commit, rolls everything back.
///
/// BEGIN/COMMIT are plain statements rather than sqlx's `Transaction`: when a COMMIT fails (disk full, I/O error,
/// a read-only file) SQLite may already have rolled back, sqlx's follow-up ROLLBACK then fails too and the pooled
/// connection stays marked "in a transaction" for good — every later write failed even after the disk recovered.
/// Closing the connection instead rolls back whatever is open and lets the pool open a fresh one.
pub struct WriteTx {
    tx: PoolConnection<Sqlite>,
    open: bool,
    /// Where a failed statement or commit is noted, and a commit clears it.
    writes: Arc<WriteHealth>,
    /// Rule-state rows read ahead for a batch of polls ([`WriteTx::prefetch_states`]), each taken by its poll.
    prefetched: HashMap<i64, state::Prefetched>,
    /// This process's turn to write; released after the connection (fields drop in order).
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            self.tx.close_on_drop();
        }
    }
}

impl WriteTx {
    pub async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self.tx).await.map_err(self.failed("committing"))?;
        self.open = false;
        self.writes.set(None);
        Ok(())
    }

    /// Undoes the transaction. If even that fails, the connection is closed (which rolls back) instead of pooled.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK").execute(&mut *self.tx).await.map_err(self.failed("rolling back"))?;
        self.open = false;
        Ok(())
    }

    pub async fn ensure_series(&mut self, key: &SeriesKey) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO series (target, task_type, account, region, project_id, enterprise_project_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (target, task_type) DO UPDATE SET account = excluded.account, region = excluded.region,
                 project_id = excluded.project_id, enterprise_project_id = excluded.enterprise_project_id
             RETURNING id",
        )
        .bind(&key.target)
        .bind(key.task_type.as_str())
        .bind(&key.account)
        .bind(&key.region)
        .bind(&key.project_id)
        .bind(key.enterprise_project_id.as_deref())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(self.failed("registering a series"))?;
        row.try_get(0).map_err(sql("registering a series"))
    }

    /// Inserts one snapshot and updates the series' rule state with it; `sent` is false when scanwatch recorded the
    /// poll without calling HSS.
    pub async fn insert_snapshot(&mut self, series_id: i64, rec: &PollRecord, sent: bool) -> Result<i64, StoreError> {
        Ok(self.record_snapshot(series_id, rec, sent).await?.0)
    }

    /// The snapshot row alone; every caller goes through [`WriteTx::record_snapshot`], which keeps the rule state.
    async fn insert_snapshot_row(&mut self, series_id: i64, rec: &PollRecord, sent: bool) -> Result<i64, StoreError> {
        let s = rec.to_snapshot(0, series_id);
        let row = sqlx::query(
            // The table has no rowid (it is clustered by series and time, migration 0012): the id is the largest + 1,
            // read from `snapshots_id` under this transaction's write lock.
            "INSERT INTO snapshots (id, series_id, polled_at, ok, total_num, running_num, last_task_start_time,
                                    latency_ms, http_status, error_kind, error_code, error_message, request_id, sent,
                                    task_json)
             VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM snapshots), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                     ?12, ?13, ?14) RETURNING id",
        )
        .bind(series_id)
        .bind(s.polled_at.timestamp_millis())
        .bind(s.ok())
        .bind(s.stats.map(|x| clamp_i64(x.total_num)))
        .bind(s.stats.map(|x| clamp_i64(x.running_num)))
        .bind(s.stats.and_then(|x| x.last_task_start_time))
        .bind(clamp_i64(s.latency_ms))
        .bind(s.http_status.map(i64::from))
        .bind(s.error_kind.map(|k| k.as_str()))
        .bind(s.error_code.as_deref())
        .bind(s.error_message.as_deref())
        .bind(s.request_id.as_deref())
        .bind(sent)
        .bind(s.task.as_ref().and_then(|t| serde_json::to_string(t).ok()))
        .fetch_one(&mut *self.tx)
        .await
        .map_err(self.failed("storing a snapshot"))?;
        row.try_get(0).map_err(sql("storing a snapshot"))
    }

    /// Maps a statement's error inside this transaction, noting it for [`Store::last_write_failure`] when it says
    /// the database cannot take writes. Every statement of a write transaction maps its error through this.
    pub(crate) fn failed(&self, doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
        let writes = Arc::clone(&self.writes);
        move |error| {
            writes.note(doing, &error);
            StoreError::Sql { doing, error }
        }
    }

    /// The transaction itself, for layers that add their own rows to the same commit.
    pub fn inner(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Reads a row's columns for the mappings below, whichever binding returned it: sqlx's rows by the column's name
/// (their queries select `*`), the direct reader's ([`direct`]) by its position in the query's own column list.
pub(crate) trait Columns {
    fn int(&self, name: &'static str, index: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, name: &'static str, index: usize) -> Result<Option<String>, StoreError>;
}

impl Columns for SqliteRow {
    fn int(&self, name: &'static str, _: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(name).map_err(sql("reading a row"))
    }
    fn text(&self, name: &'static str, _: usize) -> Result<Option<String>, StoreError> {
        self.try_get(name).map_err(sql("reading a row"))
    }
}

/// A column that must not be NULL.
fn required<T>(v: Option<T>, table: &'static str, name: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::Corrupt { table, detail: format!("{name} is NULL") })
}

/// `history`'s bind values: `polled_at` from, to, and how many of the latest (-1: all).
fn history_bounds(q: &HistoryQuery) -> (i64, i64, i64) {
    let since = q.since.map_or(i64::MIN, |t| t.timestamp_millis());
    let until = q.until.map_or(i64::MAX, |t| t.timestamp_millis());
    (since, until, q.limit.map_or(-1, i64::from))
}

/// The series a snapshot of `history` belongs to, among those read before it.
fn series_of(series: &HashMap<i64, Arc<SeriesKey>>, snapshot: &Snapshot) -> Result<Arc<SeriesKey>, StoreError> {
    series.get(&snapshot.series_id).cloned().ok_or_else(|| StoreError::Corrupt {
        table: "snapshots",
        detail: format!("snapshot {} names series {}, which does not exist", snapshot.id, snapshot.series_id),
    })
}

/// How many migrations this release has, and the newest one's version.
fn latest_migration() -> (i64, i64) {
    let migrator = sqlx::migrate!("./migrations");
    let count = i64::try_from(migrator.iter().count()).unwrap_or(i64::MAX);
    (count, migrator.iter().map(|m| m.version).max().unwrap_or(0))
}

/// A series row: the columns [`SERIES_OF_ALL`] selects, in its order.
fn series_from_row(row: &impl Columns) -> Result<SeriesRow, StoreError> {
    let text = |name, index| required(row.text(name, index)?, "series", name);
    let task_type = text("task_type", 2)?;
    let task_type = TaskType::parse(&task_type)
        .ok_or_else(|| StoreError::Corrupt { table: "series", detail: format!("task_type `{task_type}`") })?;
    let key = SeriesKey {
        target: text("target", 1)?,
        account: text("account", 3)?,
        region: text("region", 4)?,
        project_id: text("project_id", 5)?,
        enterprise_project_id: row.text("enterprise_project_id", 6)?,
        task_type,
    };
    Ok(SeriesRow { id: required(row.int("id", 0)?, "series", "id")?, key })
}

/// A snapshot row: the table's columns in the table's order (migration 0012), which is what `*` selects.
fn snapshot_from_row(row: &impl Columns) -> Result<Snapshot, StoreError> {
    let int = |name, index| required(row.int(name, index)?, "snapshots", name);
    let ok = int("ok", 3)? != 0;
    let stats = if ok {
        Some(TaskStats {
            total_num: u64::try_from(int("total_num", 4)?).unwrap_or(0),
            running_num: u64::try_from(int("running_num", 5)?).unwrap_or(0),
            last_task_start_time: row.int("last_task_start_time", 6)?,
        })
    } else {
        None
    };
    let kind = row.text("error_kind", 9)?;
    let s = Snapshot {
        // A check that no longer parses (written by a newer release) reads as no check, not as an error.
        task: row.text("task_json", 14).ok().flatten().and_then(|t| serde_json::from_str(&t).ok()),
        id: int("id", 2)?,
        series_id: int("series_id", 0)?,
        polled_at: millis(int("polled_at", 1)?),
        stats,
        latency_ms: u64::try_from(int("latency_ms", 7)?).unwrap_or(0),
        http_status: row.int("http_status", 8)?.and_then(|s| u16::try_from(s).ok()),
        error_kind: kind.as_deref().and_then(ErrorKind::parse),
        error_code: row.text("error_code", 10)?,
        error_message: row.text("error_message", 11)?,
        request_id: row.text("request_id", 12)?,
    };
    if !s.ok() && s.error_kind.is_none() {
        return Err(StoreError::Corrupt {
            table: "snapshots",
            detail: format!("row {} failed without an error kind", s.id),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
