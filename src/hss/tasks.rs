//! `POST /v5/{project_id}/common/tasks/batch-query` (ListTasks): the scan tasks behind the statistics — which task
//! is running, when the latest started, and how many clusters or files it failed to scan. HSS has no "failed" task
//! status: failure shows only in those counts (and in [`super::task_resources`]).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use url::Url;

use super::client::{Account, HssClient};
use super::parse::{NAME_CHARS, Strict, WORD_CHARS, path, value_excerpt};
use super::signer;
use super::transport::{HssRequest, HttpMethod, not_sent};
use crate::model::{PollError, TaskInfo, TaskType};

/// The page sizes HSS accepts for `limit` (both batch queries).
pub const LIMIT_RANGE: std::ops::RangeInclusive<u32> = 10..=200;
/// The largest `offset` HSS accepts.
pub const MAX_OFFSET: u32 = 2_000_000;

/// `task_status` of a task: HSS knows no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Ready,
    Running,
    Finished,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ready => "ready",
            TaskStatus::Running => "running",
            TaskStatus::Finished => "finished",
        }
    }
}

/// `sort_dir` of a listing sorted by `start_time` (the only `sort_key` HSS offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

impl SortDir {
    pub fn as_str(self) -> &'static str {
        match self {
            SortDir::Asc => "asc",
            SortDir::Desc => "desc",
        }
    }
}

/// One ListTasks call.
#[derive(Debug, Clone, Copy)]
pub struct ListTasksRequest<'a> {
    /// `https://hss.{region}.myhuaweicloud.com` or a configured override; a path prefix is kept.
    pub endpoint: &'a Url,
    pub project_id: &'a str,
    /// Sent only when configured (`0`, an id, or `all_granted_eps`).
    pub enterprise_project_id: Option<&'a str>,
    /// Query `offset`: 0 to [`MAX_OFFSET`].
    pub offset: u32,
    /// Query `limit`: HSS accepts [`LIMIT_RANGE`] (10–200) only; anything else is refused before sending.
    pub limit: u32,
    pub task_type: TaskType,
    /// Only tasks in this state (`running` for a stuck task).
    pub task_status: Option<TaskStatus>,
    /// Sort by `start_time` (`sort_key`) in this direction (`desc`: the latest task first).
    pub sort: Option<SortDir>,
    /// Only this task.
    pub task_id: Option<&'a str>,
}

/// A successful ListTasks call: one page of tasks.
pub type ListTasksResponse = super::Page<TaskInfo>;

impl HssClient {
    /// `POST /v5/{project_id}/common/tasks/batch-query`: one page of `req.task_type` tasks, signed (AK/SK) over
    /// the exact JSON body sent, or with the account's token. Errors are classified as for
    /// [`HssClient::task_statistics`]; a 200 body is parsed by [`parse_tasks`].
    pub async fn list_tasks(
        &self,
        account: &Account,
        req: &ListTasksRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<ListTasksResponse, PollError> {
        let request = tasks_request(req)?;
        let task_type = req.task_type;
        let answer = self.call(account, &request, now, &|body: &[u8]| parse_tasks(body, task_type)).await?;
        let (total_num, items) = answer.value;
        Ok(ListTasksResponse { total_num, items, http_status: answer.http_status, request_id: answer.request_id })
    }
}

/// The ListTasks request: URL, query (`enterprise_project_id`, `offset`, `limit`) and the JSON body
/// (`task_type`, and `task_status`, `sort_key`/`sort_dir`, `task_id` when asked for). A `limit` or `offset` HSS
/// would refuse is refused here, before it costs a call of the 5/min budget.
pub fn tasks_request<'a>(req: &ListTasksRequest<'a>) -> Result<HssRequest<'a>, PollError> {
    let mut body = Map::new();
    body.insert("task_type".into(), json!(req.task_type.as_str()));
    if let Some(status) = req.task_status {
        body.insert("task_status".into(), json!(status.as_str()));
    }
    if let Some(dir) = req.sort {
        body.insert("sort_key".into(), json!("start_time"));
        body.insert("sort_dir".into(), json!(dir.as_str()));
    }
    if let Some(task_id) = req.task_id {
        body.insert("task_id".into(), json!(task_id));
    }
    let path = format!("/v5/{}/common/tasks/batch-query", signer::encode(req.project_id));
    batch_query(
        req.endpoint,
        &path,
        req.project_id,
        req.enterprise_project_id,
        req.offset,
        req.limit,
        body,
        "ListTasks",
    )
}

/// A batch-query POST (ListTasks, ListTaskResources): `{endpoint}{path}` keeping any endpoint path prefix, the
/// paging query, and `body` serialised once — those bytes are both signed and sent.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_query<'a>(
    endpoint: &Url,
    path: &str,
    project_id: &'a str,
    enterprise_project_id: Option<&str>,
    offset: u32,
    limit: u32,
    body: Map<String, Value>,
    api: &'static str,
) -> Result<HssRequest<'a>, PollError> {
    if !LIMIT_RANGE.contains(&limit) {
        return Err(not_sent(format!(
            "{api} limit must be {}–{} (HSS refuses others), got {limit}",
            LIMIT_RANGE.start(),
            LIMIT_RANGE.end()
        )));
    }
    if offset > MAX_OFFSET {
        return Err(not_sent(format!("{api} offset must be 0–{MAX_OFFSET}, got {offset}")));
    }
    let mut url = endpoint.clone();
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}{path}"));
    let mut query = Vec::new();
    if let Some(eps) = enterprise_project_id {
        query.push(("enterprise_project_id".to_string(), eps.to_string()));
    }
    query.push(("offset".to_string(), offset.to_string()));
    query.push(("limit".to_string(), limit.to_string()));
    Ok(HssRequest {
        method: HttpMethod::Post,
        url,
        query,
        project_id,
        body: Value::Object(body).to_string().into_bytes(),
        api,
        task_id: None,
    })
}

/// Strictly parses a ListTasks 200 body into `(total_num, tasks)`.
///
/// Required: `total_num`; `data_list` unless `total_num` is 0; per task `task_id` and `task_status`. Optional
/// (absent or null): `task_name`, `trigger_type` (empty when absent), `task_type` (the requested type when
/// absent), `start_time`, `end_time`, `estimated_time`, and the counts object of the task's type —
/// `cluster_scan_info` {`scanning_cluster_num`, `success_cluster_num`, `failed_cluster_num`} or `iac_scan_info`
/// {`scan_file_num`, `success_file_num`, `failed_file_num`} — whose absent counts are 0: a task still `ready`
/// has scanned nothing. A present field of the wrong type is always an error.
pub fn parse_tasks(body: &[u8], requested: TaskType) -> Result<(u64, Vec<TaskInfo>), PollError> {
    let strict = Strict::new(body);
    let object = strict.object()?;
    let total_num = strict.count(&object, "total_num")?;
    let items = match strict.opt_array(&object, "data_list")? {
        Some(items) => items,
        None if total_num == 0 => &[],
        None => return Err(strict.bad(format!("`data_list` is missing but `total_num` is {total_num}"))),
    };
    let tasks = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_task(&strict, item, &format!("data_list[{i}]"), requested))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((total_num, tasks))
}

fn parse_task(strict: &Strict<'_>, item: &Value, at: &str, requested: TaskType) -> Result<TaskInfo, PollError> {
    let task = strict.element(item, at)?;
    let field = |name: &str| path(at, name);
    let task_type = match strict.opt_string(task, &field("task_type"), WORD_CHARS)? {
        None => requested,
        Some(t) => TaskType::parse(&t).ok_or_else(|| {
            let got = value_excerpt(&Value::from(t.as_str()));
            strict.bad(format!("`{}` must be cluster_scan or iac_scan, got {got}", field("task_type")))
        })?,
    };
    let (info, scanning, success, failed) = match task_type {
        TaskType::ClusterScan => {
            ("cluster_scan_info", "scanning_cluster_num", "success_cluster_num", "failed_cluster_num")
        }
        TaskType::IacScan => ("iac_scan_info", "scan_file_num", "success_file_num", "failed_file_num"),
    };
    let info_at = field(info);
    let counts = strict.opt_object(task, &info_at)?;
    let count = |name: &str| match counts {
        Some(c) => strict.opt_count(c, &path(&info_at, name)).map(Option::unwrap_or_default),
        None => Ok(0),
    };
    Ok(TaskInfo {
        task_id: strict.id(task, &field("task_id"))?,
        task_name: strict.opt_string(task, &field("task_name"), NAME_CHARS)?.unwrap_or_default(),
        task_type,
        trigger_type: strict.opt_string(task, &field("trigger_type"), WORD_CHARS)?.unwrap_or_default(),
        task_status: strict.string(task, &field("task_status"), WORD_CHARS)?,
        start_time: strict.opt_millis(task, &field("start_time"))?,
        end_time: strict.opt_millis(task, &field("end_time"))?,
        estimated_minutes: match strict.opt_count(task, &field("estimated_time"))? {
            Some(m) => {
                Some(i64::try_from(m).map_err(|_| strict.bad(format!("`{}` is too large", field("estimated_time"))))?)
            }
            None => None,
        },
        scanning: count(scanning)?,
        success: count(success)?,
        failed: count(failed)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hss::test_support::{PROJECT, Recorded, Reply, SK, aksk, signed_gateway, spawn, t0, test_client};
    use crate::model::ErrorKind;

    fn request(endpoint: &Url) -> ListTasksRequest<'_> {
        ListTasksRequest {
            endpoint,
            project_id: PROJECT,
            enterprise_project_id: Some("all_granted_eps"),
            offset: 0,
            limit: 10,
            task_type: TaskType::ClusterScan,
            task_status: Some(TaskStatus::Running),
            sort: Some(SortDir::Desc),
            task_id: None,
        }
    }

    fn cluster_task() -> Value {
        json!({
            "task_id": "task-1", "task_type": "cluster_scan", "task_name": "nightly", "trigger_type": "schedule",
            "task_status": "finished", "start_time": 1745311451000_i64, "end_time": 1745311999000_i64,
            "estimated_time": 0,
            "cluster_scan_info": {"scan_type_list": ["cluster_vul"], "scanning_cluster_num": 0,
                "success_cluster_num": 3, "failed_cluster_num": 2},
            "a_future_field": {"x": 1}
        })
    }

    fn expected_cluster_task() -> TaskInfo {
        TaskInfo {
            task_id: "task-1".into(),
            task_name: "nightly".into(),
            task_type: TaskType::ClusterScan,
            trigger_type: "schedule".into(),
            task_status: "finished".into(),
            start_time: Some(1745311451000),
            end_time: Some(1745311999000),
            estimated_minutes: Some(0),
            scanning: 0,
            success: 3,
            failed: 2,
        }
    }

    #[tokio::test]
    async fn list_tasks_posts_a_signed_json_body_and_returns_the_tasks() {
        let server = spawn(|r: &Recorded| {
            signed_gateway(r, |_| {
                Reply::json(200, json!({"total_num": 1, "data_list": [cluster_task()]})).header("X-Request-Id", "rid-t")
            })
        })
        .await;
        let got = test_client().list_tasks(&aksk(SK, None), &request(&server.url), t0()).await;
        assert_eq!(
            got,
            Ok(ListTasksResponse {
                total_num: 1,
                items: vec![expected_cluster_task()],
                http_status: 200,
                request_id: Some("rid-t".into())
            })
        );
        let sent = server.only_request();
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.path, format!("/v5/{PROJECT}/common/tasks/batch-query"));
        assert_eq!(sent.query.as_deref(), Some("enterprise_project_id=all_granted_eps&limit=10&offset=0"));
        assert_eq!(sent.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(
            body,
            json!({"task_type": "cluster_scan", "task_status": "running", "sort_key": "start_time", "sort_dir": "desc"})
        );
    }

    #[tokio::test]
    async fn a_security_token_and_a_task_id_are_signed_with_the_body() {
        let server =
            spawn(|r: &Recorded| signed_gateway(r, |_| Reply::json(200, json!({"total_num": 0, "data_list": []}))))
                .await;
        let req = ListTasksRequest {
            task_id: Some("t-42"),
            task_status: None,
            sort: None,
            task_type: TaskType::IacScan,
            enterprise_project_id: None,
            offset: 20,
            limit: 200,
            ..request(&server.url)
        };
        let got = test_client().list_tasks(&aksk(SK, Some("temporary-token")), &req, t0()).await;
        assert_eq!(got.map(|r| (r.total_num, r.items)), Ok((0, vec![])));
        let sent = server.only_request();
        assert_eq!(sent.query.as_deref(), Some("limit=200&offset=20"));
        assert_eq!(sent.header("x-security-token"), Some("temporary-token"));
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body, json!({"task_type": "iac_scan", "task_id": "t-42"}));
    }

    #[tokio::test]
    async fn a_body_that_does_not_match_its_signature_is_rejected_by_the_gateway() {
        // The gateway re-hashes the body it received: a signature over other bytes fails.
        let server = spawn(|r: &Recorded| {
            let mut tampered = r.clone();
            tampered.body = br#"{"task_type":"iac_scan"}"#.to_vec();
            signed_gateway(&tampered, |_| Reply::json(200, json!({"total_num": 0})))
        })
        .await;
        let err = test_client().list_tasks(&aksk(SK, None), &request(&server.url), t0()).await.unwrap_err();
        assert_eq!((err.kind, err.error_code.as_deref()), (ErrorKind::Auth, Some("APIGW.0301")));
    }

    #[tokio::test]
    async fn a_limit_hss_would_refuse_is_refused_before_sending() {
        let server = spawn(|_: &Recorded| Reply::json(200, json!({"total_num": 0}))).await;
        for (offset, limit, says) in [(0, 5, "limit must be 10–200"), (0, 201, "got 201"), (2_000_001, 10, "offset")]
        {
            let req = ListTasksRequest { offset, limit, ..request(&server.url) };
            let err = test_client().list_tasks(&aksk(SK, None), &req, t0()).await.unwrap_err();
            assert_eq!((err.kind, err.http_status), (ErrorKind::HssError, None));
            assert!(err.message.contains(says), "{}", err.message);
        }
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn an_error_answer_is_classified_like_every_hss_error() {
        let server = spawn(|_: &Recorded| {
            Reply::json(403, json!({"error_code": "HSS.0013", "error_msg": "insufficient permission"}))
                .header("X-Request-Id", "rid-403")
        })
        .await;
        let err = test_client().list_tasks(&aksk(SK, None), &request(&server.url), t0()).await.unwrap_err();
        assert_eq!(
            (err.kind, err.http_status, err.error_code.as_deref(), err.request_id.as_deref()),
            (ErrorKind::Forbidden, Some(403), Some("HSS.0013"), Some("rid-403"))
        );
    }

    #[tokio::test]
    async fn a_bad_200_body_carries_the_status_and_request_id() {
        let server = spawn(|_: &Recorded| {
            Reply::json(200, json!({"total_num": 1, "data_list": [{"task_status": "running"}]}))
                .header("X-Request-Id", "rid-bad")
        })
        .await;
        let err = test_client().list_tasks(&aksk(SK, None), &request(&server.url), t0()).await.unwrap_err();
        assert_eq!(
            (err.kind, err.http_status, err.request_id.as_deref()),
            (ErrorKind::BadResponse, Some(200), Some("rid-bad"))
        );
        assert!(err.message.starts_with("`data_list[0].task_id` is missing; body: {"), "{}", err.message);
    }

    #[test]
    fn iac_counts_map_to_scanning_success_failed_and_optional_fields_may_be_absent_or_null() {
        let body = json!({"total_num": 3, "data_list": [
            {"task_id": "i-1", "task_status": "running", "task_type": "iac_scan",
             "iac_scan_info": {"file_type": "dockerfile", "scan_file_num": 4, "success_file_num": 5, "failed_file_num": 6},
             "estimated_time": 12, "start_time": null, "task_name": null},
            {"task_id": "i-2", "task_status": "ready"},
            {"task_id": "i-3", "task_status": "finished", "iac_scan_info": {"failed_file_num": 1, "scan_file_num": null}}
        ]});
        let (total, tasks) = parse_tasks(body.to_string().as_bytes(), TaskType::IacScan).unwrap();
        assert_eq!(total, 3);
        let counts: Vec<_> = tasks.iter().map(|t| (t.task_id.as_str(), t.scanning, t.success, t.failed)).collect();
        assert_eq!(counts, vec![("i-1", 4, 5, 6), ("i-2", 0, 0, 0), ("i-3", 0, 0, 1)]);
        assert_eq!(
            (tasks[0].estimated_minutes, tasks[0].start_time, tasks[0].task_name.as_str()),
            (Some(12), None, "")
        );
        assert!(tasks.iter().all(|t| t.task_type == TaskType::IacScan));
        assert_eq!(parse_tasks(br#"{"total_num":0}"#, TaskType::IacScan), Ok((0, vec![])));
    }

    #[test]
    fn names_from_hss_are_bounded_and_lose_control_characters() {
        let mut task = cluster_task();
        task["task_name"] = json!(format!("evil\n\u{1b}[2J{}", "x".repeat(10_000)));
        let body = json!({"total_num": 1, "data_list": [task]}).to_string();
        let (_, tasks) = parse_tasks(body.as_bytes(), TaskType::ClusterScan).unwrap();
        assert!(tasks[0].task_name.starts_with("evil  [2Jxxx"), "{}", tasks[0].task_name);
        assert_eq!(tasks[0].task_name.chars().count(), NAME_CHARS + 1);
    }

    #[test]
    fn strict_parsing_rejects_every_malformed_body_naming_the_field() {
        let with = |patch: Value| {
            let mut task = cluster_task();
            if let (Value::Object(t), Value::Object(p)) = (&mut task, patch) {
                t.extend(p);
            }
            json!({"total_num": 1, "data_list": [task]}).to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            (r#"{"data_list":[]}"#.into(), "`total_num` is missing"),
            (r#"{"total_num":-1,"data_list":[]}"#.into(), "`total_num` must be an integer >= 0, got -1"),
            (r#"{"total_num":2}"#.into(), "`data_list` is missing but `total_num` is 2"),
            (r#"{"total_num":1,"data_list":{"a":1}}"#.into(), "`data_list` must be an array"),
            (r#"{"total_num":1,"data_list":[7]}"#.into(), "`data_list[0]` must be an object, got 7"),
            (with(json!({"task_id": 5})), "`data_list[0].task_id` must be a string, got 5"),
            (with(json!({"task_id": null})), "`data_list[0].task_id` is null"),
            (with(json!({"task_status": null})), "`data_list[0].task_status` is null"),
            (with(json!({"task_type": "image_scan"})), "`data_list[0].task_type` must be cluster_scan or iac_scan"),
            (with(json!({"start_time": "yesterday"})), "`data_list[0].start_time` must be an integer >= 0 (ms)"),
            (with(json!({"end_time": -1})), "`data_list[0].end_time` must be an integer >= 0 (ms)"),
            (with(json!({"estimated_time": 1.5})), "`data_list[0].estimated_time` must be an integer >= 0"),
            (with(json!({"cluster_scan_info": []})), "`data_list[0].cluster_scan_info` must be an object"),
            (
                with(json!({"cluster_scan_info": {"failed_cluster_num": "2"}})),
                "`data_list[0].cluster_scan_info.failed_cluster_num` must be an integer >= 0, got \"2\"",
            ),
            (with(json!({"task_name": ["x"]})), "`data_list[0].task_name` must be a string"),
            (r#"{"total_num":1,"data_list":[{"task_id":"t"#.into(), "not valid JSON"),
            ("<html>busy</html>".into(), "not valid JSON"),
            ("[]".into(), "not a JSON object"),
            ("".into(), "empty response body"),
        ];
        for (body, expected) in cases {
            let err = parse_tasks(body.as_bytes(), TaskType::ClusterScan).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadResponse, "{body}");
            assert!(err.message.contains(expected), "{body}: {}", err.message);
        }
    }
}
