//! Placeholder until the client branch lands (it replaces this file).
use std::time::Duration;
pub fn min_interval(polls: usize, calls_per_minute: u32) -> Duration {
    Duration::from_secs((polls as u64 * 60).div_ceil(calls_per_minute.max(1) as u64))
}
