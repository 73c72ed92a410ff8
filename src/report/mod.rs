//! What leaves the daemon: the records of actions (`events.rs`) and their log
//! (`eventlog.rs`), Prometheus metrics and `/status` (`metrics.rs`, served by `http.rs`),
//! log lines to stderr or the journal (`logger.rs`), the service manager (`notify.rs`), the
//! status socket `lowmemd status` asks (`status_socket.rs`), the freeze tier's records and
//! metrics (`freeze.rs`), and the policy's hooks
//! (`hooks/`). [`Reporter`] turns what the pipeline observed into all of
//! these.

pub mod eventlog;
pub mod events;
pub mod freeze;
pub mod handoff;
// Without the `hooks` feature the policy refuses `[[hook]]` (policy::validate) and the
// Reporter's calls land in no-ops.
#[cfg(feature = "hooks")]
pub mod hooks;
#[cfg(not(feature = "hooks"))]
#[path = "hooks/off.rs"]
pub mod hooks;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "journald")]
mod journal;
#[cfg(not(feature = "journald"))]
#[path = "journal_off.rs"]
mod journal;
pub mod logger;
pub mod metrics;
pub mod notify;
pub mod status;
pub mod status_socket;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::wall_ms;
use crate::pipeline::outcome::{Ending, Freeze, Kill, Observer, Pageout, Skip, Thawed};
use crate::policy::{HookOn, Policy};
use crate::sample::MemSnapshot;
use eventlog::EventLog;
use events::{ActionEvent, LevelEvent, PageoutEvent};
use hooks::Hooks;
use metrics::Metrics;

/// The pipeline's observer: metrics, the event log, the `/status` ring, the log line of
/// every action and the hooks that follow it.
pub struct Reporter {
    metrics: Arc<Metrics>,
    events: EventLog,
    hooks: Hooks,
}

impl Reporter {
    pub fn new(metrics: Arc<Metrics>, events: EventLog) -> Self {
        Reporter {
            metrics,
            events,
            hooks: Hooks::default(),
        }
    }

    /// A dry run's reporter: no hook runs, whatever the policy says (a dry run must have
    /// no effect outside lowmemd, and a hook is one: a notification, a ticket, a restart).
    pub fn without_hooks(mut self) -> Self {
        self.hooks = Hooks::off();
        self
    }

    /// Writes an action to the event log and the `/status` ring.
    fn record(&self, event: &impl Serialize) {
        self.events.record(event);
        self.metrics.push_action(event);
    }
}

impl Observer for Reporter {
    fn sampled(&self, mem: &MemSnapshot, level: Option<&str>, policy: &Policy) {
        // The memory gauges and /status are the monitor's to write, on every poll: here
        // only what follows from the pipeline's own samples (level hooks).
        self.hooks.adopt(policy);
        if self.hooks.level_started(level)
            && let Some(level) = level
        {
            let event = LevelEvent {
                ts_ms: wall_ms(),
                action: "level",
                level: level.to_string(),
                scope_available_kib: mem.available_kib,
                scope_total_kib: mem.total_kib,
                swap_free_kib: mem.swap_free_kib,
                swap_headroom_kib: mem.swap_headroom_kib,
            };
            self.hooks.fire(HookOn::Level, &event);
        }
    }

    fn recovered(&self) {
        self.metrics.recovered.inc();
    }

    fn ranked(&self, took: Duration, candidates: usize) {
        self.metrics.scan.observe(took.as_secs_f64());
        self.metrics.candidates.set(candidates as i64);
    }

    fn skipped(&self, why: Skip) {
        self.metrics
            .skipped
            .with_label_values(&[why.as_str()])
            .inc();
    }

    fn killed(&self, k: &Kill<'_>) {
        let event = ActionEvent::from_kill(k);
        let m = &self.metrics;
        let labels = [event.cause.reason, k.level.name.as_str()];
        match k.ending {
            Ending::DryRun => m.would_kills.with_label_values(&labels).inc(),
            ending => {
                m.kills.with_label_values(&labels).inc();
                m.decision_to_signal
                    .observe(k.sample_to_signal_ms as f64 / 1000.0);
                match ending {
                    Ending::Exited { signal_to_exit_ms } => {
                        m.signal_to_exit.observe(signal_to_exit_ms as f64 / 1000.0)
                    }
                    _ => m.kills_unconfirmed.inc(),
                }
            }
        }
        events::log_kill(k, &event);
        self.record(&event);
        if k.ending != Ending::DryRun {
            self.hooks.fire(HookOn::Kill, &event);
        }
    }

    fn paged_out(&self, p: &Pageout<'_>) {
        let event = PageoutEvent::from_pageout(p);
        if !p.dry_run {
            let level = [p.level.name.as_str()];
            self.metrics.pageouts.with_label_values(&level).inc();
            self.metrics
                .pageout_bytes
                .with_label_values(&level)
                .inc_by(p.freed_kib * 1024);
        }
        events::log_pageout(p, &event);
        self.record(&event);
        if !p.dry_run {
            self.hooks.fire(HookOn::Pageout, &event);
        }
    }

    fn froze(&self, f: &Freeze<'_>) {
        let event = freeze::FreezeEvent::from_freeze(f);
        self.metrics.freeze.froze(f);
        if !f.dry_run {
            let now = status::FrozenNow {
                cgroup: f.cgroup.to_string(),
                level: f.level.name.clone(),
                pid: f.victim.pid,
                comm: crate::procs::printable(&f.victim.comm).into_owned(),
                since_unix_ms: f.wall_ms,
                freed_kib: f.freed_kib,
            };
            self.metrics.set_frozen(f.cgroup, Some(now));
        }
        freeze::log_freeze(f, &event);
        self.record(&event);
        if !f.dry_run {
            self.hooks.fire(HookOn::Freeze, &event);
        }
    }

    fn thawed(&self, t: &Thawed<'_>) {
        let event = freeze::ThawEvent::from_thaw(t);
        self.metrics.freeze.thawed(t);
        self.metrics.set_frozen(t.cgroup, None);
        freeze::log_thaw(&event);
        self.record(&event);
    }
}
