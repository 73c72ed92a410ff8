//! A crowded scope (issue 21): ten thousand idle processes in a memcg, and a runaway among
//! them. The daemon's kill latency there is bounded in `benches/crowd.rs`; here, that the
//! kill lands before the kernel's and takes the runaway, not one of the crowd. Root only
//! (`cargo test --test crowd_pressure -- --include-ignored`), like every pressure test.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, TestCgroup, Workload, actions, require_real_kernel, serial};

const CROWD: u32 = 10_000;

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_runaway_among_ten_thousand_idle_processes_is_killed_before_the_kernel() {
    let _serial = serial();
    require_real_kernel("crowd");
    let cg = TestCgroup::create("crowd", 4096);
    // One forking parent: 10,000 children of 64 KiB each at adj 0, gone with it.
    let count = CROWD.to_string();
    let started = Instant::now();
    let mut crowd = Workload::spawn_with(
        &cg,
        "idle",
        0,
        0,
        0,
        &["--children".as_ref(), count.as_ref()],
    );
    assert!(crowd.wait_ready(), "the crowd died while forking");
    let listed = cg.pids().len();
    assert!(listed > CROWD as usize, "{listed} pids in the memcg");
    eprintln!(
        "{CROWD} idle processes in {:.1} s, {} MiB charged",
        started.elapsed().as_secs_f64(),
        cg.usage_mib()
    );
    // Started after the crowd, as on a node that has been up for a while.
    let mut daemon = Daemon::start(&cg, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let mut leak = Workload::spawn_with(&cg, "leak", 0, 0, 1000, &["--touch-only".as_ref()]);
    assert!(leak.wait_ready());
    // ~3.5 GiB free at 1000 MiB/s: the limit within ~4 s.
    leak.wait_dead(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let events = daemon.events();
    daemon.stop();

    assert!(!leak.alive(), "the runaway must be dead: {events:#?}");
    assert_eq!(cg.oom_kills(), 0, "lowmemd, not the kernel, must kill it");
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "only the runaway: {kills:#?}");
    let k = kills[0];
    assert_eq!(k["pid"], leak.pid, "{k}");
    assert_eq!(k["exit_confirmed"], true, "{k}");
    assert!(crowd.alive(), "the crowd's parent must survive");
    let left = cg.pids().len();
    assert!(
        left > CROWD as usize,
        "none of the crowd may die: {left} left"
    );
    // The number the bench bounds, recorded for the CI log.
    println!(
        "crowd of {CROWD}: sample_to_kill_ms = {}, kill_to_exit_ms = {}",
        k["sample_to_kill_ms"], k["kill_to_exit_ms"]
    );
}
