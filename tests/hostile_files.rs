//! Policy paths that are not a plain file: a device, a FIFO, a symlink to /dev/zero — as
//! `check` and `run` targets and swapped in under a running daemon — and a Kubernetes
//! ConfigMap mount, whose file changes only through a symlink swap. No memory pressure:
//! the daemon runs `--dry-run` on the system scope.
//!
//! Every lowmemd here runs under an address-space limit: a regression that reads /dev/zero
//! to the end must die of a failed allocation in its own process, not push this machine
//! into reclaim (the daemon locks its memory and lowers its own oom_score_adj). A hang is
//! caught by a timeout and the child killed through a pidfd.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// Far above the daemon's own need (VmPeak ~210 MiB, mostly reserved thread stacks and
/// malloc arenas; RSS ~7 MiB), far below what would trouble the machine.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;
/// A refusal is a stat and an open; anything slower hung.
const PROMPT: Duration = Duration::from_secs(5);
/// What the daemon may hold after the hostile reloads (idle it holds a few MiB).
const MAX_RSS_KIB: u64 = 64 << 10;

/// `lowmemd ARGS` under the address-space limit (`sh` execs it: the pid is lowmemd's).
fn lowmemd(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_lowmemd"))
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Signals our own unreaped child through a pidfd (its pid cannot have been recycled).
fn signal(child: &Child, sig: Signal) {
    if let Some(p) = Pid::from_raw(child.id() as i32)
        && let Ok(fd) = pidfd_open(p, PidfdFlags::empty())
    {
        let _ = pidfd_send_signal(&fd, sig);
    }
}

/// Waits up to `timeout` for `child` to exit; kills it and returns None if it did not.
fn wait_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            signal(child, Signal::KILL);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a one-shot lowmemd that must finish within [`PROMPT`].
fn run_promptly(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = lowmemd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lowmemd");
    let started = Instant::now();
    let status = wait_within(&mut child, PROMPT);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let Some(status) = status else {
        panic!(
            "lowmemd {args:?} still running after {:?} (hung), killed; stderr: {}",
            started.elapsed(),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A refusal: exit code 2, and stderr says `what` about `path`.
fn assert_refused(out: &Output, path: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: {err}", out.status);
    let want = format!("{}: is {what}, not a regular file", path.display());
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

fn default_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/default.toml"
    ))
    .unwrap()
}

/// Puts `make(tmp)`'s file at `path` by rename, as editors and orchestrators do.
fn replace(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("new");
    make(&tmp);
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn check_refuses_dev_zero_quickly() {
    let zero = Path::new("/dev/zero");
    let out = run_promptly(&["check".as_ref(), zero.as_ref()]);
    assert_refused(&out, zero, "a character device");
}

#[test]
fn check_and_run_refuse_a_symlink_to_dev_zero() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("policy.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let out = run_promptly(&["check".as_ref(), link.as_ref()]);
    assert_refused(&out, &link, "a character device");
    let out = run_promptly(&[
        "run".as_ref(),
        "--dry-run".as_ref(),
        "--metrics-listen".as_ref(),
        "off".as_ref(),
        "--policy".as_ref(),
        link.as_ref(),
    ]);
    assert_refused(&out, &link, "a character device");
}

#[test]
fn check_and_run_refuse_a_fifo_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.toml");
    mkfifo(&fifo);
    let out = run_promptly(&["check".as_ref(), fifo.as_ref()]);
    assert_refused(&out, &fifo, "a FIFO");
    let out = run_promptly(&[
        "run".as_ref(),
        "--dry-run".as_ref(),
        "--metrics-listen".as_ref(),
        "off".as_ref(),
        "--policy".as_ref(),
        fifo.as_ref(),
    ]);
    assert_refused(&out, &fifo, "a FIFO");
}

/// `lowmemd run --dry-run --metrics-listen off --policy POLICY` on the system scope, its
/// stderr collected line by line; killed on Drop if still running.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(policy: &Path) -> Daemon {
        let mut child = lowmemd(&[
            "run".as_ref(),
            "--dry-run".as_ref(),
            "--metrics-listen".as_ref(),
            "off".as_ref(),
            "--policy".as_ref(),
            policy.as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lowmemd");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let d = Daemon { child, lines };
        assert!(
            d.wait_for(1, "monitoring ", Duration::from_secs(10)),
            "lowmemd did not start: {:?}",
            d.lines.lock().unwrap()
        );
        d
    }

    fn count(&self, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Whether `n` lines containing `needle` appeared within `timeout`.
    fn wait_for(&self, n: usize, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count(needle) < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The hash in "policy in force: FILE (hash H)".
    fn hash_in_force(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let line = lines
            .iter()
            .find_map(|l| l.split("policy in force: ").nth(1))
            .expect("policy in force announced");
        let hash = line.rsplit("(hash ").next().unwrap();
        hash.trim_end_matches(')').to_string()
    }

    fn rss_kib(&self) -> u64 {
        common::status_kib(self.child.id() as i32, "VmRSS")
    }

    fn assert_running(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "lowmemd exited: {:?}",
            self.lines.lock().unwrap()
        );
    }

    /// SIGTERM through a pidfd; the exit status if it stopped within [`PROMPT`].
    fn stop(&mut self) -> Option<ExitStatus> {
        signal(&self.child, Signal::TERM);
        wait_within(&mut self.child, PROMPT)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(&self.child, Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

#[test]
fn reload_refuses_a_device_or_fifo_and_keeps_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, default_policy()).unwrap();
    let mut d = Daemon::start(&policy);
    let kept = format!("keeping {} (hash {})", policy.display(), d.hash_in_force());
    let failed = |why: &str| format!("policy reload ({why}) failed, {kept}");
    let not_regular = |what: &str| format!("{}: is {what}, not a regular file", policy.display());

    replace(&policy, |tmp| {
        std::os::unix::fs::symlink("/dev/zero", tmp).unwrap()
    });
    assert!(
        d.wait_for(1, &failed("file changed"), PROMPT),
        "no failed reload for a symlink to /dev/zero"
    );
    assert!(d.wait_for(1, &not_regular("a character device"), PROMPT));
    d.assert_running();
    let rss = d.rss_kib();
    assert!(rss < MAX_RSS_KIB, "VmRSS {rss} kB after /dev/zero");

    replace(&policy, mkfifo);
    assert!(
        d.wait_for(2, &failed("file changed"), PROMPT),
        "no failed reload for a FIFO"
    );
    assert!(d.wait_for(1, &not_regular("a FIFO"), PROMPT));
    // SIGHUP reloads on the main thread: a FIFO must not block it either.
    signal(&d.child, Signal::HUP);
    assert!(
        d.wait_for(1, &failed("SIGHUP"), PROMPT),
        "no failed SIGHUP reload for a FIFO"
    );
    d.assert_running();
    let rss = d.rss_kib();
    assert!(rss < MAX_RSS_KIB, "VmRSS {rss} kB after the FIFO");
    assert_eq!(d.count("policy reloaded"), 0, "a hostile file was applied");

    // The watch still works: a valid edit applies.
    replace(&policy, |tmp| {
        std::fs::write(tmp, default_policy() + "# edited\n").unwrap()
    });
    assert!(
        d.wait_for(1, "policy reloaded (file changed)", PROMPT),
        "a valid edit after the hostile ones was not applied"
    );
    let stopped = d.stop().expect("lowmemd did not stop on SIGTERM");
    assert!(stopped.success(), "{stopped}");
}

/// A ConfigMap volume as kubelet lays it out and updates it (its AtomicWriter): the data in
/// a timestamped directory, `..data` a symlink to it, each key a symlink through `..data`;
/// an update writes a new timestamped directory, points `..data_tmp` at it, renames that
/// over `..data` and removes the old directory.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    current: PathBuf,
}

impl ConfigMapVolume {
    fn new(stamp: &str, policy: &str) -> ConfigMapVolume {
        let dir = tempfile::tempdir().unwrap();
        let current = Self::write_data(dir.path(), stamp, policy);
        std::os::unix::fs::symlink(current.file_name().unwrap(), dir.path().join("..data"))
            .unwrap();
        std::os::unix::fs::symlink("..data/policy.toml", dir.path().join("policy.toml")).unwrap();
        ConfigMapVolume { dir, current }
    }

    fn write_data(dir: &Path, stamp: &str, policy: &str) -> PathBuf {
        let data = dir.join(stamp);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("policy.toml"), policy).unwrap();
        data
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    fn update(&mut self, stamp: &str, policy: &str) {
        let data = Self::write_data(self.dir.path(), stamp, policy);
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(&self.current).unwrap();
        self.current = data;
    }
}

#[test]
fn a_configmap_update_reloads_the_running_daemon() {
    let mut volume = ConfigMapVolume::new("..2026_11_27_10_00_00.123", &default_policy());
    let mut d = Daemon::start(&volume.policy());
    let before = d.hash_in_force();
    volume.update(
        "..2026_11_27_10_05_00.456",
        &(default_policy() + "# edited through the ConfigMap\n"),
    );
    assert!(
        d.wait_for(1, "policy reloaded (file changed)", PROMPT),
        "a ConfigMap update did not reload"
    );
    assert!(
        !d.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("policy reloaded") && l.contains(&before)),
        "the reload did not change the hash"
    );
    // A second update: the watch follows the new ..data, not the first directory.
    volume.update("..2026_11_27_10_10_00.789", &default_policy());
    assert!(
        d.wait_for(2, "policy reloaded (file changed)", PROMPT),
        "a second ConfigMap update did not reload"
    );
    assert!(
        d.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("policy reloaded") && l.contains(&before)),
        "the second update's text (the original) is not in force"
    );
    let stopped = d.stop().expect("lowmemd did not stop on SIGTERM");
    assert!(stopped.success(), "{stopped}");
}
