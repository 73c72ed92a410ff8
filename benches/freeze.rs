//! What the freeze tier returns against a kill, and how fast a thawed app is back against a
//! cold start (issue 23), on the real kernel: the bed of tests/freeze_pressure.rs (a 256 MiB
//! v1 memcg, 512 MiB of zram swap, a cached app of 100 MiB of ~3:1-compressible memory in an
//! app cgroup of its own, lowmemd with a freeze level at 40 %), measured side by side in one
//! run, `RUNS` times each:
//!
//! - **freeze + page-out**: the freeze record's resident memory saved, zram's own growth and
//!   their difference (what the machine got back, Android's `memFreed`);
//! - **kill**: the memcg's usage drop when the same app is killed;
//! - **back again**: after the thaw, the time until the app has read all its memory once
//!   (its VmSwap back under 10 % of what was paged out: `--cycle-ms` reads every page), against
//!   starting the app anew until it is `ready` with the same memory.
//!
//! `cargo bench --bench freeze` (root; creates and removes its cgroups and zram swap).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::freeze_bed::{POLICY, bed, wait_action, wait_until};
use common::{Workload, actions, real_kernel_available, sigkill, status_kib};

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("median {:.1}, {lo:.1}–{hi:.1}", median(v.to_vec()))
}

fn kib_field(e: &serde_json::Value, k: &str) -> f64 {
    e[k].as_u64().unwrap_or(0) as f64 / 1024.0
}

fn main() {
    if !real_kernel_available("freeze") {
        return;
    }
    let (mut saved, mut zram, mut returned) = (vec![], vec![], vec![]);
    let (mut memcg_kill, mut back_ms, mut cold_ms) = (vec![], vec![], vec![]);
    for run in 0..RUNS {
        // Freeze + page-out, then the thaw and the way back.
        let (_lock, bed) = bed(&format!("fzbench{run}"), &["app-cached.scope"]);
        let cached = bed.cached_app(0);
        let mut d = bed.daemon(POLICY, &[]);
        let fg = bed.foreground();
        let events = wait_action(&d, "freeze", Duration::from_secs(30));
        let Some(f) = actions(&events, "freeze").first().copied().cloned() else {
            panic!("run {run}: nothing frozen: {events:#?}");
        };
        saved.push(kib_field(&f, "resident_saved_kib"));
        zram.push(kib_field(&f, "swap_ram_growth_kib"));
        returned.push(kib_field(&f, "freed_kib"));
        let swapped = status_kib(cached.pid, "VmSwap");
        drop(fg);
        let events = wait_action(&d, "thaw", Duration::from_secs(30));
        assert!(
            !actions(&events, "thaw").is_empty(),
            "run {run}: not thawed"
        );
        let t0 = Instant::now();
        assert!(
            wait_until(Duration::from_secs(60), || status_kib(cached.pid, "VmSwap")
                < swapped / 10),
            "run {run}: the thawed app did not read its memory back"
        );
        back_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        d.stop();
        // The same app started anew: what a kill costs the user when they come back.
        let t0 = Instant::now();
        let mut cold = Workload::spawn(&bed.cg, "cold", 900, 100, 0);
        assert!(cold.wait_ready(), "run {run}: the cold start died");
        cold_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        // And what killing it returns: the memcg's usage drop.
        std::thread::sleep(Duration::from_millis(300));
        let before = bed.cg.usage_mib() as f64;
        sigkill(cold.pid);
        assert!(cold.wait_dead(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        memcg_kill.push(before - bed.cg.usage_mib() as f64);
        eprintln!(
            "run {run}: freeze saved {:.1} MiB, zram +{:.1}, returned {:.1}; kill -{:.0}; back {:.0} ms, cold {:.0} ms",
            saved[run], zram[run], returned[run], memcg_kill[run], back_ms[run], cold_ms[run]
        );
    }
    println!("freeze tier vs kill, 100 MiB app (~3:1), {RUNS} runs (MiB, ms):");
    println!("  freeze + page-out: resident saved {}", range(&saved));
    println!("  freeze + page-out: zram's growth {}", range(&zram));
    println!(
        "  freeze + page-out: returned to the machine {}",
        range(&returned)
    );
    println!("  kill: memcg usage drop {}", range(&memcg_kill));
    println!(
        "  back after a thaw (all memory read again) {}",
        range(&back_ms)
    );
    println!("  cold start to ready {}", range(&cold_ms));
    println!(
        "  ratio: a freeze returns {:.0} % of what a kill does; a thawed app is back in {:.0} % of a cold start's time",
        median(returned.clone()) * 100.0 / median(memcg_kill.clone()),
        median(back_ms.clone()) * 100.0 / median(cold_ms.clone())
    );
}
