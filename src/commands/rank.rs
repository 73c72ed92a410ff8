//! `lowmemd rank`: the scope's processes in the order lowmemd would pick victims, with why
//! the excluded ones are excluded, each with its cgroup and the cgroup marking or rule that
//! applies.

use lowmemd::pipeline::rank::{RankContext, Ranked, rank};
use lowmemd::policy::rules;
use lowmemd::procs::{Needs, printable};
use lowmemd::sample::MemSnapshot;
use lowmemd::scope::Scope;

use super::{CmdResult, exit, load_store, resolve_scope};
use crate::cli::RankArgs;

pub fn run(args: &RankArgs) -> CmdResult {
    let policy = load_store(&args.policy)?.get();
    let scope = resolve_scope(&args.scope, &policy)?;
    let pids = scope.pids().map_err(|e| (exit::RUNTIME, e.to_string()))?;
    let mem = scope
        .read_memory()
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    // The cgroup and its marking are shown whatever the rules need.
    let shown = Needs {
        cgroup: true,
        marking: true,
        ..Default::default()
    };
    let needs = rules::needs(&policy.rules).union(shown);
    let scan = scope.proc.scan_with(pids, mem.swap_used_kib() > 0, needs);
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        rules: &policy.rules,
        ..Default::default()
    };
    let ranked = rank(scan.procs, &ctx);
    let mut out = std::io::stdout().lock();
    // A closed stdout (`lowmemd rank | head`) is the reader's choice, not our error.
    match print_rank(&mut out, args.json, &scope, &mem, &ranked, scan.vanished) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err((exit::RUNTIME, e.to_string())),
        _ => Ok(()),
    }
}

fn print_rank(
    out: &mut impl std::io::Write,
    json: bool,
    scope: &Scope,
    mem: &MemSnapshot,
    ranked: &[Ranked],
    vanished: usize,
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, ranked)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "scope {}: {} of {} MiB available ({:.1} %)",
        scope.describe(),
        mem.available_kib / 1024,
        mem.total_kib / 1024,
        mem.available_pct()
    )?;
    writeln!(
        out,
        "{:>7} {:>5} {:>5} {:>9}  {:<16} {:<CG$} {:<6} {:<16} EXCLUDED",
        "PID", "ADJ", "EFF", "SIZE_MiB", "COMM", "CGROUP", "MARK", "RULE"
    )?;
    for r in ranked {
        let p = &r.proc;
        let cgroup = p
            .cgroup
            .as_deref()
            .map_or("-".into(), |c| short_cgroup(c, CG));
        writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>9.1}  {:<16} {:<CG$} {:<6} {:<16} {}",
            p.pid,
            p.oom_score_adj,
            p.effective_adj,
            p.size_kib() as f64 / 1024.0,
            printable(&p.comm),
            printable(&cgroup),
            p.marking.as_ref().map_or("-", |m| m.preference.as_str()),
            p.rule.as_deref().unwrap_or("-"),
            r.excluded.map(|e| e.to_string()).unwrap_or_default()
        )?;
    }
    if vanished > 0 {
        writeln!(out, "({vanished} processes exited while being read)")?;
    }
    Ok(())
}

/// Width of the CGROUP column.
const CG: usize = 28;

/// A cgroup path in at most `width` characters: its last components (where the unit is),
/// behind `…/` when the front was cut; `--json` has the full path.
fn short_cgroup(path: &str, width: usize) -> String {
    if path.chars().count() <= width {
        return path.to_string();
    }
    let mut tail = String::new();
    for comp in path.rsplit('/').filter(|c| !c.is_empty()) {
        let next = if tail.is_empty() {
            comp.to_string()
        } else {
            format!("{comp}/{tail}")
        };
        if next.chars().count() + 2 > width {
            break;
        }
        tail = next;
    }
    if tail.is_empty() {
        // One component longer than the column: keep its end (a scope's unique suffix).
        let last = path.rsplit('/').next().unwrap_or(path);
        let keep: String = last.chars().rev().take(width - 1).collect();
        return format!("…{}", keep.chars().rev().collect::<String>());
    }
    format!("…/{tail}")
}

#[cfg(test)]
mod tests {
    use super::short_cgroup;

    #[test]
    fn cgroups_shorten_to_their_last_components() {
        assert_eq!(short_cgroup("/box/app", 28), "/box/app");
        let app = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope";
        assert_eq!(short_cgroup(app, 28), "…/app-firefox.scope");
        assert_eq!(short_cgroup(app, 40), "…/app.slice/app-firefox.scope");
        let long = "/a/app-gnome-org.gnome.Terminal-123456.scope";
        let s = short_cgroup(long, 20);
        assert_eq!(s.chars().count(), 20);
        assert!(s.starts_with('…') && s.ends_with("123456.scope"), "{s}");
    }
}
