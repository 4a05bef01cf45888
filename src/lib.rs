//! scanwatch keeps watch over Huawei Cloud HSS container-security scanning.
//!
//! Module map:
//! - [`model`]: task types, series identity, poll outcomes and error classes shared by everything else.
//! - [`hss`]: AK/SK signing, regions, the task-statistics client.
//! - [`rules`]: the alert rules, pure functions of a series' snapshot history and the clock.
//! - [`alerting`]: the alert state machine, alert fingerprints and replay of stored history.

pub mod alerting;
pub mod hss;
pub mod model;
pub mod rules;
pub mod secret;
