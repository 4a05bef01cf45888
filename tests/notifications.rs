//! Notification delivery end to end: the real binary, the simulator, and local receivers that answer like the real
//! services. A receiver that is down gets the same notification (same webhook-id) until it is back, exactly once
//! delivered; a kill with notifications pending loses nothing; 50 alerts of one cycle are one message per channel.

mod common;

use std::time::Duration;

use common::*;

/// `n` series that fail with 503 (so `poll_failing` fires on the first poll), one target per project.
fn failing_setup(sb: &Sandbox, n: usize, channels: &str) -> SimServer {
    let mut scenario = scenario_head();
    let mut config = aksk_account("acct", "SW_AK", "SW_SK");
    for i in 0..n {
        let project = format!("p{i:03}");
        scenario += &series(&project, "cluster_scan", None, "fault = \"server_error\"\nstatus = 503");
        config += &target(&format!("t{i:03}"), "acct", "{SIM}", &project, &["cluster_scan"], None);
    }
    let sim = SimServer::start(&scenario);
    let config = config.replace("{SIM}", &sim.url);
    sb.write_config(&format!(
        "[schedule]\ninterval = \"1m\"\n[rules.poll_failing]\nafter = 1\n[alerting]\nmax_delivery_age = \"1h\"\n{config}\n{channels}"
    ));
    sim
}

fn webhook(url: &str) -> String {
    format!("[[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\n")
}

fn notifications(sb: &Sandbox) -> Vec<serde_json::Value> {
    let run = sb.run(&["notifications", "--format", "json"]);
    run.expect_code(0);
    parse_rows(&run.stdout)
}

#[test]
fn a_receiver_that_is_down_gets_the_notification_once_it_is_back_exactly_once() {
    let sb = Sandbox::new();
    let rx = Receiver::start();
    let _sim = failing_setup(&sb, 1, &webhook(&rx.url));
    rx.answer(Answer::Unavailable);
    // Three rounds against a receiver that is down; each later round is a minute on (past any backoff).
    for minute in 0..3 {
        let offset = format!("{minute}m");
        sb.run(&["--clock-offset", &offset, "poll", "--deliver-timeout", "2s"]).expect_code(1);
    }
    let down = rx.received();
    assert!(down.len() >= 3, "retried every round: {down:?}");
    assert_eq!(notifications(&sb)[0]["status"], "pending");

    rx.answer(Answer::Ok);
    sb.run(&["--clock-offset", "10m", "poll", "--deliver-timeout", "2s"]);
    sb.run(&["--clock-offset", "20m", "poll", "--deliver-timeout", "2s"]);
    let all = rx.received();
    let id = all[0].webhook_id.clone().expect("webhook-id on every attempt");
    assert!(all.iter().all(|r| r.webhook_id.as_deref() == Some(id.as_str())), "one id across retries: {all:?}");
    let delivered: Vec<_> = all.iter().filter(|r| r.answer == Answer::Ok).collect();
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    assert_eq!(delivered[0].body["status"], "firing");
    assert_eq!(delivered[0].body["alerts"][0]["labels"]["alertname"], "poll_failing");
    let log = notifications(&sb);
    assert_eq!(log.len(), 1, "the later polls raised nothing new: {log:?}");
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["id"], id.as_str());
    assert!(log[0]["attempts"].as_u64().unwrap() >= 4);
}

#[test]
fn a_kill_with_a_delivery_in_flight_loses_nothing() {
    let sb = Sandbox::new();
    let rx = Receiver::start();
    let _sim = failing_setup(&sb, 1, &webhook(&rx.url));
    rx.answer(Answer::Hang);
    let mut child = sb.spawn(&["poll", "--deliver-timeout", "50s"]);
    // Wait until the notification is on the wire, then kill -9.
    rx.arrivals.recv_timeout(Duration::from_secs(30)).expect("the delivery reached the receiver");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = notifications(&sb);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "pending", "still pending after the kill");

    rx.answer(Answer::Ok);
    sb.run(&["--clock-offset", "5m", "poll", "--deliver-timeout", "10s"]);
    let log = notifications(&sb);
    assert_eq!(log[0]["status"], "delivered");
    let got = rx.received();
    assert_eq!(got.iter().filter(|r| r.answer == Answer::Ok).count(), 1);
    assert!(got.iter().all(|r| r.webhook_id == got[0].webhook_id), "the retry after the restart reuses the id");
}

#[test]
fn fifty_alerts_in_one_cycle_are_one_message_per_channel() {
    let sb = Sandbox::new();
    let hook = Receiver::start();
    let slack = Receiver::start();
    let channels = format!(
        "{}\n[[channels]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}/services/T/B/x\"\n",
        webhook(&hook.url),
        slack.url
    );
    let _sim = failing_setup(&sb, 50, &channels);
    sb.run(&["poll"]).expect_code(1);
    let h = hook.received();
    assert_eq!(h.len(), 1, "one webhook message");
    assert_eq!(h[0].body["alerts"].as_array().unwrap().len(), 50);
    let s = slack.received();
    assert_eq!(s.len(), 1, "one Slack message");
    let text = serde_json::to_string(&s[0].body).unwrap();
    assert!(text.len() < 40_000, "within Slack's limit");
    let log = notifications(&sb);
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|n| n["status"] == "delivered" && n["fingerprints"].as_array().unwrap().len() == 50));
}

/// `notify-test` must never look like a real alert on an on-call channel: it says it is a test in the title, is
/// severity info with label test="true", has a fingerprint no real alert can have, and names a made-up target
/// unless one is asked for.
#[test]
fn notify_test_says_it_is_a_test_and_can_never_be_taken_for_a_real_alert() {
    let sb = Sandbox::new();
    let rx = Receiver::start();
    let _sim = failing_setup(&sb, 1, &webhook(&rx.url));
    let real_fingerprints = || -> Vec<String> {
        sb.run(&["poll"]);
        let alerts = parse_rows(&sb.run(&["alerts", "--all", "--format", "json"]).expect_code(0).stdout);
        alerts.iter().map(|a| a["fingerprint"].as_str().unwrap_or_default().to_string()).collect()
    };
    let real = real_fingerprints();
    assert!(!real.is_empty(), "a real alert exists to compare with");

    sb.run(&["notify-test", "--channel", "hook"]).expect_code(0);
    let sent = rx.received();
    let test = &sent.last().expect("the test message arrived").body;
    let alert = &test["alerts"][0];
    assert_eq!(alert["labels"]["test"], "true", "{test:#}");
    assert_eq!(alert["labels"]["severity"], "info", "{test:#}");
    assert_eq!(alert["labels"]["target"], "scanwatch-notify-test", "a made-up target: {test:#}");
    let fingerprint = alert["fingerprint"].as_str().unwrap_or_default();
    assert!(fingerprint.starts_with("test-") && !real.iter().any(|f| f == fingerprint), "{fingerprint}");
    let title = test["title"].as_str().unwrap_or_default();
    assert!(title.starts_with("[TEST] "), "the title says it is a test: {title}");

    // With --target, the target's labels, still a test.
    sb.run(&["notify-test", "--channel", "hook", "--target", "t000"]).expect_code(0);
    let with_target = rx.received().last().expect("second test message").body.clone();
    assert_eq!(with_target["alerts"][0]["labels"]["target"], "t000");
    assert_eq!(with_target["alerts"][0]["labels"]["test"], "true");
    assert!(with_target["title"].as_str().unwrap_or_default().starts_with("[TEST] "));
}
