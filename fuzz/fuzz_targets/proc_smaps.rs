//! `/proc/PID/smaps` and `maps`: the path of a mapping is whatever file name the process
//! mapped (spaces, " (deleted)", names like `/SYSVx`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::procs::parse_smaps;

fuzz_target!(|data: &[u8]| {
    if let Ok(regions) = parse_smaps(data) {
        for r in &regions {
            assert!(r.start < r.end, "empty or reversed region {r:?}");
        }
        assert!(regions.len() <= data.split(|&b| b == b'\n').count());
    }
});
