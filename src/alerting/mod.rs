//! Alerting: the per-(series, rule) state machine ([`state`]), alert identity ([`fingerprint`]) and [`replay`] of
//! stored snapshots through the rules and the state machine. All pure; the store persists `Alert`s and writes the
//! outbox rows for the returned events.

pub mod silence;
pub mod state;

pub use state::{Alert, AlertState, Event, Lifecycle, Transition, ack, step};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::{SeriesKey, Snapshot};
use crate::rules::{self, RuleName, RuleSet};

/// The alert's stable identity: the idempotency key receivers deduplicate on (webhook-id, dedup keys, email
/// thread). 16 hex chars of SHA-256 over the rule and the series' identity labels — account, region, project_id,
/// enterprise_project_id, task_type — but not the target's display name, so renaming a target keeps its alerts.
/// The encoding is versioned and length-prefixed; changing it would re-open every alert at every receiver.
pub fn fingerprint(rule: RuleName, series: &SeriesKey) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"scanwatch-fingerprint-v1");
    field(rule.as_str().as_bytes());
    field(series.account.as_bytes());
    field(series.region.as_bytes());
    field(series.project_id.as_bytes());
    // Absent and "0" are different requests to HSS, so different identities; the tag keeps them apart.
    match &series.enterprise_project_id {
        None => field(b"-"),
        Some(eps) => field(format!("={eps}").as_bytes()),
    }
    field(series.task_type.as_str().as_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..8])
}

/// Runs one rule over stored history exactly as the live service would have, starting from `initial`: the series'
/// rule state ([`rules::SeriesState`]) is folded from the first snapshot on, as the live path keeps it, and for
/// every snapshot polled at or after `from` the rule is evaluated at that snapshot's `polled_at` and the outcome is
/// stepped through the state machine. `history` is ascending and should be all that is stored of the series: the
/// state remembers how long a run, a flat total or a failure streak has lasted, however long ago it began. A disabled
/// rule returns `initial` and nothing.
pub fn replay(
    rule: RuleName,
    set: &RuleSet,
    cfg: &Lifecycle,
    series: &SeriesKey,
    history: &[Snapshot],
    from: DateTime<Utc>,
    initial: Alert,
) -> (Alert, Vec<Transition>) {
    let mut alert = initial;
    let mut transitions = Vec::new();
    let mut state = rules::SeriesState::default();
    for snapshot in history {
        state.fold(snapshot);
        let now = snapshot.polled_at;
        if now < from {
            continue;
        }
        let Some(outcome) = state.evaluate(rule, set, series, now) else {
            break;
        };
        let (next, transition) = step(&alert, &outcome, cfg, now);
        alert = next;
        transitions.extend(transition);
    }
    (alert, transitions)
}

#[cfg(test)]
mod tests;
