//! Running one hook: as whom, with what, for how long, how often, and saying what went
//! wrong without flooding the log.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open, pidfd_send_signal};

use crate::clock::monotonic_ms;
use crate::pipeline::confirm::{Outcome, wait_exit};
use crate::policy::Hook;

use super::{Job, orphans};

/// A hook's problems and its rate limit are said at most once per this.
const SAY_EVERY: Duration = Duration::from_secs(60);
/// The rate limit's window.
const MINUTE: Duration = Duration::from_secs(60);
/// A hook's PATH: it runs with nothing else of lowmemd's environment.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{exec}: cannot start it: {source}")]
    Spawn {
        exec: String,
        source: std::io::Error,
    },
    #[error("{exec}: pidfd_open of its pid {pid}: {source}")]
    Pidfd {
        exec: String,
        pid: u32,
        source: std::io::Error,
    },
    #[error("{exec}: waiting for it: {source}")]
    Wait {
        exec: String,
        source: std::io::Error,
    },
}

/// How a hook run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    Exited(ExitStatus),
    /// Still running at its timeout: killed, with its process group and whatever else it
    /// started.
    TimedOut,
    /// Ended, but left processes behind that were still running at its timeout: killed
    /// (how many).
    LeftBehind(usize),
    /// Over `max_per_minute`: not started.
    RateLimited,
}

/// Per hook (by its whole definition): recent starts and what was said when.
#[derive(Debug, Default)]
struct State {
    starts: VecDeque<Instant>,
    said_at: Option<Instant>,
    /// Problems since the last time one was said.
    unsaid: u64,
}

/// The hooks thread's side: runs the hooks of each job in order.
#[derive(Debug, Default)]
pub struct Runner {
    state: HashMap<Hook, State>,
}

impl Runner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn run(&mut self, job: &Job) {
        for hook in &job.hooks {
            let ran = self.run_one(hook, &job.env, &job.stdin, Instant::now());
            let problem = match &ran {
                Ok(Ran::Exited(st)) if st.success() => {
                    log::debug!("hook {} ({}) ran", hook.name, hook.exec[0]);
                    continue;
                }
                Ok(Ran::Exited(st)) => match (st.code(), st.signal()) {
                    (Some(c), _) => format!("{}: exited with status {c}", hook.exec[0]),
                    (_, Some(s)) => format!("{}: killed by signal {s}", hook.exec[0]),
                    _ => format!("{}: ended with {st}", hook.exec[0]),
                },
                Ok(Ran::TimedOut) => format!(
                    "{}: still running after {} ms: killed, with every process it started",
                    hook.exec[0], hook.timeout_ms
                ),
                Ok(Ran::LeftBehind(n)) => format!(
                    "{}: left {n} processes running past its {} ms: killed",
                    hook.exec[0], hook.timeout_ms
                ),
                Ok(Ran::RateLimited) => format!(
                    "{}: more than {} starts in a minute: skipped",
                    hook.exec[0], hook.max_per_minute
                ),
                Err(e) => e.to_string(),
            };
            self.say(hook, &problem, Instant::now());
        }
    }

    /// Logs a hook's problem unless one was logged less than a minute ago (then counts it
    /// for the next line): a missing program must not write a line per kill.
    fn say(&mut self, hook: &Hook, problem: &str, now: Instant) -> bool {
        let st = self.state.entry(hook.clone()).or_default();
        if st
            .said_at
            .is_some_and(|t| now.duration_since(t) < SAY_EVERY)
        {
            st.unsaid += 1;
            return false;
        }
        let more = match st.unsaid {
            0 => String::new(),
            n => format!(" ({n} more problems of this hook in the last minute)"),
        };
        log::warn!(
            "hook {} (on {}): {problem}{more}",
            hook.name,
            hook.on.as_str()
        );
        st.said_at = Some(now);
        st.unsaid = 0;
        true
    }

    fn run_one(
        &mut self,
        hook: &Hook,
        env: &[(String, String)],
        stdin: &[u8],
        now: Instant,
    ) -> Result<Ran, HookError> {
        let st = self.state.entry(hook.clone()).or_default();
        while st
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            st.starts.pop_front();
        }
        if st.starts.len() >= hook.max_per_minute as usize {
            return Ok(Ran::RateLimited);
        }
        st.starts.push_back(now);
        run(hook, env, stdin)
    }
}

/// The account to switch to, if any: the hook's `user`; without one, `nobody` when we are
/// root. A daemon that is not root runs hooks as itself (it could not switch anyway, and
/// it is not root), minus its ambient capabilities.
fn switch_to(hook: &Hook, euid: u32) -> Option<(u32, u32)> {
    match &hook.user {
        Some(u) if u.uid == euid => None,
        Some(u) => Some((u.uid, u.gid)),
        None if euid == 0 => Some(nobody()),
        None => None,
    }
}

/// `nobody` from /etc/passwd, else the kernel's overflow ids.
fn nobody() -> (u32, u32) {
    crate::policy::validate::passwd("nobody").unwrap_or((65534, 65534))
}

/// Runs one hook to its end or its timeout.
pub fn run(hook: &Hook, env: &[(String, String)], stdin: &[u8]) -> Result<Ran, HookError> {
    let exec = || hook.exec[0].clone();
    let mut cmd = Command::new(&hook.exec[0]);
    cmd.args(&hook.exec[1..])
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        // A group of its own (pgid = its pid), so that the timeout kills all it started.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = switch_to(hook, rustix::process::geteuid().as_raw()) {
        // std drops the supplementary groups (setgroups(0)) when root switches users.
        cmd.uid(uid).gid(gid);
    }
    crate::sys::drop_ambient_caps_on_exec(&mut cmd);
    let started = monotonic_ms();
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        exec: exec(),
        source,
    })?;
    // Our own child, not yet waited for: its pid cannot be reused before we reap it, so the
    // pidfd names this very process.
    let pidfd = Pid::from_raw(child.id() as i32)
        .ok_or_else(|| std::io::Error::from(rustix::io::Errno::SRCH))
        .and_then(|pid| Ok(pidfd_open(pid, PidfdFlags::empty())?));
    let pidfd = match pidfd {
        Ok(fd) => fd,
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Pidfd {
                exec: exec(),
                pid: child.id(),
                source,
            });
        }
    };
    if let Some(mut pipe) = child.stdin.take() {
        // Non-blocking: a hook that never reads its stdin must not hold this thread past
        // its timeout. The event is a few hundred bytes; a pipe holds 64 KiB.
        let _ = rustix::io::ioctl_fionbio(&pipe, true);
        if let Err(e) = pipe.write_all(stdin) {
            log::debug!("hook {}: stdin not fully written: {e}", hook.name);
        }
    }
    let deadline = started + hook.timeout_ms;
    let ran = match wait_exit(&pidfd, deadline) {
        Outcome::Exited { .. } => None,
        Outcome::TimedOut => {
            // The group by its raw id: there is no pidfd for a process group. Sound here
            // because the id is the leader's pid and the leader is our child, not yet
            // reaped (we wait for it below): the number cannot be reused for another group
            // until then. The leader's pidfd after, in case it left its own group.
            if let Some(pgid) = Pid::from_raw(child.id() as i32) {
                let _ = kill_process_group(pgid, Signal::KILL);
            }
            let _ = pidfd_send_signal(&pidfd, Signal::KILL);
            Some(Ran::TimedOut)
        }
    };
    let status = child.wait().map_err(|source| HookError::Wait {
        exec: exec(),
        source,
    })?;
    // Whatever detached from the group (setsid, a daemonising double fork) came to us as
    // an orphan: it has until the same deadline.
    let left = orphans::sweep(deadline);
    Ok(match ran {
        Some(r) => r,
        None if left > 0 => Ran::LeftBehind(left),
        None => Ran::Exited(status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HookOn;
    use crate::policy::hooks::HookUser;

    fn hook(exec: &[&str], timeout_ms: u64, max_per_minute: u32) -> Hook {
        Hook {
            name: "t".into(),
            line: 1,
            on: HookOn::Kill,
            exec: exec.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
            max_per_minute,
            // As ourselves: the unit tests run as root or not, and write to a private
            // temporary directory.
            user: Some(HookUser {
                name: "me".into(),
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            }),
        }
    }

    #[test]
    fn a_hook_gets_the_environment_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "env | grep -E '^(LOWMEMD_|PATH=|HOME=)' | sort > {0}.env; cat > {0}.in",
            out.display()
        );
        let h = hook(&["/bin/sh", "-c", &script], 5000, 10);
        let env = vec![("LOWMEMD_PID".to_string(), "42".to_string())];
        let ran = run(&h, &env, b"{\"pid\":42}\n").unwrap();
        assert!(matches!(ran, Ran::Exited(s) if s.success()), "{ran:?}");
        let seen = std::fs::read_to_string(dir.path().join("out.env")).unwrap();
        assert_eq!(seen, format!("LOWMEMD_PID=42\nPATH={PATH}\n"));
        let input = std::fs::read_to_string(dir.path().join("out.in")).unwrap();
        assert_eq!(input, "{\"pid\":42}\n");
    }

    #[test]
    fn a_hanging_hook_is_killed_at_its_timeout() {
        let h = hook(&["/bin/sleep", "30"], 200, 10);
        let started = Instant::now();
        let ran = run(&h, &[], b"").unwrap();
        let took = started.elapsed();
        assert_eq!(ran, Ran::TimedOut);
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn a_hook_that_never_reads_stdin_still_ends_at_its_timeout() {
        let big = vec![b'x'; 1 << 20];
        let h = hook(&["/bin/sleep", "30"], 200, 10);
        let started = Instant::now();
        assert_eq!(run(&h, &[], &big).unwrap(), Ran::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_missing_hook_is_an_error_said_once_a_minute() {
        let h = hook(&["/nonexistent/lowmemd-hook"], 200, 10);
        let e = run(&h, &[], b"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/lowmemd-hook: cannot start it:"),
            "{e}"
        );
        let mut r = Runner::new();
        let t0 = Instant::now();
        assert!(r.say(&h, "x", t0));
        assert!(!r.say(&h, "x", t0 + Duration::from_secs(59)));
        assert!(!r.say(&h, "x", t0 + Duration::from_secs(30)));
        assert!(r.say(&h, "x", t0 + Duration::from_secs(61)));
        assert_eq!(r.state[&h].unsaid, 0);
    }

    #[test]
    fn starts_are_limited_per_minute() {
        let h = hook(&["/bin/true"], 1000, 2);
        let mut r = Runner::new();
        let t0 = Instant::now();
        let mut ran = Vec::new();
        for s in [0, 1, 2, 61] {
            ran.push(
                r.run_one(&h, &[], b"", t0 + Duration::from_secs(s))
                    .unwrap(),
            );
        }
        assert!(matches!(ran[0], Ran::Exited(_)) && matches!(ran[1], Ran::Exited(_)));
        assert_eq!(ran[2], Ran::RateLimited);
        assert!(matches!(ran[3], Ran::Exited(_)), "{ran:?}");
    }

    #[test]
    fn without_a_user_root_runs_hooks_as_nobody() {
        let mut h = hook(&["/bin/true"], 1000, 1);
        h.user = None;
        assert_eq!(switch_to(&h, 0), Some(nobody()));
        assert_eq!(switch_to(&h, 1000), None, "not root: as itself");
        h.user = Some(HookUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
        });
        assert_eq!(switch_to(&h, 0), None, "configured to run as root");
        assert_eq!(
            switch_to(&h, 1000),
            Some((0, 0)),
            "asked for; fails unless allowed"
        );
        if rustix::process::geteuid().is_root() {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("id");
            // nobody may write there: the directory is ours, the file is not yet.
            rustix::fs::chmod(dir.path(), rustix::fs::Mode::from_raw_mode(0o1777)).unwrap();
            let mut h = hook(
                &["/bin/sh", "-c", &format!("id -u > {}", out.display())],
                5000,
                1,
            );
            h.user = None;
            let ran = run(&h, &[], b"").unwrap();
            assert!(matches!(ran, Ran::Exited(s) if s.success()), "{ran:?}");
            let uid = std::fs::read_to_string(&out).unwrap();
            assert_eq!(uid.trim(), nobody().0.to_string());
        }
    }
}
