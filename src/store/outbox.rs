//! The outbox tables: notices written with their transition, notifications sealed from them, delivery attempts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, WriteTx, millis, sql};
use crate::alerting::Event;
use crate::notify::{AlertNotice, Notification};

/// Delivery state of a notification; the names are the `status` values shown and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    Expired,
    Suppressed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Expired,
        DeliveryStatus::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A stored notification with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: i64,
    pub notification: Notification,
    /// The alerts it announces (fired, reminded, resolved); a grouped notification's payload also lists its
    /// group's other alerts that still fire.
    pub fingerprints: Vec<String>,
    pub event: Event,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// How sealing groups a channel's notices, Alertmanager's way (the dispatcher implements it from the channels'
/// routes and the silences in force).
pub trait Grouper {
    /// The group of `notice` on `channel`: its labels named by the channel's `group_by` (empty: one group).
    fn group_labels(&self, channel: &str, notice: &AlertNotice) -> BTreeMap<String, String>;
    /// Whether a silence covers this still-firing alert now (then it is not listed).
    fn silenced(&self, notice: &AlertNotice) -> bool;
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered {
        detail: String,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    /// Give up: `Failed` (permanent) or `Expired` (too old).
    GiveUp {
        status: DeliveryStatus,
        error: String,
    },
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { table: "notifications", detail }
}

fn event_of(s: &str) -> Result<Event, StoreError> {
    match s {
        "firing" => Ok(Event::Firing),
        "repeat" => Ok(Event::Repeat),
        "resolved" => Ok(Event::Resolved),
        other => Err(corrupt(format!("event `{other}`"))),
    }
}

fn notification_from_row(row: &SqliteRow) -> Result<NotificationRow, StoreError> {
    let read = sql("reading a notification");
    let (id, uid, channel, event, status, payload, attempts, created, next, delivered, last_error) = (|| {
        Ok::<_, sqlx::Error>((
            row.try_get::<i64, _>("id")?,
            row.try_get::<String, _>("uid")?,
            row.try_get::<String, _>("channel")?,
            row.try_get::<String, _>("event")?,
            row.try_get::<String, _>("status")?,
            row.try_get::<String, _>("payload")?,
            row.try_get::<i64, _>("attempts")?,
            row.try_get::<i64, _>("created_at")?,
            row.try_get::<i64, _>("next_attempt_at")?,
            row.try_get::<Option<i64>, _>("delivered_at")?,
            row.try_get::<Option<String>, _>("last_error")?,
        ))
    })()
    .map_err(read)?;
    let alerts: Vec<AlertNotice> =
        serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload of notification {id}: {e}")))?;
    let fingerprints: Vec<String> = match row.try_get::<String, _>("fingerprints") {
        Ok(json) => {
            serde_json::from_str(&json).map_err(|e| corrupt(format!("fingerprints of notification {id}: {e}")))?
        }
        Err(_) => alerts.iter().map(|a| a.fingerprint.clone()).collect(),
    };
    let group_labels: BTreeMap<String, String> = match row.try_get::<Option<String>, _>("group_labels") {
        Ok(Some(json)) => {
            serde_json::from_str(&json).map_err(|e| corrupt(format!("group labels of notification {id}: {e}")))?
        }
        _ => BTreeMap::new(),
    };
    Ok(NotificationRow {
        id,
        notification: Notification { id: uid, channel, created_at: millis(created), alerts, group_labels },
        fingerprints,
        event: event_of(&event)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("status `{status}`")))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: millis(next),
        delivered_at: delivered.map(millis),
        last_error,
    })
}

/// Who claims notifications before sending them: one token per process ([`Claimant::this_process`]).
///
/// A claim holds until its lease runs out, or until its process is gone: a token names its process (pid, pid
/// namespace and boot), and a claim whose process no longer exists on this machine is free at once, so a daemon
/// killed mid-send and restarted resends at its next pass rather than a lease later. A process on another boot or
/// in another pid namespace cannot be checked; its claims wait for their lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    token: String,
}

/// This process's pid, pid namespace and boot, as a token names them; `None` where the system does not say.
fn process_identity(pid: u32) -> Option<(u32, String, String)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_string();
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?.to_string_lossy().into_owned();
    (!boot.is_empty() && !ns.is_empty()).then_some((pid, ns, boot))
}

impl Claimant {
    /// The claimant of this process: `pid:{pid} ns:{pid namespace} boot:{boot id} {random}`.
    pub fn this_process() -> Claimant {
        static TOKEN: OnceLock<String> = OnceLock::new();
        let token = TOKEN.get_or_init(|| {
            let nonce: u64 = rand::rng().random();
            match process_identity(std::process::id()) {
                Some((pid, ns, boot)) => format!("pid:{pid} ns:{ns} boot:{boot} {nonce:016x}"),
                None => format!("pid:{} {nonce:016x}", std::process::id()),
            }
        });
        Claimant { token: token.clone() }
    }

    /// A claimant with a token of the caller's choosing, never taken for gone (tests run several in one process).
    pub fn named(token: impl Into<String>) -> Claimant {
        Claimant { token: token.into() }
    }

    /// The claimant of the process `pid` as [`Claimant::this_process`] would name it there (tests of a dead one).
    pub fn of_pid(pid: u32) -> Claimant {
        match process_identity(pid) {
            Some((pid, ns, boot)) => Claimant { token: format!("pid:{pid} ns:{ns} boot:{boot} 0") },
            None => Claimant { token: format!("pid:{pid} 0") },
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether `owner` names a process of this boot and pid namespace that no longer runs.
    fn is_gone(owner: &str) -> bool {
        let mut fields = owner.split(' ');
        let (Some(pid), Some(ns), Some(boot)) = (fields.next(), fields.next(), fields.next()) else { return false };
        let (Some(pid), Some(ns), Some(boot)) =
            (pid.strip_prefix("pid:"), ns.strip_prefix("ns:"), boot.strip_prefix("boot:"))
        else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else { return false };
        let Some((me, my_ns, my_boot)) = process_identity(std::process::id()) else { return false };
        pid != me && ns == my_ns && boot == my_boot && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
}

impl WriteTx {
    /// Writes one notice (a transition for one channel) to the outbox.
    pub async fn insert_notice(
        &mut self,
        channel: &str,
        notice: &AlertNotice,
        suppressed: bool,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(notice).map_err(|e| corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO notices (channel, fingerprint, event, payload, created_at, suppressed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(channel)
        .bind(&notice.fingerprint)
        .bind(super::alerts::event_str(notice.event))
        .bind(payload)
        .bind(notice.at.timestamp_millis())
        .bind(suppressed)
        .execute(&mut *self.tx)
        .await
        .map_err(self.failed("writing a notice"))?;
        Ok(())
    }
}

impl Store {
    /// Groups every unsealed notice into one notification per channel (suppressed ones into their own, recorded
    /// as `suppressed`), without `group_by` and without listing unchanged alerts: [`Store::seal_grouped`] with no
    /// [`Grouper`].
    pub async fn seal_notices(
        &self,
        now: DateTime<Utc>,
        order: impl Fn(&mut [AlertNotice]),
        uid: impl FnMut() -> String,
    ) -> Result<Vec<i64>, StoreError> {
        self.seal_grouped(now, order, uid, None).await
    }

    /// Seals every unsealed notice into notifications: one per (channel, group), the group being the notice's labels
    /// named by the channel's `group_by` (as the `grouper` says). Suppressed notices go into their own
    /// notifications, recorded as `suppressed` and never sent. With a `grouper`, each notification to be sent also
    /// lists its group's other alerts that still fire on that channel — those whose latest unsuppressed notice
    /// there was not a resolution, that the alerts table still has firing and that no silence covers now — as
    /// [`Event::Repeat`] with their current summary and value, as Alertmanager lists a group's current alerts.
    /// `order` sorts a notification's alerts; `uid` names a new notification. One transaction: two processes never
    /// seal one notice twice. Returns the new ids.
    pub async fn seal_grouped(
        &self,
        now: DateTime<Utc>,
        order: impl Fn(&mut [AlertNotice]),
        mut uid: impl FnMut() -> String,
        grouper: Option<&(dyn Grouper + Sync)>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id, channel, payload, suppressed FROM notices WHERE notification_id IS NULL ORDER BY channel, id",
        )
        .fetch_all(&mut *tx.tx)
        .await
        .map_err(tx.failed("reading notices"))?;
        type Key = (String, bool, BTreeMap<String, String>);
        let mut groups: BTreeMap<Key, (Vec<i64>, Vec<AlertNotice>)> = BTreeMap::new();
        // Per channel, the alerts a notice of this pass is about: they are in their group already.
        let mut changed: HashMap<String, BTreeSet<String>> = HashMap::new();
        for row in &rows {
            let (id, channel, payload, suppressed): (i64, String, String, bool) =
                (|| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)))()
                    .map_err(sql("reading notices"))?;
            let notice: AlertNotice =
                serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload of notice {id}: {e}")))?;
            let labels = grouper.map(|g| g.group_labels(&channel, &notice)).unwrap_or_default();
            changed.entry(channel.clone()).or_default().insert(notice.fingerprint.clone());
            let g = groups.entry((channel, suppressed, labels)).or_default();
            g.0.push(id);
            g.1.push(notice);
        }
        // The alerts still firing on each channel that has a group to send, as that channel last heard of them.
        // Keyed by (channel, group labels): each listed alert's group is computed once.
        let mut still_firing: HashMap<(String, BTreeMap<String, String>), Vec<AlertNotice>> = HashMap::new();
        let mut read: BTreeSet<&str> = BTreeSet::new();
        if let Some(grouper) = grouper {
            for (channel, _, _) in groups.keys().filter(|(_, suppressed, _)| !suppressed) {
                if !read.insert(channel.as_str()) {
                    continue;
                }
                let listed = sqlx::query(
                    "SELECT a.summary, a.value, n.event, n.payload
                     FROM alerts a
                     JOIN notices n ON n.id = (
                         SELECT m.id FROM notices m
                         WHERE m.channel = ?1 AND m.fingerprint = a.fingerprint AND m.suppressed = FALSE
                         ORDER BY m.id DESC LIMIT 1)
                     WHERE a.state = 'firing'",
                )
                .bind(channel)
                .fetch_all(&mut *tx.tx)
                .await
                .map_err(tx.failed("reading the alerts still firing"))?;
                for row in &listed {
                    let (summary, value, event, payload): (String, String, String, String) = (|| {
                        Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
                    })()
                    .map_err(sql("reading the alerts still firing"))?;
                    if event_of(&event)? == Event::Resolved {
                        continue;
                    }
                    let mut notice: AlertNotice = serde_json::from_str(&payload)
                        .map_err(|e| corrupt(format!("payload of a notice on `{channel}`: {e}")))?;
                    if changed.get(channel).is_some_and(|c| c.contains(&notice.fingerprint))
                        || grouper.silenced(&notice)
                    {
                        continue;
                    }
                    notice.event = Event::Repeat;
                    notice.at = now;
                    if !summary.is_empty() {
                        notice.summary = summary;
                        notice.value = value;
                    }
                    let labels = grouper.group_labels(channel, &notice);
                    still_firing.entry((channel.clone(), labels)).or_default().push(notice);
                }
            }
        }
        let mut created = Vec::new();
        for ((channel, suppressed, group_labels), (ids, mut alerts)) in groups {
            // The notification's event is what changed; the alerts only listed do not count.
            let event = if alerts.iter().any(|a| a.event == Event::Firing) {
                Event::Firing
            } else if alerts.iter().any(|a| a.event == Event::Repeat) {
                Event::Repeat
            } else {
                Event::Resolved
            };
            // The alerts this notification announces; the ones only listed beside them are in its payload.
            let fingerprints: Vec<String> = alerts.iter().map(|a| a.fingerprint.clone()).collect();
            if !suppressed && let Some(others) = still_firing.remove(&(channel.clone(), group_labels.clone())) {
                alerts.extend(others);
            }
            order(&mut alerts);
            let status = if suppressed { DeliveryStatus::Suppressed } else { DeliveryStatus::Pending };
            let row = sqlx::query(
                "INSERT INTO notifications
                     (uid, channel, event, status, fingerprints, payload, created_at, next_attempt_at, group_labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) RETURNING id",
            )
            .bind(uid())
            .bind(&channel)
            .bind(super::alerts::event_str(event))
            .bind(status.as_str())
            .bind(serde_json::to_string(&fingerprints).map_err(|e| corrupt(e.to_string()))?)
            .bind(serde_json::to_string(&alerts).map_err(|e| corrupt(e.to_string()))?)
            .bind(now.timestamp_millis())
            .bind(serde_json::to_string(&group_labels).map_err(|e| corrupt(e.to_string()))?)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(tx.failed("sealing a notification"))?;
            let nid: i64 = row.try_get(0).map_err(sql("sealing a notification"))?;
            for id in ids {
                sqlx::query("UPDATE notices SET notification_id = ?1 WHERE id = ?2")
                    .bind(nid)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await
                    .map_err(tx.failed("sealing a notification"))?;
            }
            created.push(nid);
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Pending notifications due at `now`, oldest first.
    pub async fn due_notifications(&self, now: DateTime<Utc>) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id",
        )
        .bind(now.timestamp_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(sql("reading due notifications"))?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Claims the pending notification `id` for `claimant` until `now + lease`, if it is still due at `now` and
    /// no other claim holds: none, an expired one, or one whose process is gone (see [`Claimant`]). Returns the
    /// notification as it is now (another process may have retried it since it was listed), or `None` when it is
    /// not this claimant's to send. One write transaction: two processes never both get a claim.
    pub async fn claim_notification(
        &self,
        id: i64,
        claimant: &Claimant,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let at = now.timestamp_millis();
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "SELECT lease_owner, lease_until FROM notifications
             WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2",
        )
        .bind(id)
        .bind(at)
        .fetch_optional(&mut *tx.tx)
        .await
        .map_err(tx.failed("claiming a notification"))?;
        let Some(held) = held else { return tx.rollback().await.map(|()| None) };
        let owner: Option<String> = held.try_get(0).map_err(sql("claiming a notification"))?;
        let until: Option<i64> = held.try_get(1).map_err(sql("claiming a notification"))?;
        let free = match (owner, until) {
            (Some(owner), Some(until)) => until <= at || Claimant::is_gone(&owner),
            _ => true,
        };
        if !free {
            return tx.rollback().await.map(|()| None);
        }
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
        let row = sqlx::query("UPDATE notifications SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 RETURNING *")
            .bind(id)
            .bind(claimant.token())
            .bind(until.timestamp_millis())
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(tx.failed("claiming a notification"))?;
        let claimed = notification_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(claimed))
    }

    /// Who holds a claim on notification `id`, and until when (for tests and diagnostics).
    pub async fn claim_of(&self, id: i64) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row = sqlx::query("SELECT lease_owner, lease_until FROM notifications WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("reading a claim"))?;
        let Some(row) = row else { return Ok(None) };
        let owner: Option<String> = row.try_get(0).map_err(sql("reading a claim"))?;
        let until: Option<i64> = row.try_get(1).map_err(sql("reading a claim"))?;
        Ok(owner.zip(until.map(millis)))
    }

    /// The delivery log, newest first; optionally of one status.
    pub async fn notifications(
        &self,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(status.map(DeliveryStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("reading notifications"))?;
        rows.iter().map(notification_from_row).collect()
    }

    /// When the next pending notification falls due, if any is pending; one claimed by another process falls due
    /// when its claim runs out.
    pub async fn next_attempt_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM notifications WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql("reading the next attempt"))?;
        Ok(row.try_get::<Option<i64>, _>(0).map_err(sql("reading the next attempt"))?.map(millis))
    }

    /// How many notifications are still to be delivered (the outbox depth).
    pub async fn pending_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM notifications WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(sql("counting pending notifications"))?;
        row.try_get(0).map_err(sql("counting pending notifications"))
    }

    /// Records one attempt and its consequence in one transaction, and releases the claim.
    pub async fn record_attempt(
        &self,
        notification_id: i64,
        at: DateTime<Utc>,
        duration_ms: u64,
        result: &AttemptResult,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let (outcome, detail) = match result {
            AttemptResult::Delivered { detail } => ("delivered", detail.as_str()),
            AttemptResult::Retry { error, .. } => ("retryable", error.as_str()),
            AttemptResult::GiveUp { status, error } => (status.as_str(), error.as_str()),
        };
        sqlx::query(
            "INSERT INTO delivery_attempts (notification_id, at, outcome, detail, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(notification_id)
        .bind(at.timestamp_millis())
        .bind(outcome)
        .bind(detail)
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .execute(&mut *tx.tx)
        .await
        .map_err(tx.failed("recording a delivery attempt"))?;
        let q = match result {
            AttemptResult::Delivered { .. } => sqlx::query(
                "UPDATE notifications SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )
            .bind(notification_id)
            .bind(at.timestamp_millis()),
            AttemptResult::Retry { error, next_attempt_at } => sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )
            .bind(notification_id)
            .bind(next_attempt_at.timestamp_millis())
            .bind(error.as_str()),
            AttemptResult::GiveUp { status, error } => sqlx::query(
                "UPDATE notifications SET status = ?2, attempts = attempts + 1, last_error = ?3,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )
            .bind(notification_id)
            .bind(status.as_str())
            .bind(error.as_str()),
        };
        q.execute(&mut *tx.tx).await.map_err(tx.failed("updating a notification"))?;
        tx.commit().await
    }

    /// Gives up on a notification without an attempt (too old, or its channel is gone), releasing any claim.
    pub async fn give_up(&self, notification_id: i64, status: DeliveryStatus, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE notifications SET status = ?2, last_error = ?3, lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND status = 'pending'",
        )
        .bind(notification_id)
        .bind(status.as_str())
        .bind(error)
        .execute(&mut *tx.tx)
        .await
        .map_err(tx.failed("giving up a notification"))?;
        tx.commit().await
    }

    /// Delays a notification without counting an attempt (a channel's rate limit), releasing the claim.
    pub async fn defer(&self, notification_id: i64, until: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE notifications SET next_attempt_at = ?2, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        )
        .bind(notification_id)
        .bind(until.timestamp_millis())
        .execute(tx.inner())
        .await
        .map_err(tx.failed("deferring a notification"))?;
        tx.commit().await
    }
}
