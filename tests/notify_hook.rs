//! The shipped desktop-notification hook (`deploy/hooks/notify-desktop`) without a desktop:
//! a fake `runuser` on PATH records the command line it would have run in the user's
//! session, and a socket stands in for the user's session bus.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/hooks/notify-desktop");

/// The name of uid 65534 (nobody) here, which stands in for the desktop user.
fn user_65534() -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&"65534")).then(|| f[0].to_string())
        })
        .expect("a user with uid 65534 in /etc/passwd")
}

/// Runs the hook with `env` under POSIX sh; returns (exit code, the recorded command
/// lines, one argument per line, calls separated by "--end--").
fn run(dir: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let bin = dir.join("bin");
    let log = dir.join("calls");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("runuser");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> {0}\necho --end-- >> {0}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("/bin/sh")
        .arg(SCRIPT)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        )
        .env("LOWMEMD_NOTIFY_RUN_DIR", dir.join("run"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn the_victims_user_is_told_in_their_session() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(run_dir.join("65534")).unwrap();
    let _bus = UnixListener::bind(run_dir.join("65534/bus")).unwrap();
    let kill = [
        ("LOWMEMD_EVENT", "kill"),
        ("LOWMEMD_PID", "4242"),
        ("LOWMEMD_COMM", "tab <b>&co"),
        ("LOWMEMD_RSS_KIB", "2097152"),
        ("LOWMEMD_UID", "65534"),
    ];
    let (code, calls) = run(dir.path(), &kill);
    assert_eq!(code, 0);
    let user = user_65534();
    let bus = run_dir.join("65534");
    let want = format!(
        "-u\n{user}\n--\nenv\nDBUS_SESSION_BUS_ADDRESS=unix:path={bus}/bus\nXDG_RUNTIME_DIR={bus}\n\
         notify-send\n--app-name=lowmemd\n--urgency=critical\n--icon=dialog-warning\n--\n\
         Memory was running out\n\
         tab &lt;b&gt;&amp;co (pid 4242, 2048 MiB) was closed to keep the system responsive.\n--end--\n",
        bus = bus.display()
    );
    assert_eq!(calls, want);

    // A root-owned victim: every desktop user (uid >= 1000 with a session bus) is told.
    let (code, calls) = run(
        dir.path(),
        &[
            ("LOWMEMD_EVENT", "kill"),
            ("LOWMEMD_UID", "0"),
            ("LOWMEMD_COMM", "x"),
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(calls.matches("--end--").count(), 1, "{calls}");
    assert!(calls.starts_with(&format!("-u\n{user}\n")), "{calls}");

    // A level starting to hold.
    let (_, calls) = run(
        dir.path(),
        &[("LOWMEMD_EVENT", "level"), ("LOWMEMD_LEVEL", "low")],
    );
    assert!(
        calls.contains("Memory is running low\nlowmemd: level low."),
        "{calls}"
    );
}

#[test]
fn without_a_session_or_for_other_events_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let (code, calls) = run(
        dir.path(),
        &[("LOWMEMD_EVENT", "kill"), ("LOWMEMD_UID", "65534")],
    );
    assert_eq!((code, calls.as_str()), (0, ""));
    let (code, calls) = run(dir.path(), &[("LOWMEMD_EVENT", "pageout")]);
    assert_eq!((code, calls.as_str()), (0, ""));
}

#[test]
fn a_failing_notification_fails_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run/65534");
    std::fs::create_dir_all(&run_dir).unwrap();
    let _bus = UnixListener::bind(run_dir.join("bus")).unwrap();
    run(dir.path(), &[]);
    std::fs::write(dir.path().join("bin/runuser"), "#!/bin/sh\nexit 3\n").unwrap();
    let out = Command::new("/bin/sh")
        .arg(SCRIPT)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", dir.path().join("bin").display()),
        )
        .env("LOWMEMD_NOTIFY_RUN_DIR", dir.path().join("run"))
        .env("LOWMEMD_EVENT", "kill")
        .env("LOWMEMD_UID", "65534")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "lowmemd logs a failing hook");
}
