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

use super::parse::{Statm, parse_adj, parse_stat, parse_statm, parse_vm_swap_kib};
use super::{Attrs, Needs, ProcError, ProcInfo, ProcRoot, Scan};

/// An open /proc/PID file or directory is bound to its process, not to the number: once
/// that process is reaped, pread fails with ESRCH and opening a file in the directory fails
/// with ENOENT, so a recycled pid is never read through an old entry; it gets a fresh entry
/// (and a fresh starttime) instead. `stat` is read when the entry is made: starttime never
/// changes, and a zombie shows up as an all-zero `statm`. An exec keeps the pid and the
/// starttime but changes comm, cmdline and exe, and a process may rename itself
/// (PR_SET_NAME) at any time. When `statm`'s text size (the executable's code: a different
/// program) changed, or — where a rule matches by name ([`Needs::comm`]) — `comm`, re-read
/// with `statm`, did, `stat` and the rule attributes are read again, so a process caught
/// between fork and exec is not ranked as its parent for the rest of its life. (Reading
/// `comm` every scan triples the scan's cost, measured: 9.1 against 2.9 ms for 1,971
/// processes; hence only for name rules. An exec into a program of the same code size,
/// e.g. busybox's applets, is seen only through the name; a setproctitle() that leaves
/// comm alone is not seen.)
#[derive(Debug)]
pub struct ProcCache {
    root: ProcRoot,
    dir: Option<OwnedFd>,
    entries: HashMap<i32, Entry>,
    /// Most processes kept open (four fds each); the rest are read the stateless way.
    max_entries: usize,
    generation: u64,
    buf: Vec<u8>,
    /// Runs in `open_entry` right after the identity (`stat`) is read and before the other
    /// files are opened: where a recycled pid would pair two incarnations. Tests swap the
    /// fixture's pid directory there.
    #[cfg(test)]
    after_stat: Option<fn(&std::path::Path, i32)>,
}

#[derive(Debug)]
struct Entry {
    /// The process's /proc/PID directory, kept so that files read later (`status`, for
    /// swap) come from the same incarnation as `stat`, `statm` and `oom_score_adj` rather
    /// than from whoever holds the number by then. It costs one fd but little kernel memory:
    /// ~0.2 KiB of slab per process measured here, against ~4.5 KiB for the two files (their
    /// dentries already pin the directory's dentry and inode).
    dir: OwnedFd,
    statm: OwnedFd,
    adj: OwnedFd,
    comm_fd: OwnedFd,
    /// Rule attributes, read once (and again when a reloaded policy needs more).
    attrs: Attrs,
    needs: Needs,
    comm: String,
    state: char,
    flags: u32,
    starttime: u64,
    /// `statm`'s text size when comm and the attributes were read (read before them).
    text_pages: u64,
    generation: u64,
}

impl ProcCache {
    /// `max_entries` bounds the fds held (3 per process) and the kernel memory they pin.
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
            #[cfg(test)]
            after_stat: None,
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
        let statm = read_statm(e.statm.as_fd(), pid, buf, root)?;
        let renamed = if needs.comm {
            let comm_path = || root.file(pid, "comm");
            pread_into(e.comm_fd.as_fd(), pid, buf, comm_path)?;
            buf.strip_suffix(b"\n").unwrap_or(buf) != e.comm.as_bytes()
        } else {
            false
        };
        // An exited process not yet reaped has no mm left: its statm reads all zeros.
        if statm.size == 0 && !info.is_kernel_thread() {
            info.state = 'Z';
        } else if statm.text != e.text_pages || renamed {
            // It exec'd or renamed itself since comm and the attributes were read: read
            // them again, through the same directory (the same incarnation).
            let path = || root.file(pid, "stat");
            pread_into(
                open_in(e.dir.as_fd(), "stat", pid, path)?.as_fd(),
                pid,
                buf,
                path,
            )?;
            let stat = parse_stat(buf).map_err(|what| ProcError::malformed(path(), what))?;
            (e.comm, e.state, e.flags) = (stat.comm, stat.state, stat.flags);
            e.attrs = root.read_attrs(pid, needs);
            e.text_pages = statm.text;
            (info.comm, info.state, info.flags) = (e.comm.clone(), e.state, e.flags);
            info.attrs = e.attrs.clone();
        }
        info.rss_kib = statm.resident * root.page_kib();
        if with_swap {
            let path = || root.file(pid, "status");
            let status = open_in(e.dir.as_fd(), "status", pid, path)?;
            pread_into(status.as_fd(), pid, buf, path)?;
            info.swap_kib = parse_vm_swap_kib(buf);
        }
        Ok(info)
    }

    /// Opens `/proc/PID` once and everything else relative to it. Reading `stat` by path and
    /// opening the other files by path would let a pid recycled in between pair the old
    /// process's starttime and comm with the new one's files, for as long as the new one
    /// lived: mis-ranked, and never pinnable (its starttime never matches). Through the
    /// directory fd, a process reaped in between makes the opens fail (Vanished) instead.
    /// Rule attributes are still read by path (`ProcRoot::read_attrs`), but before the first
    /// pread of this entry: a later pread that succeeds shows the process was not reaped yet,
    /// so the number was still its own when the attributes were read.
    fn open_entry(&mut self, pid: i32, needs: Needs) -> Result<Entry, ProcError> {
        let proc_dir = self.dir.as_ref().expect("checked by the caller");
        let root = &self.root;
        let dir = openat(
            proc_dir,
            pid.to_string().as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ProcError::from_io(e.into(), pid, &root.path().join(pid.to_string())))?;
        let open = |name: &str| open_in(dir.as_fd(), name, pid, || root.file(pid, name));
        // The text size first: an exec after this read shows as a change at the next one.
        let statm = open("statm")?;
        let text_pages = read_statm(statm.as_fd(), pid, &mut self.buf, root)?.text;
        let comm_fd = open("comm")?;
        // Read through the fd just opened (then closed: starttime never changes, and an
        // exec is noticed through statm).
        pread_into(open("stat")?.as_fd(), pid, &mut self.buf, || {
            root.file(pid, "stat")
        })?;
        let stat = parse_stat(&self.buf)
            .map_err(|what| ProcError::malformed(root.file(pid, "stat"), what))?;
        #[cfg(test)]
        if let Some(hook) = self.after_stat {
            hook(root.path(), pid);
        }
        Ok(Entry {
            statm,
            comm_fd,
            adj: open("oom_score_adj")?,
            dir,
            attrs: root.read_attrs(pid, needs),
            needs,
            comm: stat.comm,
            state: stat.state,
            flags: stat.flags,
            starttime: stat.starttime,
            text_pages,
            generation: self.generation,
        })
    }
}

fn read_statm(
    fd: BorrowedFd<'_>,
    pid: i32,
    buf: &mut Vec<u8>,
    root: &ProcRoot,
) -> Result<Statm, ProcError> {
    let path = || root.file(pid, "statm");
    pread_into(fd, pid, buf, path)?;
    parse_statm(buf).map_err(|what| ProcError::malformed(path(), what))
}

/// Opens `name` in a /proc/PID directory fd: fails (Vanished) once that process is reaped.
fn open_in(
    dir: BorrowedFd<'_>,
    name: &str,
    pid: i32,
    path: impl Fn() -> PathBuf,
) -> Result<OwnedFd, ProcError> {
    openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ProcError::from_io(e.into(), pid, &path()))
}

/// Reads from offset 0 until a short read: a /proc file hands out its whole text in one
/// read when the buffer holds it, so `statm` and `oom_score_adj` cost one pread; `stat`
/// (~330 bytes here, more with long kernel-thread names) or `status` may take another.
fn pread_into(
    fd: BorrowedFd<'_>,
    pid: i32,
    buf: &mut Vec<u8>,
    path: impl Fn() -> PathBuf,
) -> Result<(), ProcError> {
    buf.clear();
    let mut len = 0;
    loop {
        buf.resize(len + 1024, 0);
        match rustix::io::pread(fd, &mut buf[len..], len as u64) {
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    buf.truncate(len);
                    return Ok(());
                }
            }
            Err(e) => return Err(ProcError::from_io(e.into(), pid, &path())),
        }
    }
}

/// Raises the soft open-file limit to the hard one (the cache holds four fds per process)
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

/// How many processes a [`ProcCache`] may keep open under an fd limit: four fds each
/// (directory, `statm`, `oom_score_adj`, `comm`), with room for everything else; at most
/// 4,096 processes (~19 MiB of kernel slab measured here for the first three, nearly all of
/// it the open files). The full 4,096 needs a hard limit of 16,512; systemd's default
/// (524,288) and most containers' have it.
pub fn cache_capacity(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(128) / 4).min(4096) as usize
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

    /// A fixture process: `stat` (comm, starttime, rss), `statm`, `oom_score_adj` and a
    /// `status` whose VmSwap repeats the adj, to tell incarnations apart.
    fn write_proc(dir: &std::path::Path, comm: &str, starttime: u64, adj: i16, rss_pages: u64) {
        std::fs::create_dir_all(dir).unwrap();
        let stat = format!(
            "100 ({comm}) S 1 100 100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {starttime} 1000000 {rss_pages} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        );
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(dir.join("statm"), format!("1000 {rss_pages} 0 1 0 50 0\n")).unwrap();
        std::fs::write(dir.join("oom_score_adj"), format!("{adj}\n")).unwrap();
        std::fs::write(
            dir.join("status"),
            format!("Name:\t{comm}\nVmSwap:\t{adj} kB\n"),
        )
        .unwrap();
    }

    /// Recycles `pid` in a fixture: the old incarnation's directory moves away (files
    /// opened through it still read it, as an open /proc/PID dir still means the process it
    /// was opened for), and a new incarnation takes the number.
    fn recycle(root: &std::path::Path, pid: i32) {
        std::fs::rename(root.join(pid.to_string()), root.join(format!("old-{pid}"))).unwrap();
        write_proc(&root.join(pid.to_string()), "new", 2000, 500, 7);
    }

    fn fixture_with_old_100() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        write_proc(&tmp.path().join("100"), "old", 1000, 900, 3);
        tmp
    }

    #[test]
    fn an_exec_after_the_entry_was_made_is_noticed() {
        // Forked from a shell, caught before it exec'd the leak.
        let tmp = fixture_with_old_100();
        let dir = tmp.path().join("100");
        let mut cache = ProcCache::new(ProcRoot::new(tmp.path()), 16);
        // A policy with a rule by name: comm is watched too.
        let by_name = Needs {
            comm: true,
            ..Default::default()
        };
        assert_eq!(
            cache.scan_with([100], None, false, by_name).procs[0].comm,
            "old"
        );
        // The exec: same pid and starttime, a new program (comm, code size).
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        std::fs::write(dir.join("stat"), stat.replace("(old)", "(leak)")).unwrap();
        std::fs::write(dir.join("statm"), "50000 40000 0 9 0 50 0\n").unwrap();
        let p = &cache.scan_with([100], None, false, by_name).procs[0];
        assert_eq!((p.comm.as_str(), p.starttime), ("leak", 1000));
        assert_eq!(p.rss_kib, 40_000 * ProcRoot::new(tmp.path()).page_kib());
        // An exec into a program of the same code size (a busybox applet): the name tells.
        std::fs::write(dir.join("stat"), stat.replace("(old)", "(sh)")).unwrap();
        std::fs::write(dir.join("comm"), "sh\n").unwrap();
        assert_eq!(
            cache.scan_with([100], None, false, by_name).procs[0].comm,
            "sh"
        );
        // Neither changed: stat is not read again.
        std::fs::write(dir.join("stat"), stat.replace("(old)", "(unread)")).unwrap();
        assert_eq!(
            cache.scan_with([100], None, false, by_name).procs[0].comm,
            "sh"
        );
    }

    #[test]
    fn an_entry_reads_identity_and_files_of_one_incarnation() {
        let tmp = fixture_with_old_100();
        let mut cache = ProcCache::new(ProcRoot::new(tmp.path()), 16);
        cache.after_stat = Some(recycle);
        let scan = cache.scan([100], None, false);
        let p = &scan.procs[0];
        let page_kib = ProcRoot::new(tmp.path()).page_kib();
        assert_eq!(
            (p.comm.as_str(), p.starttime, p.oom_score_adj, p.rss_kib),
            ("old", 1000, 900, 3 * page_kib),
            "identity and files from different incarnations: {p:?}"
        );
    }

    /// The old incarnation is reaped (its directory empties and goes) as the new one takes
    /// the number.
    fn reap_and_recycle(root: &std::path::Path, pid: i32) {
        recycle(root, pid);
        std::fs::remove_dir_all(root.join(format!("old-{pid}"))).unwrap();
    }

    #[test]
    fn a_pid_reaped_while_its_entry_opens_vanishes_then_reads_afresh() {
        let tmp = fixture_with_old_100();
        let mut cache = ProcCache::new(ProcRoot::new(tmp.path()), 16);
        cache.after_stat = Some(reap_and_recycle);
        let scan = cache.scan([100], None, false);
        assert_eq!((scan.procs.len(), scan.vanished, cache.cached()), (0, 1, 0));
        cache.after_stat = None;
        let p = cache.scan([100], None, false).procs.remove(0);
        assert_eq!(
            (p.comm.as_str(), p.starttime, p.oom_score_adj),
            ("new", 2000, 500)
        );
    }

    #[test]
    fn swap_is_read_from_the_incarnation_the_entry_was_opened_for() {
        let tmp = fixture_with_old_100();
        let mut cache = ProcCache::new(ProcRoot::new(tmp.path()), 16);
        assert_eq!(cache.scan([100], None, true).procs[0].swap_kib, 900);
        // Recycled between two scans: on a real /proc the entry's preads would now fail;
        // in the fixture they still read the old files, and so must `status`.
        recycle(tmp.path(), 100);
        let p = cache.scan([100], None, true).procs.remove(0);
        assert_eq!((p.starttime, p.oom_score_adj, p.swap_kib), (1000, 900, 900));
    }

    /// What the cache relies on, checked on the running kernel: once a process is reaped, a
    /// directory fd of its /proc/PID opens nothing and its open files read nothing, even
    /// though the number may already be someone else's.
    #[test]
    fn a_reaped_process_is_unreachable_through_its_fds() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(
            format!("/proc/{pid}"),
            flags | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let statm = openat(&dir, "statm", flags, Mode::empty()).unwrap();
        let mut buf = [0u8; 512];
        assert!(rustix::io::pread(&statm, &mut buf, 0).unwrap() > 0);
        child.kill().unwrap();
        child.wait().unwrap();
        let opened = openat(&dir, "oom_score_adj", flags, Mode::empty());
        assert!(
            opened
                .as_ref()
                .is_err_and(|e| super::super::is_gone(&(*e).into())),
            "{opened:?}"
        );
        let read = rustix::io::pread(&statm, &mut buf, 0);
        assert!(
            read.is_err_and(|e| super::super::is_gone(&e.into())),
            "{read:?}"
        );
    }
}
