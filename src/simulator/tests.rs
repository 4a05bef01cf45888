//! The simulator over real HTTP on 127.0.0.1, driven by reqwest and signed with the production signer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::hss::signer::{self, SignableRequest};

const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "exampleSecretKey0000000000000000000000001";
const P1: &str = "0123456789abcdef0123456789abcdef";

fn scenario(extra: &str) -> String {
    format!(
        r#"
[simulator]
calls_per_minute = 0

[[credentials]]
ak = "{AK}"
sk = "{SK}"

[[credentials]]
ak = "TEMPAK"
sk = "TEMPSK"
security_token = "sts-token-value"

[[users]]
domain = "acme"
name = "watcher"
password = "s3cret"

[[tokens]]
token = "static-token-1"

[[series]]
project_id = "{P1}"
task_type = "cluster_scan"
  [[series.steps]]
  at = "0s"
  total_num = 10
  running_num = 0
  last_task_age = "1h"
  [[series.steps]]
  at = "2h"
  total_num = 20
  running_num = 1
  last_task_at = "1h"

[[series]]
project_id = "{P1}"
task_type = "iac_scan"
  [[series.steps]]
  at = "0s"
  total_num = 5
  running_num = 0
  last_task_at = "0s"
{extra}
"#
    )
}

struct Harness {
    sim: Simulator,
    base: String,
    host: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

async fn spawn(toml: &str) -> Harness {
    spawn_with(toml, SimulatorOptions::default()).await
}

async fn spawn_with(toml: &str, options: SimulatorOptions) -> Harness {
    let sim = Simulator::with_options(Scenario::from_toml_str(toml).unwrap(), options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let (sim, shutdown) = (sim.clone(), shutdown.clone());
        async move { sim.serve(listener, shutdown).await }
    });
    let client = crate::tls::client_builder().no_proxy().build().unwrap();
    Harness { sim, base: format!("http://{host}"), host, client, shutdown, server }
}

impl Harness {
    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }

    /// A task-statistics GET signed like the SDK signs it.
    fn signed(
        &self,
        ak: &str,
        sk: &str,
        query: &[(&str, &str)],
        date: DateTime<Utc>,
        extra: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let path = format!("/v5/{P1}/common/task-statistics");
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("Host".into(), self.host.clone()),
            ("User-Agent".into(), "scanwatch-test".into()),
            ("X-Project-Id".into(), P1.into()),
            ("X-Sdk-Date".into(), date.format(signer::SDK_DATE_FORMAT).to_string()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let req = SignableRequest { method: "GET", path: &path, query: &query, headers: &headers, body: b"" };
        let signature = signer::sign(&req, ak, sk).unwrap();
        let qs = signer::canonical_query(&query);
        let url = if qs.is_empty() { format!("{}{path}", self.base) } else { format!("{}{path}?{qs}", self.base) };
        let mut builder = self.client.get(url).header("Authorization", signature.authorization);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        builder
    }

    /// A POST to `path` signed over `signed_body` like the SDK signs it, sending `sent_body` (the same bytes for an
    /// honest client).
    fn signed_post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        signed_body: &[u8],
        sent_body: &[u8],
    ) -> reqwest::RequestBuilder {
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("Host".into(), self.host.clone()),
            ("User-Agent".into(), "scanwatch-test".into()),
            ("X-Project-Id".into(), P1.into()),
            ("X-Sdk-Date".into(), self.sim.now().format(signer::SDK_DATE_FORMAT).to_string()),
        ];
        let req = SignableRequest { method: "POST", path, query: &query, headers: &headers, body: signed_body };
        let signature = signer::sign(&req, AK, SK).unwrap();
        let qs = signer::canonical_query(&query);
        let url = if qs.is_empty() { format!("{}{path}", self.base) } else { format!("{}{path}?{qs}", self.base) };
        let mut builder =
            self.client.post(url).header("Authorization", signature.authorization).body(sent_body.to_vec());
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        builder
    }

    /// ListTasks for P1 with this body and query, honestly signed.
    async fn list_tasks(&self, query: &[(&str, &str)], body: Value) -> (u16, Value) {
        let body = body.to_string();
        let path = format!("/v5/{P1}/common/tasks/batch-query");
        json_of(self.signed_post(&path, query, body.as_bytes(), body.as_bytes()).send().await.unwrap()).await
    }

    /// ListTaskResources for a task of P1.
    async fn list_resources(&self, task_id: &str, query: &[(&str, &str)], body: Value) -> (u16, Value) {
        let body = body.to_string();
        let path = format!("/v5/{P1}/common/tasks/{task_id}/resources/batch-query");
        json_of(self.signed_post(&path, query, body.as_bytes(), body.as_bytes()).send().await.unwrap()).await
    }

    fn good(&self, task_type: &str) -> reqwest::RequestBuilder {
        self.signed(AK, SK, &[("task_type", task_type)], self.sim.now(), &[])
    }

    fn with_token(&self, token: &str, task_type: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}/v5/{P1}/common/task-statistics?task_type={task_type}", self.base))
            .header("X-Auth-Token", token)
    }
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn assert_near(got: &Value, want_ms: i64) {
    let got = got.as_i64().unwrap_or_else(|| panic!("not an integer: {got}"));
    assert!((got - want_ms).abs() < 5_000, "got {got}, want about {want_ms}");
}

#[tokio::test]
async fn a_correctly_signed_call_returns_the_step_values() {
    let h = spawn(&scenario("")).await;
    let resp = h.good("cluster_scan").send().await.unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(request_id.len(), 32);
    assert!(request_id.chars().all(|c| c.is_ascii_hexdigit()));
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["total_num"].as_u64(), body["running_num"].as_u64()), (Some(10), Some(0)));
    assert_near(&body["last_task_start_time"], ms(h.sim.now()) - 3_600_000);

    let calls = h.sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].identity.as_deref(), Some(AK));
    assert_eq!((calls[0].status, calls[0].error_code.as_deref()), (Some(200), None));
    assert_eq!(calls[0].query, "task_type=cluster_scan");
    assert_eq!(calls[0].request_id, request_id);
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_sk_gets_401_with_our_canonical_request_in_the_message() {
    let h = spawn(&scenario("")).await;
    let resp = h.signed(AK, "not-the-sk", &[("task_type", "iac_scan")], h.sim.now(), &[]).send().await.unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_code"], "APIGW.0301");
    assert_eq!(body["request_id"], request_id.as_str());
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.starts_with("Incorrect IAM authentication information: verify aksk signature fail"), "{msg}");
    assert!(
        msg.contains(&format!("canonicalRequest: GET|/v5/{P1}/common/task-statistics/|task_type=iac_scan|")),
        "{msg}"
    );
    assert!(msg.contains("|content-type;host;user-agent;x-project-id;x-sdk-date|"), "{msg}");
    assert!(!msg.contains('\n'));
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_access_key_gets_401() {
    let h = spawn(&scenario("")).await;
    let (status, body) =
        json_of(h.signed("NOSUCHAK", SK, &[("task_type", "iac_scan")], h.sim.now(), &[]).send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));
    assert_eq!(h.sim.calls()[0].identity.as_deref(), Some("NOSUCHAK"));
    h.stop().await;
}

#[tokio::test]
async fn an_x_sdk_date_older_than_the_allowed_skew_is_rejected() {
    let h = spawn(&scenario("")).await;
    let old = h.sim.now() - chrono::Duration::minutes(16);
    let (status, body) = json_of(h.signed(AK, SK, &[("task_type", "iac_scan")], old, &[]).send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));
    assert!(body["error_msg"].as_str().unwrap().contains("request date is out of range"), "{body}");

    let fine = h.sim.now() - chrono::Duration::minutes(14);
    let resp = h.signed(AK, SK, &[("task_type", "iac_scan")], fine, &[]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn signed_headers_must_cover_host_and_the_date() {
    let h = spawn(&scenario("")).await;
    let date = h.sim.now().format(signer::SDK_DATE_FORMAT).to_string();
    let headers = vec![("X-Sdk-Date".to_string(), date.clone())];
    let path = format!("/v5/{P1}/common/task-statistics");
    let req = SignableRequest { method: "GET", path: &path, query: &[], headers: &headers, body: b"" };
    let sig = signer::sign(&req, AK, SK).unwrap();
    let resp = h
        .client
        .get(format!("{}{path}", h.base))
        .header("X-Sdk-Date", date)
        .header("Authorization", sig.authorization)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 401);
    assert!(body["error_msg"].as_str().unwrap().contains("SignedHeaders must include host"), "{body}");
    h.stop().await;
}

#[tokio::test]
async fn more_than_five_failed_signatures_lock_the_key_for_five_minutes() {
    let h = spawn(&scenario("")).await;
    let bad = || h.signed(AK, "wrong", &[("task_type", "iac_scan")], h.sim.now(), &[]);
    for i in 1..=5 {
        let (status, body) = json_of(bad().send().await.unwrap()).await;
        let msg = body["error_msg"].as_str().unwrap().to_string();
        assert_eq!(status, 401);
        assert!(msg.contains("verify aksk signature fail") && !msg.contains("locked"), "failure {i}: {msg}");
    }
    let (status, body) = json_of(bad().send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(body["error_msg"].as_str().unwrap().contains("locked"), "the 6th failure locks: {body}");

    let (status, body) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(body["error_msg"].as_str().unwrap().contains("locked"), "even a good signature is refused: {body}");

    h.sim.advance(Duration::from_secs(4 * 60));
    let (status, _) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_eq!(status, 401, "still locked after 4 minutes");

    h.sim.advance(Duration::from_secs(61));
    let (status, _) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_eq!(status, 200, "unlocked after 5 minutes");
    h.stop().await;
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let h = spawn(&scenario("")).await;
    let bad = || h.signed(AK, "wrong", &[("task_type", "iac_scan")], h.sim.now(), &[]);
    for _ in 0..5 {
        assert_eq!(bad().send().await.unwrap().status(), 401);
    }
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200);
    for _ in 0..5 {
        let (_, body) = json_of(bad().send().await.unwrap()).await;
        assert!(!body["error_msg"].as_str().unwrap().contains("locked"), "{body}");
    }
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn temporary_credentials_need_a_signed_matching_security_token() {
    let h = spawn(&scenario("")).await;
    let q = [("task_type", "iac_scan")];

    let (status, body) = json_of(h.signed("TEMPAK", "TEMPSK", &q, h.sim.now(), &[]).send().await.unwrap()).await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(body["error_msg"].as_str().unwrap().contains("X-Security-Token"), "{body}");

    let wrong = [("X-Security-Token", "other-token")];
    let (status, _) = json_of(h.signed("TEMPAK", "TEMPSK", &q, h.sim.now(), &wrong).send().await.unwrap()).await;
    assert_eq!(status, 401, "wrong token");

    // Sent but left out of SignedHeaders.
    let unsigned = h.signed("TEMPAK", "TEMPSK", &q, h.sim.now(), &[]).header("X-Security-Token", "sts-token-value");
    assert_eq!(unsigned.send().await.unwrap().status(), 401, "unsigned token");

    let right = [("X-Security-Token", "sts-token-value")];
    let (status, body) = json_of(h.signed("TEMPAK", "TEMPSK", &q, h.sim.now(), &right).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    h.stop().await;
}

#[tokio::test]
async fn the_security_token_never_comes_back_in_a_401_message() {
    let h = spawn(&scenario("")).await;
    let right = [("X-Security-Token", "sts-token-value")];
    let resp = h.signed("TEMPAK", "WRONGSK", &[("task_type", "iac_scan")], h.sim.now(), &right).send().await.unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 401);
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("canonicalRequest") && !msg.contains("sts-token-value"), "{msg}");
    h.stop().await;
}

fn login_body(password: &str) -> String {
    serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "domain": {"name": "acme"}, "name": "watcher", "password": password}}},
        "scope": {"project": {"name": "cn-north-4"}}}})
    .to_string()
}

#[tokio::test]
async fn an_iam_token_works_until_it_expires_on_the_simulator_clock() {
    let h = spawn(&scenario("")).await;
    let resp = h
        .client
        .post(format!("{}/v3/auth/tokens", h.base))
        .header("Content-Type", "application/json;charset=utf8")
        .body(login_body("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp.headers()["x-subject-token"].to_str().unwrap().to_string();
    let (_, body) = json_of(resp).await;
    let expires = body["token"]["expires_at"].as_str().unwrap();
    assert_eq!(expires.len(), "2026-01-02T03:04:05.000000Z".len(), "{expires}");
    let expires = DateTime::parse_from_rfc3339(expires).unwrap().with_timezone(&Utc);
    assert!((expires - h.sim.now() - chrono::Duration::hours(24)).num_seconds().abs() < 5);
    assert_eq!(body["token"]["methods"][0], "password");

    let (status, body) = json_of(h.with_token(&token, "cluster_scan").send().await.unwrap()).await;
    assert_eq!((status, body["total_num"].as_u64()), (200, Some(10)));
    assert_eq!(h.sim.calls().last().unwrap().identity.as_deref(), Some("acme/watcher"));

    h.sim.advance(Duration::from_secs(24 * 3600 + 1));
    let (status, body) = json_of(h.with_token(&token, "cluster_scan").send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0307")));
    assert_eq!(body["error_msg"], "The token must be updated");
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_password_gets_the_iam_401_and_a_malformed_login_a_400() {
    let h = spawn(&scenario("")).await;
    let url = format!("{}/v3/auth/tokens", h.base);
    let (status, body) = json_of(h.client.post(&url).body(login_body("nope")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}})
    );

    let (status, body) = json_of(h.client.post(&url).body("{\"auth\":").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    let no_scope = login_body("s3cret").replace("\"scope\"", "\"elsewhere\"");
    let (status, body) = json_of(h.client.post(&url).body(no_scope).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("scope"), "{body}");

    let calls = h.sim.calls();
    assert_eq!(calls.len(), 3, "IAM calls are logged too");
    assert_eq!((calls[0].identity.as_deref(), calls[0].status), (Some("acme/watcher"), Some(401)));
    assert_eq!(calls[1].status, Some(400));
    h.stop().await;
}

#[tokio::test]
async fn static_tokens_work_and_unknown_or_missing_credentials_do_not() {
    let h = spawn(&scenario("")).await;
    let (status, _) = json_of(h.with_token("static-token-1", "iac_scan").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(h.sim.calls()[0].identity.as_deref(), Some("token"));

    let (status, body) = json_of(h.with_token("forged", "iac_scan").send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));

    let url = format!("{}/v5/{P1}/common/task-statistics?task_type=iac_scan", h.base);
    let (status, body) = json_of(h.client.get(&url).send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));
    assert!(body["error_msg"].as_str().unwrap().contains("x-auth-token not found"));

    let both = h.good("iac_scan").header("X-Auth-Token", "static-token-1");
    assert_eq!(both.send().await.unwrap().status(), 401, "two credentials at once are refused");
    h.stop().await;
}

#[tokio::test]
async fn the_sixth_call_in_a_minute_is_throttled_until_the_window_slides() {
    let h = spawn(&scenario("").replace("calls_per_minute = 0", "calls_per_minute = 5")).await;
    for i in 0..5 {
        assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200, "call {i}");
    }
    let resp = h.good("iac_scan").send().await.unwrap();
    assert!(resp.headers().get("retry-after").is_none(), "the real gateway sends no Retry-After");
    let (status, body) = json_of(resp).await;
    assert_eq!((status, body["error_code"].as_str()), (429, Some("APIGW.0308")));
    assert_eq!(
        body["error_msg"],
        "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 minute"
    );
    // Another identity has its own budget.
    assert_eq!(h.with_token("static-token-1", "iac_scan").send().await.unwrap().status(), 200);

    h.sim.advance(Duration::from_secs(60));
    for i in 0..5 {
        assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200, "after the window, call {i}");
    }
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 429, "the refused call took no slot");
    h.stop().await;
}

#[tokio::test]
async fn steps_switch_when_the_clock_is_advanced() {
    let h = spawn(&scenario("")).await;
    let (_, before) = json_of(h.good("cluster_scan").send().await.unwrap()).await;
    assert_eq!((before["total_num"].as_u64(), before["running_num"].as_u64()), (Some(10), Some(0)));
    h.sim.advance(Duration::from_secs(2 * 3600));
    let (_, after) = json_of(h.good("cluster_scan").send().await.unwrap()).await;
    assert_eq!((after["total_num"].as_u64(), after["running_num"].as_u64()), (Some(20), Some(1)));
    h.stop().await;
}

#[tokio::test]
async fn last_task_age_moves_with_time_and_last_task_at_goes_stale() {
    let h = spawn(&scenario("")).await;
    let started = h.sim.now() - chrono::Duration::from_std(h.sim.scenario_time()).unwrap();
    let (_, alive) = json_of(h.good("cluster_scan").send().await.unwrap()).await;
    let (_, stale) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_near(&alive["last_task_start_time"], ms(h.sim.now()) - 3_600_000);
    assert_near(&stale["last_task_start_time"], ms(started));

    h.sim.advance(Duration::from_secs(3600));
    let (_, alive_later) = json_of(h.good("cluster_scan").send().await.unwrap()).await;
    let (_, stale_later) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_near(&alive_later["last_task_start_time"], ms(h.sim.now()) - 3_600_000);
    let moved = alive_later["last_task_start_time"].as_i64().unwrap() - alive["last_task_start_time"].as_i64().unwrap();
    assert!(moved >= 3_600_000, "an age keeps the task fresh: moved {moved}");
    assert_eq!(stale_later["last_task_start_time"], stale["last_task_start_time"], "a fixed time stays put");
    h.stop().await;
}

#[tokio::test]
async fn requests_the_scenario_does_not_cover_get_hss_errors() {
    let h = spawn(&scenario("")).await;
    let (status, body) = json_of(h.good("host_scan").send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("HSS.0001")));
    let (status, body) = json_of(h.signed(AK, SK, &[], h.sim.now(), &[]).send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("HSS.0001")), "task_type is mandatory");

    let other = "ffffffffffffffffffffffffffffffff";
    let resp = h.client.get(format!("{}/v5/{other}/common/task-statistics?task_type=iac_scan", h.base));
    let (status, body) = json_of(resp.header("X-Auth-Token", "static-token-1").send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (404, Some("HSS.0011")));

    let resp = h.client.get(format!("{}/v5/{P1}/common/elsewhere", h.base)).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let (status, body) = json_of(resp).await;
    assert_eq!((status, body["error_code"].as_str()), (404, Some("APIGW.0101")));
    h.stop().await;
}

#[tokio::test]
async fn an_enterprise_project_selects_its_own_series() {
    let extra = r#"
[[series]]
project_id = "0123456789abcdef0123456789abcdef"
task_type = "iac_scan"
enterprise_project_id = "all_granted_eps"
  [[series.steps]]
  at = "0s"
  total_num = 99
  running_num = 0
"#;
    let h = spawn(&scenario(extra)).await;
    let q = [("enterprise_project_id", "all_granted_eps"), ("task_type", "iac_scan")];
    let (_, body) = json_of(h.signed(AK, SK, &q, h.sim.now(), &[]).send().await.unwrap()).await;
    assert_eq!(body["total_num"].as_u64(), Some(99));
    let q = [("enterprise_project_id", "0"), ("task_type", "iac_scan")];
    let (_, body) = json_of(h.signed(AK, SK, &q, h.sim.now(), &[]).send().await.unwrap()).await;
    assert_eq!(body["total_num"].as_u64(), Some(5));
    h.stop().await;
}

/// One series per fault, told apart by `enterprise_project_id` (= the fault's name).
fn fault_scenario() -> String {
    let faults = [
        ("server_error", "status = 502"),
        ("server_error_json", "status = 503\n  body = \"json\""),
        ("throttled", "retry_after = 7"),
        ("slow", "delay = \"50ms\""),
        ("slow_forever", "delay = \"1h\""),
        ("malformed", ""),
        ("truncated", ""),
        ("oversized", "bytes = 200000"),
        ("wrong_types", ""),
        ("negative", ""),
        ("float", ""),
        ("missing_field", ""),
        ("null_field", ""),
        ("hss_error", "code = \"HSS.0013\"\n  message = \"insufficient permission\"\n  shape = \"nested\""),
        ("unauthorized", ""),
        ("forbidden", ""),
        ("not_found", ""),
        ("reset", ""),
    ];
    let mut toml = scenario("");
    for (name, options) in faults {
        let fault = name.trim_end_matches("_json").trim_end_matches("_forever");
        toml.push_str(&format!(
            "\n[[series]]\nproject_id = \"{P1}\"\ntask_type = \"cluster_scan\"\nenterprise_project_id = \"{name}\"\n  \
             [[series.steps]]\n  at = \"0s\"\n  fault = \"{fault}\"\n  total_num = 17\n  running_num = 1\n  {options}\n"
        ));
    }
    toml
}

async fn fault(h: &Harness, name: &str) -> reqwest::Response {
    let q = [("enterprise_project_id", name), ("task_type", "cluster_scan")];
    h.signed(AK, SK, &q, h.sim.now(), &[]).send().await.unwrap()
}

async fn text(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn every_fault_produces_its_documented_response() {
    let h = spawn(&fault_scenario()).await;

    let (status, ct, body) = text(fault(&h, "server_error").await).await;
    assert_eq!(status, 502);
    assert!(ct.starts_with("text/html") && body.contains("502 Bad Gateway"), "{ct} {body}");

    let (status, body) = json_of(fault(&h, "server_error_json").await).await;
    assert_eq!((status, body["error_code"].as_str()), (503, Some("APIGW.0202")));

    let resp = fault(&h, "throttled").await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, body) = json_of(resp).await;
    assert_eq!((status, body["error_code"].as_str()), (429, Some("APIGW.0308")));

    let (status, ct, body) = text(fault(&h, "malformed").await).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html") && body.starts_with("<html>"), "{body}");

    let (status, _, body) = text(fault(&h, "truncated").await).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"total_num\":17") && serde_json::from_str::<Value>(&body).is_err(), "{body}");

    let resp = fault(&h, "oversized").await;
    assert_eq!(resp.content_length(), Some(200_000));
    let (status, body) = json_of(resp).await;
    assert_eq!((status, body["total_num"].as_u64()), (200, Some(17)));

    let (_, _, body) = text(fault(&h, "wrong_types").await).await;
    assert!(body.contains(r#""total_num":"17""#), "{body}");
    let (_, _, body) = text(fault(&h, "negative").await).await;
    assert!(body.contains(r#""running_num":-1"#), "{body}");
    let (_, _, body) = text(fault(&h, "float").await).await;
    assert!(body.contains(r#""total_num":17.5"#), "{body}");
    let (_, _, body) = text(fault(&h, "missing_field").await).await;
    assert!(!body.contains("total_num") && body.contains("running_num"), "{body}");
    let (_, _, body) = text(fault(&h, "null_field").await).await;
    assert!(body.contains(r#""total_num":null"#), "{body}");

    let (status, body) = json_of(fault(&h, "hss_error").await).await;
    assert_eq!(status, 400);
    assert_eq!(body, serde_json::json!({"error": {"code": "HSS.0013", "message": "insufficient permission"}}));

    let (status, body) = json_of(fault(&h, "unauthorized").await).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));
    let (status, body) = json_of(fault(&h, "forbidden").await).await;
    assert_eq!((status, body["error_code"].as_str()), (403, Some("APIGW.0306")));
    let (status, ct, _) = text(fault(&h, "not_found").await).await;
    assert_eq!(status, 404);
    assert!(ct.starts_with("text/html"));

    let q = [("enterprise_project_id", "reset"), ("task_type", "cluster_scan")];
    let err = h.signed(AK, SK, &q, h.sim.now(), &[]).send().await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "no response at all: {err:?}");
    let last = h.sim.calls().pop().unwrap();
    assert_eq!((last.status, last.identity.as_deref()), (None, Some(AK)));

    // The server keeps serving after a reset.
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn reset_closes_the_connection_without_sending_a_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = spawn(&fault_scenario()).await;
    let q = [("enterprise_project_id", "reset"), ("task_type", "cluster_scan")];
    let req = h.signed(AK, SK, &q, h.sim.now(), &[]).build().unwrap();
    let mut head = format!("GET {}?{} HTTP/1.1\r\n", req.url().path(), req.url().query().unwrap());
    for (name, value) in req.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&h.host).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    // EOF or a connection reset both end the read; either way not one byte of a response came.
    let _ = stream.read_to_end(&mut got).await;
    assert!(got.is_empty(), "nothing was answered: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(h.sim.calls().last().unwrap().status, None);
    h.stop().await;
}

#[tokio::test]
async fn slow_answers_the_values_after_the_delay() {
    let h = spawn(&fault_scenario()).await;
    let started = std::time::Instant::now();
    let (status, body) = json_of(fault(&h, "slow").await).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!((status, body["total_num"].as_u64(), body["running_num"].as_u64()), (200, Some(17), Some(1)));

    let q = [("enterprise_project_id", "slow_forever"), ("task_type", "cluster_scan")];
    let err = h.signed(AK, SK, &q, h.sim.now(), &[]).timeout(Duration::from_millis(200)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // Shutdown does not wait an hour for the slow answer.
    h.stop().await;
}

#[tokio::test]
async fn faults_come_after_auth_and_count_toward_the_rate_limit() {
    let h = spawn(&fault_scenario().replace("calls_per_minute = 0", "calls_per_minute = 2")).await;
    let (status, _) = json_of(
        h.signed(
            AK,
            "wrong",
            &[("task_type", "cluster_scan"), ("enterprise_project_id", "forbidden")],
            h.sim.now(),
            &[],
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "a bad signature never reaches the fault");
    assert_eq!(fault(&h, "forbidden").await.status(), 403);
    assert_eq!(fault(&h, "server_error").await.status(), 502);
    assert_eq!(fault(&h, "forbidden").await.status(), 429, "the two faults used the budget");
    h.stop().await;
}

#[tokio::test]
async fn the_control_api_advances_and_reports_the_clock_and_the_calls() {
    let h = spawn(&scenario("")).await;
    // The control API reports milliseconds; compare at that precision, or a fast answer reads as 5399.9s.
    let before = chrono::SubsecRound::trunc_subsecs(h.sim.now(), 3);
    let resp = h.client.post(format!("{}/__sim/advance", h.base)).body(r#"{"by":"90m"}"#).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200);
    let now = DateTime::parse_from_rfc3339(body["now"].as_str().unwrap()).unwrap().with_timezone(&Utc);
    let moved = (now - before).num_seconds();
    assert!((5400..5405).contains(&moved), "moved {moved}s");

    let (_, body) = json_of(h.client.get(format!("{}/__sim/now", h.base)).send().await.unwrap()).await;
    let reported = DateTime::parse_from_rfc3339(body["now"].as_str().unwrap()).unwrap().with_timezone(&Utc);
    assert!((reported - now).num_seconds().abs() < 5);

    let (status, body) =
        json_of(h.client.post(format!("{}/__sim/advance", h.base)).body(r#"{"by":"soon"}"#).send().await.unwrap())
            .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("90m"), "{body}");

    h.good("iac_scan").send().await.unwrap();
    let (_, calls) = json_of(h.client.get(format!("{}/__sim/calls", h.base)).send().await.unwrap()).await;
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1, "control calls are not logged: {calls:?}");
    assert_eq!(calls[0]["identity"], AK);
    assert_eq!(calls[0]["status"], 200);
    assert_eq!(calls[0]["method"], "GET");
    assert_eq!(calls[0]["path"], format!("/v5/{P1}/common/task-statistics"));
    let at = DateTime::parse_from_rfc3339(calls[0]["at"].as_str().unwrap()).unwrap();
    assert!(at.with_timezone(&Utc) >= now, "call times are simulator times");
    h.stop().await;
}

#[tokio::test]
async fn run_serves_a_scenario_file_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, scenario("")).unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    // Already cancelled: binds, announces, and returns cleanly.
    run("127.0.0.1:0".parse().unwrap(), &path, shutdown).await.unwrap();

    let missing = run("127.0.0.1:0".parse().unwrap(), &dir.path().join("nope.toml"), CancellationToken::new()).await;
    assert!(missing.unwrap_err().to_string().contains("nope.toml"));
}

#[tokio::test]
async fn an_injected_clock_is_simulator_time_and_the_call_log_keeps_as_many_calls_as_told() {
    let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let clock = crate::clock::ManualClock::new(start);
    let h = spawn_with(&scenario(""), SimulatorOptions { clock: clock.clone(), max_call_records: 2 }).await;
    assert_eq!(h.sim.now(), start);
    for _ in 0..3 {
        assert_eq!(h.good("cluster_scan").send().await.unwrap().status(), 200);
        clock.advance(Duration::from_secs(10));
    }
    let at: Vec<_> = h.sim.calls().iter().map(|c| (c.at - start).num_seconds()).collect();
    assert_eq!(at, [10, 20], "the oldest call was dropped; times are the injected clock's");
    h.stop().await;
}

/// The scenario with tasks: on the cluster series a nightly scan created at 5m, running 10m–40m, that ends with one
/// cluster failed, plus an older manual scan and one that never ends; on the IaC series one finished scan.
fn task_scenario(series_extra: &str) -> String {
    let base = scenario("");
    // Insert the tasks right after each series' steps: TOML appends [[series.tasks]] to the latest [[series]].
    let (cluster, iac) = base.split_at(
        base.find("[[series]]\nproject_id = \"0123456789abcdef0123456789abcdef\"\ntask_type = \"iac_scan\"").unwrap(),
    );
    let cluster = cluster.replacen(
        "task_type = \"cluster_scan\"\n",
        &format!("task_type = \"cluster_scan\"\n{series_extra}\n"),
        1,
    );
    format!(
        r#"{cluster}
  [[series.tasks]]
  task_id = "t-old"
  task_name = "first scan"
  trigger_type = "manual"
  start = "0s"
  end = "1m"
  estimated_minutes = 1
  scan_types = ["cluster_vul"]
  success = 4
  [[series.tasks]]
  task_id = "t-nightly"
  task_name = "Nightly cluster scan"
  created = "5m"
  start = "10m"
  end = "40m"
  estimated_minutes = 20
  scan_types = ["cluster_vul", "benchmark"]
  success = 7
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-1"
    cluster_id = "c-1"
    cluster_type = "cce"
    cluster_version = "v1.28"
    scan_status = "failed"
    scan_details = [
      {{ scan_type = "cluster_vul", status = "failed", failed_reason = "kube-apiserver unreachable: connection timed out" }},
      {{ scan_type = "benchmark", status = "success" }},
    ]
    [[series.tasks.clusters]]
    cluster_name = "prod-cce-2"
    cluster_id = "c-2"
    scan_status = "success"
  [[series.tasks]]
  task_id = "t-stuck"
  task_name = "stuck scan"
  start = "50m"
  estimated_minutes = 5
    [[series.tasks.clusters]]
    cluster_name = "idc-1"
    cluster_type = "self_built_idc"
    scan_status = "scanning"
{iac}
  [[series.tasks]]
  task_id = "t-iac"
  task_name = "IaC scan"
  start = "0s"
  end = "2m"
  file_type = "k8s_yaml"
    [[series.tasks.files]]
    file_name = "deploy.yaml"
    file_id = "f-1"
    chart_name = "web"
    scan_status = "failed"
    failed_reason = "yaml: line 3: mapping values are not allowed here"
    [[series.tasks.files]]
    file_name = "svc.yaml"
    scan_status = "success"
"#
    )
}

fn cluster_body(extra: Value) -> Value {
    let mut body = serde_json::json!({ "task_type": "cluster_scan" });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

fn ids(body: &Value) -> Vec<String> {
    body["data_list"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_tasks_follows_a_task_through_its_life() {
    let h = spawn(&task_scenario("")).await;
    let started = h.sim.now() - chrono::Duration::from_std(h.sim.scenario_time()).unwrap();
    let at = |mins: i64| ms(started) + mins * 60_000;
    let nightly =
        |body: &Value| body["data_list"].as_array().unwrap().iter().find(|t| t["task_id"] == "t-nightly").cloned();

    let (status, body) = h.list_tasks(&[], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["total_num"].as_u64(), ids(&body)), (Some(1), vec!["t-old".to_string()]), "not created yet");
    let old = &body["data_list"][0];
    assert_eq!(old["task_status"], "running", "t-old runs 0s–1m");
    assert_eq!(old["trigger_type"], "manual");
    assert_eq!(old["cluster_scan_info"]["scanning_cluster_num"], 4, "{old}");
    assert!(old.get("end_time").is_none() && old.get("iac_scan_info").is_none(), "{old}");

    h.sim.advance(Duration::from_secs(5 * 60));
    let (_, body) = h.list_tasks(&[], cluster_body(serde_json::json!({}))).await;
    let t = nightly(&body).expect("created at 5m");
    assert_eq!((t["task_status"].as_str(), t["estimated_time"].as_u64()), (Some("ready"), Some(20)));
    assert_eq!(t["start_time"].as_i64(), Some(at(10)), "the planned start");

    h.sim.advance(Duration::from_secs(5 * 60 + 5 * 60));
    let (_, body) = h.list_tasks(&[], cluster_body(serde_json::json!({}))).await;
    let t = nightly(&body).unwrap();
    assert_eq!((t["task_status"].as_str(), t["estimated_time"].as_u64()), (Some("running"), Some(15)));
    let info = &t["cluster_scan_info"];
    assert_eq!(info["scan_type_list"], serde_json::json!(["cluster_vul", "benchmark"]));
    assert_eq!(
        (
            info["scanning_cluster_num"].as_u64(),
            info["success_cluster_num"].as_u64(),
            info["failed_cluster_num"].as_u64()
        ),
        (Some(8), Some(0), Some(0)),
        "while running, everything is scanning"
    );

    h.sim.advance(Duration::from_secs(25 * 60));
    let (_, body) = h.list_tasks(&[], cluster_body(serde_json::json!({ "task_status": "finished" }))).await;
    assert_eq!(ids(&body), ["t-nightly", "t-old"], "newest first by default");
    let t = &body["data_list"][0];
    assert_eq!(
        (t["task_type"].as_str(), t["task_name"].as_str()),
        (Some("cluster_scan"), Some("Nightly cluster scan"))
    );
    assert_eq!(
        (t["start_time"].as_i64(), t["end_time"].as_i64(), t["estimated_time"].as_u64()),
        (Some(at(10)), Some(at(40)), Some(0))
    );
    let info = &t["cluster_scan_info"];
    assert_eq!(
        (
            info["scanning_cluster_num"].as_u64(),
            info["success_cluster_num"].as_u64(),
            info["failed_cluster_num"].as_u64()
        ),
        (Some(0), Some(7), Some(1))
    );

    h.sim.advance(Duration::from_secs(60 * 60));
    let (_, body) =
        h.list_tasks(&[], cluster_body(serde_json::json!({ "sort_key": "start_time", "sort_dir": "asc" }))).await;
    assert_eq!(ids(&body), ["t-old", "t-nightly", "t-stuck"]);
    let stuck = &body["data_list"][2];
    assert_eq!(
        (stuck["task_status"].as_str(), stuck["estimated_time"].as_u64()),
        (Some("running"), Some(0)),
        "past its estimate"
    );
    assert_eq!(stuck["cluster_scan_info"]["scanning_cluster_num"], 1);
    let (_, body) = h.list_tasks(&[], cluster_body(serde_json::json!({ "task_status": "running" }))).await;
    assert_eq!(ids(&body), ["t-stuck"]);
    let (_, body) = h.list_tasks(&[], cluster_body(serde_json::json!({ "task_id": "t-old" }))).await;
    assert_eq!(ids(&body), ["t-old"]);
    let (_, body) = h
        .list_tasks(&[], cluster_body(serde_json::json!({ "task_name": "nightly", "trigger_type": "schedule" })))
        .await;
    assert_eq!(ids(&body), ["t-nightly"], "task_name is fuzzy");
    let (_, body) = h
        .list_tasks(&[], cluster_body(serde_json::json!({ "start_create_time": at(5), "end_create_time": at(5) })))
        .await;
    assert_eq!(ids(&body), ["t-nightly"], "create time is when the task appeared");
    let (_, body) = h.list_tasks(&[("limit", "10"), ("offset", "2")], cluster_body(serde_json::json!({}))).await;
    assert_eq!((body["total_num"].as_u64(), ids(&body)), (Some(3), vec!["t-old".to_string()]), "a page counts all");

    let (status, body) = h.list_tasks(&[], serde_json::json!({ "task_type": "iac_scan" })).await;
    assert_eq!(status, 200);
    let t = &body["data_list"][0];
    assert_eq!(
        t["iac_scan_info"],
        serde_json::json!({"file_type": "k8s_yaml", "scan_file_num": 0, "success_file_num": 1, "failed_file_num": 1})
    );
    assert!(t.get("cluster_scan_info").is_none());

    let calls = h.sim.calls();
    assert!(calls.iter().all(|c| c.method == "POST" && c.status == Some(200)), "{calls:?}");
    assert_eq!(calls[0].api, Some(Api::ListTasks));
    assert!(calls[0].peer.is_some_and(|p| p.ip().is_loopback()), "{:?}", calls[0].peer);
    h.stop().await;
}

#[tokio::test]
async fn list_task_resources_names_the_failed_cluster_and_why() {
    let h = spawn(&task_scenario("")).await;
    h.sim.advance(Duration::from_secs(20 * 60));
    let (status, body) = h.list_resources("t-nightly", &[], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_num"], 2);
    let list = body["cluster_scan_data_list"].as_array().unwrap();
    assert!(list.iter().all(|c| c["scan_status"] == "scanning" && c.get("end_time").is_none()), "running: {body}");
    assert!(!body.to_string().contains("failed_reason"), "no reason before it fails: {body}");

    h.sim.advance(Duration::from_secs(20 * 60));
    let failed = cluster_body(serde_json::json!({ "cluster_scan_info": { "scan_status": "failed" } }));
    let (status, body) = h.list_resources("t-nightly", &[], failed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_num"], 1);
    let c = &body["cluster_scan_data_list"][0];
    assert_eq!(
        (
            c["cluster_name"].as_str(),
            c["cluster_id"].as_str(),
            c["cluster_type"].as_str(),
            c["cluster_version"].as_str()
        ),
        (Some("prod-cce-1"), Some("c-1"), Some("cce"), Some("v1.28"))
    );
    assert_eq!(c["scan_status"], "failed");
    assert!(c["start_time"].is_i64() && c["end_time"].is_i64(), "{c}");
    assert_eq!(
        c["scan_detail_list"],
        serde_json::json!([
            {"scan_type": "cluster_vul", "status": "failed", "failed_reason": "kube-apiserver unreachable: connection timed out"},
            {"scan_type": "benchmark", "status": "success"},
        ])
    );
    let ok = cluster_body(serde_json::json!({ "cluster_scan_info": { "scan_status": "success" } }));
    let (_, body) = h.list_resources("t-nightly", &[], ok).await;
    let c = &body["cluster_scan_data_list"][0];
    assert_eq!((c["cluster_name"].as_str(), c["cluster_type"].as_str()), (Some("prod-cce-2"), Some("cce")));
    assert_eq!(c["scan_detail_list"].as_array().unwrap().len(), 2, "a detail per scan type by default: {c}");

    let (status, body) = h
        .list_resources(
            "t-iac",
            &[("limit", "10")],
            serde_json::json!({ "task_type": "iac_scan", "iac_scan_info": { "scan_status": "failed" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_num"], 1);
    let f = &body["iac_scan_data_list"][0];
    assert_eq!(
        (f["file_name"].as_str(), f["file_id"].as_str(), f["file_type"].as_str(), f["chart_name"].as_str()),
        (Some("deploy.yaml"), Some("f-1"), Some("k8s_yaml"), Some("web"))
    );
    assert_eq!(f["failed_reason"], "yaml: line 3: mapping values are not allowed here");
    assert!(f["file_size"].is_u64());
    assert_eq!(h.sim.calls().last().unwrap().api, Some(Api::ListTaskResources));
    h.stop().await;
}

#[tokio::test]
async fn the_task_apis_check_their_parameters_like_hss() {
    let h = spawn(&task_scenario("")).await;
    let code = |v: &Value| v["error_code"].as_str().map(str::to_string);
    for limit in ["5", "201", "ten"] {
        let (status, body) = h.list_tasks(&[("limit", limit)], cluster_body(serde_json::json!({}))).await;
        assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0001")), "limit {limit}: {body}");
        assert!(body["error_msg"].as_str().unwrap().contains("limit"), "{body}");
    }
    let (status, _) = h.list_tasks(&[("limit", "200"), ("offset", "0")], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 200);
    let (status, body) = h.list_tasks(&[("offset", "2000001")], cluster_body(serde_json::json!({}))).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0001")));

    let (status, body) = h.list_tasks(&[], serde_json::json!({ "task_status": "running" })).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0001")), "task_type is required: {body}");
    assert!(body["error_msg"].as_str().unwrap().contains("task_type"));
    let (status, body) = h.list_resources("t-old", &[], serde_json::json!({ "task_type": "host_scan" })).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0001")));
    for bad in [
        serde_json::json!({ "sort_key": "end_time" }),
        serde_json::json!({ "task_status": "failed" }),
        serde_json::json!({ "sort_dir": "up" }),
    ] {
        let (status, body) = h.list_tasks(&[], cluster_body(bad.clone())).await;
        assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0001")), "{bad}: {body}");
    }

    let path = format!("/v5/{P1}/common/tasks/batch-query");
    let (status, body) = json_of(h.signed_post(&path, &[], b"{nope", b"{nope").send().await.unwrap()).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0002")), "{body}");

    let (status, body) = h.list_resources("no-such-task", &[], cluster_body(serde_json::json!({}))).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("HSS.0011")), "{body}");
    assert!(body["error_msg"].as_str().unwrap().contains("no-such-task"), "{body}");
    let (status, _) = h.list_resources("t-nightly", &[], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 400, "a task that does not exist yet is unknown");
    let (status, _) = h.list_resources("t-iac", &[], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 400, "the IaC task is not a cluster_scan task");

    let other = "/v5/ffffffffffffffffffffffffffffffff/common/tasks/batch-query";
    let body = br#"{"task_type":"cluster_scan"}"#;
    let (status, resp) = json_of(h.signed_post(other, &[], body, body).send().await.unwrap()).await;
    assert_eq!((status, code(&resp).as_deref()), (404, Some("HSS.0011")));
    h.stop().await;
}

#[tokio::test]
async fn a_post_is_verified_over_the_exact_body_received() {
    let h = spawn(&task_scenario("")).await;
    let path = format!("/v5/{P1}/common/tasks/batch-query");
    let signed = br#"{"task_type":"cluster_scan"}"#;
    let resp = h.signed_post(&path, &[("limit", "10")], signed, signed).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a correctly signed POST passes");

    // The SDK's serialisation of the same JSON: other bytes, so it must be signed as sent.
    let spaced = br#"{"task_type": "cluster_scan"}"#;
    let (status, body) = json_of(h.signed_post(&path, &[("limit", "10")], signed, spaced).send().await.unwrap()).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")), "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("verify aksk signature fail, canonicalRequest: POST|"), "{msg}");
    let spaced_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spaced));
    assert!(msg.ends_with(&spaced_hash), "our canonical request hashes the body received: {msg}");

    let changed = br#"{"task_type":"iac_scan"}"#;
    let (status, _) = json_of(h.signed_post(&path, &[], signed, changed).send().await.unwrap()).await;
    assert_eq!(status, 401, "a body changed after signing fails");
    let (status, _) = json_of(h.signed_post(&path, &[], spaced, spaced).send().await.unwrap()).await;
    assert_eq!(status, 200, "any bytes pass when they are the bytes signed");

    // A signed X-Sdk-Content-Sha256 claiming another body's hash does not get around it.
    let date = h.sim.now().format(signer::SDK_DATE_FORMAT).to_string();
    let headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Host".into(), h.host.clone()),
        ("X-Sdk-Content-Sha256".into(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(signed))),
        ("X-Sdk-Date".into(), date),
    ];
    let req = SignableRequest { method: "POST", path: &path, query: &[], headers: &headers, body: signed };
    let sig = signer::sign(&req, AK, SK).unwrap();
    let mut builder = h.client.post(format!("{}{path}", h.base)).header("Authorization", sig.authorization);
    for (k, v) in &headers {
        builder = builder.header(k, v);
    }
    let (status, body) = json_of(builder.body(changed.to_vec()).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(body["error_msg"].as_str().unwrap().contains("X-Sdk-Content-Sha256"), "{body}");
    h.stop().await;
}

#[tokio::test]
async fn tasks_fault_fails_the_task_apis_and_leaves_the_statistics_alone() {
    let h = spawn(&task_scenario("tasks_fault = \"forbidden\"")).await;
    let (status, body) = h.list_tasks(&[], cluster_body(serde_json::json!({}))).await;
    assert_eq!((status, body["error_code"].as_str()), (403, Some("APIGW.0306")), "{body}");
    let (status, _) = h.list_resources("t-old", &[], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 403);
    assert_eq!(h.good("cluster_scan").send().await.unwrap().status(), 200, "the statistics still answer");
    let (status, _) = h.list_tasks(&[], serde_json::json!({ "task_type": "iac_scan" })).await;
    assert_eq!(status, 200, "only that series' task APIs fail");
    let (status, _) = h.list_tasks(&[("limit", "5")], cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 400, "parameters are checked before the fault");
    h.stop().await;
}

#[tokio::test]
async fn a_statistics_fault_of_the_gateway_or_backend_fails_the_task_apis_too() {
    let extra = r#"
[[series]]
project_id = "0123456789abcdef0123456789abcdef"
task_type = "cluster_scan"
enterprise_project_id = "down"
  [[series.steps]]
  at = "0s"
  fault = "server_error"
  status = 502
  [[series.steps]]
  at = "1h"
  fault = "truncated"
  [[series.tasks]]
  task_id = "t-down"
  task_name = "scan"
  start = "0s"
"#;
    let h = spawn(&scenario(extra)).await;
    let q = [("enterprise_project_id", "down")];
    let (status, _) = h.list_tasks(&q, cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 502, "the backend is down for every API");
    let (status, _) = h.list_resources("t-down", &q, cluster_body(serde_json::json!({}))).await;
    assert_eq!(status, 502);
    h.sim.advance(Duration::from_secs(3600));
    let (status, body) = h.list_tasks(&q, cluster_body(serde_json::json!({}))).await;
    assert_eq!((status, ids(&body)), (200, vec!["t-down".to_string()]), "a statistics body fault stays there");
    h.stop().await;
}

#[tokio::test]
async fn the_per_ip_limit_is_shared_by_identities_and_each_api_counts_apart() {
    let toml = task_scenario("").replace("calls_per_minute = 0", "calls_per_minute = 600\ncalls_per_minute_per_ip = 2");
    let h = spawn(&toml).await;
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200);
    assert_eq!(h.with_token("static-token-1", "iac_scan").send().await.unwrap().status(), 200);
    let resp = h.with_token("static-token-1", "cluster_scan").send().await.unwrap();
    assert!(resp.headers().get("retry-after").is_none());
    let (status, body) = json_of(resp).await;
    assert_eq!((status, body["error_code"].as_str()), (429, Some("APIGW.0308")), "{body}");
    assert_eq!(
        body["error_msg"],
        "The throttling threshold has been reached: policy ip over ratelimit,limit:2,time:1 minute"
    );
    // ListTasks and ListTaskResources have budgets of their own.
    for _ in 0..2 {
        assert_eq!(h.list_tasks(&[], cluster_body(serde_json::json!({}))).await.0, 200);
        assert_eq!(h.list_resources("t-old", &[], cluster_body(serde_json::json!({}))).await.0, 200);
    }
    assert_eq!(h.list_tasks(&[], cluster_body(serde_json::json!({}))).await.0, 429);
    h.sim.advance(Duration::from_secs(60));
    assert_eq!(h.with_token("static-token-1", "cluster_scan").send().await.unwrap().status(), 200, "the window slid");

    let calls = h.sim.calls();
    let a = audit::audit_with(&calls, Duration::from_secs(60), 600, 2);
    assert_eq!((a.over_budget(), a.ip_over_budget(), a.ip_max_in_window()), (0, 2, 3), "{:?}", a.by_ip_api);
    let stats = &a.by_ip_api[&("127.0.0.1".to_string(), Api::TaskStatistics)];
    assert_eq!((stats.requests, stats.throttled), (4, 1));
    h.stop().await;
}

#[tokio::test]
async fn the_per_identity_limit_is_per_api() {
    let h = spawn(&task_scenario("").replace("calls_per_minute = 0", "calls_per_minute = 1")).await;
    assert_eq!(h.good("iac_scan").send().await.unwrap().status(), 200);
    let (status, body) = json_of(h.good("iac_scan").send().await.unwrap()).await;
    assert_eq!(status, 429);
    assert!(body["error_msg"].as_str().unwrap().contains("policy user over ratelimit,limit:1"), "{body}");
    assert_eq!(h.list_tasks(&[], cluster_body(serde_json::json!({}))).await.0, 200, "ListTasks has its own");
    assert_eq!(h.list_tasks(&[], cluster_body(serde_json::json!({}))).await.0, 429);
    assert_eq!(h.list_resources("t-old", &[], cluster_body(serde_json::json!({}))).await.0, 200);
    h.stop().await;
}
