//! PSI pressure files: `/proc/pressure/memory` and a cgroup's `memory.pressure`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lowmemd::scope::pressure::parse(data);
});
