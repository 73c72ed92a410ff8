//! `lowmemd rank`: the scope's processes in the order lowmemd would pick victims, with why
//! the excluded ones are excluded, each with its cgroup and the cgroup marking or rule that
//! applies, and which of them clients registered over a running daemon's lmkd socket (from
//! the snapshot that daemon publishes).

use std::path::PathBuf;

use lowmemd::pipeline::freeze::freezer;
use lowmemd::pipeline::rank::{RankContext, Ranked, rank, sort};
use lowmemd::pipeline::{group, owner};
use lowmemd::policy::{RankBy, rules};
use lowmemd::procs::{Needs, ProcRoot, printable};
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
    let needs = rules::needs(&policy.rules)
        .union(shown)
        .union(policy.owner_needs());
    let scan = scope.proc.scan_with(pids, mem.swap_used_kib() > 0, needs);
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        rules: &policy.rules,
        ..Default::default()
    };
    let mut ranked = rank(scan.procs, &ctx);
    let lmkd = super::lmkd::registrations(
        args.lmkd_socket.as_deref(),
        &scope.proc,
        &mut ranked,
        policy.candidates,
    )?;
    // As the daemon does, over the candidates left: by the policy's own `rank_by` (a level
    // may rank otherwise; `check --explain` says which).
    let scope_cgroup = scope.cgroup.as_ref().map(|c| c.name.as_str());
    owner::annotate_ranked(&mut ranked, policy.rank_by, scope_cgroup);
    sort(&mut ranked);
    if let (true, Registered::NotShown(why)) = (args.json, &lmkd) {
        eprintln!("lowmemd rank: lmkd registrations not shown: {why}");
    }
    let mut out = std::io::stdout().lock();
    let shown = Shown {
        scope: &scope,
        mem: &mem,
        count_swap: policy.count_swap,
        lmkd: &lmkd,
        vanished: scan.vanished,
        rank_by: policy.rank_by,
        frozen: frozen_cgroups(&scope.proc, &ranked),
    };
    // A closed stdout (`lowmemd rank | head`) is the reader's choice, not our error.
    match print_rank(&mut out, args.json, &shown, &ranked) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err((exit::RUNTIME, e.to_string())),
        _ => Ok(()),
    }
}

/// What `rank` knows of a daemon's lmkd registrations (`super::lmkd::registrations`;
/// without the `lmkd` feature always `Unknown`).
#[cfg_attr(not(feature = "lmkd"), allow(dead_code))]
pub enum Registered {
    /// None asked for (no --lmkd-socket) and none at the systemd unit's place.
    Unknown,
    /// `count` registrations from the snapshot at `path`, written by lowmemd pid `daemon`.
    Shown {
        path: PathBuf,
        count: usize,
        daemon: i32,
    },
    /// Asked for or found, but missing, unreadable or stale: why.
    NotShown(String),
}

/// What the table shows above and below the processes.
struct Shown<'a> {
    scope: &'a Scope,
    mem: &'a MemSnapshot,
    /// The policy counts swap as headroom.
    count_swap: bool,
    lmkd: &'a Registered,
    vanished: usize,
    /// The policy's ranking: with an owner, the table shows each candidate's owner and
    /// what the owner's candidates of its band hold together.
    rank_by: RankBy,
    /// Cgroups of candidates frozen now, with their pids.
    frozen: Vec<(String, Vec<i32>)>,
}

fn print_rank(
    out: &mut impl std::io::Write,
    json: bool,
    shown: &Shown<'_>,
    ranked: &[Ranked],
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, ranked)?;
        return writeln!(out);
    }
    let (scope, mem) = (shown.scope, shown.mem);
    writeln!(
        out,
        "scope {}: {} of {} MiB available ({:.1} %)",
        scope.describe(),
        mem.available_kib / 1024,
        mem.total_kib / 1024,
        mem.available_pct()
    )?;
    if mem.swap_total_kib > 0 {
        let judged = if shown.count_swap {
            format!(
                "the levels judge {} MiB ({:.1} %)",
                mem.headroom_kib(true) / 1024,
                mem.headroom_pct(true)
            )
        } else {
            "not counted: the policy says count_swap = false".to_string()
        };
        writeln!(
            out,
            "swap headroom {} MiB ({} of {} MiB swap free): {judged}",
            mem.swap_headroom_kib / 1024,
            mem.swap_free_kib / 1024,
            mem.swap_total_kib / 1024,
        )?;
    }
    match shown.lmkd {
        Registered::Unknown => {}
        Registered::Shown {
            path,
            count,
            daemon,
        } => writeln!(
            out,
            "lmkd registrations: {count} from {} (lowmemd pid {daemon})",
            path.display(),
        )?,
        Registered::NotShown(why) => writeln!(out, "lmkd registrations: not shown: {why}")?,
    }
    let by_owner = shown.rank_by.by_owner();
    let owner_head = if by_owner {
        writeln!(
            out,
            "victims grouped by owner ({}): the owner whose candidates of an adj band hold the most first, then its largest",
            match shown.rank_by {
                RankBy::Uid => "uid".to_string(),
                RankBy::Cgroup { depth: Some(d) } => format!("the cgroup {d} below the scope"),
                _ => "app cgroup".to_string(),
            }
        )?;
        format!("{:>9} {:<CG$} ", "OWNER_MiB", "OWNER")
    } else {
        String::new()
    };
    writeln!(
        out,
        "{:>7} {:>5} {:>5} {:>9}  {owner_head}{:<16} {:<CG$} {:<6} {:<16} {:<10} EXCLUDED",
        "PID", "ADJ", "EFF", "SIZE_MiB", "COMM", "CGROUP", "MARK", "RULE", "REGISTERED"
    )?;
    for r in ranked {
        let p = &r.proc;
        let owner = if by_owner {
            let total = p
                .owner_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            let name = p
                .owner
                .as_deref()
                .map_or("-".into(), |o| short_cgroup(o, CG));
            format!("{total:>9} {:<CG$} ", printable(&name))
        } else {
            String::new()
        };
        let cgroup = p
            .cgroup
            .as_deref()
            .map_or("-".into(), |c| short_cgroup(c, CG));
        let registered = p.registered.map_or("-".into(), |r| match r.owner_pid {
            Some(pid) => format!("by {pid}"),
            None => "unowned".into(),
        });
        writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>9.1}  {owner}{:<16} {:<CG$} {:<6} {:<16} {:<10} {}",
            p.pid,
            p.oom_score_adj,
            p.effective_adj,
            p.size_kib() as f64 / 1024.0,
            printable(&p.comm),
            printable(&cgroup),
            p.marking.as_ref().map_or("-", |m| m.preference.as_str()),
            match (p.rule.as_deref(), p.owner_last) {
                // After this uid's other candidates only (a rule or a user's own marking).
                (Some(r), Some(u)) => format!("{r} (uid {u} last)"),
                (r, _) => r.unwrap_or("-").to_string(),
            },
            registered,
            r.excluded.map(|e| e.to_string()).unwrap_or_default()
        )?;
    }
    for (cgroup, pids) in &shown.frozen {
        let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
        writeln!(
            out,
            "frozen: {} (pids {}): still candidates; a kill reaches them frozen",
            printable(cgroup),
            pids.join(", ")
        )?;
    }
    let vanished = shown.vanished;
    if vanished > 0 {
        writeln!(out, "({vanished} processes exited while being read)")?;
    }
    Ok(())
}

/// The cgroups of `ranked` frozen now (by lowmemd's freeze tier or anyone), each with its
/// ranked pids.
fn frozen_cgroups(proc: &ProcRoot, ranked: &[Ranked]) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    for r in ranked {
        let Some(c) = r.proc.cgroup.as_deref() else {
            continue;
        };
        if let Some(entry) = out.iter_mut().find(|(name, _)| name == c) {
            entry.1.push(r.proc.pid);
            continue;
        }
        let frozen = group::dir_of(proc, c).is_ok_and(|d| freezer::is_frozen(&d).unwrap_or(false));
        if frozen {
            out.push((c.to_string(), vec![r.proc.pid]));
        }
    }
    out
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
