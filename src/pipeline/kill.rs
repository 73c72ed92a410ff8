//! The kill stage: SIGKILL to a pinned victim, only ever through its pidfd, its memory
//! reaped with process_mrelease; then the wait for its exit, and the report of it.

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::clock::wall_ms;
use crate::policy::decide::Decision;
use crate::policy::rules::{self, standing};
use crate::policy::{KillMode, Policy};
use crate::procs::{ProcRoot, is_gone, printable};
use crate::sample::Sample;

use super::confirm::Outcome;
use super::group;
use super::outcome::{Ending, GroupKill, Kill, Skip};
use super::pin::{PinError, Target};
use super::{Pipeline, Recent};

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("pidfd_send_signal(SIGKILL) to pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
    #[error("kill({pid}, SIGKILL): {source}")]
    PidSignal { pid: i32, source: std::io::Error },
    #[error(
        "pid {pid} changed identity right before the signal (starttime {found}, ranked {expected}): not killed"
    )]
    Recycled { pid: i32, expected: u64, found: u64 },
}

/// What happened after the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// The victim was gone before the signal (ESRCH): nothing was killed.
    AlreadyGone,
    /// `process_mrelease` reaped the address space (or found it already gone).
    Released,
    /// The kernel lacks `process_mrelease`, or it refused: the victim frees its memory itself.
    NotReleased,
}

/// SIGKILL through the pidfd, then reap its memory right away where the kernel can.
/// A victim that already exited (ESRCH) was not killed by us: [`Reap::AlreadyGone`].
pub fn kill_target(target: &Target, caps: &KernelCaps, proc: &ProcRoot) -> Result<Reap, KillError> {
    let Some(pidfd) = target.pidfd() else {
        return kill_by_pid(target, proc);
    };
    match pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) => {}
        Err(Errno::SRCH) => return Ok(Reap::AlreadyGone),
        Err(e) => {
            return Err(KillError::Signal {
                pid: target.proc.pid,
                source: e.into(),
            });
        }
    }
    if !caps.process_mrelease {
        return Ok(Reap::NotReleased);
    }
    // EINVAL would mean "not dying yet": impossible after a delivered SIGKILL unless the
    // victim was a vfork child sharing its parent's mm; then we simply wait for the exit.
    match crate::sys::process_mrelease(pidfd) {
        Ok(()) => Ok(Reap::Released),
        Err(e) => {
            log::debug!("process_mrelease(pid {}): {e}", target.proc.pid);
            Ok(Reap::NotReleased)
        }
    }
}

/// The no-pidfd fallback: re-check the starttime, then kill(2) by pid. The window between
/// the two is the recycling race pidfds close; `allow_pid_kill` is the policy's consent.
fn kill_by_pid(target: &Target, proc: &ProcRoot) -> Result<Reap, KillError> {
    let pid = target.proc.pid;
    let mut buf = Vec::with_capacity(512);
    match proc.read_stat(pid, &mut buf) {
        Ok(stat) if stat.starttime != target.proc.starttime => {
            return Err(KillError::Recycled {
                pid,
                expected: target.proc.starttime,
                found: stat.starttime,
            });
        }
        Ok(_) => {}
        // Gone already: its memory is coming back, and it was not our kill.
        Err(_) => return Ok(Reap::AlreadyGone),
    }
    match crate::sys::kill_by_pid_unpinned(pid) {
        Ok(()) => Ok(Reap::NotReleased),
        Err(e) if is_gone(&e) => Ok(Reap::AlreadyGone),
        Err(source) => Err(KillError::PidSignal { pid, source }),
    }
}

/// Cgroups remembered as already explained (a fallback is said once per cgroup); a desktop
/// has a few dozen apps at a time, each under a fresh name.
const WARNED_CGROUPS_MAX: usize = 1024;

impl Pipeline {
    /// Kills the pinned `target` (in a dry run: says it would) — with `kill = "cgroup"`,
    /// its whole leaf cgroup when that may be killed — waits for every exit until the
    /// level's deadline, and reports what happened.
    pub(super) fn kill(
        &mut self,
        policy: &Policy,
        decision: &Decision,
        sample: &Sample,
        fresh: &Sample,
        target: Target,
    ) {
        let level = decision.level(policy);
        let mut targets = vec![target];
        let mut group = None;
        if level.kill == KillMode::Cgroup
            && let Some((cgroup, others)) = self.plan_group(policy, &targets[0])
        {
            targets.extend(others);
            group = Some(GroupKill {
                cgroup,
                processes: targets.len() as u32,
                rss_kib: targets.iter().map(|t| t.proc.rss_kib).sum(),
            });
        }
        let signal_ms = self.kernel.now_ms();
        let signal_wall_ms = wall_ms();
        if self.dry_run {
            let kill = Kill::at_signal(&targets[0].proc, decision, level, sample, fresh, signal_ms);
            self.observer.killed(&Kill {
                signal_wall_ms,
                group,
                ..kill
            });
            // Nothing will exit: pace as if the kill had run into its deadline.
            self.last_action_ms = Some(signal_ms + level.wait_ms);
            self.last_kill_ms = self.last_action_ms;
            for t in &targets {
                self.recent.push(Recent::of(&t.proc, u64::MAX));
            }
            return;
        }
        let signalled = match &group {
            Some(g) => match self.kernel.kill_cgroup(&g.cgroup, &targets) {
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
                    self.kernel.kill(&targets[0])
                }
            },
            None => self.kernel.kill(&targets[0]),
        };
        match signalled {
            Ok(Reap::AlreadyGone) => {
                // It exited between the pin and the signal: not a kill of ours.
                self.observer.skipped(Skip::Vanished);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                self.observer.skipped(Skip::Denied);
                log::error!("{e}");
                self.last_action_ms = Some(self.kernel.now_ms());
                self.recent
                    .push(Recent::of(&targets[0].proc, signal_ms + level.wait_ms));
                return;
            }
        }
        // Read after the signal, so it never delays it.
        let psi_avg10 = self.kernel.psi_avg10();
        // Every member's exit, each by its pidfd, all within the one deadline.
        let deadline = signal_ms + level.wait_ms;
        let mut last_exit_ms = signal_ms;
        let mut unexited = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match self.kernel.wait_exit(t, deadline) {
                Outcome::Exited { at_ms } => last_exit_ms = last_exit_ms.max(at_ms),
                // The deadline may have passed waiting for an earlier member, while this
                // one exited: look once more, without waiting.
                Outcome::TimedOut if self.kernel.exited(t) => {
                    last_exit_ms = last_exit_ms.max(self.kernel.now_ms())
                }
                Outcome::TimedOut => unexited.push(i),
            }
        }
        let end = self.kernel.now_ms();
        let ending = if unexited.is_empty() {
            Ending::Exited {
                signal_to_exit_ms: last_exit_ms.saturating_sub(signal_ms),
            }
        } else {
            Ending::Unconfirmed
        };
        let kill = Kill::at_signal(&targets[0].proc, decision, level, sample, fresh, signal_ms);
        self.observer.killed(&Kill {
            signal_wall_ms,
            sample_to_end_ms: end.saturating_sub(sample.at_ms),
            psi_avg10,
            ending,
            available_after_kib: self.kernel.memory().ok().map(|m| m.available_kib),
            group,
            ..kill
        });
        self.last_action_ms = Some(end);
        self.last_kill_ms = Some(end);
        // Still there (frozen, or in uninterruptible I/O): kept pinned, so none is ever
        // picked again until its pidfd says it is gone.
        for (i, t) in targets.into_iter().enumerate() {
            if unexited.contains(&i) {
                self.dying.push(t);
            }
        }
    }

    /// With `kill = "cgroup"`: the victim's leaf cgroup and its other members, each pinned,
    /// when the whole cgroup may be killed; `None` (said once per cgroup) when only the
    /// victim may.
    fn plan_group(&mut self, policy: &Policy, victim: &Target) -> Option<(String, Vec<Target>)> {
        let Some(cgroup) = victim.proc.cgroup.clone() else {
            log::debug!(
                "pid {}: its cgroup is unknown; killing it alone",
                victim.proc.pid
            );
            return None;
        };
        match self.group_members(policy, victim, &cgroup) {
            Ok(others) => Some((cgroup, others)),
            Err(why) => {
                // Apps come and go under new names: bound what is remembered.
                if self.warned_cgroups.len() >= WARNED_CGROUPS_MAX {
                    self.warned_cgroups.clear();
                }
                if self.warned_cgroups.insert(cgroup.clone()) {
                    log::warn!(
                        "not killing cgroup {cgroup} whole: {why}; killing pid {} ({}) alone (said once per cgroup)",
                        victim.proc.pid,
                        printable(&victim.proc.comm)
                    );
                }
                None
            }
        }
    }

    /// The pinned members of `cgroup` other than the victim, or why the cgroup may not be
    /// killed whole: it is not an app below the scope, or one of its processes is
    /// protected, or its membership changed while it was being pinned.
    fn group_members(
        &self,
        policy: &Policy,
        victim: &Target,
        cgroup: &str,
    ) -> Result<Vec<Target>, String> {
        if let Some(why) = group::refusal(self.kernel.scope_cgroup().as_deref(), cgroup) {
            return Err(why);
        }
        let members = self
            .kernel
            .cgroup_members(cgroup)
            .map_err(|e| format!("its processes cannot be read: {e}"))?;
        if !members.iter().any(|m| m.proc.pid == victim.proc.pid) {
            return Err(format!("pid {} is no longer in it", victim.proc.pid));
        }
        let needs = rules::needs(&policy.rules);
        for m in &members {
            let p = &m.proc;
            let who = format!("pid {} ({})", p.pid, printable(&p.comm));
            if p.pid == 1 {
                return Err(format!("it holds {who}, PID 1"));
            }
            if p.pid == self.self_pid {
                return Err(format!("it holds {who}, lowmemd itself"));
            }
            if m.kernel_thread {
                return Err(format!("it holds {who}, a kernel thread"));
            }
            let (attrs, adj) = self.kernel.reread(p.pid, needs);
            // Unreadable: exited since the listing.
            let Some(adj) = adj else { continue };
            if adj <= -1000 {
                return Err(format!("it holds {who}, protected by oom_score_adj -1000"));
            }
            let st = standing(&policy.rules, &p.comm, &attrs, adj);
            if st.protected {
                let rule = st
                    .rule
                    .and_then(|i| policy.rules.get(i))
                    .map_or("a", |r| r.name.as_str());
                return Err(format!("it holds {who}, protected by rule {rule}"));
            }
        }
        let mut pinned = Vec::new();
        let mut allowed = vec![victim.proc.pid];
        for m in members {
            let pid = m.proc.pid;
            if pid == victim.proc.pid {
                continue;
            }
            allowed.push(pid);
            match self.kernel.pin(m.proc) {
                Ok(t) => pinned.push(t),
                // Gone, or dying already: nothing to kill or wait for.
                Err(PinError::Vanished(_) | PinError::Dying(_)) => {}
                Err(e) => return Err(format!("a member cannot be pinned: {e}")),
            }
        }
        // cgroup.kill kills whatever is in the cgroup when it is written: a process that
        // joined since the protection check was not checked.
        let now = self
            .kernel
            .cgroup_members(cgroup)
            .map_err(|e| format!("its processes cannot be read: {e}"))?;
        if let Some(m) = now.iter().find(|m| !allowed.contains(&m.proc.pid)) {
            return Err(format!(
                "pid {} ({}) joined it while it was being pinned",
                m.proc.pid,
                printable(&m.proc.comm)
            ));
        }
        Ok(pinned)
    }
}
