//! Figure 2 of BENCHMARKS.md: one poll cycle of N series over M accounts against the in-process HSS simulator,
//! through `poller::Poller` with a temporary store, next to a bare reqwest client making the same N signed requests.
//!
//! `cargo run --release --example bench_poll -- [SERIES] [ACCOUNTS]` (default 10000 2000). This process serves the
//! simulator on 127.0.0.1:0; each side runs in a child process of its own (this binary again), so that its wall
//! time, CPU (getrusage) and peak RSS (VmHWM) are the client's alone, not the simulator's.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use scanwatch::clock::SystemClock;
use scanwatch::config::{Config, Environment};
use scanwatch::hss::signer::{self, SignableRequest};
use scanwatch::poller::Poller;
use scanwatch::simulator::{Scenario, Simulator};
use scanwatch::store::Store;
use tokio_util::sync::CancellationToken;

const TASK_TYPES: [&str; 2] = ["cluster_scan", "iac_scan"];

fn ak(j: usize) -> String {
    format!("HPUABENCH{j:011}")
}
fn sk(j: usize) -> String {
    format!("benchSecretKey{j:026}")
}
fn project(i: usize) -> String {
    format!("{:032x}", i / 2 + 1)
}

fn scenario_toml(series: usize, accounts: usize) -> String {
    let mut s = String::from("[simulator]\ncalls_per_minute = 0\n");
    for j in 0..accounts {
        s.push_str(&format!("[[credentials]]\nak = \"{}\"\nsk = \"{}\"\n", ak(j), sk(j)));
    }
    for i in 0..series {
        s.push_str(&format!(
            "[[series]]\nproject_id = \"{}\"\ntask_type = \"{}\"\n[[series.steps]]\nat = \"0s\"\ntotal_num = {}\nrunning_num = 0\nlast_task_age = \"1h\"\n",
            project(i),
            TASK_TYPES[i % 2],
            10 + i % 7
        ));
    }
    s
}

fn config_toml(series: usize, accounts: usize, port: u16, db: &str) -> String {
    let mut s = format!(
        "[storage]\npath = \"{db}\"\n[schedule]\ninterval = \"1h\"\ntimeout = \"60s\"\nhost_calls_per_minute = 1000000\n"
    );
    // `scan_failures` checks a series' latest finished task on its first poll ever (ListTasks, then its failed
    // resources): the production default, and more HTTP calls than the bare client's one GET per series.
    // BENCH_SCAN_FAILURES=off compares like with like.
    if std::env::var("BENCH_SCAN_FAILURES").is_ok_and(|v| v == "off") {
        s.push_str("[rules.scan_failures]\nenabled = false\n");
    }
    for j in 0..accounts {
        s.push_str(&format!(
            "[[accounts]]\nname = \"a{j}\"\nak_env = \"BENCH_AK_{j}\"\nsk_env = \"BENCH_SK_{j}\"\ncalls_per_minute = 1000000\n"
        ));
    }
    for i in 0..series {
        s.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\naccount = \"a{}\"\nregion = \"cn-north-4\"\nendpoint = \"http://127.0.0.1:{port}\"\nproject_id = \"{}\"\ntask_types = [\"{}\"]\n",
            i % accounts,
            project(i),
            TASK_TYPES[i % 2]
        ));
    }
    s
}

/// What one side measured, printed by the child as one `RESULT` line.
struct Measured {
    setup: Duration,
    wall: Duration,
    cpu: Duration,
    ok: usize,
    rss_before: f64,
    peak: f64,
    switches: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    if args.get(1).map(String::as_str) == Some("child") {
        let (mode, series, accounts, port) = (&args[2], args[3].parse()?, args[4].parse()?, args[5].parse()?);
        for m in rt.block_on(child(mode, series, accounts, port))? {
            println!(
                "RESULT {} {} {} {} {:.1} {:.1} {}",
                m.setup.as_millis(),
                m.wall.as_millis(),
                m.cpu.as_millis(),
                m.ok,
                m.rss_before,
                m.peak,
                m.switches
            );
        }
        return Ok(());
    }
    let series: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let accounts: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2_000);
    rt.block_on(parent(series, accounts))
}

async fn parent(series: usize, accounts: usize) -> anyhow::Result<()> {
    let scenario = Scenario::from_toml_str(&scenario_toml(series, accounts))?;
    let sim = Simulator::new(scenario);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let (sim, stop) = (sim.clone(), stop.clone());
        async move { sim.serve(listener, stop).await }
    });
    println!("bench_poll: {series} series over {accounts} accounts, simulator on 127.0.0.1:{port}");
    println!(
        "{:<12} {:>7} {:>9} {:>9} {:>7} {:>12} {:>13} {:>12}",
        "side", "setup ms", "wall ms", "cpu ms", "ok", "rss pre MiB", "peak RSS MiB", "ctx switches"
    );
    // Per cycle, then per side.
    let mut rows: Vec<Vec<Vec<f64>>> = vec![Vec::new(); CYCLES];
    for mode in ["baseline", "poller"] {
        let exe = std::env::current_exe()?;
        let args = ["child".to_string(), mode.to_string(), series.to_string(), accounts.to_string(), port.to_string()];
        let out = tokio::task::spawn_blocking(move || Command::new(exe).args(args).output()).await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")).collect();
        if lines.len() != CYCLES {
            bail!("{mode} child failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        for (cycle, line) in lines.into_iter().enumerate() {
            let f: Vec<f64> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
            if f[3] as usize != series {
                bail!("{mode}: only {} of {series} polls succeeded", f[3]);
            }
            rows[cycle].push(f);
        }
    }
    for (cycle, sides) in rows.iter().enumerate() {
        for (mode, f) in ["baseline", "poller"].iter().zip(sides) {
            let side = format!("{mode} #{}", cycle + 1);
            println!(
                "{side:<12} {:>7} {:>9} {:>9} {:>7} {:>12.1} {:>13.1} {:>12}",
                f[0], f[1], f[2], f[3], f[4], f[5], f[6]
            );
        }
    }
    for (cycle, sides) in rows.iter().enumerate() {
        let (b, p) = (&sides[0], &sides[1]);
        println!(
            "cycle {} ({}): poller / baseline: wall {:.2}x, cpu {:.2}x, context switches {:.1} vs {:.1} per poll; \
             poller peak RSS {:.1} MiB (target: wall <= 1.5x, peak < 64 MB)",
            cycle + 1,
            if cycle == 0 { "first, new database" } else { "steady" },
            p[1] / b[1],
            p[2] / b[2],
            p[6] / series as f64,
            b[6] / series as f64,
            p[5]
        );
    }
    println!("simulator answered {} calls (keeps the last ones only)", sim.calls().len());
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// Cycles measured per side: the first (the poller's on a new database: each series' first poll), then a steady one.
const CYCLES: usize = 2;

async fn child(mode: &str, series: usize, accounts: usize, port: u16) -> anyhow::Result<Vec<Measured>> {
    let setup_started = Instant::now();
    let mut measured = Vec::new();
    match mode {
        "baseline" => {
            let http = scanwatch::tls::client_builder().timeout(Duration::from_secs(60)).build()?;
            let per_account: Vec<Vec<usize>> = (0..accounts).map(|j| (j..series).step_by(accounts).collect()).collect();
            let setup = setup_started.elapsed();
            for _ in 0..CYCLES {
                let (rss_before, cpu0, t0) = (support::rss_mib(), support::cpu_time(), Instant::now());
                let switches0 = support::context_switches();
                let oks = join_all(per_account.iter().enumerate().map(|(j, idx)| {
                    let http = http.clone();
                    async move {
                        let mut ok = 0;
                        for &i in idx {
                            if bare_call(&http, port, j, i).await.is_ok() {
                                ok += 1;
                            }
                        }
                        ok
                    }
                }))
                .await;
                let (wall, cpu) = (t0.elapsed(), support::cpu_time() - cpu0);
                let switches = support::context_switches() - switches0;
                let ok = oks.iter().sum();
                measured.push(Measured { setup, wall, cpu, ok, rss_before, peak: support::peak_rss_mib(), switches });
            }
            Ok(measured)
        }
        "poller" => {
            let dir = tempfile::tempdir()?;
            let db = dir.path().join("bench.db");
            let path = dir.path().join("bench.toml");
            std::fs::write(&path, config_toml(series, accounts, port, &db.display().to_string()))?;
            let env = Environment::from_pairs(
                (0..accounts).flat_map(|j| [(format!("BENCH_AK_{j}"), ak(j)), (format!("BENCH_SK_{j}"), sk(j))]),
            );
            let config = Config::load_with(&path, &env).map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
            let store = Store::open(&db).await?;
            let poller = Poller::new(&config, store.clone(), Arc::new(SystemClock::default())).await?;
            let setup = setup_started.elapsed();
            for _ in 0..CYCLES {
                let (rss_before, cpu0, t0) = (support::rss_mib(), support::cpu_time(), Instant::now());
                let switches0 = support::context_switches();
                let results = poller.poll_all(true).await?;
                let (wall, cpu) = (t0.elapsed(), support::cpu_time() - cpu0);
                let switches = support::context_switches() - switches0;
                let ok = results.iter().filter(|r| r.record.outcome.is_ok()).count();
                if let Some(r) = results.iter().find(|r| r.record.outcome.is_err()) {
                    eprintln!("first failure: {:?}", r.record.outcome);
                }
                measured.push(Measured { setup, wall, cpu, ok, rss_before, peak: support::peak_rss_mib(), switches });
            }
            store.close().await;
            Ok(measured)
        }
        other => bail!("unknown mode {other}"),
    }
}

/// The same signed GET the client sends, with nothing around it but a JSON parse.
async fn bare_call(http: &reqwest::Client, port: u16, account: usize, i: usize) -> anyhow::Result<()> {
    let path = format!("/v5/{}/common/task-statistics", project(i));
    let query = vec![("task_type".to_string(), TASK_TYPES[i % 2].to_string())];
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Project-Id".to_string(), project(i)),
        (signer::HEADER_SDK_DATE.to_string(), chrono::Utc::now().format(signer::SDK_DATE_FORMAT).to_string()),
        ("Host".to_string(), format!("127.0.0.1:{port}")),
    ];
    let req = SignableRequest { method: "GET", path: &path, query: &query, headers: &headers, body: b"" };
    let sig = signer::sign(&req, &ak(account), &sk(account))?;
    let url = format!("http://127.0.0.1:{port}{path}?{}", signer::canonical_query(&query));
    let mut rb = http.get(url).header("Authorization", sig.authorization);
    for (k, v) in &headers {
        if k != "Host" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await?;
    let status = resp.status();
    let body = resp.bytes().await.context("body")?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    if !status.is_success() || v.get("total_num").is_none() {
        bail!("HTTP {status}: {v}");
    }
    Ok(())
}
