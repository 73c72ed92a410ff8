//! Pure parsers for the /proc/PID files the process table reads: bytes in, values out, an
//! error naming what was wrong; never a panic on hostile input (a process chooses its own
//! comm, cmdline and cgroup names).

/// The few fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLite {
    pub comm: String,
    pub state: char,
    pub flags: u32,
    pub starttime: u64,
    pub rss_pages: u64,
}

/// Parses `stat`: `pid (comm) state ppid ...`, the comm being everything between the first
/// '(' and the last ')' (a comm may hold both, spaces and any bytes). Our own rather than
/// procfs-core's: that one re-reads the line as lossy UTF-8 and trims Unicode whitespace
/// before slicing at offsets, and panicked on lines the fuzzer made (an invalid byte before
/// the '(', leading blanks, U+3000 after the ')'); it also parsed 40 fields for our five.
pub fn parse_stat(buf: &[u8]) -> Result<StatLite, String> {
    let bad = |what: &str| format!("not a stat line ({what}): expected `pid (comm) state ...`");
    let open = buf
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| bad("no '('"))?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| bad("no ')'"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let pid = buf[..open]
        .strip_suffix(b" ")
        .ok_or_else(|| bad("no pid"))?;
    if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return Err(bad("no pid"));
    }
    let rest = buf[close + 1..]
        .strip_prefix(b" ")
        .ok_or_else(|| bad("no ' ' after ')'"))?;
    // Field 3 (state) is the first after the comm; flags is field 9, starttime 22, rss 24.
    let mut fields = rest.split(|&b| b == b' ').map(<[u8]>::trim_ascii_end);
    let mut field = |skip: usize, name: &str| {
        fields
            .nth(skip)
            .ok_or_else(|| format!("stat line ends before {name}"))
    };
    let state = match field(0, "the state")? {
        [s] if s.is_ascii_alphabetic() => char::from(*s),
        s => {
            return Err(format!(
                "stat state {:?} is not a letter",
                String::from_utf8_lossy(s)
            ));
        }
    };
    let number = |f: &[u8], name: &str| {
        std::str::from_utf8(f)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "stat {name} {:?} is not a number",
                    String::from_utf8_lossy(f)
                )
            })
    };
    let flags = number(field(5, "flags")?, "flags")?;
    let starttime = number(field(12, "starttime")?, "starttime")?;
    let rss_pages = number(field(1, "rss")?, "rss")?;
    Ok(StatLite {
        comm: String::from_utf8_lossy(&buf[open + 1..close]).into_owned(),
        state,
        flags: u32::try_from(flags).map_err(|_| format!("stat flags {flags} over 32 bits"))?,
        starttime,
        rss_pages,
    })
}

/// `oom_score_adj`: a number in -1000..=1000.
pub fn parse_adj(buf: &[u8]) -> Result<i16, String> {
    std::str::from_utf8(buf)
        .ok()
        .and_then(|t| t.trim().parse::<i16>().ok())
        .filter(|adj| (-1000..=1000).contains(adj))
        .ok_or_else(|| {
            format!(
                "oom_score_adj {:?} is not a number in -1000..=1000",
                String::from_utf8_lossy(buf).trim()
            )
        })
}

/// The fields of `statm` lowmemd reads, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statm {
    pub size: u64,
    pub resident: u64,
    /// The executable's code: fixed from one exec to the next, so a change means an exec.
    pub text: u64,
}

/// `size resident shared text ...` from `statm`.
pub fn parse_statm(buf: &[u8]) -> Result<Statm, String> {
    let fields = || {
        let mut f = std::str::from_utf8(buf).ok()?.split_ascii_whitespace();
        let mut next = || f.next()?.parse().ok();
        let (size, resident, _shared, text) = (next()?, next()?, next()?, next()?);
        Some(Statm {
            size,
            resident,
            text,
        })
    };
    fields().ok_or_else(|| {
        format!(
            "statm {:?} is not `size resident shared text ...`",
            String::from_utf8_lossy(buf).trim()
        )
    })
}

/// `VmSwap:` from `status`, in KiB; 0 when absent (kernel threads, old kernels).
pub fn parse_vm_swap_kib(buf: &[u8]) -> u64 {
    buf.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"VmSwap:"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The real uid from `status` (`Uid:` real, effective, saved, fs). Not the owner of
/// /proc/PID: that is the effective uid, and root for a process that made itself
/// non-dumpable (setuid programs, agents holding keys), whoever runs it.
pub fn parse_real_uid(status: &[u8]) -> Option<u32> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Whether `status` shows SIGKILL pending, for the thread (`SigPnd`) or the whole process
/// (`ShdPnd`): hex masks where signal N is bit N-1.
pub fn sigkill_pending(status: &[u8]) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    status.split(|&b| b == b'\n').any(|line| {
        let mask = line
            .strip_prefix(b"SigPnd:")
            .or_else(|| line.strip_prefix(b"ShdPnd:"));
        mask.and_then(|m| std::str::from_utf8(m).ok())
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

/// Where a process's memory is, from `/proc/PID/status` (read for one process at a time:
/// before and after a page-out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemDetail {
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub swap_kib: u64,
}

impl MemDetail {
    pub fn resident_kib(&self) -> u64 {
        self.rss_anon_kib
            .saturating_add(self.rss_file_kib)
            .saturating_add(self.rss_shmem_kib)
    }

    /// Parses the `Rss*` and `VmSwap` lines of a status file.
    pub fn parse(status: &str) -> MemDetail {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        MemDetail {
            rss_anon_kib: kib("RssAnon:"),
            rss_file_kib: kib("RssFile:"),
            rss_shmem_kib: kib("RssShmem:"),
            swap_kib: kib("VmSwap:"),
        }
    }
}

/// Every cgroup path of a `cgroup` file: one per hierarchy, as rules match them.
pub fn cgroup_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(str::to_owned)
        .collect()
}

/// The cgroup path in the hierarchy that has `controller` (v1), or in the unified hierarchy
/// when `controller` is `None`.
pub fn cgroup_path_of(text: &str, controller: Option<&str>) -> Option<String> {
    text.lines().find_map(|line| {
        // "hierarchy-ID:controller-list:cgroup-path"; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (_id, ctrls, cg) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            Some(c) => ctrls.split(',').any(|x| x == c),
            None => ctrls.is_empty(),
        };
        hit.then(|| cg.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm_parses_by_last_paren() {
        let line = b"42 (a) Z 1 (b) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 1000 25 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) Z 1 (b");
        assert_eq!(s.state, 'S');
        assert_eq!(s.starttime, 777);
        assert_eq!(s.rss_pages, 25);
    }

    #[test]
    fn broken_stat_lines_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"(",
            b")",
            b"1 (x)",
            b"1 (x) ",
            b"(x) S 1",
            b"1 )x( S",
            b"1 (x)\xffS 1",
            b"1 (x) S",
            &[0xff; 64],
        ] {
            assert!(
                parse_stat(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/proc_stat.rs): procfs-core re-read the line as
    /// lossy UTF-8 and trimmed Unicode whitespace, so offsets checked on the bytes no
    /// longer held and it sliced inside a character or past the end.
    #[test]
    fn stat_lines_that_crashed_the_fuzzer_are_errors_or_parse() {
        let tail = b" S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 1000 25\n";
        let with = |head: &[u8]| [head, &tail[..]].concat();
        // Invalid UTF-8 before the '(' (a byte that became a 3-byte U+FFFD).
        assert!(parse_stat(&with(b"42\xa3(a)")).is_err());
        // Leading blanks: the pid is what comes before the '('.
        assert!(parse_stat(&with(b"  (a)")).is_err());
        // Unicode whitespace after the ')' (U+3000), then nothing.
        assert!(parse_stat(b"1 (x) \xe3\x80\x80").is_err());
        // Invalid UTF-8 inside the comm is the process's business: it parses.
        let s = parse_stat(&with(b"42 (a\xff\xfe)")).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.state, s.starttime),
            ("a\u{fffd}\u{fffd}", 'S', 777)
        );
        assert_eq!((s.flags, s.rss_pages), (4194560, 25));
    }

    #[test]
    fn adj_must_be_in_range() {
        assert_eq!(parse_adj(b"900\n"), Ok(900));
        assert_eq!(parse_adj(b"-1000\n"), Ok(-1000));
        assert!(parse_adj(b"1001\n").unwrap_err().contains("\"1001\""));
        assert!(parse_adj(b"x\n").is_err());
        assert!(parse_adj(b"").is_err());
    }

    #[test]
    fn mem_detail_from_status() {
        let d = MemDetail::parse(
            "Name:\tx\nRssAnon:\t  100 kB\nRssFile:\t 2000 kB\nRssShmem:\t 3 kB\nVmSwap:\t 50 kB\n",
        );
        assert_eq!(d.resident_kib(), 2103);
        assert_eq!(d.swap_kib, 50);
        assert_eq!(MemDetail::parse("garbage"), MemDetail::default());
    }

    /// Three Rss lines near u64::MAX saturate rather than overflow.
    #[test]
    fn resident_size_saturates() {
        let max = u64::MAX;
        let d = MemDetail::parse(&format!(
            "RssAnon: {max} kB\nRssFile: {max} kB\nRssShmem: 1 kB\n"
        ));
        assert_eq!(d.resident_kib(), max);
    }

    #[test]
    fn statm_fields() {
        let s = |size, resident, text| Statm {
            size,
            resident,
            text,
        };
        assert_eq!(parse_statm(b"2000 150 100 7 0 50 0\n"), Ok(s(2000, 150, 7)));
        assert_eq!(parse_statm(b"0 0 0 0 0 0 0\n"), Ok(s(0, 0, 0)));
        assert!(parse_statm(b"12\n").is_err());
        assert!(parse_statm(b"12 3 4\n").is_err());
    }

    #[test]
    fn vm_swap_is_read_from_status() {
        assert_eq!(parse_vm_swap_kib(b"Name:\tx\nVmSwap:\t  1234 kB\n"), 1234);
        assert_eq!(
            parse_real_uid(b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\n"),
            Some(1000),
            "the real uid, not the effective"
        );
        assert_eq!(parse_real_uid(b"Name:\tx\nUid:\tlots\n"), None);
        assert_eq!(parse_vm_swap_kib(b"Name:\tkthreadd\n"), 0);
    }

    #[test]
    fn sigkill_pending_from_either_mask() {
        assert!(!sigkill_pending(
            b"SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
        ));
        assert!(sigkill_pending(
            b"SigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n"
        ));
        assert!(sigkill_pending(b"SigPnd:\t0000000000000100\n"));
        // SIGTERM (15) alone is not SIGKILL.
        assert!(!sigkill_pending(b"ShdPnd:\t0000000000004000\n"));
        assert!(!sigkill_pending(b"ShdPnd:\tzz\n"));
    }

    #[test]
    fn cgroup_lines_by_hierarchy() {
        let text = "12:memory:/box/app\n4:cpu,cpuacct:/x\n0::/box/a:b\n";
        assert_eq!(
            cgroup_path_of(text, Some("memory")).as_deref(),
            Some("/box/app")
        );
        assert_eq!(cgroup_path_of(text, Some("cpu")).as_deref(), Some("/x"));
        assert_eq!(cgroup_path_of(text, None).as_deref(), Some("/box/a:b"));
        assert_eq!(cgroup_path_of("garbage", None), None);
        assert_eq!(cgroup_paths(text), ["/box/app", "/x", "/box/a:b"]);
    }
}
