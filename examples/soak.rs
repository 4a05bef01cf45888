//! Soak benchmark (BENCHMARKS.md, "Soak"): the daemon's real loop (`scanwatch::daemon::run`) for 24 simulated hours
//! on a paused tokio clock, 100 series on 10 accounts against the in-process simulator at HSS's default 5 calls/min
//! per account (and 600 per host, a fleet behind many addresses),
//! its HTTP API scraped every 5 s (`/metrics`, and one of the JSON endpoints in turn) and a webhook receiving its
//! alerts. Prints this process's resident memory (`/proc/self/status`) every simulated half hour, so growth shows
//! as a column that does not level off.
//!
//!   cargo run --release --example soak -- [HOURS] [INTERVAL_SECS]        (defaults: 24, 300 = the default interval)
//!
//! The series: most grow steadily; a tenth stop growing from hour 2 to hour 14 (`no_recent_scan` and
//! `total_stalled` fire, remind, resolve); a tenth answer 503 from hour 1 to hour 3 (poll errors, `poll_failing`).
//! The numbers include the simulator, the scraper and the receiver, which live in this process too; they keep
//! nothing per request (the simulator at most 1,000 call records).

#[path = "../tests/simtime/mod.rs"]
mod simtime;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scanwatch::config::{Config, Environment};
use scanwatch::simulator::{Scenario, Simulator, SimulatorOptions};
use simtime::{TokioClock, govern_clock};
use tokio_util::sync::CancellationToken;

const ACCOUNTS: usize = 10;
const SERIES_PER_ACCOUNT: usize = 10;
const AK: &str = "HPUASOAK000000000001";
const SK: &str = "soakSecretKey000000000000000000000000001";

fn project(i: usize) -> String {
    format!("{:032x}", 0x50a0_0000 + i)
}

fn scenario() -> String {
    let mut s = format!("[simulator]\ncalls_per_minute = 5\n[[credentials]]\nak = \"{AK}\"\nsk = \"{SK}\"\n");
    for i in 0..ACCOUNTS * SERIES_PER_ACCOUNT {
        let steps = match i % 10 {
            // Stops growing at 2h (stale, stalled), grows again at 14h.
            3 => "[[series.steps]]\nat = \"0s\"\ntotal_num = 100\ntotal_per_hour = 2.0\nrunning_num = 0\nlast_task_age = \"5m\"\n\
                  [[series.steps]]\nat = \"2h\"\ntotal_num = 104\nrunning_num = 0\nlast_task_age = \"0s\"\n\
                  [[series.steps]]\nat = \"14h\"\ntotal_num = 104\ntotal_per_hour = 2.0\nrunning_num = 0\nlast_task_age = \"1m\"\n"
                .to_string(),
            // 503 from 1h to 3h.
            7 => "[[series.steps]]\nat = \"0s\"\ntotal_num = 100\ntotal_per_hour = 2.0\nrunning_num = 0\nlast_task_age = \"5m\"\n\
                  [[series.steps]]\nat = \"1h\"\nfault = \"server_error\"\nstatus = 503\n\
                  [[series.steps]]\nat = \"3h\"\ntotal_num = 106\ntotal_per_hour = 2.0\nrunning_num = 0\nlast_task_age = \"1m\"\n"
                .to_string(),
            _ => "[[series.steps]]\nat = \"0s\"\ntotal_num = 100\ntotal_per_hour = 2.0\nrunning_num = 0\nlast_task_age = \"5m\"\n"
                .to_string(),
        };
        s.push_str(&format!("\n[[series]]\nproject_id = \"{}\"\ntask_type = \"cluster_scan\"\n{steps}", project(i)));
    }
    s
}

fn config_toml(endpoint: &str, db: &std::path::Path, listen: &str, hook: &str, interval: u64) -> String {
    let mut s = format!(
        "[storage]\npath = \"{}\"\n[schedule]\ninterval = \"{interval}s\"\nhost_calls_per_minute = 600\n[server]\nlisten = \"{listen}\"\n\
         [[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n",
        db.display()
    );
    for a in 0..ACCOUNTS {
        s.push_str(&format!("\n[[accounts]]\nname = \"a{a}\"\nak_env = \"SOAK_AK\"\nsk_env = \"SOAK_SK\"\n"));
    }
    for i in 0..ACCOUNTS * SERIES_PER_ACCOUNT {
        s.push_str(&format!(
            "\n[[targets]]\nname = \"t{i}\"\naccount = \"a{}\"\nregion = \"cn-north-4\"\nendpoint = \"{endpoint}\"\n\
             project_id = \"{}\"\ntask_types = [\"cluster_scan\"]\n",
            i % ACCOUNTS,
            project(i)
        ));
    }
    s
}

/// A free loopback port for the daemon's `[server] listen` (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn kib(field: &str) -> u64 {
    support::status_kib("self", field).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let hours: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(24);
    let interval: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?;
    rt.block_on(async move {
        let stop = CancellationToken::new();
        // At most 250 ms of simulated time per millisecond of real time: well inside every timeout scanwatch has.
        govern_clock(Duration::from_millis(250), stop.clone());
        let clock = TokioClock::starting_now();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let options = SimulatorOptions { clock: clock.clone(), max_call_records: 1_000 };
        let sim = Simulator::with_options(Scenario::from_toml_str(&scenario())?, options);
        tokio::spawn({
            let (sim, stop) = (sim.clone(), stop.clone());
            async move { sim.serve(listener, stop).await }
        });

        // The webhook receiver: counts what it is sent.
        let delivered = Arc::new(AtomicU64::new(0));
        let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = format!("http://{}/hook", hook_listener.local_addr()?);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let delivered = delivered.clone();
                move || async move {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
        tokio::spawn({
            let stop = stop.clone();
            async move { axum::serve(hook_listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
        });

        let path = dir.path().join("scanwatch.toml");
        let listen = format!("127.0.0.1:{}", free_port());
        std::fs::write(&path, config_toml(&endpoint, &dir.path().join("scanwatch.db"), &listen, &hook, interval))?;
        let env = Environment::from_pairs([("SOAK_AK", AK), ("SOAK_SK", SK)]);
        let config = Config::load_with(&path, &env)?;

        let shutdown = CancellationToken::new();
        let daemon = scanwatch::daemon::run(&path, config, clock.clone(), shutdown.clone());
        let started = (tokio::time::Instant::now(), Instant::now());
        let driver = async {
            let http = scanwatch::tls::client();
            let api = ["/api/v1/targets", "/api/v1/alerts", "/api/v1/snapshots?limit=100", "/api/v1/notifications"];
            let (mut scrapes, mut failed) = (0u64, 0u64);
            let mut scrape = tokio::time::interval(Duration::from_secs(5));
            let mut sample = tokio::time::interval(Duration::from_secs(1800));
            let end = started.0 + Duration::from_secs(hours * 3600);
            println!("| simulated | real | VmRSS kB | RssAnon kB | RssFile kB | scrapes | failed | webhook posts |");
            println!("|---|---|---|---|---|---|---|---|");
            loop {
                tokio::select! {
                    _ = scrape.tick() => {
                        for p in ["/metrics", api[(scrapes % api.len() as u64) as usize]] {
                            let ok = match http.get(format!("http://{listen}{p}")).send().await {
                                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                Err(_) => false,
                            };
                            failed += u64::from(!ok);
                        }
                        scrapes += 1;
                    }
                    _ = sample.tick() => {
                        let sim_h = started.0.elapsed().as_secs_f64() / 3600.0;
                        println!(
                            "| {sim_h:.1} h | {:.0} s | {} | {} | {} | {scrapes} | {failed} | {} |",
                            started.1.elapsed().as_secs_f64(),
                            kib("VmRSS"),
                            kib("RssAnon"),
                            kib("RssFile"),
                            delivered.load(Ordering::Relaxed)
                        );
                        if tokio::time::Instant::now() >= end {
                            break;
                        }
                    }
                }
            }
            shutdown.cancel();
            anyhow::Ok(())
        };
        let (ran, driven) = tokio::join!(daemon, driver);
        ran?;
        driven?;
        stop.cancel();
        println!("peak VmHWM {} kB, real {:.0} s", kib("VmHWM"), started.1.elapsed().as_secs_f64());
        anyhow::Ok(())
    })
}
