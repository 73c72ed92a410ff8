//! `/proc/PID/status`: its `Name:` line is the process's own comm; lowmemd reads VmSwap,
//! the real uid, pending signals, the Rss* lines and (its own) CapEff.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::fuzzing::{parse_real_uid, parse_vm_swap_kib, sigkill_pending};
use lowmemd::procs::MemDetail;

fuzz_target!(|data: &[u8]| {
    let _ = parse_vm_swap_kib(data);
    let _ = parse_real_uid(data);
    let _ = sigkill_pending(data);
    let text = String::from_utf8_lossy(data);
    let d = MemDetail::parse(&text);
    let _ = d.resident_kib();
    let _ = lowmemd::caps::parse_cap_eff(&text);
});
