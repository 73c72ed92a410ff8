//! System-wide memory from `/proc/meminfo`.

use std::io::BufRead;

use crate::sample::{MemSnapshot, Refaults};

/// The keys read, in KiB; the first six must be there.
const KEYS: [&str; 10] = [
    "MemTotal",
    "MemFree",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
    "MemAvailable",
    "Inactive(file)",
    "Shmem",
    "Unevictable",
];

/// Parses `/proc/meminfo` into a snapshot. Kernels before 3.14 lack `MemAvailable`; there we
/// fall back to free + inactive file pages, the same estimate the kernel itself refines.
///
/// Our own reader of `Key:   value kB` lines rather than procfs-core's, which cut the last
/// byte off every key unchecked and panicked inside a multi-byte character (found by
/// fuzzing), and required seventeen keys to read ten. Lines of other keys are not looked at.
pub fn parse(r: impl BufRead) -> Result<MemSnapshot, String> {
    let mut kib: [Option<u64>; KEYS.len()] = [None; KEYS.len()];
    for (n, line) in r.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("meminfo line {}: {e}", n + 1))?;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Some(i) = KEYS.iter().position(|k| k.as_bytes() == &line[..colon]) else {
            continue;
        };
        let value = std::str::from_utf8(&line[colon + 1..])
            .ok()
            .and_then(|v| match v.split_whitespace().collect::<Vec<_>>()[..] {
                [n] | [n, "kB"] => n.parse::<u64>().ok(),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "meminfo line {}: {} is not `NUMBER kB`: {:?}",
                    n + 1,
                    KEYS[i],
                    String::from_utf8_lossy(&line)
                )
            })?;
        kib[i] = Some(value);
    }
    let [
        total,
        free,
        buffers,
        cached,
        swap_total,
        swap_free,
        available,
        inactive_file,
        shmem,
        unevictable,
    ] = kib;
    let need = |v: Option<u64>, key: &str| v.ok_or_else(|| format!("meminfo has no {key}"));
    let total = need(total, "MemTotal")?;
    let free = need(free, "MemFree")?;
    let (buffers, cached) = (need(buffers, "Buffers")?, need(cached, "Cached")?);
    let (swap_total, swap_free) = (need(swap_total, "SwapTotal")?, need(swap_free, "SwapFree")?);
    if total == 0 {
        return Err("MemTotal is 0".into());
    }
    let available = available.unwrap_or_else(|| free.saturating_add(inactive_file.unwrap_or(0)));
    Ok(MemSnapshot {
        total_kib: total,
        available_kib: available.min(total),
        swap_total_kib: swap_total,
        swap_free_kib: swap_free,
        free_kib: free,
        // lmkd's "other file": page cache that reclaim can drop or write back.
        file_kib: buffers
            .saturating_add(cached)
            .saturating_sub(shmem.unwrap_or(0).saturating_add(unevictable.unwrap_or(0))),
        // Judged from /proc/swaps by the scope (`Scope::read`).
        swap_headroom_kib: 0,
    })
}

/// Refaults and the file cache from `/proc/vmstat` (kernel 5.9+ splits refaults into anon and
/// file; older kernels have one `workingset_refault`, counted as file, and `pswpin` stands
/// in for anonymous refaults: every swap-in, not only of recently evicted pages).
pub fn parse_vmstat_refaults(text: &str) -> Option<Refaults> {
    let key = |k: &str| {
        text.lines().find_map(|l| {
            let (name, v) = l.split_once(' ')?;
            (name == k).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(Refaults {
        refault_file: key("workingset_refault_file").or_else(|| key("workingset_refault"))?,
        file_pages: key("nr_active_file")? + key("nr_inactive_file")?,
        refault_anon: key("workingset_refault_anon")
            .or_else(|| key("pswpin"))
            .unwrap_or(0),
        global_scan: ["pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged"]
            .iter()
            .filter_map(|k| key(k))
            .reduce(u64::saturating_add),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24683904 kB\nMemFree:        24117000 kB\nMemAvailable:   24393000 kB\nBuffers:            2000 kB\nCached:           400000 kB\nSwapCached:            0 kB\nActive:           100000 kB\nInactive:         300000 kB\nActive(anon):      50000 kB\nInactive(anon):        0 kB\nActive(file):      50000 kB\nInactive(file):   300000 kB\nUnevictable:           0 kB\nMlocked:               0 kB\nSwapTotal:       1048572 kB\nSwapFree:         524288 kB\nDirty:                 0 kB\nWriteback:             0 kB\nAnonPages:         50000 kB\nMapped:            40000 kB\nShmem:              8000 kB\nKReclaimable:      20000 kB\nSlab:              50000 kB\nSReclaimable:      20000 kB\nSUnreclaim:        30000 kB\nKernelStack:        3000 kB\nPageTables:         2000 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\nWritebackTmp:          0 kB\nCommitLimit:    12341952 kB\nCommitted_AS:     300000 kB\nVmallocTotal:   34359738367 kB\nVmallocUsed:       20000 kB\nVmallocChunk:          0 kB\n";

    #[test]
    fn reads_available_and_swap() {
        let m = parse(MEMINFO.as_bytes()).unwrap();
        assert_eq!(m.total_kib, 24_683_904);
        assert_eq!(m.available_kib, 24_393_000);
        assert_eq!(m.swap_total_kib, 1_048_572);
        assert_eq!(m.swap_free_kib, 524_288);
    }

    #[test]
    fn vmstat_refaults_old_and_new_kernels() {
        let new = "nr_inactive_file 300\nnr_active_file 700\nworkingset_refault_anon 5\nworkingset_refault_file 42\n";
        let r = parse_vmstat_refaults(new).unwrap();
        assert_eq!((r.refault_file, r.file_pages), (42, 1000));
        assert_eq!(r.refault_anon, 5);
        assert_eq!(r.global_scan, None, "no pgscan lines");
        let scans = format!("{new}pgscan_kswapd 10\npgscan_direct 3\npgscan_khugepaged 1\n");
        assert_eq!(parse_vmstat_refaults(&scans).unwrap().global_scan, Some(14));
        let old_swap = "nr_inactive_file 1\nnr_active_file 1\nworkingset_refault 7\npswpin 9\n";
        assert_eq!(parse_vmstat_refaults(old_swap).unwrap().refault_anon, 9);
        let old = "nr_inactive_file 1\nnr_active_file 1\nworkingset_refault 7\n";
        assert_eq!(parse_vmstat_refaults(old).unwrap().refault_file, 7);
        assert_eq!(parse_vmstat_refaults("garbage"), None);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/meminfo.rs): procfs-core cut the key's last
    /// byte off without looking, and panicked inside a multi-byte character.
    #[test]
    fn a_key_ending_in_a_multibyte_character_is_not_a_panic() {
        let text = "Mem683\u{252}       20216 kB\n".to_string() + MEMINFO;
        assert_eq!(parse(text.as_bytes()).unwrap().total_kib, 24_683_904);
        assert!(parse(&b"MemTotal\xc9\x92 1 kB\n"[..]).is_err());
    }

    /// Sums of values near u64::MAX saturate rather than overflow.
    #[test]
    fn huge_values_saturate() {
        let max = u64::MAX;
        let text = format!(
            "MemTotal: {max} kB\nMemFree: {max} kB\nBuffers: {max} kB\nCached: {max} kB\nInactive(file): {max} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        );
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!((m.total_kib, m.available_kib), (max, max));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(&b"\xff\xfe garbage"[..]).is_err());
        assert!(parse(&b""[..]).is_err());
    }
}
