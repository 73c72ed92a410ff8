//! The runtime directory, where lowmemd remembers what it changed outside itself (a
//! `memory.high` it set, a cgroup it froze) until it has undone it: a lowmemd killed in
//! between (SIGKILL, the OOM killer, a panic) finds the records at its next start and
//! undoes what they name. Whoever can plant a record could have lowmemd write a value of
//! theirs into a cgroup, so the directory must be lowmemd's alone, and a record is
//! written whole (a fresh file renamed over) or not at all.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default runtime directory when `$RUNTIME_DIRECTORY` is not set (the shipped unit's
/// `RuntimeDirectory=lowmemd`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/lowmemd";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: the runtime directory may be written by others (or is not ours): no record could be trusted"
    )]
    OpenDirectory(PathBuf),
}

/// The runtime directory: the first of systemd's `$RUNTIME_DIRECTORY` (a colon-separated
/// list when a unit names several), else [`DEFAULT_RUNTIME_DIR`].
pub fn runtime_dir(env: Option<&std::ffi::OsStr>) -> PathBuf {
    env.and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|d| !d.is_empty()))
        .map_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR), PathBuf::from)
}

/// The record file named `prefix` for the cgroup `cgroup` (as a scope or /proc spells it):
/// one per cgroup, `/` and `%` escaped so that no two cgroups share a file.
pub fn record_path(dir: &Path, prefix: &str, cgroup: &str) -> PathBuf {
    let escaped = cgroup.replace('%', "%25").replace('/', "%2F");
    dir.join(format!("{prefix}{escaped}.state"))
}

/// Makes the runtime directory if it is missing (mode 0700) and refuses one that others
/// may write or that is not ours.
pub fn check_dir(dir: &Path) -> Result<(), RuntimeError> {
    let io = |source| RuntimeError::Io {
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
        return Err(RuntimeError::OpenDirectory(dir.into()));
    }
    Ok(())
}

/// Writes `text` to `path` whole or not at all: a temporary file created exclusively
/// (never through a planted link), synced, then renamed over.
pub fn save(path: &Path, text: &str) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| RuntimeError::Io { path: p, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The text of the record at `path`, if there is one.
pub fn load(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The records named `prefix…` in `dir`, oldest name first.
pub fn records(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".state"))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cgroup_has_its_own_record_and_systemd_lists_are_split() {
        let d = Path::new("/run/lowmemd");
        assert_eq!(
            record_path(d, "memory-high", "/box/app"),
            Path::new("/run/lowmemd/memory-high%2Fbox%2Fapp.state")
        );
        assert_ne!(record_path(d, "x", "/a%2Fb"), record_path(d, "x", "/a/b"));
        let env = std::ffi::OsStr::new("/run/lowmemd:/run/other");
        assert_eq!(runtime_dir(Some(env)), Path::new("/run/lowmemd"));
        assert_eq!(runtime_dir(None), Path::new(DEFAULT_RUNTIME_DIR));
    }

    #[test]
    fn records_are_listed_by_prefix_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(&record_path(d, "frozen", "/b"), "dir=/b\n").unwrap();
        save(&record_path(d, "frozen", "/a"), "dir=/a\n").unwrap();
        save(&record_path(d, "memory-high", "/a"), "x").unwrap();
        let found = records(d, "frozen");
        assert_eq!(found.len(), 2);
        assert_eq!(load(&found[0]).as_deref(), Some("dir=/a\n"));
        assert!(!d.join("frozen%2Fa.tmp").exists());
    }
}
