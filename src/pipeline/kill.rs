//! The kill stage: SIGKILL to a pinned victim, only ever through its pidfd, its memory
//! reaped with process_mrelease; then the wait for its exit, and the report of it.

use rustix::io::Errno;
use rustix::process::{Signal, pidfd_send_signal};

use crate::caps::KernelCaps;
use crate::clock::wall_ms;
use crate::policy::Policy;
use crate::policy::decide::Decision;
use crate::procs::{ProcRoot, is_gone};
use crate::sample::Sample;

use super::confirm::Outcome;
use super::outcome::{Ending, Kill, Skip};
use super::pin::Target;
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

impl Pipeline {
    /// Kills the pinned `target` (in a dry run: says it would), waits for its exit until the
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
        let victim = &target.proc;
        let signal_ms = self.kernel.now_ms();
        let mut kill = Kill {
            victim,
            decision,
            level,
            sample,
            available_at_kill_kib: fresh.mem.available_kib,
            signal_wall_ms: wall_ms(),
            sample_to_signal_ms: signal_ms.saturating_sub(sample.at_ms),
            sample_to_end_ms: 0,
            psi_avg10: None,
            ending: Ending::DryRun,
            available_after_kib: None,
        };
        if self.dry_run {
            self.observer.killed(&kill);
            // Nothing will exit: pace as if the kill had run into its deadline.
            self.last_action_ms = Some(signal_ms + level.wait_ms);
            self.recent.push(Recent::of(victim, u64::MAX));
            return;
        }
        match self.kernel.kill(&target) {
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
                    .push(Recent::of(victim, signal_ms + level.wait_ms));
                return;
            }
        }
        // Read after the signal, so it never delays it.
        kill.psi_avg10 = self.kernel.psi_avg10();
        let outcome = self.kernel.wait_exit(&target, signal_ms + level.wait_ms);
        let end = self.kernel.now_ms();
        kill.ending = match outcome {
            Outcome::Exited { at_ms } => Ending::Exited {
                signal_to_exit_ms: at_ms.saturating_sub(signal_ms),
            },
            Outcome::TimedOut => Ending::Unconfirmed,
        };
        kill.sample_to_end_ms = end.saturating_sub(sample.at_ms);
        kill.available_after_kib = self.kernel.memory().ok().map(|m| m.available_kib);
        self.observer.killed(&kill);
        self.last_action_ms = Some(end);
        if outcome == Outcome::TimedOut {
            // Still there (frozen, or in uninterruptible I/O): kept pinned, so it is never
            // picked again until its pidfd says it is gone.
            self.dying.push(target);
        }
    }
}
