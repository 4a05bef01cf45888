//! Several real `scanwatch poll` processes started together on a new database (two timers firing at once, or
//! `run` starting beside a timer's `poll`): every one creates-or-finds the database, migrates it at most once and
//! stores its poll. Before the open lock they failed with `table series already exists` or `database is locked`.

mod common;

use common::*;

/// Processes started together.
const PROCESSES: usize = 6;

#[test]
fn polls_started_together_on_a_new_database_all_succeed_and_all_store() {
    let sb = Sandbox::new();
    let sim = SimServer::start(
        &(scenario_head()
            + &series("p1", "cluster_scan", None, "total_num = 7\nrunning_num = 0\nlast_task_age = \"1m\"")),
    );
    sb.write_config(&format!(
        "{}{}",
        aksk_account("acct", "SW_AK", "SW_SK"),
        target("t1", "acct", &sim.url, "p1", &["cluster_scan"], None)
    ));
    assert!(!sb.db_path().exists());

    let barrier = std::sync::Barrier::new(PROCESSES);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..PROCESSES)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    sb.run(&["poll"])
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a poll thread")).collect()
    });

    for run in &runs {
        run.expect_code(0);
    }
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), PROCESSES, "every poll stored its snapshot: {rows:#?}");
}
