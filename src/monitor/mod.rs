//! The sensing thread: waits on PSI triggers and vmpressure eventfds, polls the scope's
//! available memory at the interval `schedule` chooses, and hands samples to the pipeline
//! without ever blocking on it (latest sample wins).

pub mod event_control;
pub mod outlets;
pub mod psi;
pub mod schedule;
pub mod sources;
pub mod thrash;
pub mod threshold;
pub mod trend;
pub mod tripwire;
pub mod vmpressure;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::clock::{monotonic_ms, thread_cpu_us};
use crate::policy::Watermark;
use crate::policy::decide::{Decided, LastActions, decide, swap_absorbing};
use crate::policy::store::PolicyStore;
use crate::sample::{MemSnapshot, Refaults, Sample};
use crate::scope::Scope;
pub use outlets::{Outlets, Source};
use schedule::{FAST_POLL_MS, PollCost, RETRY_MS, Schedule, Slack};
use sources::Sources;
use thrash::{GlobalReclaim, RefaultPace, ThrashMeter};
use trend::TrendMeter;

/// One poll's readings of the scope.
struct Measured {
    mem: MemSnapshot,
    refaults: Option<Refaults>,
    /// Refaults over the window in percent of the file cache, and since when.
    thrashing: Option<(f64, u64)>,
    /// How fast the judged headroom fell, KiB/s.
    headroom_fall_kib_s: Option<f64>,
    /// A memcg's usage, for its usage thresholds.
    usage_kib: Option<u64>,
}

/// The monitor's resources, opened at start-up on the main thread so that failures are
/// reported before the daemon says it runs.
pub struct Monitor {
    scope: Arc<Scope>,
    store: Arc<PolicyStore>,
    generation: u64,
    watermarks: Vec<Watermark>,
    thrashing_window_ms: Option<u64>,
    thrash: ThrashMeter,
    /// The system scope's refaults, counted only while the machine reclaims.
    reclaim: GlobalReclaim,
    trend: TrendMeter,
    /// Whether the policy in force counts swap as headroom.
    count_swap: bool,
    /// When swap was last seen absorbing a growing job.
    swap_absorbing_ms: Option<u64>,
    sources: Sources,
    /// Where the tripwire's record goes; `None`: no tripwire (only the daemon sets one).
    tripwire_dir: Option<PathBuf>,
    wake: OwnedFd,
    stop: Arc<AtomicBool>,
    outlets: Outlets,
    /// For tests of the daemon's reaction: fail as a poll error would after this many
    /// polls.
    fail_after_polls: Option<u64>,
}

impl Monitor {
    /// Opens triggers for the policy in force on `scope`. Missing kernel features disable a
    /// source with one warning each (returned for the caller to log); memory polling always
    /// works. `wake` is written to stop the monitor (with `stop` set) or after a reload.
    pub fn open(
        scope: Arc<Scope>,
        store: Arc<PolicyStore>,
        wake: OwnedFd,
        stop: Arc<AtomicBool>,
        outlets: Outlets,
        psi_allowed: bool,
    ) -> (Self, Vec<String>) {
        let (sources, mut warnings) = Sources::open(&scope, psi_allowed);
        let mut monitor = Monitor {
            scope,
            store,
            generation: 0,
            watermarks: Vec::new(),
            thrashing_window_ms: None,
            thrash: ThrashMeter::default(),
            reclaim: GlobalReclaim::default(),
            trend: TrendMeter::default(),
            count_swap: true,
            swap_absorbing_ms: None,
            sources,
            tripwire_dir: None,
            wake,
            stop,
            outlets,
            fail_after_polls: None,
        };
        warnings.extend(monitor.configure());
        (monitor, warnings)
    }

    /// Brings triggers and thresholds in line with the policy in force: triggers whose
    /// condition is unchanged stay (re-registering would reset their kernel window).
    fn configure(&mut self) -> Vec<String> {
        self.generation = self.store.generation();
        let policy = self.store.get();
        let total = self.scope.read_memory().map_or(0, |m| m.total_kib);
        self.watermarks = policy.watermarks(total);
        let window = policy
            .needs_thrashing()
            .then_some(policy.thrashing_window_ms);
        if window != self.thrashing_window_ms {
            self.thrash = ThrashMeter::default();
        }
        self.thrashing_window_ms = window;
        if policy.count_swap != self.count_swap {
            self.trend.reset();
        }
        self.count_swap = policy.count_swap;
        let mut warnings = self.sources.arm(&self.scope, &policy);
        warnings.extend(
            self.sources
                .arm_thresholds(&self.scope, total, &self.watermark_pcts()),
        );
        warnings.extend(self.arm_tripwire(false));
        warnings
    }

    /// Lets the monitor set a `memory.high` tripwire on a cgroup-v2 memcg scope (where the
    /// policy and the cgroup allow it), remembering the original in `runtime_dir`; sets it
    /// at once if usage is below it. Returns what to log.
    pub fn allow_tripwire(&mut self, runtime_dir: PathBuf) -> Vec<String> {
        self.tripwire_dir = Some(runtime_dir);
        self.arm_tripwire(false)
    }

    /// Opens the tripwire as the policy says (`fresh`: anew, after the cgroup came back)
    /// and puts it where the memcg's memory says.
    fn arm_tripwire(&mut self, fresh: bool) -> Vec<String> {
        let Some(dir) = &self.tripwire_dir else {
            return Vec::new();
        };
        let enabled = self.store.get().memory_high_tripwire;
        if fresh {
            self.sources.open_tripwire(&self.scope, false, dir);
        }
        self.sources.open_tripwire(&self.scope, enabled, dir);
        match self.scope.read(false) {
            Ok(r) => self.sources.tend_tripwire(
                r.mem.total_kib,
                r.usage_kib.unwrap_or(0),
                &self.watermark_pcts(),
            ),
            Err(_) => Vec::new(),
        }
    }

    /// What lowmemd does to the scope's `memory.high`, for the start-up log.
    pub fn tripwire_state(&self) -> Option<String> {
        self.sources.tripwire_state()
    }

    /// The watermarks' levels in percent, for the usage thresholds (which bound RAM, and so
    /// wake no later than a watermark that counts swap too).
    fn watermark_pcts(&self) -> Vec<f64> {
        self.watermarks.iter().map(|w| w.pct).collect()
    }

    /// Makes the monitor fail as a poll error would, after `n` polls (hidden test flag).
    pub fn fail_after_polls(&mut self, n: u64) {
        self.fail_after_polls = Some(n);
    }

    /// The kernel event sources in force, for the start-up line.
    pub fn sources(&self) -> String {
        let mut s = self.sources.describe();
        s.push("watermarks".into());
        if self.thrashing_window_ms.is_some() {
            s.push("refaults".into());
        }
        s.join(", ")
    }

    /// Sleeps in poll(2) on the wake fd, the PSI triggers and the vmpressure eventfds, at
    /// most `sleep_ms` (`None`: until one of them wakes us); returns each fd's revents in
    /// that order.
    fn wait(&self, sleep_ms: Option<u64>) -> rustix::io::Result<Vec<PollFlags>> {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(8);
        fds.push(PollFd::new(&self.wake, PollFlags::IN));
        self.sources.poll_fds(&mut fds);
        let timeout = sleep_ms.map(|ms| Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        });
        loop {
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => return Ok(fds.iter().map(|f| f.revents()).collect()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The scope's memory (swap judged by the scope), the refault counters, the thrashing
    /// measure and the headroom's trend.
    fn measure(&mut self, now: u64) -> Result<Measured, crate::scope::ScopeError> {
        let reading = self.scope.read(self.thrashing_window_ms.is_some())?;
        let mem = reading.mem;
        let window = self.thrashing_window_ms.unwrap_or(0);
        let refaults = reading.refaults.map(|r| self.reclaim.gate(now, r, window));
        let headroom_fall_kib_s = self.trend.update(now, mem.headroom_kib(self.count_swap));
        if self.count_swap && swap_absorbing(&mem, headroom_fall_kib_s) {
            self.swap_absorbing_ms = Some(now);
        }
        let thrashing = match (refaults, self.thrashing_window_ms) {
            (Some(r), Some(w)) => self.thrash.update(now, r, w),
            _ => None,
        };
        Ok(Measured {
            mem,
            refaults,
            thrashing,
            headroom_fall_kib_s,
            usage_kib: reading.usage_kib,
        })
    }

    fn sample(&self, at_ms: u64, m: &Measured) -> Sample {
        let (mem, thrashing) = (m.mem, m.thrashing);
        Sample {
            at_ms,
            mem,
            psi: self.sources.fired(),
            vmpressure_ms: self.sources.vmpressure_ms(),
            thrashing_pct: thrashing.map(|t| t.0),
            thrashing_since_ms: thrashing.map_or(0, |t| t.1),
            headroom_fall_kib_s: m.headroom_fall_kib_s,
            swap_absorbing_ms: self.swap_absorbing_ms,
        }
    }

    /// Runs until `stop` is set and the wake fd written. `tx` is bounded; `rx` is a clone of
    /// the pipeline's receiver, used only to throw away a sample the pipeline has not taken
    /// yet so the newest one can take its place. Each sample goes with the decision taken
    /// on it here: the pipeline only re-checks it right before acting.
    pub fn run(mut self, tx: Sender<Decided>, rx: Receiver<Decided>) {
        // A memcg is filled only by its own tasks: where the poll stands in for the kernel,
        // the machine's worst rate is that of the CPUs they may use.
        let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = self.scope.cpus().map_or(machine, |c| c.min(machine));
        let mut schedule = Schedule::new(cpus);
        let mut sleep_ms = Some(FAST_POLL_MS);
        let mut read_failing = false;
        let mut polls = 0u64;
        let mut slack = Slack::default();
        // The level of the last sample handed over: a change to "none" is handed over too.
        let mut handed_level: Option<usize> = None;
        let mut pace = RefaultPace::default();
        let mut cost = PollCost::default();
        loop {
            let awake = monotonic_ms();
            let health = &self.outlets.health;
            health.monitor_sleeps(awake, sleep_ms);
            if health.workers_ok(awake) {
                (self.outlets.watchdog)(awake);
            }
            if self.fail_after_polls.is_some_and(|n| polls >= n) {
                log::error!("monitor: poll failed: injected failure; stopping the monitor");
                return;
            }
            slack.set(sleep_ms);
            let revents = match self.wait(sleep_ms) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("monitor: poll failed: {e}; stopping the monitor");
                    return;
                }
            };
            let now = monotonic_ms();
            let cpu_at_wake = thread_cpu_us();
            polls += 1;
            if !revents[0].is_empty() {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut buf);
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let scope = &self.scope;
            let totals = || scope.psi_totals_us();
            let event = self
                .sources
                .note(&revents[1..], now, &self.outlets, &totals);
            if self.store.generation() != self.generation {
                for w in self.configure() {
                    log::warn!("{w}");
                }
                log::info!("monitor now watching: {}", self.sources());
            }
            let measured = match self.measure(now) {
                Ok(m) => {
                    if read_failing {
                        read_failing = false;
                        self.outlets.health.set_scope_ok(true);
                        let policy = self.store.get();
                        let mut warnings = self.sources.reopen(&self.scope, &policy);
                        warnings.extend(self.sources.arm_thresholds(
                            &self.scope,
                            m.mem.total_kib,
                            &self.watermark_pcts(),
                        ));
                        warnings.extend(self.arm_tripwire(true));
                        for w in warnings {
                            log::warn!("{w}");
                        }
                        log::warn!(
                            "scope memory readable again; sources re-opened: {}",
                            self.sources()
                        );
                    }
                    m
                }
                Err(e) => {
                    if !read_failing {
                        log::error!(
                            "cannot read the scope's memory: {e}; nothing is protected until it is back (retrying every second)"
                        );
                        read_failing = true;
                        self.outlets.health.set_scope_ok(false);
                    }
                    sleep_ms = Some(RETRY_MS);
                    continue;
                }
            };
            let (mem, refaults, usage_kib) = (measured.mem, measured.refaults, measured.usage_kib);
            let policy = self.store.get();
            if let Some(r) = refaults.filter(|_| self.thrashing_window_ms.is_some()) {
                pace.update(now, r, &policy);
            }
            let refaulting = |w| pace.near(now, w);
            // A kernel event speeds the polls up only when this scope's memory moves with
            // it: system-wide PSI also counts the stalls of a memcg churning its own cache.
            if event
                && (schedule.moving(now, &mem, &self.watermarks, self.count_swap)
                    || self.thrashing_window_ms.is_some_and(refaulting))
            {
                schedule.event(now);
            }
            if let Some(prev) = schedule.previous() {
                let crossed = self
                    .watermarks
                    .iter()
                    .filter(|w| !w.holds(prev) && w.holds(&mem))
                    .count();
                if crossed > 0 {
                    self.outlets.count(Source::Watermark, crossed as u64);
                }
            }
            if let Some(usage) = usage_kib {
                let pcts = self.watermark_pcts();
                for w in self.sources.tend_tripwire(mem.total_kib, usage, &pcts) {
                    log::warn!("{w}");
                }
            }
            // Below every usage threshold (or the tripwire) the kernel wakes us before any
            // watermark can be crossed.
            let below_thresholds = usage_kib.is_some_and(|u| self.sources.kernel_watches(u));
            sleep_ms = schedule.next(now, mem, &self.watermarks, below_thresholds);
            // Within its share of a CPU — before the thrashing window's reads and the
            // watchdog's, which the budget may not stretch.
            cost.add(thread_cpu_us().saturating_sub(cpu_at_wake));
            sleep_ms = sleep_ms.map(|s| s.max(cost.floor_ms()));
            // Refaults are a rate: while they run near a threshold's pace, read them at
            // least 10 times per window.
            if let Some(w) = self.thrashing_window_ms.filter(|&w| refaulting(w)) {
                let every = (w / 10).max(FAST_POLL_MS);
                sleep_ms = Some(sleep_ms.map_or(every, |s| s.min(every)));
            }
            if let Some(every) = self.outlets.max_sleep_ms {
                sleep_ms = Some(sleep_ms.map_or(every, |s| s.min(every)));
            }
            let sample = self.sample(now, &measured);
            // The decision is pure and takes nanoseconds: take it here, and wake the
            // pipeline only when a level holds (or just stopped holding).
            let (action_ms, kill_ms) = self.outlets.health.last_actions();
            let last = LastActions { action_ms, kill_ms };
            let decision = decide(&sample, &policy, last);
            let level = decision.as_ref().map(|d| d.level);
            (self.outlets.observe)(
                &sample.mem,
                level.map(|l| policy.levels[l].name.as_str()),
                &policy,
            );
            if level.is_none() && handed_level.is_none() {
                continue;
            }
            handed_level = level;
            if !send_latest(&tx, &rx, Decided { sample, decision }) {
                return;
            }
        }
    }
}

/// Sends without blocking; when the slot is full, the unread older sample is dropped in
/// favour of the new one. Returns false once the pipeline is gone.
pub fn send_latest<T>(tx: &Sender<T>, rx: &Receiver<T>, mut item: T) -> bool {
    loop {
        match tx.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                let _ = rx.try_recv();
                item = back;
            }
        }
    }
}

/// Makes the eventfd that wakes the monitor (to stop, or to pick up a reloaded policy).
pub fn wake_fd() -> std::io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?)
}

/// Wakes the monitor.
pub fn wake(fd: &impl AsFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_sample_wins() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        assert!(send_latest(&tx, &rx, 1));
        assert!(send_latest(&tx, &rx, 2));
        assert_eq!(rx.try_recv(), Ok(2));
        let (tx_gone, rx_gone) = crossbeam_channel::bounded::<i32>(1);
        drop(rx_gone);
        assert!(
            !send_latest(&tx_gone, &rx, 3),
            "a gone pipeline stops the monitor"
        );
    }
}
