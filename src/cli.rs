//! The command line: argument parsing and one function per command. `main` only calls [`main`] here.

mod tasks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::alerting;
use crate::app::{App, open_store, open_store_for_reading};
use crate::clock::{Clock, SystemClock, parse_duration, parse_time};
use crate::config::{self, Config, ConfigError};
use crate::notify::{
    self,
    outbox::{DispatchReport, Dispatcher},
};
use crate::output::{self, AlertJson, Format, HistoryJson, NotificationJson, TransitionJson};
use crate::poller::PollResult;
use crate::store::DeliveryStatus;
use crate::store::{HistoryQuery, Store};

/// Exit codes: 0 all good, 1 something failed at run time (a poll, a delivery), 2 usage or configuration.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "scanwatch", version, about = "Keeps watch over Huawei Cloud HSS container-security scanning")]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "SCANWATCH_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format (`run` logs to stdout, every other command to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing's syntax, e.g. `info`, `scanwatch=debug`); RUST_LOG works too.
    #[arg(long, global = true, env = "SCANWATCH_LOG", default_value = "info")]
    pub log_level: String,
    /// Run this far in the future: for rehearsals against `scanwatch simulate` after `POST /__sim/advance`; give
    /// the simulator's total `offset` (its answer to `/__sim/now` and `/__sim/advance`), e.g. `--clock-offset 25h`.
    /// Never in production: signatures are dated by this clock.
    #[arg(long, global = true, env = "SCANWATCH_CLOCK_OFFSET", value_parser = parse_duration)]
    pub clock_offset: Option<Duration>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll on schedule, evaluate, notify; SIGHUP reloads the config, SIGTERM stops.
    Run,
    /// Check the configuration; list every problem with its key path (exit 1 when there is any).
    Validate,
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Poll every target once, store the results and print them (exit 1 if any poll failed).
    Poll {
        /// Print only; do not store the snapshots (and so evaluate and notify nothing).
        #[arg(long)]
        no_store: bool,
        /// How long to spend delivering notifications after polling; what is left stays pending for the next run.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        deliver_timeout: Duration,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the notification delivery log, newest first.
    Notifications {
        /// Only notifications in this state.
        #[arg(long, value_enum)]
        status: Option<DeliveryStatus>,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Send a test message through one channel and report the service's answer. It says it is a test (`[TEST]`,
    /// severity info, label test="true", a fingerprint no real alert has) and names a made-up target unless
    /// --target is given.
    NotifyTest {
        /// The channel to test: a `[[channels]]` name from the config.
        #[arg(long)]
        channel: String,
        /// Use this configured target's labels in the message instead of a made-up one.
        #[arg(long)]
        target: Option<String>,
    },
    /// Show stored snapshots.
    History {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// From this long ago (`24h`, `7d`) or this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (RFC 3339) or this long ago.
        #[arg(long)]
        until: Option<String>,
        /// At most this many rows (the latest ones).
        #[arg(long)]
        limit: Option<u32>,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show alerts: pending and firing ones, or with --all every alert ever raised.
    Alerts {
        /// Every alert ever raised, resolved ones included, not only pending and firing.
        #[arg(long)]
        all: bool,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the alert transition log, oldest first.
    Transitions {
        /// Only this alert.
        #[arg(long)]
        fingerprint: Option<String>,
        /// From this long ago (`24h`) or this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Acknowledge a firing alert: no reminders until it resolves.
    Ack {
        /// The alert's fingerprint (the first column of `scanwatch alerts`).
        fingerprint: String,
        /// Why, or who is on it (shown in `alerts`).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Silence alerts by label (`target`, `account`, `region`, `project_id`, `task_type`, `rule`, `severity` or a
    /// user label; values may be globs): transitions are still recorded, notifications are suppressed.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Evaluate the current rules over stored snapshots and print the transitions that would have happened.
    /// Nothing is sent and nothing in the database changes.
    Replay {
        /// How far back to start (`7d`) or a time (RFC 3339).
        #[arg(long)]
        since: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List a target's scan tasks live from HSS (ListTasks), newest first; with --task, that task's clusters or
    /// files and why any failed (ListTaskResources). Within HSS's budgets (5 calls a minute per user and per IP).
    Tasks {
        /// The target (a `[[targets]]` name).
        #[arg(long)]
        target: String,
        /// Only this task type (default: every type the target polls).
        #[arg(long, value_enum)]
        task_type: Option<TaskTypeArg>,
        /// Only tasks in this state.
        #[arg(long, value_enum)]
        status: Option<TaskStatusArg>,
        /// At most this many rows per task type (HSS pages 10 to 200 at a time).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// List this task's resources instead of the tasks.
        #[arg(long)]
        task: Option<String>,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Watch the whole pipeline for about a minute against a built-in simulator: every rule fires and resolves.
    Demo {
        /// How long to watch.
        #[arg(long, default_value = "55s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Print a shell completion script (e.g. `scanwatch completions bash > /etc/bash_completion.d/scanwatch`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `scanwatch man > scanwatch.1`.
    Man,
    /// Run the HSS simulator: a real HTTP server speaking the task-statistics API and IAM login.
    Simulate {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The scenario file (see scenarios/README.md).
        #[arg(long)]
        scenario: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskTypeArg {
    ClusterScan,
    IacScan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskStatusArg {
    Ready,
    Running,
    Finished,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Add a silence: until `--for` from now or `--until` a time.
    #[command(group(clap::ArgGroup::new("end").required(true).args(["for_", "until"])))]
    Add {
        /// KEY=VALUE label matchers (repeat for more; all must match; VALUE may use `*` and `?`).
        #[arg(long = "match", value_name = "KEY=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long from now (`2h`, `3d`).
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
        /// Until this time (RFC 3339, e.g. `2026-12-01T08:00:00Z`).
        #[arg(long)]
        until: Option<String>,
        /// Why (shown in `silence list` and `alerts`).
        #[arg(long)]
        comment: String,
        /// Who; defaults to $USER.
        #[arg(long, env = "USER", default_value = "unknown")]
        author: String,
    },
    /// List silences in force (or, with --all, every one).
    List {
        /// Ended and expired silences too.
        #[arg(long)]
        all: bool,
        /// Output format: an aligned table for people, JSON (an array, DESIGN.md's field names) or CSV for tools.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (the first column of `silence list`).
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file + environment), secrets redacted.
    Show {
        /// TOML (as the file is written) or JSON.
        #[arg(long, value_enum, default_value_t = ShowFormat::Toml)]
        format: ShowFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Toml,
    Json,
}

/// Parses the command line, runs the command and turns every error into a message and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only where no socket is written: hyper writes requests with writev, which (unlike send with MSG_NOSIGNAL)
    // raises SIGPIPE when the peer has gone, and that must stay a network error, not the end of `poll`.
    if !matches!(
        cli.command,
        Command::Run
            | Command::Simulate { .. }
            | Command::Demo { .. }
            | Command::Poll { .. }
            | Command::NotifyTest { .. }
            | Command::Tasks { .. }
    ) {
        restore_sigpipe();
    }
    init_logging(&cli);
    crate::footprint::limit_malloc_arenas();
    // `history` reads the file on this thread (store::DirectReader): worker threads would only add their start to
    // a command whose whole run is a few milliseconds (issue 13: history at raw-SQLite speed).
    let mut builder = if matches!(cli.command, Command::History { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if matches!(cli.command, Command::Run) {
        // The daemon waits on the network and SQLite's own threads; two workers keep up on any machine, and its
        // footprint does not grow with the core count (a stack and an arena per worker).
        builder.worker_threads(crate::footprint::DAEMON_WORKERS);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some() { EXIT_USAGE } else { EXIT_FAILURE };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Lets a reader that stops early end a command quietly, as with any Unix tool (`scanwatch history | head`): Rust
/// ignores SIGPIPE, so `println!` would panic on the closed pipe instead. Only for the commands that read the
/// database and print (see `main`); `demo` stops quietly on its own (`demo::say!`).
fn restore_sigpipe() {
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    // The demo tells its own story on stdout; its logs would interleave with it, so only errors show unless a
    // level is asked for.
    let level =
        if matches!(cli.command, Command::Demo { .. }) && cli.log_level == "info" { "error" } else { &cli.log_level };
    // `Targets` (`info`, `scanwatch=debug,sqlx=warn`) rather than `EnvFilter`: the same directives minus span and
    // field matching, without the regex engine EnvFilter links in (~1 MB of code in the daemon, BENCHMARKS.md).
    let parse = |s: &str| s.parse::<Targets>().ok().filter(|_| !s.trim().is_empty());
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| parse(&s))
        .or_else(|| parse(level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // The daemon logs to stdout (DESIGN.md; journald takes both streams); the one-shot commands keep stdout for
    // their output (`history --format csv > file`) and log to stderr.
    let writer = if matches!(cli.command, Command::Run) {
        BoxMakeWriter::new(std::io::stdout)
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_filter(filter)).init(),
        LogFormat::Json => tracing_subscriber::registry().with(layer.json().with_filter(filter)).init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::shifted(cli.clock_offset.unwrap_or_default()));
    match cli.command {
        Command::Validate => validate(&cli.config),
        Command::Run => {
            let config = load(&cli.config)?;
            crate::daemon::run(&cli.config, config, clock, crate::app::shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show { format }) => {
            let config = load(&cli.config)?;
            let text = match format {
                ShowFormat::Toml => toml::to_string_pretty(&config).context("cannot render the configuration")?,
                ShowFormat::Json => serde_json::to_string_pretty(&config)? + "\n",
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Poll { no_store, deliver_timeout, format } => {
            let config = load(&cli.config)?;
            let db_path = config.storage.path.clone();
            // Name the database: a store error alone does not say which file refused.
            let db = || format!("storing polls in the database {}", db_path.display());
            if no_store {
                // Print only: no snapshot is written. The database's call history still holds back an account or a
                // project that is backing off; without a database, none is created (a throwaway one serves).
                let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
                let store = match Store::open_existing(&config.storage.path).await {
                    Ok(store) => store,
                    Err(crate::store::StoreError::Missing { .. }) => {
                        Store::open(&scratch.path().join("no-store.db")).await?
                    }
                    Err(e) => return Err(e).with_context(db),
                };
                let poller =
                    App::build(config, &store, clock.clone()).await?.poller.with_wait_notice(Arc::new(say_wait));
                let results = poller.poll_all(false).await.with_context(db)?;
                print!("{}", render_poll(&results, format));
                return Ok(poll_exit(&results));
            }
            let store = open_store(&config).await?;
            let app = App::build(config, &store, clock.clone()).await.with_context(db)?;
            let App { poller, dispatcher, .. } = app;
            let results = poller.with_wait_notice(Arc::new(say_wait)).poll_all(true).await.with_context(db)?;
            print!("{}", render_poll(&results, format));
            let mut code = poll_exit(&results);
            let report = deliver_until(&dispatcher, &store, clock.as_ref(), deliver_timeout).await?;
            if report.failed > 0 || report.retrying > 0 {
                eprintln!(
                    "notifications: {} delivered, {} failed, {} still pending",
                    report.delivered,
                    report.failed,
                    store.pending_count().await?
                );
                code = ExitCode::from(EXIT_FAILURE);
            }
            Ok(code)
        }
        Command::Notifications { status, limit, format } => {
            let config = load_for_reading(&cli.config)?;
            let store = open_store_for_reading(&config).await?;
            let rows: Vec<NotificationJson> =
                store.notifications(status, limit).await?.iter().map(NotificationJson::from).collect();
            print!("{}", render_notifications(&rows, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::NotifyTest { channel, target } => {
            let config = load(&cli.config)?;
            let Some(cfg) = config.channels.iter().find(|c| c.name == channel) else {
                let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
                anyhow::bail!("no channel named `{channel}` (channels: {})", names.join(", "));
            };
            let series = match &target {
                None => None,
                Some(t) => {
                    let Some((target, key)) = config.series().find(|(x, _)| x.name == *t) else {
                        let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
                        anyhow::bail!("no target named `{t}` (targets: {})", names.join(", "));
                    };
                    Some((key, target.labels.clone()))
                }
            };
            let built = notify::build_channels(
                std::slice::from_ref(cfg),
                config.schedule.timezone,
                crate::app::external_url(&config),
            )?;
            let mut sample = notify::message::test_notification(series, clock.now());
            sample.channel = channel.clone();
            sample.id = notify::outbox::new_uid();
            for ch in &built {
                match ch.send(&sample).await {
                    Ok(d) => println!("{channel}: delivered (HTTP {}): {}", d.status, d.detail),
                    Err(e) => {
                        println!("{channel}: {e}");
                        return Ok(ExitCode::from(EXIT_FAILURE));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { target, since, until, limit, format } => {
            let config = load_for_reading(&cli.config)?;
            if let Some(t) = &target
                && !config.targets.iter().any(|x| x.name == *t)
            {
                eprintln!(
                    "note: no target named `{t}` in {}; showing what the database has for it",
                    config.file.display()
                );
            }
            // Straight from the file when it needs nothing done (issue 13: history at raw-SQLite speed); otherwise
            // the store, which migrates an older database or says what is wrong.
            let source = match crate::store::DirectReader::open(&config.storage.path) {
                Some(reader) => HistorySource::Direct(reader),
                None => HistorySource::Store(open_store_for_reading(&config).await?),
            };
            let now = clock.now();
            let q = HistoryQuery {
                target,
                since: since.map(|s| parse_time(&s, now)).transpose().context("--since")?,
                until: until.map(|s| parse_time(&s, now)).transpose().context("--until")?,
                limit,
            };
            print_history(&source, &q, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { all, format } => {
            let config = load_for_reading(&cli.config)?;
            let store = open_store_for_reading(&config).await?;
            print!("{}", alerts_view(&config, &store, clock.now(), all, format).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Transitions { fingerprint, since, format } => {
            let config = load_for_reading(&cli.config)?;
            let store = open_store_for_reading(&config).await?;
            let since = since.map(|s| parse_time(&s, clock.now())).transpose().context("--since")?;
            let rows: Vec<TransitionJson> = store
                .transitions(fingerprint.as_deref(), since)
                .await?
                .iter()
                .map(|r| TransitionJson::new(&r.fingerprint, &r.series, r.rule, &r.transition))
                .collect();
            print!("{}", render_transitions(&rows, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Ack { fingerprint, comment } => {
            let config = load_for_reading(&cli.config)?;
            let store = open_store_for_reading(&config).await?;
            match store.ack(&fingerprint, comment.as_deref()).await? {
                None => anyhow::bail!("no alert has fingerprint {fingerprint} (see `scanwatch alerts --all`)"),
                Some(row) if row.alert.acked => {
                    println!(
                        "acknowledged {fingerprint} ({} on {}): no reminders until it resolves",
                        row.rule, row.series
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(row) => {
                    eprintln!("{fingerprint} is {}, not firing: nothing to acknowledge", row.alert.state.as_str());
                    Ok(ExitCode::from(EXIT_FAILURE))
                }
            }
        }
        Command::Silence(cmd) => {
            // Silences need only [storage] too: an operator's shell has no account secrets.
            let config = load_for_reading(&cli.config)?;
            let store = match &cmd {
                SilenceCommand::Add { .. } => open_store(&config).await?,
                _ => open_store_for_reading(&config).await?,
            };
            silence(&config, &store, cmd, clock.now()).await
        }
        Command::Replay { since, target, format } => {
            let config = load_for_reading(&cli.config)?;
            let store = open_store_for_reading(&config).await?;
            let from = parse_time(&since, clock.now()).context("--since")?;
            let rows = replay(&config, &store, from, target.as_deref()).await?;
            print!("{}", render_transitions(&rows, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks { target, task_type, status, limit, task, format } => {
            let config = load(&cli.config)?;
            let q = tasks::TasksQuery {
                target,
                task_type: task_type.map(|t| match t {
                    TaskTypeArg::ClusterScan => crate::model::TaskType::ClusterScan,
                    TaskTypeArg::IacScan => crate::model::TaskType::IacScan,
                }),
                status: status.map(|s| match s {
                    TaskStatusArg::Ready => crate::hss::tasks::TaskStatus::Ready,
                    TaskStatusArg::Running => crate::hss::tasks::TaskStatus::Running,
                    TaskStatusArg::Finished => crate::hss::tasks::TaskStatus::Finished,
                }),
                limit,
                task,
                format,
            };
            print!("{}", tasks::run(&config, clock.as_ref(), &q).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "scanwatch", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .context("cannot render the man page")?;
            use std::io::Write;
            std::io::stdout().write_all(&page).context("cannot write the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { duration } => {
            crate::demo::run(duration, crate::app::shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate { listen, scenario } => {
            crate::simulator::run(listen, &scenario, crate::app::shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

/// The config for a command that only reads the database: it needs `[storage]` (and the targets, to name
/// things), never the account secrets, which an operator's shell does not have.
fn load_for_reading(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load_for_reading(path)?)
}

/// `poll` prints [`wait_line`] when an account starts waiting for its API budget.
fn say_wait(account: &str, calls_per_minute: u32, left: usize) {
    eprintln!("{}", wait_line(account, calls_per_minute, left));
}

/// "waiting for account `prod`'s API budget (5 calls/min): 7 series left, about 1m24s".
pub fn wait_line(account: &str, calls_per_minute: u32, left: usize) -> String {
    let secs = (60 * left as u64).div_ceil(u64::from(calls_per_minute.max(1)));
    format!(
        "waiting for account `{account}`'s API budget ({calls_per_minute} calls/min): {left} series left, about {}",
        crate::config::format_duration(Duration::from_secs(secs))
    )
}

/// "1 account", "2 accounts".
fn counted(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// 1 when any poll failed (and says how many), else 0.
fn poll_exit(results: &[PollResult]) -> ExitCode {
    let failed = results.iter().filter(|r| r.record.outcome.is_err()).count();
    if failed > 0 {
        eprintln!("{failed} of {} polls failed", results.len());
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            for w in &config.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({}, {}, {} every {})",
                path.display(),
                counted(config.accounts.len(), "account", "accounts"),
                counted(config.targets.len(), "target", "targets"),
                counted(config.series().count(), "polled series", "polled series"),
                crate::config::format_duration(config.schedule.interval)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

const HISTORY_HEADERS: [&str; 17] = [
    "target",
    "account",
    "region",
    "project_id",
    "enterprise_project_id",
    "task_type",
    "polled_at",
    "ok",
    "total_num",
    "running_num",
    "last_task_start_time",
    "latency_ms",
    "http_status",
    "error_kind",
    "error_code",
    "error_message",
    "request_id",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())
}

fn render_history(rows: &[HistoryJson], format: Format) -> String {
    if format == Format::Table {
        let headers =
            ["POLLED_AT", "TARGET", "TASK_TYPE", "OK", "TOTAL", "RUNNING", "LAST_TASK_START", "LATENCY", "ERROR"];
        return output::render(format, &headers, rows, |r| {
            vec![
                r.polled_at.clone(),
                r.target.clone(),
                r.task_type.clone(),
                if r.ok { "ok".into() } else { "FAIL".into() },
                opt(&r.total_num),
                opt(&r.running_num),
                opt(&r.last_task_start_time),
                format!("{}ms", r.latency_ms),
                error_cell(r.error_kind.as_deref(), r.http_status, r.error_code.as_deref(), r.error_message.as_deref()),
            ]
        });
    }
    output::render(format, &HISTORY_HEADERS, rows, |_| Vec::new())
}

/// Writes `history` to stdout as the rows come from the database: JSON and CSV row by row, exactly as
/// [`render_history`] renders them; a table needs every row for its column widths, so it is rendered at the end.
/// Where `history` reads its rows.
enum HistorySource {
    /// The file itself, read-only on this thread, when it needs nothing done.
    Direct(crate::store::DirectReader),
    Store(Store),
}

impl HistorySource {
    async fn each(
        &self,
        q: &HistoryQuery,
        each: impl FnMut(crate::store::HistoryRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            HistorySource::Direct(reader) => reader.history_each(q, each),
            HistorySource::Store(store) => store.history_each(q, each).await,
        }
    }
}

async fn print_history(source: &HistorySource, q: &HistoryQuery, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    write_history(source, q, format, &mut out).await?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// [`print_history`] to any writer.
async fn write_history(
    source: &HistorySource,
    q: &HistoryQuery,
    format: Format,
    mut out: impl std::io::Write,
) -> anyhow::Result<()> {
    use serde::ser::{SerializeSeq, Serializer};
    match format {
        Format::Table => {
            let mut rows = Vec::new();
            source
                .each(q, |r| {
                    rows.push(HistoryJson::from(&r));
                    anyhow::Ok(())
                })
                .await?;
            out.write_all(render_history(&rows, format).as_bytes())?;
        }
        Format::Json => {
            let mut ser = serde_json::Serializer::pretty(&mut out);
            let mut seq = ser.serialize_seq(None)?;
            source.each(q, |r| seq.serialize_element(&HistoryJson::from(&r)).map_err(anyhow::Error::from)).await?;
            seq.end()?;
            out.write_all(b"\n")?;
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut out);
            w.write_record(HISTORY_HEADERS)?;
            source.each(q, |r| w.serialize(HistoryJson::from(&r)).map_err(anyhow::Error::from)).await?;
            w.flush()?;
        }
    }
    Ok(())
}

fn error_cell(kind: Option<&str>, status: Option<u16>, code: Option<&str>, message: Option<&str>) -> String {
    let Some(kind) = kind else { return String::new() };
    let mut s = kind.to_string();
    if let Some(st) = status {
        s.push_str(&format!(" {st}"));
    }
    if let Some(c) = code.filter(|c| status.is_none_or(|st| st.to_string() != *c)) {
        s.push_str(&format!(" {c}"));
    }
    if let Some(m) = message {
        s.push_str(&format!(": {}", crate::model::excerpt(m, 160)));
    }
    s
}

fn render_poll(results: &[PollResult], format: Format) -> String {
    let rows: Vec<HistoryJson> = results
        .iter()
        .map(|r| {
            let snapshot = r.record.to_snapshot(r.snapshot_id.unwrap_or(0), r.series_id);
            HistoryJson::from(&crate::store::HistoryRow { series: Arc::new(r.key.clone()), snapshot })
        })
        .collect();
    render_history(&rows, format)
}

async fn alerts_view(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
    all: bool,
    format: Format,
) -> anyhow::Result<String> {
    let silences = store.silences(now, false).await?;
    let rows = AlertJson::with_context(
        AlertJson::rows(store.alerts(all).await?, &silences, &config.targets, now),
        &store.alert_contexts().await?,
    );
    let headers = [
        "fingerprint",
        "target",
        "task_type",
        "rule",
        "severity",
        "state",
        "since",
        "summary",
        "value",
        "last_notified_at",
        "acked",
        "silenced",
    ];
    let table_headers =
        ["FINGERPRINT", "TARGET", "TASK_TYPE", "RULE", "SEVERITY", "STATE", "SINCE", "FLAGS", "SUMMARY"];
    Ok(match format {
        Format::Table => output::render(format, &table_headers, &rows, |r| {
            let flags = [(r.acked, "acked"), (r.silenced, "silenced")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| *f)
                .collect::<Vec<_>>()
                .join(",");
            vec![
                r.fingerprint.clone(),
                r.target.clone(),
                r.task_type.clone(),
                r.rule.clone(),
                r.severity.clone(),
                r.state.clone(),
                r.since.clone().unwrap_or_default(),
                flags,
                r.summary.clone(),
            ]
        }),
        _ => output::render(format, &headers, &rows, |_| Vec::new()),
    })
}

fn render_transitions(rows: &[TransitionJson], format: Format) -> String {
    let headers = ["fingerprint", "target", "task_type", "rule", "at", "from", "to", "event", "summary", "value"];
    if format != Format::Table {
        return output::render(format, &headers, rows, |_| Vec::new());
    }
    let table_headers = ["AT", "TARGET", "TASK_TYPE", "RULE", "TRANSITION", "EVENT", "SUMMARY"];
    output::render(format, &table_headers, rows, |r| {
        vec![
            r.at.clone(),
            r.target.clone(),
            r.task_type.clone(),
            r.rule.clone(),
            format!("{} -> {}", r.from, r.to),
            r.event.clone().unwrap_or_else(|| "-".into()),
            r.summary.clone(),
        ]
    })
}

async fn silence(config: &Config, store: &Store, cmd: SilenceCommand, now: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    match cmd {
        SilenceCommand::Add { matchers, for_, until, comment, author } => {
            let known = silence_label_keys(config);
            let mut parsed = std::collections::BTreeMap::new();
            for m in &matchers {
                let (k, v) = m
                    .split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| anyhow::anyhow!("--match `{m}`: write KEY=VALUE, e.g. target=prod-*"))?;
                let k = k.trim();
                if !known.contains(k) {
                    anyhow::bail!(
                        "--match `{m}`: no alert has the label `{k}`; labels are {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                if v.trim().is_empty() {
                    anyhow::bail!("--match `{m}`: the value is empty; give a value or a glob, e.g. {k}=prod-*");
                }
                parsed.insert(k.to_string(), v.to_string());
            }
            let ends_at = match (for_, until) {
                (Some(d), _) => crate::clock::later(now, d),
                (None, Some(u)) => parse_time(&u, now).context("--until")?,
                (None, None) => anyhow::bail!("give --for or --until"),
            };
            if ends_at <= now {
                anyhow::bail!("the silence would end before it starts ({})", output::rfc3339(ends_at));
            }
            let id = store.add_silence(&parsed, now, ends_at, &author, &comment, now).await?;
            println!("silence {id} until {}", output::rfc3339(ends_at));
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::List { all, format } => {
            #[derive(serde::Serialize)]
            struct SilenceJson {
                id: i64,
                matchers: std::collections::BTreeMap<String, String>,
                starts_at: String,
                ends_at: String,
                created_by: String,
                comment: String,
            }
            let rows: Vec<SilenceJson> = store
                .silences(now, all)
                .await?
                .into_iter()
                .map(|s| SilenceJson {
                    id: s.id,
                    matchers: s.matchers,
                    starts_at: output::rfc3339(s.starts_at),
                    ends_at: output::rfc3339(s.ends_at),
                    created_by: s.created_by,
                    comment: s.comment,
                })
                .collect();
            let cells = |r: &SilenceJson| {
                vec![
                    r.id.to_string(),
                    r.matchers.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                    r.starts_at.clone(),
                    r.ends_at.clone(),
                    r.created_by.clone(),
                    r.comment.clone(),
                ]
            };
            let text = if format == Format::Csv {
                let flat: Vec<Vec<String>> = rows.iter().map(cells).collect();
                output::render(
                    format,
                    &["id", "matchers", "starts_at", "ends_at", "created_by", "comment"],
                    &flat,
                    |_| Vec::new(),
                )
            } else {
                output::render(format, &["ID", "MATCHERS", "STARTS", "ENDS", "BY", "COMMENT"], &rows, cells)
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::Expire { id } => {
            if store.expire_silence(id, now).await? {
                println!("silence {id} expired");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no silence {id} in force");
                Ok(ExitCode::from(EXIT_FAILURE))
            }
        }
    }
}

/// The labels a silence may match: every alert's identity labels, `rule`, `severity`, `channel` (for
/// `channel_failing`) and the user labels of the configured targets.
fn silence_label_keys(config: &Config) -> std::collections::BTreeSet<String> {
    let mut keys: std::collections::BTreeSet<String> =
        alerting::silence::BUILTIN_LABELS.into_iter().map(String::from).collect();
    keys.extend(config.targets.iter().flat_map(|t| t.labels.keys().cloned()));
    keys
}

/// Replays every configured series (or one target's) from `from` with the current rules, starting inactive.
async fn replay(
    config: &Config,
    store: &Store,
    from: DateTime<Utc>,
    target: Option<&str>,
) -> anyhow::Result<Vec<TransitionJson>> {
    if let Some(t) = target
        && !config.targets.iter().any(|x| x.name == t)
    {
        anyhow::bail!("no target named `{t}` in {}", config.file.display());
    }
    let lifecycle = config.alerting.lifecycle();
    let stored = store.series().await?;
    let mut out = Vec::new();
    for (t, key) in config.series().filter(|(t, _)| target.is_none_or(|name| t.name == name)) {
        let rule_set = t.rules.rule_set();
        let Some(series_id) =
            stored.iter().find(|s| s.key.target == key.target && s.key.task_type == key.task_type).map(|s| s.id)
        else {
            continue;
        };
        // Everything stored: the rule state is rebuilt from the first snapshot on, as the live path built it.
        let history = store.snapshots_since(series_id, DateTime::<Utc>::MIN_UTC).await?;
        for rule in rule_set.enabled() {
            let fp = alerting::fingerprint(rule, &key);
            let (_, transitions) =
                alerting::replay(rule, &rule_set, &lifecycle, &key, &history, from, alerting::Alert::default());
            out.extend(transitions.iter().map(|tr| TransitionJson::new(&fp, &key, rule, tr)));
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.target.cmp(&b.target)).then(a.task_type.cmp(&b.task_type)));
    Ok(out)
}

/// Dispatch passes until nothing is due before `budget` runs out; retries that fall due meanwhile are tried again.
async fn deliver_until(
    dispatcher: &Dispatcher,
    store: &Store,
    clock: &dyn Clock,
    budget: Duration,
) -> anyhow::Result<DispatchReport> {
    // A `--deliver-timeout` too long to add to the clock means: until everything is delivered or given up.
    let deadline = std::time::Instant::now()
        .checked_add(budget)
        .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut total = DispatchReport::default();
    loop {
        let r = dispatcher.dispatch_due(store, clock.now(), deadline).await?;
        total.delivered += r.delivered;
        total.failed += r.failed + r.expired;
        total.retrying = r.retrying + r.deferred;
        let Some(next) = store.next_attempt_at().await? else { break };
        let wait = (next - clock.now()).to_std().unwrap_or_default();
        if std::time::Instant::now().checked_add(wait).is_none_or(|t| t >= deadline) {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    // After the resolutions above: what still fires is re-sent (Alertmanager forgets an alert it stops hearing of).
    dispatcher.resend_due(store, clock.now(), deadline).await?;
    Ok(total)
}

fn render_notifications(rows: &[NotificationJson], format: Format) -> String {
    let headers =
        ["id", "channel", "fingerprints", "event", "status", "attempts", "created_at", "delivered_at", "last_error"];
    if format != Format::Table {
        return output::render(format, &headers, rows, |_| Vec::new());
    }
    let table = ["ID", "CHANNEL", "EVENT", "STATUS", "ATTEMPTS", "CREATED", "ALERTS", "LAST_ERROR"];
    output::render(format, &table, rows, |r| {
        vec![
            r.id.clone(),
            r.channel.clone(),
            r.event.clone(),
            r.status.clone(),
            r.attempts.to_string(),
            r.created_at.clone(),
            r.fingerprints.len().to_string(),
            r.last_error.clone().map(|e| crate::model::excerpt(&e, 120)).unwrap_or_default(),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ErrorKind, PollError, PollRecord, SeriesKey, TaskStats, TaskType};

    /// `history` streams JSON and CSV row by row; what it writes must be byte for byte what rendering the collected
    /// rows gives (the format scripts rely on), for several rows, for none, and for text that needs escaping.
    #[tokio::test]
    async fn streamed_history_is_byte_for_byte_the_rendered_one_from_the_store_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        for (target, task_type) in
            [("a", TaskType::ClusterScan), ("a", TaskType::IacScan), ("b", TaskType::ClusterScan)]
        {
            let key = SeriesKey {
                target: target.into(),
                account: "acc".into(),
                region: "cn-north-4".into(),
                project_id: "p".into(),
                enterprise_project_id: Some("ep,\"1\"".into()),
                task_type,
            };
            let id = store.ensure_series(&key).await.unwrap();
            for min in 0..5i64 {
                let polled_at = DateTime::from_timestamp(1_800_000_000 + min * 300, 0).unwrap();
                let outcome = if min == 3 {
                    Err(PollError::new(ErrorKind::Server, "bad \"gateway\",\nretry — later"))
                } else {
                    Ok(TaskStats { total_num: 10 + min as u64, running_num: 1, last_task_start_time: Some(5) })
                };
                let rec =
                    PollRecord { task: None, polled_at, latency_ms: 7, outcome, http_status: None, request_id: None };
                store.record_poll(id, &rec, true).await.unwrap();
            }
        }
        let queries = [
            HistoryQuery::default(),
            HistoryQuery { target: Some("a".into()), ..HistoryQuery::default() },
            HistoryQuery { target: Some("a".into()), limit: Some(3), ..HistoryQuery::default() },
            HistoryQuery { target: Some("nobody".into()), ..HistoryQuery::default() },
        ];
        for q in queries {
            let rows: Vec<HistoryJson> = store.history(&q).await.unwrap().iter().map(HistoryJson::from).collect();
            // Through the store, and straight from the file (the CLI's `history` on a current database).
            let direct = crate::store::DirectReader::open(&dir.path().join("t.db")).expect("a current database");
            let sources = [HistorySource::Store(store.clone()), HistorySource::Direct(direct)];
            for (source, format) in
                sources.iter().flat_map(|s| [Format::Json, Format::Csv, Format::Table].map(|f| (s, f)))
            {
                let mut streamed = Vec::new();
                write_history(source, &q, format, &mut streamed).await.unwrap();
                assert_eq!(String::from_utf8(streamed).unwrap(), render_history(&rows, format), "{q:?} as {format:?}");
            }
        }
        let all = store.history(&HistoryQuery::default()).await.unwrap();
        assert_eq!(all.len(), 15);
        assert!(all.windows(2).all(|w| w[0].snapshot.polled_at <= w[1].snapshot.polled_at), "oldest first");
        let limited = store
            .history(&HistoryQuery { target: Some("a".into()), limit: Some(3), ..HistoryQuery::default() })
            .await
            .unwrap();
        let at: Vec<i64> = limited.iter().map(|r| r.snapshot.polled_at.timestamp()).collect();
        assert_eq!(at, vec![1_800_001_200 - 300, 1_800_001_200, 1_800_001_200], "the latest 3, oldest first");
    }
}
