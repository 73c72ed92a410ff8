//! A memcg's files: the first line is the limit (`memory.max` / `limit_in_bytes`), the
//! second the usage, the rest `memory.stat` (also read as `memory.events`, `cpu.max` and a
//! cpuset list). A delegated cgroup's owner cannot write these, but lowmemd must not
//! panic on any kernel's spelling of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::scope::memcg::{self, Version};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (limit, usage) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let stat = parts.next().unwrap_or("");
    for version in [Version::V1, Version::V2] {
        // A small machine and the largest total meminfo can report.
        for system_total_kib in [256 << 10, u64::MAX / 1024] {
            if let Ok(m) = memcg::snapshot(version, limit, usage, stat, system_total_kib) {
                assert!(m.total_kib <= system_total_kib, "{m:?}");
                assert!(m.available_kib <= m.total_kib, "{m:?}");
            }
        }
        for page_size in [4096, 65536] {
            let _ = memcg::refaults(version, stat, page_size);
        }
    }
    let _ = memcg::parse_stat_key(stat, "oom_kill");
    let _ = memcg::parse_cpu_list(&text);
    let _ = memcg::parse_cpu_max(&text);
});
