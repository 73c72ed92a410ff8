//! What lowmemd protects: the whole system, or one cgroup subtree. Resolves a cgroup path
//! (as written in /proc/PID/cgroup) to the memory-controller directory (v1 `memory` or v2)
//! and the cgroup2 directory whose `memory.pressure` gives the subtree's PSI.

pub mod memcg;
pub mod meminfo;
pub mod mounts;
pub mod pressure;
pub mod swap;

use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::procs::{ProcError, ProcRoot, is_within};
use crate::sample::{MemSnapshot, Refaults};
use memcg::Version;
use mounts::{dir_under, parse_mounts};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cgroup path {0:?} must start with '/' (as in /proc/PID/cgroup, e.g. /box/app)")]
    NotAbsolute(String),
    #[error(
        "no memory controller is mounted (looked for a cgroup v1 `memory` or a cgroup2 mount in {0})"
    )]
    NoMemoryController(String),
    #[error("cgroup {cgroup} does not exist: no directory {dir}")]
    NoSuchCgroup { cgroup: String, dir: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// Where the memory controller of a cgroup scope lives.
#[derive(Debug, Clone)]
pub struct CgroupScope {
    /// The name the user gave, e.g. `/box`.
    pub name: String,
    pub version: Version,
    /// The memcg directory (v1 memory hierarchy or v2).
    pub memcg_dir: PathBuf,
    /// The same cgroup in the unified hierarchy, for `memory.pressure`, if mounted.
    pub unified_dir: Option<PathBuf>,
}

/// One reading of the scope's memory.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub mem: MemSnapshot,
    /// The thrashing counters, when asked for.
    pub refaults: Option<Refaults>,
    /// A memcg's usage, which its usage thresholds watch; `None` for the system.
    pub usage_kib: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Scope {
    pub proc: ProcRoot,
    pub cgroup: Option<CgroupScope>,
    /// MemTotal of the machine, bounding an unlimited memcg.
    pub system_total_kib: u64,
}

impl Scope {
    /// The whole machine.
    pub fn system(proc: ProcRoot) -> Result<Self, ScopeError> {
        let mem = read_meminfo(&proc)?;
        // Cgroup markings are read on the cgroup2 mount; without one (or without a readable
        // mountinfo) nothing is marked, which is normal on a system without systemd.
        let v2 = std::fs::File::open(proc.path().join("self/mountinfo"))
            .ok()
            .and_then(|f| parse_mounts(BufReader::new(f)).ok())
            .and_then(|m| m.v2);
        let proc = proc.with_cgroup2(v2);
        Ok(Scope {
            proc,
            cgroup: None,
            system_total_kib: mem.total_kib,
        })
    }

    /// The cgroup subtree `name`, found through `proc`'s `self/mountinfo`. `name` is
    /// normalised first (`//box/./app/..` is `/box`): membership is compared with
    /// /proc/PID/cgroup, which always spells the canonical form.
    pub fn cgroup(proc: ProcRoot, name: &str) -> Result<Self, ScopeError> {
        let name = normalise(name)?;
        let name = name.as_str();
        let mi_path = proc.path().join("self/mountinfo");
        let file = std::fs::File::open(&mi_path).map_err(|source| ScopeError::Io {
            path: mi_path.clone(),
            source,
        })?;
        let mounts = parse_mounts(BufReader::new(file)).map_err(|what| ScopeError::Malformed {
            path: mi_path.clone(),
            what,
        })?;
        let (version, memcg_dir) = match (&mounts.v1_memory, &mounts.v2) {
            (Some(v1), _) => (Version::V1, dir_under(v1, name)),
            (None, Some(v2)) => (Version::V2, dir_under(v2, name)),
            (None, None) => {
                return Err(ScopeError::NoMemoryController(
                    mi_path.display().to_string(),
                ));
            }
        };
        if !memcg_dir.join(version.usage_file()).exists() {
            return Err(ScopeError::NoSuchCgroup {
                cgroup: name.into(),
                dir: memcg_dir,
            });
        }
        let unified_dir = mounts
            .v2
            .as_ref()
            .map(|v2| dir_under(v2, name))
            .filter(|d| d.join("memory.pressure").exists());
        let mut scope = Scope::system(proc)?;
        scope.cgroup = Some(CgroupScope {
            name: name.into(),
            version,
            memcg_dir,
            unified_dir,
        });
        Ok(scope)
    }

    pub fn describe(&self) -> String {
        match &self.cgroup {
            None => "system".into(),
            Some(c) => format!(
                "cgroup {} (memcg {:?} at {})",
                c.name,
                c.version,
                c.memcg_dir.display()
            ),
        }
    }

    /// The scope's memory right now.
    pub fn read_memory(&self) -> Result<MemSnapshot, ScopeError> {
        self.read(false).map(|r| r.mem)
    }

    /// The scope's memory and, with `want_refaults`, its thrashing counters (for a memcg from
    /// the same `memory.stat` read; for the system from `/proc/vmstat`). Swap is judged here
    /// (`swap::judge`), so the monitor and the pipeline's re-check see the same headroom.
    pub fn read(&self, want_refaults: bool) -> Result<Reading, ScopeError> {
        let mut reading = match &self.cgroup {
            None => {
                let mem = read_meminfo(&self.proc)?;
                let refaults = if want_refaults {
                    let path = self.proc.path().join("vmstat");
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| ScopeError::Io { path, source })?;
                    meminfo::parse_vmstat_refaults(&text)
                } else {
                    None
                };
                Reading {
                    mem,
                    refaults,
                    usage_kib: None,
                }
            }
            Some(c) => memcg::read(
                &c.memcg_dir,
                c.version,
                self.system_total_kib,
                want_refaults,
            )?,
        };
        self.judge_swap(&mut reading.mem);
        Ok(reading)
    }

    /// Fills in the swap of `mem`: free swap as far as it can be used and what swap can
    /// still take. Without swap (SwapTotal 0: the system scope reads no more files) nothing
    /// changes. A memcg swaps into the machine's swap, within its own swap limit.
    fn judge_swap(&self, mem: &mut MemSnapshot) {
        let system = self.cgroup.is_none();
        if system && mem.swap_total_kib == 0 {
            return;
        }
        let text = std::fs::read_to_string(self.proc.path().join("swaps")).unwrap_or_default();
        let devices = swap::parse_swaps(&text);
        let room = swap::judge(&devices, mem.available_kib, swap::read_mm_stat);
        mem.swap_headroom_kib = room.headroom_kib;
        mem.swap_free_kib = room.usable_free_kib;
        if let Some(c) = &self.cgroup {
            mem.swap_total_kib = devices
                .iter()
                .fold(0, |sum: u64, d| sum.saturating_add(d.size_kib));
            if let Some(room_kib) = memcg::swap_room_kib(&c.memcg_dir, c.version) {
                // v2 swap.max bounds swap alone; v1 memsw bounds memory and swap together,
                // so its room is shared with the memory still available.
                let room_kib = match c.version {
                    memcg::Version::V2 => room_kib,
                    memcg::Version::V1 => room_kib.saturating_sub(mem.available_kib),
                };
                mem.swap_headroom_kib = mem.swap_headroom_kib.min(room_kib);
                mem.swap_free_kib = mem.swap_free_kib.min(room_kib);
            }
        }
    }

    /// Whether the machine has swap with room in it (swap is system-wide even for a memcg
    /// scope): anonymous memory can only be paged out to swap.
    pub fn swap_active(&self) -> bool {
        read_meminfo(&self.proc).is_ok_and(|m| m.swap_total_kib > 0 && m.swap_free_kib > 0)
    }

    /// The pressure file PSI triggers go on, if the kernel has one for this scope.
    pub fn psi_path(&self) -> Option<PathBuf> {
        match &self.cgroup {
            None => Some(self.proc.path().join("pressure/memory")).filter(|p| p.exists()),
            Some(c) => c.unified_dir.as_ref().map(|d| d.join("memory.pressure")),
        }
    }

    /// `some` and `full` avg10 of the scope's pressure file, if it has one.
    pub fn psi_avg10(&self) -> Option<(f64, f64)> {
        let p = self.pressure()?;
        Some((p.some.avg10, p.full.avg10))
    }

    /// `some` and `full` stall so far (the pressure file's `total`, µs).
    pub fn psi_totals_us(&self) -> Option<(u64, u64)> {
        let p = self.pressure()?;
        Some((p.some.total_us, p.full.total_us))
    }

    fn pressure(&self) -> Option<pressure::Pressure> {
        pressure::parse(&std::fs::read(self.psi_path()?).ok()?)
    }

    /// The v1 memcg directory, where vmpressure notifications and usage thresholds can be
    /// registered.
    pub fn vmpressure_dir(&self) -> Option<&Path> {
        self.cgroup
            .as_ref()
            .filter(|c| c.version == Version::V1)
            .map(|c| c.memcg_dir.as_path())
    }

    /// The pids in scope: all of them, or the processes of the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<i32>, ScopeError> {
        let Some(c) = &self.cgroup else {
            return Ok(self.proc.pids()?);
        };
        pids_below(&c.memcg_dir)
    }

    /// Whether `pid` is (still) inside the scope: checked once more on the victim after it is
    /// pinned, since a pid listed in cgroup.procs could have been recycled since.
    pub fn contains(&self, pid: i32) -> bool {
        let Some(c) = &self.cgroup else { return true };
        let controller = match c.version {
            Version::V1 => Some("memory"),
            Version::V2 => None,
        };
        match self.proc.cgroup_of(pid, controller) {
            Ok(path) => is_within(&path, &c.name),
            Err(_) => false,
        }
    }

    /// The CPUs the scope's tasks may run on at once, where its cgroup-v2 cpuset or
    /// `cpu.max` limit them: no more of them can fill its memory.
    pub fn cpus(&self) -> Option<usize> {
        let c = self.cgroup.as_ref()?;
        let dir = c.unified_dir.as_ref()?;
        let depth = c.name.split('/').filter(|p| !p.is_empty()).count();
        let root = dir.ancestors().nth(depth)?;
        memcg::cpus_of(dir, root)
    }

    /// The kernel OOM killer's kill count in this memcg, if it is one.
    pub fn oom_kills(&self) -> Option<u64> {
        let c = self.cgroup.as_ref()?;
        memcg::oom_kills(&c.memcg_dir, c.version)
    }
}

/// The pids of the cgroup at `dir` and of every cgroup below it, sorted. A child cgroup
/// removed while it is walked is a normal race; the top one missing is an error.
pub fn pids_below(dir: &Path) -> Result<Vec<i32>, ScopeError> {
    let mut pids = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let procs = d.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            Err(e) if d != dir && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ScopeError::Io {
                    path: procs,
                    source,
                });
            }
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            dirs.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The canonical spelling of a cgroup path: absolute, no empty, `.` or `..` components,
/// no trailing slash (the root is `/`).
pub fn normalise(name: &str) -> Result<String, ScopeError> {
    if !name.starts_with('/') {
        return Err(ScopeError::NotAbsolute(name.into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn read_meminfo(proc: &ProcRoot) -> Result<MemSnapshot, ScopeError> {
    let path = proc.path().join("meminfo");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(source) => return Err(ScopeError::Io { path, source }),
    };
    meminfo::parse(BufReader::new(file)).map_err(|what| ScopeError::Malformed { path, what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_compared_in_canonical_form() {
        for spelling in [
            "/box",
            "//box",
            "/box/.",
            "/box/../box",
            "/box/",
            "/x/../box//",
        ] {
            assert_eq!(normalise(spelling).unwrap(), "/box", "{spelling}");
        }
        assert_eq!(normalise("/").unwrap(), "/");
        assert_eq!(normalise("/..").unwrap(), "/");
        assert!(matches!(normalise("box"), Err(ScopeError::NotAbsolute(_))));
    }
}
