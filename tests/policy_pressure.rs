//! Policy files under real memory pressure: rules change the kill order, a thrashing
//! condition fires on a page cache that keeps re-reading itself, and a running daemon
//! reloads its policy (keeping the old one when the new is broken). Root and cgroup v1, as
//! in tests/pressure.rs: ignored unless run with `--include-ignored`, then a missing
//! prerequisite fails.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ColdFile, Scenario, Workload, actions};
use rustix::process::Signal;

const LIMIT_MIB: u64 = 256;

fn write_policy(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One kill level at 15 % with the given rules appended.
fn low_level_policy(rules: &str) -> String {
    format!(
        "[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n\n\
         [[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 15\ncooldown_ms = 100\n\n{rules}"
    )
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn rules_protect_and_prefer_change_the_kill_order() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "rules.toml",
        &low_level_policy(
            "[[rule]]\nname = \"keep-me\"\ncomm = \"keeper\"\nprotect = true\n\n\
             [[rule]]\nname = \"go-first\"\ncomm = \"pref\"\nprefer = 190\n",
        ),
    );
    let mut sc = Scenario::start(
        "rules",
        LIMIT_MIB,
        &[OsStr::new("--policy"), policy.as_os_str()],
    );
    let cg = &sc.cg;
    let small = Workload::ready(cg, "small", 0, 8);
    // Highest adj, but protected by a rule.
    let mut keeper = Workload::spawn(cg, "keeper", 1000, 30, 0);
    // adj 800 is below the low level's floor; the rule lifts it to 990.
    let mut pref = Workload::spawn(cg, "pref", 800, 30, 0);
    let mut plain = Workload::spawn(cg, "plain", 950, 30, 0);
    for w in [&mut keeper, &mut pref, &mut plain] {
        assert!(w.wait_ready(), "{} died", w.name);
    }
    let mut fg = Workload::spawn(cg, "fg", 0, 170, 100);
    fg.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let events = sc.daemon.events();
    sc.daemon.stop();

    let kills = actions(&events, "kill");
    let killed: Vec<i64> = kills.iter().map(|e| e["pid"].as_i64().unwrap()).collect();
    assert_eq!(
        killed,
        [pref.pid as i64, plain.pid as i64],
        "the preferred adj-800 process first, then adj 950; never the protected adj 1000: {events:#?}"
    );
    assert_eq!(kills[0]["rule"], "go-first");
    assert_eq!(kills[0]["effective_adj"], 990);
    assert_eq!(kills[0]["oom_score_adj"], 800);
    assert!(keeper.alive(), "protected by rule");
    assert!(fg.alive() && small.alive());
    assert_eq!(sc.cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn thrashing_condition_kills_a_page_cache_thrasher() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "thrash.toml",
        "[thrashing]\nwindow_ms = 1000\n\n\
         [[level]]\nname = \"thrashing\"\naction = \"kill\"\nmin_adj = 0\nthrashing_above_pct = 50\n",
    );
    let mut sc = Scenario::start("thrash", 64, &[OsStr::new("--policy"), policy.as_os_str()]);
    // Twice the memcg's size: it can never all stay cached.
    let file = ColdFile::new("reread", 128);
    let small = Workload::ready(&sc.cg, "small", 0, 4);
    let mut reader = Workload::spawn_with(
        &sc.cg,
        "reread",
        0,
        4,
        0,
        &[OsStr::new("--reread"), file.0.as_os_str()],
    );
    assert!(reader.wait_ready());
    let died = reader.wait_dead(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let events = sc.daemon.events();
    sc.daemon.stop();
    assert!(
        died,
        "the thrashing reader must have been killed: {events:#?}"
    );
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], reader.pid);
    assert_eq!(kills[0]["reason"], "thrashing");
    assert!(
        kills[0]["condition"]
            .as_str()
            .unwrap()
            .contains("file refaults"),
        "{}",
        kills[0]
    );
    assert!(
        small.alive(),
        "the larger, thrashing process goes, not the small one"
    );
    assert_eq!(sc.cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn reload_keeps_the_old_policy_on_errors_and_applies_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    // The daemon's policy path is a symlink into another directory: edits there are not
    // seen by the directory watch, so they take SIGHUP (the way some config managers work).
    let real_dir = dir.path().join("real");
    let link_dir = dir.path().join("etc");
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::create_dir_all(&link_dir).unwrap();
    let kill_low = low_level_policy("");
    let watch_low = kill_low.replacen(
        "name = \"low\"\naction = \"kill\"",
        "name = \"low\"\naction = \"none\"",
        1,
    );
    let policy = write_policy(&link_dir, "policy.toml", &kill_low);
    let mut sc = Scenario::start(
        "reload",
        LIMIT_MIB,
        &[OsStr::new("--policy"), policy.as_os_str()],
    );
    let cg = &sc.cg;

    // 1. A broken file replaces the good one: the old policy stays and keeps deciding.
    std::fs::write(&policy, "[[level]]\nname = \"low\"\nmin_adj = 5000\n").unwrap();
    assert!(
        sc.daemon.wait_log(
            "policy reload (file changed) failed",
            Duration::from_secs(5)
        ),
        "no reload error logged"
    );
    assert!(
        sc.daemon
            .wait_log("policy.toml:3:11: level[1].min_adj", Duration::from_secs(1))
    );
    assert!(
        sc.daemon.running(),
        "a broken policy must not stop the daemon"
    );
    let mut small = Workload::spawn(cg, "small", 0, 8, 0);
    let mut bg1 = Workload::spawn(cg, "bg1", 1000, 30, 0);
    assert!(small.wait_ready() && bg1.wait_ready());
    let mut fg = Workload::spawn(cg, "fg", 0, 190, 100);
    fg.wait_ready();
    assert!(
        bg1.wait_dead(Duration::from_secs(3)),
        "the old policy must still kill at 15 %"
    );

    // 2. A valid file (replaced the way editors do: write elsewhere, rename over) applies.
    let tmp = write_policy(&link_dir, ".policy.toml.swp", &watch_low);
    std::fs::rename(&tmp, &policy).unwrap();
    assert!(
        sc.daemon
            .wait_log("policy reloaded (file changed)", Duration::from_secs(5)),
        "valid policy not applied"
    );
    // 8 + 190 + 30 MiB: inside the low level again, which now only watches.
    let bg2 = Workload::ready(cg, "bg2", 1000, 30);
    std::thread::sleep(Duration::from_secs(2));
    assert!(bg2.alive(), "the reloaded policy's low level must not kill");

    // 3. SIGHUP: the file becomes a symlink to a file elsewhere, changed without the watch
    //    seeing it; only SIGHUP applies it.
    let target = write_policy(&real_dir, "policy.toml", &watch_low);
    let link_tmp = link_dir.join(".policy.link");
    std::os::unix::fs::symlink(&target, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, &policy).unwrap();
    assert!(sc.daemon.wait_log(
        "policy reload (file changed): file unchanged",
        Duration::from_secs(5)
    ));
    std::fs::write(&target, &kill_low).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(bg2.alive(), "an unseen edit must not apply by itself");
    sc.daemon.signal(Signal::HUP);
    assert!(
        sc.daemon
            .wait_log("policy reloaded (SIGHUP)", Duration::from_secs(5))
    );
    assert!(
        bg2.wait_dead(Duration::from_secs(3)),
        "after SIGHUP the low level kills again"
    );

    let events = sc.daemon.events();
    assert_eq!(sc.daemon.stop(), Some(0));
    let killed: Vec<i64> = actions(&events, "kill")
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(killed, [bg1.pid as i64, bg2.pid as i64], "{events:#?}");
    assert!(fg.alive() && small.alive());
    assert_eq!(sc.cg.oom_kills(), 0);
}
