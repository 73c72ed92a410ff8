//! The records of actions, built from what the pipeline reports: one kill or page-out
//! record per action for the event log and `/status`, and the log line that says it to the
//! journal or stderr. Field names and journal fields are a public interface (README).

use serde::Serialize;

use crate::pipeline::outcome::{Ending, Kill, Pageout};
use crate::pipeline::rank::RankedProc;
use crate::policy::decide::Decision;
use crate::procs::printable;

/// Whom an action was taken on: the victim as ranked (kill and page-out records share it).
#[derive(Debug, Clone, Serialize)]
pub struct Victim {
    pub pid: i32,
    pub comm: String,
    pub oom_score_adj: i16,
    /// The adj ranking used, after the policy's rules.
    pub effective_adj: i16,
    /// The rule that matched the victim, if any.
    pub rule: Option<String>,
    /// Registered over the lmkd socket.
    pub registered: bool,
    /// The uid it was registered under; null when not registered.
    pub registered_uid: Option<u32>,
    /// Its owner (effective uid), read right before the action.
    pub uid: Option<u32>,
    /// Its cgroup in the unified hierarchy (full path), read right before the action.
    pub cgroup: Option<String>,
    /// systemd's ManagedOOMPreference= marking that applied (`avoid`, `omit`), if read.
    pub marking: Option<&'static str>,
    /// Where the level ranks by owner (`rank_by`): the owner it was picked for (a cgroup
    /// path or `uid N`) and what that owner's candidates of its adj band held together
    /// (RSS + swap) when ranked; null under per-process ranking.
    pub owner: Option<String>,
    pub owner_kib: Option<u64>,
}

impl From<&RankedProc> for Victim {
    fn from(p: &RankedProc) -> Self {
        Victim {
            pid: p.pid,
            comm: p.comm.clone(),
            oom_score_adj: p.oom_score_adj,
            effective_adj: p.effective_adj,
            rule: p.rule.clone(),
            registered: p.registered.is_some(),
            registered_uid: p.registered.map(|r| r.uid),
            uid: p.uid,
            cgroup: p.cgroup.clone(),
            marking: p.marking.as_ref().map(|m| m.preference.as_str()),
            owner: p.owner.clone(),
            owner_kib: p.owner.as_ref().and(p.owner_kib),
        }
    }
}

/// Why: the reason name, the condition that fired (in words, with what was measured) and
/// the policy level that decided.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub reason: &'static str,
    pub condition: String,
    pub level: String,
}

impl Cause {
    pub fn new(decision: &Decision, level: &str) -> Self {
        Cause {
            reason: decision.reason.as_str(),
            condition: decision.fired.to_string(),
            level: level.to_string(),
        }
    }
}

/// One action. Field names are a public interface (documented in docs/reference.md).
#[derive(Debug, Clone, Serialize)]
pub struct ActionEvent {
    /// Wall-clock time of the signal (or would-be signal), ms since the Unix epoch.
    pub ts_ms: u64,
    /// `kill` or `would_kill` (dry run).
    pub action: &'static str,
    #[serde(flatten)]
    pub victim: Victim,
    pub rss_kib: u64,
    pub swap_kib: u64,
    #[serde(flatten)]
    pub cause: Cause,
    /// The scope's available memory (RAM) in the sample that decided.
    pub scope_available_kib: u64,
    pub scope_total_kib: u64,
    /// What swap could still take in that sample, in RAM it frees (zram: free slots times
    /// 1 − 1/ratio). A memory condition judged `scope_available_kib + swap_headroom_kib`
    /// unless the policy says `count_swap = false`.
    pub swap_headroom_kib: u64,
    /// Available memory re-read right before the signal.
    pub available_at_kill_kib: u64,
    /// The rest of the triggering snapshot: PSI avg10 of the scope (read right after the
    /// signal, so it never delays it; null without PSI), free swap (zram-aware) and the
    /// thrashing measure (null when the policy does not ask for it).
    pub psi_some_avg10: Option<f64>,
    pub psi_full_avg10: Option<f64>,
    pub swap_free_kib: u64,
    pub thrashing_pct: Option<f64>,
    /// The pidfd became readable before the deadline.
    pub exit_confirmed: bool,
    /// From the signal to the pidfd readable; null when not confirmed or a dry run.
    pub kill_to_exit_ms: Option<u64>,
    /// From the sample that crossed the threshold to the signal.
    pub sample_to_kill_ms: u64,
    /// Available memory measured after the exit was confirmed (informational: the kernel
    /// may report freed pages late).
    pub available_after_kib: Option<u64>,
    /// Processes killed: 1, or every member of the victim's cgroup (`kill = "cgroup"`).
    pub processes: u32,
    /// A whole-cgroup kill: its members' summed resident memory before the signal.
    pub cgroup_rss_kib: Option<u64>,
}

/// A level started holding: what `on = "level"` hooks get.
#[derive(Debug, Clone, Serialize)]
pub struct LevelEvent {
    pub ts_ms: u64,
    /// `level`.
    pub action: &'static str,
    pub level: String,
    pub scope_available_kib: u64,
    pub scope_total_kib: u64,
    pub swap_free_kib: u64,
    pub swap_headroom_kib: u64,
}

/// One page-out. Field names are a public interface (documented in docs/reference.md).
#[derive(Debug, Clone, Serialize)]
pub struct PageoutEvent {
    pub ts_ms: u64,
    /// `pageout`, or `would_pageout` in a dry run.
    pub action: &'static str,
    #[serde(flatten)]
    pub victim: Victim,
    /// Resident size of the ranges asked for (from smaps), this event.
    pub requested_kib: u64,
    /// Resident memory the process lost, measured (RssAnon + RssFile + RssShmem before −
    /// after): what the kernel really reclaimed, not what it accepted.
    pub freed_kib: u64,
    pub rss_anon_before_kib: u64,
    pub rss_anon_after_kib: u64,
    pub rss_file_before_kib: u64,
    pub rss_file_after_kib: u64,
    /// Growth of the process's swapped-out memory (anonymous pages sent to swap).
    pub swap_delta_kib: u64,
    /// The scope's available memory before and after.
    pub scope_available_before_kib: u64,
    pub scope_available_after_kib: Option<u64>,
    /// More of this process is left for the next event (the per-event cap was reached).
    pub unfinished: bool,
    /// Stopped part-way because memory fell to a more severe level meanwhile.
    pub interrupted: bool,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub cause: Cause,
}

impl ActionEvent {
    /// The record of a kill (or a dry run's would-be kill).
    pub fn from_kill(k: &Kill<'_>) -> Self {
        let dry_run = k.ending == Ending::DryRun;
        ActionEvent {
            ts_ms: k.signal_wall_ms,
            action: if dry_run { "would_kill" } else { "kill" },
            victim: Victim::from(k.victim),
            rss_kib: k.victim.rss_kib,
            swap_kib: k.victim.swap_kib,
            cause: Cause::new(k.decision, &k.level.name),
            scope_available_kib: k.sample.mem.available_kib,
            scope_total_kib: k.sample.mem.total_kib,
            swap_headroom_kib: k.sample.mem.swap_headroom_kib,
            available_at_kill_kib: k.available_at_kill_kib,
            psi_some_avg10: k.psi_avg10.map(|p| p.0),
            psi_full_avg10: k.psi_avg10.map(|p| p.1),
            swap_free_kib: k.sample.mem.swap_free_kib,
            thrashing_pct: k.sample.thrashing_pct,
            exit_confirmed: matches!(k.ending, Ending::Exited { .. }),
            kill_to_exit_ms: match k.ending {
                Ending::Exited { signal_to_exit_ms } => Some(signal_to_exit_ms),
                _ => None,
            },
            sample_to_kill_ms: k.sample_to_signal_ms,
            available_after_kib: k.available_after_kib,
            processes: k.group.as_ref().map_or(1, |g| g.processes),
            cgroup_rss_kib: k.group.as_ref().map(|g| g.rss_kib),
        }
    }
}

impl PageoutEvent {
    /// The record of a page-out (or a dry run's plan of one).
    pub fn from_pageout(p: &Pageout<'_>) -> Self {
        PageoutEvent {
            ts_ms: p.wall_ms,
            action: if p.dry_run {
                "would_pageout"
            } else {
                "pageout"
            },
            victim: Victim::from(p.victim),
            requested_kib: p.requested_kib,
            freed_kib: p.freed_kib,
            rss_anon_before_kib: p.before.rss_anon_kib,
            rss_anon_after_kib: p.after.rss_anon_kib,
            rss_file_before_kib: p.before.rss_file_kib,
            rss_file_after_kib: p.after.rss_file_kib,
            swap_delta_kib: p.after.swap_kib.saturating_sub(p.before.swap_kib),
            scope_available_before_kib: p.scope_available_before_kib,
            scope_available_after_kib: p.scope_available_after_kib,
            unfinished: p.unfinished,
            interrupted: p.interrupted,
            duration_ms: p.duration_ms,
            cause: Cause::new(p.decision, &p.level.name),
        }
    }
}

/// Says a kill in one line, with the journal fields LOWMEMD_ACTION, _PID, _COMM, _REASON
/// and _LEVEL.
pub fn log_kill(k: &Kill<'_>, event: &ActionEvent) {
    let p = k.victim;
    let level = k.level.name.as_str();
    let comm = printable(&p.comm);
    let who = format!(
        "pid {} ({comm}) adj {}{} size {} KiB{}",
        p.pid,
        p.effective_adj,
        p.rule
            .as_ref()
            .map(|r| format!(" by rule {r}"))
            .unwrap_or_default(),
        p.size_kib(),
        match (&p.owner, p.owner_kib) {
            (Some(o), Some(k)) => format!(" of {} holding {k} KiB", printable(o)),
            _ => String::new(),
        }
    );
    let who = match &k.group {
        Some(g) => format!(
            "cgroup {} ({} processes, {} KiB) for {who}",
            g.cgroup, g.processes, g.rss_kib
        ),
        None => who,
    };
    let (reason, condition) = (event.cause.reason, &event.cause.condition);
    let ended = match k.ending {
        Ending::DryRun => {
            log::warn!(
                lowmemd_action = event.action, lowmemd_pid = p.pid, lowmemd_comm = comm.as_ref(),
                lowmemd_reason = reason, lowmemd_level = level;
                "would kill {who}: {reason} at level {level} ({condition})"
            );
            return;
        }
        Ending::Exited { signal_to_exit_ms } => format!(
            "exited {signal_to_exit_ms} ms after the signal, {} ms after the sample",
            k.sample_to_end_ms
        ),
        Ending::Unconfirmed => format!("NOT confirmed within {} ms", k.level.wait_ms),
    };
    log::warn!(
        lowmemd_action = event.action, lowmemd_pid = p.pid, lowmemd_comm = comm.as_ref(),
        lowmemd_reason = reason, lowmemd_level = level;
        "killed {who}: {reason} at level {level} ({condition}); {ended}"
    );
}

/// Says a page-out in one line, with the same journal fields as a kill.
pub fn log_pageout(p: &Pageout<'_>, event: &PageoutEvent) {
    let v = p.victim;
    let (requested_kib, freed_kib) = (p.requested_kib, p.freed_kib);
    let what = if p.dry_run {
        format!("would page out {requested_kib} KiB (dry run: nothing advised)")
    } else if p.worthless {
        format!(
            "paged out {freed_kib} KiB of {requested_kib} KiB asked: nothing worth it, not again until it grows"
        )
    } else {
        format!("paged out {freed_kib} KiB of {requested_kib} KiB asked")
    };
    let level = p.level.name.as_str();
    let comm = printable(&v.comm);
    log::warn!(
        lowmemd_action = event.action, lowmemd_pid = v.pid, lowmemd_comm = comm.as_ref(),
        lowmemd_reason = event.cause.reason, lowmemd_level = level;
        "pid {} ({comm}) adj {}: {what} in {} ms ({} at level {level}: {})",
        v.pid,
        v.effective_adj,
        event.duration_ms,
        event.cause.reason,
        event.cause.condition,
    );
}
