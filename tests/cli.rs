//! The command line as a user meets it: help, exit codes, and clear errors.

use std::process::Command;

fn lowmemd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lowmemd"))
        .args(args)
        .output()
        .expect("run lowmemd")
}

#[test]
fn help_teaches_commands_and_exit_codes() {
    let out = lowmemd(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "run",
        "rank",
        "--cgroup",
        "--dry-run",
        "--event-log",
        "Exit codes",
        "4  missing privilege",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

/// A board build leaves features out (`--no-default-features --features board`):
/// `--version` says which this binary has, so a refused policy key can be explained.
#[test]
fn version_lists_the_features_built_in() {
    let out = lowmemd(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!(
            "lowmemd {} (features: lmkd http hooks journald cli-help)",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = lowmemd(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_cgroup_names_the_path_and_exits_2() {
    for cmd in ["run", "rank"] {
        let out = lowmemd(&[cmd, "--cgroup", "/lowmemd-no-such-group"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/lowmemd-no-such-group") && err.contains("does not exist"),
            "{err}"
        );
    }
    let out = lowmemd(&["run", "--cgroup", "box"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with '/'"));
}

#[test]
fn unwritable_event_log_is_a_clear_error() {
    let out = lowmemd(&[
        "run",
        "--dry-run",
        "--event-log",
        "/nonexistent-dir/x.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.jsonl"));
}

#[test]
fn rank_json_lists_this_machine_and_never_offers_init() {
    let out = lowmemd(&["rank", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranked: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let init = ranked.iter().find(|r| r["pid"] == 1).expect("pid 1 listed");
    assert_eq!(init["excluded"], "init");
    // Candidates come first: once an excluded row appears, no candidate follows.
    let first_excluded = ranked
        .iter()
        .position(|r| !r["excluded"].is_null())
        .unwrap();
    assert!(
        ranked[first_excluded..]
            .iter()
            .all(|r| !r["excluded"].is_null())
    );
}

/// This process's starttime (/proc/self/stat field 22), as a snapshot names an incarnation.
fn my_starttime() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = stat.rsplit_once(") ").unwrap().1;
    after_comm.split(' ').nth(19).unwrap().parse().unwrap()
}

/// A registrations snapshot as `lowmemd run --lmkd-socket` writes it (src/lmkd/snapshot.rs),
/// registering this test process, owned by client pid 4242.
fn snapshot(writer_pid: u32, writer_starttime: u64) -> String {
    serde_json::json!({
        "version": 1,
        "daemon": {"pid": writer_pid, "starttime": writer_starttime},
        "written_unix_ms": 1,
        "registered": [{
            "pid": std::process::id(),
            "starttime": my_starttime(),
            "uid": 0,
            "adj": 900,
            "service": false,
            "owner_pid": 4242,
        }],
    })
    .to_string()
}

#[test]
fn rank_shows_lmkd_registrations_says_when_it_cannot_and_refuses_a_bad_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lmkd");
    let snap = dir.path().join("lmkd.registered");
    let rank = |json: bool| {
        let mut args = vec!["rank", "--lmkd-socket", sock.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        lowmemd(&args)
    };
    let me = std::process::id().to_string();
    let my_row = |text: &str| -> String {
        (text.lines())
            .find(|l| l.split_whitespace().next() == Some(&me))
            .unwrap_or_else(|| panic!("no row for pid {me}:\n{text}"))
            .to_string()
    };

    // No daemon: said, and ranked anyway.
    let out = rank(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "lmkd registrations: not shown: {}: No such file or directory (os error 2) (is lowmemd running with --lmkd-socket {}?)",
        snap.display(),
        sock.display()
    );
    assert!(text.lines().any(|l| l == want), "{text}");
    assert!(text.contains("REGISTERED"), "{text}");
    assert!(my_row(&text).contains(" - "), "{text}");
    let out = rank(true);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lmkd registrations not shown"),
        "JSON stays JSON; the note goes to stderr"
    );
    let ranked: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(ranked.iter().all(|r| r["registered"].is_null()));

    // A live writer (this process stands in for the daemon): the owner's pid is shown.
    std::fs::write(&snap, snapshot(std::process::id(), my_starttime())).unwrap();
    let out = rank(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "lmkd registrations: 1 from {} (lowmemd pid {me})",
            snap.display()
        )),
        "{text}"
    );
    assert!(my_row(&text).contains(" by 4242 "), "{text}");
    let out = rank(true);
    let ranked: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mine = (ranked.iter())
        .find(|r| r["pid"] == std::process::id())
        .unwrap();
    assert_eq!(
        mine["registered"],
        serde_json::json!({"uid": 0, "owner_pid": 4242})
    );
    assert_eq!(
        ranked.iter().filter(|r| !r["registered"].is_null()).count(),
        1
    );

    // A writer that is gone: its registrations are not shown.
    std::fs::write(&snap, snapshot(std::process::id(), my_starttime() + 1)).unwrap();
    let text = String::from_utf8_lossy(&rank(false).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "lmkd registrations: not shown: {}: written by lowmemd pid {me}, which is no longer running",
            snap.display()
        )),
        "{text}"
    );
    assert!(my_row(&text).contains(" - "), "{text}");

    // Not a snapshot: an error naming the file.
    std::fs::write(&snap, "{\"version\": 1, \"daemon\": ").unwrap();
    let out = rank(false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: not a lowmemd registrations snapshot: EOF while parsing a value at line 1 column 25",
            snap.display()
        )),
        "{err}"
    );
}

#[test]
fn rank_table_survives_a_closed_pipe() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} rank | head -1", env!("CARGO_BIN_EXE_lowmemd")))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("scope system"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn doctor_explains_the_machine_and_fails_only_when_it_cannot_protect() {
    let out = lowmemd(&["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
    for key in [
        "kernel",
        "psi",
        "syscalls",
        "cgroups",
        "swap",
        "capabilities",
        "plan",
        "fallbacks",
    ] {
        assert!(!report[key].is_null(), "{key} missing: {report}");
    }
    let root = rustix::process::geteuid().is_root();
    assert_eq!(out.status.success(), report["can_protect"] == true);
    if root {
        assert_eq!(
            report["can_protect"], true,
            "root on a modern kernel can protect: {report}"
        );
    }
    let text = String::from_utf8(lowmemd(&["doctor"]).stdout).unwrap();
    assert!(text.contains("lowmemd will here:"), "{text}");
    let crippled = lowmemd(&["doctor", "--pretend-missing", "pidfd,psi"]);
    assert_eq!(crippled.status.code(), Some(1));
    let text = String::from_utf8_lossy(&crippled.stdout);
    assert!(
        text.contains("NOT kill") && text.contains("watermarks only"),
        "{text}"
    );
}

/// The write end of a pipe whose read end is already closed: every write is EPIPE, as for
/// `lowmemd check *.toml | head -1` once head has left, but without the race.
fn pipe_without_reader() -> std::os::fd::OwnedFd {
    let mut reader = Command::new("true")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run true");
    let w = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    w.into()
}

#[test]
fn check_survives_a_closed_pipe_and_keeps_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, p) in ["default", "desktop", "embedded", "android", "container"]
        .iter()
        .enumerate()
    {
        let f = dir.path().join(format!("{i}-{p}.toml"));
        std::fs::copy(
            format!("{}/policies/{p}.toml", env!("CARGO_MANIFEST_DIR")),
            &f,
        )
        .unwrap();
        files.push(f);
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[level]]\nname = 1\n").unwrap();
    let check = |files: &[&std::path::Path], both_closed: bool| {
        let w = pipe_without_reader();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lowmemd"));
        cmd.args(["check", "--explain"]).args(files);
        cmd.stdout(w.try_clone().unwrap());
        if both_closed {
            cmd.stderr(w);
        }
        let out = cmd.output().expect("run lowmemd check");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), err)
    };
    let good: Vec<_> = files.iter().map(|f| f.as_path()).collect();
    // stdout closed, stderr read: no panic, all valid.
    let (code, err) = check(&good, false);
    assert_eq!(code, Some(0), "{err}");
    // Both closed: nothing can even be said, and the exit code still tells.
    assert_eq!(check(&good, true).0, Some(0));
    let mut mixed = good.clone();
    mixed.push(&bad);
    mixed.extend(&good);
    assert_eq!(check(&mixed, true).0, Some(2));
    let (code, err) = check(&mixed, false);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:2:8"), "{err}");
}
