//! What the system-level benchmark examples share: process resource readings and the machine description.

#![allow(dead_code)]

pub mod budget;

use std::time::Duration;

/// User + system CPU time of this process so far (getrusage).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Context switches of this process so far (voluntary + involuntary, getrusage): each is a thread handing work to
/// another and sleeping, a count that machine load does not change much, unlike wall time.
pub fn context_switches() -> u64 {
    // SAFETY: as in `cpu_time`.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Peak resident set of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("self", "VmHWM").unwrap_or(0) as f64 / 1024.0
}

/// Resident set of this process now, in MiB.
pub fn rss_mib() -> f64 {
    status_kib("self", "VmRSS").unwrap_or(0) as f64 / 1024.0
}

/// Percentile (0..=100) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
