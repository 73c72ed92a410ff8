//! cgroup v1 memory usage thresholds (`memory.usage_in_bytes` through
//! `cgroup.event_control`): the kernel signals an eventfd when the memcg's usage crosses a
//! threshold, either way. Armed below each watermark, they let the monitor sleep without a
//! timer while usage is below all of them: memory cannot run short unseen.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::event::{EventfdFlags, eventfd};

#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    #[error("eventfd: {0}")]
    Eventfd(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One registration: an eventfd the kernel bumps when usage crosses `usage_kib`.
#[derive(Debug)]
pub struct UsageThreshold {
    pub usage_kib: u64,
    efd: OwnedFd,
    // Kept open for the registration's lifetime.
    _usage: File,
}

impl AsFd for UsageThreshold {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

impl UsageThreshold {
    /// Registers a threshold at `usage_kib` on the v1 memcg at `dir`.
    pub fn register(dir: &Path, usage_kib: u64) -> Result<Self, ThresholdError> {
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| ThresholdError::Eventfd(e.into()))?;
        let usage_path = dir.join("memory.usage_in_bytes");
        let usage = File::open(&usage_path).map_err(|source| ThresholdError::Io {
            path: usage_path.clone(),
            source,
        })?;
        let ctl_path = dir.join("cgroup.event_control");
        let line = format!(
            "{} {} {}",
            efd.as_raw_fd(),
            usage.as_raw_fd(),
            usage_kib * 1024
        );
        OpenOptions::new()
            .write(true)
            .open(&ctl_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| ThresholdError::Io {
                path: ctl_path.clone(),
                source,
            })?;
        Ok(UsageThreshold {
            usage_kib,
            efd,
            _usage: usage,
        })
    }

    /// Reads and resets the notification count.
    pub fn drain(&self) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(&self.efd, &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }
}

/// Where to put thresholds for a memcg of `limit_kib` with watermarks in percent: at the
/// usage above which available memory *could* fall below each watermark. Available is
/// `limit − usage + inactive file`, never less than `limit − usage`, so available < W
/// needs usage > limit − W first.
pub fn usages_for(limit_kib: u64, watermarks_pct: &[f64]) -> Vec<u64> {
    let mut v: Vec<u64> = watermarks_pct
        .iter()
        .map(|w| limit_kib.saturating_sub((w / 100.0 * limit_kib as f64) as u64))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_sit_where_available_could_first_reach_each_watermark() {
        // 256 MiB, watermarks at 25, 15 and 5 %.
        let t = usages_for(262_144, &[25.0, 15.0, 5.0]);
        assert_eq!(t, [196_608, 222_823, 249_037]);
        assert!(usages_for(262_144, &[]).is_empty());
    }
}
