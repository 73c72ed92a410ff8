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

/// What `/sys/block/zramN/mm_stat` says of one zram device (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZramStat {
    /// Data stored, uncompressed.
    pub orig_data_size: u64,
    /// RAM the device uses for it, its allocator's overhead included: what the data really
    /// costs.
    pub mem_used_total: u64,
    /// The device's RAM limit (`mem_limit`), 0 for none.
    pub mem_limit: u64,
}

/// Parses mm_stat: `orig_data_size compr_data_size mem_used_total mem_limit ...`.
pub fn parse_mm_stat(text: &str) -> Option<ZramStat> {
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some(ZramStat {
        orig_data_size: *f.first()?,
        mem_used_total: *f.get(2)?,
        mem_limit: *f.get(3)?,
    })
}

/// Below this much stored data the measured ratio says little (a few pages of zeros
/// compress 100:1): the prior stands.
const RATIO_MIN_SAMPLE_BYTES: u64 = 8 << 20;
/// The ratio assumed before a device has held enough to measure: lzo-rle and lz4 give 2-3:1
/// on typical anonymous memory (and ~1:1 on random data, which the measure catches soon).
pub const PRIOR_ZRAM_RATIO: f64 = 2.0;

/// The compression ratio a zram device achieves, its own RAM use counted (stored ÷ RAM
/// used), or the prior before it holds enough to tell. At least 1: zram never takes more RAM
/// than the page it stores, since incompressible pages are stored as they are.
pub fn zram_ratio(stat: &ZramStat) -> f64 {
    if stat.orig_data_size < RATIO_MIN_SAMPLE_BYTES || stat.mem_used_total == 0 {
        return PRIOR_ZRAM_RATIO;
    }
    (stat.orig_data_size as f64 / stat.mem_used_total as f64).clamp(1.0, 16.0)
}

/// What one swap device can still take, counted in the RAM it frees: a disk's free space
/// whole; for zram, each page moved out still costs its compressed copy in RAM, so its free
/// slots count (1 − 1/ratio) of their size — and no more than its `mem_limit` still allows.
pub fn device_headroom_kib(dev: &SwapDevice, zram: Option<&ZramStat>) -> u64 {
    let free_kib = dev.size_kib.saturating_sub(dev.used_kib);
    if !dev.zram {
        return free_kib;
    }
    let stat = zram.copied().unwrap_or_default();
    let ratio = zram_ratio(&stat);
    let mut takes_kib = free_kib as f64;
    if stat.mem_limit > 0 {
        let ram_left_kib = stat.mem_limit.saturating_sub(stat.mem_used_total) / 1024;
        takes_kib = takes_kib.min(ram_left_kib as f64 * ratio);
    }
    (takes_kib * (1.0 - 1.0 / ratio)) as u64
}

/// The swap of the machine as lowmemd judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwapRoom {
    /// What swap can still take, in RAM it frees (the sum over devices).
    pub headroom_kib: u64,
    /// Free swap as far as it can really be used: zram's free slots only while RAM can hold
    /// their compressed copies (at most `available × ratio`).
    pub usable_free_kib: u64,
}

/// Judges the active swap devices, with `zram_stat` for each zram device's mm_stat.
pub fn judge(
    devices: &[SwapDevice],
    available_kib: u64,
    mut zram_stat: impl FnMut(&str) -> Option<ZramStat>,
) -> SwapRoom {
    let mut room = SwapRoom::default();
    for d in devices {
        let stat = d
            .zram
            .then(|| zram_stat(d.name.trim_start_matches("/dev/")))
            .flatten();
        room.headroom_kib = room
            .headroom_kib
            .saturating_add(device_headroom_kib(d, stat.as_ref()));
        let free = d.size_kib.saturating_sub(d.used_kib);
        let usable = if d.zram {
            let ratio = stat.as_ref().map_or(PRIOR_ZRAM_RATIO, zram_ratio);
            free.min((available_kib as f64 * ratio) as u64)
        } else {
            free
        };
        room.usable_free_kib = room.usable_free_kib.saturating_add(usable);
    }
    room
}

/// Reads `/sys/block/NAME/mm_stat`.
pub fn read_mm_stat(name: &str) -> Option<ZramStat> {
    parse_mm_stat(&std::fs::read_to_string(format!("/sys/block/{name}/mm_stat")).ok()?)
}

/// RAM that swap itself takes now: the zram devices' `mem_used_total` (disk swap takes
/// none). What a page-out into zram costs, for measuring what it really returned.
pub fn ram_used_kib() -> u64 {
    devices()
        .iter()
        .filter(|d| d.zram)
        .filter_map(|d| read_mm_stat(d.name.trim_start_matches("/dev/")))
        .map(|s| s.mem_used_total / 1024)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/fuzz_targets/swaps.rs): two devices of near u64::MAX KiB
    /// overflowed the sums; they saturate.
    #[test]
    fn huge_swap_devices_saturate() {
        let max = u64::MAX;
        let text = format!("Filename Type Size Used Priority\n/a f {max} 0 -2\n/b f {max} 0 -3\n");
        let room = judge(&parse_swaps(&text), 0, |_| None);
        assert_eq!((room.headroom_kib, room.usable_free_kib), (max, max));
    }

    #[test]
    fn swaps_tell_zram_from_disk() {
        let t = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0 partition\t524284\t1024\t100\n/swapfile file 1048572 0 -2\n";
        let s = parse_swaps(t);
        assert_eq!(s.len(), 2);
        assert!(s[0].zram && !s[1].zram);
        assert_eq!((s[0].size_kib, s[0].used_kib), (524284, 1024));
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    fn zram(size_kib: u64, used_kib: u64) -> SwapDevice {
        SwapDevice {
            name: "/dev/zram0".into(),
            size_kib,
            used_kib,
            zram: true,
        }
    }

    fn stat(orig_mib: u64, used_mib: u64, limit_mib: u64) -> ZramStat {
        ZramStat {
            orig_data_size: orig_mib << 20,
            mem_used_total: used_mib << 20,
            mem_limit: limit_mib << 20,
        }
    }

    #[test]
    fn mm_stat_is_read_by_position() {
        let s = parse_mm_stat("  104857600 33554432 35651584 0 35651584 12 0 0 0\n").unwrap();
        assert_eq!(s, stat(100, 34, 0));
        assert_eq!(parse_mm_stat("1 2"), None);
        assert_eq!(parse_mm_stat("1 x 3 4"), None);
    }

    #[test]
    fn disk_swap_counts_whole() {
        let disk = SwapDevice {
            name: "/swapfile".into(),
            size_kib: 1_000_000,
            used_kib: 400_000,
            zram: false,
        };
        assert_eq!(device_headroom_kib(&disk, None), 600_000);
    }

    #[test]
    fn zram_counts_what_its_compressed_copies_leave_free() {
        // 384 MiB device, empty: the prior 2:1 says each page moved out frees half a page.
        assert_eq!(device_headroom_kib(&zram(393_216, 0), None), 196_608);
        // 3:1 measured on 300 MiB stored (100 MiB of RAM): 84 MiB of slots free, 2/3 of it.
        let s = stat(300, 100, 0);
        assert_eq!(
            device_headroom_kib(&zram(393_216, 307_200), Some(&s)),
            57_344
        );
        // Random data stores 1:1: swap there frees nothing.
        let s = stat(100, 101, 0);
        assert_eq!(device_headroom_kib(&zram(393_216, 102_400), Some(&s)), 0);
        // A few pages of zeros measure nothing yet: the prior stands.
        let s = stat(1, 0, 0);
        assert_eq!(device_headroom_kib(&zram(393_216, 0), Some(&s)), 196_608);
    }

    #[test]
    fn zram_mem_limit_bounds_what_it_takes() {
        // 2:1 measured on 32 MiB, 8 MiB of the 24 MiB limit left: 16 MiB more stored, 8 freed.
        let s = stat(32, 16, 24);
        assert_eq!(device_headroom_kib(&zram(393_216, 32_768), Some(&s)), 8_192);
    }

    #[test]
    fn judged_free_swap_of_zram_is_bounded_by_ram_for_its_copies() {
        let s = stat(300, 100, 0);
        let room = judge(&[zram(1_000_000, 0)], 100_000, |_| Some(s));
        assert_eq!(room.usable_free_kib, 300_000);
        let none = judge(&[], 100_000, |_| None);
        assert_eq!(none, SwapRoom::default());
    }
}
