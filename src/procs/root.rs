//! The stateless reader: a proc tree under an injectable root (`/proc` in production, a
//! fixture directory in tests), each file opened, read and closed per call. `lowmemd rank`,
//! fixtures, and the one-process reads of the kill path (pin, page-out) use it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::parse::{
    MemDetail, StatLite, cgroup_path_of, cgroup_paths, parse_adj, parse_stat, parse_vm_swap_kib,
    sigkill_pending,
};
use super::smaps::{Region, parse_smaps};
use super::{Attrs, Needs, ProcError, ProcInfo, Scan, is_gone};

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

    /// KiB per page.
    pub fn page_kib(&self) -> u64 {
        self.page_kib
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
        let oom_score_adj = parse_adj(buf).map_err(|what| ProcError::malformed(adj_path, what))?;
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
            a.cgroups = cgroup_paths(&text);
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

    /// Whether `pid` has SIGKILL pending (it is dying, or frozen with the signal queued).
    pub fn sigkill_pending(&self, pid: i32) -> Result<bool, ProcError> {
        let path = self.file(pid, "status");
        let mut buf = Vec::new();
        read_into(&path, pid, &mut buf)?;
        Ok(sigkill_pending(&buf))
    }

    /// `pid`'s oom_score_adj now.
    pub fn read_adj(&self, pid: i32) -> Result<i16, ProcError> {
        let path = self.file(pid, "oom_score_adj");
        let mut buf = Vec::new();
        read_into(&path, pid, &mut buf)?;
        parse_adj(&buf).map_err(|what| ProcError::malformed(path, what))
    }

    /// Reads and parses `/proc/PID/stat`.
    pub fn read_stat(&self, pid: i32, buf: &mut Vec<u8>) -> Result<StatLite, ProcError> {
        let path = self.file(pid, "stat");
        read_into(&path, pid, buf)?;
        parse_stat(buf).map_err(|what| ProcError::malformed(path, what))
    }

    /// `pid`'s mappings with their resident sizes and flags.
    pub fn smaps(&self, pid: i32) -> Result<Vec<Region>, ProcError> {
        let path = self.file(pid, "smaps");
        let file = File::open(&path).map_err(|e| ProcError::from_io(e, pid, &path))?;
        parse_smaps(std::io::BufReader::new(file)).map_err(|what| ProcError::malformed(path, what))
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
        cgroup_path_of(&String::from_utf8_lossy(&buf), controller).ok_or_else(|| {
            let what = format!(
                "no line for the {} hierarchy",
                controller.unwrap_or("unified")
            );
            ProcError::malformed(path, what)
        })
    }

    pub fn file(&self, pid: i32, name: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        p.push(name);
        p
    }
}

/// Reads a whole small file into `buf`, mapping "the process is gone" to `Vanished`.
pub(super) fn read_into(path: &Path, pid: i32, buf: &mut Vec<u8>) -> Result<(), ProcError> {
    buf.clear();
    match File::open(path).and_then(|mut f| f.read_to_end(buf)) {
        Ok(_) => Ok(()),
        Err(e) => Err(ProcError::from_io(e, pid, path)),
    }
}

impl ProcError {
    /// `Vanished` when the error says the process is gone, else an I/O error naming `path`.
    pub(super) fn from_io(e: std::io::Error, pid: i32, path: &Path) -> Self {
        if is_gone(&e) {
            ProcError::Vanished { pid }
        } else {
            ProcError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    }

    pub(super) fn malformed(path: PathBuf, what: String) -> Self {
        ProcError::Malformed { path, what }
    }
}
