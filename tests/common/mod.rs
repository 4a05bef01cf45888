//! Shared harness of the end-to-end tests: the HSS simulator served in the test process on 127.0.0.1:0, a fresh
//! temporary directory per test with a generated config file, and the REAL `scanwatch` binary run against them
//! with a cleared environment and a hard time limit.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scanwatch::simulator::{CallRecord, Scenario, Simulator};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A child that runs longer than this is killed and the test fails: a hang is a bug, never a slow test.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Huawei's example key pair from the signing vectors; never a real one.
pub const AK: &str = "HPUAEXAMPLEAK0000001";
pub const SK: &str = "exampleSecretKey0000000000000000000000001";
/// A second pair, for temporary credentials (AK/SK + security token).
pub const STS_AK: &str = "HPUAEXAMPLEAK0000002";
pub const STS_SK: &str = "exampleSecretKey0000000000000000000000002";
pub const STS_TOKEN: &str = "sts-security-token-0123456789abcdef";
/// A third pair, for an account that must stay healthy beside a broken one.
pub const OTHER_AK: &str = "HPUAEXAMPLEAK0000003";
pub const OTHER_SK: &str = "exampleSecretKey0000000000000000000000003";
/// IAM password login.
pub const DOMAIN: &str = "acme";
pub const USER: &str = "watcher";
pub const PASSWORD: &str = "iam-password-s3cret-value";
/// A static `X-Auth-Token`.
pub const STATIC_TOKEN: &str = "static-x-auth-token-value-0001";

/// The environment every child gets (after `env_clear`): each secret under its own variable, so a config chooses
/// what it uses by `*_env`. The SDK's default names (HUAWEICLOUD_SDK_*, CLOUD_SDK_*) are never set unless a test
/// sets them itself.
pub fn secret_env() -> Vec<(String, String)> {
    [
        ("SW_AK", AK),
        ("SW_SK", SK),
        ("SW_STS_AK", STS_AK),
        ("SW_STS_SK", STS_SK),
        ("SW_STS_TOKEN", STS_TOKEN),
        ("SW_OTHER_AK", OTHER_AK),
        ("SW_OTHER_SK", OTHER_SK),
        ("SW_PASSWORD", PASSWORD),
        ("SW_TOKEN", STATIC_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every secret value a test hands out; none may ever be printed or stored.
pub const SECRET_VALUES: [&str; 7] = [SK, STS_SK, STS_TOKEN, OTHER_SK, PASSWORD, STATIC_TOKEN, AK];

/// The `[simulator]` settings and every identity the simulator accepts; series are appended by each test.
pub fn scenario_head() -> String {
    format!(
        r#"
[simulator]
calls_per_minute = 600

[[credentials]]
ak = "{AK}"
sk = "{SK}"

[[credentials]]
ak = "{STS_AK}"
sk = "{STS_SK}"
security_token = "{STS_TOKEN}"

[[credentials]]
ak = "{OTHER_AK}"
sk = "{OTHER_SK}"

[[users]]
domain = "{DOMAIN}"
name = "{USER}"
password = "{PASSWORD}"

[[tokens]]
token = "{STATIC_TOKEN}"
"#
    )
}

/// A project id (32 lowercase hex, as Huawei's are and `validate` requires) for a readable name used in tests
/// ("project-retry", "stale"): always the same id for the same name; a real id passes through unchanged.
pub fn pid(name: &str) -> String {
    use sha2::Digest;
    if name.len() == 32 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return name.to_string();
    }
    hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16])
}

/// One scenario series with a single step starting at 0s; `step` is the step's keys (values or a fault).
/// `project_id` may be a readable name ([`pid`]).
pub fn series(project_id: &str, task_type: &str, enterprise_project_id: Option<&str>, step: &str) -> String {
    let project_id = pid(project_id);
    let eps = enterprise_project_id.map(|e| format!("enterprise_project_id = \"{e}\"\n")).unwrap_or_default();
    format!(
        "\n[[series]]\nproject_id = \"{project_id}\"\ntask_type = \"{task_type}\"\n{eps}[[series.steps]]\nat = \"0s\"\n{step}\n"
    )
}

/// An AK/SK account whose secrets come from the named environment variables, allowed plenty of calls.
pub fn aksk_account(name: &str, ak_env: &str, sk_env: &str) -> String {
    format!(
        "\n[[accounts]]\nname = \"{name}\"\nauth = \"aksk\"\nak_env = \"{ak_env}\"\nsk_env = \"{sk_env}\"\ncalls_per_minute = 600\n"
    )
}

/// A target polling `task_types` of `project_id` (a readable name becomes [`pid`]) at `endpoint` (the simulator,
/// normally).
pub fn target(
    name: &str,
    account: &str,
    endpoint: &str,
    project_id: &str,
    task_types: &[&str],
    enterprise_project_id: Option<&str>,
) -> String {
    let eps = enterprise_project_id.map(|e| format!("enterprise_project_id = \"{e}\"\n")).unwrap_or_default();
    let types = task_types.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    let project_id = pid(project_id);
    format!(
        "\n[[targets]]\nname = \"{name}\"\naccount = \"{account}\"\nregion = \"cn-north-4\"\nendpoint = \"{endpoint}\"\n\
         project_id = \"{project_id}\"\n{eps}task_types = [{types}]\n"
    )
}

/// The simulator, served by its own accept loop (so `reset` really closes the connection) on a runtime of its own
/// while the test thread runs the binary. Dropping it stops serving.
pub struct SimServer {
    pub sim: Simulator,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SimServer {
    pub fn start(scenario: &str) -> SimServer {
        let scenario = Scenario::from_toml_str(scenario).unwrap_or_else(|e| panic!("bad test scenario: {e}"));
        let sim = Simulator::new(scenario);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the simulator");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the simulator's address");
        let shutdown = CancellationToken::new();
        let (serving, stop) = (sim.clone(), shutdown.clone());
        runtime.spawn(async move {
            if let Err(e) = serving.serve(listener, stop).await {
                eprintln!("simulator stopped: {e}");
            }
        });
        SimServer { sim, url: format!("http://{addr}"), shutdown, runtime: Some(runtime) }
    }

    /// The task-statistics calls only (no IAM logins), oldest first.
    pub fn hss_calls(&self) -> Vec<CallRecord> {
        self.sim.calls().into_iter().filter(|c| c.api == Some(scanwatch::simulator::Api::TaskStatistics)).collect()
    }

    /// The task-statistics calls for one project, oldest first.
    pub fn calls_for(&self, project_id: &str) -> Vec<CallRecord> {
        let path = format!("/v5/{}/common/task-statistics", pid(project_id));
        self.hss_calls().into_iter().filter(|c| c.path == path).collect()
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "`{}` exited with {:?}, expected {code}\n{}", self.command, self.code, self);
        self
    }

    /// stdout and stderr together, for "is it mentioned anywhere" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }
}

/// Runs the real binary in `dir` with exactly `env` (the inherited environment is cleared, so no
/// HUAWEICLOUD_SDK_* / CLOUD_SDK_* / SCANWATCH_* / proxy variable of the developer's shell leaks in). Kills it and
/// fails the test if it runs over [`CHILD_TIMEOUT`]; fails the test if it panicked.
pub fn run_scanwatch(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scanwatch"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    let run = run_command(format!("scanwatch {}", args.join(" ")), command);
    assert!(!run.stderr.contains("panicked"), "`{}` panicked\n{run}", run.command);
    run
}

/// Runs `command` (named `name` in messages) to its end with stdin closed and both outputs captured. Kills it and
/// fails the test if it runs over [`CHILD_TIMEOUT`].
pub fn run_command(name: String, mut command: Command) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{name}`: {e}"));

    // Each pipe is drained on its own thread, which reports when it reaches EOF, i.e. when the child is gone.
    let (done, finished) = mpsc::channel::<()>();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            let _ = done.send(());
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));

    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut timed_out = false;
    for _ in 0..2 {
        if finished.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("cannot wait for `{name}`: {e}"));
    let run = Run {
        command: name,
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(!timed_out, "`{}` ran over {CHILD_TIMEOUT:?} and was killed\n{run}", run.command);
    run
}

/// A fresh temporary directory with a config file in it; every command runs with `--config` pointing there.
pub struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("a temporary directory"), env: secret_env() }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("scanwatch.toml")
    }

    /// Where the config written by [`Sandbox::write_config`] stores its database.
    pub fn db_path(&self) -> PathBuf {
        self.dir().join("scanwatch.db")
    }

    /// Writes the config file; a `[storage]` table pointing into the sandbox is added unless `body` has one.
    ///
    /// Every account here polls the one simulator on 127.0.0.1, which allows 600 calls a minute per AK and per IP
    /// (`scenario_head`): so the config's per-host budget is 600 too, unless the test sets its own
    /// `host_calls_per_minute` (the 5-a-minute default is tested where it is the point).
    pub fn write_config(&self, body: &str) {
        let body = if body.contains("host_calls_per_minute") {
            body.to_string()
        } else if body.contains("[schedule]\n") {
            body.replacen("[schedule]\n", "[schedule]\nhost_calls_per_minute = 600\n", 1)
        } else {
            format!("[schedule]\nhost_calls_per_minute = 600\n{body}")
        };
        let text = if body.contains("[storage]") {
            body
        } else {
            format!("[storage]\npath = '{}'\n{body}", self.db_path().display())
        };
        std::fs::write(self.config_path(), text).expect("write the config file");
    }

    /// Adds (or replaces) one environment variable of every later run.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Removes one environment variable from every later run.
    pub fn unset_env(&mut self, name: &str) {
        self.env.retain(|(k, _)| k != name);
    }

    /// `scanwatch --config <sandbox config> ARGS...`
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// Like [`Sandbox::run`] with extra environment variables for this run only.
    pub fn run_with_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let config = self.config_path().display().to_string();
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        run_scanwatch(self.dir(), &full, &env)
    }

    /// Starts `scanwatch --config <sandbox config> ARGS...` without waiting (to kill it mid-flight).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_scanwatch"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.dir())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scanwatch")
    }

    /// Starts `scanwatch --config <sandbox config> --log-format text ARGS...` (ARGS may start with more global
    /// flags) with every line it prints forwarded to a channel, so a test waits for a log line rather than for time.
    /// Both streams: `run` logs to stdout (DESIGN.md), the one-shot commands and fatal errors to stderr.
    pub fn spawn_logged(&self, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scanwatch"))
            .arg("--config")
            .arg(self.config_path())
            .args(["--log-format", "text"])
            .args(args)
            .current_dir(self.dir())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scanwatch");
        let (tx, rx) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().expect("stdout")), Box::new(child.stderr.take().expect("stderr"))];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        (child, rx)
    }

    /// `history --format json` (plus `args`), which must succeed, parsed.
    pub fn history(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["history", "--format", "json"];
        full.extend_from_slice(args);
        let run = self.run(&full);
        run.expect_code(0);
        parse_rows(&run.stdout)
    }
}

/// A JSON array of rows as printed by `--format json`.
pub fn parse_rows(stdout: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("expected a JSON array, got {other:?} from:\n{stdout}"),
    }
}

/// The one row of `rows` for `target` / `task_type`, failing unless there is exactly one.
pub fn row<'a>(rows: &'a [Value], target: &str, task_type: &str) -> &'a Value {
    let found: Vec<&Value> = rows.iter().filter(|r| r["target"] == target && r["task_type"] == task_type).collect();
    assert_eq!(found.len(), 1, "expected one row for {target}/{task_type} in {rows:#?}");
    found[0]
}

/// Every field `history --format json` must carry, in DESIGN.md's names.
pub const HISTORY_FIELDS: [&str; 17] = [
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

/// Fails unless `row` has exactly DESIGN.md's history fields.
pub fn assert_history_fields(row: &Value) {
    let mut keys: Vec<&str> = row.as_object().expect("a row is an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = HISTORY_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "history row fields: {row:#}");
}

/// Fails if any secret value handed to the child shows up in `text`.
pub fn assert_no_secret(text: &str, what: &str) {
    for secret in SECRET_VALUES {
        assert!(!text.contains(secret), "{what} leaks the secret `{secret}`:\n{text}");
    }
}

/// The database file and its WAL as (lossy) text, to check that no secret was ever written to disk.
pub fn database_bytes(db: &Path) -> String {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// What a local receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with `ok` (what Slack says; any 2xx is success for a webhook).
    Ok,
    /// 503: the receiver is down.
    Unavailable,
    /// Never answer (the request is still recorded and announced).
    Hang,
    /// 503 and 200 in turn, starting with 503: a flaky receiver. Recorded as the answer actually given.
    Alternate,
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub webhook_id: Option<String>,
    pub body: Value,
    /// What the receiver answered.
    pub answer: Answer,
}

/// A local chat/webhook service on 127.0.0.1:0 whose answers a test switches, recording every request and
/// announcing each on a channel (so a test can wait for "a request arrived" without sleeping).
pub struct Receiver {
    pub url: String,
    answer: std::sync::Arc<std::sync::Mutex<Answer>>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub arrivals: mpsc::Receiver<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start() -> Receiver {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = std::sync::Arc::new(std::sync::Mutex::new(Answer::Ok));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, arrivals) = mpsc::channel();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
        let (a, l) = (answer.clone(), log.clone());
        let turn = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (a, l, tx, turn) = (a.clone(), l.clone(), tx.clone(), turn.clone());
            async move {
                let mode = match *a.lock().unwrap() {
                    Answer::Alternate if turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 0 => {
                        Answer::Unavailable
                    }
                    Answer::Alternate => Answer::Ok,
                    other => other,
                };
                l.lock().unwrap().push(Received {
                    path: uri.path().to_string(),
                    webhook_id: headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    answer: mode,
                });
                let _ = tx.lock().unwrap().send(());
                match mode {
                    Answer::Ok => (StatusCode::OK, "ok"),
                    Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "down"),
                    Answer::Hang | Answer::Alternate => std::future::pending().await,
                }
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver { url, answer, log, arrivals, runtime: Some(runtime) }
    }

    pub fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends `sig` (`-TERM`, `-HUP`, `-KILL`) to the child.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig}");
}

/// Waits for the child to exit, at most `limit`; kills it and fails otherwise. Returns the exit code (-1 for a
/// signal).
pub fn wait_exit(mut child: std::process::Child, limit: Duration) -> i32 {
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code().unwrap_or(-1)));
    });
    match rx.recv_timeout(limit) {
        Ok(code) => code.expect("wait for scanwatch"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("scanwatch did not exit within {limit:?}");
        }
    }
}

/// Waits for the `n`-th line of `logs` (from now) containing `needle`, at most until `deadline`; returns every line
/// read meanwhile; `Err` with those lines if the deadline passed or the process closed its stderr first.
pub fn wait_for_line(
    logs: &mpsc::Receiver<String>,
    needle: &str,
    n: usize,
    deadline: Instant,
) -> Result<Vec<String>, Vec<String>> {
    let mut seen = Vec::new();
    let mut found = 0;
    while found < n {
        let Ok(line) = logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            return Err(seen);
        };
        if line.contains(needle) {
            found += 1;
        }
        seen.push(line);
    }
    Ok(seen)
}

/// The full path of `tool` per `which`, or `None` after a loud note saying what is not being checked. Under CI
/// (`CI=true`, where `.ci/run` installs every tool) a missing tool fails the test instead: a check that silently
/// did not run must never pass.
pub fn installed(tool: &str, what: &str) -> Option<PathBuf> {
    let found = Command::new("which")
        .arg(tool)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("`{tool}` is not installed, and CI must check: {what} (.ci/run installs it)");
    }
    if found.is_none() {
        // Written to the stderr handle, not with `eprintln!`, so the test harness does not swallow it.
        let bar = "!".repeat(100);
        let _ =
            writeln!(std::io::stderr(), "\n{bar}\n!!! NOTE: `{tool}` is not installed: NOT CHECKED: {what}\n{bar}\n");
    }
    found
}
