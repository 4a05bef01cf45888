//! Budget compliance (issue 6, item 2), bounded for the ordinary suite; `examples/bench_budget.rs` is the full
//! 10-minute run in real time, and BENCHMARKS.md has its figures.
//!
//! The fleet (200 accounts × 5 series at the default 5 calls/min), the fastest interval `validate` accepts
//! (60 s), the daemon's own cycle on the daemon's own ticker, against the simulator enforcing 5 calls/min per AK —
//! then the simulator's call log is audited by the simulator's clock, not scanwatch's. 4 cycles instead of 10.
//!
//! Time is simulated: the runtime's clock is paused, and scanwatch and the simulator read the same clock (tokio's,
//! mapped to UTC), so minutes of schedule pass in seconds. Tokio moves a paused clock to the next timer whenever no
//! task is ready — also while a task waits for SQLite's worker thread, which tokio cannot see, so unchecked the clock
//! would leap ahead during every write (and fire sqlx's 30 s acquire timeout at once). [`govern_clock`] bounds that:
//! simulated time runs at most [`STEP`] per millisecond of real time (20x), so a 1 ms write costs at most ~20 ms of
//! simulated time. Such a leap only ever makes a poll later, never earlier: the same direction as a slow disk.
//! Network latency is zero here, so the race between a call's admission and its arrival at the gateway only shows in
//! real time (the example; `RateBudget::finished` is what closes it).

#[path = "../examples/support/budget.rs"]
mod budget;
mod simtime;

use std::time::Duration;

use budget::{Fleet, WINDOW, polls_histogram, run_cycles, summarize, worst_identities};
use chrono::TimeDelta;
use scanwatch::simulator::audit::{audit, audit_with};
use scanwatch::simulator::{Scenario, Simulator, SimulatorOptions};
use simtime::{TokioClock, govern_clock};
use tokio_util::sync::CancellationToken;

/// The most the paused clock moves per millisecond of real time (20x).
const STEP: Duration = Duration::from_millis(20);

#[tokio::test(start_paused = true)]
async fn every_series_is_polled_every_cycle_at_the_fastest_interval_and_never_over_budget() {
    // The fleet: 1,000 series over 200 accounts. Each account spends 24 s of a cycle on its spread polls, so
    // all 200 must run side by side (a poller that ran 64 accounts at a time needed four rounds, ~96 s per cycle).
    let fleet = Fleet { accounts: 200, series_per_account: 5, calls_per_minute: 5, host_calls_per_minute: 1000 };
    let cycles = 4;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    govern_clock(STEP, stop.clone());
    let clock = TokioClock::starting_now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (config, interval) = fleet.config_at_fastest_interval(&endpoint, dir.path()).unwrap();
    assert_eq!(interval, Duration::from_secs(60), "5 series at 5 calls/min fit a 1-minute interval");

    let options = SimulatorOptions { clock: clock.clone(), max_call_records: fleet.series() * (cycles + 1) };
    let sim = Simulator::with_options(Scenario::from_toml_str(&fleet.scenario_toml()).unwrap(), options);
    tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });

    let reports = run_cycles(dir.path(), config, clock.clone(), cycles).await.unwrap();
    stop.cancel();

    // The limit the simulator enforces, not the one scanwatch was configured with: every API (the task checks of
    // scan_failures have their own 5 a minute), then the statistics polls alone for the schedule.
    let every_api = audit(&sim.calls(), WINDOW, sim.scenario().calls_per_minute as usize);
    assert_eq!((every_api.over_budget(), every_api.throttled()), (0, 0), "{:?}", worst_identities(&every_api, 5));
    let a = audit(&statistics_calls(&sim), WINDOW, sim.scenario().calls_per_minute as usize);
    let s = summarize(&a);
    eprintln!("{s:?}");
    assert_eq!(s.identities, fleet.accounts);
    assert_eq!(s.max_in_window, 5, "never more than 5 calls of one AK in 60 s: {:?}", worst_identities(&a, 5));
    assert_eq!(s.over_budget, 0, "{:?}", worst_identities(&a, 5));
    assert_eq!(s.throttled, 0, "{:?}", worst_identities(&a, 5));
    assert_eq!(reports.iter().map(|r| r.failed_polls).sum::<usize>(), 0, "{reports:?}");
    assert_eq!(s.series, fleet.series());
    assert_eq!((s.polls_min, s.polls_max, s.ok_min), (cycles, cycles, cycles), "{:?}", polls_histogram(&a));
    // Each series once per cycle: never sooner than the interval, never a skipped cycle.
    assert!(s.gap_min >= interval, "{s:?}");
    assert!(s.gap_max < interval + interval / 4, "{s:?}");
}

/// HSS's per-client-IP limit: three accounts of ten series each on one endpoint host share 5 calls a minute from
/// this process, whatever each account's own budget. `validate`'s fastest interval for that is 6m (30 series at 5 a
/// minute; each account alone would need only 2m), and at it, for ten simulated minutes and more, no 60 s window
/// holds more than 5 calls of the host or of any account, nothing is throttled, and every series is polled once
/// per interval.
#[tokio::test(start_paused = true)]
async fn three_accounts_on_one_host_share_its_per_ip_budget_at_the_interval_validate_computes() {
    let fleet = Fleet { accounts: 3, series_per_account: 10, calls_per_minute: 5, host_calls_per_minute: 5 };
    let cycles = 3;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    // Waits here are 12 s apart, so a coarser step keeps the run short without touching the budget arithmetic.
    govern_clock(Duration::from_millis(100), stop.clone());
    let clock = TokioClock::starting_now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (config, interval) = fleet.config_at_fastest_interval(&endpoint, dir.path()).unwrap();
    assert_eq!(interval, Duration::from_secs(360), "the host budget binds: 30 series at 5 calls/min");

    let options = SimulatorOptions { clock: clock.clone(), max_call_records: fleet.series() * (cycles + 1) };
    // The simulator enforces HSS's per-IP limit too: a call over it would be a 429.
    let scenario = fleet.scenario_toml().replace("[simulator]\n", "[simulator]\ncalls_per_minute_per_ip = 5\n");
    let sim = Simulator::with_options(Scenario::from_toml_str(&scenario).unwrap(), options);
    tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    let reports = run_cycles(dir.path(), config, clock.clone(), cycles).await.unwrap();
    stop.cancel();

    let every_api = audit_with(&sim.calls(), WINDOW, 5, 5);
    assert_eq!((every_api.ip_max_in_window(), every_api.ip_over_budget()), (5, 0), "per (client IP, API)");
    assert_eq!((every_api.over_budget(), every_api.throttled()), (0, 0), "per (user, API)");
    let calls = statistics_calls(&sim);
    let a = audit_with(&calls, WINDOW, 5, 5);
    let s = summarize(&a);
    assert_eq!((s.over_budget, s.throttled), (0, 0), "{s:?}");
    assert_eq!(reports.iter().map(|r| r.failed_polls).sum::<usize>(), 0, "{reports:?}");
    assert!(calls.last().unwrap().at - calls[0].at >= TimeDelta::minutes(10), "ten simulated minutes and more");
    assert_eq!((s.polls_min, s.polls_max), (cycles, cycles), "{:?}", polls_histogram(&a));
    // The interval achieved is the one validate computed.
    assert!(s.gap_min >= interval - Duration::from_secs(1), "{s:?}");
    assert!(s.gap_max < interval + interval / 4, "{s:?}");
}

/// The task-statistics calls: what the schedule is about (the task checks of scan_failures are other APIs).
fn statistics_calls(sim: &Simulator) -> Vec<scanwatch::simulator::CallRecord> {
    sim.calls().into_iter().filter(|c| c.api == Some(scanwatch::simulator::Api::TaskStatistics)).collect()
}
