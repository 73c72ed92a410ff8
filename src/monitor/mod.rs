//! The sensing thread: waits on PSI triggers and vmpressure eventfds, polls the scope's
//! available memory at an adaptive interval, and hands samples to the pipeline without ever
//! blocking on it (latest sample wins).

pub mod cgroup;
pub mod meminfo;
pub mod psi;
pub mod vmpressure;

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustix::event::{PollFd, PollFlags, Timespec};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::policy::PsiCondition;
use crate::policy::store::PolicyStore;
use crate::scope::Scope;

/// Memory of the scope at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MemSnapshot {
    pub total_kib: u64,
    pub available_kib: u64,
    pub swap_total_kib: u64,
    pub swap_free_kib: u64,
}

impl MemSnapshot {
    pub fn available_pct(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        self.available_kib as f64 * 100.0 / self.total_kib as f64
    }

    pub fn swap_used_kib(&self) -> u64 {
        self.swap_total_kib.saturating_sub(self.swap_free_kib)
    }
}

/// When a PSI trigger last fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiFired {
    pub condition: PsiCondition,
    /// The window the kernel accepted for this trigger.
    pub window_ms: u64,
    pub last_fired_ms: Option<u64>,
}

/// What the monitor saw, handed to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Monotonic milliseconds (CLOCK_MONOTONIC), comparable across threads.
    pub at_ms: u64,
    pub mem: MemSnapshot,
    pub psi: Vec<PsiFired>,
    /// When a vmpressure notification last woke us (v1 memcg scopes).
    pub vmpressure_ms: Option<u64>,
    /// File refaults over the thrashing window, in percent of the file cache; `None` when
    /// the policy does not ask or there is no second reading yet.
    pub thrashing_pct: Option<f64>,
    /// When the readings behind `thrashing_pct` start: a measure that began before the last
    /// kill still counts refaults that kill answered.
    pub thrashing_since_ms: u64,
}

/// CLOCK_MONOTONIC in milliseconds.
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

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

/// Counters for the thrashing measure: file refaults so far, and the file cache now (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refaults {
    pub refault_file: u64,
    pub file_pages: u64,
}

/// File refaults over a sliding window, in percent of the file cache (lmkd's thrashing
/// measure): a cache that keeps re-reading what it just evicted is thrashing even when
/// "available" memory looks fine.
#[derive(Debug, Default)]
pub struct ThrashMeter {
    history: VecDeque<(u64, u64)>,
}

impl ThrashMeter {
    /// Adds a reading at `now_ms`; returns the refaults since the oldest reading kept (the
    /// last one at or before the window start), as a percent of the current file cache, and
    /// that reading's time. `None` until two readings exist.
    pub fn update(&mut self, now_ms: u64, r: Refaults, window_ms: u64) -> Option<(f64, u64)> {
        // Keep one reading at or before the window start, so the delta covers the window.
        while self.history.len() >= 2 && self.history[1].0 + window_ms <= now_ms {
            self.history.pop_front();
        }
        // A counter that went backwards (cgroup re-created) restarts the measure.
        if self
            .history
            .back()
            .is_some_and(|(_, v)| *v > r.refault_file)
        {
            self.history.clear();
        }
        self.history.push_back((now_ms, r.refault_file));
        let (since, oldest) = *self.history.front()?;
        (self.history.len() >= 2).then(|| {
            let pct = (r.refault_file - oldest) as f64 * 100.0 / r.file_pages.max(1) as f64;
            (pct, since)
        })
    }
}

/// Free swap as far as it can really be used. zram keeps swapped pages compressed in RAM,
/// so its free slots are only usable while RAM holds their compressed copies:
/// at most `available × ratio` (lmkd's swap_compression_ratio idea, with the ratio measured
/// from the device's mm_stat).
pub fn effective_swap_free_kib(
    swap_free_kib: u64,
    available_kib: u64,
    zram_ratio: Option<f64>,
) -> u64 {
    match zram_ratio {
        Some(ratio) => swap_free_kib.min((available_kib as f64 * ratio) as u64),
        None => swap_free_kib,
    }
}

/// The compression ratio of the zram devices in use as swap, or `None` if swap is not
/// (only) zram. Read from `/proc/swaps` and `/sys/block/zramN/mm_stat`.
pub fn zram_swap_ratio() -> Option<f64> {
    let swaps = std::fs::read_to_string("/proc/swaps").ok()?;
    let devices: Vec<&str> = swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if devices.is_empty() || !devices.iter().all(|d| d.starts_with("/dev/zram")) {
        return None;
    }
    let (mut orig, mut compr) = (0u64, 0u64);
    for d in devices {
        let name = d.trim_start_matches("/dev/");
        let stat =
            std::fs::read_to_string(format!("/sys/block/{name}/mm_stat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        orig += f.next().unwrap_or(0);
        compr += f.next().unwrap_or(0);
    }
    // Before anything is stored the ratio is unknown: assume lzo-rle's typical 2:1.
    let ratio = if compr > 0 {
        orig as f64 / compr as f64
    } else {
        2.0
    };
    Some(ratio.clamp(1.0, 8.0))
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
    psi: Vec<psi::PsiTrigger>,
    psi_fired: Vec<Option<u64>>,
    vmpressure: Vec<vmpressure::VmPressure>,
    wake: OwnedFd,
    stop: Arc<AtomicBool>,
    swap_seen_kib: Option<u64>,
    zram_ratio: Option<f64>,
    metrics: Arc<Metrics>,
    /// False when the kernel has no PSI (or it is pretended away): watermarks only.
    psi_allowed: bool,
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
        metrics: Arc<Metrics>,
        psi_allowed: bool,
    ) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut vmp = Vec::new();
        if let Some(dir) = scope.vmpressure_dir() {
            for level in vmpressure::LEVELS {
                match vmpressure::VmPressure::register(dir, level) {
                    Ok(v) => vmp.push(v),
                    Err(e) => warnings.push(format!("vmpressure {level} disabled: {e}")),
                }
            }
        }
        let mut monitor = Monitor {
            scope,
            store,
            generation: 0,
            watermarks_pct: Vec::new(),
            thrashing_window_ms: None,
            thrash: ThrashMeter::default(),
            psi: Vec::new(),
            psi_fired: Vec::new(),
            vmpressure: vmp,
            wake,
            stop,
            swap_seen_kib: None,
            zram_ratio: None,
            metrics,
            psi_allowed,
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
        let mut kept = Vec::new();
        let mut kept_fired = Vec::new();
        for (t, fired) in self.psi.drain(..).zip(self.psi_fired.drain(..)) {
            if wanted.contains(&t.condition) && t.asked_ms == policy.psi_window_ms {
                kept.push(t);
                kept_fired.push(fired);
            }
        }
        self.psi = kept;
        self.psi_fired = kept_fired;
        let missing: Vec<PsiCondition> = wanted
            .into_iter()
            .filter(|c| !self.psi.iter().any(|t| t.condition == *c))
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
                Ok(t) => {
                    self.psi.push(t);
                    self.psi_fired.push(None);
                }
                Err(e) => warnings.push(format!("PSI trigger disabled: {e}")),
            }
        }
        // Said once, not per trigger: all of them were widened for the same reason.
        if let Some(t) = self
            .psi
            .iter()
            .find(|t| t.window_ms != policy.psi_window_ms)
        {
            warnings.push(format!(
                "the kernel refused a {} ms PSI window, using {} ms (shorter windows need CAP_SYS_RESOURCE)",
                policy.psi_window_ms, t.window_ms
            ));
        }
        warnings
    }

    /// The kernel event sources in force, for the start-up line.
    pub fn sources(&self) -> String {
        let mut s: Vec<String> = self
            .psi
            .iter()
            .map(|t| {
                format!(
                    "psi_{}>{:.0}%/{}ms",
                    t.condition.kind.as_str(),
                    t.condition.stall_pct,
                    t.window_ms
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

    fn sample(
        &self,
        at_ms: u64,
        mem: MemSnapshot,
        vmpressure_ms: Option<u64>,
        thrashing: Option<(f64, u64)>,
    ) -> Sample {
        Sample {
            at_ms,
            mem,
            psi: self
                .psi
                .iter()
                .zip(&self.psi_fired)
                .map(|(t, fired)| PsiFired {
                    condition: t.condition,
                    window_ms: t.window_ms,
                    last_fired_ms: *fired,
                })
                .collect(),
            vmpressure_ms,
            thrashing_pct: thrashing.map(|t| t.0),
            thrashing_since_ms: thrashing.map_or(0, |t| t.1),
        }
    }

    /// Runs until `stop` is set and the wake fd written. `tx` is bounded; `rx` is a clone of
    /// the pipeline's receiver, used only to throw away a sample the pipeline has not taken
    /// yet so the newest one can take its place.
    pub fn run(mut self, tx: Sender<Sample>, rx: Receiver<Sample>) {
        let mut interval_ms = FAST_POLL_MS;
        let mut last_event_ms: Option<u64> = None;
        let mut last_vmp_ms: Option<u64> = None;
        let mut prev: Option<(u64, MemSnapshot)> = None;
        let mut read_failing = false;
        loop {
            let woke = {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.psi.len() + 4);
                fds.push(PollFd::new(&self.wake, PollFlags::IN));
                fds.extend(self.psi.iter().map(|t| PollFd::new(t, PollFlags::PRI)));
                fds.extend(
                    self.vmpressure
                        .iter()
                        .map(|v| PollFd::new(v, PollFlags::IN)),
                );
                let timeout = Timespec {
                    tv_sec: (interval_ms / 1000) as i64,
                    tv_nsec: ((interval_ms % 1000) * 1_000_000) as i64,
                };
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) => fds.iter().map(|f| f.revents()).collect::<Vec<_>>(),
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        log::error!("monitor: poll failed: {e}; stopping the monitor");
                        return;
                    }
                }
            };
            let now = monotonic_ms();
            // The watchdog hears from the loop that must never stall.
            crate::notify::get().watchdog(now);
            if !woke[0].is_empty() {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut buf);
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let psi_revents = &woke[1..1 + self.psi.len()];
            let mut dead = Vec::new();
            for (i, rev) in psi_revents.iter().enumerate() {
                if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                    // The cgroup went away or PSI was switched off: drop this trigger rather
                    // than spin on an fd that is always ready.
                    dead.push(i);
                } else if rev.contains(PollFlags::PRI) {
                    self.psi_fired[i] = Some(now);
                    last_event_ms = Some(now);
                    let source = match self.psi[i].condition.kind {
                        crate::policy::PsiKind::Some => "psi_some",
                        crate::policy::PsiKind::Full => "psi_full",
                    };
                    self.metrics
                        .pressure_events
                        .with_label_values(&[source])
                        .inc();
                }
            }
            for (v, rev) in self.vmpressure.iter().zip(&woke[1 + psi_revents.len()..]) {
                if rev.contains(PollFlags::IN) && v.drain() > 0 {
                    last_vmp_ms = Some(now);
                    last_event_ms = Some(now);
                    self.metrics
                        .pressure_events
                        .with_label_values(&["vmpressure"])
                        .inc();
                }
            }
            for i in dead.into_iter().rev() {
                log::warn!(
                    "PSI {} trigger reported an error; watching memory watermarks only for it",
                    self.psi[i].condition.kind.as_str()
                );
                self.psi.remove(i);
                self.psi_fired.remove(i);
            }
            if self.store.generation() != self.generation {
                for w in self.configure() {
                    log::warn!("{w}");
                }
                log::info!("monitor now watching: {}", self.sources());
            }
            let (mut mem, refaults) = match self.scope.read(self.thrashing_window_ms.is_some()) {
                Ok(m) => {
                    if read_failing {
                        log::info!("scope memory readable again");
                        read_failing = false;
                    }
                    m
                }
                Err(e) => {
                    if !read_failing {
                        log::error!("cannot read the scope's memory: {e}; retrying every second");
                        read_failing = true;
                    }
                    interval_ms = SLOW_POLL_MS;
                    continue;
                }
            };
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
            if let Some((_, p)) = prev {
                let (was, is) = (p.available_pct(), mem.available_pct());
                let crossed = self
                    .watermarks_pct
                    .iter()
                    .filter(|w| was >= **w && is < **w)
                    .count();
                if crossed > 0 {
                    self.metrics
                        .pressure_events
                        .with_label_values(&["watermark"])
                        .inc_by(crossed as u64);
                }
            }
            let fill_rate = match prev {
                Some((t, p)) if now > t => {
                    p.available_kib.saturating_sub(mem.available_kib) as f64 * 1000.0
                        / (now - t) as f64
                }
                _ => 0.0,
            };
            prev = Some((now, mem));
            interval_ms = next_interval_ms(
                &mem,
                &self.watermarks_pct,
                fill_rate,
                last_event_ms.map(|t| now - t),
            );
            if let Some(every) = crate::notify::get().watchdog_every_ms() {
                interval_ms = interval_ms.min(every);
            }
            // Refaults are a rate: sample them at least 10 times per window.
            if let Some(w) = self.thrashing_window_ms {
                interval_ms = interval_ms.min((w / 10).max(FAST_POLL_MS));
            }
            let sample = self.sample(now, mem, last_vmp_ms, thrashing);
            if !send_latest(&tx, &rx, sample) {
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
    fn thrashing_is_refaults_over_the_window_per_file_cache() {
        let mut m = ThrashMeter::default();
        let r = |refault_file| Refaults {
            refault_file,
            file_pages: 1000,
        };
        assert_eq!(m.update(0, r(100), 1000), None);
        assert_eq!(m.update(500, r(300), 1000), Some((20.0, 0)));
        // At 1600 the window starts at 600: the reading at 500 is the last one before it,
        // so the delta covers 500..1600.
        assert_eq!(m.update(1600, r(400), 1000), Some((10.0, 500)));
        // A counter reset starts over.
        assert_eq!(m.update(1700, r(5), 1000), None);
    }

    #[test]
    fn zram_free_swap_is_bounded_by_ram_for_its_compressed_copies() {
        assert_eq!(
            effective_swap_free_kib(1_000_000, 100_000, Some(3.0)),
            300_000
        );
        assert_eq!(
            effective_swap_free_kib(200_000, 100_000, Some(3.0)),
            200_000
        );
        assert_eq!(effective_swap_free_kib(1_000_000, 100_000, None), 1_000_000);
    }

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
