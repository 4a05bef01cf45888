//! What the daemon's systemd watchdog asks: is work in flight that has been stuck for far too long?

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What the daemon's watchdog asks: is work in flight that has been stuck for too long? Polls (call + store) and
/// dispatch passes register while they run; each is bounded by its own timeouts, so one that outlives
/// [`Liveness::stalled`]'s bound means the process is wedged (a lost wakeup, a lock never released, a blocked
/// runtime) and systemd should restart it. Waiting for the next tick or for a budget slot is not work in flight.
#[derive(Debug, Default)]
pub struct Liveness {
    next: AtomicU64,
    in_flight: Mutex<BTreeMap<u64, (Instant, &'static str)>>,
}

/// Registered work; dropping it (done, failed or cancelled) unregisters it.
#[must_use]
pub struct Busy<'a> {
    liveness: &'a Liveness,
    id: u64,
}

impl Liveness {
    /// Registers work that starts now.
    pub fn busy(&self, what: &'static str) -> Busy<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (Instant::now(), what));
        Busy { liveness: self, id }
    }

    /// The oldest work in flight, if it has run for longer than `bound`: (what, for how long).
    pub fn stalled(&self, bound: Duration) -> Option<(&'static str, Duration)> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|(since, what)| (*what, now.saturating_duration_since(*since)))
            .max_by_key(|(_, d)| *d)
            .filter(|(_, d)| *d > bound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, &'static str)>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.liveness.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_in_flight_past_the_bound_is_stalled_and_finished_work_is_not() {
        let l = Liveness::default();
        assert_eq!(l.stalled(Duration::ZERO), None, "nothing in flight");
        let poll = l.busy("poll");
        tokio::time::advance(Duration::from_secs(30)).await;
        let dispatch = l.busy("dispatch");
        assert_eq!(l.stalled(Duration::from_secs(60)), None);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(l.stalled(Duration::from_secs(60)), Some(("poll", Duration::from_secs(61))));
        drop(poll);
        assert_eq!(l.stalled(Duration::from_secs(60)), None, "the dispatch pass is 31 s old");
        drop(dispatch);
        assert_eq!(l.stalled(Duration::ZERO), None);
    }
}
