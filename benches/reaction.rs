//! End-to-end reaction in the runaway scenario: an adj-0 process leaks at 100 MiB/s inside a
//! 256 MiB memcg watched by lowmemd. Measures, per run, from the sample that crossed the
//! critical threshold to the victim's pidfd readable, and the headroom left at the kill.
//!
//! Baseline in the same run: the bare kill of an equally large process in the same kind of
//! memcg (pidfd SIGKILL + process_mrelease → pidfd readable, no daemon), so the ratio shows
//! what lowmemd adds on top of the kernel's own teardown.
//!
//! `cargo bench --bench reaction` (root; creates and removes its cgroups).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Daemon, TestCgroup, Workload, actions};
use lowmemd::caps::KernelCaps;
use lowmemd::clock::monotonic_ms;
use lowmemd::pipeline::rank::RankedProc;
use lowmemd::procs::ProcRoot;
use lowmemd::scope::Scope;

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One runaway run: (sample→exit ms, headroom KiB at the kill, victim size KiB).
fn runaway_once(i: usize) -> Option<(f64, f64, f64)> {
    let cg = TestCgroup::create(&format!("bench-runaway{i}"), 256);
    let mut daemon = Daemon::start(&cg, &[]);
    let mut leak = Workload::spawn(&cg, "leak", 0, 0, 100);
    leak.wait_ready();
    leak.wait_dead(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.events();
    daemon.stop();
    let oom = cg.oom_kills();
    let kill = actions(&events, "kill").into_iter().next()?.clone();
    if oom != 0 {
        eprintln!("run {i}: the kernel OOM killer ran ({oom})");
        return None;
    }
    let s2k = kill["sample_to_kill_ms"].as_f64()?;
    let k2e = kill["kill_to_exit_ms"].as_f64()?;
    Some((
        s2k + k2e,
        kill["available_at_kill_kib"].as_f64()?,
        kill["rss_kib"].as_f64()?,
    ))
}

/// Baseline: kill a process of `mib` MiB directly through lowmemd's own pin/kill/confirm.
fn bare_kill_once(i: usize, mib: u64) -> f64 {
    let cg = TestCgroup::create(&format!("bench-bare{i}"), 512);
    let mut w = Workload::ready(&cg, "victim", 0, mib);
    let proc = ProcRoot::default();
    let scope = Scope::system(proc.clone()).unwrap();
    let info = proc.scan([w.pid], false).procs.remove(0);
    let target = lowmemd::pipeline::pin::pin(&proc, &scope, RankedProc::from(info), true).unwrap();
    let caps = KernelCaps::probe();
    let t0 = monotonic_ms();
    lowmemd::pipeline::signal::kill_target(&target, &caps, &proc).unwrap();
    let out = lowmemd::pipeline::confirm::wait_target(&target, &ProcRoot::default(), t0 + 5000);
    let lowmemd::pipeline::confirm::Outcome::Exited { at_ms } = out else {
        panic!("bare kill not confirmed")
    };
    let _ = w.child.wait();
    (at_ms - t0) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / test harness probing: nothing to list.
        return;
    }
    if !common::real_kernel_available("reaction bench") {
        return;
    }
    let mut reaction = Vec::new();
    let mut headroom = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..RUNS {
        match runaway_once(i) {
            Some((r, h, s)) => {
                eprintln!(
                    "run {i}: sample→exit {r:.0} ms, headroom at kill {:.1} MiB, victim {:.0} MiB",
                    h / 1024.0,
                    s / 1024.0
                );
                reaction.push(r);
                headroom.push(h);
                sizes.push(s);
            }
            None => eprintln!("run {i}: no confirmed lowmemd kill"),
        }
    }
    if reaction.is_empty() {
        eprintln!("no successful run");
        std::process::exit(1);
    }
    let victim_mib = (median(sizes) / 1024.0).round() as u64;
    let bare: Vec<f64> = (0..RUNS).map(|i| bare_kill_once(i, victim_mib)).collect();
    let (r, b) = (median(reaction), median(bare));
    println!("reaction (runaway, 100 MiB/s, 256 MiB memcg), median of {RUNS} runs:");
    println!("  sample that crossed critical -> victim pidfd readable: {r:.0} ms");
    println!(
        "  headroom left at the kill:                            {:.1} MiB",
        median(headroom) / 1024.0
    );
    println!("  baseline, bare kill of a {victim_mib} MiB process:          {b:.0} ms");
    println!(
        "  ratio reaction / bare kill:                           {:.2}",
        r / b.max(1.0)
    );
}
