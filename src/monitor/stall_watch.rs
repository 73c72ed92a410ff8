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
use std::time::Instant;

use super::psi::{PsiTrigger, threshold_us};
use crate::sample::PsiCondition;
use crate::scope::Scope;

/// Who watches one PSI condition: its kernel trigger, or the polls while they come at
/// least ten times a window. The polls read the stall from the moment they come that
/// often, so the hand-over loses nothing either way: they watch a whole window beside the
/// trigger before it goes, and a whole window beside a new one (which starts from nothing)
/// after it is back; a firing of either counts for both's once-a-window limit.
#[derive(Debug)]
pub struct Watcher {
    pub condition: PsiCondition,
    /// The window the kernel accepted (may be wider than asked), and the one asked for.
    pub window_ms: u64,
    pub asked_ms: u64,
    /// `None` while the polls watch it alone.
    pub trigger: Option<PsiTrigger>,
    watch: StallWatch,
    /// Since when the polls have come ten times a window or more.
    fast_since_ms: Option<u64>,
    /// Until when the polls keep watching beside a trigger registered again.
    beside_until_ms: u64,
    /// The last poll could not read the pressure file.
    unreadable: bool,
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
            beside_until_ms: 0,
            unreadable: false,
            rearm_failed: false,
        }
    }

    /// Whether the polls read the stall at `now` (alone, or beside the trigger).
    pub fn polls_watch(&self, now: u64) -> bool {
        self.trigger.is_none() || self.fast_since_ms.is_some() || now < self.beside_until_ms
    }

    /// The trigger fired at `now`: the polls do not fire the same window again.
    pub fn trigger_fired(&mut self, now: u64) {
        self.watch.fired_ms = Some(now);
    }

    /// Takes the stall total (µs) the poll at `now` read, `None` when the pressure file
    /// could not be read; whether the polls fire the condition.
    pub fn polled(&mut self, now: u64, total_us: Option<u64>) -> bool {
        self.unreadable = total_us.is_none();
        let Some(total) = total_us else { return false };
        let threshold = threshold_us(&self.condition, self.window_ms);
        let fired = self.watch.observe(now, total, threshold, self.window_ms);
        // Beside a trigger that has watched a whole window, the trigger's word counts.
        let in_charge = self.trigger.is_none() || now < self.beside_until_ms;
        if fired && !in_charge {
            self.watch.fired_ms = None;
        }
        fired && in_charge
    }

    /// Hands the watch to the polls once they have come at least ten times a window for a
    /// whole window (`poll_ms`: the sleep before the next one; `None`: only the kernel
    /// wakes the monitor), so that a moment of them does not make the kernel start and
    /// stop its poller; and back to a trigger as soon as they come less often, or cannot
    /// read the pressure file. What to log, if anything.
    pub fn hand_over(&mut self, scope: &Scope, now: u64, poll_ms: Option<u64>) -> Option<String> {
        let kind = self.condition.kind.as_str();
        if poll_ms.is_some_and(|p| p <= self.window_ms / 10) && !self.unreadable {
            let since = *self.fast_since_ms.get_or_insert(now);
            if self.trigger.is_some() && now.saturating_sub(since) >= self.window_ms {
                // Closing it waits for the kernel (an RCU grace period, and psimon's exit
                // with the last trigger): said, with how long it took.
                let closing = Instant::now();
                self.trigger = None;
                let took = closing.elapsed().as_micros();
                log::debug!("PSI {kind}: the polls watch it (trigger closed in {took} µs)");
            }
            return None;
        }
        self.fast_since_ms = None;
        if self.trigger.is_some() {
            if now >= self.beside_until_ms {
                self.watch.forget_readings();
            }
            return None;
        }
        let opening = Instant::now();
        let registered = scope
            .psi_path()
            .ok_or_else(|| "the scope has no pressure file any more".to_string())
            .and_then(|path| {
                PsiTrigger::register(&path, self.condition, self.asked_ms)
                    .map_err(|e| e.to_string())
            });
        match registered {
            Ok(t) => {
                let took = opening.elapsed().as_micros();
                log::debug!("PSI {kind}: its trigger is back (registered in {took} µs)");
                self.window_ms = t.window_ms;
                self.trigger = Some(t);
                self.beside_until_ms = now + self.window_ms;
                self.rearm_failed = false;
                None
            }
            Err(e) if !self.rearm_failed => {
                self.rearm_failed = true;
                Some(format!(
                    "PSI {kind} trigger cannot be registered again ({e}); only polls that can read the pressure file watch it until it can"
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

    /// Forgets the readings (the polls stopped watching), not the last firing.
    pub fn forget_readings(&mut self) {
        self.readings.clear();
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
