//! The signal itself: SIGKILL to a pinned victim, only ever through its pidfd, its memory
//! reaped with process_mrelease; on kernels without pidfds (and only with the policy's
//! `allow_pid_kill`) kill(2) right after a starttime re-check.

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::procs::{ProcRoot, is_gone};

use super::pin::Target;

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("pidfd_send_signal(SIGKILL) to pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
    #[error("kill({pid}, SIGKILL): {source}")]
    PidSignal { pid: i32, source: std::io::Error },
    #[error(
        "pid {pid} changed identity right before the signal (starttime {found}, ranked {expected}): not killed"
    )]
    Recycled { pid: i32, expected: u64, found: u64 },
}

/// What happened after the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// The victim was gone before the signal (ESRCH): nothing was killed.
    AlreadyGone,
    /// `process_mrelease` reaped the address space (or found it already gone).
    Released,
    /// The kernel lacks `process_mrelease`, or it refused: the victim frees its memory itself.
    NotReleased,
}

/// SIGKILL through the pidfd, then reap its memory right away where the kernel can.
/// A victim that already exited (ESRCH) was not killed by us: [`Reap::AlreadyGone`].
pub fn kill_target(target: &Target, caps: &KernelCaps, proc: &ProcRoot) -> Result<Reap, KillError> {
    let Some(pidfd) = target.pidfd() else {
        return kill_by_pid(target, proc);
    };
    match pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) => {}
        Err(Errno::SRCH) => return Ok(Reap::AlreadyGone),
        Err(e) => {
            return Err(KillError::Signal {
                pid: target.proc.pid,
                source: e.into(),
            });
        }
    }
    Ok(match release(target, caps) {
        Release::Released => Reap::Released,
        Release::Refused | Release::Unavailable => Reap::NotReleased,
    })
}

/// What `process_mrelease` did for a dying target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its address space was reaped (or found gone already).
    Released,
    /// The kernel refused: its memory is shared with a live process (vfork, CLONE_VM) or it
    /// is dumping core; its exit would free nothing now either.
    Refused,
    /// No process_mrelease in this kernel, or no pidfd to name the target by.
    Unavailable,
}

/// Reaps a dying target's memory now (process_mrelease) where the kernel can, rather than
/// wait for its exit to free it.
pub fn release(target: &Target, caps: &KernelCaps) -> Release {
    let Some(pidfd) = target.pidfd().filter(|_| caps.process_mrelease) else {
        return Release::Unavailable;
    };
    // EINVAL means "not dying": after a delivered SIGKILL only a vfork child sharing its
    // parent's mm, or a core dump in progress; a kill of ours then simply waits for the exit.
    // EAGAIN is a reap cut short: some of the memory came back all the same. Anything else
    // (a sandbox's EPERM, ENOSYS) reaped nothing: as if the kernel had no process_mrelease.
    match crate::sys::process_mrelease(pidfd) {
        Ok(()) => Release::Released,
        Err(e) => {
            log::debug!("process_mrelease(pid {}): {e}", target.proc.pid);
            match e.kind() {
                std::io::ErrorKind::InvalidInput => Release::Refused,
                std::io::ErrorKind::WouldBlock => Release::Released,
                _ => Release::Unavailable,
            }
        }
    }
}

/// The no-pidfd fallback: re-check the starttime, then kill(2) by pid. The window between
/// the two is the recycling race pidfds close; `allow_pid_kill` is the policy's consent.
fn kill_by_pid(target: &Target, proc: &ProcRoot) -> Result<Reap, KillError> {
    let pid = target.proc.pid;
    let mut buf = Vec::with_capacity(512);
    match proc.read_stat(pid, &mut buf) {
        Ok(stat) if stat.starttime != target.proc.starttime => {
            return Err(KillError::Recycled {
                pid,
                expected: target.proc.starttime,
                found: stat.starttime,
            });
        }
        Ok(_) => {}
        // Gone already: its memory is coming back, and it was not our kill.
        Err(_) => return Ok(Reap::AlreadyGone),
    }
    match crate::sys::kill_by_pid_unpinned(pid) {
        Ok(()) => Ok(Reap::NotReleased),
        Err(e) if is_gone(&e) => Ok(Reap::AlreadyGone),
        Err(source) => Err(KillError::PidSignal { pid, source }),
    }
}
