//! The injected clock. Everything that asks "what time is it" for rules, signing or storage asks a [`Clock`], so
//! tests (and the simulator's time travel) can move time without sleeping.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, shifted by a fixed offset (zero in production; `--clock-offset` rehearses the future against
/// the simulator, whose clock can be advanced the same way).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    offset: TimeDelta,
}

impl SystemClock {
    pub fn shifted(offset: Duration) -> Self {
        SystemClock { offset: TimeDelta::from_std(offset).unwrap_or(TimeDelta::MAX) }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// A clock that only moves when told to (unit tests).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock(std::sync::Mutex::new(at)))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
