//! How fast the judged headroom (available RAM plus what swap can still take) falls: what
//! tells a runaway from a large job that has stopped growing. A job that holds its size
//! makes no fall at all, however little headroom it left; a leak makes a steady one.

use std::collections::VecDeque;

/// The span the fall is measured over. Long enough that one allocation burst or the kernel
/// refilling its per-CPU lists after a kill (a few hundred MiB of MemAvailable for a moment)
/// does not set the rate alone; short enough that a leak that starts is seen within it.
pub const TREND_WINDOW_MS: u64 = 2000;
/// A rate over less than this is mostly the jitter of two readings 10 ms apart.
const MIN_SPAN_MS: u64 = 200;

#[derive(Debug, Default)]
pub struct TrendMeter {
    /// (monotonic ms, headroom KiB), oldest first: the readings of the window and the last
    /// one at or before its start.
    history: VecDeque<(u64, u64)>,
}

impl TrendMeter {
    /// Adds the headroom read at `now_ms`; returns how fast it fell (KiB/s, negative when
    /// it grew) from the reading one window back (or the oldest one kept) to this one, or
    /// `None` before two readings at least 200 ms apart.
    pub fn update(&mut self, now_ms: u64, headroom_kib: u64) -> Option<f64> {
        while self.history.len() >= 2 && self.history[1].0 + TREND_WINDOW_MS <= now_ms {
            self.history.pop_front();
        }
        if self.history.back().is_some_and(|&(t, _)| t > now_ms) {
            self.history.clear();
        }
        self.history.push_back((now_ms, headroom_kib));
        let (t0, h0) = *self.history.front()?;
        let span = now_ms - t0;
        (span >= MIN_SPAN_MS).then(|| (h0 as f64 - headroom_kib as f64) * 1000.0 / span as f64)
    }

    /// Forgets the readings (the policy's idea of headroom changed).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fall_is_measured_over_the_last_window() {
        let mut m = TrendMeter::default();
        assert_eq!(m.update(0, 500_000), None);
        assert_eq!(m.update(100, 490_000), None, "too short a span to tell");
        // 100 MiB/s for a second.
        assert_eq!(m.update(1000, 400_000), Some(100_000.0));
        // At 3000 the window starts at 1000: the readings before it are gone.
        assert_eq!(m.update(3000, 400_000), Some(0.0));
        // A kill gave memory back: the headroom grew (measured from 1000, a window back).
        assert_eq!(m.update(3500, 600_000), Some(-80_000.0));
    }

    #[test]
    fn a_long_sleep_measures_across_it() {
        let mut m = TrendMeter::default();
        m.update(0, 1_000_000);
        assert_eq!(m.update(10_000, 900_000), Some(10_000.0));
    }
}
