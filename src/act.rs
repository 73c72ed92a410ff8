//! Acting on a pinned victim, only ever through its pidfd.

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::procs::{ProcRoot, is_gone};
use crate::target::Target;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
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
    /// `process_mrelease` reaped the address space (or found it already gone).
    Released,
    /// The kernel lacks `process_mrelease`, or it refused: the victim frees its memory itself.
    NotReleased,
}

/// SIGKILL through the pidfd, then reap its memory right away where the kernel can.
/// A victim that already exited (ESRCH) counts as killed: its memory is coming back.
pub fn kill(target: &Target, caps: &KernelCaps, proc: &ProcRoot) -> Result<Reap, ActError> {
    let Some(pidfd) = target.pidfd() else {
        return kill_by_pid(target, proc);
    };
    match pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => {
            return Err(ActError::Signal {
                pid: target.proc.pid,
                source: e.into(),
            });
        }
    }
    if !caps.process_mrelease {
        return Ok(Reap::NotReleased);
    }
    // EINVAL would mean "not dying yet": impossible after a delivered SIGKILL unless the
    // victim was a vfork child sharing its parent's mm; then we simply wait for the exit.
    match crate::sys::process_mrelease(pidfd) {
        Ok(()) => Ok(Reap::Released),
        Err(e) => {
            log::debug!("process_mrelease(pid {}): {e}", target.proc.pid);
            Ok(Reap::NotReleased)
        }
    }
}

/// The no-pidfd fallback: re-check the starttime, then kill(2) by pid. The window between
/// the two is the recycling race pidfds close; `allow_pid_kill` is the policy's consent.
fn kill_by_pid(target: &Target, proc: &ProcRoot) -> Result<Reap, ActError> {
    let pid = target.proc.pid;
    let mut buf = Vec::with_capacity(512);
    match proc.read_stat(pid, &mut buf) {
        Ok(stat) if stat.starttime != target.proc.starttime => {
            return Err(ActError::Recycled {
                pid,
                expected: target.proc.starttime,
                found: stat.starttime,
            });
        }
        Ok(_) => {}
        // Gone already: its memory is coming back.
        Err(_) => return Ok(Reap::NotReleased),
    }
    match crate::sys::kill_by_pid_unpinned(pid) {
        Ok(()) => Ok(Reap::NotReleased),
        Err(e) if is_gone(&e) => Ok(Reap::NotReleased),
        Err(source) => Err(ActError::PidSignal { pid, source }),
    }
}

/// What a page-out did, as the kernel reported it (what it freed is measured by the caller).
#[derive(Debug, Default)]
pub struct PageoutCalls {
    /// Bytes the kernel accepted (short counts included).
    pub advised_bytes: u64,
    pub calls: u32,
    /// The process exited meanwhile.
    pub exited: bool,
    /// The kernel refused us (EPERM: no CAP_SYS_NICE; EACCES: no ptrace access): the tier
    /// cannot work and should be switched off.
    pub refused: Option<std::io::Error>,
}

/// Asks the kernel to page out `batches` (each one process_madvise call) of the pinned
/// victim. A mapping that changed since smaps was read (EINVAL, ENOMEM) costs only its call.
pub fn pageout(target: &Target, batches: &[Vec<(u64, u64)>]) -> PageoutCalls {
    let mut out = PageoutCalls::default();
    let Some(pidfd) = target.pidfd() else {
        out.refused = Some(std::io::Error::other("no pidfd: process_madvise needs one"));
        return out;
    };
    for batch in batches {
        out.calls += 1;
        match crate::sys::process_madvise_pageout(pidfd, batch) {
            Ok(n) => out.advised_bytes += n as u64,
            Err(e) if is_gone(&e) => {
                out.exited = true;
                break;
            }
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::PERM | Errno::ACCESS)) => {
                out.refused = Some(e);
                break;
            }
            Err(e) => log::debug!("process_madvise(pid {}): {e}", target.proc.pid),
        }
    }
    out
}
