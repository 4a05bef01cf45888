//! Configuration: TOML file + `SCANWATCH__SECTION__KEY` environment overrides → raw serde structs → a validated,
//! typed [`Config`], with every problem reported by its key path (`targets[2].task_types[0]`).
//!
//! Loading is in three steps, as in Vector: parse (the `config` crate layers the file and the environment;
//! `serde_ignored` collects every unknown key and `serde_path_to_error` names the key of a type error), validate
//! (pure, collecting all problems), resolve secrets (env / file / `$CREDENTIALS_DIRECTORY`). Nothing here opens a
//! socket or a database.

mod raw;
/// Where secrets come from; kept under its old name, as configuration is its main user.
pub use crate::secret::sources as secrets;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use url::Url;

use crate::alerting;
use crate::hss::budget;
use crate::hss::regions;
use crate::model::{SeriesKey, TaskType};
use crate::notify::config::ChannelConfig;
use crate::rules;
use raw::*;
pub use secrets::{Environment, SecretSource, SourcedSecret};
use secrets::{SecretContext, SecretKeys};

/// Environment variables starting with this override config keys: `SCANWATCH__STORAGE__RETENTION=30d`.
const OVERRIDE_PREFIX: &str = "SCANWATCH__";
/// Where the config file is looked for when neither `--config` nor `SCANWATCH_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/scanwatch/scanwatch.toml";

/// The longest value each duration key takes. Rules, retention and the outbox turn durations into date arithmetic
/// (`now - window`), which panics beyond chrono's range (about 262,000 years), so every duration is bounded here,
/// where the key can be named, with limits far beyond any sensible setting and far inside chrono's range.
pub mod limits {
    use std::time::Duration;

    const DAY: u64 = 86_400;

    /// `storage.retention`: a century of snapshots.
    pub const RETENTION: Duration = Duration::from_secs(36_500 * DAY);
    /// `schedule.interval`: a week (a target polled less often than that is not being watched).
    pub const INTERVAL: Duration = Duration::from_secs(7 * DAY);
    /// `schedule.timeout`: one HSS call; HSS answers in well under a second.
    pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// `schedule.connect_timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Every rule's window or age (`max_age`, `for`, `window`), in `[rules.*]` and `[targets.rules.*]`: ten years.
    pub const RULE_WINDOW: Duration = Duration::from_secs(3650 * DAY);
    /// `alerting.pending_for`, `resolve_after`, `repeat_interval`, `max_delivery_age`.
    pub const ALERTING: Duration = Duration::from_secs(30 * DAY);
    /// `channels[].timeout`: one delivery attempt.
    pub const CHANNEL_TIMEOUT: Duration = crate::notify::config::MAX_TIMEOUT;
    /// `rules.poll_failing.after`: the rule reads this many of the latest snapshots.
    pub const POLL_FAILING_AFTER: u32 = 1000;
    /// `accounts[].calls_per_minute` and `schedule.host_calls_per_minute`: far above HSS's 5 (the simulator and
    /// benchmarks go higher); the bound only keeps the budget arithmetic sane.
    pub const CALLS_PER_MINUTE: u32 = 1_000_000;
    /// `schedule.max_response_bytes`: 64 MiB (a task-statistics answer is a few hundred bytes).
    pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
}

/// One problem in the configuration, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `targets[2].task_types[0]`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.key, self.message) }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{} has {n} problem{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// The validated configuration. Secrets are resolved; serializing it (for `config show`) prints them redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this was loaded from.
    #[serde(skip)]
    pub file: PathBuf,
    pub storage: Storage,
    pub schedule: Schedule,
    pub accounts: Vec<Account>,
    pub targets: Vec<Target>,
    pub rules: Rules,
    pub alerting: Alerting,
    pub channels: Vec<ChannelConfig>,
    /// Pinged after each cycle that polled and delivered without error, `/fail` appended otherwise.
    pub heartbeat: Option<SourcedSecret>,
    /// The HTTP API; `None` when `[server]` is absent (no HTTP server).
    pub server: Option<Server>,
    /// Non-fatal remarks (a literal secret in the file, say), printed by `validate` and logged at start.
    #[serde(skip)]
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub path: PathBuf,
    #[serde(with = "humantime_ser")]
    pub retention: Duration,
}

/// `[server]`: where the HTTP API listens and the bearer token it demands.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub listen: SocketAddr,
    /// Required on every route but `/healthz` when set; mandatory for a non-loopback `listen`.
    pub token: Option<SourcedSecret>,
    /// Where users reach this server (behind a proxy, by its public name): the base of the links in notifications
    /// (`externalURL`, each alert's `generatorURL` = `{external_url}/alerts/{fingerprint}`). `None`: no links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<url::Url>,
}

/// `[server] external_url`: an absolute http(s) URL with a host and no query or fragment (alert pages are
/// appended to its path).
pub fn parse_external_url(text: &str) -> Result<url::Url, String> {
    let example = "e.g. `https://scanwatch.example.com` or `https://ops.example.com/scanwatch`";
    let url = url::Url::parse(text.trim()).map_err(|e| format!("`{text}` is not an absolute URL ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` is not an http(s) URL with a host; {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}` has a query, a fragment or credentials; give only the base the alert pages live under, {example}"
        ));
    }
    Ok(url)
}

/// Whether listening on `addr` exposes the API beyond this host, so that it must demand a bearer token.
/// `0.0.0.0` and `::` count as exposed; `::ffff:127.0.0.1` as loopback.
pub fn exposed_beyond_loopback(addr: &SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// The poll interval; with `cron` set, the shortest gap between two of its fires (what the budget must fit).
    #[serde(with = "humantime_ser")]
    pub interval: Duration,
    /// A 5- or 6-field cron expression, evaluated in `timezone`; replaces `interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    pub timezone: chrono_tz::Tz,
    #[serde(with = "humantime_ser")]
    pub timeout: Duration,
    #[serde(with = "humantime_ser")]
    pub connect_timeout: Duration,
    pub max_response_bytes: u64,
    /// Calls per minute to one endpoint host and API from this process, whatever the account: HSS allows 5 per
    /// client IP (besides 5 per user), so every account polled at one regional endpoint shares them.
    pub host_calls_per_minute: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub name: String,
    #[serde(flatten)]
    pub auth: AccountAuth,
    pub calls_per_minute: u32,
}

/// How an account proves who it is.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "auth", rename_all = "lowercase")]
pub enum AccountAuth {
    /// AK/SK request signing, optionally with a security token (temporary credentials).
    Aksk { ak: SourcedSecret, sk: SourcedSecret, security_token: Option<SourcedSecret> },
    /// A static `X-Auth-Token`.
    Token { token: SourcedSecret },
    /// An IAM token obtained with a password, cached and refreshed.
    Password { domain: String, user: String, password: SourcedSecret, iam_endpoint: Option<Url> },
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub account: String,
    pub region: String,
    pub endpoint: Url,
    pub project_id: String,
    pub enterprise_project_id: Option<String>,
    pub task_types: Vec<TaskType>,
    pub labels: BTreeMap<String, String>,
    /// The rule settings in force for this target: the `[rules.*]` defaults with `[targets.rules.*]` on top.
    pub rules: Rules,
}

impl Target {
    /// The series this target polls, one per task type.
    pub fn series(&self) -> impl Iterator<Item = SeriesKey> + '_ {
        self.task_types.iter().map(|t| SeriesKey {
            target: self.name.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            project_id: self.project_id.clone(),
            enterprise_project_id: self.enterprise_project_id.clone(),
            task_type: *t,
        })
    }
}

pub use crate::rules::Severity;

/// Effective settings of the five rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    pub no_recent_scan: NoRecentScan,
    pub stuck_running: StuckRunning,
    pub total_stalled: TotalStalled,
    pub poll_failing: PollFailing,
    pub scan_failures: ScanFailures,
}

/// `scan_failures` has no parameters: the latest finished task failed on some clusters or files, or it did not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanFailures {
    pub enabled: bool,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoRecentScan {
    pub enabled: bool,
    pub severity: Severity,
    #[serde(with = "humantime_ser")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StuckRunning {
    pub enabled: bool,
    pub severity: Severity,
    #[serde(rename = "for", with = "humantime_ser")]
    pub for_: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TotalStalled {
    pub enabled: bool,
    pub severity: Severity,
    #[serde(with = "humantime_ser")]
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollFailing {
    pub enabled: bool,
    pub severity: Severity,
    pub after: u32,
    #[serde(rename = "for", with = "humantime_ser")]
    pub for_: Duration,
}

impl Rules {
    /// The parameters the rule functions take; a disabled rule is `None`.
    pub fn rule_set(&self) -> rules::RuleSet {
        let on = |enabled: bool| enabled.then_some(());
        rules::RuleSet {
            no_recent_scan: on(self.no_recent_scan.enabled)
                .map(|_| (rules::NoRecentScan { max_age: self.no_recent_scan.max_age }, self.no_recent_scan.severity)),
            stuck_running: on(self.stuck_running.enabled)
                .map(|_| (rules::StuckRunning { for_: self.stuck_running.for_ }, self.stuck_running.severity)),
            total_stalled: on(self.total_stalled.enabled)
                .map(|_| (rules::TotalStalled { window: self.total_stalled.window }, self.total_stalled.severity)),
            poll_failing: on(self.poll_failing.enabled).map(|_| {
                (
                    rules::PollFailing { after: self.poll_failing.after, for_: self.poll_failing.for_ },
                    self.poll_failing.severity,
                )
            }),
            scan_failures: on(self.scan_failures.enabled).map(|_| (rules::ScanFailures, self.scan_failures.severity)),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            no_recent_scan: NoRecentScan { enabled: true, severity: Severity::Critical, max_age: hours(24) },
            stuck_running: StuckRunning { enabled: true, severity: Severity::Warning, for_: hours(2) },
            total_stalled: TotalStalled { enabled: true, severity: Severity::Warning, window: hours(48) },
            poll_failing: PollFailing {
                enabled: true,
                severity: Severity::Critical,
                after: 3,
                for_: Duration::from_secs(30 * 60),
            },
            scan_failures: ScanFailures { enabled: true, severity: Severity::Warning },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerting {
    #[serde(with = "humantime_ser")]
    pub pending_for: Duration,
    #[serde(with = "humantime_ser")]
    pub resolve_after: Duration,
    #[serde(with = "humantime_ser")]
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    #[serde(with = "humantime_ser")]
    pub max_delivery_age: Duration,
}

impl Alerting {
    /// The state machine's timing.
    pub fn lifecycle(&self) -> alerting::Lifecycle {
        alerting::Lifecycle {
            pending_for: self.pending_for,
            resolve_after: self.resolve_after,
            repeat_interval: self.repeat_interval,
            send_resolved: self.send_resolved,
        }
    }
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            pending_for: Duration::ZERO,
            resolve_after: Duration::ZERO,
            repeat_interval: hours(4),
            send_resolved: true,
            max_delivery_age: hours(24),
        }
    }
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

mod humantime_ser {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

pub use crate::clock::format_duration;

/// Parses a humantime duration of at most `max`, or says (naming the text, never a key) what is wrong.
fn check_duration(text: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. `90s`, `5m`, `24h`, `7d`"))?;
    if d > max {
        return Err(format!("`{text}` is too long; at most {}", format_duration(max)));
    }
    Ok(d)
}

impl Schedule {
    /// The schedule the daemon runs.
    pub fn plan(&self) -> crate::schedule::Schedule {
        match self.cron.as_deref().map(crate::schedule::parse_cron) {
            Some(Ok(cron)) => crate::schedule::Schedule::Cron { cron: Box::new(cron), tz: self.timezone },
            // Validation rejected a bad expression; the interval is the only schedule left.
            _ => crate::schedule::Schedule::Every(self.interval),
        }
    }
}

impl Config {
    /// Loads and validates the file at `path` with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &Environment::from_process())
    }

    /// Loads and validates with an explicit environment (tests, and `SCANWATCH__…` overrides).
    pub fn load_with(path: &Path, env: &Environment) -> Result<Config, ConfigError> {
        Config::load_from(path, env, false)
    }

    /// Loads for a command that only reads the database (`history`, `alerts`, `transitions`, `notifications`,
    /// `replay`, `silence list`): validated like [`Config::load`], except that a secret that cannot be resolved (its
    /// variable unset, its file missing) is no problem. Such a secret is unavailable
    /// ([`SourcedSecret::is_available`]); nothing that reads the database uses one.
    pub fn load_for_reading(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for_reading_with(path, &Environment::from_process())
    }

    /// [`Config::load_for_reading`] with an explicit environment.
    pub fn load_for_reading_with(path: &Path, env: &Environment) -> Result<Config, ConfigError> {
        Config::load_from(path, env, true)
    }

    fn load_from(path: &Path, env: &Environment, for_reading: bool) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: path.to_path_buf(), problems };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![Problem { key: String::new(), message: format!("cannot read: {e}") }]))?;
        let config_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let ctx = SecretContext { for_reading, ..SecretContext::new(env, &config_dir) };
        Config::from_toml_in(&text, &ctx)
            .map(|mut c| {
                c.file = path.to_path_buf();
                c
            })
            .map_err(|e| fail(e.problems))
    }

    /// Parses and validates TOML text; relative secret files are looked up in `config_dir`.
    pub fn from_toml_str(text: &str, config_dir: &Path, env: &Environment) -> Result<Config, ConfigError> {
        Config::from_toml_in(text, &SecretContext::new(env, config_dir))
    }

    fn from_toml_in(text: &str, ctx: &SecretContext<'_>) -> Result<Config, ConfigError> {
        let overridden = overridden_keys(ctx.env);
        let fail = |problems| ConfigError { file: PathBuf::from("<config>"), problems: tidy(problems, &overridden) };
        let raw = parse(text, ctx.env).map_err(fail)?;
        let mut v = Validator { problems: Vec::new(), warnings: Vec::new() };
        let config = v.config(raw, ctx);
        if v.problems.is_empty() {
            let mut config = config;
            config.warnings = tidy(v.warnings, &overridden);
            Ok(config)
        } else {
            Err(fail(v.problems))
        }
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// Every polled series with its target, in config order.
    pub fn series(&self) -> impl Iterator<Item = (&Target, SeriesKey)> + '_ {
        self.targets.iter().flat_map(|t| t.series().map(move |s| (t, s)))
    }
}

fn parse(text: &str, env: &Environment) -> Result<RawConfig, Vec<Problem>> {
    // `SCANWATCH__`, `SCANWATCH____X`: an override with an empty key segment names no key, and the `config` crate
    // would report it as an unknown key with an empty name. Name the variable instead.
    let (overrides, nameless): (config::Map<String, String>, _) = env
        .vars()
        .iter()
        .filter(|(k, _)| k.starts_with(OVERRIDE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| k[OVERRIDE_PREFIX.len()..].split("__").all(|seg| !seg.is_empty()));
    let mut nameless: Vec<Problem> = nameless
        .into_keys()
        .map(|key| Problem {
            key,
            message: format!(
                "names no config key; write {OVERRIDE_PREFIX}SECTION__KEY, e.g. {OVERRIDE_PREFIX}STORAGE__RETENTION=30d"
            ),
        })
        .collect();
    nameless.sort_by(|a, b| a.key.cmp(&b.key));
    // The `config` crate reports some TOML errors (an integer beyond i64) without their line; `toml` names it.
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => return Err(vec![Problem { key: String::new(), message: e.to_string() }]),
    };
    let mistyped = mistyped_scalars(&table);
    // The config crate builds its own tree of the file; two trees at once doubled the peak of loading a large
    // config (10,000 targets).
    drop(table);
    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SCANWATCH")
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| vec![Problem { key: String::new(), message: e.to_string() }])?;

    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(layered, &mut track);
    let result: Result<RawConfig, _> =
        serde_ignored::deserialize(de, |path| unknown.push(bracket_indices(&path.to_string())));
    unknown.sort();
    let mut problems = nameless;
    problems.extend(unknown.into_iter().map(|key| Problem {
        key,
        message: "unknown key (check the spelling against config/scanwatch.example.toml)".to_string(),
    }));
    problems.extend(mistyped.iter().cloned());
    match result {
        Ok(raw) if problems.is_empty() => Ok(raw),
        Ok(_) => Err(problems),
        Err(e) => {
            let key = track.path().to_string();
            let key = if key == "?" { String::new() } else { key };
            // A scalar of the wrong type in the file is already named, with a clearer message.
            if !mistyped.iter().any(|p| p.key == key) {
                problems.push(Problem { key, message: strip_key_suffix(&e.to_string()) });
            }
            Err(problems)
        }
    }
}

/// What a typed scalar key holds.
#[derive(Clone, Copy)]
enum Scalar {
    Boolean,
    Integer,
}

/// Typed scalar keys: the top-level section, then the path below it (`[]` is every element of an array, `*` every
/// key of a table).
const TYPED_SCALARS: [(&str, &[&str], Scalar); 10] = [
    ("alerting", &["send_resolved"], Scalar::Boolean),
    ("rules", &["*", "enabled"], Scalar::Boolean),
    ("targets", &["[]", "allow_insecure_http"], Scalar::Boolean),
    ("targets", &["[]", "rules", "*", "enabled"], Scalar::Boolean),
    ("accounts", &["[]", "calls_per_minute"], Scalar::Integer),
    ("schedule", &["max_response_bytes"], Scalar::Integer),
    ("schedule", &["host_calls_per_minute"], Scalar::Integer),
    ("rules", &["poll_failing", "after"], Scalar::Integer),
    ("targets", &["[]", "rules", "poll_failing", "after"], Scalar::Integer),
    ("channels", &["[]", "smtp_port"], Scalar::Integer),
];

/// Booleans and integers written as something else in the file (`send_resolved = "yes"`, `enabled = 1`,
/// `calls_per_minute = "5"`): the `config` crate would coerce them, so they are checked on the TOML itself.
/// (Environment overrides are strings by nature; their booleans are checked by `raw::strict_bool`.)
fn mistyped_scalars(table: &toml::Table) -> Vec<Problem> {
    fn walk(value: &toml::Value, pattern: &[&str], path: &str, kind: Scalar, out: &mut Vec<Problem>) {
        let Some((seg, rest)) = pattern.split_first() else {
            let message = match (kind, value) {
                (Scalar::Boolean, toml::Value::Boolean(_)) | (Scalar::Integer, toml::Value::Integer(_)) => return,
                (Scalar::Boolean, _) => format!("{value} is not a boolean; write `true` or `false` (no quotes)"),
                (Scalar::Integer, _) => format!("{value} is not an integer; write a number without quotes, e.g. `5`"),
            };
            out.push(Problem { key: path.to_string(), message });
            return;
        };
        let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        match (*seg, value) {
            ("[]", toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, rest, &format!("{path}[{i}]"), kind, out);
                }
            }
            ("*", toml::Value::Table(t)) => {
                for (k, v) in t {
                    walk(v, rest, &join(k), kind, out);
                }
            }
            (key, toml::Value::Table(t)) => {
                if let Some(v) = t.get(key) {
                    walk(v, rest, &join(key), kind, out);
                }
            }
            // Any other shape is a type error that deserialization names.
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (section, pattern, kind) in TYPED_SCALARS {
        if let Some(value) = table.get(section) {
            walk(value, pattern, section, kind, &mut out);
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The key path each `SCANWATCH__…` override sets (`storage.retention`) → the variable's name.
fn overridden_keys(env: &Environment) -> BTreeMap<String, String> {
    let mut vars: Vec<&String> = env.vars().keys().collect();
    vars.sort();
    vars.into_iter()
        .filter_map(|var| {
            let rest = var.strip_prefix(OVERRIDE_PREFIX)?;
            // One with an empty segment names no key and is reported by its name already.
            if rest.split("__").any(str::is_empty) {
                return None;
            }
            // The `config` crate lower-cases the variable's key and splits it at `__`.
            let dotted = rest.to_lowercase().split("__").collect::<Vec<_>>().join(".");
            Some((bracket_indices(&dotted), var.clone()))
        })
        .collect()
}

/// The problems as printed: a key that a `SCANWATCH__…` variable set is named by that variable (the operator
/// looks there, not in the file), and a problem found twice is listed once, first place kept.
fn tidy(problems: Vec<Problem>, overridden: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(problems.len());
    for mut p in problems {
        if let Some(var) = overridden.get(&p.key) {
            p.key = var.clone();
        }
        if seen.insert((p.key.clone(), p.message.clone())) {
            out.push(p);
        }
    }
    out
}

/// `targets.1.colour` (serde_ignored's form) → `targets[1].colour` (ours); `server.?.port` (inside an `Option`)
/// → `server.port`; TOML's empty key (`'' = 1`) → `""`, so that even it is named.
fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.').filter(|seg| *seg != "?") {
        let seg = if seg.is_empty() { "\"\"" } else { seg };
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// The `config` crate appends " for key `…`" to its messages; we print the key ourselves.
fn strip_key_suffix(msg: &str) -> String {
    match msg.find(" for key `") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

struct Validator {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), message: message.into() });
    }

    /// A duration of at most `max` (zero allowed); `default` when absent or (with a problem) invalid.
    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration, max: Duration) -> Duration {
        let Some(text) = value else { return default };
        match check_duration(text, max) {
            Ok(d) => d,
            Err(message) => {
                self.problem(key, message);
                default
            }
        }
    }

    /// A duration greater than zero and at most `max`.
    fn positive_duration(&mut self, key: &str, value: Option<&str>, default: Duration, max: Duration) -> Duration {
        let Some(text) = value else { return default };
        match check_duration(text, max) {
            Ok(d) if d.is_zero() => {
                self.problem(key, format!("must be greater than zero, e.g. `{}`", format_duration(default)));
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.problem(key, message);
                default
            }
        }
    }

    fn severity(&mut self, key: &str, value: Option<&str>, default: Severity) -> Severity {
        match value {
            None => default,
            Some(s) => Severity::parse(s).unwrap_or_else(|| {
                self.problem(key, format!("`{s}` is not a severity; use info, warning or critical"));
                default
            }),
        }
    }

    fn required<'a>(&mut self, key: &str, value: Option<&'a str>) -> &'a str {
        match value {
            Some(v) if !v.trim().is_empty() => v,
            Some(_) => {
                self.problem(key, "must not be empty");
                ""
            }
            None => {
                self.problem(key, "is required");
                ""
            }
        }
    }

    fn config(&mut self, raw: RawConfig, ctx: &SecretContext<'_>) -> Config {
        let storage = self.storage(&raw.storage, ctx.env);
        let schedule = self.schedule(&raw.schedule);
        let accounts: Vec<Account> =
            raw.accounts.iter().enumerate().map(|(i, a)| self.account(&format!("accounts[{i}]"), a, ctx)).collect();
        let defaults = self.rules("rules", &raw.rules, &Rules::default());
        let targets: Vec<Target> = raw
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| self.target(&format!("targets[{i}]"), t, &accounts, &defaults))
            .collect();
        let alerting = self.alerting(&raw.alerting);
        self.cross_checks(&accounts, &targets, &schedule);
        let heartbeat = raw.heartbeat.as_ref().and_then(|h| {
            let keys = SecretKeys {
                stem: "url",
                literal: h.url.as_deref(),
                env: h.url_env.as_deref(),
                file: h.url_file.as_deref(),
                default_envs: &[],
            };
            let url = self.secret("heartbeat", ctx, keys, true)?;
            if !url.is_available() {
                return Some(url);
            }
            match Url::parse(url.value.expose()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(url),
                _ => {
                    self.problem("heartbeat.url", "is not an http(s) URL, e.g. `https://hc-ping.com/your-uuid`");
                    None
                }
            }
        });
        // A heartbeat URL in the file is normal (healthchecks.io's own docs do it): no literal-secret warning.
        self.warnings.retain(|w| w.key != "heartbeat.url");
        let (channels, problems, warnings) = crate::notify::config::validate_channels(&raw.channels, ctx);
        self.problems.extend(problems.into_iter().map(|(key, message)| Problem { key, message }));
        self.warnings.extend(warnings.into_iter().map(|(key, message)| Problem { key, message }));
        let server = raw.server.as_ref().and_then(|s| self.server(s, ctx));
        Config {
            file: PathBuf::new(),
            storage,
            schedule,
            accounts,
            targets,
            rules: defaults,
            alerting,
            channels,
            heartbeat,
            server,
            warnings: Vec::new(),
        }
    }

    fn server(&mut self, raw: &RawServer, ctx: &SecretContext<'_>) -> Option<Server> {
        let token = self.secret(
            "server",
            ctx,
            SecretKeys {
                stem: "token",
                literal: raw.token.as_deref(),
                env: raw.token_env.as_deref(),
                file: raw.token_file.as_deref(),
                default_envs: &[],
            },
            false,
        );
        let listen = match raw.listen.as_deref().map(str::trim) {
            None | Some("") => {
                self.problem(
                    "server.listen",
                    "is required in [server], e.g. `127.0.0.1:9464`; remove [server] to run without the HTTP API",
                );
                return None;
            }
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.problem(
                        "server.listen",
                        format!("`{text}` is not an IP address and port, e.g. `127.0.0.1:9464` or `[::1]:9464`"),
                    );
                    return None;
                }
            },
        };
        if exposed_beyond_loopback(&listen) && token.is_none() {
            self.problem(
                "server.token",
                format!(
                    "listening on {listen} exposes alerts, targets and snapshots beyond this host, so a bearer token is required; set `token_env` or `token_file`, or listen on 127.0.0.1"
                ),
            );
            return None;
        }
        let external_url = raw.external_url.as_deref().and_then(|text| match parse_external_url(text) {
            Ok(url) => Some(url),
            Err(why) => {
                self.problem("server.external_url", why);
                None
            }
        });
        Some(Server { listen, token, external_url })
    }

    fn storage(&mut self, raw: &RawStorage, env: &Environment) -> Storage {
        let path = match raw.path.as_deref() {
            Some(p) if p.trim().is_empty() => {
                self.problem("storage.path", "must not be empty");
                PathBuf::from("scanwatch.db")
            }
            Some(p) => PathBuf::from(p),
            None => match env.get("STATE_DIRECTORY") {
                // systemd may pass several colon-separated directories; the first is ours.
                Some(dirs) => Path::new(dirs.split(':').next().unwrap_or(dirs)).join("scanwatch.db"),
                None => PathBuf::from("scanwatch.db"),
            },
        };
        let retention =
            self.positive_duration("storage.retention", raw.retention.as_deref(), hours(90 * 24), limits::RETENTION);
        Storage { path, retention }
    }

    fn schedule(&mut self, raw: &RawSchedule) -> Schedule {
        let mut interval = self.positive_duration(
            "schedule.interval",
            raw.interval.as_deref(),
            Duration::from_secs(300),
            limits::INTERVAL,
        );
        let timezone = match raw.timezone.as_deref() {
            None => chrono_tz::Tz::UTC,
            Some(name) => name.parse().unwrap_or_else(|_| {
                self.problem("schedule.timezone", format!("`{name}` is not an IANA time zone (e.g. `Asia/Shanghai`)"));
                chrono_tz::Tz::UTC
            }),
        };
        if let Some(expr) = raw.cron.as_deref() {
            if raw.interval.is_some() {
                self.problem("schedule.cron", "give either `interval` or `cron`, not both");
            }
            match crate::schedule::parse_cron(expr) {
                Ok(cron) => {
                    let plan = crate::schedule::Schedule::Cron { cron: Box::new(cron), tz: timezone };
                    // The tightest spacing over a week and a day: what the API budget must fit.
                    let gap = plan.min_gap(chrono::Utc::now(), Duration::from_secs(8 * 86_400));
                    if plan.next_after(chrono::Utc::now()).is_none() {
                        self.problem("schedule.cron", format!("`{expr}` never fires again"));
                    }
                    interval = gap;
                }
                Err(e) => self.problem("schedule.cron", e),
            }
        }
        let timeout = self.positive_duration(
            "schedule.timeout",
            raw.timeout.as_deref(),
            Duration::from_secs(30),
            limits::TIMEOUT,
        );
        let connect_timeout = self.positive_duration(
            "schedule.connect_timeout",
            raw.connect_timeout.as_deref(),
            Duration::from_secs(10),
            limits::CONNECT_TIMEOUT,
        );
        if connect_timeout > timeout {
            self.problem("schedule.connect_timeout", "must not be longer than schedule.timeout");
        }
        let mut max_response_bytes = raw.max_response_bytes.unwrap_or(1 << 20);
        if !(1024..=limits::MAX_RESPONSE_BYTES).contains(&max_response_bytes) {
            self.problem(
                "schedule.max_response_bytes",
                format!(
                    "`{max_response_bytes}` is out of range; use 1024 to {} (64 MiB), e.g. 1048576",
                    limits::MAX_RESPONSE_BYTES
                ),
            );
            max_response_bytes = 1 << 20;
        }
        let mut host_calls_per_minute = raw.host_calls_per_minute.unwrap_or(5);
        if !(1..=limits::CALLS_PER_MINUTE).contains(&host_calls_per_minute) {
            self.problem(
                "schedule.host_calls_per_minute",
                format!(
                    "`{host_calls_per_minute}` is out of range; use 1 to {} (HSS allows 5 per minute per client IP), e.g. 5",
                    limits::CALLS_PER_MINUTE
                ),
            );
            host_calls_per_minute = 5;
        }
        Schedule {
            interval,
            cron: raw.cron.clone(),
            timezone,
            timeout,
            connect_timeout,
            max_response_bytes,
            host_calls_per_minute,
        }
    }

    fn secret(
        &mut self,
        prefix: &str,
        ctx: &SecretContext<'_>,
        keys: SecretKeys<'_>,
        required: bool,
    ) -> Option<SourcedSecret> {
        let stem = keys.stem.to_string();
        let defaults = keys.default_envs.join(" or ");
        match ctx.resolve(&keys) {
            Ok(Some(s)) => {
                if s.source == SecretSource::Literal {
                    self.warnings.push(Problem {
                        key: format!("{prefix}.{stem}"),
                        message: format!(
                            "secret given literally in the config file; prefer `{stem}_env` or `{stem}_file`"
                        ),
                    });
                }
                Some(s)
            }
            Ok(None) if required => {
                let hint = if defaults.is_empty() {
                    format!("set `{stem}_env` or `{stem}_file`")
                } else {
                    format!("set {defaults}, or `{stem}_env` / `{stem}_file`")
                };
                self.problem(format!("{prefix}.{stem}"), format!("missing secret: {hint}"));
                None
            }
            Ok(None) => None,
            Err(p) => {
                self.problem(format!("{prefix}.{}", p.key), p.message);
                None
            }
        }
    }

    fn account(&mut self, key: &str, raw: &RawAccount, ctx: &SecretContext<'_>) -> Account {
        let name = self.required(&format!("{key}.name"), raw.name.as_deref()).to_string();
        let auth_kind = raw.auth.as_deref().unwrap_or("aksk");
        let placeholder = || SourcedSecret { value: Default::default(), source: SecretSource::Literal };
        // Keys that belong to another auth kind are mistakes worth naming.
        let foreign: Vec<(&str, bool)> = vec![
            ("ak", raw.ak.is_some() || raw.ak_env.is_some() || raw.ak_file.is_some()),
            ("sk", raw.sk.is_some() || raw.sk_env.is_some() || raw.sk_file.is_some()),
            (
                "security_token",
                raw.security_token.is_some() || raw.security_token_env.is_some() || raw.security_token_file.is_some(),
            ),
            ("token", raw.token.is_some() || raw.token_env.is_some() || raw.token_file.is_some()),
            ("password", raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some()),
            ("domain", raw.domain.is_some()),
            ("user", raw.user.is_some()),
            ("iam_endpoint", raw.iam_endpoint.is_some()),
        ];
        let allowed: &[&str] = match auth_kind {
            "aksk" => &["ak", "sk", "security_token"],
            "token" => &["token"],
            "password" => &["password", "domain", "user", "iam_endpoint"],
            _ => &[],
        };
        let auth = match auth_kind {
            "aksk" => {
                let ak = self.secret(
                    key,
                    ctx,
                    SecretKeys {
                        stem: "ak",
                        literal: raw.ak.as_deref(),
                        env: raw.ak_env.as_deref(),
                        file: raw.ak_file.as_deref(),
                        default_envs: &["HUAWEICLOUD_SDK_AK", "CLOUD_SDK_AK"],
                    },
                    true,
                );
                let sk = self.secret(
                    key,
                    ctx,
                    SecretKeys {
                        stem: "sk",
                        literal: raw.sk.as_deref(),
                        env: raw.sk_env.as_deref(),
                        file: raw.sk_file.as_deref(),
                        default_envs: &["HUAWEICLOUD_SDK_SK", "CLOUD_SDK_SK"],
                    },
                    true,
                );
                let security_token = self.secret(
                    key,
                    ctx,
                    SecretKeys {
                        stem: "security_token",
                        literal: raw.security_token.as_deref(),
                        env: raw.security_token_env.as_deref(),
                        file: raw.security_token_file.as_deref(),
                        // Only when the AK itself came from the SDK's default variables: a token must belong to its AK.
                        default_envs: if raw.ak.is_none() && raw.ak_env.is_none() && raw.ak_file.is_none() {
                            &["HUAWEICLOUD_SDK_SECURITY_TOKEN"]
                        } else {
                            &[]
                        },
                    },
                    false,
                );
                AccountAuth::Aksk {
                    ak: ak.unwrap_or_else(placeholder),
                    sk: sk.unwrap_or_else(placeholder),
                    security_token,
                }
            }
            "token" => {
                let token = self.secret(
                    key,
                    ctx,
                    SecretKeys {
                        stem: "token",
                        literal: raw.token.as_deref(),
                        env: raw.token_env.as_deref(),
                        file: raw.token_file.as_deref(),
                        default_envs: &[],
                    },
                    true,
                );
                AccountAuth::Token { token: token.unwrap_or_else(placeholder) }
            }
            "password" => {
                let domain = self.required(&format!("{key}.domain"), raw.domain.as_deref()).to_string();
                let user = self.required(&format!("{key}.user"), raw.user.as_deref()).to_string();
                let password = self.secret(
                    key,
                    ctx,
                    SecretKeys {
                        stem: "password",
                        literal: raw.password.as_deref(),
                        env: raw.password_env.as_deref(),
                        file: raw.password_file.as_deref(),
                        default_envs: &[],
                    },
                    true,
                );
                let iam_endpoint =
                    raw.iam_endpoint.as_deref().and_then(|u| self.url(&format!("{key}.iam_endpoint"), u, false));
                AccountAuth::Password { domain, user, password: password.unwrap_or_else(placeholder), iam_endpoint }
            }
            other => {
                self.problem(
                    format!("{key}.auth"),
                    format!("`{other}` is not an auth kind; use aksk, token or password"),
                );
                AccountAuth::Token { token: placeholder() }
            }
        };
        if ["aksk", "token", "password"].contains(&auth_kind) {
            for (stem, present) in foreign {
                if present && !allowed.contains(&stem) {
                    self.problem(format!("{key}.{stem}"), format!("does not apply to auth = \"{auth_kind}\""));
                }
            }
        }
        let mut calls_per_minute = raw.calls_per_minute.unwrap_or(5);
        if !(1..=limits::CALLS_PER_MINUTE).contains(&calls_per_minute) {
            self.problem(
                format!("{key}.calls_per_minute"),
                format!(
                    "`{calls_per_minute}` is out of range; use 1 to {} (HSS allows 5 per minute per user), e.g. 5",
                    limits::CALLS_PER_MINUTE
                ),
            );
            calls_per_minute = 5;
        }
        Account { name, auth, calls_per_minute }
    }

    /// Parses an endpoint URL; plain http is allowed only to loopback unless `allow_insecure_http`.
    fn url(&mut self, key: &str, text: &str, allow_insecure_http: bool) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => u,
            _ => {
                self.problem(
                    key,
                    format!("`{text}` is not an http(s) URL with a host, e.g. `https://hss.example.com`"),
                );
                return None;
            }
        };
        if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
            self.problem(
                key,
                format!("plain http to a non-loopback host would send credentials unencrypted; use https or set allow_insecure_http = true (got `{text}`)"),
            );
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(key, "must not carry a query or fragment");
            return None;
        }
        Some(url)
    }

    fn target(&mut self, key: &str, raw: &RawTarget, accounts: &[Account], defaults: &Rules) -> Target {
        let name = self.required(&format!("{key}.name"), raw.name.as_deref()).to_string();
        let account = self.required(&format!("{key}.account"), raw.account.as_deref()).to_string();
        if !account.is_empty() && !accounts.iter().any(|a| a.name == account) {
            let known = accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ");
            self.problem(format!("{key}.account"), format!("no account named `{account}` (accounts: {known})"));
        }
        let region = self.required(&format!("{key}.region"), raw.region.as_deref()).to_string();
        // The region names the series and picks the IAM endpoint even when `endpoint` replaces the HSS one, so it is
        // checked either way.
        let regional = if region.is_empty() { None } else { regions::hss_endpoint(&region) };
        if !region.is_empty() && regional.is_none() {
            let hint = if raw.endpoint.is_some() {
                "; `endpoint` replaces the region's HSS endpoint, but the region must still be one of these"
            } else {
                "; for another endpoint set `endpoint` as well"
            };
            self.problem(
                format!("{key}.region"),
                format!("`{region}` is not an HSS region (known: {}){hint}", regions::REGIONS.join(", ")),
            );
        }
        let endpoint = match raw.endpoint.as_deref() {
            Some(e) => self.url(&format!("{key}.endpoint"), e, raw.allow_insecure_http.unwrap_or(false)),
            None => regional,
        };
        let project_id = self.required(&format!("{key}.project_id"), raw.project_id.as_deref()).to_string();
        if !project_id.is_empty() && !is_project_id(&project_id) {
            let got = if project_id.chars().count() <= 64 {
                format!("`{project_id}`")
            } else {
                format!("{} characters", project_id.chars().count())
            };
            self.problem(
                format!("{key}.project_id"),
                format!(
                    "{got} is not a project id; Huawei Cloud project ids are 32 lowercase hex characters, e.g. `0123456789abcdef0123456789abcdef` (the console's My Credentials page lists them)"
                ),
            );
        }
        if let Some(eps) = raw.enterprise_project_id.as_deref()
            && (eps.is_empty() || eps.len() > 256)
        {
            self.problem(
                format!("{key}.enterprise_project_id"),
                "must be 1 to 256 characters (`0`, an id, or `all_granted_eps`)",
            );
        }
        let mut task_types = Vec::new();
        match &raw.task_types {
            None => task_types.extend(TaskType::ALL),
            Some(list) if list.is_empty() => {
                self.problem(format!("{key}.task_types"), "must list at least one of cluster_scan, iac_scan")
            }
            Some(list) => {
                for (i, t) in list.iter().enumerate() {
                    match TaskType::parse(t) {
                        Some(tt) if task_types.contains(&tt) => {
                            self.problem(format!("{key}.task_types[{i}]"), format!("`{t}` is listed twice"))
                        }
                        Some(tt) => task_types.push(tt),
                        None => self.problem(
                            format!("{key}.task_types[{i}]"),
                            format!("`{t}` is not a task type; use cluster_scan or iac_scan"),
                        ),
                    }
                }
            }
        }
        for label in raw.labels.keys() {
            let valid = label.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.problem(
                    format!("{key}.labels.{label}"),
                    "label names are letters, digits and `_`, not starting with a digit",
                );
            } else if RESERVED_LABELS.contains(&label.as_str()) {
                self.problem(
                    format!("{key}.labels.{label}"),
                    format!("`{label}` is set by scanwatch itself; pick another name"),
                );
            }
        }
        let rules = self.rules(&format!("{key}.rules"), &raw.rules, defaults);
        Target {
            name,
            account,
            region,
            endpoint: endpoint
                .unwrap_or_else(|| Url::parse("https://invalid.invalid").unwrap_or_else(|_| unreachable!())),
            project_id,
            enterprise_project_id: raw.enterprise_project_id.clone(),
            task_types,
            labels: raw.labels.clone(),
            rules,
        }
    }

    fn rules(&mut self, key: &str, raw: &RawRules, base: &Rules) -> Rules {
        let mut r = base.clone();
        if let Some(x) = &raw.no_recent_scan {
            let t = &mut r.no_recent_scan;
            let basics = (x.enabled, x.severity.as_deref(), "max_age", x.max_age.as_deref());
            self.rule_basics(
                &format!("{key}.no_recent_scan"),
                basics,
                (&mut t.enabled, &mut t.severity, &mut t.max_age),
            );
        }
        if let Some(x) = &raw.stuck_running {
            let t = &mut r.stuck_running;
            let basics = (x.enabled, x.severity.as_deref(), "for", x.for_.as_deref());
            self.rule_basics(&format!("{key}.stuck_running"), basics, (&mut t.enabled, &mut t.severity, &mut t.for_));
        }
        if let Some(x) = &raw.total_stalled {
            let t = &mut r.total_stalled;
            let basics = (x.enabled, x.severity.as_deref(), "window", x.window.as_deref());
            self.rule_basics(&format!("{key}.total_stalled"), basics, (&mut t.enabled, &mut t.severity, &mut t.window));
        }
        if let Some(x) = &raw.poll_failing {
            let k = format!("{key}.poll_failing");
            let t = &mut r.poll_failing;
            let basics = (x.enabled, x.severity.as_deref(), "for", x.for_.as_deref());
            self.rule_basics(&k, basics, (&mut t.enabled, &mut t.severity, &mut t.for_));
            if let Some(after) = x.after {
                if (1..=limits::POLL_FAILING_AFTER).contains(&after) {
                    t.after = after;
                } else {
                    self.problem(
                        format!("{k}.after"),
                        format!(
                            "`{after}` is out of range; use 1 to {} failed polls, e.g. 3",
                            limits::POLL_FAILING_AFTER
                        ),
                    );
                }
            }
        }
        if let Some(x) = &raw.scan_failures {
            let k = format!("{key}.scan_failures");
            let t = &mut r.scan_failures;
            t.enabled = x.enabled.unwrap_or(t.enabled);
            t.severity = self.severity(&format!("{k}.severity"), x.severity.as_deref(), t.severity);
        }
        r
    }

    /// What every rule table has: `enabled`, `severity` and one duration (named `duration_key`), each kept from
    /// `into` when absent or (with a problem named by its key) invalid.
    fn rule_basics(
        &mut self,
        key: &str,
        (enabled, severity, duration_key, duration): (Option<bool>, Option<&str>, &str, Option<&str>),
        into: (&mut bool, &mut Severity, &mut Duration),
    ) {
        *into.0 = enabled.unwrap_or(*into.0);
        *into.1 = self.severity(&format!("{key}.severity"), severity, *into.1);
        *into.2 = self.positive_duration(&format!("{key}.{duration_key}"), duration, *into.2, limits::RULE_WINDOW);
    }

    fn alerting(&mut self, raw: &RawAlerting) -> Alerting {
        let d = Alerting::default();
        let max = limits::ALERTING;
        Alerting {
            pending_for: self.duration("alerting.pending_for", raw.pending_for.as_deref(), d.pending_for, max),
            resolve_after: self.duration("alerting.resolve_after", raw.resolve_after.as_deref(), d.resolve_after, max),
            // 0 turns reminders off (the state machine sends none while `repeat_interval` is zero).
            repeat_interval: self.duration(
                "alerting.repeat_interval",
                raw.repeat_interval.as_deref(),
                d.repeat_interval,
                max,
            ),
            send_resolved: raw.send_resolved.unwrap_or(d.send_resolved),
            max_delivery_age: self.positive_duration(
                "alerting.max_delivery_age",
                raw.max_delivery_age.as_deref(),
                d.max_delivery_age,
                max,
            ),
        }
    }

    fn cross_checks(&mut self, accounts: &[Account], targets: &[Target], schedule: &Schedule) {
        let mut seen = HashMap::new();
        for (i, a) in accounts.iter().enumerate() {
            if let Some(first) = seen.insert(a.name.as_str(), i) {
                self.problem(
                    format!("accounts[{i}].name"),
                    format!("`{}` is already the name of accounts[{first}]", a.name),
                );
            }
        }
        let mut names = HashMap::new();
        let mut identities: HashMap<(String, String, String, Option<String>, TaskType), usize> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            if let Some(first) = names.insert(t.name.as_str(), i) {
                self.problem(
                    format!("targets[{i}].name"),
                    format!("`{}` is already the name of targets[{first}]", t.name),
                );
            }
            for s in t.series() {
                let id = (s.account, s.region, s.project_id, s.enterprise_project_id, s.task_type);
                if let Some(first) = identities.insert(id, i)
                    && first != i
                {
                    self.problem(
                        format!("targets[{i}]"),
                        format!(
                            "polls the same account, region, project and task type {} as targets[{first}]",
                            s.task_type
                        ),
                    );
                }
            }
        }
        for (i, t) in targets.iter().enumerate() {
            let Some((j, a)) = accounts.iter().enumerate().find(|(_, a)| a.name == t.account) else { continue };
            if let AccountAuth::Password { iam_endpoint: None, .. } = a.auth
                && !t.region.is_empty()
                && regions::iam_endpoint(&t.region).is_none()
            {
                self.problem(
                    format!("targets[{i}].region"),
                    format!("account `{}` logs in with a password, but region `{}` has no known IAM endpoint; set accounts[{j}].iam_endpoint", a.name, t.region),
                );
            }
        }
        // The API budgets: every series of an account must fit in one interval at its calls_per_minute (HSS's
        // per-user limit), and every series polled at one endpoint host at host_calls_per_minute (its per-IP limit).
        let mut per_account: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_host: BTreeMap<String, (usize, Vec<&str>)> = BTreeMap::new();
        for t in targets {
            *per_account.entry(t.account.as_str()).or_default() += t.task_types.len();
            let host = per_host.entry(host_of(&t.endpoint)).or_default();
            host.0 += t.task_types.len();
            if !host.1.contains(&t.account.as_str()) {
                host.1.push(t.account.as_str());
            }
        }
        let account_cycle = |name: &str| {
            let cpm = accounts.iter().find(|a| a.name == name).map_or(5, |a| a.calls_per_minute);
            cycle_time(per_account.get(name).copied().unwrap_or(0), cpm)
        };
        let key = if schedule.cron.is_some() { "schedule.cron" } else { "schedule.interval" };
        let every = format_duration(schedule.interval);
        let mut needed = Duration::ZERO;
        let mut offenders = Vec::new();
        let budgets = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let series = per_account.get(a.name.as_str()).copied().unwrap_or(0);
                let cycle = cycle_time(series, a.calls_per_minute);
                let what = format!(
                    "accounts[{i}] `{}`: {series} series at {} calls/min per user take about {}",
                    a.name,
                    a.calls_per_minute,
                    format_duration(cycle)
                );
                (what, cycle, "calls_per_minute")
            })
            // A host is named only where it binds: where its share takes longer than any of its accounts' own.
            .chain(per_host.iter().filter_map(|(host, (series, on_it))| {
                let cycle = cycle_time(*series, schedule.host_calls_per_minute);
                let slowest_account = on_it.iter().map(|a| account_cycle(a)).max().unwrap_or_default();
                (cycle > slowest_account).then(|| {
                    let what = format!(
                        "{series} series on {host} at {} calls/min per IP take about {}",
                        schedule.host_calls_per_minute,
                        format_duration(cycle)
                    );
                    (what, cycle, "schedule.host_calls_per_minute")
                })
            }))
            .collect::<Vec<_>>();
        let mut binding = Vec::new();
        for (what, cycle, knob) in budgets {
            match CycleFit::of(cycle, schedule.interval) {
                CycleFit::Fits => {}
                CycleFit::Long => self.warnings.push(Problem {
                    key: key.to_string(),
                    message: format!(
                        "{what} of every {every} cycle, more than half of it: a throttled or slow call makes the cycle run late; an interval of {} or more leaves room",
                        format_duration(cycle.saturating_mul(2))
                    ),
                }),
                CycleFit::TooLong => {
                    offenders.push(what);
                    needed = needed.max(cycle);
                    if !binding.contains(&knob) {
                        binding.push(knob);
                    }
                }
            }
        }
        if !offenders.is_empty() {
            let fix = if schedule.cron.is_some() {
                format!("use a cron expression whose fires are at least {} apart", format_duration(needed))
            } else {
                format!("use interval = \"{}\" or more", format_duration(needed))
            };
            self.problem(
                key,
                format!(
                    "{every} cannot fit the API budget: {}; {fix} (or raise {} if your limit is higher)",
                    offenders.join("; "),
                    binding.join(" / "),
                ),
            );
        }
    }
}

/// The endpoint host a target's calls go to, as the per-IP budget counts them: `host:port`.
pub fn host_of(endpoint: &Url) -> String {
    format!("{}:{}", endpoint.host_str().unwrap_or("-"), endpoint.port_or_known_default().unwrap_or(0))
}

/// How long one cycle of `series` polls takes at `calls_per_minute` (the account's token bucket, or a host's): the
/// polls are spread evenly and each waits for the budget, so the cycle takes `series × 60 s / calls_per_minute`,
/// rounded up to whole seconds. 12 series at 5 calls/min take 2m24s.
pub fn cycle_time(series: usize, calls_per_minute: u32) -> Duration {
    budget::min_interval(series, calls_per_minute)
}

/// How a cycle's length compares with the interval it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleFit {
    /// At most half the interval: the daemon spreads the polls over the first half, so they finish in time.
    Fits,
    /// More than half the interval but within it: the polls run behind the spread and finish late after a throttle
    /// or a slow answer. `validate` warns.
    Long,
    /// Longer than the interval: the budget cannot poll every series once per interval. `validate` refuses it.
    TooLong,
}

impl CycleFit {
    pub fn of(cycle: Duration, interval: Duration) -> CycleFit {
        if cycle > interval {
            CycleFit::TooLong
        } else if cycle.saturating_mul(2) > interval {
            CycleFit::Long
        } else {
            CycleFit::Fits
        }
    }
}

/// Labels that scanwatch sets from the target itself (routing and silences match on them).
pub const RESERVED_LABELS: [&str; 8] =
    ["target", "account", "region", "project_id", "enterprise_project_id", "task_type", "rule", "severity"];

/// A Huawei Cloud project id: 32 lowercase hexadecimal characters.
fn is_project_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests;
