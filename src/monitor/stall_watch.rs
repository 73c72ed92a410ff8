//! A PSI condition watched by the monitor's own polls instead of a kernel trigger, while it
//! polls at least as often as the kernel's trigger poller would (ten times a window).
//!
//! A trigger keeps the kernel's `psimon` thread (SCHED_FIFO) waking while tasks stall, and
//! before Linux 6.2 every task state change during a stall could wake it again well inside
//! its tenth of a window (fixed upstream by "sched/psi: Stop relying on timer_pending() for
//! poll_work rescheduling"). Near a level the monitor reads the scope every 10–100 ms
//! anyway: then one more read of the pressure file gives the same answer for free, and the
//! triggers are dropped until the polls slow down again (`sources.rs`).

use std::collections::VecDeque;

use super::psi::{PsiTrigger, threshold_us};
use crate::sample::{PsiCondition, PsiKind};
use crate::scope::Scope;

/// Who watches one PSI condition: its kernel trigger, or the polls while they come at
/// least ten times a window.
#[derive(Debug)]
pub struct Watcher {
    pub condition: PsiCondition,
    /// The window the kernel accepted (may be wider than asked), and the one asked for.
    pub window_ms: u64,
    pub asked_ms: u64,
    /// `None` while the polls watch it.
    pub trigger: Option<PsiTrigger>,
    watch: StallWatch,
    /// Since when the polls have come ten times a window or more.
    fast_since_ms: Option<u64>,
    /// A trigger that could not be registered again was said once.
    rearm_failed: bool,
}

impl Watcher {
    pub fn new(trigger: PsiTrigger) -> Self {
        Watcher {
            condition: trigger.condition,
            window_ms: trigger.window_ms,
            asked_ms: trigger.asked_ms,
            trigger: Some(trigger),
            watch: StallWatch::default(),
            fast_since_ms: None,
            rearm_failed: false,
        }
    }

    /// Whether the condition fires at `now`, the polls watching it, with the scope's
    /// stall total (µs) of its kind.
    pub fn polled(&mut self, now: u64, total_us: u64) -> bool {
        let threshold = threshold_us(&self.condition, self.window_ms);
        self.watch.observe(now, total_us, threshold, self.window_ms)
    }

    /// Hands the watch to the polls once they have come at least ten times a window for a
    /// whole window (`poll_ms`: the sleep before the next one; `None`: only the kernel
    /// wakes the monitor), so that a moment of them does not make the kernel start and
    /// stop its poller; and back to a trigger as soon as they come less often. What to
    /// log, if anything.
    pub fn hand_over(&mut self, scope: &Scope, now: u64, poll_ms: Option<u64>) -> Option<String> {
        let kind = self.condition.kind;
        if poll_ms.is_some_and(|p| p <= self.window_ms / 10) {
            let since = *self.fast_since_ms.get_or_insert(now);
            if self.trigger.is_some() && now.saturating_sub(since) >= self.window_ms {
                self.trigger = None;
                self.watch.reset();
                // The next poll's stall counts from here.
                if let Some((some, full)) = scope.psi_totals_us() {
                    let total = if kind == PsiKind::Some { some } else { full };
                    self.watch.observe(now, total, u64::MAX, self.window_ms);
                }
                log::debug!("PSI {}: the polls watch it", kind.as_str());
            }
            return None;
        }
        self.fast_since_ms = None;
        if self.trigger.is_some() {
            return None;
        }
        let registered = scope
            .psi_path()
            .ok_or_else(|| "the scope has no pressure file any more".to_string())
            .and_then(|path| {
                PsiTrigger::register(&path, self.condition, self.asked_ms)
                    .map_err(|e| e.to_string())
            });
        match registered {
            Ok(t) => {
                self.window_ms = t.window_ms;
                self.trigger = Some(t);
                self.rearm_failed = false;
                log::debug!("PSI {}: its trigger is back", kind.as_str());
                None
            }
            Err(e) if !self.rearm_failed => {
                self.rearm_failed = true;
                Some(format!(
                    "PSI {} trigger cannot be registered again ({e}); the polls keep watching it, as often as they come",
                    kind.as_str()
                ))
            }
            Err(_) => None,
        }
    }
}

/// The polls of the last window: (ms, stall total µs), oldest first, and the last firing.
#[derive(Debug, Default)]
pub struct StallWatch {
    readings: VecDeque<(u64, u64)>,
    fired_ms: Option<u64>,
}

impl StallWatch {
    /// Takes the stall total read at `now`; whether the condition fires, as the kernel's
    /// trigger would: more than `threshold_us` of stall within the last `window_ms`
    /// (the total at the window's start interpolated between the polls around it), at
    /// most once per window. Until a whole window has been seen, the stall since the first
    /// reading counts.
    pub fn observe(&mut self, now: u64, total_us: u64, threshold_us: u64, window_ms: u64) -> bool {
        // A total that went back (a pressure file of a re-created cgroup) starts over.
        if self.readings.back().is_some_and(|&(_, t)| t > total_us) {
            self.readings.clear();
        }
        self.readings.push_back((now, total_us));
        let start = now.saturating_sub(window_ms);
        // Keep one reading at or before the window's start to interpolate from.
        while self.readings.len() > 2 && self.readings[1].0 <= start {
            self.readings.pop_front();
        }
        let (t0, v0) = self.readings[0];
        let at_start = match self.readings.get(1) {
            Some(&(t1, v1)) if t0 < start && t1 > t0 => {
                v0 + ((v1 - v0) as u128 * u128::from(start - t0) / u128::from(t1 - t0)) as u64
            }
            _ => v0,
        };
        let stalled = total_us.saturating_sub(at_start);
        let rested = self
            .fired_ms
            .is_none_or(|f| now.saturating_sub(f) >= window_ms);
        if stalled >= threshold_us && rested {
            self.fired_ms = Some(now);
            return true;
        }
        false
    }

    /// Forgets the readings: the trigger is back, or the polls stopped.
    pub fn reset(&mut self) {
        *self = StallWatch::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 1000;

    /// Polls every `every` ms from 0 to `until`, the total growing by `rate` µs per ms
    /// (a stall of rate/10 % of the time); the times it fired.
    fn run(every: u64, until: u64, rate: u64, threshold: u64) -> Vec<u64> {
        let mut w = StallWatch::default();
        (0..=until / every)
            .map(|i| i * every)
            .filter(|&t| w.observe(t, t * rate, threshold, W))
            .collect()
    }

    #[test]
    fn a_stall_over_the_threshold_fires_once_per_window() {
        // 40 % stalled, threshold 30 % of a 1 s window: fires once 300 ms of stall are
        // in, then once a window.
        assert_eq!(run(100, 3000, 400, 300_000), [800, 1800, 2800]);
    }

    #[test]
    fn a_stall_under_the_threshold_never_fires() {
        assert!(run(100, 10_000, 299, 300_000).is_empty());
        assert!(run(37, 10_000, 299, 300_000).is_empty());
    }

    #[test]
    fn the_window_start_is_interpolated_between_polls() {
        let mut w = StallWatch::default();
        // 200 ms of stall between 0 and 400, none after: at 1,200 the window starts at
        // 200, half way, so 100 ms of it are still in the window.
        assert!(!w.observe(0, 0, 150_000, W));
        assert!(w.observe(400, 200_000, 150_000, W));
        let mut w = StallWatch::default();
        w.observe(0, 0, 150_000, W);
        w.observe(400, 200_000, 1_000_000, W);
        assert!(!w.observe(1200, 200_000, 100_001, W));
        let mut w = StallWatch::default();
        w.observe(0, 0, 150_000, W);
        w.observe(400, 200_000, 1_000_000, W);
        assert!(w.observe(1200, 200_000, 100_000, W));
    }

    #[test]
    fn a_total_that_went_back_starts_over() {
        let mut w = StallWatch::default();
        w.observe(0, 5_000_000, 100_000, W);
        assert!(!w.observe(100, 10, 100_000, W), "not 5 s of stall");
        assert!(w.observe(200, 100_010, 100_000, W));
    }
}
