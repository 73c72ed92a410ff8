//! cgroup v1 memory usage thresholds (`memory.usage_in_bytes` through
//! `cgroup.event_control`): the kernel signals an eventfd when the memcg's usage crosses a
//! threshold, either way. Armed below each watermark, they let the monitor sleep without a
//! timer while usage is below all of them: memory cannot run short unseen.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::event_control::{EventControlError, Registration};

/// One threshold: the kernel bumps its eventfd when usage crosses `usage_kib`.
#[derive(Debug)]
pub struct UsageThreshold {
    pub usage_kib: u64,
    registration: Registration,
}

impl AsFd for UsageThreshold {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.registration.as_fd()
    }
}

impl UsageThreshold {
    /// Registers a threshold at `usage_kib` on the v1 memcg at `dir`.
    pub fn register(dir: &Path, usage_kib: u64) -> Result<Self, EventControlError> {
        let bytes = (usage_kib * 1024).to_string();
        Ok(UsageThreshold {
            usage_kib,
            registration: Registration::register(dir, "memory.usage_in_bytes", &bytes)?,
        })
    }

    /// Reads and resets the notification count.
    pub fn drain(&self) -> u64 {
        self.registration.drain()
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
