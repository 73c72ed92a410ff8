//! The registrations published for `lowmemd rank`, which runs as a process of its own: the
//! socket's thread writes them to a file (a temporary file renamed over it, so a reader
//! sees one whole snapshot or the previous one), at most once a second and only when they
//! changed; `rank` reads and checks it. The kill path never waits on it: it reads the
//! registry in memory, and the file is written on the socket's thread with the registry's
//! lock released.
//!
//! Where: next to a socket lowmemd created (`<--lmkd-socket>.registered`), or, for a socket
//! inherited from systemd, in the service's runtime directory
//! (`$RUNTIME_DIRECTORY/lmkd.registered`, `/run/lowmemd/lmkd.registered` with the shipped
//! unit's `RuntimeDirectory=lowmemd`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pipeline::registered::{Registered, Registrations};
use crate::procs::ProcRoot;

use super::registry::Entry;
use super::socket::Origin;

/// The layout written; a reader refuses another.
pub const VERSION: u32 = 1;
/// The file in a runtime directory.
pub const FILE_NAME: &str = "lmkd.registered";
/// Where the shipped systemd unit's daemon publishes (`RuntimeDirectory=lowmemd`).
pub const DEFAULT_PATH: &str = "/run/lowmemd/lmkd.registered";
/// At most one write per this long.
const EVERY: Duration = Duration::from_secs(1);
/// Larger than any snapshot lowmemd writes (a registration is ~80 bytes).
const MAX_BYTES: u64 = 16 << 20;

/// The snapshot beside a socket created at `socket`.
pub fn beside_socket(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".registered");
    PathBuf::from(p)
}

/// Where a daemon serving the socket from `origin` publishes: beside a socket it created,
/// else in systemd's `RUNTIME_DIRECTORY` (its first entry); `None`: nowhere writable known.
pub fn place(origin: &Origin, runtime_directory: Option<&OsStr>) -> Option<PathBuf> {
    match origin {
        Origin::Path(p) => Some(beside_socket(p)),
        Origin::Systemd(_) | Origin::AndroidInit(_) => {
            let dirs = runtime_directory?.to_str()?;
            let first = dirs.split(':').next().filter(|d| d.starts_with('/'))?;
            Some(Path::new(first).join(FILE_NAME))
        }
    }
}

/// The daemon that wrote a snapshot: one incarnation (pid and starttime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub pid: i32,
    pub starttime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub daemon: Writer,
    /// Wall-clock time of the write, ms since the epoch.
    pub written_unix_ms: u64,
    pub registered: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a lowmemd registrations snapshot: {what}")]
    Malformed { path: PathBuf, what: String },
}

impl SnapshotError {
    /// The file is missing or unreadable (rather than wrong).
    pub fn is_unreadable(&self) -> bool {
        matches!(self, SnapshotError::Read { .. })
    }
}

impl Snapshot {
    /// Parses a snapshot's text; errors name `path` and what is wrong (with line and
    /// column for JSON errors).
    pub fn parse(text: &str, path: &Path) -> Result<Snapshot, SnapshotError> {
        let bad = |what: String| SnapshotError::Malformed {
            path: path.to_owned(),
            what,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        match value.get("version").map(|v| v.as_u64()) {
            Some(Some(v)) if v == u64::from(VERSION) => {}
            Some(Some(v)) => {
                return Err(bad(format!(
                    "version {v}, this lowmemd reads version {VERSION} (is it another lowmemd's?)"
                )));
            }
            Some(None) => return Err(bad("\"version\" is not a number".into())),
            None => return Err(bad("no \"version\" field".into())),
        }
        let snap: Snapshot = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        for (i, e) in snap.registered.iter().enumerate() {
            if e.pid <= 0 {
                return Err(bad(format!("registered[{i}]: pid {} is not a pid", e.pid)));
            }
            if !(-1000..=1000).contains(&e.adj) {
                return Err(bad(format!(
                    "registered[{i}] (pid {}): adj {} outside -1000..=1000",
                    e.pid, e.adj
                )));
            }
        }
        Ok(snap)
    }

    /// Reads and parses `path`. Only a regular file is read (a FIFO would block `rank`,
    /// /dev/zero never ends).
    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| SnapshotError::Read {
            path: path.to_owned(),
            source,
        };
        let bad = |what: &str| SnapshotError::Malformed {
            path: path.to_owned(),
            what: what.into(),
        };
        let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(bad("not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(bad("larger than 16 MiB"));
        }
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text"))?;
        Snapshot::parse(&text, path)
    }

    /// Whether the daemon that wrote it still runs (the same incarnation).
    pub fn writer_alive(&self, proc: &ProcRoot) -> bool {
        let mut buf = Vec::new();
        proc.read_stat(self.daemon.pid, &mut buf)
            .is_ok_and(|s| s.starttime == self.daemon.starttime)
    }

    /// The registrations, to look processes up by incarnation.
    pub fn lookup_table(&self) -> Table {
        Table(
            self.registered
                .iter()
                .map(|e| {
                    let r = Registered {
                        uid: e.uid,
                        owner_pid: e.owner_pid,
                    };
                    ((e.pid, e.starttime), r)
                })
                .collect(),
        )
    }
}

/// A snapshot's registrations by (pid, starttime).
pub struct Table(HashMap<(i32, u64), Registered>);

impl Registrations for Table {
    fn lookup(&self, pid: i32, starttime: u64) -> Option<Registered> {
        self.0.get(&(pid, starttime)).copied()
    }
}

/// Writes the snapshot for the socket's thread: when told something may have changed, at
/// most once per [`EVERY`], and only when the registrations differ from the last written.
pub struct Publisher {
    path: PathBuf,
    daemon: Writer,
    dirty: bool,
    last_write: Option<Instant>,
    written: Option<Vec<Entry>>,
    failing: bool,
}

impl Publisher {
    pub fn new(path: PathBuf, daemon: Writer) -> Self {
        Publisher {
            path,
            daemon,
            dirty: true,
            last_write: None,
            written: None,
            failing: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The registrations may have changed.
    pub fn mark(&mut self) {
        self.dirty = true;
    }

    /// How long until a pending write is due: the socket's thread wakes by then.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        Some(
            self.last_write
                .map_or(Duration::ZERO, |t| EVERY.saturating_sub(now - t)),
        )
    }

    /// Writes when due; `entries` is called only then.
    pub fn flush(&mut self, now: Instant, entries: impl FnOnce() -> Vec<Entry>) {
        if self.due_in(now) != Some(Duration::ZERO) {
            return;
        }
        self.dirty = false;
        let entries = entries();
        if self.written.as_ref() == Some(&entries) {
            return;
        }
        self.last_write = Some(now);
        let snap = Snapshot {
            version: VERSION,
            daemon: self.daemon,
            written_unix_ms: crate::clock::wall_ms(),
            registered: entries,
        };
        match write_atomically(&self.path, &snap) {
            Ok(()) => {
                if std::mem::replace(&mut self.failing, false) {
                    log::info!(
                        "lmkd registrations published again to {}",
                        self.path.display()
                    );
                }
                self.written = Some(snap.registered);
            }
            Err(e) => {
                // Said once per run of failures; `rank` says the file is missing or old.
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!(
                        "cannot publish lmkd registrations for `lowmemd rank`: {}: {e}",
                        self.path.display()
                    );
                }
                self.written = None;
            }
        }
    }
}

/// Writes `snap` to a new temporary file beside `path` (mode 0644: registrations are no
/// secret beyond what /proc shows) and renames it over `path`. The socket's directory may
/// be shared (/tmp): the temporary file has an unguessable name and is created with
/// O_EXCL|O_NOFOLLOW, so a file or symlink planted there is never opened (a fixed name
/// followed a planted symlink onto a root-only file), and rename(2) replaces a planted
/// `path` itself rather than what it points to.
fn write_atomically(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut tries = 0;
    let (tmp, mut f) = loop {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{:016x}", unguessable()));
        let tmp = PathBuf::from(tmp);
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o644)
            .open(&tmp);
        match opened {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let written = f.write_all(&text);
    drop(f);
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// 64 bits another user cannot guess: std's hash keys come from the kernel's getrandom
/// (a `RandomState` per call), mixed with the time.
fn unguessable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::wall_ms());
    h.write_u64(crate::clock::monotonic_ms());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, owner: Option<i32>) -> Entry {
        Entry {
            pid,
            starttime: 1000 + pid as u64,
            uid: 10_001,
            adj: 900,
            service: false,
            owner_pid: owner,
        }
    }

    fn me() -> Writer {
        let st = ProcRoot::default()
            .read_stat(std::process::id() as i32, &mut Vec::new())
            .unwrap()
            .starttime;
        Writer {
            pid: std::process::id() as i32,
            starttime: st,
        }
    }

    #[test]
    fn writes_at_most_once_a_second_and_only_changes_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = beside_socket(&dir.path().join("lmkd"));
        assert!(path.ends_with("lmkd.registered"));
        let mut p = Publisher::new(path.clone(), me());
        let t0 = Instant::now();
        assert_eq!(p.due_in(t0), Some(Duration::ZERO), "the first write is due");
        p.flush(t0, || vec![entry(10, Some(5))]);
        let snap = Snapshot::read(&path).unwrap();
        assert_eq!(snap.registered, [entry(10, Some(5))]);
        assert!(snap.writer_alive(&ProcRoot::default()));
        assert_eq!(p.due_in(t0), None, "nothing pending");
        // A change half a second later waits for the second to pass.
        p.mark();
        let half = t0 + Duration::from_millis(500);
        assert_eq!(p.due_in(half), Some(Duration::from_millis(500)));
        p.flush(half, || panic!("not read before it is due"));
        let t1 = t0 + Duration::from_secs(1);
        p.flush(t1, || vec![entry(10, None), entry(11, Some(5))]);
        let snap = Snapshot::read(&path).unwrap();
        assert_eq!(snap.registered, [entry(10, None), entry(11, Some(5))]);
        let t = snap.lookup_table();
        assert_eq!(
            t.lookup(11, 1011),
            Some(Registered {
                uid: 10_001,
                owner_pid: Some(5)
            })
        );
        assert_eq!(t.lookup(11, 1012), None, "another incarnation");
        // Unchanged registrations are not rewritten.
        std::fs::remove_file(&path).unwrap();
        p.mark();
        p.flush(t1 + Duration::from_secs(2), || {
            vec![entry(10, None), entry(11, Some(5))]
        });
        assert!(!path.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no temporary file left: {left:?}");
    }

    #[test]
    fn a_planted_symlink_is_neither_followed_nor_replaced_by_the_snapshot() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmkd.registered");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("lmkd.registered.tmp")).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let mut p = Publisher::new(path.clone(), me());
        p.flush(Instant::now(), || vec![entry(10, Some(5))]);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(
            Snapshot::read(&path).unwrap().registered,
            [entry(10, Some(5))]
        );
    }

    #[test]
    fn published_beside_a_created_socket_or_in_the_runtime_directory() {
        let run = Some(OsStr::new("/run/lowmemd:/run/other"));
        assert_eq!(
            place(&Origin::Path("/tmp/t/lmkd".into()), run),
            Some(PathBuf::from("/tmp/t/lmkd.registered"))
        );
        assert_eq!(
            place(&Origin::Systemd(3), run),
            Some(PathBuf::from(DEFAULT_PATH))
        );
        assert_eq!(place(&Origin::AndroidInit(9), None), None);
        assert_eq!(place(&Origin::Systemd(3), Some(OsStr::new("rel"))), None);
    }

    #[test]
    fn a_dead_writer_makes_the_snapshot_stale() {
        let mut snap = Snapshot {
            version: VERSION,
            daemon: me(),
            written_unix_ms: 0,
            registered: vec![],
        };
        assert!(snap.writer_alive(&ProcRoot::default()));
        snap.daemon.starttime += 1;
        assert!(!snap.writer_alive(&ProcRoot::default()));
    }

    #[test]
    fn malformed_snapshots_are_refused_naming_the_file_and_the_fault() {
        let path = Path::new("/run/x/lmkd.registered");
        let ok = r#"{"version":1,"daemon":{"pid":7,"starttime":9},"written_unix_ms":1,
            "registered":[{"pid":10,"starttime":1010,"uid":0,"adj":900,"service":false,"owner_pid":null}]}"#;
        let snap = Snapshot::parse(ok, path).unwrap();
        assert_eq!(snap.registered[0].owner_pid, None);
        let cases = [
            ("", "EOF while parsing"),
            ("{\"version\":1,", "line 1 column 13"),
            ("[]", "no \"version\" field"),
            ("{\"version\":\"1\"}", "\"version\" is not a number"),
            ("{\"version\":2}", "version 2, this lowmemd reads version 1"),
            ("{\"version\":1}", "missing field `daemon`"),
            (
                &ok.replace("\"pid\":10", "\"pid\":-3"),
                "registered[0]: pid -3 is not a pid",
            ),
            (
                &ok.replace("\"adj\":900", "\"adj\":4000"),
                "registered[0] (pid 10): adj 4000 outside -1000..=1000",
            ),
            (&ok.replace("\"uid\":0", "\"uid\":\"root\""), "invalid type"),
        ];
        for (text, want) in cases {
            let e = Snapshot::parse(text, path).unwrap_err().to_string();
            assert!(
                e.starts_with("/run/x/lmkd.registered: not a lowmemd registrations snapshot: "),
                "{e}"
            );
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        let e = Snapshot::read(&missing).unwrap_err();
        assert!(e.is_unreadable(), "{e}");
        assert!(e.to_string().contains("none: No such file"), "{e}");
        let e = Snapshot::read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: not a lowmemd registrations snapshot: not a regular file"
        );
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert!(
            Snapshot::read(&bin)
                .unwrap_err()
                .to_string()
                .ends_with("not UTF-8 text")
        );
    }
}
