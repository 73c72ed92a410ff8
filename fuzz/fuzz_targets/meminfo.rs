//! `/proc/meminfo` and `/proc/vmstat` (the system scope's memory and refaults).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::scope::meminfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = meminfo::parse(data) {
        assert!(m.total_kib > 0 || m.available_kib == 0);
        assert!(m.available_kib <= m.total_kib, "{m:?}");
    }
    let _ = meminfo::parse_vmstat_refaults(&String::from_utf8_lossy(data));
});
