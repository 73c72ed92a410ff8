//! What a hook leaves behind. A hook runs in a process group of its own, and at its timeout
//! the whole group is killed (`exec.rs`); but a process can leave its group (`setsid`,
//! `setpgid`) and a daemonising hook forks, lets the parent exit and so orphans the child.
//! Orphans normally go to PID 1, out of our sight. With `PR_SET_CHILD_SUBREAPER` (Linux
//! 3.4) they come to lowmemd instead: every process a hook started, however it detached,
//! is then lowmemd's child once its parent is gone, and [`sweep`] kills what is still there
//! at the hook's deadline.
//!
//! Only the hooks thread starts children in the daemon (one hook at a time), so every
//! child of lowmemd between two hooks is a hook's leftover. A test binary starts children
//! of its own on other threads: it must not [`adopt_orphans`] unless it starts only hooks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions, pidfd_open, pidfd_send_signal};

use crate::clock::monotonic_ms;

static ADOPTING: AtomicBool = AtomicBool::new(false);
/// How often leftovers are looked for while they still have time.
const POLL: Duration = Duration::from_millis(20);
/// Killing goes round by round (a killed process's children come to us next): at most
/// this long, so a fork bomb cannot hold the hooks thread forever.
const KILL_FOR_MS: u64 = 2000;

/// Makes lowmemd the reaper of its descendants' orphans; [`sweep`] does nothing before.
/// Refused as PID 1 (a container's entry point): every orphan of the namespace comes to
/// PID 1, not only our hooks', and the sweep would kill them.
pub fn adopt_orphans() -> std::io::Result<()> {
    if rustix::process::getpid().is_init() {
        return Err(std::io::Error::other(
            "lowmemd is PID 1, where orphans may be anyone's",
        ));
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    ADOPTING.store(true, Ordering::Release);
    Ok(())
}

/// Our children now: from `/proc/self/task/*/children` (an orphan is given to any thread
/// of the reaper), or, on kernels without CONFIG_PROC_CHILDREN, from every process's ppid.
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            match std::fs::read_to_string(t.path().join("children")) {
                Ok(list) => out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return by_ppid(),
                // The thread ended between the listing and the read.
                Err(_) => {}
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every process whose parent is us, by a scan of /proc.
fn by_ppid() -> Vec<i32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: comm may hold anything, so split after its end.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').nth(1));
            ppid.and_then(|p| p.parse::<i32>().ok()) == Some(me)
        })
        .collect()
}

/// Reaps `pid` if it has exited; whether it is gone.
fn reap(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return true;
    };
    match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        // ECHILD: not ours (any more).
        Err(_) => true,
    }
}

/// Lets the hook's leftovers run until `deadline_ms` (the hook's timeout, monotonic),
/// reaping those that exit, then kills what is left, round after round; how many were
/// killed. Returns at once, with 0, unless lowmemd adopts orphans.
pub fn sweep(deadline_ms: u64) -> usize {
    if !ADOPTING.load(Ordering::Acquire) {
        return 0;
    }
    loop {
        let left: Vec<i32> = children().into_iter().filter(|&p| !reap(p)).collect();
        if left.is_empty() {
            return 0;
        }
        if monotonic_ms() >= deadline_ms {
            break;
        }
        std::thread::sleep(POLL);
    }
    let give_up = monotonic_ms() + KILL_FOR_MS;
    let mut killed = std::collections::BTreeSet::new();
    while monotonic_ms() < give_up {
        let left: Vec<i32> = children().into_iter().filter(|&p| !reap(p)).collect();
        if left.is_empty() {
            break;
        }
        // SIGKILL once each: one stuck in the kernel (D state) is waited for, not counted
        // again.
        let fresh: Vec<i32> = left.into_iter().filter(|p| !killed.contains(p)).collect();
        for pid in fresh {
            // Our child, not yet reaped: its pid cannot name another process, so the pidfd
            // is this very leftover. Never the process group: a leftover can have joined
            // any group of lowmemd's session, lowmemd's own included.
            if let Some(p) = Pid::from_raw(pid)
                && let Ok(fd) = pidfd_open(p, PidfdFlags::empty())
                && pidfd_send_signal(&fd, Signal::KILL).is_ok()
            {
                killed.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.len()
}
