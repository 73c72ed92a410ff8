//! What an idle daemon costs, read from /proc without disturbing it: wake-ups (the context
//! switches of all its threads: a sleeping thread switches out once per wake-up), CPU time
//! and resident memory. And the daemons themselves, started and stopped through pidfds.
//! Shared by `benches/idle.rs` and `tests/idle.rs` (each includes this file by path).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// A valid policy with PSI conditions only (no `available_below_*`): nothing but the kernel's
/// PSI triggers should have to wake a daemon running it. The 2 s window is the shortest the
/// kernel accepts without CAP_SYS_RESOURCE (DESIGN.md); the stall shares are the default
/// policy's (50 % full, 10 % some).
pub const PSI_ONLY_POLICY: &str = r#"# PSI conditions only: no available-memory watermark.
[psi]
window_ms = 2000

[[level]]
name = "critical"
action = "kill"
min_adj = 0
psi_full_ms = 1000
wait_ms = 1000

[[level]]
name = "low"
action = "kill"
min_adj = 900
psi_some_ms = 200
wait_ms = 1000
cooldown_ms = 100
"#;

/// Writes [`PSI_ONLY_POLICY`] into a new folder `dir` and checks it with `lowmemd check`
/// (panics, with the checker's words, if it is refused). The folder holds nothing else:
/// lowmemd watches its policy's folder for edits, and any other file written there (a
/// daemon's stderr, say) would wake it.
pub fn write_psi_only_policy(lowmemd: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the policy folder");
    let path = dir.join("psi-only.toml");
    std::fs::write(&path, PSI_ONLY_POLICY).expect("write the PSI-only policy");
    let out = Command::new(lowmemd)
        .arg("check")
        .arg(&path)
        .output()
        .expect("run lowmemd check");
    assert!(
        out.status.success(),
        "lowmemd check refused the PSI-only policy: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// One thread's context switches (voluntary + involuntary) and its name.
#[derive(Debug, Clone)]
struct ThreadCount {
    name: String,
    switches: u64,
}

/// A reading of one process: per-thread context switches and CPU ticks (utime + stime).
#[derive(Debug, Clone)]
pub struct Reading {
    threads: BTreeMap<i32, ThreadCount>,
    cpu_ticks: u64,
}

/// `Key:\tN` of a /proc status text.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Reads `pid`'s threads and CPU time. A thread that exits between the directory listing
/// and its status read is left out (an idle daemon starts no threads).
pub fn read(pid: i32) -> std::io::Result<Reading> {
    let mut threads = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let switches = status_field(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        threads.insert(tid, ThreadCount { name, switches });
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may itself hold spaces and parentheses: state is
    // field 3, utime 14 and stime 15 (proc(5)), so 11 and 12 after the state.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(Reading {
        threads,
        cpu_ticks: tick(11) + tick(12),
    })
}

/// What a process cost between two readings.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Context switches of all threads over the window.
    pub wakeups: u64,
    /// The same per thread, as `name(tid)=N`, busiest first.
    pub per_thread: Vec<String>,
    /// utime + stime over the window, in ms (USER_HZ resolution: 10 ms here).
    pub cpu_ms: u64,
    /// VmRSS at the end of the window.
    pub rss_kib: u64,
    /// The anonymous (heap, stacks) and file-backed (code of the binary and its libraries)
    /// parts of it: RssAnon and RssFile.
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
}

impl Usage {
    pub fn between(pid: i32, before: &Reading, after: &Reading) -> Usage {
        let mut per: Vec<(u64, String)> = after
            .threads
            .iter()
            .map(|(tid, t)| {
                // A thread born inside the window counts from zero.
                let was = before.threads.get(tid).map_or(0, |b| b.switches);
                (t.switches.saturating_sub(was), format!("{}({tid})", t.name))
            })
            .collect();
        per.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let hz = rustix::param::clock_ticks_per_second().max(1);
        Usage {
            wakeups: per.iter().map(|p| p.0).sum(),
            per_thread: per.iter().map(|(n, t)| format!("{t}={n}")).collect(),
            cpu_ms: after.cpu_ticks.saturating_sub(before.cpu_ticks) * 1000 / hz,
            rss_kib: rss_kib(pid),
            rss_anon_kib: status_kib(pid, "RssAnon"),
            rss_file_kib: status_kib(pid, "RssFile"),
        }
    }
}

/// VmRSS of `pid` in KiB (0 if it is gone).
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `pid`'s status, 0 when it cannot be read.
fn status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field(&s, key))
        .unwrap_or(0)
}

/// A child process held by a pidfd: signalled only through it, stopped on Drop (SIGTERM,
/// then SIGKILL), and reaped. Its stderr goes to a file, shown when it fails to start.
pub struct Daemon {
    pub name: String,
    child: Child,
    pidfd: OwnedFd,
    stderr: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with stdin and stdout closed, stderr into `stderr`, and without the
    /// service manager's variables of our own environment (so a daemon neither logs to the
    /// journal nor shortens its sleep for a watchdog it does not have).
    pub fn spawn(name: &str, mut cmd: Command, stderr: PathBuf) -> std::io::Result<Daemon> {
        let err = std::fs::File::create(&stderr)?;
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()?;
        // Our own unreaped child: its pid cannot be reused before we wait for it, so this
        // pidfd refers to it.
        let pidfd = Pid::from_raw(child.id() as i32)
            .ok_or_else(|| std::io::Error::other("pid 0"))
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).map_err(std::io::Error::from));
        let pidfd = match pidfd {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd we could only stop it by raw pid: do not leave it running.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Daemon {
            name: name.into(),
            child,
            pidfd,
            stderr,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Panics, with its stderr, unless it is still running and its stderr has `needle`.
    pub fn assert_started(&mut self, needle: &str) {
        let exited = self.child.try_wait().ok().flatten();
        let err = self.stderr();
        assert!(
            exited.is_none() && err.contains(needle),
            "{} did not start ({}): {err}",
            self.name,
            exited.map_or("still running".into(), |s| s.to_string())
        );
    }

    /// Whether the pidfd is readable (the process exited) within `timeout`.
    fn exits_within(&self, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
    }

    /// SIGTERM through the pidfd, SIGKILL after 3 s, then reap.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = pidfd_send_signal(&self.pidfd, Signal::TERM);
        if !self.exits_within(Duration::from_secs(3)) {
            let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `lowmemd run --dry-run --metrics-listen off [--policy P] [extra]`.
pub fn lowmemd_command(lowmemd: &Path, policy: Option<&Path>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(lowmemd);
    cmd.args(["run", "--dry-run", "--metrics-listen", "off"]);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    cmd.args(extra);
    cmd
}

/// The line lowmemd logs once it runs.
pub const STARTED: &str = "monitoring ";
