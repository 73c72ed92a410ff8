//! cgroup v1 memory pressure notifications (`memory.pressure_level` through
//! `cgroup.event_control`). They fire thousands of times per second under reclaim
//! (DESIGN.md §4), so they only wake the monitor: it drains the counter and samples, at most
//! once per poll round.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::event::{EventfdFlags, eventfd};

/// The vmpressure levels we listen to: `low` fires on any reclaim and is pure noise for us.
pub const LEVELS: [&str; 2] = ["medium", "critical"];

#[derive(Debug, thiserror::Error)]
pub enum VmPressureError {
    #[error("eventfd: {0}")]
    Eventfd(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One registration: an eventfd the kernel bumps on each notification.
#[derive(Debug)]
pub struct VmPressure {
    pub level: &'static str,
    efd: OwnedFd,
    // Kept open for the registration's lifetime.
    _pressure_level: File,
}

impl AsFd for VmPressure {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

impl VmPressure {
    /// Registers for `level` on the v1 memcg at `dir`.
    pub fn register(dir: &Path, level: &'static str) -> Result<Self, VmPressureError> {
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| VmPressureError::Eventfd(e.into()))?;
        let pl_path = dir.join("memory.pressure_level");
        let pressure_level = File::open(&pl_path).map_err(|source| VmPressureError::Io {
            path: pl_path.clone(),
            source,
        })?;
        let ctl_path = dir.join("cgroup.event_control");
        let line = format!("{} {} {level}", efd.as_raw_fd(), pressure_level.as_raw_fd());
        OpenOptions::new()
            .write(true)
            .open(&ctl_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| VmPressureError::Io {
                path: ctl_path.clone(),
                source,
            })?;
        Ok(VmPressure {
            level,
            efd,
            _pressure_level: pressure_level,
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
