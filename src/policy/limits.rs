//! What the gentle levels do besides choosing a victim: how much a page-out level advises
//! and how often to the same process, and how a freeze level freezes, compacts and thaws.

use serde::Serialize;

/// How much a page-out level does, and how often to the same process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PageoutLimits {
    /// At most this much address space advised per event (the rest waits for the next
    /// event), so page-out never holds the pipeline long.
    pub max_kib_per_event: u64,
    /// A process paged out is left alone this long...
    pub again_after_ms: u64,
    /// ...unless its resident size grew back by this percent since.
    pub regrow_pct: f64,
}

impl Default for PageoutLimits {
    fn default() -> Self {
        PageoutLimits {
            max_kib_per_event: 128 * 1024,
            again_after_ms: 60_000,
            regrow_pct: 20.0,
        }
    }
}

/// How a freeze level freezes, compacts and thaws. The page-out gates are Android's
/// CachedAppOptimizer's (frameworks/base, its measured defaults): a compaction is skipped
/// when the app holds under 12 MB of anonymous memory (85 % of the gain for half the
/// compactions) or changed by at most 8 MB since its last one (90 % for half); with under
/// 20 % of swap free only its file pages go.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FreezeLimits {
    /// Thaw once no freeze level has held for this long (hysteresis).
    pub thaw_after_ms: u64,
    /// Page the frozen app's memory out (its compaction), under the gates below.
    pub pageout: bool,
    /// No compaction of an app holding less anonymous memory than this.
    pub min_anon_kib: u64,
    /// No compaction again unless its file + anon + swap changed by more than this.
    pub min_change_kib: u64,
    /// Below this percent of swap free, page out file pages only.
    pub file_only_below_swap_free_pct: f64,
    /// A candidate whose app may not be frozen (no app cgroup of its own, or one it shares)
    /// is stopped alone with SIGSTOP instead of being paged out alone. Only where a policy
    /// asks: a shell or a parent sees a stopped child.
    pub sigstop_lone: bool,
}

impl Default for FreezeLimits {
    fn default() -> Self {
        FreezeLimits {
            thaw_after_ms: 60_000,
            pageout: true,
            min_anon_kib: 12_000,
            min_change_kib: 8_000,
            file_only_below_swap_free_pct: 20.0,
            sigstop_lone: false,
        }
    }
}
