//! Swap as lowmemd counts it: the devices of `/proc/swaps`, and zram's compressed pages,
//! which live in RAM too (lmkd's swap_compression_ratio idea, with the ratio measured).

use serde::Serialize;

/// One line of /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapDevice {
    pub name: String,
    pub size_kib: u64,
    pub used_kib: u64,
    /// Compressed RAM (zram): swapping there costs RAM too, only less.
    pub zram: bool,
}

/// Parses /proc/swaps (header line, then `name type size used priority`).
pub fn parse_swaps(text: &str) -> Vec<SwapDevice> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = (*f.first()?).to_string();
            Some(SwapDevice {
                zram: name.starts_with("/dev/zram"),
                size_kib: f.get(2)?.parse().ok()?,
                used_kib: f.get(3)?.parse().ok()?,
                name,
            })
        })
        .collect()
}

/// The active swap devices, read from `/proc/swaps` (none when it is unreadable).
pub fn devices() -> Vec<SwapDevice> {
    parse_swaps(&std::fs::read_to_string("/proc/swaps").unwrap_or_default())
}

/// Free swap as far as it can really be used. zram keeps swapped pages compressed in RAM,
/// so its free slots are only usable while RAM holds their compressed copies:
/// at most `available × ratio`.
pub fn effective_swap_free_kib(
    swap_free_kib: u64,
    available_kib: u64,
    zram_ratio: Option<f64>,
) -> u64 {
    match zram_ratio {
        Some(ratio) => swap_free_kib.min((available_kib as f64 * ratio) as u64),
        None => swap_free_kib,
    }
}

/// The compression ratio of the zram devices in use as swap, or `None` if swap is not
/// (only) zram. Read from `/proc/swaps` and `/sys/block/zramN/mm_stat`.
pub fn zram_swap_ratio() -> Option<f64> {
    let devices = devices();
    if devices.is_empty() || !devices.iter().all(|d| d.zram) {
        return None;
    }
    let (mut orig, mut compr) = (0u64, 0u64);
    for d in devices {
        let name = d.name.trim_start_matches("/dev/");
        let stat =
            std::fs::read_to_string(format!("/sys/block/{name}/mm_stat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        orig += f.next().unwrap_or(0);
        compr += f.next().unwrap_or(0);
    }
    // Before anything is stored the ratio is unknown: assume lzo-rle's typical 2:1.
    let ratio = if compr > 0 {
        orig as f64 / compr as f64
    } else {
        2.0
    };
    Some(ratio.clamp(1.0, 8.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_tell_zram_from_disk() {
        let t = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0 partition\t524284\t1024\t100\n/swapfile file 1048572 0 -2\n";
        let s = parse_swaps(t);
        assert_eq!(s.len(), 2);
        assert!(s[0].zram && !s[1].zram);
        assert_eq!((s[0].size_kib, s[0].used_kib), (524284, 1024));
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn zram_free_swap_is_bounded_by_ram_for_its_compressed_copies() {
        assert_eq!(
            effective_swap_free_kib(1_000_000, 100_000, Some(3.0)),
            300_000
        );
        assert_eq!(
            effective_swap_free_kib(200_000, 100_000, Some(3.0)),
            200_000
        );
        assert_eq!(effective_swap_free_kib(1_000_000, 100_000, None), 1_000_000);
    }
}
