//! `/proc/PID/stat`: a process chooses its own comm (parentheses, spaces, newlines, any
//! bytes), so the line is hostile input on every scan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::procs::parse_stat;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = parse_stat(data) {
        // The comm comes from between the parentheses: a line without both is an error.
        assert!(data.contains(&b'(') && data.contains(&b')'));
        assert!(s.comm.len() <= data.len() * 3, "comm longer than the line");
    }
});
