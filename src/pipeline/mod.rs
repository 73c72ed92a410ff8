//! The conductor: one sample at a time, one victim at a time, in this order —
//! the monitor's decision re-checked on fresh memory (`plan.rs`) → select (scan,
//! rank, pin: `select.rs`) → kill (`kill.rs`), page out (`pageout/`) or freeze
//! (`freeze/`) → the report recorded in the ledger (`ledger.rs`) and told to the observer
//! (`outcome.rs`); frozen apps are thawed (`freeze/thaw.rs`) when their time comes. The
//! stages are functions of what they are given; this file is the only owner of the
//! pipeline's state. Runs on its own thread, fed by the monitor. The policy is taken from
//! the store once per sample, so a reload lands between decisions.

pub mod app;
pub mod confirm;
pub mod freeze;
pub mod group;
pub mod kernel;
pub mod kill;
pub mod ledger;
pub mod outcome;
pub mod owner;
pub mod pageout;
pub mod pin;
pub mod plan;
pub mod rank;
pub mod registered;
pub mod select;
pub mod signal;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::health::Health;
use crate::policy::decide::Decided;
use crate::policy::store::PolicyStore;
use crate::policy::{Action, KillMode, Policy};
use freeze::FreezeReport;
use freeze::frozen::REFUSED_FOR_MS;
use kernel::Kernel;
use kill::KillReport;
use ledger::Ledger;
use outcome::{GroupKill, Observer, Pageout, Skip};
use pageout::PageoutReport;
use pin::Target;
pub use plan::Plan;
use registered::Registrations;
use select::Selection;

pub struct Pipeline {
    kernel: Box<dyn Kernel>,
    store: Arc<PolicyStore>,
    dry_run: bool,
    observer: Box<dyn Observer>,
    self_pid: i32,
    health: Arc<Health>,
    /// Everything remembered between decisions.
    ledger: Ledger,
    /// Why the page-out tier is off, if it is (said once).
    pageout_off: Option<String>,
    /// Why the freeze tier is off, if it is (said once).
    freeze_off: Option<String>,
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
            health,
            ledger: Ledger::default(),
            pageout_off: None,
            freeze_off: None,
            registrations: None,
        }
    }

    /// Reads registrations from this table: victims carry theirs, and a policy with
    /// `candidates = "registered"` picks among registered processes only.
    pub fn set_registrations(&mut self, table: Arc<dyn Registrations>) {
        self.registrations = Some(table);
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

    /// Switches the freeze tier off for good, said once.
    pub fn disable_freeze(&mut self, why: String) {
        if self.freeze_off.is_none() {
            log::warn!(
                "freeze tier disabled: {why}; levels with action \"freeze\" do nothing, kill levels still apply"
            );
            self.freeze_off = Some(why);
        }
    }

    /// Until the monitor hangs up; then (lowmemd stopping) every frozen app is thawed.
    pub fn run(mut self, samples: Receiver<Decided>) {
        loop {
            // While anything is frozen, its thaw is looked at every second even when no
            // sample comes (the monitor wakes us only while a level holds).
            let decided = if self.ledger.frozen.is_empty() {
                samples.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                samples.recv_timeout(TEND_FROZEN_EVERY)
            };
            match decided {
                Ok(decided) => {
                    self.health.pipeline_busy(self.kernel.now_ms());
                    self.handle(decided);
                    let last = self.ledger.last();
                    self.health.pipeline_acted(last.action_ms, last.kill_ms);
                    self.health.pipeline_idle();
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.tend_frozen(&self.store.get(), self.kernel.now_ms(), false)
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.tend_frozen(&self.store.get(), self.kernel.now_ms(), true);
    }

    /// Handles one sample and the monitor's decision on it: at most one decision, each of
    /// its actions confirmed before the next.
    pub fn handle(&mut self, decided: Decided) {
        let Decided { sample, decision } = decided;
        if self.ledger.stale(sample.at_ms) {
            return;
        }
        let policy = self.store.get();
        let level_name = decision.as_ref().map(|d| d.level(&policy).name.as_str());
        self.observer.sampled(&sample.mem, level_name, &policy);
        self.ledger.end_empty_spells(level_name, sample.at_ms);
        // A freeze level, or a more severe one, holding keeps frozen apps frozen.
        let last_freezing = policy
            .levels
            .iter()
            .rposition(|l| l.action == Action::Freeze);
        if decision
            .as_ref()
            .zip(last_freezing)
            .is_some_and(|(d, f)| d.level <= f)
        {
            self.ledger.frozen.held(sample.at_ms);
        }
        self.tend_frozen(&policy, sample.at_ms, false);
        let Some(decision) = decision else { return };
        let level = decision.level(&policy);
        let silenced = self.ledger.silenced(&level.name, sample.at_ms);
        let off = match level.action {
            Action::Pageout => self.pageout_off.is_some(),
            Action::Freeze => self.freeze_off.is_some(),
            _ => false,
        };
        if level.action == Action::None || silenced || off {
            return;
        }
        // One wait a decision for a dying candidate (without process_mrelease), and a
        // bounded number of passes that reap.
        let (mut acted, mut waited, mut reaps) = (0, false, 0);
        while acted < level.max_victims {
            let last = self.ledger.last();
            let kernel = &*self.kernel;
            let Some((plan, escalated)) = plan::recheck(kernel, &policy, &decision, &sample, last)
            else {
                self.observer.recovered();
                log::debug!("pressure passed before the kill");
                return;
            };
            // Memory fell past a more severe level since the sample: a page-out or freeze
            // now would only delay the kill the next sample decides.
            if escalated && plan.level.action.is_gentle() {
                log::debug!(
                    "level {}: a more severe level holds now; leaving it to the next sample",
                    plan.level.name
                );
                return;
            }
            let now = plan.fresh.at_ms;
            let kernel = &self.kernel;
            let (exited, gone) = (|t: &_| kernel.exited(t), |p, s| kernel.gone(p, s));
            self.ledger.prune(now, exited, gone);
            // Choosing and acting on a page-out's or a freeze's victim makes room ahead of
            // need: at lowmemd's own priority, not the kill path's.
            let _calm = plan
                .level
                .action
                .is_gentle()
                .then(crate::priority::Calm::enter);
            let Some(sel) = self.select(&plan, kill::reap_batch(reaps)) else {
                self.ledger.no_candidate(&plan.level.name, now);
                return;
            };
            // Memory on its way back from those someone else killed, time gone by waiting
            // for one, or a batch of them that ended the pass before a victim: decide again
            // on a fresh reading before anyone else dies. Each pass moves those it met out
            // of the ranking, and the passes that reap are bounded.
            if !sel.dying.is_empty() {
                reaps += 1;
                let kernel = &*self.kernel;
                let f = kill::finish(kernel, &plan, sel.dying, self.dry_run, !waited);
                waited |= f.waited;
                let again = f.reaped || f.waited || sel.target.is_none();
                self.ledger.finished(f, kernel.now_ms());
                if again {
                    continue;
                }
            }
            let Some(target) = sel.target else {
                self.ledger.no_candidate(&plan.level.name, now);
                return;
            };
            match plan.level.action {
                Action::Pageout => self.page_out(&plan, target),
                Action::Freeze => self.freeze(&plan, target),
                _ => self.kill(&plan, target),
            }
            acted += 1;
        }
    }

    /// The select stage, its facts told and its empty outcomes remembered.
    /// `None` when there is nobody to act on (not even someone dying).
    fn select(&mut self, plan: &Plan<'_>, reap: usize) -> Option<Selection> {
        let mut excluded = self.ledger.excluded();
        if plan.level.action == Action::Freeze {
            excluded.extend(self.ledger.frozen.excluded(plan.fresh.at_ms));
        }
        let cx = select::Context {
            self_pid: self.self_pid,
            excluded: &excluded,
            registrations: self.registrations.as_deref(),
            reap,
            pageouts: &self.ledger.pageouts,
        };
        let sel: Selection = match select::select(&mut *self.kernel, plan, &cx) {
            Ok(sel) => sel,
            Err(e) => {
                log::error!("cannot list the scope's processes: {e}");
                return None;
            }
        };
        self.observer.ranked(sel.took, sel.candidates);
        for why in &sel.skips {
            self.observer.skipped(*why);
        }
        if sel.candidates == 0 {
            self.ledger.say_nobody(plan);
            return None;
        }
        // Someone to act on again.
        self.ledger.end_empty_spells(None, plan.fresh.at_ms);
        // Those found dying say for themselves what became of them (`kill::finish`).
        let nobody = sel.target.is_none() && sel.dying.is_empty();
        if nobody {
            self.ledger
                .warn_if_all_skipped(&sel.skips, &plan.level.name);
        }
        (!nobody).then_some(sel)
    }

    /// The kill stage — with `kill = "cgroup"` the victim's app when it may go whole —
    /// recorded and told.
    fn kill(&mut self, plan: &Plan<'_>, target: Target) {
        let mut targets = vec![target];
        let mut group = None;
        if plan.level.kill == KillMode::Cgroup {
            if let Some(cgroup) = targets[0].proc.cgroup.clone() {
                let (kernel, me) = (&*self.kernel, self.self_pid);
                match app::members(kernel, plan.policy, &targets[0], &cgroup, me, None) {
                    Ok(others) => {
                        targets.extend(others);
                        group = Some(GroupKill {
                            cgroup,
                            processes: targets.len() as u32,
                            rss_kib: targets.iter().map(|t| t.proc.rss_kib).sum(),
                        });
                    }
                    Err(why) => self.ledger.spare_cgroup(&cgroup, &why, &targets[0].proc),
                }
            } else {
                log::debug!(
                    "pid {}: its cgroup is unknown; killing it alone",
                    targets[0].proc.pid
                );
            }
        }
        match kill::run(&*self.kernel, plan, targets, group, self.dry_run) {
            KillReport::Killed(mut k) => {
                self.observer.killed(&k.told(plan));
                self.ledger.killed(&mut k);
            }
            KillReport::Vanished => self.observer.skipped(Skip::Vanished),
            KillReport::Denied {
                error,
                victim,
                signal_ms,
                at_ms,
            } => {
                self.observer.skipped(Skip::Denied);
                log::error!("{error}");
                // Not picked again before the deadline it would have had.
                let until = signal_ms + plan.level.wait_ms;
                self.ledger.denied(&victim, at_ms, until);
            }
        }
    }

    /// The page-out stage, recorded and told.
    fn page_out(&mut self, plan: &Plan<'_>, target: Target) {
        let cursor = self.ledger.pageouts.cursor(&target.proc);
        match pageout::run(&*self.kernel, plan, &target, cursor, true, self.dry_run) {
            PageoutReport::PagedOut(p) => {
                if p.remembered() {
                    self.ledger
                        .pageouts
                        .record(&target.proc, p.record, plan.level);
                }
                self.observer.paged_out(&Pageout {
                    victim: &target.proc,
                    decision: &plan.decision,
                    level: plan.level,
                    dry_run: self.dry_run,
                    wall_ms: p.wall_ms,
                    requested_kib: p.requested_kib,
                    freed_kib: p.freed_kib,
                    worthless: p.worthless(),
                    before: p.before,
                    after: p.after,
                    scope_available_before_kib: plan.fresh.mem.available_kib,
                    scope_available_after_kib: p.scope_available_after_kib,
                    unfinished: p.unfinished,
                    interrupted: p.interrupted,
                    duration_ms: p.end_ms.saturating_sub(p.started_ms),
                });
                // Cut short for a kill: the level it gave way to may act at once — its
                // cooldown, and the freshness of its PSI and refaults, do not count from
                // a page-out that did not finish.
                if !p.interrupted {
                    self.ledger.paged_out(p.end_ms);
                }
            }
            PageoutReport::NothingToReclaim(record) => {
                self.ledger
                    .pageouts
                    .record(&target.proc, record, plan.level);
            }
            PageoutReport::GaveWay | PageoutReport::Unreadable => {}
            PageoutReport::Refused(why) => self.disable_pageout(why, false),
        }
    }

    /// The freeze stage — the victim's app, when it holds that app alone — recorded and
    /// told; an app that may not be frozen is passed over for a while.
    fn freeze(&mut self, plan: &Plan<'_>, target: Target) {
        let (now, pid) = (plan.fresh.at_ms, target.proc.pid);
        let who = (pid, target.proc.starttime);
        let frozen = &self.ledger.frozen;
        let kernel = &*self.kernel;
        match freeze::run(kernel, plan, target, self.self_pid, frozen, self.dry_run) {
            FreezeReport::Frozen(f) => {
                self.observer.froze(&f.told(plan));
                // Cut short for a kill: that kill is not held back by this freeze's time.
                if !f.gave_way {
                    self.ledger.paged_out(f.end_ms);
                }
                self.ledger.frozen.record(*f, now);
            }
            // Not frozen, but still paged out where the level asks: a process without an
            // app cgroup of its own (a busybox board) gives its memory back all the same.
            FreezeReport::Refused(why, victim) => {
                let level = &plan.level.name;
                log::info!("level {level}: not freezing the app of pid {pid}: {why}");
                self.ledger.frozen.refuse(who, now + REFUSED_FOR_MS);
                if plan.level.freeze.pageout && self.pageout_off.is_none() {
                    self.page_out(plan, victim);
                }
            }
            FreezeReport::Failed(e) => self.disable_freeze(e.to_string()),
        }
    }

    /// Thaws the frozen apps whose time has come (`shutdown`: all), told to the observer.
    /// A thaw the kernel refuses is tried again at the next look.
    fn tend_frozen(&mut self, policy: &Policy, now: u64, shutdown: bool) {
        if self.ledger.frozen.is_empty() {
            return;
        }
        let due = freeze::thaw::due(
            &*self.kernel,
            &self.ledger.frozen,
            now,
            policy.thaw_after_ms(),
            shutdown,
        );
        for (i, reason) in due.into_iter().rev() {
            let app = &self.ledger.frozen.apps()[i];
            if let Err(e) = freeze::thaw::thaw(&*self.kernel, app) {
                log::error!("cannot thaw {}: {e}", app.cgroup);
                continue;
            }
            let app = self.ledger.frozen.thawed(i);
            self.observer.thawed(&app.thawed(reason, now));
        }
    }
}

/// How often frozen apps are looked at when no sample comes.
const TEND_FROZEN_EVERY: Duration = Duration::from_secs(1);
