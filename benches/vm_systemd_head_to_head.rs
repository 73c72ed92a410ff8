//! Head to head on the systemd machine (issue 20 item 4; tests/vm/systemd.rs): Debian
//! bookworm with real systemd, a user with lingering whose apps run in `app-*.scope` units
//! under `user@1000.service`, and five guards — the kernel's OOM killer alone,
//! systemd-oomd with the defaults Fedora and Ubuntu ship, earlyoom and nohang (Debian's
//! packages, their defaults), lowmemd from the .deb with policies/desktop.toml — on four
//! cells: a runaway in one app's scope beside the user's other apps, a parallel build of
//! many mid-sized processes, a file-cache thrash the machine should ride out (all three with
//! a swap file, as Ubuntu installs), and the runaway on a machine without swap. A markdown
//! table on stdout (docs/head-to-head.md), each run on stderr; numbers to compare, not a
//! pass/fail test.
//!
//! ```sh
//! cargo deb && LOWMEMD_DEB=$(ls -t target/debian/lowmemd_*.deb | head -n 1) \
//!   VM_BENCH_RUNS=2 cargo bench --bench vm_systemd_head_to_head -- runaway
//! ```
//! Words after `--` keep the cell/guard pairs whose names contain them all;
//! `LOWMEMD_LOG_LEVEL=debug` runs lowmemd's unit at that level and keeps its whole log. Needs what the
//! systemd VM test needs (root, mmdebstrap, e2fsprogs, qemu-system-x86_64) and rustup's
//! x86_64-unknown-linux-musl target (the static lowmemd-workload: the loads and the probe).
//! The guest's side is tests/vm/systemd/bench.sh; it reports kernel OOM kills, who died and
//! who killed them (the kernel when its OOM killer named the pid, else the guard), the
//! leak's start to death, whether the user's session (user@1000.service) lived, the build's
//! and the copy's outcome, and the latency probe (`lowmemd-workload --probe` at adj -1000:
//! max, p99 and stalled time of its 50 ms ticks).

#[path = "../tests/vm/harness.rs"]
mod harness;
// The test-only parts (run, checks) are unused here: the module allows dead code itself.
#[path = "../tests/vm/systemd.rs"]
mod systemd;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use harness::Output;

const GUARDS: [(&str, &str); 5] = [
    ("kernel", "kernel OOM killer only"),
    ("systemd-oomd", "systemd-oomd 252 (Fedora/Ubuntu defaults)"),
    ("earlyoom", "earlyoom 1.7 (Debian defaults)"),
    ("nohang", "nohang 0.2 (Debian defaults)"),
    ("lowmemd", "lowmemd, desktop.toml"),
];

const CELLS: [(&str, &str); 4] = [
    (
        "runaway",
        "runaway in an app scope, 768 MiB + 384 MiB swap file",
    ),
    ("build", "parallel build, 24 × 90 MiB jobs, 6 at a time"),
    (
        "thrash",
        "file-cache thrash, 640 MiB written and read twice",
    ),
    ("noswap", "runaway in an app scope, 768 MiB, no swap"),
];

fn get<'a>(out: &'a Output, cell: &str, key: &str) -> &'a str {
    out.results
        .get(&format!("{cell}.{key}"))
        .map_or("?", String::as_str)
}

/// One cell of one run as a table row's cells after the guard: OOM kills, died,
/// leak→death or outcome, session, probe max / p99 / stalled.
fn row(cell: &str, out: &Output) -> Vec<String> {
    let get = |key: &str| get(out, cell, key);
    let outcome = match cell {
        "build" => format!(
            "{} ok, {} killed, {} ({} ms)",
            get("build_jobs_ok"),
            get("build_jobs_killed"),
            if get("build_finished") == "yes" {
                "finished"
            } else {
                "not finished"
            },
            get("build_ms")
        ),
        "thrash" => format!(
            "{} ({} ms)",
            if get("thrash_finished") == "yes" {
                "finished"
            } else {
                "not finished"
            },
            get("thrash_ms")
        ),
        _ => get("leak_to_death_ms").to_string(),
    };
    vec![
        get("oom_kills").to_string(),
        get("died").trim().to_string(),
        outcome,
        format!(
            "{} ({} → {})",
            get("session"),
            get("user_procs_before"),
            get("user_procs_after")
        ),
        get("probe_max_ms").to_string(),
        get("probe_p99_ms").to_string(),
        get("probe_stalled_ms").to_string(),
    ]
}

fn main() {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs: usize = std::env::var("VM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let deb = read(&systemd::deb());
    let workload = read(&harness::static_bins().1);
    let script = |name: &str| read(&repo.join("tests/vm/systemd").join(name));
    // (cell, guard, run) → that cell's row; one boot per guard and run runs every cell.
    let mut rows: BTreeMap<(usize, usize, usize), Vec<String>> = BTreeMap::new();
    for (g, (guard, _)) in GUARDS.iter().enumerate() {
        let cells: Vec<usize> = (0..CELLS.len())
            .filter(|&c| {
                let name = format!("{} {guard}", CELLS[c].0);
                words.iter().all(|w| name.contains(w.as_str()))
            })
            .collect();
        if cells.is_empty() {
            continue;
        }
        let names: Vec<&str> = cells.iter().map(|&c| CELLS[c].0).collect();
        for i in 1..=runs {
            let mut env = format!("GUARD={guard}\nCELLS=\"{}\"\n", names.join(" "));
            // LOWMEMD_LOG_LEVEL=debug: lowmemd's unit logs at that level, and the guard log
            // keeps every line (where a kill's time went, and why a candidate was passed over).
            if let Ok(level) = std::env::var("LOWMEMD_LOG_LEVEL") {
                env.push_str(&format!("LOWMEMD_LOG_LEVEL={level}\n"));
            }
            let vm = systemd::SystemdVm {
                name: "systemd-bench",
                mem_mib: 768,
                files: vec![
                    ("scenario.sh", script("bench.sh")),
                    ("lib.sh", script("lib.sh")),
                    ("bench.env", env.into_bytes()),
                    ("lowmemd-workload", workload.clone()),
                    ("lowmemd.deb", deb.clone()),
                ],
                // A boot takes ~2 min under TCG on a loaded 2-core host, a cell up to ~5.
                timeout: Duration::from_secs(600 + 300 * cells.len() as u64),
            };
            match vm.try_run() {
                Ok(out) => {
                    eprintln!("{guard} run {i}: {:?}", out.results);
                    for &c in &cells {
                        let cell = CELLS[c].0;
                        let log = harness::block(&out.lines, &format!("guard-log-{cell}"));
                        let r = row(cell, &out);
                        eprintln!(
                            "{cell} {guard} run {i}: {}\n{}",
                            r.join(" | "),
                            log.join("\n")
                        );
                        rows.insert((c, g, i), r);
                    }
                    if out.results.keys().all(|k| !k.ends_with(".probe_max_ms")) {
                        eprintln!(
                            "{guard} run {i}: no probe figures; console:\n{}",
                            out.console
                        );
                    }
                }
                Err(e) => {
                    eprintln!("{guard} run {i}: {e}");
                    for &c in &cells {
                        let first = e.lines().next().unwrap_or("").to_string();
                        rows.insert((c, g, i), vec![format!("run failed: {first}")]);
                    }
                }
            }
        }
    }
    println!(
        "\n{runs} runs each, {} accelerator, Debian bookworm (kernel 6.1, systemd 252).\n",
        harness::accel()
    );
    println!(
        "| cell | guard | run | kernel OOM kills | died (killer) | leak → death, ms / outcome | user session (its processes before → after) | probe max, ms | probe p99, ms | probe stalled, ms |"
    );
    println!("|---|---|---:|---:|---|---|---|---:|---:|---:|");
    for ((c, g, i), r) in rows {
        println!(
            "| {} | {} | {i} | {} |",
            CELLS[c].1,
            GUARDS[g].1,
            r.join(" | ")
        );
    }
}
