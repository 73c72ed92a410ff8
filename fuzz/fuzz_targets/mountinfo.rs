//! `/proc/self/mountinfo`: mount points are paths anyone with a mount namespace may name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::scope::mounts::{dir_under, parse_mounts};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_mounts(data) {
        for mount in [m.v1_memory, m.v2].iter().flatten() {
            let dir = dir_under(mount, "/box/app");
            assert!(dir.starts_with(&mount.0), "{dir:?} is not under {mount:?}");
        }
    }
});
