//! One lmkd packet, as the socket's thread receives it: any peer that can connect sends
//! bytes of its choosing (the trust check comes after the parse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowmemd::lmkd::protocol::{self, Command, MAX_PACKET, ProtocolError};
use lowmemd::policy::Policy;

fuzz_target!(|data: &[u8]| {
    // As server.rs reads it: recv into a buffer one int longer than the longest packet,
    // with MSG_TRUNC giving the packet's real length.
    let mut buf = [0u8; MAX_PACKET + 4];
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    let len = data.len();
    match protocol::parse(&buf, len) {
        Ok(cmd) => {
            assert!(len <= MAX_PACKET && len % 4 == 0 && len >= 4);
            assert!(Command::LABELS.contains(&cmd.label()));
            if let Command::Target(targets) = &cmd {
                let pairs: Vec<(u64, i16)> = targets
                    .iter()
                    .map(|t| (u64::from(t.minfree_pages) * 4, t.adj))
                    .collect();
                let p = Policy::default().with_minfree(1234, &pairs);
                let _ = p.watermarks(256 << 10);
            }
        }
        Err(e) => {
            let why = e.why();
            assert!(ProtocolError::WHYS.contains(&why), "unlisted why {why}");
        }
    }
});
