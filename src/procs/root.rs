//! The stateless reader: a proc tree under an injectable root (`/proc` in production, a
//! fixture directory in tests), each file opened, read and closed per call. `lowmemd rank`,
//! fixtures, and the one-process reads of the kill path (pin, page-out) use it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::markings::CgroupMarks;
use super::parse::{
    MemDetail, StatLite, cgroup_path_of, cgroup_paths, parse_adj, parse_real_uid, parse_stat,
    parse_vm_swap_kib, sigkill_pending,
};
use super::smaps::{Region, parse_smaps};
use super::{Attrs, Needs, ProcError, ProcInfo, Scan, is_gone};

/// The most of a command line that rules see: one page, all /proc/PID/cmdline showed before
/// Linux 4.2. Reading and matching a 1 MB command line added 200-400 ms to a kill.
const CMDLINE_MAX: u64 = 4096;

/// A proc tree: `/proc` or a fixture laid out like it.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
    page_kib: u64,
    /// Where cgroup markings are read (shared by clones: one cache per daemon).
    marks: std::sync::Arc<CgroupMarks>,
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
            marks: Default::default(),
        }
    }

    /// Reads cgroup markings under this cgroup2 mount (mount point, root inside the
    /// hierarchy), as `scope::mounts` finds it in mountinfo.
    pub fn with_cgroup2(mut self, mount: Option<(PathBuf, PathBuf)>) -> Self {
        self.marks = std::sync::Arc::new(CgroupMarks::new(mount));
        self
    }

    /// The cgroup markings reader.
    pub fn marks(&self) -> &CgroupMarks {
        &self.marks
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
        let oom_score_adj = self.read_adj_into(pid, buf)?;
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
    /// ptrace access. Of the command line, only the first [`CMDLINE_MAX`] bytes.
    pub fn read_attrs(&self, pid: i32, needs: Needs) -> Attrs {
        let mut a = Attrs::default();
        if needs.cmdline {
            a.cmdline = read_head(&self.file(pid, "cmdline"), CMDLINE_MAX)
                .ok()
                .map(|b| {
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
        if needs.real_uid {
            let mut buf = Vec::new();
            a.real_uid = read_into(&self.file(pid, "status"), pid, &mut buf)
                .ok()
                .and_then(|()| parse_real_uid(&buf));
        }
        if needs.cgroup || needs.marking || needs.unified_cgroup {
            let text = std::fs::read_to_string(self.file(pid, "cgroup")).unwrap_or_default();
            if needs.cgroup || needs.marking {
                a.cgroups = cgroup_paths(&text);
            }
            a.unified_cgroup = cgroup_path_of(&text, None);
        }
        if needs.marking {
            a.marking = a
                .unified_cgroup
                .as_deref()
                .and_then(|cg| self.marks.marking(cg));
        }
        a
    }

    /// `pid`'s oom_score_adj alone: what the pin stage re-reads of the victim. It is read by
    /// path, so read it after `pidfd_open` and before the starttime re-check: a match there
    /// shows the number was still the victim's when its adj was read.
    pub fn read_adj(&self, pid: i32) -> Result<i16, ProcError> {
        self.read_adj_into(pid, &mut Vec::with_capacity(16))
    }

    fn read_adj_into(&self, pid: i32, buf: &mut Vec<u8>) -> Result<i16, ProcError> {
        let path = self.file(pid, "oom_score_adj");
        read_into(&path, pid, buf)?;
        parse_adj(buf).map_err(|what| ProcError::malformed(path, what))
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

/// At most `max` bytes from the start of a file, without reading the rest.
fn read_head(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(max as usize);
    File::open(path)?.take(max).read_to_end(&mut buf)?;
    Ok(buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("100")).unwrap();
        for (name, text) in files {
            std::fs::write(tmp.path().join("100").join(name), text).unwrap();
        }
        tmp
    }

    const CMDLINE: Needs = Needs {
        cmdline: true,
        exe: false,
        uid: false,
        cgroup: false,
        unified_cgroup: false,
        real_uid: false,
        marking: false,
        comm: false,
    };

    /// Ranking by owner keeps one path per process, not one per hierarchy (v1 lists a dozen):
    /// the cache clones the attributes at every scan.
    #[test]
    fn the_unified_cgroup_alone_is_kept_for_owner_ranking() {
        let text = b"12:memory:/box\n11:cpu,cpuacct:/box\n0::/box/app-a.scope\n";
        let tmp = fixture(&[("cgroup", text)]);
        let root = ProcRoot::new(tmp.path());
        let owner = Needs {
            unified_cgroup: true,
            ..Default::default()
        };
        let a = root.read_attrs(100, owner);
        assert_eq!(a.unified_cgroup.as_deref(), Some("/box/app-a.scope"));
        assert!(a.cgroups.is_empty(), "{:?}", a.cgroups);
        let rules = Needs {
            cgroup: true,
            ..Default::default()
        };
        let a = root.read_attrs(100, rules.union(owner));
        assert_eq!(a.cgroups.len(), 3, "{:?}", a.cgroups);
        assert_eq!(a.unified_cgroup.as_deref(), Some("/box/app-a.scope"));
    }

    #[test]
    fn only_the_head_of_a_long_cmdline_is_read() {
        let mut cmdline = b"app\0--flag\0".to_vec();
        cmdline.resize(1 << 20, b'x');
        let tmp = fixture(&[("cmdline", &cmdline)]);
        let attrs = ProcRoot::new(tmp.path()).read_attrs(100, CMDLINE);
        let seen = attrs.cmdline.unwrap();
        assert!(seen.len() <= 4096, "{} bytes", seen.len());
        assert!(seen.starts_with("app --flag xxx"), "{seen:.40}");
    }

    /// The cap bounds what is read, not only what is kept: a cmdline that a writer keeps
    /// feeding through a FIFO is closed after the first 4 KiB, and the writer's 1 MiB
    /// (more than the 64 KiB a pipe buffers) breaks off.
    #[test]
    fn a_long_cmdline_is_not_read_to_its_end() {
        let tmp = fixture(&[]);
        let path = tmp.path().join("100/cmdline");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .write_all(&vec![b'x'; 1 << 20])
            })
        };
        let seen = ProcRoot::new(tmp.path()).read_attrs(100, CMDLINE).cmdline;
        assert_eq!(seen.map(|c| c.len()), Some(4096));
        let wrote = writer.join().unwrap();
        assert!(
            wrote
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe),
            "{wrote:?}"
        );
    }

    #[test]
    fn read_adj_parses_and_maps_errors_like_the_scan() {
        let tmp = fixture(&[("oom_score_adj", b"-500\n")]);
        let root = ProcRoot::new(tmp.path());
        assert_eq!(root.read_adj(100).unwrap(), -500);
        // No such process: it vanished, as in a scan.
        assert!(matches!(
            root.read_adj(101),
            Err(ProcError::Vanished { pid: 101 })
        ));
        std::fs::write(tmp.path().join("100/oom_score_adj"), "lots\n").unwrap();
        let err = root.read_adj(100).unwrap_err();
        assert!(matches!(err, ProcError::Malformed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("100/oom_score_adj") && msg.contains("lots"),
            "{msg}"
        );
        // And on the running kernel, our own.
        let me = std::process::id() as i32;
        let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        assert_eq!(
            ProcRoot::default().read_adj(me).unwrap().to_string(),
            own.trim()
        );
    }
}
