//! systemd's cgroup markings: `ManagedOOMPreference=avoid|omit` on a unit, which systemd
//! writes as the extended attributes `user.oomd_avoid` / `user.oomd_omit` (value "1") on the
//! unit's cgroup in the cgroup2 hierarchy. Read for a process's cgroup and every ancestor,
//! and cached per cgroup: a desktop has a few hundred processes in a few dozen cgroups.
//!
//! Trust: a `user.*` attribute can be written by whoever owns the cgroup directory, and a
//! user manager (`user@UID.service`, `Delegate=yes`) owns everything below it. A user who
//! could mark their own runaway `omit` would make it unkillable for lowmemd, so `omit` found
//! on a cgroup not owned by root counts only as `avoid` (systemd-oomd, acting for the whole
//! machine, likewise ignores markings below a user's manager). An `avoid` counts wherever it
//! is: it only reorders candidates, it never takes one away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a cgroup's marking is believed before it is read again: systemd writes it when
/// the unit starts, before any process runs there, so this only delays noticing
/// `systemctl set-property` on a running unit.
const TTL: Duration = Duration::from_secs(5);
/// Entries kept at most; a machine with more cgroups than this just reads more often.
const MAX_CACHED: usize = 4096;

/// A ManagedOOMPreference= value, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OomPreference {
    Avoid,
    Omit,
}

impl OomPreference {
    pub fn as_str(self) -> &'static str {
        match self {
            OomPreference::Avoid => "avoid",
            OomPreference::Omit => "omit",
        }
    }
}

/// The marking that applies to a process: the strongest on its cgroup or an ancestor (the
/// nearest one on a tie), and the cgroup that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marking {
    pub preference: OomPreference,
    /// As in /proc/PID/cgroup, e.g. `/user.slice/user-1000.slice/user@1000.service/app.slice`.
    pub cgroup: String,
}

/// Reads markings under the cgroup2 mount (none known: nothing is ever marked).
#[derive(Debug, Default)]
pub struct CgroupMarks {
    /// (mount point, root inside the hierarchy), as `scope::mounts` finds it.
    mount: Option<(PathBuf, PathBuf)>,
    cache: Mutex<HashMap<String, (Option<OomPreference>, Instant)>>,
}

impl CgroupMarks {
    pub fn new(mount: Option<(PathBuf, PathBuf)>) -> Self {
        CgroupMarks {
            mount,
            cache: Mutex::default(),
        }
    }

    pub fn mount(&self) -> Option<&(PathBuf, PathBuf)> {
        self.mount.as_ref()
    }

    /// The marking of a process whose unified-hierarchy cgroup is `cgroup` (the `0::` line).
    pub fn marking(&self, cgroup: &str) -> Option<Marking> {
        let mount = self.mount.as_ref()?;
        let mut best: Option<Marking> = None;
        for path in ancestors(cgroup) {
            if let Some(p) = self.own(mount, path)
                && best.as_ref().is_none_or(|b| p > b.preference)
            {
                best = Some(Marking {
                    preference: p,
                    cgroup: path.to_string(),
                });
            }
        }
        best
    }

    /// The marking written on `cgroup` itself, from the cache when fresh.
    fn own(&self, mount: &(PathBuf, PathBuf), cgroup: &str) -> Option<OomPreference> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, at)) = cache.get(cgroup)
            && now.duration_since(*at) < TTL
        {
            return *p;
        }
        let p = read_marking(&dir_of(mount, cgroup));
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(cgroup.to_string(), (p, now));
        p
    }
}

/// `/a/b/c`, `/a/b`, `/a`, `/`: the cgroup and its ancestors, nearest first.
fn ancestors(cgroup: &str) -> impl Iterator<Item = &str> {
    let trimmed = cgroup.trim_end_matches('/');
    let mut next = Some(if trimmed.is_empty() { "/" } else { trimmed });
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur.rfind('/') {
            _ if cur == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&cur[..i]),
            None => None,
        };
        Some(cur)
    })
}

/// The directory of `cgroup` under a mount whose hierarchy root is `root`.
fn dir_of((point, root): &(PathBuf, PathBuf), cgroup: &str) -> PathBuf {
    let rel = Path::new(cgroup)
        .strip_prefix(root)
        .or_else(|_| Path::new(cgroup).strip_prefix("/"))
        .unwrap_or(Path::new(cgroup));
    point.join(rel)
}

/// The marking on one directory. Absent attributes (ENODATA), a cgroup that went away
/// (ENOENT) and a kernel without user xattrs on cgroupfs (EOPNOTSUPP, before 5.7) all mean
/// "not marked": markings are optional everywhere.
pub fn read_marking(dir: &Path) -> Option<OomPreference> {
    let set = |name: &str| {
        let mut buf = [0u8; 16];
        rustix::fs::lgetxattr(dir, name, &mut buf)
            .ok()
            .is_some_and(|n| is_true(&buf[..n.min(buf.len())]))
    };
    let p = if set("user.oomd_omit") {
        OomPreference::Omit
    } else if set("user.oomd_avoid") {
        OomPreference::Avoid
    } else {
        return None;
    };
    let root_owned = rustix::fs::lstat(dir).is_ok_and(|st| st.st_uid == 0);
    Some(if root_owned {
        p
    } else {
        // See the module comment: an unprivileged owner cannot make anything unkillable.
        OomPreference::Avoid
    })
}

/// systemd reads these attributes with parse_boolean(): "1", "yes", "y", "true", "t", "on".
fn is_true(value: &[u8]) -> bool {
    let v = String::from_utf8_lossy(value);
    matches!(
        v.trim_end_matches(['\0', '\n'])
            .to_ascii_lowercase()
            .as_str(),
        "1" | "yes" | "y" | "true" | "t" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_nearest_first() {
        let all: Vec<&str> = ancestors("/a/b/c").collect();
        assert_eq!(all, ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
        assert_eq!(ancestors("/a/").collect::<Vec<_>>(), ["/a", "/"]);
    }

    #[test]
    fn booleans_as_systemd_reads_them() {
        assert!(is_true(b"1") && is_true(b"yes") && is_true(b"On\0"));
        assert!(!is_true(b"0") && !is_true(b"") && !is_true(b"no"));
    }

    #[test]
    fn no_mount_no_marking() {
        assert_eq!(CgroupMarks::default().marking("/a"), None);
    }

    #[test]
    fn dir_of_strips_the_mount_root() {
        let m = (PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/"));
        assert_eq!(
            dir_of(&m, "/user.slice/a.scope"),
            PathBuf::from("/sys/fs/cgroup/unified/user.slice/a.scope")
        );
        assert_eq!(dir_of(&m, "/"), PathBuf::from("/sys/fs/cgroup/unified"));
    }

    /// Markings on a directory tree (tmpfs and ext4 keep `user.*` attributes for root, as
    /// cgroupfs does): the strongest wins, nearest on a tie, absent is none, `omit` on a
    /// directory not owned by root counts as `avoid`.
    #[test]
    fn markings_on_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::create_dir_all(base.join("s/u/app")).unwrap();
        std::fs::create_dir_all(base.join("s/other")).unwrap();
        let set = |rel: &str, name: &str| {
            rustix::fs::setxattr(base.join(rel), name, b"1", rustix::fs::XattrFlags::empty())
        };
        if set("s", "user.oomd_avoid").is_err() {
            eprintln!("no user xattrs on {}: skipped", base.display());
            return;
        }
        let marks = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let m = marks.marking("/s/u/app").unwrap();
        assert_eq!(
            (m.preference, m.cgroup.as_str()),
            (OomPreference::Avoid, "/s")
        );
        // Cached: a new marking shows after the TTL, not at once.
        set("s/u", "user.oomd_omit").unwrap();
        assert_eq!(
            marks.marking("/s/u/app").unwrap().preference,
            OomPreference::Avoid
        );
        let fresh = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let owner_is_root = rustix::process::geteuid().is_root();
        let m = fresh.marking("/s/u/app").unwrap();
        assert_eq!(m.cgroup, if owner_is_root { "/s/u" } else { "/s" });
        assert_eq!(
            m.preference,
            if owner_is_root {
                OomPreference::Omit
            } else {
                OomPreference::Avoid
            }
        );
        assert_eq!(fresh.marking("/t").map(|m| m.preference), None);
        if owner_is_root {
            rustix::fs::chown(
                base.join("s/u"),
                Some(rustix::fs::Uid::from_raw(65534)),
                None,
            )
            .unwrap();
            let again = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
            assert_eq!(
                again.marking("/s/u/app").unwrap().preference,
                OomPreference::Avoid,
                "omit by an unprivileged owner is only avoid"
            );
        }
    }
}
