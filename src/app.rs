//! Process wiring, in one place for every command: an [`App`] is what one [`Config`] builds — the poller with its
//! channels' routes and the dispatcher with its channels — and `run`, `poll` and `demo` all build it here. Also:
//! opening the database for writing or for reading, and signals and shutdown.

use std::sync::Arc;

use anyhow::Context;

use crate::clock::Clock;
use crate::config::Config;
use crate::liveness::Liveness;
use crate::notify::{
    self,
    outbox::{Dispatcher, Route},
};
use crate::poller::Poller;
use crate::store::Store;

/// Everything built from one configuration; replaced whole when the daemon reloads.
pub struct App {
    pub config: Arc<Config>,
    pub poller: Poller,
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
        let channels = notify::build_channels(&config.channels, config.schedule.timezone, external_url(&config))?;
        let labels = config.targets.iter().map(|t| (t.name.clone(), t.labels.clone())).collect();
        let dispatcher = Arc::new(
            Dispatcher::new(channels, config.alerting.max_delivery_age)
                .with_routes(routes.clone())
                .with_target_labels(labels),
        );
        let poller = Poller::new(&config, store.clone(), clock).await?.with_routes(routes).with_liveness(liveness);
        Ok(App { config: Arc::new(config), poller, dispatcher })
    }
}

/// `[server] external_url`, the base of the links channels send.
pub fn external_url(config: &Config) -> Option<&url::Url> {
    config.server.as_ref().and_then(|s| s.external_url.as_ref())
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
    Ok(Store::open_existing(&config.storage.path).await?)
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
