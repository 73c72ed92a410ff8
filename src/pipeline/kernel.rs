//! What the pipeline asks of the running system, behind one trait: the clock, the scope's
//! memory and processes, pinning, the signal, the wait, page-out. [`System`] is the real
//! one (/proc, pidfds, process_mrelease, process_madvise); the pipeline's unit tests drive
//! its logic on a fake with a clock of its own, without root and in milliseconds.

use std::sync::Arc;

use crate::caps::KernelCaps;
use crate::clock::monotonic_ms;
use parking_lot::Mutex;

use crate::procs::keeper::{self, Keeper, Source};
use crate::procs::{Attrs, MemDetail, Needs, ProcCache, ProcError, Region, Scan};
use crate::sample::MemSnapshot;
use crate::scope::{Scope, ScopeError};

use super::confirm::{self, Outcome};
use super::freeze::freezer::{self, FreezerError, Records};
use super::group::{self, GroupError, Member};
use super::pageout::advise::{Advised, advise};
use super::pin::{self, PinError, Target};
use super::rank::RankedProc;
use super::signal::{self, KillError, Reap, Release, kill_target};

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
    /// process_mrelease of a target that is dying already, where the kernel has it.
    fn release(&self, target: &Target) -> Release;
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
    /// Whether the incarnation (pid, starttime) is gone, asked of /proc (no pidfd held).
    fn gone(&self, pid: i32, starttime: u64) -> bool;
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
    /// Freezes (`true`) or thaws the unified-hierarchy cgroup `cgroup`; a freeze is
    /// recorded first, so that it never outlives lowmemd.
    fn set_frozen(&self, cgroup: &str, frozen: bool) -> Result<(), FreezerError>;
    /// SIGSTOP (`true`, recorded first) or SIGCONT to the pinned `target` alone.
    fn stop_alone(&self, target: &Target, stop: bool) -> Result<(), FreezerError>;
    /// Whether `cgroup` is frozen, by anyone.
    fn is_frozen(&self, cgroup: &str) -> Result<bool, FreezerError>;
    /// RAM swap itself takes now (zram), KiB.
    fn swap_ram_kib(&self) -> u64;
}

/// The running system, seen through the scope.
pub struct System {
    scope: Arc<Scope>,
    caps: KernelCaps,
    /// The process table reader, kept across decisions (open fds per process); shared
    /// with the keeper, which the kill path never waits for.
    procs: Arc<Mutex<ProcCache>>,
    /// The table kept up to date off the kill path, for scopes of thousands of processes.
    keeper: Option<Keeper>,
    /// Where freezes are recorded (`None`: the freeze tier is off).
    freezes: Option<Records>,
}

impl System {
    /// Every decision scans the scope in full (the design before the kept table; the
    /// benchmarks compare both).
    pub fn new(scope: Arc<Scope>, caps: KernelCaps, cache_capacity: usize) -> Self {
        let procs = ProcCache::new(scope.proc.clone(), cache_capacity);
        System {
            scope,
            caps,
            procs: Arc::new(Mutex::new(procs)),
            keeper: None,
            freezes: None,
        }
    }

    /// Lets the freeze tier work, recording its freezes in `records`.
    pub fn with_freezes(mut self, records: Records) -> Self {
        self.freezes = Some(records);
        self
    }

    /// [`System::new`] with the process table kept by a thread of its own
    /// (`procs::keeper`) once the scope holds [`keeper::KEEP_FROM`] processes.
    pub fn keeping_table(scope: Arc<Scope>, caps: KernelCaps, cache_capacity: usize) -> Self {
        let mut system = Self::new(scope.clone(), caps, cache_capacity);
        let source = ScopeSource {
            scope,
            last_available_kib: None,
        };
        match Keeper::start(source, system.procs.clone()) {
            Ok(k) => system.keeper = Some(k),
            Err(e) => log::warn!("cannot start the process-table thread: {e}; every kill scans"),
        }
        system
    }
}

impl System {
    /// Every process of `pids`, read now.
    fn scan_all(&self, pids: Vec<i32>, floor: Option<i16>, with_swap: bool, needs: Needs) -> Scan {
        match self.procs.try_lock() {
            Some(mut cache) => cache.scan_with(pids, floor, with_swap, needs),
            // The keeper is reading through it: the stateless reader, rather than wait.
            None => self.scope.proc.scan_with(pids, with_swap, needs),
        }
    }
}

impl System {
    /// How old the kept table is, if one is kept.
    pub fn kept_table_age_ms(&self) -> Option<u64> {
        self.keeper.as_ref()?.age_ms(monotonic_ms())
    }
}

/// What the keeper reads of the scope.
struct ScopeSource {
    scope: Arc<Scope>,
    last_available_kib: Option<u64>,
}

impl Source for ScopeSource {
    fn pids(&self) -> Option<Vec<i32>> {
        self.scope.pids().ok()
    }

    fn used_kib(&self) -> Option<u64> {
        let m = self.scope.read_memory().ok()?;
        Some(m.total_kib.saturating_sub(m.available_kib))
    }

    /// Below a quarter of the scope's memory available, or 2 % of it gone since the last
    /// look (250 ms earlier): a runaway of 1 GiB/s in a 4 GiB memcg shows at the first.
    fn memory_tight(&mut self) -> bool {
        let Ok(m) = self.scope.read_memory() else {
            return true;
        };
        let total = m.total_kib.max(1);
        let fell = self
            .last_available_kib
            .is_some_and(|a| a.saturating_sub(m.available_kib) * 50 >= total);
        self.last_available_kib = Some(m.available_kib);
        fell || m.available_kib * 4 < total
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
        if let Some(k) = &self.keeper
            && let Some(table) = k.table(monotonic_ms(), needs)
        {
            let (proc, mut buf) = (&self.scope.proc, Vec::with_capacity(1024));
            let mut read = |pid| proc.read_with(pid, with_swap, needs, &mut buf);
            let (mut scan, mut grown) = keeper::with_fresh_head(&table, floor, &mut read);
            let mem = self.scope.read_memory().ok();
            let explained = |grown| {
                mem.as_ref().is_some_and(|m| {
                    let used = m.total_kib.saturating_sub(m.available_kib);
                    keeper::explained(&table, used, grown, m.total_kib)
                })
            };
            if explained(grown) {
                return Ok(scan);
            }
            log::debug!(
                "kept table of {} ms ago ({} processes, read in {} ms): memory in use {:?} KiB then, {:?} KiB now; its head grew {grown} KiB",
                monotonic_ms().saturating_sub(table.at_ms),
                table.procs.len(),
                table.took.as_millis(),
                table.used_kib,
                mem.as_ref()
                    .map(|m| m.total_kib.saturating_sub(m.available_kib)),
            );
            // Memory grew outside the head: perhaps in a process started since the table.
            // Listing costs ~1.4 µs a process here, a third of a full scan.
            let pids = self.scope.pids()?;
            grown += keeper::add_new(&mut scan, &table, &pids, &mut read);
            if explained(grown) {
                return Ok(scan);
            }
            log::debug!("memory grew outside the kept table's head: scanning in full");
            return Ok(self.scan_all(pids, floor, with_swap, needs));
        }
        log::debug!("no kept table fresh enough: scanning in full");
        let pids = self.scope.pids()?;
        Ok(self.scan_all(pids, floor, with_swap, needs))
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

    fn release(&self, target: &Target) -> Release {
        signal::release(target, &self.caps)
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

    fn gone(&self, pid: i32, starttime: u64) -> bool {
        confirm::proc_gone(&self.scope.proc, pid, starttime)
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

    fn set_frozen(&self, cgroup: &str, frozen: bool) -> Result<(), FreezerError> {
        let records = self.freezes.as_ref().ok_or(FreezerError::Off)?;
        let dir = group::dir_of(&self.scope.proc, cgroup)?;
        if frozen {
            freezer::freeze(records, &dir)
        } else {
            freezer::thaw(records, &dir)
        }
    }

    fn stop_alone(&self, target: &Target, stop: bool) -> Result<(), FreezerError> {
        let records = self.freezes.as_ref().ok_or(FreezerError::Off)?;
        freezer::stop(records, target, stop)
    }

    fn is_frozen(&self, cgroup: &str) -> Result<bool, FreezerError> {
        freezer::is_frozen(&group::dir_of(&self.scope.proc, cgroup)?)
    }

    fn swap_ram_kib(&self) -> u64 {
        crate::scope::swap::ram_used_kib()
    }
}
