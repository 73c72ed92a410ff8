//! Swap is headroom, under real pressure: a 256 MiB memcg with 512 MiB of zram swap on the
//! host, the built-in policy. A job that grows past the memcg's RAM and settles into zram
//! is left alone (the kernel would keep it too); a leak is still stopped before the memcg's
//! OOM killer, while zram still has room. Root, cgroup v1 and an unused /dev/zram0: ignored
//! unless run with `--include-ignored`, then a missing prerequisite fails.

mod common;

use std::time::Duration;

use common::{Scenario, Workload, ZramSwap, actions, status_kib};

const LIMIT_MIB: u64 = 256;

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, an unused /dev/zram0 (modprobe zram) and mkswap/swapon: run as root with cargo test -- --include-ignored"]
fn a_job_that_fits_in_ram_and_zram_is_left_alone() {
    let mut sc = Scenario::start("swap-finite", LIMIT_MIB, &[]);
    let _zram = ZramSwap::set_up().unwrap_or_else(|e| panic!("cannot set up zram swap: {e}"));
    let cg = &sc.cg;
    // 100 MiB/s to 360 MiB of ~2:1-compressible memory: 40 % more than the memcg's RAM,
    // a quarter of what zram can take.
    let mut job = Workload::spawn(cg, "job", 0, 360, 100);
    assert!(
        job.wait_ready(),
        "the job died growing: {:#?}",
        sc.daemon.events()
    );
    // Held: a job that fits must stay, not just outlive its growth.
    std::thread::sleep(Duration::from_secs(4));
    let swapped = status_kib(job.pid, "VmSwap");
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(job.alive(), "the job was killed: {events:#?}");
    assert!(actions(&events, "kill").is_empty(), "{events:#?}");
    assert!(
        swapped > 80 * 1024,
        "the job must really sit partly in zram (VmSwap {swapped} KiB)"
    );
    assert_eq!(
        cg.oom_kills(),
        0,
        "the kernel kept it without its OOM killer"
    );
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, an unused /dev/zram0 (modprobe zram) and mkswap/swapon: run as root with cargo test -- --include-ignored"]
fn a_leak_with_zram_is_stopped_before_the_oom_killer_and_before_zram_is_full() {
    let mut sc = Scenario::start("swap-leak", LIMIT_MIB, &[]);
    let _zram = ZramSwap::set_up().unwrap_or_else(|e| panic!("cannot set up zram swap: {e}"));
    let cg = &sc.cg;
    let innocent = Workload::ready(cg, "innocent", 0, 16);
    let leak = Workload::spawn(cg, "leak", 0, 0, 100);
    let killed = leak.wait_dead(Duration::from_secs(30));
    let events = sc.daemon.events();
    sc.daemon.stop();

    assert!(killed, "the leak outlived 30 s: {events:#?}");
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "one kill, the leak: {events:#?}");
    let k = kills[0];
    assert_eq!(k["pid"], leak.pid, "{k}");
    assert_eq!(k["reason"], "exhaustion", "stopped by its trend: {k}");
    assert_eq!(k["level"], "runaway", "{k}");
    assert!(
        k["swap_headroom_kib"].as_u64().unwrap() > 0,
        "zram still had room at the kill: {k}"
    );
    assert!(
        k["condition"].as_str().unwrap().contains("gone in"),
        "the record says how soon: {k}"
    );
    assert!(innocent.alive(), "the innocent must survive");
    assert_eq!(cg.oom_kills(), 0, "the kernel OOM killer must not have run");
}
