//! The head of an HTTP request to the metrics endpoint: anyone who can reach the port.
//! The server parses again each time more bytes arrive, so every prefix is parsed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::report::http::{Request, parse_request};

fuzz_target!(|data: &[u8]| {
    // The server reads at most 8 KiB of head.
    let data = &data[..data.len().min(8 * 1024)];
    for end in [data.len() / 3, data.len() / 2, data.len()] {
        match parse_request(&data[..end]) {
            Request::Partial => {}
            Request::Get { path, .. } => assert!(!path.is_empty()),
            Request::Refuse(code, body) => {
                assert!(matches!(code, 400 | 405 | 431), "code {code}");
                assert!(body.ends_with('\n'));
            }
        }
    }
});
