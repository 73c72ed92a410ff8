//! systemd's cgroup markings: `ManagedOOMPreference=avoid|omit` on a unit, which systemd
//! writes as the extended attributes `user.oomd_avoid` / `user.oomd_omit` (value "1") on the
//! unit's cgroup in the cgroup2 hierarchy. Read for a process's cgroup and every ancestor,
//! and cached per cgroup: a desktop has a few hundred processes in a few dozen cgroups.
//!
//! Trust: a `user.*` attribute can be written by whoever owns the cgroup directory, and a
//! user manager (`user@UID.service`, `Delegate=yes`) owns everything below it. So each
//! marking comes with the owner of the cgroup that carries it. A marking root set keeps its
//! full meaning (the policy's rules decide what it does); one a user set may only order
//! that user's own processes among themselves (`policy::rules::standing`), as systemd-oomd
//! honours a marking on a cgroup not owned by root only when the same user owns the
//! subtree it is acting on (`oomd_fetch_cgroup_oom_preference`).

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

/// The marking that applies to a process: the strongest root set on its cgroup or an
/// ancestor (the nearest one on a tie), else the strongest a user set; the cgroup that
/// carries it, and that cgroup's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marking {
    pub preference: OomPreference,
    /// As in /proc/PID/cgroup, e.g. `/user.slice/user-1000.slice/user@1000.service/app.slice`.
    pub cgroup: String,
    /// The uid owning that cgroup's directory: 0 for what root (systemd for system units and
    /// slices) set, a user's uid below their `user@UID.service`.
    pub owner: u32,
}

/// One cgroup's own marking and the owner of its directory.
type Own = Option<(OomPreference, u32)>;

/// Reads markings under the cgroup2 mount (none known: nothing is ever marked).
#[derive(Debug, Default)]
pub struct CgroupMarks {
    /// (mount point, root inside the hierarchy), as `scope::mounts` finds it.
    mount: Option<(PathBuf, PathBuf)>,
    cache: Mutex<HashMap<String, (Own, Instant)>>,
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
        // (root's, a user's): a marking root set wins over any a user set below it.
        let (mut by_root, mut by_user): (Option<Marking>, Option<Marking>) = (None, None);
        for path in ancestors(cgroup) {
            let Some((p, owner)) = self.own(mount, path) else {
                continue;
            };
            let best = if owner == 0 {
                &mut by_root
            } else {
                &mut by_user
            };
            if best.as_ref().is_none_or(|b| p > b.preference) {
                *best = Some(Marking {
                    preference: p,
                    cgroup: path.to_string(),
                    owner,
                });
            }
        }
        by_root.or(by_user)
    }

    /// The marking written on `cgroup` itself, from the cache when fresh.
    fn own(&self, mount: &(PathBuf, PathBuf), cgroup: &str) -> Own {
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
    // Joining an absolute path replaces the mount point: an empty root strips nothing.
    point.join(rel.strip_prefix("/").unwrap_or(rel))
}

/// The marking on one directory, with the directory's owner. Absent attributes (ENODATA), a
/// cgroup that went away (ENOENT) and a kernel without user xattrs on cgroupfs (EOPNOTSUPP,
/// before 5.7) all mean "not marked": markings are optional everywhere.
pub fn read_marking(dir: &Path) -> Option<(OomPreference, u32)> {
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
    // Read after the attribute: a directory that vanished in between is not marked. An
    // owner that cannot be read is not root (see the module comment).
    let owner = rustix::fs::lstat(dir).map_or(u32::MAX, |st| st.st_uid);
    Some((p, owner))
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
        // An empty root (as mounts::parse_mounts reads two blanks in mountinfo, found by
        // fuzzing there) keeps the directory under the mount point.
        let m = (PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::new());
        assert_eq!(
            dir_of(&m, "/a.scope"),
            PathBuf::from("/sys/fs/cgroup/unified/a.scope")
        );
    }

    /// Markings on a directory tree (tmpfs and ext4 keep `user.*` attributes for root, as
    /// cgroupfs does): the strongest wins, nearest on a tie, absent is none; each comes
    /// with its directory's owner, and one root set wins over any a user set below it.
    #[test]
    fn markings_on_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::create_dir_all(base.join("s/u/app")).unwrap();
        std::fs::create_dir_all(base.join("s/other")).unwrap();
        let set = |rel: &str, name: &str| {
            rustix::fs::setxattr(base.join(rel), name, b"1", rustix::fs::XattrFlags::empty())
        };
        if set("s/u", "user.oomd_avoid").is_err() {
            eprintln!("no user xattrs on {}: skipped", base.display());
            return;
        }
        let me = rustix::process::geteuid().as_raw();
        let marks = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let m = marks.marking("/s/u/app").unwrap();
        assert_eq!(
            (m.preference, m.cgroup.as_str(), m.owner),
            (OomPreference::Avoid, "/s/u", me)
        );
        // Cached: a new marking shows after the TTL, not at once.
        set("s/u/app", "user.oomd_omit").unwrap();
        assert_eq!(
            marks.marking("/s/u/app").unwrap().preference,
            OomPreference::Avoid
        );
        let fresh = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let m = fresh.marking("/s/u/app").unwrap();
        assert_eq!(
            (m.preference, m.cgroup.as_str()),
            (OomPreference::Omit, "/s/u/app")
        );
        assert_eq!(fresh.marking("/t").map(|m| m.preference), None);
        if me != 0 {
            return;
        }
        // A user's subtree below a slice root marked: root's marking applies, whatever the
        // user wrote below it; without root's, the user's own, with the user as owner.
        let nobody = Some(rustix::fs::Uid::from_raw(65534));
        for d in ["s/u", "s/u/app"] {
            rustix::fs::chown(base.join(d), nobody, None).unwrap();
        }
        let user_only = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let m = user_only.marking("/s/u/app").unwrap();
        assert_eq!((m.preference, m.owner), (OomPreference::Omit, 65534));
        set("s", "user.oomd_avoid").unwrap();
        let both = CgroupMarks::new(Some((base.to_owned(), PathBuf::from("/"))));
        let m = both.marking("/s/u/app").unwrap();
        assert_eq!(
            (m.preference, m.cgroup.as_str(), m.owner),
            (OomPreference::Avoid, "/s", 0),
            "root's avoid on the slice over the user's omit below it"
        );
    }
}
