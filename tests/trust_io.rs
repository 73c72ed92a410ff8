//! What leaves the daemon and what it inherits, against someone else on the same machine: a
//! symlink planted where the event log goes, a process squatting the metrics port, a fake
//! or hostile endpoint answering `lowmemd status`, fds inherited from whoever started
//! lowmemd, and hooks in a dry run. Each test failed on the daemon before the fix it guards.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A `lowmemd run` started by a test, killed on Drop; its stderr lines collected.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Run {
    /// Starts `cmd` (a lowmemd command line) and waits for the daemon's start-up line.
    /// Its stdin is the caller's to set.
    fn start(mut cmd: Command) -> Run {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lowmemd");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                if line.contains("monitoring ") {
                    let _ = tx.send(());
                }
                seen.lock().unwrap().push(line);
            }
        });
        let mut run = Run { child, lines };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let status = run.child.try_wait();
            panic!(
                "lowmemd did not start ({status:?}): {:?}",
                run.lines.lock().unwrap()
            );
        }
        run
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lowmemd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lowmemd"))
}

fn dry_run() -> Command {
    let mut cmd = lowmemd();
    cmd.args(["run", "--dry-run"]);
    cmd
}

#[test]
fn a_planted_symlink_for_the_event_log_is_refused_and_its_target_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("events.jsonl");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", "off", "--event-log"])
        .arg(&link);
    let mut run = Run::start(cmd);
    let said = run
        .wait_log("--event-log", Duration::from_secs(2))
        .expect("the refused event log is said");
    assert!(
        said.contains(&link.display().to_string()) && said.contains("symbolic link"),
        "{said}"
    );
    // Someone who can plant a link must not be able to keep lowmemd from protecting.
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.running(), "lowmemd stopped over a planted link");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:secret\n");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
}

#[test]
fn a_new_event_log_is_created_0640() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", "off", "--event-log"])
        .arg(&log);
    let _run = Run::start(cmd);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "{mode:o}");
}

/// GETs `path` until it answers 200 or `timeout` passes.
fn wait_http(addr: &str, path: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = http_get(addr, path) {
            return Some(body);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_squatted_metrics_port_is_retried_and_the_daemon_keeps_running() {
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", &addr]);
    let mut run = Run::start(cmd);
    let said = run
        .wait_log("--metrics-listen", Duration::from_secs(2))
        .expect("the failed bind is said");
    assert!(said.contains(&addr), "{said}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(run.running(), "lowmemd exited over a busy metrics port");
    drop(squatter);
    let metrics = wait_http(&addr, "/metrics", Duration::from_secs(20))
        .expect("the metrics endpoint never came up once the port was free");
    assert!(
        metric_sum(&metrics, "lowmemd_metrics_bind_failures_total") >= 1.0,
        "{metrics}"
    );
    assert!(run.running());
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn a_squatted_metrics_port_does_not_stop_a_kill() {
    let _serial = serial();
    require_real_kernel("a_squatted_metrics_port_does_not_stop_a_kill");
    let cg = TestCgroup::create("squatted", 256);
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let events = tempfile::tempdir().unwrap();
    let log = events.path().join("events.jsonl");
    let mut cmd = lowmemd();
    cmd.args(["run", "--cgroup", &cg.name, "--metrics-listen", &addr])
        .arg("--event-log")
        .arg(&log);
    let mut run = Run::start(cmd);
    let mut w = Workload::spawn(&cg, "runaway", 900, 0, 200);
    assert!(w.wait_ready(), "the runaway did not start");
    assert!(
        w.wait_dead(Duration::from_secs(15)),
        "the runaway lived 15 s"
    );
    assert_eq!(cg.oom_kills(), 0, "the kernel OOM killer had to step in");
    assert!(run.running());
    drop(squatter);
    let metrics = wait_http(&addr, "/metrics", Duration::from_secs(20))
        .expect("the metrics endpoint never came up once the port was free");
    assert!(
        metric_sum(&metrics, "lowmemd_kills_total") >= 1.0,
        "{metrics}"
    );
}

/// A TCP endpoint that answers every connection with `reply(stream)` on its own thread.
fn endpoint(reply: fn(std::net::TcpStream)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || reply(s));
        }
    });
    addr
}

/// Reads the request's head, so the client is past writing it.
fn read_request(s: &mut std::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// `lowmemd status` with `args`, no status socket in reach; (exit code, stdout, stderr,
/// peak RSS in KiB, how long it took). Killed at 30 s.
fn status(args: &[&str], runtime_dir: &Path) -> (Option<i32>, String, String, u64, Duration) {
    let started = Instant::now();
    let mut child = lowmemd()
        .arg("status")
        .args(args)
        .env("RUNTIME_DIRECTORY", runtime_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let mut peak = 0;
    let code = loop {
        peak = peak.max(status_kib(pid, "VmHWM"));
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let (o, e) = readers.join().unwrap();
    (code, o, e, peak, took)
}

#[test]
fn status_gives_up_on_an_endless_answer_within_its_cap() {
    let addr = endpoint(|mut s| {
        read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[");
        let chunk = vec![b' '; 1 << 16];
        while s.write_all(&chunk).is_ok() {}
    });
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err, peak_kib, took) = status(&["--addr", &addr], empty.path());
    eprintln!("status against an endless answer: {took:?}, peak RSS {peak_kib} KiB");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains(&addr) && err.contains("larger than"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(peak_kib < 32 * 1024, "status grew to {peak_kib} KiB");
}

#[test]
fn status_gives_up_on_a_trickling_answer_at_its_deadline() {
    let addr = endpoint(|mut s| {
        read_request(&mut s);
        // One byte a second: each read returns before a read timeout would trip.
        for b in b"HTTP/1.1 200 OK\r\n".iter().cycle() {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err, _, took) = status(&["--addr", &addr], empty.path());
    eprintln!("status against a trickle: {took:?}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer within"), "{err}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// A daemon's lookalike `/status`: healthy, a version no lowmemd has.
const LIE: &str = r#"{"version":"9.9.9-liar","uptime_s":1,"healthy":true,"scope_ok":true,"scope":"system","policy":"lie","memory":{},"current_level":"none","levels":[],"last_actions":[]}"#;

#[test]
fn status_asks_the_daemons_socket_not_a_squatted_port() {
    let liar = endpoint(|mut s| {
        read_request(&mut s);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{LIE}",
            LIE.len()
        );
    });
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", "off"])
        .env("RUNTIME_DIRECTORY", runtime.path());
    let _run = Run::start(cmd);
    let (code, out, err, _, _) = status(&["--addr", &liar], runtime.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !out.contains("9.9.9-liar"),
        "status believed the port:\n{out}"
    );
    assert!(
        out.contains(&format!("lowmemd {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // Without the socket, the port is asked, and status says so.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err, _, _) = status(&["--addr", &liar], empty.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("9.9.9-liar"), "{out}");
    assert!(err.contains("over TCP") && err.contains(&liar), "{err}");
}

#[test]
#[ignore = "needs root to serve a socket as another user (nobody): run as root with cargo test -- --include-ignored"]
fn status_refuses_a_socket_served_by_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    assert!(
        rustix::process::geteuid().is_root(),
        "status_refuses_a_socket_served_by_another_user needs root"
    );
    // Like /tmp: root's, sticky, writable by all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = dir.path().join("status.sock");
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", "off", "--status-socket"])
        .arg(&path)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null());
    let run = Run::start(cmd);
    assert!(
        run.wait_log("status for `lowmemd status` on", Duration::from_secs(2))
            .is_some()
    );
    let path = path.to_str().unwrap();
    let (code, out, err, _, _) = status(&["--status-socket", path], dir.path());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("uid 65534") && err.contains("not believed"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

#[test]
fn inherited_fds_are_closed_at_start_up_but_a_socket_passed_by_systemd() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("inherited");
    std::fs::write(&marker, "x").unwrap();
    // systemd socket activation: a listening SOCK_SEQPACKET socket as fd 3, LISTEN_FDS=1.
    let path = dir.path().join("lmkd");
    let sock = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    rustix::net::bind(&sock, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    // A shell's redirection leaves fd 7 open across exec, as a careless init script would.
    let script = format!(
        "exec 3<&0 </dev/null 7<{} && export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=lmkd && \
         exec {} run --dry-run --metrics-listen off",
        marker.display(),
        env!("CARGO_BIN_EXE_lowmemd")
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script]).stdin(Stdio::from(sock));
    let run = Run::start(cmd);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", run.child.id())).unwrap();
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert_ne!(target, marker, "fd {:?} inherited", fd.file_name());
    }
    assert!(
        run.wait_log(
            "descriptors left open by whatever started lowmemd",
            Duration::from_secs(1)
        )
        .is_some()
    );
    assert!(
        run.wait_log("serving lmkd's protocol on fd 3", Duration::from_secs(1))
            .is_some(),
        "the socket systemd passed was closed"
    );
    let client = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    rustix::net::connect(&client, &SocketAddrUnix::new(&path).unwrap()).unwrap();
}

#[test]
fn a_dry_run_runs_no_hook() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    // A level that always holds: its hook would run at the first sample.
    let policy = write_policy(
        dir.path(),
        &format!(
            "scope = \"system\"\n\n[[level]]\nname = \"always\"\naction = \"kill\"\nmin_adj = 1000\n\
             available_below_pct = 100\n\n[[hook]]\nname = \"mark\"\non = \"level\"\nuser = \"root\"\n\
             exec = [\"/bin/sh\", \"-c\", \"echo ran >> {}\"]\n",
            ran.display()
        ),
    );
    let mut cmd = dry_run();
    cmd.args(["--metrics-listen", "127.0.0.1:0", "--policy"])
        .arg(&policy);
    let run = Run::start(cmd);
    let addr = run
        .wait_log("metrics on http://", Duration::from_secs(2))
        .and_then(|l| Some(l.split("http://").nth(1)?.split('/').next()?.to_string()))
        .expect("metrics address");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = wait_http(&addr, "/status", Duration::from_secs(5)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        if v["current_level"] == "always" {
            break;
        }
        assert!(Instant::now() < deadline, "the level never held: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ran.exists(), "a hook ran in a dry run");
}
