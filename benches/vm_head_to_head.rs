//! Head to head in a VM: the whole-machine scenarios of tests/vm.rs — a runaway with zram
//! swap, a finite job that RAM + zram carry (issue 24), a 256 MiB board without swap, a
//! burst of file-cache thrash — each under four guards: the kernel's OOM killer alone, earlyoom (Debian's package with its default
//! arguments), lowmemd with its built-in policy, lowmemd with policies/desktop.toml. Several
//! runs each; a markdown table on stdout, each run on stderr. Numbers to compare, not a
//! pass/fail test.
//!
//! ```sh
//! cargo bench --bench vm_head_to_head                        # everything, 3 runs each
//! VM_BENCH_RUNS=1 cargo bench --bench vm_head_to_head -- thrash desktop
//! ```
//! Words after `--` keep the scenario/guard pairs whose names contain them all (scenarios
//! `runaway`, `finite`, `board`, `thrash`; guards `kernel`, `earlyoom`, `lowmemd-builtin`,
//! `lowmemd-desktop`). Needs what tests/vm.rs needs (qemu-system-x86_64, apt-get, rustup's
//! x86_64-unknown-linux-musl target) and earlyoom: /usr/bin/earlyoom when installed, else
//! `apt-get download earlyoom` unpacked into target/vm-assets/earlyoom. earlyoom is linked
//! against glibc: it goes into the initramfs with the libraries `ldd` names.
//!
//! Per run the guest reports (tests/vm/lib.sh): kernel OOM kills (`oom_kill` in
//! /proc/vmstat), who died (name/adj/killer, killer "kernel" when the kernel's OOM killer
//! named the pid), the leak's (or the finite job's) start-to-death time, the most swap in use
//! (for a leak: at its kill, to 100 ms; for the finite job: what zram carried), and the
//! latency probe (`lowmemd-workload
//! --probe` at adj -1000: every 50 ms it reads its 8 MiB and a small file; max and p99 of how
//! late a tick finished, and the stalled time: the sum of lateness beyond one period).

#[path = "../tests/vm/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{Output, Vm};

struct Arm {
    key: &'static str,
    label: &'static str,
    guard: &'static str,
    policy: Option<&'static str>,
}

const ARMS: [Arm; 4] = [
    Arm {
        key: "kernel",
        label: "kernel OOM killer only",
        guard: "none",
        policy: None,
    },
    Arm {
        key: "earlyoom",
        label: "earlyoom 1.7 (Debian defaults)",
        guard: "earlyoom",
        policy: None,
    },
    Arm {
        key: "lowmemd-builtin",
        label: "lowmemd, built-in policy",
        guard: "lowmemd",
        policy: None,
    },
    Arm {
        key: "lowmemd-desktop",
        label: "lowmemd, desktop.toml",
        guard: "lowmemd",
        policy: Some("desktop.toml"),
    },
];

struct Scenario {
    key: &'static str,
    label: &'static str,
    vm: fn() -> Vm,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        key: "runaway",
        label: "runaway, 768 MiB + zram",
        vm: harness::system_runaway,
    },
    Scenario {
        key: "finite",
        label: "finite job 700 MiB, 768 MiB + zram",
        vm: harness::finite_job,
    },
    Scenario {
        key: "board",
        label: "board, 256 MiB, no swap",
        vm: harness::board,
    },
    Scenario {
        key: "thrash",
        label: "thrash burst, 768 MiB + zram",
        vm: harness::thrash_burst,
    },
];

/// One run's numbers.
#[derive(Default)]
struct Run {
    failed: Option<String>,
    oom_kills: Option<i64>,
    died: Vec<String>,
    /// Leak (or finite job) start to its death, ms; None when there was none or it lived.
    leak_ms: Option<f64>,
    /// The leak survived 120 s, or the finite job was alive at the end.
    leak_survived: bool,
    /// The most swap in use during the run, MiB (for a leak: at its kill).
    swap_mib: Option<f64>,
    probe_max: Option<f64>,
    probe_p99: Option<f64>,
    probe_stalled: Option<f64>,
}

fn num(out: &Output, key: &str) -> Option<f64> {
    out.results.get(key)?.parse().ok()
}

fn measure(out: &Output) -> Run {
    let exit = out
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("--- scenario exit "))
        .unwrap_or("?");
    let failed = out
        .results
        .get("failed")
        .cloned()
        .or_else(|| (exit != "0").then(|| format!("scenario exit {exit}")));
    let mut died: Vec<String> = out
        .results
        .get("died")
        .map(|d| {
            d.split(',')
                .filter(|d| *d != "-")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // Kills of what the scenario did not spawn (the burst's dd and cat, say).
    let named =
        |comm: &str, died: &[String]| died.iter().any(|d| d.starts_with(&format!("{comm}/")));
    for k in out.kills() {
        let comm = k["comm"].as_str().unwrap_or("?");
        if !named(comm, &died) {
            died.push(format!("{comm}/{}/lowmemd", k["oom_score_adj"]));
        }
    }
    for line in out.kernel_oom.lines() {
        // "Out of memory: Killed process 123 (leak) total-vm:..."
        let comm = line
            .split_once("Killed process ")
            .and_then(|(_, r)| r.split_once('(')?.1.split_once(')'))
            .map(|(c, _)| c);
        if let Some(comm) = comm.filter(|c| !named(c, &died)) {
            died.push(format!("{comm}/?/kernel"));
        }
    }
    Run {
        failed,
        oom_kills: num(out, "oom_kill_delta").map(|v| v as i64),
        died,
        leak_ms: num(out, "leak_to_gone_ms")
            .filter(|_| !out.results.contains_key("leak_survived"))
            .or_else(|| num(out, "job_to_gone_ms")),
        leak_survived: out.results.contains_key("leak_survived")
            || out.results.get("job_alive").is_some_and(|a| a == "1"),
        swap_mib: num(out, "max_swap_used_kib").map(|k| k / 1024.0),
        probe_max: num(out, "probe_max_ms"),
        probe_p99: num(out, "probe_p99_ms"),
        probe_stalled: num(out, "probe_stalled_ms"),
    }
}

/// earlyoom and the shared libraries it loads, as initramfs files.
fn earlyoom_files() -> Vec<(&'static str, u32, Vec<u8>)> {
    let installed = PathBuf::from("/usr/bin/earlyoom");
    let bin = if installed.is_file() {
        installed
    } else {
        let dir = harness::target_dir().join("vm-assets/earlyoom");
        let bin = dir.join("usr/bin/earlyoom");
        if !bin.is_file() {
            let deb = dir.join("deb");
            std::fs::create_dir_all(&deb).expect("vm-assets/earlyoom");
            let ok = Command::new("apt-get")
                .args(["download", "-q", "earlyoom"])
                .current_dir(&deb)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "apt-get download earlyoom failed (a Debian apt source?)"
            );
            for e in std::fs::read_dir(&deb).unwrap().flatten() {
                let ok = Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(e.path())
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "dpkg-deb -x {}", e.path().display());
            }
        }
        bin
    };
    let ldd = Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap_or_else(|e| panic!("ldd {}: {e}", bin.display()));
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut files = vec![("usr/bin/earlyoom", 0o755, read(&bin))];
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
            let name: &'static str = Box::leak(lib.trim_start_matches('/').to_string().into());
            files.push((name, 0o755, read(Path::new(lib))));
        }
    }
    files
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn spread(v: Vec<f64>) -> String {
    let lo = v.iter().copied().reduce(f64::min);
    let hi = v.iter().copied().reduce(f64::max);
    match (median(v), lo, hi) {
        (Some(m), Some(lo), Some(hi)) if lo < hi => format!("{m:.0} ({lo:.0}–{hi:.0})"),
        (Some(m), _, _) => format!("{m:.0}"),
        _ => "—".to_string(),
    }
}

fn row(scenario: &Scenario, arm: &Arm, runs: &[Run]) -> String {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.failed.is_none()).collect();
    let oom: Vec<String> = ok
        .iter()
        .map(|r| r.oom_kills.map_or("?".into(), |k| k.to_string()))
        .collect();
    let mut died: BTreeMap<String, usize> = BTreeMap::new();
    for r in &ok {
        for d in &r.died {
            // name/adj/killer → "name/adj (killer)"
            let (who, by) = d.rsplit_once('/').unwrap_or((d, "?"));
            *died.entry(format!("{who} ({by})")).or_default() += 1;
        }
    }
    let died = if died.is_empty() {
        "nobody".to_string()
    } else {
        died.iter()
            .map(|(d, n)| format!("{d} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let leak = if ok.iter().all(|r| r.leak_ms.is_none() && !r.leak_survived) {
        "—".to_string()
    } else {
        let survived = ok.iter().filter(|r| r.leak_survived).count();
        let s = spread(ok.iter().filter_map(|r| r.leak_ms).collect());
        let lived = if scenario.key == "finite" {
            "lived"
        } else {
            "survived 120 s"
        };
        match (survived, s.as_str()) {
            (0, _) => s,
            (_, "—") => format!("{lived} ×{survived}"),
            _ => format!("{s}; {lived} ×{survived}"),
        }
    };
    let figure = |f: fn(&Run) -> Option<f64>| spread(ok.iter().filter_map(|r| f(r)).collect());
    let failed = runs.len() - ok.len();
    format!(
        "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
        scenario.label,
        arm.label,
        oom.join(", "),
        if failed > 0 {
            format!(" ({failed} runs failed)")
        } else {
            String::new()
        },
        died,
        leak,
        figure(|r| r.swap_mib),
        figure(|r| r.probe_max),
        figure(|r| r.probe_p99),
        figure(|r| r.probe_stalled),
    )
}

fn main() {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs: usize = std::env::var("VM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let selected = |s: &Scenario, a: &Arm| {
        let name = format!("{} {}", s.key, a.key);
        words.iter().all(|w| name.contains(w.as_str()))
    };
    let earlyoom = ARMS
        .iter()
        .any(|a| a.guard == "earlyoom" && SCENARIOS.iter().any(|s| selected(s, a)))
        .then(earlyoom_files)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for s in &SCENARIOS {
        for a in ARMS.iter().filter(|a| selected(s, a)) {
            let mut results = Vec::new();
            for i in 1..=runs {
                let mut vm = (s.vm)().guard(a.guard, a.policy);
                if a.guard == "earlyoom" {
                    vm.files = earlyoom.clone();
                }
                let run = match vm.try_run() {
                    Ok(out) => {
                        let run = measure(&out);
                        if let Some(f) = &run.failed {
                            eprintln!("{}: {f}\n{}", s.key, out.console);
                        }
                        run
                    }
                    Err(e) => {
                        // A VM that overran or died: its console is in the message.
                        eprintln!("{}: {e}", s.key);
                        Run {
                            failed: Some(e),
                            ..Run::default()
                        }
                    }
                };
                eprintln!(
                    "{} / {} run {i}: oom_kills={:?} died={:?} leak_ms={:?}{} swap_mib={:?} probe max={:?} p99={:?} stalled={:?}{}",
                    s.key,
                    a.key,
                    run.oom_kills,
                    run.died,
                    run.leak_ms,
                    if run.leak_survived { " (survived)" } else { "" },
                    run.swap_mib,
                    run.probe_max,
                    run.probe_p99,
                    run.probe_stalled,
                    run.failed
                        .as_deref()
                        .map(|f| format!(" FAILED: {}", f.lines().next().unwrap_or("")))
                        .unwrap_or_default(),
                );
                results.push(run);
            }
            rows.push(row(s, a, &results));
        }
    }
    println!(
        "\n{runs} runs each, {} accelerator. Died: name/adj (killer) ×runs. Times in ms: median (min–max) over runs.\n",
        harness::accel()
    );
    println!(
        "| scenario | guard | kernel OOM kills per run | died | leak/job start → death, ms | most swap in use (leak: at the kill), MiB | probe max, ms | probe p99, ms | probe stalled, ms |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
