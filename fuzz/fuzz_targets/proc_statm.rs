//! `/proc/PID/statm` and `oom_score_adj`: the two files the scan reads of every process.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::fuzzing::{parse_adj, parse_statm};

fuzz_target!(|data: &[u8]| {
    let _ = parse_statm(data);
    if let Ok(adj) = parse_adj(data) {
        assert!((-1000..=1000).contains(&adj), "adj {adj} out of range");
    }
});
