//! The decision: a pure function of one sample, the policy and the time of the last action.
//! No I/O and no clock, so it is tested on literals and benched in isolation.

use crate::monitor::Sample;
use crate::policy::{Action, Level, Policy, Reason};

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into `Policy::levels` (0 = most severe).
    pub level: usize,
    pub reason: Reason,
}

impl Decision {
    pub fn level<'p>(&self, policy: &'p Policy) -> &'p Level {
        &policy.levels[self.level]
    }
}

/// The most severe level whose condition holds in `sample`, unless that level acts and is
/// still cooling down from the action that ended at `last_action_ms`.
///
/// A PSI trigger event counts only when it fired after the last action ended (a stall the
/// last kill already answered must not cause a second kill) and within one trigger window of
/// the sample (the kernel re-fires at most once per window while the stall goes on).
pub fn decide(sample: &Sample, policy: &Policy, last_action_ms: Option<u64>) -> Option<Decision> {
    let avail_pct = sample.mem.available_pct();
    for (index, level) in policy.levels.iter().enumerate() {
        let reason = if level.available_below_pct.is_some_and(|w| avail_pct < w) {
            Some(level.memory_reason)
        } else {
            level.psi.iter().find_map(|cond| {
                let fired = sample.psi.iter().find(|p| p.condition == *cond)?;
                let at = fired.last_fired_ms?;
                let fresh = last_action_ms.is_none_or(|t| at > t)
                    && sample.at_ms.saturating_sub(at) <= fired.window_ms;
                fresh.then_some(match cond.kind {
                    crate::policy::PsiKind::Some => Reason::PsiSome,
                    crate::policy::PsiKind::Full => Reason::PsiFull,
                })
            })
        };
        let Some(reason) = reason else { continue };
        let cooling = level.action != Action::None
            && last_action_ms.is_some_and(|t| sample.at_ms < t + level.cooldown_ms);
        if cooling {
            return None;
        }
        return Some(Decision {
            level: index,
            reason,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{MemSnapshot, PsiFired};
    use crate::policy::{PsiCondition, PsiKind};

    fn sample(at_ms: u64, avail_pct: f64) -> Sample {
        let total = 262_144;
        Sample {
            at_ms,
            mem: MemSnapshot {
                total_kib: total,
                available_kib: (total as f64 * avail_pct / 100.0) as u64,
                swap_total_kib: 0,
                swap_free_kib: 0,
            },
            psi: Policy::default()
                .psi_conditions()
                .into_iter()
                .map(|condition| PsiFired {
                    condition,
                    window_ms: 2000,
                    last_fired_ms: None,
                })
                .collect(),
            vmpressure_ms: None,
        }
    }

    fn fire(s: &mut Sample, kind: PsiKind, at: u64) {
        s.psi
            .iter_mut()
            .find(|p| p.condition.kind == kind)
            .unwrap()
            .last_fired_ms = Some(at);
    }

    const CRITICAL: usize = 0;
    const LOW: usize = 1;

    fn level_name(d: &Option<Decision>) -> Option<(usize, Reason)> {
        d.as_ref().map(|d| (d.level, d.reason))
    }

    #[test]
    fn watermarks_pick_the_level() {
        let p = Policy::default();
        assert_eq!(level_name(&decide(&sample(0, 60.0), &p, None)), None);
        assert_eq!(
            level_name(&decide(&sample(0, 14.0), &p, None)),
            Some((LOW, Reason::LowMemory))
        );
        assert_eq!(
            level_name(&decide(&sample(0, 4.0), &p, None)),
            Some((CRITICAL, Reason::CriticalMemory))
        );
    }

    #[test]
    fn psi_events_count_once_per_action_and_only_while_fresh() {
        let p = Policy::default();
        let mut s = sample(10_000, 60.0);
        fire(&mut s, PsiKind::Some, 9_500);
        assert_eq!(
            level_name(&decide(&s, &p, None)),
            Some((LOW, Reason::PsiSome))
        );
        // The last action ended after the event: that stall was already answered.
        assert_eq!(decide(&s, &p, Some(9_600)), None);
        // An event older than one window is stale.
        let mut old = sample(20_000, 60.0);
        fire(&mut old, PsiKind::Some, 9_500);
        assert_eq!(decide(&old, &p, None), None);
        fire(&mut s, PsiKind::Full, 9_900);
        assert_eq!(
            level_name(&decide(&s, &p, None)),
            Some((CRITICAL, Reason::PsiFull))
        );
    }

    #[test]
    fn memory_reason_wins_over_psi_inside_a_level() {
        let p = Policy::default();
        let mut s = sample(10_000, 3.0);
        fire(&mut s, PsiKind::Full, 9_900);
        assert_eq!(
            level_name(&decide(&s, &p, None)),
            Some((CRITICAL, Reason::CriticalMemory))
        );
    }

    #[test]
    fn cooldown_holds_the_level_back() {
        let p = Policy::default();
        // low has a 100 ms cooldown, critical none.
        assert_eq!(decide(&sample(1_050, 10.0), &p, Some(1_000)), None);
        assert!(decide(&sample(1_100, 10.0), &p, Some(1_000)).is_some());
        assert!(decide(&sample(1_001, 2.0), &p, Some(1_000)).is_some());
    }

    #[test]
    fn custom_psi_condition_without_trigger_never_fires() {
        let mut p = Policy::default();
        p.levels[1].psi = vec![PsiCondition {
            kind: PsiKind::Some,
            stall_pct: 42.0,
        }];
        let mut s = sample(10_000, 60.0);
        fire(&mut s, PsiKind::Some, 9_900);
        assert_eq!(decide(&s, &p, None), None);
    }
}
