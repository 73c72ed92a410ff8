//! `lowmemd rank`: the scope's processes in the order lowmemd would pick victims, with why
//! the excluded ones are excluded.

use lowmemd::pipeline::rank::{RankContext, Ranked, rank};
use lowmemd::policy::rules;
use lowmemd::procs::printable;
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
    let scan = scope
        .proc
        .scan_with(pids, mem.swap_used_kib() > 0, rules::needs(&policy.rules));
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
        "{:>7} {:>5} {:>5} {:>9}  {:<16} {:<16} EXCLUDED",
        "PID", "ADJ", "EFF", "SIZE_MiB", "COMM", "RULE"
    )?;
    for r in ranked {
        writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>9.1}  {:<16} {:<16} {}",
            r.proc.pid,
            r.proc.oom_score_adj,
            r.proc.effective_adj,
            r.proc.size_kib() as f64 / 1024.0,
            printable(&r.proc.comm),
            r.proc.rule.as_deref().unwrap_or("-"),
            r.excluded.map(|e| e.to_string()).unwrap_or_default()
        )?;
    }
    if vanished > 0 {
        writeln!(out, "({vanished} processes exited while being read)")?;
    }
    Ok(())
}
