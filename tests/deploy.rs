//! The deployment files work as shipped: the systemd unit verifies and is hardened
//! (exposure ≤ 2.0), lowmemd speaks the sd_notify protocol it promises (Type=notify), the
//! BusyBox init script starts, reloads and stops the daemon under `busybox sh`, the OpenRC
//! script parses, and the Kubernetes manifests validate. Tools come from Debian packages
//! (.ci/run installs them); the tests that need one are ignored by a plain `cargo test`, with
//! the tool named, and fail when run without it (`cargo test -- --include-ignored`).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Panics unless `name` is on PATH: the tests that call this are `#[ignore]`d with the tool
/// they need, so when one runs anyway its tool must be there.
fn require_tool(name: &str, why: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{name} is not installed ({why})");
}

const BIN: &str = env!("CARGO_BIN_EXE_lowmemd");

/// `systemd-analyze verify` of `unit` (with its drop-ins beside it) must pass without a
/// word, and `security` must put it at 2.0 or below (`--threshold=20`); returns the report.
fn verified_exposure_report(unit: &Path) -> String {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exposure above 2.0:\n{report}");
    report
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd; .ci/run installs it): cargo test -- --include-ignored"]
fn systemd_unit_verifies_and_is_hardened() {
    require_tool("systemd-analyze", "Debian package systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("lowmemd.service");
    let text = std::fs::read_to_string("deploy/systemd/lowmemd.service").unwrap();
    assert!(
        text.contains("Type=notify")
            && text.contains("ExecReload=")
            && text.contains("OOMScoreAdjust=-1000")
    );
    // verify wants the ExecStart binary to exist: point it at the one just built.
    std::fs::write(&unit, text.replace("/usr/bin/lowmemd", BIN)).unwrap();
    let report = verified_exposure_report(&unit);
    let exposure = report
        .lines()
        .find_map(|l| l.split("exposure level for lowmemd.service: ").nth(1))
        .and_then(|r| r.split(' ').next()?.parse::<f64>().ok())
        .expect("an exposure line");
    assert!(exposure <= 2.0, "{exposure}");
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd; .ci/run installs it): cargo test -- --include-ignored"]
fn the_hooks_user_drop_in_lets_lowmemd_switch_users_and_stays_hardened() {
    require_tool("systemd-analyze", "Debian package systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("lowmemd.service");
    let text = std::fs::read_to_string("deploy/systemd/lowmemd.service").unwrap();
    std::fs::write(&unit, text.replace("/usr/bin/lowmemd", BIN)).unwrap();
    let dropins = dir.path().join("lowmemd.service.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::copy(
        "deploy/systemd/lowmemd.service.d/hooks-user.conf",
        dropins.join("hooks-user.conf"),
    )
    .unwrap();
    let report = verified_exposure_report(&unit);
    // The drop-in was read: setuid(2) and friends are allowed again, and the capabilities
    // to use them are there (std's Command::uid/gid needs both).
    let line = |needle: &str| {
        report
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} line:\n{report}"))
            .to_string()
    };
    assert!(line("CAP_SET(UID|GID").starts_with('✗'), "{report}");
    assert!(
        line("SystemCallFilter=~@privileged").contains("setgroups is allowed"),
        "{report}"
    );
}

/// Receives one datagram, or None after `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 512];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn wait_for(sock: &UnixDatagram, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(m) = recv(sock, Duration::from_millis(500)) {
            let hit = m.contains(what);
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
    panic!("no {what:?} from lowmemd; got {seen:?}");
}

#[test]
fn speaks_sd_notify_ready_reloading_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::copy("policies/default.toml", &policy).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--dry-run", "--metrics-listen", "off", "--policy"])
        .arg(&policy)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    wait_for(&sock, "READY=1");
    // A 200 ms watchdog: pinged at least every 100 ms.
    let pings = (0..10)
        .filter(|_| recv(&sock, Duration::from_millis(300)).is_some_and(|m| m == "WATCHDOG=1"))
        .count();
    assert!(pings >= 5, "{pings} watchdog pings in 10 tries");
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::HUP).unwrap();
    let seen = wait_for(&sock, "RELOADING=1");
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    wait_for(&sock, "READY=1");
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM).unwrap();
    wait_for(&sock, "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// A directory with every BusyBox applet, first on PATH: the script then runs with BusyBox's
/// start-stop-daemon, kill, sleep... as on a board.
fn busybox_path(dir: &Path) -> String {
    let bin = dir.join("bb");
    std::fs::create_dir_all(&bin).unwrap();
    let out = Command::new("busybox")
        .arg("--install")
        .arg("-s")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
#[ignore = "needs busybox (Debian package busybox; .ci/run installs it): cargo test -- --include-ignored"]
fn busybox_init_script_starts_reloads_and_stops() {
    require_tool("busybox", "Debian package busybox");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy("policies/default.toml", d.join("policy.toml")).unwrap();
    let run = |action: &str| {
        Command::new("busybox")
            .args(["sh", "deploy/busybox/S05lowmemd", action])
            .env("PATH", busybox_path(d))
            .env("DAEMON", BIN)
            .env("POLICY", d.join("policy.toml"))
            .env("PIDFILE", d.join("lowmemd.pid"))
            .env("LOGFILE", d.join("lowmemd.log"))
            .env("EVENTLOG", d.join("events.jsonl"))
            .env("LOWMEMD_ARGS", "--dry-run --metrics-listen off")
            .output()
            .unwrap()
    };
    let log = || std::fs::read_to_string(d.join("lowmemd.log")).unwrap_or_default();
    let out = run("start");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}\n{}",
        log()
    );
    let pid: i32 = std::fs::read_to_string(d.join("lowmemd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        PathBuf::from(BIN),
        "the pidfile names the daemon itself"
    );
    assert!(log().contains("monitoring system"), "{}", log());
    assert!(String::from_utf8_lossy(&run("status").stdout).contains("running"));

    let out = run("reload");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log().contains("policy reload (SIGHUP)") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log().contains("policy reload (SIGHUP)"), "{}", log());

    let out = run("stop");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon must be gone"
    );
    assert!(!d.join("lowmemd.pid").exists());
    assert!(log().contains("stopped"), "{}", log());
    assert_eq!(run("status").status.code(), Some(3));
}

#[test]
fn openrc_script_parses() {
    let out = Command::new("sh")
        .args(["-n", "deploy/openrc/lowmemd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string("deploy/openrc/lowmemd").unwrap();
    for needle in [
        "#!/sbin/openrc-run",
        "command=\"/usr/bin/lowmemd\"",
        "extra_started_commands=\"reload\"",
        "--signal HUP",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}

/// The block under `policy.toml: |` in the ConfigMap, unindented.
fn configmap_policy(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("policy.toml: |"))
        .skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent))
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kubernetes_manifests_are_hardened_and_carry_a_valid_policy() {
    let yaml = std::fs::read_to_string("deploy/kubernetes/lowmemd.yaml").unwrap();
    for needle in [
        "hostPID: true",
        "priorityClassName: system-node-critical",
        "- operator: Exists",
        "privileged: false",
    ] {
        assert!(yaml.contains(needle), "{needle}");
    }
    // The ConfigMap's policy is a valid policy.
    let policy = configmap_policy(&yaml);
    lowmemd::policy::validate::compile(Path::new("configmap policy.toml"), &policy)
        .unwrap_or_else(|e| panic!("{e:#?}"));
    // The PodMonitor selects the DaemonSet's pods and names its port.
    let pm = std::fs::read_to_string("deploy/kubernetes/podmonitor.yaml").unwrap();
    assert!(pm.contains("app.kubernetes.io/name: lowmemd") && pm.contains("port: metrics"));
    assert!(yaml.contains("- name: metrics"));
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI; .ci/run installs it and sets KUBERNETES_VALIDATE): cargo test -- --include-ignored"]
fn kubernetes_manifests_validate() {
    let validator =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    require_tool(
        &validator,
        "PyPI package kubernetes-validate, or KUBERNETES_VALIDATE=path",
    );
    let out = Command::new(&validator)
        .args(["--strict", "deploy/kubernetes/lowmemd.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
