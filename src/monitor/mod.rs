//! The sensing thread: waits on PSI triggers and vmpressure eventfds, polls the scope's
//! available memory at the interval `schedule` chooses, and hands samples to the pipeline
//! without ever blocking on it (latest sample wins).

pub mod outlets;
pub mod psi;
pub mod schedule;
pub mod thrash;
pub mod vmpressure;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::clock::monotonic_ms;
use crate::policy::store::PolicyStore;
use crate::sample::{MemSnapshot, PsiCondition, PsiFired, Sample};
use crate::scope::Scope;
use crate::scope::swap::{effective_swap_free_kib, zram_swap_ratio};
pub use outlets::{Outlets, Source};
use schedule::{FAST_POLL_MS, SLOW_POLL_MS, Schedule};
use thrash::ThrashMeter;

/// A registered PSI trigger and when it last fired.
struct Armed {
    trigger: psi::PsiTrigger,
    fired_ms: Option<u64>,
}

/// The monitor's resources, opened at start-up on the main thread so that failures are
/// reported before the daemon says it runs.
pub struct Monitor {
    scope: Arc<Scope>,
    store: Arc<PolicyStore>,
    generation: u64,
    watermarks_pct: Vec<f64>,
    thrashing_window_ms: Option<u64>,
    thrash: ThrashMeter,
    psi: Vec<Armed>,
    vmpressure: Vec<vmpressure::VmPressure>,
    /// When a vmpressure notification last arrived.
    vmpressure_ms: Option<u64>,
    wake: OwnedFd,
    stop: Arc<AtomicBool>,
    swap_seen_kib: Option<u64>,
    zram_ratio: Option<f64>,
    outlets: Outlets,
    /// False when the kernel has no PSI (or it is pretended away): watermarks only.
    psi_allowed: bool,
    /// For tests of the daemon's reaction: fail as a poll error would after this many
    /// samples.
    fail_after_samples: Option<u64>,
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
        let (vmp, mut warnings) = open_vmpressure(&scope);
        let mut monitor = Monitor {
            scope,
            store,
            generation: 0,
            watermarks_pct: Vec::new(),
            thrashing_window_ms: None,
            thrash: ThrashMeter::default(),
            psi: Vec::new(),
            vmpressure: vmp,
            vmpressure_ms: None,
            wake,
            stop,
            swap_seen_kib: None,
            zram_ratio: None,
            outlets,
            psi_allowed,
            fail_after_samples: None,
        };
        warnings.extend(monitor.configure());
        (monitor, warnings)
    }

    /// Brings triggers and thresholds in line with the policy in force: triggers whose
    /// condition is unchanged stay (re-registering would reset their kernel window).
    fn configure(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        self.generation = self.store.generation();
        let policy = self.store.get();
        let total = self.scope.read_memory().map_or(0, |m| m.total_kib);
        self.watermarks_pct = policy.watermarks_pct(total);
        let window = policy
            .needs_thrashing()
            .then_some(policy.thrashing_window_ms);
        if window != self.thrashing_window_ms {
            self.thrash = ThrashMeter::default();
        }
        self.thrashing_window_ms = window;
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
        let Some(path) = self.scope.psi_path() else {
            warnings.push(
                "no PSI for this scope (kernel < 4.20, psi=0, or no cgroup2 mount): its PSI conditions never fire".to_string(),
            );
            return warnings;
        };
        for cond in missing {
            match psi::PsiTrigger::register(&path, cond, policy.psi_window_ms) {
                Ok(trigger) => self.psi.push(Armed {
                    trigger,
                    fired_ms: None,
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
            warnings.push(format!(
                "the kernel refused a {} ms PSI window, using {} ms (shorter windows need CAP_SYS_RESOURCE)",
                policy.psi_window_ms, a.trigger.window_ms
            ));
        }
        warnings
    }

    /// Makes the monitor fail as a poll error would, after `n` samples (hidden test flag).
    pub fn fail_after_samples(&mut self, n: u64) {
        self.fail_after_samples = Some(n);
    }

    /// Registers every kernel source again: after the scope's cgroup was removed and
    /// created anew, the old registrations point at the dead cgroup (vmpressure) or were
    /// dropped on error (PSI).
    fn reopen_sources(&mut self) -> Vec<String> {
        let (vmp, mut warnings) = open_vmpressure(&self.scope);
        self.vmpressure = vmp;
        self.psi.clear();
        warnings.extend(self.configure());
        warnings
    }

    /// The kernel event sources in force, for the start-up line.
    pub fn sources(&self) -> String {
        let mut s: Vec<String> = self
            .psi
            .iter()
            .map(|a| {
                format!(
                    "psi_{}>{:.0}%/{}ms",
                    a.trigger.condition.kind.as_str(),
                    a.trigger.condition.stall_pct,
                    a.trigger.window_ms
                )
            })
            .collect();
        s.extend(
            self.vmpressure
                .iter()
                .map(|v| format!("vmpressure_{}", v.level)),
        );
        s.push("watermarks".into());
        if self.thrashing_window_ms.is_some() {
            s.push("refaults".into());
        }
        s.join(", ")
    }

    /// Sleeps in poll(2) on the wake fd, the PSI triggers and the vmpressure eventfds, at
    /// most `interval_ms`; returns each fd's revents in that order.
    fn wait(&self, interval_ms: u64) -> rustix::io::Result<Vec<PollFlags>> {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.psi.len() + 4);
        fds.push(PollFd::new(&self.wake, PollFlags::IN));
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
        let timeout = Timespec {
            tv_sec: (interval_ms / 1000) as i64,
            tv_nsec: ((interval_ms % 1000) * 1_000_000) as i64,
        };
        loop {
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => return Ok(fds.iter().map(|f| f.revents()).collect()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes note of the kernel events in `revents` (the PSI triggers', then the vmpressure
    /// fds'); returns whether any arrived. A trigger whose fd reports an error is dropped.
    fn note_events(&mut self, revents: &[PollFlags], now: u64) -> bool {
        let (psi_revents, vmp_revents) = revents.split_at(self.psi.len());
        let mut any = false;
        let mut dead = Vec::new();
        for (i, (a, rev)) in self.psi.iter_mut().zip(psi_revents).enumerate() {
            if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                // The cgroup went away or PSI was switched off: drop this trigger rather
                // than spin on an fd that is always ready.
                dead.push(i);
            } else if rev.contains(PollFlags::PRI) {
                a.fired_ms = Some(now);
                any = true;
                self.outlets.count(a.trigger.condition.kind.into(), 1);
            }
        }
        for (v, rev) in self.vmpressure.iter().zip(vmp_revents) {
            if rev.contains(PollFlags::IN) && v.drain() > 0 {
                self.vmpressure_ms = Some(now);
                any = true;
                self.outlets.count(Source::Vmpressure, 1);
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

    /// The scope's memory (with zram-aware free swap) and the thrashing measure.
    fn measure(
        &mut self,
        now: u64,
    ) -> Result<(MemSnapshot, Option<(f64, u64)>), crate::scope::ScopeError> {
        let (mut mem, refaults) = self.scope.read(self.thrashing_window_ms.is_some())?;
        if self.swap_seen_kib != Some(mem.swap_total_kib) {
            // Swap was switched on or off: find out again whether it is zram.
            self.swap_seen_kib = Some(mem.swap_total_kib);
            self.zram_ratio = (mem.swap_total_kib > 0).then(zram_swap_ratio).flatten();
        }
        mem.swap_free_kib =
            effective_swap_free_kib(mem.swap_free_kib, mem.available_kib, self.zram_ratio);
        let thrashing = match (refaults, self.thrashing_window_ms) {
            (Some(r), Some(w)) => self.thrash.update(now, r, w),
            _ => None,
        };
        Ok((mem, thrashing))
    }

    fn sample(&self, at_ms: u64, mem: MemSnapshot, thrashing: Option<(f64, u64)>) -> Sample {
        Sample {
            at_ms,
            mem,
            psi: self
                .psi
                .iter()
                .map(|a| PsiFired {
                    condition: a.trigger.condition,
                    window_ms: a.trigger.window_ms,
                    last_fired_ms: a.fired_ms,
                })
                .collect(),
            vmpressure_ms: self.vmpressure_ms,
            thrashing_pct: thrashing.map(|t| t.0),
            thrashing_since_ms: thrashing.map_or(0, |t| t.1),
        }
    }

    /// Runs until `stop` is set and the wake fd written. `tx` is bounded; `rx` is a clone of
    /// the pipeline's receiver, used only to throw away a sample the pipeline has not taken
    /// yet so the newest one can take its place.
    pub fn run(mut self, tx: Sender<Sample>, rx: Receiver<Sample>) {
        let mut schedule = Schedule::default();
        let mut interval_ms = FAST_POLL_MS;
        let mut read_failing = false;
        let mut samples = 0u64;
        loop {
            let awake = monotonic_ms();
            let health = &self.outlets.health;
            health.monitor_sleeps(awake, interval_ms);
            if health.workers_ok(awake) {
                (self.outlets.watchdog)(awake);
            }
            if self.fail_after_samples.is_some_and(|n| samples >= n) {
                log::error!("monitor: poll failed: injected failure; stopping the monitor");
                return;
            }
            let revents = match self.wait(interval_ms) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("monitor: poll failed: {e}; stopping the monitor");
                    return;
                }
            };
            let now = monotonic_ms();
            if !revents[0].is_empty() {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut buf);
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if self.note_events(&revents[1..], now) {
                schedule.event(now);
            }
            if self.store.generation() != self.generation {
                for w in self.configure() {
                    log::warn!("{w}");
                }
                log::info!("monitor now watching: {}", self.sources());
            }
            let (mem, thrashing) = match self.measure(now) {
                Ok(m) => {
                    if read_failing {
                        read_failing = false;
                        self.outlets.health.set_scope_ok(true);
                        for w in self.reopen_sources() {
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
                    interval_ms = SLOW_POLL_MS;
                    continue;
                }
            };
            if let Some(prev) = schedule.previous() {
                let (was, is) = (prev.available_pct(), mem.available_pct());
                let crossed = self
                    .watermarks_pct
                    .iter()
                    .filter(|w| was >= **w && is < **w)
                    .count();
                if crossed > 0 {
                    self.outlets.count(Source::Watermark, crossed as u64);
                }
            }
            interval_ms = schedule.next(now, mem, &self.watermarks_pct);
            if let Some(every) = self.outlets.max_sleep_ms {
                interval_ms = interval_ms.min(every);
            }
            // Refaults are a rate: sample them at least 10 times per window.
            if let Some(w) = self.thrashing_window_ms {
                interval_ms = interval_ms.min((w / 10).max(FAST_POLL_MS));
            }
            let sample = self.sample(now, mem, thrashing);
            samples += 1;
            if !send_latest(&tx, &rx, sample) {
                return;
            }
        }
    }
}

/// Registers vmpressure notifications on a v1 memcg scope; the warnings say what failed.
fn open_vmpressure(scope: &Scope) -> (Vec<vmpressure::VmPressure>, Vec<String>) {
    let (mut vmp, mut warnings) = (Vec::new(), Vec::new());
    if let Some(dir) = scope.vmpressure_dir() {
        for level in vmpressure::LEVELS {
            match vmpressure::VmPressure::register(dir, level) {
                Ok(v) => vmp.push(v),
                Err(e) => warnings.push(format!("vmpressure {level} disabled: {e}")),
            }
        }
    }
    (vmp, warnings)
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
