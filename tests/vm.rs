//! Whole-machine scenarios in a throw-away VM (issue 12): the system scope and a pure
//! cgroup-v2 hierarchy under real pressure, which the host (cgroup v1, and the machine
//! running the tests) cannot give.
//!
//! Each test boots a fresh qemu-system-x86_64 VM: Debian's cloud kernel, an initramfs
//! written here (busybox-static, the zram modules, the static musl `lowmemd` and
//! `lowmemd-workload`, `tests/vm/init.sh` as /init and the scenario script), reads the
//! guest's `RESULT key=value` lines and lowmemd's event log over the serial console, and
//! checks them. The guest powers itself off; a VM that overruns its deadline is killed
//! through a pidfd. VMs run one at a time.
//!
//! `cargo test --test vm -- --include-ignored system_runaway` runs one. Needs
//! qemu-system-x86_64 and apt-get (for `apt-get download` of the kernel and busybox-static
//! into target/vm-assets, once, by tests/vm/fetch-assets.sh), and rustup's x86_64-unknown-linux-musl
//! target. `LOWMEMD_VM_ACCEL=kvm|tcg` forces the accelerator (default: TCG unless KVM is
//! proven to boot the kernel here).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

const MUSL: &str = "x86_64-unknown-linux-musl";

// ---------------------------------------------------------------------------------------
// What goes into the VM

/// The kernel, its modules and a static busybox, unpacked from Debian packages.
struct Assets {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn find_assets(root: &Path) -> Option<Assets> {
    let kernel = std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
    let version = kernel.file_name()?.to_str()?.strip_prefix("vmlinuz-")?;
    let modules = root.join("lib/modules").join(version);
    let busybox = root.join("bin/busybox");
    (modules.is_dir() && busybox.is_file()).then_some(Assets {
        kernel,
        modules,
        busybox,
    })
}

/// Finds the unpacked packages under target/vm-assets, fetching them first if needed.
fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Result<Assets, String>> = OnceLock::new();
    let got = ASSETS.get_or_init(|| {
        let dir = target_dir().join("vm-assets");
        let root = dir.join("root");
        if let Some(a) = find_assets(&root) {
            return Ok(a);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/fetch-assets.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed (it needs apt-get and dpkg-deb):\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        find_assets(&root).ok_or_else(|| format!("no kernel/modules/busybox in {}", root.display()))
    });
    got.as_ref().unwrap_or_else(|e| panic!("VM assets: {e}"))
}

/// The static lowmemd and lowmemd-workload (`small` profile, musl), built once per run.
fn static_bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let got = BINS.get_or_init(|| {
        let target = target_dir();
        let out = Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--profile", "small", "--target", MUSL])
            .args([
                "--bin",
                "lowmemd",
                "--bin",
                "lowmemd-workload",
                "--target-dir",
            ])
            .arg(&target)
            .output()
            .map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build --target {MUSL} failed (rustup target add {MUSL}?):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = target.join(MUSL).join("small");
        Ok((dir.join("lowmemd"), dir.join("lowmemd-workload")))
    });
    got.as_ref().unwrap_or_else(|e| panic!("static build: {e}"))
}

/// The `depends=` list in a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The .ko files for `names` and everything they depend on, dependencies first.
fn resolve_modules(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "ko") {
                out.push(p);
            }
        }
    }
    let norm = |s: &str| s.replace('-', "_");
    let mut all = Vec::new();
    walk(&dir.join("kernel"), &mut all);
    let find = |name: &str| {
        all.iter()
            .find(|p| {
                p.file_stem()
                    .is_some_and(|s| norm(&s.to_string_lossy()) == norm(name))
            })
            .unwrap_or_else(|| panic!("module {name} not in {}", dir.display()))
            .clone()
    };
    fn visit(name: &str, find: &dyn Fn(&str) -> PathBuf, order: &mut Vec<PathBuf>) {
        let path = find(name);
        if order.contains(&path) {
            return;
        }
        let bytes = std::fs::read(&path).unwrap();
        for dep in module_depends(&bytes) {
            visit(&dep, find, order);
        }
        order.push(path);
    }
    let mut order = Vec::new();
    for n in names {
        visit(n, &find, &mut order);
    }
    order
}

/// A cpio archive in the kernel's initramfs ("newc") format.
struct Newc {
    buf: Vec<u8>,
    ino: u32,
    dirs: Vec<String>,
}

impl Newc {
    fn new() -> Newc {
        Newc {
            buf: Vec::new(),
            ino: 1,
            dirs: Vec::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).expect("file under 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap(),
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// A directory, and its parents first (each once).
    fn dir(&mut self, name: &str) {
        if name.is_empty() || self.dirs.iter().any(|d| d == name) {
            return;
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.push(name.to_string());
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file, its directories created first.
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

// ---------------------------------------------------------------------------------------
// Running a VM

/// One scenario's machine.
struct Vm {
    name: &'static str,
    mem_mib: u32,
    /// Kernel modules to load at boot (with their dependencies).
    modules: &'static [&'static str],
    /// The scenario script (run by /init as /vm/scenario.sh, after /vm/lib.sh is in place).
    script: &'static str,
    /// Extra files: (path in the guest, mode, contents).
    files: Vec<(&'static str, u32, Vec<u8>)>,
    timeout: Duration,
}

/// What came back over the serial console.
struct Output {
    results: BTreeMap<String, String>,
    events: Vec<serde_json::Value>,
    lowmemd_log: String,
    kernel_oom: String,
    console: String,
    wall: Duration,
}

impl Output {
    fn get(&self, key: &str) -> &str {
        self.results
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no RESULT {key} from the VM; console:\n{}", self.console))
    }

    fn num(&self, key: &str) -> i64 {
        let v = self.get(key);
        v.parse()
            .unwrap_or_else(|_| panic!("RESULT {key}={v} is not a number"))
    }

    fn kills(&self) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["action"] == "kill")
            .collect()
    }

    /// The (pid, comm) of every kill, in order.
    fn killed(&self) -> Vec<(i64, String)> {
        self.kills()
            .iter()
            .map(|e| {
                (
                    e["pid"].as_i64().unwrap_or(-1),
                    e["comm"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }
}

/// One VM at a time: the host has two cores shared with other work.
static ONE_VM: Mutex<()> = Mutex::new(());

/// TCG unless KVM demonstrably boots the kernel: on a nested `kvm_pvm` host (ours) stock
/// kernels die early with an emulation failure.
fn accel() -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        match std::env::var("LOWMEMD_VM_ACCEL").as_deref() {
            Ok("kvm") => return "kvm",
            Ok("tcg") => return "tcg",
            _ => {}
        }
        let usable = Path::new("/dev/kvm").exists()
            && !Path::new("/sys/module/kvm_pvm").exists()
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
        if !usable {
            return "tcg";
        }
        let probe = Vm {
            name: "kvm-probe",
            mem_mib: 128,
            modules: &[],
            script: "result probe ok\n",
            files: Vec::new(),
            timeout: Duration::from_secs(30),
        };
        match probe.boot("kvm") {
            Ok(out) if out.results.get("probe").is_some_and(|v| v == "ok") => "kvm",
            _ => "tcg",
        }
    })
}

impl Vm {
    fn run(self) -> Output {
        let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
        let accel = accel();
        let out = self
            .boot(accel)
            .unwrap_or_else(|e| panic!("VM {}: {e}", self.name));
        eprintln!(
            "VM {} ({accel}, {} MiB): {:.1} s wall",
            self.name,
            self.mem_mib,
            out.wall.as_secs_f64()
        );
        if let Some(failed) = out.results.get("failed") {
            panic!(
                "VM {}: scenario failed: {failed}\nconsole:\n{}",
                self.name, out.console
            );
        }
        out
    }

    fn initramfs(&self) -> Vec<u8> {
        let a = assets();
        let (lowmemd, workload) = static_bins();
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut c = Newc::new();
        for d in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "root",
            "etc",
            "etc/init.d",
            "lib",
            "lib/modules",
            "vm",
        ] {
            c.dir(d);
        }
        c.entry("dev/console", 0o020600, (5, 1), &[]);
        c.file("bin/busybox", 0o755, &read(&a.busybox));
        c.file("usr/bin/lowmemd", 0o755, &read(lowmemd));
        c.file("usr/bin/lowmemd-workload", 0o755, &read(workload));
        c.file("init", 0o755, include_bytes!("vm/init.sh"));
        c.file("vm/lib.sh", 0o644, include_bytes!("vm/lib.sh"));
        c.file("vm/scenario.sh", 0o644, self.script.as_bytes());
        let mut order = String::new();
        for ko in resolve_modules(&a.modules, self.modules) {
            let name = ko.file_name().unwrap().to_string_lossy().into_owned();
            c.file(&format!("lib/modules/{name}"), 0o644, &read(&ko));
            order.push_str(&name);
            order.push('\n');
        }
        c.file("lib/modules/load.order", 0o644, order.as_bytes());
        for (path, mode, data) in &self.files {
            c.file(path, *mode, data);
        }
        c.finish()
    }

    fn boot(&self, accel: &str) -> Result<Output, String> {
        let tmp = tempfile::Builder::new()
            .prefix("lowmemd-vm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|e| e.to_string())?;
        let initrd = tmp.path().join("initrd.cpio");
        std::fs::File::create(&initrd)
            .and_then(|mut f| f.write_all(&self.initramfs()))
            .map_err(|e| format!("{}: {e}", initrd.display()))?;
        let cpu = if accel == "kvm" { "host" } else { "max" };
        let accel_arg = if accel == "kvm" {
            "kvm".to_string()
        } else {
            "tcg,thread=multi".to_string()
        };
        let start = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", &accel_arg, "-cpu", cpu, "-smp", "2"])
            .args(["-m", &format!("{}M", self.mem_mib)])
            .args([
                "-nodefaults",
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&assets().kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 mitigations=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e} (apt-get install qemu-system-x86)"))?;
        // The child is ours and not yet reaped, so its pid cannot be recycled under us.
        let pidfd = Pid::from_raw(child.id() as i32)
            .ok_or("no pid")
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).map_err(|_| "pidfd_open"))
            .map_err(|e| format!("qemu: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let deadline = start + self.timeout;
        let mut lines = Vec::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    let _ = pidfd_send_signal(&pidfd, Signal::KILL);
                    break;
                }
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        let wall = start.elapsed();
        let qemu_err = err_thread.join().unwrap_or_default();
        let console = lines.join("\n");
        if timed_out {
            return Err(format!(
                "no power-off within {:?}: killed qemu; console:\n{console}",
                self.timeout
            ));
        }
        if !lines.iter().any(|l| l.starts_with("--- scenario exit")) {
            return Err(format!(
                "qemu exited ({status}) before the scenario ended; stderr: {qemu_err}\nconsole:\n{console}"
            ));
        }
        Ok(parse(&lines, console.clone(), wall))
    }
}

fn block<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    let begin = format!("--- {name} begin");
    let end = format!("--- {name} end");
    lines
        .iter()
        .skip_while(|l| **l != begin)
        .skip(1)
        .take_while(|l| **l != end)
        .map(String::as_str)
        .collect()
}

fn parse(lines: &[String], console: String, wall: Duration) -> Output {
    let results = lines
        .iter()
        .filter_map(|l| l.split_once("RESULT ")?.1.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let events = block(lines, "events")
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect();
    Output {
        results,
        events,
        lowmemd_log: block(lines, "lowmemd-log").join("\n"),
        kernel_oom: block(lines, "kernel-oom").join("\n"),
        console,
        wall,
    }
}

/// Prints what a scenario measured (visible with --nocapture, and on failure).
fn report(name: &str, out: &Output, keys: &[&str]) {
    let vals: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}={}", out.results.get(*k).map_or("?", String::as_str)))
        .collect();
    eprintln!(
        "{name}: {} | kills {:?} | {:.1} s wall",
        vals.join(" "),
        out.killed(),
        out.wall.as_secs_f64()
    );
    eprintln!("lowmemd log:\n{}", out.lowmemd_log);
    if !out.kernel_oom.is_empty() {
        eprintln!("kernel OOM killer:\n{}", out.kernel_oom);
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// (a) System scope, 768 MiB with zram swap: a runaway leak is killed by lowmemd, the
/// kernel's OOM killer never fires, the innocents live.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn system_runaway_with_zram() {
    let out = Vm {
        name: "system-runaway",
        mem_mib: 768,
        modules: &["zram", "lzo-rle"],
        script: include_str!("vm/system_runaway.sh"),
        files: Vec::new(),
        timeout: Duration::from_secs(240),
    }
    .run();
    report(
        "system runaway",
        &out,
        &[
            "mem_total_kib",
            "swap_kib",
            "leak_to_gone_ms",
            "oom_kill_delta",
            "swapped_out_kib",
        ],
    );
    assert!(out.num("swap_kib") > 0, "zram swap is on");
    assert!(
        !out.results.contains_key("leak_survived"),
        "the leak still ran"
    );
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
    assert_eq!(
        out.num("dmesg_out_of_memory"),
        0,
        "'Out of memory' in dmesg"
    );
    let leak = out.num("pid_leak");
    assert_eq!(
        out.killed(),
        vec![(leak, "leak".to_string())],
        "only the leak killed"
    );
    for i in 1..=3 {
        assert_eq!(
            out.get(&format!("innocent{i}_alive")),
            "1",
            "innocent{i} alive"
        );
    }
    assert_eq!(out.get("lowmemd_exit"), "0");
}

/// (c) The memcg scope on a pure cgroup-v2 hierarchy: calm use kills nothing; a runaway is
/// killed by lowmemd before the kernel's memcg OOM killer.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn kill_cgroup_takes_the_whole_app_on_cgroup_v2() {
    let out = Vm {
        name: "kill-cgroup-v2",
        mem_mib: 768,
        modules: &[],
        script: include_str!("vm/kill_cgroup_v2.sh"),
        files: Vec::new(),
        timeout: Duration::from_secs(240),
    }
    .run();
    report(
        "kill = cgroup, v2",
        &out,
        &[
            "processes",
            "confirmed",
            "memcg_oom_kill_delta",
            "oom_kill_delta",
        ],
    );
    assert!(
        !out.results.contains_key("leak_survived"),
        "the leak still ran"
    );
    for n in ["a1", "a2", "a3"] {
        assert_eq!(out.get(&format!("{n}_alive")), "0", "{n} of app-a survived");
    }
    assert_eq!(out.get("b1_alive"), "1", "app-b was touched");
    assert_eq!(out.num("processes"), 4, "app-a killed whole");
    assert_eq!(out.num("memcg_oom_kill_delta"), 0, "memcg OOM kills");
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn memcg_v2_runaway_and_calm() {
    let out = Vm {
        name: "memcg-v2",
        mem_mib: 768,
        modules: &[],
        script: include_str!("vm/memcg_v2.sh"),
        files: Vec::new(),
        timeout: Duration::from_secs(240),
    }
    .run();
    report(
        "memcg v2",
        &out,
        &[
            "controllers",
            "calm_actions",
            "leak_to_gone_ms",
            "memcg_oom_kill_delta",
            "memcg_max_events",
            "oom_kill_delta",
        ],
    );
    assert!(
        out.get("controllers").contains("memory"),
        "memory controller in /box"
    );
    assert_eq!(out.get("calm_alive"), "1", "calm workload alive");
    assert_eq!(out.num("calm_actions"), 0, "actions while calm");
    assert!(
        !out.results.contains_key("leak_survived"),
        "the leak still ran"
    );
    assert_eq!(out.num("memcg_oom_kill_delta"), 0, "memcg OOM kills");
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
    let leak = out.num("pid_leak");
    assert_eq!(
        out.killed(),
        vec![(leak, "leak".to_string())],
        "only the leak killed"
    );
    assert_eq!(out.get("small_alive"), "1");
    assert_eq!(out.get("lowmemd_exit"), "0");
}

/// (b) A 256 MiB board without swap: background apps make room for a growing foreground
/// app, highest adj first; the foreground survives; no kernel OOM kill.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn board_background_makes_room() {
    let out = Vm {
        name: "board",
        mem_mib: 256,
        modules: &[],
        script: include_str!("vm/board.sh"),
        files: Vec::new(),
        timeout: Duration::from_secs(240),
    }
    .run();
    report(
        "board",
        &out,
        &[
            "mem_total_kib",
            "available_before_mib",
            "fg_grow_ms",
            "available_after_mib",
            "oom_kill_delta",
        ],
    );
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
    assert_eq!(
        out.num("dmesg_out_of_memory"),
        0,
        "'Out of memory' in dmesg"
    );
    assert_eq!(out.get("fg_alive"), "1", "the foreground app survives");
    assert_eq!(
        out.get("small_alive"),
        "1",
        "the small foreground process survives"
    );
    let killed: Vec<String> = out.killed().into_iter().map(|(_, c)| c).collect();
    let order = ["bg1000", "bg950", "bg900"];
    assert!(
        !killed.is_empty() && killed.len() <= 3 && killed[..] == order[..killed.len()],
        "background apps die highest adj first, nothing else: {killed:?}"
    );
    for (i, bg) in order.iter().enumerate() {
        let alive = if i < killed.len() { "0" } else { "1" };
        assert_eq!(out.get(&format!("{bg}_alive")), alive, "{bg}");
    }
    assert_eq!(out.get("lowmemd_exit"), "0");
}

/// (d) The BusyBox init script starts lowmemd as a board's init would (the embedded policy,
/// zram swap as the README sets a board up); it protects the board; `stop` ends it.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn busybox_init_script_starts_and_stops() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let out = Vm {
        name: "initscript",
        mem_mib: 256,
        modules: &["zram", "lzo-rle"],
        script: include_str!("vm/initscript.sh"),
        files: vec![
            (
                "etc/init.d/S05lowmemd",
                0o755,
                read("deploy/busybox/S05lowmemd"),
            ),
            (
                "etc/lowmemd/policy.toml",
                0o644,
                read("policies/embedded.toml"),
            ),
        ],
        timeout: Duration::from_secs(240),
    }
    .run();
    report(
        "init script",
        &out,
        &[
            "start_output",
            "leak_to_gone_ms",
            "oom_kill_delta",
            "stop_output",
        ],
    );
    assert_eq!(out.get("start_rc"), "0", "start");
    assert!(out.get("start_output").contains("OK"), "start says OK");
    assert_eq!(out.get("status_rc"), "0", "status while running");
    assert_eq!(
        out.get("lowmemd_comm"),
        "lowmemd",
        "the pidfile names lowmemd"
    );
    assert_eq!(out.get("lowmemd_adj"), "-1000", "lowmemd protected itself");
    assert_eq!(
        out.get("policy_file"),
        "1",
        "the policy in /etc/lowmemd is in force"
    );
    assert!(
        !out.results.contains_key("leak_survived"),
        "the leak still ran"
    );
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
    let leak = out.num("pid_leak");
    assert_eq!(
        out.killed(),
        vec![(leak, "leak".to_string())],
        "only the leak killed"
    );
    assert_eq!(out.get("stop_rc"), "0", "stop");
    assert!(out.get("stop_output").contains("OK"), "stop says OK");
    assert_eq!(out.get("lowmemd_alive_after_stop"), "0");
    assert_eq!(out.get("lowmemd_processes"), "0");
    assert_eq!(out.get("pidfile_left"), "0");
}

#[test]
fn newc_archive_layout() {
    let mut c = Newc::new();
    c.file("a", 0o644, b"xyz");
    let buf = c.finish();
    assert_eq!(&buf[..6], b"070701");
    // Header (110) + "a\0" padded to 112, data "xyz" padded to 116, then the trailer.
    assert_eq!(&buf[110..112], b"a\0");
    assert_eq!(&buf[112..115], b"xyz");
    assert_eq!(&buf[116..122], b"070701");
    assert_eq!(buf.len() % 4, 0);
}

#[test]
fn module_depends_from_modinfo() {
    let ko = b"\x7fELF....license=GPL\0depends=zsmalloc,lz4\0vermagic=6.1\0";
    assert_eq!(module_depends(ko), vec!["zsmalloc", "lz4"]);
    assert!(module_depends(b"\0depends=\0").is_empty());
}
