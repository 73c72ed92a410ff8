//! The .deb (built by `cargo deb`, see .ci/run) installs and starts cleanly: installed with
//! dpkg into a scratch root (so the test machine is left alone), the binary validates the
//! shipped conffile policy, explains the machine, and runs until a clean SIGTERM.
//! `LOWMEMD_DEB` names the package (CI sets it). A plain `cargo test` lists the test as
//! ignored, saying so; `cargo test -- --include-ignored` runs it, and fails without the .deb.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The package named by `LOWMEMD_DEB`; panics without it (the test is `#[ignore]`d for that).
fn deb() -> PathBuf {
    std::env::var_os("LOWMEMD_DEB")
        .map(PathBuf::from)
        .expect("LOWMEMD_DEB is not set: cargo deb, then LOWMEMD_DEB=target/debian/lowmemd_*.deb")
}

#[test]
#[ignore = "needs a .deb named by LOWMEMD_DEB, and dpkg: cargo deb, then LOWMEMD_DEB=target/debian/lowmemd_*.deb cargo test -- --include-ignored"]
fn deb_installs_and_starts_cleanly() {
    let deb = deb();
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout);
    for f in [
        "./usr/bin/lowmemd",
        "./lib/systemd/system/lowmemd.service",
        "./lib/systemd/system/lowmemd.socket",
        "./lib/systemd/system/lowmemd-notify.path",
        "./lib/systemd/system/lowmemd-notify.service",
        "./usr/share/lowmemd/hooks/notify-desktop",
        "./etc/lowmemd/policy.toml",
        "./usr/share/man/man8/lowmemd.8",
    ] {
        assert!(
            listing.contains(f),
            "{f} missing from the package:\n{listing}"
        );
    }
    let info = Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .arg("Conffiles")
        .output()
        .unwrap();
    let conffiles = String::from_utf8_lossy(&info.stdout);
    let conffiles = if conffiles.trim().is_empty() {
        let ctl = Command::new("dpkg-deb")
            .arg("--ctrl-tarfile")
            .arg(&deb)
            .output()
            .unwrap();
        String::from_utf8_lossy(&ctl.stdout).into_owned()
    } else {
        conffiles.into_owned()
    };
    assert!(
        conffiles.contains("etc/lowmemd/policy.toml"),
        "the policy is a conffile"
    );

    // Install into a scratch root with its own dpkg database.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let admin = r.join("var/lib/dpkg");
    for d in ["updates", "info", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    let out = Command::new("dpkg")
        .arg(format!("--instdir={}", r.display()))
        .arg(format!("--admindir={}", admin.display()))
        .args([
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "-i",
        ])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The units land as shipped, and the socket hands its fd to the installed service.
    let units = r.join("lib/systemd/system");
    for unit in [
        "lowmemd.service",
        "lowmemd.socket",
        "lowmemd-notify.path",
        "lowmemd-notify.service",
    ] {
        let installed = std::fs::read_to_string(units.join(unit)).unwrap();
        let shipped = std::fs::read_to_string(Path::new("deploy/systemd").join(unit)).unwrap();
        assert_eq!(installed, shipped, "{unit} installed as in deploy/systemd");
    }
    let socket = std::fs::read_to_string(units.join("lowmemd.socket")).unwrap();
    for line in ["Service=lowmemd.service", "FileDescriptorName=lmkd"] {
        assert!(
            socket.lines().any(|l| l.trim() == line),
            "lowmemd.socket lacks {line}"
        );
    }
    let bin = r.join("usr/bin/lowmemd");
    let policy = r.join("etc/lowmemd/policy.toml");
    let run = |args: &[&str]| Command::new(&bin).args(args).output().unwrap();
    assert!(run(&["--version"]).status.success());
    assert!(run(&["check", policy.to_str().unwrap()]).status.success());
    assert!(run(&["doctor", "--json"]).stdout.starts_with(b"{"));
    start_and_stop(&bin, &policy);
}

fn start_and_stop(bin: &Path, policy: &Path) {
    let mut child = Command::new(bin)
        .args(["run", "--dry-run", "--metrics-listen", "off", "--policy"])
        .arg(policy)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("monitoring "));
    assert!(started, "the installed daemon did not start");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::TERM).unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    assert!(child.wait().unwrap().success(), "clean stop on SIGTERM");
}
