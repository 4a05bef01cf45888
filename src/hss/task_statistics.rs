//! `GET /v5/{project_id}/common/task-statistics` (ShowTaskStatistics): how many scan tasks of a type ever ran, how
//! many run now, and when the latest started — the numbers every poll stores and the rules read.

use chrono::{DateTime, Utc};
use url::Url;

use super::client::{Account, HssClient};
use super::parse::Strict;
use super::signer;
use super::transport::{HssRequest, HttpMethod};
use crate::model::{PollError, TaskStats, TaskType};

/// One task-statistics call.
#[derive(Debug, Clone, Copy)]
pub struct StatsRequest<'a> {
    /// `https://hss.{region}.myhuaweicloud.com` or a configured override; a path prefix is kept.
    pub endpoint: &'a Url,
    pub project_id: &'a str,
    /// Sent only when configured (`0`, an id, or `all_granted_eps`).
    pub enterprise_project_id: Option<&'a str>,
    pub task_type: TaskType,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsResponse {
    pub stats: TaskStats,
    pub http_status: u16,
    /// `X-Request-Id`, for Huawei support.
    pub request_id: Option<String>,
}

impl HssClient {
    /// `GET /v5/{project_id}/common/task-statistics` for one target and task type.
    ///
    /// `now` is the injected clock: X-Sdk-Date and token expiry use it, never the system clock directly.
    /// With password credentials a 401 from HSS invalidates the cached token, logs in again and retries the call
    /// once, so such a poll can make two HSS calls (plus IAM calls).
    pub async fn task_statistics(
        &self,
        account: &Account,
        req: &StatsRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<StatsResponse, PollError> {
        let (url, query) = stats_url(req);
        let request = HssRequest {
            method: HttpMethod::Get,
            url,
            query,
            project_id: req.project_id,
            body: Vec::new(),
            api: "task-statistics",
            task_id: None,
        };
        let answer = self.call(account, &request, now, &parse_task_stats).await?;
        Ok(StatsResponse { stats: answer.value, http_status: answer.http_status, request_id: answer.request_id })
    }
}

/// The request URL and its query pairs: `{endpoint}/v5/{quote(project_id)}/common/task-statistics?{canonical
/// query}`, keeping any path prefix of the endpoint. The wire query is the canonical query, as the SDK sends it.
pub fn stats_url(req: &StatsRequest<'_>) -> (Url, Vec<(String, String)>) {
    let mut url = req.endpoint.clone();
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}/v5/{}/common/task-statistics", signer::encode(req.project_id)));
    let mut query = Vec::new();
    if let Some(eps) = req.enterprise_project_id {
        query.push(("enterprise_project_id".to_string(), eps.to_string()));
    }
    query.push(("task_type".to_string(), req.task_type.as_str().to_string()));
    url.set_query(Some(&signer::canonical_query(&query)));
    url.set_fragment(None);
    (url, query)
}

/// Strictly parses a 200 body: a JSON object whose `total_num` and `running_num` are integers ≥ 0 and whose
/// `last_task_start_time` is absent, null or an integer ≥ 0; unknown fields are ignored. Anything else is
/// `bad_response` with a message naming the field and an excerpt of the body.
pub fn parse_task_stats(body: &[u8]) -> Result<TaskStats, PollError> {
    let strict = Strict::new(body);
    let object = strict.object()?;
    let total_num = strict.count(&object, "total_num")?;
    let running_num = strict.count(&object, "running_num")?;
    let last_task_start_time = strict.opt_millis(&object, "last_task_start_time")?;
    Ok(TaskStats { total_num, running_num, last_task_start_time })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::hss::client::{ClientOptions, Credentials, MAX_RETRY_AFTER};
    use crate::hss::errors::EXCERPT_BYTES;
    use crate::hss::test_support::{
        AK, PROJECT, Recorded, Reply, SK, aksk, quick_client, spawn, spawn_raw, t0 as now, test_client as client,
        verify_signature,
    };
    use crate::model::{ErrorKind, excerpt};
    use crate::secret::Secret;

    fn request(endpoint: &Url) -> StatsRequest<'_> {
        StatsRequest {
            endpoint,
            project_id: PROJECT,
            enterprise_project_id: Some("all_granted_eps"),
            task_type: TaskType::IacScan,
        }
    }

    /// A gateway that checks the AK/SK signature of what it received and answers like HSS.
    fn signature_checking_gateway(r: &Recorded) -> Reply {
        match verify_signature(r, AK, SK) {
            Ok(_) => Reply::json(200, json!({"total_num": 17, "running_num": 1, "last_task_start_time": 1745311451000_i64}))
                .header("X-Request-Id", "req-ok"),
            Err(why) => Reply::json(
                401,
                json!({"error_code": "APIGW.0301", "error_msg": format!("Incorrect IAM authentication information: verify aksk signature fail, {why}")}),
            )
            .header("X-Request-Id", "req-401"),
        }
    }

    #[tokio::test]
    async fn a_signed_call_passes_the_gateways_signature_check_and_returns_the_stats() {
        let server = spawn(signature_checking_gateway).await;
        let got = client().task_statistics(&aksk(SK, None), &request(&server.url), now()).await;
        assert_eq!(
            got,
            Ok(StatsResponse {
                stats: TaskStats { total_num: 17, running_num: 1, last_task_start_time: Some(1745311451000) },
                http_status: 200,
                request_id: Some("req-ok".into()),
            })
        );
        let sent = server.only_request();
        assert_eq!(sent.method, "GET");
        assert_eq!(sent.path, format!("/v5/{PROJECT}/common/task-statistics"));
        assert_eq!(sent.query.as_deref(), Some("enterprise_project_id=all_granted_eps&task_type=iac_scan"));
        assert_eq!(
            verify_signature(&sent, AK, SK),
            Ok(vec!["content-type", "host", "user-agent", "x-project-id", "x-sdk-date"]
                .into_iter()
                .map(String::from)
                .collect())
        );
        assert_eq!(sent.header("x-sdk-date"), Some("20240102T030405Z"));
        assert_eq!(sent.header("host"), Some(format!("127.0.0.1:{}", server.url.port().unwrap_or(0)).as_str()));
        assert_eq!(sent.header("user-agent"), Some("scanwatch-test/1"));
        assert_eq!(sent.header("content-type"), Some("application/json"));
        assert_eq!(sent.header("x-project-id"), Some(PROJECT));
        assert_eq!(sent.header("x-auth-token"), None);
    }

    #[tokio::test]
    async fn the_enterprise_project_is_only_sent_when_configured_and_an_endpoint_prefix_is_kept() {
        let server = spawn(signature_checking_gateway).await;
        let endpoint = server.url.join("/gateway/hss/").unwrap();
        let req = StatsRequest {
            endpoint: &endpoint,
            project_id: "odd project/id~",
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        };
        let got = client().task_statistics(&aksk(SK, None), &req, now()).await;
        assert!(got.is_ok(), "{got:?}");
        let sent = server.only_request();
        assert_eq!(sent.path, "/gateway/hss/v5/odd%20project%2Fid~/common/task-statistics");
        assert_eq!(sent.query.as_deref(), Some("task_type=cluster_scan"));
        assert_eq!(sent.header("x-project-id"), Some("odd project/id~"));
    }

    #[tokio::test]
    async fn a_security_token_is_sent_and_signed() {
        let server = spawn(signature_checking_gateway).await;
        let got =
            client().task_statistics(&aksk(SK, Some("temporary-security-token")), &request(&server.url), now()).await;
        assert!(got.is_ok(), "{got:?}");
        let sent = server.only_request();
        assert_eq!(sent.header("x-security-token"), Some("temporary-security-token"));
        let signed = verify_signature(&sent, AK, SK).unwrap_or_default();
        assert_eq!(signed.last().map(String::as_str), Some("x-security-token"));
        assert_eq!(signed.len(), 6);
    }

    #[tokio::test]
    async fn a_wrong_secret_key_is_reported_plainly_as_a_rejected_signature() {
        let server = spawn(signature_checking_gateway).await;
        let err = client().task_statistics(&aksk("not-the-right-secret-key", None), &request(&server.url), now()).await;
        let err = err.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert_eq!(err.http_status, Some(401));
        assert_eq!(err.error_code.as_deref(), Some("APIGW.0301"));
        assert_eq!(err.request_id.as_deref(), Some("req-401"));
        assert!(
            err.message.starts_with("signature rejected: check the AK/SK pair and this host's clock"),
            "{}",
            err.message
        );
        assert!(err.message.contains("; HSS says: Incorrect IAM"), "HSS's words are kept: {}", err.message);
        assert!(!err.message.contains("not-the-right-secret-key"));
    }

    #[tokio::test]
    async fn secrets_echoed_back_by_the_gateway_are_redacted_from_errors() {
        let token = "security-token-that-must-not-leak";
        let server = spawn(move |r| {
            let echoed = r.header("x-security-token").unwrap_or_default().to_string();
            Reply::json(401, json!({"error_code": "APIGW.0301", "error_msg": format!("canonicalRequest: x-security-token:{echoed}|x")}))
        })
        .await;
        let err = client().task_statistics(&aksk(SK, Some(token)), &request(&server.url), now()).await.unwrap_err();
        assert!(!err.message.contains(token), "{}", err.message);
        assert!(err.message.contains("x-security-token:[redacted]|x"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_static_token_is_sent_as_x_auth_token_without_signing() {
        let server = spawn(|r| {
            if r.header("x-auth-token") == Some("static-token-value") {
                Reply::json(200, json!({"total_num": 3, "running_num": 0}))
            } else {
                Reply::json(401, json!({"error_code": "APIGW.0301", "error_msg": "x-auth-token not found"}))
            }
        })
        .await;
        let account = Account::new("t".into(), Credentials::Token(Secret::new("static-token-value\n")));
        let got = client().task_statistics(&account, &request(&server.url), now()).await;
        assert_eq!(got.map(|r| r.stats), Ok(TaskStats { total_num: 3, running_num: 0, last_task_start_time: None }));
        let sent = server.only_request();
        assert_eq!(sent.header("x-project-id"), Some(PROJECT));
        assert_eq!(sent.header("authorization"), None);
        assert_eq!(sent.header("x-sdk-date"), None);
    }

    #[tokio::test]
    async fn every_error_shape_is_classified_with_its_code_message_and_request_id() {
        // The case name travels as the project id, so one server answers every case.
        let server = spawn(|r| {
            let case = r.path.split('/').nth(2).unwrap_or_default();
            let reply = match case {
                "flat" => Reply::json(400, json!({"error_code": "HSS.0001", "error_msg": "invalid parameter"})),
                "camel" => Reply::json(400, json!({"errorCode": "HSS.1002", "errorMsg": "camel case message"})),
                "nested" => Reply::json(403, json!({"error": {"code": "APIGW.0306", "message": "API access denied"}})),
                "iam" => Reply::json(
                    401,
                    json!({"error": {"code": 401, "message": "The token expired.", "title": "Unauthorized"}}),
                ),
                "html" => Reply::raw(500, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
                "empty" => Reply::raw(503, ""),
                "unknown4xx" => Reply::raw(404, "not here"),
                "expired" => {
                    Reply::json(401, json!({"error_code": "APIGW.0307", "error_msg": "The token must be updated"}))
                }
                "redirect" => Reply::raw(302, "").header("Location", "http://127.0.0.1:1/elsewhere"),
                _ => Reply::raw(418, "unexpected case"),
            };
            reply.header("x-request-id", &format!("rid-{case}"))
        })
        .await;
        let cases: [(&str, ErrorKind, u16, &str, &str); 9] = [
            (
                "flat",
                ErrorKind::HssError,
                400,
                "HSS.0001",
                "HSS refused a parameter scanwatch sent: a scanwatch bug, please report it with this message; \
                 HSS says: invalid parameter",
            ),
            ("camel", ErrorKind::HssError, 400, "HSS.1002", "camel case message"),
            (
                "nested",
                ErrorKind::Forbidden,
                403,
                "APIGW.0306",
                "API access denied for project nested at 127.0.0.1: grant the IAM user HSS ReadOnlyAccess for this \
                 project; HSS says: API access denied",
            ),
            ("iam", ErrorKind::Auth, 401, "401", "The token expired."),
            ("html", ErrorKind::Server, 500, "500", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            ("empty", ErrorKind::Server, 503, "503", "HTTP 503 with an empty body"),
            ("unknown4xx", ErrorKind::HssError, 404, "404", "not here"),
            (
                "expired",
                ErrorKind::Auth,
                401,
                "APIGW.0307",
                "the token has expired: replace a static token (password logins renew theirs); HSS says: The token \
                 must be updated",
            ),
            (
                "redirect",
                ErrorKind::BadResponse,
                302,
                "302",
                "unexpected redirect (redirects are not followed): HTTP 302 with an empty body",
            ),
        ];
        let account = aksk(SK, None);
        for (case, kind, status, code, message) in cases {
            let req = StatsRequest { project_id: case, ..request(&server.url) };
            let err = client().task_statistics(&account, &req, now()).await.unwrap_err();
            assert_eq!(
                (err.kind, err.http_status, err.error_code.as_deref(), err.message.as_str(), err.request_id.as_deref()),
                (kind, Some(status), Some(code), message, Some(format!("rid-{case}").as_str())),
                "case {case}"
            );
            assert_eq!(err.retry_after, None);
        }
        // The redirect was not followed: one request per case.
        assert_eq!(server.requests().len(), cases.len());
    }

    #[tokio::test]
    async fn a_429_keeps_the_gateway_code_and_honours_retry_after() {
        let server = spawn(|r| {
            let case = r.path.split('/').nth(2).unwrap_or_default();
            let reply = Reply::json(
                429,
                json!({"error_code": "APIGW.0308", "error_msg": "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 minute"}),
            )
            .header("X-Request-Id", "rid-429");
            match case {
                "seconds" => reply.header("Retry-After", "7"),
                "date" => reply.header("Retry-After", "Tue, 02 Jan 2024 03:05:05 GMT"),
                "huge" => reply.header("Retry-After", "999999999"),
                "garbage" => reply.header("Retry-After", "soon"),
                _ => reply,
            }
        })
        .await;
        let account = aksk(SK, None);
        for (case, expected) in [
            ("seconds", Some(Duration::from_secs(7))),
            ("date", Some(Duration::from_secs(60))),
            ("huge", Some(MAX_RETRY_AFTER)),
            ("garbage", None),
            ("none", None),
        ] {
            let req = StatsRequest { project_id: case, ..request(&server.url) };
            let err = client().task_statistics(&account, &req, now()).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Throttled, "{case}");
            assert_eq!(err.error_code.as_deref(), Some("APIGW.0308"), "{case}");
            assert_eq!(err.request_id.as_deref(), Some("rid-429"), "{case}");
            assert_eq!(err.retry_after, expected, "{case}");
        }
    }

    #[test]
    fn strict_parsing_rejects_every_malformed_body_naming_the_field() {
        let cases: [(&str, &str); 17] = [
            (r#"{"total_num":17.5,"running_num":1}"#, "`total_num` must be an integer >= 0, got 17.5"),
            (r#"{"total_num":"17","running_num":1}"#, "`total_num` must be an integer >= 0, got \"17\""),
            (r#"{"total_num":-1,"running_num":1}"#, "`total_num` must be an integer >= 0, got -1"),
            (r#"{"total_num":null,"running_num":1}"#, "`total_num` is null"),
            (r#"{"running_num":1}"#, "`total_num` is missing"),
            (r#"{"total_num":1,"running_num":-2}"#, "`running_num` must be an integer >= 0, got -2"),
            (r#"{"total_num":1,"running_num":true}"#, "`running_num` must be an integer >= 0, got true"),
            (r#"{"total_num":1}"#, "`running_num` is missing"),
            (
                r#"{"total_num":1,"running_num":0,"last_task_start_time":-5}"#,
                "`last_task_start_time` must be an integer >= 0",
            ),
            (
                r#"{"total_num":1,"running_num":0,"last_task_start_time":"2024"}"#,
                "`last_task_start_time` must be an integer",
            ),
            (
                r#"{"total_num":1,"running_num":0,"last_task_start_time":1.5e12}"#,
                "`last_task_start_time` must be an integer",
            ),
            (
                r#"{"total_num":1,"running_num":0,"last_task_start_time":18446744073709551615}"#,
                "`last_task_start_time` must be",
            ),
            (r#"{"total_num":1e400,"running_num":0}"#, "not valid JSON"),
            (r#"{"total_num":17,"running_num":1,"last_task_st"#, "not valid JSON"),
            ("<html>maintenance</html>", "not valid JSON"),
            ("[17,1]", "not a JSON object"),
            ("  ", "empty response body"),
        ];
        for (body, expected) in cases {
            let err = parse_task_stats(body.as_bytes()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadResponse, "{body}");
            assert!(err.message.contains(expected), "{body}: {}", err.message);
            if !body.trim().is_empty() {
                assert!(err.message.contains(&excerpt(body, EXCERPT_BYTES)), "{body}: {}", err.message);
            }
        }
    }

    #[test]
    fn strict_parsing_accepts_the_documented_shapes() {
        let parse = |s: &str| parse_task_stats(s.as_bytes());
        let stats = |t, r, l| Ok(TaskStats { total_num: t, running_num: r, last_task_start_time: l });
        assert_eq!(
            parse(r#"{"total_num":17,"running_num":1,"last_task_start_time":1745311451000}"#),
            stats(17, 1, Some(1745311451000))
        );
        assert_eq!(parse(r#"{"total_num":0,"running_num":0}"#), stats(0, 0, None));
        assert_eq!(parse(r#"{"total_num":0,"running_num":0,"last_task_start_time":null}"#), stats(0, 0, None));
        assert_eq!(parse(r#" {"running_num":2,"total_num":5,"new_field":{"x":[1]}} "#), stats(5, 2, None));
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes() {
        let bodies: [&[u8]; 6] = [b"\xff\xfe\x00", b"{", b"{\"total_num\":", b"null", b"\"str\"", &[b'['; 10_000]];
        for body in bodies {
            assert!(parse_task_stats(body).is_err());
        }
        let deep = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        assert!(parse_task_stats(deep.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn a_200_with_a_bad_body_carries_the_status_and_request_id() {
        let server =
            spawn(|_| Reply::json(200, json!({"total_num": -1, "running_num": 0})).header("X-Request-Id", "rid-bad"))
                .await;
        let err = client().task_statistics(&aksk(SK, None), &request(&server.url), now()).await.unwrap_err();
        assert_eq!(
            (err.kind, err.http_status, err.request_id.as_deref()),
            (ErrorKind::BadResponse, Some(200), Some("rid-bad"))
        );
        assert!(err.message.contains("`total_num`"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_ten_megabyte_body_is_cut_at_the_cap() {
        let server = spawn(|_| Reply::raw(200, vec![b' '; 10 * 1024 * 1024])).await;
        let err = client().task_statistics(&aksk(SK, None), &request(&server.url), now()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadResponse);
        assert_eq!(err.message, "response body exceeds 1048576 bytes");
        assert_eq!(err.http_status, Some(200));
    }

    #[tokio::test]
    async fn a_chunked_body_without_a_length_is_cut_at_the_cap_while_streaming() {
        let url = spawn_raw(|mut socket| async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..160 {
                let frame = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
                if socket.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        })
        .await;
        let small = HssClient::new(ClientOptions { max_body_bytes: 100_000, ..ClientOptions::default() }).unwrap();
        let err = small.task_statistics(&aksk(SK, None), &request(&url), now()).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::BadResponse, "response body exceeds 100000 bytes"));
    }

    #[tokio::test]
    async fn a_huge_error_body_is_still_classified_by_its_status() {
        let server = spawn(|_| Reply::raw(502, vec![b'x'; 3 * 1024 * 1024])).await;
        let err = client().task_statistics(&aksk(SK, None), &request(&server.url), now()).await.unwrap_err();
        assert_eq!((err.kind, err.http_status), (ErrorKind::Server, Some(502)));
        assert!(err.message.len() < 400);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let server =
            spawn(|_| Reply::json(200, json!({"total_num": 1, "running_num": 0})).delay(Duration::from_secs(30))).await;
        let err = quick_client(Duration::from_millis(300))
            .task_statistics(&aksk(SK, None), &request(&server.url), now())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
        assert!(err.message.contains("HSS did not answer within 300ms"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_body_that_trickles_past_the_deadline_is_a_timeout() {
        let url = spawn_raw(|mut socket| async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"total_num\":";
            let _ = socket.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let err = quick_client(Duration::from_millis(300))
            .task_statistics(&aksk(SK, None), &request(&url), now())
            .await
            .unwrap_err();
        assert_eq!((err.kind, err.http_status), (ErrorKind::Timeout, Some(200)), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_network_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client().task_statistics(&aksk(SK, None), &request(&url), now()).await.unwrap_err();
        assert_eq!((err.kind, err.http_status), (ErrorKind::Network, None), "{err}");
        assert!(err.message.starts_with("could not connect to HSS"), "{}", err.message);
        assert!(!err.message.contains(PROJECT), "no URL in the message: {}", err.message);
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_a_network_error() {
        let url = spawn_raw(|socket| async move { drop(socket) }).await;
        let err = client().task_statistics(&aksk(SK, None), &request(&url), now()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Network, "{err}");
    }

    #[tokio::test]
    async fn a_header_value_with_a_newline_is_refused_before_sending() {
        let server = spawn(signature_checking_gateway).await;
        let req = StatsRequest { project_id: "abc\r\nX-Evil: 1", ..request(&server.url) };
        let err = client().task_statistics(&aksk(SK, None), &req, now()).await.unwrap_err();
        assert_eq!((err.kind, err.http_status), (ErrorKind::HssError, None));
        assert!(err.message.contains("X-Project-Id"), "{}", err.message);
        assert!(server.requests().is_empty());
    }
}
