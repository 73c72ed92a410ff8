//! The sensing thread: waits on PSI triggers and vmpressure eventfds, polls the scope's
//! available memory at an adaptive interval, and hands samples to the pipeline without ever
//! blocking on it (latest sample wins).

pub mod cgroup;
pub mod meminfo;
pub mod psi;
pub mod vmpressure;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustix::event::{PollFd, PollFlags, Timespec};
use serde::Serialize;

use crate::policy::{Policy, PsiCondition};
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

/// The monitor's resources, opened at start-up on the main thread so that failures are
/// reported before the daemon says it runs.
pub struct Monitor {
    scope: Arc<Scope>,
    watermarks_pct: Vec<f64>,
    psi: Vec<psi::PsiTrigger>,
    psi_fired: Vec<Option<u64>>,
    vmpressure: Vec<vmpressure::VmPressure>,
    stop: OwnedFd,
}

impl Monitor {
    /// Opens triggers for `policy` on `scope`. Missing kernel features disable a source with
    /// one warning each (the caller logs `warnings`); memory polling always works.
    pub fn open(scope: Arc<Scope>, policy: &Policy, stop: OwnedFd) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut triggers = Vec::new();
        match scope.psi_path() {
            None => warnings.push(
                "no PSI for this scope (kernel < 4.20, psi=0, or no cgroup2 mount): polling memory only".to_string(),
            ),
            Some(path) => {
                for cond in policy.psi_conditions() {
                    match psi::PsiTrigger::register(&path, cond, policy.psi_window_ms) {
                        Ok(t) => triggers.push(t),
                        Err(e) => warnings.push(format!("PSI trigger disabled: {e}")),
                    }
                }
                // Said once, not per trigger: all of them were widened for the same reason.
                if let Some(t) = triggers.iter().find(|t| t.window_ms != policy.psi_window_ms) {
                    warnings.push(format!(
                        "the kernel refused a {} ms PSI window, using {} ms (shorter windows need CAP_SYS_RESOURCE)",
                        policy.psi_window_ms, t.window_ms
                    ));
                }
            }
        }
        let mut vmp = Vec::new();
        if let Some(dir) = scope.vmpressure_dir() {
            for level in vmpressure::LEVELS {
                match vmpressure::VmPressure::register(dir, level) {
                    Ok(v) => vmp.push(v),
                    Err(e) => warnings.push(format!("vmpressure {level} disabled: {e}")),
                }
            }
        }
        let monitor = Monitor {
            scope,
            watermarks_pct: policy.watermarks_pct(),
            psi_fired: vec![None; triggers.len()],
            psi: triggers,
            vmpressure: vmp,
            stop,
        };
        (monitor, warnings)
    }

    /// The kernel event sources in force, for the start-up line.
    pub fn sources(&self) -> String {
        let mut s: Vec<String> = self
            .psi
            .iter()
            .map(|t| {
                format!(
                    "psi_{}>{}%/{}ms",
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
        s.join(", ")
    }

    fn sample(&self, at_ms: u64, mem: MemSnapshot, vmpressure_ms: Option<u64>) -> Sample {
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
        }
    }

    /// Runs until the stop eventfd is written. `tx` is bounded; `rx` is a clone of the
    /// pipeline's receiver, used only to throw away a sample the pipeline has not taken yet
    /// so the newest one can take its place.
    pub fn run(mut self, tx: Sender<Sample>, rx: Receiver<Sample>) {
        let mut interval_ms = FAST_POLL_MS;
        let mut last_event_ms: Option<u64> = None;
        let mut last_vmp_ms: Option<u64> = None;
        let mut prev: Option<(u64, MemSnapshot)> = None;
        let mut read_failing = false;
        loop {
            let woke = {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.psi.len() + 4);
                fds.push(PollFd::new(&self.stop, PollFlags::IN));
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
            if !woke[0].is_empty() {
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
            for (v, rev) in self.vmpressure.iter().zip(&woke[1 + psi_revents.len()..]) {
                if rev.contains(PollFlags::IN) && v.drain() > 0 {
                    last_vmp_ms = Some(now);
                    last_event_ms = Some(now);
                }
            }
            let mem = match self.scope.read_memory() {
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
            let sample = self.sample(now, mem, last_vmp_ms);
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

/// Makes the eventfd that stops the monitor when written.
pub fn stop_fd() -> std::io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?)
}

/// Wakes the monitor so that it returns.
pub fn request_stop(stop: &impl AsFd) {
    let _ = rustix::io::write(stop, &1u64.to_ne_bytes());
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
