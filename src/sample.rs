//! What one sample holds: the data the monitor hands to the pipeline and the pure decision
//! reads. Data only, at the bottom of the crate: everything may use it, it uses nothing.

use serde::Serialize;

/// Memory of the scope at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MemSnapshot {
    pub total_kib: u64,
    pub available_kib: u64,
    pub swap_total_kib: u64,
    pub swap_free_kib: u64,
    /// Free memory (system: MemFree; memcg: limit − usage) and the file cache (system:
    /// Buffers + Cached − Shmem − Unevictable; memcg: active + inactive file): what lmkd's
    /// minfree table compares, both at once.
    pub free_kib: u64,
    pub file_kib: u64,
    /// What swap can still take, in RAM it frees: free disk swap whole; a zram device's free
    /// slots times (1 − 1/ratio), since each page it takes still costs its compressed copy
    /// in RAM (`scope::swap::headroom_kib`). 0 without swap.
    pub swap_headroom_kib: u64,
}

impl MemSnapshot {
    pub fn available_pct(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        self.available_kib as f64 * 100.0 / self.total_kib as f64
    }

    /// The headroom a memory condition judges: available RAM, plus what swap can still take
    /// when the policy counts swap (`count_swap`, on by default).
    pub fn headroom_kib(&self, count_swap: bool) -> u64 {
        let swap = if count_swap {
            self.swap_headroom_kib
        } else {
            0
        };
        self.available_kib + swap
    }

    /// [`Self::headroom_kib`] in percent of the scope's RAM, so that one policy file fits a
    /// board and a desktop; more than 100 % where swap adds to a nearly empty machine.
    pub fn headroom_pct(&self, count_swap: bool) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        self.headroom_kib(count_swap) as f64 * 100.0 / self.total_kib as f64
    }

    pub fn swap_used_kib(&self) -> u64 {
        self.swap_total_kib.saturating_sub(self.swap_free_kib)
    }
}

/// The span the headroom's fall ([`Sample::headroom_fall_kib_s`]) is measured over. Long
/// enough that one allocation burst, or the kernel refilling its per-CPU lists after a kill
/// (a few hundred MiB of MemAvailable for a moment), does not set the rate alone; short
/// enough that a leak that starts is seen within it.
pub const TREND_WINDOW_MS: u64 = 2000;

/// Counters for the thrashing measure: refaults so far, and the file cache now (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refaults {
    pub refault_file: u64,
    pub file_pages: u64,
    /// Anonymous refaults so far (`workingset_refault_anon`, 5.9+): swap-ins of pages
    /// evicted recently. A swap-in storm is thrashing as much as a file cache that re-reads
    /// itself; 0 without swap, where anonymous pages are never evicted, so the measure
    /// without swap is lmkd's unchanged.
    pub refault_anon: u64,
    /// Pages the machine's own reclaim (kswapd, direct, khugepaged) scanned so far
    /// (`/proc/vmstat` pgscan_*): the system scope's, where refaults count only while it
    /// grows (`monitor::thrash::GlobalReclaim`). `None` for a memcg, whose own limit's
    /// reclaim is its thrashing.
    pub global_scan: Option<u64>,
}

impl Refaults {
    /// Refaults of both kinds so far.
    pub fn total(&self) -> u64 {
        self.refault_file + self.refault_anon
    }
}

/// Which PSI line a condition watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiKind {
    /// Some tasks stalled on memory.
    Some,
    /// All non-idle tasks stalled on memory at once.
    Full,
}

impl PsiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PsiKind::Some => "some",
            PsiKind::Full => "full",
        }
    }
}

/// "PSI `kind` stall above `stall_pct` % of the trigger window".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PsiCondition {
    pub kind: PsiKind,
    pub stall_pct: f64,
}

/// When a PSI trigger last fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiFired {
    pub condition: PsiCondition,
    /// The window the kernel accepted for this trigger.
    pub window_ms: u64,
    pub last_fired_ms: Option<u64>,
    /// The first firing of the current run: firings at most 1.5 windows apart (the kernel
    /// re-fires once per window while the stall goes on).
    pub streak_since_ms: Option<u64>,
    /// Stall measured from the run's first firing to its last (the growth of the pressure
    /// file's `total`), ms: whether the stall really went on between the firings, rather
    /// than one burst the kernel reported twice. `None` where it could not be read.
    pub run_stall_ms: Option<u64>,
}

/// What the monitor saw, handed to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Monotonic milliseconds (CLOCK_MONOTONIC), comparable across threads.
    pub at_ms: u64,
    pub mem: MemSnapshot,
    pub psi: Vec<PsiFired>,
    /// When a vmpressure notification last woke us (v1 memcg scopes).
    pub vmpressure_ms: Option<u64>,
    /// File refaults over the thrashing window, in percent of the file cache; `None` when
    /// the policy does not ask or there is no second reading yet.
    pub thrashing_pct: Option<f64>,
    /// When the readings behind `thrashing_pct` start: a measure that began before the last
    /// kill still counts refaults that kill answered.
    pub thrashing_since_ms: u64,
    /// How fast the judged headroom ([`MemSnapshot::headroom_kib`]) fell over the last
    /// trend window, KiB/s (negative: it grew); `None` before two readings a while apart.
    pub headroom_fall_kib_s: Option<f64>,
    /// When swap was last seen absorbing a growing job (`policy::decide::swap_absorbing`):
    /// a level that leaves such a stall to the swap counts only stall measured after it.
    pub swap_absorbing_ms: Option<u64>,
}
