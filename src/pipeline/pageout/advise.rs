//! The page-out syscall: `process_madvise(MADV_PAGEOUT)` through a pinned victim's pidfd,
//! one call per batch, stopping where the kernel says the tier cannot work.

use rustix::io::Errno;

use crate::pipeline::pin::Target;
use crate::procs::is_gone;

/// What a page-out did, as the kernel reported it (what it freed is measured by the caller).
#[derive(Debug, Default)]
pub struct Advised {
    /// Bytes the kernel accepted (short counts included).
    pub advised_bytes: u64,
    pub calls: u32,
    /// The process exited meanwhile.
    pub exited: bool,
    /// The kernel refused us (EPERM: no CAP_SYS_NICE; EACCES: no ptrace access): the tier
    /// cannot work and should be switched off.
    pub refused: Option<std::io::Error>,
}

impl Advised {
    /// Adds what a further call did.
    pub fn add(&mut self, more: Advised) {
        self.advised_bytes += more.advised_bytes;
        self.calls += more.calls;
        self.exited |= more.exited;
        self.refused = self.refused.take().or(more.refused);
    }
}

/// Asks the kernel to page out `batches` (each one process_madvise call) of the pinned
/// victim. A mapping that changed since smaps was read (EINVAL, ENOMEM) costs only its call.
pub fn advise(target: &Target, batches: &[Vec<(u64, u64)>]) -> Advised {
    let mut out = Advised::default();
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
