//! What the pipeline asks of the running system, behind one trait: the clock, the scope's
//! memory and processes, pinning, the signal, the wait, page-out. [`System`] is the real
//! one (/proc, pidfds, process_mrelease, process_madvise); the pipeline's unit tests drive
//! its logic on a fake with a clock of its own, without root and in milliseconds.

use std::sync::Arc;

use crate::caps::KernelCaps;
use crate::clock::monotonic_ms;
use crate::procs::{Attrs, MemDetail, Needs, ProcCache, ProcError, Region, Scan};
use crate::sample::MemSnapshot;
use crate::scope::{Scope, ScopeError};

use super::confirm::{self, Outcome};
use super::group::{self, GroupError, Member};
use super::pageout::advise::{Advised, advise};
use super::pin::{self, PinError, Target};
use super::rank::RankedProc;
use super::signal::{KillError, Reap, kill_target};

pub trait Kernel: Send {
    /// Monotonic milliseconds.
    fn now_ms(&self) -> u64;
    /// The scope's memory right now.
    fn memory(&self) -> Result<MemSnapshot, ScopeError>;
    /// Reads the processes in scope; those with adj below `floor` are not sized.
    fn scan(
        &mut self,
        floor: Option<i16>,
        with_swap: bool,
        needs: Needs,
    ) -> Result<Scan, ScopeError>;
    /// A process's swapped-out memory (`VmSwap`), if readable.
    fn swap_kib(&self, pid: i32) -> Option<u64>;
    /// Pins a ranked candidate: the same incarnation, inside the scope, not dying.
    fn pin(&self, cand: RankedProc) -> Result<Target, PinError>;
    /// A pinned victim's rule attributes and oom_score_adj, read again right before acting
    /// (an exec or a new adj since ranking changes what it is).
    fn reread(&self, pid: i32, needs: Needs) -> (Attrs, Option<i16>);
    /// SIGKILL (and process_mrelease where the kernel has it).
    fn kill(&self, target: &Target) -> Result<Reap, KillError>;
    /// The scope's own cgroup (`None`: the whole system), as /proc/PID/cgroup spells it.
    fn scope_cgroup(&self) -> Option<String>;
    /// The processes of the unified-hierarchy cgroup `cgroup` and of the cgroups below it.
    fn cgroup_members(&self, cgroup: &str) -> Result<Vec<Member>, GroupError>;
    /// SIGKILL to the whole cgroup `cgroup`, whose members are `members`, all pinned
    /// (`cgroup.kill`, or each pidfd), and process_mrelease of each where the kernel has it.
    fn kill_cgroup(&self, cgroup: &str, members: &[Target]) -> Result<(), GroupError>;
    /// Waits until the target exited or `deadline_ms` passed.
    fn wait_exit(&self, target: &Target, deadline_ms: u64) -> Outcome;
    /// Whether the target has exited, without waiting.
    fn exited(&self, target: &Target) -> bool;
    /// PSI `some` and `full` avg10 of the scope.
    fn psi_avg10(&self) -> Option<(f64, f64)>;
    /// Where a process's memory is.
    fn mem_detail(&self, pid: i32) -> Result<MemDetail, ProcError>;
    /// A process's mappings.
    fn smaps(&self, pid: i32) -> Result<Vec<Region>, ProcError>;
    /// Whether anonymous memory can be paged out (swap with room in it).
    fn swap_active(&self) -> bool;
    /// process_madvise(MADV_PAGEOUT), one call per batch.
    fn advise(&self, target: &Target, batches: &[Vec<(u64, u64)>]) -> Advised;
}

/// The running system, seen through the scope.
pub struct System {
    scope: Arc<Scope>,
    caps: KernelCaps,
    /// The process table reader, kept across decisions (open fds per process).
    procs: ProcCache,
}

impl System {
    pub fn new(scope: Arc<Scope>, caps: KernelCaps, cache_capacity: usize) -> Self {
        let procs = ProcCache::new(scope.proc.clone(), cache_capacity);
        System { scope, caps, procs }
    }
}

impl Kernel for System {
    fn now_ms(&self) -> u64 {
        monotonic_ms()
    }

    fn memory(&self) -> Result<MemSnapshot, ScopeError> {
        self.scope.read_memory()
    }

    fn scan(
        &mut self,
        floor: Option<i16>,
        with_swap: bool,
        needs: Needs,
    ) -> Result<Scan, ScopeError> {
        let pids = self.scope.pids()?;
        Ok(self.procs.scan_with(pids, floor, with_swap, needs))
    }

    fn swap_kib(&self, pid: i32) -> Option<u64> {
        self.scope.proc.mem_detail(pid).ok().map(|d| d.swap_kib)
    }

    fn pin(&self, cand: RankedProc) -> Result<Target, PinError> {
        pin::pin(&self.scope.proc, &self.scope, cand, self.caps.pidfd)
    }

    fn reread(&self, pid: i32, needs: Needs) -> (Attrs, Option<i16>) {
        let proc = &self.scope.proc;
        (proc.read_attrs(pid, needs), proc.read_adj(pid).ok())
    }

    fn kill(&self, target: &Target) -> Result<Reap, KillError> {
        kill_target(target, &self.caps, &self.scope.proc)
    }

    fn scope_cgroup(&self) -> Option<String> {
        self.scope.cgroup.as_ref().map(|c| c.name.clone())
    }

    fn cgroup_members(&self, cgroup: &str) -> Result<Vec<Member>, GroupError> {
        let dir = group::dir_of(&self.scope.proc, cgroup)?;
        group::read_members(&self.scope.proc, &dir)
    }

    fn kill_cgroup(&self, cgroup: &str, members: &[Target]) -> Result<(), GroupError> {
        let dir = group::dir_of(&self.scope.proc, cgroup)?;
        group::kill_group(&dir, members, &self.caps)
    }

    fn wait_exit(&self, target: &Target, deadline_ms: u64) -> Outcome {
        confirm::wait_target(target, &self.scope.proc, deadline_ms)
    }

    fn exited(&self, target: &Target) -> bool {
        confirm::exited(target, &self.scope.proc)
    }

    fn psi_avg10(&self) -> Option<(f64, f64)> {
        self.scope.psi_avg10()
    }

    fn mem_detail(&self, pid: i32) -> Result<MemDetail, ProcError> {
        self.scope.proc.mem_detail(pid)
    }

    fn smaps(&self, pid: i32) -> Result<Vec<Region>, ProcError> {
        self.scope.proc.smaps(pid)
    }

    fn swap_active(&self) -> bool {
        self.scope.swap_active()
    }

    fn advise(&self, target: &Target, batches: &[Vec<(u64, u64)>]) -> Advised {
        advise(target, batches)
    }
}
