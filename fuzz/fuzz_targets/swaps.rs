//! `/proc/swaps` and zram's `mm_stat`, and the headroom judged from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::scope::swap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let devices = swap::parse_swaps(&text);
    let stat = swap::parse_mm_stat(&text);
    if let Some(s) = &stat {
        let r = swap::zram_ratio(s);
        assert!((1.0..=16.0).contains(&r), "ratio {r}");
    }
    for d in &devices {
        let _ = swap::device_headroom_kib(d, stat.as_ref());
    }
    for available_kib in [0, 1 << 20, u64::MAX] {
        let _ = swap::judge(&devices, available_kib, |_| stat);
    }
});
