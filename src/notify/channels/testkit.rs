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
    Notification {
        id: "ntf-0001".to_string(),
        channel: "test".to_string(),
        created_at: t0(),
        alerts,
        group_labels: Default::default(),
    }
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

/// The head of a hostile task name: mentions in every service's syntax, markup, a script.
pub const HOSTILE_NAME_HEAD: &str =
    "<!channel> @all <at id=all></at> **bold** [x](http://evil) <script>alert(1)</script>";

/// What must never reach a service as it was written: it would mention people or turn into markup.
const MENTIONS: [&str; 10] = [
    "<!channel>",
    "<!here>",
    "<@U024BE7LH>",
    "<at id=all>",
    "<at user_id",
    "@all",
    "@所有人",
    "@13800138000",
    "<script>",
    "<font color=\"warning\">red",
];
/// Markup in the hostile context that a markdown renderer would act on.
pub const MARKDOWN: &[&str] = &["**bold**", "**boom**", "[x](", "[click](", "<b>", "`rm -rf`", "_it_"];
/// The same for Slack mrkdwn, whose links are `<url|text>` (covered by the mentions): `[x](…)` is text there.
pub const MRKDWN: &[&str] = &["**bold**", "**boom**", "*bold*", "<b>", "`rm -rf`", "_it_"];

/// A context whose every HSS-set text is hostile: mentions, markup, newlines, 10 KB of text; one failed cluster is
/// benign (`prod-cce-beijing`), 6 failed in all.
pub fn hostile_context() -> crate::model::AlertContext {
    use crate::model::{AlertContext, FailedResource, TaskInfo};
    AlertContext {
        task: Some(TaskInfo {
            task_id: "task-7f3a".to_string(),
            task_name: format!("{HOSTILE_NAME_HEAD}\n\r\t{}", "A".repeat(10 * 1024)),
            task_type: TaskType::ClusterScan,
            trigger_type: "manual".to_string(),
            task_status: "finished".to_string(),
            start_time: Some(t0().timestamp_millis() - 3_600_000),
            end_time: Some(t0().timestamp_millis() - 600_000),
            estimated_minutes: None,
            scanning: 0,
            success: 3,
            failed: 2,
        }),
        failed: vec![
            FailedResource {
                name: "<@U024BE7LH> **evil-cluster**\n<!here>".to_string(),
                id: Some("c-1".to_string()),
                kind: Some("cce".to_string()),
                failed_reason: format!(
                    "**boom** _it_ <b>x</b> `rm -rf` <font color=\"warning\">red</font> <!here> @所有人 @13800138000 \
                     <at user_id=\"all\">所有人</at> \
                     [click](http://evil) | a | b |\n# heading\n> quote\u{202E}{}",
                    "R".repeat(5000)
                ),
            },
            FailedResource {
                name: "prod-cce-beijing".to_string(),
                id: Some("c-2".to_string()),
                kind: Some("cce".to_string()),
                failed_reason: "the agent is offline".to_string(),
            },
        ],
        failed_total: 6,
        unavailable: None,
    }
}

/// A context HSS could not give: the reason only.
pub fn unavailable_context() -> crate::model::AlertContext {
    crate::model::AlertContext { unavailable: Some("API budget exhausted".to_string()), ..Default::default() }
}

/// One firing alert carrying `context`.
pub fn with_context(context: crate::model::AlertContext) -> Notification {
    let mut n = one();
    n.alerts[0].context = Some(context);
    n
}

/// `text` — a message as the service gets it — shows the hostile context's facts in `language`, and none of its
/// mentions, none of the `markup` the service would render, no control characters and no unbounded text.
pub fn assert_hostile_context_is_inert(text: &str, language: crate::notify::Language, markup: &[&str]) {
    use crate::notify::message::{MAX_NAME_CHARS, MAX_REASON_CHARS};
    for token in MENTIONS {
        assert!(!text.contains(token), "{token:?} got through:\n{text}");
    }
    for token in markup {
        assert!(!text.contains(token), "{token:?} got through:\n{text}");
    }
    assert!(!text.contains('\r') && !text.contains('\t') && !text.contains('\u{202E}'), "{text}");
    assert!(!text.contains("\n# heading") && !text.contains("\n> quote"), "{text}");
    assert!(!text.contains(&"A".repeat(MAX_NAME_CHARS)) && text.contains("AAA…"), "name not cut:\n{text}");
    assert!(!text.contains(&"R".repeat(MAX_REASON_CHARS)) && text.contains("RRR…"), "reason not cut:\n{text}");
    assert!(text.len() < 8 * 1024, "{} bytes", text.len());
    for want in ["task-7f3a", "prod-cce-beijing", "the agent is offline"] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    let wants: &[&str] = match language {
        crate::notify::Language::En => &["0 scanning, 3 succeeded, 2 failed", "manual", "finished", "and 4 more"],
        crate::notify::Language::ZhCn => &["扫描中 0,成功 3,失败 2", "手动", "已完成", "另有 4 个失败集群"],
    };
    for want in wants {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
}

/// `text` says there is no task context, and why, in `language`.
pub fn assert_says_context_unavailable(text: &str, language: crate::notify::Language) {
    let want = match language {
        crate::notify::Language::En => "No task details",
        crate::notify::Language::ZhCn => "无任务详情",
    };
    assert!(text.contains(want) && text.contains("API budget exhausted"), "{text}");
}
