//! AOSP compatibility: a client compiled with g++ against AOSP's unchanged `lmkd.h` and
//! `liblmkd_utils.cpp` (tests/aosp/, see its README for where they come from) works against
//! lowmemd's `--lmkd-socket` as it does against lmkd. The client (tests/aosp/client.cpp)
//! calls only liblmkd_utils' functions; `lmkd_connect()` reaches Android's reserved socket
//! `lmkd`, which the shim puts in `$LOWMEMD_ANDROID_SOCKET_DIR`. Root and cgroup v1, as
//! tests/lmkd.rs: ignored unless run with `--include-ignored`, then a missing prerequisite
//! (g++ too) fails.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Scenario, Workload, actions, http_get, wait_adj};

/// The AOSP client, built once per test binary into Cargo's scratch directory.
fn aosp_client() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aosp");
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aosp-lmkd-client");
        let out = Command::new("g++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-o"])
            .arg(&bin)
            .arg("-I")
            .arg(src.join("include"))
            .arg("-I")
            .arg(src.join("shim"))
            .arg(src.join("client.cpp"))
            .arg(src.join("liblmkd_utils.cpp"))
            .arg(src.join("shim/shim.cpp"))
            .output()
            .unwrap_or_else(|e| panic!("g++ (apt-get install g++) cannot run: {e}"));
        assert!(
            out.status.success(),
            "g++ failed to build the AOSP client:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// The running AOSP client: one command line in, one result line out.
struct Aosp {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Aosp {
    /// Connects through `lmkd_connect()` to the reserved socket `lmkd` in `dir`.
    fn connect(dir: &Path) -> Aosp {
        let mut child = Command::new(aosp_client())
            .env("LOWMEMD_ANDROID_SOCKET_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the AOSP client");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = Aosp {
            child,
            stdin,
            lines,
        };
        assert_eq!(c.line(), "connected", "lmkd_connect()");
        c
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line; a library call that waits for a reply lowmemd never sends would hang
    /// the client, so this fails after 5 s instead.
    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                let status = self.child.try_wait().unwrap();
                panic!("the AOSP client said nothing for 5 s (exit status: {status:?})")
            })
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let reply = self.line();
        let verb = cmd.split(' ').next().unwrap();
        reply
            .strip_prefix(verb)
            .unwrap_or_else(|| panic!("{cmd:?}: unexpected reply {reply:?}"))
            .trim()
            .to_string()
    }

    /// `lmkd_get_kill_count()`: (what it returned, that value through ntohl).
    fn kill_count(&mut self, min: i32, max: i32) -> (i32, i32) {
        let r = self.ask(&format!("kill_count {min} {max}"));
        let mut it = r.split(' ').map(|v| v.parse::<i32>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}

impl Drop for Aosp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pids lowmemd's `/status` lists as registered, with their owner's pid.
fn registered(sc: &Scenario) -> Vec<(i64, Option<i64>)> {
    let status = http_get(&sc.daemon.metrics_addr(), "/status").unwrap().1;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    st["lmkd"]["registered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pid"].as_i64().unwrap(), e["owner_pid"].as_i64()))
        .collect()
}

fn wait_registered(sc: &Scenario, want: &[(i64, Option<i64>)]) -> Vec<(i64, Option<i64>)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut got = registered(sc);
        got.sort();
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rejected_total(sc: &Scenario) -> f64 {
    let text = http_get(&sc.daemon.metrics_addr(), "/metrics").unwrap().1;
    common::metric_sum(&text, "lowmemd_lmkd_rejected_total")
}

/// `lmkd_get_kill_count()` hands back the count in network byte order (see tests/aosp).
fn wire(count: i32) -> i32 {
    i32::from_ne_bytes(count.to_be_bytes())
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn aosp_liblmkd_utils_client_registers_queries_and_sees_its_kills() {
    let dir = tempfile::tempdir().unwrap();
    // The reserved socket `lmkd`, as lmkd_connect() asks for it.
    let sock = dir.path().join("lmkd");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "candidates = \"registered\"\n\n[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 20\nwait_ms = 1000\ncooldown_ms = 100\n",
    )
    .unwrap();
    let mut sc = Scenario::start(
        "lmkd-aosp",
        256,
        &[
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--lmkd-socket"),
            sock.as_os_str(),
        ],
    );
    let mut am = Aosp::connect(dir.path());
    let me = i64::from(am.pid());

    // Replies lmkd gives: update_props succeeds, boot completed once, no kills yet.
    assert_eq!(am.ask("update_props"), "success");
    assert_eq!(am.ask("boot_completed"), "success");
    assert_eq!(am.ask("boot_completed"), "already_handled");
    assert_eq!(am.kill_count(0, 1000), (0, 0));

    // lmkd_register_proc and lmkd_register_procs set oom_score_adj and register.
    let a = Workload::ready(&sc.cg, "a", 0, 30);
    let b = Workload::ready(&sc.cg, "b", 0, 30);
    let c = Workload::ready(&sc.cg, "c", 0, 30);
    assert_eq!(am.ask(&format!("register {} 0 950", a.pid)), "0");
    assert!(wait_adj(a.pid, 950), "lmkd_register_proc set adj 950");
    assert_eq!(
        am.ask(&format!("register_procs {} 0 960 {} 0 970", b.pid, c.pid)),
        "0"
    );
    assert!(
        wait_adj(b.pid, 960) && wait_adj(c.pid, 970),
        "lmkd_register_procs"
    );
    let mut all = vec![
        (i64::from(a.pid), Some(me)),
        (i64::from(b.pid), Some(me)),
        (i64::from(c.pid), Some(me)),
    ];
    all.sort();
    assert_eq!(wait_registered(&sc, &all), all, "owned by the AOSP client");

    // lmkd_unregister_proc: c (the highest adj) is no longer a candidate.
    assert_eq!(am.ask(&format!("unregister {}", c.pid)), "0");
    all.retain(|&(p, _)| p != i64::from(c.pid));
    assert_eq!(wait_registered(&sc, &all), all, "c unregistered");
    assert_eq!(
        rejected_total(&sc),
        0.0,
        "lowmemd refused nothing the library sent"
    );

    // Pressure: 90 + 150 MiB of 256. Only registered processes are candidates: b (960),
    // then a (950); c and the unregistered foreground stay.
    let mut fg = Workload::spawn(&sc.cg, "fg", 0, 150, 100);
    assert!(fg.wait_ready(), "the foreground got its memory");
    assert!(b.wait_dead(Duration::from_secs(10)), "registered b killed");
    assert!(a.wait_dead(Duration::from_secs(10)), "registered a killed");
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.alive() && fg.alive(), "unregistered processes live");
    assert_eq!(sc.cg.oom_kills(), 0, "the kernel OOM killer never ran");
    let events = sc.daemon.events();
    let kills: Vec<i64> = actions(&events, "kill")
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(kills, [i64::from(b.pid), i64::from(a.pid)], "{events:#?}");

    // The kill counts as the library returns them (network order), and what they mean.
    assert_eq!(am.kill_count(0, 1000), (wire(2), 2));
    assert_eq!(am.kill_count(955, 1000), (wire(1), 1));
    assert_eq!(am.kill_count(-1000, 949), (0, 0));
    assert_eq!(wait_registered(&sc, &[]), [], "the dead are forgotten");
    assert!(sc.daemon.running());
    sc.daemon.stop();
}
