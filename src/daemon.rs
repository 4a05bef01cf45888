//! `scanwatch run`: the poll schedule, the dispatcher beside it, retention, the heartbeat, systemd notification,
//! and SIGHUP reloads.
//!
//! A cycle ([`Cycle::run`]) polls every series once, spread over half the interval within each account's budget;
//! with a dozen series on one account at HSS's 5 calls/min that takes minutes. So the loop never waits for a cycle:
//! the cycle runs as a task beside the watchdog, the dispatcher, SIGHUP and SIGTERM, and the loop only starts it,
//! hears from it and stops it.
//!
//! - **Watchdog.** `WATCHDOG=1` goes out every third of `WatchdogSec` however long a cycle runs. It stops only when
//!   the process is wedged: the loop itself stops turning, or a poll (call + store) or a dispatch pass has been in
//!   flight for longer than [`stall_bound`] — each is bounded by its own timeouts well before that — so systemd
//!   restarts a hung daemon and never a busy one.
//! - **SIGHUP** reloads at once. A valid config takes effect between polls: the cycle in flight stops starting new
//!   polls, and the rest of it runs under the new config (series already polled in it are not polled again).
//! - **SIGTERM** stops starting polls at once. A poll in flight gets up to [`POLL_GRACE`] to finish and commit its
//!   one transaction (snapshot, alert states, outbox rows); one still waiting on HSS after that is abandoned and
//!   never stored — the database only ever holds whole polls. Then deliveries in flight get [`SHUTDOWN_GRACE`];
//!   whatever is undelivered stays pending in the outbox for the next start. Exit 0.
//!
//! The schedule ([`crate::schedule`]) is an interval with a per-process jitter (so many instances do not hit the API
//! on the same second) whose missed ticks are skipped, never burst; or a cron expression in a time zone, each next
//! fire computed from now with croner (DST-correct; see that module for why not tokio-cron-scheduler). A tick that
//! comes while a cycle still runs is skipped (and logged): cycles never overlap.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::Clock;
use crate::config::Config;
use crate::liveness::Liveness;
use crate::notify::outbox::DispatchReport;
use crate::poller::CycleOptions;
use crate::schedule::Ticker;
use crate::server::{Health, Metrics, ServerState};
use crate::store::Store;

/// How long in-flight deliveries get after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a poll in flight gets after SIGTERM to finish and commit.
pub const POLL_GRACE: Duration = Duration::from_secs(20);
/// How often the dispatcher looks for due notifications.
const DISPATCH_EVERY: Duration = Duration::from_secs(1);
/// How long one dispatch pass may take.
const DISPATCH_BUDGET: Duration = Duration::from_secs(20);
/// How often old snapshots are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How long a poll or a dispatch pass may be in flight before the process counts as wedged: twice the longest
/// either may legitimately take (a call's connect + total timeout, or a dispatch pass's budget), plus a minute for
/// the store.
pub fn stall_bound(config: &Config) -> Duration {
    let call = config.schedule.connect_timeout.saturating_add(config.schedule.timeout);
    call.max(DISPATCH_BUDGET).saturating_mul(2).saturating_add(Duration::from_secs(60))
}

/// What one cycle did, for logs, systemd's status line and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub polls: usize,
    pub failed_polls: usize,
    pub transitions: usize,
    pub delivery_failures: usize,
    /// Stopped early (SIGTERM, or SIGHUP switching to a new config): some series were not polled.
    pub interrupted: bool,
    /// The series polled (their ids), so a cycle resumed under a reloaded config skips them.
    pub polled: HashSet<i64>,
}

impl CycleReport {
    pub fn ok(&self) -> bool {
        self.failed_polls == 0 && self.delivery_failures == 0
    }
}

/// State every cycle and the loop share; cheap to clone into a task.
#[derive(Clone)]
struct Shared {
    store: Store,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    last_prune: Arc<Mutex<Option<Instant>>>,
    last_cycle: Arc<Mutex<Option<DateTime<Utc>>>>,
}

/// One cycle, owned, so it can run as a task.
struct Cycle {
    app: Arc<App>,
    shared: Shared,
    opts: CycleOptions,
    /// Whether the cycle delivers what is due at its end (the daemon's dispatcher task does that instead).
    dispatch: bool,
}

impl Cycle {
    /// Polls every series once (as `opts` says), evaluates, optionally delivers what is due, prunes when a day has
    /// passed, pings the heartbeat.
    async fn run(self) -> anyhow::Result<CycleReport> {
        let Cycle { app, shared, opts, dispatch } = self;
        let results = match app.poller.poll_cycle(&opts).await {
            Ok(r) => r,
            Err(e) => {
                // The database refused: the cycle is not good, and /healthz will say so.
                shared.health.record_cycle(shared.clock.now(), false);
                return Err(e.into());
            }
        };
        for r in results.iter().filter(|r| r.sent) {
            shared.metrics.poll(&r.key, &r.record, r.latency);
        }
        let mut report = CycleReport {
            polls: results.len(),
            failed_polls: results.iter().filter(|r| r.record.outcome.is_err()).count(),
            transitions: results.iter().map(|r| r.changes.len()).sum(),
            delivery_failures: 0,
            interrupted: opts.stop.is_cancelled(),
            polled: results.iter().map(|r| r.series_id).collect(),
        };
        if dispatch {
            let d = dispatch_pass(&app, &shared).await?;
            report.delivery_failures = d.failed + d.expired;
        }
        let prune_due =
            shared.last_prune.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if prune_due && !report.interrupted {
            let cutoff = crate::clock::earlier(shared.clock.now(), app.config.storage.retention);
            let pruned = shared.store.prune(cutoff).await?;
            tracing::info!(pruned, "retention: pruned old snapshots");
            *shared.last_prune.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        let now = shared.clock.now();
        *shared.last_cycle.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        // Good = polled, stored and evaluated; HSS answering errors is poll_failing's business, not scanwatch's health.
        shared.health.record_cycle(now, true);
        if !report.interrupted {
            heartbeat(&app.config, &shared.http, report.ok()).await;
        }
        tracing::info!(
            polls = report.polls,
            failed = report.failed_polls,
            transitions = report.transitions,
            interrupted = report.interrupted,
            "cycle done"
        );
        Ok(report)
    }
}

/// One dispatch pass (registered with the watchdog), its outcomes counted in the metrics, then the resends that are
/// due (Alertmanager's still-firing alerts).
async fn dispatch_pass(app: &App, shared: &Shared) -> anyhow::Result<DispatchReport> {
    let _busy = shared.liveness.busy("dispatch");
    let deadline = Instant::now() + DISPATCH_BUDGET;
    let d = app.dispatcher.dispatch_due(&shared.store, shared.clock.now(), deadline).await?;
    for (channel, outcome) in &d.outcomes {
        shared.metrics.delivery(channel, outcome);
    }
    app.dispatcher.resend_due(&shared.store, shared.clock.now(), deadline).await?;
    Ok(d)
}

async fn heartbeat(config: &Config, http: &reqwest::Client, ok: bool) {
    let Some(url) = &config.heartbeat else { return };
    let base = url.value.expose().trim_end_matches('/');
    let target = if ok { base.to_string() } else { format!("{base}/fail") };
    // The URL identifies the check: log only whether it worked.
    match http.get(&target).send().await {
        Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent"),
        Ok(r) => tracing::warn!(status = r.status().as_u16(), "heartbeat not accepted"),
        Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat failed"),
    }
}

/// The daemon's state between cycles.
pub struct Daemon {
    config_path: PathBuf,
    app: Arc<App>,
    shared: Shared,
}

impl Daemon {
    pub async fn start(config_path: &Path, config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Daemon> {
        // Opening may migrate, and migrating a large database takes minutes (issue 13's in-place re-clustering of
        // 10M snapshots: about 3 minutes), longer than systemd's start timeout (90 s by default). Until the store
        // is open, ask systemd for another minute every 20 s, so an upgrade is not killed mid-migration and
        // restarted into the same migration forever.
        let extend = tokio::spawn(async {
            loop {
                notify(&[
                    NotifyState::ExtendTimeoutUsec(60_000_000),
                    NotifyState::Status("opening the database (migrating it if this version needs to)"),
                ]);
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        let store = crate::app::open_store(&config).await;
        extend.abort();
        let store = store?;
        let (interval, now) = (config.schedule.interval, clock.now());
        let liveness = Arc::new(Liveness::default());
        let app = App::build_with(config, &store, clock.clone(), liveness.clone()).await?;
        let http = crate::tls::client_builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the heartbeat HTTP client")?;
        let shared = Shared {
            store,
            clock,
            http,
            health: Arc::new(Health::new(interval).since(now)),
            metrics: Arc::new(Metrics::new()),
            liveness,
            last_prune: Arc::new(Mutex::new(None)),
            last_cycle: Arc::new(Mutex::new(None)),
        };
        shared.metrics.declare(&app.config);
        Ok(Daemon { config_path: config_path.to_path_buf(), app: Arc::new(app), shared })
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn config(&self) -> &Config {
        &self.app.config
    }

    /// One whole cycle in the caller's task, delivering what is due at its end: what `demo`, the benchmarks and
    /// tests drive step by step. The daemon's loop runs the same cycle as a task.
    pub async fn run_cycle(&mut self) -> anyhow::Result<CycleReport> {
        self.cycle(CycleOptions::default(), true).run().await
    }

    fn cycle(&self, opts: CycleOptions, dispatch: bool) -> Cycle {
        let over = if opts.over.is_zero() { self.app.config.schedule.interval / 2 } else { opts.over };
        Cycle {
            app: self.app.clone(),
            shared: self.shared.clone(),
            opts: CycleOptions { store: true, over, ..opts },
            dispatch,
        }
    }

    /// Starts the HTTP API when `[server]` is configured.
    async fn serve_http(&self, shutdown: CancellationToken) -> anyhow::Result<Option<JoinHandle<()>>> {
        let Some(server) = &self.app.config.server else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", server.listen))?;
        let state = ServerState {
            store: self.shared.store.clone(),
            health: self.shared.health.clone(),
            metrics: self.shared.metrics.clone(),
            clock: self.shared.clock.clone(),
            config: self.app.config.clone(),
        };
        let router = crate::server::router(state, server.token.as_ref().map(|t| t.value.clone()));
        tracing::info!(listen = %server.listen, "HTTP API listening");
        Ok(Some(tokio::spawn(async move {
            if let Err(e) = crate::server::serve(listener, router, shutdown).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        })))
    }

    /// Loads the config again; keeps the running one (and says why) when the new one is invalid.
    pub async fn reload(&mut self) -> bool {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(key = %p.key, problem = %p.message, "reload refused: keeping the running configuration");
                }
                return false;
            }
        };
        let shared = &self.shared;
        match App::build_with(config, &shared.store, shared.clock.clone(), shared.liveness.clone()).await {
            Ok(app) => {
                shared.health.set_interval(app.config.schedule.interval);
                let server =
                    |c: &Config| c.server.as_ref().map(|s| (s.listen, s.token.as_ref().map(|t| t.value.clone())));
                if server(&app.config) != server(&self.app.config) {
                    tracing::warn!("[server] changed: the HTTP API keeps its old address and token until a restart");
                }
                shared.metrics.declare(&app.config);
                self.app = Arc::new(app);
                tracing::info!(series = self.app.poller.series().count(), "configuration reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload refused: keeping the running configuration");
                false
            }
        }
    }

    async fn status_line(&self, cycle_running: bool) -> String {
        let firing = self.shared.store.alerts(false).await.map(|a| a.len()).unwrap_or(0);
        let last = *self.shared.last_cycle.lock().unwrap_or_else(|p| p.into_inner());
        let last = last.map(crate::output::rfc3339).unwrap_or_else(|| "never".into());
        let running = if cycle_running { "; cycle running" } else { "" };
        format!("{} series; {firing} alerts active; last cycle {last}{running}", self.app.poller.series().count())
    }
}

/// A cycle task in flight.
struct Running {
    handle: JoinHandle<anyhow::Result<CycleReport>>,
    stop: CancellationToken,
    started: tokio::time::Instant,
    /// Series polled by earlier parts of this cycle (before a reload resumed it).
    polled: HashSet<i64>,
    /// A reload asked it to stop: resume the rest under the new config when it does.
    resume: bool,
}

/// Runs the daemon until `shutdown` (SIGTERM/SIGINT); SIGHUP reloads.
pub async fn run(
    config_path: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = config.schedule.interval;
    let mut daemon = Daemon::start(config_path, config, clock.clone()).await?;
    let mut hup = hangup()?;
    let http_stop = CancellationToken::new();
    let http = daemon.serve_http(http_stop.clone()).await?;

    // A per-process offset into the interval, so several instances do not poll on the same second.
    let jitter = Duration::from_millis(
        rand::rng().random_range(0..=interval.min(Duration::from_secs(30)).as_millis() as u64 / 10),
    );
    let when = |c: &Config| (c.schedule.interval, c.schedule.cron.clone(), c.schedule.timezone);
    let mut ticks = Ticker::new(&daemon.app.config.schedule.plan(), jitter);
    let mut dispatch_tick = tokio::time::interval(DISPATCH_EVERY);
    dispatch_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A third of WatchdogSec: systemd wants one at least every half, and a tick may come late under load.
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 3);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stall = stall_bound(&daemon.app.config);

    let mut cycle: Option<Running> = None;
    // Until the first cycle ends: then the start-up code's pages are released (crate::footprint).
    let mut started_up = false;
    let mut dispatching: Option<JoinHandle<()>> = None;

    notify(&[NotifyState::Ready, NotifyState::Status(&daemon.status_line(false).await)]);
    tracing::info!(
        series = daemon.app.poller.series().count(),
        interval = %crate::config::format_duration(interval),
        "scanwatch running"
    );
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => match daemon.shared.liveness.stalled(stall) {
                None => notify(&[NotifyState::Watchdog]),
                Some((what, d)) => tracing::error!(
                    work = what,
                    stuck_for = %crate::config::format_duration(d),
                    bound = %crate::config::format_duration(stall),
                    "wedged: work in flight far beyond its timeouts; withholding the watchdog so systemd restarts scanwatch"
                ),
            },
            joined = async { (&mut cycle.as_mut().expect("guarded by is_some").handle).await }, if cycle.is_some() => {
                let Some(done) = cycle.take() else { continue };
                let mut polled = done.polled;
                match joined {
                    Ok(Ok(report)) => polled.extend(report.polled),
                    // Name the database: a store error alone does not say which file refused.
                    Ok(Err(e)) => tracing::error!(
                        error = %format!("{e:#}"),
                        database = %daemon.app.config.storage.path.display(),
                        "cycle failed"
                    ),
                    Err(e) => tracing::error!(error = %e, "cycle task ended abnormally"),
                }
                if done.resume {
                    // The rest of the cycle, under the reloaded config, over what is left of its spread.
                    let over = (daemon.app.config.schedule.interval / 2).saturating_sub(done.started.elapsed());
                    let mut next = start_cycle(&daemon, over.max(Duration::from_millis(1)), polled.clone());
                    next.started = done.started;
                    next.polled = polled;
                    cycle = Some(next);
                }
                notify(&[NotifyState::Status(&daemon.status_line(cycle.is_some()).await)]);
                if !started_up {
                    started_up = true;
                    crate::footprint::release_startup_code();
                }
            }
            _ = ticks.tick() => {
                if let Some(c) = &cycle {
                    tracing::warn!(
                        running_for = %crate::config::format_duration(c.started.elapsed()),
                        "the previous cycle is still running; skipping this one (see `scanwatch validate` for how long a cycle takes)"
                    );
                } else {
                    cycle = Some(start_cycle(&daemon, Duration::ZERO, HashSet::new()));
                    notify(&[NotifyState::Status(&daemon.status_line(true).await)]);
                }
            }
            _ = dispatch_tick.tick() => {
                // One pass at a time; a pass is bounded by DISPATCH_BUDGET.
                if dispatching.as_ref().is_none_or(|h| h.is_finished()) {
                    let (app, shared) = (daemon.app.clone(), daemon.shared.clone());
                    dispatching = Some(tokio::spawn(async move {
                        if let Err(e) = dispatch_pass(&app, &shared).await {
                            tracing::error!(error = %format!("{e:#}"), "dispatch failed");
                        }
                    }));
                }
            }
            _ = hup.recv() => {
                // systemd 253+ wants the monotonic time with RELOADING=1.
                let mut reloading = vec![NotifyState::Reloading];
                reloading.extend(NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                let before = when(&daemon.app.config);
                if daemon.reload().await {
                    stall = stall_bound(&daemon.app.config);
                    if when(&daemon.app.config) != before {
                        ticks = Ticker::new(&daemon.app.config.schedule.plan(), Duration::ZERO);
                    }
                    // The new config takes effect between polls: the cycle in flight stops after the polls it has
                    // started, and its rest runs under the new config.
                    if let Some(c) = &mut cycle {
                        c.resume = true;
                        c.stop.cancel();
                    }
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&daemon.status_line(cycle.is_some()).await)]);
            }
        }
    }

    notify(&[NotifyState::Stopping]);
    if let Some(c) = cycle.take() {
        c.stop.cancel();
        tracing::info!(grace = %crate::config::format_duration(POLL_GRACE), "stopping: no new polls; letting the polls in flight finish and commit");
        let mut handle = c.handle;
        if tokio::time::timeout(POLL_GRACE, &mut handle).await.is_err() {
            // Dropping a poll mid-call stores nothing of it: each poll is one transaction, committed or never begun.
            handle.abort();
            let _ = handle.await;
            tracing::warn!("a poll still waiting on HSS was abandoned; it is not stored");
        }
    }
    tracing::info!("stopping: giving in-flight deliveries {}", crate::config::format_duration(SHUTDOWN_GRACE));
    if let Some(d) = dispatching.take() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, d).await;
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let d = daemon.app.dispatcher.clone();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, d.dispatch_due(&daemon.shared.store, clock.now(), deadline)).await;
    http_stop.cancel();
    if let Some(h) = http {
        // A client stuck mid-request must not hold the exit.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, h).await;
    }
    let pending = daemon.shared.store.pending_count().await.unwrap_or(0);
    daemon.shared.store.close().await;
    tracing::info!(pending, "stopped; pending notifications stay in the outbox for the next start");
    Ok(())
}

/// Spawns a cycle (deliveries are the dispatcher task's) spread over `over` (zero: half the interval).
fn start_cycle(daemon: &Daemon, over: Duration, skip: HashSet<i64>) -> Running {
    let stop = CancellationToken::new();
    let opts = CycleOptions { store: true, over, stop: stop.clone(), skip };
    let handle = tokio::spawn(daemon.cycle(opts, false).run());
    Running { handle, stop, started: tokio::time::Instant::now(), polled: HashSet::new(), resume: false }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

#[cfg(unix)]
fn hangup() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot listen for SIGHUP")
}
