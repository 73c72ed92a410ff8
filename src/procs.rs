//! Reading the process table: the few per-process facts ranking needs, read from a proc tree
//! under an injectable root (`/proc` in production, a fixture directory in tests).
//!
//! Hot path discipline (DESIGN.md §4): per pid we read `stat` (state, flags, starttime, RSS)
//! and `oom_score_adj`, ~2-3 µs together. `status` costs ~12 µs to parse, so it is read only
//! for swap, and only when the scope has swap in use.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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
        })
    }

    /// Reads and parses `/proc/PID/stat`.
    pub fn read_stat(&self, pid: i32, buf: &mut Vec<u8>) -> Result<StatLite, ProcError> {
        let path = self.file(pid, "stat");
        read_into(&path, pid, buf)?;
        parse_stat(buf).map_err(|what| ProcError::Malformed { path, what })
    }

    /// Reads many pids, keeping the readable ones.
    pub fn scan(&self, pids: impl IntoIterator<Item = i32>, with_swap: bool) -> Scan {
        let mut scan = Scan::default();
        let mut buf = Vec::with_capacity(1024);
        for pid in pids {
            match self.read(pid, with_swap, &mut buf) {
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

    fn file(&self, pid: i32, name: &str) -> PathBuf {
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
    fn vm_swap_is_read_from_status() {
        assert_eq!(parse_vm_swap_kib(b"Name:\tx\nVmSwap:\t  1234 kB\n"), 1234);
        assert_eq!(parse_vm_swap_kib(b"Name:\tkthreadd\n"), 0);
    }
}
