//! Reading the process table: the few per-process facts ranking needs, read from a proc tree
//! under an injectable root (`/proc` in production, a fixture directory in tests).
//!
//! Two readers. [`ProcRoot`] is stateless: it opens `stat` and `oom_score_adj` per pid (for
//! `lowmemd rank` and fixtures). [`ProcCache`] is the pipeline's hot path: it keeps each
//! process's `statm` and `oom_score_adj` open across scans and re-reads them with `pread`.
//! Measured here (kernel 6.18, 2,000 processes): opening a /proc/PID file costs ~5 µs, a
//! pread of `oom_score_adj` ~0.5 µs, of `statm` ~1.4 µs, of `stat` ~4.5 µs. `status` (for
//! VmSwap) costs ~10 µs, so it is read only when the scope has swap in use.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, openat};

use crate::policy::rules::{Attrs, Needs};
use procfs_core::FromRead;
use procfs_core::process::Stat;

/// `PF_KTHREAD` from include/linux/sched.h: set in `stat` flags for kernel threads.
const PF_KTHREAD: u32 = 0x0020_0000;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited between listing and reading: a normal race, counted, not warned.
    #[error("pid {pid} vanished while being read")]
    Vanished { pid: i32 },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What ranking needs to know about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub comm: String,
    /// Process state letter from `stat` (`R`, `S`, `Z`, ...).
    pub state: char,
    /// `stat` flags; see [`ProcInfo::is_kernel_thread`].
    pub flags: u32,
    /// Start time in clock ticks since boot: with the pid, the identity of one incarnation.
    pub starttime: u64,
    pub oom_score_adj: i16,
    pub rss_kib: u64,
    pub swap_kib: u64,
    /// What policy rules look at; filled only with what the rules need.
    pub attrs: Attrs,
}

impl ProcInfo {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    pub fn is_zombie(&self) -> bool {
        // X (dead) is transient but just as unkillable as Z.
        matches!(self.state, 'Z' | 'X')
    }

    /// The size a kill would give back: resident plus swapped-out memory.
    pub fn size_kib(&self) -> u64 {
        self.rss_kib + self.swap_kib
    }
}

/// Where a process's memory is, from `/proc/PID/status` (read for one process at a time:
/// before and after a page-out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemDetail {
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub swap_kib: u64,
}

impl MemDetail {
    pub fn resident_kib(&self) -> u64 {
        self.rss_anon_kib + self.rss_file_kib + self.rss_shmem_kib
    }

    /// Parses the `Rss*` and `VmSwap` lines of a status file.
    pub fn parse(status: &str) -> MemDetail {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        MemDetail {
            rss_anon_kib: kib("RssAnon:"),
            rss_file_kib: kib("RssFile:"),
            rss_shmem_kib: kib("RssShmem:"),
            swap_kib: kib("VmSwap:"),
        }
    }
}

/// The few fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLite {
    pub comm: String,
    pub state: char,
    pub flags: u32,
    pub starttime: u64,
    pub rss_pages: u64,
}

/// A proc tree: `/proc` or a fixture laid out like it.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
    page_kib: u64,
}

impl Default for ProcRoot {
    fn default() -> Self {
        Self::new("/proc")
    }
}

/// The outcome of reading many pids: what was read, and how many raced away.
#[derive(Debug, Default)]
pub struct Scan {
    pub procs: Vec<ProcInfo>,
    pub vanished: usize,
    /// Unreadable or unparsable entries (each names its path); the scan goes on without them.
    pub errors: Vec<ProcError>,
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let page_kib = (rustix::param::page_size() / 1024) as u64;
        Self {
            root: root.into(),
            page_kib,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Every numeric entry of the root: all thread-group leaders.
    pub fn pids(&self) -> Result<Vec<i32>, ProcError> {
        let dir = std::fs::read_dir(&self.root).map_err(|source| ProcError::Io {
            path: self.root.clone(),
            source,
        })?;
        Ok(dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
            .collect())
    }

    /// Reads `pid`'s facts. `with_swap` adds a `status` read for `VmSwap`.
    pub fn read(
        &self,
        pid: i32,
        with_swap: bool,
        buf: &mut Vec<u8>,
    ) -> Result<ProcInfo, ProcError> {
        self.read_with(pid, with_swap, Needs::default(), buf)
    }

    /// [`ProcRoot::read`] plus the attributes rules need.
    pub fn read_with(
        &self,
        pid: i32,
        with_swap: bool,
        needs: Needs,
        buf: &mut Vec<u8>,
    ) -> Result<ProcInfo, ProcError> {
        let stat = self.read_stat(pid, buf)?;
        let adj_path = self.file(pid, "oom_score_adj");
        read_into(&adj_path, pid, buf)?;
        let oom_score_adj = parse_adj(buf).ok_or_else(|| ProcError::Malformed {
            path: adj_path,
            what: format!(
                "oom_score_adj {:?} is not a number in -1000..=1000",
                String::from_utf8_lossy(buf).trim()
            ),
        })?;
        let swap_kib = if with_swap {
            let path = self.file(pid, "status");
            read_into(&path, pid, buf)?;
            parse_vm_swap_kib(buf)
        } else {
            0
        };
        Ok(ProcInfo {
            pid,
            comm: stat.comm,
            state: stat.state,
            flags: stat.flags,
            starttime: stat.starttime,
            oom_score_adj,
            rss_kib: stat.rss_pages * self.page_kib,
            swap_kib,
            attrs: self.read_attrs(pid, needs),
        })
    }

    /// The attributes `needs` asks for. Unreadable ones stay `None` (a rule on them then
    /// does not match): exe of a kernel thread, or of another user's process without
    /// ptrace access.
    pub fn read_attrs(&self, pid: i32, needs: Needs) -> Attrs {
        let mut a = Attrs::default();
        if needs.cmdline {
            a.cmdline = std::fs::read(self.file(pid, "cmdline")).ok().map(|b| {
                let s = String::from_utf8_lossy(&b).replace('\0', " ");
                s.trim_end().to_string()
            });
        }
        if needs.exe {
            a.exe = std::fs::read_link(self.file(pid, "exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
        }
        if needs.uid {
            use std::os::unix::fs::MetadataExt;
            a.uid = std::fs::metadata(self.root.join(pid.to_string()))
                .ok()
                .map(|m| m.uid());
        }
        if needs.cgroup {
            let text = std::fs::read_to_string(self.file(pid, "cgroup")).unwrap_or_default();
            a.cgroups = text
                .lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .map(str::to_owned)
                .collect();
        }
        a
    }

    /// Where `pid`'s memory is (resident anon/file/shmem, swapped).
    pub fn mem_detail(&self, pid: i32) -> Result<MemDetail, ProcError> {
        let path = self.file(pid, "status");
        let mut buf = Vec::new();
        read_into(&path, pid, &mut buf)?;
        Ok(MemDetail::parse(&String::from_utf8_lossy(&buf)))
    }

    /// Reads and parses `/proc/PID/stat`.
    pub fn read_stat(&self, pid: i32, buf: &mut Vec<u8>) -> Result<StatLite, ProcError> {
        let path = self.file(pid, "stat");
        read_into(&path, pid, buf)?;
        parse_stat(buf).map_err(|what| ProcError::Malformed { path, what })
    }

    /// Reads many pids, keeping the readable ones.
    pub fn scan(&self, pids: impl IntoIterator<Item = i32>, with_swap: bool) -> Scan {
        self.scan_with(pids, with_swap, Needs::default())
    }

    /// [`ProcRoot::scan`] plus the attributes rules need.
    pub fn scan_with(
        &self,
        pids: impl IntoIterator<Item = i32>,
        with_swap: bool,
        needs: Needs,
    ) -> Scan {
        let mut scan = Scan::default();
        let mut buf = Vec::with_capacity(1024);
        for pid in pids {
            match self.read_with(pid, with_swap, needs, &mut buf) {
                Ok(p) => scan.procs.push(p),
                Err(ProcError::Vanished { .. }) => scan.vanished += 1,
                Err(e) => scan.errors.push(e),
            }
        }
        scan
    }

    /// The cgroup path of `pid` in the hierarchy that has `controller` (v1), or in the unified
    /// hierarchy when `controller` is `None`, as written in `/proc/PID/cgroup`.
    pub fn cgroup_of(&self, pid: i32, controller: Option<&str>) -> Result<String, ProcError> {
        let path = self.file(pid, "cgroup");
        let mut buf = Vec::new();
        read_into(&path, pid, &mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        for line in text.lines() {
            // "hierarchy-ID:controller-list:cgroup-path"; the path may itself contain ':'.
            let mut parts = line.splitn(3, ':');
            let (Some(_id), Some(ctrls), Some(cg)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let hit = match controller {
                Some(c) => ctrls.split(',').any(|x| x == c),
                None => ctrls.is_empty(),
            };
            if hit {
                return Ok(cg.to_string());
            }
        }
        Err(ProcError::Malformed {
            path,
            what: format!(
                "no line for the {} hierarchy",
                controller.unwrap_or("unified")
            ),
        })
    }

    pub fn file(&self, pid: i32, name: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        p.push(name);
        p
    }
}

/// Reads a whole small file into `buf`, mapping "the process is gone" to `Vanished`.
fn read_into(path: &Path, pid: i32, buf: &mut Vec<u8>) -> Result<(), ProcError> {
    buf.clear();
    let res = File::open(path).and_then(|mut f| f.read_to_end(buf));
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_gone(&e) => Err(ProcError::Vanished { pid }),
        Err(source) => Err(ProcError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// ENOENT (the pid directory went away) or ESRCH (the task died while we read its file).
pub fn is_gone(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOENT | Errno::SRCH))
}

/// The hot-path reader: open `statm` and `oom_score_adj` files per process, kept across scans.
///
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
        pread_into(e.adj.as_fd(), pid, buf, || root.file(pid, "oom_score_adj"))?;
        let oom_score_adj = parse_adj(buf).ok_or_else(|| ProcError::Malformed {
            path: root.file(pid, "oom_score_adj"),
            what: format!(
                "oom_score_adj {:?} is not a number in -1000..=1000",
                String::from_utf8_lossy(buf).trim()
            ),
        })?;
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
        pread_into(e.statm.as_fd(), pid, buf, || root.file(pid, "statm"))?;
        let (size_pages, rss_pages) = parse_statm(buf).ok_or_else(|| ProcError::Malformed {
            path: root.file(pid, "statm"),
            what: format!(
                "statm {:?} is not `size resident ...`",
                String::from_utf8_lossy(buf).trim()
            ),
        })?;
        info.rss_kib = rss_pages * root.page_kib;
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
            .map_err(|e| gone_or_io(e.into(), pid, self.root.file(pid, name)))
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

fn gone_or_io(e: io::Error, pid: i32, path: PathBuf) -> ProcError {
    if is_gone(&e) {
        ProcError::Vanished { pid }
    } else {
        ProcError::Io { path, source: e }
    }
}

/// One pread from offset 0: /proc files hand out their whole (small) text in one read.
fn pread_into(
    fd: std::os::fd::BorrowedFd<'_>,
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
        Err(e) => Err(gone_or_io(e.into(), pid, path())),
    }
}

/// The first two fields of `statm`: total and resident pages.
fn parse_statm(buf: &[u8]) -> Option<(u64, u64)> {
    let mut f = std::str::from_utf8(buf).ok()?.split_ascii_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
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

/// Parses `stat` with procfs-core after checking the shape its parser slices by: it indexes
/// around the first '(' and the last ')' and would panic on a line without them (only a
/// hostile or broken proc tree has one, but we never panic on input).
pub fn parse_stat(buf: &[u8]) -> Result<StatLite, String> {
    let open = buf.iter().position(|&b| b == b'(');
    let close = buf.iter().rposition(|&b| b == b')');
    let trimmed_len = buf.trim_ascii_end().len();
    match (open, close) {
        (Some(o), Some(c)) if o >= 2 && c > o && c + 2 < trimmed_len && buf[c + 1] == b' ' => {}
        _ => return Err("not a stat line: expected `pid (comm) state ...`".into()),
    }
    let stat = Stat::from_read(buf).map_err(|e| format!("unparsable stat line: {e}"))?;
    Ok(StatLite {
        comm: stat.comm,
        state: stat.state,
        flags: stat.flags,
        starttime: stat.starttime,
        rss_pages: stat.rss,
    })
}

fn parse_adj(buf: &[u8]) -> Option<i16> {
    let adj: i16 = std::str::from_utf8(buf).ok()?.trim().parse().ok()?;
    (-1000..=1000).contains(&adj).then_some(adj)
}

/// `VmSwap:` from `status`, in KiB; 0 when absent (kernel threads, old kernels).
fn parse_vm_swap_kib(buf: &[u8]) -> u64 {
    buf.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"VmSwap:"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm_parses_by_last_paren() {
        let line = b"42 (a) Z 1 (b) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 1000 25 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) Z 1 (b");
        assert_eq!(s.state, 'S');
        assert_eq!(s.starttime, 777);
        assert_eq!(s.rss_pages, 25);
    }

    #[test]
    fn broken_stat_lines_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"(",
            b")",
            b"1 (x)",
            b"1 (x) ",
            b"(x) S 1",
            b"1 )x( S",
            b"1 (x)\xffS 1",
            b"1 (x) S",
            &[0xff; 64],
        ] {
            assert!(
                parse_stat(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn adj_must_be_in_range() {
        assert_eq!(parse_adj(b"900\n"), Some(900));
        assert_eq!(parse_adj(b"-1000\n"), Some(-1000));
        assert_eq!(parse_adj(b"1001\n"), None);
        assert_eq!(parse_adj(b"x\n"), None);
        assert_eq!(parse_adj(b""), None);
    }

    #[test]
    fn mem_detail_from_status() {
        let d = MemDetail::parse(
            "Name:\tx\nRssAnon:\t  100 kB\nRssFile:\t 2000 kB\nRssShmem:\t 3 kB\nVmSwap:\t 50 kB\n",
        );
        assert_eq!(d.resident_kib(), 2103);
        assert_eq!(d.swap_kib, 50);
        assert_eq!(MemDetail::parse("garbage"), MemDetail::default());
    }

    #[test]
    fn statm_fields() {
        assert_eq!(parse_statm(b"2000 150 100 1 0 50 0\n"), Some((2000, 150)));
        assert_eq!(parse_statm(b"0 0 0 0 0 0 0\n"), Some((0, 0)));
        assert_eq!(parse_statm(b"12\n"), None);
    }

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

    #[test]
    fn vm_swap_is_read_from_status() {
        assert_eq!(parse_vm_swap_kib(b"Name:\tx\nVmSwap:\t  1234 kB\n"), 1234);
        assert_eq!(parse_vm_swap_kib(b"Name:\tkthreadd\n"), 0);
    }
}
