use super::*;
use crate::model::PollError;

fn key(target: &str, task_type: TaskType) -> SeriesKey {
    SeriesKey {
        target: target.into(),
        account: "prod".into(),
        region: "cn-north-4".into(),
        project_id: "p1".into(),
        enterprise_project_id: None,
        task_type,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn ok(secs: i64, total: u64) -> PollRecord {
    PollRecord {
        task: None,
        polled_at: at(secs),
        latency_ms: 12,
        outcome: Ok(TaskStats { total_num: total, running_num: 0, last_task_start_time: Some(1_745_311_451_000) }),
        http_status: Some(200),
        request_id: Some("req-ok".into()),
    }
}

fn failed(secs: i64) -> PollRecord {
    let mut e = PollError::new(ErrorKind::Server, "service unavailable");
    e.http_status = Some(503);
    e.error_code = Some("503".into());
    e.request_id = Some("req-503".into());
    PollRecord { task: None, polled_at: at(secs), latency_ms: 30, outcome: Err(e), http_status: None, request_id: None }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).await.unwrap();
    (dir, s)
}

#[tokio::test]
async fn a_new_database_is_migrated_in_wal_mode() {
    let (_d, s) = store().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&s.pool).await.unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(s.integrity_check().await.unwrap(), "ok");
}

#[tokio::test]
async fn reopening_keeps_data_and_series_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open(&path).await.unwrap();
    let id = s.ensure_series(&key("a", TaskType::IacScan)).await.unwrap();
    s.record_poll(id, &ok(0, 1), true).await.unwrap();
    s.close().await;
    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.ensure_series(&key("a", TaskType::IacScan)).await.unwrap(), id);
    assert_eq!(s.latest(id, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn success_and_failure_round_trip_with_every_field() {
    let (_d, s) = store().await;
    let id = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    s.record_poll(id, &ok(0, 17), true).await.unwrap();
    s.record_poll(id, &failed(60), true).await.unwrap();
    let rows = s.history(&HistoryQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 2);
    let good = &rows[0].snapshot;
    assert_eq!(good.stats.unwrap().total_num, 17);
    assert_eq!(good.http_status, Some(200));
    assert_eq!(good.request_id.as_deref(), Some("req-ok"));
    let bad = &rows[1].snapshot;
    assert!(!bad.ok());
    assert_eq!(bad.error_kind, Some(ErrorKind::Server));
    assert_eq!(bad.http_status, Some(503));
    assert_eq!(bad.error_message.as_deref(), Some("service unavailable"));
    assert_eq!(bad.request_id.as_deref(), Some("req-503"));
    assert_eq!(*rows[1].series, key("a", TaskType::ClusterScan));
}

#[tokio::test]
async fn history_filters_by_target_time_and_limit() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let b = s.ensure_series(&key("b", TaskType::ClusterScan)).await.unwrap();
    for i in 0..10 {
        s.record_poll(a, &ok(i * 60, i as u64), true).await.unwrap();
        s.record_poll(b, &ok(i * 60, 100 + i as u64), true).await.unwrap();
    }
    let q = HistoryQuery { target: Some("a".into()), since: Some(at(120)), until: Some(at(480)), limit: None };
    let rows = s.history(&q).await.unwrap();
    let totals: Vec<u64> = rows.iter().map(|r| r.snapshot.stats.unwrap().total_num).collect();
    assert_eq!(totals, vec![2, 3, 4, 5, 6, 7]);
    let q = HistoryQuery { target: Some("b".into()), limit: Some(3), ..Default::default() };
    let totals: Vec<u64> = s.history(&q).await.unwrap().iter().map(|r| r.snapshot.stats.unwrap().total_num).collect();
    assert_eq!(totals, vec![107, 108, 109], "the latest three, oldest first");
}

#[tokio::test]
async fn history_of_all_targets_honours_time_bounds_and_limit() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let b = s.ensure_series(&key("b", TaskType::IacScan)).await.unwrap();
    for i in 0..10 {
        s.record_poll(a, &ok(i * 60, i as u64), true).await.unwrap();
        s.record_poll(b, &ok(i * 60 + 1, 100 + i as u64), true).await.unwrap();
    }
    let totals = |rows: Vec<HistoryRow>| rows.iter().map(|r| r.snapshot.stats.unwrap().total_num).collect::<Vec<_>>();
    let q = HistoryQuery { since: Some(at(480)), ..Default::default() };
    assert_eq!(totals(s.history(&q).await.unwrap()), vec![8, 108, 9, 109], "since is inclusive, oldest first");
    let q = HistoryQuery { until: Some(at(61)), ..Default::default() };
    assert_eq!(totals(s.history(&q).await.unwrap()), vec![0, 100, 1], "until is exclusive");
    let q = HistoryQuery { limit: Some(3), ..Default::default() };
    assert_eq!(totals(s.history(&q).await.unwrap()), vec![108, 9, 109], "the latest three, oldest first");
    let q = HistoryQuery { target: Some("nobody".into()), ..Default::default() };
    assert!(s.history(&q).await.unwrap().is_empty());
}

/// `EXPLAIN QUERY PLAN` of `text` (with `params` parameters, all bound to 0: plans don't depend on the values).
async fn plan(s: &Store, text: &str, params: usize) -> Vec<String> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {text}")));
    for _ in 0..params {
        query = query.bind(0_i64);
    }
    query.fetch_all(&s.pool).await.unwrap().iter().map(|row| row.get::<String, _>("detail")).collect()
}

/// The hot queries must be index ranges: a filter the planner could not use made "one target, last 7 days" take
/// ~0.5 s on 3 million rows (`?1 IS NULL OR ...`), and the rule history of every poll walked the series' whole past
/// (`... OR ...`). A scan of `snapshots` ("SCAN", or a "SEARCH" on `series_id` alone) fails here.
#[tokio::test]
async fn hot_queries_read_snapshots_by_index_ranges_only() {
    let (_d, s) = store().await;
    let cases = [
        ("history of one target", HISTORY_OF_TARGET, 4),
        ("history of all targets", HISTORY_OF_ALL, 3),
        ("rule states of a batch", state::STATES_SELECT, 1),
        ("rule state rebuilt", state::STATE_REBUILD, 2),
        ("calls since", CALLS_SINCE, 1),
        ("accounts rejected since", ACCOUNTS_REJECTED_SINCE, 1),
        ("latest calls", LATEST_CALLS, 2),
    ];
    // Each series' rows are stored together (migration 0012): a target's range is one walk of the primary key.
    let target = plan(&s, HISTORY_OF_TARGET, 4).await;
    assert!(
        target.iter().any(|d| d.contains("USING PRIMARY KEY (series_id=? AND polled_at>? AND polled_at<?)")),
        "{target:?}"
    );
    // A poll's alerts: by fingerprint and by series, each an index lookup, never a scan of every alert.
    let alerts = plan(&s, &alerts::series_alerts(5), 6).await;
    assert!(alerts.iter().all(|d| !d.contains("SCAN")), "{alerts:?}");
    assert!(alerts.iter().any(|d| d.contains("alerts_series")), "{alerts:?}");
    for (what, text, params) in cases {
        let plan = plan(&s, text, params).await;
        let on_snapshots: Vec<&String> = plan
            .iter()
            .filter(|d| [" snapshots ", " s ", " l ", " series_state "].iter().any(|t| d.contains(t)))
            .collect();
        assert!(!on_snapshots.is_empty(), "{what}: {plan:?}");
        for step in on_snapshots {
            let ranged = ["polled_at>?", "polled_at<?", "(id=?)", "INTEGER PRIMARY KEY (rowid=?)"]
                .iter()
                .any(|r| step.contains(r));
            // The "latest N" subquery walks its series' index newest first and stops after N.
            let latest_n = step.ends_with("USING PRIMARY KEY (series_id=?)");
            assert!(step.starts_with("SEARCH") && (ranged || latest_n), "{what}: {step} in {plan:?}");
        }
    }
}

#[tokio::test]
async fn pruning_never_deletes_a_series_latest_row() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let b = s.ensure_series(&key("b", TaskType::ClusterScan)).await.unwrap();
    for i in 0..5 {
        s.record_poll(a, &ok(i, i as u64), true).await.unwrap();
    }
    s.record_poll(b, &ok(0, 1), true).await.unwrap();
    // Everything is older than the cutoff; each series keeps exactly its newest row.
    assert_eq!(s.prune(at(1000)).await.unwrap(), 4);
    assert_eq!(s.latest(a, 10).await.unwrap().iter().map(|x| x.stats.unwrap().total_num).collect::<Vec<_>>(), vec![4]);
    assert_eq!(s.latest(b, 10).await.unwrap().len(), 1);
    assert_eq!(s.prune(at(1000)).await.unwrap(), 0);
}

#[tokio::test]
async fn recent_calls_skip_polls_that_were_never_sent() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    s.record_poll(a, &ok(0, 1), true).await.unwrap();
    s.record_poll(a, &failed(10), false).await.unwrap();
    s.record_poll(a, &failed(20), true).await.unwrap();
    let calls: Vec<_> = s.calls_since(at(0)).await.unwrap().into_iter().map(|c| (c.account, c.at)).collect();
    assert_eq!(calls, vec![("prod".to_string(), at(0)), ("prod".to_string(), at(20))]);
    assert_eq!(s.latest_calls("prod", 5).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_accounts_latest_calls_merge_its_series_newest_first() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let b = s.ensure_series(&key("a", TaskType::IacScan)).await.unwrap();
    let mut other = key("z", TaskType::ClusterScan);
    other.account = "other".into();
    let z = s.ensure_series(&other).await.unwrap();
    for i in 0..6 {
        s.record_poll(a, &ok(i * 10, 0), true).await.unwrap();
        s.record_poll(b, &ok(i * 10 + 5, 0), true).await.unwrap();
        s.record_poll(z, &ok(i * 10 + 7, 0), true).await.unwrap();
    }
    s.record_poll(a, &failed(100), false).await.unwrap();
    let got: Vec<(i64, DateTime<Utc>)> =
        s.latest_calls("prod", 4).await.unwrap().iter().map(|c| (c.series_id, c.polled_at)).collect();
    assert_eq!(got, vec![(b, at(55)), (a, at(50)), (b, at(45)), (a, at(40))], "sent calls only, newest first");
    assert_eq!(s.latest_calls("other", 100).await.unwrap().len(), 6);
    assert!(s.latest_calls("nobody", 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing_behind() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    {
        let mut tx = s.begin_write().await.unwrap();
        tx.insert_snapshot(a, &ok(0, 1), true).await.unwrap();
    }
    assert!(s.latest(a, 10).await.unwrap().is_empty());
}

/// Every table and migration a fresh `open` must leave behind, and a write through the store works.
async fn assert_complete_schema(s: &Store) {
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&s.pool).await.unwrap();
    assert_eq!(applied, sqlx::migrate!("./migrations").iter().count() as i64, "every migration applied once");
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    for table in ["alerts", "delivery_attempts", "notices", "notifications", "series", "snapshots"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&s.pool).await.unwrap();
    assert_eq!(mode, "wal");
    let id = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    s.record_poll(id, &ok(0, 1), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_first_opens_of_a_new_database_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                Store::open(&path).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap_or_else(|e| panic!("a concurrent first open failed: {e}")));
    }
    for s in &stores {
        assert_complete_schema(s).await;
    }
}

#[test]
fn eight_threads_each_with_its_own_runtime_open_a_new_database_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let barrier = std::sync::Barrier::new(8);
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    barrier.wait();
                    rt.block_on(async {
                        let s = Store::open(&path).await.map_err(|e| e.to_string())?;
                        assert_complete_schema(&s).await;
                        s.close().await;
                        Ok(())
                    })
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "concurrent first opens failed: {failed:#?}");
}

#[tokio::test]
async fn open_existing_never_creates_a_database_and_names_the_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("scanwatch.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();

    let e = Store::open_existing(&path).await.unwrap_err();

    assert!(matches!(e, StoreError::Missing { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("no database at {} (check [storage] path; scanwatch creates it on the first poll)", path.display())
    );
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert!(left.is_empty(), "a read created nothing, not even a lock file: {left:?}");
}

#[tokio::test]
async fn open_existing_opens_an_existing_database_for_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open(&path).await.unwrap();
    let id = s.ensure_series(&key("a", TaskType::IacScan)).await.unwrap();
    s.record_poll(id, &ok(0, 1), true).await.unwrap();
    s.close().await;

    let s = Store::open_existing(&path).await.unwrap();

    assert_eq!(s.latest(id, 10).await.unwrap().len(), 1);
    s.record_poll(id, &ok(60, 2), true).await.unwrap();
    s.check_writable().await.unwrap();
}

/// `{:#}` is how the CLI prints an error chain.
fn chain(e: StoreError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

#[tokio::test]
async fn open_errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();

    let text = chain(Store::open(&path).await.unwrap_err());
    assert_eq!(text.matches("file is not a database").count(), 1, "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    let text = chain(Store::open_existing(&path).await.unwrap_err());
    assert_eq!(text.matches("file is not a database").count(), 1, "{text}");
}

#[tokio::test]
async fn statement_errors_say_their_cause_once() {
    let (_d, s) = store().await;
    let e = sqlx::query("INSERT INTO nowhere VALUES (1)").execute(&s.pool).await.map_err(sql("testing")).unwrap_err();
    let text = chain(e);
    assert_eq!(text, "database error while testing: no such table: nowhere");
}

#[tokio::test]
async fn a_write_that_fails_for_want_of_space_is_noted_until_the_next_commit() {
    let (_d, s) = store().await;
    assert_eq!(s.last_write_failure(), None);

    // A constraint error is the caller's mistake, not the database's trouble.
    let mut tx = s.begin_write().await.unwrap();
    let e = sqlx::query("INSERT INTO snapshots (series_id) VALUES (NULL)").execute(tx.inner()).await;
    let e = e.map_err(tx.failed("testing")).unwrap_err();
    drop(tx);
    assert!(e.to_string().contains("NOT NULL"), "{e}");
    assert_eq!(s.last_write_failure(), None);

    s.cap_growth_for_tests().await;
    let keys: Vec<SeriesKey> =
        (0..400).map(|i| key(&format!("{i:04}{}", "x".repeat(200)), TaskType::IacScan)).collect();
    s.ensure_all_series(&keys).await.unwrap_err();
    let failure = s.last_write_failure().unwrap();
    assert_eq!(failure, "database or disk is full (while registering a series)");
    assert_eq!(s.clone().last_write_failure().as_deref(), Some(failure.as_str()), "clones share it");

    s.ensure_series(&key("a", TaskType::IacScan)).await.unwrap();
    assert_eq!(s.last_write_failure(), None);
}

/// What primes the accounts' and endpoint hosts' budgets after a restart: every call sent since a time, oldest
/// first, with its account and series; a poll that was never sent is no call.
#[tokio::test]
async fn recent_calls_are_those_sent_with_their_account_and_series() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let mut of_other_account = key("b", TaskType::ClusterScan);
    of_other_account.account = "other".into();
    let b = s.ensure_series(&of_other_account).await.unwrap();
    s.record_poll(a, &ok(0, 1), true).await.unwrap();
    s.record_poll(b, &ok(5, 1), true).await.unwrap();
    s.record_poll(a, &failed(10), false).await.unwrap();
    s.record_poll(b, &failed(20), true).await.unwrap();
    let s = &s;
    let calls = |since| async move {
        s.calls_since(since).await.unwrap().into_iter().map(|c| (c.account, c.series_id, c.at)).collect::<Vec<_>>()
    };
    let prod = || "prod".to_string();
    let other = || "other".to_string();
    assert_eq!(calls(at(0)).await, vec![(prod(), a, at(0)), (other(), b, at(5)), (other(), b, at(20))]);
    assert_eq!(calls(at(6)).await, vec![(other(), b, at(20))]);
    assert!(calls(at(21)).await.is_empty());
}

/// The credential backoff reads the account's latest calls only when a rejected-credential call was sent since
/// the longest backoff: one that was never sent, or another kind of failure, or another account's, does not count.
#[tokio::test]
async fn an_auth_failure_is_found_by_account_and_time() {
    let (_d, s) = store().await;
    let a = s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap();
    let mut of_other_account = key("b", TaskType::ClusterScan);
    of_other_account.account = "other".into();
    let b = s.ensure_series(&of_other_account).await.unwrap();
    let auth = |min: i64| PollRecord {
        outcome: Err(crate::model::PollError::new(ErrorKind::Auth, "APIGW.0301")),
        ..failed(min)
    };
    s.record_poll(a, &failed(0), true).await.unwrap();
    s.record_poll(a, &auth(5), false).await.unwrap();
    s.record_poll(b, &auth(10), true).await.unwrap();
    let rejected = async |since| {
        let mut accounts: Vec<String> = s.accounts_rejected_since(since).await.unwrap().into_iter().collect();
        accounts.sort();
        accounts
    };
    assert_eq!(rejected(at(0)).await, ["other"], "a 503 and an unsent record are no rejection");
    assert_eq!(rejected(at(10)).await, ["other"]);
    assert!(rejected(at(11)).await.is_empty(), "too old");
    s.record_poll(a, &auth(30), true).await.unwrap();
    assert_eq!(rejected(at(0)).await, ["other", "prod"]);
}

/// Migration 0013 on a database that has alerts: a series with an alert row reads its alerts, one without skips
/// them, and a series without a state row is left to its first poll.
#[tokio::test]
async fn migration_0013_marks_exactly_the_series_that_have_alert_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open(&path).await.unwrap();
    let (a, b) = (
        s.ensure_series(&key("a", TaskType::ClusterScan)).await.unwrap(),
        s.ensure_series(&key("b", TaskType::ClusterScan)).await.unwrap(),
    );
    s.record_poll(a, &ok(0, 1), true).await.unwrap();
    s.record_poll(b, &ok(0, 1), true).await.unwrap();
    let mut tx = s.begin_write().await.unwrap();
    let firing = crate::alerting::Alert { state: crate::alerting::AlertState::Firing, ..Default::default() };
    tx.save_alert(
        "fp-a",
        a,
        crate::rules::RuleName::PollFailing,
        crate::rules::Severity::Critical,
        &firing,
        None,
        false,
    )
    .await
    .unwrap();
    // Back to the schema before 0013, every state row as a poll of that release left it.
    for undo in [
        "DROP TRIGGER series_coordinates_changed",
        "DROP INDEX alerts_series",
        "ALTER TABLE series_state DROP COLUMN alerted",
        "DELETE FROM _sqlx_migrations WHERE version = 13",
    ] {
        sqlx::query(undo).execute(tx.inner()).await.unwrap();
    }
    tx.commit().await.unwrap();
    s.close().await;

    let s = Store::open(&path).await.unwrap();
    let flags: Vec<(i64, bool)> = sqlx::query_as("SELECT series_id, alerted FROM series_state ORDER BY series_id")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    assert_eq!(flags, [(a, true), (b, false)]);
    assert_complete_schema(&s).await;
}

/// At start a poller learns, in one statement, what each configured series' state row says — or that a series has
/// no snapshot at all; a series whose row is missing or behind is left out (it is read on its first poll), and so
/// is one not asked for.
#[tokio::test]
async fn known_rule_states_are_the_current_rows_and_the_series_without_snapshots_among_those_asked_for() {
    let (_d, s) = store().await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for t in ["current", "new", "behind", "not-asked"] {
            ids.push(s.ensure_series(&key(t, TaskType::ClusterScan)).await.unwrap());
        }
        ids
    };
    let (current, new, behind, not_asked) = (ids[0], ids[1], ids[2], ids[3]);
    s.record_poll(current, &ok(0, 7), true).await.unwrap();
    s.record_poll(not_asked, &ok(0, 7), true).await.unwrap();
    s.record_poll(behind, &failed(0), true).await.unwrap();
    let mut tx = s.begin_write().await.unwrap();
    sqlx::query("DELETE FROM series_state WHERE series_id = ?1").bind(behind).execute(tx.inner()).await.unwrap();
    tx.commit().await.unwrap();

    let mut known = Vec::new();
    s.known_rule_states(&[current, new, behind], |id, state| {
        known.push((id, state.map(|s| (s.failures, s.last_ok, s.task.clone()))));
    })
    .await
    .unwrap();
    known.sort_by_key(|(id, _)| *id);
    let last_ok = TaskStats { total_num: 7, running_num: 0, last_task_start_time: Some(1_745_311_451_000) };
    assert_eq!(known, [(current, Some((0, Some(last_ok), None))), (new, None)]);
}
