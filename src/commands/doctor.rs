//! `lowmemd doctor`: what this machine offers lowmemd and what lowmemd will do here, in
//! plain words (or JSON for scripts).

use std::path::Path;

use serde::Serialize;

use lowmemd::caps::{
    CAP_IPC_LOCK, CAP_KILL, CAP_SYS_NICE, CAP_SYS_PTRACE, CAP_SYS_RESOURCE, KernelCaps,
};
use lowmemd::monitor::psi::{PsiTrigger, candidate_windows};
use lowmemd::monitor::tripwire::{self, Unavailable};
use lowmemd::policy::{Policy, PsiCondition, PsiKind};
use lowmemd::scope::Scope;
use lowmemd::scope::mounts::parse_mounts;
use lowmemd::scope::swap::SwapDevice;

use super::{CmdResult, exit, load_store, resolve_scope, stdout, write_failed};
use crate::cli::DoctorArgs;

/// CAP_FOWNER (include/uapi/linux/capability.h): lets page-out reclaim file pages of files
/// lowmemd does not own.
pub const CAP_FOWNER: u32 = 3;

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub psi: Psi,
    pub syscalls: Syscalls,
    pub cgroups: Cgroups,
    pub swap: Vec<SwapDevice>,
    pub capabilities: Vec<(String, bool)>,
    /// What lowmemd will do here, in words.
    pub plan: Vec<String>,
    /// The fallbacks in force.
    pub fallbacks: Vec<String>,
    /// False when lowmemd could not protect this machine at all.
    pub can_protect: bool,
}

#[derive(Debug, Serialize)]
pub struct Psi {
    pub present: bool,
    /// The shortest trigger window the kernel accepted from us (500 ms with
    /// CAP_SYS_RESOURCE, 2 s without), if triggers work.
    pub shortest_window_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Syscalls {
    pub pidfd_open_and_send_signal: bool,
    pub process_madvise: bool,
    pub process_mrelease: bool,
    pub madv_pageout: bool,
}

#[derive(Debug, Serialize)]
pub struct Cgroups {
    /// `v1`, `v2`, `hybrid` (v1 controllers plus a cgroup2 mount) or `none`.
    pub layout: String,
    pub memory_controller: Option<String>,
    pub cgroup2_mount: Option<String>,
}

fn shortest_psi_window() -> Option<u64> {
    let path = Path::new("/proc/pressure/memory");
    let cond = PsiCondition {
        kind: PsiKind::Some,
        stall_pct: 10.0,
    };
    // Ask for the kernel's minimum; `register` widens until accepted.
    let first = *candidate_windows(500).first()?;
    PsiTrigger::register(path, cond, first)
        .ok()
        .map(|t| t.window_ms)
}

fn cgroups() -> Cgroups {
    let mounts = std::fs::File::open("/proc/self/mountinfo")
        .ok()
        .and_then(|f| parse_mounts(std::io::BufReader::new(f)).ok())
        .unwrap_or_default();
    let v1_any = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup ")));
    let layout = match (v1_any, mounts.v2.is_some()) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "none",
    };
    let memory_controller = mounts
        .v1_memory
        .as_ref()
        .map(|(p, _)| format!("v1 at {}", p.display()))
        .or_else(|| {
            let (p, _) = mounts.v2.as_ref()?;
            let ctrls = std::fs::read_to_string(p.join("cgroup.controllers")).ok()?;
            ctrls
                .split_whitespace()
                .any(|c| c == "memory")
                .then(|| format!("v2 at {}", p.display()))
        });
    Cgroups {
        layout: layout.into(),
        memory_controller,
        cgroup2_mount: mounts.v2.map(|(p, _)| p.display().to_string()),
    }
}

/// Probes this machine and explains what lowmemd (with `policy`) will do on it.
pub fn examine(caps: &KernelCaps, policy: &Policy) -> Report {
    let psi = Psi {
        present: caps.psi,
        shortest_window_ms: if caps.psi {
            shortest_psi_window()
        } else {
            None
        },
    };
    let syscalls = Syscalls {
        pidfd_open_and_send_signal: caps.pidfd,
        process_madvise: caps.process_madvise,
        process_mrelease: caps.process_mrelease,
        madv_pageout: caps.madv_pageout,
    };
    let capabilities: Vec<(String, bool)> = [
        ("CAP_KILL", CAP_KILL),
        ("CAP_SYS_NICE", CAP_SYS_NICE),
        ("CAP_SYS_PTRACE", CAP_SYS_PTRACE),
        ("CAP_SYS_RESOURCE", CAP_SYS_RESOURCE),
        ("CAP_IPC_LOCK", CAP_IPC_LOCK),
        ("CAP_FOWNER", CAP_FOWNER),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), caps.has_cap(c)))
    .collect();
    let cgroups = cgroups();
    let can_kill = caps.has_cap(CAP_KILL) && (caps.pidfd || policy.allow_pid_kill);
    let mut plan = Vec::new();
    plan.push(match psi.shortest_window_ms {
        Some(w) => format!("watch PSI triggers (window {w} ms) and memory watermarks"),
        None => "watch memory watermarks only (polling; no PSI triggers)".into(),
    });
    if can_kill && caps.pidfd {
        plan.push(format!(
            "kill through pidfds, {}",
            if caps.process_mrelease {
                "reaping the victim's memory at once with process_mrelease"
            } else {
                "then wait for the victim to free its memory"
            }
        ));
    } else if can_kill {
        plan.push(
            "kill by pid after a starttime re-check (the policy allows it; no pidfds here)".into(),
        );
    } else {
        plan.push(format!(
            "NOT kill: {}",
            if !caps.has_cap(CAP_KILL) {
                "no CAP_KILL (run as root or grant CAP_KILL)"
            } else {
                "no pidfds, and the policy does not allow kills by pid"
            }
        ));
    }
    plan.push(match caps.pageout_unavailable() {
        None => format!(
            "page out background processes where the policy says so ({})",
            if caps.swaps.is_empty() {
                "file pages only: no swap"
            } else if caps.swaps.iter().all(|s| s.zram) {
                "file pages, and anonymous pages to zram"
            } else {
                "file pages, and anonymous pages to swap"
            }
        ),
        Some(why) => format!("not page out: {why}"),
    });
    if caps.has_cap(CAP_IPC_LOCK) {
        plan.push("lock its own memory (mlockall) so it keeps working under pressure".into());
    }
    plan.push(if caps.has_cap(CAP_SYS_NICE) {
        "run its monitor and kill path at SCHED_FIFO 1 (as lmkd), ahead of a busy machine's other work".into()
    } else {
        "run its monitor and kill path at its inherited priority: without CAP_SYS_NICE a kill may wait for the CPU under load".into()
    });
    if !caps.has_cap(CAP_SYS_RESOURCE) {
        plan.push("run with its inherited oom_score_adj: without CAP_SYS_RESOURCE it cannot set -1000 (use OOMScoreAdjust=-1000 in systemd)".into());
    }
    // Memory must be readable, and something must be able to act.
    let can_protect = Path::new("/proc/meminfo").exists() && can_kill;
    Report {
        kernel: caps.kernel_release.clone(),
        psi,
        syscalls,
        cgroups,
        swap: caps.swaps.clone(),
        capabilities,
        plan,
        fallbacks: caps.fallbacks(policy.allow_pid_kill),
        can_protect,
    }
}

/// The report in words.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    let _ = writeln!(s, "kernel:        {}", r.kernel);
    let _ = writeln!(
        s,
        "PSI:           {}{}",
        yn(r.psi.present),
        r.psi
            .shortest_window_ms
            .map(|w| format!(", shortest trigger window {w} ms"))
            .unwrap_or_default()
    );
    let c = &r.syscalls;
    let _ = writeln!(
        s,
        "syscalls:      pidfd {}, process_mrelease {}, process_madvise {}, MADV_PAGEOUT {}",
        yn(c.pidfd_open_and_send_signal),
        yn(c.process_mrelease),
        yn(c.process_madvise),
        yn(c.madv_pageout)
    );
    let _ = writeln!(
        s,
        "cgroups:       {} (memory controller: {}; cgroup2: {})",
        r.cgroups.layout,
        r.cgroups.memory_controller.as_deref().unwrap_or("none"),
        r.cgroups.cgroup2_mount.as_deref().unwrap_or("not mounted")
    );
    let swap = if r.swap.is_empty() {
        "none".to_string()
    } else {
        r.swap
            .iter()
            .map(|d| {
                format!(
                    "{} ({}, {} MiB)",
                    d.name,
                    if d.zram { "zram" } else { "disk" },
                    d.size_kib / 1024
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "swap:          {swap}");
    let caps: Vec<String> = r
        .capabilities
        .iter()
        .map(|(n, b)| format!("{n} {}", yn(*b)))
        .collect();
    let _ = writeln!(s, "capabilities:  {}", caps.join(", "));
    let _ = writeln!(s, "\nlowmemd will here:");
    for p in &r.plan {
        let _ = writeln!(s, "  - {p}");
    }
    if !r.fallbacks.is_empty() {
        let _ = writeln!(s, "fallbacks in force:");
        for f in &r.fallbacks {
            let _ = writeln!(s, "  - {f}");
        }
    }
    if !r.can_protect {
        let _ = writeln!(
            s,
            "\nlowmemd cannot protect this machine as it is (see above)."
        );
    }
    s
}

/// What lowmemd will do to the `memory.high` of a cgroup-v2 memcg scope (nothing to say
/// for the system scope or a v1 memcg, which has usage thresholds).
pub fn tripwire_plan(scope: &Scope, policy: &Policy) -> Option<String> {
    let c = match tripwire::eligible(scope, policy.memory_high_tripwire) {
        Ok(c) => c,
        Err(Unavailable::NotV2) => return None,
        Err(why) => {
            return Some(format!(
                "not set a memory.high tripwire: {why}; poll the memcg's memory instead"
            ));
        }
    };
    let high = c.memcg_dir.join("memory.high");
    let now = std::fs::read_to_string(&high).ok()?.trim().to_owned();
    if now != "max" {
        let why = Unavailable::Foreign {
            path: high,
            value: now,
        };
        return Some(format!(
            "not set a memory.high tripwire: {why}; poll the memcg's memory instead"
        ));
    }
    let total = scope.read_memory().ok()?.total_kib;
    let pcts: Vec<f64> = policy.watermarks(total).iter().map(|w| w.pct).collect();
    let page_kib = (rustix::param::page_size() as u64 / 1024).max(1);
    let bound = tripwire::next_bound(None, total, 0, &pcts, page_kib, false)?;
    let dir = tripwire::record::runtime_dir(std::env::var_os("RUNTIME_DIRECTORY").as_deref());
    Some(format!(
        "set {} to {} MiB (where the highest watermark could first be reached) while usage is below it, so that the kernel wakes lowmemd; lifted back to max when crossed and on exit, put back at the next start after a crash (remembered in {}); memory_high_tripwire = false turns it off",
        high.display(),
        bound / 1024,
        dir.display()
    ))
}

pub fn run(args: &DoctorArgs) -> CmdResult {
    let policy = load_store(&args.policy)?.get();
    let mut caps = KernelCaps::probe();
    caps.pretend_missing(&args.pretend_missing)
        .map_err(|e| (exit::USAGE, format!("--pretend-missing: {e}")))?;
    let mut report = examine(&caps, &policy);
    if args.scope.cgroup.is_some() || policy.scope.is_some() {
        match resolve_scope(&args.scope, &policy) {
            Ok(scope) => report.plan.extend(tripwire_plan(&scope, &policy)),
            Err((_, e)) => report.plan.push(format!("not find its scope: {e}")),
        }
    }
    let mut out = stdout();
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| (exit::RUNTIME, e.to_string()))?;
        writeln!(out, "{text}")
    } else {
        write!(out, "{}", render(&report))
    }
    .and_then(|()| out.flush())
    .map_err(write_failed("stdout"))?;
    if !report.can_protect {
        return Err((
            exit::RUNTIME,
            "lowmemd could not protect this machine as it is".into(),
        ));
    }
    Ok(())
}
