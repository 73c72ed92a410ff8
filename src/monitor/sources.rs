//! The kernel's event sources: PSI triggers (one per distinct condition of the policy),
//! on a cgroup-v1 memcg scope vmpressure eventfds and usage thresholds, on a cgroup-v2
//! memcg scope the `memory.high` tripwire. They wake the monitor; this keeps them in line
//! with the policy, notes what fired, and drops what broke.

use std::path::Path;

use rustix::event::{PollFd, PollFlags};

use super::outlets::{Outlets, Source};
use super::psi::PsiTrigger;
use super::threshold::{UsageThreshold, usages_for};
use super::tripwire::{Tripwire, Unavailable};
use super::vmpressure::{LEVELS, VmPressure};
use crate::policy::Policy;
use crate::sample::{PsiCondition, PsiFired, PsiKind};
use crate::scope::Scope;

/// A registered PSI trigger and when it last fired.
struct Armed {
    trigger: PsiTrigger,
    fired_ms: Option<u64>,
    /// When the current run of firings began (see [`PsiFired::streak_since_ms`]).
    streak_since_ms: Option<u64>,
    /// The pressure file's stall total (µs) at the run's first firing, and the stall since.
    run_total_us: Option<u64>,
    run_stall_ms: Option<u64>,
}

pub struct Sources {
    psi: Vec<Armed>,
    vmpressure: Vec<VmPressure>,
    /// Usage thresholds below each watermark (v1 memcg scopes), lowest first.
    thresholds: Vec<UsageThreshold>,
    /// The v2 tripwire, where one may be set.
    tripwire: Option<Tripwire>,
    /// Why there is none (`None` before the daemon asked for one).
    no_tripwire: Option<Unavailable>,
    /// When a vmpressure notification last arrived.
    vmpressure_ms: Option<u64>,
    /// False when the kernel has no PSI (or it is pretended away): watermarks only.
    psi_allowed: bool,
}

impl Sources {
    /// The vmpressure registrations of `scope`; PSI triggers come with [`Sources::arm`].
    /// The warnings say what could not be registered.
    pub fn open(scope: &Scope, psi_allowed: bool) -> (Self, Vec<String>) {
        let (vmpressure, warnings) = open_vmpressure(scope);
        let sources = Sources {
            psi: Vec::new(),
            vmpressure,
            thresholds: Vec::new(),
            tripwire: None,
            no_tripwire: None,
            vmpressure_ms: None,
            psi_allowed,
        };
        (sources, warnings)
    }

    /// Brings the PSI triggers in line with `policy`: triggers whose condition is
    /// unchanged stay (re-registering would reset their kernel window).
    pub fn arm(&mut self, scope: &Scope, policy: &Policy) -> Vec<String> {
        let mut warnings = Vec::new();
        let wanted = policy.psi_conditions();
        self.psi.retain(|a| {
            wanted.contains(&a.trigger.condition) && a.trigger.asked_ms == policy.psi_window_ms
        });
        let missing: Vec<PsiCondition> = wanted
            .into_iter()
            .filter(|c| !self.psi.iter().any(|a| a.trigger.condition == *c))
            .collect();
        if missing.is_empty() || !self.psi_allowed {
            // Without PSI the start-up line already said so, once.
            return warnings;
        }
        let Some(path) = scope.psi_path() else {
            warnings.push(
                "no PSI for this scope (kernel < 4.20, psi=0, or no cgroup2 mount): its PSI conditions never fire".to_string(),
            );
            return warnings;
        };
        for cond in missing {
            match PsiTrigger::register(&path, cond, policy.psi_window_ms) {
                Ok(trigger) => self.psi.push(Armed {
                    trigger,
                    fired_ms: None,
                    streak_since_ms: None,
                    run_total_us: None,
                    run_stall_ms: None,
                }),
                Err(e) => warnings.push(format!("PSI trigger disabled: {e}")),
            }
        }
        // Said once, not per trigger: all of them were widened for the same reason.
        if let Some(a) = self
            .psi
            .iter()
            .find(|a| a.trigger.window_ms != policy.psi_window_ms)
        {
            let window = a.trigger.window_ms;
            warnings.push(format!(
                "the kernel refused a {} ms PSI window, using {window} ms (shorter windows need CAP_SYS_RESOURCE)",
                policy.psi_window_ms
            ));
            for l in &policy.levels {
                let c = &l.conditions;
                for (key, ms) in [
                    ("psi_some_for_ms", c.psi_some_for_ms),
                    ("psi_full_for_ms", c.psi_full_for_ms),
                ] {
                    if let Some(ms) = ms.filter(|ms| *ms < window) {
                        warnings.push(format!(
                            "level {}: {key} = {ms} is shorter than the {window} ms window: one firing is enough",
                            l.name
                        ));
                    }
                }
            }
        }
        warnings
    }

    /// Puts usage thresholds below the watermarks of a v1 memcg of `limit_kib` (nothing on
    /// other scopes); unchanged thresholds stay.
    pub fn arm_thresholds(
        &mut self,
        scope: &Scope,
        limit_kib: u64,
        watermarks_pct: &[f64],
    ) -> Vec<String> {
        let Some(dir) = scope.vmpressure_dir() else {
            return Vec::new();
        };
        let wanted = usages_for(limit_kib, watermarks_pct);
        let armed: Vec<u64> = self.thresholds.iter().map(|t| t.usage_kib).collect();
        if wanted == armed {
            return Vec::new();
        }
        self.thresholds.clear();
        for usage_kib in wanted {
            match UsageThreshold::register(dir, usage_kib) {
                Ok(t) => self.thresholds.push(t),
                Err(e) => {
                    // All or none: a missing one would let the monitor sleep past it.
                    self.thresholds.clear();
                    return vec![format!(
                        "usage thresholds disabled ({e}): polling the memcg's memory instead"
                    )];
                }
            }
        }
        Vec::new()
    }

    /// The lowest usage threshold armed: below it, no watermark can be crossed without the
    /// kernel waking the monitor first.
    pub fn lowest_threshold_kib(&self) -> Option<u64> {
        self.thresholds.first().map(|t| t.usage_kib)
    }

    /// Whether a memcg at `usage_kib` is below a usage threshold (v1) or the tripwire (v2):
    /// the kernel wakes the monitor before any watermark can be crossed.
    pub fn kernel_watches(&self, usage_kib: u64) -> bool {
        self.lowest_threshold_kib().is_some_and(|t| usage_kib < t)
            || self
                .tripwire
                .as_ref()
                .is_some_and(|t| t.kernel_watches(usage_kib))
    }

    /// Opens (or, `enabled` false, drops and so lifts) the tripwire of `scope`, recording
    /// in `runtime_dir`; says why there is none.
    pub fn open_tripwire(&mut self, scope: &Scope, enabled: bool, runtime_dir: &Path) {
        if enabled && self.tripwire.is_some() {
            return;
        }
        self.tripwire = None;
        match Tripwire::open(scope, enabled, runtime_dir) {
            Ok(t) => {
                self.tripwire = Some(t);
                self.no_tripwire = None;
            }
            Err(why) => self.no_tripwire = Some(why),
        }
    }

    /// Sets, moves or lifts the tripwire after a reading of a memcg of `limit_kib` at
    /// `usage_kib`; returns what to log.
    pub fn tend_tripwire(&mut self, limit_kib: u64, usage_kib: u64, pcts: &[f64]) -> Vec<String> {
        let Some(t) = &mut self.tripwire else {
            return Vec::new();
        };
        match t.tend(limit_kib, usage_kib, pcts) {
            Ok(said) => said,
            Err(why) => {
                let said =
                    format!("no memory.high tripwire: {why}; polling the memcg's memory instead");
                self.tripwire = None;
                self.no_tripwire = Some(why);
                vec![said]
            }
        }
    }

    /// What lowmemd does to the scope's `memory.high`, for the start-up log.
    pub fn tripwire_state(&self) -> Option<String> {
        if let Some(t) = &self.tripwire {
            return Some(match t.armed_kib() {
                Some(k) => format!(
                    "memory.high tripwire: lowmemd set memory.high to {} MiB (the highest watermark's bound); lifted back to max when crossed and on exit; memory_high_tripwire = false turns it off",
                    k / 1024
                ),
                None => "memory.high tripwire: lifted while usage is above the highest watermark's bound (set again below it); memory_high_tripwire = false turns it off".into(),
            });
        }
        self.no_tripwire
            .as_ref()
            .filter(|w| !matches!(w, Unavailable::NotV2))
            .map(|w| format!("no memory.high tripwire: {w}; polling the memcg's memory instead"))
    }

    /// Registers everything again: after the scope's cgroup was removed and created anew,
    /// the old registrations point at the dead cgroup (vmpressure) or were dropped on
    /// error (PSI).
    pub fn reopen(&mut self, scope: &Scope, policy: &Policy) -> Vec<String> {
        let (vmpressure, mut warnings) = open_vmpressure(scope);
        self.vmpressure = vmpressure;
        self.psi.clear();
        self.thresholds.clear();
        warnings.extend(self.arm(scope, policy));
        warnings
    }

    /// The sources in force, for the start-up line.
    pub fn describe(&self) -> Vec<String> {
        let psi = self.psi.iter().map(|a| {
            format!(
                "psi_{}>{:.0}%/{}ms",
                a.trigger.condition.kind.as_str(),
                a.trigger.condition.stall_pct,
                a.trigger.window_ms
            )
        });
        let vmp = self
            .vmpressure
            .iter()
            .map(|v| format!("vmpressure_{}", v.level));
        let thresholds = (!self.thresholds.is_empty())
            .then(|| format!("usage_thresholds({})", self.thresholds.len()));
        let tripwire = self.tripwire.as_ref().map(|t| t.describe());
        psi.chain(vmp).chain(thresholds).chain(tripwire).collect()
    }

    /// The fds to poll: the PSI triggers' (POLLPRI), the vmpressure eventfds', the usage
    /// thresholds', then the tripwire's inotify watch.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(
            self.psi
                .iter()
                .map(|a| PollFd::new(&a.trigger, PollFlags::PRI)),
        );
        fds.extend(
            self.vmpressure
                .iter()
                .map(|v| PollFd::new(v, PollFlags::IN)),
        );
        fds.extend(
            self.thresholds
                .iter()
                .map(|t| PollFd::new(t, PollFlags::IN)),
        );
        fds.extend(self.tripwire.iter().map(|t| PollFd::new(t, PollFlags::IN)));
    }

    /// Takes note of the events in `revents` (in [`Sources::poll_fds`] order); returns
    /// whether a pressure event (PSI, vmpressure) arrived. A usage threshold only wakes the
    /// monitor to look. A trigger whose fd reports an error is dropped. `stall_totals`
    /// reads the scope's PSI `some` and `full` totals (µs), once, if a trigger fired.
    pub fn note(
        &mut self,
        revents: &[PollFlags],
        now: u64,
        outlets: &Outlets,
        stall_totals: &dyn Fn() -> Option<(u64, u64)>,
    ) -> bool {
        let (psi_revents, rest) = revents.split_at(self.psi.len());
        let (vmp_revents, rest) = rest.split_at(self.vmpressure.len());
        let (threshold_revents, tripwire_revents) = rest.split_at(self.thresholds.len());
        for (t, rev) in self.thresholds.iter().zip(threshold_revents) {
            if rev.contains(PollFlags::IN) {
                t.drain();
            }
        }
        for (t, rev) in self.tripwire.iter().zip(tripwire_revents) {
            if rev.contains(PollFlags::IN) {
                t.drain();
            }
        }
        let mut any = false;
        let mut dead = Vec::new();
        let mut totals: Option<Option<(u64, u64)>> = None;
        for (i, (a, rev)) in self.psi.iter_mut().zip(psi_revents).enumerate() {
            if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                // The cgroup went away or PSI was switched off: drop this trigger rather
                // than spin on an fd that is always ready.
                dead.push(i);
            } else if rev.contains(PollFlags::PRI) {
                let (prev, since) = (a.fired_ms, a.streak_since_ms);
                let start = run_start(prev, since, a.trigger.window_ms, now);
                let total =
                    (*totals.get_or_insert_with(stall_totals)).map(|(some, full)| {
                        match a.trigger.condition.kind {
                            PsiKind::Some => some,
                            PsiKind::Full => full,
                        }
                    });
                if start == now {
                    a.run_total_us = total;
                }
                a.run_stall_ms = total
                    .zip(a.run_total_us)
                    .map(|(t, at_start)| t.saturating_sub(at_start) / 1000);
                a.streak_since_ms = Some(start);
                a.fired_ms = Some(now);
                any = true;
                outlets.count(a.trigger.condition.kind.into(), 1);
            }
        }
        for (v, rev) in self.vmpressure.iter().zip(vmp_revents) {
            if rev.contains(PollFlags::IN) && v.drain() > 0 {
                self.vmpressure_ms = Some(now);
                any = true;
                outlets.count(Source::Vmpressure, 1);
            }
        }
        for i in dead.into_iter().rev() {
            let a = self.psi.remove(i);
            log::warn!(
                "PSI {} trigger reported an error; watching memory watermarks only for it",
                a.trigger.condition.kind.as_str()
            );
        }
        any
    }

    /// When each PSI trigger last fired, for a sample.
    pub fn fired(&self) -> Vec<PsiFired> {
        self.psi
            .iter()
            .map(|a| PsiFired {
                condition: a.trigger.condition,
                window_ms: a.trigger.window_ms,
                last_fired_ms: a.fired_ms,
                streak_since_ms: a.streak_since_ms,
                run_stall_ms: a.run_stall_ms,
            })
            .collect()
    }

    /// When a vmpressure notification last arrived.
    pub fn vmpressure_ms(&self) -> Option<u64> {
        self.vmpressure_ms
    }
}

/// Where the run of firings that a trigger's firing at `now` belongs to began, given its
/// previous firing and that one's run: the kernel fires once per window while a stall goes
/// on, so a firing within 1.5 windows of the previous one (the kernel's polling may make
/// it late) continues its run; a later one starts a new run.
fn run_start(prev: Option<u64>, since: Option<u64>, window_ms: u64, now: u64) -> u64 {
    match (prev, since) {
        (Some(prev), Some(since)) if now.saturating_sub(prev) <= window_ms * 3 / 2 => since,
        _ => now,
    }
}

/// Registers vmpressure notifications on a v1 memcg scope; the warnings say what failed.
fn open_vmpressure(scope: &Scope) -> (Vec<VmPressure>, Vec<String>) {
    let (mut vmp, mut warnings) = (Vec::new(), Vec::new());
    if let Some(dir) = scope.vmpressure_dir() {
        for level in LEVELS {
            match VmPressure::register(dir, level) {
                Ok(v) => vmp.push(v),
                Err(e) => warnings.push(format!("vmpressure {level} disabled: {e}")),
            }
        }
    }
    (vmp, warnings)
}

#[cfg(test)]
mod tests {
    use super::run_start;

    #[test]
    fn firings_window_after_window_make_one_run() {
        let w = 2000;
        assert_eq!(run_start(None, None, w, 10_000), 10_000);
        // Re-fired a window later, then late by less than a window: the same run.
        assert_eq!(run_start(Some(10_000), Some(10_000), w, 12_000), 10_000);
        assert_eq!(run_start(Some(12_000), Some(10_000), w, 14_900), 10_000);
        // A gap of more than 1.5 windows: the stall had ended; a new run.
        assert_eq!(run_start(Some(15_900), Some(10_000), w, 19_000), 19_000);
    }
}
