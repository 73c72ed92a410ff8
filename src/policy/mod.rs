//! What lowmemd should do at which pressure: levels with conditions and an action.
//!
//! For now the policy is compiled in ([`Policy::default`]); policy files replace it later
//! (raw TOML → validated → this type), so this type is already what a file will compile to.

pub mod decide;

use serde::Serialize;

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

/// Why a level fired. The strings are a public interface (event log, logs, metrics labels):
/// never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    LowMemory,
    CriticalMemory,
    PsiSome,
    PsiFull,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LowMemory => "low_memory",
            Reason::CriticalMemory => "critical_memory",
            Reason::PsiSome => "psi_some",
            Reason::PsiFull => "psi_full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill,
    /// Watch and log only.
    None,
}

/// One level of pressure. A level fires when any of its conditions holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub name: String,
    /// Fires when the scope's available memory is below this percent of its total.
    pub available_below_pct: Option<f64>,
    /// The reason named when the memory condition fires.
    pub memory_reason: Reason,
    /// Fires when one of these PSI triggers fired within its window, after the last action.
    pub psi: Vec<PsiCondition>,
    pub action: Action,
    /// The lowest `oom_score_adj` this level may kill.
    pub min_adj: i16,
    /// How long to wait for a victim's exit before moving on.
    pub wait_ms: u64,
    /// No new action of this level until this long after the previous action ended.
    pub cooldown_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Most severe first: the first level that fires decides.
    pub levels: Vec<Level>,
    /// The PSI trigger window asked for; the monitor may have to widen it (see monitor::psi).
    pub psi_window_ms: u64,
}

impl Default for Policy {
    /// The built-in policy, in percent of the scope so it fits a 256 MiB board and a 64 GiB
    /// desktop alike.
    ///
    /// - `critical` (< 5 % available, or a full stall of half the window): kill adj ≥ 0. At
    ///   100 MiB/s, 5 % of a 256 MiB memcg is ~128 ms of headroom, enough for the ≤10 ms polling
    ///   near this threshold plus a ~20 ms kill.
    /// - `low` (< 15 % available, or tasks stalled 10 % of the window, lmkd's "some" trigger
    ///   scaled to our 2 s window): kill cached/background processes only (adj ≥ 900).
    fn default() -> Self {
        Policy {
            psi_window_ms: 1000,
            levels: vec![
                Level {
                    name: "critical".into(),
                    available_below_pct: Some(5.0),
                    memory_reason: Reason::CriticalMemory,
                    psi: vec![PsiCondition {
                        kind: PsiKind::Full,
                        stall_pct: 50.0,
                    }],
                    action: Action::Kill,
                    min_adj: 0,
                    wait_ms: 1000,
                    cooldown_ms: 0,
                },
                Level {
                    name: "low".into(),
                    available_below_pct: Some(15.0),
                    memory_reason: Reason::LowMemory,
                    psi: vec![PsiCondition {
                        kind: PsiKind::Some,
                        stall_pct: 10.0,
                    }],
                    action: Action::Kill,
                    min_adj: 900,
                    wait_ms: 1000,
                    cooldown_ms: 100,
                },
            ],
        }
    }
}

impl Policy {
    /// Every distinct PSI condition of every level: one kernel trigger each.
    pub fn psi_conditions(&self) -> Vec<PsiCondition> {
        let mut all: Vec<PsiCondition> = Vec::new();
        for c in self.levels.iter().flat_map(|l| &l.psi) {
            if !all.contains(c) {
                all.push(*c);
            }
        }
        all
    }

    /// The watermarks the monitor polls against, highest first.
    pub fn watermarks_pct(&self) -> Vec<f64> {
        let mut w: Vec<f64> = self
            .levels
            .iter()
            .filter_map(|l| l.available_below_pct)
            .collect();
        w.sort_by(|a, b| b.total_cmp(a));
        w
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        self.levels
            .iter()
            .map(|l| {
                let mut conds = Vec::new();
                if let Some(p) = l.available_below_pct {
                    conds.push(format!("available<{p}%"));
                }
                for c in &l.psi {
                    conds.push(format!("psi_{}>{}%", c.kind.as_str(), c.stall_pct));
                }
                format!(
                    "{}: {} adj>={} when {}",
                    l.name,
                    match l.action {
                        Action::Kill => "kill",
                        Action::None => "log",
                    },
                    l.min_adj,
                    conds.join(" or ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
