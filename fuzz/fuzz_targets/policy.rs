//! The policy loader: TOML text → validated, compiled `Policy`. A policy is trusted, but
//! its file may be a typo or a half-written reload, and `lowmemd check` runs on anything.
//! A policy that compiles must survive what `check --explain` and the daemon do with it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowmemd::policy::explain::explain;
use lowmemd::policy::validate::compile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match compile(Path::new("fuzz.toml"), text) {
        Ok(policy) => {
            for total_kib in [None, Some(256 << 10), Some(64 << 20), Some(u64::MAX / 1024)] {
                let _ = explain(&policy, total_kib);
            }
            for total_kib in [0, 256 << 10, u64::MAX / 1024] {
                let _ = policy.watermarks(total_kib);
            }
            let _ = policy.psi_conditions();
            let _ = policy.summary();
            serde_json::to_string(&policy).expect("a compiled policy serialises");
            for w in &policy.warnings {
                assert!(w.line >= 1 && w.line <= lines, "{w:?} outside the text");
            }
            // What a reload does: the same text compiles to the same policy.
            let again = compile(Path::new("fuzz.toml"), text).expect("compiled once");
            assert_eq!(policy, again, "compiling is not deterministic");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "rejected without a problem named");
            for p in &problems {
                assert!(p.line >= 1 && p.line <= lines, "{p:?} outside the text");
            }
        }
    }
});
