//! What the page-out stage remembers per process incarnation: when it was last paged out,
//! what that gave, and where a capped event stopped, so the same process is not paged out
//! again before that is worth it.

use std::collections::HashMap;

use crate::pipeline::rank::RankedProc;
use crate::policy::Level;

/// A page-out that freed less than this found nothing worth the work (binary text, a few
/// pages): the process is not tried again until it grows.
pub const NOTHING_KIB: u64 = 1024;

/// What was done to one incarnation last time it was paged out.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub at_ms: u64,
    pub rss_after_kib: u64,
    pub freed_kib: u64,
    /// Bytes of its plan already advised, when an event's cap stopped part-way.
    pub cursor_bytes: u64,
}

/// The last page-out per incarnation (pid, starttime).
#[derive(Debug, Default)]
pub struct Tracker {
    records: HashMap<(i32, u64), Record>,
}

impl Tracker {
    /// Where the plan of `p` continues (0: from the start).
    pub fn cursor(&self, p: &RankedProc) -> u64 {
        self.records
            .get(&(p.pid, p.starttime))
            .map_or(0, |r| r.cursor_bytes)
    }

    /// A page-out candidate: never paged out, or part-way through, or left alone long
    /// enough, or grown back since. One that yielded nothing waits until it grows.
    pub fn eligible(&self, p: &RankedProc, level: &Level, now: u64) -> bool {
        let Some(r) = self.records.get(&(p.pid, p.starttime)) else {
            return true;
        };
        let grown =
            p.rss_kib as f64 > r.rss_after_kib as f64 * (1.0 + level.pageout.regrow_pct / 100.0);
        if r.cursor_bytes > 0 {
            return true;
        }
        if r.freed_kib < NOTHING_KIB {
            return grown;
        }
        grown || now.saturating_sub(r.at_ms) >= level.pageout.again_after_ms
    }

    /// Remembers a page-out of `p`, and forgets incarnations not seen for ten times the
    /// level's pause (at least ten minutes): exited ones never come back.
    pub fn record(&mut self, p: &RankedProc, r: Record, level: &Level) {
        self.records.insert((p.pid, p.starttime), r);
        let horizon = 10 * level.pageout.again_after_ms.max(60_000);
        self.records
            .retain(|_, old| r.at_ms.saturating_sub(old.at_ms) < horizon);
    }
}
