//! An idle lowmemd must let the CPU sleep: a daemon that runs for years on a battery may not
//! wake a core many times a second when nothing happens (issue 11). This counts wake-ups —
//! the context switches of all lowmemd's threads, a count, not a time, so a slow or busy
//! machine does not change it — over 10 s on an idle system, for the built-in policy,
//! policies/embedded.toml (watermarks, swap, thrashing) and a policy of PSI conditions only
//! (where only the kernel's triggers should wake it). The three daemons run side by side,
//! `--dry-run --metrics-listen off`, so the test takes ~12 s.
//!
//! The budget: 8 wake-ups per 10 s each. Not root-only (PSI triggers of 2 s windows are open
//! to everyone since Linux 6.5), and no cgroup. `benches/idle.rs` reports the same counts
//! with CPU time, RSS and earlyoom beside them.
//!
//! The test waits until memory PSI is quiet first: a pressure test that just ended leaves a
//! stall behind, on which a level may really hold. (Issue 21's churn beside the daemons is
//! not a test here: the system-wide refault measure cannot tell a memcg churning its own
//! cache from the machine thrashing, so embedded.toml's thrashing level held or not with the
//! size of the host's page cache — 4 to 223 wake-ups in 10 s on one host; docs/testing.md.)

#[path = "common/mod.rs"]
mod common;
#[path = "common/idle.rs"]
mod idle;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use idle::{Daemon, Usage, lowmemd_command};

const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
/// Wake-ups allowed per 10 s idle: a few timer ticks (the service watchdog, a slow
/// safety poll), nothing that grows with the polling rate.
const MAX_WAKEUPS: u64 = 8;

/// Runs the three daemons side by side for [`WINDOW`] (after [`SETTLE`]) and returns one
/// line per daemon and its wake-ups; panics when a daemon does not start or dies.
fn idle_wakeups(dir: &Path) -> Vec<(String, u64)> {
    let lowmemd = Path::new(env!("CARGO_BIN_EXE_lowmemd"));
    let psi_only = idle::write_psi_only_policy(lowmemd, &dir.join("policy"));
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/embedded.toml");
    let policies: [(&str, Option<PathBuf>); 3] = [
        ("default (built-in)", None),
        ("policies/embedded.toml", Some(embedded)),
        ("PSI-only", Some(psi_only)),
    ];
    let mut daemons: Vec<Daemon> = policies
        .iter()
        .enumerate()
        .map(|(i, (name, policy))| {
            let cmd = lowmemd_command(lowmemd, policy.as_deref(), &[]);
            Daemon::spawn(name, cmd, dir.join(format!("lowmemd{i}.err"))).expect("spawn lowmemd")
        })
        .collect();
    std::thread::sleep(SETTLE);
    for d in &mut daemons {
        d.assert_started(idle::STARTED);
    }
    let before: Vec<_> = daemons
        .iter()
        .map(|d| idle::read(d.pid()).unwrap())
        .collect();
    std::thread::sleep(WINDOW);
    let usage: Vec<Usage> = daemons
        .iter()
        .zip(&before)
        .map(|(d, b)| Usage::between(d.pid(), b, &idle::read(d.pid()).unwrap()))
        .collect();
    for d in &mut daemons {
        d.assert_started(idle::STARTED);
        d.stop();
    }
    daemons
        .iter()
        .zip(&usage)
        .map(|(d, u)| {
            let line = format!(
                "{}: {} wake-ups in 10 s ({})",
                d.name,
                u.wakeups,
                u.per_thread.join(", ")
            );
            (line, u.wakeups)
        })
        .collect()
}

/// Panics, naming every daemon over [`MAX_WAKEUPS`], or prints the counts.
fn assert_within_budget(report: &[(String, u64)], while_what: &str) {
    let lines: Vec<&str> = report.iter().map(|(l, _)| l.as_str()).collect();
    let over: Vec<&str> = report
        .iter()
        .filter(|(_, n)| *n > MAX_WAKEUPS)
        .map(|(l, _)| l.as_str())
        .collect();
    eprintln!("{while_what}:\n{}", lines.join("\n"));
    assert!(
        over.is_empty(),
        "lowmemd woke more than {MAX_WAKEUPS} times in 10 s {while_what}:\n{}",
        over.join("\n")
    );
}

/// Waits (up to a minute) until the machine's memory PSI says nothing stalled over the last
/// 10 s: a pressure test that just ended leaves reclaim and writeback behind, and a level
/// that holds on that stall wakes the daemons for a reason, not through polling.
fn wait_until_memory_is_quiet() {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
        let some_avg10: f64 = text
            .lines()
            .find(|l| l.starts_with("some "))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg10=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if some_avg10 < 0.1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("memory PSI still shows stalls after a minute: measuring anyway");
}

#[test]
fn idle_lowmemd_wakes_at_most_8_times_in_10_s() {
    // Not while a pressure test runs, nor in its wake: that machine is not idle.
    let _serial = common::serial();
    wait_until_memory_is_quiet();
    let dir = tempfile::tempdir().unwrap();
    assert_within_budget(&idle_wakeups(dir.path()), "on an idle system");
}
