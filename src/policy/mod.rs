//! What lowmemd should do at which pressure: levels with conditions and an action, and rules
//! that change a process's standing.
//!
//! A policy file goes raw (`raw.rs`: the spanned TOML as written) → validated and compiled
//! (`validate.rs`: every problem with file:line:column, or this type) → used by the pure
//! decision (`decide.rs`) and ranking (`pipeline/rank.rs`). The built-in policy is
//! `policies/default.toml`, compiled into the binary.

pub mod decide;
pub mod explain;
pub mod facts;
pub mod hooks;
pub mod limits;
pub mod raw;
pub mod rules;
pub mod store;
pub mod validate;

use std::path::Path;

use serde::Serialize;

pub use crate::sample::{PsiCondition, PsiKind};
pub use facts::{Facts, Watermark};
pub use hooks::{Hook, HookOn};
pub use limits::{FreezeLimits, PageoutLimits};
pub use raw::Problem;
pub use rules::{Effect, Matcher, Rule};

/// The built-in policy's text (a bare `lowmemd` runs on it).
pub const DEFAULT_TOML: &str = include_str!("../../policies/default.toml");

/// Why a level fired. The strings are a public interface (event log, logs, metrics labels):
/// never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The available-memory condition of any level but the most severe.
    LowMemory,
    /// The available-memory condition of the most severe level.
    CriticalMemory,
    PsiSome,
    PsiFull,
    LowSwap,
    Thrashing,
    PressureAfterKill,
    /// Free memory and the file cache both below an lmkd client's minfree (LMK_TARGET).
    Minfree,
    /// Little headroom left and, at the fall just measured, gone within the level's
    /// `exhausted_within_ms`: a runaway, not a large job that has stopped growing.
    Exhaustion,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::LowMemory,
        Reason::CriticalMemory,
        Reason::PsiSome,
        Reason::PsiFull,
        Reason::LowSwap,
        Reason::Thrashing,
        Reason::PressureAfterKill,
        Reason::Minfree,
        Reason::Exhaustion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LowMemory => "low_memory",
            Reason::CriticalMemory => "critical_memory",
            Reason::PsiSome => "psi_some",
            Reason::PsiFull => "psi_full",
            Reason::LowSwap => "low_swap",
            Reason::Thrashing => "thrashing",
            Reason::PressureAfterKill => "pressure_after_kill",
            Reason::Minfree => "minfree",
            Reason::Exhaustion => "exhaustion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill,
    /// Push the victims' reclaimable pages out with process_madvise(MADV_PAGEOUT).
    Pageout,
    /// Freeze the victim's app (its own cgroup, with the cgroup v2 freezer), page its
    /// memory out under Android's gates, and thaw it when memory returns.
    Freeze,
    /// Watch and log only.
    None,
}

impl Action {
    /// Page-out and freeze choose what goes to swap, and never end a process.
    pub fn is_gentle(self) -> bool {
        matches!(self, Action::Pageout | Action::Freeze)
    }
}

/// What a kill level's action is aimed at: the victim alone, or the victim's leaf cgroup
/// (its app, on a systemd desktop) when that cgroup may be killed whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillMode {
    #[default]
    Process,
    Cgroup,
}

/// How candidates of one adj band are ordered: each process by its own size (today's
/// order), or grouped by what owns them, owners by what their candidates hold together.
/// Adj still comes first: an owner's processes in another band never count here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum RankBy {
    #[default]
    Process,
    /// By cgroup in the unified hierarchy: the one `depth` components below the scope, or
    /// (`None`) the app's own, found by its name (`app-*.scope`, `*.service`, a Kubernetes
    /// pod, a Docker container; else the leaf).
    Cgroup { depth: Option<u8> },
    /// By the owning uid.
    Uid,
}

impl RankBy {
    /// Whether candidates are grouped at all.
    pub fn by_owner(self) -> bool {
        self != RankBy::Process
    }
}

/// Which processes may be victims at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidates {
    /// Every process in scope (the rules and floors still apply).
    #[default]
    All,
    /// Only processes a client registered over the lmkd socket, as lmkd does.
    Registered,
}

/// How a level's conditions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    Any,
    All,
}

/// The conditions of one level; `None` means "not part of this level".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conditions {
    /// Available memory below this percent of the scope's total. "Available" is the judged
    /// headroom: RAM, plus what swap can still take unless the policy says `count_swap =
    /// false` ([`crate::sample::MemSnapshot::headroom_kib`]).
    pub available_below_pct: Option<f64>,
    /// Available memory below this many KiB (holds together with the percent: either fires).
    pub available_below_kib: Option<u64>,
    /// The available-memory condition holds only while the headroom, falling as fast as it
    /// fell over the last trend window, would be gone within this long: what tells a
    /// runaway from a large job that has stopped growing (`None`: the watermark alone).
    pub exhausted_within_ms: Option<u64>,
    /// Whether the PSI conditions count while swap is absorbing a growing job (the headroom
    /// falls and swap still has room): that stall is the kernel moving pages out, which it
    /// can finish; the watermarks and the trend still see a runaway. `false` on the shipped
    /// policies' adj-0 levels; `true` (today's meaning) unless a policy says otherwise.
    pub psi_while_swapping_out: bool,
    /// PSI stall above a share of the trigger window.
    pub psi_some: Option<PsiCondition>,
    pub psi_full: Option<PsiCondition>,
    /// The PSI condition counts only once its trigger has kept firing, window after window,
    /// this long: a stall that goes on, not a burst (`None`: one firing is enough).
    pub psi_some_for_ms: Option<u64>,
    pub psi_full_for_ms: Option<u64>,
    /// Free swap below this percent of swap (zram-aware); never holds without swap.
    pub swap_free_below_pct: Option<f64>,
    /// File refaults over the thrashing window above this percent of the file cache.
    pub thrashing_above_pct: Option<f64>,
    /// The last kill ended less than this long ago and a PSI trigger fired since.
    pub pressure_after_kill_ms: Option<u64>,
    /// Free memory and the file cache both below this (lmkd's minfree; only in levels made
    /// from an lmkd client's LMK_TARGET, not a policy key).
    pub free_and_file_below_kib: Option<u64>,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            available_below_pct: None,
            available_below_kib: None,
            exhausted_within_ms: None,
            psi_while_swapping_out: true,
            psi_some: None,
            psi_full: None,
            psi_some_for_ms: None,
            psi_full_for_ms: None,
            swap_free_below_pct: None,
            thrashing_above_pct: None,
            pressure_after_kill_ms: None,
            free_and_file_below_kib: None,
        }
    }
}

/// One level of pressure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub name: String,
    pub action: Action,
    /// The lowest effective `oom_score_adj` this level may kill.
    pub min_adj: i16,
    /// At most this many victims, one after another, per decision.
    pub max_victims: u32,
    /// How long to wait for a victim's exit before moving on.
    pub wait_ms: u64,
    /// No new action of this level until this long after the previous action ended.
    pub cooldown_ms: u64,
    pub combine: Combine,
    pub conditions: Conditions,
    /// For `action = "pageout"` levels, and a freeze level's compaction.
    pub pageout: PageoutLimits,
    /// For `action = "freeze"` levels.
    pub freeze: FreezeLimits,
    /// For `action = "kill"` levels: the process, or its whole leaf cgroup.
    pub kill: KillMode,
    /// How this level orders the candidates of one adj band.
    pub rank_by: RankBy,
    /// The lmkd client (its pid) whose LMK_TARGET table made this level; `None` for the
    /// policy file's own levels.
    pub from_client: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// A cgroup path to protect (`None`: the whole system). `--cgroup` overrides it.
    pub scope: Option<String>,
    /// The PSI trigger window asked for; the monitor may have to widen it (see monitor::psi).
    pub psi_window_ms: u64,
    /// The window over which file refaults are counted for thrashing.
    pub thrashing_window_ms: u64,
    /// Most severe first: the first level that fires decides.
    pub levels: Vec<Level>,
    /// First match wins.
    pub rules: Vec<Rule>,
    /// On kernels without pidfds (< 5.3), kill by pid after a starttime re-check. Off by
    /// default: without a pidfd a recycled pid can be hit in the gap.
    pub allow_pid_kill: bool,
    /// `candidates = "registered"`: only processes registered over the lmkd socket.
    pub candidates: Candidates,
    /// The top-level `rank_by`: what levels without one of their own (and an lmkd client's
    /// minfree levels) rank by.
    pub rank_by: RankBy,
    /// Whether memory conditions count what swap can still take as headroom (the default):
    /// zram and disk swap exist so that a machine holds more than its RAM.
    pub count_swap: bool,
    /// On a cgroup-v2 memcg scope whose `memory.high` is `max`: set it at the first
    /// watermark's RAM bound while usage is below it, so that the kernel wakes the monitor
    /// (monitor::tripwire). Never on a cgroup kubelet manages, nor over anyone's value.
    pub memory_high_tripwire: bool,
    /// Programs run after actions, in file order.
    pub hooks: Vec<Hook>,
    /// Valid but probably not meant (a rule that lets any process take a protection), in
    /// file order: `lowmemd check` prints them.
    #[serde(skip)]
    pub warnings: Vec<raw::Problem>,
    /// What the rules take, worked out once when the policy is compiled.
    #[serde(skip)]
    pub facts: Facts,
}

impl Default for Policy {
    /// The built-in policy: `policies/default.toml` as compiled into the binary.
    fn default() -> Self {
        validate::compile(Path::new("<built-in default.toml>"), DEFAULT_TOML)
            .expect("the built-in policy is validated by the tests")
    }
}

impl Policy {
    /// Every distinct PSI condition of every level: one kernel trigger each.
    pub fn psi_conditions(&self) -> Vec<PsiCondition> {
        let mut all: Vec<PsiCondition> = Vec::new();
        for l in &self.levels {
            for c in [l.conditions.psi_some, l.conditions.psi_full]
                .into_iter()
                .flatten()
            {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        all
    }

    /// Whether `level`'s memory conditions count swap headroom: where the policy says so,
    /// except on page-out and freeze levels. Page-out is how lowmemd chooses what goes to swap
    /// (background processes, before the kernel's LRU picks the user's): it must act while
    /// RAM runs short, not only once swap is nearly full too.
    pub fn counts_swap(&self, level: &Level) -> bool {
        self.count_swap && !level.action.is_gentle()
    }

    /// The watermarks (percent of the scope) the monitor polls against, highest first.
    /// Absolute `_kib` watermarks are converted with the scope's total.
    pub fn watermarks(&self, total_kib: u64) -> Vec<Watermark> {
        let mut w: Vec<Watermark> = Vec::new();
        for l in &self.levels {
            let counts_swap = self.counts_swap(l);
            let mark = |pct| Watermark { pct, counts_swap };
            w.extend(l.conditions.available_below_pct.map(mark));
            if let Some(kib) = l.conditions.available_below_kib
                && total_kib > 0
            {
                w.push(mark(kib as f64 * 100.0 / total_kib as f64));
            }
            // Free and file cache both below M means available below about 2 M (a memcg's
            // available is at most free + inactive file): watch from there, in RAM.
            if let Some(kib) = l.conditions.free_and_file_below_kib
                && total_kib > 0
            {
                w.push(Watermark {
                    pct: (2 * kib) as f64 * 100.0 / total_kib as f64,
                    counts_swap: false,
                });
            }
        }
        w.sort_by(|a, b| b.pct.total_cmp(&a.pct));
        w
    }

    /// This policy with an lmkd client's minfree table in force alongside its own levels
    /// (replacing any earlier table): one kill level per (minfree KiB, adj) pair, named
    /// `minfree_1`... in ascending minfree order, as lmkd reads its table. An adj below the
    /// lowest `min_adj` of the policy's kill levels is raised to it.
    pub fn with_minfree(&self, client_pid: i32, targets: &[(u64, i16)]) -> Policy {
        let mut p = self.clone();
        p.levels.retain(|l| l.from_client.is_none());
        // A client may not reach below what the policy's own kill levels may kill: the
        // socket's group can drive kills, not widen them to system daemons.
        let floor = p
            .levels
            .iter()
            .filter(|l| l.action == Action::Kill)
            .map(|l| l.min_adj)
            .min()
            .unwrap_or(0);
        let mut sorted = targets.to_vec();
        sorted.sort_by_key(|t| t.0);
        for (i, (kib, adj)) in sorted.into_iter().enumerate() {
            p.levels.push(Level {
                name: format!("minfree_{}", i + 1),
                action: Action::Kill,
                min_adj: adj.max(floor),
                max_victims: 1,
                wait_ms: 1000,
                // Free memory reads low for a moment after a kill (per-CPU page lists).
                cooldown_ms: 100,
                combine: Combine::Any,
                conditions: Conditions {
                    free_and_file_below_kib: Some(kib),
                    ..Default::default()
                },
                pageout: PageoutLimits::default(),
                freeze: FreezeLimits::default(),
                kill: KillMode::Process,
                rank_by: p.rank_by,
                from_client: Some(client_pid),
            });
        }
        p
    }

    /// The minfree levels of `other` (an lmkd client's table) carried over into this policy:
    /// a reload of the file keeps the table in force.
    pub fn keeping_minfree_of(mut self, other: &Policy) -> Policy {
        self.levels.extend(
            other
                .levels
                .iter()
                .filter(|l| l.from_client.is_some())
                .cloned(),
        );
        self
    }

    /// What ranking by owner needs read of every process in scope: its cgroup or its uid,
    /// where any level ranks by them. Asked for the whole policy, not per level, so the
    /// process cache reads each once per process rather than again whenever the deciding
    /// level changes.
    pub fn owner_needs(&self) -> crate::procs::Needs {
        let by = |want: fn(RankBy) -> bool| {
            want(self.rank_by) || self.levels.iter().any(|l| want(l.rank_by))
        };
        crate::procs::Needs {
            unified_cgroup: by(|r| matches!(r, RankBy::Cgroup { .. })),
            real_uid: by(|r| r == RankBy::Uid),
            ..Default::default()
        }
    }

    /// The freeze levels' longest hysteresis, if any level freezes.
    pub fn thaw_after_ms(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter(|l| l.action == Action::Freeze)
            .map(|l| l.freeze.thaw_after_ms)
            .max()
    }

    pub fn needs_thrashing(&self) -> bool {
        self.levels
            .iter()
            .any(|l| l.conditions.thrashing_above_pct.is_some())
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        self.levels
            .iter()
            .map(explain::level_short)
            .collect::<Vec<_>>()
            .join("; ")
    }
}
