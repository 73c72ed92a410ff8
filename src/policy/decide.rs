//! The decision: a pure function of one sample, the policy and the time of the last action.
//! No I/O and no clock, so it is tested on literals and benched in isolation.

use std::fmt;

use crate::policy::{Action, Combine, Level, Policy, Reason};
use crate::sample::{PsiFired, Sample};

/// Which condition fired, with what it measured, for logs and the event log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fired {
    pub reason: Reason,
    pub value: f64,
    pub threshold: f64,
    /// For a PSI condition with a duration: how long its stall had gone on.
    pub sustained_ms: Option<u64>,
    /// For a memory condition qualified by `exhausted_within_ms`: how soon the headroom
    /// would be gone at the fall just measured.
    pub exhausted_in_ms: Option<u64>,
}

impl Fired {
    fn new(reason: Reason, value: f64, threshold: f64) -> Self {
        Fired {
            reason,
            value,
            threshold,
            sustained_ms: None,
            exhausted_in_ms: None,
        }
    }
}

impl fmt::Display for Fired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v, t) = (self.value, self.threshold);
        match self.reason {
            Reason::LowMemory | Reason::CriticalMemory | Reason::Exhaustion if t >= 100.0 => {
                write!(f, "available {v:.0} KiB < {t:.0} KiB")?;
                self.fmt_exhaustion(f)
            }
            Reason::LowMemory | Reason::CriticalMemory | Reason::Exhaustion => {
                write!(f, "available {v:.1} % < {t} %")?;
                self.fmt_exhaustion(f)
            }
            Reason::PsiSome | Reason::PsiFull => {
                let kind = if self.reason == Reason::PsiSome {
                    "some"
                } else {
                    "full"
                };
                write!(
                    f,
                    "PSI {kind} trigger ({t:.0} % of the window) fired {v:.0} ms ago"
                )?;
                match self.sustained_ms {
                    Some(ms) => write!(f, ", stalled for {:.1} s", ms as f64 / 1000.0),
                    None => Ok(()),
                }
            }
            Reason::LowSwap => write!(f, "free swap {v:.1} % < {t} %"),
            Reason::Thrashing => write!(f, "file refaults {v:.1} % > {t} % of the file cache"),
            Reason::Minfree => write!(
                f,
                "free memory and file cache both below the lmkd minfree {:.0} KiB (the larger {v:.0} KiB)",
                t
            ),
            Reason::PressureAfterKill => {
                write!(
                    f,
                    "PSI fired again {v:.0} ms after the last kill (< {t:.0} ms)"
                )
            }
        }
    }
}

impl Fired {
    fn fmt_exhaustion(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exhausted_in_ms {
            Some(ms) => write!(
                f,
                ", gone in {:.1} s at the fall just measured",
                ms as f64 / 1000.0
            ),
            None => Ok(()),
        }
    }
}

/// Swap is absorbing a growing job: the judged headroom falls (faster than 0.2 % of the
/// scope per second) while swap still has room (5 % of the scope or more). A stall then is
/// the kernel moving pages out, which it can finish — a job that fits stops and the stall
/// with it; a runaway meets the watermarks and the trend.
pub fn swap_absorbing(mem: &crate::sample::MemSnapshot, fall_kib_s: Option<f64>) -> bool {
    let total = mem.total_kib as f64;
    mem.swap_headroom_kib as f64 >= total * 0.05 && fall_kib_s.is_some_and(|f| f > total * 0.002)
}

/// How soon `headroom_kib` is gone at `fall_kib_s`, if within `within_ms`: a headroom that
/// does not fall (a job that stopped growing) is never exhausted.
pub fn exhausted_in_ms(headroom_kib: u64, fall_kib_s: Option<f64>, within_ms: u64) -> Option<u64> {
    let fall = fall_kib_s.filter(|f| *f > 0.0)?;
    let ms = headroom_kib as f64 * 1000.0 / fall;
    (ms < within_ms as f64).then_some(ms as u64)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into `Policy::levels` (0 = most severe).
    pub level: usize,
    pub reason: Reason,
    pub fired: Fired,
}

impl Decision {
    pub fn level<'p>(&self, policy: &'p Policy) -> &'p Level {
        &policy.levels[self.level]
    }

    /// Whether this decision's level is more severe than `other`'s: among the file's levels,
    /// an earlier one; with an lmkd client's minfree level on either side (they come after
    /// the file's, whatever their adj), the one that reaches the lower adj.
    pub fn more_severe_than(&self, other: &Decision, policy: &Policy) -> bool {
        let (a, b) = (self.level(policy), other.level(policy));
        if a.from_client.is_none() && b.from_client.is_none() {
            self.level < other.level
        } else {
            a.min_adj < b.min_adj
        }
    }
}

/// A sample with the decision the monitor took on it (`None`: no level holds): what the
/// pipeline acts on, re-checking the decision once on fresh memory right before it acts.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub sample: Sample,
    pub decision: Option<Decision>,
}

/// How long before `sample` the trigger `fired`, if that event still counts: after the last
/// action ended (a stall the last kill already answered must not cause a second kill) and
/// within one window of the sample (the kernel re-fires at most once per window while the
/// stall goes on).
fn psi_fresh(sample: &Sample, fired: &PsiFired, last_action_ms: Option<u64>) -> Option<u64> {
    let at = fired.last_fired_ms?;
    let fresh =
        last_action_ms.is_none_or(|t| at > t) && sample.at_ms.saturating_sub(at) <= fired.window_ms;
    fresh.then(|| sample.at_ms.saturating_sub(at))
}

/// How long the stall behind the trigger's current run of firings has gone on, if at least
/// `for_ms`: from one window before the run's first firing (that firing measured the window
/// before it) to its last, provided the stall measured between those firings kept the
/// trigger's share on average — one burst the kernel reports twice is not a stall that goes
/// on. Only what came after the last kill counts: the run is taken to start one window
/// after it, when the first firing that measured nothing but new stall can arrive. (A
/// page-out does not restart it: it answers no stall.)
fn psi_sustained_ms(fired: &PsiFired, for_ms: u64, last_kill_ms: Option<u64>) -> Option<u64> {
    let cond = &fired.condition;
    let (last, first) = (fired.last_fired_ms?, fired.streak_since_ms?);
    let since = last_kill_ms.map_or(first, |t| first.max(t + fired.window_ms));
    let held = (last + fired.window_ms).checked_sub(since)?;
    let run = last.saturating_sub(first);
    let went_on = run == 0
        || fired
            .run_stall_ms
            .is_some_and(|s| s as f64 >= cond.stall_pct / 100.0 * run as f64);
    (held >= for_ms && went_on).then_some(held)
}

/// When the pipeline last acted and last killed (monotonic ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastActions {
    /// The end of the last action of any kind (cooldowns, PSI events counted once).
    pub action_ms: Option<u64>,
    /// The end of the last kill (pressure after a kill, stalls a kill answered).
    pub kill_ms: Option<u64>,
}

impl LastActions {
    /// Nothing done yet.
    pub const NONE: LastActions = LastActions {
        action_ms: None,
        kill_ms: None,
    };

    /// A kill (or nothing) last: both at `ms`.
    pub fn kill(ms: Option<u64>) -> Self {
        LastActions {
            action_ms: ms,
            kill_ms: ms,
        }
    }
}

/// The conditions of `level` that hold, in a fixed order (memory first), and how many the
/// level has.
fn evaluate(
    level: &Level,
    most_severe: bool,
    count_swap: bool,
    sample: &Sample,
    last: LastActions,
) -> (Vec<Fired>, usize) {
    let last_action_ms = last.action_ms;
    let c = &level.conditions;
    let mem = &sample.mem;
    let headroom_kib = mem.headroom_kib(count_swap);
    // A watermark qualified by a trend holds only while the headroom would be gone soon.
    let trend = |mut hit: Fired| match c.exhausted_within_ms {
        None => Some(hit),
        Some(within) => {
            let ms = exhausted_in_ms(headroom_kib, sample.headroom_fall_kib_s, within)?;
            hit.reason = Reason::Exhaustion;
            hit.exhausted_in_ms = Some(ms);
            Some(hit)
        }
    };
    let memory_reason = if most_severe {
        Reason::CriticalMemory
    } else {
        Reason::LowMemory
    };
    let mut fired = Vec::new();
    let mut present = 0;
    let mut check = |cond: Option<Fired>, present_here: bool| {
        present += usize::from(present_here);
        fired.extend(cond);
    };
    let avail_pct = mem.headroom_pct(count_swap);
    check(
        c.available_below_pct
            .filter(|w| avail_pct < *w)
            .and_then(|w| trend(Fired::new(memory_reason, avail_pct, w))),
        c.available_below_pct.is_some(),
    );
    check(
        c.available_below_kib
            .filter(|k| headroom_kib < *k)
            .and_then(|k| trend(Fired::new(memory_reason, headroom_kib as f64, k as f64))),
        c.available_below_kib.is_some(),
    );
    let psi = [
        (c.psi_full, c.psi_full_for_ms, Reason::PsiFull),
        (c.psi_some, c.psi_some_for_ms, Reason::PsiSome),
    ];
    // A level may leave a stall to the swap that is absorbing it (see `swap_absorbing`):
    // not while it does, and afterwards only stall measured after it stopped, as after a
    // kill (a run of firings that began while swap absorbed does not count its start).
    let leaves_to_swap = !c.psi_while_swapping_out && count_swap;
    let psi_counts = !leaves_to_swap || !swap_absorbing(mem, sample.headroom_fall_kib_s);
    let reset_ms = match sample.swap_absorbing_ms.filter(|_| leaves_to_swap) {
        Some(a) => Some(last.kill_ms.map_or(a, |k| k.max(a))),
        None => last.kill_ms,
    };
    for (cond, for_ms, reason) in psi {
        let hit = cond.filter(|_| psi_counts).and_then(|cond| {
            let fired = sample.psi.iter().find(|p| p.condition == cond)?;
            let ago = psi_fresh(sample, fired, last_action_ms)?;
            // A single firing measured its window: it must lie wholly after the absorbing.
            let after_absorbing = match (sample.swap_absorbing_ms, fired.last_fired_ms) {
                (Some(a), Some(at)) if leaves_to_swap => at >= a + fired.window_ms,
                _ => true,
            };
            if !after_absorbing {
                return None;
            }
            let mut hit = Fired::new(reason, ago as f64, cond.stall_pct);
            if let Some(for_ms) = for_ms {
                hit.sustained_ms = Some(psi_sustained_ms(fired, for_ms, reset_ms)?);
            }
            Some(hit)
        });
        check(hit, cond.is_some());
    }
    let swap_pct = (mem.swap_total_kib > 0)
        .then(|| mem.swap_free_kib as f64 * 100.0 / mem.swap_total_kib as f64);
    check(
        c.swap_free_below_pct.and_then(|w| {
            swap_pct
                .filter(|p| *p < w)
                .map(|p| Fired::new(Reason::LowSwap, p, w))
        }),
        c.swap_free_below_pct.is_some(),
    );
    // Only refaults measured after the last action count: the ones before it were answered.
    let thrash_fresh = last_action_ms.is_none_or(|t| sample.thrashing_since_ms >= t);
    check(
        c.thrashing_above_pct.and_then(|w| {
            sample
                .thrashing_pct
                .filter(|t| thrash_fresh && *t > w)
                .map(|t| Fired::new(Reason::Thrashing, t, w))
        }),
        c.thrashing_above_pct.is_some(),
    );
    check(
        c.pressure_after_kill_ms.and_then(|within| {
            let last = last.kill_ms?;
            let since = sample.at_ms.checked_sub(last)?;
            let psi_again = sample
                .psi
                .iter()
                .any(|p| p.last_fired_ms.is_some_and(|t| t > last));
            (since < within && psi_again).then_some(Fired::new(
                Reason::PressureAfterKill,
                since as f64,
                within as f64,
            ))
        }),
        c.pressure_after_kill_ms.is_some(),
    );
    check(
        c.free_and_file_below_kib.and_then(|m| {
            let larger = mem.free_kib.max(mem.file_kib);
            (larger < m).then(|| Fired::new(Reason::Minfree, larger as f64, m as f64))
        }),
        c.free_and_file_below_kib.is_some(),
    );
    (fired, present)
}

/// The most severe level whose conditions hold in `sample` (any or all of them, as the
/// level says), unless that level acts and is still cooling down from the action that ended
/// at `last.action_ms`.
///
/// An lmkd client's minfree levels (after the file's own) apply alongside: when one of them
/// holds too, the one reaching the lower adj decides (the file's level on a tie).
pub fn decide(sample: &Sample, policy: &Policy, last: LastActions) -> Option<Decision> {
    let first_holding = |from_client: bool| {
        policy.levels.iter().enumerate().find_map(|(index, level)| {
            if level.from_client.is_some() != from_client {
                return None;
            }
            let counts_swap = policy.counts_swap(level);
            let (fired, present) = evaluate(level, index == 0, counts_swap, sample, last);
            let holds = match level.combine {
                Combine::Any => !fired.is_empty(),
                Combine::All => present > 0 && fired.len() == present,
            };
            holds.then(|| (index, level, fired[0]))
        })
    };
    let (index, level, fired) = match (first_holding(false), first_holding(true)) {
        (Some(own), Some(client)) if client.1.min_adj < own.1.min_adj => client,
        (Some(own), _) => own,
        (None, client) => client?,
    };
    let cooling = level.action != Action::None
        && last
            .action_ms
            .is_some_and(|t| sample.at_ms < t + level.cooldown_ms);
    (!cooling).then_some(Decision {
        level: index,
        reason: fired.reason,
        fired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Conditions, PsiKind};
    use crate::sample::{MemSnapshot, PsiFired};

    const CRITICAL: usize = 0;
    const LOW: usize = 2;

    pub(crate) fn sample_for(policy: &Policy, at_ms: u64, avail_pct: f64) -> Sample {
        let total = 262_144;
        Sample {
            at_ms,
            mem: MemSnapshot {
                total_kib: total,
                available_kib: (total as f64 * avail_pct / 100.0) as u64,
                swap_total_kib: 0,
                swap_free_kib: 0,
                ..Default::default()
            },
            psi: policy
                .psi_conditions()
                .into_iter()
                .map(|condition| PsiFired {
                    condition,
                    window_ms: 2000,
                    last_fired_ms: None,
                    streak_since_ms: None,
                    run_stall_ms: None,
                })
                .collect(),
            vmpressure_ms: None,
            thrashing_pct: None,
            thrashing_since_ms: 0,
            headroom_fall_kib_s: None,
            swap_absorbing_ms: None,
        }
    }

    fn sample(at_ms: u64, avail_pct: f64) -> Sample {
        sample_for(&Policy::default(), at_ms, avail_pct)
    }

    fn fire(s: &mut Sample, kind: PsiKind, at: u64) {
        fire_run(s, kind, at, at);
    }

    /// The trigger of `kind` kept firing from `since` to `last`, the stall going on all
    /// the while.
    fn fire_run(s: &mut Sample, kind: PsiKind, since: u64, last: u64) {
        let p = s.psi.iter_mut().find(|p| p.condition.kind == kind).unwrap();
        p.last_fired_ms = Some(last);
        p.streak_since_ms = Some(since);
        p.run_stall_ms = Some(last - since);
    }

    fn level_name(d: &Option<Decision>) -> Option<(usize, Reason)> {
        d.as_ref().map(|d| (d.level, d.reason))
    }

    #[test]
    fn watermarks_pick_the_level() {
        let p = Policy::default();
        assert_eq!(
            level_name(&decide(&sample(0, 60.0), &p, LastActions::NONE)),
            None
        );
        assert_eq!(
            level_name(&decide(&sample(0, 14.0), &p, LastActions::NONE)),
            Some((LOW, Reason::LowMemory))
        );
        assert_eq!(
            level_name(&decide(&sample(0, 4.0), &p, LastActions::NONE)),
            Some((CRITICAL, Reason::CriticalMemory))
        );
    }

    #[test]
    fn psi_events_count_once_per_action_and_only_while_fresh() {
        let p = Policy::default();
        let mut s = sample(10_000, 60.0);
        fire(&mut s, PsiKind::Some, 9_500);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((LOW, Reason::PsiSome))
        );
        // The last action ended after the event: that stall was already answered.
        assert_eq!(decide(&s, &p, LastActions::kill(Some(9_600))), None);
        // An event older than one window is stale.
        let mut old = sample(20_000, 60.0);
        fire(&mut old, PsiKind::Some, 9_500);
        assert_eq!(decide(&old, &p, LastActions::NONE), None);
        // The built-in critical level wants 5 s of full stall on end, not one firing.
        fire(&mut s, PsiKind::Full, 9_900);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((LOW, Reason::PsiSome))
        );
        fire_run(&mut s, PsiKind::Full, 4_000, 9_900);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::PsiFull))
        );
    }

    #[test]
    fn memory_reason_wins_over_psi_inside_a_level() {
        let p = Policy::default();
        let mut s = sample(10_000, 3.0);
        fire(&mut s, PsiKind::Full, 9_900);
        let d = decide(&s, &p, LastActions::NONE).unwrap();
        assert_eq!((d.level, d.reason), (CRITICAL, Reason::CriticalMemory));
        assert_eq!(d.fired.to_string(), "available 3.0 % < 5 %");
    }

    #[test]
    fn a_psi_duration_needs_a_stall_that_goes_on() {
        let mut p = Policy::default();
        p.levels[0].conditions.psi_full_for_ms = Some(5_000);
        let mut s = sample_for(&p, 20_000, 60.0);
        // One firing during a burst: the window it measured (2 s) is all the stall seen.
        fire(&mut s, PsiKind::Full, 19_900);
        assert_eq!(decide(&s, &p, LastActions::NONE), None);
        // Firing window after window since 16.9 s: 3 s of runs + the first window = 5 s.
        fire_run(&mut s, PsiKind::Full, 16_900, 19_900);
        let d = decide(&s, &p, LastActions::NONE).unwrap();
        assert_eq!((d.level, d.reason), (CRITICAL, Reason::PsiFull));
        assert_eq!(
            d.fired.to_string(),
            "PSI full trigger (50 % of the window) fired 100 ms ago, stalled for 5.0 s"
        );
        // A kill at 17 s answered the stall up to then: 19.9 - 19 + 2 = 2.9 s of new stall.
        assert_eq!(decide(&s, &p, LastActions::kill(Some(17_000))), None);
        // The level without a duration still fires on the same run (some, 100 ms).
        fire(&mut s, PsiKind::Some, 19_900);
        assert_eq!(
            decide(&s, &p, LastActions::kill(Some(17_000)))
                .unwrap()
                .level,
            LOW
        );
    }

    #[test]
    fn one_burst_reported_twice_is_not_a_stall_that_goes_on() {
        let mut p = Policy::default();
        p.levels[0].conditions.psi_full_for_ms = Some(3_000);
        let mut s = sample_for(&p, 12_050, 60.0);
        // A firing and the kernel's re-fire one window later: 4 s of "run"...
        fire_run(&mut s, PsiKind::Full, 10_000, 12_000);
        // ...but only 100 ms of stall between them: the burst was over at the first.
        s.psi.iter_mut().for_each(|p| p.run_stall_ms = Some(100));
        assert_eq!(level_name(&decide(&s, &p, LastActions::NONE)), None);
        // Stalling at the trigger's share (50 %) between them: it went on.
        s.psi.iter_mut().for_each(|p| p.run_stall_ms = Some(1_000));
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::PsiFull))
        );
        // Unmeasured (the pressure file unreadable): not taken as going on.
        s.psi.iter_mut().for_each(|p| p.run_stall_ms = None);
        assert_eq!(level_name(&decide(&s, &p, LastActions::NONE)), None);
    }

    #[test]
    fn a_pageout_does_not_restart_the_count_of_a_stall() {
        let p = Policy::default();
        let mut s = sample_for(&p, 20_000, 20.0);
        fire_run(&mut s, PsiKind::Full, 4_000, 19_900);
        let after_pageout = LastActions {
            action_ms: Some(18_000),
            kill_ms: None,
        };
        assert_eq!(
            level_name(&decide(&s, &p, after_pageout)),
            Some((CRITICAL, Reason::PsiFull))
        );
    }

    #[test]
    fn an_lmkd_minfree_table_applies_alongside_the_policy() {
        // 72 MiB -> adj 900, 36 MiB -> adj 0, in a 256 MiB scope.
        let p = Policy::default().with_minfree(7, &[(73_728, 900), (36_864, 0)]);
        let at = |free: u64, file: u64, avail_pct: f64| {
            let mut s = sample_for(&p, 1_000, avail_pct);
            (s.mem.free_kib, s.mem.file_kib) = (free, file);
            decide(&s, &p, LastActions::NONE).map(|d| (p.levels[d.level].name.clone(), d.reason))
        };
        // Free is low but the file cache is not: lmkd would not kill.
        assert_eq!(at(10_000, 100_000, 60.0), None);
        let minfree = |n: &str| Some((n.to_string(), Reason::Minfree));
        assert_eq!(at(60_000, 50_000, 60.0), minfree("minfree_2"));
        assert_eq!(at(30_000, 20_000, 60.0), minfree("minfree_1"));
        // The policy's "low" (adj >= 900) holds too: the table reaches adj 0, so it decides.
        assert_eq!(at(30_000, 20_000, 10.0), minfree("minfree_1"));
        // A tie in adj: the policy's own level decides.
        assert_eq!(
            at(60_000, 50_000, 10.0),
            Some(("low".to_string(), Reason::LowMemory))
        );
        let d = {
            let mut s = sample_for(&p, 1_000, 60.0);
            (s.mem.free_kib, s.mem.file_kib) = (30_000, 20_000);
            decide(&s, &p, LastActions::NONE).unwrap()
        };
        assert_eq!(
            d.fired.to_string(),
            "free memory and file cache both below the lmkd minfree 36864 KiB (the larger 30000 KiB)"
        );
    }

    #[test]
    fn cooldown_holds_the_level_back() {
        let p = Policy::default();
        // low has a 100 ms cooldown, critical none.
        assert_eq!(
            decide(&sample(1_050, 10.0), &p, LastActions::kill(Some(1_000))),
            None
        );
        assert!(decide(&sample(1_100, 10.0), &p, LastActions::kill(Some(1_000))).is_some());
        assert!(decide(&sample(1_001, 2.0), &p, LastActions::kill(Some(1_000))).is_some());
    }

    fn one_level(conditions: Conditions, combine: Combine) -> Policy {
        let mut p = Policy::default();
        p.levels.truncate(1);
        p.levels[0].conditions = conditions;
        p.levels[0].combine = combine;
        p
    }

    #[test]
    fn all_needs_every_condition() {
        let cond = Conditions {
            available_below_pct: Some(20.0),
            thrashing_above_pct: Some(30.0),
            ..Default::default()
        };
        let p = one_level(cond, Combine::All);
        let mut s = sample_for(&p, 1000, 10.0);
        assert_eq!(decide(&s, &p, LastActions::NONE), None, "thrashing unknown");
        s.thrashing_pct = Some(50.0);
        let d = decide(&s, &p, LastActions::NONE).unwrap();
        assert_eq!(d.reason, Reason::CriticalMemory);
        s.mem.available_kib = s.mem.total_kib / 2;
        assert_eq!(decide(&s, &p, LastActions::NONE), None);
        let any = one_level(p.levels[0].conditions.clone(), Combine::Any);
        assert_eq!(
            decide(&s, &any, LastActions::NONE).unwrap().reason,
            Reason::Thrashing
        );
        // Measured from before the last action: not evidence of thrashing now.
        assert_eq!(decide(&s, &any, LastActions::kill(Some(500))), None);
        s.thrashing_since_ms = 600;
        assert_eq!(
            decide(&s, &any, LastActions::kill(Some(500)))
                .unwrap()
                .reason,
            Reason::Thrashing
        );
    }

    #[test]
    fn swap_condition_never_fires_without_swap() {
        let p = one_level(
            Conditions {
                swap_free_below_pct: Some(10.0),
                ..Default::default()
            },
            Combine::Any,
        );
        let mut s = sample_for(&p, 1000, 50.0);
        assert_eq!(decide(&s, &p, LastActions::NONE), None);
        s.mem.swap_total_kib = 1000;
        s.mem.swap_free_kib = 50;
        assert_eq!(
            decide(&s, &p, LastActions::NONE).unwrap().reason,
            Reason::LowSwap
        );
    }

    #[test]
    fn pressure_after_kill_needs_a_recent_kill_and_new_psi() {
        let mut p = Policy::default();
        p.levels[1].conditions.pressure_after_kill_ms = Some(3000);
        p.levels[1].conditions.psi_some = None;
        p.levels[1].conditions.available_below_pct = None;
        let mut s = sample_for(&p, 10_000, 50.0);
        assert_eq!(
            decide(&s, &p, LastActions::kill(Some(9_000))),
            None,
            "no PSI since the kill"
        );
        // A PSI event (the full trigger, below its own level's freshness) after the kill.
        s.psi[0].last_fired_ms = Some(9_500);
        s.psi[0].window_ms = 100;
        assert_eq!(
            decide(&s, &p, LastActions::kill(Some(9_000)))
                .unwrap()
                .reason,
            Reason::PressureAfterKill
        );
        assert_eq!(
            decide(&s, &p, LastActions::kill(Some(5_000))),
            None,
            "kill too long ago"
        );
    }

    #[test]
    fn swap_headroom_counts_as_available_unless_the_policy_says_not() {
        let mut p = Policy::default();
        // RAM nearly full (3 %), zram can still take a fifth of RAM's worth.
        let mut s = sample_for(&p, 1000, 3.0);
        s.mem.swap_total_kib = 131_072;
        s.mem.swap_free_kib = 131_072;
        s.mem.swap_headroom_kib = s.mem.total_kib / 5;
        assert_eq!(
            decide(&s, &p, LastActions::NONE).map(|d| d.level),
            Some(3),
            "the kill levels judge 23 % with swap: none holds; page-out judges RAM alone (3 %)"
        );
        p.count_swap = false;
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::CriticalMemory))
        );
        // Without swap the headroom is RAM alone, whatever count_swap says.
        s.mem.swap_headroom_kib = 0;
        p.count_swap = true;
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::CriticalMemory))
        );
    }

    #[test]
    fn a_runaway_is_told_from_a_job_that_stopped_growing_by_its_fall() {
        let p = Policy::default();
        const RUNAWAY: usize = 1;
        assert_eq!(p.levels[RUNAWAY].name, "runaway");
        // 12 % left: below the runaway's 15 %, above critical's 5 %.
        let mut s = sample_for(&p, 1000, 12.0);
        let left_kib = s.mem.available_kib as f64;
        // Not falling (a job that reached its size), or no trend measured yet: the plain
        // `low` level (adj >= 900) holds, never the runaway level (adj >= 0).
        for fall in [None, Some(0.0), Some(-50_000.0)] {
            s.headroom_fall_kib_s = fall;
            assert_eq!(
                level_name(&decide(&s, &p, LastActions::NONE)),
                Some((LOW, Reason::LowMemory)),
                "{fall:?}"
            );
        }
        // Falling so slowly that it lasts more than 30 s: still only `low`.
        s.headroom_fall_kib_s = Some(left_kib / 40.0);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)).unwrap().0,
            LOW
        );
        // Gone within 2 s at 100 MiB/s-ish: the runaway level, and the record says when.
        s.headroom_fall_kib_s = Some(left_kib / 2.0);
        let d = decide(&s, &p, LastActions::NONE).unwrap();
        assert_eq!((d.level, d.reason), (RUNAWAY, Reason::Exhaustion));
        assert_eq!(d.fired.exhausted_in_ms, Some(2000));
        assert_eq!(
            d.fired.to_string(),
            "available 12.0 % < 15 %, gone in 2.0 s at the fall just measured"
        );
    }

    #[test]
    fn exhaustion_needs_a_fall() {
        assert_eq!(exhausted_in_ms(1000, Some(1000.0), 2000), Some(1000));
        assert_eq!(exhausted_in_ms(1000, Some(1000.0), 1000), None);
        assert_eq!(exhausted_in_ms(1000, Some(0.0), 10_000), None);
        assert_eq!(exhausted_in_ms(0, Some(-5.0), 10_000), None);
        assert_eq!(exhausted_in_ms(0, None, 10_000), None);
    }

    #[test]
    fn a_full_stall_while_swap_absorbs_a_growing_job_is_left_to_the_swap() {
        let p = Policy::default();
        assert!(!p.levels[CRITICAL].conditions.psi_while_swapping_out);
        // 40 % left with swap counted: no watermark holds.
        let mut s = sample_for(&p, 100_000, 10.0);
        s.mem.swap_total_kib = 131_072;
        s.mem.swap_free_kib = 131_072;
        s.mem.swap_headroom_kib = s.mem.total_kib * 3 / 10;
        fire_run(&mut s, PsiKind::Full, 90_000, 99_000);
        s.psi[0].run_stall_ms = Some(9_000);
        // Swap takes the job's pages: the headroom falls at 1 % of the scope per second.
        s.headroom_fall_kib_s = Some(s.mem.total_kib as f64 / 100.0);
        assert!(swap_absorbing(&s.mem, s.headroom_fall_kib_s));
        assert_eq!(
            decide(&s, &p, LastActions::NONE).map(|d| d.level),
            Some(3),
            "no kill level: only page-out, which judges RAM alone (10 %)"
        );
        // The job stopped but the stall goes on (nothing moving): a freeze after all.
        s.headroom_fall_kib_s = Some(0.0);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::PsiFull))
        );
        // Swap nearly full: its room no longer explains the stall.
        s.headroom_fall_kib_s = Some(s.mem.total_kib as f64 / 100.0);
        s.mem.swap_headroom_kib = s.mem.total_kib / 50;
        assert!(!swap_absorbing(&s.mem, s.headroom_fall_kib_s));
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::PsiFull))
        );
    }

    #[test]
    fn a_stall_that_began_while_swap_absorbed_counts_only_from_when_it_stopped() {
        let p = Policy::default();
        let mut s = sample_for(&p, 13_000, 40.0);
        s.mem.swap_total_kib = 131_072;
        s.mem.swap_free_kib = 131_072;
        s.mem.swap_headroom_kib = s.mem.total_kib * 3 / 10;
        // Full stall window after window from 1 s to 12.5 s; swap absorbed the job's growth
        // until 10 s, then the headroom held still.
        fire_run(&mut s, PsiKind::Full, 1_000, 12_500);
        s.psi[0].run_stall_ms = Some(11_500);
        s.headroom_fall_kib_s = Some(0.0);
        s.swap_absorbing_ms = Some(10_000);
        assert_eq!(
            decide(&s, &p, LastActions::NONE),
            None,
            "5 s of stall counted only from 12 s: not yet"
        );
        // The stall goes on with nothing moving: a freeze, 5 s after the absorbing.
        s.at_ms = 17_500;
        fire_run(&mut s, PsiKind::Full, 1_000, 17_000);
        s.psi[0].run_stall_ms = Some(16_000);
        assert_eq!(
            level_name(&decide(&s, &p, LastActions::NONE)),
            Some((CRITICAL, Reason::PsiFull))
        );
    }
}
