//! Acting on a pinned victim, only ever through its pidfd.

use std::os::fd::AsFd;

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::procs::is_gone;
use crate::target::Target;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("pidfd_send_signal(SIGKILL) to pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
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
pub fn kill(target: &Target, caps: &KernelCaps) -> Result<Reap, ActError> {
    match pidfd_send_signal(target, Signal::KILL) {
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
    match crate::sys::process_mrelease(target.as_fd()) {
        Ok(()) => Ok(Reap::Released),
        Err(e) => {
            log::debug!("process_mrelease(pid {}): {e}", target.proc.pid);
            Ok(Reap::NotReleased)
        }
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
    for batch in batches {
        out.calls += 1;
        match crate::sys::process_madvise_pageout(target.as_fd(), batch) {
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
