//! The process table kept up to date off the kill path, for scopes of thousands of
//! processes: a thread lists the scope and reads every process through the fd cache, and
//! publishes the result; a kill takes the latest table and re-reads only its head.
//!
//! Why: measured here (kernel 6.18, nested virtualisation, 9,000 idle processes in one v1
//! memcg), listing `cgroup.procs` costs ~1.4 µs a process, a `pread` of `oom_score_adj`
//! ~1.4 µs and of `statm` ~2.7 µs, fds kept open: a fresh scan of 10,000 processes cannot
//! take less than ~55 ms, and one of 20,000 ~110 ms, whatever is cached. A kill that waits
//! for it lets a 1 GiB/s runaway take another 50–100 MiB. So the scan moves here, and the
//! kill path costs what ranking a table in memory costs plus [`HEAD`] fresh reads.
//!
//! What that trades, and how it is checked rather than assumed: a process that grew
//! outside the head since the table was listed, or started since, is not in the ranking.
//! So a kill compares the scope's growth in use since the listing with the head's
//! ([`explained`]); beyond 1/32 of the scope unexplained it lists the scope and reads the
//! pids the table lacks ([`add_new`]), and if growth is still unexplained, reads everything.
//! The table is re-read back to back (at most every [`HOT_MS`]) while the scope's memory is
//! short or falling, so under pressure it is at most two scans old; a much older one is not
//! used ([`Table::fresh_at`]). An `oom_score_adj` raised since the table shows at the next
//! one. Below [`KEEP_FROM`] processes nothing of this runs: the full scan costs less than
//! the table would save, and the thread only counts the scope every 30 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Needs, ProcCache, ProcError, ProcInfo, Scan};
use crate::clock::monotonic_ms;

/// Below this many processes in scope the table is not kept: a full scan costs ~5 µs a
/// process here, ~10 ms at 2,000, and the kill path does it as before.
pub const KEEP_FROM: usize = 2048;
/// Processes re-read on the kill path: the first of the table ranked by adj band, then size.
pub const HEAD: usize = 32;
/// How often the table is re-read while memory is short or falling.
pub const HOT_MS: u64 = 250;
/// Otherwise: at least this often, and never more than ~5 % of one core.
pub const COOL_MS: u64 = 5_000;
/// A table this old is always fresh enough for a kill: at most four hot periods.
pub const MAX_AGE_MS: u64 = 1_000;
/// How often the keeper looks at memory (one read of the scope's memory files).
const CHECK_MS: u64 = 250;

/// One table: every process in scope, sized, as read at `at_ms`.
#[derive(Debug)]
pub struct Table {
    /// When the scope was listed: the table knows nothing of what started after.
    pub at_ms: u64,
    /// The scope's memory in use (total − available) when the table was read.
    pub used_kib: Option<u64>,
    pub needs: Needs,
    pub procs: Vec<ProcInfo>,
    /// How long listing and reading took.
    pub took: Duration,
}

/// What the keeper asks of the scope: its pids, its memory in use, and whether memory is
/// short or falling.
pub trait Source: Send + 'static {
    fn pids(&self) -> Option<Vec<i32>>;
    fn used_kib(&self) -> Option<u64>;
    fn memory_tight(&mut self) -> bool;
}

struct Shared {
    latest: Mutex<Option<Arc<Table>>>,
    needs: Mutex<Needs>,
    stop: AtomicBool,
    wake: Condvar,
    sleeping: Mutex<()>,
}

/// The keeper thread; stopped and joined on drop.
pub struct Keeper {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// Starts the thread. `cache` is shared with the kill path's own full scan, which takes
    /// it only when it is free (`try_lock`): never waits for the keeper.
    pub fn start(source: impl Source, cache: Arc<Mutex<ProcCache>>) -> std::io::Result<Keeper> {
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            needs: Mutex::new(Needs::default()),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            sleeping: Mutex::new(()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("proc-table".into())
            .spawn(move || keep(source, cache, &s))?;
        Ok(Keeper {
            shared,
            thread: Some(thread),
        })
    }

    /// How old the latest table is, if there is one (for benchmarks and tests).
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        let t = self.shared.latest.lock().clone()?;
        Some(now_ms.saturating_sub(t.at_ms))
    }

    /// The latest table if it is fresh enough for a kill (see [`Table::fresh_at`]) and
    /// was read with `needs`; otherwise `None`, and the next table is read with `needs` (a
    /// reloaded policy's rules).
    pub fn table(&self, now_ms: u64, needs: Needs) -> Option<Arc<Table>> {
        *self.shared.needs.lock() = needs;
        let t = self.shared.latest.lock().clone()?;
        (t.needs == needs && t.fresh_at(now_ms)).then_some(t)
    }
}

impl Table {
    /// Whether a kill at `now_ms` may rank this table rather than scan. Up to
    /// [`MAX_AGE_MS`]; beyond, while it is no older than three of its scans and two looks
    /// at memory: under pressure the keeper reads back to back, so its newest table is
    /// listed at most a scan, a wait of a scan and a look before the next one lands (a
    /// loaded machine, 20,000 processes: a scan of ~1 s here), and a scan made by the kill
    /// instead would take as long.
    pub fn fresh_at(&self, now_ms: u64) -> bool {
        let took = self.took.as_millis() as u64;
        now_ms.saturating_sub(self.at_ms) <= MAX_AGE_MS.max(3 * took + 2 * CHECK_MS)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _g = self.shared.sleeping.lock();
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How much nicer than the daemon the keeper runs: when a kill comes the keeper is usually
/// reading back to back (memory is falling), and the kill's own thread must not share a
/// core with it as an equal. Measured in `benches/crowd.rs`.
const NICER_BY: i32 = 10;

fn keep(mut source: impl Source, cache: Arc<Mutex<ProcCache>>, shared: &Shared) {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value alone.
    let me = rustix::thread::gettid();
    if let Ok(nice) = rustix::process::getpriority_process(Some(me)) {
        let _ = rustix::process::setpriority_process(Some(me), (nice + NICER_BY).min(19));
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let (started, listed_ms) = (Instant::now(), monotonic_ms());
        let needs = *shared.needs.lock();
        let table = match source.pids() {
            Some(pids) if pids.len() >= KEEP_FROM => {
                // Before the reads: what grows while they go on counts as unexplained.
                let used_kib = source.used_kib();
                let procs = cache.lock().scan_with(pids, None, false, needs).procs;
                Some(Arc::new(Table {
                    at_ms: listed_ms,
                    used_kib,
                    needs,
                    procs,
                    took: started.elapsed(),
                }))
            }
            // Too few to be worth it (or unlistable): the kill path scans. Counted again
            // after a long wait, so that a small scope costs one wake-up in 30 s.
            _ => None,
        };
        let kept = table.is_some();
        *shared.latest.lock() = table;
        let took = started.elapsed().as_millis() as u64;
        let begun = monotonic_ms();
        // At most ~5 % of a core while memory is plentiful, back-to-back (but never more
        // than half the time) while it is short or falling.
        let (cool, hot) = if kept {
            (COOL_MS.max(took * 20), HOT_MS.max(took))
        } else {
            (30_000, u64::MAX)
        };
        loop {
            let step = if kept { CHECK_MS } else { cool };
            let mut g = shared.sleeping.lock();
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let _ = shared.wake.wait_for(&mut g, Duration::from_millis(step));
            drop(g);
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let waited = monotonic_ms().saturating_sub(begun);
            if waited >= cool || (waited >= hot && source.memory_tight()) {
                break;
            }
        }
    }
}

/// The kill path's view of `table`: every process as the table read it, except the first
/// [`HEAD`] of the table ranked by adj band (those at `floor` or above), then size, which
/// are read again with `read` — the likely victims, sized now. One that exited, or whose
/// number now belongs to another incarnation, is left out. Also returns how much the head
/// grew since the table (KiB, negative when it shrank).
pub fn with_fresh_head(
    table: &Table,
    floor: Option<i16>,
    mut read: impl FnMut(i32) -> Result<ProcInfo, ProcError>,
) -> (Scan, i64) {
    let mut procs = table.procs.clone();
    let mut order: Vec<usize> = (0..procs.len())
        .filter(|&i| floor.is_none_or(|f| procs[i].oom_score_adj >= f))
        .collect();
    let rank = |&i: &usize| std::cmp::Reverse((procs[i].oom_score_adj, procs[i].size_kib()));
    // The head alone is sorted: the rest of 20,000 need not be.
    if order.len() > HEAD {
        order.select_nth_unstable_by_key(HEAD, rank);
        order.truncate(HEAD);
    }
    order.sort_unstable_by_key(rank);
    let mut scan = Scan::default();
    let mut gone = Vec::new();
    let mut grown = 0i64;
    for &i in &order {
        match read(procs[i].pid) {
            Ok(p) if p.starttime == procs[i].starttime => {
                grown += p.size_kib() as i64 - procs[i].size_kib() as i64;
                procs[i] = p;
            }
            Ok(_) | Err(ProcError::Vanished { .. }) => {
                scan.vanished += 1;
                gone.push(i);
            }
            Err(e) => {
                scan.errors.push(e);
                gone.push(i);
            }
        }
    }
    gone.sort_unstable();
    for i in gone.into_iter().rev() {
        procs.swap_remove(i);
    }
    scan.procs = procs;
    (scan, grown)
}

/// Adds to `scan` (the kill path's view of `table`) the processes of `pids` the table does
/// not hold — started since it was read, a runaway among them perhaps — read with `read`.
/// Returns their size (KiB): growth the table did not see.
pub fn add_new(
    scan: &mut Scan,
    table: &Table,
    pids: &[i32],
    mut read: impl FnMut(i32) -> Result<ProcInfo, ProcError>,
) -> i64 {
    let known: std::collections::HashSet<i32> = table.procs.iter().map(|p| p.pid).collect();
    let mut grown = 0;
    for &pid in pids.iter().filter(|p| !known.contains(p)) {
        match read(pid) {
            Ok(p) => {
                grown += p.size_kib() as i64;
                scan.procs.push(p);
            }
            Err(ProcError::Vanished { .. }) => scan.vanished += 1,
            Err(e) => scan.errors.push(e),
        }
    }
    grown
}

/// Whether the scope's growth since `table` is explained by its head's: memory in use
/// grew by `used_now_kib − table.used_kib`, the re-read head by `head_grown_kib`. More
/// than 1/32 of `total_kib` (32 MiB of 1 GiB) grown elsewhere means a process outside the
/// head, or one started since the table, is growing fast — perhaps the runaway itself —
/// and the kill must scan in full to find it. Page cache growth counts as growth too: a
/// false alarm costs one full scan, never a wrong victim.
pub fn explained(table: &Table, used_now_kib: u64, head_grown_kib: i64, total_kib: u64) -> bool {
    let Some(then) = table.used_kib else {
        return false;
    };
    let unexplained = used_now_kib as i64 - then as i64 - head_grown_kib.max(0);
    unexplained <= (total_kib / 32) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(procs: Vec<ProcInfo>) -> Table {
        Table {
            at_ms: 0,
            used_kib: Some(500_000),
            needs: Needs::default(),
            procs,
            took: Duration::ZERO,
        }
    }

    #[test]
    fn the_head_by_band_then_size_is_read_again_and_the_rest_left_as_the_table_read_it() {
        // 100 processes at adj 0 of 1..=100 MiB, and a small one at adj 900.
        let mut procs: Vec<ProcInfo> = (1..=100)
            .map(|pid| ProcInfo::for_tests(pid, 0, pid as u64 * 1024))
            .collect();
        procs.push(ProcInfo::for_tests(500, 900, 10));
        let mut read = Vec::new();
        let (scan, grown) = with_fresh_head(&table(procs), Some(0), |pid| {
            read.push(pid);
            Ok(ProcInfo::for_tests(
                pid,
                if pid == 500 { 900 } else { 0 },
                7,
            ))
        });
        let mut expected = vec![500];
        expected.extend((100 - HEAD as i32 + 2..=100).rev());
        assert_eq!(read, expected, "the adj-900 band first, then the largest");
        let size = |pid| scan.procs.iter().find(|p| p.pid == pid).unwrap().rss_kib;
        assert_eq!((size(500), size(100), size(1)), (7, 7, 1024));
        assert_eq!(scan.procs.len(), 101);
        let old_head: i64 = (70..=100).map(|p| p * 1024).sum::<i64>() + 10;
        assert_eq!(grown, 7 * HEAD as i64 - old_head);
    }

    #[test]
    fn below_the_floor_nothing_is_read_again() {
        let procs = vec![
            ProcInfo::for_tests(1, 0, 100),
            ProcInfo::for_tests(2, 900, 5),
        ];
        let mut read = Vec::new();
        let (scan, _) = with_fresh_head(&table(procs), Some(900), |pid| {
            read.push(pid);
            Ok(ProcInfo::for_tests(pid, 900, 5))
        });
        assert_eq!(read, [2]);
        assert_eq!(scan.procs.len(), 2);
    }

    #[test]
    fn a_head_process_that_exited_or_whose_number_was_recycled_is_left_out() {
        let procs = vec![
            ProcInfo::for_tests(1, 0, 300),
            ProcInfo::for_tests(2, 0, 200),
            ProcInfo::for_tests(3, 0, 100),
        ];
        let (scan, _) = with_fresh_head(&table(procs), None, |pid| match pid {
            1 => Err(ProcError::Vanished { pid }),
            // Another incarnation under the same number.
            2 => Ok(ProcInfo {
                starttime: 9999,
                ..ProcInfo::for_tests(pid, 0, 5_000)
            }),
            _ => Ok(ProcInfo::for_tests(pid, 0, 100)),
        });
        let pids: Vec<i32> = scan.procs.iter().map(|p| p.pid).collect();
        assert_eq!((pids, scan.vanished), (vec![3], 2));
    }

    /// A scope listed from a fixture tree, its memory never short.
    struct Fixture(std::path::PathBuf, Arc<std::sync::atomic::AtomicUsize>);

    impl Source for Fixture {
        fn pids(&self) -> Option<Vec<i32>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            super::super::ProcRoot::new(&self.0).pids().ok()
        }
        fn used_kib(&self) -> Option<u64> {
            Some(0)
        }
        fn memory_tight(&mut self) -> bool {
            false
        }
    }

    fn write_procs(root: &std::path::Path, n: i32) {
        for pid in 1..=n {
            let d = root.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let stat = format!(
                "{pid} (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {pid} 1000 5 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
            );
            std::fs::write(d.join("stat"), stat).unwrap();
            std::fs::write(d.join("comm"), "p\n").unwrap();
            std::fs::write(d.join("statm"), "1000 5 0 1 0 50 0\n").unwrap();
            std::fs::write(d.join("oom_score_adj"), "0\n").unwrap();
        }
    }

    fn kept(n: i32) -> (Option<usize>, usize) {
        let tmp = tempfile::tempdir().unwrap();
        write_procs(tmp.path(), n);
        let root = super::super::ProcRoot::new(tmp.path());
        let cache = Arc::new(Mutex::new(ProcCache::new(root, 16)));
        let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let k = Keeper::start(Fixture(tmp.path().into(), listed.clone()), cache).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while listed.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the first table land (a loaded machine may take seconds to read thousands);
        // a scope too small to keep never has one: looked at after 300 ms.
        let settle = Instant::now() + Duration::from_millis(300);
        let mut t = None;
        while Instant::now() < deadline {
            t = k.table(monotonic_ms(), Needs::default());
            if t.is_some() || (n < KEEP_FROM as i32 && Instant::now() > settle) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (t.map(|t| t.procs.len()), listed.load(Ordering::Relaxed))
    }

    #[test]
    fn a_scope_of_thousands_is_kept_and_a_small_one_is_left_to_the_kill_path() {
        assert_eq!(kept(KEEP_FROM as i32), (Some(KEEP_FROM), 1));
        assert_eq!(kept(100), (None, 1), "a small scope: listed once, not kept");
    }

    #[test]
    fn growth_outside_the_head_sends_the_kill_to_a_full_scan() {
        let t = table(Vec::new());
        let total = 4 << 20;
        // A 1 GiB/s runaway started after the table: 300 MiB in use more, the head flat.
        assert!(!explained(&t, 500_000 + (300 << 10), 0, total));
        // The head grew by as much: it holds the runaway.
        assert!(explained(&t, 500_000 + (300 << 10), 300 << 10, total));
        // Churn below 1/32 of the scope (128 MiB of 4 GiB) elsewhere.
        assert!(explained(&t, 500_000 + (100 << 10), 0, total));
        // A table read without the scope's memory proves nothing.
        let blind = Table {
            used_kib: None,
            ..table(Vec::new())
        };
        assert!(!explained(&blind, 0, 0, total));
    }

    #[test]
    fn processes_started_since_the_table_are_added_with_their_size() {
        let t = table(vec![ProcInfo::for_tests(1, 0, 100)]);
        let (mut scan, _) =
            with_fresh_head(&t, Some(0), |pid| Ok(ProcInfo::for_tests(pid, 0, 100)));
        let grown = add_new(&mut scan, &t, &[1, 2, 3], |pid| match pid {
            2 => Ok(ProcInfo::for_tests(2, 0, 300 << 10)),
            _ => Err(ProcError::Vanished { pid }),
        });
        let pids: Vec<i32> = scan.procs.iter().map(|p| p.pid).collect();
        assert_eq!((pids, scan.vanished, grown), (vec![1, 2], 1, 300 << 10));
    }

    #[test]
    fn a_table_is_fresh_for_a_second_or_three_of_its_scans() {
        let t = |took_ms| Table {
            at_ms: 10_000,
            took: Duration::from_millis(took_ms),
            ..table(Vec::new())
        };
        assert!(t(50).fresh_at(11_000));
        assert!(!t(50).fresh_at(11_001));
        assert!(t(1_000).fresh_at(13_500));
        assert!(!t(1_000).fresh_at(13_501));
    }
}
