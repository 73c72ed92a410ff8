//! Process-table scan cost over ~2,000 live processes, against a baseline measured in the
//! same run: reading and parsing `/proc/PID/status` per process (what `status`-based
//! killers do). Plus the pure stages: rank and decide.
//!
//! `cargo bench --bench scan`. Per-process time = the reported time / the item count.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use lowmemd::pipeline::owner;
use lowmemd::pipeline::rank::{RankContext, add_swap_to_first_band, candidates, settle};
use lowmemd::policy::decide::{LastActions, decide};
use lowmemd::policy::{Policy, RankBy};
use lowmemd::procs::{Needs, ProcCache, ProcRoot, raise_fd_limit};
use lowmemd::sample::{MemSnapshot, Sample};
use procfs_core::FromBufRead;

/// Sleeping processes spawned so the table has ~2,000 entries, as on a busy desktop.
const EXTRA_PROCS: usize = 1900;
/// How many of them get adj 900, like an app manager's cached background apps.
const CACHED_APPS: usize = 20;

fn pids() -> &'static Vec<i32> {
    static PIDS: OnceLock<Vec<i32>> = OnceLock::new();
    PIDS.get_or_init(|| ProcRoot::default().pids().unwrap())
}

fn main() {
    raise_fd_limit();
    let mut children: Vec<Child> = (0..EXTRA_PROCS)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect();
    // As on a desktop, a few "cached apps" stand above everything else: the first band a
    // two-phase swap read has to size.
    for c in children.iter().take(CACHED_APPS) {
        let _ = std::fs::write(format!("/proc/{}/oom_score_adj", c.id()), "900");
    }
    eprintln!("process table: {} pids", pids().len());
    divan::main();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[divan::bench]
fn scan_stat_and_adj(b: Bencher) {
    let proc = ProcRoot::default();
    let pids = pids();
    b.counter(ItemsCount::new(pids.len()))
        .bench(|| black_box(proc.scan(pids.iter().copied(), false)));
}

/// The pipeline's reader: fds kept open across scans (the first scan opens them).
#[divan::bench]
fn scan_cached_fds(b: Bencher) {
    let pids = pids();
    let mut cache = ProcCache::new(ProcRoot::default(), 4096);
    cache.scan(pids.iter().copied(), None, false);
    b.counter(ItemsCount::new(pids.len()))
        .bench_local(|| black_box(cache.scan(pids.iter().copied(), None, false)));
}

/// The first scan of a fresh cache: every process's files opened and its `stat` read once
/// (what a newly started process costs the pipeline). One cache per sample: each holds two
/// fds per process until it is dropped, outside the timing.
#[divan::bench(sample_size = 1, sample_count = 40)]
fn scan_cached_fds_first(b: Bencher) {
    let pids = pids();
    b.counter(ItemsCount::new(pids.len()))
        .with_inputs(|| ProcCache::new(ProcRoot::default(), 4096))
        .bench_local_refs(|cache| black_box(cache.scan(pids.iter().copied(), None, false)));
}

/// What ranking by cgroup (`rank_by = "cgroup"`) asks of the reader: each process's
/// `/proc/PID/cgroup` too. Read when the cache opens the entry (and again after an exec),
/// so a warm scan costs what `scan_cached_fds` costs and a first scan more.
const OWNER_CGROUP: Needs = Needs {
    cgroup: false,
    unified_cgroup: true,
    real_uid: false,
    cmdline: false,
    exe: false,
    uid: false,
    marking: false,
    comm: false,
};

#[divan::bench]
fn scan_cached_fds_owner_cgroup(b: Bencher) {
    let pids = pids();
    let mut cache = ProcCache::new(ProcRoot::default(), 4096);
    cache.scan_with(pids.iter().copied(), None, false, OWNER_CGROUP);
    b.counter(ItemsCount::new(pids.len())).bench_local(|| {
        black_box(cache.scan_with(pids.iter().copied(), None, false, OWNER_CGROUP))
    });
}

#[divan::bench(sample_size = 1, sample_count = 40)]
fn scan_cached_fds_first_owner_cgroup(b: Bencher) {
    let pids = pids();
    b.counter(ItemsCount::new(pids.len()))
        .with_inputs(|| ProcCache::new(ProcRoot::default(), 4096))
        .bench_local_refs(|cache| {
            black_box(cache.scan_with(pids.iter().copied(), None, false, OWNER_CGROUP))
        });
}

/// The same with a floor of 900 (level `low`): most processes cost one adj read.
#[divan::bench]
fn scan_cached_fds_floor_900(b: Bencher) {
    let pids = pids();
    let mut cache = ProcCache::new(ProcRoot::default(), 4096);
    cache.scan(pids.iter().copied(), None, false);
    b.counter(ItemsCount::new(pids.len()))
        .bench_local(|| black_box(cache.scan(pids.iter().copied(), Some(900), false)));
}

/// What the pipeline does with swap in use: the cached scan without `status`, ranking,
/// then `VmSwap` for the first band only (here the 20 "cached apps" at adj 900).
#[divan::bench]
fn scan_two_phase_with_swap(b: Bencher) {
    let pids = pids();
    let proc = ProcRoot::default();
    let mut cache = ProcCache::new(ProcRoot::default(), 4096);
    cache.scan(pids.iter().copied(), None, false);
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        ..Default::default()
    };
    b.counter(ItemsCount::new(pids.len())).bench_local(|| {
        let scan = cache.scan(pids.iter().copied(), None, false);
        let mut cands = candidates(scan.procs, &ctx);
        add_swap_to_first_band(&mut cands, |c| {
            proc.mem_detail(c.pid).ok().map(|d| d.swap_kib)
        });
        black_box(cands)
    });
}

/// Before: `status` read for every process (the stateless reader with swap).
#[divan::bench]
fn scan_with_swap(b: Bencher) {
    let proc = ProcRoot::default();
    let pids = pids();
    b.counter(ItemsCount::new(pids.len()))
        .bench(|| black_box(proc.scan(pids.iter().copied(), true)));
}

/// Baseline: one `status` read and parse per process.
#[divan::bench]
fn baseline_status_parse(b: Bencher) {
    let pids = pids();
    b.counter(ItemsCount::new(pids.len())).bench(|| {
        let mut n = 0u64;
        for pid in pids {
            if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/status"))
                && let Ok(s) =
                    procfs_core::process::Status::from_buf_read(std::io::BufReader::new(f))
            {
                n += s.vmrss.unwrap_or(0);
            }
        }
        black_box(n)
    });
}

#[divan::bench]
fn rank_pure(b: Bencher) {
    let procs = ProcRoot::default()
        .scan(pids().iter().copied(), false)
        .procs;
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        min_adj: Some(0),
        ..Default::default()
    };
    b.counter(ItemsCount::new(procs.len()))
        .with_inputs(|| procs.clone())
        .bench_values(|p| black_box(candidates(p, &ctx)));
}

/// `rank_pure` plus grouping by app cgroup: owners found, totals summed, ordered again.
#[divan::bench]
fn rank_by_owner_pure(b: Bencher) {
    let procs = ProcRoot::default()
        .scan_with(pids().iter().copied(), false, OWNER_CGROUP)
        .procs;
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        min_adj: Some(0),
        ..Default::default()
    };
    b.counter(ItemsCount::new(procs.len()))
        .with_inputs(|| procs.clone())
        .bench_values(|p| {
            let mut c = candidates(p, &ctx);
            owner::annotate(&mut c, RankBy::Cgroup { depth: None }, None);
            settle(&mut c);
            black_box(c)
        });
}

#[divan::bench]
fn decide_pure(b: Bencher) {
    let policy = Policy::default();
    let sample = Sample {
        at_ms: 10_000,
        mem: MemSnapshot {
            total_kib: 262_144,
            available_kib: 30_000,
            swap_total_kib: 0,
            swap_free_kib: 0,
            ..Default::default()
        },
        psi: Vec::new(),
        vmpressure_ms: None,
        thrashing_pct: None,
        thrashing_since_ms: 0,
        headroom_fall_kib_s: None,
        swap_absorbing_ms: None,
    };
    b.bench(|| {
        black_box(decide(
            black_box(&sample),
            &policy,
            LastActions::kill(Some(9_000)),
        ))
    });
}
