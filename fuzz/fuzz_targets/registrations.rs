//! The registrations snapshot `lowmemd rank` reads: a file in the runtime directory, so
//! written by lowmemd, but read by a separate process that must not trust its shape.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lowmemd::lmkd::snapshot::Snapshot;
use lowmemd::pipeline::registered::Registrations;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/run/lowmemd/lmkd.registered");
    if let Ok(snap) = Snapshot::parse(text, path) {
        // What lowmemd writes, it reads back the same.
        let json = serde_json::to_string(&snap).expect("a snapshot serialises");
        let back = Snapshot::parse(&json, path).expect("a written snapshot parses");
        assert_eq!(snap, back);
        let table = snap.lookup_table();
        for e in &snap.registered {
            assert!(table.lookup(e.pid, e.starttime).is_some());
        }
    }
});
