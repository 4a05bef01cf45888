//! How the read side prints: aligned tables for people, JSON and CSV (DESIGN.md's field names) for machines.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::store::HistoryRow;

/// `--format` of the read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// One `history` row in DESIGN.md's JSON field names.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryJson {
    pub target: String,
    pub account: String,
    pub region: String,
    pub project_id: String,
    pub enterprise_project_id: Option<String>,
    pub task_type: String,
    pub polled_at: String,
    pub ok: bool,
    pub total_num: Option<u64>,
    pub running_num: Option<u64>,
    pub last_task_start_time: Option<String>,
    pub latency_ms: u64,
    pub http_status: Option<u16>,
    pub error_kind: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
}

impl From<&HistoryRow> for HistoryJson {
    fn from(r: &HistoryRow) -> Self {
        let s = &r.snapshot;
        HistoryJson {
            target: r.series.target.clone(),
            account: r.series.account.clone(),
            region: r.series.region.clone(),
            project_id: r.series.project_id.clone(),
            enterprise_project_id: r.series.enterprise_project_id.clone(),
            task_type: r.series.task_type.as_str().to_string(),
            polled_at: rfc3339(s.polled_at),
            ok: s.ok(),
            total_num: s.stats.map(|x| x.total_num),
            running_num: s.stats.map(|x| x.running_num),
            last_task_start_time: s.stats.and_then(|x| x.last_task_start_time).map(rfc3339_millis),
            latency_ms: s.latency_ms,
            http_status: s.http_status,
            error_kind: s.error_kind.map(|k| k.as_str().to_string()),
            error_code: s.error_code.clone(),
            error_message: s.error_message.clone(),
            request_id: s.request_id.clone(),
        }
    }
}

/// One `alerts` row in DESIGN.md's JSON field names.
#[derive(Debug, Clone, Serialize)]
pub struct AlertJson {
    pub fingerprint: String,
    pub target: String,
    pub task_type: String,
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub since: Option<String>,
    pub summary: String,
    pub value: String,
    pub last_notified_at: Option<String>,
    pub acked: bool,
    /// Whether a silence in force matches it (its notifications are recorded as suppressed).
    pub silenced: bool,
    /// The HSS task behind the alert and its failed clusters or files (or why they are unknown): the model's
    /// `AlertContext` as it is, `null` when there is none. Not yet stored with alerts, so `null` for now (see
    /// [`AlertJson::with_context`]).
    pub context: Option<crate::model::AlertContext>,
}

impl AlertJson {
    /// The `alerts` rows (CLI and `/api/v1/alerts` alike): each stored alert with `silenced` set when a silence in
    /// `silences` matches its labels (the target's user labels from `targets`) at `now`.
    pub fn rows(
        alerts: Vec<crate::store::AlertRow>,
        silences: &[crate::store::SilenceRow],
        targets: &[crate::config::Target],
        now: DateTime<Utc>,
    ) -> Vec<AlertJson> {
        alerts
            .into_iter()
            .map(|r| {
                let user = targets.iter().find(|t| t.name == r.series.target).map(|t| t.labels.clone());
                let labels =
                    crate::alerting::silence::alert_labels(&r.series, r.rule, r.severity, &user.unwrap_or_default());
                AlertJson {
                    fingerprint: r.fingerprint,
                    target: r.series.target.clone(),
                    task_type: r.series.task_type.as_str().into(),
                    rule: r.rule.as_str().into(),
                    severity: r.severity.as_str().into(),
                    state: r.alert.state.as_str().into(),
                    since: r.alert.since.map(rfc3339),
                    summary: r.alert.summary,
                    value: r.alert.value,
                    last_notified_at: r.alert.last_notified_at.map(rfc3339),
                    acked: r.alert.acked,
                    silenced: crate::alerting::silence::silenced_by(silences, &labels, now).is_some(),
                    context: None,
                }
            })
            .collect()
    }

    /// Fills in each row's `context` from `contexts` (keyed by fingerprint): how a caller that has stored context
    /// passes it in, e.g. `AlertJson::with_context(AlertJson::rows(..), &store.alert_contexts().await?)`.
    pub fn with_context(
        mut rows: Vec<AlertJson>,
        contexts: &std::collections::HashMap<String, crate::model::AlertContext>,
    ) -> Vec<AlertJson> {
        for row in &mut rows {
            row.context = contexts.get(&row.fingerprint).cloned();
        }
        rows
    }
}

/// One configured series for `/api/v1/targets`: its identity and labels as configured, and its latest poll in
/// `history`'s fields (`null` before the first poll).
#[derive(Debug, Clone, Serialize)]
pub struct TargetJson {
    pub target: String,
    pub account: String,
    pub region: String,
    pub project_id: String,
    pub enterprise_project_id: Option<String>,
    pub task_type: String,
    pub endpoint: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub latest: Option<HistoryJson>,
}

/// One alert transition (`transitions`, `replay`).
#[derive(Debug, Clone, Serialize)]
pub struct TransitionJson {
    pub fingerprint: String,
    pub target: String,
    pub task_type: String,
    pub rule: String,
    pub at: String,
    pub from: String,
    pub to: String,
    pub event: Option<String>,
    pub summary: String,
    pub value: String,
}

impl TransitionJson {
    pub fn new(
        fingerprint: &str,
        series: &crate::model::SeriesKey,
        rule: crate::rules::RuleName,
        t: &crate::alerting::Transition,
    ) -> Self {
        TransitionJson {
            fingerprint: fingerprint.to_string(),
            target: series.target.clone(),
            task_type: series.task_type.as_str().to_string(),
            rule: rule.as_str().to_string(),
            at: rfc3339(t.at),
            from: t.from.as_str().to_string(),
            to: t.to.as_str().to_string(),
            event: t.event.map(|e| crate::store::alerts::event_str(e).to_string()),
            summary: t.summary.clone(),
            value: t.value.clone(),
        }
    }
}

/// One `notifications` row in DESIGN.md's JSON field names.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationJson {
    /// The notification's stable id (the `webhook-id`).
    pub id: String,
    pub channel: String,
    /// The alerts it announces; a grouped message also lists its group's other alerts that still fire.
    pub fingerprints: Vec<String>,
    pub event: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
}

impl From<&crate::store::NotificationRow> for NotificationJson {
    fn from(r: &crate::store::NotificationRow) -> Self {
        NotificationJson {
            id: r.notification.id.clone(),
            channel: r.notification.channel.clone(),
            fingerprints: r.fingerprints.clone(),
            event: crate::store::alerts::event_str(r.event).to_string(),
            status: r.status.as_str().to_string(),
            attempts: r.attempts,
            created_at: rfc3339(r.notification.created_at),
            delivered_at: r.delivered_at.map(rfc3339),
            last_error: r.last_error.clone(),
        }
    }
}

/// RFC 3339 in UTC with second precision and `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An API time (ms since the epoch) as RFC 3339; out-of-range values are shown raw rather than dropped.
pub fn rfc3339_millis(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => rfc3339(t),
        None => format!("{ms}ms"),
    }
}

/// Renders rows as JSON, CSV or an aligned table with `headers`.
pub fn render<T: Serialize>(format: Format, headers: &[&str], rows: &[T], cells: impl Fn(&T) -> Vec<String>) -> String {
    match format {
        Format::Json => {
            serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("cannot encode JSON: {e}")) + "\n"
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
            let mut result = w.write_record(headers);
            for r in rows {
                result = result.and_then(|_| w.serialize(r));
            }
            match (result, w.into_inner()) {
                (Ok(()), Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                (Err(e), _) => format!("cannot encode CSV: {e}\n"),
                (_, Err(e)) => format!("cannot encode CSV: {e}\n"),
            }
        }
        Format::Table => table(headers, &rows.iter().map(cells).collect::<Vec<_>>()),
    }
}

/// An aligned text table; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        #[derive(Serialize)]
        struct R {
            a: String,
            b: Option<u32>,
        }
        let rows = [R { a: "x,\"y\"".into(), b: None }];
        assert_eq!(render(Format::Csv, &["a", "b"], &rows, |_| vec![]), "a,b\n\"x,\"\"y\"\"\",\n");
    }

    fn alert_row(fingerprint: &str) -> AlertJson {
        AlertJson {
            fingerprint: fingerprint.into(),
            target: "prod".into(),
            task_type: "cluster_scan".into(),
            rule: "no_recent_scan".into(),
            severity: "critical".into(),
            state: "firing".into(),
            since: Some("2025-04-22T16:33:20Z".into()),
            summary: "no cluster scan has started for 31h; limit 24h".into(),
            value: "31h".into(),
            last_notified_at: None,
            acked: false,
            silenced: false,
            context: None,
        }
    }

    #[test]
    fn an_alert_without_context_says_null_and_one_with_context_carries_the_task_and_its_failures() {
        let json = serde_json::to_value(vec![alert_row("a")]).unwrap();
        assert!(json[0]["context"].is_null(), "{json}");

        let ctx = crate::notify::message::sample_notification().alerts[0].context.clone().unwrap();
        let contexts = std::collections::HashMap::from([("b".to_string(), ctx)]);
        let rows = AlertJson::with_context(vec![alert_row("a"), alert_row("b")], &contexts);
        let json = serde_json::to_value(&rows).unwrap();
        assert!(json[0]["context"].is_null());
        let c = &json[1]["context"];
        assert_eq!(c["task"]["task_id"], "2f6c1b7e-5d4a-4e1b-9c3f-8a7b6c5d4e3f");
        assert_eq!(c["task"]["task_status"], "finished");
        assert_eq!(c["task"]["failed"], 2);
        assert_eq!(c["failed"][0]["name"], "prod-cce-beijing");
        assert_eq!(c["failed"][0]["failed_reason"], "the cluster's API server did not answer within 30s");
        assert_eq!(c["failed_total"], 2);
        assert!(c["unavailable"].is_null());
    }
}
