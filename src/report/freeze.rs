//! What leaves the daemon about the freeze tier: the record of each freeze and thaw (event
//! log, `/status`, hooks), its log line, and its metrics. Field names, journal fields and
//! metric labels are a public interface (docs/reference.md, docs/observability.md).

use prometheus::{IntCounterVec, IntGauge, Registry};
use serde::Serialize;

use super::events::{Cause, Victim};
use super::metrics::{counter_vec, gauge};
use crate::pipeline::freeze::frozen::Thaw;
use crate::pipeline::freeze::gates::Gate;
use crate::pipeline::outcome::{Freeze, Thawed};
use crate::procs::printable;

/// One freeze.
#[derive(Debug, Clone, Serialize)]
pub struct FreezeEvent {
    pub ts_ms: u64,
    /// `freeze`, or `would_freeze` in a dry run.
    pub action: &'static str,
    /// The process that picked the app.
    #[serde(flatten)]
    pub victim: Victim,
    pub frozen_cgroup: String,
    /// Stopped alone by SIGSTOP (`frozen_cgroup` is then `pid N`), not a cgroup frozen.
    pub stopped: bool,
    pub processes: u32,
    pub rss_kib: u64,
    /// Processes paged out, and the gates that skipped (or narrowed) the others.
    pub compacted: u32,
    pub gates: Vec<&'static str>,
    /// Resident memory saved, RAM swap (zram) took for it, and what that returned.
    pub resident_saved_kib: u64,
    pub swap_ram_growth_kib: u64,
    pub freed_kib: u64,
    pub scope_available_before_kib: u64,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub cause: Cause,
}

/// One thaw.
#[derive(Debug, Clone, Serialize)]
pub struct ThawEvent {
    pub ts_ms: u64,
    pub action: &'static str,
    pub frozen_cgroup: String,
    pub level: String,
    /// `pressure_gone`, `adj_improved`, `exited`, `no_freeze_level`, `shutdown`.
    pub reason: &'static str,
    pub frozen_ms: u64,
    pub freed_kib: u64,
}

impl FreezeEvent {
    pub fn from_freeze(f: &Freeze<'_>) -> Self {
        FreezeEvent {
            ts_ms: f.wall_ms,
            action: if f.dry_run { "would_freeze" } else { "freeze" },
            victim: Victim::from(f.victim),
            frozen_cgroup: f.cgroup.to_string(),
            stopped: f.stopped,
            processes: f.processes,
            rss_kib: f.rss_kib,
            compacted: f.compacted,
            gates: f.gates.iter().map(|g| g.as_str()).collect(),
            resident_saved_kib: f.resident_saved_kib,
            swap_ram_growth_kib: f.swap_ram_growth_kib,
            freed_kib: f.freed_kib,
            scope_available_before_kib: f.scope_available_before_kib,
            duration_ms: f.duration_ms,
            cause: Cause::new(f.decision, &f.level.name),
        }
    }
}

impl ThawEvent {
    pub fn from_thaw(t: &Thawed<'_>) -> Self {
        ThawEvent {
            ts_ms: t.wall_ms,
            action: "thaw",
            frozen_cgroup: t.cgroup.to_string(),
            level: t.level.to_string(),
            reason: t.reason.as_str(),
            frozen_ms: t.frozen_for_ms,
            freed_kib: t.freed_kib,
        }
    }
}

/// Says a freeze in one line, with the journal fields of a kill.
pub fn log_freeze(f: &Freeze<'_>, e: &FreezeEvent) {
    let v = f.victim;
    let comm = printable(&v.comm);
    let level = f.level.name.as_str();
    let verb = if f.stopped { "stop" } else { "freeze" };
    let what = if f.dry_run {
        format!(
            "would {verb} {} ({} processes, {} KiB)",
            f.cgroup, f.processes, f.rss_kib
        )
    } else {
        format!(
            "{} {} ({} processes, {} KiB); paged out {}: {} KiB saved, {} KiB more in zram, {} KiB returned",
            if f.stopped { "stopped" } else { "froze" },
            f.cgroup,
            f.processes,
            f.rss_kib,
            f.compacted,
            f.resident_saved_kib,
            f.swap_ram_growth_kib,
            f.freed_kib
        )
    };
    log::warn!(
        lowmemd_action = e.action, lowmemd_pid = v.pid, lowmemd_comm = comm.as_ref(),
        lowmemd_reason = e.cause.reason, lowmemd_level = level;
        "{what} for pid {} ({comm}) adj {}: {} at level {level} ({})",
        v.pid, v.effective_adj, e.cause.reason, e.cause.condition
    );
}

pub fn log_thaw(e: &ThawEvent) {
    log::info!(
        lowmemd_action = e.action, lowmemd_reason = e.reason, lowmemd_level = e.level.as_str();
        "thawed {} ({}) after {:.1} s frozen",
        e.frozen_cgroup, e.reason, e.frozen_ms as f64 / 1000.0
    );
}

/// The freeze tier's metrics.
pub struct FreezeMetrics {
    pub frozen: IntGauge,
    pub freezes: IntCounterVec,
    pub would_freezes: IntCounterVec,
    pub thaws: IntCounterVec,
    pub freed_bytes: IntCounterVec,
    pub gates: IntCounterVec,
}

impl FreezeMetrics {
    pub fn new(r: &Registry) -> Self {
        let m = FreezeMetrics {
            frozen: gauge(r, "lowmemd_frozen_apps", "Apps frozen by lowmemd now."),
            freezes: counter_vec(
                r,
                "lowmemd_freezes_total",
                "Apps frozen, by policy level.",
                &["level"],
            ),
            would_freezes: counter_vec(
                r,
                "lowmemd_would_freezes_total",
                "Freezes a dry run decided but did not do.",
                &["level"],
            ),
            thaws: counter_vec(
                r,
                "lowmemd_thaws_total",
                "Apps thawed, by why.",
                &["reason"],
            ),
            freed_bytes: counter_vec(
                r,
                "lowmemd_freeze_freed_bytes_total",
                "What paging frozen apps out returned: resident memory saved minus zram's growth.",
                &["level"],
            ),
            gates: counter_vec(
                r,
                "lowmemd_freeze_pageouts_skipped_total",
                "Page-outs of frozen processes a gate skipped (low_swap: kept to file pages).",
                &["gate"],
            ),
        };
        for t in Thaw::ALL {
            m.thaws.with_label_values(&[t.as_str()]);
        }
        for g in Gate::ALL {
            m.gates.with_label_values(&[g.as_str()]);
        }
        m
    }

    pub fn adopt_level(&self, level: &str) {
        self.freezes.with_label_values(&[level]);
        self.would_freezes.with_label_values(&[level]);
        self.freed_bytes.with_label_values(&[level]);
    }

    pub fn froze(&self, f: &Freeze<'_>) {
        let level = [f.level.name.as_str()];
        if f.dry_run {
            self.would_freezes.with_label_values(&level).inc();
            return;
        }
        self.frozen.inc();
        self.freezes.with_label_values(&level).inc();
        self.freed_bytes
            .with_label_values(&level)
            .inc_by(f.freed_kib * 1024);
        for g in f.gates {
            self.gates.with_label_values(&[g.as_str()]).inc();
        }
    }

    pub fn thawed(&self, t: &Thawed<'_>) {
        self.frozen.dec();
        self.thaws.with_label_values(&[t.reason.as_str()]).inc();
    }
}
