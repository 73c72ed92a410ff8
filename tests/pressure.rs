//! Real memory pressure, made by the real kernel inside a 256 MiB memory cgroup, with lowmemd
//! watching that cgroup. Ignored by a plain `cargo test`; run as root with
//! `cargo test -- --include-ignored`, where a missing prerequisite fails the test.

mod common;

use std::time::Duration;

use common::{Scenario, Workload, actions, cached_apps};

const LIMIT_MIB: u64 = 256;

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn cached_apps_make_room_highest_adj_first() {
    let mut sc = Scenario::start("cached", LIMIT_MIB, &[]);
    let cg = &sc.cg;
    let apps = cached_apps(cg, 170);
    let events = sc.daemon.events();
    assert_eq!(
        sc.daemon.stop(),
        Some(0),
        "lowmemd stops cleanly on SIGTERM"
    );

    let kills = actions(&events, "kill");
    let killed: Vec<i64> = kills.iter().map(|e| e["pid"].as_i64().unwrap()).collect();
    let pid = |w: &Workload| w.pid as i64;
    assert_eq!(
        killed,
        [pid(&apps.bg[2]), pid(&apps.bg[1])],
        "expected adj 1000 then adj 950 killed, nothing else: {events:#?}"
    );
    assert!(
        apps.bg[0].alive(),
        "adj 900 was not needed and must survive"
    );
    assert!(apps.fg.alive(), "the foreground must survive");
    assert!(apps.small.alive(), "the small adj-0 process must survive");
    assert_eq!(cg.oom_kills(), 0, "the kernel OOM killer must not have run");
    for k in &kills {
        assert_eq!(k["exit_confirmed"], true, "{k}");
        // The foreground grows at 100 MiB/s: below 15 % it would run out within a second,
        // so the runaway level (adj >= 0, highest adj first: the same victims) may decide
        // before the low one (adj >= 900) does.
        let decided = (k["level"].as_str().unwrap(), k["reason"].as_str().unwrap());
        assert!(
            [("low", "low_memory"), ("runaway", "exhaustion")].contains(&decided),
            "{k}"
        );
        assert!(k["kill_to_exit_ms"].as_u64().unwrap() < 1000, "{k}");
        assert!(k["rss_kib"].as_u64().unwrap() >= 29 * 1024, "{k}");
        for field in [
            "ts_ms",
            "comm",
            "oom_score_adj",
            "swap_kib",
            "scope_available_kib",
        ] {
            assert!(!k[field].is_null(), "{field} missing in {k}");
        }
    }
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn runaway_is_killed_before_the_kernel_oom_killer() {
    let mut sc = Scenario::start("runaway", LIMIT_MIB, &[]);
    let cg = &sc.cg;
    let small = Workload::ready(cg, "small", 0, 8);
    let mut leak = Workload::spawn(cg, "leak", 0, 0, 100);
    assert!(leak.wait_ready());
    // Unbounded at 100 MiB/s, the leak hits the 256 MiB limit within ~3 s.
    leak.wait_dead(Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(500));
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(!leak.alive(), "the leak must be dead");
    assert_eq!(
        cg.oom_kills(),
        0,
        "lowmemd, not the kernel, must have killed it"
    );
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    let k = kills[0];
    assert_eq!(k["pid"], leak.pid, "{k}");
    // Stopped by its trend with ~15 % left, not at the critical 5 %.
    assert_eq!(k["level"], "runaway", "{k}");
    assert_eq!(k["reason"], "exhaustion", "{k}");
    assert_eq!(k["exit_confirmed"], true, "{k}");
    assert!(small.alive(), "the small process must survive");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn calm_usage_kills_nothing() {
    let mut sc = Scenario::start("calm", LIMIT_MIB, &[]);
    let cg = &sc.cg;
    // ~60 % of the limit, held steady.
    let w = Workload::ready(cg, "steady", 1000, 150);
    std::thread::sleep(Duration::from_secs(10));
    let events = sc.daemon.events();
    sc.daemon.stop();
    assert!(events.is_empty(), "no action expected: {events:#?}");
    assert!(w.alive());
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn dry_run_logs_would_kill_and_signals_nothing() {
    let mut sc = Scenario::start("dryrun", LIMIT_MIB, &[std::ffi::OsStr::new("--dry-run")]);
    let cg = &sc.cg;
    // Smaller foreground than the real run: with no kills, everything must still fit under
    // the limit (8 + 90 + 130 = 228 MiB, 11 % available: inside the low level).
    let apps = cached_apps(cg, 130);
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(actions(&events, "kill").is_empty(), "{events:#?}");
    let would = actions(&events, "would_kill");
    assert!(
        !would.is_empty(),
        "the low level must have fired: {events:#?}"
    );
    assert_eq!(
        would[0]["pid"], apps.bg[2].pid,
        "adj 1000 first: {events:#?}"
    );
    for w in &would {
        assert_eq!(w["exit_confirmed"], false);
        assert!(w["kill_to_exit_ms"].is_null());
    }
    for w in apps.bg.iter().chain([&apps.fg, &apps.small]) {
        assert!(
            w.alive(),
            "{} must be alive: no signal in a dry run",
            w.name
        );
    }
    assert_eq!(cg.oom_kills(), 0);
}

/// A leak at `rate` MiB/s from `mib_in_use` MiB in use, in a memcg of `limit_mib`: killed by
/// lowmemd, not by the kernel, at the critical level.
fn race(name: &str, limit_mib: u64, mib_in_use: u64, rate: u64) {
    let mut sc = Scenario::start(name, limit_mib, &[]);
    let cg = &sc.cg;
    let held = (mib_in_use > 0).then(|| Workload::ready(cg, "held", 0, mib_in_use));
    let touch_only: &std::ffi::OsStr = "--touch-only".as_ref();
    let mut leak = Workload::spawn_with(cg, "leak", 0, 0, rate, &[touch_only]);
    assert!(leak.wait_ready());
    leak.wait_dead(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let events = sc.daemon.events();
    sc.daemon.stop();
    assert!(!leak.alive(), "{name}: the leak must be dead");
    assert_eq!(
        cg.oom_kills(),
        0,
        "{name}: the kernel OOM killer fired first"
    );
    let kills = actions(&events, "kill");
    assert!(
        kills.iter().any(|k| k["pid"] == leak.pid),
        "{name}: lowmemd did not kill the leak: {events:#?}"
    );
    if let Some(h) = held {
        assert!(h.alive(), "{name}: the held process must survive");
    }
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn runaways_at_300_and_1000_mib_per_s_are_killed_before_the_kernel() {
    race("race300", LIMIT_MIB, 8, 300);
    race("race1000", LIMIT_MIB, 8, 1000);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_fast_leak_from_a_large_idle_headroom_is_killed_before_the_kernel() {
    // 4 GiB at 5 % use: the monitor sleeps on its usage thresholds with no timer; the
    // kernel must wake it in time for a leak as fast as the workload can go (nominal
    // 2000 MiB/s).
    race("headroom", 4096, 200, 2000);
}
