//! Everything about talking to Huawei Cloud HSS: signing, the region table, the client and its error classes.
//!
//! - [`signer`]: `SDK-HMAC-SHA256` request signing, byte for byte as Huawei's SDKs sign.
//! - [`regions`]: the SDK's 32 HSS regions and their HSS / IAM endpoints.
//! - [`client`]: [`client::HssClient`], accounts and credentials, and the one path every API call takes.
//! - [`transport`]: signing (GET and POST), sending with timeouts and a body cap, request ids, `Retry-After`,
//!   scrubbing secrets out of errors.
//! - [`errors`]: what a non-2xx answer means: its class and HSS's error code.
//! - [`task_statistics`]: ShowTaskStatistics, the numbers every poll stores.
//! - [`tasks`]: ListTasks, the scan tasks behind the numbers (which runs, which failed clusters or files).
//! - [`task_resources`]: ListTaskResources, a task's clusters or files and why they failed.
//! - [`iam`]: password login to IAM and the per-account token cache.
//! - [`budget`]: the per-account sliding-window rate budget, auth backoff and poll spreading.

/// One page of a batch-query answer (ListTasks, ListTaskResources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// How many match in all (more than `items` holds when there are more pages).
    pub total_num: u64,
    pub items: Vec<T>,
    pub http_status: u16,
    /// `X-Request-Id`, for Huawei support.
    pub request_id: Option<String>,
}

pub mod budget;
pub mod client;
pub mod errors;
pub mod iam;
mod parse;
pub mod regions;
pub mod signer;
pub mod task_resources;
pub mod task_statistics;
pub mod tasks;
#[cfg(test)]
pub(crate) mod test_support;
pub mod transport;
