//! Everything about talking to Huawei Cloud HSS: signing, the region table, the client and its error classes.
//!
//! - [`signer`]: `SDK-HMAC-SHA256` request signing, byte for byte as Huawei's SDKs sign.
//! - [`regions`]: the SDK's 32 HSS regions and their HSS / IAM endpoints.
//! - [`client`]: the task-statistics call with timeouts, a body cap, strict parsing and error classification.
//! - [`iam`]: password login to IAM and the per-account token cache.
//! - [`budget`]: the per-account sliding-window rate budget, auth backoff and poll spreading.

pub mod budget;
pub mod client;
pub mod iam;
pub mod regions;
pub mod signer;
#[cfg(test)]
pub(crate) mod test_support;
