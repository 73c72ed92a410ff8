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
    // Three connections and one more kept for root; the 5th is refused.
    let c = Client::connect(&sock);
    let d = Client::connect(&sock);
    let e = Client::connect(&sock);
    assert_eq!(
        e.recv_raw(2000),
        Some(vec![]),
        "the 5th connection is closed"
    );
    assert_eq!(c.ask(&[10]), [10, 1]);
    assert_eq!(d.ask(&[10]), [10, 1]);
    drop(d);
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

// Trust (issue #19): a peer that is not root, nor a uid named with --lmkd-trusted-uid, may
// do over the socket only what it could do alone.

const NOBODY: u32 = 65534;

/// Nothing acts: a level far below what the tests use.
const QUIET: &str =
    "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 2\n";

impl Client {
    /// A client whose SO_PEERCRED is nobody's. The kernel keeps credentials per thread and
    /// SO_PEERCRED records the connecting thread's, so a thread that dropped to uid and gid
    /// 65534 (and no groups) is, to the daemon, a process of nobody's; the test process
    /// stays root.
    fn connect_as_nobody(path: &Path) -> Client {
        let path = path.to_owned();
        std::thread::spawn(move || {
            use rustix::process::{Gid, Uid};
            let (gid, uid) = (Gid::from_raw(NOBODY), Uid::from_raw(NOBODY));
            rustix::thread::set_thread_groups(&[]).unwrap();
            rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
            rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
            Client::connect(&path)
        })
        .join()
        .unwrap()
    }
}

/// A daemon whose socket nobody may connect to (group 65534, in a directory others may
/// enter but not write), run through `wrapper`: the directory, the socket, the scenario.
fn start_shared(
    name: &str,
    policy: &str,
    wrapper: &[&str],
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, Scenario) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = socket_path(&dir);
    let policy = write_policy(dir.path(), policy);
    let mut args = vec![
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--lmkd-socket"),
        sock.as_os_str(),
        OsStr::new("--lmkd-socket-group"),
        OsStr::new("65534"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let sc = Scenario::start_under(wrapper, name, 256, &args);
    (dir, sock, sc)
}

/// A process of nobody's (`sleep`), killed on Drop.
struct Nobodys(std::process::Child);

impl Nobodys {
    fn spawn() -> Nobodys {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sleep")
            .arg("120")
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Nobodys(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Nobodys {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Puts `pid`'s oom_score_adj back on Drop (PID 1's, should a refusal regress).
struct AdjRestore(i32, Option<i32>);

impl Drop for AdjRestore {
    fn drop(&mut self) {
        if let Some(adj) = self.1 {
            let _ = std::fs::write(format!("/proc/{}/oom_score_adj", self.0), adj.to_string());
        }
    }
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_an_untrusted_peer_cannot_reprioritise_roots_process_lowmemd_or_pid_1() {
    let (_dir, sock, sc) = start_shared("lmkd-untrusted", QUIET, &[], &[]);
    let roots = Workload::ready(&sc.cg, "roots", 0, 1);
    let lowmemd = sc.daemon.pid();
    let daemon_adj = adj_of(lowmemd);
    let init = AdjRestore(1, adj_of(1));
    let init_adj = init.1.unwrap();
    let other = if init_adj < 1000 { init_adj + 1 } else { 999 };
    let peer = Client::connect_as_nobody(&sock);
    // The packet's uid matches the process: lowmemd must look at who is asking.
    peer.send(&[1, roots.pid, 0, 1000]);
    peer.send(&[11, roots.pid, 0, 1000, 0]);
    peer.send(&[1, lowmemd, 0, 1000]);
    peer.send(&[1, 1, 0, other]);
    peer.send(&[2, roots.pid]);
    assert_eq!(peer.ask(&[4, 0, 1000]), [4, 0], "still served");
    assert_eq!(adj_of(roots.pid), Some(0), "root's process untouched");
    assert_eq!(adj_of(lowmemd), daemon_adj, "lowmemd untouched");
    assert_eq!(adj_of(1), Some(init_adj), "PID 1 untouched");
    // Root is trusted with root's process, but nobody may touch lowmemd or PID 1.
    let root = Client::connect(&sock);
    root.send(&[1, lowmemd, 0, 1000]);
    root.send(&[1, 1, 0, other]);
    root.send(&[1, roots.pid, 0, 900]);
    assert!(
        wait_adj(roots.pid, 900),
        "a trusted peer sets root's process"
    );
    assert_eq!(root.ask(&[4, 0, 1000]), [4, 0]);
    assert_eq!(
        adj_of(lowmemd),
        daemon_adj,
        "lowmemd untouched by root's client"
    );
    assert_eq!(
        adj_of(1),
        Some(init_adj),
        "PID 1 untouched by root's client"
    );
    // An untrusted peer may not remove what root's client registered either.
    peer.send(&[2, roots.pid]);
    assert_eq!(peer.ask(&[4, 0, 1000]), [4, 0]);
    assert_eq!(rejected(&sc, "not_peers_process"), 3.0);
    assert_eq!(rejected(&sc, "protected_process"), 4.0);
    // `/status` is rebuilt at most every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let status = http_get(&sc.daemon.metrics_addr(), "/status").unwrap().1;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let clients = st["lmkd"]["clients"].as_array().unwrap();
    assert!(
        clients.contains(
            &serde_json::json!({"pid": std::process::id(), "uid": NOBODY, "trusted": false})
        ),
        "{status}"
    );
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_an_untrusted_peer_cannot_lower_its_own_process_below_where_it_stood() {
    let (_dir, sock, sc) = start_shared("lmkd-own-floor", QUIET, &[], &[]);
    let own = Nobodys::spawn();
    std::fs::write(format!("/proc/{}/oom_score_adj", own.pid()), "500").unwrap();
    let peer = Client::connect_as_nobody(&sock);
    peer.send(&[1, own.pid(), NOBODY as i32, 300]);
    assert_eq!(peer.ask(&[4, 0, 1000]), [4, 0]);
    assert_eq!(adj_of(own.pid()), Some(500), "not below where it stood");
    // Up, and back down as far as where it stood: what the process could do itself.
    peer.send(&[1, own.pid(), NOBODY as i32, 800]);
    assert!(wait_adj(own.pid(), 800));
    peer.send(&[1, own.pid(), NOBODY as i32, 500]);
    assert!(wait_adj(own.pid(), 500));
    peer.send(&[11, own.pid(), NOBODY as i32, 499, 0]);
    assert_eq!(peer.ask(&[4, 0, 1000]), [4, 0]);
    assert_eq!(adj_of(own.pid()), Some(500));
    assert_eq!(rejected(&sc, "adj_below_floor"), 2.0);
    drop(sc);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_an_untrusted_peer_cannot_set_thresholds_or_reload_and_roots_reloads_coalesce() {
    let (_dir, sock, sc) = start_shared("lmkd-untrusted-cmds", QUIET, &[], &[]);
    let peer = Client::connect_as_nobody(&sock);
    let page = rustix::param::page_size() as i32;
    peer.send(&[0, i32::MAX, -999]);
    peer.send(&[0, 200 * 1024 * 1024 / page, 0]);
    assert_eq!(
        peer.ask(&[7]),
        [7, -1],
        "UPDATE_PROPS refused as lmkd refuses"
    );
    assert_eq!(
        peer.ask(&[10]),
        [10, -1],
        "BOOT_COMPLETED is system_server's to say"
    );
    assert_eq!(rejected(&sc, "untrusted_command"), 4.0);
    let status = http_get(&sc.daemon.metrics_addr(), "/status").unwrap().1;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(st["lmkd"]["minfree"].is_null(), "{status}");
    assert!(!status.contains("minfree from lmkd client"), "{status}");
    // Root's client may; a burst of requests is one reload, each request answered.
    let root = Client::connect(&sock);
    assert_eq!(
        root.ask(&[10]),
        [10, 0],
        "the first BOOT_COMPLETED is root's"
    );
    for _ in 0..100 {
        root.send(&[7]);
    }
    let mut answered = 0;
    while answered < 100 {
        let reply = root.recv(3000).expect("every UPDATE_PROPS is answered");
        assert_eq!(reply, [7, 0]);
        answered += 1;
    }
    let log = sc.daemon.stderr.lock().unwrap().clone();
    let reloads = log
        .iter()
        .filter(|l| l.contains("(LMK_UPDATE_PROPS)"))
        .count();
    assert!((1..=2).contains(&reloads), "{reloads} reloads: {log:#?}");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_three_idle_peers_neither_lock_out_root_nor_stay_connected() {
    let (_dir, sock, _sc) =
        start_shared("lmkd-idle", QUIET, &[], &["--lmkd-idle-timeout-ms", "1500"]);
    let idle: Vec<Client> = (0..3).map(|_| Client::connect_as_nobody(&sock)).collect();
    for c in &idle {
        assert_eq!(c.ask(&[4, 0, 1000]), [4, 0]);
    }
    let fourth = Client::connect_as_nobody(&sock);
    assert_eq!(fourth.recv_raw(2000), Some(vec![]), "a 4th peer is refused");
    let root = Client::connect(&sock);
    assert_eq!(root.ask(&[4, 0, 1000]), [4, 0], "root always gets a slot");
    for c in &idle {
        assert_eq!(c.recv_raw(5000), Some(vec![]), "an idle peer is let go");
    }
    let next = Client::connect_as_nobody(&sock);
    assert_eq!(next.ask(&[4, 0, 1000]), [4, 0], "the freed slots are free");
    assert_eq!(root.ask(&[4, 0, 1000]), [4, 0], "a trusted peer may idle");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_a_registration_flood_under_a_low_fd_limit_is_capped_and_a_runaway_still_dies() {
    let (_dir, sock, mut sc) = start_shared(
        "lmkd-flood",
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 20\n",
        &["prlimit", "--nofile=512:512", "--"],
        &[],
    );
    // 240 processes of nobody's in the memcg: more than the fd limit leaves room for.
    let sleepers: Vec<Nobodys> = (0..240).map(|_| Nobodys::spawn()).collect();
    for s in &sleepers {
        for f in sc.cg.procs_files() {
            std::fs::write(f, s.pid().to_string()).unwrap();
        }
    }
    let peer = Client::connect_as_nobody(&sock);
    for three in sleepers.chunks(3) {
        let mut p = vec![11];
        for s in three {
            p.extend([s.pid(), NOBODY as i32, 0, 0]);
        }
        peer.send(&p);
    }
    assert_eq!(peer.ask(&[4, 0, 1000]), [4, 0], "still served");
    assert!(
        rejected(&sc, "registry_full") > 0.0,
        "registrations are capped"
    );
    std::thread::sleep(Duration::from_millis(300));
    let registered = metric_sum(&metrics(&sc), "lowmemd_lmkd_registered_processes");
    assert!((1.0..240.0).contains(&registered), "{registered}");
    let runaway = Workload::spawn(&sc.cg, "runaway", 0, 400, 200);
    assert!(
        runaway.wait_dead(Duration::from_secs(10)),
        "the runaway is killed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let events = sc.daemon.events();
    sc.daemon.stop();
    let kills = actions(&events, "kill");
    assert_eq!(
        kills.first().map(|k| k["pid"].clone()),
        Some(runaway.pid.into()),
        "{events:#?}"
    );
    assert_eq!(sc.cg.oom_kills(), 0, "lowmemd, not the kernel, killed it");
    let log = sc.daemon.stderr.lock().unwrap().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn lmkd_a_symlink_planted_at_the_snapshot_temp_path_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let serial = common::serial();
    common::require_real_kernel("lmkd-symlink");
    let cg = common::TestCgroup::create("lmkd-symlink", 64);
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_path(&dir);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("lmkd.registered.tmp")).unwrap();
    let policy = write_policy(dir.path(), QUIET);
    let daemon = common::Daemon::start(
        &cg,
        &[
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--lmkd-socket"),
            sock.as_os_str(),
        ],
    );
    let snap = dir.path().join("lmkd.registered");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !snap.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(daemon);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
    let meta = std::fs::symlink_metadata(&snap).expect("the snapshot is published");
    assert!(meta.is_file(), "a regular file, not the planted link");
    let text = std::fs::read_to_string(&snap).unwrap();
    assert!(text.starts_with("{\"version\":1"), "{text}");
    drop(cg);
    drop(serial);
}

#[test]
fn lmkd_a_socket_directory_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = shared.join("lmkd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args([
            "run",
            "--dry-run",
            "--metrics-listen",
            "off",
            "--lmkd-socket",
        ])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(err.contains("others may write"), "{err}");
    assert!(!sock.exists());
}
