//! The hot-path reader: `statm` and `oom_score_adj` kept open per process across scans and
//! re-read with `pread`, and how many processes it may keep open under the fd limit.
//!
//! Measured here (kernel 6.18, 2,000 processes): opening a /proc/PID file costs ~5 µs, a
//! pread of `oom_score_adj` ~0.5 µs, of `statm` ~1.4 µs, of `stat` ~4.5 µs. `status` (for
//! VmSwap) costs ~10 µs, so it is read only when the scope has swap in use.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, openat};

use super::parse::{parse_adj, parse_statm, parse_vm_swap_kib};
use super::root::read_into;
use super::{Attrs, Needs, ProcError, ProcInfo, ProcRoot, Scan};

/// An open /proc/PID file is bound to its process, not to the number: once that process is
/// reaped, pread fails with ESRCH, so a recycled pid is never read through an old entry; it
/// gets a fresh entry (and a fresh starttime) instead. `stat` is read once, when the entry is
/// made: starttime and flags never change, and a zombie shows up as an all-zero `statm`.
/// `comm` can change on exec: it is refreshed for the victim when it is pinned.
#[derive(Debug)]
pub struct ProcCache {
    root: ProcRoot,
    dir: Option<OwnedFd>,
    entries: HashMap<i32, Entry>,
    /// Most processes kept open (two fds each); the rest are read the stateless way.
    max_entries: usize,
    generation: u64,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    statm: OwnedFd,
    adj: OwnedFd,
    /// Rule attributes, read once (and again when a reloaded policy needs more).
    attrs: Attrs,
    needs: Needs,
    comm: String,
    state: char,
    flags: u32,
    starttime: u64,
    generation: u64,
}

impl ProcCache {
    /// `max_entries` bounds the fds held (2 per process) and the kernel memory they pin.
    pub fn new(root: ProcRoot, max_entries: usize) -> Self {
        let dir = rustix::fs::open(
            root.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        ProcCache {
            root,
            dir,
            entries: HashMap::new(),
            max_entries,
            generation: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    pub fn cached(&self) -> usize {
        self.entries.len()
    }

    /// Reads `pids`. Processes with adj below `min_adj` are returned without their size
    /// (0): they are not candidates and their `statm` read is skipped.
    pub fn scan(
        &mut self,
        pids: impl IntoIterator<Item = i32>,
        min_adj: Option<i16>,
        with_swap: bool,
    ) -> Scan {
        self.scan_with(pids, min_adj, with_swap, Needs::default())
    }

    /// [`ProcCache::scan`] plus the attributes rules need.
    pub fn scan_with(
        &mut self,
        pids: impl IntoIterator<Item = i32>,
        min_adj: Option<i16>,
        with_swap: bool,
        needs: Needs,
    ) -> Scan {
        self.generation += 1;
        let mut scan = Scan::default();
        for pid in pids {
            match self.read_one(pid, min_adj, with_swap, needs) {
                Ok(p) => scan.procs.push(p),
                Err(ProcError::Vanished { .. }) => {
                    self.entries.remove(&pid);
                    scan.vanished += 1;
                }
                Err(e) => {
                    self.entries.remove(&pid);
                    scan.errors.push(e);
                }
            }
        }
        // Drop what was not listed this time: exited, or left the scope.
        let g = self.generation;
        self.entries.retain(|_, e| e.generation == g);
        scan
    }

    fn read_one(
        &mut self,
        pid: i32,
        min_adj: Option<i16>,
        with_swap: bool,
        needs: Needs,
    ) -> Result<ProcInfo, ProcError> {
        if !self.entries.contains_key(&pid) {
            if self.entries.len() >= self.max_entries || self.dir.is_none() {
                return self.root.read_with(pid, with_swap, needs, &mut self.buf);
            }
            let entry = self.open_entry(pid, needs)?;
            self.entries.insert(pid, entry);
        }
        let (root, buf) = (&self.root, &mut self.buf);
        let e = self.entries.get_mut(&pid).expect("inserted above");
        e.generation = self.generation;
        if e.needs != needs {
            e.attrs = root.read_attrs(pid, needs);
            e.needs = needs;
        }
        let adj_path = || root.file(pid, "oom_score_adj");
        pread_into(e.adj.as_fd(), pid, buf, adj_path)?;
        let oom_score_adj =
            parse_adj(buf).map_err(|what| ProcError::malformed(adj_path(), what))?;
        let mut info = ProcInfo {
            pid,
            comm: e.comm.clone(),
            state: e.state,
            flags: e.flags,
            starttime: e.starttime,
            oom_score_adj,
            rss_kib: 0,
            swap_kib: 0,
            attrs: e.attrs.clone(),
        };
        if min_adj.is_some_and(|floor| oom_score_adj < floor) {
            return Ok(info);
        }
        let statm_path = || root.file(pid, "statm");
        pread_into(e.statm.as_fd(), pid, buf, statm_path)?;
        let (size_pages, rss_pages) =
            parse_statm(buf).map_err(|what| ProcError::malformed(statm_path(), what))?;
        info.rss_kib = rss_pages * root.page_kib();
        // An exited process not yet reaped has no mm left: its statm reads all zeros.
        if size_pages == 0 && !info.is_kernel_thread() {
            info.state = 'Z';
        }
        if with_swap {
            let path = root.file(pid, "status");
            read_into(&path, pid, buf)?;
            info.swap_kib = parse_vm_swap_kib(buf);
        }
        Ok(info)
    }

    fn open_entry(&mut self, pid: i32, needs: Needs) -> Result<Entry, ProcError> {
        let stat = self.root.read_stat(pid, &mut self.buf)?;
        let dir = self.dir.as_ref().expect("checked by the caller");
        let open = |name: &str| {
            openat(
                dir,
                format!("{pid}/{name}").as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ProcError::from_io(e.into(), pid, &self.root.file(pid, name)))
        };
        Ok(Entry {
            statm: open("statm")?,
            adj: open("oom_score_adj")?,
            attrs: self.root.read_attrs(pid, needs),
            needs,
            comm: stat.comm,
            state: stat.state,
            flags: stat.flags,
            starttime: stat.starttime,
            generation: self.generation,
        })
    }
}

/// One pread from offset 0: /proc files hand out their whole (small) text in one read.
fn pread_into(
    fd: BorrowedFd<'_>,
    pid: i32,
    buf: &mut Vec<u8>,
    path: impl Fn() -> PathBuf,
) -> Result<(), ProcError> {
    buf.clear();
    buf.resize(512, 0);
    match rustix::io::pread(fd, &mut buf[..], 0) {
        Ok(n) => {
            buf.truncate(n);
            Ok(())
        }
        Err(e) => Err(ProcError::from_io(e.into(), pid, &path())),
    }
}

/// Raises the soft open-file limit to the hard one (the cache holds two fds per process)
/// and returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// How many processes a [`ProcCache`] may keep open under an fd limit: two fds each, with
/// room for everything else; at most 4,096 processes (~8 MiB of pinned kernel objects).
pub fn cache_capacity(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(128) / 2).min(4096) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reads_the_same_as_the_stateless_reader_and_notices_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let root = ProcRoot::default();
        // Let it finish exec and fall asleep, so its RSS holds still between the two reads.
        let mut buf = Vec::new();
        while root.read_stat(pid, &mut buf).unwrap().state != 'S' {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut cache = ProcCache::new(root.clone(), 16);
        let cached = cache.scan([pid], None, false).procs.remove(0);
        let fresh = root.scan([pid], false).procs.remove(0);
        // RSS from statm and from stat both come from per-CPU counters that the kernel sums
        // approximately (6.2+): equal to within a few hundred KiB, not to the page.
        assert!(cached.rss_kib > 0 && fresh.rss_kib > 0);
        assert_eq!(
            ProcInfo {
                rss_kib: 0,
                ..cached
            },
            ProcInfo {
                rss_kib: 0,
                ..fresh
            }
        );
        assert_eq!(cache.cached(), 1);
        // Below the floor: no size read.
        let floor = cache.scan([pid], Some(1), false);
        assert_eq!(floor.procs[0].rss_kib, 0);
        child.kill().unwrap();
        // Not reaped yet: a zombie with no memory.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let z = cache.scan([pid], None, false);
        assert!(
            z.procs.iter().all(|p| p.is_zombie() && p.rss_kib == 0),
            "{z:?}"
        );
        child.wait().unwrap();
        let gone = cache.scan([pid], None, false);
        assert_eq!((gone.procs.len(), gone.vanished), (0, 1));
        assert_eq!(cache.cached(), 0);
    }

    #[test]
    fn cache_over_capacity_falls_back_and_forgets_unlisted_pids() {
        let me = std::process::id() as i32;
        let root = ProcRoot::default();
        let mut cache = ProcCache::new(root, 0);
        let s = cache.scan([me], None, false);
        assert_eq!((s.procs.len(), cache.cached()), (1, 0));
        let mut cache = ProcCache::new(ProcRoot::default(), 4);
        cache.scan([me, 1], None, false);
        assert_eq!(cache.cached(), 2);
        cache.scan([me], None, false);
        assert_eq!(cache.cached(), 1);
    }
}
