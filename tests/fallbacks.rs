//! Fallbacks for older kernels, forced on a kernel that has everything with the hidden
//! `--pretend-missing` flag: no PSI → watermarks only; no pidfd → no kill unless the policy
//! allows kills by pid (then kill(2) after a starttime re-check); no process_madvise → no
//! page-out tier; no process_mrelease → plain wait. Each is announced once at start-up.
//! The scenarios with a runaway are real-kernel tests (root, cgroup v1): ignored unless run
//! with `--include-ignored`, then a missing prerequisite fails.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use common::{Scenario, Workload, actions};

/// A runaway leak in a 256 MiB memcg watched with `args`; returns (events, stderr lines).
fn runaway(name: &str, args: &[&OsStr]) -> (Vec<serde_json::Value>, Vec<String>) {
    let mut sc = Scenario::start(name, 256, args);
    let small = Workload::ready(&sc.cg, "small", 0, 8);
    let mut leak = Workload::spawn(&sc.cg, "leak", 0, 0, 100);
    assert!(leak.wait_ready());
    assert!(leak.wait_dead(Duration::from_secs(8)), "the leak must die");
    std::thread::sleep(Duration::from_millis(300));
    let events = sc.daemon.events();
    sc.daemon.stop();
    assert_eq!(
        sc.cg.oom_kills(),
        0,
        "lowmemd, not the kernel, must have killed it"
    );
    assert!(small.alive());
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], leak.pid);
    assert_eq!(kills[0]["exit_confirmed"], true);
    let log = sc.daemon.stderr.lock().unwrap().clone();
    (events, log)
}

fn count(log: &[String], needle: &str) -> usize {
    log.iter().filter(|l| l.contains(needle)).count()
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn without_psi_watermarks_alone_catch_a_runaway() {
    let (_, log) = runaway(
        "fb-psi",
        &[OsStr::new("--pretend-missing"), OsStr::new("psi")],
    );
    assert_eq!(count(&log, "fallback: no PSI"), 1, "{log:#?}");
    let sources = log.iter().find(|l| l.contains("sources:")).unwrap();
    assert!(
        !sources.contains("psi_"),
        "no trigger may be registered: {sources}"
    );
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn without_process_mrelease_the_kill_is_still_confirmed() {
    let (_, log) = runaway(
        "fb-mrelease",
        &[
            OsStr::new("--pretend-missing"),
            OsStr::new("process_mrelease"),
        ],
    );
    assert_eq!(count(&log, "fallback: no process_mrelease"), 1, "{log:#?}");
}

#[test]
fn without_pidfds_lowmemd_refuses_to_run_unless_the_policy_allows_pid_kills() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args([
            "run",
            "--pretend-missing",
            "pidfd",
            "--metrics-listen",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3: the kernel lacks a required feature"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_pid_kill"), "{err}");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn without_pidfds_a_policy_that_allows_it_kills_by_pid() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pidkill.toml");
    let text = format!(
        "allow_pid_kill = true\n\n{}",
        lowmemd::policy::DEFAULT_TOML.replace("scope = \"system\"", "")
    );
    std::fs::write(&policy, text).unwrap();
    let (events, log) = runaway(
        "fb-pidfd",
        &[
            OsStr::new("--pretend-missing"),
            OsStr::new("pidfd"),
            OsStr::new("--policy"),
            policy.as_os_str(),
        ],
    );
    assert_eq!(count(&log, "fallback: no pidfds"), 1, "{log:#?}");
    assert_eq!(count(&log, "page-out tier off"), 1, "{log:#?}");
    assert!(actions(&events, "pageout").is_empty());
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn without_process_madvise_page_out_levels_do_nothing_and_kills_still_happen() {
    let mut sc = Scenario::start(
        "fb-madvise",
        256,
        &[
            OsStr::new("--pretend-missing"),
            OsStr::new("process_madvise"),
        ],
    );
    let mut small = Workload::spawn(&sc.cg, "small", 0, 8, 0);
    let mut bg = Workload::spawn(&sc.cg, "bg1000", 1000, 30, 0);
    assert!(small.wait_ready() && bg.wait_ready());
    let mut fg = Workload::spawn(&sc.cg, "fg", 0, 190, 100);
    fg.wait_ready();
    std::thread::sleep(Duration::from_secs(1));
    let events = sc.daemon.events();
    sc.daemon.stop();
    let log = sc.daemon.stderr.lock().unwrap().clone();
    assert_eq!(count(&log, "page-out tier off"), 1, "said once: {log:#?}");
    assert_eq!(
        count(&log, "page-out tier disabled"),
        0,
        "not said again: {log:#?}"
    );
    assert!(actions(&events, "pageout").is_empty(), "{events:#?}");
    assert_eq!(actions(&events, "kill").len(), 1, "{events:#?}");
    assert!(!bg.alive() && fg.alive() && small.alive());
    assert_eq!(sc.cg.oom_kills(), 0);
}
