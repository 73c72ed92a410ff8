//! Head to head in a VM: the whole-machine scenarios of tests/vm.rs — a runaway with zram
//! swap, a finite job that RAM + zram carry (issue 24), a 256 MiB board without swap, a
//! burst of file-cache thrash — each under four guards in the busybox bed: the kernel's OOM
//! killer alone, earlyoom (Debian's package with its default arguments), lowmemd with its
//! built-in policy, lowmemd with policies/desktop.toml. The two zram scenarios run again on
//! the real systemd machine (tests/vm/systemd.rs, tests/vm/systemd/zram.sh) under the
//! kernel alone, systemd-oomd with Fedora's and Ubuntu's defaults and, in the same
//! machine, lowmemd with desktop.toml as a systemd unit: systemd-oomd needs systemd, and its rival must share
//! the machine for the comparison to be like for like. Several runs each; a markdown table
//! on stdout, each run on stderr. Numbers to compare, not a pass/fail test.
//!
//! ```sh
//! cargo bench --bench vm_head_to_head                        # everything, 3 runs each
//! VM_BENCH_RUNS=1 cargo bench --bench vm_head_to_head -- thrash desktop
//! VM_BENCH_RUNS=2 cargo bench --bench vm_head_to_head -- systemd   # the systemd machine
//! ```
//! Words after `--` keep the scenario/guard pairs whose names contain them all (scenarios
//! `runaway`, `finite`, `board`, `thrash`, `systemd-runaway`, `systemd-finite`; guards
//! `kernel`, `earlyoom`, `lowmemd-builtin`, `lowmemd-desktop`, `systemd-oomd`). Needs what
//! tests/vm.rs needs (qemu-system-x86_64, apt-get, rustup's x86_64-unknown-linux-musl
//! target; for the systemd machine root, mmdebstrap and e2fsprogs) and earlyoom:
//! /usr/bin/earlyoom when installed, else `apt-get download earlyoom` unpacked into
//! target/vm-assets/earlyoom. earlyoom is linked against glibc: it goes into the initramfs
//! with the libraries `ldd` names. systemd-oomd is `apt-get download systemd-oomd` into
//! target/vm-assets/systemd-oomd, installed in the guest with `dpkg -i` under every guard of
//! the systemd machine (the installation alone speeds the leak's zram phase up; only the
//! systemd-oomd arm starts the daemon): it must be the version of the image's systemd (both
//! are bookworm's current one when the image is built).
//! `LOWMEMD_LOG_LEVEL=debug` runs lowmemd's unit at that log level (the console then shows
//! where a kill's time went); `LOWMEMD_BIN=PATH` puts that static lowmemd in the systemd
//! machine instead of this tree's (the previous design beside the current one).
//!
//! Per run the guest reports (tests/vm/lib.sh): kernel OOM kills (`oom_kill` in
//! /proc/vmstat), who died (name/adj/killer, killer "kernel" when the kernel's OOM killer
//! named the pid), the leak's (or the finite job's) start-to-death time, the most swap in use
//! (for a leak: at its kill, to 100 ms; for the finite job: what zram carried), and the
//! latency probe (`lowmemd-workload
//! --probe` at adj -1000: every 50 ms it reads its 8 MiB and a small file; max and p99 of how
//! late a tick finished, and the stalled time: the sum of lateness beyond one period). Each
//! run's line on stderr starts with the host's load average (/proc/loadavg) when it began;
//! its whole console (lowmemd's event log, earlyoom's or systemd-oomd's log) is kept in
//! target/vm-bench/SCENARIO-GUARD-TIME.log.

#[path = "../tests/vm/harness.rs"]
mod harness;
#[path = "../tests/vm/systemd.rs"]
mod systemd;

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

const ARMS: [Arm; 5] = [
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
        key: "systemd-oomd",
        label: "systemd-oomd 252 (Fedora/Ubuntu defaults)",
        guard: "oomd",
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

/// The busybox bed's guards; the systemd machine's.
const BUSYBOX_ARMS: &[&str] = &["kernel", "earlyoom", "lowmemd-builtin", "lowmemd-desktop"];
const SYSTEMD_ARMS: &[&str] = &["kernel", "systemd-oomd", "lowmemd-desktop"];

/// Which machine a scenario runs on.
enum Bed {
    /// The busybox initramfs of tests/vm.rs.
    Busybox(fn() -> Vm),
    /// The real systemd machine, tests/vm/systemd/zram.sh with these /vm/env.sh settings.
    Systemd(&'static [(&'static str, &'static str)]),
}

struct Scenario {
    key: &'static str,
    label: &'static str,
    bed: Bed,
    arms: &'static [&'static str],
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        key: "runaway",
        label: "runaway, 768 MiB + zram",
        bed: Bed::Busybox(harness::system_runaway),
        arms: BUSYBOX_ARMS,
    },
    Scenario {
        key: "systemd-runaway",
        label: "runaway, 768 MiB + zram, systemd machine",
        bed: Bed::Systemd(&[("SCENARIO", "runaway")]),
        arms: SYSTEMD_ARMS,
    },
    Scenario {
        key: "finite",
        label: "finite job 700 MiB, 768 MiB + zram",
        bed: Bed::Busybox(harness::finite_job),
        arms: BUSYBOX_ARMS,
    },
    Scenario {
        key: "systemd-finite",
        label: "finite job 700 MiB, 768 MiB + zram, systemd machine",
        // harness::finite_job's settings.
        bed: Bed::Systemd(&[
            ("SCENARIO", "finite"),
            ("ZRAM_MIB", "384"),
            ("JOB_MIB", "700"),
            ("HOLD_S", "20"),
        ]),
        arms: SYSTEMD_ARMS,
    },
    Scenario {
        key: "board",
        label: "board, 256 MiB, no swap",
        bed: Bed::Busybox(harness::board),
        arms: BUSYBOX_ARMS,
    },
    Scenario {
        key: "thrash",
        label: "thrash burst, 768 MiB + zram",
        bed: Bed::Busybox(harness::thrash_burst),
        arms: BUSYBOX_ARMS,
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
    /// CPU time the guard used over the whole run, ms (the systemd machine's units).
    guard_cpu_ms: Option<f64>,
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
        guard_cpu_ms: num(out, "guard_cpu_ms"),
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

/// The systemd-oomd package, downloaded once into target/vm-assets/systemd-oomd.
fn systemd_oomd_deb() -> Vec<u8> {
    let dir = harness::target_dir().join("vm-assets/systemd-oomd");
    let find = || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
    };
    if find().is_none() {
        std::fs::create_dir_all(&dir).expect("vm-assets/systemd-oomd");
        let ok = Command::new("apt-get")
            .args(["download", "-q", "systemd-oomd"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "apt-get download systemd-oomd failed (a Debian apt source?)"
        );
    }
    let deb = find().expect("no systemd-oomd .deb");
    std::fs::read(&deb).unwrap_or_else(|e| panic!("{}: {e}", deb.display()))
}

/// One boot of the systemd machine running tests/vm/systemd/zram.sh under ARM.
fn systemd_vm(
    scenario: &Scenario,
    env: &[(&str, &str)],
    arm: &Arm,
    oomd_deb: &[u8],
) -> systemd::SystemdVm {
    let (lowmemd, workload) = harness::static_bins();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut vars: Vec<(&str, &str)> = env.to_vec();
    vars.push(("GUARD", arm.guard));
    if let Some(p) = arm.policy {
        vars.push(("POLICY", p));
    }
    // LOWMEMD_LOG_LEVEL=debug: lowmemd's unit logs at that level (where a kill's time goes).
    let log_level = std::env::var("LOWMEMD_LOG_LEVEL").unwrap_or_default();
    if !log_level.is_empty() {
        vars.push(("LOWMEMD_LOG_LEVEL", &log_level));
    }
    let env_sh: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    let mut files = vec![
        ("scenario.sh", read(&root.join("tests/vm/systemd/zram.sh"))),
        ("lib.sh", read(&root.join("tests/vm/lib.sh"))),
        ("env.sh", env_sh.into_bytes()),
        ("lowmemd-workload", read(workload)),
    ];
    // systemd-oomd's package goes into every arm's machine: installing it changes the pace
    // of the leak by itself (tests/vm/systemd/zram.sh, `install_oomd`).
    files.push(("systemd-oomd.deb", oomd_deb.to_vec()));
    match arm.guard {
        "oomd" | "none" => {}
        _ => {
            // LOWMEMD_BIN: another static lowmemd in the guest (the previous design, A/B).
            let bin = std::env::var_os("LOWMEMD_BIN").map(std::path::PathBuf::from);
            files.push(("lowmemd", read(bin.as_deref().unwrap_or(lowmemd))));
            files.push((
                "lowmemd.service",
                read(&root.join("deploy/systemd/lowmemd.service")),
            ));
            if let Some(p) = arm.policy {
                files.push((p, read(&root.join("policies").join(p))));
            }
        }
    }
    systemd::SystemdVm {
        name: scenario.key,
        mem_mib: 768,
        files,
        // ~30 s to multi-user.target under TCG on a quiet host (150 s at load 14), then a
        // scenario of up to ~4 min.
        timeout: std::time::Duration::from_secs(600),
    }
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
        let lived = if scenario.key.ends_with("finite") {
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
        "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
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
        figure(|r| r.guard_cpu_ms),
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
        s.arms.contains(&a.key) && words.iter().all(|w| name.contains(w.as_str()))
    };
    let any = |guard: &str| {
        ARMS.iter()
            .any(|a| a.guard == guard && SCENARIOS.iter().any(|s| selected(s, a)))
    };
    let earlyoom = any("earlyoom").then(earlyoom_files).unwrap_or_default();
    let systemd_bed = SCENARIOS
        .iter()
        .any(|s| matches!(s.bed, Bed::Systemd(_)) && ARMS.iter().any(|a| selected(s, a)));
    let oomd_deb = systemd_bed.then(systemd_oomd_deb).unwrap_or_default();
    let consoles = harness::target_dir().join("vm-bench");
    std::fs::create_dir_all(&consoles).expect("target/vm-bench");
    let mut rows = Vec::new();
    for s in &SCENARIOS {
        for a in ARMS.iter().filter(|a| selected(s, a)) {
            let mut results = Vec::new();
            for i in 1..=runs {
                let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
                let load = load
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                let tried = match &s.bed {
                    Bed::Busybox(vm) => {
                        let mut vm = vm().guard(a.guard, a.policy);
                        if a.guard == "earlyoom" {
                            vm.files = earlyoom.clone();
                        }
                        vm.try_run()
                    }
                    Bed::Systemd(env) => systemd_vm(s, env, a, &oomd_deb).try_run(),
                };
                // Every console kept, for the event log of a kill or oomd's journal.
                let log = consoles.join(format!(
                    "{}-{}-{}.log",
                    s.key,
                    a.key,
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                let kept = match &tried {
                    Ok(out) => std::fs::write(&log, &out.console),
                    Err(e) => std::fs::write(&log, e),
                };
                if let Err(e) = kept {
                    eprintln!("{}: {e}", log.display());
                }
                let run = match tried {
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
                    "[load {load}] {} / {} run {i}: oom_kills={:?} died={:?} leak_ms={:?}{} swap_mib={:?} probe max={:?} p99={:?} stalled={:?}{}",
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
        "| scenario | guard | kernel OOM kills per run | died | leak/job start → death, ms | most swap in use (leak: at the kill), MiB | probe max, ms | probe p99, ms | probe stalled, ms | guard CPU, ms |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
