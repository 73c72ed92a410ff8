//! Nothing outside the kill path may stop a kill: a log reader that stops reading, a cgroup
//! named in a roundabout way, a victim that cannot exit, a scope that goes away and comes
//! back, a worker thread that dies, a process named to forge log lines. Each test here
//! failed on the daemon before the fix it guards.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// A runaway (adj 900, growing at `rate` MiB/s without bound) must be killed by lowmemd:
/// dead within 15 s. The caller checks that the kernel OOM killer stayed out.
fn runaway_dies(cg: &TestCgroup, name: &str, rate: u64) {
    let mut w = Workload::spawn(cg, name, 900, 0, rate);
    assert!(w.wait_ready(), "{name} did not start");
    assert!(
        w.wait_dead(Duration::from_secs(15)),
        "{name} still alive after 15 s"
    );
}

/// A loopback address nobody listens on now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn wait_http(addr: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, body)) = http_get(addr, path) {
            return body;
        }
        assert!(Instant::now() < deadline, "{addr}{path} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let fd = pidfd_open(
        Pid::from_raw(child.id() as i32).unwrap(),
        PidfdFlags::empty(),
    )
    .unwrap();
    pidfd_send_signal(&fd, Signal::TERM).unwrap();
}

/// Waits for `child` to exit; its exit code and how long it took.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<(Option<i32>, Duration)> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some((status.code(), started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_reader_that_stops_reading_never_blocks_a_kill() {
    let _serial = serial();
    require_real_kernel("a_reader_that_stops_reading_never_blocks_a_kill");
    let cg = TestCgroup::create("stuck-reader", 256);
    let addr = free_addr();
    // The event log on stdout and the log on stderr both go into pipes that are never
    // read, shrunk to one page so they fill after a few records.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args(["run", "--cgroup", &cg.name, "--event-log", "-"])
        .args(["--metrics-listen", &addr, "--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    for fd in [out.as_fd(), err.as_fd()] {
        rustix::pipe::fcntl_setpipe_size(fd, 4096).unwrap();
    }
    let mut daemon = KillOnDrop(child);
    wait_http(&addr, "/status");
    // Enough kills that their records (~500 bytes each) overflow a one-page pipe.
    for i in 0..12 {
        runaway_dies(&cg, &format!("runaway{i}"), 200);
    }
    assert_eq!(cg.oom_kills(), 0, "the kernel OOM killer had to step in");
    let metrics = wait_http(&addr, "/metrics");
    assert!(
        metric_sum(&metrics, "lowmemd_kills_total") >= 12.0,
        "{metrics}"
    );
    // Proof that the event log's writer really is stuck: its pipe holds fewer records
    // than the kills made.
    rustix::fs::fcntl_setfl(&out, rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = rustix::io::read(&out, &mut buf).unwrap_or(0);
    let records = buf[..n].iter().filter(|&&b| b == b'\n').count();
    assert!(
        records < 12,
        "{records} records in the pipe: it never filled"
    );
    sigterm(&daemon.0);
    let (code, took) = wait_exit(&mut daemon.0, Duration::from_secs(5))
        .expect("SIGTERM did not stop lowmemd while its readers were stuck");
    assert_eq!(code, Some(0));
    assert!(took <= Duration::from_secs(1), "SIGTERM took {took:?}");
    drop((out, err));
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_cgroup_named_in_any_spelling_is_protected() {
    let _serial = serial();
    require_real_kernel("a_cgroup_named_in_any_spelling_is_protected");
    let cg = TestCgroup::create("spelling", 256);
    let bare = &cg.name[1..];
    for spelling in [
        format!("//{bare}"),
        format!("{}/.", cg.name),
        format!("{}/../{bare}", cg.name),
    ] {
        let mut daemon = Daemon::start_as(&spelling, &[]);
        runaway_dies(&cg, "runaway", 200);
        assert_eq!(
            cg.oom_kills(),
            0,
            "--cgroup {spelling}: the kernel OOM killer fired"
        );
        // Stopping drains the event log's writer: the record is there after.
        assert_eq!(daemon.stop(), Some(0));
        let kills = actions(&daemon.events(), "kill").len();
        assert!(kills >= 1, "--cgroup {spelling}: lowmemd killed nothing");
    }
}

/// A v1 freezer cgroup, thawed and removed with its processes on Drop.
struct Frozen {
    dir: PathBuf,
}

impl Frozen {
    fn freeze(pid: i32) -> Frozen {
        let dir = Path::new("/sys/fs/cgroup/freezer")
            .join(format!("lowmemd-test-frozen-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("a v1 freezer hierarchy at /sys/fs/cgroup/freezer");
        let f = Frozen { dir };
        std::fs::write(f.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(f.dir.join("freezer.state"), "FROZEN").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(f.dir.join("freezer.state"))
            .unwrap()
            .trim()
            != "FROZEN"
        {
            assert!(Instant::now() < deadline, "the freezer never froze");
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.parse().ok()) {
            sigkill(pid);
        }
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        for _ in 0..250 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
#[ignore = "needs root, a cgroup-v1 memory controller and the v1 freezer: run as root with cargo test -- --include-ignored"]
fn a_killed_victim_that_cannot_exit_is_not_picked_again() {
    let s = Scenario::start("frozen", 256, &[]);
    // The first choice (adj 1000) is frozen: SIGKILL stays pending, it never exits, and
    // process_mrelease takes its memory anyway.
    let victim = Workload::ready(&s.cg, "frozen", 1000, 60);
    let _frozen = Frozen::freeze(victim.pid);
    // 50 MiB/s: slow enough that the one wait the frozen victim costs is survivable.
    runaway_dies(&s.cg, "runaway1", 50);
    // Long after the first kill's deadline: the frozen victim is still there, still first
    // by adj, and must not be chosen again.
    std::thread::sleep(Duration::from_secs(12));
    runaway_dies(&s.cg, "runaway2", 50);
    assert_eq!(s.cg.oom_kills(), 0, "the kernel OOM killer had to step in");
    let events = s.daemon.events();
    let kills_of_frozen = actions(&events, "kill")
        .into_iter()
        .filter(|e| e["pid"] == victim.pid)
        .count();
    assert_eq!(kills_of_frozen, 1, "{events:#?}");
    assert!(
        victim.alive(),
        "the frozen victim exited: the test proved nothing"
    );
}

/// Someone else (the kernel's OOM killer, a user, another daemon) killed the largest
/// process, and it has not exited — here frozen, in life slowly exiting: its memory is on
/// its way back. lowmemd reaps it (process_mrelease) instead of passing it over and
/// killing the next process for the same shortage, as it did before.
#[test]
#[ignore = "needs root, a cgroup-v1 memory controller, the v1 freezer and process_mrelease (5.15): run as root with cargo test -- --include-ignored"]
fn a_process_someone_else_killed_is_reaped_and_nobody_else_dies_for_it() {
    let _serial = serial();
    require_real_kernel("dying");
    let cg = TestCgroup::create("dying", 256);
    let big = Workload::ready(&cg, "killed", 500, 160);
    let innocent = Workload::ready(&cg, "innocent", 500, 40);
    let _frozen = Frozen::freeze(big.pid);
    sigkill(big.pid);
    // 200 of 256 MiB in use: about a fifth available, under the level's 30 % from the
    // first sample on.
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 30\nwait_ms = 1000\n",
    );
    let d = Daemon::start(&cg, &["--policy".as_ref(), policy.as_os_str()]);
    assert!(
        d.wait_log("was dying already", Duration::from_secs(10)),
        "never found the killed process dying"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(innocent.alive(), "the innocent process was killed");
    assert!(actions(&d.events(), "kill").is_empty(), "{:#?}", d.events());
    assert!(
        cg.usage_mib() < 100,
        "its memory did not come back: {} MiB in use",
        cg.usage_mib()
    );
    assert!(
        big.alive(),
        "the killed process exited: the test proved nothing"
    );
    assert_eq!(cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_scope_removed_and_created_anew_is_watched_again() {
    let s = Scenario::start("regrow", 256, &[]);
    let addr = s.daemon.metrics_addr();
    for dir in s.cg.v2.iter().chain([&s.cg.v1]) {
        std::fs::remove_dir(dir).unwrap();
    }
    assert!(
        s.daemon
            .wait_log("cannot read the scope's memory", Duration::from_secs(5))
    );
    let status: serde_json::Value = serde_json::from_str(&wait_http(&addr, "/status")).unwrap();
    assert_eq!(
        (status["scope_ok"].as_bool(), status["healthy"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        metric_sum(&wait_http(&addr, "/metrics"), "lowmemd_scope_up"),
        0.0
    );
    std::fs::create_dir(&s.cg.v1).unwrap();
    if let Some(v2) = &s.cg.v2 {
        std::fs::create_dir(v2).unwrap();
    }
    std::fs::write(
        s.cg.v1.join("memory.limit_in_bytes"),
        (256u64 << 20).to_string(),
    )
    .unwrap();
    assert!(
        s.daemon
            .wait_log("sources re-opened", Duration::from_secs(5))
    );
    let reopened = s
        .daemon
        .stderr
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.contains("sources re-opened"))
        .cloned()
        .unwrap();
    assert!(
        reopened.contains("psi_") && reopened.contains("vmpressure"),
        "{reopened}"
    );
    runaway_dies(&s.cg, "runaway", 200);
    assert_eq!(s.cg.oom_kills(), 0, "the kernel OOM killer had to step in");
    let status: serde_json::Value = serde_json::from_str(&wait_http(&addr, "/status")).unwrap();
    assert_eq!(status["scope_ok"].as_bool(), Some(true));
    assert_eq!(
        metric_sum(&wait_http(&addr, "/metrics"), "lowmemd_scope_up"),
        1.0
    );
}

#[test]
fn a_worker_thread_that_dies_takes_the_daemon_down() {
    let child = Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args(["run", "--dry-run", "--metrics-listen", "off"])
        .args(["--fail-monitor-after", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let (code, _) = wait_exit(&mut child.0, Duration::from_secs(10))
        .expect("lowmemd kept running with its monitor thread gone");
    assert_eq!(code, Some(1));
    let mut err = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // The monitor ends, and with it the pipeline's input: either may say it first.
    assert!(
        err.contains("thread stopped: nothing is protected"),
        "{err}"
    );
}

#[test]
fn a_process_name_cannot_forge_lines_or_reach_the_terminal() {
    // comm holds 15 bytes: an escape sequence, a newline and the start of a fake record.
    let name = "\u{1b}[2Jx\nlowmemd[i";
    let mut w = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_lowmemd-workload"))
            .args(["--name", name, "--mib", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(w.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let out = Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .arg("rank")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let pid = w.0.id().to_string();
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pid.as_str()))
        .unwrap_or_else(|| panic!("pid {pid} not ranked:\n{text}"));
    assert!(row.contains("\\u{1b}[2Jx\\u{a}lowmemd[i"), "{row:?}");
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape reached the terminal"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("lowmemd[i")),
        "a forged line:\n{text}"
    );
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_megabyte_command_line_does_not_slow_a_kill_by_a_cmdline_rule() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let text = lowmemd::policy::DEFAULT_TOML.replace("scope = \"system\"", "")
        + "\n[[rule]]\nname = \"never\"\ncmdline = \"no-such-program\"\nprefer = 10\n";
    std::fs::write(&policy, text).unwrap();
    let s = Scenario::start("cmdline", 256, &["--policy".as_ref(), policy.as_os_str()]);
    // Ten 100 KB arguments (one argument may hold at most 128 KiB).
    let pad = "x".repeat(100_000);
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for _ in 0..10 {
        args.push("--pad".as_ref());
        args.push(pad.as_ref());
    }
    let mut leak = Workload::spawn_with(&s.cg, "longcmd", 900, 0, 200, &args);
    assert!(leak.wait_ready());
    assert!(leak.wait_dead(Duration::from_secs(15)), "the leak survived");
    assert_eq!(s.cg.oom_kills(), 0, "the kernel OOM killer fired first");
    // The record is written by the event log's own thread, a moment after the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let kill = loop {
        let events = s.daemon.events();
        if let Some(k) = actions(&events, "kill")
            .into_iter()
            .find(|e| e["pid"] == leak.pid)
        {
            break k.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lowmemd did not kill it: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Reading and matching the whole megabyte added 200-400 ms here; 4 KiB adds nothing.
    let ms = kill["sample_to_kill_ms"].as_u64().unwrap();
    assert!(ms <= 50, "{ms} ms from the sample to the signal");
}
