//! The one place that knows the order, one victim at a time, one stage per file:
//! decide (`policy::decide`) → rank (`rank.rs`) → pin (`pin.rs`) → kill (`kill.rs`) or page
//! out (`pageout/`) → confirm (`confirm.rs`) → tell the observer (`outcome.rs`). Runs on its
//! own thread, fed samples by the monitor. The policy is taken from the store once per
//! sample, so a reload lands between decisions.

pub mod confirm;
pub mod group;
pub mod kernel;
pub mod kill;
pub mod outcome;
pub mod pageout;
pub mod pin;
pub mod rank;
pub mod registered;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::health::Health;
use crate::policy::decide::{Decision, LastActions, decide};
use crate::policy::rules::{self, Effect, standing};
use crate::policy::store::PolicyStore;
use crate::policy::{Action, Candidates, Policy};
use crate::procs::{Needs, printable};
use crate::sample::Sample;
use kernel::Kernel;
use outcome::{Observer, Skip};
use pin::{PinError, Target};
use rank::{RankContext, RankedProc, add_swap_to_first_band, candidates, settle};
use registered::Registrations;

/// How long an empty candidate list silences a level: rescanning /proc every 10 ms for
/// nothing would burn the CPU the machine is short of.
const EMPTY_BACKOFF_MS: u64 = 1000;
/// A spell without candidates is over once its level has not held for this long: PSI
/// levels hold for a window at a time, and a stall that comes and goes is one spell.
const EMPTY_OVER_AFTER_MS: u64 = 30_000;

/// A level holding with nobody to act on: said when it starts and when it ends, not at
/// every rescan.
#[derive(Debug, Clone, Copy)]
struct Empty {
    since_ms: u64,
    /// No rescan before this.
    until_ms: u64,
    /// When the level last held without a candidate.
    last_ms: u64,
    checks: u64,
}

/// An incarnation acted on, not to be picked again before `until_ms`.
#[derive(Debug, Clone, Copy)]
struct Recent {
    pid: i32,
    starttime: u64,
    until_ms: u64,
}

impl Recent {
    fn of(p: &RankedProc, until_ms: u64) -> Self {
        Recent {
            pid: p.pid,
            starttime: p.starttime,
            until_ms,
        }
    }
}

pub struct Pipeline {
    kernel: Box<dyn Kernel>,
    store: Arc<PolicyStore>,
    dry_run: bool,
    observer: Box<dyn Observer>,
    self_pid: i32,
    /// End of the last action (confirmed exit, deadline, or a dry run's pretend deadline).
    last_action_ms: Option<u64>,
    /// End of the last kill (as above, page-outs aside).
    last_kill_ms: Option<u64>,
    recent: Vec<Recent>,
    /// Victims signalled whose exit was not seen by their deadline, still pinned: never
    /// picked again until their pidfd says they are gone.
    dying: Vec<Target>,
    /// Skip reasons already warned about because every candidate was skipped for them.
    warned_all_skipped: HashSet<Skip>,
    /// Cgroups a `kill = "cgroup"` level had to spare, already said why (once each).
    warned_cgroups: HashSet<String>,
    health: Arc<Health>,
    /// Per level name: no rescan before this time after a scan found nothing to act on.
    empty: HashMap<String, Empty>,
    pageouts: pageout::tracker::Tracker,
    /// Why the page-out tier is off, if it is (said once).
    pageout_off: Option<String>,
    /// Processes registered by clients (the lmkd socket), when one is served.
    registrations: Option<Arc<dyn Registrations>>,
}

impl Pipeline {
    pub fn new(
        kernel: Box<dyn Kernel>,
        store: Arc<PolicyStore>,
        dry_run: bool,
        observer: Box<dyn Observer>,
        health: Arc<Health>,
    ) -> Self {
        Pipeline {
            kernel,
            store,
            dry_run,
            observer,
            self_pid: std::process::id() as i32,
            last_action_ms: None,
            last_kill_ms: None,
            recent: Vec::new(),
            dying: Vec::new(),
            warned_all_skipped: HashSet::new(),
            warned_cgroups: HashSet::new(),
            health,
            empty: HashMap::new(),
            pageouts: Default::default(),
            pageout_off: None,
            registrations: None,
        }
    }

    /// Reads registrations from this table: victims carry theirs, and a policy with
    /// `candidates = "registered"` picks among registered processes only.
    pub fn set_registrations(&mut self, table: Arc<dyn Registrations>) {
        self.registrations = Some(table);
    }

    pub fn run(mut self, samples: Receiver<Sample>) {
        for sample in samples {
            self.health.pipeline_busy(self.kernel.now_ms());
            self.handle(sample);
            self.health
                .pipeline_acted(self.last_action_ms, self.last_kill_ms);

            self.health.pipeline_idle();
        }
    }

    fn last(&self) -> LastActions {
        LastActions {
            action_ms: self.last_action_ms,
            kill_ms: self.last_kill_ms,
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
        let decision = decide(&sample, &policy, self.last());
        let level_name = decision.as_ref().map(|d| d.level(&policy).name.as_str());
        self.observer.sampled(&sample.mem, level_name, &policy);
        self.end_empty_spells(level_name, sample.at_ms);
        let Some(decision) = decision else {
            return;
        };
        let level = decision.level(&policy);
        let silenced = self
            .empty
            .get(&level.name)
            .is_some_and(|e| sample.at_ms < e.until_ms);
        let pageout_off = level.action == Action::Pageout && self.pageout_off.is_some();
        if level.action == Action::None || silenced || pageout_off {
            return;
        }
        for _ in 0..level.max_victims {
            // Re-read memory right before acting: the shortage may have passed since the
            // sample (or since the previous victim of this decision).
            let mut fresh = sample.clone();
            match self.kernel.memory() {
                Ok(mem) => fresh.mem = mem,
                Err(e) => {
                    log::warn!("re-reading memory before a kill failed: {e}; using the sample")
                }
            }
            fresh.at_ms = self.kernel.now_ms();
            let Some(now_decision) = decide(&fresh, &policy, self.last()) else {
                self.observer.recovered();
                log::debug!("pressure passed before the kill");
                return;
            };
            // Act at the level that holds now, never at a more severe one than decided.
            let decision = if now_decision.more_severe_than(&decision, &policy) {
                decision.clone()
            } else {
                now_decision
            };
            let now = fresh.at_ms;
            self.recent.retain(|r| r.until_ms > now);
            let kernel = &self.kernel;
            self.dying.retain(|t| {
                let gone = kernel.exited(t);
                if gone {
                    log::info!("pid {} finally exited", t.proc.pid);
                }
                !gone
            });
            let Some(target) = self.pick(&policy, &decision, &fresh) else {
                self.no_candidate(&decision, &policy, now);
                return;
            };
            match decision.level(&policy).action {
                Action::Pageout => self.page_out(&policy, &decision, &fresh, target),
                _ => self.kill(&policy, &decision, &sample, &fresh, target),
            }
        }
    }

    /// Ranks the scope's processes and pins the first candidate that is still itself.
    fn pick(&mut self, policy: &Policy, decision: &Decision, fresh: &Sample) -> Option<Target> {
        let level = decision.level(policy);
        // Processes below the floor are not sized, unless a rule could lift them over it.
        let rules_can_raise = policy.rules.iter().any(|r| {
            matches!(r.effect, Effect::SetAdj(_)) || matches!(r.effect, Effect::Shift(n) if n > 0)
        });
        let floor = (!rules_can_raise).then_some(level.min_adj);
        let needs = rules::needs(&policy.rules);
        // VmSwap costs a `status` read per process: only worth it when swap is in use, and
        // then only for the first band (see `rank::add_swap_to_first_band`).
        let with_swap = fresh.mem.swap_used_kib() > 0;
        let scan_started = std::time::Instant::now();
        let scan = match self.kernel.scan(floor, false, needs) {
            Ok(scan) => scan,
            Err(e) => {
                log::error!("cannot list the scope's processes: {e}");
                return None;
            }
        };
        for e in &scan.errors {
            log::debug!("skipping unreadable process: {e}");
        }
        let recent: Vec<(i32, u64)> = self
            .recent
            .iter()
            .map(|r| (r.pid, r.starttime))
            .chain(self.dying.iter().map(|t| (t.proc.pid, t.proc.starttime)))
            .collect();
        let ctx = RankContext {
            self_pid: self.self_pid,
            min_adj: Some(level.min_adj),
            recent: &recent,
            rules: &policy.rules,
        };
        let now = fresh.at_ms;
        let registrations = self.registrations.as_deref();
        let registered_only = policy.candidates == Candidates::Registered;
        let mut cands: Vec<RankedProc> = candidates(scan.procs, &ctx)
            .into_iter()
            .map(|mut c| {
                c.registered = registrations.and_then(|r| r.lookup(c.pid, c.starttime));
                c
            })
            .filter(|c| !registered_only || c.registered.is_some())
            .filter(|c| level.action != Action::Pageout || self.pageouts.eligible(c, level, now))
            .collect();
        if with_swap {
            let kernel = &self.kernel;
            add_swap_to_first_band(&mut cands, |c| kernel.swap_kib(c.pid));
        } else {
            // Filtering may have left out a user's process that another of theirs was
            // ordered behind (`rank::settle`): order what is left.
            settle(&mut cands);
        }
        self.observer.ranked(scan_started.elapsed(), cands.len());
        if cands.is_empty() {
            if !self.empty.contains_key(&level.name) {
                log::warn!(
                    "level {} ({}) holds but no {}process in scope has an effective oom_score_adj >= {}: nothing to do (said once until it ends)",
                    level.name,
                    decision.reason.as_str(),
                    if registered_only { "registered " } else { "" },
                    level.min_adj
                );
            }
            return None;
        }
        // Someone to act on again.
        self.end_empty_spells(None, now);
        let mut skips = Vec::new();
        for cand in cands {
            match self.kernel.pin(cand) {
                Ok(mut t) => {
                    if self.still_eligible(policy, level.min_adj, &mut t) {
                        return Some(t);
                    }
                    skips.push(Skip::RuleChanged);
                    self.observer.skipped(Skip::RuleChanged);
                    log::info!(
                        "skipped pid {} ({}): its rule standing changed since ranking",
                        t.proc.pid,
                        printable(&t.proc.comm)
                    );
                }
                Err(e) => match e.skip() {
                    Some(why) => {
                        skips.push(why);
                        self.observer.skipped(why);
                        // A process that exits by itself is the normal race: not worth a line.
                        if !matches!(e, PinError::Vanished(_)) {
                            log::info!("skipped: {e}");
                        }
                    }
                    None => log::warn!("cannot pin a victim: {e}"),
                },
            }
        }
        self.warn_if_all_skipped(&skips, &level.name);
        None
    }

    /// A decision found nothing to act on: no rescan for a second, and one more check of
    /// the spell that the first one started.
    fn no_candidate(&mut self, decision: &Decision, policy: &Policy, now: u64) {
        let name = &decision.level(policy).name;
        let spell = self.empty.entry(name.clone()).or_insert(Empty {
            since_ms: now,
            until_ms: now,
            last_ms: now,
            checks: 0,
        });
        spell.until_ms = now + EMPTY_BACKOFF_MS;
        spell.last_ms = now;
        spell.checks += 1;
    }

    /// For every level but `holding`: the next time it holds, it looks for candidates at
    /// once (a new process may have come); and its spell without candidates ends when it
    /// has not held for [`EMPTY_OVER_AFTER_MS`], said once.
    fn end_empty_spells(&mut self, holding: Option<&str>, now: u64) {
        self.empty.retain(|name, spell| {
            if holding == Some(name.as_str()) {
                return true;
            }
            spell.until_ms = 0;
            if now.saturating_sub(spell.last_ms) < EMPTY_OVER_AFTER_MS {
                return true;
            }
            log::info!(
                "level {name}: no candidate from {} s to {} s ago ({} checks); that spell is over",
                now.saturating_sub(spell.since_ms) / 1000,
                now.saturating_sub(spell.last_ms) / 1000,
                spell.checks
            );
            false
        });
    }

    /// Every candidate skipped for one reason is a pattern, not a race (a scope named
    /// differently from /proc/PID/cgroup, a missing capability): said at warn level, once
    /// per reason.
    fn warn_if_all_skipped(&mut self, skips: &[Skip], level: &str) {
        let Some(&first) = skips.first() else { return };
        if skips.iter().all(|s| *s == first) && self.warned_all_skipped.insert(first) {
            log::warn!(
                "level {level}: all {} candidates were skipped as {}: {}; nothing was killed",
                skips.len(),
                first.as_str(),
                first.explain()
            );
        }
    }

    /// Rule attributes and oom_score_adj were read when the process was ranked; an exec
    /// or a new adj since (a process that just made itself -1000) may have changed what
    /// it is. Re-read both for the pinned victim and apply the rules again. Its cgroup and
    /// owner are read here too, whatever the rules need: records and hooks name them.
    fn still_eligible(&self, policy: &Policy, min_adj: i16, t: &mut Target) -> bool {
        let always = Needs {
            cgroup: true,
            uid: true,
            ..Default::default()
        };
        let needs = rules::needs(&policy.rules).union(always);
        let (attrs, adj) = self.kernel.reread(t.proc.pid, needs);
        t.proc.cgroup = attrs.unified_cgroup.clone().or(t.proc.cgroup.take());
        t.proc.uid = attrs.uid.or(t.proc.uid);
        if needs.marking {
            t.proc.marking = attrs.marking.clone();
        }
        // Unreadable: it is exiting; the signal will tell. (Read by path after the pin: a
        // recycled number could only make us skip, never hit another process: the
        // signal goes through the pidfd.)
        let adj = adj.unwrap_or(t.proc.oom_score_adj);
        if adj <= -1000 {
            return false;
        }
        let st = standing(&policy.rules, &t.proc.comm, &attrs, adj);
        !st.protected && st.effective_adj >= min_adj
    }
}
