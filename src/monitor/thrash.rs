//! The thrashing measure: refaults over a sliding window, in percent of the file cache
//! (lmkd's measure, with anonymous refaults — swap-ins of recently evicted pages — counted
//! too). A cache that keeps re-reading what it just evicted is thrashing even when
//! "available" memory looks fine, and so is a machine swapping its working set in and out
//! of zram. Without swap there are no anonymous refaults: lmkd's measure, unchanged.

use std::collections::VecDeque;

use crate::policy::Policy;
use crate::sample::Refaults;

/// One reading of the refault counter.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_ms: u64,
    /// File and anonymous refaults so far.
    refaults: u64,
}

#[derive(Debug, Default)]
pub struct ThrashMeter {
    history: VecDeque<Reading>,
}

impl ThrashMeter {
    /// Adds a reading at `now_ms`; returns the refaults since the oldest reading kept (the
    /// last one at or before the window start), as a percent of the current file cache, and
    /// that reading's time. `None` until two readings exist.
    pub fn update(&mut self, now_ms: u64, r: Refaults, window_ms: u64) -> Option<(f64, u64)> {
        // Keep one reading at or before the window start, so the delta covers the window.
        while self.history.len() >= 2 && self.history[1].at_ms + window_ms <= now_ms {
            self.history.pop_front();
        }
        // A counter that went backwards (cgroup re-created) restarts the measure, and so
        // does a gap of two windows: the monitor reads refaults only while reclaim is active, and a delta
        // from a reading long before the window would count refaults from outside it.
        let gap = self
            .history
            .back()
            .is_some_and(|last| now_ms.saturating_sub(last.at_ms) > 2 * window_ms);
        if gap
            || self
                .history
                .back()
                .is_some_and(|last| last.refaults > r.total())
        {
            self.history.clear();
        }
        self.history.push_back(Reading {
            at_ms: now_ms,
            refaults: r.total(),
        });
        let oldest = *self.history.front()?;
        (self.history.len() >= 2).then(|| {
            let pct = (r.total() - oldest.refaults) as f64 * 100.0 / r.file_pages.max(1) as f64;
            (pct, oldest.at_ms)
        })
    }
}

/// The machine's refaults, counted only while the machine's own reclaim runs: over a poll
/// that ends within a thrashing window of the last growth of its scan counters. A memcg at
/// its limit reclaims and refaults its own cache however much memory the machine has (a
/// backup, a build in a limited slice): those refaults show in /proc/vmstat, but its reclaim
/// does not — since the kernel counts pgscan_* there for global reclaim alone (measured on
/// 6.18: a memcg re-reading 768 MiB through a 64 MiB limit added 196,608 refaults and not
/// one pgscan). A machine that thrashes reclaims globally all the while, if in bursts
/// (kswapd reclaims from the low to the high watermark and sleeps), hence the window, as
/// lmkd counts a window's refaults when the machine is in reclaim. On a kernel that counts
/// a memcg's reclaim in vmstat too, the gate is simply always open: the old measure.
#[derive(Debug, Default)]
pub struct GlobalReclaim {
    /// The raw counters at the previous poll: file and anonymous refaults, pages scanned.
    prev: Option<(u64, u64, u64)>,
    /// When the scan counters last grew.
    scanned_ms: Option<u64>,
    /// Refaults counted so far (file, anonymous).
    counted: (u64, u64),
}

impl GlobalReclaim {
    /// `r`, read at `now_ms`, with its refault counters replaced by those counted while the
    /// machine reclaimed (within `window_ms`); a memcg's readings (no `global_scan`) pass
    /// unchanged.
    pub fn gate(&mut self, now_ms: u64, r: Refaults, window_ms: u64) -> Refaults {
        let Some(scan) = r.global_scan else {
            return r;
        };
        if let Some((file, anon, scanned)) = self.prev {
            if scan > scanned {
                self.scanned_ms = Some(now_ms);
            }
            if self
                .scanned_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= window_ms)
            {
                self.counted.0 += r.refault_file.saturating_sub(file);
                self.counted.1 += r.refault_anon.saturating_sub(anon);
            }
        }
        self.prev = Some((r.refault_file, r.refault_anon, scan));
        Refaults {
            refault_file: self.counted.0,
            refault_anon: self.counted.1,
            ..r
        }
    }
}

/// How near a thrashing threshold refaults must run for the fast reads: three quarters of
/// it. A memcg streaming a file twice its size through its own cache refaulted ~20-26 % of
/// this host's whole file cache per 2 s window (tests/idle.rs): the system-wide measure
/// cannot tell that from the system thrashing, and at half of embedded.toml's 50 % it kept
/// an idle board's monitor reading every 200 ms. A cache that really thrashes passes 75 %
/// of the threshold on its way over it, a poll before the measure needs the fast reads.
const NEAR: f64 = 0.75;

/// The pace of refaults between two polls, however far apart, against the policy's lowest
/// thrashing threshold: what decides whether the refaults are worth reading fast. A busy
/// page cache (a backup streaming files, a build, files deleted) moves the file cache a lot
/// while refaulting little of it; a cache that thrashes refaults at its threshold's pace.
/// Reading fast on mere cache movement woke an idle board 66 times in 30 s (issue 21).
#[derive(Debug, Default)]
pub struct RefaultPace {
    /// The previous reading: when, and the refaults so far.
    prev: Option<(u64, u64)>,
    /// When the refaults last ran at [`NEAR`] of a threshold's pace or faster.
    near_ms: Option<u64>,
}

impl RefaultPace {
    /// Notes a reading at `now_ms`; returns the refaults since the previous one, at their
    /// pace over the policy's thrashing window, in percent of the file cache now (the
    /// thrashing measure if that pace held for a window). `None` for the first reading and
    /// after a counter reset.
    pub fn update(&mut self, now_ms: u64, r: Refaults, policy: &Policy) -> Option<f64> {
        let window = policy.thrashing_window_ms as f64;
        let pace = self
            .prev
            .filter(|&(at, total)| now_ms > at && r.total() >= total)
            .map(|(at, total)| {
                (r.total() - total) as f64 * 100.0 / r.file_pages.max(1) as f64 * window
                    / (now_ms - at) as f64
            });
        self.prev = Some((now_ms, r.total()));
        let lowest = policy
            .levels
            .iter()
            .filter_map(|l| l.conditions.thrashing_above_pct)
            .fold(f64::INFINITY, f64::min);
        if pace.is_some_and(|p| p >= lowest * NEAR) {
            self.near_ms = Some(now_ms);
        }
        pace
    }

    /// Whether the refaults ran at [`NEAR`] of a threshold's pace within the last
    /// `window_ms`.
    pub fn near(&self, now_ms: u64, window_ms: u64) -> bool {
        self.near_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thrashing_is_refaults_over_the_window_per_file_cache() {
        let mut m = ThrashMeter::default();
        let r = |refault_file| Refaults {
            refault_file,
            file_pages: 1000,
            ..Default::default()
        };
        assert_eq!(m.update(0, r(100), 1000), None);
        assert_eq!(m.update(500, r(300), 1000), Some((20.0, 0)));
        // At 1600 the window starts at 600: the reading at 500 is the last one before it,
        // so the delta covers 500..1600.
        assert_eq!(m.update(1600, r(400), 1000), Some((10.0, 500)));
        // A counter reset starts over.
        assert_eq!(m.update(1700, r(5), 1000), None);
        // So does a gap of more than two windows: no delta across it.
        assert_eq!(m.update(1800, r(10), 1000), Some((0.5, 1700)));
        assert_eq!(m.update(5000, r(900), 1000), None);
    }

    #[test]
    fn swap_ins_of_evicted_pages_count_as_thrashing() {
        let mut m = ThrashMeter::default();
        let r = |refault_anon| Refaults {
            refault_file: 10,
            file_pages: 1000,
            refault_anon,
            global_scan: None,
        };
        assert_eq!(m.update(0, r(0), 1000), None);
        // 150 anonymous refaults in half a window, no file refaults: 15 % of the cache.
        assert_eq!(m.update(500, r(150), 1000), Some((15.0, 0)));
    }

    fn thrashing_at(pct: f64) -> Policy {
        let mut p = Policy {
            thrashing_window_ms: 2000,
            ..Default::default()
        };
        p.levels[0].conditions.thrashing_above_pct = Some(pct);
        p
    }

    fn refaults(refault_file: u64) -> Refaults {
        Refaults {
            refault_file,
            file_pages: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn the_machines_refaults_count_only_while_it_reclaims_itself() {
        let mut g = GlobalReclaim::default();
        let r = |file, anon, scan| Refaults {
            refault_file: file,
            refault_anon: anon,
            file_pages: 1000,
            global_scan: Some(scan),
        };
        let mut at = |now, r| {
            let out = g.gate(now, r, 2000);
            (out.refault_file, out.refault_anon)
        };
        assert_eq!(at(0, r(500, 50, 7)), (0, 0), "the first reading");
        // A memcg churning its cache within its limit: refaults, no global scan.
        assert_eq!(at(1000, r(900, 50, 7)), (0, 0));
        // The machine reclaims: what refaulted since the last poll counts...
        assert_eq!(at(1010, r(1000, 80, 9)), (100, 30));
        // ... and for a window after its last scan, while kswapd sleeps between bursts.
        assert_eq!(at(2000, r(1200, 80, 9)), (300, 30));
        assert_eq!(at(3010, r(1300, 80, 9)), (400, 30));
        // A window without any: the machine has stopped reclaiming.
        assert_eq!(at(3020, r(1900, 80, 9)), (400, 30));
        assert_eq!(at(3030, r(2000, 80, 12)), (500, 30));
        // A memcg's own reading passes as it is.
        let memcg = Refaults {
            refault_file: 5,
            ..Default::default()
        };
        assert_eq!(g.gate(4000, memcg, 2000), memcg);
    }

    #[test]
    fn refaults_near_a_threshold_s_pace_are_near_and_a_busy_cache_is_not() {
        let policy = thrashing_at(50.0);
        let mut pace = RefaultPace::default();
        assert_eq!(pace.update(0, refaults(0), &policy), None);
        assert!(!pace.near(0, 2000));
        // 100 of 1000 pages refaulted in 4 s: 5 % per 2 s window, a tenth of the threshold
        // (a file streamed through a cache of its own, elsewhere).
        assert_eq!(pace.update(4000, refaults(100), &policy), Some(5.0));
        assert!(!pace.near(4000, 2000));
        // 60 more in 200 ms: 60 % per window, past three quarters of 50 %.
        assert_eq!(pace.update(4200, refaults(160), &policy), Some(60.0));
        assert!(pace.near(4200, 2000) && pace.near(6100, 2000));
        // Near for one window after the last fast pace.
        assert!(!pace.near(6200, 2000));
        // A counter that went backwards measures nothing.
        assert_eq!(pace.update(6300, refaults(5), &policy), None);
    }
}
