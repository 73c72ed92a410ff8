//! Killing the victim's app, not only the victim (`kill = "cgroup"`): which leaf cgroup may
//! be killed whole, reading its members, and the kill itself — `cgroup.kill` (Linux 5.14+)
//! or, before it, SIGKILL through each member's pidfd, never by raw pid. The pipeline pins
//! every member and checks none is protected (`Pipeline::plan_group`) before anything here
//! signals.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::procs::{ProcError, ProcInfo, ProcRoot};

use super::pin::Target;
use super::rank::RankedProc;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no cgroup2 mount: a process's cgroup cannot be found")]
    NoCgroup2,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Proc(ProcError),
    #[error(transparent)]
    Scope(#[from] crate::scope::ScopeError),
    #[error("pidfd_send_signal(SIGKILL) to pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
    #[error("pid {0} has no pidfd: a cgroup is only killed through pidfds")]
    NoPidfd(i32),
}

/// One process of a cgroup, as listed right before the kill.
#[derive(Debug, Clone)]
pub struct Member {
    /// As ranked without rules; its adj and rule standing are read again by the pipeline.
    pub proc: RankedProc,
    pub kernel_thread: bool,
}

/// Why the unified-hierarchy cgroup `cgroup` may not be killed whole for a scope whose own
/// cgroup is `scope` (`None`: the whole system), or `None` when it may.
pub fn refusal(scope: Option<&str>, cgroup: &str) -> Option<String> {
    let cgroup = cgroup.trim_end_matches('/');
    if cgroup.is_empty() {
        return Some("it is the root cgroup".into());
    }
    if let Some(scope) = scope.map(|s| s.trim_end_matches('/')) {
        if cgroup == scope {
            return Some("it is the scope's own cgroup".into());
        }
        if !cgroup
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Some(format!("it is not below the scope {scope}"));
        }
    }
    let leaf = cgroup.rsplit('/').next().unwrap_or(cgroup);
    if leaf.ends_with(".slice") {
        return Some("it is a slice".into());
    }
    if leaf == "init.scope" {
        return Some("it is init.scope".into());
    }
    None
}

/// The directory of unified-hierarchy cgroup `cgroup` under the cgroup2 mount `proc` knows.
pub fn dir_of(proc: &ProcRoot, cgroup: &str) -> Result<PathBuf, GroupError> {
    let mount = proc.marks().mount().ok_or(GroupError::NoCgroup2)?;
    Ok(crate::scope::mounts::dir_under(mount, cgroup))
}

/// The pids of the cgroup at `dir` and of every cgroup below it: `cgroup.kill` kills the
/// whole subtree, so every one of them is checked and pinned, not only the leaf's own.
pub fn procs_of(dir: &Path) -> Result<Vec<i32>, GroupError> {
    Ok(crate::scope::pids_below(dir)?)
}

/// The members of the cgroup at `dir` and below it; one that exits while being read is left
/// out.
pub fn read_members(proc: &ProcRoot, dir: &Path) -> Result<Vec<Member>, GroupError> {
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::new();
    for pid in procs_of(dir)? {
        let stat = match proc.read_stat(pid, &mut buf) {
            Ok(s) => s,
            Err(ProcError::Vanished { .. }) => continue,
            Err(e) => return Err(GroupError::Proc(e)),
        };
        let info = ProcInfo {
            pid,
            comm: stat.comm,
            state: stat.state,
            flags: stat.flags,
            starttime: stat.starttime,
            oom_score_adj: 0,
            rss_kib: stat.rss_pages * proc.page_kib(),
            swap_kib: 0,
            attrs: Default::default(),
        };
        out.push(Member {
            kernel_thread: info.is_kernel_thread(),
            proc: RankedProc::from(info),
        });
    }
    Ok(out)
}

/// Whether a failed write to `cgroup.kill` is one the members' pidfds can stand in for:
/// the kernel lacks the file (< 5.14), or lowmemd may not write it — the shipped unit runs
/// as a dynamic user with `ProtectControlGroups=` (a read-only /sys/fs/cgroup, and root's
/// files besides), where CAP_KILL still signals through a pidfd. Every member is pinned
/// and checked before, so the pidfds reach exactly the processes cgroup.kill would have.
fn signal_each_instead(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || matches!(
            Errno::from_io_error(e),
            Some(Errno::ROFS | Errno::PERM | Errno::ACCESS)
        )
}

/// SIGKILL to every process of the cgroup at `dir`, whose members are `members`, pinned:
/// one write to `cgroup.kill`, or, where the kernel lacks it (< 5.14) or lowmemd may not
/// write it (a sandboxed unit), a signal through each member's pidfd. Then their memory is
/// reaped with process_mrelease where it can be.
pub fn kill_group(dir: &Path, members: &[Target], caps: &KernelCaps) -> Result<(), GroupError> {
    if let Some(t) = members.iter().find(|t| t.pidfd().is_none()) {
        return Err(GroupError::NoPidfd(t.proc.pid));
    }
    let path = dir.join("cgroup.kill");
    // Never O_CREAT: on cgroupfs creating a missing file fails with EACCES, not ENOENT,
    // which would hide that the kernel lacks cgroup.kill.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"1"));
    match written {
        Ok(()) => {}
        Err(e) if signal_each_instead(&e) => {
            log::info!(
                "{}: {e}; SIGKILL through each member's pidfd instead",
                path.display()
            );
            for t in members {
                let Some(pidfd) = t.pidfd() else { continue };
                match pidfd_send_signal(pidfd, Signal::KILL) {
                    Ok(()) | Err(Errno::SRCH) => {}
                    Err(e) => {
                        return Err(GroupError::Signal {
                            pid: t.proc.pid,
                            source: e.into(),
                        });
                    }
                }
            }
        }
        Err(source) => return Err(GroupError::Io { path, source }),
    }
    if caps.process_mrelease {
        for t in members {
            if let Some(pidfd) = t.pidfd()
                && let Err(e) = crate::sys::process_mrelease(pidfd)
            {
                log::debug!("process_mrelease(pid {}): {e}", t.proc.pid);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    use rustix::process::{Pid, PidfdFlags, pidfd_open};

    use super::*;

    /// A kernel with pidfds and process_mrelease, as the kill path sees it.
    fn caps() -> KernelCaps {
        KernelCaps::everything()
    }

    #[test]
    fn members_include_the_cgroups_below() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app-a.scope");
        std::fs::create_dir_all(app.join("child/grandchild")).unwrap();
        std::fs::write(app.join("cgroup.procs"), "30\n10\n").unwrap();
        std::fs::write(app.join("child/cgroup.procs"), "").unwrap();
        std::fs::write(app.join("child/grandchild/cgroup.procs"), "20\n").unwrap();
        assert_eq!(procs_of(&app).unwrap(), [10, 20, 30]);
        assert!(procs_of(&dir.path().join("gone.scope")).is_err());
    }

    /// Without `cgroup.kill` (Linux < 5.14), every member gets SIGKILL through its pidfd.
    #[test]
    fn without_cgroup_kill_each_member_is_killed_through_its_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                Command::new("sleep")
                    .arg("60")
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let targets: Vec<Target> = children
            .iter()
            .map(|c| {
                let pid = c.id() as i32;
                let fd = pidfd_open(Pid::from_raw(pid).unwrap(), PidfdFlags::empty()).unwrap();
                let info = ProcInfo {
                    comm: "sleep".into(),
                    ..ProcInfo::for_tests(pid, 0, 0)
                };
                Target::for_tests(Some(fd), RankedProc::from(info))
            })
            .collect();
        kill_group(dir.path(), &targets, &caps()).unwrap();
        assert!(
            !dir.path().join("cgroup.kill").exists(),
            "a missing cgroup.kill is never created"
        );
        for c in &mut children {
            assert_eq!(c.wait().unwrap().signal(), Some(9));
        }
    }

    #[test]
    fn a_cgroup_kill_lowmemd_may_not_write_falls_back_to_the_pidfds() {
        let err = |e: Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
        for e in [Errno::NOENT, Errno::ACCESS, Errno::PERM, Errno::ROFS] {
            assert!(signal_each_instead(&err(e)), "{e}");
        }
        // Anything else (an I/O error) is not a reason to go member by member.
        assert!(!signal_each_instead(&err(Errno::IO)));
    }

    #[test]
    fn a_member_without_a_pidfd_is_refused_before_any_signal() {
        let dir = tempfile::tempdir().unwrap();
        let info = ProcInfo {
            comm: "init".into(),
            ..ProcInfo::for_tests(1, 0, 0)
        };
        let t = Target::for_tests(None, RankedProc::from(info));
        assert!(matches!(
            kill_group(dir.path(), &[t], &caps()),
            Err(GroupError::NoPidfd(1))
        ));
    }

    #[test]
    fn only_cgroups_strictly_below_the_scope_and_not_slices() {
        let s = Some("/box");
        assert_eq!(refusal(s, "/box/app-a.scope"), None);
        assert_eq!(refusal(s, "/box/user.slice/app-b.service"), None);
        assert_eq!(refusal(None, "/user.slice/app-b.scope"), None);
        assert!(refusal(s, "/box").unwrap().contains("scope's own"));
        assert!(
            refusal(s, "/boxer/app.scope")
                .unwrap()
                .contains("not below")
        );
        assert!(
            refusal(s, "/other/app.scope")
                .unwrap()
                .contains("not below")
        );
        assert!(refusal(None, "/").unwrap().contains("root"));
        assert!(refusal(Some("/"), "/").unwrap().contains("root"));
        assert!(refusal(s, "/box/user.slice").unwrap().contains("slice"));
        assert!(refusal(None, "/init.scope").unwrap().contains("init.scope"));
    }
}
