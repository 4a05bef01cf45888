//! The configuration file as written: serde structs that mirror the TOML. Leaves that need judgement (durations,
//! regions, enums) stay strings here so that validation can report every bad value at once, each with its key path.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub alerting: RawAlerting,
    #[serde(default)]
    pub channels: Vec<crate::notify::config::RawChannel>,
    pub server: Option<RawServer>,
    pub heartbeat: Option<RawHeartbeat>,
}

/// `[heartbeat]`: a URL pinged after every good cycle (`/fail` appended after a bad one). The URL identifies the
/// check, so it is a secret like a webhook URL.
#[derive(Debug, Default, Deserialize)]
pub struct RawHeartbeat {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStorage {
    pub path: Option<String>,
    pub retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSchedule {
    pub interval: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    /// Whole-request timeout of one poll.
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// Larger response bodies are cut off and recorded as `bad_response`.
    pub max_response_bytes: Option<u64>,
    /// HSS's per-client-IP limit: calls per minute per endpoint host and API, shared by every account polled there.
    pub host_calls_per_minute: Option<u32>,
}

/// A secret may be given literally, by environment variable name, or by file; `SecretRef` is one such triple.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawAccount {
    pub name: Option<String>,
    pub auth: Option<String>,
    pub ak: Option<String>,
    pub ak_env: Option<String>,
    pub ak_file: Option<String>,
    pub sk: Option<String>,
    pub sk_env: Option<String>,
    pub sk_file: Option<String>,
    pub security_token: Option<String>,
    pub security_token_env: Option<String>,
    pub security_token_file: Option<String>,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub domain: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub iam_endpoint: Option<String>,
    pub calls_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTarget {
    pub name: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default, deserialize_with = "strict_bool")]
    pub allow_insecure_http: Option<bool>,
    pub project_id: Option<String>,
    pub enterprise_project_id: Option<String>,
    pub task_types: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: RawRules,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawRules {
    pub no_recent_scan: Option<RawNoRecentScan>,
    pub stuck_running: Option<RawStuckRunning>,
    pub total_stalled: Option<RawTotalStalled>,
    pub poll_failing: Option<RawPollFailing>,
    pub scan_failures: Option<RawScanFailures>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawScanFailures {
    #[serde(default, deserialize_with = "strict_bool")]
    pub enabled: Option<bool>,
    pub severity: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawNoRecentScan {
    #[serde(default, deserialize_with = "strict_bool")]
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawStuckRunning {
    #[serde(default, deserialize_with = "strict_bool")]
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawTotalStalled {
    #[serde(default, deserialize_with = "strict_bool")]
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    pub window: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawPollFailing {
    #[serde(default, deserialize_with = "strict_bool")]
    pub enabled: Option<bool>,
    pub severity: Option<String>,
    pub after: Option<u32>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAlerting {
    pub pending_for: Option<String>,
    pub resolve_after: Option<String>,
    pub repeat_interval: Option<String>,
    #[serde(default, deserialize_with = "strict_bool")]
    pub send_resolved: Option<bool>,
    pub max_delivery_age: Option<String>,
}

/// `[server]`: the HTTP API. Absent means no HTTP server.
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub external_url: Option<String>,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

/// A boolean is `true` or `false`. The `config` crate would also read `"yes"`, `"on"`, `"0"` and `1` as booleans
/// (its lenient coercion), so boolean keys read the value as it is. The strings `"true"` and `"false"` pass because
/// `SCANWATCH__…` overrides arrive as strings; a quoted boolean in the file is refused before this runs
/// (`super::mistyped_scalars`).
fn strict_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct StrictBool;

    impl<'de> Visitor<'de> for StrictBool {
        type Value = Option<bool>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a boolean, `true` or `false`")
        }

        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            match s {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(E::invalid_value(Unexpected::Str(s), &self)),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_any(StrictBool)
}
