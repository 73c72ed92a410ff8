//! The CPU priority of lowmemd's threads: the kill path (the monitor and the pipeline)
//! ahead of a busy machine's other work, everything it starts back at lowmemd's own.
//!
//! Under pressure the CPUs are busy with reclaim and with the runaway itself, and a kill
//! path at their priority waits its turn while the runaway grows. A nice value does not
//! reach far enough: it ranks threads only within their scheduling group — the session's
//! autogroup, or the cgroup once the CPU controller is on — and under systemd the
//! runaway sits in another one. So, as AOSP's lmkd does, the kill path runs SCHED_FIFO at
//! the lowest real-time priority: ahead of every normal thread, whatever its group, and
//! still held to the kernel's real-time throttling (95 % of each second by default). Where
//! a sandbox forbids real-time but not nice it falls back to nice -20, which helps within
//! its group; without CAP_SYS_NICE neither is allowed, and it says so.

use crate::sys::{set_thread_fifo, thread_is_fifo};

/// The kill path's SCHED_FIFO priority: the lowest, as lmkd's.
pub const KILL_PATH_FIFO: i32 = 1;
/// The kill path's nice value where real-time is refused.
pub const KILL_PATH_NICE: i32 = -20;

/// The nice value lowmemd was started with: its main thread's, which never changes.
fn base_nice() -> i32 {
    let main = rustix::process::getpid();
    rustix::process::getpriority_process(Some(main)).unwrap_or(0)
}

/// How the calling thread was hurried.
#[derive(Debug, PartialEq, Eq)]
pub enum Hurried {
    Fifo,
    /// Real-time was refused (the error): nice -20 instead.
    Nice(String),
    /// Neither was allowed.
    Not(String),
}

/// Puts the calling thread (alone) on the kill path's priority. Threads and processes it
/// starts inherit it: they call [`calm_this_thread`] (the writer threads do,
/// `report/handoff.rs`).
pub fn hurry_this_thread() -> Hurried {
    let fifo = match set_thread_fifo(Some(KILL_PATH_FIFO)) {
        Ok(()) => return Hurried::Fifo,
        Err(e) => e.to_string(),
    };
    let me = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(me), KILL_PATH_NICE) {
        Ok(()) => Hurried::Nice(fifo),
        Err(e) => Hurried::Not(format!("SCHED_FIFO: {fifo}; nice {KILL_PATH_NICE}: {e}")),
    }
}

/// What to log about [`hurry_this_thread`]'s outcome on thread `name`, if anything.
pub fn hurried_warning(name: &str, h: &Hurried) -> Option<String> {
    match h {
        Hurried::Fifo => None,
        Hurried::Nice(e) => Some(format!(
            "the {name} thread runs at nice {KILL_PATH_NICE}, not SCHED_FIFO ({e}): under CPU contention a kill may wait behind other groups' work"
        )),
        Hurried::Not(e) => Some(format!(
            "the {name} thread keeps its priority ({e}): under CPU contention a kill may wait for the CPU"
        )),
    }
}

/// Puts the calling thread back to lowmemd's own priority (SCHED_OTHER, the nice it was
/// started with): for threads the kill path starts (the hook runner, writers), which must
/// never compete with it nor hand its priority to the processes they start.
pub fn calm_this_thread() {
    if thread_is_fifo() {
        let _ = set_thread_fifo(None);
    }
    let me = rustix::thread::gettid();
    let base = base_nice();
    if rustix::process::getpriority_process(Some(me)).is_ok_and(|n| n != base) {
        let _ = rustix::process::setpriority_process(Some(me), base);
    }
}

/// While it lives, the calling thread runs at lowmemd's own priority; dropped, it is back
/// where it was. For the gentle actions of the kill path (a page-out or a freeze
/// compresses a whole app's pages on the pipeline's thread): they make room ahead of
/// need, and must not take the CPU from the app the user works with.
pub struct Calm {
    was_fifo: bool,
    was_nice: Option<i32>,
}

impl Calm {
    pub fn enter() -> Calm {
        let was_fifo = thread_is_fifo();
        let me = rustix::thread::gettid();
        let was_nice = rustix::process::getpriority_process(Some(me)).ok();
        calm_this_thread();
        Calm { was_fifo, was_nice }
    }
}

impl Drop for Calm {
    fn drop(&mut self) {
        let me = rustix::thread::gettid();
        if let Some(n) = self.was_nice {
            let _ = rustix::process::setpriority_process(Some(me), n);
        }
        if self.was_fifo {
            let _ = set_thread_fifo(Some(KILL_PATH_FIFO));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    /// The kill path runs real-time, its gentle actions and the threads it starts do not
    /// (as root, like the daemon; each on a thread of its own so no other test is moved).
    #[test]
    fn the_kill_path_is_hurried_and_what_it_starts_is_not() {
        std::thread::spawn(|| {
            let base = nice();
            assert_eq!(
                hurry_this_thread(),
                Hurried::Fifo,
                "needs CAP_SYS_NICE (root)"
            );
            assert!(thread_is_fifo());
            {
                let _calm = Calm::enter();
                assert!(
                    !thread_is_fifo(),
                    "a page-out runs at lowmemd's own priority"
                );
                assert_eq!(nice(), base);
            }
            assert!(
                thread_is_fifo(),
                "and the kill path is hurried again after it"
            );
            let started = std::thread::spawn(|| {
                let inherited = thread_is_fifo();
                calm_this_thread();
                (inherited, thread_is_fifo(), nice())
            });
            assert_eq!(
                started.join().unwrap(),
                (true, false, base),
                "a thread it starts inherits the hurry and is calmed"
            );
        })
        .join()
        .unwrap();
    }

    /// Where real-time is refused, nice -20; calming puts the base nice back.
    #[test]
    fn nice_is_the_fallback_and_calm_undoes_it() {
        std::thread::spawn(|| {
            let base = nice();
            let me = rustix::thread::gettid();
            rustix::process::setpriority_process(Some(me), KILL_PATH_NICE).unwrap();
            {
                let _calm = Calm::enter();
                assert_eq!(nice(), base);
            }
            assert_eq!(nice(), KILL_PATH_NICE);
            calm_this_thread();
            assert_eq!(nice(), base);
            assert!(hurried_warning("t", &Hurried::Nice("EPERM".into())).is_some());
            assert_eq!(hurried_warning("t", &Hurried::Fifo), None);
        })
        .join()
        .unwrap();
    }
}
