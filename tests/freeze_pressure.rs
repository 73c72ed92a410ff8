//! The freeze tier under real pressure (issue 23): a 256 MiB memcg with zram swap on the
//! host, a cached app (adj 900) in an app cgroup of its own under the test's cgroup2
//! directory, and a foreground job that makes memory short. The app is frozen (cgroup v2
//! freezer) and paged out into zram, nothing is killed, and it is thawed once memory
//! returns — and runs again. A lowmemd killed while the app is frozen leaves it to the next
//! start, which thaws it; SIGTERM thaws; an app sharing its cgroup with a foreground process
//! is never frozen; a dry run freezes nothing. Root, cgroup v1, a cgroup2 mount and an
//! unused /dev/zram0: ignored unless run with `--include-ignored`, then a missing
//! prerequisite fails.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use common::freeze_bed::{KILL_ONLY, POLICY, bed, cpu_ticks, state, wait_action, wait_until};
use common::{Workload, actions, status_kib};

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, a cgroup2 mount and an unused /dev/zram0 (modprobe zram): run as root with cargo test -- --include-ignored"]
fn a_cached_app_is_frozen_paged_out_and_thawed_when_memory_returns() {
    let (_lock, bed) = bed("freeze", &["app-cached.scope"]);
    let cached = bed.cached_app(0);
    let mut d = bed.daemon(POLICY, &[]);
    let fg = bed.foreground();
    let events = wait_action(&d, "freeze", Duration::from_secs(20));
    let freezes = actions(&events, "freeze");
    assert_eq!(freezes.len(), 1, "{events:#?}");
    let f = freezes[0];
    assert_eq!(f["pid"], cached.pid, "{f}");
    assert!(
        f["frozen_cgroup"]
            .as_str()
            .unwrap()
            .ends_with("/app-cached.scope"),
        "{f}"
    );
    assert!(bed.frozen(0), "cgroup.events says frozen");
    let rank = std::process::Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args(["rank", "--cgroup", &bed.cg.name])
        .output()
        .unwrap();
    let rank = String::from_utf8_lossy(&rank.stdout);
    assert!(
        rank.lines()
            .any(|l| l.starts_with("frozen: ") && l.contains("app-cached.scope")),
        "lowmemd rank shows the frozen app:\n{rank}"
    );
    // Frozen: it does not run.
    let ticks = cpu_ticks(cached.pid);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cpu_ticks(cached.pid), ticks, "a frozen app must not run");
    // Paged out into zram, measured as Android does.
    let swapped = status_kib(cached.pid, "VmSwap");
    assert!(
        swapped > 40 * 1024,
        "its memory went to zram (VmSwap {swapped} KiB): {f}"
    );
    assert!(f["resident_saved_kib"].as_u64().unwrap() > 40 * 1024, "{f}");
    assert!(
        f["freed_kib"].as_u64().unwrap() < f["resident_saved_kib"].as_u64().unwrap(),
        "zram's own growth is subtracted: {f}"
    );
    // Memory returns: the foreground job ends; 10 s later the app is thawed and runs.
    drop(fg);
    let events = wait_action(&d, "thaw", Duration::from_secs(25));
    let thaws = actions(&events, "thaw");
    assert_eq!(thaws.len(), 1, "{events:#?}");
    assert_eq!(thaws[0]["reason"], "pressure_gone", "{}", thaws[0]);
    assert!(!bed.frozen(0));
    let ticks = cpu_ticks(cached.pid);
    assert!(
        wait_until(Duration::from_secs(3), || cpu_ticks(cached.pid) > ticks),
        "a thawed app runs again"
    );
    assert!(actions(&events, "kill").is_empty(), "no kill: {events:#?}");
    assert!(cached.alive());
    assert_eq!(bed.cg.oom_kills(), 0);
    d.stop();
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, a cgroup2 mount and an unused /dev/zram0 (modprobe zram): run as root with cargo test -- --include-ignored"]
fn nothing_stays_frozen_after_lowmemd_is_killed_or_stopped() {
    let (_lock, bed) = bed("freeze-crash", &["app-cached.scope"]);
    let cached = bed.cached_app(0);
    let d = bed.daemon(POLICY, &[]);
    let fg = bed.foreground();
    let events = wait_action(&d, "freeze", Duration::from_secs(20));
    assert_eq!(actions(&events, "freeze").len(), 1, "{events:#?}");
    // SIGKILL: nothing can thaw it now but the next start.
    common::sigkill(d.pid());
    drop(d);
    std::thread::sleep(Duration::from_millis(300));
    assert!(bed.frozen(0), "still frozen after the crash");
    let d = bed.daemon(KILL_ONLY, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || !bed.frozen(0)),
        "the next start thaws what the crashed run froze"
    );
    assert!(d.wait_log("thawed", Duration::from_secs(1)), "and says so");
    drop(d);
    // SIGTERM thaws at once.
    let mut d = bed.daemon(POLICY, &[]);
    let events = wait_action(&d, "freeze", Duration::from_secs(20));
    assert_eq!(actions(&events, "freeze").len(), 1, "{events:#?}");
    assert!(bed.frozen(0));
    d.stop();
    assert!(!bed.frozen(0), "SIGTERM thaws everything");
    assert!(cached.alive() && bed.cg.oom_kills() == 0);
    drop(fg);
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, a cgroup2 mount and an unused /dev/zram0 (modprobe zram): run as root with cargo test -- --include-ignored"]
fn an_app_sharing_its_cgroup_with_the_foreground_is_never_frozen_and_a_dry_run_freezes_nothing() {
    let (_lock, bed) = bed("freeze-shared", &["app-shared.scope", "app-alone.scope"]);
    let cached = bed.cached_app(0);
    // A foreground process (adj 0) in the same app cgroup.
    let mut fg_shared =
        Workload::spawn_in_with(&bed.cg, &bed.apps.0[0], "fg-shared", 0, (90, 200), &[]);
    assert!(fg_shared.wait_ready());
    let mut d = bed.daemon(POLICY, &[]);
    std::thread::sleep(Duration::from_secs(6));
    let events = d.events();
    assert!(actions(&events, "freeze").is_empty(), "{events:#?}");
    assert!(!bed.frozen(0));
    assert!(
        d.wait_log("not freezing the app", Duration::from_secs(1)),
        "it says why"
    );
    // Not frozen, but its memory still goes back: paged out alone, as a page-out level would.
    let pageouts = actions(&events, "pageout");
    assert!(
        pageouts.iter().any(|p| p["pid"] == cached.pid),
        "{events:#?}"
    );
    d.stop();
    // A dry run says what it would freeze, and freezes nothing.
    let _alone = bed.cached_app(1);
    let mut d = bed.daemon(POLICY, &["--dry-run"]);
    let events = wait_action(&d, "would_freeze", Duration::from_secs(20));
    assert!(!actions(&events, "would_freeze").is_empty(), "{events:#?}");
    assert!(!bed.frozen(0) && !bed.frozen(1));
    d.stop();
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, a cgroup2 mount and an unused /dev/zram0 (modprobe zram): run as root with cargo test -- --include-ignored"]
fn a_frozen_app_is_killed_frozen_when_memory_runs_out_after_all() {
    let (_lock, bed) = bed("freeze-kill", &["app-cached.scope"]);
    let cached = bed.cached_app(0);
    // The cached band is killed below 15 % of RAM available.
    let policy = "count_swap = false\n\n\
        [[level]]\nname = \"cached_kill\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 15\n\n\
        [[level]]\nname = \"cached\"\naction = \"freeze\"\nmin_adj = 900\navailable_below_pct = 40\nthaw_after_ms = 10000\n";
    let d = bed.daemon(policy, &[]);
    let _fg = bed.foreground();
    let events = wait_action(&d, "freeze", Duration::from_secs(20));
    assert_eq!(actions(&events, "freeze").len(), 1, "{events:#?}");
    assert!(bed.frozen(0));
    // More memory taken: below 15 % of RAM the frozen app is the kill level's victim.
    let _more = {
        let mut w = Workload::spawn(&bed.cg, "fg2", 0, 150, 200);
        w.wait_ready();
        w
    };
    assert!(
        cached.wait_dead(Duration::from_secs(20)),
        "the frozen app was killed: {:#?}",
        d.events()
    );
    let events = wait_action(&d, "thaw", Duration::from_secs(5));
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], cached.pid);
    assert_eq!(
        kills[0]["exit_confirmed"], true,
        "SIGKILL reaches a frozen task: {}",
        kills[0]
    );
    let thaws = actions(&events, "thaw");
    assert_eq!(thaws.len(), 1, "{events:#?}");
    assert_eq!(thaws[0]["reason"], "exited", "{}", thaws[0]);
    assert_eq!(bed.cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, a cgroup2 mount and an unused /dev/zram0 (modprobe zram): run as root with cargo test -- --include-ignored"]
fn a_lone_process_is_stopped_only_where_the_policy_asks_and_never_left_stopped() {
    let (_lock, bed) = bed("freeze-stop", &[]);
    // A cached process in the scope's own cgroup: no app cgroup of its own to freeze.
    let extra: Vec<&OsStr> = ["--cycle-ms", "200", "--compress-ratio", "3"]
        .iter()
        .map(OsStr::new)
        .collect();
    let mut lone = Workload::spawn_with(&bed.cg, "lone", 900, 100, 200, &extra);
    assert!(lone.wait_ready());
    let sigstop = POLICY.to_string() + "freeze_lone_process = \"sigstop\"\n";
    let d = bed.daemon(&sigstop, &[]);
    let fg = bed.foreground();
    let events = wait_action(&d, "freeze", Duration::from_secs(20));
    let f = actions(&events, "freeze");
    assert_eq!(f.len(), 1, "{events:#?}");
    assert_eq!(f[0]["stopped"], true, "{}", f[0]);
    assert_eq!(f[0]["frozen_cgroup"], format!("pid {}", lone.pid));
    assert_eq!(state(lone.pid), 'T', "stopped by SIGSTOP");
    // Killed while it holds the process stopped: the next start continues it.
    common::sigkill(d.pid());
    drop(d);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(lone.pid), 'T');
    let d = bed.daemon(KILL_ONLY, &[]);
    assert!(
        wait_until(Duration::from_secs(2), || state(lone.pid) != 'T'),
        "the next start continues what the crashed run stopped"
    );
    assert!(d.wait_log("continued pid", Duration::from_secs(1)));
    drop(d);
    drop(fg);
    assert!(lone.alive() && bed.cg.oom_kills() == 0);
}
