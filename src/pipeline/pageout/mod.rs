//! The page-out stage: `process_madvise(MADV_PAGEOUT)` (`advise.rs`) on a pinned victim's
//! reclaimable ranges (`plan.rs`), at most a level's cap per event, remembered per
//! incarnation (`tracker.rs`); success is what left RAM, measured, not what the kernel
//! accepted. A function from the plan and the victim to a [`PageoutReport`].

pub mod advise;
pub mod plan;
pub mod tracker;

use crate::clock::wall_ms;
use crate::procs::MemDetail;

use super::Plan;
use super::kernel::Kernel;
use super::pin::Target;
pub use advise::{Advised, advise};
use plan::{batches, plan, planned_resident_kib};
use tracker::{NOTHING_KIB, Record};

/// Bytes per process_madvise call: bounds how long one call holds the target's mmap lock,
/// and how long a kill that became due meanwhile waits for the call to end (a call of
/// 32 MiB into zram took seconds on an emulated board).
const CALL_BYTES: u64 = 8 << 20;
/// The kernel takes at most this many iovecs per call (UIO_MAXIOV).
const MAX_IOV: usize = 1024;

/// A page-out that ran (or, in a dry run, its plan), measured.
#[derive(Debug)]
pub struct PagedOut {
    /// Resident size of the ranges asked for this event (from smaps).
    pub requested_kib: u64,
    /// Resident memory the process lost, measured from its status before and after.
    pub freed_kib: u64,
    pub before: MemDetail,
    pub after: MemDetail,
    pub scope_available_after_kib: Option<u64>,
    /// More of this process is left for the next event (the per-event cap was reached, or
    /// it was interrupted).
    pub unfinished: bool,
    /// Stopped part-way: a more severe level held before the next call.
    pub interrupted: bool,
    pub started_ms: u64,
    pub end_ms: u64,
    pub wall_ms: u64,
    /// What the tracker remembers of it.
    pub record: Record,
}

#[derive(Debug)]
pub enum PageoutReport {
    PagedOut(PagedOut),
    /// Its status or mappings could not be read (it is exiting): nothing done.
    Unreadable,
    /// Its status shows less than a page-out is worth (anonymous memory with no swap to
    /// take it): nothing asked, remembered so that it is not tried again until it grows.
    NothingToReclaim(Record),
    /// Memory fell to a more severe level before anything was asked: nothing done.
    GaveWay,
    /// The kernel refused process_madvise: the tier cannot work here.
    Refused(String),
}

/// Pages out what the kernel can reclaim of the pinned `target`, from `cursor` bytes into
/// its plan up to the level's per-event cap (a dry run plans and advises nothing), and
/// measures what really left RAM. `anon`: its anonymous memory too, where there is swap
/// (false: file pages only). Before each call it asks whether memory has meanwhile fallen
/// to a more severe level (`Plan::escalated`): then it stops where it is, so a kill is never
/// queued behind a page-out that cannot keep up.
pub fn run(
    kernel: &dyn Kernel,
    plan_: &Plan<'_>,
    target: &Target,
    cursor: u64,
    anon: bool,
    dry_run: bool,
) -> PageoutReport {
    let victim = &target.proc;
    let started_ms = kernel.now_ms();
    let before = match kernel.mem_detail(victim.pid) {
        Ok(b) => b,
        Err(e) => {
            log::debug!("page-out of pid {} skipped: {e}", victim.pid);
            return PageoutReport::Unreadable;
        }
    };
    let anon = anon && kernel.swap_active();
    // Its status says what page-out could take at most: when that is not worth a call,
    // its smaps (slow to read for a big process, and the longest step under emulation)
    // are not read either.
    let reclaimable_kib = before.rss_file_kib + if anon { before.rss_anon_kib } else { 0 };
    if reclaimable_kib < NOTHING_KIB {
        log::debug!(
            "pid {} ({}): nothing worth paging out; not again until it grows",
            victim.pid,
            victim.comm
        );
        return PageoutReport::NothingToReclaim(Record {
            at_ms: started_ms,
            rss_after_kib: before.resident_kib(),
            freed_kib: 0,
            cursor_bytes: 0,
        });
    }
    if plan_.escalated(kernel) {
        log::debug!(
            "level {}: page-out of pid {} not begun: a more severe level holds now",
            plan_.level.name,
            victim.pid
        );
        return PageoutReport::GaveWay;
    }
    // (Reading smaps may take long: every call is preceded by the check again.)
    let regions = match kernel.smaps(victim.pid) {
        Ok(r) => r,
        Err(e) => {
            log::debug!("page-out of pid {} skipped: {e}", victim.pid);
            return PageoutReport::Unreadable;
        }
    };
    let page = rustix::param::page_size() as u64;
    let planned = plan(&regions, anon, page);
    let ranges: Vec<(u64, u64)> = planned.iter().map(|&(s, l, _)| (s, l)).collect();
    let total_bytes: u64 = ranges.iter().map(|r| r.1).sum();
    let cap = plan_.level.pageout.max_kib_per_event * 1024;
    let batches = batches(&ranges, cursor, CALL_BYTES, cap, MAX_IOV, page);
    let this_event: u64 = batches.iter().flatten().map(|r| r.1).sum();
    let requested_kib = planned_resident_kib(&planned, cursor, this_event);
    let mut advised = Advised::default();
    let mut done_bytes = if dry_run { this_event } else { 0 };
    let mut interrupted = false;
    for batch in batches.iter().filter(|_| !dry_run) {
        if plan_.escalated(kernel) {
            interrupted = true;
            break;
        }
        advised.add(kernel.advise(target, std::slice::from_ref(batch)));
        done_bytes += batch.iter().map(|r| r.1).sum::<u64>();
        if advised.exited || advised.refused.is_some() {
            break;
        }
    }
    if let Some(e) = advised.refused {
        return PageoutReport::Refused(format!(
            "process_madvise refused ({e}): it needs CAP_SYS_NICE and ptrace access to the target"
        ));
    }
    let after = kernel.mem_detail(victim.pid).unwrap_or_default();
    let end_ms = kernel.now_ms();
    let freed_kib = before.resident_kib().saturating_sub(after.resident_kib());
    let next_cursor = cursor + done_bytes;
    let unfinished = !advised.exited && next_cursor < total_bytes;
    PageoutReport::PagedOut(PagedOut {
        requested_kib,
        freed_kib,
        before,
        after,
        scope_available_after_kib: kernel.memory().ok().map(|m| m.available_kib),
        unfinished,
        interrupted,
        started_ms,
        end_ms,
        wall_ms: wall_ms(),
        record: Record {
            at_ms: end_ms,
            rss_after_kib: after.resident_kib(),
            freed_kib,
            cursor_bytes: if unfinished { next_cursor } else { 0 },
        },
    })
}

impl PagedOut {
    /// Less than a page-out is worth: the process is not tried again until it grows. (One
    /// interrupted before it freed anything is not judged.)
    pub fn worthless(&self) -> bool {
        self.freed_kib < NOTHING_KIB && !self.interrupted
    }

    /// Whether the tracker should remember it: not one interrupted before it did anything,
    /// which says nothing about the process.
    pub fn remembered(&self) -> bool {
        !(self.interrupted && self.freed_kib < NOTHING_KIB && self.record.cursor_bytes == 0)
    }
}
