//! A database that stops taking writes (made immutable with `chattr +i`: as root, file modes do not stop writes):
//! `poll` fails with an error naming the database, nothing panics, the daemon keeps running and says why, and both
//! recover once the file is writable again. And a database on a read-only mount (a replica, a rescue shell) still
//! answers the reading commands, while a writing one says why it cannot, once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Makes files immutable and, whatever happens, mutable again when dropped (so the temporary directory goes away).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when the filesystem or the machine has no immutable attribute.
    fn set(paths: &[PathBuf]) -> Option<Immutable> {
        let existing: Vec<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
        let ok = Command::new("chattr").arg("+i").args(&existing).status().is_ok_and(|s| s.success());
        let guard = Immutable(existing);
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

fn healthy_setup(sb: &Sandbox) -> SimServer {
    let sim = SimServer::start(
        &(scenario_head()
            + &series("p1", "cluster_scan", None, "total_num = 7\nrunning_num = 0\nlast_task_age = \"1m\"")),
    );
    sb.write_config(&format!(
        "[schedule]\ninterval = \"1s\"\n{}{}",
        aksk_account("acct", "SW_AK", "SW_SK"),
        target("t1", "acct", &sim.url, "p1", &["cluster_scan"], None)
    ));
    sim
}

#[test]
fn poll_on_an_immutable_database_names_the_database_and_recovers_once_it_is_writable() {
    let sb = Sandbox::new();
    let _sim = healthy_setup(&sb);
    sb.run(&["poll"]).expect_code(0);
    let db = sb.db_path();
    let Some(guard) = Immutable::set(&[db.clone(), with_suffix(&db, "-wal")]) else {
        skip_outside_ci("chattr +i is not supported here");
        return;
    };

    let run = sb.run(&["poll"]);
    assert_ne!(run.code, Some(0), "a poll that cannot store fails\n{run}");
    assert!(run.stderr.contains(&db.display().to_string()), "the error names the database\n{run}");

    drop(guard);
    sb.run(&["poll"]).expect_code(0);
    let rows = sb.history(&[]);
    assert_eq!(rows.len(), 2, "the poll after recovery is stored: {rows:#?}");
}

#[test]
fn the_daemon_survives_its_database_turning_read_only_and_recovers() {
    let sb = Sandbox::new();
    let _sim = healthy_setup(&sb);
    let (mut child, logs) = sb.spawn_logged(&["run"]);
    let deadline = Instant::now() + Duration::from_secs(50);
    if wait_for_line(&logs, "cycle done", 1, deadline).is_err() {
        let _ = child.kill();
        panic!("no first cycle");
    }
    let db = sb.db_path();
    let Some(guard) = Immutable::set(&[db.clone(), with_suffix(&db, "-wal")]) else {
        let _ = child.kill();
        skip_outside_ci("chattr +i is not supported here");
        return;
    };
    let Ok(lines) = wait_for_line(&logs, "cycle failed", 1, deadline) else {
        let _ = child.kill();
        panic!("a cycle that cannot write is reported as failed");
    };
    let failed = lines.last().cloned().unwrap_or_default();
    assert!(failed.contains(&db.display().to_string()), "the error names the database: {failed}");
    assert!(child.try_wait().expect("try_wait").is_none(), "still running on a read-only database");

    drop(guard);
    let before = sb.history(&[]).len();
    let recovering = Instant::now();
    if let Err(lines) = wait_for_line(&logs, "cycle done", 2, deadline) {
        let _ = child.kill();
        panic!("cycles succeed again once writable; log since:\n{}", lines.join("\n"));
    }
    eprintln!("recovered in {:?}", recovering.elapsed());
    assert!(sb.history(&[]).len() > before, "new snapshots are stored after recovery");
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(20)), 0);
}

/// Says why a check is skipped; under CI (`CI=true`, a root run on ext4 where chattr works) fails instead, so a
/// check that silently did not run never passes there.
fn skip_outside_ci(why: &str) {
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI must run this check, but {why}");
    eprintln!("skipped: {why}");
}

/// The sandbox's database, bind-mounted read-only inside a new mount namespace: `history` reads it (a read opens
/// read-only when it must), `silence add` fails saying "Read-only file system" once, and nothing is created.
#[test]
fn a_database_on_a_read_only_mount_answers_reads_and_a_write_says_why_once() {
    let sb = Sandbox::new();
    let _sim = healthy_setup(&sb);
    sb.run(&["poll"]).expect_code(0);
    let _ = std::fs::remove_file(with_suffix(&sb.db_path(), ".lock"));
    let mnt = sb.dir().join("ro");
    std::fs::create_dir_all(&mnt).unwrap();
    let config = sb.dir().join("ro.toml");
    std::fs::write(&config, format!("[storage]\npath = '{}'\n", mnt.join("scanwatch.db").display())).unwrap();
    // `$1` the sandbox (holding the database), `$2` the mount point, `$3` the binary, `$4` the config.
    let script = "mount --bind \"$1\" \"$2\" && mount -o remount,bind,ro \"$2\" || exit 99; \
                  echo '== history'; \"$3\" --config \"$4\" history --format json 2>&1; echo \"== exit $?\"; \
                  echo '== silence'; \"$3\" --config \"$4\" silence add --match target=t1 --for 1h --comment c 2>&1; \
                  echo \"== exit $?\"";
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(sb.dir())
        .arg(&mnt)
        .arg(env!("CARGO_BIN_EXE_scanwatch"))
        .arg(&config)
        .output();
    let out = match out {
        Ok(o) if o.status.code() != Some(99) => o,
        other => {
            skip_outside_ci(&format!("no read-only bind mount in a new mount namespace here: {other:?}"));
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (history, silence) = stdout.split_once("== silence").unwrap_or_else(|| panic!("{stdout}"));
    assert!(history.contains("== exit 0"), "history reads a read-only database:\n{stdout}");
    let json = history.trim_start_matches("== history").split("== exit").next().unwrap_or_default();
    assert_eq!(parse_rows(json).len(), 1, "{stdout}");
    assert!(silence.contains("== exit 1"), "a write fails:\n{stdout}");
    assert_eq!(silence.matches("Read-only file system").count(), 1, "says why, once:\n{stdout}");
}
