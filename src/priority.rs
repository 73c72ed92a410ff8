//! The CPU priority of lowmemd's threads: the kill path (the monitor and the pipeline)
//! ahead of a busy machine's other work, everything it starts back at lowmemd's own.

use std::sync::atomic::{AtomicI32, Ordering};

/// The nice value of the threads on the kill path (the monitor and the pipeline). Under
/// pressure the CPUs are busy with reclaim and with the runaway itself, and a daemon at
/// their priority waits its turn while the runaway grows: in the systemd VM of
/// benches/vm_head_to_head.rs the time from the deciding sample to the signal reached
/// 0.2–1.2 s at nice 0. AOSP's lmkd runs SCHED_FIFO for the same reason; a nice value
/// is enough to be picked first and cannot starve the machine if a bug made the thread
/// spin.
pub const KILL_PATH_NICE: i32 = -20;

/// The nice value lowmemd was started with, before a thread was hurried.
static BASE_NICE: AtomicI32 = AtomicI32::new(0);

/// Raises the calling thread (alone: PRIO_PROCESS with a thread id) to
/// [`KILL_PATH_NICE`]. Threads and processes it starts inherit it: they call
/// [`calm_this_thread`] (the writer threads do, `report/handoff.rs`). Without CAP_SYS_NICE
/// the thread keeps its priority; the warning says so.
pub fn hurry_this_thread(has_sys_nice: bool) -> Option<String> {
    let me = rustix::thread::gettid();
    if let Ok(nice) = rustix::process::getpriority_process(Some(me)) {
        BASE_NICE.store(nice, Ordering::Relaxed);
    }
    match rustix::process::setpriority_process(Some(me), KILL_PATH_NICE) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "cannot raise the {} thread to nice {KILL_PATH_NICE} ({e}){}: under CPU contention a kill may wait for the CPU",
            std::thread::current().name().unwrap_or("kill-path"),
            if has_sys_nice {
                ""
            } else {
                " without CAP_SYS_NICE"
            }
        )),
    }
}

/// Puts the calling thread back to the nice value lowmemd was started with: for threads
/// that the kill path starts (the hook runner, writers) and that must never compete with
/// it, nor hand its priority to the processes they start.
pub fn calm_this_thread() {
    let me = rustix::thread::gettid();
    let base = BASE_NICE.load(Ordering::Relaxed);
    if rustix::process::getpriority_process(Some(me)).is_ok_and(|n| n < base) {
        let _ = rustix::process::setpriority_process(Some(me), base);
    }
}

/// While it lives, the calling thread runs at the nice value lowmemd was started with;
/// dropped, it is back where it was. For the gentle actions of the kill path (a page-out
/// or a freeze compresses a whole app's pages on the pipeline's thread): they make room
/// ahead of need, and must not take the CPU from the app the user works with.
pub struct Calm {
    was: Option<i32>,
}

impl Calm {
    pub fn enter() -> Calm {
        let me = rustix::thread::gettid();
        let base = BASE_NICE.load(Ordering::Relaxed);
        let was = rustix::process::getpriority_process(Some(me))
            .ok()
            .filter(|&n| n < base && rustix::process::setpriority_process(Some(me), base).is_ok());
        Calm { was }
    }
}

impl Drop for Calm {
    fn drop(&mut self) {
        if let Some(n) = self.was {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    /// The kill path runs hurried, its gentle actions and the threads it starts do not
    /// (as root, like the daemon; each on a thread of its own so no other test is moved).
    #[test]
    fn the_kill_path_is_hurried_and_what_it_starts_is_not() {
        std::thread::spawn(|| {
            let base = nice();
            assert_eq!(hurry_this_thread(true), None, "needs CAP_SYS_NICE (root)");
            assert_eq!(nice(), KILL_PATH_NICE);
            {
                let _calm = Calm::enter();
                assert_eq!(nice(), base, "a page-out runs at the base priority");
            }
            assert_eq!(
                nice(),
                KILL_PATH_NICE,
                "and the kill path is hurried again after it"
            );
            let started = std::thread::spawn(|| {
                calm_this_thread();
                nice()
            });
            assert_eq!(
                started.join().unwrap(),
                base,
                "a thread it starts is calmed"
            );
        })
        .join()
        .unwrap();
    }
}
