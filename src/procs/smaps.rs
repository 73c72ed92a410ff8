//! `/proc/PID/smaps`: a process's mappings, what backs each, how much of it is resident and
//! its VmFlags, for planning a page-out. Pure: text in, regions out, hostile input unit-tested.
//!
//! The maps parser is our own rather than procfs-core's: that one slices SysV shm names at
//! fixed offsets and panics on a mapping of a file named like `/SYSVx`, and a process must
//! never be able to crash lowmemd by what it maps.

use std::io::BufRead;

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A file; `deleted` when the path ends in ` (deleted)`.
    File { path: String, deleted: bool },
    /// Anonymous memory: unnamed mappings, `[heap]`, `[stack]`, thread stacks, `[anon:...]`.
    Anon,
    /// SysV shared memory, memfd and other shmem: reclaimed only to swap, and shared.
    Shmem,
    /// `[vdso]`, `[vvar]`, `[vsyscall]`, `[uprobes]` and other kernel-provided regions.
    Special(String),
}

/// One mapping with what smaps says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub backing: Backing,
    /// `s` in the permissions: a shared mapping.
    pub shared: bool,
    pub rss_kib: u64,
    /// VmFlags `lo` (mlocked), `ht` (hugetlb), `io`/`pf` (device memory, PFN map).
    pub locked: bool,
    pub hugetlb: bool,
    pub device: bool,
}

fn classify(path: &str) -> Backing {
    match path {
        "" | "[heap]" | "[stack]" => Backing::Anon,
        p if p.starts_with("[stack:")
            || p.starts_with("[anon:")
            || p.starts_with("[anon_shmem:") =>
        {
            if p.starts_with("[anon_shmem:") {
                Backing::Shmem
            } else {
                Backing::Anon
            }
        }
        p if p.starts_with('[') => Backing::Special(p.to_string()),
        p if p.starts_with("/SYSV") || p.starts_with("/memfd:") || p.starts_with("/dev/shm/") => {
            Backing::Shmem
        }
        p => match p.strip_suffix(" (deleted)") {
            Some(path) => Backing::File {
                path: path.to_string(),
                deleted: true,
            },
            None => Backing::File {
                path: p.to_string(),
                deleted: false,
            },
        },
    }
}

/// Parses a header line: `start-end perms offset dev inode [path]`. The path is everything
/// after the inode and its padding, and may hold spaces.
fn parse_header(line: &str) -> Option<Region> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let (range, perms, _offset, dev, inode) = (field()?, field()?, field()?, field()?, field()?);
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start || perms.len() != 4 || !dev.contains(':') || inode.parse::<u64>().is_err() {
        return None;
    }
    let path = rest.trim_start_matches(' ').trim_end_matches('\n');
    Some(Region {
        start,
        end,
        backing: classify(path),
        shared: perms.as_bytes()[3] == b's',
        rss_kib: 0,
        locked: false,
        hugetlb: false,
        device: path.starts_with("/dev/") && !path.starts_with("/dev/shm/"),
    })
}

/// Parses `/proc/PID/smaps` (or `maps`, which lacks the Rss and VmFlags lines). Lines that
/// fit neither form are errors naming the line number.
pub fn parse_smaps(r: impl BufRead) -> Result<Vec<Region>, String> {
    let mut regions: Vec<Region> = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some((key, value)) = line.split_once(':')
            && !key.contains(' ')
            && !key.contains('-')
        {
            // A "Key: value" line of the region above.
            let Some(cur) = regions.last_mut() else {
                return Err(format!("line {}: {key:?} before any mapping", n + 1));
            };
            match key {
                "Rss" => {
                    cur.rss_kib = value
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("line {}: bad Rss {value:?}", n + 1))?
                }
                "VmFlags" => {
                    for flag in value.split_whitespace() {
                        match flag {
                            "lo" => cur.locked = true,
                            "ht" => cur.hugetlb = true,
                            "io" | "pf" => cur.device = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match parse_header(&line) {
            Some(r) => regions.push(r),
            None => return Err(format!("line {}: not a mapping: {line:?}", n + 1)),
        }
    }
    Ok(regions)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SMAPS: &str = "\
55d0c0000000-55d0c0021000 r-xp 00000000 08:01 1234                       /usr/bin/my app
Rss:                 100 kB
VmFlags: rd ex mr mw me dw
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0                          [heap]
Rss:                4096 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0004000000 r--s 00000000 08:01 5678                       /data/cache.bin (deleted)
Rss:               61440 kB
VmFlags: rd sh mr mw me ms
7f0010000000-7f0010100000 rw-p 00000000 00:00 0 
Rss:                1024 kB
VmFlags: rd wr mr mw me lo
7f0020000000-7f0020200000 rw-s 00000000 00:05 99                         /SYSV00000000 (deleted)
Rss:                2048 kB
7f0030000000-7f0030001000 rw-s 00000000 00:06 4                          /dev/fb0
Rss:                   4 kB
VmFlags: rd wr sh mr mw me io pf
7f0040000000-7f0040400000 rw-p 00000000 00:00 0                          [anon:huge]
Rss:                4096 kB
VmFlags: rd wr mr mw me ht
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0                          [vvar]
Rss:                   0 kB
7ffd00102000-7ffd00104000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn smaps_regions_are_classified() {
        let r = parse_smaps(SMAPS.as_bytes()).unwrap();
        assert_eq!(r.len(), 11);
        assert_eq!(
            r[0].backing,
            Backing::File {
                path: "/usr/bin/my app".into(),
                deleted: false
            }
        );
        assert_eq!((r[1].backing.clone(), r[1].rss_kib), (Backing::Anon, 4096));
        assert_eq!(
            r[2].backing,
            Backing::File {
                path: "/data/cache.bin".into(),
                deleted: true
            }
        );
        assert!(r[2].shared);
        assert!(r[3].locked);
        assert_eq!(r[4].backing, Backing::Shmem);
        assert!(r[5].device);
        assert!(r[6].hugetlb);
        assert_eq!(r[7].backing, Backing::Anon);
        assert_eq!(r[9].backing, Backing::Special("[vdso]".into()));
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for bad in [
            "Rss: 4 kB\n",
            "zzzz-1000 r--p 0 00:00 0\n",
            "2000-1000 r--p 0 00:00 0\n",
            "1000-2000 r--\n",
            "1000-2000 r--p 0 00:00 x /a\n",
            "1000-2000 r--p 0 00:00 0 /a\nRss: lots\n",
        ] {
            assert!(parse_smaps(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Odd but valid names parse.
        let odd =
            "1000-2000 r--s 0 00:05 1 /SYSVx\n3000-4000 r--p 0 08:01 2 /x (deleted) (deleted)\n";
        let r = parse_smaps(odd.as_bytes()).unwrap();
        assert_eq!(r[0].backing, Backing::Shmem);
        assert_eq!(
            r[1].backing,
            Backing::File {
                path: "/x (deleted)".into(),
                deleted: true
            }
        );
    }
}
