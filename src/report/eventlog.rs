//! The event log: one JSON object per line per action, appended and flushed line by line so
//! a crash loses nothing already decided. Lines are written by the `event-log` thread
//! (`handoff.rs`): a reader of `--event-log -` that stops reading blocks that thread only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::handoff::{EVENTS_DROPPED, Handoff};

/// Records waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 256;

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

    /// `-` is stdout; anything else is a file opened for append (created if missing).
    pub fn open(target: &str) -> io::Result<Self> {
        let mut sink = if target == "-" {
            Sink::Stdout
        } else {
            Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(target))?,
            )
        };
        let out = Handoff::spawn("event-log", QUEUE, &EVENTS_DROPPED, move |line: Vec<u8>| {
            if let Err(e) = sink.write_line(&line) {
                log::error!("event log: write failed, record dropped: {e}");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
