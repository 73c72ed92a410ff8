//! The VM harness of tests/vm.rs and benches/vm_head_to_head.rs: builds an initramfs
//! (busybox-static, kernel modules, the static `lowmemd` and `lowmemd-workload`,
//! tests/vm/init.sh as /init, the scenario script, the shipped policies), boots it in
//! qemu-system-x86_64 (or, for the board builds, qemu-system-aarch64 / qemu-system-arm on
//! `-M virt`: [`Arch`]) with a hard deadline, and parses what comes back over the serial
//! console: `RESULT key=value` lines and blocks between `--- NAME begin` / `--- NAME end`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The guest's architecture: which Debian kernel and busybox it boots, which static build of
/// lowmemd it runs, and which qemu runs it. The ARM guests are the board builds on a real
/// kernel (issue 21): under qemu-user, process_madvise and process_mrelease are ENOSYS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    #[default]
    X86_64,
    /// Debian's linux-image-cloud-arm64, the aarch64-musl board build.
    Aarch64,
    /// Debian's linux-image-armmp-lpae, the armv7 board build (std from rust-src).
    Armv7,
}

impl Arch {
    /// Debian's name, for tests/vm/fetch-assets.sh.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
        }
    }

    /// Where the unpacked packages live under target/ (x86's keeps its old name).
    pub fn assets_dir(self) -> PathBuf {
        target_dir().join(match self {
            Arch::X86_64 => "vm-assets",
            Arch::Aarch64 => "vm-assets-arm64",
            Arch::Armv7 => "vm-assets-armhf",
        })
    }

    /// The Rust target of the static binaries (the same builds .ci/run checks for boards).
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => MUSL,
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
            Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Armv7 => "qemu-system-arm",
        }
    }

    /// The machine and CPU (TCG: there is no KVM for ARM guests on an x86 host).
    /// `pauth-impdef=on`: pointer authentication with QEMU's own cheap hash instead of the
    /// architected QARMA, which TCG computes slowly: the arm64 boot took 18 s without it and
    /// 6 s with it here.
    fn machine(self, accel: &str) -> Vec<&'static str> {
        match self {
            Arch::X86_64 if accel == "kvm" => vec!["-accel", "kvm", "-cpu", "host"],
            Arch::X86_64 => vec!["-accel", "tcg,thread=multi", "-cpu", "max"],
            Arch::Aarch64 => vec![
                "-M",
                "virt",
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "max,pauth-impdef=on",
            ],
            Arch::Armv7 => vec![
                "-M",
                "virt",
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "cortex-a15",
            ],
        }
    }

    /// The serial console: the PC's 16550, the virt board's PL011.
    fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 | Arch::Armv7 => "ttyAMA0",
        }
    }
}

// ---------------------------------------------------------------------------------------
// What goes into the VM

/// The kernel, its modules and a static busybox, unpacked from Debian packages.
pub struct Assets {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
}

pub fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

pub fn find_assets(root: &Path) -> Option<Assets> {
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

/// Finds the unpacked x86 packages under target/vm-assets, fetching them first if needed.
pub fn assets() -> &'static Assets {
    assets_for(Arch::X86_64)
}

/// Finds the unpacked packages of `arch` (see [`Arch::assets_dir`]), fetching them first if
/// needed.
pub fn assets_for(arch: Arch) -> &'static Assets {
    static ASSETS: [OnceLock<Result<Assets, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let got = ASSETS[arch as usize].get_or_init(|| {
        let dir = arch.assets_dir();
        let root = dir.join("root");
        if let Some(a) = find_assets(&root) {
            return Ok(a);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/fetch-assets.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .arg(arch.debian())
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

/// The static x86_64 lowmemd and lowmemd-workload (`small` profile, musl), built once per
/// run.
pub fn static_bins() -> &'static (PathBuf, PathBuf) {
    static_bins_for(Arch::X86_64)
}

/// The static lowmemd and lowmemd-workload for `arch` (`small` profile), built once per run
/// as .ci/run builds the board binaries: armv7 with std from rust-src and the flags
/// .cargo/config.toml gives that target.
pub fn static_bins_for(arch: Arch) -> &'static (PathBuf, PathBuf) {
    static BINS: [OnceLock<Result<(PathBuf, PathBuf), String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let got = BINS[arch as usize].get_or_init(|| {
        let target = target_dir();
        let triple = arch.target();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--profile", "small", "--target", triple])
            .args(["--bin", "lowmemd", "--bin", "lowmemd-workload"]);
        if arch == Arch::Armv7 {
            // rustup serves no armv7 rust-std here: the same build as .ci/run's.
            cargo.env("RUSTC_BOOTSTRAP", "1").args([
                "-Zbuild-std=std,panic_abort",
                "-Zbuild-std-features=optimize_for_size",
            ]);
        }
        let out = cargo
            .arg("--target-dir")
            .arg(&target)
            .output()
            .map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build --target {triple} failed (rustup target add {triple}, or rust-src and the armhf cross gcc for armv7?):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = target.join(triple).join("small");
        Ok((dir.join("lowmemd"), dir.join("lowmemd-workload")))
    });
    got.as_ref().unwrap_or_else(|e| panic!("static build: {e}"))
}

/// The `depends=` list in a module's .modinfo section.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
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
pub fn resolve_modules(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
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
    // A module the kernel has built in (armmp-lpae's lzo-rle) needs no loading.
    let builtin: Vec<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Some(norm(Path::new(l).file_stem()?.to_str()?)))
        .collect();
    let mut order = Vec::new();
    for n in names.iter().filter(|n| !builtin.contains(&norm(n))) {
        visit(n, &find, &mut order);
    }
    order
}

/// A cpio archive in the kernel's initramfs ("newc") format.
pub struct Newc {
    buf: Vec<u8>,
    ino: u32,
    dirs: Vec<String>,
}

impl Newc {
    pub fn new() -> Newc {
        Newc {
            buf: Vec::new(),
            ino: 1,
            dirs: Vec::new(),
        }
    }

    pub fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
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

    pub fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// A directory, and its parents first (each once).
    pub fn dir(&mut self, name: &str) {
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
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

// ---------------------------------------------------------------------------------------
// Running a VM

/// One scenario's machine.
#[derive(Default)]
pub struct Vm {
    pub name: &'static str,
    pub mem_mib: u32,
    /// Kernel modules to load at boot (with their dependencies).
    pub modules: &'static [&'static str],
    /// The scenario script (run by /init as /vm/scenario.sh, after /vm/lib.sh is in place).
    pub script: &'static str,
    /// Extra files: (path in the guest, mode, contents).
    pub files: Vec<(&'static str, u32, Vec<u8>)>,
    pub timeout: Duration,
    /// A blank virtio disk of this size (/dev/vda; needs the virtio_pci and virtio_blk
    /// modules), sparse in a temporary directory on the host; 0: none.
    pub disk_mib: u32,
    /// Shell variables for the scenario, in /vm/env.sh (lib.sh sources it).
    pub env: Vec<(&'static str, String)>,
    /// The guest's architecture (x86_64 unless a board test says otherwise).
    pub arch: Arch,
}

/// What came back over the serial console.
pub struct Output {
    pub lines: Vec<String>,
    pub results: BTreeMap<String, String>,
    pub events: Vec<serde_json::Value>,
    pub lowmemd_log: String,
    pub kernel_oom: String,
    pub console: String,
    pub wall: Duration,
}

impl Output {
    pub fn get(&self, key: &str) -> &str {
        self.results
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no RESULT {key} from the VM; console:\n{}", self.console))
    }

    pub fn num(&self, key: &str) -> i64 {
        let v = self.get(key);
        v.parse()
            .unwrap_or_else(|_| panic!("RESULT {key}={v} is not a number"))
    }

    /// A decimal RESULT (the probe's `probe_max_ms=123.4`).
    pub fn float(&self, key: &str) -> f64 {
        let v = self.get(key);
        v.parse()
            .unwrap_or_else(|_| panic!("RESULT {key}={v} is not a number"))
    }

    /// The event log dumped in the block NAME (`dump_lowmemd SUFFIX` dumps `events-SUFFIX`).
    pub fn events_in(&self, name: &str) -> Vec<serde_json::Value> {
        events(&self.lines, name)
    }

    pub fn kills(&self) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["action"] == "kill")
            .collect()
    }

    /// The (pid, comm) of every kill, in order.
    pub fn killed(&self) -> Vec<(i64, String)> {
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
pub static ONE_VM: Mutex<()> = Mutex::new(());

/// TCG unless KVM demonstrably boots the kernel: on a nested `kvm_pvm` host (ours) stock
/// kernels die early with an emulation failure.
pub fn accel() -> &'static str {
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
            ..Vm::default()
        };
        match probe.boot("kvm") {
            Ok(out) if out.results.get("probe").is_some_and(|v| v == "ok") => "kvm",
            _ => "tcg",
        }
    })
}

impl Vm {
    pub fn run(self) -> Output {
        let accel = self.accel();
        let out = self
            .try_run()
            .unwrap_or_else(|e| panic!("VM {}: {e}", self.name));
        eprintln!(
            "VM {} ({:?}, {accel}, {} MiB): {:.1} s wall",
            self.name,
            self.arch,
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

    /// Boots the VM (one at a time) and returns what came back, a failed scenario too.
    pub fn try_run(&self) -> Result<Output, String> {
        let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
        self.boot(self.accel())
    }

    /// KVM only for an x86 guest that the probe showed boots under it.
    fn accel(&self) -> &'static str {
        if self.arch == Arch::X86_64 {
            accel()
        } else {
            "tcg"
        }
    }

    pub fn initramfs(&self) -> Vec<u8> {
        let a = assets_for(self.arch);
        let (lowmemd, workload) = static_bins_for(self.arch);
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
        c.file("init", 0o755, include_bytes!("init.sh"));
        c.file("vm/lib.sh", 0o644, include_bytes!("lib.sh"));
        c.file("vm/scenario.sh", 0o644, self.script.as_bytes());
        let env: String = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}='{}'\n", v.replace('\'', r"'\''")))
            .collect();
        c.file("vm/env.sh", 0o644, env.as_bytes());
        // Every shipped policy, for `start_lowmemd --policy /etc/lowmemd/policies/NAME.toml`.
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&policies)
            .unwrap_or_else(|e| panic!("{}: {e}", policies.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            c.file(&format!("etc/lowmemd/policies/{name}"), 0o644, &read(&p));
        }
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

    pub fn boot(&self, accel: &str) -> Result<Output, String> {
        let tmp = tempfile::Builder::new()
            .prefix("lowmemd-vm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|e| e.to_string())?;
        let initrd = tmp.path().join("initrd.cpio");
        std::fs::File::create(&initrd)
            .and_then(|mut f| f.write_all(&self.initramfs()))
            .map_err(|e| format!("{}: {e}", initrd.display()))?;
        let mut disk = Vec::new();
        if self.disk_mib > 0 {
            let img = tmp.path().join("disk.img");
            std::fs::File::create(&img)
                .and_then(|f| f.set_len(u64::from(self.disk_mib) << 20))
                .map_err(|e| format!("{}: {e}", img.display()))?;
            // cache=unsafe: the disk dies with the VM, so nothing need reach the host's disk.
            disk.push("-drive".to_string());
            disk.push(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                img.display()
            ));
        }
        let mut qemu = Command::new(self.arch.qemu());
        qemu.args(self.arch.machine(accel))
            .args(["-smp", "2"])
            .args(["-m", &format!("{}M", self.mem_mib)])
            .args([
                "-nodefaults",
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&assets_for(self.arch).kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(&disk)
            .arg("-append")
            .arg(format!(
                "console={} quiet panic=-1 mitigations=off",
                self.arch.console()
            ));
        console(qemu, self.timeout)
    }
}

/// Runs `qemu` (a whole qemu-system command line, its serial console on stdout) until the
/// guest powers off or `timeout` passes (then kills it through a pidfd), and parses what
/// came over the console. The guest must say `--- scenario exit RC` before it powers off.
pub fn console(mut qemu: Command, timeout: Duration) -> Result<Output, String> {
    let start = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let name = qemu.get_program().to_string_lossy();
            format!("{name}: {e} (apt-get install qemu-system-x86 or qemu-system-arm)")
        })?;
    // The child is ours and not yet reaped, so its pid cannot be recycled under us.
    let pidfd = Pid::from_raw(child.id() as i32)
        .ok_or("no pid")
        .and_then(|p| pidfd_open(p, PidfdFlags::empty()).map_err(|_| "pidfd_open"))
        .map_err(|e| format!("qemu: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    // A long run (the hour-long soak) can be followed as it goes, and leaves its console
    // behind if the run is cut short: LOWMEMD_VM_CONSOLE=FILE appends every line to FILE.
    let mut tee = std::env::var_os("LOWMEMD_VM_CONSOLE").and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if let Some(f) = tee.as_mut() {
                let _ = f.write_all(&line);
            }
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
    let deadline = start + timeout;
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
            "no power-off within {timeout:?}: killed qemu; console:\n{console}"
        ));
    }
    if !lines.iter().any(|l| l.starts_with("--- scenario exit")) {
        return Err(format!(
            "qemu exited ({status}) before the scenario ended; stderr: {qemu_err}\nconsole:\n{console}"
        ));
    }
    Ok(parse(&lines, console.clone(), wall))
}

pub fn block<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
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

/// The JSON lines of block NAME (an event log).
pub fn events(lines: &[String], name: &str) -> Vec<serde_json::Value> {
    block(lines, name)
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

pub fn parse(lines: &[String], console: String, wall: Duration) -> Output {
    let results = lines
        .iter()
        .filter_map(|l| l.split_once("RESULT ")?.1.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Output {
        lines: lines.to_vec(),
        results,
        events: events(lines, "events"),
        lowmemd_log: block(lines, "lowmemd-log").join("\n"),
        kernel_oom: block(lines, "kernel-oom").join("\n"),
        console,
        wall,
    }
}

/// Prints what a scenario measured (visible with --nocapture, and on failure).
pub fn report(name: &str, out: &Output, keys: &[&str]) {
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
    // The records whole: what a level saw (available, swap headroom, trend) when it acted.
    for e in &out.events {
        eprintln!("lowmemd event: {e}");
    }
    if !out.kernel_oom.is_empty() {
        eprintln!("kernel OOM killer:\n{}", out.kernel_oom);
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios tests/vm.rs checks and benches/vm_head_to_head.rs compares guards on

/// System scope, 768 MiB with zram swap of half of RAM: an adj-0 leak at 100 MiB/s among
/// three 16 MiB innocents (system_runaway.sh).
pub fn system_runaway() -> Vm {
    Vm {
        name: "system-runaway",
        mem_mib: 768,
        modules: &["zram", "lzo-rle"],
        script: include_str!("system_runaway.sh"),
        timeout: Duration::from_secs(240),
        ..Vm::default()
    }
}

/// System scope, 768 MiB with 384 MiB of zram swap: an adj-0 job grows at 100 MiB/s to
/// 700 MiB of ~3:1-compressible memory and holds it for 20 s, which RAM and zram together
/// carry (finite_job.sh, issue 24).
pub fn finite_job() -> Vm {
    Vm {
        name: "finite-job",
        mem_mib: 768,
        modules: &["zram", "lzo-rle"],
        script: include_str!("finite_job.sh"),
        timeout: Duration::from_secs(240),
        env: vec![
            ("ZRAM_MIB", "384".into()),
            ("JOB_MIB", "700".into()),
            ("HOLD_S", "20".into()),
        ],
        ..Vm::default()
    }
}

/// finite_job on a board: 256 MiB with 128 MiB of zram swap, a 220 MiB job.
pub fn finite_job_board() -> Vm {
    Vm {
        name: "finite-job-board",
        mem_mib: 256,
        env: vec![
            ("ZRAM_MIB", "128".into()),
            ("JOB_MIB", "220".into()),
            ("HOLD_S", "20".into()),
        ],
        ..finite_job()
    }
}

/// System scope, 768 MiB with zram swap of half of RAM: two cached apps (adj 900) and two
/// user apps (adj 0) of 200 MiB each re-read all their memory every second, watched for
/// 60 s (thrash_zram.sh, issue 24).
pub fn thrash_zram() -> Vm {
    Vm {
        name: "thrash-zram",
        mem_mib: 768,
        modules: &["zram", "lzo-rle"],
        script: include_str!("thrash_zram.sh"),
        timeout: Duration::from_secs(300),
        env: vec![("OBSERVE_S", "60".into())],
        ..Vm::default()
    }
}

/// A 256 MiB board without swap: background apps and a growing foreground app (board.sh).
pub fn board() -> Vm {
    Vm {
        name: "board",
        mem_mib: 256,
        script: include_str!("board.sh"),
        timeout: Duration::from_secs(240),
        ..Vm::default()
    }
}

/// System scope, 768 MiB with zram swap: a burst of file-cache thrash on a 2 GiB virtio
/// disk beside an editor, a browser tab and cached apps (thrash_burst.sh).
pub fn thrash_burst() -> Vm {
    Vm {
        name: "thrash-burst",
        mem_mib: 768,
        // zram for swap, virtio for the disk the burst writes to.
        modules: &["zram", "lzo-rle", "virtio_pci", "virtio_blk"],
        script: include_str!("thrash_burst.sh"),
        timeout: Duration::from_secs(300),
        disk_mib: 2048,
        ..Vm::default()
    }
}

impl Vm {
    /// What protects the machine (lib.sh start_guard): `lowmemd`, `earlyoom` (its binary
    /// and libraries must be in `files`) or `none`; `policy` names a file of
    /// /etc/lowmemd/policies for lowmemd (None: the built-in policy).
    pub fn guard(mut self, guard: &str, policy: Option<&str>) -> Vm {
        self.env.push(("GUARD", guard.to_string()));
        if let Some(p) = policy {
            self.env
                .push(("POLICY", format!("/etc/lowmemd/policies/{p}")));
        }
        self
    }
}

/// A board with zram under embedded.toml: background apps paged out, then an adj-0 leak
/// killed (board_runaway.sh); `arch` says which kernel and build.
pub fn board_runaway(arch: Arch) -> Vm {
    Vm {
        name: "board-runaway",
        mem_mib: 256,
        modules: &["zram", "lzo-rle"],
        script: include_str!("board_runaway.sh"),
        timeout: Duration::from_secs(300),
        env: vec![
            ("ZRAM_MIB", "128".into()),
            ("BG_MIB", "24".into()),
            ("LEAK_RATE", "50".into()),
        ],
        arch,
        ..Vm::default()
    }
    .guard("lowmemd", Some("embedded.toml"))
}
