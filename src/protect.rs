//! lowmemd protecting itself: it must keep running exactly when memory is short.

use crate::caps::{CAP_IPC_LOCK, CAP_SYS_RESOURCE, KernelCaps};

/// Locks our pages in RAM and lowers our own oom_score_adj as far as allowed. Returns the
/// warnings to log once; failure of either is not fatal.
pub fn protect_self(caps: &KernelCaps) -> Vec<String> {
    let mut warnings = Vec::new();
    use rustix::mm::{MlockAllFlags, mlockall};
    // ONFAULT: lock pages as they are touched instead of faulting in every reserved stack
    // and heap page up front, which would cost megabytes on a small board.
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = mlockall(flags) {
        warnings.push(format!(
            "mlockall failed ({e}){}: lowmemd's own pages may be reclaimed under pressure",
            if caps.has_cap(CAP_IPC_LOCK) {
                ""
            } else {
                " without CAP_IPC_LOCK"
            }
        ));
    }
    let path = "/proc/self/oom_score_adj";
    if std::fs::write(path, "-1000").is_err() {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        warnings.push(format!(
            "cannot set own oom_score_adj to -1000{}; it stays {} (the kernel OOM killer could pick lowmemd)",
            if caps.has_cap(CAP_SYS_RESOURCE) { "" } else { " without CAP_SYS_RESOURCE" },
            now.trim()
        ));
    }
    warnings
}
