//! What lowmemd sees and does, for operators: the Prometheus registry, and the `/status`
//! state (`status.rs`) behind the same handle. Updated by the monitor and the pipeline with
//! atomics and one short-held lock, read by the HTTP thread, so a scrape never holds up a
//! decision.
//!
//! Metric and label names are a public interface (docs/observability.md): never rename one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use serde::Serialize;

use super::status::StatusBoard;
use crate::caps::KernelCaps;
use crate::clock::wall_ms;
use crate::health::Health;
use crate::monitor::Source;
use crate::pipeline::outcome::Skip;
use crate::policy::store::ReloadResult;
use crate::policy::{Policy, Reason};
use crate::sample::MemSnapshot;

/// The handoff queues' drop counters, by the `output` label of `lowmemd_log_dropped_total`.
const DROP_COUNTS: [(&str, &std::sync::atomic::AtomicU64); 3] = [
    ("log", &super::handoff::LOG_DROPPED),
    ("event_log", &super::handoff::EVENTS_DROPPED),
    ("hooks", &super::hooks::HOOKS_DROPPED),
];

pub struct Metrics {
    registry: Registry,
    pub kills: IntCounterVec,
    pub would_kills: IntCounterVec,
    pub pageouts: IntCounterVec,
    pub pageout_bytes: IntCounterVec,
    pub pressure_events: IntCounterVec,
    pub scope_total_bytes: IntGauge,
    pub scope_available_bytes: IntGauge,
    pub swap_total_bytes: IntGauge,
    pub swap_free_bytes: IntGauge,
    pub swap_headroom_bytes: IntGauge,
    pub psi_some_avg10: Gauge,
    pub psi_full_avg10: Gauge,
    pub decision_to_signal: Histogram,
    pub signal_to_exit: Histogram,
    pub scan: Histogram,
    pub candidates: IntGauge,
    pub skipped: IntCounterVec,
    pub kills_unconfirmed: IntCounter,
    /// Failed binds of the metrics address (another process holds it): retried.
    pub metrics_bind_failures: IntCounter,
    pub recovered: IntCounter,
    pub reloads: IntCounterVec,
    pub kernel_feature: IntGaugeVec,
    pub level_active: IntGaugeVec,
    pub lmkd_clients: IntGauge,
    pub freeze: super::freeze::FreezeMetrics,
    pub lmkd_commands: IntCounterVec,
    pub lmkd_rejected: IntCounterVec,
    pub lmkd_registered: IntGauge,
    pub lmkd_dropped: IntCounter,
    /// Set from the handoff queues' drop counts when rendered.
    log_dropped: IntCounterVec,
    scope_up: IntGauge,
    health: Arc<Health>,
    build_info: IntGaugeVec,
    start_time: Gauge,
    /// The `/status` document's state.
    status: StatusBoard,
}

// Latency buckets: 1 ms to 10 s, dense around the tens of milliseconds a kill takes.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const SCAN_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

pub(super) fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

pub(super) fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn fgauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new(caps: &KernelCaps, health: Arc<Health>) -> Self {
        let r = Registry::new();
        let m = Metrics {
            kills: counter_vec(
                &r,
                "lowmemd_kills_total",
                "Processes killed, by reason and policy level.",
                &["reason", "level"],
            ),
            would_kills: counter_vec(
                &r,
                "lowmemd_would_kills_total",
                "Kills a dry run decided but did not do.",
                &["reason", "level"],
            ),
            pageouts: counter_vec(
                &r,
                "lowmemd_pageouts_total",
                "Processes paged out, by policy level.",
                &["level"],
            ),
            pageout_bytes: counter_vec(
                &r,
                "lowmemd_pageout_freed_bytes_total",
                "Resident memory freed by page-outs (measured).",
                &["level"],
            ),
            pressure_events: counter_vec(
                &r,
                "lowmemd_pressure_events_total",
                "Kernel pressure notifications and watermark crossings.",
                &["source"],
            ),
            scope_total_bytes: gauge(
                &r,
                "lowmemd_scope_memory_total_bytes",
                "Memory of the scope: MemTotal or the memcg limit.",
            ),
            scope_available_bytes: gauge(
                &r,
                "lowmemd_scope_memory_available_bytes",
                "Available memory of the scope, as lowmemd measures it.",
            ),
            swap_total_bytes: gauge(&r, "lowmemd_swap_total_bytes", "Swap of the machine."),
            swap_free_bytes: gauge(
                &r,
                "lowmemd_swap_free_bytes",
                "Free swap (zram-aware: bounded by RAM for compressed pages).",
            ),
            swap_headroom_bytes: gauge(
                &r,
                "lowmemd_swap_headroom_bytes",
                "What swap can still take, in RAM it frees (zram: free slots times 1 - 1/ratio); memory conditions count it unless the policy says count_swap = false.",
            ),
            psi_some_avg10: fgauge(
                &r,
                "lowmemd_psi_some_avg10",
                "PSI memory some avg10 of the scope, percent.",
            ),
            psi_full_avg10: fgauge(
                &r,
                "lowmemd_psi_full_avg10",
                "PSI memory full avg10 of the scope, percent.",
            ),
            decision_to_signal: histogram(
                &r,
                "lowmemd_decision_to_signal_seconds",
                "From the sample that crossed a threshold to the SIGKILL.",
                &LATENCY_BUCKETS,
            ),
            signal_to_exit: histogram(
                &r,
                "lowmemd_signal_to_exit_seconds",
                "From the SIGKILL to the victim's pidfd readable.",
                &LATENCY_BUCKETS,
            ),
            scan: histogram(
                &r,
                "lowmemd_scan_seconds",
                "Time to list, read and rank the scope's processes.",
                &SCAN_BUCKETS,
            ),
            candidates: gauge(&r, "lowmemd_candidates", "Candidates in the last ranking."),
            skipped: counter_vec(
                &r,
                "lowmemd_victims_skipped_total",
                "Ranked victims not acted on, by why.",
                &["why"],
            ),
            kills_unconfirmed: counter(
                &r,
                "lowmemd_kills_unconfirmed_total",
                "Kills whose exit was not seen before the deadline.",
            ),
            metrics_bind_failures: counter(
                &r,
                "lowmemd_metrics_bind_failures_total",
                "Failed attempts to bind the --metrics-listen address (retried with back-off).",
            ),
            recovered: counter(
                &r,
                "lowmemd_recovered_before_action_total",
                "Decisions dropped because memory recovered before the action.",
            ),
            reloads: counter_vec(
                &r,
                "lowmemd_policy_reloads_total",
                "Policy reloads, by result.",
                &["result"],
            ),
            kernel_feature: gauge_vec(
                &r,
                "lowmemd_kernel_feature",
                "Kernel features lowmemd found (1) or not (0).",
                &["feature"],
            ),
            level_active: gauge_vec(
                &r,
                "lowmemd_level_active",
                "1 for the policy level the last sample fell in.",
                &["level"],
            ),
            freeze: super::freeze::FreezeMetrics::new(&r),
            lmkd_clients: gauge(
                &r,
                "lowmemd_lmkd_clients",
                "Clients connected to the lmkd socket.",
            ),
            lmkd_commands: counter_vec(
                &r,
                "lowmemd_lmkd_commands_total",
                "Valid commands received on the lmkd socket, by command.",
                &["cmd"],
            ),
            lmkd_rejected: counter_vec(
                &r,
                "lowmemd_lmkd_rejected_total",
                "Packets, registrations and connections refused on the lmkd socket, by why.",
                &["why"],
            ),
            lmkd_registered: gauge(
                &r,
                "lowmemd_lmkd_registered_processes",
                "Processes registered over the lmkd socket and alive.",
            ),
            lmkd_dropped: counter(
                &r,
                "lowmemd_lmkd_notifications_dropped_total",
                "Kill notifications not sent because a subscriber's socket buffer was full.",
            ),
            log_dropped: counter_vec(
                &r,
                "lowmemd_log_dropped_total",
                "Log lines and event records dropped because their writer could not keep up (a reader that stopped reading).",
                &["output"],
            ),
            scope_up: gauge(
                &r,
                "lowmemd_scope_up",
                "1 while the scope's memory can be read (0: its cgroup is gone, nothing is protected).",
            ),
            health,
            build_info: gauge_vec(
                &r,
                "lowmemd_build_info",
                "Version and commit of this lowmemd.",
                &["version", "commit"],
            ),
            start_time: fgauge(
                &r,
                "lowmemd_start_time_seconds",
                "Start time of lowmemd, seconds since the Unix epoch.",
            ),
            registry: r,
            status: StatusBoard::new(),
        };
        for (f, on) in [
            ("psi", caps.psi),
            ("pidfd", caps.pidfd),
            ("process_mrelease", caps.process_mrelease),
            ("process_madvise", caps.process_madvise),
        ] {
            m.kernel_feature.with_label_values(&[f]).set(i64::from(on));
        }
        m.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("LOWMEMD_COMMIT").unwrap_or("unknown"),
            ])
            .set(1);
        m.start_time.set(wall_ms() as f64 / 1000.0);
        for s in Source::ALL {
            m.pressure_events.with_label_values(&[s.as_str()]);
        }
        for s in Skip::ALL {
            m.skipped.with_label_values(&[s.as_str()]);
        }
        for r in ReloadResult::ALL {
            m.reloads.with_label_values(&[r.as_str()]);
        }
        for (output, _) in DROP_COUNTS {
            m.log_dropped.with_label_values(&[output]);
        }
        m
    }

    /// Creates the lmkd socket's label sets (named by `lmkd`, which sits above us).
    pub fn adopt_lmkd_labels(&self, cmds: &[&str], whys: &[&str]) {
        for c in cmds {
            self.lmkd_commands.with_label_values(&[c]);
        }
        for w in whys {
            self.lmkd_rejected.with_label_values(&[w]);
        }
    }

    /// The lmkd socket's state for `/status` (its LMK_TARGET table, its clients).
    pub fn set_lmkd_status(&self, v: serde_json::Value) {
        self.status.set_lmkd(v);
    }

    /// Creates every label set the policy can produce, so a fresh daemon shows zeros (a
    /// counter that appears only at its first increment breaks `rate()` and alerts).
    pub fn adopt_policy(&self, policy: &Policy, scope: &str, describe: &str) {
        for l in &policy.levels {
            for r in Reason::ALL {
                self.kills.with_label_values(&[r.as_str(), &l.name]);
                self.would_kills.with_label_values(&[r.as_str(), &l.name]);
            }
            self.pageouts.with_label_values(&[&l.name]);
            self.pageout_bytes.with_label_values(&[&l.name]);
            self.level_active.with_label_values(&[&l.name]);
            if l.action == crate::policy::Action::Freeze {
                self.freeze.adopt_level(&l.name);
            }
        }
        self.status.adopt_policy(policy, scope, describe);
    }

    /// `/status`'s list of frozen apps: `cgroup` frozen (`Some`) or thawed.
    pub fn set_frozen(&self, cgroup: &str, now: Option<super::status::FrozenNow>) {
        self.status.set_frozen(cgroup, now);
    }

    /// The scope as described in `/status`.
    pub fn scope_name(&self) -> String {
        self.status.scope_name()
    }

    pub fn observe_memory(&self, mem: &MemSnapshot, level: Option<&str>, policy: &Policy) {
        self.scope_total_bytes.set((mem.total_kib * 1024) as i64);
        self.scope_available_bytes
            .set((mem.available_kib * 1024) as i64);
        self.swap_total_bytes
            .set((mem.swap_total_kib * 1024) as i64);
        self.swap_free_bytes.set((mem.swap_free_kib * 1024) as i64);
        self.swap_headroom_bytes
            .set((mem.swap_headroom_kib * 1024) as i64);
        for l in &policy.levels {
            self.level_active
                .with_label_values(&[&l.name])
                .set(i64::from(Some(l.name.as_str()) == level));
        }
        self.status.observe_memory(mem, level, policy);
    }

    /// Adds an action (an event-log record) to the `/status` ring.
    pub fn push_action(&self, event: &impl Serialize) {
        self.status.push_action(event);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        for (output, count) in DROP_COUNTS {
            let c = self.log_dropped.with_label_values(&[output]);
            c.inc_by(count.load(Ordering::Relaxed).saturating_sub(c.get()));
        }
        self.scope_up.set(i64::from(self.health.scope_ok()));
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// The `/status` document.
    pub fn status_json(&self) -> Vec<u8> {
        self.status.to_json(&self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::monotonic_ms;
    use crate::report::status::RING;

    fn caps() -> KernelCaps {
        KernelCaps {
            process_mrelease: false,
            ..KernelCaps::everything()
        }
    }

    #[test]
    fn a_fresh_daemon_shows_zeros_for_every_label_set() {
        let m = Metrics::new(&caps(), Arc::new(Health::new(monotonic_ms())));
        m.adopt_policy(&Policy::default(), "system", "built-in");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"lowmemd_kills_total{level="low",reason="low_memory"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"lowmemd_pressure_events_total{source="psi_some"} 0"#));
        assert!(text.contains(r#"lowmemd_kernel_feature{feature="process_mrelease"} 0"#));
        assert!(text.contains("lowmemd_build_info{"));
        assert!(text.contains("lowmemd_signal_to_exit_seconds_count 0"));
    }

    #[test]
    fn status_keeps_the_last_actions() {
        let m = Metrics::new(&caps(), Arc::new(Health::new(monotonic_ms())));
        for i in 0..40 {
            m.push_action(&serde_json::json!({ "n": i }));
        }
        let v: serde_json::Value = serde_json::from_slice(&m.status_json()).unwrap();
        let last = v["last_actions"].as_array().unwrap();
        assert_eq!(last.len(), RING);
        assert_eq!(last[RING - 1]["n"], 39);
        assert_eq!(v["current_level"], "none");
    }
}
