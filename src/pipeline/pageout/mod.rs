//! The page-out stage: `process_madvise(MADV_PAGEOUT)` on a pinned victim's reclaimable
//! ranges (`plan.rs`), at most a level's cap per event, remembered per incarnation
//! (`tracker.rs`); success is what left RAM, measured, not what the kernel accepted.

pub mod plan;
pub mod tracker;

use rustix::io::Errno;

use crate::clock::wall_ms;
use crate::policy::Policy;
use crate::policy::decide::Decision;
use crate::procs::is_gone;
use crate::sample::Sample;

use super::Pipeline;
use super::outcome::Pageout;
use super::pin::Target;
use plan::{batches, plan, planned_resident_kib};
use tracker::{NOTHING_KIB, Record};

/// Bytes per process_madvise call: bounds how long one call holds the target's mmap lock.
const CALL_BYTES: u64 = 32 << 20;
/// The kernel takes at most this many iovecs per call (UIO_MAXIOV).
const MAX_IOV: usize = 1024;

/// What a page-out did, as the kernel reported it (what it freed is measured by the caller).
#[derive(Debug, Default)]
pub struct Advised {
    /// Bytes the kernel accepted (short counts included).
    pub advised_bytes: u64,
    pub calls: u32,
    /// The process exited meanwhile.
    pub exited: bool,
    /// The kernel refused us (EPERM: no CAP_SYS_NICE; EACCES: no ptrace access): the tier
    /// cannot work and should be switched off.
    pub refused: Option<std::io::Error>,
}

/// Asks the kernel to page out `batches` (each one process_madvise call) of the pinned
/// victim. A mapping that changed since smaps was read (EINVAL, ENOMEM) costs only its call.
pub fn advise(target: &Target, batches: &[Vec<(u64, u64)>]) -> Advised {
    let mut out = Advised::default();
    let Some(pidfd) = target.pidfd() else {
        out.refused = Some(std::io::Error::other("no pidfd: process_madvise needs one"));
        return out;
    };
    for batch in batches {
        out.calls += 1;
        match crate::sys::process_madvise_pageout(pidfd, batch) {
            Ok(n) => out.advised_bytes += n as u64,
            Err(e) if is_gone(&e) => {
                out.exited = true;
                break;
            }
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::PERM | Errno::ACCESS)) => {
                out.refused = Some(e);
                break;
            }
            Err(e) => log::debug!("process_madvise(pid {}): {e}", target.proc.pid),
        }
    }
    out
}

impl Pipeline {
    /// Switches the page-out tier off for good. `announced`: the reason was already said
    /// (the start-up fallbacks); otherwise it is logged here, once.
    pub fn disable_pageout(&mut self, why: String, announced: bool) {
        if self.pageout_off.is_none() {
            if !announced {
                log::warn!(
                    "page-out tier disabled: {why}; levels with action \"pageout\" do nothing, kill levels still apply"
                );
            }
            self.pageout_off = Some(why);
        }
    }

    /// Pages out what the kernel can reclaim of the pinned `target`, up to the level's
    /// per-event cap, and measures what really left RAM.
    pub(super) fn page_out(
        &mut self,
        policy: &Policy,
        decision: &Decision,
        fresh: &Sample,
        target: Target,
    ) {
        let level = decision.level(policy);
        let victim = &target.proc;
        let started = self.kernel.now_ms();
        let k = &self.kernel;
        let (before, regions) = match (k.mem_detail(victim.pid), k.smaps(victim.pid)) {
            (Ok(b), Ok(r)) => (b, r),
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("page-out of pid {} skipped: {e}", victim.pid);
                return;
            }
        };
        let page = rustix::param::page_size() as u64;
        let planned = plan(&regions, k.swap_active(), page);
        let ranges: Vec<(u64, u64)> = planned.iter().map(|&(s, l, _)| (s, l)).collect();
        let total_bytes: u64 = ranges.iter().map(|r| r.1).sum();
        let cursor = self.pageouts.cursor(victim);
        let cap = level.pageout.max_kib_per_event * 1024;
        let batches = batches(&ranges, cursor, CALL_BYTES, cap, MAX_IOV, page);
        let this_event: u64 = batches.iter().flatten().map(|r| r.1).sum();
        let requested_kib = planned_resident_kib(&planned, cursor, this_event);
        // A dry run plans and reports, and advises nothing.
        let advised = if self.dry_run {
            Advised::default()
        } else {
            k.advise(&target, &batches)
        };
        if let Some(e) = advised.refused {
            let why = format!(
                "process_madvise refused ({e}): it needs CAP_SYS_NICE and ptrace access to the target"
            );
            self.disable_pageout(why, false);
            return;
        }
        let after = k.mem_detail(victim.pid).unwrap_or_default();
        let end = k.now_ms();
        let freed_kib = before.resident_kib().saturating_sub(after.resident_kib());
        let next_cursor = cursor + this_event;
        let unfinished = !advised.exited && next_cursor < total_bytes;
        let record = Record {
            at_ms: end,
            rss_after_kib: after.resident_kib(),
            freed_kib,
            cursor_bytes: if unfinished { next_cursor } else { 0 },
        };
        self.pageouts.record(victim, record, level);
        let pageout = Pageout {
            victim,
            decision,
            level,
            dry_run: self.dry_run,
            wall_ms: wall_ms(),
            requested_kib,
            freed_kib,
            worthless: freed_kib < NOTHING_KIB,
            before,
            after,
            scope_available_before_kib: fresh.mem.available_kib,
            scope_available_after_kib: self.kernel.memory().ok().map(|m| m.available_kib),
            unfinished,
            duration_ms: end.saturating_sub(started),
        };
        self.observer.paged_out(&pageout);
        self.last_action_ms = Some(end);
    }
}
