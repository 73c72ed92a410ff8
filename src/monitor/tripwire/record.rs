//! What lowmemd remembers of a `memory.high` it set, in the runtime directory: the cgroup
//! directory, the value it found there and the value it wrote. Written before the write to
//! `memory.high` and removed after the original is back, so that a lowmemd killed in
//! between (SIGKILL, the OOM killer, a panic) finds it at its next start and puts the
//! original back, unless someone changed the value since.

use std::path::{Path, PathBuf};

use crate::runtime;

use super::TripwireError;

pub use runtime::runtime_dir;

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
/// that lowmemds protecting different cgroups share the directory.
pub fn path_for(runtime_dir: &Path, cgroup: &str) -> PathBuf {
    runtime::record_path(runtime_dir, "memory-high", cgroup)
}

/// Makes the runtime directory if missing and refuses one others may write: whoever can
/// plant a record there could have lowmemd write a value of theirs into a cgroup's
/// `memory.high` at start-up.
pub fn check_dir(dir: &Path) -> Result<(), TripwireError> {
    Ok(runtime::check_dir(dir)?)
}

/// Writes `record` to `path` whole or not at all.
pub fn save(path: &Path, record: &Record) -> Result<(), TripwireError> {
    Ok(runtime::save(path, &record.format())?)
}

/// The record at `path`, if there is one (an unreadable or garbled one counts as none:
/// restoring from it could write a wrong value).
pub fn load(path: &Path) -> Option<Record> {
    Record::parse(&runtime::load(path)?)
}

pub use runtime::remove;

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
    fn each_cgroup_has_its_own_record() {
        let d = Path::new("/run/lowmemd");
        assert_eq!(
            path_for(d, "/box/app"),
            Path::new("/run/lowmemd/memory-high%2Fbox%2Fapp.state")
        );
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
            Err(TripwireError::Runtime(
                crate::runtime::RuntimeError::OpenDirectory(_)
            ))
        ));
        let _ = std::fs::remove_dir_all(&base);
    }
}
