//! When the monitor wakes next. Far from every watermark it sleeps until memory falling at
//! the fastest rate this machine can fill it could first reach the nearest one; close to
//! one, inside a level or right after a kernel event it polls fast. Without watermarks it
//! does not poll at all: the kernel's PSI triggers wake it.

use crate::sample::MemSnapshot;

/// The fast poll: inside or near a level, and after a kernel event.
pub const FAST_POLL_MS: u64 = 10;
/// The longest sleep between two polls when memory is far from every watermark (the
/// watchdog, when there is one, asks for less).
pub const MAX_SLEEP_MS: u64 = 60_000;
/// While the scope cannot be read, retry this often.
pub const RETRY_MS: u64 = 1000;
/// The fastest one CPU fills memory: anonymous pages faulted in by a tight loop that
/// writes one byte per page measured 1.8 GiB/s on one thread and 2.1 GiB/s on two here
/// (kernel 6.18, 2 vCPUs, THP on madvise; with MADV_HUGEPAGE no faster). 2 GiB/s per CPU,
/// times the CPUs, bounds it with room to spare.
pub const FILL_KIB_PER_S_PER_CPU: f64 = 2.0 * 1024.0 * 1024.0;
/// After a PSI or vmpressure event, poll fast this long.
const AFTER_EVENT_MS: u64 = 1000;
/// How long a fast fall seen is remembered as the rate to beat.
const FALL_MEMORY_MS: u64 = 60_000;

/// How long to sleep before the next memory poll: until memory falling at `fill_kib_per_s`
/// could first cross the nearest watermark below; fast once inside a level or right after
/// a kernel event. `None`: no timer, because there is no watermark to watch or the kernel
/// will say when one comes near (`kernel_watches`: usage thresholds armed and not reached).
pub fn next_interval_ms(
    mem: &MemSnapshot,
    count_swap: bool,
    watermarks_pct: &[f64],
    fill_kib_per_s: f64,
    since_event_ms: Option<u64>,
    kernel_watches: bool,
) -> Option<u64> {
    if since_event_ms.is_some_and(|d| d < AFTER_EVENT_MS) {
        return Some(FAST_POLL_MS);
    }
    if watermarks_pct.is_empty() || kernel_watches {
        return None;
    }
    // The memory conditions judge RAM and, where the policy counts it, swap headroom.
    let avail_pct = mem.headroom_pct(count_swap);
    // The highest watermark still below us is the next one memory would cross.
    let Some(next) = watermarks_pct
        .iter()
        .copied()
        .filter(|w| *w <= avail_pct)
        .reduce(f64::max)
    else {
        return Some(FAST_POLL_MS);
    };
    if watermarks_pct.iter().any(|w| avail_pct < *w) {
        // Already inside a level: every sample may decide a kill.
        return Some(FAST_POLL_MS);
    }
    let headroom_kib = (avail_pct - next) / 100.0 * mem.total_kib as f64;
    let ms = headroom_kib / fill_kib_per_s.max(1.0) * 1000.0;
    Some((ms as u64).clamp(FAST_POLL_MS, MAX_SLEEP_MS))
}

/// What the schedule remembers between polls: the last reading, the fastest fall seen
/// lately, and the last kernel event.
#[derive(Debug)]
pub struct Schedule {
    /// The machine's worst case: [`FILL_KIB_PER_S_PER_CPU`] times its CPUs.
    machine_fill_kib_per_s: f64,
    prev: Option<Reading>,
    /// The fastest fall measured between two polls, and when.
    fastest: Option<(f64, u64)>,
    last_event_ms: Option<u64>,
}

/// One memory poll.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_ms: u64,
    mem: MemSnapshot,
}

impl Schedule {
    pub fn new(cpus: usize) -> Self {
        Schedule {
            machine_fill_kib_per_s: FILL_KIB_PER_S_PER_CPU * cpus.max(1) as f64,
            prev: None,
            fastest: None,
            last_event_ms: None,
        }
    }

    /// A kernel event (PSI trigger, vmpressure) arrived at `now_ms`.
    pub fn event(&mut self, now_ms: u64) {
        self.last_event_ms = Some(now_ms);
    }

    /// When the last kernel event arrived.
    pub fn last_event_ms(&self) -> Option<u64> {
        self.last_event_ms
    }

    /// Milliseconds since the last kernel event.
    pub fn since_event(&self, now_ms: u64) -> Option<u64> {
        self.last_event_ms.map(|t| now_ms.saturating_sub(t))
    }

    /// The memory of the previous poll.
    pub fn previous(&self) -> Option<&MemSnapshot> {
        self.prev.as_ref().map(|r| &r.mem)
    }

    /// The fill rate to plan for: the machine's worst case, or a faster fall seen lately.
    pub fn fill_rate(&self, now_ms: u64) -> f64 {
        let seen = self
            .fastest
            .filter(|(_, at)| now_ms.saturating_sub(*at) < FALL_MEMORY_MS)
            .map_or(0.0, |(rate, _)| rate);
        self.machine_fill_kib_per_s.max(seen)
    }

    /// Records this poll's memory and returns how long to sleep before the next one
    /// (`None`: no timer needed); `kernel_watches` as in [`next_interval_ms`].
    pub fn next(
        &mut self,
        now_ms: u64,
        mem: MemSnapshot,
        count_swap: bool,
        watermarks_pct: &[f64],
        kernel_watches: bool,
    ) -> Option<u64> {
        if let Some(p) = self.prev
            && now_ms > p.at_ms
        {
            let (was, is) = (p.mem.headroom_kib(count_swap), mem.headroom_kib(count_swap));
            let fall = was.saturating_sub(is) as f64 * 1000.0 / (now_ms - p.at_ms) as f64;
            let stale = self
                .fastest
                .is_none_or(|(_, at)| now_ms.saturating_sub(at) >= FALL_MEMORY_MS);
            if stale || self.fastest.is_some_and(|(rate, _)| fall > rate) {
                self.fastest = Some((fall, now_ms));
            }
        }
        self.prev = Some(Reading { at_ms: now_ms, mem });
        next_interval_ms(
            &mem,
            count_swap,
            watermarks_pct,
            self.fill_rate(now_ms),
            self.since_event(now_ms),
            kernel_watches,
        )
    }
}

/// The monitor thread's timer slack: the kernel may defer a long sleep's wake-up by this
/// much to batch it with others (what a battery wants); fast polls keep the default 50 µs.
#[derive(Debug, Default)]
pub struct Slack {
    idle: bool,
}

impl Slack {
    /// Asleep for a second or more (or without a timer): 100 ms of slack, at most 10 % of
    /// the shortest such sleep.
    pub fn set(&mut self, sleep_ms: Option<u64>) {
        let idle = sleep_ms.is_none_or(|ms| ms >= 1000);
        if idle != self.idle {
            self.idle = idle;
            let ns = if idle { 100_000_000 } else { 50_000 };
            let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024;

    fn mem(total: u64, avail: u64) -> MemSnapshot {
        MemSnapshot {
            total_kib: total,
            available_kib: avail,
            ..Default::default()
        }
    }

    #[test]
    fn far_from_thresholds_sleeps_until_the_fastest_fill_could_reach_one() {
        // 24 GiB at 98 %, nearest watermark 25 %: 17.5 GiB at 4 GiB/s is 4.4 s.
        let m = mem(24 * GIB, 24 * GIB * 98 / 100);
        let rate = 2.0 * FILL_KIB_PER_S_PER_CPU;
        let ms = next_interval_ms(&m, true, &[25.0, 15.0, 5.0], rate, None, false).unwrap();
        assert!((4300..=4500).contains(&ms), "{ms}");
        // Never longer than the cap, however much room.
        let huge = mem(1 << 40, 1 << 40);
        assert_eq!(
            next_interval_ms(&huge, true, &[5.0], rate, None, false),
            Some(MAX_SLEEP_MS)
        );
    }

    #[test]
    fn close_to_a_watermark_or_inside_a_level_polls_fast() {
        let m256 = 256 * 1024;
        let rate = FILL_KIB_PER_S_PER_CPU;
        // 16 % available, low watermark at 15 %: 2.5 MiB of headroom.
        assert_eq!(
            next_interval_ms(
                &mem(m256, m256 * 16 / 100),
                true,
                &[15.0, 5.0],
                rate,
                None,
                false
            ),
            Some(FAST_POLL_MS)
        );
        // Between low and critical, and below everything.
        for avail in [m256 * 10 / 100, 0] {
            assert_eq!(
                next_interval_ms(&mem(m256, avail), true, &[15.0, 5.0], rate, None, false),
                Some(FAST_POLL_MS)
            );
        }
    }

    #[test]
    fn a_recent_event_polls_fast_and_no_watermark_means_no_timer() {
        let m = mem(24 * GIB, 12 * GIB);
        let rate = FILL_KIB_PER_S_PER_CPU;
        assert_eq!(
            next_interval_ms(&m, true, &[15.0], rate, Some(200), false),
            Some(FAST_POLL_MS)
        );
        assert_eq!(next_interval_ms(&m, true, &[], rate, None, false), None);
        assert_eq!(
            next_interval_ms(&m, true, &[], rate, Some(200), false),
            Some(FAST_POLL_MS)
        );
    }

    #[test]
    fn a_fall_faster_than_the_machine_bound_is_planned_for() {
        let mut s = Schedule::new(1);
        let w = [15.0, 5.0];
        let calm = s.next(0, mem(24 * GIB, 20 * GIB), true, &w, false).unwrap();
        // 4 GiB gone in 100 ms: 40 GiB/s, far above one CPU's bound.
        let falling = s
            .next(100, mem(24 * GIB, 16 * GIB), true, &w, false)
            .unwrap();
        assert!(falling < calm / 4, "{falling} < {calm}");
        assert!(s.fill_rate(200) > 30.0 * GIB as f64);
        // Forgotten after a minute.
        assert_eq!(s.fill_rate(100 + FALL_MEMORY_MS), FILL_KIB_PER_S_PER_CPU);
        s.event(150);
        assert_eq!(
            s.next(200, mem(24 * GIB, 16 * GIB), true, &w, false),
            Some(FAST_POLL_MS)
        );
        assert_eq!(s.previous().unwrap().available_kib, 16 * GIB);
    }
}
