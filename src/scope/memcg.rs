//! Memory of one memory cgroup (v1 or v2). Available memory of a memcg is
//! `limit − usage + inactive_file`: file pages on the inactive list are what reclaim gives
//! back cheaply, the rest of the usage is not coming back without a kill (or swap).

use std::path::Path;

use super::Reading;
use super::ScopeError;
use crate::sample::{MemSnapshot, Refaults};

/// The file names differ between the two cgroup versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    pub fn usage_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }
    }

    /// The hierarchical inactive-file counter in `memory.stat` (v1 keeps local and `total_`
    /// variants; v2's counters are hierarchical already).
    fn inactive_file_key(self) -> &'static str {
        match self {
            Version::V1 => "total_inactive_file",
            Version::V2 => "inactive_file",
        }
    }

    /// The hierarchical `memory.stat` key for `name` (v1 prefixes `total_`).
    fn stat_key(self, name: &str) -> String {
        match self {
            Version::V1 => format!("total_{name}"),
            Version::V2 => name.to_string(),
        }
    }
}

/// Refaults so far and the file cache now, for the thrashing measure, from `memory.stat`
/// (the cache in bytes there, pages here).
pub fn refaults(version: Version, stat: &str, page_size: u64) -> Option<Refaults> {
    let key = |n: &str| parse_stat_key(stat, &version.stat_key(n));
    Some(Refaults {
        refault_file: key("workingset_refault_file")?,
        file_pages: key("active_file")?.saturating_add(key("inactive_file")?) / page_size,
        refault_anon: key("workingset_refault_anon").unwrap_or(0),
        global_scan: None,
    })
}

/// Parses a limit file: a byte count, or `max` (v2) / a huge number (v1's "unlimited").
/// Returns `None` for unlimited.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let bytes: u64 = t
        .parse()
        .map_err(|_| format!("limit {t:?} is neither a byte count nor \"max\""))?;
    // v1 reports "unlimited" as PAGE_COUNTER_MAX rounded to pages: anything beyond 2^62.
    Ok((bytes < (1 << 62)).then_some(bytes))
}

pub fn parse_usage(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("usage {t:?} is not a byte count"))
}

/// Looks up one key of `memory.stat` (bytes).
pub fn parse_stat_key(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Builds the snapshot from the three files' contents. `system_total_kib` bounds an
/// unlimited (or over-sized) memcg: it cannot have more than the machine.
pub fn snapshot(
    version: Version,
    limit: &str,
    usage: &str,
    stat: &str,
    system_total_kib: u64,
) -> Result<MemSnapshot, String> {
    let limit_kib =
        parse_limit(limit)?.map_or(system_total_kib, |b| (b / 1024).min(system_total_kib));
    let usage_kib = parse_usage(usage)? / 1024;
    let inactive_file_kib = parse_stat_key(stat, version.inactive_file_key())
        .ok_or_else(|| format!("memory.stat has no {}", version.inactive_file_key()))?
        / 1024;
    let available_kib = (limit_kib + inactive_file_kib)
        .saturating_sub(usage_kib)
        .min(limit_kib);
    let active_file_kib =
        parse_stat_key(stat, &version.stat_key("active_file")).unwrap_or(0) / 1024;
    Ok(MemSnapshot {
        total_kib: limit_kib,
        available_kib,
        swap_total_kib: 0,
        swap_free_kib: 0,
        free_kib: limit_kib.saturating_sub(usage_kib),
        file_kib: active_file_kib + inactive_file_kib,
        swap_headroom_kib: 0,
    })
}

/// Reads the three files of the memcg at `dir`; with `want_refaults`, also the thrashing
/// counters from the same `memory.stat` read.
pub fn read(
    dir: &Path,
    version: Version,
    system_total_kib: u64,
    want_refaults: bool,
) -> Result<Reading, ScopeError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ScopeError::Io { path, source })
    };
    let (limit, usage, stat) = (
        read(version.limit_file())?,
        read(version.usage_file())?,
        read("memory.stat")?,
    );
    let mem = snapshot(version, &limit, &usage, &stat, system_total_kib).map_err(|what| {
        ScopeError::Malformed {
            path: dir.to_owned(),
            what,
        }
    })?;
    let page = rustix::param::page_size() as u64;
    Ok(Reading {
        mem,
        refaults: want_refaults
            .then(|| refaults(version, &stat, page))
            .flatten(),
        usage_kib: parse_usage(&usage).ok().map(|b| b / 1024),
    })
}

/// How much more the memcg may swap, KiB: v2 `memory.swap.max − memory.swap.current`; v1
/// `memory.memsw.limit_in_bytes − memory.memsw.usage_in_bytes` (memory and swap together).
/// `None` when it has no swap limit of its own (or the kernel does not account swap).
pub fn swap_room_kib(dir: &Path, version: Version) -> Option<u64> {
    let (limit, usage) = match version {
        Version::V1 => ("memory.memsw.limit_in_bytes", "memory.memsw.usage_in_bytes"),
        Version::V2 => ("memory.swap.max", "memory.swap.current"),
    };
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let limit = parse_limit(&read(limit)?).ok()??;
    let usage = parse_usage(&read(usage)?).ok()?;
    Some(limit.saturating_sub(usage) / 1024)
}

/// The kernel OOM killer's kill count for this memcg (`oom_kill` in v1 `memory.oom_control`
/// or v2 `memory.events`).
pub fn oom_kills(dir: &Path, version: Version) -> Option<u64> {
    let file = match version {
        Version::V1 => "memory.oom_control",
        Version::V2 => "memory.events",
    };
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    parse_stat_key(&text, "oom_kill")
}

/// How many CPUs a cpuset list names (`0-3,8,10-11`: 7); `None` when garbled or empty.
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut n: usize = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
        n = n.checked_add(count)?;
    }
    (n > 0).then_some(n)
}

/// The CPUs' worth of time a v2 `cpu.max` (`QUOTA PERIOD`, or `max PERIOD`) allows,
/// rounded up (150000 100000: 2); `None` for no limit.
pub fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut f = text.split_whitespace();
    let quota: u64 = f.next()?.parse().ok()?;
    let period: u64 = f.next()?.parse().ok().filter(|p| *p > 0)?;
    Some(quota.div_ceil(period).max(1) as usize)
}

/// The CPUs the tasks of the v2 cgroup at `dir` may run on at once: its
/// `cpuset.cpus.effective`, and the `cpu.max` of it and its ancestors up to `root` (the
/// mount). `None` when nothing there limits them.
pub fn cpus_of(dir: &Path, root: &Path) -> Option<usize> {
    let read = |p: &Path, f: &str| std::fs::read_to_string(p.join(f)).ok();
    let mut cpus = read(dir, "cpuset.cpus.effective").and_then(|t| parse_cpu_list(&t));
    let mut d = Some(dir);
    while let Some(at) = d.filter(|a| a.starts_with(root) && *a != root) {
        if let Some(q) = read(at, "cpu.max").and_then(|t| parse_cpu_max(&t)) {
            cpus = Some(cpus.map_or(q, |c| c.min(q)));
        }
        d = at.parent();
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/memory_stat.rs): ranges adding up past
    /// usize::MAX overflowed the count; such a list is garbled.
    #[test]
    fn a_cpu_list_counting_past_usize_max_is_garbled() {
        let m = usize::MAX - 1;
        assert_eq!(parse_cpu_list(&format!("0-{m},0-{m}")), None);
    }

    #[test]
    fn the_cpus_a_cgroup_may_use_come_from_its_cpuset_and_cpu_max() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(parse_cpu_list("1\n"), Some(1));
        assert_eq!(parse_cpu_list("\n"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(1));
        let root = std::env::temp_dir().join(format!("lowmemd-cpus-{}", std::process::id()));
        let leaf = root.join("box/app");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("cpuset.cpus.effective"), "0-7\n").unwrap();
        std::fs::write(root.join("box/cpu.max"), "300000 100000\n").unwrap();
        assert_eq!(
            cpus_of(&leaf, &root),
            Some(3),
            "the parent's quota bounds the leaf"
        );
        assert_eq!(cpus_of(&root, &root), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn v1_available_is_limit_minus_usage_plus_inactive_file() {
        let stat = "cache 1000\ninactive_file 4096\ntotal_inactive_file 10485760\n";
        let m = snapshot(Version::V1, "268435456\n", "209715200\n", stat, 24_000_000).unwrap();
        assert_eq!(m.total_kib, 262_144);
        assert_eq!(m.available_kib, 262_144 - 204_800 + 10_240);
    }

    #[test]
    fn unlimited_memcg_is_bounded_by_the_machine() {
        let stat = "total_inactive_file 0\n";
        let m = snapshot(
            Version::V1,
            "9223372036854771712\n",
            "1048576\n",
            stat,
            2_000_000,
        )
        .unwrap();
        assert_eq!(m.total_kib, 2_000_000);
        let stat2 = "inactive_file 0\n";
        let m = snapshot(Version::V2, "max\n", "1048576\n", stat2, 2_000_000).unwrap();
        assert_eq!(m.available_kib, 2_000_000 - 1024);
    }

    #[test]
    fn usage_above_limit_means_nothing_available() {
        let m = snapshot(
            Version::V2,
            "1048576",
            "2097152",
            "inactive_file 0",
            10_000_000,
        )
        .unwrap();
        assert_eq!(m.available_kib, 0);
    }

    /// The file cache is the sum of two counters: near u64::MAX it saturates rather than
    /// overflowing (a panic where overflow is checked, a wrong cache size where not).
    #[test]
    fn huge_file_counters_saturate() {
        let max = u64::MAX;
        let stat = format!("active_file {max}\ninactive_file {max}\nworkingset_refault_file 1\n");
        let r = refaults(Version::V2, &stat, 4096).unwrap();
        assert_eq!(r.file_pages, max / 4096);
    }

    #[test]
    fn refaults_come_from_the_hierarchical_counters() {
        let stat = "workingset_refault_file 1\ntotal_workingset_refault_file 500\ntotal_active_file 4096000\ntotal_inactive_file 4096000\n";
        let r = refaults(Version::V1, stat, 4096).unwrap();
        assert_eq!((r.refault_file, r.file_pages), (500, 2000));
        assert_eq!(r.refault_anon, 0);
        let with_anon = format!("{stat}total_workingset_refault_anon 70\n");
        assert_eq!(
            refaults(Version::V1, &with_anon, 4096).unwrap().total(),
            570
        );
        assert_eq!(refaults(Version::V2, stat, 4096), None);
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let e = snapshot(Version::V1, "lots", "1", "total_inactive_file 0", 1).unwrap_err();
        assert!(e.contains("\"lots\""), "{e}");
        let e = snapshot(Version::V1, "1", "1", "cache 0", 1).unwrap_err();
        assert!(e.contains("total_inactive_file"), "{e}");
    }
}
