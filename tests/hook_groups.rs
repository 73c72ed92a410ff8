//! A hook's timeout ends everything the hook started: a hook that ignores SIGTERM and has
//! a child, one that moves a child into a session of its own, one that daemonises (its
//! child orphaned, the hook gone at once).
//!
//! Its own test binary: it makes the test process the reaper of its orphans, as lowmemd's
//! hooks thread makes the daemon, and then every child of this process must be a hook's
//! (so the cases run one after another, in one test).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lowmemd::policy::hooks::HookUser;
use lowmemd::policy::{Hook, HookOn};
use lowmemd::report::hooks::{Ran, adopt_orphans, run};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

fn hook(script: &str, timeout_ms: u64) -> Hook {
    Hook {
        name: "t".into(),
        line: 1,
        on: HookOn::Kill,
        exec: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout_ms,
        max_per_minute: 100,
        user: Some(HookUser {
            name: "me".into(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }),
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(") ").next().and_then(|r| r.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// The pids a hook wrote to its file, killed on Drop whatever the test found.
struct Written(PathBuf);

impl Written {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for pid in self.pids() {
            if let Some(p) = Pid::from_raw(pid)
                && let Ok(fd) = pidfd_open(p, PidfdFlags::empty())
            {
                let _ = pidfd_send_signal(&fd, Signal::KILL);
            }
        }
    }
}

/// Runs `script` with a 600 ms timeout; what it ended as, and the pids it wrote to `$P`.
fn run_hook(dir: &Path, tag: &str, script: &str) -> (Ran, Written, Duration) {
    let written = Written(dir.join(tag));
    let script = script.replace("$P", &written.0.display().to_string());
    let started = Instant::now();
    let ran = run(&hook(&script, 600), &[], b"").unwrap();
    let took = started.elapsed();
    (ran, written, took)
}

#[test]
fn every_process_a_hook_started_is_gone_after_its_timeout() {
    adopt_orphans().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // Ignores SIGTERM, and its child sleeps in its process group.
        (
            "stubborn",
            "trap '' TERM; sleep 600 & echo $! >> $P; wait",
            "TimedOut",
        ),
        // Its child leaves the process group for a session of its own.
        (
            "setsid",
            "setsid sleep 600 & echo $! >> $P; wait",
            "TimedOut",
        ),
        // Daemonises: the child is in a session of its own, its parent gone, and the hook
        // exits at once.
        (
            "daemon",
            "setsid sh -c 'sleep 600 & echo $! >> $P'; exit 0",
            "LeftBehind",
        ),
    ];
    for (tag, script, want) in cases {
        let (ran, written, took) = run_hook(dir.path(), tag, script);
        let pids = written.pids();
        assert_eq!(pids.len(), 1, "{tag}: the hook did not start its child");
        assert!(
            format!("{ran:?}").starts_with(want),
            "{tag}: {ran:?}, wanted {want}"
        );
        assert!(
            took >= Duration::from_millis(550) && took < Duration::from_secs(3),
            "{tag}: {took:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in pids {
            assert!(!alive(p), "{tag}: pid {p} outlived the hook's timeout");
        }
    }
    // A hook that ends on time with nothing left behind is not held to its timeout.
    let started = Instant::now();
    let ran = run(&hook("exit 0", 5000), &[], b"").unwrap();
    assert!(matches!(ran, Ran::Exited(s) if s.success()), "{ran:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
