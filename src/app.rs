//! Process wiring, in one place for every command: an [`App`] is what one [`Config`] builds — the poller with its
//! channels' routes and the dispatcher with its channels — and `run`, `poll` and `demo` all build it here. Also:
//! opening the database for writing or for reading, the daemon's [`Liveness`] (what the systemd watchdog asks), and
//! signals and shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Config;
use crate::notify::{
    self,
    outbox::{Dispatcher, Route},
};
use crate::poller::Poller;
use crate::store::Store;

/// Everything built from one configuration; replaced whole when the daemon reloads.
pub struct App {
    pub config: Arc<Config>,
    pub poller: Arc<Poller>,
    pub dispatcher: Arc<Dispatcher>,
}

impl App {
    /// Builds the channels, the dispatcher and the poller (which registers every series in `store` and primes each
    /// account's budget from its stored calls).
    pub async fn build(config: Config, store: &Store, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        Self::build_with(config, store, clock, Arc::new(Liveness::default())).await
    }

    /// [`App::build`], reporting every poll to `liveness` (the daemon's watchdog).
    pub async fn build_with(
        config: Config,
        store: &Store,
        clock: Arc<dyn Clock>,
        liveness: Arc<Liveness>,
    ) -> anyhow::Result<App> {
        let routes: Vec<Arc<dyn Route>> =
            config.channels.iter().map(|c| Arc::new(c.clone()) as Arc<dyn Route>).collect();
        let channels = notify::build_channels(&config.channels, config.schedule.timezone)?;
        let dispatcher =
            Arc::new(Dispatcher::new(channels, config.alerting.max_delivery_age).with_routes(routes.clone()));
        let poller = Poller::new(&config, store.clone(), clock).await?.with_routes(routes).with_liveness(liveness);
        Ok(App { config: Arc::new(config), poller: Arc::new(poller), dispatcher })
    }
}

/// Opens (and creates, and migrates) the configured database for a command that writes: `run`, `poll`, `ack`,
/// `silence add|expire`.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if let Some(dir) = config.storage.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(Store::open(&config.storage.path).await?)
}

/// Opens the configured database for a command that only reads; a missing database is an error naming the path,
/// never created.
pub async fn open_store_for_reading(config: &Config) -> anyhow::Result<Store> {
    let path = &config.storage.path;
    if !path.exists() {
        anyhow::bail!(
            "no database at {} (check [storage] path; scanwatch creates it on the first poll)",
            path.display()
        );
    }
    Ok(Store::open(path).await?)
}

/// What the daemon's watchdog asks: is work in flight that has been stuck for too long? Polls (call + store) and
/// dispatch passes register while they run; each is bounded by its own timeouts, so one that outlives
/// [`Liveness::stalled`]'s bound means the process is wedged (a lost wakeup, a lock never released, a blocked
/// runtime) and systemd should restart it. Waiting for the next tick or for a budget slot is not work in flight.
#[derive(Debug, Default)]
pub struct Liveness {
    next: AtomicU64,
    in_flight: Mutex<BTreeMap<u64, (Instant, &'static str)>>,
}

/// Registered work; dropping it (done, failed or cancelled) unregisters it.
#[must_use]
pub struct Busy<'a> {
    liveness: &'a Liveness,
    id: u64,
}

impl Liveness {
    /// Registers work that starts now.
    pub fn busy(&self, what: &'static str) -> Busy<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (Instant::now(), what));
        Busy { liveness: self, id }
    }

    /// The oldest work in flight, if it has run for longer than `bound`: (what, for how long).
    pub fn stalled(&self, bound: Duration) -> Option<(&'static str, Duration)> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|(since, what)| (*what, now.saturating_duration_since(*since)))
            .max_by_key(|(_, d)| *d)
            .filter(|(_, d)| *d > bound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, &'static str)>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.liveness.lock().remove(&self.id);
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled by SIGINT or SIGTERM.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_in_flight_past_the_bound_is_stalled_and_finished_work_is_not() {
        let l = Liveness::default();
        assert_eq!(l.stalled(Duration::ZERO), None, "nothing in flight");
        let poll = l.busy("poll");
        tokio::time::advance(Duration::from_secs(30)).await;
        let dispatch = l.busy("dispatch");
        assert_eq!(l.stalled(Duration::from_secs(60)), None);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(l.stalled(Duration::from_secs(60)), Some(("poll", Duration::from_secs(61))));
        drop(poll);
        assert_eq!(l.stalled(Duration::from_secs(60)), None, "the dispatch pass is 31 s old");
        drop(dispatch);
        assert_eq!(l.stalled(Duration::ZERO), None);
    }
}
