//! The cgroup v2 freezer (`cgroup.freeze`, Linux 5.2), and the records that make sure
//! nothing lowmemd froze stays frozen: a freeze is recorded in the runtime directory
//! before `cgroup.freeze` is written, and the record removed after the thaw, so that a
//! lowmemd killed in between thaws it at its next start (`thaw_left_behind`) — and at
//! its stop, whatever its pipeline was doing. SIGKILL reaches frozen tasks in v2: a frozen
//! app stays killable without a thaw. Where a policy asks (`freeze_lone_process =
//! "sigstop"`), a lone process is stopped by signal instead, recorded the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use crate::pipeline::pin::Target;
use crate::procs::ProcRoot;
use crate::runtime;

/// The record files' prefixes in the runtime directory: frozen cgroups, stopped processes.
const PREFIX: &str = "frozen";
const STOPPED: &str = "stopped";
/// cgroup2's statfs magic ("cgrp"): a record may only ever name a cgroup2 directory.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum FreezerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no cgroup v2 freezer here (Linux 5.2+, a cgroup2 hierarchy)")]
    NoFreezer(PathBuf),
    #[error("cannot remember what it froze: {0}")]
    Record(#[from] runtime::RuntimeError),
    #[error("no runtime directory to record freezes in: the freeze tier is off")]
    Off,
    #[error(transparent)]
    Cgroup(#[from] crate::pipeline::group::GroupError),
    #[error("pid {0} has no pidfd: a process is only stopped through its pidfd")]
    NoPidfd(i32),
    #[error("pidfd_send_signal to pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
}

/// Where freezes are recorded.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The runtime directory `dir`, made if missing and refused if others may write it.
    pub fn open(dir: PathBuf) -> Result<Records, FreezerError> {
        runtime::check_dir(&dir)?;
        Ok(Records { dir })
    }

    fn path(&self, cgroup_dir: &Path) -> PathBuf {
        runtime::record_path(&self.dir, PREFIX, &cgroup_dir.to_string_lossy())
    }
}

/// Whether the cgroup at `dir` is frozen (by anyone).
pub fn is_frozen(dir: &Path) -> Result<bool, FreezerError> {
    let path = dir.join("cgroup.freeze");
    match std::fs::read_to_string(&path) {
        Ok(v) => Ok(v.trim() == "1"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FreezerError::NoFreezer(path)),
        Err(source) => Err(FreezerError::Io { path, source }),
    }
}

fn write(dir: &Path, frozen: bool) -> Result<(), FreezerError> {
    let path = dir.join("cgroup.freeze");
    // Never O_CREAT: a missing file is a kernel without the freezer (or no cgroup2 dir).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(if frozen { b"1" } else { b"0" }))
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => FreezerError::NoFreezer(path.clone()),
            _ => FreezerError::Io { path, source },
        })
}

/// Freezes the cgroup at `dir`, recorded first.
pub fn freeze(records: &Records, dir: &Path) -> Result<(), FreezerError> {
    let record = records.path(dir);
    runtime::save(&record, &format!("dir={}\n", dir.display()))?;
    write(dir, true).inspect_err(|_| runtime::remove(&record))
}

/// Thaws the cgroup at `dir` and forgets its record. A cgroup removed meanwhile (its app
/// gone, systemd cleaned its scope up) has nothing left to thaw.
pub fn thaw(records: &Records, dir: &Path) -> Result<(), FreezerError> {
    let done = match write(dir, false) {
        Err(FreezerError::NoFreezer(_)) if !dir.exists() => Ok(()),
        other => other,
    };
    if done.is_ok() {
        runtime::remove(&records.path(dir));
    }
    done
}

/// Stops (`true`: SIGSTOP, recorded first) or continues (SIGCONT, then the record goes) the
/// pinned `target` alone, through its pidfd.
pub fn stop(records: &Records, target: &Target, stop: bool) -> Result<(), FreezerError> {
    let p = &target.proc;
    let record = runtime::record_path(
        &records.dir,
        STOPPED,
        &format!("/{}-{}", p.pid, p.starttime),
    );
    let pidfd = target.pidfd().ok_or(FreezerError::NoPidfd(p.pid))?;
    if stop {
        runtime::save(
            &record,
            &format!("pid={}\nstarttime={}\n", p.pid, p.starttime),
        )?;
    }
    let sig = if stop { Signal::STOP } else { Signal::CONT };
    match pidfd_send_signal(pidfd, sig) {
        // Gone: nothing left stopped.
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => {
            if stop {
                runtime::remove(&record);
            }
            return Err(FreezerError::Signal {
                pid: p.pid,
                source: e.into(),
            });
        }
    }
    if !stop {
        runtime::remove(&record);
    }
    Ok(())
}

/// Continues the process a "stopped" record names, if it is still that incarnation.
fn continue_left_behind(proc: &ProcRoot, text: &str) -> Option<String> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
    };
    let pid: i32 = get("pid")?.parse().ok()?;
    let starttime: u64 = get("starttime")?.parse().ok()?;
    let fd = pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
    // After the pidfd: a recycled pid read now is another process, and is left alone.
    let stat = proc.read_stat(pid, &mut Vec::new()).ok()?;
    if stat.starttime != starttime {
        return None;
    }
    pidfd_send_signal(&fd, Signal::CONT).ok()?;
    Some(format!(
        "continued pid {pid} (stopped by lowmemd, never continued)"
    ))
}

/// Thaws every cgroup a record in `runtime_dir` names (a previous lowmemd froze it and
/// could not thaw it: SIGKILL, a crash; or this one is stopping), and removes the records.
/// A record naming anything but a cgroup2 directory is removed unread: the directory is
/// ours alone, so it is garbage, not a freeze. Returns what was done, one line each.
pub fn thaw_left_behind(runtime_dir: &Path) -> Vec<String> {
    let Ok(records) = Records::open(runtime_dir.to_owned()) else {
        return Vec::new();
    };
    let mut said = Vec::new();
    let proc = ProcRoot::new("/proc");
    for path in runtime::records(runtime_dir, STOPPED) {
        said.extend(runtime::load(&path).and_then(|t| continue_left_behind(&proc, &t)));
        runtime::remove(&path);
    }
    for path in runtime::records(runtime_dir, PREFIX) {
        let dir = runtime::load(&path).and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("dir=").map(PathBuf::from))
        });
        match dir {
            Some(dir) if on_cgroup2(&dir) => match thaw(&records, &dir) {
                Ok(()) => said.push(format!(
                    "thawed {} (frozen by lowmemd, never thawed)",
                    dir.display()
                )),
                Err(e) => said.push(format!("cannot thaw {}: {e}", dir.display())),
            },
            Some(dir) if !dir.exists() => runtime::remove(&path),
            _ => {
                said.push(format!(
                    "{}: not a record of a cgroup2 directory; removed",
                    path.display()
                ));
                runtime::remove(&path);
            }
        }
    }
    said
}

/// Whether `dir` is an absolute directory on a cgroup2 filesystem.
// statfs's f_type is an i64 here, an i32 or u32 on 32-bit boards.
#[allow(clippy::unnecessary_cast)]
fn on_cgroup2(dir: &Path) -> bool {
    dir.is_absolute()
        && !dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        && rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_something_else_than_a_cgroup_is_removed_and_nothing_written() {
        let rt = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("cgroup.freeze"), "1").unwrap();
        let records = Records::open(rt.path().into()).unwrap();
        runtime::save(
            &records.path(victim.path()),
            &format!("dir={}\n", victim.path().display()),
        )
        .unwrap();
        let said = thaw_left_behind(rt.path());
        assert!(said[0].contains("not a record of a cgroup2"), "{said:?}");
        assert_eq!(
            std::fs::read_to_string(victim.path().join("cgroup.freeze")).unwrap(),
            "1"
        );
        assert!(runtime::records(rt.path(), PREFIX).is_empty());
    }

    #[test]
    fn freezing_where_there_is_no_freezer_leaves_no_record() {
        let rt = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        let records = Records::open(rt.path().into()).unwrap();
        assert!(matches!(
            freeze(&records, cg.path()),
            Err(FreezerError::NoFreezer(_))
        ));
        assert!(runtime::records(rt.path(), PREFIX).is_empty());
    }
}
