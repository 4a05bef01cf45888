//! Figures 4 and 5 of BENCHMARKS.md, on a temporary SQLite file.
//!
//! 4. rows/s of `Store::record_poll` and of `poller::record_and_evaluate` (one transaction per poll, as
//!    the poller writes) next to a raw sqlx insert of the same rows batched in one transaction.
//! 5. p50/p99 of `Store::history` for "one target, last 7 days" and "all targets, last hour" on a database of
//!    HISTORY_ROWS snapshots (raw batched inserts), next to the bare indexed query through sqlx, rows left undecoded.
//!
//! `cargo run --release --example bench_store -- [ROWS] [HISTORY_ROWS]` (default 20000 10000000).

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use scanwatch::model::{PollRecord, SeriesKey, TaskStats, TaskType};
use scanwatch::poller::{Outbox, record_and_evaluate};
use scanwatch::rules::RuleSet;
use scanwatch::store::{HistoryQuery, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

const SERIES: usize = 1_000;

fn key(i: usize) -> SeriesKey {
    SeriesKey {
        target: format!("t{}", i / 2),
        account: format!("a{}", i % 50),
        region: "cn-north-4".into(),
        project_id: format!("{:032x}", i / 2 + 1),
        enterprise_project_id: None,
        task_type: TaskType::ALL[i % 2],
    }
}

fn record(at: DateTime<Utc>, n: usize) -> PollRecord {
    PollRecord {
        task: None,
        polled_at: at,
        latency_ms: 80 + (n % 40) as u64,
        outcome: Ok(TaskStats {
            total_num: 100 + (n / 50) as u64,
            running_num: u64::from(n.is_multiple_of(3)),
            last_task_start_time: Some((at - TimeDelta::hours(1)).timestamp_millis()),
        }),
        http_status: Some(200),
        request_id: Some(format!("{n:032x}")),
    }
}

/// The raw baseline: one multi-row INSERT per 100 rows, all in one transaction.
async fn raw_insert(pool: &SqlitePool, rows: &[(i64, PollRecord)]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(100) {
        let mut qb = sqlx::QueryBuilder::new(
            "INSERT INTO snapshots (series_id, polled_at, ok, total_num, running_num, last_task_start_time, latency_ms, http_status, request_id, sent) ",
        );
        qb.push_values(chunk, |mut b, (sid, r)| {
            let s = r.outcome.as_ref().ok().copied().unwrap_or(TaskStats {
                total_num: 0,
                running_num: 0,
                last_task_start_time: None,
            });
            b.push_bind(*sid)
                .push_bind(r.polled_at.timestamp_millis())
                .push_bind(true)
                .push_bind(s.total_num as i64)
                .push_bind(s.running_num as i64)
                .push_bind(s.last_task_start_time)
                .push_bind(r.latency_ms as i64)
                .push_bind(r.http_status.map(i64::from))
                .push_bind(r.request_id.clone())
                .push_bind(true);
        });
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The baselines' connection: the store's durability (WAL is the file's own mode by now; synchronous=NORMAL).
fn raw_options(db: &std::path::Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new().filename(db).synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let history_rows: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10_000_000);
    let dir = tempfile::tempdir()?;

    // ---- figure 4: write throughput, three fresh databases
    let now = Utc::now();
    let rows: Vec<(usize, PollRecord)> =
        (0..n).map(|k| (k % SERIES, record(now - TimeDelta::seconds((n - k) as i64), k))).collect();
    let mut results = Vec::new();
    for side in ["raw_batched", "raw_tx_per_row", "record_poll", "record_and_evaluate"] {
        let db = dir.path().join(format!("{side}.db"));
        let store = Store::open(&db).await?;
        let mut ids = Vec::new();
        for i in 0..SERIES {
            ids.push(store.ensure_series(&key(i)).await?);
        }
        let t0 = Instant::now();
        match side {
            "raw_batched" => {
                let pool = SqlitePool::connect_with(raw_options(&db)).await?;
                let raw: Vec<(i64, PollRecord)> = rows.iter().map(|(i, r)| (ids[*i], r.clone())).collect();
                let t = Instant::now();
                raw_insert(&pool, &raw).await?;
                results.push((side, n as f64 / t.elapsed().as_secs_f64()));
                pool.close().await;
                store.close().await;
                continue;
            }
            "raw_tx_per_row" => {
                // What one transaction per row costs through sqlx by itself: BEGIN IMMEDIATE, the same INSERT, COMMIT.
                let pool = SqlitePool::connect_with(raw_options(&db)).await?;
                let mut conn = pool.acquire().await?;
                let raw: Vec<(i64, PollRecord)> = rows.iter().map(|(i, r)| (ids[*i], r.clone())).collect();
                let t = Instant::now();
                for (sid, r) in &raw {
                    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                    let st = r.outcome.as_ref().ok().copied().expect("benchmark rows are successes");
                    sqlx::query(
                        "INSERT INTO snapshots (series_id, polled_at, ok, total_num, running_num, last_task_start_time, latency_ms, http_status, request_id, sent)
                         VALUES (?1, ?2, TRUE, ?3, ?4, ?5, ?6, ?7, ?8, TRUE)",
                    )
                    .bind(sid)
                    .bind(r.polled_at.timestamp_millis())
                    .bind(st.total_num as i64)
                    .bind(st.running_num as i64)
                    .bind(st.last_task_start_time)
                    .bind(r.latency_ms as i64)
                    .bind(r.http_status.map(i64::from))
                    .bind(r.request_id.as_deref())
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                }
                results.push((side, n as f64 / t.elapsed().as_secs_f64()));
                drop(conn);
                pool.close().await;
                store.close().await;
                continue;
            }
            "record_poll" => {
                for (i, r) in &rows {
                    store.record_poll(ids[*i], r, true).await?;
                }
            }
            _ => {
                let rules = RuleSet::default();
                let lifecycle = scanwatch::alerting::Lifecycle::default();
                let labels = BTreeMap::new();
                for (i, r) in &rows {
                    let outbox = Outbox { labels: Some(&labels), routes: &[], silences: &[], contexts: &[] };
                    record_and_evaluate(&store, ids[*i], &key(*i), &rules, &lifecycle, r, true, outbox).await?;
                }
            }
        }
        results.push((side, n as f64 / t0.elapsed().as_secs_f64()));
        store.close().await;
    }
    println!("figure 4: {n} snapshot rows over {SERIES} series");
    let raw = results[0].1;
    for (side, rate) in &results {
        println!("  {side:<20} {rate:>10.0} rows/s  ({:.3} of raw)", rate / raw);
    }

    // ---- figure 5: history queries on a large database
    // BENCH_HISTORY_DB=PATH keeps the filled database (and its fill time in PATH.now) for the next run.
    let keep = std::env::var_os("BENCH_HISTORY_DB").map(std::path::PathBuf::from);
    let db = keep.clone().unwrap_or_else(|| dir.path().join("history.db"));
    let stamp = db.with_extension("now");
    let reused = keep.is_some() && db.exists() && stamp.exists();
    let store = Store::open(&db).await?;
    let pool = SqlitePool::connect_with(raw_options(&db)).await?;
    let now = if reused {
        let at: DateTime<Utc> = std::fs::read_to_string(&stamp)?.trim().parse()?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshots").fetch_one(&pool).await?;
        println!("figure 5: reusing {} ({rows} snapshots, filled at {at})", db.display());
        at
    } else {
        fill_history(&store, &pool, now, history_rows).await?;
        std::fs::write(&stamp, now.to_rfc3339())?;
        now
    };
    let queries = [
        (
            "one target, last 7 days",
            HistoryQuery { target: Some("t7".into()), since: Some(now - TimeDelta::days(7)), ..Default::default() },
            // The baseline: the same rows by their index, through sqlx, left undecoded.
            "SELECT * FROM snapshots WHERE series_id IN (SELECT id FROM series WHERE target = ?2) AND polled_at >= ?1",
            500,
        ),
        (
            "one target, latest 100",
            HistoryQuery { target: Some("t7".into()), limit: Some(100), ..Default::default() },
            "SELECT * FROM (SELECT * FROM snapshots WHERE series_id IN (SELECT id FROM series WHERE target = ?2)
                             AND ?1 IS NULL ORDER BY polled_at DESC LIMIT 100)",
            500,
        ),
        (
            "all targets, last hour",
            HistoryQuery { since: Some(now - TimeDelta::hours(1)), ..Default::default() },
            "SELECT * FROM snapshots WHERE polled_at >= ?1 AND ?2 IS NOT NULL",
            200,
        ),
    ];
    for (name, q, baseline, runs) in queries {
        let since = q.since.map(|t| t.timestamp_millis());
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        let (mut rows, mut bare_rows) = (0, 0);
        for _ in 0..runs {
            let t = Instant::now();
            rows = store.history(&q).await?.len();
            ours.push(t.elapsed());
            let t = Instant::now();
            bare_rows = sqlx::query(baseline).bind(since).bind("t7").fetch_all(&pool).await?.len();
            bare.push(t.elapsed());
        }
        ours.sort();
        bare.sort();
        println!(
            "  {name:<26} {rows:>6} rows  p50 {:>8.3} ms  p99 {:>8.3} ms  | bare indexed query {bare_rows:>6} rows  p50 {:>8.3} ms  p99 {:>8.3} ms  ({runs} runs each)",
            support::percentile_ms(&ours, 50.0),
            support::percentile_ms(&ours, 99.0),
            support::percentile_ms(&bare, 50.0),
            support::percentile_ms(&bare, 99.0)
        );
    }
    pool.close().await;
    println!("peak RSS {:.1} MiB", support::peak_rss_mib());
    store.close().await;
    Ok(())
}

/// Fills `store` with `history_rows` snapshots of SERIES series polled every 5 minutes up to `now` (raw batched
/// inserts, newest first).
async fn fill_history(store: &Store, pool: &SqlitePool, now: DateTime<Utc>, history_rows: usize) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for i in 0..SERIES {
        ids.push(store.ensure_series(&key(i)).await?);
    }
    // Each series polled every 5 minutes, newest last: fill backwards from now in batches of whole intervals.
    let (fill_started, mut filled, mut step) = (Instant::now(), 0usize, 0i64);
    while filled < history_rows {
        let mut batch = Vec::with_capacity(SERIES * 20);
        for _ in 0..20 {
            let at = now - TimeDelta::minutes(5 * step);
            for (i, id) in ids.iter().enumerate() {
                batch.push((*id, record(at - TimeDelta::milliseconds(i as i64), filled + i)));
            }
            step += 1;
        }
        raw_insert(pool, &batch).await?;
        filled += batch.len();
    }
    let fill = fill_started.elapsed();
    let span = TimeDelta::minutes(5 * step);
    println!(
        "figure 5: filled {filled} snapshots ({SERIES} series x {step} polls, {:.1} days of 5-minute polls) in {:.1} s ({:.0} rows/s)",
        span.num_minutes() as f64 / 1440.0,
        fill.as_secs_f64(),
        filled as f64 / fill.as_secs_f64()
    );
    Ok(())
}
