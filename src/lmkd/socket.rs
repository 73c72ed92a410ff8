//! The listening socket: created at `--lmkd-socket PATH` (mode 0660, a chosen group), or
//! inherited already open from Android init (`ANDROID_SOCKET_lmkd=<fd>`) or from systemd
//! socket activation (`LISTEN_FDS`, the fd named `lmkd` in `LISTEN_FDNAMES`). Who may
//! connect is the file's mode and group; what a client may do once connected is decided by
//! its peer credentials (`peer`). A socket is only created in a directory no other user
//! may write, or one like /tmp (sticky, root's): elsewhere another user could replace the
//! socket, or plant files where lowmemd writes its registrations snapshot.

use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Gid, Mode};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// lmkd's limit of data connections is 3; the backlog only needs to hold a few more.
const BACKLOG: i32 = 8;
/// Systemd passes its sockets from fd 3 on.
const SD_LISTEN_FDS_START: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error(
        "{dir}: {why}: another user could replace the lmkd socket or plant files beside it; use a directory only lowmemd's user may write (e.g. /run/lowmemd), or a sticky one of root's like /tmp"
    )]
    SharedDirectory { dir: PathBuf, why: String },
    #[error("group {0:?} is neither a number nor in /etc/group")]
    NoSuchGroup(String),
    #[error("user {0:?} is neither a number nor in /etc/passwd")]
    NoSuchUser(String),
    #[error("{var}: {why}")]
    Inherited { var: &'static str, why: String },
}

/// Where the socket came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Path(PathBuf),
    AndroidInit(i32),
    Systemd(i32),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Path(p) => write!(f, "{}", p.display()),
            Origin::AndroidInit(fd) => write!(f, "fd {fd} from Android init (ANDROID_SOCKET_lmkd)"),
            Origin::Systemd(fd) => write!(f, "fd {fd} from systemd socket activation"),
        }
    }
}

fn io(path: &Path) -> impl Fn(rustix::io::Errno) -> SocketError + '_ {
    move |e| SocketError::Create {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The gid of a group name (or number) from /etc/group.
pub fn group_id(name: &str) -> Result<u32, SocketError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| SocketError::NoSuchGroup(name.into()))
}

/// The uid of a user name (or number) from /etc/passwd.
pub fn user_id(name: &str) -> Result<u32, SocketError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| SocketError::NoSuchUser(name.into()))
}

/// Creates and listens on `path`: mode 0660, owned by `group` when given. A stale socket
/// left by a previous run is replaced; any other file is not.
pub fn create(path: &Path, group: Option<&str>) -> Result<OwnedFd, SocketError> {
    let gid = group.map(group_id).transpose()?;
    check_directory(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| SocketError::Create {
                path: path.into(),
                source,
            })?
        }
        Ok(_) => return Err(SocketError::NotASocket { path: path.into() }),
        Err(_) => {}
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io(path))?;
    let addr = SocketAddrUnix::new(path).map_err(io(path))?;
    rustix::net::bind(&fd, &addr).map_err(io(path))?;
    rustix::fs::chmod(path, Mode::from_raw_mode(0o660)).map_err(io(path))?;
    if let Some(gid) = gid {
        rustix::fs::chown(path, None, Some(Gid::from_raw(gid))).map_err(io(path))?;
    }
    rustix::net::listen(&fd, BACKLOG).map_err(io(path))?;
    Ok(fd)
}

/// Refuses a socket directory that another user may write: one owned by another user, or
/// writable by group or others, unless it is sticky and owned by root or lowmemd's user
/// (then nobody else may rename or remove what lowmemd puts there).
fn check_directory(path: &Path) -> Result<(), SocketError> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let m = std::fs::metadata(dir).map_err(|source| SocketError::Create {
        path: dir.to_owned(),
        source,
    })?;
    let me = rustix::process::geteuid().as_raw();
    let ours = m.uid() == 0 || m.uid() == me;
    let shared = |why: String| SocketError::SharedDirectory {
        dir: dir.to_owned(),
        why,
    };
    if !ours {
        return Err(shared(format!(
            "owned by uid {}, who may replace what is in it",
            m.uid()
        )));
    }
    let mode = m.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(shared(format!(
            "others may write it (mode {mode:04o}) and it has no sticky bit"
        )));
    }
    Ok(())
}

/// A listening socket handed over by Android init or systemd, if there is one.
pub fn inherited() -> Result<Option<(OwnedFd, Origin)>, SocketError> {
    if let Ok(v) = std::env::var("ANDROID_SOCKET_lmkd") {
        let var = "ANDROID_SOCKET_lmkd";
        let n: i32 = v.trim().parse().map_err(|_| SocketError::Inherited {
            var,
            why: format!("{v:?} is not a file descriptor number"),
        })?;
        let fd = adopt(var, n)?;
        return Ok(Some((fd, Origin::AndroidInit(n))));
    }
    let var = "LISTEN_FDS";
    let Ok(count) = std::env::var(var) else {
        return Ok(None);
    };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        return Ok(None);
    }
    let count: i32 = count.trim().parse().unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let index = match names.iter().position(|n| *n == "lmkd") {
        Some(i) if (i as i32) < count => i as i32,
        _ if count == 1 => 0,
        _ => {
            return Err(SocketError::Inherited {
                var,
                why: format!(
                    "{count} sockets passed and none named lmkd (FileDescriptorName=lmkd in the .socket unit)"
                ),
            });
        }
    };
    let n = SD_LISTEN_FDS_START + index;
    Ok(Some((adopt(var, n)?, Origin::Systemd(n))))
}

/// Takes an inherited fd, checks it is a SOCK_SEQPACKET socket, and listens on it (init
/// creates and binds lmkd's socket; the daemon listens).
fn adopt(var: &'static str, n: i32) -> Result<OwnedFd, SocketError> {
    let bad = |why: String| SocketError::Inherited { var, why };
    let fd = crate::sys::adopt_inherited_fd(n).map_err(|e| bad(format!("fd {n}: {e}")))?;
    match rustix::net::sockopt::socket_type(&fd) {
        Ok(SocketType::SEQPACKET) => {}
        Ok(t) => {
            return Err(bad(format!(
                "fd {n} is a socket of type {t:?}, not SOCK_SEQPACKET"
            )));
        }
        Err(e) => return Err(bad(format!("fd {n} is not a socket: {e}"))),
    }
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .and_then(|()| rustix::io::ioctl_fionbio(&fd, true))
        .and_then(|()| rustix::net::listen(&fd, BACKLOG))
        .map_err(|e| bad(format!("fd {n}: {e}")))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_number_and_name() {
        assert_eq!(group_id("1234").unwrap(), 1234);
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(group_id("no-such-group-here").is_err());
        assert_eq!(user_id("1234").unwrap(), 1234);
        assert_eq!(user_id("root").unwrap(), 0);
        assert!(user_id("no-such-user-here").is_err());
    }

    #[test]
    fn creates_a_0660_socket_and_refuses_to_replace_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lmkd");
        let _fd = create(&p, None).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        drop(_fd);
        // A stale socket is replaced.
        let _fd = create(&p, None).unwrap();
        let f = dir.path().join("plain");
        std::fs::write(&f, "x").unwrap();
        assert!(matches!(
            create(&f, None),
            Err(SocketError::NotASocket { .. })
        ));
    }

    #[test]
    fn a_directory_others_may_write_is_refused_unless_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
        let p = dir.path().join("lmkd");
        mode(0o777).unwrap();
        let e = create(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("others may write it (mode 0777) and it has no sticky bit"),
            "{e}"
        );
        assert!(!p.exists());
        mode(0o770).unwrap();
        assert!(create(&p, None).is_err(), "group-writable");
        // As /tmp: sticky, lowmemd's user's (or root's).
        mode(0o1777).unwrap();
        drop(create(&p, None).unwrap());
        mode(0o755).unwrap();
        drop(create(&p, None).unwrap());
    }
}
