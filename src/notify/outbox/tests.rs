use std::sync::atomic::{AtomicUsize, Ordering};

use crate::store::Claimant;

use super::*;
use crate::model::{SeriesKey, TaskType};
use crate::notify::{Delivered, Notification};
use crate::rules::{RuleName, Severity};

/// A far end that fails its first `fail_first` deliveries with `failure`, then accepts; it remembers every id.
struct Flaky {
    name: String,
    fail_first: usize,
    failure: DeliveryError,
    calls: AtomicUsize,
    seen: Mutex<Vec<Notification>>,
}

impl Flaky {
    fn new(name: &str, fail_first: usize, failure: DeliveryError) -> Arc<Flaky> {
        Arc::new(Flaky { name: name.into(), fail_first, failure, calls: AtomicUsize::new(0), seen: Mutex::new(vec![]) })
    }
}

#[async_trait::async_trait]
impl Channel for Flaky {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "webhook"
    }
    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        self.seen.lock().unwrap().push(n.clone());
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(self.failure.clone());
        }
        Ok(Delivered { status: 200, detail: "ok".into() })
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn notice(i: usize, event: Event, severity: Severity) -> AlertNotice {
    AlertNotice {
        fingerprint: format!("{i:016x}"),
        rule: RuleName::NoRecentScan,
        severity,
        event,
        series: SeriesKey {
            target: format!("t{i:02}"),
            account: "a".into(),
            region: "cn-north-4".into(),
            project_id: "p".into(),
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        },
        labels: Default::default(),
        summary: "no cluster scan has started for 31h; limit 24h".into(),
        value: "31h".into(),
        since: t0(),
        at: t0(),
        context: None,
    }
}

async fn store_with(notices: &[(&str, AlertNotice, bool)]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("o.db")).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    for (channel, n, suppressed) in notices {
        tx.insert_notice(channel, n, *suppressed).await.unwrap();
    }
    tx.commit().await.unwrap();
    (dir, store)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
fn retry_delays_grow_with_full_jitter_and_respect_the_services_hint() {
    let mut rng = rand::rng();
    for attempt in 0..12 {
        let cap = (BASE_BACKOFF * (1 << attempt)).min(MAX_BACKOFF);
        for _ in 0..50 {
            assert!(retry_delay(attempt, None, &mut rng) <= cap);
        }
    }
    assert!(retry_delay(0, Some(Duration::from_secs(42)), &mut rng) >= Duration::from_secs(42));
    assert!(retry_delay(u32::MAX, None, &mut rng) <= MAX_BACKOFF);
}

#[test]
fn a_channel_limiter_delays_the_twenty_first_message_of_a_minute() {
    let l = ChannelLimiter::for_kind("dingtalk");
    let start = Instant::now();
    for i in 0..20 {
        assert!(l.try_take(start + Duration::from_millis(i)).is_ok());
    }
    let wait = l.try_take(start + Duration::from_secs(1)).unwrap_err();
    assert!(wait > Duration::from_secs(58) && wait <= Duration::from_secs(59), "{wait:?}");
    assert!(l.try_take(start + Duration::from_secs(60)).is_ok());
    let feishu = ChannelLimiter::for_kind("feishu");
    for i in 0..5 {
        assert!(feishu.try_take(start + Duration::from_millis(i)).is_ok());
    }
    assert!(feishu.try_take(start + Duration::from_millis(10)).is_err(), "5 per second");
}

#[tokio::test]
async fn fifty_alerts_of_one_cycle_become_one_notification_per_channel_in_order() {
    let mut notices = Vec::new();
    for i in 0..50 {
        let (event, sev) = match i % 3 {
            0 => (Event::Resolved, Severity::Critical),
            1 => (Event::Firing, Severity::Warning),
            _ => (Event::Firing, Severity::Critical),
        };
        notices.push(("hook", notice(i, event, sev), false));
        notices.push(("mail", notice(i, event, sev), false));
    }
    let (_d, store) = store_with(&notices).await;
    let (hook, mail) = (Flaky::new("hook", 0, retryable()), Flaky::new("mail", 0, retryable()));
    let d = Dispatcher::new(vec![hook.clone(), mail.clone()], Duration::from_secs(86400));
    let r = d.dispatch_due(&store, t0(), far()).await.unwrap();
    assert_eq!(r.delivered, 2);
    for ch in [&hook, &mail] {
        let seen = ch.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "one message for the whole cycle");
        let events: Vec<(Event, Severity)> = seen[0].alerts.iter().map(|a| (a.event, a.severity)).collect();
        assert_eq!(events.len(), 50);
        let mut sorted = events.clone();
        sorted.sort_by_key(|(e, s)| (*e != Event::Firing, *e == Event::Resolved, std::cmp::Reverse(*s)));
        assert_eq!(events, sorted, "firing first, critical first");
    }
    let log = store.notifications(None, 10).await.unwrap();
    assert!(log.iter().all(|n| n.status == DeliveryStatus::Delivered && n.event == Event::Firing));
}

fn retryable() -> DeliveryError {
    DeliveryError::Retryable { reason: "HTTP 503".into(), retry_after: None }
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried_with_the_same_id_until_it_is_back() {
    let (_d, store) = store_with(&[("hook", notice(1, Event::Firing, Severity::Critical), false)]).await;
    let hook = Flaky::new("hook", 4, retryable());
    let d = Dispatcher::new(vec![hook.clone()], Duration::from_secs(86400));
    let mut now = t0();
    let mut rounds = 0;
    while hook.seen.lock().unwrap().len() < 5 {
        d.dispatch_due(&store, now, far()).await.unwrap();
        now += TimeDelta::minutes(10); // past any backoff
        rounds += 1;
        assert!(rounds < 10);
    }
    d.dispatch_due(&store, now, far()).await.unwrap();
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "4 failures, then one success, then nothing more");
    assert!(seen.iter().all(|n| n.id == seen[0].id), "webhook-id stable across retries");
    let n = &store.notifications(None, 10).await.unwrap()[0];
    assert_eq!((n.status, n.attempts), (DeliveryStatus::Delivered, 5));
}

#[tokio::test]
async fn a_retry_waits_for_its_backoff() {
    let (_d, store) = store_with(&[("hook", notice(1, Event::Firing, Severity::Critical), false)]).await;
    let hook = Flaky::new(
        "hook",
        1,
        DeliveryError::Retryable { reason: "429".into(), retry_after: Some(Duration::from_secs(120)) },
    );
    let d = Dispatcher::new(vec![hook.clone()], Duration::from_secs(86400));
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    d.dispatch_due(&store, t0() + TimeDelta::seconds(119), far()).await.unwrap();
    assert_eq!(hook.seen.lock().unwrap().len(), 1, "Retry-After honoured");
    d.dispatch_due(&store, t0() + TimeDelta::seconds(121), far()).await.unwrap();
    assert_eq!(hook.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn permanent_failures_stop_and_old_notifications_expire() {
    let (_d, store) = store_with(&[
        ("bad", notice(1, Event::Firing, Severity::Critical), false),
        ("down", notice(2, Event::Firing, Severity::Critical), false),
        ("gone", notice(3, Event::Firing, Severity::Critical), false),
    ])
    .await;
    let bad = Flaky::new("bad", usize::MAX, DeliveryError::Permanent { reason: "sign match fail".into() });
    let down = Flaky::new("down", usize::MAX, retryable());
    let d = Dispatcher::new(vec![bad.clone(), down.clone()], Duration::from_secs(3600));
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    d.dispatch_due(&store, t0() + TimeDelta::minutes(30), far()).await.unwrap();
    assert_eq!(bad.seen.lock().unwrap().len(), 1, "a permanent failure is not retried");
    let r = d.dispatch_due(&store, t0() + TimeDelta::minutes(61), far()).await.unwrap();
    assert_eq!(r.expired, 1);
    let status = |ch: &str, log: &[crate::store::NotificationRow]| {
        // The first alert's notification (`bad` also raised channel_failing on `down`).
        log.iter()
            .find(|n| n.notification.channel == ch && n.notification.alerts[0].rule != RuleName::ChannelFailing)
            .map(|n| (n.status, n.last_error.clone().unwrap_or_default()))
    };
    let log = store.notifications(None, 10).await.unwrap();
    assert_eq!(status("bad", &log).unwrap().0, DeliveryStatus::Failed);
    let (st, err) = status("down", &log).unwrap();
    assert_eq!(st, DeliveryStatus::Expired);
    assert!(err.contains("HTTP 503"), "the last error is kept: {err}");
    let (st, err) = status("gone", &log).unwrap();
    assert_eq!(st, DeliveryStatus::Failed);
    assert!(err.contains("no longer configured"));
}

#[tokio::test]
async fn suppressed_notices_are_recorded_and_never_sent() {
    let (_d, store) = store_with(&[("hook", notice(1, Event::Firing, Severity::Critical), true)]).await;
    let hook = Flaky::new("hook", 0, retryable());
    let d = Dispatcher::new(vec![hook.clone()], Duration::from_secs(3600));
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    assert!(hook.seen.lock().unwrap().is_empty());
    assert_eq!(store.notifications(None, 10).await.unwrap()[0].status, DeliveryStatus::Suppressed);
}

#[tokio::test]
async fn pending_notifications_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    {
        let store = Store::open(&path).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tx.insert_notice("hook", &notice(1, Event::Firing, Severity::Critical), false).await.unwrap();
        tx.commit().await.unwrap();
        let down = Flaky::new("hook", usize::MAX, retryable());
        Dispatcher::new(vec![down], Duration::from_secs(3600)).dispatch_due(&store, t0(), far()).await.unwrap();
        store.close().await;
    }
    let store = Store::open(&path).await.unwrap();
    let hook = Flaky::new("hook", 0, retryable());
    let d = Dispatcher::new(vec![hook.clone()], Duration::from_secs(3600));
    d.dispatch_due(&store, t0() + TimeDelta::minutes(5), far()).await.unwrap();
    assert_eq!(hook.seen.lock().unwrap().len(), 1);
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_channel_that_fails_permanently_raises_channel_failing_on_the_others_once() {
    let (_d, store) = store_with(&[
        ("bad", notice(1, Event::Firing, Severity::Critical), false),
        ("good", notice(1, Event::Firing, Severity::Critical), false),
    ])
    .await;
    let bad = Flaky::new("bad", usize::MAX, DeliveryError::Permanent { reason: "19024 Key Words Not Found".into() });
    let good = Flaky::new("good", 0, retryable());
    let d = Dispatcher::new(vec![bad.clone(), good.clone()], Duration::from_secs(3600));
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    let seen = good.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the alert, then the warning about `bad`");
    let warning = &seen[1].alerts[0];
    assert_eq!(warning.rule, RuleName::ChannelFailing);
    assert!(warning.summary.contains("`bad`") && warning.summary.contains("19024"), "{}", warning.summary);
    assert_eq!(bad.seen.lock().unwrap().len(), 1, "the broken channel is not told about itself");
    // Another permanent failure within the hour raises nothing new.
    let mut tx = store.begin_write().await.unwrap();
    tx.insert_notice("bad", &notice(2, Event::Firing, Severity::Critical), false).await.unwrap();
    tx.commit().await.unwrap();
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    assert_eq!(good.seen.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Claims: several processes dispatching from one database

/// `n` notifications of channel `test` in the database at `path`, each sealed on its own.
async fn sealed(store: &Store, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut tx = store.begin_write().await.unwrap();
        tx.insert_notice("test", &notice(i, Event::Firing, Severity::Critical), false).await.unwrap();
        tx.commit().await.unwrap();
        ids.extend(store.seal_notices(t0(), order_alerts, new_uid).await.unwrap());
    }
    ids
}

/// A webhook channel named `test` posting to `server`, as each process would build its own.
fn webhook(server: &crate::hss::test_support::MockServer) -> Arc<dyn Channel> {
    let url = server.url.join("/hook").unwrap();
    Arc::new(crate::notify::channels::webhook::WebhookChannel::new(
        crate::notify::channels::testkit::common(url),
        crate::notify::channels::webhook::Auth::None,
        None,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_dispatching_from_one_database_deliver_each_notification_exactly_once() {
    const N: usize = 24;
    let server = crate::hss::test_support::spawn(|_| crate::hss::test_support::Reply::raw(200, "ok")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // Two stores (two pools, two write connections), as two processes have.
    let (a, b) = (Store::open(&path).await.unwrap(), Store::open(&path).await.unwrap());
    let ids = sealed(&a, N).await;
    let day = Duration::from_secs(86400);
    let da = Arc::new(Dispatcher::new(vec![webhook(&server)], day).with_claimant(Claimant::named("process-a")));
    let db = Arc::new(Dispatcher::new(vec![webhook(&server)], day).with_claimant(Claimant::named("process-b")));

    let pass = |d: Arc<Dispatcher>, s: Store| tokio::spawn(async move { d.dispatch_due(&s, t0(), far()).await });
    let (ra, rb) = (pass(da, a.clone()), pass(db, b.clone()));
    let (ra, rb) = (ra.await.unwrap().unwrap(), rb.await.unwrap().unwrap());

    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in server.requests() {
        *per_id.entry(r.header("webhook-id").unwrap().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?} (a: {ra:?}, b: {rb:?})");
    assert_eq!(per_id.len(), N, "every notification was sent");
    assert_eq!(ra.delivered + rb.delivered, N);
    let log = b.notifications(None, 100).await.unwrap();
    assert_eq!(log.len(), ids.len());
    for n in &log {
        assert_eq!((n.status, n.attempts), (DeliveryStatus::Delivered, 1), "recorded delivered once: {n:?}");
        assert_eq!(b.claim_of(n.id).await.unwrap(), None, "the claim is released with the record");
    }
}

#[tokio::test]
async fn a_live_claim_holds_and_an_expired_one_is_claimed_again() {
    let (_d, store) = store_with(&[]).await;
    let id = sealed(&store, 1).await[0];
    let (a, b) = (Claimant::named("a"), Claimant::named("b"));

    let claimed = store.claim_notification(id, &a, t0(), CLAIM_LEASE).await.unwrap();
    assert_eq!(claimed.map(|n| n.id), Some(id));
    let lease = TimeDelta::from_std(CLAIM_LEASE).unwrap();
    assert_eq!(store.claim_of(id).await.unwrap(), Some(("a".to_string(), t0() + lease)));
    for later in [TimeDelta::zero(), TimeDelta::minutes(1), lease - TimeDelta::milliseconds(1)] {
        assert!(store.claim_notification(id, &b, t0() + later, CLAIM_LEASE).await.unwrap().is_none());
        assert!(store.claim_notification(id, &a, t0() + later, CLAIM_LEASE).await.unwrap().is_none(), "not twice");
    }

    // `a` died without recording anything: once its lease has run out, `b` takes over.
    let claimed = store.claim_notification(id, &b, t0() + lease, CLAIM_LEASE).await.unwrap();
    assert_eq!(claimed.map(|n| n.notification.channel), Some("test".to_string()));
    assert_eq!(store.claim_of(id).await.unwrap().map(|c| c.0), Some("b".to_string()));
    assert_eq!(store.pending_count().await.unwrap(), 1, "claimed is still pending");
}

#[tokio::test]
async fn a_claim_of_a_process_that_is_gone_is_free_at_once() {
    let (_d, store) = store_with(&[]).await;
    let ids = sealed(&store, 2).await;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    if Claimant::of_pid(dead).token().split(' ').count() < 4 {
        eprintln!("skipped: this system does not say which processes exist");
        return;
    }
    let alive = Claimant::of_pid(std::os::unix::process::parent_id());

    assert!(store.claim_notification(ids[0], &Claimant::of_pid(dead), t0(), CLAIM_LEASE).await.unwrap().is_some());
    assert!(store.claim_notification(ids[1], &alive, t0(), CLAIM_LEASE).await.unwrap().is_some());

    let me = Claimant::this_process();
    let later = t0() + TimeDelta::seconds(1);
    assert!(store.claim_notification(ids[0], &me, later, CLAIM_LEASE).await.unwrap().is_some(), "its process is gone");
    assert!(store.claim_notification(ids[1], &me, later, CLAIM_LEASE).await.unwrap().is_none(), "its process runs");
}

#[tokio::test]
async fn a_pass_leaves_a_notification_another_process_is_sending_until_its_claim_runs_out() {
    let (_d, store) = store_with(&[("hook", notice(1, Event::Firing, Severity::Critical), false)]).await;
    let id = store.seal_notices(t0(), order_alerts, new_uid).await.unwrap()[0];
    store.claim_notification(id, &Claimant::named("other"), t0(), CLAIM_LEASE).await.unwrap().unwrap();
    let hook = Flaky::new("hook", 0, retryable());
    let d = Dispatcher::new(vec![hook.clone()], Duration::from_secs(86400)).with_claimant(Claimant::named("me"));

    let r = d.dispatch_due(&store, t0() + TimeDelta::minutes(1), far()).await.unwrap();
    assert_eq!((r.delivered, r.claimed_elsewhere), (0, 1));
    assert!(hook.seen.lock().unwrap().is_empty());
    let lease = TimeDelta::from_std(CLAIM_LEASE).unwrap();
    assert_eq!(store.next_attempt_at().await.unwrap(), Some(t0() + lease), "due again when the claim runs out");

    let r = d.dispatch_due(&store, t0() + lease, far()).await.unwrap();
    assert_eq!(r.delivered, 1);
    assert_eq!(hook.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn every_way_a_pass_ends_with_a_notification_releases_its_claim() {
    let (_d, store) = store_with(&[
        ("ok", notice(1, Event::Firing, Severity::Critical), false),
        ("down", notice(2, Event::Firing, Severity::Critical), false),
        ("gone", notice(3, Event::Firing, Severity::Critical), false),
    ])
    .await;
    let (ok, down) = (Flaky::new("ok", 0, retryable()), Flaky::new("down", usize::MAX, retryable()));
    let d = Dispatcher::new(vec![ok, down], Duration::from_secs(86400));
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    let log = store.notifications(None, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    for n in &log {
        assert_eq!(store.claim_of(n.id).await.unwrap(), None, "{} ({:?})", n.notification.channel, n.status);
    }
}

/// A route that takes the alerts `accepts` says yes to.
struct RouteTo(&'static str, fn(&AlertNotice) -> bool);

impl Route for RouteTo {
    fn channel(&self) -> &str {
        self.0
    }
    fn accepts(&self, notice: &AlertNotice) -> bool {
        (self.1)(notice)
    }
}

fn everything(_: &AlertNotice) -> bool {
    true
}

fn scans_only(n: &AlertNotice) -> bool {
    n.rule == RuleName::NoRecentScan
}

/// `bad` rejects everything permanently; `good` and `scans` (which routes only `no_recent_scan`) accept.
fn bad_good_scans() -> (Arc<Flaky>, Arc<Flaky>, Arc<Flaky>, Dispatcher) {
    let bad = Flaky::new("bad", usize::MAX, DeliveryError::Permanent { reason: "19024 Key Words Not Found".into() });
    let good = Flaky::new("good", 0, retryable());
    let scans = Flaky::new("scans", 0, retryable());
    let routes: Vec<Arc<dyn Route>> = vec![
        Arc::new(RouteTo("bad", everything)),
        Arc::new(RouteTo("good", everything)),
        Arc::new(RouteTo("scans", scans_only)),
    ];
    let d =
        Dispatcher::new(vec![bad.clone(), good.clone(), scans.clone()], Duration::from_secs(3600)).with_routes(routes);
    (bad, good, scans, d)
}

fn rules_seen(channel: &Flaky) -> Vec<RuleName> {
    channel.seen.lock().unwrap().iter().flat_map(|n| n.alerts.iter().map(|a| a.rule)).collect()
}

#[tokio::test]
async fn channel_failing_goes_only_to_the_channels_whose_routes_accept_it() {
    let (_d, store) = store_with(&[("bad", notice(1, Event::Firing, Severity::Critical), false)]).await;
    let (bad, good, scans, d) = bad_good_scans();
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    d.dispatch_due(&store, t0(), far()).await.unwrap();
    assert_eq!(rules_seen(&good), vec![RuleName::ChannelFailing]);
    assert!(scans.seen.lock().unwrap().is_empty(), "its route takes only no_recent_scan");
    assert_eq!(bad.seen.lock().unwrap().len(), 1, "the broken channel is not told about itself");
}

#[tokio::test]
async fn a_silenced_channel_failing_is_recorded_as_suppressed_and_not_sent() {
    for matcher in [("channel", "bad"), ("rule", "channel_failing")] {
        let (_d, store) = store_with(&[("bad", notice(1, Event::Firing, Severity::Critical), false)]).await;
        let matchers = BTreeMap::from([(matcher.0.to_string(), matcher.1.to_string())]);
        let hour = TimeDelta::hours(1);
        store.add_silence(&matchers, t0() - hour, t0() + hour, "me", "rotating the key", t0()).await.unwrap();
        let (_bad, good, _scans, d) = bad_good_scans();
        d.dispatch_due(&store, t0(), far()).await.unwrap();
        d.dispatch_due(&store, t0(), far()).await.unwrap();
        assert!(good.seen.lock().unwrap().is_empty(), "silenced by {matcher:?}");
        let log = store.notifications(None, 10).await.unwrap();
        let warning = log
            .iter()
            .find(|n| n.notification.alerts.iter().any(|a| a.rule == RuleName::ChannelFailing))
            .expect("the warning is recorded");
        assert_eq!((warning.notification.channel.as_str(), warning.status), ("good", DeliveryStatus::Suppressed));
    }
}

/// A receiver that forgets alerts it stops hearing about (like Alertmanager): resent every minute.
struct Forgetful {
    inner: Arc<Flaky>,
}

#[async_trait::async_trait]
impl Channel for Forgetful {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> &'static str {
        "alertmanager"
    }
    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        self.inner.send(n).await
    }
    fn resend_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
}

fn forgetful(name: &str, fail_first: usize) -> (Arc<Flaky>, Arc<dyn Channel>) {
    let inner = Flaky::new(name, fail_first, retryable());
    (inner.clone(), Arc::new(Forgetful { inner }))
}

/// Stores alert `i` (from [`notice`]) in `state`; `told = false` marks a firing whose notice a silence suppressed.
async fn save_alert(store: &Store, i: usize, rule: RuleName, state: crate::alerting::AlertState, told: bool) -> String {
    let n = notice(i, Event::Firing, Severity::Critical);
    let series_id = store.ensure_series(&n.series).await.unwrap();
    let fp = crate::alerting::fingerprint(rule, &n.series);
    let alert = crate::alerting::Alert {
        state,
        since: Some(t0() - TimeDelta::hours(2)),
        summary: n.summary.clone(),
        value: n.value.clone(),
        ..Default::default()
    };
    let mut tx = store.begin_write().await.unwrap();
    tx.save_alert(&fp, series_id, rule, Severity::Critical, &alert, None, !told).await.unwrap();
    tx.commit().await.unwrap();
    fp
}

#[tokio::test]
async fn alerts_still_firing_are_resent_each_interval_to_resending_channels_only() {
    use crate::alerting::AlertState::{Firing, Resolved};
    let (_d, store) = store_with(&[]).await;
    let fp = save_alert(&store, 1, RuleName::NoRecentScan, Firing, true).await;
    save_alert(&store, 2, RuleName::StuckRunning, Resolved, true).await;
    save_alert(&store, 3, RuleName::TotalStalled, Firing, false).await;
    let (am, am_channel) = forgetful("am", 0);
    let hook = Flaky::new("hook", 0, retryable());
    let labels = HashMap::from([("t01".to_string(), BTreeMap::from([("env".to_string(), "prod".to_string())]))]);
    let d = Dispatcher::new(vec![am_channel, hook.clone()], Duration::from_secs(3600)).with_target_labels(labels);

    let r = d.resend_due(&store, t0(), far()).await.unwrap();
    assert_eq!(r, ResendReport { sent: vec![("am".into(), 1)], failed: vec![] }, "at once after a start");
    let seen = am.seen.lock().unwrap().clone();
    let a = &seen[0].alerts[0];
    assert_eq!((a.fingerprint.as_str(), a.event, a.at), (fp.as_str(), Event::Repeat, t0()));
    assert_eq!(a.since, t0() - TimeDelta::hours(2), "startsAt stays when it began");
    assert_eq!(a.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(a.summary, "no cluster scan has started for 31h; limit 24h");
    assert!(hook.seen.lock().unwrap().is_empty(), "a channel without a resend interval gets only changes");

    for (secs, more) in [(30, 0), (59, 0), (60, 1), (90, 0), (121, 1)] {
        let r = d.resend_due(&store, t0() + TimeDelta::seconds(secs), far()).await.unwrap();
        assert_eq!(r.sent.len(), more, "at +{secs}s");
    }
    assert_eq!(am.seen.lock().unwrap().len(), 3);
    assert!(store.notifications(None, 10).await.unwrap().is_empty(), "resends are not in the delivery log");

    // Once it resolves, it is no longer re-sent.
    save_alert(&store, 1, RuleName::NoRecentScan, Resolved, true).await;
    let r = d.resend_due(&store, t0() + TimeDelta::seconds(300), far()).await.unwrap();
    assert_eq!(r, ResendReport::default());
    assert_eq!(am.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn resends_follow_each_channels_route_and_a_failed_one_waits_for_the_next_interval() {
    use crate::alerting::AlertState::Firing;
    let (_d, store) = store_with(&[]).await;
    save_alert(&store, 1, RuleName::NoRecentScan, Firing, true).await;
    save_alert(&store, 2, RuleName::StuckRunning, Firing, true).await;
    let (picky, picky_channel) = forgetful("picky", 0);
    let (down, down_channel) = forgetful("down", 1);
    fn only_stuck(n: &AlertNotice) -> bool {
        n.rule == RuleName::StuckRunning
    }
    let routes: Vec<Arc<dyn Route>> =
        vec![Arc::new(RouteTo("picky", only_stuck)), Arc::new(RouteTo("down", everything))];
    let d = Dispatcher::new(vec![picky_channel, down_channel], Duration::from_secs(3600)).with_routes(routes);

    let r = d.resend_due(&store, t0(), far()).await.unwrap();
    assert_eq!(r.sent, vec![("picky".to_string(), 1)]);
    assert_eq!(r.failed, vec![("down".to_string(), "HTTP 503".to_string())]);
    assert_eq!(picky.seen.lock().unwrap()[0].alerts[0].rule, RuleName::StuckRunning);
    assert_eq!(down.seen.lock().unwrap()[0].alerts.len(), 2);
    // Not hammered every second while down: the next try is an interval later.
    assert_eq!(d.resend_due(&store, t0() + TimeDelta::seconds(1), far()).await.unwrap(), ResendReport::default());
    let r = d.resend_due(&store, t0() + TimeDelta::seconds(60), far()).await.unwrap();
    assert_eq!(r.sent, vec![("down".to_string(), 2), ("picky".to_string(), 1)]);
    // A clock stepped back does not hold resends until it catches up.
    let r = d.resend_due(&store, t0() - TimeDelta::hours(1), far()).await.unwrap();
    assert_eq!(r.sent.len(), 2);
}
