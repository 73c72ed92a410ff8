//! The kill stage: the signal to a pinned victim (`signal.rs`) — with `kill = "cgroup"`, to
//! its whole leaf cgroup when that may be killed (`app.rs`) — then the wait for every exit until the
//! level's deadline. A function from the plan and the victims to a [`KillReport`]; the
//! conductor records it in the ledger and tells the observer. A candidate someone else
//! killed already is not signalled again but finished ([`finish`]).

use crate::clock::wall_ms;
use crate::procs::printable;
use crate::sample::MemSnapshot;

use super::Plan;
use super::confirm::Outcome;
use super::kernel::Kernel;
use super::outcome::{Ending, GroupKill, Kill};
use super::pin::Target;
use super::rank::RankedProc;
use super::signal::{KillError, Reap, Release};

/// A kill that went out (or, in a dry run, would have), and what came of it.
#[derive(Debug)]
pub struct Killed {
    /// The victim as ranked and pinned.
    pub victim: RankedProc,
    /// The victim's whole cgroup went with it.
    pub group: Option<GroupKill>,
    /// Monotonic and wall-clock time of the signal.
    pub signal_ms: u64,
    pub signal_wall_ms: u64,
    /// When it ended: every exit seen, the deadline, or a dry run's pretend deadline.
    pub end_ms: u64,
    pub ending: Ending,
    /// PSI averages, read right after the signal so they never delay it.
    pub psi_avg10: Option<(f64, f64)>,
    pub available_after_kib: Option<u64>,
    /// A dry run's would-be victims (pid, starttime): they will not exit.
    pub dry_run_victims: Vec<(i32, u64)>,
    /// Members still there at the deadline (frozen, or in uninterruptible I/O), pinned.
    pub unexited: Vec<Target>,
}

#[derive(Debug)]
pub enum KillReport {
    Killed(Killed),
    /// The victim exited between the pin and the signal (ESRCH): not a kill of ours.
    Vanished,
    /// The kernel refused the signal.
    Denied {
        error: KillError,
        victim: RankedProc,
        signal_ms: u64,
        /// When the refusal came back.
        at_ms: u64,
    },
}

impl Killed {
    /// What the observer is told of it.
    pub fn told<'a>(&'a self, plan: &'a Plan<'_>) -> Kill<'a> {
        let at = Kill::at_signal(
            &self.victim,
            &plan.decision,
            plan.level,
            plan.sample,
            &plan.fresh,
            self.signal_ms,
        );
        let ended = self.ending != Ending::DryRun;
        Kill {
            signal_wall_ms: self.signal_wall_ms,
            sample_to_end_ms: if ended {
                self.end_ms.saturating_sub(plan.sample.at_ms)
            } else {
                0
            },
            psi_avg10: self.psi_avg10,
            ending: self.ending,
            available_after_kib: self.available_after_kib,
            group: self.group.clone(),
            ..at
        }
    }
}

/// Kills the pinned `targets` — the victim first, with `group` its other cgroup members —
/// or, in a dry run, says it would; then waits for every exit within the level's deadline.
pub fn run(
    kernel: &dyn Kernel,
    plan: &Plan<'_>,
    mut targets: Vec<Target>,
    mut group: Option<GroupKill>,
    dry_run: bool,
) -> KillReport {
    let level = plan.level;
    let signal_ms = kernel.now_ms();
    let signal_wall_ms = wall_ms();
    if dry_run {
        return KillReport::Killed(Killed {
            victim: targets[0].proc.clone(),
            group,
            signal_ms,
            signal_wall_ms,
            // Nothing will exit: pace as if the kill had run into its deadline.
            end_ms: signal_ms + level.wait_ms,
            ending: Ending::DryRun,
            psi_avg10: None,
            available_after_kib: None,
            dry_run_victims: targets
                .iter()
                .map(|t| (t.proc.pid, t.proc.starttime))
                .collect(),
            unexited: Vec::new(),
        });
    }
    let signalled = match &group {
        Some(g) => match kernel.kill_cgroup(&g.cgroup, &targets) {
            Ok(()) => Ok(Reap::Released),
            Err(e) => {
                log::warn!(
                    "level {}: cannot kill cgroup {} whole: {e}; killing pid {} ({}) alone",
                    level.name,
                    g.cgroup,
                    targets[0].proc.pid,
                    printable(&targets[0].proc.comm)
                );
                group = None;
                targets.truncate(1);
                kernel.kill(&targets[0])
            }
        },
        None => kernel.kill(&targets[0]),
    };
    match signalled {
        Ok(Reap::AlreadyGone) => return KillReport::Vanished,
        Ok(_) => {}
        Err(error) => {
            return KillReport::Denied {
                error,
                victim: targets.swap_remove(0).proc,
                signal_ms,
                at_ms: kernel.now_ms(),
            };
        }
    }
    let psi_avg10 = kernel.psi_avg10();
    // Every member's exit, each by its pidfd, all within the one deadline.
    let deadline = signal_ms + level.wait_ms;
    let mut last_exit_ms = signal_ms;
    let mut unexited = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match kernel.wait_exit(t, deadline) {
            Outcome::Exited { at_ms } => last_exit_ms = last_exit_ms.max(at_ms),
            // The deadline may have passed waiting for an earlier member, while this one
            // exited: look once more, without waiting.
            Outcome::TimedOut if kernel.exited(t) => {
                last_exit_ms = last_exit_ms.max(kernel.now_ms())
            }
            Outcome::TimedOut => unexited.push(i),
        }
    }
    let end_ms = kernel.now_ms();
    let ending = if unexited.is_empty() {
        Ending::Exited {
            signal_to_exit_ms: last_exit_ms.saturating_sub(signal_ms),
        }
    } else {
        Ending::Unconfirmed
    };
    let victim = targets[0].proc.clone();
    let unexited = targets
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| unexited.contains(&i).then_some(t))
        .collect();
    KillReport::Killed(Killed {
        victim,
        group,
        signal_ms,
        signal_wall_ms,
        end_ms,
        ending,
        psi_avg10,
        available_after_kib: kernel.memory().ok().map(|m| m.available_kib),
        dry_run_victims: Vec::new(),
        unexited,
    })
}

/// How many candidates found dying one pass reaps, and how many passes that reap one
/// decision takes: each is a pidfd held and a re-read of memory, and a user can keep
/// thousands of their own killed processes from exiting (a ptrace stop). Past that, the
/// decision passes over the rest and goes on to a live victim.
pub const REAP_BATCH: usize = 16;
pub const REAP_PASSES: usize = 8;

/// How many found dying the next pass of a decision may collect, after `passes` that
/// reaped (0: passed over like any other skip).
pub fn reap_batch(passes: usize) -> usize {
    if passes < REAP_PASSES { REAP_BATCH } else { 0 }
}

/// Whether reaping brought memory back: stall evidence from before it is then void, as
/// after a kill (any reap has the decision taken again on a fresh reading). Measured on the
/// scope —
/// available memory and free swap, read once after the reaps, against the plan's reading —
/// not trusted to the reaped processes' sizes: a user's killed-but-stuck process mapping
/// shared memory looks large and frees nothing. From 1 % of the scope's memory (and 1 MiB):
/// a user's stream of tiny ones must not keep a stall level from acting.
fn came_back(kernel: &dyn Kernel, before: &MemSnapshot) -> bool {
    let Ok(after) = kernel.memory() else {
        return false;
    };
    let free = |m: &MemSnapshot| m.available_kib as i64 + m.swap_free_kib as i64;
    free(&after) - free(before) >= (before.total_kib / 100).max(1024) as i64
}

/// What came of the candidates found dying already (SIGKILL pending) ahead of the victim.
#[derive(Debug, Default)]
pub struct Finished {
    /// Some were reaped: memory is to be read again before anyone else dies.
    pub reaped: bool,
    /// Their memory came back: enough of it reaped (`came_back`), or an exit waited for.
    pub came_back: bool,
    /// Time went by waiting for one: what was read before is old.
    pub waited: bool,
    /// Those still there, to pass over until they are gone.
    pub dying: Vec<Target>,
}

/// Candidates killed by someone else (the kernel's OOM killer, a user, another daemon) that
/// still hold the memory they were ranked for: that memory is on its way back. Each is
/// reaped now where the kernel can; without process_mrelease the largest is waited for, up
/// to the level's deadline, if `may_wait` (once a decision: `Finished::waited` says it was
/// spent) — as the kernel's OOM killer waits for its victim. One the kernel refuses to reap (its
/// memory shared with a live process) frees nothing by exiting either: passed over at once.
/// The conductor reads memory again before killing anyone else. A dry run only says so.
pub fn finish(
    kernel: &dyn Kernel,
    plan: &Plan<'_>,
    targets: Vec<Target>,
    dry_run: bool,
    may_wait: bool,
) -> Finished {
    let size = |t: &Target| t.proc.rss_kib + t.proc.swap_kib;
    let said = |t: &Target| {
        format!(
            "level {}: pid {} ({}, {} MiB) was dying already (SIGKILL pending)",
            plan.level.name,
            t.proc.pid,
            printable(&t.proc.comm),
            size(t) / 1024
        )
    };
    let mut out = Finished::default();
    let mut unreaped = Vec::new();
    for t in targets {
        if dry_run {
            log::info!(
                "{}: would reap its memory rather than kill another for it",
                said(&t)
            );
            out.dying.push(t);
            continue;
        }
        match kernel.release(&t) {
            Release::Released => {
                log::info!(
                    "{}: reaped its memory (process_mrelease) rather than kill another for it",
                    said(&t)
                );
                out.reaped = true;
                out.dying.push(t);
            }
            Release::Refused => {
                log::info!(
                    "{}: the kernel would not reap it (its memory shared with a live process, or a core dump): passed over",
                    said(&t)
                );
                out.dying.push(t);
            }
            Release::Unavailable => unreaped.push(t),
        }
    }
    out.came_back = out.reaped && came_back(kernel, &plan.fresh.mem);
    // Without process_mrelease: the largest one's exit, waited for once a decision.
    if may_wait && let Some(i) = (0..unreaped.len()).max_by_key(|&i| size(&unreaped[i])) {
        out.waited = true;
        let t = unreaped.swap_remove(i);
        let now = kernel.now_ms();
        let exited = matches!(
            kernel.wait_exit(&t, now + plan.level.wait_ms),
            Outcome::Exited { .. }
        ) || kernel.exited(&t);
        let took = kernel.now_ms().saturating_sub(now);
        if exited {
            log::info!(
                "{}: waited {took} ms for its exit rather than kill another for it",
                said(&t)
            );
            out.came_back = true;
        } else {
            log::info!(
                "{}: not gone {took} ms later: passed over from now on",
                said(&t)
            );
            out.dying.push(t);
        }
    }
    for t in unreaped {
        log::info!("{}: passed over (one wait a decision)", said(&t));
        out.dying.push(t);
    }
    out
}
