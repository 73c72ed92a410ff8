//! cgroup v1 memory pressure notifications (`memory.pressure_level` through
//! `cgroup.event_control`). They fire thousands of times per second under reclaim
//! (DESIGN.md §4), so they only wake the monitor: it drains the counter and samples, at most
//! once per poll round.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::event_control::{EventControlError, Registration};

/// The vmpressure levels we listen to: `low` fires on any reclaim and is pure noise for us.
pub const LEVELS: [&str; 2] = ["medium", "critical"];

/// One level's registration.
#[derive(Debug)]
pub struct VmPressure {
    pub level: &'static str,
    registration: Registration,
}

impl AsFd for VmPressure {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.registration.as_fd()
    }
}

impl VmPressure {
    /// Registers for `level` on the v1 memcg at `dir`.
    pub fn register(dir: &Path, level: &'static str) -> Result<Self, EventControlError> {
        Ok(VmPressure {
            level,
            registration: Registration::register(dir, "memory.pressure_level", level)?,
        })
    }

    /// Reads and resets the notification count.
    pub fn drain(&self) -> u64 {
        self.registration.drain()
    }
}
