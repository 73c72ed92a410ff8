//! Whether a frozen app's process is worth paging out now: Android's CachedAppOptimizer
//! gates, pure. A compaction of a process holding little anonymous memory, or one that
//! changed little since its last, costs the CPU and the flash or zram writes for almost
//! nothing (the commit that set Android's values: 12 MB keeps 85 % of the gain for 50 %
//! of the compactions, 8 MB 90 % for 50 %); with swap nearly full only file pages go.

use serde::Serialize;

use crate::policy::{FreezeLimits, PageoutLimits};
use crate::procs::MemDetail;

/// Why a compaction was skipped (or, `LowSwap`, kept to file pages). The strings are a
/// metric label: never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Less anonymous memory than the floor.
    AnonFloor,
    /// file + anon + swap changed by at most the delta since its last compaction.
    Unchanged,
    /// Its last compaction was too recent.
    Throttled,
    /// Swap is nearly full: its file pages only.
    LowSwap,
}

impl Gate {
    pub const ALL: [Gate; 4] = [
        Gate::AnonFloor,
        Gate::Unchanged,
        Gate::Throttled,
        Gate::LowSwap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::AnonFloor => "anon_floor",
            Gate::Unchanged => "unchanged",
            Gate::Throttled => "throttled",
            Gate::LowSwap => "low_swap",
        }
    }
}

/// The last compaction of one process incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub at_ms: u64,
    /// Its file + anon + swap after it.
    pub footprint_kib: u64,
}

/// What the gates say of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Skip(Gate),
    /// Page it out; `anon`: its anonymous memory too (false: file pages only).
    Go {
        anon: bool,
    },
}

pub fn footprint_kib(d: &MemDetail) -> u64 {
    d.rss_anon_kib + d.rss_file_kib + d.swap_kib
}

/// The gates, in Android's order: the throttle, the change since the last compaction,
/// the anonymous floor, then swap room. `swap_free_pct`: `None` without swap.
pub fn judge(
    limits: &FreezeLimits,
    pageout: &PageoutLimits,
    d: &MemDetail,
    last: Option<&Compaction>,
    now_ms: u64,
    swap_free_pct: Option<f64>,
) -> Verdict {
    if let Some(last) = last {
        if now_ms.saturating_sub(last.at_ms) < pageout.again_after_ms {
            return Verdict::Skip(Gate::Throttled);
        }
        if footprint_kib(d).abs_diff(last.footprint_kib) <= limits.min_change_kib {
            return Verdict::Skip(Gate::Unchanged);
        }
    }
    if d.rss_anon_kib < limits.min_anon_kib {
        return Verdict::Skip(Gate::AnonFloor);
    }
    let anon = swap_free_pct.is_some_and(|p| p >= limits.file_only_below_swap_free_pct);
    Verdict::Go { anon }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(anon_mib: u64, file_mib: u64) -> MemDetail {
        MemDetail {
            rss_anon_kib: anon_mib * 1024,
            rss_file_kib: file_mib * 1024,
            ..Default::default()
        }
    }

    fn limits() -> (FreezeLimits, PageoutLimits) {
        let p = PageoutLimits {
            again_after_ms: 10_000,
            ..Default::default()
        };
        (FreezeLimits::default(), p)
    }

    #[test]
    fn a_big_app_is_paged_out_anon_and_all_while_swap_has_room() {
        let (f, p) = limits();
        let v = judge(&f, &p, &detail(100, 20), None, 0, Some(80.0));
        assert_eq!(v, Verdict::Go { anon: true });
        // Swap under 20 % free, or no swap: its file pages only.
        assert_eq!(
            judge(&f, &p, &detail(100, 20), None, 0, Some(10.0)),
            Verdict::Go { anon: false }
        );
        assert_eq!(
            judge(&f, &p, &detail(100, 20), None, 0, None),
            Verdict::Go { anon: false }
        );
    }

    #[test]
    fn android_gates_skip_small_unchanged_and_recent_compactions() {
        let (f, p) = limits();
        // 11 MiB of anon is under Android's 12,000 kB floor.
        assert_eq!(
            judge(&f, &p, &detail(11, 50), None, 0, Some(80.0)),
            Verdict::Skip(Gate::AnonFloor)
        );
        let last = Compaction {
            at_ms: 0,
            footprint_kib: 120 * 1024,
        };
        assert_eq!(
            judge(&f, &p, &detail(100, 20), Some(&last), 9_999, Some(80.0)),
            Verdict::Skip(Gate::Throttled)
        );
        // 7 MiB more than at its last compaction: not worth another.
        assert_eq!(
            judge(&f, &p, &detail(107, 20), Some(&last), 20_000, Some(80.0)),
            Verdict::Skip(Gate::Unchanged)
        );
        assert_eq!(
            judge(&f, &p, &detail(110, 20), Some(&last), 20_000, Some(80.0)),
            Verdict::Go { anon: true }
        );
    }
}
