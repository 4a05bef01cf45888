//! `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query` (ListTaskResources): the clusters or files
//! one task scanned, and for the failed ones HSS's reason — what turns "2 clusters failed" into something an
//! operator can fix.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use url::Url;

use super::client::{Account, HssClient};
use super::parse::{NAME_CHARS, REASON_CHARS, Strict, WORD_CHARS, bounded, path};
use super::signer;
use super::tasks::batch_query;
use super::transport::HssRequest;
use crate::model::{FailedResource, PollError, TaskType};

/// `scan_status` of a cluster or file within a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    Scanning,
    Success,
    Failed,
}

impl ScanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Scanning => "scanning",
            ScanStatus::Success => "success",
            ScanStatus::Failed => "failed",
        }
    }
}

/// One ListTaskResources call.
#[derive(Debug, Clone, Copy)]
pub struct TaskResourcesRequest<'a> {
    /// `https://hss.{region}.myhuaweicloud.com` or a configured override; a path prefix is kept.
    pub endpoint: &'a Url,
    pub project_id: &'a str,
    /// Sent only when configured (`0`, an id, or `all_granted_eps`).
    pub enterprise_project_id: Option<&'a str>,
    /// The task, as ListTasks named it.
    pub task_id: &'a str,
    /// The task's type: it decides between `cluster_scan_info` and `iac_scan_info`, in the body and the answer.
    pub task_type: TaskType,
    /// Only resources in this state (`failed` for an alert's context); `None` lists them all.
    pub scan_status: Option<ScanStatus>,
    /// Query `offset`: 0 to [`super::tasks::MAX_OFFSET`].
    pub offset: u32,
    /// Query `limit`: 10–200 ([`super::tasks::LIMIT_RANGE`]); anything else is refused before sending.
    pub limit: u32,
}

/// A cluster or file of a task with its scan status. `resource.failed_reason` is empty unless HSS gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResource {
    pub resource: FailedResource,
    /// `scanning` | `success` | `failed`, as HSS sent it.
    pub scan_status: String,
}

/// A successful ListTaskResources call: one page of resources.
pub type TaskResourcesResponse = super::Page<TaskResource>;

impl HssClient {
    /// `POST /v5/{project_id}/common/tasks/{task_id}/resources/batch-query`: one page of a task's clusters or
    /// files, signed over the exact JSON body sent. Errors are classified as for [`HssClient::task_statistics`];
    /// a 200 body is parsed by [`parse_task_resources`].
    pub async fn list_task_resources(
        &self,
        account: &Account,
        req: &TaskResourcesRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<TaskResourcesResponse, PollError> {
        let request = task_resources_request(req)?;
        let task_type = req.task_type;
        let answer = self.call(account, &request, now, &|body: &[u8]| parse_task_resources(body, task_type)).await?;
        let (total_num, items) = answer.value;
        Ok(TaskResourcesResponse { total_num, items, http_status: answer.http_status, request_id: answer.request_id })
    }
}

/// The ListTaskResources request: the task id is a path segment (encoded as the SDK encodes it), the body is
/// `task_type` plus `cluster_scan_info.scan_status` or `iac_scan_info.scan_status` when a status is asked for.
pub fn task_resources_request<'a>(req: &TaskResourcesRequest<'a>) -> Result<HssRequest<'a>, PollError> {
    let mut body = Map::new();
    body.insert("task_type".into(), json!(req.task_type.as_str()));
    if let Some(status) = req.scan_status {
        body.insert(info_key(req.task_type).into(), json!({ "scan_status": status.as_str() }));
    }
    let path = format!(
        "/v5/{}/common/tasks/{}/resources/batch-query",
        signer::encode(req.project_id),
        signer::encode(req.task_id)
    );
    let mut request = batch_query(
        req.endpoint,
        &path,
        req.project_id,
        req.enterprise_project_id,
        req.offset,
        req.limit,
        body,
        "ListTaskResources",
    )?;
    request.task_id = Some(req.task_id);
    Ok(request)
}

fn info_key(task_type: TaskType) -> &'static str {
    match task_type {
        TaskType::ClusterScan => "cluster_scan_info",
        TaskType::IacScan => "iac_scan_info",
    }
}

/// Strictly parses a ListTaskResources 200 body into `(total_num, resources)`.
///
/// Required: `total_num`; the list of the task's type (`cluster_scan_data_list` or `iac_scan_data_list`) unless
/// `total_num` is 0; per row the name (`cluster_name` / `file_name`) and `scan_status`. Optional (absent or
/// null): the id (`cluster_id` / `file_id`), the kind (`cluster_type` / `file_type`) and the reason — a file's
/// `failed_reason`, or for a cluster the `failed_reason`s of its `scan_detail_list` entries whose `status` is
/// `failed`, each reason once, joined with `"; "`. Names are cut to 256 characters and reasons to 512.
pub fn parse_task_resources(body: &[u8], task_type: TaskType) -> Result<(u64, Vec<TaskResource>), PollError> {
    let strict = Strict::new(body);
    let object = strict.object()?;
    let total_num = strict.count(&object, "total_num")?;
    let list = match task_type {
        TaskType::ClusterScan => "cluster_scan_data_list",
        TaskType::IacScan => "iac_scan_data_list",
    };
    let items = match strict.opt_array(&object, list)? {
        Some(items) => items,
        None if total_num == 0 => &[],
        None => return Err(strict.bad(format!("`{list}` is missing but `total_num` is {total_num}"))),
    };
    let resources = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{list}[{i}]");
            let row = strict.element(item, &at)?;
            match task_type {
                TaskType::ClusterScan => parse_cluster(&strict, row, &at),
                TaskType::IacScan => parse_file(&strict, row, &at),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((total_num, resources))
}

fn parse_cluster(strict: &Strict<'_>, row: &Map<String, Value>, at: &str) -> Result<TaskResource, PollError> {
    let field = |name: &str| path(at, name);
    let mut reasons = Vec::new();
    let details_at = field("scan_detail_list");
    for (i, detail) in strict.opt_array(row, &details_at)?.unwrap_or_default().iter().enumerate() {
        let detail_at = format!("{details_at}[{i}]");
        let detail = strict.element(detail, &detail_at)?;
        let status = strict.opt_string(detail, &path(&detail_at, "status"), WORD_CHARS)?;
        let reason = strict.opt_string(detail, &path(&detail_at, "failed_reason"), REASON_CHARS)?;
        if let (Some("failed"), Some(reason)) = (status.as_deref(), reason) {
            let reason = reason.trim().to_string();
            if !reason.is_empty() && !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
    }
    Ok(TaskResource {
        resource: FailedResource {
            name: strict.string(row, &field("cluster_name"), NAME_CHARS)?,
            id: strict.opt_id(row, &field("cluster_id"))?,
            kind: strict.opt_string(row, &field("cluster_type"), WORD_CHARS)?.filter(|k| !k.is_empty()),
            failed_reason: bounded(&reasons.join("; "), REASON_CHARS),
        },
        scan_status: strict.string(row, &field("scan_status"), WORD_CHARS)?,
    })
}

fn parse_file(strict: &Strict<'_>, row: &Map<String, Value>, at: &str) -> Result<TaskResource, PollError> {
    let field = |name: &str| path(at, name);
    Ok(TaskResource {
        resource: FailedResource {
            name: strict.string(row, &field("file_name"), NAME_CHARS)?,
            id: strict.opt_id(row, &field("file_id"))?,
            kind: strict.opt_string(row, &field("file_type"), WORD_CHARS)?.filter(|k| !k.is_empty()),
            failed_reason: strict
                .opt_string(row, &field("failed_reason"), REASON_CHARS)?
                .map(|r| r.trim().to_string())
                .unwrap_or_default(),
        },
        scan_status: strict.string(row, &field("scan_status"), WORD_CHARS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::test_support::{PROJECT, Recorded, Reply, SK, aksk, signed_gateway, spawn, t0, test_client};
    use crate::model::ErrorKind;

    fn request(endpoint: &Url) -> TaskResourcesRequest<'_> {
        TaskResourcesRequest {
            endpoint,
            project_id: PROJECT,
            enterprise_project_id: Some("0"),
            task_id: "task 1/é",
            task_type: TaskType::ClusterScan,
            scan_status: Some(ScanStatus::Failed),
            offset: 0,
            limit: 50,
        }
    }

    fn failed_cluster() -> Value {
        json!({
            "cluster_name": "prod-cce", "cluster_id": "c-1", "cluster_type": "cce", "cluster_version": "v1.28",
            "scan_status": "failed", "start_time": 1, "end_time": 2,
            "scan_detail_list": [
                {"scan_type": "cluster_vul", "status": "failed", "failed_reason": "agent offline"},
                {"scan_type": "benchmark", "status": "success", "failed_reason": "ignored: not failed"},
                {"scan_type": "risk_assessment", "status": "failed", "failed_reason": "  kube-apiserver unreachable "},
                {"scan_type": "x", "status": "failed", "failed_reason": "agent offline"},
                {"scan_type": "y", "status": "failed", "failed_reason": null}
            ]
        })
    }

    #[tokio::test]
    async fn failed_clusters_come_back_with_their_joined_reasons() {
        let server = spawn(|r: &Recorded| {
            signed_gateway(r, |_| {
                Reply::json(200, json!({"total_num": 7, "cluster_scan_data_list": [failed_cluster()]}))
                    .header("X-Request-Id", "rid-r")
            })
        })
        .await;
        let got = test_client().list_task_resources(&aksk(SK, None), &request(&server.url), t0()).await;
        assert_eq!(
            got,
            Ok(TaskResourcesResponse {
                total_num: 7,
                items: vec![TaskResource {
                    resource: FailedResource {
                        name: "prod-cce".into(),
                        id: Some("c-1".into()),
                        kind: Some("cce".into()),
                        failed_reason: "agent offline; kube-apiserver unreachable".into(),
                    },
                    scan_status: "failed".into(),
                }],
                http_status: 200,
                request_id: Some("rid-r".into()),
            })
        );
        let sent = server.only_request();
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.path, format!("/v5/{PROJECT}/common/tasks/task%201%2F%C3%A9/resources/batch-query"));
        assert_eq!(sent.query.as_deref(), Some("enterprise_project_id=0&limit=50&offset=0"));
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body, json!({"task_type": "cluster_scan", "cluster_scan_info": {"scan_status": "failed"}}));
    }

    #[tokio::test]
    async fn files_are_asked_for_with_iac_scan_info_and_keep_their_reason() {
        let server = spawn(|r: &Recorded| {
            signed_gateway(r, |_| {
                Reply::json(
                    200,
                    json!({"total_num": 2, "iac_scan_data_list": [
                        {"file_name": "Dockerfile", "file_id": "f-1", "file_type": "dockerfile", "chart_name": null,
                         "file_size": 120, "scan_status": "failed", "failed_reason": "syntax error at line 3"},
                        {"file_name": "deploy.yaml", "scan_status": "success", "file_type": "", "failed_reason": null}
                    ]}),
                )
            })
        })
        .await;
        let req = TaskResourcesRequest { task_type: TaskType::IacScan, scan_status: None, ..request(&server.url) };
        let got = test_client().list_task_resources(&aksk(SK, Some("tmp-token")), &req, t0()).await.unwrap();
        let rows: Vec<_> = got
            .items
            .iter()
            .map(|r| {
                let f = &r.resource;
                (f.name.as_str(), f.id.as_deref(), f.kind.as_deref(), f.failed_reason.as_str(), r.scan_status.as_str())
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("Dockerfile", Some("f-1"), Some("dockerfile"), "syntax error at line 3", "failed"),
                ("deploy.yaml", None, None, "", "success"),
            ]
        );
        let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
        assert_eq!(body, json!({"task_type": "iac_scan"}));
    }

    #[tokio::test]
    async fn an_unknown_task_is_an_hss_error_with_its_code() {
        let server = spawn(|_: &Recorded| {
            Reply::json(400, json!({"error_code": "HSS.0011", "error_msg": "resource not exist"}))
                .header("X-Request-Id", "rid-0011")
        })
        .await;
        let err = test_client().list_task_resources(&aksk(SK, None), &request(&server.url), t0()).await.unwrap_err();
        assert_eq!(
            (err.kind, err.http_status, err.error_code.as_deref(), err.request_id.as_deref()),
            (ErrorKind::HssError, Some(400), Some("HSS.0011"), Some("rid-0011"))
        );
    }

    #[test]
    fn reasons_and_names_from_hss_are_bounded() {
        let mut cluster = failed_cluster();
        cluster["cluster_name"] = json!("n".repeat(5000));
        cluster["scan_detail_list"] = json!([
            {"status": "failed", "failed_reason": "a".repeat(3000)},
            {"status": "failed", "failed_reason": "b\r\nc"}
        ]);
        let body = json!({"total_num": 1, "cluster_scan_data_list": [cluster]}).to_string();
        let (_, rows) = parse_task_resources(body.as_bytes(), TaskType::ClusterScan).unwrap();
        assert_eq!(rows[0].resource.name.chars().count(), NAME_CHARS + 1);
        assert_eq!(rows[0].resource.failed_reason.chars().count(), REASON_CHARS + 1);
        let file = json!({"total_num": 1, "iac_scan_data_list": [
            {"file_name": "f", "scan_status": "failed", "failed_reason": format!("x\ny{}", "z".repeat(2000))}
        ]});
        let (_, rows) = parse_task_resources(file.to_string().as_bytes(), TaskType::IacScan).unwrap();
        assert!(rows[0].resource.failed_reason.starts_with("x yzz"));
        assert_eq!(rows[0].resource.failed_reason.chars().count(), REASON_CHARS + 1);
    }

    #[test]
    fn strict_parsing_rejects_every_malformed_body_naming_the_field() {
        let cluster = |patch: Value| {
            let mut c = failed_cluster();
            if let (Value::Object(t), Value::Object(p)) = (&mut c, patch) {
                t.extend(p);
            }
            (json!({"total_num": 1, "cluster_scan_data_list": [c]}).to_string(), TaskType::ClusterScan)
        };
        let file = |row: Value| (json!({"total_num": 1, "iac_scan_data_list": [row]}).to_string(), TaskType::IacScan);
        let cases: Vec<((String, TaskType), &str)> = vec![
            ((r#"{"cluster_scan_data_list":[]}"#.into(), TaskType::ClusterScan), "`total_num` is missing"),
            (
                (r#"{"total_num":3,"iac_scan_data_list":[]}"#.into(), TaskType::ClusterScan),
                "`cluster_scan_data_list` is missing but `total_num` is 3",
            ),
            (cluster(json!({"cluster_name": null})), "`cluster_scan_data_list[0].cluster_name` is null"),
            (cluster(json!({"cluster_name": 1})), "`cluster_scan_data_list[0].cluster_name` must be a string, got 1"),
            (cluster(json!({"scan_status": []})), "`cluster_scan_data_list[0].scan_status` must be a string"),
            (cluster(json!({"cluster_id": {"id": 1}})), "`cluster_scan_data_list[0].cluster_id` must be a string"),
            (
                cluster(json!({"scan_detail_list": "none"})),
                "`cluster_scan_data_list[0].scan_detail_list` must be an array",
            ),
            (
                cluster(json!({"scan_detail_list": [1]})),
                "`cluster_scan_data_list[0].scan_detail_list[0]` must be an object, got 1",
            ),
            (
                cluster(json!({"scan_detail_list": [{"status": "failed", "failed_reason": 5}]})),
                "`cluster_scan_data_list[0].scan_detail_list[0].failed_reason` must be a string, got 5",
            ),
            (file(json!({"scan_status": "failed"})), "`iac_scan_data_list[0].file_name` is missing"),
            (
                file(json!({"file_name": "f", "scan_status": "failed", "failed_reason": false})),
                "`iac_scan_data_list[0].failed_reason` must be a string",
            ),
            (file(json!("row")), "`iac_scan_data_list[0]` must be an object"),
            ((r#"{"total_num":1,"iac_scan_data_list":[{"file_na"#.into(), TaskType::IacScan), "not valid JSON"),
            (("null".into(), TaskType::IacScan), "not a JSON object"),
            ((" \n".into(), TaskType::IacScan), "empty response body"),
        ];
        for ((body, task_type), expected) in cases {
            let err = parse_task_resources(body.as_bytes(), task_type).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadResponse, "{body}");
            assert!(err.message.contains(expected), "{body}: {}", err.message);
        }
    }
}
