//! `scanwatch run`: the poll schedule, the dispatcher beside it, retention, the heartbeat, systemd notification,
//! and SIGHUP reloads. One cycle is [`Daemon::run_cycle`]; the loop only waits between cycles.
//!
//! The schedule ([`crate::schedule`]) is an interval with a per-process jitter (so many instances do not hit the API
//! on the same second) whose missed ticks are skipped, never burst; or a cron expression in a time zone, each next
//! fire computed from now with croner (DST-correct; see that module for why not tokio-cron-scheduler).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::notify::{
    self,
    outbox::{DispatchReport, Dispatcher, Route},
};
use crate::poller::Poller;
use crate::schedule::Ticker;
use crate::server::{Health, Metrics, ServerState};
use crate::store::Store;

/// How long in-flight deliveries get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the dispatcher looks for due retries between cycles.
const DISPATCH_EVERY: Duration = Duration::from_secs(1);
/// How long one dispatch pass may take.
const DISPATCH_BUDGET: Duration = Duration::from_secs(20);
/// How often old snapshots are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Everything built from one configuration; replaced whole on a successful reload.
struct Generation {
    config: Arc<Config>,
    poller: Poller,
    dispatcher: Arc<Dispatcher>,
}

impl Generation {
    async fn build(config: Config, store: &Store, clock: Arc<dyn Clock>) -> anyhow::Result<Generation> {
        let routes: Vec<Arc<dyn Route>> =
            config.channels.iter().map(|c| Arc::new(c.clone()) as Arc<dyn Route>).collect();
        let channels = notify::build_channels(&config.channels, config.schedule.timezone)?;
        let dispatcher = Arc::new(Dispatcher::new(channels, config.alerting.max_delivery_age));
        let poller = Poller::new(&config, store.clone(), clock).await?.with_routes(routes);
        Ok(Generation { config: Arc::new(config), poller, dispatcher })
    }
}

/// The daemon's state between cycles.
pub struct Daemon {
    config_path: PathBuf,
    store: Store,
    clock: Arc<dyn Clock>,
    current: Generation,
    http: reqwest::Client,
    last_prune: Option<Instant>,
    last_cycle: Option<DateTime<Utc>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// What one cycle did, for logs, systemd's status line and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub polls: usize,
    pub failed_polls: usize,
    pub transitions: usize,
    pub delivery_failures: usize,
}

impl CycleReport {
    pub fn ok(&self) -> bool {
        self.failed_polls == 0 && self.delivery_failures == 0
    }
}

impl Daemon {
    pub async fn start(config_path: &Path, config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Daemon> {
        let store = crate::cli::open_store(&config).await?;
        let (interval, now) = (config.schedule.interval, clock.now());
        let current = Generation::build(config, &store, clock.clone()).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the heartbeat HTTP client")?;
        Ok(Daemon {
            config_path: config_path.to_path_buf(),
            store,
            clock,
            current,
            http,
            last_prune: None,
            last_cycle: None,
            health: Arc::new(Health::new(interval).since(now)),
            metrics: Arc::new(Metrics::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Polls every series once, evaluates, delivers what is due, prunes when a day has passed, pings the heartbeat.
    pub async fn run_cycle(&mut self) -> anyhow::Result<CycleReport> {
        let g = &self.current;
        // Spread each account's polls over half the interval: no burst, and the cycle ends well before the next.
        let results = match g.poller.poll_spread(true, g.config.schedule.interval / 2).await {
            Ok(r) => r,
            Err(e) => {
                // The database refused: the cycle is not good, and /healthz will say so.
                self.health.record_cycle(self.clock.now(), false);
                return Err(e.into());
            }
        };
        for r in results.iter().filter(|r| r.sent) {
            self.metrics.poll(&r.key, &r.record);
        }
        let mut report = CycleReport {
            polls: results.len(),
            failed_polls: results.iter().filter(|r| r.record.outcome.is_err()).count(),
            transitions: results.iter().map(|r| r.changes.len()).sum(),
            delivery_failures: 0,
        };
        let deadline = Instant::now() + DISPATCH_BUDGET;
        let d = g.dispatcher.dispatch_due(&self.store, self.clock.now(), deadline).await?;
        report.delivery_failures = d.failed + d.expired;
        self.record_deliveries(&d);
        if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            let retention = TimeDelta::from_std(g.config.storage.retention).unwrap_or(TimeDelta::MAX);
            let pruned = self.store.prune(self.clock.now() - retention).await?;
            tracing::info!(pruned, "retention: pruned old snapshots");
            self.last_prune = Some(Instant::now());
        }
        self.last_cycle = Some(self.clock.now());
        // Good = polled, stored and evaluated; HSS answering errors is poll_failing's business, not scanwatch's health.
        self.health.record_cycle(self.clock.now(), true);
        self.heartbeat(report.ok()).await;
        tracing::info!(
            polls = report.polls,
            failed = report.failed_polls,
            transitions = report.transitions,
            "cycle done"
        );
        Ok(report)
    }

    fn record_deliveries(&self, d: &DispatchReport) {
        for (channel, outcome) in &d.outcomes {
            self.metrics.delivery(channel, outcome);
        }
    }

    /// Starts the HTTP API when `[server]` is configured.
    async fn serve_http(&self, shutdown: CancellationToken) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(server) = &self.current.config.server else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", server.listen))?;
        let state = ServerState {
            store: self.store.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            config: self.current.config.clone(),
        };
        let router = crate::server::router(state, server.token.as_ref().map(|t| t.value.clone()));
        tracing::info!(listen = %server.listen, "HTTP API listening");
        Ok(Some(tokio::spawn(async move {
            if let Err(e) = crate::server::serve(listener, router, shutdown).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        })))
    }

    async fn heartbeat(&self, ok: bool) {
        let Some(url) = &self.current.config.heartbeat else { return };
        let base = url.value.expose().trim_end_matches('/');
        let target = if ok { base.to_string() } else { format!("{base}/fail") };
        // The URL identifies the check: log only whether it worked.
        match self.http.get(&target).send().await {
            Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent"),
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "heartbeat not accepted"),
            Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat failed"),
        }
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
        match Generation::build(config, &self.store, self.clock.clone()).await {
            Ok(g) => {
                self.health.set_interval(g.config.schedule.interval);
                if g.config.server.as_ref().map(|s| (s.listen, s.token.as_ref().map(|t| t.value.clone())))
                    != self
                        .current
                        .config
                        .server
                        .as_ref()
                        .map(|s| (s.listen, s.token.as_ref().map(|t| t.value.clone())))
                {
                    tracing::warn!("[server] changed: the HTTP API keeps its old address and token until a restart");
                }
                self.current = g;
                tracing::info!(series = self.current.poller.series().count(), "configuration reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload refused: keeping the running configuration");
                false
            }
        }
    }

    async fn status_line(&self) -> String {
        let firing = self.store.alerts(false).await.map(|a| a.len()).unwrap_or(0);
        let last = self.last_cycle.map(crate::output::rfc3339).unwrap_or_else(|| "never".into());
        format!("{} series; {firing} alerts active; last cycle {last}", self.current.poller.series().count())
    }
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
    let mut ticks = Ticker::new(&daemon.current.config.schedule.plan(), jitter);
    let mut dispatch = tokio::time::interval(DISPATCH_EVERY);
    dispatch.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    notify(&[NotifyState::Ready, NotifyState::Status(&daemon.status_line().await)]);
    tracing::info!(
        series = daemon.current.poller.series().count(),
        interval = %crate::config::format_duration(interval),
        "scanwatch running"
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                // A cycle runs to its end unless shutdown comes: every poll result is committed or never started.
                tokio::select! {
                    r = daemon.run_cycle() => match r {
                        Ok(_) => {}
                        // Name the database: a store error alone does not say which file refused.
                        Err(e) => tracing::error!(
                            error = %format!("{e:#}"),
                            database = %daemon.current.config.storage.path.display(),
                            "cycle failed"
                        ),
                    },
                    _ = shutdown.cancelled() => break,
                }
                notify(&[NotifyState::Status(&daemon.status_line().await)]);
            }
            _ = dispatch.tick() => {
                let deadline = Instant::now() + DISPATCH_BUDGET;
                let d = daemon.current.dispatcher.clone();
                tokio::select! {
                    r = d.dispatch_due(&daemon.store, clock.now(), deadline) => match r {
                        Ok(report) => daemon.record_deliveries(&report),
                        Err(e) => tracing::error!(error = %e, "dispatch failed"),
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
            _ = hup.recv() => {
                // systemd 253+ wants the monotonic time with RELOADING=1.
                let mut reloading = vec![NotifyState::Reloading];
                reloading.extend(NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                let before = when(&daemon.current.config);
                if daemon.reload().await && when(&daemon.current.config) != before {
                    ticks = Ticker::new(&daemon.current.config.schedule.plan(), Duration::ZERO);
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&daemon.status_line().await)]);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }

    notify(&[NotifyState::Stopping]);
    tracing::info!("stopping: giving in-flight deliveries {}", crate::config::format_duration(SHUTDOWN_GRACE));
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let d = daemon.current.dispatcher.clone();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, d.dispatch_due(&daemon.store, clock.now(), deadline)).await;
    http_stop.cancel();
    if let Some(h) = http {
        // A client stuck mid-request must not hold the exit.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, h).await;
    }
    let pending = daemon.store.pending_count().await.unwrap_or(0);
    daemon.store.close().await;
    tracing::info!(pending, "stopped; pending notifications stay in the outbox for the next start");
    Ok(())
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
