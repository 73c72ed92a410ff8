//! The select path (scan, rank, pin: everything between the sample and the signal but the
//! memory re-read) in a memcg crowded with idle processes — 1,000, 10,000 and 20,000, 64 KiB
//! each at adj 0, as in issue 21 — beside one 200 MiB process at adj 0 that must be picked.
//! Both designs in the same run: `full` scans the scope at every decision (the design
//! before the kept table), `kept` ranks the table a thread keeps and re-reads its head
//! (`procs::keeper`). The memcg is filled to ~85 % so that the keeper is in its "memory
//! short" pace, as it is when a kill comes. Last, a 250 MiB process is started and one
//! select made at once: the kept table has not seen it (the path of a new runaway).
//! Beside `kept`, the same table ranked in full before the pin (`kept, ranked in full`: the
//! select path before `rank::first_candidates`, rebuilt here from the stage's public parts).
//!
//! `cargo bench --bench crowd` (root; creates and removes its cgroups; ~1 minute).
//! Words after `--` pick the sizes: `cargo bench --bench crowd -- 10000`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestCgroup, Workload};
use lowmemd::caps::KernelCaps;
use lowmemd::pipeline::Plan;
use lowmemd::pipeline::kernel::{Kernel, System};
use lowmemd::pipeline::owner;
use lowmemd::pipeline::pageout::tracker::Tracker;
use lowmemd::pipeline::rank::{RankContext, candidates, settle};
use lowmemd::pipeline::select::{Context, select};
use lowmemd::policy::decide::{Decision, Fired};
use lowmemd::policy::{Action, Policy, Reason};
use lowmemd::procs::keeper::KEEP_FROM;
use lowmemd::procs::{ProcRoot, cache_capacity, raise_fd_limit};
use lowmemd::sample::{MemSnapshot, Sample};
use lowmemd::scope::Scope;

const RUNS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One select, asserting `big` is picked.
fn measure_once(kernel: &mut dyn Kernel, big: i32) -> (f64, f64) {
    measure_n(kernel, big, Duration::ZERO, 1)
}

/// Median and worst select time in ms over [`RUNS`], asserting the big one is picked.
fn measure(kernel: &mut dyn Kernel, big: i32, gap: Duration) -> (f64, f64) {
    measure_n(kernel, big, gap, RUNS)
}

/// The built-in policy's level that kills at adj 0.
fn kill_level(policy: &Policy) -> usize {
    policy
        .levels
        .iter()
        .position(|l| l.action == Action::Kill && l.min_adj <= 0)
        .expect("the built-in policy kills at adj 0")
}

/// Median and worst over [`RUNS`] of the select path as it was before the first
/// candidates were ranked alone: scan, rank every process, order, pin the first.
fn measure_ranked_in_full(kernel: &mut dyn Kernel, big: i32, gap: Duration) -> (f64, f64) {
    let policy = Policy::default();
    let level = &policy.levels[kill_level(&policy)];
    let floor = (!policy.facts.rules_can_raise).then_some(level.min_adj);
    let needs = policy.facts.needs.union(policy.owner_needs());
    let self_pid = std::process::id() as i32;
    let mut took = Vec::new();
    for _ in 0..RUNS {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        let scan = kernel.scan(floor, false, needs).expect("scope readable");
        let ctx = RankContext {
            self_pid,
            min_adj: Some(level.min_adj),
            rules: &policy.rules,
            ..Default::default()
        };
        let mut cands = candidates(scan.procs, &ctx);
        let scope = kernel.scope_cgroup();
        owner::annotate(&mut cands, level.rank_by, scope.as_deref());
        settle(&mut cands);
        let first = cands.into_iter().next().expect("a victim");
        let victim = kernel.pin(first).expect("pinned").proc.pid;
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(victim, big, "the largest process must be picked");
    }
    let worst = took.iter().copied().fold(0.0, f64::max);
    (median(took), worst)
}

fn measure_n(kernel: &mut dyn Kernel, big: i32, gap: Duration, runs: usize) -> (f64, f64) {
    let policy = Policy::default();
    let level = kill_level(&policy);
    let fired = Fired {
        reason: Reason::CriticalMemory,
        value: 1.0,
        threshold: 2.0,
        sustained_ms: None,
        exhausted_in_ms: None,
    };
    let decision = Decision {
        level,
        reason: Reason::CriticalMemory,
        fired,
    };
    let sample = Sample {
        at_ms: kernel.now_ms(),
        mem: MemSnapshot::default(),
        psi: Vec::new(),
        vmpressure_ms: None,
        thrashing_pct: None,
        thrashing_since_ms: 0,
        headroom_fall_kib_s: None,
        swap_absorbing_ms: None,
    };
    let pageouts = Tracker::default();
    let cx = Context {
        self_pid: std::process::id() as i32,
        excluded: &Default::default(),
        registrations: None,
        reap: lowmemd::pipeline::kill::REAP_BATCH,
        pageouts: &pageouts,
    };
    let mut took = Vec::new();
    for _ in 0..runs {
        std::thread::sleep(gap);
        let plan = Plan {
            policy: &policy,
            decision: decision.clone(),
            level: &policy.levels[level],
            sample: &sample,
            fresh: sample.clone(),
            last: Default::default(),
        };
        let t0 = Instant::now();
        let sel = select(kernel, &plan, &cx).expect("scope readable");
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        let victim = sel.target.expect("a victim").proc.pid;
        assert_eq!(victim, big, "the largest process must be picked");
    }
    let worst = took.iter().copied().fold(0.0, f64::max);
    (median(took), worst)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !common::real_kernel_available("crowd bench") {
        return;
    }
    let _serial = common::serial();
    let picked: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if picked.is_empty() {
        vec![1_000, 10_000, 20_000]
    } else {
        picked
    };
    let capacity = cache_capacity(raise_fd_limit());
    println!("select path (scan + rank + pin), median / worst of {RUNS}, fd cache {capacity}:");
    println!(
        "| processes | full scan (ms) | kept table, ranked in full (ms) | kept table (ms) | kept, a 250 MiB newcomer (ms) | per process, full (µs) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let cg = TestCgroup::create(&format!("bench-crowd{n}"), 8192);
        let count = n.to_string();
        let crowd_args = [
            std::ffi::OsStr::new("--children"),
            std::ffi::OsStr::new(&count),
        ];
        let mut crowd = Workload::spawn_with(&cg, "idle", 0, 0, 0, &crowd_args);
        let started = Instant::now();
        // `--mib 0` says ready at once; the children are all forked before that.
        assert!(crowd.wait_ready(), "the crowd died");
        let big = Workload::ready(&cg, "big", 0, 200);
        eprintln!(
            "{n} children forked in {:.1} s; {} pids in the memcg",
            started.elapsed().as_secs_f64(),
            cg.pids().len()
        );
        // ~85 % full: the keeper's "memory short" pace.
        let usage = cg.usage_mib();
        std::fs::write(
            cg.v1.join("memory.limit_in_bytes"),
            ((usage * 100 / 85 + 1) << 20).to_string(),
        )
        .expect("set the limit");
        let scope = Arc::new(Scope::cgroup(ProcRoot::default(), &cg.name).expect("scope"));
        let caps = KernelCaps::probe();
        let mut full = System::new(scope.clone(), caps.clone(), capacity);
        let (full_med, full_max) = measure(&mut full, big.pid, Duration::from_millis(50));
        drop(full);
        let mut kept = System::keeping_table(scope, caps, capacity);
        // The first table: a full scan on the keeper's thread (none below KEEP_FROM).
        let deadline = Instant::now() + Duration::from_secs(30);
        while kept.kept_table_age_ms().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (kept_med, kept_max) = measure(&mut kept, big.pid, Duration::from_millis(200));
        let (whole_med, whole_max) =
            measure_ranked_in_full(&mut kept, big.pid, Duration::from_millis(200));
        // A process the table has not seen: 250 MiB started just now, the largest (the
        // memcg has room for it from 10,000 processes on; below 2,048 nothing is kept).
        let new_ms = (n as usize >= KEEP_FROM).then(|| {
            let newcomer = Workload::ready(&cg, "new", 0, 250);
            measure_once(&mut kept, newcomer.pid).0
        });
        drop(kept);
        println!(
            "| {n} | {full_med:.1} / {full_max:.1} | {whole_med:.1} / {whole_max:.1} | {kept_med:.1} / {kept_max:.1} | {} | {:.1} |",
            new_ms.map_or("—".into(), |ms| format!("{ms:.1}")),
            full_med * 1000.0 / n as f64
        );
        drop(big);
        drop(crowd);
        drop(cg);
    }
}
