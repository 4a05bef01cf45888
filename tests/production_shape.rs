//! Production shape: the daemon's real loop (`scanwatch::daemon::run`) with the shipped unit's `WatchdogSec`, the
//! default interval and a dozen series on one account at HSS's 5 calls/min, through a real unix datagram
//! `NOTIFY_SOCKET` — on a paused tokio clock, so ten minutes of schedule pass in seconds.
//!
//! The budget spaces that account's calls 12 s apart, so one cycle takes about 2m20s: longer than `WatchdogSec`
//! (120 s). Before the cycle ran as a task beside the watchdog, `WATCHDOG=1` went out only between cycles and
//! systemd killed the daemon mid-cycle, every cycle.
//!
//! A minute into the first cycle the config is rewritten without two targets and the process gets a real SIGHUP:
//! the reload takes effect between polls — the cycle goes on under the new config, polls no series twice, and
//! never polls the removed ones.
//!
//! One test in this binary: it sets the process's `NOTIFY_SOCKET` / `WATCHDOG_USEC` before any thread starts.

mod simtime;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scanwatch::config::{Config, Environment};
use scanwatch::simulator::audit::audit;
use scanwatch::simulator::{Scenario, Simulator, SimulatorOptions};
use simtime::{TokioClock, govern_clock};
use tokio_util::sync::CancellationToken;

const SERIES: usize = 12;

/// `WatchdogSec=` of the unit we ship.
fn shipped_watchdog_sec() -> Duration {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd/scanwatch.service"))
        .expect("read the shipped unit");
    let secs = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("WatchdogSec="))
        .expect("the shipped unit sets WatchdogSec")
        .trim()
        .trim_end_matches('s')
        .parse::<u64>()
        .expect("WatchdogSec in seconds");
    Duration::from_secs(secs)
}

fn project(i: usize) -> String {
    format!("{:032x}", 0xabc0 + i)
}

fn scenario() -> String {
    let mut s = "[simulator]\ncalls_per_minute = 5\n[[credentials]]\nak = \"HPUAPRODSHAPE0000001\"\nsk = \"prodShapeSecret0000000000000000000000001\"\n".to_string();
    for i in 0..SERIES {
        s.push_str(&format!(
            "[[series]]\nproject_id = \"{}\"\ntask_type = \"cluster_scan\"\n[[series.steps]]\nat = \"0s\"\ntotal_num = 10\nrunning_num = 0\nlast_task_age = \"1h\"\n",
            project(i)
        ));
    }
    s
}

/// The default interval (no `[schedule]`), the default 5 calls/min, `targets` targets of one task type on one
/// account.
fn config_toml(endpoint: &str, db: &std::path::Path, targets: usize) -> String {
    let mut s = format!(
        "[storage]\npath = \"{}\"\n[[accounts]]\nname = \"prod\"\nak_env = \"PS_AK\"\nsk_env = \"PS_SK\"\n",
        db.display()
    );
    for i in 0..targets {
        s.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\naccount = \"prod\"\nregion = \"cn-north-4\"\nendpoint = \"{endpoint}\"\nproject_id = \"{}\"\ntask_types = [\"cluster_scan\"]\n",
            project(i)
        ));
    }
    s
}

#[test]
fn the_watchdog_is_fed_through_cycles_longer_than_watchdog_sec_on_the_shipped_unit_and_default_interval() {
    let watchdog_sec = shipped_watchdog_sec();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    // SAFETY: the only test in this binary, before any runtime or thread of ours exists.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &socket_path);
        std::env::set_var("WATCHDOG_USEC", watchdog_sec.as_micros().to_string());
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        // A reload reads the process environment.
        std::env::set_var("PS_AK", "HPUAPRODSHAPE0000001");
        std::env::set_var("PS_SK", "prodShapeSecret0000000000000000000000001");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let stop = CancellationToken::new();
        govern_clock(Duration::from_millis(100), stop.clone());
        let clock = TokioClock::starting_now();

        // Every datagram the daemon sends, stamped with the (paused) tokio clock.
        socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::UnixDatagram::from_std(socket).unwrap();
        let received: Arc<Mutex<Vec<(tokio::time::Instant, String)>>> = Arc::default();
        tokio::spawn({
            let received = received.clone();
            async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf).await {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    received.lock().unwrap().push((tokio::time::Instant::now(), text));
                }
            }
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let options = SimulatorOptions { clock: clock.clone(), max_call_records: 10_000 };
        let sim = Simulator::with_options(Scenario::from_toml_str(&scenario()).unwrap(), options);
        tokio::spawn({
            let (sim, stop) = (sim.clone(), stop.clone());
            async move { sim.serve(listener, stop).await }
        });

        let path = dir.path().join("scanwatch.toml");
        let db = dir.path().join("scanwatch.db");
        std::fs::write(&path, config_toml(&endpoint, &db, SERIES)).unwrap();
        let env = Environment::from_pairs([
            ("PS_AK", "HPUAPRODSHAPE0000001"),
            ("PS_SK", "prodShapeSecret0000000000000000000000001"),
        ]);
        let config = Config::load_with(&path, &env).unwrap();
        assert_eq!(config.schedule.interval, Duration::from_secs(300), "the default interval");
        assert_eq!(config.accounts[0].calls_per_minute, 5, "HSS's default budget");

        let shutdown = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let daemon = scanwatch::daemon::run(&path, config, clock.clone(), shutdown.clone());
        // Two whole cycles (they start at 0 and 5m, each about 2m20s long) and into the third.
        let reload_after = Duration::from_secs(60);
        let stopper = async {
            tokio::time::sleep(reload_after).await;
            std::fs::write(&path, config_toml(&endpoint, &db, SERIES - 2)).unwrap();
            // SAFETY: kill(2) on our own pid with a signal the daemon handles.
            assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
            tokio::time::sleep(Duration::from_secs(10 * 60)).await;
            shutdown.cancel();
        };
        let (ran, ()) = tokio::join!(daemon, stopper);
        ran.unwrap();
        let ended = tokio::time::Instant::now();
        stop.cancel();

        let messages = received.lock().unwrap().clone();
        // Opening the store (which may migrate) asks systemd for more start time; then READY.
        assert!(messages.first().is_some_and(|(_, m)| m.contains("EXTEND_TIMEOUT_USEC=60000000")), "{messages:?}");
        let ready = messages.iter().position(|(_, m)| m.contains("READY=1")).expect("READY=1");
        assert!(messages[..ready].iter().all(|(_, m)| m.contains("EXTEND_TIMEOUT_USEC=")), "{messages:?}");
        let feeds: Vec<tokio::time::Instant> =
            messages.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).map(|(at, _)| *at).collect();
        // The gaps systemd sees: from the start to the first feed, between feeds, from the last feed to the stop.
        let mut points = vec![started];
        points.extend(&feeds);
        points.push(ended);
        let largest = points.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            largest < watchdog_sec / 2,
            "largest gap between WATCHDOG=1 messages {largest:?}, WatchdogSec={watchdog_sec:?} ({} feeds)",
            feeds.len()
        );

        // The cycles really were longer than WatchdogSec, and the budget held: 5 calls in any 60 s, no 429.
        // Every API within 5 calls in any 60 s (the task checks of scan_failures have their own 5); then the schedule
        // of the statistics polls.
        let a = audit(&sim.calls(), Duration::from_secs(60), 5);
        assert_eq!((a.max_in_window(), a.over_budget(), a.throttled()), (5, 0, 0), "{a:?}");
        let calls: Vec<_> =
            sim.calls().into_iter().filter(|c| c.api == Some(scanwatch::simulator::Api::TaskStatistics)).collect();
        let in_cycle = |from: chrono::DateTime<chrono::Utc>| -> Vec<String> {
            let mut projects: Vec<String> = calls
                .iter()
                .filter(|c| c.at >= from && c.at - from < chrono::TimeDelta::seconds(200))
                .map(|c| c.path.split('/').nth(2).unwrap_or_default().to_string())
                .collect();
            projects.sort();
            projects
        };
        let kept: Vec<String> = (0..SERIES - 2).map(project).collect();
        let removed = [project(SERIES - 2), project(SERIES - 1)];
        // The first cycle: the reload came a minute in, between polls. The series it had polled were not polled
        // again, the rest were polled under the new config, the removed ones never.
        let cycle_one = in_cycle(calls[0].at);
        assert_eq!(cycle_one, kept, "every kept series exactly once in the reloaded cycle");
        let cycle_two_start = calls.iter().find(|c| c.at - calls[0].at > chrono::TimeDelta::seconds(250)).unwrap().at;
        assert_eq!(in_cycle(cycle_two_start), kept, "the next cycle runs the new config");
        assert!(calls.iter().all(|c| !removed.iter().any(|r| c.path.contains(r.as_str()))), "removed targets polled");
        let first = calls.iter().filter(|c| c.at - calls[0].at < chrono::TimeDelta::seconds(200));
        let cycle_len = (first.map(|c| c.at).max().unwrap() - calls[0].at).to_std().unwrap();
        assert!(cycle_len > watchdog_sec, "a cycle took {cycle_len:?}: not longer than WatchdogSec, proves nothing");
    });
}
