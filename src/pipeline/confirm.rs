//! Confirming a kill: a pidfd becomes readable when its process has exited. That, not a
//! MemAvailable delta (which under-reports freed memory by ~300 MiB right after a kill,
//! DESIGN.md §4), is the proof.

use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::clock::monotonic_ms;
use crate::procs::ProcRoot;

use super::pin::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited; `at_ms` is when we saw its pidfd readable.
    Exited { at_ms: u64 },
    /// Still there at the deadline.
    TimedOut,
}

/// Waits until the target exits or `deadline_ms` (monotonic) passes: on its pidfd, or, on
/// the no-pidfd fallback, by watching its /proc entry.
pub fn wait_target(target: &Target, proc: &ProcRoot, deadline_ms: u64) -> Outcome {
    match target.pidfd() {
        Some(fd) => wait_exit(fd, deadline_ms),
        None => wait_proc_gone(proc, target.proc.pid, target.proc.starttime, deadline_ms),
    }
}

/// Whether the target has exited, without waiting.
pub fn exited(target: &Target, proc: &ProcRoot) -> bool {
    match target.pidfd() {
        Some(fd) => {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            // A zero timeout: poll only reports, never waits.
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        }
        None => proc_gone(proc, target.proc.pid, target.proc.starttime),
    }
}

/// Without a pidfd: gone when its /proc entry is, when it is a zombie (the memory is freed
/// before the exit status is), or when its pid belongs to a new incarnation.
pub fn proc_gone(proc: &ProcRoot, pid: i32, starttime: u64) -> bool {
    let mut buf = Vec::with_capacity(512);
    match proc.read_stat(pid, &mut buf) {
        Ok(s) => s.starttime != starttime || matches!(s.state, 'Z' | 'X'),
        Err(_) => true,
    }
}

/// Without a pidfd: polls [`proc_gone`] until the deadline.
fn wait_proc_gone(proc: &ProcRoot, pid: i32, starttime: u64, deadline_ms: u64) -> Outcome {
    loop {
        let gone = proc_gone(proc, pid, starttime);
        let now = monotonic_ms();
        if gone {
            return Outcome::Exited { at_ms: now };
        }
        if now >= deadline_ms {
            return Outcome::TimedOut;
        }
        // 5 ms: the kill of a 1 GiB process takes ~20 ms here.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Waits until `pidfd` is readable or `deadline_ms` (monotonic) passes.
pub fn wait_exit(pidfd: impl AsFd, deadline_ms: u64) -> Outcome {
    loop {
        let now = monotonic_ms();
        if now >= deadline_ms {
            return Outcome::TimedOut;
        }
        let left = deadline_ms - now;
        let timeout = Timespec {
            tv_sec: (left / 1000) as i64,
            tv_nsec: ((left % 1000) * 1_000_000) as i64,
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => {
                return Outcome::Exited {
                    at_ms: monotonic_ms(),
                };
            }
            Ok(_) | Err(Errno::INTR) => continue,
            Err(e) => {
                log::warn!("poll on a pidfd failed: {e}; treating as not confirmed");
                return Outcome::TimedOut;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{Pid, PidfdFlags, pidfd_open};

    #[test]
    fn readable_after_exit_and_times_out_while_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd_open(
            Pid::from_raw(child.id() as i32).unwrap(),
            PidfdFlags::empty(),
        )
        .unwrap();
        assert_eq!(wait_exit(&fd, monotonic_ms() + 50), Outcome::TimedOut);
        let proc = crate::pipeline::rank::RankedProc {
            pid: child.id() as i32,
            comm: "sleep".into(),
            oom_score_adj: 0,
            effective_adj: 0,
            rule: None,
            rss_kib: 1,
            swap_kib: 0,
            starttime: 0,
            registered: None,
            last: false,
            owner_last: None,
            cgroup: None,
            marking: None,
            uid: None,
            real_uid: None,
            owner: None,
            owner_kib: None,
        };
        let target = Target::for_tests(Some(fd.try_clone().unwrap()), proc);
        assert!(!exited(&target, &ProcRoot::default()));
        child.kill().unwrap();
        assert!(matches!(
            wait_exit(&fd, monotonic_ms() + 5000),
            Outcome::Exited { .. }
        ));
        assert!(exited(&target, &ProcRoot::default()));
        child.wait().unwrap();
    }
}
