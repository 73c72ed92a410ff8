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
//! stall behind, on which a level may really hold.
//!
//! A busy machine is not a machine short of memory (issue 21): policies/embedded.toml keeps
//! the same budget while another process streams a file twice the size of its memcg through
//! the page cache, over and over (root and a cgroup-v1 memory controller: the churn stays
//! inside a 256 MiB limit). Its refaults show in /proc/vmstat; the machine's own reclaim does
//! not run, and only while it runs does lowmemd count refaults at system scope
//! (`monitor::thrash::GlobalReclaim`). Before it the measure could not tell the two apart:
//! 4 to 223 wake-ups in 10 s on one host, with the size of the host's page cache.

#[path = "common/mod.rs"]
mod common;
#[path = "common/idle.rs"]
mod idle;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use idle::{Daemon, Usage, lowmemd_command};

const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
/// Wake-ups allowed per 10 s idle: a few timer ticks (the service watchdog, a slow
/// safety poll), nothing that grows with the polling rate.
const MAX_WAKEUPS: u64 = 8;

/// A page-cache churner: streams a file of twice its memcg's limit through the page cache
/// with read(2), over and over (a backup, a `grep -r`, a build reading its inputs). Its
/// cache is reclaimed and re-read inside its memcg all the time; the machine has plenty.
const CHURN_LIMIT_MIB: u64 = 256;
const CHURN_FILE_MIB: u64 = 512;

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

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller (the churner runs in a memcg)"]
fn page_cache_churn_in_a_memcg_does_not_wake_an_idle_lowmemd() {
    common::require_real_kernel("page_cache_churn_in_a_memcg_does_not_wake_an_idle_lowmemd");
    let _serial = common::serial();
    wait_until_memory_is_quiet();
    // A machine with plenty of memory, whatever ran before: the host's clean page cache
    // dropped, so that nothing but the churner's own limit makes anyone reclaim.
    std::fs::write("/proc/sys/vm/drop_caches", "1").expect("drop the page cache");
    let dir = tempfile::tempdir().unwrap();
    // On disk, not on a tmpfs: tmpfs pages are shared memory, which a memcg without swap
    // cannot reclaim (its limit would OOM the churner instead of churning its cache).
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = data.path().join("churn.dat");
    let cg = common::TestCgroup::create("idle-churn", CHURN_LIMIT_MIB);
    let mut script = String::new();
    for f in cg.procs_files() {
        script += &format!("echo $$ > {} && ", f.display());
    }
    // Written from inside the memcg too: all of the churn stays within its limit.
    script += &format!(
        "dd if=/dev/zero of={f} bs=1M count={CHURN_FILE_MIB} status=none && \
         echo written > {f}.ok && \
         while :; do dd if={f} of=/dev/null bs=1M status=none; done",
        f = file.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    let mut churner =
        Daemon::spawn("churner", sh, dir.path().join("churner.err")).expect("spawn the churner");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.path().join("churn.dat.ok").exists() {
        assert!(
            Instant::now() < deadline,
            "the churner did not write its file: {}",
            churner.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reread_before = cache_reread_mib(&cg);
    let scanned_before = global_scan();
    let report = idle_wakeups(dir.path());
    let reread = cache_reread_mib(&cg) - reread_before;
    let scanned = global_scan() - scanned_before;
    churner.assert_started("");
    churner.stop();
    // The churn really happened: the memcg's cache was read in again and again.
    assert!(
        reread >= CHURN_FILE_MIB,
        "the churner read only {reread} MiB into its memcg's cache in the window"
    );
    // The embedded policy's budget (issue 21). The others are shown, not judged: their
    // PSI-some levels (no duration) hold on the system-wide stall the memcg makes within
    // its own limit, which wakes their pipelines: a decision, not the polling judged here.
    let embedded: Vec<(String, u64)> = report
        .iter()
        .filter(|(l, _)| l.starts_with("policies/embedded.toml"))
        .cloned()
        .collect();
    eprintln!(
        "{}",
        report
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_within_budget(
        &embedded,
        &format!(
            "beside a page-cache churner ({reread} MiB read into a {CHURN_LIMIT_MIB} MiB memcg; \
             the machine's own reclaim scanned {scanned} pages meanwhile)"
        ),
    );
}

/// Pages the machine's own reclaim scanned so far (/proc/vmstat pgscan_kswapd,
/// pgscan_direct, pgscan_khugepaged: global reclaim only, not a memcg's within its limit).
fn global_scan() -> u64 {
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap();
    vmstat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| ["pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged"].contains(k))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// What the memcg has read in again after evicting it (`total_workingset_refault_file`),
/// in MiB: a file streamed through a cache half its size is all refaults after one pass.
/// (Not `pgpgin`, which counts folios, not pages.)
fn cache_reread_mib(cg: &common::TestCgroup) -> u64 {
    let stat = std::fs::read_to_string(cg.v1.join("memory.stat")).unwrap();
    let pages: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_workingset_refault_file "))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_workingset_refault_file in memory.stat");
    (pages * rustix::param::page_size() as u64) >> 20
}
