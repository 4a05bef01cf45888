//! Simulated time for tests that run scanwatch's real loops on a paused tokio clock: [`TokioClock`] maps tokio's
//! clock to UTC (scanwatch and the simulator both read it), and [`govern_clock`] keeps the paused clock from leaping.
//!
//! Tokio moves a paused clock to the next timer whenever no task is ready — also while a task waits for SQLite's
//! worker thread or a loopback socket, which tokio cannot see, so unchecked the clock would leap ahead during every
//! write (and fire sqlx's 30 s acquire timeout, or a call's timeout, at once). [`govern_clock`] bounds that:
//! simulated time runs at most `step` per millisecond of real time. Such a leap only ever makes something later,
//! never earlier: the same direction as a slow disk.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use scanwatch::clock::Clock;
use tokio_util::sync::CancellationToken;

/// The real time held between steps of simulated time.
const PAUSE: Duration = Duration::from_millis(1);

/// Until `stop`: lets the paused clock move by at most `step`, then holds it for a millisecond of real time (tokio
/// does not auto-advance a paused clock while a `spawn_blocking` task runs), and again.
pub fn govern_clock(step: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            tokio::time::sleep(step).await;
            let _ = tokio::task::spawn_blocking(|| std::thread::sleep(PAUSE)).await;
        }
    });
}

/// UTC that moves with tokio's (paused) clock.
#[derive(Debug)]
pub struct TokioClock {
    base: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_now() -> Arc<TokioClock> {
        Arc::new(TokioClock { base: Utc::now(), origin: tokio::time::Instant::now() })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + TimeDelta::from_std(self.origin.elapsed()).unwrap_or(TimeDelta::MAX)
    }
}
