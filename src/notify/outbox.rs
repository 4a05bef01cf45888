//! The outbox: turning alert changes into notices (routing, silences), sealing them into one notification per
//! channel and group per cycle (Alertmanager's `group_by`, listing each group's alerts that still fire), and
//! delivering due notifications at least once with backoff, channel rate limits and expiry.
//!
//! One pass of the dispatcher is [`Dispatcher::dispatch_due`]: the daemon calls it on a timer, `poll` once after
//! its cycle, tests step by step. Every attempt is recorded before the next one starts, so a kill at any moment
//! leaves each notification either delivered or still pending (at least once: a kill between the service's answer
//! and the commit repeats the delivery, with the same `webhook-id`).
//!
//! Several processes may dispatch from one database (the daemon and a timer's `poll`, two `poll`s). Each
//! notification is claimed in the store ([`Store::claim_notification`]) right before it is sent, and only the
//! claimant sends it; the claim is released with the attempt's record. A claim outlives the longest send
//! ([`CLAIM_LEASE`] against [`MAX_SEND`]), and a claim of a process that died is free at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;

use super::{AlertNotice, Channel, DeliveryError};
use crate::alerting::Event;
use crate::model::{SeriesKey, TaskType};
use crate::rules::{RuleName, Severity};
use crate::store::{AttemptResult, Claimant, DeliveryStatus, Store, StoreError};

/// Which alerts a channel wants. The channel configuration implements it; tests use closures.
pub trait Route: Send + Sync {
    fn channel(&self) -> &str;
    fn accepts(&self, notice: &AlertNotice) -> bool;
    /// The labels that split the channel's alerts into groups (Alertmanager's `group_by`); none: one group.
    fn group_by(&self) -> &[String] {
        &[]
    }
}

/// One pass's grouping: each channel's `group_by` from its route, and the silences in force at the pass.
struct PassGrouping<'a> {
    routes: &'a [Arc<dyn Route>],
    silences: Vec<crate::alerting::silence::Silence>,
    now: DateTime<Utc>,
}

impl crate::store::Grouper for PassGrouping<'_> {
    fn group_labels(&self, channel: &str, notice: &AlertNotice) -> BTreeMap<String, String> {
        let Some(route) = self.routes.iter().find(|r| r.channel() == channel) else { return BTreeMap::new() };
        if route.group_by().is_empty() {
            return BTreeMap::new();
        }
        let labels = notice_labels(notice);
        route.group_by().iter().filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone()))).collect()
    }

    fn silenced(&self, notice: &AlertNotice) -> bool {
        crate::alerting::silence::silenced_by(&self.silences, &notice_labels(notice), self.now).is_some()
    }
}

/// The first retry delay; it doubles per attempt up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Full jitter (AWS's "exponential backoff and jitter"): a uniform draw in `[0, min(max, base·2^attempt)]`, never
/// shorter than what the service asked for.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    let cap = BASE_BACKOFF.checked_mul(1u32 << attempt.min(20)).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF);
    let jitter = Duration::from_millis(rng.random_range(0..=u64::try_from(cap.as_millis()).unwrap_or(u64::MAX)));
    jitter.max(retry_after.unwrap_or_default())
}

/// Alerts in a message: new firing first, then reminders, then resolutions; critical before warning before info.
pub fn order_alerts(alerts: &mut [AlertNotice]) {
    let rank = |e: Event| match e {
        Event::Firing => 0,
        Event::Repeat => 1,
        Event::Resolved => 2,
    };
    alerts.sort_by(|a, b| {
        rank(a.event)
            .cmp(&rank(b.event))
            .then(b.severity.cmp(&a.severity))
            .then(a.series.cmp(&b.series))
            .then(a.rule.cmp(&b.rule))
    });
}

/// A new notification id in the Standard Webhooks style (`msg_` + 26 random alphanumerics).
pub fn new_uid() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String = (0..26).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("msg_{tail}")
}

/// Sliding-window limits of one destination: each `(calls, window)` pair must hold at once.
#[derive(Debug)]
pub struct ChannelLimiter {
    limits: Vec<(usize, Duration)>,
    sent: Mutex<VecDeque<Instant>>,
}

impl ChannelLimiter {
    pub fn new(limits: &[(usize, Duration)]) -> Self {
        ChannelLimiter { limits: limits.to_vec(), sent: Mutex::new(VecDeque::new()) }
    }

    /// The service's documented limits, as each kind declares them beside its sender (`KindConfig::LIMITS`).
    pub fn for_kind(kind: &str) -> Self {
        ChannelLimiter::new(super::channels::settings::limits_of(kind))
    }

    /// Takes a slot now, or says how long until one frees up.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let longest = self.limits.iter().map(|(_, w)| *w).max().unwrap_or_default();
        while sent.front().is_some_and(|t| now.duration_since(*t) >= longest) {
            sent.pop_front();
        }
        let mut wait = Duration::ZERO;
        for (calls, window) in &self.limits {
            let in_window: Vec<&Instant> = sent.iter().filter(|t| now.duration_since(**t) < *window).collect();
            if in_window.len() >= *calls {
                let oldest = in_window[in_window.len() - calls];
                wait = wait.max(*window - now.duration_since(*oldest));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        sent.push_back(now);
        Ok(())
    }
}

/// How long a claim on a notification lasts: longer than any one send ([`MAX_SEND`]) and the records around it, so
/// a live claimant never loses its claim mid-send and another process takes over only from one that hangs.
pub const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// The longest one send may take, whatever the channel's own timeout (10 s for chat services and 30 s for SMTP by
/// default, configurable) and the pass's deadline: well inside [`CLAIM_LEASE`].
pub const MAX_SEND: Duration = Duration::from_secs(120);

/// What one dispatch pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DispatchReport {
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
    pub expired: usize,
    /// Left for later: not due, rate-limited, or the deadline came first.
    pub deferred: usize,
    /// Due, but claimed by another process that is sending it (or no longer due when this pass came to it).
    pub claimed_elsewhere: usize,
    /// (channel, outcome) of every attempt and give-up: `delivered | retrying | failed | expired`, for metrics.
    pub outcomes: Vec<(String, &'static str)>,
}

/// Delivers due notifications through the configured channels.
pub struct Dispatcher {
    channels: HashMap<String, (Arc<dyn Channel>, ChannelLimiter)>,
    /// Whose claims this dispatcher makes: this process's, unless a test says otherwise.
    claimant: Claimant,
    max_delivery_age: Duration,
    /// When each channel last raised `channel_failing`, so a broken channel warns the others once an hour, not per
    /// failed notification.
    failing_raised: Mutex<HashMap<String, Instant>>,
    /// Which channels want which alerts: `channel_failing` is routed like any alert.
    routes: Vec<Arc<dyn Route>>,
}

/// How often one broken channel may raise `channel_failing` on the others.
pub const CHANNEL_FAILING_EVERY: Duration = Duration::from_secs(3600);

impl Dispatcher {
    pub fn new(channels: Vec<Arc<dyn Channel>>, max_delivery_age: Duration) -> Self {
        let channels = channels
            .into_iter()
            .map(|c| (c.name().to_string(), (c.clone(), ChannelLimiter::for_kind(c.kind()))))
            .collect();
        Dispatcher {
            channels,
            claimant: Claimant::this_process(),
            max_delivery_age,
            failing_raised: Mutex::new(HashMap::new()),
            routes: Vec::new(),
        }
    }

    /// Claims notifications as `claimant` instead of as this process (tests put two "processes" in one).
    pub fn with_claimant(mut self, claimant: Claimant) -> Self {
        self.claimant = claimant;
        self
    }

    /// Routes `channel_failing` alerts as the channels' routes say (without routes, to every other channel).
    pub fn with_routes(mut self, routes: Vec<Arc<dyn Route>>) -> Self {
        self.routes = routes;
        self
    }

    /// Seals unsent notices into notifications, then tries every due notification once, stopping at `deadline`.
    /// Each is claimed before anything is done with it; one another process holds is left to that process.
    pub async fn dispatch_due(
        &self,
        store: &Store,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<DispatchReport, StoreError> {
        let grouping = PassGrouping { routes: &self.routes, silences: store.silences(now, false).await?, now };
        store.seal_grouped(now, order_alerts, new_uid, Some(&grouping)).await?;
        let mut report = DispatchReport::default();
        let max_age = TimeDelta::from_std(self.max_delivery_age).unwrap_or(TimeDelta::MAX);
        let pass_started = Instant::now();
        for listed in store.due_notifications(now).await? {
            if Instant::now() >= deadline {
                report.deferred += 1;
                continue;
            }
            // The lease runs from now, not from the pass's start: earlier sends may have taken a while.
            let claimed_at = now + TimeDelta::from_std(pass_started.elapsed()).unwrap_or_default();
            let Some(row) = store.claim_notification(listed.id, &self.claimant, claimed_at, CLAIM_LEASE).await? else {
                report.claimed_elsewhere += 1;
                continue;
            };
            let n = &row.notification;
            if now - n.created_at > max_age {
                let why = format!(
                    "not delivered within max_delivery_age ({}); last error: {}",
                    crate::clock::format_duration(self.max_delivery_age),
                    row.last_error.as_deref().unwrap_or("none")
                );
                store.give_up(row.id, DeliveryStatus::Expired, &why).await?;
                report.expired += 1;
                report.outcomes.push((n.channel.clone(), "expired"));
                continue;
            }
            let Some((channel, limiter)) = self.channels.get(&n.channel) else {
                let why = format!("channel `{}` is no longer configured", n.channel);
                store.give_up(row.id, DeliveryStatus::Failed, &why).await?;
                report.failed += 1;
                report.outcomes.push((n.channel.clone(), "failed"));
                continue;
            };
            if let Err(wait) = limiter.try_take(Instant::now()) {
                store.defer(row.id, now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX)).await?;
                report.deferred += 1;
                continue;
            }
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            let outcome = match tokio::time::timeout(remaining.min(MAX_SEND), channel.send(n)).await {
                Ok(r) => r,
                Err(_) if remaining <= MAX_SEND => Err(DeliveryError::Retryable {
                    reason: "the delivery deadline passed before the service answered".into(),
                    retry_after: None,
                }),
                Err(_) => Err(DeliveryError::Retryable {
                    reason: format!(
                        "no answer within {}, the longest a send may take",
                        crate::clock::format_duration(MAX_SEND)
                    ),
                    retry_after: None,
                }),
            };
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let result = match outcome {
                Ok(d) => {
                    report.delivered += 1;
                    tracing::info!(channel = %n.channel, id = %n.id, alerts = n.alerts.len(), "notification delivered");
                    AttemptResult::Delivered { detail: format!("HTTP {}: {}", d.status, d.detail) }
                }
                Err(DeliveryError::Retryable { reason, retry_after }) => {
                    report.retrying += 1;
                    let delay = retry_delay(row.attempts, retry_after, &mut rand::rng());
                    tracing::warn!(channel = %n.channel, id = %n.id, attempt = row.attempts + 1, retry_in = %crate::clock::format_duration(delay), error = %reason, "delivery failed; will retry");
                    AttemptResult::Retry {
                        error: reason,
                        next_attempt_at: now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX),
                    }
                }
                Err(DeliveryError::Permanent { reason }) => {
                    report.failed += 1;
                    tracing::error!(channel = %n.channel, id = %n.id, error = %reason, "delivery failed permanently");
                    // Tell the other channels, unless this was itself such a warning (no ping-pong between two
                    // broken channels).
                    if !n.alerts.iter().all(|a| a.rule == RuleName::ChannelFailing) {
                        self.raise_channel_failing(store, &n.channel, &reason, now).await?;
                    }
                    AttemptResult::GiveUp { status: DeliveryStatus::Failed, error: reason }
                }
            };
            let outcome = match &result {
                AttemptResult::Delivered { .. } => "delivered",
                AttemptResult::Retry { .. } => "retrying",
                AttemptResult::GiveUp { .. } => "failed",
            };
            report.outcomes.push((n.channel.clone(), outcome));
            store.record_attempt(row.id, now, took, &result).await?;
        }
        Ok(report)
    }
}

impl Dispatcher {
    /// Queues a `channel_failing` alert about `channel` (at most once per [`CHANNEL_FAILING_EVERY`] per channel); it
    /// goes out with the next dispatch pass. It is routed and silenced like any alert — its labels carry
    /// `channel=<name>` and `rule=channel_failing` — on every channel whose route accepts it except the failing one
    /// (without routes, on every other channel); under a silence it is recorded as suppressed.
    async fn raise_channel_failing(
        &self,
        store: &Store,
        channel: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        {
            let mut raised = self.failing_raised.lock().unwrap_or_else(|p| p.into_inner());
            if raised.get(channel).is_some_and(|t| t.elapsed() < CHANNEL_FAILING_EVERY) {
                return Ok(());
            }
            raised.insert(channel.to_string(), Instant::now());
        }
        let series = SeriesKey {
            target: channel.to_string(),
            account: "scanwatch".into(),
            region: "-".into(),
            project_id: "-".into(),
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        };
        let notice = AlertNotice {
            fingerprint: crate::alerting::fingerprint(RuleName::ChannelFailing, &series),
            rule: RuleName::ChannelFailing,
            severity: Severity::Critical,
            event: Event::Firing,
            labels: BTreeMap::from([("channel".to_string(), channel.to_string())]),
            summary: format!("notification channel `{channel}` rejects deliveries: {reason}"),
            value: "failing".into(),
            series,
            since: now,
            at: now,
            context: None,
        };
        let silenced = {
            let silences = store.silences(now, false).await?;
            crate::alerting::silence::silenced_by(&silences, &notice_labels(&notice), now).is_some()
        };
        let others: Vec<&str> = if self.routes.is_empty() {
            self.channels.keys().map(String::as_str).collect()
        } else {
            route(&self.routes, &notice)
        };
        let mut tx = store.begin_write().await?;
        for other in others.into_iter().filter(|c| *c != channel) {
            tx.insert_notice(other, &notice, silenced).await?;
        }
        tx.commit().await?;
        tracing::warn!(channel, silenced, "raised channel_failing on the other channels");
        Ok(())
    }
}

/// The notices one alert change produces: one per channel whose route accepts it.
pub fn route<'a>(routes: &'a [Arc<dyn Route>], notice: &AlertNotice) -> Vec<&'a str> {
    routes.iter().filter(|r| r.accepts(notice)).map(|r| r.channel()).collect()
}

/// Labels a notice is matched on (used by routes and silences).
pub fn notice_labels(notice: &AlertNotice) -> BTreeMap<String, String> {
    crate::alerting::silence::alert_labels(&notice.series, notice.rule, notice.severity, &notice.labels)
}

#[cfg(test)]
mod tests;
