//! Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`, and which
//! directory a cgroup path maps to under a mount.

use std::path::{Path, PathBuf};

use procfs_core::FromBufRead;
use procfs_core::process::MountInfos;

/// The cgroup mounts found in mountinfo: (mount point, root inside the hierarchy).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CgroupMounts {
    pub v1_memory: Option<(PathBuf, PathBuf)>,
    pub v2: Option<(PathBuf, PathBuf)>,
}

/// Finds the v1 memory hierarchy and the cgroup2 mount in a mountinfo file.
pub fn parse_mounts(mountinfo: impl std::io::BufRead) -> Result<CgroupMounts, String> {
    let infos = MountInfos::from_buf_read(mountinfo).map_err(|e| format!("mountinfo: {e}"))?;
    let mut m = CgroupMounts::default();
    for mi in infos {
        let entry = Some((mi.mount_point.clone(), mi.root.clone().into()));
        match mi.fs_type.as_str() {
            "cgroup" if mi.super_options.contains_key("memory") => {
                m.v1_memory = m.v1_memory.or(entry)
            }
            "cgroup2" => m.v2 = m.v2.or(entry),
            _ => {}
        }
    }
    Ok(m)
}

/// Maps a cgroup path to its directory under a mount whose hierarchy root is `root` (not `/`
/// inside a container with a cgroup namespace-less bind mount).
pub fn dir_under(mount: &(PathBuf, PathBuf), cgroup: &str) -> PathBuf {
    let (point, root) = mount;
    let rel = Path::new(cgroup).strip_prefix(root).unwrap_or_else(|_| {
        Path::new(cgroup)
            .strip_prefix("/")
            .unwrap_or(Path::new(cgroup))
    });
    // Joining an absolute path replaces the mount point: an empty root strips nothing.
    point.join(rel.strip_prefix("/").unwrap_or(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_hybrid_layout() {
        let m = parse_mounts(MOUNTINFO.as_bytes()).unwrap();
        let v1 = m.v1_memory.unwrap();
        assert_eq!(v1.0, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m.v2.unwrap().0, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            dir_under(&v1, "/box/app"),
            PathBuf::from("/sys/fs/cgroup/memory/box/app")
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/mountinfo.rs): a mountinfo line with an empty
    /// root (two blanks in a row) stripped nothing, and joining the still-absolute cgroup
    /// path replaced the mount point: `/box/app` itself, outside the cgroup mount.
    #[test]
    fn an_empty_mount_root_stays_under_the_mount_point() {
        let m = parse_mounts(&b"41 31 0:38  /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"[..])
            .unwrap();
        let v2 = m.v2.unwrap();
        assert_eq!(v2.1, PathBuf::from(""));
        assert_eq!(
            dir_under(&v2, "/box/app"),
            PathBuf::from("/sys/fs/cgroup/unified/box/app")
        );
    }

    #[test]
    fn mount_root_is_stripped() {
        let mount = (
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("/kubepods/pod1"),
        );
        assert_eq!(
            dir_under(&mount, "/kubepods/pod1/c1"),
            PathBuf::from("/sys/fs/cgroup/c1")
        );
    }
}
