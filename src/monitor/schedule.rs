//! When the monitor wakes next: how long memory can fall before it could cross the next
//! watermark, from the headroom, the fill rate seen and an assumed worst case.

use crate::sample::MemSnapshot;

/// Shortest and longest sleep between two memory polls.
pub const FAST_POLL_MS: u64 = 10;
pub const SLOW_POLL_MS: u64 = 1000;
/// The fill rate we assume at least when we have not seen memory shrink faster: a single
/// thread faulting in anonymous pages manages several hundred MiB/s on our machines.
const ASSUMED_FILL_KIB_PER_S: f64 = 512.0 * 1024.0;
/// After a PSI or vmpressure event, poll fast this long.
const AFTER_EVENT_MS: u64 = 1000;

/// How long to sleep before the next memory poll: wake at least twice before memory falling
/// at `fill_kib_per_s` (or the assumed floor rate) could cross the next watermark; poll fast
/// once inside a level or right after a kernel event.
pub fn next_interval_ms(
    mem: &MemSnapshot,
    watermarks_pct: &[f64],
    fill_kib_per_s: f64,
    since_event_ms: Option<u64>,
) -> u64 {
    if since_event_ms.is_some_and(|d| d < AFTER_EVENT_MS) {
        return FAST_POLL_MS;
    }
    let avail_pct = mem.available_pct();
    // The highest watermark still below us is the next one memory would cross.
    let Some(next) = watermarks_pct
        .iter()
        .copied()
        .filter(|w| *w <= avail_pct)
        .reduce(f64::max)
    else {
        return FAST_POLL_MS;
    };
    if watermarks_pct.iter().any(|w| avail_pct < *w) {
        // Already inside a level: every sample may decide a kill.
        return FAST_POLL_MS;
    }
    let headroom_kib = (avail_pct - next) / 100.0 * mem.total_kib as f64;
    let rate = fill_kib_per_s.max(ASSUMED_FILL_KIB_PER_S);
    let ms = headroom_kib / rate * 1000.0 / 2.0;
    (ms as u64).clamp(FAST_POLL_MS, SLOW_POLL_MS)
}

/// What the schedule remembers between polls: the last reading (for the fill rate) and the
/// last kernel event.
#[derive(Debug, Default)]
pub struct Schedule {
    prev: Option<Reading>,
    last_event_ms: Option<u64>,
}

/// One memory poll.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_ms: u64,
    mem: MemSnapshot,
}

impl Schedule {
    /// A kernel event (PSI trigger, vmpressure) arrived at `now_ms`.
    pub fn event(&mut self, now_ms: u64) {
        self.last_event_ms = Some(now_ms);
    }

    /// The memory of the previous poll.
    pub fn previous(&self) -> Option<&MemSnapshot> {
        self.prev.as_ref().map(|r| &r.mem)
    }

    /// Records this poll's memory and returns how long to sleep before the next one.
    pub fn next(&mut self, now_ms: u64, mem: MemSnapshot, watermarks_pct: &[f64]) -> u64 {
        let fill_rate = match self.prev {
            Some(p) if now_ms > p.at_ms => {
                p.mem.available_kib.saturating_sub(mem.available_kib) as f64 * 1000.0
                    / (now_ms - p.at_ms) as f64
            }
            _ => 0.0,
        };
        self.prev = Some(Reading { at_ms: now_ms, mem });
        next_interval_ms(
            &mem,
            watermarks_pct,
            fill_rate,
            self.last_event_ms.map(|t| now_ms - t),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(total: u64, avail: u64) -> MemSnapshot {
        MemSnapshot {
            total_kib: total,
            available_kib: avail,
            ..Default::default()
        }
    }

    #[test]
    fn far_from_thresholds_polls_once_a_second() {
        let gib24 = 24 * 1024 * 1024;
        assert_eq!(
            next_interval_ms(&mem(gib24, gib24 * 9 / 10), &[15.0, 5.0], 0.0, None),
            1000
        );
    }

    #[test]
    fn close_to_a_watermark_or_inside_a_level_polls_fast() {
        let m256 = 256 * 1024;
        // 16 % available, low watermark at 15 %: 2.5 MiB of headroom.
        assert_eq!(
            next_interval_ms(&mem(m256, m256 * 16 / 100), &[15.0, 5.0], 0.0, None),
            FAST_POLL_MS
        );
        // Between low and critical.
        assert_eq!(
            next_interval_ms(&mem(m256, m256 * 10 / 100), &[15.0, 5.0], 0.0, None),
            FAST_POLL_MS
        );
        // Below everything.
        assert_eq!(
            next_interval_ms(&mem(m256, 0), &[15.0, 5.0], 0.0, None),
            FAST_POLL_MS
        );
    }

    #[test]
    fn a_fast_fill_rate_or_recent_event_shortens_the_sleep() {
        let gib24 = 24 * 1024 * 1024;
        let m = mem(gib24, gib24 / 2);
        let slow = next_interval_ms(&m, &[15.0, 5.0], 0.0, None);
        let fast = next_interval_ms(&m, &[15.0, 5.0], 40.0 * 1024.0 * 1024.0, None);
        assert!(fast < slow, "{fast} < {slow}");
        assert_eq!(
            next_interval_ms(&m, &[15.0, 5.0], 0.0, Some(200)),
            FAST_POLL_MS
        );
        assert_eq!(next_interval_ms(&m, &[15.0, 5.0], 0.0, Some(5000)), slow);
    }

    #[test]
    fn the_schedule_measures_the_fill_rate_between_polls() {
        let gib24 = 24 * 1024 * 1024;
        let mut s = Schedule::default();
        let calm = s.next(0, mem(gib24, gib24 / 2), &[15.0, 5.0]);
        // 4 GiB gone in 100 ms: 40 GiB/s, far above the assumed floor.
        let falling = s.next(100, mem(gib24, gib24 / 2 - 4 * 1024 * 1024), &[15.0, 5.0]);
        assert!(falling < calm, "{falling} < {calm}");
        assert_eq!(
            s.previous().unwrap().available_kib,
            gib24 / 2 - 4 * 1024 * 1024
        );
        s.event(150);
        assert_eq!(
            s.next(200, mem(gib24, gib24 / 2), &[15.0, 5.0]),
            FAST_POLL_MS
        );
    }
}
