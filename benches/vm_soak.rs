//! The soak in a VM (issue 21 item 5): lowmemd under policies/embedded.toml in one 768 MiB
//! machine with zram for an hour of 30 s cycles — cached apps topped up, a runaway, a burst
//! of file-cache thrash (tests/vm/soak.sh) — sampled every cycle: the daemon's RSS, open
//! fds, threads and CPU time, kill latency (the event log's `sample_to_kill_ms`), its kills
//! and page-outs, the kernel's OOM kills. A markdown table per 10 minutes on stdout, every
//! cycle on stderr, then the checks tests/vm.rs makes on its 10-minute version. Numbers for
//! docs/benchmarks.md, not a pass/fail test.
//!
//! ```sh
//! cargo bench --bench vm_soak                    # an hour (and ~2 min of set-up)
//! LOWMEMD_SOAK_S=600 cargo bench --bench vm_soak # the 10 minutes CI runs as a test (tests/vm.rs)
//! ```
//! Needs what tests/vm.rs needs (qemu-system-x86_64, apt-get, rustup's
//! x86_64-unknown-linux-musl target). The guest runs under TCG on two vCPUs: about one
//! host core for the hour.

#[path = "../tests/vm/harness.rs"]
mod harness;
#[path = "../tests/vm/soak.rs"]
mod soak;

/// USER_HZ: /proc/PID/stat's clock ticks on x86 Linux.
const TICKS_PER_S: u64 = 100;

fn main() {
    let soak_s = soak::duration_s(3600);
    eprintln!("soak: {soak_s} s under {}", soak::POLICY);
    let out = match soak::vm(soak_s).try_run() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("soak VM: {e}");
            std::process::exit(1);
        }
    };
    if let Some(f) = out.results.get("failed") {
        eprintln!("soak: scenario failed: {f}\n{}", out.console);
    }
    let cycles = soak::cycles(&out);
    for c in &cycles {
        eprintln!("{c:?}");
    }
    for key in [
        "thrash_file_mib",
        "thrash_files_write_ms",
        "cycles",
        "oom_kill_delta",
        "dmesg_out_of_memory",
        "lowmemd_alive",
        "fg_alive",
        "lowmemd_exit",
    ] {
        eprintln!("{key}={}", out.results.get(key).map_or("?", String::as_str));
    }
    println!(
        "\n{soak_s} s soak under {}, {} accelerator, {:.0} s wall; one row per 10 minutes.\n",
        soak::POLICY,
        harness::accel(),
        out.wall.as_secs_f64()
    );
    println!("{}", soak::table(&cycles, 600, TICKS_PER_S));
    let all: Vec<u64> = cycles.iter().flat_map(|c| c.latencies.clone()).collect();
    let pct = |p| soak::percentile(&all, p).map_or("—".into(), |v: u64| v.to_string());
    println!(
        "Whole run: {} kills, sample_to_kill_ms p50 {} / p95 {} / max {}; runaways killed by lowmemd {}/{}.",
        all.len(),
        pct(50),
        pct(95),
        pct(100),
        cycles.iter().filter(|c| c.runaway == "lowmemd").count(),
        cycles.iter().filter(|c| c.cycle > 0).count(),
    );
    for v in soak::verdicts(&out, &cycles) {
        println!("{v}");
    }
}
