//! Test-only helpers shared by the channel tests: notifications of any size, a client, channel settings aimed at a
//! mock server on 127.0.0.1, and a fixed clock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use url::Url;

use super::{Common, http_client};
use crate::alerting::Event;
use crate::clock::ManualClock;
use crate::model::{SeriesKey, TaskType};
use crate::notify::{AlertNotice, Notification};
use crate::rules::{RuleName, Severity};

/// The fixed "now" of channel tests: 2025-04-22 08:04:11 UTC.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, 22, 8, 4, 11).unwrap()
}

pub fn client() -> reqwest::Client {
    http_client(Duration::from_secs(2), Duration::from_secs(10)).unwrap()
}

/// Settings for a channel named `test` posting to `url`, on a clock stopped at [`t0`].
pub fn common(url: Url) -> Common {
    let mut c = Common::new("test", url, client());
    c.clock = ManualClock::new(t0());
    c.tz = chrono_tz::Asia::Shanghai;
    c.timeout = Duration::from_secs(5);
    c
}

/// Alert number `i`: rules, severities and task types vary with `i`; every alert has a few labels.
pub fn notice(i: usize, event: Event) -> AlertNotice {
    let rule = RuleName::ALL[i % RuleName::ALL.len()];
    let task_type = TaskType::ALL[i % 2];
    let labels: BTreeMap<String, String> =
        [("env", "prod".to_string()), ("team", "secops".to_string()), ("owner", format!("owner-{i}@example.com"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    AlertNotice {
        fingerprint: format!("{i:016x}"),
        rule,
        severity: if i.is_multiple_of(3) { Severity::Critical } else { Severity::Warning },
        event,
        series: SeriesKey {
            target: format!("prod-cn-north-4-cluster-{i:03}"),
            account: "prod".to_string(),
            region: "cn-north-4".to_string(),
            project_id: "0123456789abcdef0123456789abcdef".to_string(),
            enterprise_project_id: Some("all_granted_eps".to_string()),
            task_type,
        },
        labels,
        summary: format!("no {} has started for 31h; limit 24h", task_type.human()),
        value: "31h".to_string(),
        since: t0() - chrono::TimeDelta::hours(7),
        at: t0(),
        context: None,
    }
}

pub fn notification(alerts: Vec<AlertNotice>) -> Notification {
    Notification { id: "ntf-0001".to_string(), channel: "test".to_string(), created_at: t0(), alerts }
}

/// `n` firing alerts in one notification.
pub fn batch(n: usize) -> Notification {
    notification((0..n).map(|i| notice(i, Event::Firing)).collect())
}

/// One firing alert.
pub fn one() -> Notification {
    notification(vec![notice(0, Event::Firing)])
}

/// A URL on 127.0.0.1 where nothing listens: the port was just bound and released.
pub async fn refused_url() -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Url::parse(&format!("http://{addr}/hook/0123456789abcdef0123456789")).unwrap()
}
