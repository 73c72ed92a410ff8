//! A pinned victim: a pidfd that refers to exactly the process we ranked, or nothing.
//!
//! `pidfd_open` pins whatever process has the pid *now*; re-reading `stat` after it and
//! finding the same starttime proves that process is the incarnation we ranked (a recycled
//! pid gets a new starttime). From then on the pidfd cannot be redirected to another process.
//!
//! On kernels without pidfds (< 5.3), and only when the policy says `allow_pid_kill`, a
//! target is "identified" instead: the same starttime check, without a pidfd; the kill
//! path checks once more right before signalling by pid (`kill.rs`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::procs::{ProcError, ProcRoot};
use crate::scope::Scope;

use super::outcome::Skip;
use super::rank::RankedProc;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pid {0} exited before it could be pinned")]
    Vanished(i32),
    #[error("pid {pid} was recycled: starttime {found} is not the ranked {expected}")]
    Recycled { pid: i32, expected: u64, found: u64 },
    #[error("pid {0} is no longer inside the scope")]
    OutOfScope(i32),
    /// Pinned, but someone has killed it already: its memory is on its way back.
    #[error("pid {} is already dying (SIGKILL pending)", .0.proc.pid)]
    Dying(Box<Target>),
    #[error("pidfd_open({pid}): {source}")]
    Pidfd { pid: i32, source: std::io::Error },
    #[error("{0}")]
    Proc(ProcError),
}

impl PinError {
    /// The `lowmemd_victims_skipped_total` reason this counts as; `None` for failures that
    /// are lowmemd's or the kernel's, not the victim's.
    pub fn skip(&self) -> Option<Skip> {
        match self {
            PinError::Vanished(_) => Some(Skip::Vanished),
            PinError::Recycled { .. } => Some(Skip::IdentityChanged),
            PinError::OutOfScope(_) => Some(Skip::OutOfScope),
            PinError::Dying(_) => Some(Skip::Dying),
            PinError::Pidfd { .. } | PinError::Proc(_) => None,
        }
    }
}

/// A process known to be the incarnation that was ranked, held by its pidfd when the
/// kernel has pidfds.
#[derive(Debug)]
pub struct Target {
    pidfd: Option<OwnedFd>,
    pub proc: RankedProc,
}

impl Target {
    /// A target of `proc` over `pidfd`, for unit tests of the stages that take one.
    #[cfg(test)]
    pub(crate) fn for_tests(pidfd: Option<OwnedFd>, proc: RankedProc) -> Self {
        Target { pidfd, proc }
    }

    /// The pidfd; `None` only on the no-pidfd fallback.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }
}

/// Same pid, same starttime: the same incarnation.
pub fn same_incarnation(expected_starttime: u64, found_starttime: u64) -> bool {
    expected_starttime == found_starttime
}

/// Pins `cand`: pidfd first, identity check second (the order is what makes it race-free).
/// With `use_pidfd` false (no pidfds, `allow_pid_kill`), only the identity check.
pub fn pin(
    proc: &ProcRoot,
    scope: &Scope,
    cand: RankedProc,
    use_pidfd: bool,
) -> Result<Target, PinError> {
    let pid = cand.pid;
    let raw = Pid::from_raw(pid).ok_or(PinError::Vanished(pid))?;
    let pidfd = if use_pidfd {
        match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Some(fd),
            Err(Errno::SRCH) => return Err(PinError::Vanished(pid)),
            Err(e) => {
                return Err(PinError::Pidfd {
                    pid,
                    source: e.into(),
                });
            }
        }
    } else {
        None
    };
    let mut buf = Vec::with_capacity(512);
    let stat = proc.read_stat(pid, &mut buf).map_err(|e| match e {
        ProcError::Vanished { .. } => PinError::Vanished(pid),
        e => PinError::Proc(e),
    })?;
    if !same_incarnation(cand.starttime, stat.starttime) {
        return Err(PinError::Recycled {
            pid,
            expected: cand.starttime,
            found: stat.starttime,
        });
    }
    if !scope.contains(pid) {
        return Err(PinError::OutOfScope(pid));
    }
    // The ranked comm may predate an exec; logs and events should name what we kill.
    let target = Target {
        pidfd,
        proc: RankedProc {
            comm: stat.comm,
            ..cand
        },
    };
    // Killed already (by the kernel, a user, anyone) but still here, exiting slowly or
    // frozen: another SIGKILL frees nothing. Its memory is on its way back, which the kill
    // stage can hasten (`kill::finish`); page-out and freeze pass it over.
    if proc.sigkill_pending(pid).unwrap_or(false) {
        return Err(PinError::Dying(Box::new(target)));
    }
    Ok(target)
}
