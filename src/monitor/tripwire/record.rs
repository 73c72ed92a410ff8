//! What lowmemd remembers of a `memory.high` it set, in the runtime directory: the cgroup
//! directory, the value it found there and the value it wrote. Written before the write to
//! `memory.high` and removed after the original is back, so that a lowmemd killed in
//! between (SIGKILL, the OOM killer, a panic) finds it at its next start and puts the
//! original back, unless someone changed the value since.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::TripwireError;

/// The default runtime directory when `$RUNTIME_DIRECTORY` is not set (the shipped unit's
/// `RuntimeDirectory=lowmemd`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/lowmemd";

/// The runtime directory: the first of systemd's `$RUNTIME_DIRECTORY` (a colon-separated
/// list when a unit names several), else [`DEFAULT_RUNTIME_DIR`].
pub fn runtime_dir(env: Option<&std::ffi::OsStr>) -> PathBuf {
    env.and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|d| !d.is_empty()))
        .map_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR), PathBuf::from)
}

/// One remembered change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The cgroup directory whose `memory.high` was changed.
    pub dir: PathBuf,
    /// What was there before (`max`).
    pub original: String,
    /// What lowmemd wrote, as the kernel reads it back (bytes, page-aligned).
    pub written: String,
}

impl Record {
    pub fn format(&self) -> String {
        format!(
            "dir={}\noriginal={}\nwritten={}\n",
            self.dir.display(),
            self.original,
            self.written
        )
    }

    pub fn parse(text: &str) -> Option<Record> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Record {
            dir: PathBuf::from(get("dir")?),
            original: get("original")?,
            written: get("written")?,
        })
    }
}

/// The record's file for the cgroup `name` (as the scope spells it): one per scope, so
/// that lowmemds protecting different cgroups share the directory. `/` and `%` are
/// escaped, so no two cgroups share a file.
pub fn path_for(runtime_dir: &Path, cgroup: &str) -> PathBuf {
    let escaped = cgroup.replace('%', "%25").replace('/', "%2F");
    runtime_dir.join(format!("memory-high{escaped}.state"))
}

/// Makes the runtime directory if it is missing (mode 0700) and refuses one that others
/// may write: whoever can plant a record there could have lowmemd write a value of theirs
/// into a cgroup's `memory.high` at start-up.
pub fn check_dir(dir: &Path) -> Result<(), TripwireError> {
    let io = |source| TripwireError::Io {
        path: dir.into(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.mode() & 0o022 != 0 || meta.uid() != me {
        return Err(TripwireError::OpenDirectory(dir.into()));
    }
    Ok(())
}

/// Writes `record` to `path` whole or not at all: a temporary file created exclusively
/// (never through a planted link), then renamed over.
pub fn save(path: &Path, record: &Record) -> Result<(), TripwireError> {
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| TripwireError::Io { path: p, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(record.format().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The record at `path`, if there is one (an unreadable or garbled one counts as none:
/// restoring from it could write a wrong value).
pub fn load(path: &Path) -> Option<Record> {
    Record::parse(&std::fs::read_to_string(path).ok()?)
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written() {
        let r = Record {
            dir: "/sys/fs/cgroup/box".into(),
            original: "max".into(),
            written: "201326592".into(),
        };
        assert_eq!(Record::parse(&r.format()), Some(r));
        assert_eq!(Record::parse("dir=/x\noriginal=max\n"), None, "no written");
    }

    #[test]
    fn each_cgroup_has_its_own_record_and_systemd_lists_are_split() {
        let d = Path::new("/run/lowmemd");
        assert_eq!(
            path_for(d, "/box/app"),
            Path::new("/run/lowmemd/memory-high%2Fbox%2Fapp.state")
        );
        assert_ne!(path_for(d, "/a%2Fb"), path_for(d, "/a/b"));
        let env = std::ffi::OsStr::new("/run/lowmemd:/run/other");
        assert_eq!(runtime_dir(Some(env)), Path::new("/run/lowmemd"));
        assert_eq!(runtime_dir(None), Path::new(DEFAULT_RUNTIME_DIR));
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("lowmemd-rec-{}", std::process::id()));
        let dir = base.join("rt");
        check_dir(&dir).unwrap();
        let path = path_for(&dir, "/box");
        let r = Record {
            dir: "/sys/fs/cgroup/box".into(),
            original: "max".into(),
            written: "4096".into(),
        };
        save(&path, &r).unwrap();
        assert_eq!(load(&path), Some(r));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_dir(&dir),
            Err(TripwireError::OpenDirectory(_))
        ));
        let _ = std::fs::remove_dir_all(&base);
    }
}
