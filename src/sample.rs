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
}

impl MemSnapshot {
    pub fn available_pct(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        self.available_kib as f64 * 100.0 / self.total_kib as f64
    }

    pub fn swap_used_kib(&self) -> u64 {
        self.swap_total_kib.saturating_sub(self.swap_free_kib)
    }
}

/// Counters for the thrashing measure: file refaults so far, and the file cache now (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refaults {
    pub refault_file: u64,
    pub file_pages: u64,
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
}
