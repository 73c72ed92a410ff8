//! `/proc/PID/cgroup`: cgroup names are chosen by whoever may create cgroups (a user's own
//! delegated subtree), and may hold ':'.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::fuzzing::{cgroup_path_of, cgroup_paths};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = cgroup_paths(&text);
    for controller in [None, Some("memory"), Some("cpu")] {
        if let Some(p) = cgroup_path_of(&text, controller) {
            assert!(
                all.contains(&p),
                "{p:?} is not one of the cgroup paths {all:?}"
            );
        }
    }
});
