//! Everything about talking to Huawei Cloud HSS: signing, the region table, the client and its error classes.

pub mod budget;
pub mod regions;
pub mod signer;
