//! The systemd units in `packaging/systemd/`: `systemd-analyze verify` accepts them without a single warning,
//! `systemd-analyze security` rates both services 2.0 or lower, they carry the settings DESIGN.md promises, and the
//! system-call filter written in the unit allows every system call the real binary makes (traced with `strace`
//! while it validates, polls the simulator, and reads its history, with the environment systemd gives it).
//!
//! `systemd-analyze` and `strace` are run when installed; where one is missing the test prints a loud note and
//! passes, because a developer's machine without systemd cannot judge a unit file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::*;

/// The highest exposure DESIGN.md accepts for a service.
const MAX_EXPOSURE: f64 = 2.0;

const UNITS: [&str; 3] = ["scanwatch.service", "scanwatch-poll.service", "scanwatch-poll.timer"];
const SERVICES: [&str; 2] = ["scanwatch.service", "scanwatch-poll.service"];

fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd")
}

fn unit_text(name: &str) -> String {
    let path = packaging_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Copies of every unit in a temporary directory, with `/usr/bin/scanwatch` replaced by the binary under test
/// (verify refuses a unit whose Exec*= program does not exist).
fn installed_copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for name in UNITS {
        let text = unit_text(name).replace("/usr/bin/scanwatch", env!("CARGO_BIN_EXE_scanwatch"));
        std::fs::write(dir.path().join(name), text).expect("write a unit copy");
    }
    dir
}

/// `systemd-analyze ARGS` run from `dir`: (exit code, stdout, stderr).
fn analyze(tool: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze {args:?}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `systemd-analyze verify` of the unit files at `paths`: (exit code, everything it printed).
fn verify(tool: &Path, dir: &Path, paths: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["verify", "--man=no", "--generators=no"];
    args.extend_from_slice(paths);
    let (code, out, err) = analyze(tool, dir, &args);
    (code, format!("{out}{err}"))
}

/// The number in "Overall exposure level for NAME: 1.2 OK" printed by `systemd-analyze security --offline=true`.
fn exposure(tool: &Path, dir: &Path, unit: &str) -> f64 {
    let (code, out, err) = analyze(tool, dir, &["security", "--offline=true", &format!("./{unit}")]);
    assert_eq!(code, Some(0), "systemd-analyze security {unit} failed\n{out}\n{err}");
    parse_exposure(&out).unwrap_or_else(|| panic!("no overall exposure level for {unit} in:\n{out}\n{err}"))
}

fn parse_exposure(report: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains("Overall exposure level for"))?;
    let (_, after) = line.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn systemd_analyze_verify_accepts_every_unit_without_a_warning() {
    let Some(tool) = installed("systemd-analyze", "systemd-analyze verify of packaging/systemd/*") else {
        return;
    };
    let dir = installed_copies();
    for unit in UNITS {
        let (code, out) = verify(&tool, dir.path(), &[&format!("./{unit}")]);
        assert_eq!(code, Some(0), "systemd-analyze verify rejects {unit}:\n{out}");
        assert!(out.trim().is_empty(), "systemd-analyze verify warns about {unit}:\n{out}");
    }
}

#[test]
fn systemd_analyze_verify_catches_a_misspelt_setting_so_its_silence_means_something() {
    let Some(tool) = installed("systemd-analyze", "that verify catches a misspelt setting") else {
        return;
    };
    let dir = installed_copies();
    let path = dir.path().join("scanwatch.service");
    let text = std::fs::read_to_string(&path).expect("read the copy");
    std::fs::write(&path, text.replace("\nWatchdogSec=", "\nWatchdogSecs=")).expect("write the broken copy");
    let (code, out) = verify(&tool, dir.path(), &["./scanwatch.service"]);
    assert!(code != Some(0) || !out.trim().is_empty(), "a misspelt key passes verify unnoticed: {code:?}\n{out}");
    assert!(out.contains("WatchdogSecs"), "verify names the misspelt key:\n{out}");
}

#[test]
fn systemd_analyze_verify_rejects_the_unit_when_the_binary_is_missing() {
    let Some(tool) = installed("systemd-analyze", "that verify checks the Exec*= paths") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("no-such-scanwatch");
    let text = unit_text("scanwatch.service").replace("/usr/bin/scanwatch", &missing.display().to_string());
    std::fs::write(dir.path().join("scanwatch.service"), text).expect("write the copy");
    let (code, out) = verify(&tool, dir.path(), &["./scanwatch.service"]);
    assert_ne!(code, Some(0), "verify accepts a unit whose binary does not exist:\n{out}");
}

#[test]
fn systemd_analyze_security_rates_both_services_two_or_lower() {
    let Some(tool) = installed("systemd-analyze", "the `systemd-analyze security` exposure of the services") else {
        return;
    };
    let dir = installed_copies();
    for unit in SERVICES {
        let level = exposure(&tool, dir.path(), unit);
        eprintln!("{unit}: overall exposure level {level}");
        assert!(level <= MAX_EXPOSURE, "{unit} rates {level}, above {MAX_EXPOSURE}");
    }
}

#[test]
fn systemd_analyze_security_rates_a_bare_unit_far_above_the_limit_so_the_number_is_real() {
    let Some(tool) = installed("systemd-analyze", "that the exposure parser reads a bad rating") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("bare.service"), "[Service]\nExecStart=/bin/true\n").expect("write a bare unit");
    let level = exposure(&tool, dir.path(), "bare.service");
    assert!(level > 5.0, "a unit without any hardening rates {level}");
}

#[test]
fn parse_exposure_reads_the_number_of_the_overall_line_only() {
    let report = "✗ PrivateNetwork=   Service has access to the host's network   0.5\n\n\
                  → Overall exposure level for scanwatch.service: 1.2 OK 🙂\n";
    assert_eq!(parse_exposure(report), Some(1.2));
    assert_eq!(parse_exposure("✗ PrivateNetwork=   Service has access   0.5\n"), None);
}

/// `KEY=VALUE` lines of `section`, in order (a key may repeat).
fn settings(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.to_string();
        } else if current == format!("[{section}]")
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn value_of<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn the_daemon_unit_has_the_settings_design_md_promises() {
    let s = settings(&unit_text("scanwatch.service"), "Service");
    let one = |key: &str| {
        let v = value_of(&s, key);
        assert_eq!(v.len(), 1, "scanwatch.service sets {key} exactly once: {v:?}");
        v[0].to_string()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStartPre"), "/usr/bin/scanwatch validate --config /etc/scanwatch/scanwatch.toml");
    assert_eq!(one("ExecStart"), "/usr/bin/scanwatch run --config /etc/scanwatch/scanwatch.toml");
    assert_eq!(
        value_of(&s, "ExecReload"),
        ["/usr/bin/scanwatch validate --config /etc/scanwatch/scanwatch.toml", "/bin/kill -HUP $MAINPID"],
        "reload validates, then signals"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("StateDirectory"), "scanwatch");
    assert_eq!(one("ConfigurationDirectory"), "scanwatch");
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("UMask"), "0077");
    let watchdog = one("WatchdogSec");
    // systemd reads a bare number as seconds.
    let secs = match watchdog.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => watchdog.parse::<humantime::Duration>().expect("WatchdogSec is a duration").as_secs(),
    };
    assert!((30..=600).contains(&secs), "WatchdogSec={watchdog} leaves the main loop room yet notices a hang");
}

#[test]
fn both_services_load_the_hss_credentials_from_root_only_files() {
    for unit in SERVICES {
        let s = settings(&unit_text(unit), "Service");
        assert_eq!(
            value_of(&s, "LoadCredential"),
            ["hss-ak:/etc/scanwatch/credentials/hss-ak", "hss-sk:/etc/scanwatch/credentials/hss-sk"],
            "{unit}"
        );
        assert!(
            value_of(&s, "Environment").iter().all(|e| !e.contains("SDK_SK")),
            "{unit} puts no secret in Environment="
        );
    }
}

#[test]
fn both_services_can_reach_hss_over_the_network() {
    for unit in SERVICES {
        let s = settings(&unit_text(unit), "Service");
        let families = value_of(&s, "RestrictAddressFamilies").join(" ");
        for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
            assert!(families.split_whitespace().any(|f| f == family), "{unit} allows {family}: {families}");
        }
        assert!(!families.contains('~'), "{unit} allow-lists families: {families}");
        for (key, forbidden) in [("IPAddressDeny", "any"), ("PrivateNetwork", "yes"), ("PrivateNetwork", "true")] {
            assert!(!value_of(&s, key).contains(&forbidden), "{unit} sets {key}={forbidden}, which cuts HSS off");
        }
    }
}

/// Everything from the `# Hardening.` comment to the end of `[Service]`.
fn hardening_block(text: &str) -> String {
    let start = text.find("# Hardening.").expect("the unit has a `# Hardening.` block");
    let rest = &text[start..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].trim().to_string()
}

#[test]
fn the_poll_service_is_hardened_exactly_like_the_daemon_and_runs_as_the_same_user() {
    let daemon = unit_text("scanwatch.service");
    let poll = unit_text("scanwatch-poll.service");
    assert_eq!(hardening_block(&daemon), hardening_block(&poll), "the two hardening blocks have drifted apart");
    let (d, p) = (settings(&daemon, "Service"), settings(&poll, "Service"));
    for key in ["DynamicUser", "User", "Group", "StateDirectory", "ConfigurationDirectory", "UMask"] {
        assert_eq!(value_of(&d, key), value_of(&p, key), "{key} differs, so the two could not share the database");
    }
    assert_eq!(value_of(&p, "Type"), ["oneshot"]);
    let exec = value_of(&p, "ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(exec[0].starts_with("/usr/bin/scanwatch poll --config /etc/scanwatch/scanwatch.toml"), "{exec:?}");
    assert!(value_of(&p, "Restart").is_empty(), "a failed poll waits for the next timer run, not a restart loop");
}

#[test]
fn the_timer_starts_the_poll_service_on_a_schedule() {
    let timer = unit_text("scanwatch-poll.timer");
    let t = settings(&timer, "Timer");
    let unit = value_of(&t, "Unit").first().map(|u| u.to_string()).unwrap_or("scanwatch-poll.service".into());
    assert!(packaging_dir().join(&unit).exists(), "the timer starts {unit}, which is not in packaging/systemd");
    assert_eq!(value_of(&t, "OnCalendar").len(), 1, "the timer has a schedule");
    assert_eq!(value_of(&t, "Persistent"), ["true"], "a run missed while the machine was off is caught up");
    assert_eq!(value_of(&settings(&timer, "Install"), "WantedBy"), ["timers.target"]);
}

/// Every group of `systemd-analyze syscall-filter`, unexpanded: `@name` -> its entries (calls and `@groups`).
fn syscall_groups(tool: &Path) -> BTreeMap<String, Vec<String>> {
    let (code, out, err) = analyze(tool, Path::new("/"), &["syscall-filter"]);
    assert_eq!(code, Some(0), "systemd-analyze syscall-filter failed: {err}");
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.entry(line.trim().to_string()).or_default();
        } else if let Some(entry) = line.strip_prefix("    ").map(str::trim) {
            if let Some(group) = current.as_ref().filter(|_| !entry.is_empty() && !entry.starts_with('#')) {
                groups.entry(group.clone()).or_default().push(entry.to_string());
            }
        } else {
            // A blank line or the unindented "# Ungrouped System Calls" list ends a group.
            current = None;
        }
    }
    groups
}

fn expand(entry: &str, groups: &BTreeMap<String, Vec<String>>, into: &mut BTreeSet<String>) {
    match groups.get(entry) {
        Some(members) if entry.starts_with('@') => {
            for m in members {
                expand(m, groups, into);
            }
        }
        None if entry.starts_with('@') => panic!("systemd knows no syscall group {entry}"),
        _ => {
            into.insert(entry.to_string());
        }
    }
}

/// The system calls the unit's `SystemCallFilter=` lines allow, with systemd's semantics: the first line is an
/// allow list (no `~`), each later `~` line removes from it, each later plain line adds to it.
fn allowed_syscalls(tool: &Path, unit: &str) -> BTreeSet<String> {
    let groups = syscall_groups(tool);
    let s = settings(&unit_text(unit), "Service");
    let lines = value_of(&s, "SystemCallFilter");
    assert!(lines.first().is_some_and(|l| !l.starts_with('~')), "{unit}'s first SystemCallFilter= is an allow list");
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut set = BTreeSet::new();
        for entry in list.split_whitespace() {
            expand(entry, &groups, &mut set);
        }
        if deny {
            allowed.retain(|c| !set.contains(c));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

#[test]
fn the_syscall_filter_read_from_the_unit_denies_privileged_calls_and_allows_ordinary_io() {
    let Some(tool) = installed("systemd-analyze", "the expansion of the unit's SystemCallFilter=") else {
        return;
    };
    let allowed = allowed_syscalls(&tool, "scanwatch.service");
    for call in ["openat", "read", "write", "connect", "epoll_wait", "futex", "fsync", "clone3", "execve"] {
        assert!(allowed.contains(call), "the filter allows {call}");
    }
    for call in ["setuid", "chown", "setrlimit", "sched_setaffinity", "mount", "ptrace", "reboot", "init_module"] {
        assert!(!allowed.contains(call), "the filter denies {call}");
    }
}

/// Runs the binary under `strace -f` with exactly `env` in `dir` and returns its exit code, its output and the
/// names of every system call it made. A run over [`CHILD_TIMEOUT`] is killed and fails the test.
fn traced(
    strace: &Path,
    dir: &Path,
    user: Option<&str>,
    args: &[&str],
    env: &[(String, String)],
) -> (Option<i32>, String, BTreeSet<String>) {
    let log = dir.join(format!("strace-{}.log", args.first().copied().unwrap_or("none")));
    let as_user: Vec<&str> = user.map(|u| vec!["-u", u]).unwrap_or_default();
    let mut child = Command::new(strace)
        .args(["-f", "-qq"])
        .args(as_user)
        .arg("-o")
        .arg(&log)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_scanwatch"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start strace: {e}"));
    let (done, finished) = mpsc::channel::<String>();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ] {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            let _ = done.send(String::from_utf8_lossy(&text).into_owned());
        });
    }
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut output = String::new();
    for _ in 0..2 {
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(text) => output.push_str(&text),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`scanwatch {}` under strace ran over {CHILD_TIMEOUT:?}\n{output}", args.join(" "));
            }
        }
    }
    let status = child.wait().expect("wait for strace");
    let trace = std::fs::read_to_string(&log).expect("read the strace log");
    let calls = trace
        .lines()
        .filter_map(|line| {
            let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!name.is_empty() && rest[name.len()..].starts_with('(')).then_some(name)
        })
        .collect();
    assert!(!output.contains("panicked"), "`scanwatch {}` panicked\n{output}", args.join(" "));
    (status.code(), output, calls)
}

/// Output of `id ARGS`, trimmed.
fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(out.status.success(), "id {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// When the tests run as root: `nobody`, who then owns everything under `dir`. The service never runs as root
/// (DynamicUser=yes), and some calls are made only by root (SQLite `fchown`s its journal to the database's owner),
/// so a trace taken as root would blame the filter for calls the service never makes.
fn run_as_unprivileged_user(dir: &Path) -> Option<&'static str> {
    if id(&["-u"]) != "0" {
        return None;
    }
    let uid: u32 = id(&["-u", "nobody"]).parse().expect("nobody's uid");
    let gid: u32 = id(&["-g", "nobody"]).parse().expect("nobody's gid");
    fn chown_all(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to nobody");
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir") {
                chown_all(&entry.expect("a directory entry").path(), uid, gid);
            }
        }
    }
    chown_all(dir, uid, gid);
    Some("nobody")
}

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn the_syscall_filter_allows_every_call_the_binary_makes_as_systemd_runs_it() {
    let Some(analyze_tool) = installed("systemd-analyze", "the binary's system calls against the unit's filter") else {
        return;
    };
    let Some(strace) = installed("strace", "the binary's system calls against the unit's filter") else {
        return;
    };
    let allowed = allowed_syscalls(&analyze_tool, "scanwatch.service");

    let sim = SimServer::start(&format!(
        "{}{}{}",
        scenario_head(),
        series(
            PROJECT,
            "cluster_scan",
            None,
            "total_num = 17\nrunning_num = 1\nlast_task_start = \"2025-04-22T08:44:11Z\""
        ),
        series(PROJECT, "iac_scan", None, "total_num = 4\nrunning_num = 0"),
    ));
    // What systemd hands the service: a state directory, a credentials directory, and a config naming the
    // credentials by relative *_file and leaving the database at its default under $STATE_DIRECTORY.
    let root = tempfile::tempdir().expect("a temporary directory");
    let (state, credentials) = (root.path().join("state"), root.path().join("credentials"));
    std::fs::create_dir_all(&state).expect("create the state directory");
    std::fs::create_dir_all(&credentials).expect("create the credentials directory");
    std::fs::write(credentials.join("hss-ak"), AK).expect("write hss-ak");
    std::fs::write(credentials.join("hss-sk"), SK).expect("write hss-sk");
    // `localhost` rather than 127.0.0.1, so the name lookup (nsswitch, /etc/hosts) is traced too.
    let endpoint = sim.url.replace("127.0.0.1", "localhost");
    let config = root.path().join("scanwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[schedule]\ninterval = \"5m\"\n\n[[accounts]]\nname = \"prod\"\nauth = \"aksk\"\nak_file = \"hss-ak\"\n\
             sk_file = \"hss-sk\"\ncalls_per_minute = 600\n{}",
            target("prod", "prod", &endpoint, PROJECT, &["cluster_scan", "iac_scan"], None)
        ),
    )
    .expect("write the config");
    let env: Vec<(String, String)> = [
        ("STATE_DIRECTORY", state.display().to_string()),
        ("CREDENTIALS_DIRECTORY", credentials.display().to_string()),
        ("NO_COLOR", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let user = run_as_unprivileged_user(root.path());
    let config = config.display().to_string();
    let mut made = BTreeSet::new();
    for (args, code) in [
        (vec!["validate", "--config", &config], 0),
        (vec!["poll", "--config", &config], 0),
        (vec!["history", "--config", &config, "--format", "json"], 0),
        (vec!["alerts", "--config", &config], 0),
    ] {
        let (exit, output, calls) = traced(&strace, root.path(), user, &args, &env);
        assert_eq!(exit, Some(code), "`scanwatch {}` under strace exited {exit:?}\n{output}", args.join(" "));
        assert!(calls.contains("execve") && calls.contains("exit_group"), "strace saw the whole run: {calls:?}");
        made.extend(calls);
    }
    assert_eq!(sim.calls_for(PROJECT).len(), 2, "poll really reached the simulator");
    assert!(state.join("scanwatch.db").exists(), "the database was created under $STATE_DIRECTORY");

    let denied: Vec<&String> = made.iter().filter(|c| !allowed.contains(*c)).collect();
    eprintln!("{} distinct system calls made, all checked against the filter", made.len());
    assert!(denied.is_empty(), "SystemCallFilter= would kill scanwatch on: {denied:?}");
}
