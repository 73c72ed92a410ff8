//! The process table: the few per-process facts ranking and rules need, read from a proc
//! tree under an injectable root (`/proc` in production, a fixture directory in tests).
//!
//! `parse` and `smaps` are pure parsers; [`ProcRoot`] (`root.rs`) is the stateless reader;
//! [`ProcCache`] (`cache.rs`) is the pipeline's hot path, keeping files open across scans.

mod cache;
pub mod keeper;
pub mod markings;
pub(crate) mod parse;
mod root;
pub mod smaps;

use std::io;
use std::path::PathBuf;

pub use cache::{ProcCache, cache_capacity, raise_fd_limit};
pub use markings::{CgroupMarks, Marking, OomPreference};
pub use parse::{MemDetail, StatLite, parse_stat};
pub use root::ProcRoot;
pub use smaps::{Backing, Region, parse_smaps};

/// `PF_KTHREAD` from include/linux/sched.h: set in `stat` flags for kernel threads.
pub const PF_KTHREAD: u32 = 0x0020_0000;

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
    /// A plain process for unit tests: comm `p<pid>`, starttime 100 + pid, sleeping.
    #[cfg(test)]
    pub(crate) fn for_tests(pid: i32, oom_score_adj: i16, rss_kib: u64) -> ProcInfo {
        ProcInfo {
            pid,
            comm: format!("p{pid}"),
            state: 'S',
            flags: 0,
            starttime: 100 + pid as u64,
            oom_score_adj,
            rss_kib,
            swap_kib: 0,
            attrs: Attrs::default(),
        }
    }

    /// A placeholder for a process moved out of a table (see
    /// `pipeline::rank::first_candidates`): pid 0, which no process in /proc has.
    pub fn taken() -> ProcInfo {
        ProcInfo {
            pid: 0,
            comm: String::new(),
            state: 'X',
            flags: 0,
            starttime: 0,
            oom_score_adj: 0,
            rss_kib: 0,
            swap_kib: 0,
            attrs: Attrs::default(),
        }
    }

    /// Whether this is a [`ProcInfo::taken`] placeholder.
    pub fn is_taken(&self) -> bool {
        self.pid == 0
    }

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

/// What rules may look at beyond `stat`/`oom_score_adj`. Read only when some rule needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// NUL-separated arguments joined with spaces.
    pub cmdline: Option<String>,
    /// Target of /proc/PID/exe.
    pub exe: Option<String>,
    /// Owner of /proc/PID (the effective uid).
    pub uid: Option<u32>,
    /// The real uid, from `status` (ranking by user).
    pub real_uid: Option<u32>,
    /// Every cgroup path of /proc/PID/cgroup (one per hierarchy).
    pub cgroups: Vec<String>,
    /// The cgroup in the unified hierarchy (the `0::` line), read with `cgroups`.
    pub unified_cgroup: Option<String>,
    /// systemd's ManagedOOMPreference= marking on that cgroup or an ancestor.
    pub marking: Option<Marking>,
}

/// Which attributes the rules of a policy need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub cmdline: bool,
    pub exe: bool,
    pub uid: bool,
    pub cgroup: bool,
    /// The cgroup in the unified hierarchy alone (ranking by owner): one string kept per
    /// process instead of one per hierarchy, cloned at every scan. Implied by `cgroup`.
    pub unified_cgroup: bool,
    /// The real uid (ranking by user): a `status` read, ~10 µs, once per process.
    pub real_uid: bool,
    /// The cgroup markings (`user.oomd_avoid` / `user.oomd_omit`); implies `cgroup`.
    pub marking: bool,
    /// A rule matches by name: the cache re-reads `comm` at every scan (a rename or an exec
    /// into a program of the same code size shows only there). ~3 µs a process, so only
    /// then.
    pub comm: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.cmdline
            || self.exe
            || self.uid
            || self.cgroup
            || self.unified_cgroup
            || self.real_uid
            || self.marking
    }

    /// Both sets of attributes.
    pub fn union(self, o: Needs) -> Needs {
        Needs {
            cmdline: self.cmdline || o.cmdline,
            exe: self.exe || o.exe,
            uid: self.uid || o.uid,
            cgroup: self.cgroup || o.cgroup,
            unified_cgroup: self.unified_cgroup || o.unified_cgroup,
            real_uid: self.real_uid || o.real_uid,
            marking: self.marking || o.marking,
            comm: self.comm || o.comm,
        }
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

/// ENOENT (the pid directory went away) or ESRCH (the task died while we read its file).
pub fn is_gone(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOENT | Errno::SRCH))
}

/// A process-chosen string (comm, cmdline) made safe to print: every control character,
/// newline included, escaped (`\u{a}`), so it can neither forge a log line nor send escape
/// sequences to a terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// `path` is `cgroup` or below it, by whole components (`/box2` is not within `/box`).
pub fn is_within(path: &str, cgroup: &str) -> bool {
    let cgroup = cgroup.trim_end_matches('/');
    cgroup.is_empty()
        || path == cgroup
        || path
            .strip_prefix(cgroup)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names_print_without_control_characters() {
        assert_eq!(printable("firefox"), "firefox");
        assert_eq!(
            printable("a\nlowmemd[info]: b\u{1b}[31m"),
            "a\\u{a}lowmemd[info]: b\\u{1b}[31m"
        );
    }

    #[test]
    fn within_is_by_component() {
        assert!(is_within("/box", "/box"));
        assert!(is_within("/box/app", "/box"));
        assert!(is_within("/box/app", "/box/"));
        assert!(!is_within("/box2", "/box"));
        assert!(!is_within("/", "/box"));
        assert!(is_within("/anything", "/"));
    }
}
