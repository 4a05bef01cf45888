//! scanwatch keeps watch over Huawei Cloud HSS container-security scanning.
//!
//! Module map:
//! - [`model`]: task types, series identity, poll outcomes and error classes shared by everything else.
//! - [`hss`]: AK/SK signing, regions, the task-statistics client, IAM tokens and the per-account rate budget.

pub mod config;
pub mod hss;
pub mod model;
pub mod secret;
pub mod store;
