//! What the pipeline tells the rest of the daemon: one typed fact per thing that happened
//! (a sample decided on, a ranking, a skipped victim, a kill, a page-out, a freeze and its
//! thaw), handed to an
//! [`Observer`]. The pipeline knows nothing of metrics, event logs or journald: `report`
//! implements the observer and builds the records, so imports point one way.

use std::time::Duration;

use crate::policy::decide::Decision;
use crate::policy::{Level, Policy};
use crate::procs::MemDetail;
use crate::sample::{MemSnapshot, Sample};

use super::freeze::frozen::Thaw;
use super::freeze::gates::Gate;
use super::rank::RankedProc;

/// Why a ranked victim was not acted on: the `why` label of
/// `lowmemd_victims_skipped_total`. The strings are a public interface: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Its pid now belongs to another process (a different starttime).
    IdentityChanged,
    /// It exited before it could be pinned.
    Vanished,
    /// It left the scope's cgroup.
    OutOfScope,
    /// An exec since ranking changed what the policy's rules say of it.
    RuleChanged,
    /// The kernel refused the signal.
    Denied,
    /// SIGKILL is already pending: it is dying (or frozen), another signal frees nothing.
    /// At a kill level its memory is reaped (or its exit waited for) instead.
    Dying,
}

impl Skip {
    pub const ALL: [Skip; 6] = [
        Skip::IdentityChanged,
        Skip::Vanished,
        Skip::OutOfScope,
        Skip::RuleChanged,
        Skip::Denied,
        Skip::Dying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::IdentityChanged => "identity_changed",
            Skip::Vanished => "vanished",
            Skip::OutOfScope => "out_of_scope",
            Skip::RuleChanged => "rule_changed",
            Skip::Denied => "denied",
            Skip::Dying => "dying",
        }
    }

    /// In words, for the warning when every candidate was skipped for this reason.
    pub fn explain(self) -> &'static str {
        match self {
            Skip::IdentityChanged => "their pids were reused by other processes",
            Skip::Vanished => "they exited before they could be pinned",
            Skip::OutOfScope => {
                "they were not inside the scope's cgroup by /proc/PID/cgroup (is the scope named as there?)"
            }
            Skip::RuleChanged => "the policy's rules no longer allow them",
            Skip::Denied => "the kernel refused the signal (CAP_KILL?)",
            Skip::Dying => "SIGKILL was already pending for each (frozen or stuck exiting)",
        }
    }
}

/// How a kill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A dry run: nothing was signalled.
    DryRun,
    /// The pidfd became readable this long after the signal.
    Exited { signal_to_exit_ms: u64 },
    /// Still there at the deadline.
    Unconfirmed,
}

/// A kill of the victim's whole cgroup (`kill = "cgroup"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKill {
    /// The cgroup in the unified hierarchy, full path.
    pub cgroup: String,
    /// Its processes, the victim included, each pinned and waited for.
    pub processes: u32,
    /// Their summed resident memory, read right before the signal.
    pub rss_kib: u64,
}

/// One kill (or, in a dry run, one the pipeline would have made), after it ended.
#[derive(Debug)]
pub struct Kill<'a> {
    pub victim: &'a RankedProc,
    pub decision: &'a Decision,
    pub level: &'a Level,
    /// The sample that decided.
    pub sample: &'a Sample,
    /// Available memory re-read right before the signal.
    pub available_at_kill_kib: u64,
    /// Wall-clock time of the signal, ms since the Unix epoch.
    pub signal_wall_ms: u64,
    /// From the sample to the signal.
    pub sample_to_signal_ms: u64,
    /// From the sample to the end (the exit seen, or the deadline).
    pub sample_to_end_ms: u64,
    /// PSI `some` and `full` avg10 of the scope, read right after the signal.
    pub psi_avg10: Option<(f64, f64)>,
    pub ending: Ending,
    /// Available memory read after the end.
    pub available_after_kib: Option<u64>,
    /// The victim's whole cgroup was killed with it; `None`: the victim alone.
    pub group: Option<GroupKill>,
}

impl<'a> Kill<'a> {
    /// The facts known when the signal goes (or would go) at `signal_ms`; what the wait
    /// measures starts empty, as for a dry run.
    pub fn at_signal(
        victim: &'a RankedProc,
        decision: &'a Decision,
        level: &'a Level,
        sample: &'a Sample,
        fresh: &Sample,
        signal_ms: u64,
    ) -> Self {
        Kill {
            victim,
            decision,
            level,
            sample,
            available_at_kill_kib: fresh.mem.available_kib,
            signal_wall_ms: 0,
            sample_to_signal_ms: signal_ms.saturating_sub(sample.at_ms),
            sample_to_end_ms: 0,
            psi_avg10: None,
            ending: Ending::DryRun,
            available_after_kib: None,
            group: None,
        }
    }
}

/// One page-out (or, in a dry run, its plan), after it ended.
#[derive(Debug)]
pub struct Pageout<'a> {
    pub victim: &'a RankedProc,
    pub decision: &'a Decision,
    pub level: &'a Level,
    pub dry_run: bool,
    /// Wall-clock time of the end, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Resident size of the ranges asked for this event (from smaps).
    pub requested_kib: u64,
    /// Resident memory the process lost, measured from its status before and after.
    pub freed_kib: u64,
    /// Less than a page-out is worth: the process is not tried again until it grows.
    pub worthless: bool,
    pub before: MemDetail,
    pub after: MemDetail,
    pub scope_available_before_kib: u64,
    pub scope_available_after_kib: Option<u64>,
    /// More of this process is left for the next event (the per-event cap was reached).
    pub unfinished: bool,
    /// Stopped part-way because memory fell to a more severe level meanwhile.
    pub interrupted: bool,
    pub duration_ms: u64,
}

/// An app frozen by a freeze level (or, in a dry run, one that would have been), and what
/// paging it out returned.
#[derive(Debug)]
pub struct Freeze<'a> {
    /// The process that picked it.
    pub victim: &'a RankedProc,
    pub decision: &'a Decision,
    pub level: &'a Level,
    /// Its cgroup, or `pid N` for a process stopped alone (`stopped`).
    pub cgroup: &'a str,
    pub stopped: bool,
    pub processes: u32,
    /// Resident size of its processes before.
    pub rss_kib: u64,
    pub dry_run: bool,
    pub wall_ms: u64,
    /// Processes paged out, and each gate that skipped (or narrowed) one.
    pub compacted: u32,
    pub gates: &'a [Gate],
    /// Resident memory saved, RAM swap took for it, and the difference: what it returned.
    pub resident_saved_kib: u64,
    pub swap_ram_growth_kib: u64,
    pub freed_kib: u64,
    pub scope_available_before_kib: u64,
    pub duration_ms: u64,
}

/// An app thawed.
#[derive(Debug)]
pub struct Thawed<'a> {
    pub cgroup: &'a str,
    /// The level that froze it.
    pub level: &'a str,
    pub reason: Thaw,
    pub frozen_for_ms: u64,
    /// What freezing it had returned.
    pub freed_kib: u64,
    pub wall_ms: u64,
}

/// Where the pipeline's facts go. Implemented by `report`; called on the pipeline thread,
/// so an implementation must not block.
pub trait Observer: Send {
    /// A sample the pipeline decided on: its memory and the level it fell in, if any.
    fn sampled(&self, mem: &MemSnapshot, level: Option<&str>, policy: &Policy);
    /// A decision dropped because memory recovered before the action.
    fn recovered(&self);
    /// A ranking of the scope: how long listing, reading and ranking took, and how many
    /// candidates it found.
    fn ranked(&self, took: Duration, candidates: usize);
    /// A ranked victim not acted on.
    fn skipped(&self, why: Skip);
    fn killed(&self, kill: &Kill<'_>);
    fn paged_out(&self, pageout: &Pageout<'_>);
    fn froze(&self, freeze: &Freeze<'_>);
    fn thawed(&self, thaw: &Thawed<'_>);
}
