//! Whether the daemon is protecting anything: the two worker threads make progress and the
//! scope can be read. Written by the monitor and the pipeline, read by the watchdog ping
//! (systemd restarts a daemon that stops pinging) and by `/status` (Kubernetes' probe), so
//! that a daemon protecting nothing never looks healthy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A monitor later than this past its own wake-up time is stuck, not sleeping.
const MONITOR_GRACE_MS: u64 = 5_000;
/// A pipeline busy this long with one sample is stuck: a decision is at most a few victims,
/// each confirmed within its level's wait (seconds).
const PIPELINE_STALL_MS: u64 = 60_000;

#[derive(Debug)]
pub struct Health {
    /// When the monitor must have woken again by (monotonic ms).
    monitor_due_ms: AtomicU64,
    /// Since when the pipeline is handling a sample; 0 while it waits for one.
    pipeline_busy_since_ms: AtomicU64,
    scope_ok: AtomicBool,
    /// When the pipeline's last action and last kill ended (monotonic ms); 0 before the
    /// first.
    last_action_ms: AtomicU64,
    last_kill_ms: AtomicU64,
}

impl Health {
    pub fn new(now_ms: u64) -> Self {
        Health {
            monitor_due_ms: AtomicU64::new(now_ms + MONITOR_GRACE_MS),
            pipeline_busy_since_ms: AtomicU64::new(0),
            scope_ok: AtomicBool::new(true),
            last_action_ms: AtomicU64::new(0),
            last_kill_ms: AtomicU64::new(0),
        }
    }

    /// The monitor is awake at `now_ms` and will sleep at most `sleep_ms` (`None`: until
    /// the kernel wakes it, which may be never while memory is fine).
    pub fn monitor_sleeps(&self, now_ms: u64, sleep_ms: Option<u64>) {
        let due = sleep_ms.map_or(u64::MAX - MONITOR_GRACE_MS, |s| now_ms + s);
        self.monitor_due_ms.store(due, Ordering::Relaxed);
    }

    pub fn pipeline_busy(&self, now_ms: u64) {
        // 0 means idle: a monotonic clock of 0 ms is never seen after boot.
        self.pipeline_busy_since_ms
            .store(now_ms.max(1), Ordering::Relaxed);
    }

    pub fn pipeline_idle(&self) {
        self.pipeline_busy_since_ms.store(0, Ordering::Relaxed);
    }

    /// When the pipeline's last action and kill ended: the monitor decides with them
    /// whether a sample is worth waking the pipeline for (cooldowns, PSI counted once per
    /// action).
    pub fn pipeline_acted(&self, action_ms: Option<u64>, kill_ms: Option<u64>) {
        let store = |to: &AtomicU64, ms: Option<u64>| {
            if let Some(ms) = ms {
                to.store(ms.max(1), Ordering::Relaxed);
            }
        };
        store(&self.last_action_ms, action_ms);
        store(&self.last_kill_ms, kill_ms);
    }

    /// When the last action and the last kill ended.
    pub fn last_actions(&self) -> (Option<u64>, Option<u64>) {
        let read = |from: &AtomicU64| Some(from.load(Ordering::Relaxed)).filter(|ms| *ms > 0);
        (read(&self.last_action_ms), read(&self.last_kill_ms))
    }

    pub fn set_scope_ok(&self, ok: bool) {
        self.scope_ok.store(ok, Ordering::Relaxed);
    }

    /// The scope's memory could be read at the last try.
    pub fn scope_ok(&self) -> bool {
        self.scope_ok.load(Ordering::Relaxed)
    }

    /// Both worker threads are making progress.
    pub fn workers_ok(&self, now_ms: u64) -> bool {
        let monitor = now_ms <= self.monitor_due_ms.load(Ordering::Relaxed) + MONITOR_GRACE_MS;
        let since = self.pipeline_busy_since_ms.load(Ordering::Relaxed);
        let pipeline = since == 0 || now_ms.saturating_sub(since) < PIPELINE_STALL_MS;
        monitor && pipeline
    }

    /// Protecting the scope: the workers make progress and the scope is there.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.workers_ok(now_ms) && self.scope_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_worker_or_a_missing_scope_is_unhealthy() {
        let h = Health::new(1000);
        assert!(h.healthy(1000));
        h.monitor_sleeps(1000, Some(60_000));
        assert!(h.healthy(60_000), "a long sleep is not a stall");
        assert!(
            !h.workers_ok(61_000 + MONITOR_GRACE_MS + 1),
            "overdue monitor"
        );
        h.monitor_sleeps(100_000, Some(1000));
        h.pipeline_busy(100_000);
        assert!(h.workers_ok(100_000 + 5_000));
        assert!(
            !h.workers_ok(100_000 + PIPELINE_STALL_MS),
            "pipeline stuck on one sample"
        );
        h.pipeline_idle();
        h.monitor_sleeps(200_000, Some(1000));
        let never = Health::new(0);
        never.monitor_sleeps(0, None);
        assert!(
            never.workers_ok(u64::MAX / 2),
            "a monitor without a timer is not overdue"
        );
        assert!(h.healthy(200_000));
        h.set_scope_ok(false);
        assert!(h.workers_ok(200_000) && !h.healthy(200_000));
    }
}
