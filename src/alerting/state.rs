//! The per-(series, rule) alert state machine: `inactive → pending → firing → resolved`, as a pure function.
//!
//! [`step`] takes the persisted [`Alert`], the rule's [`Outcome`] for this evaluation, the lifecycle settings and
//! `now`, and returns the next `Alert` plus the [`Transition`] to record, if any. Every piece of state lives in
//! `Alert` (no hidden state), so reloading it after a restart, or replaying stored snapshots one by one, gives
//! exactly the transitions of the live run. Notifications are data ([`Event`]), never side effects.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::{Outcome, delta};

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Never breached, or a pending breach cleared.
    #[default]
    Inactive,
    /// Breaching, waiting for `pending_for` before anyone is told.
    Pending,
    /// Breaching and notified.
    Firing,
    /// Was firing, now ok; behaves like `Inactive` for the next breach, but keeps what resolved for display.
    Resolved,
}

impl AlertState {
    pub const ALL: [AlertState; 4] =
        [AlertState::Inactive, AlertState::Pending, AlertState::Firing, AlertState::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        AlertState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is persisted per (series, rule): everything [`step`] needs, so a restart or a replay changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Alert {
    pub state: AlertState,
    /// When the current state began: pending since, firing since, resolved at, inactive since (`None` if never).
    pub since: Option<DateTime<Utc>>,
    /// When the current breach began (first breaching evaluation); `pending_for` counts from here.
    pub breach_started: Option<DateTime<Utc>>,
    /// While firing: when the rule first answered ok again; `resolve_after` counts from here, a breach clears it.
    pub ok_since: Option<DateTime<Utc>>,
    /// When [`step`] last emitted an event for this alert; `repeat_interval` counts from here.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Set by [`ack`] while firing: no reminders until the alert resolves, which clears it.
    pub acked: bool,
    /// When the rule began answering unknown while a clock was running (`breach_started` while pending, `ok_since`
    /// while firing). A poll outage says nothing about the breach, so it must count toward neither `pending_for`
    /// nor `resolve_after`: when the rule is known again, that clock moves forward by the unknown stretch.
    #[serde(default)]
    pub unknown_since: Option<DateTime<Utc>>,
    /// The latest breach's summary; kept on resolve so the resolved message says what cleared.
    pub summary: String,
    /// The latest breach's value ("31h"); kept on resolve.
    pub value: String,
}

/// The `[alerting]` settings that shape the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// How long a breach must last before it fires; 0 fires on the first breach.
    pub pending_for: Duration,
    /// How long the rule must be ok before a firing alert resolves; 0 resolves on the first ok.
    pub resolve_after: Duration,
    /// How often to remind while firing and not acked; 0 disables reminders.
    pub repeat_interval: Duration,
    /// Whether resolving sends a notification.
    pub send_resolved: bool,
}

impl Default for Lifecycle {
    /// The defaults from DESIGN.md.
    fn default() -> Self {
        Lifecycle {
            pending_for: Duration::ZERO,
            resolve_after: Duration::ZERO,
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
        }
    }
}

/// A notification to write to the outbox; the names are the `event` values of the notifications table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The alert started firing.
    Firing,
    /// A reminder that it still fires, with the current value.
    Repeat,
    /// It stopped firing.
    Resolved,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Firing, Event::Repeat, Event::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Repeat => "repeat",
            Event::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded change: a state change, or a reminder (`Firing → Firing` with [`Event::Repeat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: AlertState,
    pub to: AlertState,
    pub at: DateTime<Utc>,
    /// The notification to enqueue, if any (a pending alert that clears, or a resolve with `send_resolved = false`,
    /// records a transition without one).
    pub event: Option<Event>,
    pub summary: String,
    pub value: String,
}

/// Advances one alert by one evaluation. Pure: the next state and the transition to record, if any.
///
/// - `Unknown` holds the state (no transition): data rules answer it while polls fail. If a `pending_for` or
///   `resolve_after` clock is running, `unknown_since` marks when the stretch began; the next known outcome first
///   moves that clock forward by the stretch, so time unknown counts toward neither.
/// - `Inactive`/`Resolved` + breach → `Pending` (no event), or straight to `Firing` (event) when `pending_for` is 0.
/// - `Pending` + breach lasting ≥ `pending_for` since `breach_started` → `Firing` (event); `Pending` + ok →
///   `Inactive` (no event).
/// - `Firing` + breach → stays, summary/value updated, `ok_since` cleared; [`Event::Repeat`] when not acked,
///   `repeat_interval` > 0 and at least that long since `last_notified_at`.
/// - `Firing` + ok → `Resolved` once ok has lasted ≥ `resolve_after` (counted from `ok_since`), with
///   [`Event::Resolved`] if `send_resolved`; `acked` is cleared.
///
/// `last_notified_at` is set to `now` whenever an event is emitted; the caller records that event in the outbox
/// (as suppressed if silenced) in the same transaction that stores the returned `Alert`.
pub fn step(alert: &Alert, outcome: &Outcome, cfg: &Lifecycle, now: DateTime<Utc>) -> (Alert, Option<Transition>) {
    let mut next = alert.clone();
    if let Outcome::Unknown { .. } = outcome {
        let clock_running = match alert.state {
            AlertState::Pending => alert.breach_started.is_some(),
            AlertState::Firing => alert.ok_since.is_some(),
            AlertState::Inactive | AlertState::Resolved => false,
        };
        if clock_running && next.unknown_since.is_none() {
            next.unknown_since = Some(now);
        }
        return (next, None);
    }
    if let Some(began) = next.unknown_since.take() {
        let stretch = (now - began).max(TimeDelta::zero());
        let skip = |t: DateTime<Utc>| t.checked_add_signed(stretch).unwrap_or(now).min(now);
        match next.state {
            AlertState::Pending => next.breach_started = next.breach_started.map(skip),
            AlertState::Firing => next.ok_since = next.ok_since.map(skip),
            AlertState::Inactive | AlertState::Resolved => {}
        }
    }
    let event = match (alert.state, outcome) {
        (_, Outcome::Unknown { .. }) => return (next, None),

        (AlertState::Inactive | AlertState::Resolved, Outcome::Ok) => return (next, None),
        (AlertState::Inactive | AlertState::Resolved, Outcome::Breach { summary, value }) => {
            next.breach_started = Some(now);
            next.ok_since = None;
            next.acked = false;
            set_text(&mut next, summary, value);
            if elapsed(Some(now), now, cfg.pending_for) {
                enter(&mut next, AlertState::Firing, now);
                Some(Event::Firing)
            } else {
                enter(&mut next, AlertState::Pending, now);
                None
            }
        }

        (AlertState::Pending, Outcome::Ok) => {
            enter(&mut next, AlertState::Inactive, now);
            next.breach_started = None;
            None
        }
        (AlertState::Pending, Outcome::Breach { summary, value }) => {
            set_text(&mut next, summary, value);
            // A pending alert always has breach_started; if a hand-edited row lacks it, start counting now.
            let started = *next.breach_started.get_or_insert(now);
            if !elapsed(Some(started), now, cfg.pending_for) {
                return (next, None);
            }
            enter(&mut next, AlertState::Firing, now);
            Some(Event::Firing)
        }

        (AlertState::Firing, Outcome::Breach { summary, value }) => {
            set_text(&mut next, summary, value);
            next.ok_since = None;
            let due = cfg.repeat_interval > Duration::ZERO
                && (next.last_notified_at.is_none() || elapsed(next.last_notified_at, now, cfg.repeat_interval));
            if next.acked || !due {
                return (next, None);
            }
            Some(Event::Repeat)
        }
        (AlertState::Firing, Outcome::Ok) => {
            let ok_since = *next.ok_since.get_or_insert(now);
            if !elapsed(Some(ok_since), now, cfg.resolve_after) {
                return (next, None);
            }
            enter(&mut next, AlertState::Resolved, now);
            next.ok_since = None;
            next.breach_started = None;
            next.acked = false;
            cfg.send_resolved.then_some(Event::Resolved)
        }
    };
    if event.is_some() {
        next.last_notified_at = Some(now);
    }
    let transition = Transition {
        from: alert.state,
        to: next.state,
        at: now,
        event,
        summary: next.summary.clone(),
        value: next.value.clone(),
    };
    (next, Some(transition))
}

/// Acknowledges a firing alert: no more reminders until it resolves. Any other state is returned unchanged
/// (there is nothing to acknowledge, and an ack must not outlive the alert it was meant for).
pub fn ack(alert: &Alert) -> Alert {
    let mut next = alert.clone();
    if next.state == AlertState::Firing {
        next.acked = true;
    }
    next
}

fn enter(alert: &mut Alert, state: AlertState, now: DateTime<Utc>) {
    alert.state = state;
    alert.since = Some(now);
}

fn set_text(alert: &mut Alert, summary: &str, value: &str) {
    summary.clone_into(&mut alert.summary);
    value.clone_into(&mut alert.value);
}

/// Whether at least `d` has passed since `since` (a zero `d` has always passed).
fn elapsed(since: Option<DateTime<Utc>>, now: DateTime<Utc>, d: Duration) -> bool {
    d.is_zero() || since.is_some_and(|s| now - s >= delta(d))
}
