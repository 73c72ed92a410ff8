//! The systemd machine of tests/vm.rs (issue 20): a Debian bookworm root filesystem with
//! real systemd, built from Debian's packages by tests/vm/systemd/build-image.sh and cached
//! under target/vm-systemd (rebuilt when its package list changes), booted with its own
//! kernel and initrd from a read-only snapshot of that image. The host hands each run its
//! files (the scenario, the workload, the .deb) as a tar on a second disk, /dev/vdb, which
//! the image's vm-test.service unpacks and runs once multi-user.target is up, reporting on
//! the serial console as the busybox bed does.
#![allow(dead_code)] // benches/vm_head_to_head.rs uses only the machine, not the checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{ONE_VM, Output, accel, console, target_dir};

/// The cached image: the root filesystem and the kernel and initrd it installed.
pub struct Image {
    disk: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Builds the image (once per package list, ~1-4 min: mmdebstrap downloads and installs
/// the list with its dependencies) or finds it in target/vm-systemd.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    let got = IMAGE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/systemd/build-image.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(target_dir().join("vm-systemd"))
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{} failed (it needs root, mmdebstrap and e2fsprogs: .ci/run installs them):\n{stdout}{stderr}",
                script.display()
            ));
        }
        eprint!("{stderr}");
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default());
        let image = Image {
            disk: dir.join("disk.img"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        };
        match [&image.disk, &image.kernel, &image.initrd]
            .iter()
            .find(|p| !p.is_file())
        {
            Some(missing) => Err(format!("{} is missing", missing.display())),
            None => Ok(image),
        }
    });
    got.as_ref()
        .unwrap_or_else(|e| panic!("systemd VM image: {e}"))
}

/// The package `cargo deb` built, named by `LOWMEMD_DEB` as for tests/package.rs.
pub fn deb() -> PathBuf {
    let deb = std::env::var_os("LOWMEMD_DEB")
        .map(PathBuf::from)
        .expect("LOWMEMD_DEB is not set: cargo deb, then LOWMEMD_DEB=target/debian/lowmemd_*.deb");
    assert!(deb.is_file(), "LOWMEMD_DEB={}: no such file", deb.display());
    deb
}

/// One boot of the systemd machine.
pub struct SystemdVm {
    pub name: &'static str,
    pub mem_mib: u32,
    /// The files of /vm in the guest (name, contents); `scenario.sh` is run.
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub timeout: Duration,
}

impl SystemdVm {
    /// Boots the machine (one VM at a time), runs the scenario and returns what came back;
    /// panics if the VM did not power off in time or the scenario did not end.
    pub fn run(&self) -> Output {
        self.try_run()
            .unwrap_or_else(|e| panic!("VM {}: {e}", self.name))
    }

    /// As `run`, with a VM that overran or died as an error (its console in the message):
    /// a bench goes on to its next run.
    pub fn try_run(&self) -> Result<Output, String> {
        let image = image();
        let tmp = tempfile::Builder::new()
            .prefix("lowmemd-systemd-vm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let files = tmp.path().join("vm");
        std::fs::create_dir(&files).unwrap();
        for (name, data) in &self.files {
            std::fs::write(files.join(name), data).unwrap();
        }
        // A plain tar on a raw disk: the guest reads it with `tar -xf /dev/vdb`, so the
        // host needs no mkfs and no mount.
        let tar = tmp.path().join("vm.tar");
        let made = Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&files)
            .arg(".")
            .status()
            .unwrap();
        assert!(made.success(), "tar -cf {}", tar.display());
        let accel = accel();
        let mut qemu = Command::new("qemu-system-x86_64");
        if accel == "kvm" {
            qemu.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
        }
        qemu.args(["-smp", "2", "-m", &format!("{}M", self.mem_mib)])
            .args(["-nodefaults", "-nographic", "-no-reboot"])
            .args(["-monitor", "none", "-serial", "stdio", "-kernel"])
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            // fsck.mode=skip: the image is fresh and the guest writes to a snapshot of it.
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 quiet panic=-1 mitigations=off fsck.mode=skip",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                image.disk.display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,readonly=on",
                tar.display()
            ));
        let out = {
            let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
            console(qemu, self.timeout)
        }?;
        eprintln!(
            "VM {} ({accel}, {} MiB): {:.1} s wall",
            self.name,
            self.mem_mib,
            out.wall.as_secs_f64()
        );
        Ok(out)
    }
}

/// The `check_NAME` results in the order the guest said them, as (NAME, passed, what was
/// seen).
pub fn checks(out: &Output) -> Vec<(String, bool, String)> {
    out.lines
        .iter()
        .filter_map(|l| l.split_once("RESULT check_")?.1.split_once('='))
        .map(|(name, said)| {
            let (verdict, seen) = said.split_once(' ').unwrap_or((said, ""));
            (name.to_string(), verdict == "PASS", seen.to_string())
        })
        .collect()
}
