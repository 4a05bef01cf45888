//! scanwatch keeps watch over Huawei Cloud HSS container-security scanning.
//!
//! Module map:
//! - [`model`]: task types, series identity, poll outcomes and error classes shared by everything else.
//! - [`hss`]: AK/SK signing, regions, the task-statistics client.
//! - [`simulator`]: a real HTTP server that plays the HSS API (signatures, tokens, limits, faults) from a scenario.

pub mod hss;
pub mod model;
pub mod secret;
pub mod simulator;
