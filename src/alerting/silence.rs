//! Silences and routing match alerts by labels: the series' identity labels, the rule, the severity and the target's
//! user labels. Values are exact or globs (`*` any run, `?` one character).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::SeriesKey;
use crate::rules::{RuleName, Severity};

/// A silence: alerts whose labels match every matcher are muted from `starts_at` until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: i64,
    /// label → glob
    pub matchers: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

/// The labels every alert carries besides its target's user labels (`channel` only on `channel_failing`): what a
/// silence or a route may match.
pub const BUILTIN_LABELS: [&str; 9] =
    ["target", "account", "region", "project_id", "enterprise_project_id", "task_type", "rule", "severity", "channel"];

/// Every label an alert carries, as matchers see them.
pub fn alert_labels(
    series: &SeriesKey,
    rule: RuleName,
    severity: Severity,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = user.clone();
    labels.insert("target".into(), series.target.clone());
    labels.insert("account".into(), series.account.clone());
    labels.insert("region".into(), series.region.clone());
    labels.insert("project_id".into(), series.project_id.clone());
    labels.insert("enterprise_project_id".into(), series.enterprise_project_id.clone().unwrap_or_default());
    labels.insert("task_type".into(), series.task_type.as_str().into());
    labels.insert("rule".into(), rule.as_str().into());
    labels.insert("severity".into(), severity.as_str().into());
    labels
}

/// Glob match over characters: `*` matches any run (also empty), `?` exactly one character.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether every matcher matches the labels; a label the alert lacks counts as empty, so only `*` or `` match it.
pub fn matches_all(matchers: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|(k, pattern)| glob_match(pattern, labels.get(k).map(String::as_str).unwrap_or("")))
}

/// The first silence in force at `now` that matches the labels.
pub fn silenced_by<'a>(
    silences: &'a [Silence],
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.starts_at <= now && now < s.ends_at && matches_all(&s.matchers, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskType;

    #[test]
    fn globs_match_like_shell_patterns() {
        for (p, v, want) in [
            ("prod-*", "prod-cn-north-4", true),
            ("prod-*", "staging-1", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("cn-?orth-4", "cn-north-4", true),
            ("cn-?orth-4", "cn-nnorth-4", false),
            ("*north*", "cn-north-4", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(glob_match(p, v), want, "{p} ~ {v}");
        }
    }

    #[test]
    fn silences_match_identity_rule_severity_and_user_labels_within_their_time() {
        let series = SeriesKey {
            target: "prod-cn-north-4".into(),
            account: "prod".into(),
            region: "cn-north-4".into(),
            project_id: "p".into(),
            enterprise_project_id: None,
            task_type: TaskType::IacScan,
        };
        let user = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let labels = alert_labels(&series, RuleName::StuckRunning, Severity::Warning, &user);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let silence = |m: &[(&str, &str)]| Silence {
            id: 1,
            matchers: m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            starts_at: t0,
            ends_at: t0 + chrono::TimeDelta::hours(1),
            created_by: "me".into(),
            comment: "c".into(),
            created_at: t0,
        };
        let s = [silence(&[("target", "prod-*"), ("rule", "stuck_running"), ("env", "prod")])];
        assert!(silenced_by(&s, &labels, t0).is_some());
        assert!(silenced_by(&s, &labels, t0 + chrono::TimeDelta::hours(1)).is_none(), "ended");
        assert!(silenced_by(&s, &labels, t0 - chrono::TimeDelta::seconds(1)).is_none(), "not started");
        let s = [silence(&[("severity", "critical")])];
        assert!(silenced_by(&s, &labels, t0).is_none());
        let s = [silence(&[("team", "*")])];
        assert!(silenced_by(&s, &labels, t0).is_some(), "`*` matches a label the alert lacks");
        let s = [silence(&[("team", "secops")])];
        assert!(silenced_by(&s, &labels, t0).is_none());
    }
}
