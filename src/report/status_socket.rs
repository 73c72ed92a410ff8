//! The status socket: `/status` and `/metrics` (the HTTP server of `http.rs`) on a Unix
//! socket in lowmemd's runtime directory (`$RUNTIME_DIRECTORY/status.sock`, the unit's
//! `/run/lowmemd/status.sock`, or `--status-socket PATH`).
//!
//! Why beside the TCP port: anyone may bind a local port that lowmemd does not hold (before
//! it starts, while it retries), and `lowmemd status` would believe whoever answers. Only
//! lowmemd (or root) can create a file in its runtime directory, and `lowmemd status`
//! checks the peer's uid (SO_PEERCRED) before it believes the answer. Reading it needs no
//! privilege: the socket is 0666, like the TCP port that any local user may ask.

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The socket's name in the runtime directory (also where `lowmemd status` looks).
pub const FILE_NAME: &str = "status.sock";
/// The shipped unit's runtime directory (`RuntimeDirectory=lowmemd`).
pub const UNIT_RUNTIME_DIR: &str = "/run/lowmemd";

#[derive(Debug, thiserror::Error)]
pub enum StatusSocketError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: writable by others and not sticky: anyone could replace the socket; refusing to create it there"
    )]
    OpenDirectory(PathBuf),
    #[error("{path}: exists and is not ours (uid {uid}); refusing to replace it")]
    NotOurs { path: PathBuf, uid: u32 },
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

/// Where the daemon serves its status socket: `--status-socket`, else `status.sock` in
/// `$RUNTIME_DIRECTORY` (systemd's RuntimeDirectory=), else nowhere.
pub fn place(flag: Option<&Path>, runtime_dir: Option<&OsStr>) -> Option<PathBuf> {
    flag.map(Path::to_owned)
        .or_else(|| runtime_dir.map(|d| Path::new(d).join(FILE_NAME)))
}

/// Creates and listens on `path`. Its directory must not be open to others (unless
/// sticky, like /tmp, where nobody can remove or rename our socket); a stale socket of ours
/// left by a previous run is replaced, anything else is not.
pub fn create(path: &Path) -> Result<UnixListener, StatusSocketError> {
    let io = |source| StatusSocketError::Io {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(dir)
        .map_err(|source| StatusSocketError::Io {
            path: dir.into(),
            source,
        })?
        .mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(StatusSocketError::OpenDirectory(dir.into()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(StatusSocketError::NotASocket(path.into()));
        }
        Ok(m) if m.uid() != rustix::process::geteuid().as_raw() => {
            return Err(StatusSocketError::NotOurs {
                path: path.into(),
                uid: m.uid(),
            });
        }
        Ok(_) => std::fs::remove_file(path).map_err(io)?,
        Err(_) => {}
    }
    // bind(2) creates the file and fails if any exists (a link planted since included).
    let listener = UnixListener::bind(path).map_err(io)?;
    // The unit's UMask=0077 would leave it 0600: root's only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_runtime_directory() {
        let flag = Path::new("/x/s.sock");
        assert_eq!(
            place(Some(flag), Some(OsStr::new("/run/l"))),
            Some(flag.into())
        );
        assert_eq!(
            place(None, Some(OsStr::new("/run/l"))),
            Some(PathBuf::from("/run/l/status.sock"))
        );
        assert_eq!(place(None, None), None);
    }

    #[test]
    fn an_open_directory_or_a_file_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = create(&dir.path().join(FILE_NAME)).unwrap_err();
        assert!(matches!(e, StatusSocketError::OpenDirectory(_)), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let first = create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o666);
        drop(first);
        // Stale, ours: replaced.
        let _second = create(&path).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(matches!(
            create(&plain),
            Err(StatusSocketError::NotASocket(_))
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        assert!(create(&link).is_err());
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "x");
    }
}
