//! The event log: one JSON object per line per action, appended and flushed line by line so
//! a crash loses nothing already decided. Lines are written by the `event-log` thread
//! (`handoff.rs`): a reader of `--event-log -` that stops reading blocks that thread only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::io::Errno;
use serde::Serialize;

use super::handoff::{EVENTS_DROPPED, Handoff};

/// Records waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 256;
/// Kill records name processes and their owners: not for every local user.
const MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// Someone else's doing (a link planted in a directory they can write), not the
    /// operator's: the daemon goes on without the log rather than stop protecting.
    #[error(
        "{0}: is a symbolic link; refusing to follow it (planted by someone who can write its directory?)"
    )]
    Symlink(PathBuf),
    #[error("{path}: {why}; refusing to write events to it")]
    NotOurs { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
}

/// Where events go: nowhere, stdout, or an appended file.
pub struct EventLog {
    out: Option<Handoff<Vec<u8>>>,
}

enum Sink {
    Stdout,
    File(File),
}

impl Sink {
    /// Writes one line whole or not at all: a disk that fills mid-line must not leave half
    /// a JSON object for the next record to be appended to.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            // Lines are far below PIPE_BUF: a pipe takes each whole or not at all.
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line).and_then(|()| out.flush())
            }
            Sink::File(f) => {
                let before = f.metadata()?.len();
                f.write_all(line).inspect_err(|_| {
                    let _ = f.set_len(before);
                })
            }
        }
    }
}

impl EventLog {
    pub fn none() -> Self {
        EventLog { out: None }
    }

    /// `-` is stdout; anything else is a file opened for append (created 0640 if missing).
    pub fn open(target: &str) -> Result<Self, EventLogError> {
        let mut sink = if target == "-" {
            Sink::Stdout
        } else {
            Sink::File(open_file(Path::new(target))?)
        };
        let out = Handoff::spawn("event-log", QUEUE, &EVENTS_DROPPED, move |line: Vec<u8>| {
            if let Err(e) = sink.write_line(&line) {
                log::error!("event log: write failed, record dropped: {e}");
            }
        })
        .map_err(|source| EventLogError::Open {
            path: target.into(),
            source,
        })?;
        Ok(EventLog { out: Some(out) })
    }

    /// Queues `event` as one line; never waits for the writer.
    pub fn record(&self, event: &impl Serialize) {
        let Some(out) = &self.out else { return };
        match serde_json::to_vec(event) {
            Ok(mut line) => {
                line.push(b'\n');
                out.send(line);
            }
            Err(e) => log::error!("event log: cannot serialise an event: {e}"),
        }
    }

    /// Gives the writer up to `timeout` to write what is queued (before the process exits).
    pub fn drain(&self, timeout: Duration) {
        if let Some(out) = &self.out {
            out.drain(timeout);
        }
    }
}

/// Opens `path` for append without following a symbolic link in its last component
/// (O_NOFOLLOW: ELOOP) and without blocking on a FIFO (O_NONBLOCK: a planted FIFO with no
/// reader is ENXIO), then checks that what was opened is a regular file of ours (or root's)
/// with one name: a hard link to another file, or a file another user created first (and
/// can read and rewrite), is refused too.
fn open_file(path: &Path) -> Result<File, EventLogError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|source| match Errno::from_io_error(&source) {
            Some(Errno::LOOP) => EventLogError::Symlink(path.into()),
            _ => EventLogError::Open {
                path: path.into(),
                source,
            },
        })?;
    let not_ours = |why: String| EventLogError::NotOurs {
        path: path.into(),
        why,
    };
    let m = f.metadata().map_err(|source| EventLogError::Open {
        path: path.into(),
        source,
    })?;
    let me = rustix::process::geteuid().as_raw();
    if !m.file_type().is_file() {
        return Err(not_ours("not a regular file".into()));
    }
    if m.nlink() > 1 {
        return Err(not_ours(format!("has {} hard links", m.nlink())));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(not_ours(format!("owned by uid {}", m.uid())));
    }
    // Writes are small and to a regular file: blocking mode is what the writer expects.
    rustix::io::ioctl_fionbio(&f, false).map_err(|e| EventLogError::Open {
        path: path.into(),
        source: e.into(),
    })?;
    Ok(f)
}

impl EventLogError {
    /// Whether this is an operator's mistake (stop at start-up: they see it at once) rather
    /// than someone else's planting (go on without the log: protecting comes first).
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, EventLogError::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_a_fifo_a_hard_link_or_a_strangers_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_file(&link).unwrap_err();
        assert!(matches!(e, EventLogError::Symlink(_)), "{e}");
        assert!(e.to_string().contains(&link.display().to_string()), "{e}");
        assert!(!e.is_misconfiguration());
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = open_file(&hard).unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        // No reader: ENXIO instead of blocking start-up forever.
        assert!(open_file(&fifo).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
        if rustix::process::geteuid().is_root() {
            let theirs = dir.path().join("theirs");
            std::fs::write(&theirs, "").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = open_file(&theirs).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
        let missing = open_file(&dir.path().join("no/such/dir")).unwrap_err();
        assert!(missing.is_misconfiguration(), "{missing}");
    }

    /// Unmounts on drop, also when the test fails.
    struct Tmpfs(tempfile::TempDir);

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    #[ignore = "needs root to mount a 64 KiB tmpfs: run as root with cargo test -- --include-ignored"]
    fn a_disk_that_fills_mid_line_keeps_only_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "lowmemd-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t tmpfs needs root");
        let fs = Tmpfs(dir);
        let path = fs.0.path().join("events.jsonl");
        let mut sink = Sink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap(),
        );
        // 1000-byte lines do not divide a 4 KiB page: the line that meets the end of the
        // file system is written in part before ENOSPC.
        let mut line = vec![b'x'; 999];
        line.push(b'\n');
        let mut written = 0;
        while sink.write_line(&line).is_ok() {
            written += 1;
            assert!(written < 1000, "the 64 KiB file system never filled");
        }
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.len(), written * 1000, "a partial line was left behind");
        assert!(text.ends_with(b"\n"));
    }
}
