//! Budget compliance (issue 6, item 2; BENCHMARKS.md "Budget compliance"): 1,000 series over 200 accounts at the
//! default 5 calls/min, the daemon's cycle on the daemon's ticker at the fastest interval `validate` accepts, for
//! 10 minutes of real time against the in-process simulator enforcing 5 calls/min per AK. Afterwards the simulator's
//! call log is audited by the simulator's clock, independently of scanwatch's budget: calls over budget in any
//! sliding 60 s window, 429s, polls per series and the gaps between them.
//!
//! `cargo run --release --example bench_budget -- [ACCOUNTS] [SERIES_PER_ACCOUNT] [MINUTES]` (default 200 5 10).
//! CPU and peak RSS are this process's: scanwatch and the simulator together.

mod support;

use std::sync::Arc;
use std::time::Instant;

use scanwatch::clock::SystemClock;
use scanwatch::simulator::audit::audit;
use scanwatch::simulator::{Scenario, Simulator, SimulatorOptions};
use support::budget::{Fleet, WINDOW, polls_histogram, run_cycles, summarize, worst_identities};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let fleet = Fleet {
        accounts: arg(1, 200)?,
        series_per_account: arg(2, 5)?,
        calls_per_minute: 5,
        host_calls_per_minute: 1000,
    };
    let minutes = arg(3, 10)?;
    tokio::runtime::Runtime::new()?.block_on(run(fleet, minutes))
}

async fn run(fleet: Fleet, minutes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (config, interval) = fleet.config_at_fastest_interval(&endpoint, dir.path())?;
    let cycles = (minutes as u64 * 60 / interval.as_secs().max(1)) as usize;

    let options = SimulatorOptions { max_call_records: fleet.series() * (cycles + 1) + 1000, ..Default::default() };
    let sim = Simulator::with_options(Scenario::from_toml_str(&fleet.scenario_toml())?, options);
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    println!(
        "bench_budget: {} series over {} accounts at {} calls/min; fastest interval validate accepts: {}s; {cycles} \
         cycles ({minutes} min); simulator on {endpoint}",
        fleet.series(),
        fleet.accounts,
        fleet.calls_per_minute,
        interval.as_secs()
    );

    let (cpu0, t0) = (support::cpu_time(), Instant::now());
    let reports = run_cycles(dir.path(), config, Arc::new(SystemClock::default()), cycles).await?;
    let (wall, cpu) = (t0.elapsed(), support::cpu_time() - cpu0);
    stop.cancel();
    let _ = server.await;

    let calls = sim.calls();
    // The limit the simulator enforces, not the one scanwatch was configured with.
    let a = audit(&calls, WINDOW, sim.scenario().calls_per_minute as usize);
    let s = summarize(&a);
    let failed: usize = reports.iter().map(|r| r.failed_polls).sum();
    println!(
        "daemon: {} cycles, {} polls, {failed} failed",
        reports.len(),
        reports.iter().map(|r| r.polls).sum::<usize>()
    );
    println!(
        "simulator: {} requests from {} AKs for {} series; max in any 60 s window per AK: {} (limit {}); over budget: \
         {}; 429s: {}",
        s.requests, s.identities, s.series, s.max_in_window, fleet.calls_per_minute, s.over_budget, s.throttled
    );
    println!(
        "polls per series: min {} max {} (ok min {}); gap between polls: min {:.3}s p50 {:.3}s max {:.3}s (interval {}s)",
        s.polls_min,
        s.polls_max,
        s.ok_min,
        s.gap_min.as_secs_f64(),
        s.gap_p50.as_secs_f64(),
        s.gap_max.as_secs_f64(),
        interval.as_secs()
    );
    println!("polls per series histogram (polls: series): {:?}", polls_histogram(&a));
    for line in worst_identities(&a, 5) {
        println!("  over budget or throttled: {line}");
    }
    println!(
        "wall {:.1}s, CPU {:.1}s (scanwatch + simulator), peak RSS {:.1} MiB",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        support::peak_rss_mib()
    );
    let compliant = s.over_budget == 0
        && s.throttled == 0
        && s.series == fleet.series()
        && s.polls_min == cycles
        && s.polls_max == cycles;
    println!("verdict: {}", if compliant { "COMPLIANT" } else { "NOT COMPLIANT" });
    Ok(())
}
