//! cgroup v1 notifications through `cgroup.event_control`: the kernel bumps an eventfd when
//! something about one of the memcg's control files happens (a vmpressure level, a usage
//! threshold crossed). One registration is the eventfd plus the control file, kept open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::event::{EventfdFlags, eventfd};

#[derive(Debug, thiserror::Error)]
pub enum EventControlError {
    #[error("eventfd: {0}")]
    Eventfd(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct Registration {
    efd: OwnedFd,
    // Kept open for the registration's lifetime: closing it ends the registration.
    _control: File,
}

impl AsFd for Registration {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

impl Registration {
    /// Registers for events of `control` (a file of the v1 memcg at `dir`) with `args` (the
    /// level name, the threshold in bytes...).
    pub fn register(dir: &Path, control: &str, args: &str) -> Result<Self, EventControlError> {
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| EventControlError::Eventfd(e.into()))?;
        let control_path = dir.join(control);
        let control = File::open(&control_path).map_err(|source| EventControlError::Io {
            path: control_path.clone(),
            source,
        })?;
        let ctl_path = dir.join("cgroup.event_control");
        let line = format!("{} {} {args}", efd.as_raw_fd(), control.as_raw_fd());
        OpenOptions::new()
            .write(true)
            .open(&ctl_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| EventControlError::Io {
                path: ctl_path.clone(),
                source,
            })?;
        Ok(Registration {
            efd,
            _control: control,
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
