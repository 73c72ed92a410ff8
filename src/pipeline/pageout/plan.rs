//! Planning a page-out: which address ranges of a process `process_madvise(MADV_PAGEOUT)`
//! may usefully be asked to reclaim, and how to batch them into calls. Pure: regions and
//! numbers in, ranges out.

use crate::procs::{Backing, Region};

/// Whether page-out can reclaim anything of `r`: file pages always (written back or simply
/// dropped), private anonymous memory only when there is swap to put it in. Never locked,
/// hugetlb, device or kernel-provided regions, and nothing with no resident pages.
pub fn worth_paging(r: &Region, swap_active: bool) -> bool {
    if r.locked || r.hugetlb || r.device || r.rss_kib == 0 {
        return false;
    }
    match &r.backing {
        Backing::File { .. } => true,
        Backing::Anon => swap_active && !r.shared,
        Backing::Shmem | Backing::Special(_) => false,
    }
}

/// One past the highest address our `process_madvise` iovecs can name: the address space of
/// a usize. A 32-bit lowmemd (armv7 userland on an arm64 kernel, common on boards) reads a
/// 64-bit process's smaps with addresses above 4 GiB that a 32-bit iovec cannot carry.
/// (usize is at most 64 bits on every target Rust supports, so the widening is lossless.)
pub const IOVEC_ADDR_END: u64 = (usize::MAX as u64).saturating_add(1);

/// The address ranges to page out, page-aligned, in address order, with the resident size
/// each is expected to yield at most.
pub fn plan(regions: &[Region], swap_active: bool, page_size: u64) -> Vec<(u64, u64, u64)> {
    plan_below(regions, swap_active, page_size, IOVEC_ADDR_END)
}

/// `plan` of the ranges that end at or below `addr_end`: the ones above are skipped whole,
/// not truncated to an address of some other mapping.
fn plan_below(
    regions: &[Region],
    swap_active: bool,
    page_size: u64,
    addr_end: u64,
) -> Vec<(u64, u64, u64)> {
    regions
        .iter()
        .filter(|r| worth_paging(r, swap_active) && r.end <= addr_end)
        .filter_map(|r| {
            let start = r.start.next_multiple_of(page_size);
            let end = r.end - r.end % page_size;
            (end > start).then_some((start, end - start, r.rss_kib))
        })
        .collect()
}

/// Splits `ranges` (start, len) into calls of at most `max_iov` iovecs and `call_bytes`
/// bytes each, skipping the first `skip_bytes` (work done at an earlier event) and stopping
/// after `event_bytes`. A range larger than a call's budget is split at page boundaries.
pub fn batches(
    ranges: &[(u64, u64)],
    skip_bytes: u64,
    call_bytes: u64,
    event_bytes: u64,
    max_iov: usize,
    page_size: u64,
) -> Vec<Vec<(u64, u64)>> {
    let call_bytes = call_bytes.max(page_size);
    let mut calls: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut cur: Vec<(u64, u64)> = Vec::new();
    let (mut cur_bytes, mut total, mut skip) = (0u64, 0u64, skip_bytes);
    for &(start, len) in ranges {
        let (mut start, mut len) = (start, len);
        if skip >= len {
            skip -= len;
            continue;
        }
        start += skip - skip % page_size;
        len -= skip - skip % page_size;
        skip = 0;
        while len > 0 && total < event_bytes {
            if cur.len() == max_iov || cur_bytes == call_bytes {
                calls.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            let room = (call_bytes - cur_bytes).min(event_bytes - total);
            let take = len.min(room.max(page_size));
            cur.push((start, take));
            cur_bytes += take;
            total += take;
            start += take;
            len -= take;
        }
    }
    if !cur.is_empty() {
        calls.push(cur);
    }
    calls
}

/// The resident KiB inside the planned ranges that this event covers (bytes `cursor` to
/// `cursor + len` of the plan), assuming residency spread evenly within each range.
pub fn planned_resident_kib(planned: &[(u64, u64, u64)], cursor: u64, len: u64) -> u64 {
    let (mut at, mut kib) = (0u64, 0f64);
    for &(_, bytes, rss_kib) in planned {
        let (lo, hi) = (at.max(cursor), (at + bytes).min(cursor + len));
        if hi > lo {
            kib += rss_kib as f64 * (hi - lo) as f64 / bytes as f64;
        }
        at += bytes;
    }
    kib.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::parse_smaps;
    use crate::procs::smaps::tests::SMAPS;

    #[test]
    fn plan_takes_files_always_and_private_anon_only_with_swap() {
        let r = parse_smaps(SMAPS.as_bytes()).unwrap();
        // The fixture is a 64-bit process: seen from a 64-bit caller.
        let starts = |swap| -> Vec<u64> {
            plan_below(&r, swap, 4096, u64::MAX)
                .iter()
                .map(|p| p.0)
                .collect()
        };
        assert_eq!(starts(false), [0x55d0c0000000, 0x7f0000000000]);
        let swap = starts(true);
        assert_eq!(
            swap,
            [
                0x55d0c0000000,
                0x55d0c1000000,
                0x7f0000000000,
                0x7ffd00000000
            ]
        );
    }

    #[test]
    fn plan_skips_ranges_a_32_bit_caller_cannot_address() {
        let r = parse_smaps(SMAPS.as_bytes()).unwrap();
        // The fixture is a 64-bit process: every range is above 4 GiB.
        assert_eq!(plan_below(&r, true, 4096, 1 << 32), []);
        let low: Vec<u64> = plan_below(&r, true, 4096, 0x7f0000000000)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(low, [0x55d0c0000000, 0x55d0c1000000]);
        // This build: a 64-bit one reaches all four ranges, a 32-bit one (armv7) none.
        let reachable = if usize::BITS == 64 { 4 } else { 0 };
        assert_eq!(plan(&r, true, 4096).len(), reachable);
    }

    #[test]
    fn batches_respect_iovec_call_and_event_caps() {
        let p = 4096;
        let ranges: Vec<(u64, u64)> = (0..3000).map(|i| (i * 2 * p, p)).collect();
        let calls = batches(&ranges, 0, u64::MAX, u64::MAX, 1024, p);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [1024, 1024, 952]
        );
        // A 10-page range with 4 pages per call and 9 pages per event.
        let calls = batches(&[(0, 10 * p)], 0, 4 * p, 9 * p, 1024, p);
        assert_eq!(
            calls,
            [vec![(0, 4 * p)], vec![(4 * p, 4 * p)], vec![(8 * p, p)]]
        );
        // Continuing where the last event stopped.
        let calls = batches(
            &[(0, 10 * p), (100 * p, 2 * p)],
            9 * p,
            4 * p,
            100 * p,
            1024,
            p,
        );
        assert_eq!(calls, [vec![(9 * p, p), (100 * p, 2 * p)]]);
    }
}
