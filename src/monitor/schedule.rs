//! When the monitor wakes next. Far from every watermark it sleeps until memory falling at
//! the fastest rate this machine can fill it could first reach the nearest one; close to
//! one, inside a level or right after a kernel event that came with memory moving it polls
//! fast. Without watermarks it does not poll at all: the kernel's PSI triggers wake it.

use crate::policy::Watermark;
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
/// A kernel event speeds the polls up when memory falling as it just fell would reach a
/// watermark within this long.
const NEAR_MS: u64 = 10_000;
/// How long a fast fall seen is remembered as the rate to beat.
const FALL_MEMORY_MS: u64 = 60_000;

/// How long to sleep before the next memory poll: until memory falling at `fill_kib_per_s`
/// could first cross the nearest watermark below; fast once inside a level or right after
/// a kernel event. `None`: no timer, because there is no watermark to watch or the kernel
/// will say when one comes near (`kernel_watches`: usage thresholds armed and not reached).
pub fn next_interval_ms(
    mem: &MemSnapshot,
    watermarks: &[Watermark],
    fill_kib_per_s: f64,
    since_event_ms: Option<u64>,
    kernel_watches: bool,
) -> Option<u64> {
    if since_event_ms.is_some_and(|d| d < AFTER_EVENT_MS) {
        return Some(FAST_POLL_MS);
    }
    if watermarks.is_empty() || kernel_watches {
        return None;
    }
    // Each watermark is judged as its level judges memory: RAM, or RAM and swap headroom.
    let mut nearest_pct = f64::INFINITY;
    for w in watermarks {
        let distance = mem.headroom_pct(w.counts_swap) - w.pct;
        if distance < 0.0 {
            // Already inside a level: every sample may decide a kill.
            return Some(FAST_POLL_MS);
        }
        nearest_pct = nearest_pct.min(distance);
    }
    let headroom_kib = nearest_pct / 100.0 * mem.total_kib as f64;
    let ms = headroom_kib / fill_kib_per_s.max(1.0) * 1000.0;
    Some((ms as u64).clamp(FAST_POLL_MS, MAX_SLEEP_MS))
}

/// The share of one CPU polling may take: a poll that costs more than 1/50 of the fast
/// poll's interval (200 µs) slows the fast poll down to keep within 2 %.
const POLL_CPU_SHARE: f64 = 1.0 / 50.0;
/// The slowest the budget may make the fast poll: earlyoom's fastest.
pub const BUDGETED_POLL_MAX_MS: u64 = 100;

/// What a poll costs the monitor in CPU time, and the fast poll that keeps it within
/// [`POLL_CPU_SHARE`] of a CPU. Natively a poll costs tens of µs and the fast poll stays at
/// 10 ms; on a slow board or under emulation (qemu TCG, where reading meminfo, the swaps and
/// zram's mm_stat takes ~1 ms) 100 polls a second would take CPU from the very job whose
/// memory is being watched. The cheapest of the last few polls is taken, so that one poll
/// that happened to be slow (a page fault, a busy /proc) does not slow the next ones.
#[derive(Debug, Default)]
pub struct PollCost {
    /// The last polls' CPU time, µs (0: not measured).
    last_us: [u64; POLL_COST_SPAN],
    next: usize,
}

/// How many polls the cost is judged on.
const POLL_COST_SPAN: usize = 8;

impl PollCost {
    /// Adds the CPU time one poll took.
    pub fn add(&mut self, us: u64) {
        self.last_us[self.next] = us.max(1);
        self.next = (self.next + 1) % POLL_COST_SPAN;
    }

    /// The shortest sleep between polls that keeps polling within its share of a CPU.
    pub fn floor_ms(&self) -> u64 {
        let cheapest = self.last_us.iter().filter(|&&us| us > 0).min();
        let ms = cheapest.map_or(0, |&us| (us as f64 / POLL_CPU_SHARE / 1000.0) as u64);
        ms.clamp(FAST_POLL_MS, BUDGETED_POLL_MAX_MS)
    }
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

    /// Whether the scope's memory moves towards a watermark at this poll: its headroom fell
    /// by 1 % of its total or more since the previous poll (or there is none), and at that
    /// pace the nearest watermark is less than [`NEAR_MS`] away (with watermarks at all).
    /// A kernel event without it (a PSI trigger fired by a memcg stalling within its own
    /// limit, on the system scope, or by a busy machine far from every watermark) does not
    /// speed the polls up: the sleep already ends before the fastest fill seen could
    /// reach a watermark.
    pub fn moving(
        &self,
        now_ms: u64,
        mem: &MemSnapshot,
        watermarks: &[Watermark],
        count_swap: bool,
    ) -> bool {
        let Some(p) = self.prev else {
            return true;
        };
        let fell = p
            .mem
            .headroom_kib(count_swap)
            .saturating_sub(mem.headroom_kib(count_swap));
        if fell == 0 || fell < mem.total_kib / 100 {
            return false;
        }
        let nearest_pct = watermarks
            .iter()
            .map(|w| (mem.headroom_pct(w.counts_swap) - w.pct).max(0.0))
            .fold(f64::INFINITY, f64::min);
        if nearest_pct.is_infinite() {
            return true;
        }
        let kib_per_ms = fell as f64 / now_ms.saturating_sub(p.at_ms).max(1) as f64;
        nearest_pct / 100.0 * mem.total_kib as f64 / kib_per_ms < NEAR_MS as f64
    }

    /// Records this poll's memory and returns how long to sleep before the next one
    /// (`None`: no timer needed); `kernel_watches` as in [`next_interval_ms`].
    pub fn next(
        &mut self,
        now_ms: u64,
        mem: MemSnapshot,
        watermarks: &[Watermark],
        kernel_watches: bool,
    ) -> Option<u64> {
        if let Some(p) = self.prev
            && now_ms > p.at_ms
        {
            // RAM, or RAM and swap together, whichever fell faster: while the kernel swaps,
            // RAM holds still and the headroom falls.
            let fell = |swap| {
                p.mem
                    .headroom_kib(swap)
                    .saturating_sub(mem.headroom_kib(swap))
            };
            let fall = fell(false).max(fell(true)) as f64 * 1000.0 / (now_ms - p.at_ms) as f64;
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
            watermarks,
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

    fn marks(pcts: &[f64]) -> Vec<Watermark> {
        pcts.iter()
            .map(|&pct| Watermark {
                pct,
                counts_swap: true,
            })
            .collect()
    }

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
        let ms = next_interval_ms(&m, &marks(&[25.0, 15.0, 5.0]), rate, None, false).unwrap();
        assert!((4300..=4500).contains(&ms), "{ms}");
        // Never longer than the cap, however much room.
        let huge = mem(1 << 40, 1 << 40);
        assert_eq!(
            next_interval_ms(&huge, &marks(&[5.0]), rate, None, false),
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
                &marks(&[15.0, 5.0]),
                rate,
                None,
                false
            ),
            Some(FAST_POLL_MS)
        );
        // Between low and critical, and below everything.
        for avail in [m256 * 10 / 100, 0] {
            assert_eq!(
                next_interval_ms(&mem(m256, avail), &marks(&[15.0, 5.0]), rate, None, false),
                Some(FAST_POLL_MS)
            );
        }
    }

    #[test]
    fn a_recent_event_polls_fast_and_no_watermark_means_no_timer() {
        let m = mem(24 * GIB, 12 * GIB);
        let rate = FILL_KIB_PER_S_PER_CPU;
        assert_eq!(
            next_interval_ms(&m, &marks(&[15.0]), rate, Some(200), false),
            Some(FAST_POLL_MS)
        );
        assert_eq!(next_interval_ms(&m, &[], rate, None, false), None);
        assert_eq!(
            next_interval_ms(&m, &[], rate, Some(200), false),
            Some(FAST_POLL_MS)
        );
    }

    #[test]
    fn a_fall_faster_than_the_machine_bound_is_planned_for() {
        let mut s = Schedule::new(1);
        let w = marks(&[15.0, 5.0]);
        let calm = s.next(0, mem(24 * GIB, 20 * GIB), &w, false).unwrap();
        // 4 GiB gone in 100 ms: 40 GiB/s, far above one CPU's bound.
        let falling = s.next(100, mem(24 * GIB, 16 * GIB), &w, false).unwrap();
        assert!(falling < calm / 4, "{falling} < {calm}");
        assert!(s.fill_rate(200) > 30.0 * GIB as f64);
        // Forgotten after a minute.
        assert_eq!(s.fill_rate(100 + FALL_MEMORY_MS), FILL_KIB_PER_S_PER_CPU);
        s.event(150);
        assert_eq!(
            s.next(200, mem(24 * GIB, 16 * GIB), &w, false),
            Some(FAST_POLL_MS)
        );
        assert_eq!(s.previous().unwrap().available_kib, 16 * GIB);
    }

    #[test]
    fn memory_moves_when_it_falls_by_a_percent_towards_a_near_watermark() {
        let total = 1024 * 1024;
        let w = marks(&[15.0]);
        let mut s = Schedule::new(1);
        assert!(
            s.moving(0, &mem(total, total / 2), &w, true),
            "the first poll counts"
        );
        s.next(0, mem(total, total / 2), &w, false);
        // 11 MiB of 1 GiB in 100 ms: the 15 % watermark, 35 % away, in ~3.3 s.
        assert!(s.moving(100, &mem(total, total / 2 - 11 * 1024), &w, true));
        // The same fall over 10 s: ~5 min away.
        assert!(!s.moving(10_000, &mem(total, total / 2 - 11 * 1024), &w, true));
        // 5 MiB down, or up: a busy cache, not memory running out.
        assert!(!s.moving(100, &mem(total, total / 2 - 5 * 1024), &w, true));
        assert!(!s.moving(100, &mem(total, total / 2 + 90 * 1024), &w, true));
        // Without watermarks a fall of 1 % is enough.
        assert!(s.moving(10_000, &mem(total, total / 2 - 11 * 1024), &[], true));
    }

    #[test]
    fn each_watermark_is_judged_as_its_level_judges_memory() {
        let rate = FILL_KIB_PER_S_PER_CPU;
        // RAM at 10 %, swap can take another 30 % of RAM's worth.
        let mut m = mem(1024 * 1024, 1024 * 1024 / 10);
        m.swap_headroom_kib = 1024 * 1024 * 3 / 10;
        let kill = Watermark {
            pct: 15.0,
            counts_swap: true,
        };
        let pageout = Watermark {
            pct: 25.0,
            counts_swap: false,
        };
        // A kill watermark at 15 % is 25 % away when swap counts: a sleep.
        assert!(next_interval_ms(&m, &[kill], rate, None, false).unwrap() > FAST_POLL_MS);
        // A page-out watermark judges RAM alone: inside it.
        assert_eq!(
            next_interval_ms(&m, &[pageout, kill], rate, None, false),
            Some(FAST_POLL_MS)
        );
    }

    #[test]
    fn a_cheap_poll_keeps_the_fast_poll_and_a_costly_one_is_slowed_to_its_cpu_share() {
        let mut cost = PollCost::default();
        assert_eq!(cost.floor_ms(), FAST_POLL_MS, "nothing measured yet");
        // Natively: tens of µs a poll.
        for _ in 0..8 {
            cost.add(60);
        }
        assert_eq!(cost.floor_ms(), FAST_POLL_MS);
        // One slow poll (a page fault, a busy /proc) does not slow the next ones.
        cost.add(20_000);
        assert_eq!(cost.floor_ms(), FAST_POLL_MS);
        // Emulated: 1 ms a poll is 2 % of a CPU at one poll every 50 ms, once every one of
        // the last 8 costs that much.
        for _ in 0..6 {
            cost.add(1000);
        }
        assert_eq!(
            cost.floor_ms(),
            FAST_POLL_MS,
            "one cheap poll still among the last 8"
        );
        cost.add(1000);
        assert_eq!(cost.floor_ms(), 50);
        // Never slower than earlyoom's fastest, however slow the poll.
        for _ in 0..8 {
            cost.add(50_000);
        }
        assert_eq!(cost.floor_ms(), BUDGETED_POLL_MAX_MS);
    }
}
