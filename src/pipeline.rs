//! The one place that knows the order: decide → rank → pin → act → confirm, one victim at a
//! time. Runs on its own thread, fed samples by the monitor. The policy is taken from the
//! store once per sample, so a reload lands between decisions.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::act;
use crate::caps::KernelCaps;
use crate::confirm::{self, Outcome};
use crate::events::{ActionEvent, Cause, EventLog, PageoutEvent, Victim, wall_ms};
use crate::metrics::Metrics;
use crate::monitor::{Sample, monotonic_ms};
use crate::pageout::{self, Region};
use crate::policy::decide::{Decision, decide};
use crate::policy::rules::{self, Effect, standing};
use crate::policy::store::PolicyStore;
use crate::policy::{Action, Level, Policy};
use crate::procs::ProcCache;
use crate::procs::{ProcError, ProcRoot};
use crate::rank::{RankContext, RankedProc, candidates};
use crate::scope::Scope;
use crate::target::{self, PinError, Target};

/// A page-out that freed less than this found nothing worth the work (binary text, a few
/// pages): the process is not tried again until it grows.
const PAGEOUT_NOTHING_KIB: u64 = 1024;
/// Bytes per process_madvise call: bounds how long one call holds the target's mmap lock.
const PAGEOUT_CALL_BYTES: u64 = 32 << 20;
/// The kernel takes at most this many iovecs per call (UIO_MAXIOV).
const MAX_IOV: usize = 1024;

/// What was done to one incarnation last time it was paged out.
#[derive(Debug, Clone, Copy)]
struct PageoutRecord {
    at_ms: u64,
    rss_after_kib: u64,
    freed_kib: u64,
    /// Bytes of its plan already advised, when an event's cap stopped part-way.
    cursor_bytes: u64,
}

/// How long an empty candidate list silences a level: rescanning /proc every 10 ms for
/// nothing would burn the CPU the machine is short of.
const EMPTY_BACKOFF_MS: u64 = 1000;

pub struct Pipeline {
    scope: Arc<Scope>,
    store: Arc<PolicyStore>,
    caps: KernelCaps,
    dry_run: bool,
    events: EventLog,
    self_pid: i32,
    /// End of the last action (confirmed exit, deadline, or a dry run's pretend deadline).
    last_action_ms: Option<u64>,
    /// Incarnations acted on, with the time until which they are not picked again.
    recent: Vec<(i32, u64, u64)>,
    /// The process table reader, kept across decisions (open fds per process).
    procs: ProcCache,
    /// Per level name: no rescan before this time after a scan found nothing to kill.
    empty_until_ms: Vec<(String, u64)>,
    /// Per incarnation (pid, starttime): the last page-out.
    pageouts: HashMap<(i32, u64), PageoutRecord>,
    /// Why the page-out tier is off, if it is (said once).
    pageout_off: Option<String>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    pub fn new(
        scope: Arc<Scope>,
        store: Arc<PolicyStore>,
        caps: KernelCaps,
        dry_run: bool,
        events: EventLog,
        metrics: Arc<Metrics>,
        cache_capacity: usize,
    ) -> Self {
        let procs = ProcCache::new(scope.proc.clone(), cache_capacity);
        Pipeline {
            procs,
            scope,
            store,
            caps,
            dry_run,
            events,
            self_pid: std::process::id() as i32,
            last_action_ms: None,
            recent: Vec::new(),
            empty_until_ms: Vec::new(),
            pageouts: HashMap::new(),
            pageout_off: None,
            metrics,
        }
    }

    /// Writes an action to the event log and the `/status` ring.
    fn record(&self, event: &impl serde::Serialize) {
        self.events.record(event);
        self.metrics.push_action(event);
    }

    /// Switches the page-out tier off for good. `announced`: the reason was already said
    /// (the start-up fallbacks); otherwise it is logged here, once.
    pub fn disable_pageout(&mut self, why: String, announced: bool) {
        if self.pageout_off.is_none() {
            if !announced {
                log::warn!(
                    "page-out tier disabled: {why}; levels with action \"pageout\" do nothing, kill levels still apply"
                );
            }
            self.pageout_off = Some(why);
        }
    }

    pub fn run(mut self, samples: Receiver<Sample>) {
        for sample in samples {
            self.handle(sample);
        }
    }

    /// Handles one sample: at most one decision, each of its actions confirmed before the
    /// next.
    pub fn handle(&mut self, sample: Sample) {
        // A sample taken before the last action ended does not show its effect: wait for a
        // fresh one rather than kill twice for the same shortage.
        if self.last_action_ms.is_some_and(|t| sample.at_ms <= t) {
            return;
        }
        let policy = self.store.get();
        let decision = decide(&sample, &policy, self.last_action_ms);
        let level_name = decision.as_ref().map(|d| d.level(&policy).name.as_str());
        self.metrics
            .observe_memory(&sample.mem, level_name, &policy);
        let Some(decision) = decision else {
            return;
        };
        let level = decision.level(&policy);
        let silenced = self
            .empty_until_ms
            .iter()
            .any(|(name, until)| *name == level.name && sample.at_ms < *until);
        let pageout_off = level.action == Action::Pageout && self.pageout_off.is_some();
        if level.action == Action::None || silenced || pageout_off {
            return;
        }
        for _ in 0..level.max_victims {
            // Re-read memory right before acting: the shortage may have passed since the
            // sample (or since the previous victim of this decision).
            let mut fresh = sample.clone();
            match self.scope.read_memory() {
                Ok(mem) => fresh.mem = mem,
                Err(e) => {
                    log::warn!("re-reading memory before a kill failed: {e}; using the sample")
                }
            }
            fresh.at_ms = monotonic_ms();
            let Some(now_decision) = decide(&fresh, &policy, self.last_action_ms) else {
                self.metrics.recovered.inc();
                log::debug!("pressure passed before the kill");
                return;
            };
            // Act at the level that holds now, never at a more severe one than decided.
            let decision = if now_decision.level >= decision.level {
                now_decision
            } else {
                decision.clone()
            };
            let now = fresh.at_ms;
            self.recent.retain(|r| r.2 > now);
            let Some(target) = self.pick(&policy, &decision, &fresh) else {
                let name = decision.level(&policy).name.clone();
                self.empty_until_ms.retain(|(n, _)| *n != name);
                self.empty_until_ms.push((name, now + EMPTY_BACKOFF_MS));
                return;
            };
            match decision.level(&policy).action {
                Action::Pageout => self.page_out(&policy, &decision, &fresh, target),
                _ => self.act(&policy, &decision, &sample, &fresh, target),
            }
        }
    }

    /// A page-out candidate: never paged out, or part-way through, or left alone long enough,
    /// or grown back since. One that yielded nothing waits until it grows.
    fn pageout_eligible(&self, p: &RankedProc, level: &Level, now: u64) -> bool {
        let Some(r) = self.pageouts.get(&(p.pid, p.starttime)) else {
            return true;
        };
        let grown =
            p.rss_kib as f64 > r.rss_after_kib as f64 * (1.0 + level.pageout.regrow_pct / 100.0);
        if r.cursor_bytes > 0 {
            return true;
        }
        if r.freed_kib < PAGEOUT_NOTHING_KIB {
            return grown;
        }
        grown || now.saturating_sub(r.at_ms) >= level.pageout.again_after_ms
    }

    /// Pages out what the kernel can reclaim of the pinned `target`, up to the level's
    /// per-event cap, and measures what really left RAM.
    fn page_out(&mut self, policy: &Policy, decision: &Decision, fresh: &Sample, target: Target) {
        let level = decision.level(policy);
        let p = target.proc.clone();
        let key = (p.pid, p.starttime);
        let started = monotonic_ms();
        let proc = &self.scope.proc;
        let (before, regions) = match (proc.mem_detail(p.pid), read_smaps(proc, p.pid)) {
            (Ok(b), Ok(r)) => (b, r),
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("page-out of pid {} skipped: {e}", p.pid);
                return;
            }
        };
        let page = rustix::param::page_size() as u64;
        let planned = pageout::plan(&regions, self.scope.swap_active(), page);
        let ranges: Vec<(u64, u64)> = planned.iter().map(|&(s, l, _)| (s, l)).collect();
        let total_bytes: u64 = ranges.iter().map(|r| r.1).sum();
        let cursor = self.pageouts.get(&key).map_or(0, |r| r.cursor_bytes);
        let cap = level.pageout.max_kib_per_event * 1024;
        let batches = pageout::batches(&ranges, cursor, PAGEOUT_CALL_BYTES, cap, MAX_IOV, page);
        let this_event: u64 = batches.iter().flatten().map(|r| r.1).sum();
        let requested_kib = planned_resident_kib(&planned, cursor, this_event);
        // A dry run plans and reports, and advises nothing.
        let calls = if self.dry_run {
            act::PageoutCalls::default()
        } else {
            act::pageout(&target, &batches)
        };
        if let Some(e) = calls.refused {
            let why = format!(
                "process_madvise refused ({e}): it needs CAP_SYS_NICE and ptrace access to the target"
            );
            self.disable_pageout(why, false);
            return;
        }
        let after = proc.mem_detail(p.pid).unwrap_or_default();
        let end = monotonic_ms();
        let freed_kib = before.resident_kib().saturating_sub(after.resident_kib());
        let next_cursor = cursor + this_event;
        let unfinished = !calls.exited && next_cursor < total_bytes;
        self.pageouts.insert(
            key,
            PageoutRecord {
                at_ms: end,
                rss_after_kib: after.resident_kib(),
                freed_kib,
                cursor_bytes: if unfinished { next_cursor } else { 0 },
            },
        );
        // Forget incarnations not seen for a long time (exited ones never come back).
        let horizon = 10 * level.pageout.again_after_ms.max(60_000);
        self.pageouts
            .retain(|_, r| end.saturating_sub(r.at_ms) < horizon);
        if !self.dry_run {
            self.metrics
                .pageouts
                .with_label_values(&[&level.name])
                .inc();
            self.metrics
                .pageout_bytes
                .with_label_values(&[&level.name])
                .inc_by(freed_kib * 1024);
        }
        let available_after = self.scope.read_memory().ok().map(|m| m.available_kib);
        let event = PageoutEvent {
            ts_ms: wall_ms(),
            action: if self.dry_run {
                "would_pageout"
            } else {
                "pageout"
            },
            victim: Victim::from(&p),
            requested_kib,
            freed_kib,
            rss_anon_before_kib: before.rss_anon_kib,
            rss_anon_after_kib: after.rss_anon_kib,
            rss_file_before_kib: before.rss_file_kib,
            rss_file_after_kib: after.rss_file_kib,
            swap_delta_kib: after.swap_kib.saturating_sub(before.swap_kib),
            scope_available_before_kib: fresh.mem.available_kib,
            scope_available_after_kib: available_after,
            unfinished,
            duration_ms: end.saturating_sub(started),
            cause: Cause::new(decision, &level.name),
        };
        let what = if self.dry_run {
            format!("would page out {requested_kib} KiB (dry run: nothing advised)")
        } else if freed_kib < PAGEOUT_NOTHING_KIB {
            format!(
                "paged out {freed_kib} KiB of {requested_kib} KiB asked: nothing worth it, not again until it grows"
            )
        } else {
            format!("paged out {freed_kib} KiB of {requested_kib} KiB asked")
        };
        log::warn!(
            lowmemd_action = event.action, lowmemd_pid = p.pid, lowmemd_comm = p.comm.as_str(),
            lowmemd_reason = event.cause.reason, lowmemd_level = level.name.as_str();
            "pid {} ({}) adj {}: {what} in {} ms ({} at level {}: {})",
            p.pid,
            p.comm,
            p.effective_adj,
            event.duration_ms,
            event.cause.reason,
            level.name,
            event.cause.condition,
        );
        self.record(&event);
        self.last_action_ms = Some(end);
    }

    /// Ranks the scope's processes and pins the first candidate that is still itself.
    fn pick(&mut self, policy: &Policy, decision: &Decision, fresh: &Sample) -> Option<Target> {
        let level = decision.level(policy);
        let pids = match self.scope.pids() {
            Ok(p) => p,
            Err(e) => {
                log::error!("cannot list the scope's processes: {e}");
                return None;
            }
        };
        // Processes below the floor are not sized, unless a rule could lift them over it.
        let rules_can_raise = policy.rules.iter().any(|r| {
            matches!(r.effect, Effect::SetAdj(_)) || matches!(r.effect, Effect::Shift(n) if n > 0)
        });
        let floor = (!rules_can_raise).then_some(level.min_adj);
        let needs = rules::needs(&policy.rules);
        // VmSwap costs a `status` read per process: only worth it when swap is in use.
        let scan_started = std::time::Instant::now();
        let scan = self
            .procs
            .scan_with(pids, floor, fresh.mem.swap_used_kib() > 0, needs);
        for e in &scan.errors {
            log::debug!("skipping unreadable process: {e}");
        }
        let recent: Vec<(i32, u64)> = self.recent.iter().map(|r| (r.0, r.1)).collect();
        let ctx = RankContext {
            self_pid: self.self_pid,
            min_adj: Some(level.min_adj),
            recent: &recent,
            rules: &policy.rules,
        };
        let now = fresh.at_ms;
        let cands: Vec<RankedProc> = candidates(scan.procs, &ctx)
            .into_iter()
            .filter(|c| level.action != Action::Pageout || self.pageout_eligible(c, level, now))
            .collect();
        self.metrics
            .scan
            .observe(scan_started.elapsed().as_secs_f64());
        self.metrics.candidates.set(cands.len() as i64);
        if cands.is_empty() {
            log::warn!(
                "level {} ({}) fired but no process in scope has an effective oom_score_adj >= {}",
                level.name,
                decision.reason.as_str(),
                level.min_adj
            );
            return None;
        }
        for cand in cands {
            match target::pin(&self.scope.proc, &self.scope, cand, self.caps.pidfd) {
                Ok(t) if self.still_eligible(policy, level.min_adj, &t) => return Some(t),
                Ok(t) => {
                    self.metrics
                        .skipped
                        .with_label_values(&["rule_changed"])
                        .inc();
                    log::info!(
                        "skipped pid {} ({}): its rule standing changed since ranking",
                        t.proc.pid,
                        t.proc.comm
                    );
                }
                Err(PinError::Vanished(_)) => {
                    self.metrics.skipped.with_label_values(&["vanished"]).inc()
                }
                Err(e @ PinError::Recycled { .. }) => {
                    self.metrics
                        .skipped
                        .with_label_values(&["identity_changed"])
                        .inc();
                    log::info!("skipped: {e}");
                }
                Err(e @ PinError::OutOfScope(_)) => {
                    self.metrics
                        .skipped
                        .with_label_values(&["out_of_scope"])
                        .inc();
                    log::info!("skipped: {e}");
                }
                Err(e) => log::warn!("cannot pin a victim: {e}"),
            }
        }
        None
    }

    /// Rule attributes were read when the process was first seen; an exec since may have
    /// changed what it is. Re-read them for the pinned victim and apply the rules again.
    fn still_eligible(&self, policy: &Policy, min_adj: i16, t: &Target) -> bool {
        if policy.rules.is_empty() {
            return true;
        }
        let attrs = self
            .scope
            .proc
            .read_attrs(t.proc.pid, rules::needs(&policy.rules));
        let st = standing(&policy.rules, &t.proc.comm, &attrs, t.proc.oom_score_adj);
        !st.protected && st.effective_adj >= min_adj
    }

    fn act(
        &mut self,
        policy: &Policy,
        decision: &Decision,
        sample: &Sample,
        fresh: &Sample,
        target: Target,
    ) {
        let level = decision.level(policy);
        let p = target.proc.clone();
        let signal_ms = monotonic_ms();
        let mut event = ActionEvent {
            ts_ms: wall_ms(),
            action: if self.dry_run { "would_kill" } else { "kill" },
            victim: Victim::from(&p),
            rss_kib: p.rss_kib,
            swap_kib: p.swap_kib,
            cause: Cause::new(decision, &level.name),
            scope_available_kib: sample.mem.available_kib,
            scope_total_kib: sample.mem.total_kib,
            available_at_kill_kib: fresh.mem.available_kib,
            psi_some_avg10: None,
            psi_full_avg10: None,
            swap_free_kib: sample.mem.swap_free_kib,
            thrashing_pct: sample.thrashing_pct,
            exit_confirmed: false,
            kill_to_exit_ms: None,
            sample_to_kill_ms: signal_ms.saturating_sub(sample.at_ms),
            available_after_kib: None,
        };
        let who = format!(
            "pid {} ({}) adj {}{} size {} KiB",
            p.pid,
            p.comm,
            p.effective_adj,
            p.rule
                .as_ref()
                .map(|r| format!(" by rule {r}"))
                .unwrap_or_default(),
            p.size_kib()
        );
        if self.dry_run {
            self.metrics
                .would_kills
                .with_label_values(&[event.cause.reason, &level.name])
                .inc();
            log::warn!(
                lowmemd_action = "would_kill", lowmemd_pid = p.pid, lowmemd_comm = p.comm.as_str(),
                lowmemd_reason = event.cause.reason, lowmemd_level = level.name.as_str();
                "would kill {who}: {} at level {} ({})",
                event.cause.reason,
                level.name,
                event.cause.condition
            );
            self.record(&event);
            // Nothing will exit: pace as if the kill had run into its deadline.
            self.last_action_ms = Some(signal_ms + level.wait_ms);
            self.recent.push((p.pid, p.starttime, u64::MAX));
            return;
        }
        if let Err(e) = act::kill(&target, &self.caps, &self.scope.proc) {
            self.metrics.skipped.with_label_values(&["denied"]).inc();
            log::error!("{e}");
            self.last_action_ms = Some(monotonic_ms());
            self.recent
                .push((p.pid, p.starttime, signal_ms + level.wait_ms));
            return;
        }
        self.metrics
            .kills
            .with_label_values(&[event.cause.reason, &level.name])
            .inc();
        self.metrics
            .decision_to_signal
            .observe(event.sample_to_kill_ms as f64 / 1000.0);
        let psi = self
            .scope
            .psi_path()
            .and_then(|p| crate::monitor::psi::read_avg10(&p));
        (event.psi_some_avg10, event.psi_full_avg10) = (psi.map(|p| p.0), psi.map(|p| p.1));
        let outcome = confirm::wait_target(&target, &self.scope.proc, signal_ms + level.wait_ms);
        let end = monotonic_ms();
        match outcome {
            Outcome::Exited { at_ms } => {
                event.exit_confirmed = true;
                event.kill_to_exit_ms = Some(at_ms.saturating_sub(signal_ms));
                self.metrics
                    .signal_to_exit
                    .observe(at_ms.saturating_sub(signal_ms) as f64 / 1000.0);
            }
            Outcome::TimedOut => {
                self.metrics.kills_unconfirmed.inc();
                // Still dying (e.g. in uninterruptible I/O): don't pick it again for a while.
                self.recent
                    .push((p.pid, p.starttime, end + 10 * level.wait_ms));
            }
        }
        event.available_after_kib = self.scope.read_memory().ok().map(|m| m.available_kib);
        log::warn!(
            lowmemd_action = "kill", lowmemd_pid = p.pid, lowmemd_comm = p.comm.as_str(),
            lowmemd_reason = event.cause.reason, lowmemd_level = level.name.as_str();
            "killed {who}: {} at level {} ({}); {}",
            event.cause.reason,
            level.name,
            event.cause.condition,
            match event.kill_to_exit_ms {
                Some(ms) => format!(
                    "exited {ms} ms after the signal, {} ms after the sample",
                    end.saturating_sub(sample.at_ms)
                ),
                None => format!("NOT confirmed within {} ms", level.wait_ms),
            }
        );
        self.record(&event);
        self.last_action_ms = Some(end);
    }
}

/// The victim's mappings with their resident sizes and flags.
fn read_smaps(proc: &ProcRoot, pid: i32) -> Result<Vec<Region>, ProcError> {
    let path = proc.file(pid, "smaps");
    let file = std::fs::File::open(&path).map_err(|e| ProcError::Io {
        path: path.clone(),
        source: e,
    })?;
    pageout::parse_smaps(std::io::BufReader::new(file))
        .map_err(|what| ProcError::Malformed { path, what })
}

/// The resident KiB inside the planned ranges that this event covers (bytes `cursor` to
/// `cursor + len` of the plan), assuming residency spread evenly within each range.
fn planned_resident_kib(planned: &[(u64, u64, u64)], cursor: u64, len: u64) -> u64 {
    let (mut at, mut kib) = (0u64, 0f64);
    for &(_, bytes, rss_kib) in planned {
        let (lo, hi) = (at.max(cursor), (at + bytes).min(cursor + len));
        if hi > lo {
            kib += rss_kib as f64 * (hi - lo) as f64 / bytes as f64;
        }
        at += bytes;
    }
    kib.round() as u64
}
