//! PSI triggers (Linux 5.2+): the kernel wakes us when tasks stalled on memory for more than
//! a threshold within a window, instead of us polling averages.
//!
//! Facts measured on our machines (DESIGN.md §4): without CAP_SYS_RESOURCE the window must be
//! a multiple of 2 s (1 s and 500 ms give EINVAL), anything above 10 s is EINVAL; the write
//! needs a trailing NUL or newline; one trigger per open file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sample::PsiCondition;

/// The kernel's bounds on a trigger window.
const MAX_WINDOW_MS: u64 = 10_000;
/// Unprivileged windows must be multiples of this.
const UNPRIVILEGED_WINDOW_STEP_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum PsiError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{path}: no trigger window from {wanted_ms} ms to 10 s was accepted (last error: {source})"
    )]
    NoWindow {
        path: PathBuf,
        wanted_ms: u64,
        source: io::Error,
    },
}

/// One registered trigger.
#[derive(Debug)]
pub struct PsiTrigger {
    file: File,
    pub condition: PsiCondition,
    /// The window the kernel accepted (may be wider than asked).
    pub window_ms: u64,
    /// The window the policy asked for.
    pub asked_ms: u64,
}

impl AsFd for PsiTrigger {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The windows to try, in order: the one asked for, then each multiple of 2 s above it.
pub fn candidate_windows(wanted_ms: u64) -> Vec<u64> {
    let wanted = wanted_ms.clamp(500, MAX_WINDOW_MS);
    let mut out = vec![wanted];
    let mut w = wanted.div_ceil(UNPRIVILEGED_WINDOW_STEP_MS) * UNPRIVILEGED_WINDOW_STEP_MS;
    while w <= MAX_WINDOW_MS {
        if w != wanted {
            out.push(w);
        }
        w += UNPRIVILEGED_WINDOW_STEP_MS;
    }
    out
}

/// The line written to the pressure file, NUL-terminated (the kernel overwrites the last byte).
pub fn trigger_line(cond: &PsiCondition, window_ms: u64) -> String {
    let window_us = window_ms * 1000;
    // The kernel wants 0 < threshold <= window.
    let threshold_us = ((cond.stall_pct / 100.0 * window_us as f64) as u64).clamp(1, window_us);
    format!("{} {threshold_us} {window_us}\0", cond.kind.as_str())
}

impl PsiTrigger {
    /// Registers `cond` on the pressure file at `path`, widening the window as needed.
    pub fn register(path: &Path, cond: PsiCondition, wanted_ms: u64) -> Result<Self, PsiError> {
        let mut last = None;
        for window_ms in candidate_windows(wanted_ms) {
            // A fresh file per attempt: a failed write leaves no trigger, but one file may hold
            // only one trigger, so we never reuse a file that might.
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(path)
                .map_err(|source| PsiError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            match file.write_all(trigger_line(&cond, window_ms).as_bytes()) {
                Ok(()) => {
                    return Ok(PsiTrigger {
                        file,
                        condition: cond,
                        window_ms,
                        asked_ms: wanted_ms,
                    });
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    last = Some(e)
                }
                Err(source) => {
                    return Err(PsiError::Open {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(PsiError::NoWindow {
            path: path.to_owned(),
            wanted_ms,
            source: last.unwrap_or_else(|| io::Error::other("no window to try")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::PsiKind;

    #[test]
    fn windows_fall_back_to_two_second_multiples() {
        assert_eq!(
            candidate_windows(1000),
            [1000, 2000, 4000, 6000, 8000, 10000]
        );
        assert_eq!(candidate_windows(2000), [2000, 4000, 6000, 8000, 10000]);
        assert_eq!(candidate_windows(3000), [3000, 4000, 6000, 8000, 10000]);
        assert_eq!(candidate_windows(60_000), [10_000]);
    }

    #[test]
    fn trigger_line_scales_threshold_to_window_and_ends_in_nul() {
        let c = PsiCondition {
            kind: PsiKind::Some,
            stall_pct: 10.0,
        };
        assert_eq!(trigger_line(&c, 2000), "some 200000 2000000\0");
        let full = PsiCondition {
            kind: PsiKind::Full,
            stall_pct: 150.0,
        };
        assert_eq!(trigger_line(&full, 1000), "full 1000000 1000000\0");
    }
}
