//! `poll` says when it waits for an account's API budget (it used to sit silent for up to a minute): the poller
//! calls its wait notice once per account and cycle, when the first wait begins, with what is left — here on a
//! paused clock, 7 series at HSS's 5 calls/min against the simulator enforcing the same.

mod simtime;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scanwatch::config::{Config, Environment};
use scanwatch::poller::Poller;
use scanwatch::simulator::{Scenario, Simulator, SimulatorOptions};
use simtime::{TokioClock, govern_clock};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn an_account_that_waits_for_its_budget_is_announced_once_with_what_is_left() {
    let stop = CancellationToken::new();
    govern_clock(Duration::from_millis(100), stop.clone());
    let clock = TokioClock::starting_now();
    let project = |i: usize| format!("{:032x}", 0xbee0 + i);
    let mut scenario = "[simulator]\ncalls_per_minute = 5\n[[credentials]]\nak = \"HPUAWAIT000000000001\"\nsk = \"waitSecret00000000000000000000000000001\"\n".to_string();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let mut config = format!(
        "[storage]\npath = \"{}\"\n[schedule]\ninterval = \"2m\"\n[[accounts]]\nname = \"prod\"\nak_env = \"A\"\nsk_env = \"S\"\n",
        dir.path().join("w.db").display()
    );
    for i in 0..7 {
        scenario.push_str(&format!(
            "[[series]]\nproject_id = \"{}\"\ntask_type = \"cluster_scan\"\n[[series.steps]]\nat = \"0s\"\ntotal_num = 1\nrunning_num = 0\n",
            project(i)
        ));
        config.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\naccount = \"prod\"\nregion = \"cn-north-4\"\nendpoint = \"{endpoint}\"\nproject_id = \"{}\"\ntask_types = [\"cluster_scan\"]\n",
            project(i)
        ));
    }
    let options = SimulatorOptions { clock: clock.clone(), max_call_records: 100 };
    let sim = Simulator::with_options(Scenario::from_toml_str(&scenario).unwrap(), options);
    tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    let env =
        Environment::from_pairs([("A", "HPUAWAIT000000000001"), ("S", "waitSecret00000000000000000000000000001")]);
    let config = Config::from_toml_str(&config, dir.path(), &env).unwrap();
    let store = scanwatch::store::Store::open(&config.storage.path).await.unwrap();

    let said: Arc<Mutex<Vec<(String, u32, usize)>>> = Arc::default();
    let notice = {
        let said = said.clone();
        Arc::new(move |account: &str, cpm: u32, left: usize| {
            said.lock().unwrap().push((account.to_string(), cpm, left))
        })
    };
    let poller = Poller::new(&config, store, clock).await.unwrap().with_wait_notice(notice);
    let results = poller.poll_all(true).await.unwrap();
    stop.cancel();

    assert!(results.iter().all(|r| r.record.outcome.is_ok()), "no 429: the budget held");
    // Five calls at once, then the sixth waits a minute: announced once, with the two series left.
    assert_eq!(*said.lock().unwrap(), vec![("prod".to_string(), 5, 2)]);
    assert_eq!(
        scanwatch::cli::wait_line("prod", 5, 2),
        "waiting for account `prod`'s API budget (5 calls/min): 2 series left, about 24s"
    );
}
