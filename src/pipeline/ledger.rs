//! What the pipeline remembers between decisions, and nothing else: when it last acted and
//! killed, the incarnations it acted on lately and those it signalled that have not exited,
//! levels holding with nobody to act on, what it has said once, the page-out tracker and
//! the apps frozen.
//! The stages report what happened; the conductor hands each report to [`Ledger`], whose
//! methods are the only state transitions. Unit-tested alone, without a kernel.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::policy::decide::LastActions;
use crate::policy::{Action, Candidates};
use crate::procs::printable;

use super::Plan;
use super::freeze::frozen::Frozen;
use super::kill::{Finished, Killed};
use super::outcome::Skip;
use super::pageout::tracker::Tracker;
use super::pin::Target;
use super::rank::RankedProc;

/// How long an empty candidate list silences a level: rescanning /proc every 10 ms for
/// nothing would burn the CPU the machine is short of.
pub const EMPTY_BACKOFF_MS: u64 = 1000;
/// A spell without candidates is over once its level has not held for this long: PSI
/// levels hold for a window at a time, and a stall that comes and goes is one spell.
const EMPTY_OVER_AFTER_MS: u64 = 30_000;
/// Cgroups remembered as already explained (a fallback is said once per cgroup); a desktop
/// has a few dozen apps at a time, each under a fresh name.
const WARNED_CGROUPS_MAX: usize = 1024;
/// Victims signalled that have not exited, held by their pidfds at most this many: a user
/// can keep their own processes from exiting (a ptrace stop with SIGKILL pending), and
/// every pidfd held is a file descriptor the next victim may need.
const DYING_PINNED_MAX: usize = 16;
/// Those found dying (and victims past [`DYING_PINNED_MAX`]) are passed over with no fd
/// held, until /proc says they are gone: looked at this often, so that thousands cost a
/// read each every few seconds, not every pass.
const DYING_LOOK_MS: u64 = 5000;
/// At most this many remembered so; past it the oldest are forgotten (met again, they are
/// reaped again: cheap, and memory comes back if any was left).
const DYING_UNPINNED_MAX: usize = 4096;

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

#[derive(Debug, Default)]
pub struct Ledger {
    /// End of the last action (confirmed exit, deadline, or a dry run's pretend deadline).
    last_action_ms: Option<u64>,
    /// End of the last kill (as above, page-outs aside).
    last_kill_ms: Option<u64>,
    /// Incarnations passed over for a while: acted on lately, or refused.
    recent: Vec<Recent>,
    /// Victims signalled whose exit was not seen by their deadline, still pinned (the
    /// last [`DYING_PINNED_MAX`]): never picked again until their pidfd says they are gone.
    dying: Vec<Target>,
    /// Candidates found dying, and victims past the pinned ones, by (pid, starttime) alone,
    /// no fd held: never picked again until /proc says they are gone (looked at every
    /// [`DYING_LOOK_MS`]).
    unpinned: VecDeque<(i32, u64)>,
    unpinned_looked_ms: u64,
    /// Per level name: a spell of holding without a candidate.
    empty: HashMap<String, Empty>,
    /// Skip reasons already warned about because every candidate was skipped for them.
    warned_all_skipped: HashSet<Skip>,
    /// Cgroups a `kill = "cgroup"` level had to spare, already said why (once each).
    warned_cgroups: HashSet<String>,
    /// The last page-out of each incarnation.
    pub pageouts: Tracker,
    /// The apps frozen, and what freezing remembers.
    pub frozen: Frozen,
}

impl Ledger {
    pub fn last(&self) -> LastActions {
        LastActions {
            action_ms: self.last_action_ms,
            kill_ms: self.last_kill_ms,
        }
    }

    /// A sample taken before the last action ended does not show its effect: wait for a
    /// fresh one rather than kill twice for the same shortage.
    pub fn stale(&self, sample_ms: u64) -> bool {
        self.last_action_ms.is_some_and(|t| sample_ms <= t)
    }

    /// Forgets recent incarnations whose pause is over and dying ones that are gone
    /// (`exited`, by pidfd; `gone`, by pid and starttime, every [`DYING_LOOK_MS`]).
    pub fn prune(
        &mut self,
        now: u64,
        exited: impl Fn(&Target) -> bool,
        gone: impl Fn(i32, u64) -> bool,
    ) {
        self.recent.retain(|r| r.until_ms > now);
        self.dying.retain(|t| {
            let gone = exited(t);
            if gone {
                log::info!("pid {} finally exited", t.proc.pid);
            }
            !gone
        });
        if now >= self.unpinned_looked_ms + DYING_LOOK_MS {
            self.unpinned_looked_ms = now;
            self.unpinned
                .retain(|&(pid, starttime)| !gone(pid, starttime));
        }
    }

    /// The incarnations (pid, starttime) not to pick: acted on lately, or still dying.
    pub fn excluded(&self) -> BTreeSet<(i32, u64)> {
        self.recent
            .iter()
            .map(|r| (r.pid, r.starttime))
            .chain(self.dying.iter().map(|t| (t.proc.pid, t.proc.starttime)))
            .chain(self.unpinned.iter().copied())
            .collect()
    }

    /// A kill ended (or a dry run's would-be kill, paced as if it ran into its deadline).
    pub fn killed(&mut self, k: &mut Killed) {
        self.last_action_ms = Some(k.end_ms);
        self.last_kill_ms = Some(k.end_ms);
        // A dry run's victims do not exit: never picked again.
        for (pid, starttime) in k.dry_run_victims.drain(..) {
            self.recent.push(Recent {
                pid,
                starttime,
                until_ms: u64::MAX,
            });
        }
        // Still there (frozen, in uninterruptible I/O, stopped by a tracer): never picked
        // again until it is gone; the last few kept pinned, the older ones unpinned.
        self.dying.append(&mut k.unexited);
        let over = self.dying.len().saturating_sub(DYING_PINNED_MAX);
        let oldest: Vec<Target> = self.dying.drain(..over).collect();
        self.unpin(oldest);
    }

    /// Candidates found dying already, reaped or waited for at `now`: never picked again
    /// until they are gone, their pidfds closed. Once memory came back or time went by,
    /// stall and thrashing evidence from before counts no more, as after a kill.
    pub fn finished(&mut self, f: Finished, now: u64) {
        if f.came_back || f.waited {
            self.last_action_ms = Some(now);
        }
        self.unpin(f.dying);
    }

    /// Remembers `targets` by (pid, starttime) alone, closing their pidfds.
    fn unpin(&mut self, targets: Vec<Target>) {
        let who = targets.iter().map(|t| (t.proc.pid, t.proc.starttime));
        self.unpinned.extend(who);
        let over = self.unpinned.len().saturating_sub(DYING_UNPINNED_MAX);
        self.unpinned.drain(..over);
    }

    /// The kernel refused to signal `victim` at `now`: not picked again until its deadline.
    pub fn denied(&mut self, victim: &RankedProc, now: u64, until_ms: u64) {
        self.last_action_ms = Some(now);
        self.recent.push(Recent::of(victim, until_ms));
    }

    /// A page-out ended at `end_ms`.
    pub fn paged_out(&mut self, end_ms: u64) {
        self.last_action_ms = Some(end_ms);
    }

    /// Whether `level` found nobody lately and may not rescan yet.
    pub fn silenced(&self, level: &str, now: u64) -> bool {
        self.empty.get(level).is_some_and(|e| now < e.until_ms)
    }

    /// Whether `level` is in a spell without candidates (it has been said already).
    pub fn in_empty_spell(&self, level: &str) -> bool {
        self.empty.contains_key(level)
    }

    /// A level holds but no process in scope is a candidate: said once until the spell
    /// ends.
    pub fn say_nobody(&self, plan: &Plan<'_>) {
        let level = plan.level;
        if self.in_empty_spell(&level.name) {
            return;
        }
        log::warn!(
            "level {} ({}) holds but no {}process in scope has an effective oom_score_adj >= {}: nothing to do (said once until it ends)",
            level.name,
            plan.decision.reason.as_str(),
            match (plan.policy.candidates, level.action) {
                (Candidates::Registered, _) => "registered ",
                (_, Action::Freeze) => "unfrozen, freezable ",
                _ => "",
            },
            level.min_adj
        );
    }

    /// A decision of `level` found nothing to act on: no rescan for a second, and one more
    /// check of the spell that the first one started.
    pub fn no_candidate(&mut self, level: &str, now: u64) {
        let spell = self.empty.entry(level.to_string()).or_insert(Empty {
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
    pub fn end_empty_spells(&mut self, holding: Option<&str>, now: u64) {
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
    pub fn warn_if_all_skipped(&mut self, skips: &[Skip], level: &str) {
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

    /// The victims signalled that have not exited, pinned.
    pub fn dying(&self) -> &[Target] {
        &self.dying
    }

    /// Those passed over until they are gone, no fd held.
    #[cfg(test)]
    pub(crate) fn unpinned(&self) -> &VecDeque<(i32, u64)> {
        &self.unpinned
    }

    /// Whether sparing `cgroup` was said already.
    #[cfg(test)]
    pub(crate) fn spared(&self, cgroup: &str) -> bool {
        self.warned_cgroups.contains(cgroup)
    }

    /// A `kill = "cgroup"` level has to spare `cgroup` for `why`: said once per cgroup.
    pub fn spare_cgroup(&mut self, cgroup: &str, why: &str, victim: &RankedProc) {
        // Apps come and go under new names: bound what is remembered.
        if self.warned_cgroups.len() >= WARNED_CGROUPS_MAX {
            self.warned_cgroups.clear();
        }
        if self.warned_cgroups.insert(cgroup.to_string()) {
            log::warn!(
                "not killing cgroup {cgroup} whole: {why}; killing pid {} ({}) alone (said once per cgroup)",
                victim.pid,
                printable(&victim.comm)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::outcome::Ending;
    use crate::procs::ProcInfo;

    fn proc(pid: i32, starttime: u64) -> RankedProc {
        let mut p = ProcInfo::for_tests(pid, 0, 1000);
        p.starttime = starttime;
        RankedProc::from(p)
    }

    #[test]
    fn a_sample_from_before_the_last_action_is_stale() {
        let mut l = Ledger::default();
        assert!(!l.stale(5));
        l.paged_out(10);
        assert!(l.stale(10) && !l.stale(11));
        assert_eq!(l.last().kill_ms, None, "a page-out is not a kill");
    }

    #[test]
    fn a_denied_victim_rests_until_its_deadline_then_may_be_picked_again() {
        let mut l = Ledger::default();
        l.denied(&proc(7, 70), 100, 1100);
        assert_eq!(l.excluded(), BTreeSet::from([(7, 70)]));
        l.prune(1099, |_| false, |_, _| false);
        assert_eq!(l.excluded(), BTreeSet::from([(7, 70)]));
        l.prune(1100, |_| false, |_, _| false);
        assert!(l.excluded().is_empty());
    }

    /// A user can keep their own killed processes from exiting: the pidfds held for such
    /// victims are bounded, the oldest passed over by (pid, starttime) until gone instead.
    #[test]
    fn victims_that_never_exit_hold_a_bounded_number_of_pidfds() {
        let mut l = Ledger::default();
        let n = DYING_PINNED_MAX as i32 + 6;
        for pid in 1..=n {
            let mut k = Killed {
                victim: proc(pid, 0),
                group: None,
                signal_ms: 0,
                signal_wall_ms: 0,
                end_ms: 1000,
                ending: Ending::Unconfirmed,
                psi_avg10: None,
                available_after_kib: None,
                dry_run_victims: Vec::new(),
                unexited: vec![Target::for_tests(None, proc(pid, 0))],
            };
            l.killed(&mut k);
        }
        assert_eq!(l.dying().len(), DYING_PINNED_MAX);
        assert_eq!(l.dying()[0].proc.pid, 7, "the oldest unpinned");
        assert_eq!(l.unpinned().len(), 6, "no pidfd kept for the oldest");
        assert_eq!(l.excluded().len(), n as usize, "all passed over");
        // Those unpinned are asked after every few seconds, not at every pass.
        let (exited, gone) = (|_: &Target| false, |pid, _| pid <= 6);
        l.prune(DYING_LOOK_MS - 1, exited, gone);
        assert_eq!(l.excluded().len(), n as usize);
        l.prune(DYING_LOOK_MS, exited, gone);
        assert_eq!(l.excluded().len(), DYING_PINNED_MAX);
    }

    #[test]
    fn an_empty_spell_backs_off_and_ends_once_the_level_let_go_long_enough() {
        let mut l = Ledger::default();
        l.no_candidate("low", 0);
        assert!(l.silenced("low", 999) && !l.silenced("low", 1000));
        // Let go: looks again at once, but the spell is still the same one.
        l.end_empty_spells(None, 500);
        assert!(!l.silenced("low", 600) && l.in_empty_spell("low"));
        l.end_empty_spells(None, 30_000);
        assert!(!l.in_empty_spell("low"));
    }
}
