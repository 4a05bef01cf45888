//! scanwatch keeps watch over Huawei Cloud HSS container-security scanning.
//!
//! Module map:
//! - [`model`]: task types, series identity, poll outcomes and error classes shared by everything else.
//! - [`config`]: the TOML file + environment, validated, with secrets resolved and never shown.
//! - [`hss`]: AK/SK signing, regions, the task-statistics client, IAM tokens and the per-account rate budget.
//! - [`simulator`]: a real HTTP server speaking the HSS API, for tests, the demo and rehearsals.
//! - [`store`]: SQLite (the only module with SQL): snapshots, history, retention.
//! - [`poller`]: one poll cycle over every series, within each account's budget, stoppable between polls; and
//!   recording one poll ([`poller::record`]): snapshot, rule evaluation and outbox rows in one transaction.
//! - [`rules`]: the alert rules, pure functions of a series' snapshot history and the clock.
//! - [`alerting`]: the alert state machine, silences, alert fingerprints and replay of stored history; pure, no SQL.
//! - [`notify`]: notifications, the channel trait, message rendering, `[[channels]]` config, one file per channel.
//! - [`schedule`]: interval and cron (croner, DST-correct) schedules and the ticker that drives them.
//! - [`daemon`]: `scanwatch run`: cycles as a task beside the watchdog, the dispatcher, SIGHUP and SIGTERM.
//! - [`server`]: the HTTP API: `/healthz`, `/metrics`, and read-only JSON with the CLI's fields.
//! - [`demo`]: the whole pipeline against a built-in simulator in about a minute.
//! - [`cli`], [`output`], [`app`], [`clock`]: the command line, its formats, the wiring every command builds from a
//!   `Config` (poller, dispatcher, routes; opening the database), the injected clock and saturating time arithmetic.
//! - [`liveness`]: work in flight, which the daemon's systemd watchdog checks.
//! - [`footprint`]: the daemon's malloc arenas and worker count, kept small (BENCHMARKS.md, idle RSS).
//! - [`tls`]: ring as rustls's crypto provider, and the builder every HTTP client starts from.

pub mod alerting;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod footprint;
pub mod hss;
pub mod liveness;
pub mod model;
pub mod notify;
pub mod output;
pub mod poller;
pub mod rules;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod store;
pub mod tls;
