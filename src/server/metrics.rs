//! What `/metrics` says and in which format: the families the daemon records (polls, deliveries), the values read
//! at scrape time (alerts, outbox, database, last good cycle), `scanwatch_build_info` and the standard `process_*`
//! families, rendered as OpenMetrics 1.0.0 or Prometheus text 0.0.4 as the scraper's `Accept` header asks.
//!
//! Families (every name is also documented in the README's Metrics section):
//! - per series (`target`, `task_type`, `account`, `region`, `project_id`): `scanwatch_hss_total_num`,
//!   `scanwatch_hss_running_num`, `scanwatch_hss_last_task_start_timestamp_seconds`, `scanwatch_poll_last_ok`,
//!   `scanwatch_poll_last_success_timestamp_seconds`;
//! - `scanwatch_poll_errors_total{target,task_type,kind}`, `scanwatch_deliveries_total{channel,outcome}` and
//!   `scanwatch_poll_duration_seconds{account}` (histogram): declared at 0 for every configured series, channel and
//!   account ([`Metrics::declare`]), so that `rate()` and `increase()` see the first event;
//! - `scanwatch_alerts{rule,state}`, `scanwatch_outbox_pending`, `scanwatch_database_writable`,
//!   `scanwatch_last_good_cycle_timestamp_seconds`: read at scrape time;
//! - `scanwatch_build_info{version} 1`;
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//!   `process_open_fds`, `process_max_fds`, `process_start_time_seconds`: read from `/proc/self` at scrape time,
//!   with client_golang's names and help texts, so dashboards made for Go exporters work (Linux only; absent elsewhere).
//!
//! prometheus-client encodes OpenMetrics; [`to_text_004`] turns that into the 0.0.4 text format, which differs only
//! in the comment lines: a counter's HELP and TYPE name its sample (`foo_total`), and there is no `# UNIT` or `# EOF`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::alerting::AlertState;
use crate::config::Config;
use crate::model::{ErrorKind, PollRecord, SeriesKey};
use crate::rules::RuleName;

/// The content type of the OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text answer (the default, as in client_golang).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Poll latency histogram buckets, in seconds: HSS answers in tens of milliseconds to seconds, a local proxy or
/// simulator in under 5 ms; timeouts are 30 s. Observations keep sub-millisecond precision (`_sum`).
const LATENCY_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// How a delivery attempt ends, as the outbox reports it (`notify::outbox`): each is declared at 0 per channel.
pub const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "retrying", "failed", "expired"];

/// The exposition format of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for, negotiated as client_golang's `expfmt.NegotiateIncludingOpenMetrics`:
    /// OpenMetrics only when asked for (version 1.0.0, 0.0.1 or none), by order of preference (`q`); text 0.0.4
    /// otherwise, including for no header, `*/*`, protobuf and anything unparseable.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Text };
        let mut offers: Vec<(f64, usize, Option<Format>)> = Vec::new();
        for (i, part) in accept.split(',').enumerate() {
            let mut fields = part.split(';').map(str::trim);
            let media = fields.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0, None);
            for param in fields {
                let Some((k, v)) = param.split_once('=') else { continue };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => Some(Format::OpenMetrics),
                ("text/plain", None | Some("0.0.4")) => Some(Format::Text),
                _ => None,
            };
            if q > 0.0 {
                offers.push((q, i, format));
            }
        }
        // Highest q first; the order written breaks ties (a stable sort).
        offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offers.into_iter().find_map(|(_, _, f)| f).unwrap_or(Format::Text)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    target: String,
    task_type: String,
    account: String,
    region: String,
    project_id: String,
}

impl From<&SeriesKey> for SeriesLabels {
    fn from(k: &SeriesKey) -> Self {
        SeriesLabels {
            target: k.target.clone(),
            task_type: k.task_type.as_str().to_string(),
            account: k.account.clone(),
            region: k.region.clone(),
            project_id: k.project_id.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    target: String,
    task_type: String,
    kind: String,
}

impl ErrorLabels {
    fn new(series: &SeriesKey, kind: ErrorKind) -> Self {
        ErrorLabels {
            target: series.target.clone(),
            task_type: series.task_type.as_str().to_string(),
            kind: kind.as_str().to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The counters and gauges the daemon records, rendered on `/metrics` together with what the store says at scrape
/// time. Cheap to share: every family is reference-counted inside.
#[derive(Debug)]
pub struct Metrics {
    total_num: Family<SeriesLabels, Gauge>,
    running_num: Family<SeriesLabels, Gauge>,
    last_task_start: Family<SeriesLabels, FloatGauge>,
    last_poll_ok: Family<SeriesLabels, Gauge>,
    last_success: Family<SeriesLabels, FloatGauge>,
    latency: Family<AccountLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What `/metrics` reads from elsewhere at scrape time; `None` when it could not be read (the family is left out).
#[derive(Debug, Clone, Default)]
pub struct ScrapeValues {
    pub alerts: Option<Vec<(RuleName, AlertState, i64)>>,
    pub outbox_pending: Option<i64>,
    pub database_writable: bool,
    pub last_good_cycle: Option<DateTime<Utc>>,
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            total_num: Family::default(),
            running_num: Family::default(),
            last_task_start: Family::default(),
            last_poll_ok: Family::default(),
            last_success: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            errors: Family::default(),
            deliveries: Family::default(),
        }
    }

    /// Creates, at 0, the error counters of every configured series (each kind), the delivery counters of every
    /// configured channel (each outcome) and the latency histogram of every account, so that the first event is an
    /// increase `rate()` can see rather than the appearance of a new series. Called at start and after a reload;
    /// what a reload removed keeps its last value until the restart.
    pub fn declare(&self, config: &Config) {
        for (_, key) in config.series() {
            for kind in ErrorKind::ALL {
                let _ = self.errors.get_or_create(&ErrorLabels::new(&key, kind));
            }
        }
        for channel in &config.channels {
            for outcome in DELIVERY_OUTCOMES {
                let labels = DeliveryLabels { channel: channel.name.clone(), outcome: outcome.into() };
                let _ = self.deliveries.get_or_create(&labels);
            }
        }
        for account in &config.accounts {
            let _ = self.latency.get_or_create(&AccountLabels { account: account.name.clone() });
        }
    }

    /// Records one poll of `series` that took `latency`: its task gauges on success, its error kind on failure.
    pub fn poll(&self, series: &SeriesKey, result: &PollRecord, latency: Duration) {
        let labels = SeriesLabels::from(series);
        self.latency.get_or_create(&AccountLabels { account: series.account.clone() }).observe(latency.as_secs_f64());
        match &result.outcome {
            Ok(stats) => {
                self.total_num.get_or_create(&labels).set(i64::try_from(stats.total_num).unwrap_or(i64::MAX));
                self.running_num.get_or_create(&labels).set(i64::try_from(stats.running_num).unwrap_or(i64::MAX));
                match stats.last_task_start_time {
                    Some(ms) => {
                        self.last_task_start.get_or_create(&labels).set(ms as f64 / 1000.0);
                    }
                    // No task ever ran: no sample, rather than a start at 1970 that looks like a very old scan.
                    None => {
                        self.last_task_start.remove(&labels);
                    }
                }
                self.last_poll_ok.get_or_create(&labels).set(1);
                self.last_success.get_or_create(&labels).set(seconds(result.polled_at));
            }
            Err(e) => {
                self.errors.get_or_create(&ErrorLabels::new(series, e.kind)).inc();
                self.last_poll_ok.get_or_create(&labels).set(0);
            }
        }
    }

    /// Records one delivery attempt on `channel` and how it ended (one of [`DELIVERY_OUTCOMES`]).
    pub fn delivery(&self, channel: &str, outcome: &str) {
        self.deliveries.get_or_create(&DeliveryLabels { channel: channel.into(), outcome: outcome.into() }).inc();
    }

    /// The exposition text in `format`: what was recorded, plus `scrape`, build info and the process metrics.
    pub fn render(&self, scrape: &ScrapeValues, format: Format) -> Result<String, std::fmt::Error> {
        let mut root = Registry::default();
        register_process(&mut root);
        let r = root.sub_registry_with_prefix("scanwatch");
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        r.register(
            "build_info",
            "A metric with a constant '1' value labeled by the version scanwatch was built from",
            build,
        );
        r.register("hss_total_num", "total_num from task-statistics: tasks ever run", self.total_num.clone());
        r.register("hss_running_num", "running_num from task-statistics: tasks scanning now", self.running_num.clone());
        r.register(
            "hss_last_task_start_timestamp_seconds",
            "last_task_start_time from task-statistics (absent when no task ever ran)",
            self.last_task_start.clone(),
        );
        r.register("poll_last_ok", "1 when the latest poll of the series succeeded, else 0", self.last_poll_ok.clone());
        r.register(
            "poll_last_success_timestamp_seconds",
            "When the series was last polled successfully",
            self.last_success.clone(),
        );
        r.register("poll_duration_seconds", "Latency of HSS task-statistics calls", self.latency.clone());
        r.register("poll_errors", "Failed polls by error kind", self.errors.clone());
        r.register("deliveries", "Notification delivery attempts by channel and outcome", self.deliveries.clone());

        if let Some(counts) = &scrape.alerts {
            let alerts = Family::<AlertLabels, Gauge>::default();
            for rule in RuleName::ALL {
                for state in AlertState::ALL {
                    let n = counts.iter().find(|(r, s, _)| *r == rule && *s == state).map_or(0, |(_, _, n)| *n);
                    alerts
                        .get_or_create(&AlertLabels { rule: rule.as_str().into(), state: state.as_str().into() })
                        .set(n);
                }
            }
            r.register("alerts", "Alerts by rule and state", alerts);
        }
        if let Some(n) = scrape.outbox_pending {
            r.register(
                "outbox_pending",
                "Notifications waiting to be delivered (the outbox depth)",
                ConstGauge::new(n),
            );
        }
        r.register(
            "database_writable",
            "1 when the database accepts writes",
            ConstGauge::new(i64::from(scrape.database_writable)),
        );
        if let Some(t) = scrape.last_good_cycle {
            r.register(
                "last_good_cycle_timestamp_seconds",
                "When the latest good cycle finished",
                ConstGauge::new(seconds(t)),
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &root)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::Text => to_text_004(&out),
        })
    }
}

/// OpenMetrics text (as prometheus-client writes it) turned into Prometheus text 0.0.4. The samples are the same in
/// both; only the descriptors differ:
/// - a counter family `foo` has samples `foo_total` in both, but 0.0.4 names the family by its sample, so its HELP and
///   TYPE lines say `foo_total` (a HELP naming `foo` would leave `foo_total` without help: promtool's complaint);
/// - `# UNIT` and `# EOF` do not exist in 0.0.4, and `unknown` is called `untyped`.
///
/// prometheus-client writes HELP before TYPE, so a HELP line waits for its TYPE to know the family's kind.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let flush_help = |out: &mut String, help: &mut Option<(&str, &str)>| {
        if let Some((name, text)) = help.take() {
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
    };
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, &mut help);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, &mut help);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, &mut help);
    out
}

/// The `process_*` families client_golang's process collector exports, read now from `/proc/self`. Any that cannot
/// be read are left out rather than shown as 0. (prometheus-client ends every help text with the period.)
fn register_process(r: &mut Registry) {
    let Some(p) = ProcessStats::read() else { return };
    r.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(p.cpu_seconds),
    );
    r.register("process_resident_memory_bytes", "Resident memory size in bytes", ConstGauge::new(p.resident_bytes));
    r.register("process_virtual_memory_bytes", "Virtual memory size in bytes", ConstGauge::new(p.virtual_bytes));
    r.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        ConstGauge::new(p.start_time_seconds),
    );
    if let Some(n) = p.open_fds {
        r.register("process_open_fds", "Number of open file descriptors", ConstGauge::new(n));
    }
    if let Some(n) = p.max_fds {
        r.register("process_max_fds", "Maximum number of open file descriptors", ConstGauge::new(n));
    }
}

/// This process's resource use, as client_golang's process collector reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub start_time_seconds: f64,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time), `/proc/self/fd` and `/proc/self/limits`; `None` where there
    /// is no such file system (not Linux) or it cannot be parsed.
    #[cfg(target_os = "linux")]
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let mut p = ProcessStats::parse(&stat, &boot, ticks, page)?;
        p.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
        p.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| parse_max_fds(&l));
        Some(p)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Option<ProcessStats> {
        None
    }

    /// The values in `/proc/self/stat` (`stat`) and `/proc/stat` (`boot`, for `btime`), with the clock ticks per
    /// second and the page size; `None` when either text is not what Linux writes.
    pub fn parse(stat: &str, boot: &str, ticks_per_second: i64, page_size: i64) -> Option<ProcessStats> {
        if ticks_per_second <= 0 || page_size <= 0 {
            return None;
        }
        // The command name in parentheses may hold spaces and parentheses: the fields start after the last `)`.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        // Field numbers of proc(5), minus 3: the first after `)` is field 3 (state).
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let (utime, stime, start, vsize, rss) = (field(14)?, field(15)?, field(22)?, field(23)?, field(24)?);
        let btime = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse::<u64>().ok()?;
        let ticks = ticks_per_second as f64;
        Some(ProcessStats {
            cpu_seconds: utime.saturating_add(stime) as f64 / ticks,
            resident_bytes: i64::try_from(rss).unwrap_or(i64::MAX).saturating_mul(page_size),
            virtual_bytes: i64::try_from(vsize).unwrap_or(i64::MAX),
            start_time_seconds: btime as f64 + start as f64 / ticks,
            open_fds: None,
            max_fds: None,
        })
    }
}

/// The soft limit of "Max open files" in `/proc/self/limits`; `None` when unlimited or absent.
fn parse_max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}
