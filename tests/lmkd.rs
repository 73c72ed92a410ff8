//! lmkd's client socket against a running daemon, driven by a test client written from the
//! protocol table in the README (32-bit big-endian integers over SOCK_SEQPACKET), not from
//! lowmemd's own types. Root and cgroup v1, as tests/pressure.rs: ignored unless run with
//! `--include-ignored`, then a missing prerequisite fails.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scenario, Workload, actions, adj_of, http_get, metric_sum, wait_adj, write_policy};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};

/// An lmkd client: what an AOSP app manager does through liblmkd_utils.
struct Client(OwnedFd);

impl Client {
    fn connect(path: &Path) -> Client {
        // CLOEXEC: a workload spawned later must not hold the connection open.
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap())
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        Client(fd)
    }

    fn send_raw(&self, bytes: &[u8]) {
        rustix::net::send(&self.0, bytes, SendFlags::NOSIGNAL).unwrap();
    }

    fn send(&self, words: &[i32]) {
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        self.send_raw(&b);
    }

    /// The next packet within `ms`: `None` on timeout, `Some(empty)` at end of connection.
    fn recv_raw(&self, ms: u64) -> Option<Vec<u8>> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let t = Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        };
        if rustix::event::poll(&mut fds, Some(&t)).unwrap() == 0 {
            return None;
        }
        let mut buf = [0u8; 512];
        let (n, _) =
            rustix::net::recv(&self.0, &mut buf[..], RecvFlags::DONTWAIT).unwrap_or((0, 0));
        Some(buf[..n].to_vec())
    }

    fn recv(&self, ms: u64) -> Option<Vec<i32>> {
        self.recv_raw(ms).map(|b| {
            b.chunks_exact(4)
                .map(|w| i32::from_be_bytes(w.try_into().unwrap()))
                .collect()
        })
    }

    /// A command and its reply.
    fn ask(&self, words: &[i32]) -> Vec<i32> {
        self.send(words);
        self.recv(2000)
            .unwrap_or_else(|| panic!("no reply to {words:?}"))
    }
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("lmkd")
}

fn metrics(sc: &Scenario) -> String {
    http_get(&sc.daemon.metrics_addr(), "/metrics").unwrap().1
}

fn rejected(sc: &Scenario, why: &str) -> f64 {
    let text = metrics(sc);
    let needle = format!("lowmemd_lmkd_rejected_total{{why=\"{why}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A daemon with `policy` and an lmkd socket on a 256 MiB test memcg: the directory of
/// both files (kept while the test runs), the socket's path and the scenario.
fn start_with_socket(name: &str, policy: &str) -> (tempfile::TempDir, PathBuf, Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_path(&dir);
    let policy = write_policy(dir.path(), policy);
    let args = [
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--lmkd-socket"),
        sock.as_os_str(),
    ];
    let sc = Scenario::start(name, 256, &args);
    (dir, sock, sc)
}

/// A child that waits on its stdin, then becomes a workload allocating 1 MiB per ms in
/// the memcg until it dies (exec keeps its pid and starttime: the registration holds).
struct Child {
    child: std::process::Child,
    pid: i32,
}

fn waiting_child(sc: &Scenario, name: &str, adj: i32) -> Child {
    let mut args = vec![
        "--name".to_string(),
        name.into(),
        "--adj".into(),
        adj.to_string(),
        "--rate".into(),
        "1000".into(),
    ];
    for f in sc.cg.procs_files() {
        args.push("--cgroup-procs".into());
        args.push(f.display().to_string());
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg("read go; exec \"$0\" \"$@\" >/dev/null")
        .arg(env!("CARGO_BIN_EXE_lowmemd-workload"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Child {
        pid: child.id() as i32,
        child,
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_acceptance_every_registered_child_is_killed_and_reported() {
    let (_dir, sock, mut sc) = start_with_socket(
        "lmkd-accept",
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 40\nwait_ms = 2000\n",
    );
    let manager = Client::connect(&sock);
    let watcher = Client::connect(&sock);
    watcher.send(&[5, 0]);
    let mut pids = Vec::new();
    for adj in (0..=1000).rev().step_by(100) {
        let mut c = waiting_child(&sc, &format!("child{adj}"), adj);
        manager.send(&[1, c.pid, 0, adj]);
        assert!(
            wait_adj(c.pid, adj),
            "lowmemd did not set adj {adj} of pid {}",
            c.pid
        );
        c.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = c.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "child adj {adj} still alive");
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "child adj {adj}: {status:?}");
        pids.push(c.pid);
    }
    std::thread::sleep(Duration::from_millis(300));
    let events = sc.daemon.events();
    let kills = actions(&events, "kill");
    let killed: Vec<i64> = kills.iter().map(|e| e["pid"].as_i64().unwrap()).collect();
    let want: Vec<i64> = pids.iter().map(|&p| p as i64).collect();
    assert_eq!(
        killed, want,
        "lowmemd killed every child, in order: {events:#?}"
    );
    for k in &kills {
        assert_eq!(k["registered"], true);
        assert_eq!(k["registered_uid"], 0);
    }
    assert_eq!(sc.cg.oom_kills(), 0, "the kernel OOM killer never ran");
    let mut notified = Vec::new();
    while let Some(p) = watcher.recv(500) {
        if p.is_empty() {
            break;
        }
        notified.push(p);
    }
    let expect: Vec<Vec<i32>> = pids.iter().map(|&p| vec![6, p, 0]).collect();
    assert_eq!(notified, expect, "one LMK_PROCKILL per child");
    assert_eq!(manager.ask(&[4, 0, 1000]), [4, 11]);
    assert_eq!(manager.ask(&[4, 0, 450]), [4, 5]);
    assert_eq!(manager.ask(&[4, -1000, -1]), [4, 0]);
    sc.daemon.stop();
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_protocol_replies_ownership_limits_and_bad_input() {
    let (_dir, sock, mut sc) = start_with_socket(
        "lmkd-proto",
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 20\nwait_ms = 1000\n",
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let a = Client::connect(&sock);
    let b = Client::connect(&sock);
    // Replies, byte for byte.
    a.send(&[10]);
    assert_eq!(a.recv_raw(2000).unwrap(), [0, 0, 0, 10, 0, 0, 0, 0]);
    assert_eq!(a.ask(&[10]), [10, 1]);
    assert_eq!(b.ask(&[10]), [10, 1]);
    a.send(&[4, 0, 1000]);
    assert_eq!(a.recv_raw(2000).unwrap(), [0, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(a.ask(&[7]), [7, 0]);
    a.send(&[9]);
    a.send(&[5, 0]);
    a.send(&[5, 1]);
    a.send(&[3]);
    assert_eq!(
        a.recv(300),
        None,
        "START_MONITORING, SUBSCRIBE, PROCPURGE: no reply"
    );
    // Registration, ownership.
    let victim = Workload::ready(&sc.cg, "victim", 0, 16);
    a.send(&[1, victim.pid, 0, 950, 0]);
    assert!(wait_adj(victim.pid, 950));
    b.send(&[2, victim.pid]);
    b.send(&[1, victim.pid, 0, 100]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(adj_of(victim.pid), Some(950), "b may not change a's record");
    assert_eq!(rejected(&sc, "not_owner"), 2.0);
    let status = http_get(&sc.daemon.metrics_addr(), "/status").unwrap().1;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["lmkd"]["registered"][0]["pid"], victim.pid);
    // A batch.
    let other = Workload::ready(&sc.cg, "other", 0, 4);
    a.send(&[11, other.pid, 0, 960, 0, victim.pid, 0, 955, 1]);
    assert!(wait_adj(other.pid, 960) && wait_adj(victim.pid, 955));
    // Bad input: counted, no reply, the connection stays usable.
    a.send_raw(&[0, 0, 1]);
    a.send(&[4; 14]);
    a.send(&[99]);
    a.send(&[4, 0]);
    a.send(&[1, 999_999_999, 0, 900]);
    a.send(&[1, other.pid, 4321, 900]);
    a.send(&[1, other.pid, 0, 2000]);
    assert_eq!(a.recv(300), None);
    assert_eq!(a.ask(&[4, 0, 1000]), [4, 0], "still answering");
    for why in [
        "short_packet",
        "long_packet",
        "unknown_command",
        "field_count",
        "no_such_process",
        "wrong_uid",
        "adj_range",
    ] {
        assert_eq!(rejected(&sc, why), 1.0, "{why}");
    }
    assert_eq!(adj_of(other.pid), Some(960));
    // The 4th connection is refused.
    let c = Client::connect(&sock);
    let d = Client::connect(&sock);
    assert_eq!(
        d.recv_raw(2000),
        Some(vec![]),
        "the 4th connection is closed"
    );
    assert_eq!(c.ask(&[10]), [10, 1]);
    assert_eq!(rejected(&sc, "too_many_clients"), 1.0);
    // A client that disconnects leaves its records unowned: another may claim them.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    b.send(&[2, other.pid]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rejected(&sc, "not_owner"), 2.0);
    let text = metrics(&sc);
    assert_eq!(metric_sum(&text, "lowmemd_lmkd_registered_processes"), 1.0);
    assert_eq!(metric_sum(&text, "lowmemd_lmkd_clients"), 2.0);
    // Still killing: the registered adj-955 victim goes first under pressure.
    let mut fg = Workload::spawn(&sc.cg, "fg", 0, 200, 100);
    fg.wait_ready();
    assert!(victim.wait_dead(Duration::from_secs(10)), "still killing");
    assert!(sc.daemon.running());
    sc.daemon.stop();
}

/// Makes the next fork get `pid` (root: /proc/sys/kernel/ns_last_pid), spawning a workload
/// in the memcg until one gets it; `None` if other forks on the machine kept winning.
fn spawn_with_pid(sc: &Scenario, pid: i32, mib: u64) -> Option<Workload> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let w = Workload::spawn(&sc.cg, "reused", 1000, mib, 0);
        if w.pid == pid {
            return Some(w);
        }
    }
    None
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_registered_only_never_kills_unregistered_nor_a_recycled_pid() {
    let (_dir, sock, mut sc) = start_with_socket(
        "lmkd-regonly",
        "candidates = \"registered\"\n\n[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 20\nwait_ms = 1000\ncooldown_ms = 100\n",
    );
    let app = Client::connect(&sock);
    // A registered process that exits: its pid comes back as an unregistered one.
    let gone = Workload::ready(&sc.cg, "gone", 0, 1);
    let old_pid = gone.pid;
    app.send(&[1, old_pid, 0, 900]);
    assert!(wait_adj(old_pid, 900));
    drop(gone);
    let reused = spawn_with_pid(&sc, old_pid, 40);
    let mut reused = reused.expect("could not get the pid reused (ns_last_pid)");
    assert!(reused.wait_ready());
    // Unregistered, highest adj, largest: first in line were all processes candidates.
    let unregistered = Workload::ready(&sc.cg, "unreg", 1000, 60);
    let registered = Workload::ready(&sc.cg, "reg", 0, 30);
    app.send(&[1, registered.pid, 0, 100]);
    assert!(wait_adj(registered.pid, 100));
    // 40 + 60 + 30 + 90 = 220 of 256 MiB: below 20 % available until one goes.
    let fg = Workload::ready(&sc.cg, "fg", 0, 90);
    assert!(
        registered.wait_dead(Duration::from_secs(10)),
        "the registered one is killed"
    );
    std::thread::sleep(Duration::from_millis(500));
    let events = sc.daemon.events();
    sc.daemon.stop();
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], registered.pid);
    assert_eq!(kills[0]["registered"], true);
    assert!(unregistered.alive() && reused.alive() && fg.alive());
    assert_eq!(sc.cg.oom_kills(), 0);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_target_table_sets_a_threshold_the_policy_does_not_have() {
    // The policy alone would act only below 2 % available.
    let (_dir, sock, mut sc) = start_with_socket(
        "lmkd-target",
        "[[level]]\nname = \"last\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 2\n",
    );
    let manager = Client::connect(&sock);
    // 60 + 90 of 256 MiB: ~100 MiB free, hardly any file cache.
    let cached = Workload::ready(&sc.cg, "cached", 900, 60);
    let fg = Workload::ready(&sc.cg, "fg", 0, 90);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        cached.alive(),
        "the policy alone kills nothing at ~40 % available"
    );
    // lmkd's table: adj >= 900 when free and file cache are both below 160 MiB.
    let page = rustix::param::page_size() as i32;
    manager.send(&[0, 160 * 1024 * 1024 / page, 900]);
    assert!(
        cached.wait_dead(Duration::from_secs(10)),
        "the table's threshold kills the cached process"
    );
    std::thread::sleep(Duration::from_millis(300));
    let status = http_get(&sc.daemon.metrics_addr(), "/status").unwrap().1;
    let events = sc.daemon.events();
    sc.daemon.stop();
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], cached.pid);
    assert_eq!(kills[0]["reason"], "minfree", "{:#?}", kills[0]);
    assert_eq!(kills[0]["level"], "minfree_1");
    assert!(fg.alive(), "adj 0 is below the table's 900");
    assert!(
        status.contains("minfree from lmkd client pid"),
        "/status shows the table as a level: {status}"
    );
    assert_eq!(sc.cg.oom_kills(), 0);
}

/// `lowmemd rank` of the test cgroup with the daemon's policy and lmkd registrations.
fn rank(sc: &Scenario, sock: &Path, json: bool) -> String {
    let policy = sock.with_file_name("policy.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lowmemd"));
    cmd.args(["rank", "--cgroup", &sc.cg.name, "--policy"])
        .arg(policy)
        .arg("--lmkd-socket")
        .arg(sock);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "lowmemd rank: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `rank` until `ok` holds of its output (the daemon publishes at most once a second,
/// and sees exits within 2 s); returns the last output.
fn rank_until(sc: &Scenario, sock: &Path, json: bool, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let out = rank(sc, sock, json);
        if ok(&out) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rank_row(json: &str, pid: i32) -> serde_json::Value {
    let ranked: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    ranked
        .into_iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not ranked"))
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_rank_shows_registered_processes_with_their_client() {
    let (dir, sock, mut sc) = start_with_socket(
        "lmkd-rank",
        "candidates = \"registered\"\n\n[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n",
    );
    let snap = dir.path().join("lmkd.registered");
    assert!(sc.daemon.wait_log(
        &format!("published for `lowmemd rank` to {}", snap.display()),
        Duration::from_secs(2)
    ));
    let app = Client::connect(&sock);
    let me = std::process::id() as i64;
    let reg = Workload::ready(&sc.cg, "reg", 0, 4);
    let unreg = Workload::ready(&sc.cg, "unreg", 0, 4);
    app.send(&[1, reg.pid, 0, 900]);
    assert!(wait_adj(reg.pid, 900));

    // JSON: who registered it; the unregistered one is no candidate here.
    let out = rank_until(&sc, &sock, true, |o| {
        rank_row(o, reg.pid)["registered"]["owner_pid"] == me
    });
    let r = rank_row(&out, reg.pid);
    assert_eq!(
        r["registered"],
        serde_json::json!({"uid": 0, "owner_pid": me}),
        "{out}"
    );
    assert!(r["excluded"].is_null(), "{out}");
    let u = rank_row(&out, unreg.pid);
    assert!(u["registered"].is_null());
    assert_eq!(u["excluded"], "not_registered");
    // The table: the REGISTERED column and where it came from.
    let text = rank(&sc, &sock, false);
    let want = format!(
        "lmkd registrations: 1 from {} (lowmemd pid ",
        snap.display()
    );
    assert!(text.lines().any(|l| l.starts_with(&want)), "{text}");
    let row = |text: &str, pid: i32| {
        (text.lines())
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for {pid}:\n{text}"))
            .to_string()
    };
    assert!(
        row(&text, reg.pid).contains(&format!(" by {me} ")),
        "{text}"
    );
    assert!(row(&text, unreg.pid).contains("not registered over the lmkd socket"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "readable by rank run as anyone");

    // The client hangs up: the record stays, unowned.
    drop(app);
    let text = rank_until(&sc, &sock, false, |o| row(o, reg.pid).contains(" unowned "));
    assert!(row(&text, reg.pid).contains(" unowned "), "{text}");
    // The process exits: the record goes.
    drop(reg);
    let zero = format!("lmkd registrations: 0 from {}", snap.display());
    let text = rank_until(&sc, &sock, false, |o| o.contains(&zero));
    assert!(text.contains(&zero), "{text}");

    // The daemon stops: what it left is not shown as current.
    sc.daemon.stop();
    let text = rank(&sc, &sock, false);
    assert!(text.contains("which is no longer running"), "{text}");
}
