//! Real-kernel test harness: a memory cgroup with a limit (v1 `memory` plus the same name in
//! cgroup2 for PSI), workloads spawned into it, and the lowmemd daemon watching it. Every
//! guard cleans up on Drop, also when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

pub mod freeze_bed;

pub const V1_MEMORY: &str = "/sys/fs/cgroup/memory";
pub const V2: &str = "/sys/fs/cgroup/unified";

/// Held while a pressure test runs: the test binary's own lock and an flock on a file
/// every test binary (and every checkout on this machine) shares.
pub struct Serial {
    _thread: MutexGuard<'static, ()>,
    _machine: std::fs::File,
}

/// Pressure tests must not overlap, in this process or any other: they share the machine's
/// CPU and reclaim.
pub fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let thread = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open("/tmp/lowmemd-pressure-tests.lock")
        .expect("open /tmp/lowmemd-pressure-tests.lock");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .expect("flock /tmp/lowmemd-pressure-tests.lock");
    Serial {
        _thread: thread,
        _machine: file,
    }
}

/// What this machine lacks for real-kernel tests and benches (root, a v1 memory controller).
pub fn real_kernel_missing() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        Some("needs root")
    } else if !Path::new(V1_MEMORY).join("memory.limit_in_bytes").exists() {
        Some("needs a cgroup v1 memory controller at /sys/fs/cgroup/memory")
    } else {
        None
    }
}

/// The real-kernel tests are marked `#[ignore = "needs root and a cgroup-v1 memory
/// controller..."]`, so a plain `cargo test` lists them as ignored with that reason. Once one
/// runs (`cargo test -- --include-ignored`, as CI does), a missing prerequisite fails it,
/// naming what is missing: never a silent pass.
pub fn require_real_kernel(test: &str) {
    if let Some(why) = real_kernel_missing() {
        panic!("{test}: real-kernel test cannot run here: {why}");
    }
}

/// For the benches (`cargo bench`, no ignore list there): whether they can run here; when
/// not, says why. In CI (`CI=true`) a missing prerequisite panics.
pub fn real_kernel_available(bench: &str) -> bool {
    match real_kernel_missing() {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{bench}: cannot run in CI: {why}")
        }
        Some(why) => {
            eprintln!("{bench}: not run: {why}");
            false
        }
    }
}

/// Signals `pid` through a pidfd (tests follow the same rule as the daemon).
pub fn sigkill(pid: i32) {
    if let Some(p) = Pid::from_raw(pid)
        && let Ok(fd) = pidfd_open(p, PidfdFlags::empty())
    {
        let _ = pidfd_send_signal(&fd, Signal::KILL);
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; count it as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(") ").next().and_then(|r| r.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// A memory cgroup under both hierarchies, removed with all its processes on Drop.
pub struct TestCgroup {
    pub name: String,
    pub v1: PathBuf,
    pub v2: Option<PathBuf>,
}

impl TestCgroup {
    pub fn create(test: &str, limit_mib: u64) -> TestCgroup {
        let name = format!("/lowmemd-test-{test}-{}", std::process::id());
        let v1 = Path::new(V1_MEMORY).join(&name[1..]);
        std::fs::create_dir(&v1).unwrap_or_else(|e| panic!("mkdir {}: {e}", v1.display()));
        let cg = TestCgroup {
            name: name.clone(),
            v1: v1.clone(),
            v2: Path::new(V2)
                .is_dir()
                .then(|| Path::new(V2).join(&name[1..])),
        };
        if let Some(v2) = &cg.v2 {
            std::fs::create_dir(v2).unwrap_or_else(|e| panic!("mkdir {}: {e}", v2.display()));
        }
        std::fs::write(
            v1.join("memory.limit_in_bytes"),
            (limit_mib << 20).to_string(),
        )
        .expect("set memory.limit_in_bytes");
        cg
    }

    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.v1.join("cgroup.procs")];
        v.extend(self.v2.as_ref().map(|d| d.join("cgroup.procs")));
        v
    }

    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.v1.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// The kernel OOM killer's kills in this memcg.
    pub fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(self.v1.join("memory.oom_control")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    pub fn usage_mib(&self) -> u64 {
        let t = std::fs::read_to_string(self.v1.join("memory.usage_in_bytes")).unwrap();
        t.trim().parse::<u64>().unwrap() >> 20
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in self.v2.iter().chain(std::iter::once(&self.v1)) {
            remove_cgroup_tree(dir);
        }
    }
}

/// Removes a cgroup directory and every cgroup a test made below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // rmdir can race the last exit by a few ms.
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A workload process (lowmemd-workload), killed on Drop.
pub struct Workload {
    pub child: Child,
    pub pid: i32,
    pub name: String,
    pub adj: i32,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Workload {
    /// Spawns a workload in `cg` that allocates `mib` MiB at `rate` MiB/s (0: at once).
    pub fn spawn(cg: &TestCgroup, name: &str, adj: i32, mib: u64, rate: u64) -> Workload {
        Self::spawn_with(cg, name, adj, mib, rate, &[])
    }

    /// A workload that allocated `mib` MiB at once and said `ready` (panics if it died).
    pub fn ready(cg: &TestCgroup, name: &str, adj: i32, mib: u64) -> Workload {
        let mut w = Self::spawn(cg, name, adj, mib, 0);
        assert!(
            w.wait_ready(),
            "workload {name} died while allocating {mib} MiB"
        );
        w
    }

    /// [`Workload::spawn`] with more lowmemd-workload arguments (e.g. `--reread FILE`).
    pub fn spawn_with(
        cg: &TestCgroup,
        name: &str,
        adj: i32,
        mib: u64,
        rate: u64,
        extra: &[&std::ffi::OsStr],
    ) -> Workload {
        let mut args: Vec<std::ffi::OsString> = extra.iter().map(|a| a.into()).collect();
        for f in cg.procs_files() {
            args.extend(["--cgroup-procs".into(), f.into()]);
        }
        Self::spawn_args(name, adj, mib, rate, &args)
    }

    /// A workload that joins the v1 memcg of `cg` and, in the unified hierarchy, the
    /// cgroup at `v2_dir` (a child of `cg`'s, say) instead of `cg`'s own.
    pub fn spawn_in(
        cg: &TestCgroup,
        v2_dir: &Path,
        name: &str,
        adj: i32,
        mib: u64,
        rate: u64,
    ) -> Workload {
        let procs = [cg.v1.join("cgroup.procs"), v2_dir.join("cgroup.procs")];
        let args: Vec<std::ffi::OsString> = procs
            .iter()
            .flat_map(|f| ["--cgroup-procs".into(), f.into()])
            .collect();
        Self::spawn_args(name, adj, mib, rate, &args)
    }

    /// [`Workload::spawn_in`] with more `lowmemd-workload` arguments.
    pub fn spawn_in_with(
        cg: &TestCgroup,
        v2_dir: &Path,
        name: &str,
        adj: i32,
        (mib, rate): (u64, u64),
        extra: &[&str],
    ) -> Workload {
        let procs = [cg.v1.join("cgroup.procs"), v2_dir.join("cgroup.procs")];
        let mut args: Vec<std::ffi::OsString> = procs
            .iter()
            .flat_map(|f| ["--cgroup-procs".into(), f.into()])
            .collect();
        args.extend(extra.iter().map(|a| a.into()));
        Self::spawn_args(name, adj, mib, rate, &args)
    }

    fn spawn_args(
        name: &str,
        adj: i32,
        mib: u64,
        rate: u64,
        extra: &[std::ffi::OsString],
    ) -> Workload {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lowmemd-workload"));
        cmd.args(extra);
        cmd.args(["--name", name, "--adj", &adj.to_string()])
            .args(["--mib", &mib.to_string(), "--rate", &rate.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn lowmemd-workload");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Workload {
            pid: child.id() as i32,
            child,
            name: name.into(),
            adj,
            stdout,
        }
    }

    /// Blocks until the workload printed `ready`; false if it died first.
    pub fn wait_ready(&mut self) -> bool {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line.trim() == "ready" => return true,
                Ok(_) => {}
            }
        }
    }

    pub fn alive(&self) -> bool {
        alive(self.pid)
    }

    /// Waits up to `timeout` for the process to die; true if it did.
    pub fn wait_dead(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.alive()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lowmemd daemon under test, stopped (SIGTERM, then SIGKILL) on Drop.
pub struct Daemon {
    child: Child,
    pub events: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `lowmemd run --cgroup <cg> --event-log <tmp> <extra>` and waits for its
    /// start-up line.
    /// The metrics endpoint listens on a free loopback port (see `metrics_addr`).
    pub fn start(cg: &TestCgroup, extra: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_as(&cg.name, extra)
    }

    /// [`Daemon::start`] with the cgroup spelled as given on the command line.
    pub fn start_as(cgroup: &str, extra: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_under(&[], cgroup, extra)
    }

    /// [`Daemon::start_as`] run through `wrapper` (a command that execs its arguments, e.g.
    /// `prlimit --nofile=512:512 --`): the daemon keeps the wrapper's pid.
    pub fn start_under(wrapper: &[&str], cgroup: &str, extra: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_env(wrapper, &[], cgroup, extra)
    }

    /// [`Daemon::start_under`] with `env` set for the daemon (e.g. a `RUNTIME_DIRECTORY` of
    /// the test's own, so that no other test's daemon thaws or restores what it records).
    pub fn start_env(
        wrapper: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        cgroup: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let lowmemd = env!("CARGO_BIN_EXE_lowmemd");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(lowmemd);
                c
            }
            None => Command::new(lowmemd),
        };
        let mut child = cmd
            .envs(env.iter().copied())
            .args(["run", "--cgroup", cgroup, "--event-log"])
            .arg(&events)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn lowmemd");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                if line.contains("monitoring ") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let d = Daemon {
            child,
            events,
            stderr,
            _dir: dir,
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!("lowmemd did not start: {:?}", d.stderr.lock().unwrap());
        }
        d
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// HOST:PORT of the daemon's metrics endpoint, from its start-up line.
    pub fn metrics_addr(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let line = lines
            .iter()
            .find_map(|l| l.split("metrics on http://").nth(1))
            .expect("metrics endpoint announced");
        line.split('/').next().unwrap().to_string()
    }

    /// Whether some stderr line contains `needle`, waiting up to `timeout` for it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(p) = Pid::from_raw(self.child.id() as i32)
            && let Ok(fd) = pidfd_open(p, PidfdFlags::empty())
        {
            let _ = pidfd_send_signal(&fd, sig);
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The events logged so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One real-kernel scenario: the serial lock, a memcg, and lowmemd watching it. Dropped in
/// field order: the daemon stops, then the cgroup and its processes go, then the lock.
pub struct Scenario {
    pub daemon: Daemon,
    pub cg: TestCgroup,
    _serial: Serial,
}

impl Scenario {
    /// Panics, naming what is missing, when this machine cannot run real-kernel tests.
    pub fn start(name: &str, limit_mib: u64, daemon_args: &[&std::ffi::OsStr]) -> Scenario {
        Self::start_under(&[], name, limit_mib, daemon_args)
    }

    /// [`Scenario::start`] with the daemon run through `wrapper` ([`Daemon::start_under`]).
    pub fn start_under(
        wrapper: &[&str],
        name: &str,
        limit_mib: u64,
        daemon_args: &[&std::ffi::OsStr],
    ) -> Scenario {
        let serial = serial();
        require_real_kernel(name);
        let cg = TestCgroup::create(name, limit_mib);
        let daemon = Daemon::start_under(wrapper, &cg.name, daemon_args);
        Scenario {
            daemon,
            cg,
            _serial: serial,
        }
    }
}

/// A file written outside any test memcg and dropped from the page cache, so a workload's
/// reads fault it in (and get it charged) inside its memcg. Removed on Drop.
pub struct ColdFile(pub PathBuf);

impl ColdFile {
    pub fn new(tag: &str, mib: usize) -> ColdFile {
        use std::io::Write;
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lowmemd-{tag}-{}.bin", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        ColdFile(path)
    }
}

impl Drop for ColdFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `Key:   N kB` from /proc/PID/status.
pub fn status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// /dev/zram0 as swap for a test's lifetime; the previous (unused) state is restored on
/// Drop.
pub struct ZramSwap;

impl ZramSwap {
    pub fn set_up() -> Result<ZramSwap, String> {
        let dev = Path::new("/sys/block/zram0");
        if !dev.exists() {
            return Err("no /dev/zram0 (modprobe zram)".into());
        }
        let size = std::fs::read_to_string(dev.join("disksize")).map_err(|e| e.to_string())?;
        if size.trim() != "0" {
            return Err(format!("/dev/zram0 is in use (disksize {})", size.trim()));
        }
        let guard = ZramSwap;
        std::fs::write(dev.join("disksize"), "512M").map_err(|e| format!("disksize: {e}"))?;
        for (cmd, args) in [("mkswap", ["/dev/zram0"]), ("swapon", ["/dev/zram0"])] {
            let out = Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        Ok(guard)
    }
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg("/dev/zram0").output();
        let _ = std::fs::write("/sys/block/zram0/reset", "1");
    }
}

/// Writes `text` as `policy.toml` in `dir`; returns its path.
pub fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The oom_score_adj of `pid` now, if it runs.
pub fn adj_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid`'s oom_score_adj becomes `adj` within 3 s (set by lowmemd for a client).
pub fn wait_adj(pid: i32, adj: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if adj_of(pid) == Some(adj) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A plain HTTP/1.1 GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The value of one sample line (`name{labels} value`) summed over all label sets of
/// `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Background processes `bg<adj>` holding `mib` MiB each, ready, in the order given.
pub fn background(cg: &TestCgroup, adjs: &[i32], mib: u64) -> Vec<Workload> {
    adjs.iter()
        .map(|adj| Workload::ready(cg, &format!("bg{adj}"), *adj, mib))
        .collect()
}

/// The "cached apps" set-up: a small foreground-class process, three background processes
/// (adj 900, 950, 1000, 30 MiB each) and a foreground process growing at 100 MiB/s.
///
/// Arithmetic (256 MiB, low watermark 15 % = 38 MiB): 8 + 90 + 170 MiB would not fit. The
/// first kill (adj 1000) comes at ~218 MiB used; the second (adj 950) when the foreground
/// has grown another 30 MiB; after it, 8 + 30 + 170 = 208 MiB leaves 48 MiB (19 %): no third.
pub struct CachedApps {
    pub small: Workload,
    pub bg: Vec<Workload>,
    pub fg: Workload,
}

pub fn cached_apps(cg: &TestCgroup, fg_mib: u64) -> CachedApps {
    let small = Workload::ready(cg, "small", 0, 8);
    let bg = background(cg, &[900, 950, 1000], 30);
    let mut fg = Workload::spawn(cg, "fg", 0, fg_mib, 100);
    let grew = fg.wait_ready();
    // Let lowmemd see the final state and settle.
    std::thread::sleep(Duration::from_secs(2));
    assert!(grew || !fg.alive(), "fg neither finished nor died");
    CachedApps { small, bg, fg }
}

/// Events with the given `action` (`kill`, `would_kill`).
pub fn actions<'a>(events: &'a [serde_json::Value], action: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}
