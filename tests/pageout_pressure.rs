//! The page-out tier under real memory pressure in a 256 MiB memcg: file-backed memory of
//! background processes is pushed out instead of killing them; anonymous memory without
//! swap cannot be, and lowmemd escalates to kills; with swap on zram, anonymous memory goes
//! too. Root and cgroup v1 (and zram for the last): ignored unless run with
//! `--include-ignored`, then a missing prerequisite fails.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use common::{ColdFile, Scenario, Workload, ZramSwap, actions, background, status_kib};

const LIMIT_MIB: u64 = 256;

/// Page out adj ≥ 900 below 35 % available; kill adj ≥ 900 below 10 %, anything below 5 %.
const POLICY: &str = "\
[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n\n\
[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\ncooldown_ms = 100\n\n\
[[level]]\nname = \"moderate\"\naction = \"pageout\"\nmin_adj = 900\navailable_below_pct = 35\ncooldown_ms = 300\n";

fn start(name: &str) -> (Scenario, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pageout.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let sc = Scenario::start(
        name,
        LIMIT_MIB,
        &[OsStr::new("--policy"), policy.as_os_str()],
    );
    (sc, dir)
}

fn pageouts_of(events: &[serde_json::Value], pid: i32) -> Vec<&serde_json::Value> {
    actions(events, "pageout")
        .into_iter()
        .filter(|e| e["pid"] == pid)
        .collect()
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn file_backed_memory_is_paged_out_instead_of_killing() {
    let (mut sc, _dir) = start("pageout-file");
    let files = [
        ColdFile::new("pageout-a", 60),
        ColdFile::new("pageout-b", 60),
    ];
    let cg = &sc.cg;
    let small = Workload::ready(cg, "small", 0, 8);
    let mut bg = Vec::new();
    for (adj, file) in [1000, 950].into_iter().zip(&files) {
        let mut w = Workload::spawn_with(
            cg,
            &format!("bg{adj}"),
            adj,
            4,
            0,
            &[OsStr::new("--hold-file"), file.0.as_os_str()],
        );
        assert!(w.wait_ready());
        assert!(
            status_kib(w.pid, "RssFile") > 50 * 1024,
            "the mapped file must be resident"
        );
        bg.push(w);
    }
    // Watch the memcg's usage while the foreground grows.
    let usage_file = cg.v1.join("memory.usage_in_bytes");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        // The largest fall of usage from its running peak: the page-out, while the
        // foreground only ever adds.
        std::thread::spawn(move || {
            let (mut peak, mut fall) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&usage_file).unwrap();
                let mib = text.trim().parse::<u64>().unwrap() >> 20;
                peak = peak.max(mib);
                fall = fall.max(peak - mib);
                std::thread::sleep(Duration::from_millis(5));
            }
            fall
        })
    };
    // 8 + 2 × 64 + 60 MiB: ~23 % available, inside the page-out level only.
    let mut fg = Workload::spawn(cg, "fg", 0, 60, 100);
    assert!(fg.wait_ready());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let usage_fall_mib = watcher.join().unwrap();
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(
        actions(&events, "kill").is_empty(),
        "page-out must have made room: {events:#?}"
    );
    let first = pageouts_of(&events, bg[0].pid);
    assert!(
        !first.is_empty(),
        "adj 1000 is paged out first: {events:#?}"
    );
    let e = first[0];
    assert!(e["freed_kib"].as_u64().unwrap() > 30 * 1024, "{e}");
    assert!(
        e["requested_kib"].as_u64().unwrap() >= e["freed_kib"].as_u64().unwrap() / 2,
        "{e}"
    );
    assert!(
        e["rss_file_after_kib"].as_u64().unwrap() < e["rss_file_before_kib"].as_u64().unwrap() / 2,
        "{e}"
    );
    assert_eq!(e["level"], "moderate");
    assert!(
        status_kib(bg[0].pid, "RssFile") < 20 * 1024,
        "its RssFile stays down"
    );
    assert!(
        usage_fall_mib >= 30,
        "memcg usage fell by only {usage_fall_mib} MiB"
    );
    for w in bg.iter().chain([&fg, &small]) {
        assert!(w.alive(), "{} must be alive", w.name);
    }
    assert_eq!(sc.cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller and no active swap: run as root with cargo test -- --include-ignored"]
fn anonymous_memory_without_swap_escalates_to_kills() {
    let (mut sc, _dir) = start("pageout-anon");
    if std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .lines()
        .count()
        > 1
    {
        panic!("this test needs a machine without active swap (see /proc/swaps)");
    }
    let cg = &sc.cg;
    let small = Workload::ready(cg, "small", 0, 8);
    let bg = background(cg, &[1000, 950], 30);
    // 8 + 60 + 180 MiB would not fit: only a kill makes room.
    let mut fg = Workload::spawn(cg, "fg", 0, 180, 100);
    fg.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let events = sc.daemon.events();
    sc.daemon.stop();

    let pageouts = actions(&events, "pageout");
    assert!(!pageouts.is_empty(), "page-out is tried first: {events:#?}");
    for w in &bg {
        let p = pageouts_of(&events, w.pid);
        assert!(
            p.len() <= 1,
            "a process that yields nothing is not paged out again: {p:#?}"
        );
        for e in p {
            assert!(
                e["freed_kib"].as_u64().unwrap() < 4 * 1024,
                "anon cannot go without swap: {e}"
            );
        }
    }
    let kills = actions(&events, "kill");
    assert!(!kills.is_empty(), "must escalate to a kill: {events:#?}");
    assert_eq!(kills[0]["pid"], bg[0].pid, "adj 1000 first");
    assert_eq!(kills[0]["level"], "low");
    assert!(fg.alive() && small.alive());
    assert_eq!(
        sc.cg.oom_kills(),
        0,
        "escalation must come before the kernel OOM killer"
    );
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, an unused /dev/zram0 (modprobe zram) and mkswap/swapon: run as root with cargo test -- --include-ignored"]
fn anonymous_memory_goes_to_zram_swap_before_any_kill() {
    let (mut sc, _dir) = start("pageout-zram");
    let _zram = ZramSwap::set_up().unwrap_or_else(|e| panic!("cannot set up zram swap: {e}"));
    let cg = &sc.cg;
    let small = Workload::ready(cg, "small", 0, 8);
    let bg = background(cg, &[1000, 950], 60);
    // 8 + 120 + 60 MiB: ~26 % available, inside the page-out level.
    let mut fg = Workload::spawn(cg, "fg", 0, 60, 100);
    assert!(fg.wait_ready());
    std::thread::sleep(Duration::from_secs(2));
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(actions(&events, "kill").is_empty(), "{events:#?}");
    let first = pageouts_of(&events, bg[0].pid);
    assert!(!first.is_empty(), "{events:#?}");
    let e = first[0];
    assert!(e["freed_kib"].as_u64().unwrap() > 30 * 1024, "{e}");
    assert!(
        e["rss_anon_after_kib"].as_u64().unwrap() + 30 * 1024
            < e["rss_anon_before_kib"].as_u64().unwrap(),
        "{e}"
    );
    assert!(e["swap_delta_kib"].as_u64().unwrap() > 30 * 1024, "{e}");
    assert!(
        status_kib(bg[0].pid, "VmSwap") > 30 * 1024,
        "its memory sits in swap now"
    );
    for w in bg.iter().chain([&fg, &small]) {
        assert!(w.alive(), "{} must be alive", w.name);
    }
    assert_eq!(sc.cg.oom_kills(), 0);
}
