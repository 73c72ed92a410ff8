//! What the pipeline remembers of the apps it froze, and when each is thawed — pure: the
//! ledger holds a [`Frozen`], the conductor asks [`thaw_reason`] with what it read of each
//! app's processes and thaws what it names. Also the last compaction of each process
//! (the gates' memory) and the apps found not freezable lately.

use std::collections::HashMap;

use serde::Serialize;

use super::Froze;
use super::gates::Compaction;
use crate::pipeline::outcome::Thawed;
use crate::pipeline::pin::Target;

/// How long an app found not freezable (it shares its cgroup with a protected process) is
/// passed over by freeze levels: long enough not to re-read its cgroup at every sample.
pub const REFUSED_FOR_MS: u64 = 60_000;
/// Compactions remembered this long after they happened: the delta gate compares with
/// the last one, and apps frozen again within minutes are the ones it saves work on.
const COMPACTIONS_KEPT_MS: u64 = 30 * 60_000;

/// Why an app was thawed. The strings are a metric label: never rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Thaw {
    /// No freeze level (nor a more severe one) held for the level's `thaw_after_ms`.
    PressureGone,
    /// One of its processes was given an adj below the level's floor (an app manager
    /// brought it to the foreground).
    AdjImproved,
    /// Every process of it exited (or was killed).
    Exited,
    /// The policy in force has no freeze level any more.
    NoFreezeLevel,
    /// lowmemd is stopping.
    Shutdown,
}

impl Thaw {
    pub const ALL: [Thaw; 5] = [
        Thaw::PressureGone,
        Thaw::AdjImproved,
        Thaw::Exited,
        Thaw::NoFreezeLevel,
        Thaw::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Thaw::PressureGone => "pressure_gone",
            Thaw::AdjImproved => "adj_improved",
            Thaw::Exited => "exited",
            Thaw::NoFreezeLevel => "no_freeze_level",
            Thaw::Shutdown => "shutdown",
        }
    }
}

/// One app lowmemd froze.
#[derive(Debug)]
pub struct FrozenApp {
    /// Its cgroup in the unified hierarchy (`pid N` for a process stopped alone).
    pub cgroup: String,
    /// Stopped alone by SIGSTOP (`freeze_lone_process = "sigstop"`), not its cgroup frozen.
    pub stopped: bool,
    /// The level that froze it, and that level's floor.
    pub level: String,
    pub floor: i16,
    pub since_ms: u64,
    pub since_wall_ms: u64,
    /// Its processes when it was frozen, pinned.
    pub members: Vec<Target>,
    /// What its compaction returned (resident memory saved minus zram's growth).
    pub freed_kib: u64,
}

impl FrozenApp {
    /// What the observer is told of its thaw at `now`.
    pub fn thawed(&self, reason: Thaw, now: u64) -> Thawed<'_> {
        Thawed {
            cgroup: &self.cgroup,
            level: &self.level,
            reason,
            frozen_for_ms: now.saturating_sub(self.since_ms),
            freed_kib: self.freed_kib,
            wall_ms: crate::clock::wall_ms(),
        }
    }
}

/// What the ledger knows of freezing.
#[derive(Debug, Default)]
pub struct Frozen {
    apps: Vec<FrozenApp>,
    /// When a freeze level (or a more severe one) last held.
    last_held_ms: Option<u64>,
    compactions: HashMap<(i32, u64), Compaction>,
    /// Incarnations whose app may not be frozen, until when.
    refused: Vec<((i32, u64), u64)>,
}

impl Frozen {
    pub fn apps(&self) -> &[FrozenApp] {
        &self.apps
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// A freeze stage's report at `now`: the app is frozen and its compactions remembered;
    /// a dry run's app (not frozen) is passed over for a while, as if it had been.
    pub fn record(&mut self, f: Froze, now: u64) {
        if f.dry_run {
            self.refuse((f.victim.pid, f.victim.starttime), now + REFUSED_FOR_MS);
            return;
        }
        for (who, c) in f.compactions {
            self.compacted(who, c);
        }
        self.froze(f.app);
    }

    fn froze(&mut self, app: FrozenApp) {
        self.last_held_ms = Some(self.last_held_ms.unwrap_or(0).max(app.since_ms));
        self.apps.push(app);
    }

    /// The app at `i`, thawed: forgotten.
    pub fn thawed(&mut self, i: usize) -> FrozenApp {
        self.apps.remove(i)
    }

    /// A freeze level, or a more severe one, holds at `now`.
    pub fn held(&mut self, now: u64) {
        self.last_held_ms = Some(now);
    }

    pub fn last_held_ms(&self) -> Option<u64> {
        self.last_held_ms
    }

    /// The incarnations a freeze level passes over at `now`: frozen already, or in an app
    /// found not freezable lately.
    pub fn excluded(&mut self, now: u64) -> Vec<(i32, u64)> {
        self.refused.retain(|r| r.1 > now);
        self.apps
            .iter()
            .flat_map(|a| a.members.iter().map(|t| (t.proc.pid, t.proc.starttime)))
            .chain(self.refused.iter().map(|r| r.0))
            .collect()
    }

    /// The app of incarnation `who` may not be frozen: passed over until `until_ms`.
    pub fn refuse(&mut self, who: (i32, u64), until_ms: u64) {
        self.refused.push((who, until_ms));
    }

    pub fn last_compaction(&self, who: (i32, u64)) -> Option<&Compaction> {
        self.compactions.get(&who)
    }

    pub fn compacted(&mut self, who: (i32, u64), c: Compaction) {
        let now = c.at_ms;
        self.compactions.insert(who, c);
        self.compactions
            .retain(|_, old| now.saturating_sub(old.at_ms) < COMPACTIONS_KEPT_MS);
    }
}

/// Whether to thaw `app` at `now`, and why. `alive_adjs`: the adj of each of its processes
/// still there (empty: all exited); `thaw_after_ms`: the policy's freeze levels' longest
/// hysteresis (`None`: no freeze level any more).
pub fn thaw_reason(
    app: &FrozenApp,
    now: u64,
    last_held_ms: Option<u64>,
    thaw_after_ms: Option<u64>,
    alive_adjs: &[i16],
) -> Option<Thaw> {
    if alive_adjs.is_empty() {
        return Some(Thaw::Exited);
    }
    if alive_adjs.iter().any(|&a| a < app.floor) {
        return Some(Thaw::AdjImproved);
    }
    let Some(after) = thaw_after_ms else {
        return Some(Thaw::NoFreezeLevel);
    };
    let quiet_since = last_held_ms.unwrap_or(app.since_ms).max(app.since_ms);
    (now.saturating_sub(quiet_since) >= after).then_some(Thaw::PressureGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(since_ms: u64, floor: i16) -> FrozenApp {
        FrozenApp {
            cgroup: "/box/app".into(),
            stopped: false,
            level: "moderate".into(),
            floor,
            since_ms,
            since_wall_ms: 0,
            members: Vec::new(),
            freed_kib: 0,
        }
    }

    #[test]
    fn an_app_thaws_only_after_the_pressure_stayed_away_long_enough() {
        let a = app(1_000, 900);
        let thaw = |now, held| thaw_reason(&a, now, held, Some(60_000), &[900, 950]);
        assert_eq!(thaw(30_000, Some(1_000)), None);
        // The level held again at 40 s: the clock starts over.
        assert_eq!(thaw(61_000, Some(40_000)), None);
        assert_eq!(thaw(100_000, Some(40_000)), Some(Thaw::PressureGone));
    }

    #[test]
    fn an_app_brought_forward_or_gone_thaws_at_once() {
        let a = app(1_000, 900);
        assert_eq!(
            thaw_reason(&a, 2_000, Some(2_000), Some(60_000), &[900, 0]),
            Some(Thaw::AdjImproved)
        );
        assert_eq!(
            thaw_reason(&a, 2_000, Some(2_000), Some(60_000), &[]),
            Some(Thaw::Exited)
        );
        assert_eq!(
            thaw_reason(&a, 2_000, Some(2_000), None, &[900]),
            Some(Thaw::NoFreezeLevel)
        );
    }

    #[test]
    fn refused_apps_are_passed_over_for_a_while() {
        let mut f = Frozen::default();
        f.refuse((7, 70), 5_000);
        assert_eq!(f.excluded(4_999), [(7, 70)]);
        assert!(f.excluded(5_000).is_empty());
    }
}
