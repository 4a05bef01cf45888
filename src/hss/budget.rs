//! How often an account may call HSS: the per-account sliding-window rate budget, the backoff after credential
//! errors, and the arithmetic that spreads an account's polls over the interval.
//!
//! HSS allows 5 calls per minute per user per API and locks an AK for 5 minutes after more than 5 consecutive failed
//! signatures, so a scheduler that bursts or hot-loops on 401 would turn a config mistake into an outage.
//! Everything here runs on `tokio::time::Instant`, so tests drive it with a paused clock.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The window the HSS gateway counts calls in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The longest an account is held back after repeated credential errors.
pub const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);

/// At most `calls_per_minute` calls in ANY sliding 60 s window (that is how the HSS gateway counts: 5/min per user
/// per API). A call made at `t` occupies the half-open window `[t, t + 60 s)`; once it completes (see
/// [`RateBudget::finished`]) `t` is its completion time. The gateway counts a call when the request arrives, which is
/// somewhere between admission and completion: counting from admission lets the call `limit` places later go out
/// exactly 60 s after an earlier call's admission and arrive less than 60 s after its arrival whenever latency varies
/// (BENCHMARKS.md, "Budget compliance"). Counting from completion keeps every arrival at least 60 s after the
/// arrival `limit` calls before it, whatever the latency; the price is that at the fastest interval an account's
/// calls come once per 60 s plus the latency.
#[derive(Debug)]
pub struct RateBudget {
    limit: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Instants of the calls still inside the window, oldest first.
    calls: VecDeque<Instant>,
    /// No call before this instant (a 429 asked us to wait).
    paused_until: Option<Instant>,
}

impl RateBudget {
    /// A budget of `calls_per_minute` calls; 0 is treated as 1 (`validate` rejects 0, and a budget that never
    /// admits a call would silently stop all polling of the account).
    pub fn new(calls_per_minute: u32) -> Self {
        RateBudget { limit: calls_per_minute.max(1) as usize, state: Mutex::new(BudgetState::default()) }
    }

    /// The number of calls allowed per window.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Records a call now if the budget allows it, otherwise says how long until it might.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_admit().map(|_| ())
    }

    /// Like [`RateBudget::try_acquire`], returning the instant the call was recorded at, for
    /// [`RateBudget::finished`].
    pub fn try_admit(&self) -> Result<Instant, Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        state.forget_before(now);
        if let Some(until) = state.paused_until {
            if until > now {
                return Err(until - now);
            }
            state.paused_until = None;
        }
        if state.calls.len() < self.limit {
            state.calls.push_back(now);
            return Ok(now);
        }
        // The window is full: the slot frees when the call that leaves `limit` calls behind it expires.
        let freeing = state.calls[state.calls.len() - self.limit];
        Err((freeing + WINDOW).saturating_duration_since(now).max(Duration::from_millis(1)))
    }

    /// Gives back a slot [`RateBudget::try_admit`] took for a call that will not be made (another budget the call
    /// must also pass said no).
    pub fn cancel(&self, admitted: Instant) {
        let mut state = self.lock();
        if let Some(i) = state.calls.iter().rposition(|t| *t == admitted) {
            state.calls.remove(i);
        }
    }

    /// The call admitted at `admitted` has completed: from now on it occupies the window from now. A call whose
    /// admission already left the window (it took longer than the window) is recorded anew, now.
    pub fn finished(&self, admitted: Instant) {
        let now = Instant::now();
        let mut state = self.lock();
        // Every instant held is an admission or a completion up to now, so `now` is the latest and goes last: the
        // window stays in order without sorting. The call's admission is near the back (only calls admitted or
        // completed since are behind it), which is where the search starts and the removal shifts from. Sorting
        // the whole window on every call cost a host budget of 1,000,000 a minute seconds per 10,000 calls.
        if let Some(i) = state.calls.iter().rposition(|t| *t == admitted) {
            state.calls.remove(i);
        }
        let last = state.calls.back().map_or(now, |t| now.max(*t));
        state.calls.push_back(last);
        state.forget_before(now);
    }

    /// Records calls an earlier process made `age` ago (read back from the snapshot history at start-up), so a
    /// restart does not buy a fresh burst.
    pub fn prime(&self, ages: &[Duration]) {
        let now = Instant::now();
        let mut state = self.lock();
        for age in ages {
            if *age < WINDOW
                && let Some(at) = now.checked_sub(*age)
            {
                state.calls.push_back(at);
            }
        }
        state.calls.make_contiguous().sort_unstable();
        state.forget_before(now);
    }

    /// How much longer a 429's pause lasts, if one is on.
    pub fn paused(&self) -> Option<Duration> {
        let now = Instant::now();
        self.lock().paused_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// After a 429: no call for `d` (the `Retry-After`, or 30 s when the gateway gave none). A shorter pause never
    /// cuts a longer one short.
    pub fn pause_for(&self, d: Duration) {
        let now = Instant::now();
        let until = now.checked_add(d).unwrap_or_else(|| now + MAX_AUTH_BACKOFF);
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |current| current.max(until)));
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        // The state stays consistent even if a holder panicked: every update is a single push or assignment.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BudgetState {
    fn forget_before(&mut self, now: Instant) {
        while self.calls.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
            self.calls.pop_front();
        }
    }
}

/// How long an account is held back after its `failures`-th consecutive credential error (HSS locks a key after 5
/// failed signatures): `base * 2^(failures-1)`, capped at [`MAX_AUTH_BACKOFF`]; zero when there was no failure.
/// The failures are counted from the stored history, so the backoff survives restarts and one-shot `poll` runs.
pub fn auth_backoff(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exponent = (failures - 1).min(31);
    base.checked_mul(1u32 << exponent).unwrap_or(MAX_AUTH_BACKOFF).min(MAX_AUTH_BACKOFF)
}

/// Spread n polls of an account over `interval`: offsets i * interval / n, so an account's targets never burst.
pub fn spread(interval: Duration, n: usize) -> Vec<Duration> {
    let total = interval.as_nanos();
    (0..n)
        .map(|i| {
            let offset = total * i as u128 / n as u128;
            Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
        })
        .collect()
}

/// The smallest interval at which `polls` evenly spread calls stay within `calls_per_minute`, rounded up to whole
/// seconds; `validate` compares it with the configured interval and prints it as the fix. A limit of 0 counts as 1.
pub fn min_interval(polls: usize, calls_per_minute: u32) -> Duration {
    let per_minute = u64::from(calls_per_minute.max(1));
    let polls = u64::try_from(polls).unwrap_or(u64::MAX);
    Duration::from_secs(polls.saturating_mul(WINDOW.as_secs()).div_ceil(per_minute))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    /// Calls admitted by `budget` while stepping the paused clock by `step` for `total`.
    async fn admitted_instants(budget: &RateBudget, step: Duration, total: Duration) -> Vec<Instant> {
        let start = Instant::now();
        let mut admitted = Vec::new();
        while Instant::now() - start < total {
            if budget.try_acquire().is_ok() {
                admitted.push(Instant::now());
            }
            advance(step).await;
        }
        admitted
    }

    fn max_in_any_window(instants: &[Instant]) -> usize {
        instants.iter().map(|t| instants.iter().filter(|u| **u >= *t && **u - *t < WINDOW).count()).max().unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_never_lets_n_plus_one_calls_into_any_60_seconds() {
        let budget = RateBudget::new(5);
        let admitted = admitted_instants(&budget, Duration::from_millis(500), Duration::from_secs(300)).await;
        assert_eq!(max_in_any_window(&admitted), 5);
        // It is not stingy either: five calls per full minute over five minutes.
        assert_eq!(admitted.len(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_says_how_long_until_the_oldest_call_leaves_the_window() {
        let budget = RateBudget::new(2);
        assert_eq!(budget.try_acquire(), Ok(()));
        advance(Duration::from_secs(10)).await;
        assert_eq!(budget.try_acquire(), Ok(()));
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(50)));
        advance(Duration::from_secs(49)).await;
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(1)));
        advance(Duration::from_secs(1)).await;
        assert_eq!(budget.try_acquire(), Ok(()));
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(10)));
    }

    /// What the poller does (`Poller::admit`): sleep for as long as `try_admit` says, then try again.
    async fn wait_for_slot(budget: &RateBudget) {
        while let Err(wait) = budget.try_admit() {
            tokio::time::sleep(wait).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_slot_never_bursts() {
        let budget = RateBudget::new(5);
        let start = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..11 {
            wait_for_slot(&budget).await;
            seen.push(Instant::now() - start);
        }
        assert_eq!(seen[4], Duration::ZERO);
        assert_eq!(seen[5], WINDOW);
        assert_eq!(seen[10], 2 * WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_occupies_the_window_from_when_it_completed() {
        let budget = RateBudget::new(2);
        let first = budget.try_admit().unwrap();
        // The first call takes 3 s (the gateway saw it somewhere in those 3 s).
        advance(Duration::from_secs(3)).await;
        budget.finished(first);
        advance(Duration::from_secs(7)).await;
        let second = budget.try_admit().unwrap();
        budget.finished(second);
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(53)), "60 s after the first call completed");
        advance(Duration::from_secs(53)).await;
        assert_eq!(budget.try_acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_longer_than_the_window_still_counts_from_its_completion() {
        let budget = RateBudget::new(1);
        let slow = budget.try_admit().unwrap();
        advance(Duration::from_secs(90)).await;
        budget.finished(slow);
        assert_eq!(budget.try_acquire(), Err(WINDOW));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_of_an_earlier_process_count_against_the_budget() {
        let budget = RateBudget::new(5);
        let secs = |s| Duration::from_secs(s);
        budget.prime(&[secs(50), secs(10), secs(40), secs(20), secs(90)]);
        // Four primed calls are inside the window (the one 90 s ago is not): one slot left.
        assert_eq!(budget.try_acquire(), Ok(()));
        assert_eq!(budget.try_acquire(), Err(secs(10)));
        advance(secs(10)).await;
        assert_eq!(budget.try_acquire(), Ok(()));
        assert_eq!(budget.try_acquire(), Err(secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_after_a_429_blocks_calls_even_with_slots_free() {
        let budget = RateBudget::new(5);
        budget.pause_for(Duration::from_secs(30));
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(30)));
        // A shorter Retry-After does not cut the longer pause short.
        budget.pause_for(Duration::from_secs(5));
        advance(Duration::from_secs(29)).await;
        assert_eq!(budget.try_acquire(), Err(Duration::from_secs(1)));
        advance(Duration::from_secs(1)).await;
        assert_eq!(budget.try_acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_slot_sleeps_through_a_pause() {
        let budget = RateBudget::new(5);
        budget.pause_for(Duration::from_secs(30));
        let start = Instant::now();
        wait_for_slot(&budget).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
    }

    #[test]
    fn a_zero_limit_still_admits_one_call_a_minute() {
        assert_eq!(RateBudget::new(0).limit(), 1);
        assert_eq!(min_interval(3, 0), Duration::from_secs(180));
    }

    #[test]
    fn auth_backoff_doubles_and_caps_at_an_hour() {
        let delays: Vec<u64> = (0..=10).map(|n| auth_backoff(Duration::from_secs(60), n).as_secs()).collect();
        assert_eq!(delays, [0, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]);
        assert_eq!(auth_backoff(Duration::from_secs(u64::MAX / 2), 100), MAX_AUTH_BACKOFF);
    }

    #[test]
    fn spread_offsets_polls_evenly_across_the_interval() {
        let secs = Duration::from_secs;
        assert_eq!(spread(secs(300), 4), vec![secs(0), secs(75), secs(150), secs(225)]);
        assert_eq!(
            spread(secs(10), 3),
            vec![Duration::ZERO, Duration::from_nanos(3_333_333_333), Duration::from_nanos(6_666_666_666)]
        );
        assert_eq!(spread(secs(60), 1), vec![Duration::ZERO]);
        assert!(spread(secs(60), 0).is_empty());
    }

    #[test]
    fn min_interval_is_the_smallest_whole_second_interval_that_fits_the_budget() {
        let secs = Duration::from_secs;
        assert_eq!(min_interval(8, 5), secs(96));
        assert_eq!(min_interval(5, 5), secs(60));
        assert_eq!(min_interval(1, 5), secs(12));
        assert_eq!(min_interval(7, 3), secs(140));
        assert_eq!(min_interval(1, 7), secs(9)); // 8.57 s rounded up
        assert_eq!(min_interval(0, 5), Duration::ZERO);
        assert_eq!(min_interval(1000, 600), secs(100));
    }

    /// As the poller does it: wait for a slot, make the call (a slow one, then fast ones), mark it finished — and
    /// count calls when they complete, as the gateway counts them when they arrive, not when they were admitted.
    #[tokio::test(start_paused = true)]
    async fn polls_spread_over_min_interval_fit_the_budget_counted_when_they_complete() {
        let budget = RateBudget::new(5);
        let interval = min_interval(8, 5);
        let start = Instant::now();
        let mut completed = Vec::new();
        for cycle in 0..3u32 {
            for (i, offset) in spread(interval, 8).into_iter().enumerate() {
                tokio::time::sleep_until(start + interval * cycle + offset).await;
                let admitted = loop {
                    match budget.try_admit() {
                        Ok(at) => break at,
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                };
                // A slow call now and then: counted from admission, the fast one admitted 60 s later would land
                // within 60 s of it at the gateway.
                let latency = if i % 5 == 0 { Duration::from_secs(5) } else { Duration::from_millis(100) };
                tokio::time::sleep(latency).await;
                budget.finished(admitted);
                completed.push(Instant::now());
            }
        }
        for (i, t) in completed.iter().enumerate() {
            let in_window = completed[i..].iter().take_while(|u| u.duration_since(*t) < WINDOW).count();
            assert!(in_window <= 5, "{in_window} calls completed within 60 s from call {i}");
        }
        assert_eq!(completed.len(), 24);
        let took = completed[23].duration_since(start);
        assert!(took < interval * 3 + Duration::from_secs(20), "the budget kept the pace: {took:?}");
    }
}
