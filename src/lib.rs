//! scanwatch keeps watch over Huawei Cloud HSS container-security scanning.
//!
//! Module map:
//! - [`model`]: task types, series identity, poll outcomes and error classes shared by everything else.
//! - [`hss`]: AK/SK signing, regions, the task-statistics client, IAM tokens and the per-account rate budget.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod hss;
pub mod model;
pub mod output;
pub mod poller;
pub mod secret;
pub mod simulator;
pub mod store;
