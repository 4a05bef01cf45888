//! The budget compliance run shared by `examples/bench_budget.rs` (real time, full size) and
//! `tests/budget_compliance.rs` (paused tokio time, bounded): a fleet of accounts with a few series each, the
//! simulator enforcing the same calls-per-minute, the daemon's own cycle (`Daemon::run_cycle`) on the daemon's own
//! ticker at the fastest interval `validate` accepts, and the simulator's call log audited afterwards.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scanwatch::clock::Clock;
use scanwatch::config::{Config, Environment};
use scanwatch::daemon::{CycleReport, Daemon};
use scanwatch::hss::budget::{self, min_interval};
use scanwatch::schedule::Ticker;
use scanwatch::simulator::audit::BudgetAudit;

const TASK_TYPES: [&str; 2] = ["cluster_scan", "iac_scan"];

/// `accounts` accounts, each with `series_per_account` targets of one task type, all at `calls_per_minute` (the
/// simulator enforces the same limit per AK).
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub accounts: usize,
    pub series_per_account: usize,
    pub calls_per_minute: u32,
    /// The per-host budget scanwatch is given (`schedule.host_calls_per_minute`): HSS's 5 per client IP, or more to
    /// model a fleet spread over many addresses, as the issue-6 runs did.
    pub host_calls_per_minute: u32,
}

impl Fleet {
    pub fn series(&self) -> usize {
        self.accounts * self.series_per_account
    }

    pub fn ak(j: usize) -> String {
        format!("HPUABUDGET{j:010}")
    }

    fn sk(j: usize) -> String {
        format!("budgetSecretKey{j:025}")
    }

    /// Target i of account j: projects are shared by pairs of targets, one per task type.
    fn project(j: usize, i: usize) -> String {
        format!("{:016x}{:016x}", j + 1, i / 2 + 1)
    }

    pub fn scenario_toml(&self) -> String {
        let mut s = format!("[simulator]\ncalls_per_minute = {}\n", self.calls_per_minute);
        for j in 0..self.accounts {
            s.push_str(&format!("[[credentials]]\nak = \"{}\"\nsk = \"{}\"\n", Self::ak(j), Self::sk(j)));
        }
        for j in 0..self.accounts {
            for i in 0..self.series_per_account {
                s.push_str(&format!(
                    "[[series]]\nproject_id = \"{}\"\ntask_type = \"{}\"\n[[series.steps]]\nat = \"0s\"\ntotal_num = 10\nrunning_num = 0\nlast_task_age = \"1h\"\n",
                    Self::project(j, i),
                    TASK_TYPES[i % 2]
                ));
            }
        }
        s
    }

    pub fn config_toml(&self, endpoint: &str, db: &Path, interval: Duration) -> String {
        let mut s = format!(
            "[storage]\npath = \"{}\"\n[schedule]\ninterval = \"{}s\"\nhost_calls_per_minute = {}\n",
            db.display(),
            interval.as_secs(),
            self.host_calls_per_minute
        );
        for j in 0..self.accounts {
            s.push_str(&format!(
                "[[accounts]]\nname = \"a{j}\"\nak_env = \"BUDGET_AK_{j}\"\nsk_env = \"BUDGET_SK_{j}\"\ncalls_per_minute = {}\n",
                self.calls_per_minute
            ));
        }
        for j in 0..self.accounts {
            for i in 0..self.series_per_account {
                s.push_str(&format!(
                    "[[targets]]\nname = \"t{j}-{i}\"\naccount = \"a{j}\"\nregion = \"cn-north-4\"\nendpoint = \"{endpoint}\"\nproject_id = \"{}\"\ntask_types = [\"{}\"]\n",
                    Self::project(j, i),
                    TASK_TYPES[i % 2]
                ));
            }
        }
        s
    }

    pub fn env(&self) -> Environment {
        Environment::from_pairs(
            (0..self.accounts)
                .flat_map(|j| [(format!("BUDGET_AK_{j}"), Self::ak(j)), (format!("BUDGET_SK_{j}"), Self::sk(j))]),
        )
    }

    /// Writes the config at the fastest interval the budget allows and loads it. That interval comes from
    /// `budget::min_interval`, the function `validate` uses, and is checked against `validate` itself: the config is
    /// accepted at it and refused one second below it, naming `schedule.interval`.
    pub fn config_at_fastest_interval(&self, endpoint: &str, dir: &Path) -> anyhow::Result<(Config, Duration)> {
        let db = dir.join("budget.db");
        let path = dir.join("budget.toml");
        let env = self.env();
        // The binding budget: the account's, or the endpoint host's over every account's series.
        let fastest = min_interval(self.series_per_account, self.calls_per_minute)
            .max(min_interval(self.series(), self.host_calls_per_minute));
        let below = fastest.saturating_sub(Duration::from_secs(1));
        match Config::from_toml_str(&self.config_toml(endpoint, &db, below), dir, &env) {
            Err(e) if e.problems.iter().any(|p| p.key == "schedule.interval") => {}
            other => anyhow::bail!("validate accepted {below:?}, below min_interval {fastest:?}: {other:?}"),
        }
        std::fs::write(&path, self.config_toml(endpoint, &db, fastest))?;
        let config = Config::load_with(&path, &env).map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        Ok((config, fastest))
    }
}

/// Runs `cycles` daemon cycles on the daemon's ticker (interval schedule, no start jitter), like `scanwatch run`.
pub async fn run_cycles(
    dir: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
    cycles: usize,
) -> anyhow::Result<Vec<CycleReport>> {
    let plan = config.schedule.plan();
    let mut daemon = Daemon::start(&dir.join("budget.toml"), config, clock).await?;
    let mut ticks = Ticker::new(&plan, Duration::ZERO);
    let mut reports = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        ticks.tick().await;
        reports.push(daemon.run_cycle().await?);
    }
    daemon.store().close().await;
    Ok(reports)
}

/// What the audit says, in the units BENCHMARKS.md reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: usize,
    pub identities: usize,
    pub series: usize,
    pub max_in_window: usize,
    pub over_budget: usize,
    pub throttled: usize,
    pub polls_min: usize,
    pub polls_max: usize,
    pub ok_min: usize,
    pub gap_min: Duration,
    pub gap_p50: Duration,
    pub gap_max: Duration,
}

pub fn summarize(audit: &BudgetAudit) -> Summary {
    let gaps = audit.gaps_sorted();
    let polls = audit.series.values().map(|s| s.polls());
    Summary {
        requests: audit.identities.values().map(|i| i.requests).sum(),
        identities: audit.identities.len(),
        series: audit.series.len(),
        max_in_window: audit.max_in_window(),
        over_budget: audit.over_budget(),
        throttled: audit.throttled(),
        polls_min: polls.clone().min().unwrap_or(0),
        polls_max: polls.max().unwrap_or(0),
        ok_min: audit.series.values().map(|s| s.ok).min().unwrap_or(0),
        gap_min: gaps.first().copied().unwrap_or_default(),
        gap_p50: gaps.get(gaps.len() / 2).copied().unwrap_or_default(),
        gap_max: gaps.last().copied().unwrap_or_default(),
    }
}

/// The identities with calls over budget, worst first (for a failure message).
pub fn worst_identities(audit: &BudgetAudit, n: usize) -> Vec<String> {
    let mut worst: Vec<_> = audit.identities.iter().filter(|(_, a)| a.over_budget > 0 || a.throttled > 0).collect();
    worst.sort_by_key(|(_, a)| std::cmp::Reverse((a.over_budget, a.throttled)));
    worst.into_iter().take(n).map(|(id, a)| format!("{id}: {a:?}")).collect()
}

/// The window the simulator and the budget count in.
pub const WINDOW: Duration = budget::WINDOW;

/// Polls per series, as a histogram (polls -> series), for a failure message.
pub fn polls_histogram(audit: &BudgetAudit) -> BTreeMap<usize, usize> {
    let mut h = BTreeMap::new();
    for s in audit.series.values() {
        *h.entry(s.polls()).or_default() += 1;
    }
    h
}
