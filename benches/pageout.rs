//! Page-out throughput and per-call time, for 64 MiB of file-backed memory and 64 MiB of
//! anonymous memory going to zram swap, through the same code the daemon uses (smaps plan,
//! batches of process_madvise(MADV_PAGEOUT) through a pidfd, RSS measured before/after).
//!
//! Baseline in the same run: killing an identical process (pidfd SIGKILL + process_mrelease
//! → pidfd readable), the action page-out saves; the ratio compares how fast each gives
//! memory back.
//!
//! `cargo bench --bench pageout` (root; creates and removes its cgroups and zram swap).

#[path = "../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::time::Instant;

use common::{ColdFile, TestCgroup, Workload, ZramSwap};
use lowmemd::caps::KernelCaps;
use lowmemd::clock::monotonic_ms;
use lowmemd::pipeline::pageout::plan::{batches, plan};
use lowmemd::pipeline::pin::{Target, pin};
use lowmemd::pipeline::rank::RankedProc;
use lowmemd::procs::ProcRoot;
use lowmemd::procs::parse_smaps;
use lowmemd::scope::Scope;

const MIB: u64 = 64;
const RUNS: usize = 5;
const CALL_BYTES: u64 = 32 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pin_workload(w: &Workload) -> Target {
    let proc = ProcRoot::default();
    let scope = Scope::system(proc.clone()).unwrap();
    let info = proc.scan([w.pid], false).procs.remove(0);
    pin(&proc, &scope, RankedProc::from(info), true).unwrap()
}

/// One page-out of a whole workload: (MiB freed, seconds, calls).
fn pageout_once(w: &Workload, swap: bool) -> (f64, f64, u32) {
    let target = pin_workload(w);
    let proc = ProcRoot::default();
    let before = proc.mem_detail(w.pid).unwrap().resident_kib();
    let t0 = Instant::now();
    let smaps = std::fs::File::open(format!("/proc/{}/smaps", w.pid)).unwrap();
    let regions = parse_smaps(std::io::BufReader::new(smaps)).unwrap();
    let page = rustix::param::page_size() as u64;
    let ranges: Vec<(u64, u64)> = plan(&regions, swap, page)
        .iter()
        .map(|r| (r.0, r.1))
        .collect();
    let batches = batches(&ranges, 0, CALL_BYTES, u64::MAX, 1024, page);
    let calls = lowmemd::pipeline::pageout::advise(&target, &batches);
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        calls.refused.is_none(),
        "process_madvise refused: {:?}",
        calls.refused
    );
    let after = proc.mem_detail(w.pid).unwrap().resident_kib();
    (
        before.saturating_sub(after) as f64 / 1024.0,
        secs,
        calls.calls,
    )
}

/// The baseline: kill an identical workload and wait for its pidfd (MiB, seconds).
fn kill_once(w: &Workload) -> (f64, f64) {
    let target = pin_workload(w);
    let rss = ProcRoot::default()
        .mem_detail(w.pid)
        .unwrap()
        .resident_kib();
    let t0 = monotonic_ms();
    let start = Instant::now();
    lowmemd::pipeline::signal::kill_target(&target, &KernelCaps::probe(), &ProcRoot::default())
        .unwrap();
    let out = lowmemd::pipeline::confirm::wait_target(&target, &ProcRoot::default(), t0 + 5000);
    assert!(matches!(
        out,
        lowmemd::pipeline::confirm::Outcome::Exited { .. }
    ));
    (rss as f64 / 1024.0, start.elapsed().as_secs_f64())
}

fn report(what: &str, runs: Vec<(f64, f64, u32)>, kills: Vec<(f64, f64)>) {
    let mibs = median(runs.iter().map(|r| r.0).collect());
    let rate = median(runs.iter().map(|r| r.0 / r.1).collect());
    let per_call_ms = median(
        runs.iter()
            .map(|r| r.1 * 1000.0 / r.2.max(1) as f64)
            .collect(),
    );
    let kill_rate = median(kills.iter().map(|k| k.0 / k.1).collect());
    println!(
        "{what}: paged out {mibs:.1} MiB per run; {rate:.0} MiB/s; {per_call_ms:.2} ms per process_madvise call"
    );
    println!(
        "  baseline, killing the same process: {kill_rate:.0} MiB/s freed; page-out / kill = {:.2}",
        rate / kill_rate
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !common::real_kernel_available("pageout bench") {
        return;
    }
    // File-backed: a hot 64 MiB mapped file per workload.
    let cg = TestCgroup::create("bench-pageout", 1024);
    let (mut runs, mut kills) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let file = ColdFile::new(&format!("bench-file{i}"), MIB as usize);
        let mut w = Workload::spawn_with(
            &cg,
            "filehold",
            0,
            1,
            0,
            &[OsStr::new("--hold-file"), file.0.as_os_str()],
        );
        assert!(w.wait_ready());
        runs.push(pageout_once(&w, false));
        let mut k = Workload::spawn_with(
            &cg,
            "filehold",
            0,
            1,
            0,
            &[OsStr::new("--hold-file"), file.0.as_os_str()],
        );
        assert!(k.wait_ready());
        kills.push(kill_once(&k));
    }
    report("64 MiB file-backed", runs, kills);

    // Anonymous to zram.
    let _zram = match ZramSwap::set_up() {
        Ok(z) => z,
        Err(e) => {
            eprintln!("anon-to-zram part skipped: {e}");
            return;
        }
    };
    let (mut runs, mut kills) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut w = Workload::spawn(&cg, "anon", 0, MIB, 0);
        assert!(w.wait_ready());
        runs.push(pageout_once(&w, true));
        let mut k = Workload::spawn(&cg, "anon", 0, MIB, 0);
        assert!(k.wait_ready());
        kills.push(kill_once(&k));
    }
    report("64 MiB anonymous to zram", runs, kills);
}
