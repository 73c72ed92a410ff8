//! Confirming a kill: a pidfd becomes readable when its process has exited. That, not a
//! MemAvailable delta (which under-reports freed memory by ~300 MiB right after a kill,
//! DESIGN.md §4), is the proof.

use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::monitor::monotonic_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited; `at_ms` is when we saw its pidfd readable.
    Exited { at_ms: u64 },
    /// Still there at the deadline.
    TimedOut,
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
        child.kill().unwrap();
        assert!(matches!(
            wait_exit(&fd, monotonic_ms() + 5000),
            Outcome::Exited { .. }
        ));
        child.wait().unwrap();
    }
}
