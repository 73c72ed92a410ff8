//! A client's process as the registry reads and writes it: through its /proc directory,
//! opened while the pidfd that pins it says it runs.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags, openat};
use rustix::io::Errno;

use crate::procs::{ProcError, ProcRoot, StatLite, parse_stat};

use super::error::RegistryError;

/// A process's /proc directory, opened while its pidfd says it runs. Files opened through
/// it are that incarnation's (once it exits they fail, and a recycled pid gets a directory
/// of its own), so the checks and the write to oom_score_adj are all about the process the
/// pidfd pins: a client cannot have its own process exit and its pid reused by root's
/// between lowmemd's check of the uid and its write.
pub struct ProcDir {
    fd: OwnedFd,
    pid: i32,
    path: PathBuf,
}

impl ProcDir {
    pub fn open(proc: &ProcRoot, pid: i32, pidfd: &OwnedFd) -> Result<ProcDir, RegistryError> {
        let path = proc.path().join(pid.to_string());
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&path, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::SRCH => RegistryError::NoSuchProcess(pid),
            e => RegistryError::Proc(ProcError::Io {
                path: path.clone(),
                source: e.into(),
            }),
        })?;
        if exited(pidfd) {
            return Err(RegistryError::NoSuchProcess(pid));
        }
        Ok(ProcDir { fd, pid, path })
    }

    fn gone_or(&self, name: &str) -> impl Fn(Errno) -> RegistryError + '_ {
        let path = self.path.join(name);
        move |e| match e {
            Errno::NOENT | Errno::SRCH => RegistryError::NoSuchProcess(self.pid),
            e => RegistryError::Proc(ProcError::Io {
                path: path.clone(),
                source: e.into(),
            }),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, RegistryError> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty()).map_err(self.gone_or(name))?;
        let mut buf = Vec::with_capacity(1024);
        std::fs::File::from(fd)
            .read_to_end(&mut buf)
            .map_err(|e| self.gone_or(name)(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        Ok(buf)
    }

    fn malformed(&self, name: &str, what: String) -> RegistryError {
        RegistryError::Proc(ProcError::Malformed {
            path: self.path.join(name),
            what,
        })
    }

    /// The real uid (`Uid:` real effective saved fs).
    pub fn real_uid(&self) -> Result<u32, RegistryError> {
        let text = String::from_utf8_lossy(&self.read("status")?).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| self.malformed("status", "no Uid: line".into()))
    }

    pub fn stat(&self) -> Result<StatLite, RegistryError> {
        parse_stat(&self.read("stat")?).map_err(|e| self.malformed("stat", e))
    }

    pub fn adj(&self) -> Result<i16, RegistryError> {
        let buf = self.read("oom_score_adj")?;
        (std::str::from_utf8(&buf).ok())
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| self.malformed("oom_score_adj", "not a number".into()))
    }

    pub fn write_adj(&self, adj: i32) -> Result<(), RegistryError> {
        let write = || -> std::io::Result<()> {
            let flags = OFlags::WRONLY | OFlags::CLOEXEC;
            let fd = openat(&self.fd, "oom_score_adj", flags, Mode::empty())?;
            std::fs::File::from(fd).write_all(adj.to_string().as_bytes())
        };
        write().map_err(|source| RegistryError::WriteAdj {
            pid: self.pid,
            source,
        })
    }
}

/// Whether a pidfd says its process exited (readable), without waiting.
pub(super) fn exited(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}
