//! One poll cycle: every configured series polled once, within each account's rate budget, each result stored as
//! a snapshot. The `poll` command runs one cycle; the daemon runs them on a schedule.
//!
//! Accounts are polled concurrently; the series of one account one after another, each call waiting for a slot in
//! the account's budget (primed from stored history, so a restart does not buy a fresh burst). What is bounded is the
//! number of polls in flight, not of accounts: an account spends most of a cycle waiting for its next spread slot,
//! and capping accounts made 200 accounts of 24 s each take four rounds — longer than the interval.
//!
//! A rejection is scoped by what it is about. After HSS rejects an account's credentials (401), the account backs
//! off — counted from the stored history too — because HSS locks a key after 5 failed signatures: the remaining
//! series of that account are recorded as not polled instead of called. A denied permission (403, `HSS.0010`,
//! `HSS.0013`, `APIGW.0306`) is about one project or enterprise project: only that series backs off, and the
//! account's other series keep polling. A 429 pauses the account (its `Retry-After`, or 30 s); a series whose turn
//! comes more than 5 s before the pause ends is recorded as not polled too, so one throttled account never holds a
//! cycle back.
//!
//! A cycle can be stopped between polls ([`CycleOptions::stop`]): no new poll starts, and the polls in flight are
//! stored. The daemon stops one that way on SIGTERM, and on SIGHUP to go on under the new config.

pub mod record;
pub mod task_check;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::alerting::Lifecycle;
use crate::clock::Clock;
use crate::config::{AccountAuth, Config};
use crate::hss::budget::{self, RateBudget};
use crate::hss::client::{self, ClientOptions, Credentials, HssClient, PasswordLogin, ProjectScope, StatsRequest};
use crate::hss::regions;
use crate::liveness::Liveness;
use crate::model::{ErrorKind, PollError, PollRecord, SeriesKey, Snapshot};
use crate::notify::outbox::Route;
use crate::rules::RuleSet;
use crate::store::{SilenceRow, Store, StoreError};

pub use record::{AlertChange, Outbox, PollWrite, Recorded, Written, record_and_evaluate};

/// The error code of a poll that scanwatch recorded without calling HSS.
pub const NOT_SENT_CODE: &str = "SCANWATCH.BACKOFF";

/// One series to poll, with everything the call needs.
#[derive(Debug, Clone)]
pub struct PolledSeries {
    pub key: SeriesKey,
    pub series_id: i64,
    pub endpoint: Url,
    /// The target's effective rules.
    pub rules: RuleSet,
    /// The target's user labels (routing, silences, messages).
    pub labels: Arc<BTreeMap<String, String>>,
    /// The client-side account (per region for password logins: IAM tokens are regional).
    account: Arc<client::Account>,
    /// The endpoint host this series is polled at (`host:port`), and that host's budget (HSS's per-IP limit),
    /// shared by every account polled there.
    host: String,
    host_budget: Arc<RateBudget>,
    /// The host's budgets for the two task APIs.
    host_task_budgets: Arc<task_check::TaskApiBudgets>,
}

/// What one poll did.
#[derive(Debug, Clone)]
pub struct PollResult {
    pub key: SeriesKey,
    pub series_id: i64,
    pub record: PollRecord,
    /// false when the account was backing off and HSS was not called.
    pub sent: bool,
    /// How long the call took, to the nanosecond (the record keeps whole milliseconds); zero when not sent.
    pub latency: Duration,
    /// The stored snapshot's id (None with `--no-store`).
    pub snapshot_id: Option<i64>,
    /// Alert transitions this poll caused (none with `--no-store`).
    pub changes: Vec<AlertChange>,
}

struct AccountRuntime {
    budget: RateBudget,
    calls_per_minute: u32,
    /// The account's budgets for the two task APIs (each has its own 5 a minute).
    task_budgets: task_check::TaskApiBudgets,
    series: Vec<PolledSeries>,
}

/// Called once per account and cycle when the account's first wait for its API budget begins: (account, calls
/// per minute, the series still to poll). `scanwatch poll` prints it, so a run that waits a minute says why.
pub type WaitNotice = Arc<dyn Fn(&str, u32, usize) + Send + Sync>;

/// How one cycle runs: whether it stores, over how long it spreads each account's polls, when it stops, what it
/// skips.
#[derive(Clone, Default)]
pub struct CycleOptions {
    /// false: print only (`poll --no-store`): nothing is written, evaluated or notified.
    pub store: bool,
    /// Spread each account's polls evenly over this long (zero: as fast as the budget allows).
    pub over: Duration,
    /// Cancelled: no further poll starts; polls in flight finish and are stored (SIGTERM, SIGHUP).
    pub stop: CancellationToken,
    /// Series already polled in this cycle (a cycle resumed under a reloaded config).
    pub skip: HashSet<i64>,
}

/// Everything needed to poll: the client, the budgets, the series and where results go.
pub struct Poller {
    client: HssClient,
    accounts: BTreeMap<String, AccountRuntime>,
    store: Store,
    clock: Arc<dyn Clock>,
    /// The first step of the credential backoff.
    backoff_base: Duration,
    lifecycle: Lifecycle,
    /// Which channels want which alerts.
    routes: Arc<[Arc<dyn Route>]>,
    /// Polls (call + store) in flight across all accounts, at most [`MAX_CONCURRENT_CALLS`].
    in_flight: Semaphore,
    /// Where each poll registers while it runs (the daemon's watchdog reads it).
    liveness: Arc<Liveness>,
    wait_notice: Option<WaitNotice>,
    /// Per series: whether its latest call was denied (403). Known at start from the stored rule states, or read
    /// from the store the first time a series is polled, then kept here, so a healthy series costs no extra query
    /// per poll.
    denied: std::sync::Mutex<std::collections::HashMap<i64, bool>>,
    /// `schedule.host_calls_per_minute`: how fast one endpoint host may be called, which paces a spread cycle.
    host_calls_per_minute: u32,
    /// When each series last checked its latest finished task (`scan_failures`).
    task_checks: task_check::TaskChecks,
    /// Finished tasks' failed resources, for alerts' context.
    resource_cache: task_check::ResourceCache,
}

impl Poller {
    /// Registers every configured series in the store and primes each account's budget from its stored calls.
    pub async fn new(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Poller> {
        let client = hss_client(config)?;
        let now = clock.now();
        // The budget window's calls, read once for every account and host.
        let calls = store.calls_since(crate::clock::earlier(now, budget::WINDOW)).await?;
        let mut account_ages: HashMap<&str, Vec<Duration>> = HashMap::new();
        for c in &calls {
            account_ages.entry(c.account.as_str()).or_default().extend((now - c.at).to_std().ok());
        }
        let mut accounts = BTreeMap::new();
        for account in &config.accounts {
            let budget = RateBudget::new(account.calls_per_minute);
            budget.prime(account_ages.get(account.name.as_str()).map_or(&[], Vec::as_slice));
            accounts.insert(
                account.name.clone(),
                AccountRuntime {
                    budget,
                    calls_per_minute: account.calls_per_minute,
                    task_budgets: task_check::TaskApiBudgets::new(account.calls_per_minute),
                    series: Vec::new(),
                },
            );
        }
        let mut clients: BTreeMap<(String, String), Arc<client::Account>> = BTreeMap::new();
        // Registered in one transaction: 10,000 series took ~1 s one transaction each, on every start and reload.
        let series: Vec<_> = config.series().collect();
        let ids = store.ensure_all_series(series.iter().map(|(_, key)| key)).await?;
        // One budget per endpoint host (HSS's per-IP limit), primed from the calls stored for its series.
        let mut host_series: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for ((target, _), id) in series.iter().zip(&ids) {
            host_series.entry(crate::config::host_of(&target.endpoint)).or_default().push(*id);
        }
        let mut hosts: BTreeMap<String, Arc<RateBudget>> = BTreeMap::new();
        let mut host_task_budgets: BTreeMap<String, Arc<task_check::TaskApiBudgets>> = BTreeMap::new();
        let host_of_series: HashMap<i64, &String> =
            host_series.iter().flat_map(|(host, ids)| ids.iter().map(move |id| (*id, host))).collect();
        let mut host_ages: HashMap<&String, Vec<Duration>> = HashMap::new();
        for c in &calls {
            if let Some(host) = host_of_series.get(&c.series_id) {
                host_ages.entry(host).or_default().extend((now - c.at).to_std().ok());
            }
        }
        for host in host_series.keys() {
            let budget = RateBudget::new(config.schedule.host_calls_per_minute);
            budget.prime(host_ages.get(host).map_or(&[], Vec::as_slice));
            hosts.insert(host.clone(), Arc::new(budget));
            host_task_budgets
                .insert(host.clone(), Arc::new(task_check::TaskApiBudgets::new(config.schedule.host_calls_per_minute)));
        }
        for ((target, key), series_id) in series.into_iter().zip(ids) {
            let account = config
                .account(&target.account)
                .ok_or_else(|| anyhow::anyhow!("target {} names unknown account {}", target.name, target.account))?;
            // Password logins yield regional tokens, so those accounts get one client-side account per region.
            let region_key = match account.auth {
                AccountAuth::Password { .. } => target.region.clone(),
                _ => String::new(),
            };
            let hss_account = clients
                .entry((account.name.clone(), region_key))
                .or_insert_with(|| Arc::new(hss_account(account, &target.region)))
                .clone();
            let host_budget = hosts
                .get(&crate::config::host_of(&target.endpoint))
                .cloned()
                .unwrap_or_else(|| Arc::new(RateBudget::new(config.schedule.host_calls_per_minute)));
            let host = crate::config::host_of(&target.endpoint);
            let host_tasks = host_task_budgets
                .get(&host)
                .cloned()
                .unwrap_or_else(|| Arc::new(task_check::TaskApiBudgets::new(config.schedule.host_calls_per_minute)));
            if let Some(rt) = accounts.get_mut(&account.name) {
                rt.series.push(PolledSeries {
                    host_task_budgets: host_tasks,
                    host,
                    host_budget,
                    key,
                    series_id,
                    endpoint: target.endpoint.clone(),
                    rules: target.rules.rule_set(),
                    labels: Arc::new(target.labels.clone()),
                    account: hss_account,
                });
            }
        }
        // What each series' stored state says of its latest call and its task checks, read once for all of them.
        let task_checks = task_check::TaskChecks::default();
        let mut denied = HashMap::new();
        let configured: Vec<i64> = accounts.values().flat_map(|a| a.series.iter().map(|s| s.series_id)).collect();
        store
            .known_rule_states(&configured, |id, state| {
                task_checks.prime(id, state);
                // Its latest poll succeeded, or it has none: no permission backoff runs. Otherwise the series reads
                // its latest calls on its first poll.
                if state.is_none_or(|s| s.failures == 0) {
                    denied.insert(id, false);
                }
            })
            .await?;
        Ok(Poller {
            client,
            accounts,
            store,
            clock,
            backoff_base: config.schedule.interval,
            lifecycle: config.alerting.lifecycle(),
            routes: Arc::new([]),
            in_flight: Semaphore::new(MAX_CONCURRENT_CALLS),
            liveness: Arc::new(Liveness::default()),
            wait_notice: None,
            denied: std::sync::Mutex::new(denied),
            host_calls_per_minute: config.schedule.host_calls_per_minute,
            task_checks,
            resource_cache: task_check::ResourceCache::default(),
        })
    }

    /// Registers every poll with `liveness` while it runs.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Says when an account starts waiting for its API budget.
    pub fn with_wait_notice(mut self, notice: WaitNotice) -> Self {
        self.wait_notice = Some(notice);
        self
    }

    /// Sets the channels' routes: from now on alert changes write outbox notices for them.
    pub fn with_routes(mut self, routes: Vec<Arc<dyn Route>>) -> Self {
        self.routes = routes.into();
        self
    }

    pub fn series(&self) -> impl Iterator<Item = &PolledSeries> {
        self.accounts.values().flat_map(|a| a.series.iter())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Polls every series once. With `store = false` nothing is written (`poll --no-store`).
    pub async fn poll_all(&self, store: bool) -> Result<Vec<PollResult>, StoreError> {
        self.poll_spread(store, Duration::ZERO).await
    }

    /// Polls every series once, spreading each account's polls evenly over `over` (the daemon spreads over part of
    /// its interval so an account's targets never burst). Every account runs at once; at most
    /// [`MAX_CONCURRENT_CALLS`] polls are in flight.
    pub async fn poll_spread(&self, store: bool, over: Duration) -> Result<Vec<PollResult>, StoreError> {
        self.poll_cycle(&CycleOptions { store, over, ..CycleOptions::default() }).await
    }

    /// One cycle as `opts` says. Stopped early, it returns what was polled before the stop; every result returned
    /// is stored (with `store`), and a poll that had not started never is.
    pub async fn poll_cycle(&self, opts: &CycleOptions) -> Result<Vec<PollResult>, StoreError> {
        let silences: Arc<[SilenceRow]> =
            if opts.store { self.store.silences(self.clock.now(), false).await?.into() } else { Arc::new([]) };
        let offsets = self.plan(opts);
        // Which accounts may be backing off after rejected credentials: one read for all of them.
        let horizon = crate::clock::earlier(self.clock.now(), budget::MAX_AUTH_BACKOFF);
        let rejected = self.store.accounts_rejected_since(horizon).await?;
        // Collected first, not a stream of closures: the cycle runs as a spawned task, and a closure-mapped stream
        // is not provably `Send` for every lifetime.
        let mut per_account = Vec::with_capacity(self.accounts.len());
        for (name, rt) in &self.accounts {
            let rejected = rejected.contains(name);
            per_account.push(self.poll_account(name, rt, opts, &silences, &offsets, rejected));
        }
        let per_account = futures_util::future::join_all(per_account).await;
        let mut out = Vec::new();
        for r in per_account {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn poll_account(
        &self,
        name: &str,
        rt: &AccountRuntime,
        opts: &CycleOptions,
        silences: &Arc<[SilenceRow]>,
        offsets: &HashMap<i64, Duration>,
        rejected: bool,
    ) -> Result<Vec<PollResult>, StoreError> {
        let todo: Vec<&PolledSeries> = rt.series.iter().filter(|s| !opts.skip.contains(&s.series_id)).collect();
        let mut results = Vec::with_capacity(todo.len());
        let mut blocked = if rejected { self.credential_backoff(name).await? } else { None };
        let start = tokio::time::Instant::now();
        let mut announced = false;
        for (i, s) in todo.iter().copied().enumerate() {
            let offset = offsets.get(&s.series_id).copied().unwrap_or_default();
            if opts.stop.is_cancelled() {
                break;
            }
            // Held until the result is stored, so the bound covers the store's writes too.
            let mut permit = None;
            if blocked.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep_until(start.checked_add(offset).unwrap_or(start)) => {}
                    _ = opts.stop.cancelled() => break,
                }
            }
            let forbidden = if blocked.is_none() { self.series_backoff(s).await? } else { None };
            let throttled = rt.budget.paused().filter(|left| *left > MAX_THROTTLE_WAIT);
            let mut latency = Duration::ZERO;
            let (mut record, sent) = match (&blocked, &forbidden, throttled) {
                (Some((kind, reason)), _, _) | (None, Some((kind, reason)), _) => (self.not_sent(*kind, reason), false),
                (None, None, Some(left)) => {
                    // Waiting out a long pause here would hold the whole cycle (and every account's next one) back
                    // by up to a minute; the series is recorded as not polled instead, like a credential backoff.
                    let reason = format!(
                        "account `{name}` is throttled by HSS (429) for another {}s; not calling it until then",
                        left.as_secs().max(1)
                    );
                    (self.not_sent(ErrorKind::Throttled, &reason), false)
                }
                (None, None, None) => {
                    let admitted;
                    (permit, admitted) = tokio::select! {
                        r = self.admit(&rt.budget, &s.host_budget, |wait| {
                            if !announced && wait >= ANNOUNCE_WAIT && let Some(notice) = &self.wait_notice {
                                notice(name, rt.calls_per_minute, todo.len() - i);
                                announced = true;
                            }
                        }) => r,
                        _ = opts.stop.cancelled() => break,
                    };
                    let busy = self.liveness.busy("poll");
                    let record;
                    (record, latency) = self.poll_one(s).await;
                    rt.budget.finished(admitted.0);
                    s.host_budget.finished(admitted.1);
                    drop(busy);
                    if let Err(e) = &record.outcome {
                        if e.kind == ErrorKind::Throttled {
                            rt.budget.pause_for(e.retry_after.unwrap_or(DEFAULT_THROTTLE_PAUSE));
                        }
                        // Rejected credentials are the account's (HSS locks a key after 5 failed signatures); a
                        // denied permission is this project's alone, and the series backs off by itself.
                        if e.kind == ErrorKind::Auth {
                            blocked = Some((
                                e.kind,
                                format!(
                                    "account `{name}` was rejected by HSS a moment ago ({e}); not calling again this cycle"
                                ),
                            ));
                        }
                    }
                    (record, true)
                }
            };
            if let Err(e) = &record.outcome {
                tracing::warn!(target: "scanwatch::poll", series = %s.key, kind = %e.kind, error = %e, "poll failed");
            }
            if sent {
                let denied = record.outcome.as_ref().is_err_and(|e| e.kind == ErrorKind::Forbidden);
                self.denied.lock().unwrap_or_else(|p| p.into_inner()).insert(s.series_id, denied);
            }
            // Only where it is stored: `poll --no-store` spends no task-API budget on checks nobody keeps.
            if let (Ok(stats), Some(_), true) = (&record.outcome, s.rules.scan_failures, opts.store) {
                let stats = *stats;
                let mut owed = false;
                if self.task_checks.due(&self.store, s.series_id, &stats).await? {
                    let budgets = (&rt.task_budgets, s.host_task_budgets.as_ref());
                    let busy = self.liveness.busy("task check");
                    let check = task_check::check(&self.client, &s.account, s, budgets, record.polled_at).await;
                    drop(busy);
                    owed = check.task.is_none() && check.unavailable.is_some();
                    record.task = Some(check);
                }
                self.task_checks.done(s.series_id, stats, owed);
            }
            let (snapshot_id, changes) = if opts.store {
                let busy = self.liveness.busy("store");
                let mut write = PollWrite {
                    series_id: s.series_id,
                    key: s.key.clone(),
                    rules: s.rules.clone(),
                    lifecycle: self.lifecycle,
                    record: record.clone(),
                    sent,
                    labels: Arc::clone(&s.labels),
                    routes: Arc::clone(&self.routes),
                    silences: Arc::clone(silences),
                    contexts: None,
                };
                // Committed with whatever other polls are waiting (group commit). A data alert about to fire or
                // remind first wants the task behind it from HSS: then nothing was written, and the poll is written
                // again with it, so each notice goes out with its context (or says why not).
                let recorded = loop {
                    match self.store.write(write.clone()).await? {
                        Written::Recorded(r) => break r,
                        Written::NeedsContexts(notifying) => {
                            let budgets = (&rt.task_budgets, s.host_task_budgets.as_ref());
                            let busy = self.liveness.busy("alert context");
                            let contexts = task_check::contexts(
                                &self.client,
                                &s.account,
                                s,
                                budgets,
                                &notifying,
                                &self.resource_cache,
                                record.polled_at,
                            )
                            .await;
                            drop(busy);
                            write.contexts = Some(contexts);
                        }
                    }
                };
                drop(busy);
                record::log_changes(&s.key, &recorded.changes);
                (Some(recorded.snapshot_id), recorded.changes)
            } else {
                (None, Vec::new())
            };
            results.push(PollResult {
                key: s.key.clone(),
                series_id: s.series_id,
                record,
                sent,
                latency,
                snapshot_id,
                changes,
            });
            drop(permit);
        }
        Ok(results)
    }

    /// When, into the cycle, each series to poll is due. Each endpoint host's series are spread evenly over the
    /// cycle, the accounts polled there taking turns: over `opts.over`, or over the time the host's per-IP budget
    /// needs for them when that is longer. Without the turns, accounts raced for the host's slots and a series' gap
    /// between polls swung from 0.7 to 1.6 intervals. With `opts.over` zero (`poll`), nothing is spread.
    fn plan(&self, opts: &CycleOptions) -> HashMap<i64, Duration> {
        let mut per_host: BTreeMap<&str, Vec<Vec<i64>>> = BTreeMap::new();
        for rt in self.accounts.values() {
            let mut by_host: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for s in rt.series.iter().filter(|s| !opts.skip.contains(&s.series_id)) {
                by_host.entry(s.host.as_str()).or_default().push(s.series_id);
            }
            for (host, ids) in by_host {
                per_host.entry(host).or_default().push(ids);
            }
        }
        let mut offsets = HashMap::new();
        for accounts in per_host.values() {
            let longest = accounts.iter().map(Vec::len).max().unwrap_or(0);
            let turns: Vec<i64> =
                (0..longest).flat_map(|i| accounts.iter().filter_map(move |ids| ids.get(i).copied())).collect();
            let over = if opts.over.is_zero() {
                Duration::ZERO
            } else {
                opts.over.max(budget::min_interval(turns.len(), self.host_calls_per_minute))
            };
            let spread = budget::spread(over, turns.len());
            offsets.extend(turns.into_iter().zip(spread));
        }
        offsets
    }

    /// Waits for a free poll slot and a slot in both budgets — the account's (HSS's per-user limit) and the endpoint
    /// host's (its per-IP limit, shared by every account polled there); returns the instants the budgets recorded,
    /// for [`RateBudget::finished`]. The budget slots are taken while holding the poll slot, so the call goes out when
    /// the budgets record it; the poll slot is not held while a budget makes the account wait.
    async fn admit(
        &self,
        account: &RateBudget,
        host: &RateBudget,
        mut on_wait: impl FnMut(Duration),
    ) -> (Option<tokio::sync::SemaphorePermit<'_>>, (tokio::time::Instant, tokio::time::Instant)) {
        loop {
            // The semaphore is never closed; without a permit the poll still goes out, just unbounded.
            let permit = self.in_flight.acquire().await.ok();
            let wait = match (account.try_admit(), host.try_admit()) {
                (Ok(a), Ok(h)) => return (permit, (a, h)),
                (Ok(a), Err(wait)) => {
                    account.cancel(a);
                    wait
                }
                (Err(wait), Ok(h)) => {
                    host.cancel(h);
                    wait
                }
                (Err(a), Err(h)) => a.max(h),
            };
            drop(permit);
            on_wait(wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// One call of task-statistics, and how long it took.
    async fn poll_one(&self, s: &PolledSeries) -> (PollRecord, Duration) {
        let polled_at = self.clock.now();
        let started = Instant::now();
        let req = StatsRequest {
            endpoint: &s.endpoint,
            project_id: &s.key.project_id,
            enterprise_project_id: s.key.enterprise_project_id.as_deref(),
            task_type: s.key.task_type,
        };
        let outcome = self.client.task_statistics(&s.account, &req, polled_at).await;
        let latency = started.elapsed();
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let record = match outcome {
            Ok(r) => PollRecord {
                task: None,
                polled_at,
                latency_ms,
                outcome: Ok(r.stats),
                http_status: Some(r.http_status),
                request_id: r.request_id,
            },
            Err(e) => {
                PollRecord { task: None, polled_at, latency_ms, outcome: Err(e), http_status: None, request_id: None }
            }
        };
        (record, latency)
    }

    /// A poll recorded without calling HSS, classified like the rejection that caused the backoff.
    fn not_sent(&self, kind: ErrorKind, reason: &str) -> PollRecord {
        let mut e = PollError::new(kind, format!("not polled: {reason}"));
        e.error_code = Some(NOT_SENT_CODE.to_string());
        PollRecord {
            task: None,
            polled_at: self.clock.now(),
            latency_ms: 0,
            outcome: Err(e),
            http_status: None,
            request_id: None,
        }
    }

    /// Whether the account is still backing off after consecutive rejected credentials (401: bad signature, unknown
    /// AK, expired token), read from the account's stored calls. A 403 ends the streak: the credentials worked.
    async fn credential_backoff(&self, account: &str) -> Result<Option<(ErrorKind, String)>, StoreError> {
        // Only for an account with a rejected call since MAX_AUTH_BACKOFF (`accounts_rejected_since`): a backoff
        // ends at most that long after the rejected call that started its last step.
        let recent = self.store.latest_calls(account, 12).await?;
        let Some((failures, last, until)) = self.backoff_from(&recent, ErrorKind::Auth) else { return Ok(None) };
        Ok(Some((
            ErrorKind::Auth,
            format!(
                "account `{account}` is backing off after {failures} rejected call(s) ({}, last at {}); next try after {}",
                what_failed(last),
                last.polled_at.format("%Y-%m-%dT%H:%M:%SZ"),
                until.format("%Y-%m-%dT%H:%M:%SZ"),
            ),
        )))
    }

    /// Whether this series is backing off after HSS denied it permission (403, `HSS.0010`, `HSS.0013`,
    /// `APIGW.0306`): that is about its project or enterprise project, so only it waits; the account's other
    /// series keep polling.
    async fn series_backoff(&self, s: &PolledSeries) -> Result<Option<(ErrorKind, String)>, StoreError> {
        if self.denied.lock().unwrap_or_else(|p| p.into_inner()).get(&s.series_id) == Some(&false) {
            return Ok(None);
        }
        let recent = self.store.latest_series_calls(s.series_id, 12).await?;
        let Some((failures, last, until)) = self.backoff_from(&recent, ErrorKind::Forbidden) else { return Ok(None) };
        Ok(Some((
            ErrorKind::Forbidden,
            format!(
                "HSS denied access to {} {failures} time(s) ({}, last at {}); next try after {}",
                crate::rules::project_of(&s.key),
                what_failed(last),
                last.polled_at.format("%Y-%m-%dT%H:%M:%SZ"),
                until.format("%Y-%m-%dT%H:%M:%SZ"),
            ),
        )))
    }

    /// From calls newest first: the run of `kind` failures at the head, its latest call and when its backoff ends —
    /// if it has not ended yet.
    fn backoff_from<'a>(
        &self,
        recent: &'a [Snapshot],
        kind: ErrorKind,
    ) -> Option<(usize, &'a Snapshot, DateTime<Utc>)> {
        let failures = recent.iter().take_while(|s| s.error_kind == Some(kind)).count();
        let last = recent.first().filter(|_| failures > 0)?;
        let delay = budget::auth_backoff(self.backoff_base, u32::try_from(failures).unwrap_or(u32::MAX));
        let until = crate::clock::later(last.polled_at, delay);
        (self.clock.now() < until).then_some((failures, last, until))
    }

    /// The moment this poller thinks it is.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// How many polls (HSS call + store) are in flight at once across all accounts (each account's own calls are
/// sequential).
pub const MAX_CONCURRENT_CALLS: usize = 64;

/// A wait for the API budget at least this long is announced (`poll` prints it).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// How long an account pauses after a 429 that gave no `Retry-After` (Huawei's FAQ says 2–5 s; the 5/min limit
/// makes a longer wait wiser).
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(30);

/// The longest a series waits in its cycle for an account's 429 pause to end (a `Retry-After: 1` is waited for);
/// behind a longer pause it is recorded as not polled, with the throttling as the reason.
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// "HTTP 403 HSS.0010", or what is known of a stored failure.
fn what_failed(last: &Snapshot) -> String {
    match (&last.error_code, last.http_status) {
        (Some(code), Some(status)) => format!("HTTP {status} {code}"),
        (_, Some(status)) => format!("HTTP {status}"),
        (Some(code), None) => code.clone(),
        _ => "rejected".to_string(),
    }
}

/// The HSS client as `[schedule]` configures it (timeouts, the response cap).
pub fn hss_client(config: &Config) -> Result<HssClient, reqwest::Error> {
    HssClient::new(ClientOptions {
        connect_timeout: config.schedule.connect_timeout,
        timeout: config.schedule.timeout,
        max_body_bytes: usize::try_from(config.schedule.max_response_bytes).unwrap_or(usize::MAX),
        ..ClientOptions::default()
    })
}

/// The client-side account for `account`'s calls to `region` (a password login's IAM token is regional).
pub fn hss_account(account: &crate::config::Account, region: &str) -> client::Account {
    client::Account::new(account.name.clone(), credentials(account, region))
}

fn credentials(account: &crate::config::Account, region: &str) -> Credentials {
    match &account.auth {
        AccountAuth::Aksk { ak, sk, security_token } => Credentials::AkSk {
            ak: ak.value.expose().to_string(),
            sk: sk.value.clone(),
            security_token: security_token.as_ref().map(|t| t.value.clone()),
        },
        AccountAuth::Token { token } => Credentials::Token(token.value.clone()),
        AccountAuth::Password { domain, user, password, iam_endpoint } => Credentials::Password(PasswordLogin {
            iam_endpoint: iam_endpoint
                .clone()
                .or_else(|| regions::iam_endpoint(region))
                .unwrap_or_else(|| Url::parse("https://iam.myhuaweicloud.com").unwrap_or_else(|_| unreachable!())),
            domain: domain.clone(),
            user: user.clone(),
            password: password.value.clone(),
            project: ProjectScope::Name(region.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Environment;
    use crate::simulator::{Scenario, Simulator};

    #[tokio::test]
    async fn an_accounts_polls_are_spread_over_the_given_time_not_burst() {
        let scenario = r#"
[simulator]
calls_per_minute = 0
[[credentials]]
ak = "AK"
sk = "SK"
[[series]]
project_id = "0123456789abcdef0123456789abcdef"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 1
  running_num = 0
[[series]]
project_id = "0123456789abcdef0123456789abcdef"
task_type = "iac_scan"
  [[series.steps]]
  at = "0s"
  total_num = 1
  running_num = 0
"#;
        let sim = Simulator::new(Scenario::from_toml_str(scenario).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let (sim, stop) = (sim.clone(), stop.clone());
            async move { sim.serve(listener, stop).await }
        });
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\npath = \"{}\"\n[schedule]\ninterval = \"1m\"\n[[accounts]]\nname = \"a\"\nak_env = \"A\"\nsk_env = \"S\"\n\
             [[targets]]\nname = \"t\"\naccount = \"a\"\nregion = \"cn-north-4\"\nendpoint = \"http://127.0.0.1:{port}\"\nproject_id = \"0123456789abcdef0123456789abcdef\"\n",
            dir.path().join("p.db").display()
        );
        let config =
            Config::from_toml_str(&text, dir.path(), &Environment::from_pairs([("A", "AK"), ("S", "SK")])).unwrap();
        let store = Store::open(&config.storage.path).await.unwrap();
        let poller = Poller::new(&config, store, Arc::new(SystemClock::default())).await.unwrap();
        let started = Instant::now();
        let results = poller.poll_spread(true, Duration::from_millis(600)).await.unwrap();
        assert!(results.iter().all(|r| r.record.outcome.is_ok()));
        // Two polls over 600 ms: the second waits for its slot at 300 ms.
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        // The statistics calls (each series' first poll also checks its latest finished task).
        let calls: Vec<_> = sim.calls().into_iter().filter(|c| c.path.ends_with("/task-statistics")).collect();
        assert_eq!(calls.len(), 2);
        assert!((calls[1].at - calls[0].at) >= chrono::TimeDelta::milliseconds(250), "{calls:?}");
        stop.cancel();
    }
}
