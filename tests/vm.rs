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
//! One test boots a real Debian machine with systemd instead (tests/vm/systemd.rs) and
//! installs the .deb into it. The board tests of tests/vm/arm.rs boot Debian's arm64 and
//! armhf kernels in qemu-system-aarch64 / qemu-system-arm with the board builds.
//!
//! `cargo test --test vm -- --include-ignored system_runaway` runs one. Needs
//! qemu-system-x86_64 and apt-get (for `apt-get download` of the kernel and busybox-static
//! into target/vm-assets, once, by tests/vm/fetch-assets.sh), and rustup's x86_64-unknown-linux-musl
//! target. `LOWMEMD_VM_ACCEL=kvm|tcg` forces the accelerator (default: TCG unless KVM is
//! proven to boot the kernel here).

#[path = "vm/arm.rs"]
mod arm;
#[path = "vm/harness.rs"]
mod harness;
// The soak's parsing and verdicts (tested on literals below), its ten minutes in CI
// (a_ten_minute_soak_…), and its hour as benches/vm_soak.rs.
#[allow(dead_code)]
#[path = "vm/soak.rs"]
mod soak;
#[path = "vm/systemd.rs"]
mod systemd;

use std::path::Path;
use std::time::Duration;

use harness::{Newc, Output, Vm, module_depends, report};

// ---------------------------------------------------------------------------------------
// Scenarios

/// (a) System scope, 768 MiB with zram swap: a runaway leak is killed by lowmemd, the
/// kernel's OOM killer never fires, the probe never stalls, the innocents live (issue 24:
/// with swap counted as headroom, a runaway must still die early).
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn system_runaway_with_zram() {
    let out = harness::system_runaway().run();
    report(
        "system runaway",
        &out,
        &[
            "mem_total_kib",
            "swap_kib",
            "leak_to_gone_ms",
            "oom_kill_delta",
            "swapped_out_kib",
            "max_swap_used_kib",
            "min_available_pct",
            "probe_max_ms",
            "probe_p99_ms",
            "probe_stalled_ms",
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
    assert!(
        out.float("probe_max_ms") < PROBE_MAX_MS,
        "the probe stalled {} ms (bound {PROBE_MAX_MS})",
        out.get("probe_max_ms")
    );
    assert_eq!(out.get("lowmemd_exit"), "0");
}

/// kill = "cgroup" on a pure cgroup-v2 hierarchy: the leaking app dies whole, its sibling
/// lives.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn kill_cgroup_takes_the_whole_app_on_cgroup_v2() {
    let out = Vm {
        name: "kill-cgroup-v2",
        mem_mib: 768,
        script: include_str!("vm/kill_cgroup_v2.sh"),
        timeout: Duration::from_secs(240),
        ..Vm::default()
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

/// (c) The memcg scope on a pure cgroup-v2 hierarchy: calm use kills nothing; a runaway is
/// killed by lowmemd before the kernel's memcg OOM killer; cached apps make room for a
/// growing foreground app, highest adj first; a dry run under that pressure signals nobody.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn memcg_v2_calm_runaway_cached_apps_and_dry_run() {
    let out = Vm {
        name: "memcg-v2",
        mem_mib: 768,
        script: include_str!("vm/memcg_v2.sh"),
        timeout: Duration::from_secs(240),
        ..Vm::default()
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

    // Cached apps make room, highest adj first; the foreground and the small one live.
    let cached = out.events_in("events-cached");
    let kills: Vec<&serde_json::Value> = cached.iter().filter(|e| e["action"] == "kill").collect();
    let killed: Vec<&str> = kills
        .iter()
        .map(|e| e["comm"].as_str().unwrap_or("?"))
        .collect();
    eprintln!("memcg v2, cached apps: killed {killed:?}");
    let order = ["bg1000", "bg950", "bg900"];
    assert!(
        !killed.is_empty() && killed.len() <= 3 && killed[..] == order[..killed.len()],
        "background apps die highest adj first, nothing else: {cached:#?}"
    );
    for k in &kills {
        assert_eq!(k["exit_confirmed"], true, "{k}");
    }
    assert_eq!(out.get("cached_fg_alive"), "1", "the foreground survives");
    assert_eq!(out.get("cached_small_alive"), "1", "the small one survives");
    assert_eq!(out.num("cached_memcg_oom_kill_delta"), 0, "memcg OOM kills");

    // A dry run under the same pressure: would_kill, adj 1000 first; no signal.
    let dry = out.events_in("events-dry");
    assert!(
        dry.iter().all(|e| e["action"] != "kill"),
        "a dry run killed: {dry:#?}"
    );
    let would: Vec<&serde_json::Value> =
        dry.iter().filter(|e| e["action"] == "would_kill").collect();
    assert!(!would.is_empty(), "the low level must have fired: {dry:#?}");
    assert_eq!(
        would[0]["pid"],
        out.num("pid_bg1000"),
        "adj 1000 first: {dry:#?}"
    );
    for w in &would {
        assert_eq!(w["exit_confirmed"], false, "{w}");
    }
    for p in ["small", "bg900", "bg950", "bg1000", "fg"] {
        assert_eq!(
            out.get(&format!("dry_{p}_alive")),
            "1",
            "{p} signalled in a dry run"
        );
    }
    assert_eq!(out.num("dry_memcg_oom_kill_delta"), 0, "memcg OOM kills");
}

/// The freeze tier (issue 23) in the pure cgroup-v2 VM, as tests/freeze_pressure.rs on the
/// host: a cached app in an app cgroup below a 256 MiB scope with zram swap is frozen and
/// paged out under pressure, nothing is killed, it is thawed and runs once memory returns;
/// a SIGKILLed lowmemd leaves it frozen to the next start, which thaws it.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn freeze_v2_freezes_pages_out_and_thaws_a_cached_app() {
    let out = Vm {
        name: "freeze-v2",
        mem_mib: 768,
        modules: &["zram", "lzo-rle"],
        script: include_str!("vm/freeze_v2.sh"),
        timeout: Duration::from_secs(240),
        ..Vm::default()
    }
    .run();
    report(
        "freeze v2",
        &out,
        &[
            "controllers",
            "freeze_ms",
            "frozen_swap_kib",
            "thaw_ms",
            "restart_thaw_ms",
            "memcg_oom_kill_delta",
        ],
    );
    assert!(out.num("swap_kib") > 0, "zram swap is on");
    for missing in ["freeze_missing", "not_frozen", "thaw_missing"] {
        assert!(!out.results.contains_key(missing), "{missing}");
    }
    // Frozen: cgroup.events says so, it does not run, its memory went to zram.
    assert_eq!(out.get("frozen"), "1", "cgroup.events frozen 1");
    assert_eq!(
        out.num("frozen_ticks_moved"),
        0,
        "a frozen app must not run"
    );
    let swapped = out.num("frozen_swap_kib");
    assert!(
        swapped > 40 * 1024,
        "paged out into zram: VmSwap {swapped} KiB"
    );
    let first = out.events_in("events-first");
    let freezes: Vec<_> = first.iter().filter(|e| e["action"] == "freeze").collect();
    assert_eq!(freezes.len(), 1, "{first:#?}");
    assert_eq!(freezes[0]["pid"].as_i64(), Some(out.num("pid_cached")));
    assert!(
        (freezes[0]["frozen_cgroup"].as_str().unwrap_or("")).ends_with("/box/app"),
        "{}",
        freezes[0]
    );
    // Memory returns: thawed for pressure_gone, and it runs again.
    // The 160 MiB foreground job keeps available below 40 % with the app paged out: the
    // freeze holds while it runs, and the thaw comes thaw_after_ms (10 s) after it ends
    // (with 90 MiB, paging the app out ended the pressure itself: thawed 4-5 s after).
    let thaw_ms = out.num("thaw_ms");
    assert!(
        thaw_ms >= 8000,
        "thawed {thaw_ms} ms after the foreground ended"
    );
    assert_eq!(out.get("thaw_reason"), "pressure_gone");
    assert_eq!(out.num("thaws"), 1);
    assert_eq!(out.get("thawed_frozen"), "0");
    assert!(out.num("thawed_ticks_moved") > 0, "a thawed app runs again");
    assert_eq!(out.num("kills"), 0, "nothing killed");
    assert_eq!(out.get("cached_alive"), "1");
    assert_eq!(out.get("lowmemd_exit"), "0");
    // SIGKILL while frozen: the next start thaws it, and says so.
    assert!(!out.results.contains_key("crash_freeze_missing"));
    assert_eq!(out.get("crash_frozen"), "1", "still frozen after the crash");
    assert!(
        !out.results.contains_key("restart_not_thawed"),
        "the next start thaws what the crashed run froze"
    );
    assert_eq!(out.get("restart_frozen"), "0");
    assert!(out.num("restart_says") > 0, "and says so");
    assert_eq!(out.get("end_cached_alive"), "1");
    assert_eq!(out.num("memcg_oom_kill_delta"), 0, "memcg OOM kills");
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
}

/// The memory.high tripwire (issue 25) on a pure cgroup-v2 hierarchy: a memcg scope idles
/// at ≤ 10 wake-ups per 30 s at 60 % and at 5 % usage (the adaptive poll alone made
/// ~2,600 and ~630), still wins a 1000 MiB/s runaway, puts the original memory.high back
/// after a SIGKILL and a restart and on SIGTERM, and leaves a user's memory.high alone.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn memcg_v2_tripwire_idles_wins_the_race_and_leaves_nothing_behind() {
    let out = Vm {
        name: "memcg-v2-tripwire",
        mem_mib: 768,
        script: include_str!("vm/memcg_v2_tripwire.sh"),
        timeout: Duration::from_secs(300),
        ..Vm::default()
    }
    .run();
    report(
        "memcg v2 tripwire",
        &out,
        &[
            "high_armed",
            "at60_wakeups",
            "at60_ticks",
            "at5_wakeups",
            "at5_ticks",
            "poll60_wakeups",
            "poll60_ticks",
            "leak_to_gone_ms",
            "memcg_oom_kill_delta",
            "memcg_high_events",
        ],
    );
    // 256 MiB, the built-in policy's highest watermark 25 %: 192 MiB.
    assert_eq!(out.get("high_armed"), "201326592", "tripwire at 192 MiB");
    assert_eq!(out.get("startup_says"), "1", "the start-up log says so");
    for at in ["at60", "at5"] {
        let n = out.num(&format!("{at}_wakeups"));
        assert!(n <= 10, "{at}: {n} wake-ups in 30 s");
    }
    assert!(
        !out.results.contains_key("leak_survived"),
        "the leak still ran"
    );
    assert_eq!(out.num("memcg_oom_kill_delta"), 0, "memcg OOM kills");
    assert_eq!(out.num("oom_kill_delta"), 0, "kernel OOM kills");
    let leak = out.num("pid_leak");
    let killed: Vec<i64> = (out.events_in("events-first").iter())
        .filter(|e| e["action"] == "kill")
        .map(|e| e["pid"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(killed, vec![leak], "only the leak killed");
    assert_eq!(out.get("small_alive"), "1");
    assert_eq!(
        out.get("high_after_kill"),
        "201326592",
        "set again after the kill"
    );
    assert_eq!(
        out.get("high_after_sigkill"),
        "201326592",
        "left by SIGKILL"
    );
    assert_eq!(out.get("high_after_restart"), "max", "put back at start-up");
    assert_eq!(out.get("restart_says"), "1");
    assert_eq!(out.get("high_rearmed"), "201326592");
    assert_eq!(out.get("high_after_term"), "max", "lifted on SIGTERM");
    assert_eq!(out.get("high_user"), "209715200", "the user's value stays");
    assert_eq!(out.get("high_user_after"), "209715200");
    assert_eq!(out.get("user_high_reported"), "1", "said at start-up");
    assert_eq!(out.get("doctor_says"), "1", "said by doctor");
    assert_eq!(out.get("lowmemd_exit"), "0");
}

/// (b) A 256 MiB board without swap: background apps make room for a growing foreground
/// app, highest adj first; the foreground survives; no kernel OOM kill.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn board_background_makes_room() {
    check_board("board", &harness::board().run());
}

/// The board scenario's verdict, on any architecture: background apps die highest adj first
/// and nothing else; the foreground lives; no kernel OOM kill.
fn check_board(label: &str, out: &Output) {
    report(
        label,
        out,
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
        ..Vm::default()
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

/// (f) The .deb installed into a real Debian machine with systemd as a user installs it
/// (`dpkg -i`, `systemctl enable --now lowmemd`), then every claim of the shipped unit, in
/// order, in one boot (tests/vm/systemd/scenario.sh): active (Type=notify); the
/// `systemd-analyze security` exposure at most 2.0; `lowmemd status` and `rank` for root; the
/// watchdog restarts a stopped daemon; that daemon kills a runaway with no kernel OOM kill,
/// and the kill is in the journal under LOWMEMD_ACTION=kill; `systemctl reload` puts an
/// edited policy in force; `kill = "cgroup"` under the unit takes a three-process
/// app-hog.scope whole; the metrics drop-in serves /metrics; lowmemd.socket starts the
/// daemon for an lmkd client, which gets its answer. Every check is reported before the
/// verdict.
#[test]
#[ignore = "needs root, mmdebstrap, e2fsprogs, qemu-system-x86_64 and a .deb named by LOWMEMD_DEB (.ci/run provides them): cargo test -- --include-ignored"]
fn systemd_machine_runs_the_deb_as_installed() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // The .deb and the image first: without them the test fails here, not in the guest.
    let deb = systemd::deb();
    let out = systemd::SystemdVm {
        name: "systemd",
        mem_mib: 512,
        files: vec![
            ("scenario.sh", read("tests/vm/systemd/scenario.sh")),
            ("lib.sh", read("tests/vm/systemd/lib.sh")),
            ("hog.py", read("tests/vm/systemd/hog.py")),
            ("lmkd_client.py", read("tests/vm/systemd/lmkd_client.py")),
            ("lowmemd.deb", std::fs::read(&deb).unwrap()),
        ],
        // ~2.5 min of it is the boot on a loaded 2-core host under TCG.
        timeout: Duration::from_secs(600),
    }
    .run();
    report("systemd machine", &out, &["kernel", "systemd", "exposure"]);
    let checks = systemd::checks(&out);
    for (name, passed, seen) in &checks {
        eprintln!("{} {name}: {seen}", if *passed { "PASS" } else { "FAIL" });
    }
    let said: Vec<&str> = checks.iter().map(|(n, _, _)| n.as_str()).collect();
    let want = [
        "install",
        "active",
        "security",
        "priority",
        "status",
        "rank",
        "watchdog",
        "runaway",
        "reload",
        "kill_cgroup",
        "metrics",
        "socket",
    ];
    assert_eq!(said, want, "checks reported; console:\n{}", out.console);
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, passed, _)| !passed)
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    let exposure: f64 = out.get("exposure").parse().unwrap_or(f64::MAX);
    assert!(exposure <= 2.0, "systemd-analyze security: {exposure}");
    assert!(
        out.kernel_oom.is_empty(),
        "kernel OOM kills:\n{}",
        out.kernel_oom
    );
}

/// (g) A user's session on the systemd machine (tests/vm/systemd/session.sh, one boot): the
/// .deb with desktop.toml and the notify-desktop hook set up as docs/desktop.md says for the
/// shipped unit (the hook runs as lowmemd's dynamic user and leaves the event for
/// lowmemd-notify.service); a user with lingering, their session bus and a notification
/// server on it; apps in app-*.scope units under user@1000.service, started as the user
/// with `systemd-run --user --scope`; ManagedOOMPreference=avoid (set by the user's
/// manager) and omit (set by PID 1) seen by `lowmemd rank`; a runaway in one app killed
/// with no kernel OOM kill while the avoided app, which holds more, and the session live;
/// the notification of that kill on the user's bus.
#[test]
#[ignore = "needs root, mmdebstrap, e2fsprogs, qemu-system-x86_64 and a .deb named by LOWMEMD_DEB (.ci/run provides them): cargo test -- --include-ignored"]
fn systemd_machine_user_session_is_notified_and_its_markings_honoured() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let deb = systemd::deb();
    let out = systemd::SystemdVm {
        name: "systemd-session",
        mem_mib: 640,
        files: vec![
            ("scenario.sh", read("tests/vm/systemd/session.sh")),
            ("lib.sh", read("tests/vm/systemd/lib.sh")),
            ("hog.py", read("tests/vm/systemd/hog.py")),
            (
                "notifications.py",
                read("tests/vm/systemd/notifications.py"),
            ),
            ("lowmemd.deb", std::fs::read(&deb).unwrap()),
        ],
        timeout: Duration::from_secs(600),
    }
    .run();
    report(
        "systemd session",
        &out,
        &["systemd", "exposure", "notify_exposure"],
    );
    let checks = systemd::checks(&out);
    for (name, passed, seen) in &checks {
        eprintln!("{} {name}: {seen}", if *passed { "PASS" } else { "FAIL" });
    }
    let said: Vec<&str> = checks.iter().map(|(n, _, _)| n.as_str()).collect();
    let want = ["setup", "session", "markings", "runaway", "notification"];
    assert_eq!(said, want, "checks reported; console:\n{}", out.console);
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, passed, _)| !passed)
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(
        out.kernel_oom.is_empty(),
        "kernel OOM kills:\n{}",
        out.kernel_oom
    );
}

/// What went wrong in a thrash burst, if anything: a kill of an adj < 900 process (by
/// lowmemd's event log or the guest's `died` list) or a kernel OOM kill.
fn thrash_burst_faults(label: &str, out: &Output) -> Vec<String> {
    report(
        label,
        out,
        &[
            "available_before_pct",
            "min_available_pct",
            "burst_file_mib",
            "burst_write_ms",
            "burst_ms",
            "psi_some_ms",
            "psi_full_ms",
            "oom_kill_delta",
            "died",
            "probe_max_ms",
            "probe_p99_ms",
            "probe_stalled_ms",
        ],
    );
    let mut faults = Vec::new();
    for k in out.kills() {
        eprintln!(
            "{label}: lowmemd killed {} (adj {}) at ts_ms {}: level {}, reason {}, condition {}",
            k["comm"], k["oom_score_adj"], k["ts_ms"], k["level"], k["reason"], k["condition"]
        );
        if k["oom_score_adj"].as_i64().is_none_or(|a| a < 900) {
            faults.push(format!(
                "{label}: lowmemd killed {} (adj {}; level {}, reason {}, condition {})",
                k["comm"], k["oom_score_adj"], k["level"], k["reason"], k["condition"]
            ));
        }
    }
    for died in out.get("died").split(',').filter(|d| *d != "-") {
        let adj: i64 = died
            .split('/')
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        if adj < 900 {
            faults.push(format!("{label}: {died} died (name/adj/killer)"));
        }
    }
    if out.num("oom_kill_delta") != 0 || out.num("dmesg_out_of_memory") != 0 {
        faults.push(format!(
            "{label}: {} kernel OOM kills",
            out.num("oom_kill_delta")
        ));
    }
    if out.get("lowmemd_exit") != "0" {
        faults.push(format!("{label}: lowmemd exit {}", out.get("lowmemd_exit")));
    }
    faults
}

/// (e) A burst of file-cache thrash with ~60 % of memory available: the built-in policy and
/// the shipped desktop, embedded and android policies may take cached apps (adj >= 900) but
/// nothing the user sees, and the kernel's OOM killer stays idle. Every run is reported
/// before the verdict. (container.toml protects the `/kubepods` cgroup, which a VM without
/// Kubernetes does not have.)
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn thrash_burst_kills_nothing_the_user_sees() {
    let mut faults = Vec::new();
    let shipped = ["desktop.toml", "embedded.toml", "android.toml"];
    for policy in std::iter::once(None).chain(shipped.into_iter().map(Some)) {
        let label = format!("thrash burst, {}", policy.unwrap_or("built-in policy"));
        let out = harness::thrash_burst().guard("lowmemd", policy).run();
        assert!(out.num("swap_kib") > 0, "zram swap is on");
        faults.extend(thrash_burst_faults(&label, &out));
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// The probe's worst tick in the zram scenarios, the board's included: issue 24's 500 ms.
/// Under TCG the probe's ticks wait on the kernel's swap-out into zram, emulated; on a
/// quiet host (as CI runs these, one VM at a time) lowmemd kept them at 9-52 ms in the
/// finite job, 16-46 ms in the runaway and 22-57 ms on the board (2026-12-07, docs/
/// zram-vm.md). With other VMs and builds sharing the two cores they reached 0.3-1.7 s,
/// with the kernel alone as with lowmemd: run these on a quiet host.
const PROBE_MAX_MS: f64 = 500.0;

/// What went wrong in a finite-job run, if anything: the job or anything else died, a
/// kernel OOM kill, the probe stalled.
fn finite_job_faults(label: &str, out: &Output) -> Vec<String> {
    report(
        label,
        out,
        &[
            "mem_total_kib",
            "swap_kib",
            "available_before_kib",
            "job_grow_ms",
            "job_alive",
            "job_to_gone_ms",
            "min_available_pct",
            "max_swap_used_kib",
            "zram_orig_kib",
            "zram_mem_used_kib",
            "zram_ratio_x100",
            "psi_some_ms",
            "psi_full_ms",
            "oom_kill_delta",
            "died",
            "probe_max_ms",
            "probe_p99_ms",
            "probe_stalled_ms",
        ],
    );
    let mut faults = Vec::new();
    if out.num("swap_kib") <= 0 {
        faults.push(format!("{label}: no zram swap"));
    }
    if out.get("job_alive") != "1" {
        faults.push(format!(
            "{label}: the job died {} ms after it started",
            out.get("job_to_gone_ms")
        ));
    }
    for k in out.kills() {
        faults.push(format!(
            "{label}: lowmemd killed {} (adj {}) at ts_ms {}: level {}, reason {}, condition {}",
            k["comm"], k["oom_score_adj"], k["ts_ms"], k["level"], k["reason"], k["condition"]
        ));
    }
    if out.get("died") != "-" {
        faults.push(format!(
            "{label}: died (name/adj/killer): {}",
            out.get("died")
        ));
    }
    if out.float("probe_max_ms") >= PROBE_MAX_MS {
        faults.push(format!(
            "{label}: the probe stalled {} ms (bound {PROBE_MAX_MS})",
            out.get("probe_max_ms")
        ));
    }
    faults.extend(kernel_and_lowmemd_faults(label, out));
    faults
}

fn finite_job_under(policy: Option<&str>) {
    let label = format!("finite job, {}", policy.unwrap_or("built-in policy"));
    let out = harness::finite_job().guard("lowmemd", policy).run();
    let faults = finite_job_faults(&label, &out);
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// (f) Issue 24, swap is headroom: in 768 MiB with 384 MiB of zram, an adj-0 job that grows
/// to 700 MiB of ~3:1-compressible memory and holds it fits in RAM + zram; the kernel and
/// earlyoom keep it, and so must lowmemd: nothing killed, no kernel OOM kill, the probe never
/// stalls. One test per shipped policy (container.toml aside, as for the thrash burst).
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn finite_job_with_zram_lives_under_the_built_in_policy() {
    finite_job_under(None);
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn finite_job_with_zram_lives_under_desktop_toml() {
    finite_job_under(Some("desktop.toml"));
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn finite_job_with_zram_lives_under_embedded_toml() {
    finite_job_under(Some("embedded.toml"));
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn finite_job_with_zram_lives_under_android_toml() {
    finite_job_under(Some("android.toml"));
}

/// (f) on a board: 256 MiB with 128 MiB of zram, embedded.toml, a 220 MiB job.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn finite_job_with_zram_lives_on_a_board_under_embedded_toml() {
    let out = harness::finite_job_board()
        .guard("lowmemd", Some("embedded.toml"))
        .run();
    let faults = finite_job_faults("finite job on a board, embedded.toml", &out);
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// What went wrong in a thrash-on-zram run, if anything: no relief (no kill of an adj >= 900
/// app), a kill or death below adj 900, a kernel OOM kill.
fn thrash_zram_faults(label: &str, out: &Output) -> Vec<String> {
    report(
        label,
        out,
        &[
            "apps_up_ms",
            "cached1_gone_ms",
            "cached2_gone_ms",
            "min_available_pct",
            "max_swap_used_kib",
            "swapped_in_kib",
            "refault_anon",
            "psi_some_ms",
            "psi_full_ms",
            "oom_kill_delta",
            "died",
            "probe_max_ms",
            "probe_p99_ms",
            "probe_stalled_ms",
        ],
    );
    let mut faults = Vec::new();
    if out.num("swap_kib") <= 0 {
        faults.push(format!("{label}: no zram swap"));
    }
    let mut relief = 0;
    for k in out.kills() {
        eprintln!(
            "{label}: lowmemd killed {} (adj {}) at ts_ms {}: level {}, reason {}, condition {}",
            k["comm"], k["oom_score_adj"], k["ts_ms"], k["level"], k["reason"], k["condition"]
        );
        match k["oom_score_adj"].as_i64() {
            Some(adj) if adj >= 900 => relief += 1,
            _ => faults.push(format!(
                "{label}: lowmemd killed {} (adj {}; level {}, reason {}, condition {})",
                k["comm"], k["oom_score_adj"], k["level"], k["reason"], k["condition"]
            )),
        }
    }
    if relief == 0 {
        faults.push(format!(
            "{label}: no relief: no cached app killed in {} ms of thrash (PSI some {} ms, full {} ms; {} KiB swapped in; probe max {} ms, stalled {} ms)",
            out.get("apps_up_ms"),
            out.get("psi_some_ms"),
            out.get("psi_full_ms"),
            out.get("swapped_in_kib"),
            out.get("probe_max_ms"),
            out.get("probe_stalled_ms"),
        ));
    }
    for died in out.get("died").split(',').filter(|d| *d != "-") {
        let adj: i64 = died
            .split('/')
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        if adj < 900 {
            faults.push(format!("{label}: {died} died (name/adj/killer)"));
        }
    }
    for app in ["app1", "app2"] {
        if out.get(&format!("{app}_alive")) != "1" {
            faults.push(format!("{label}: the user's {app} died"));
        }
    }
    faults.extend(kernel_and_lowmemd_faults(label, out));
    faults
}

/// What no zram scenario may show: a kernel OOM kill (counted, or said in dmesg), or a
/// lowmemd that did not stop cleanly.
fn kernel_and_lowmemd_faults(label: &str, out: &Output) -> Vec<String> {
    let mut faults = Vec::new();
    if out.num("oom_kill_delta") != 0 || out.num("dmesg_out_of_memory") != 0 {
        faults.push(format!(
            "{label}: {} kernel OOM kills",
            out.num("oom_kill_delta")
        ));
    }
    if out.get("lowmemd_exit") != "0" {
        faults.push(format!("{label}: lowmemd exit {}", out.get("lowmemd_exit")));
    }
    faults
}

fn thrash_zram_under(policy: Option<&str>) {
    let label = format!("thrash on zram, {}", policy.unwrap_or("built-in policy"));
    let out = harness::thrash_zram().guard("lowmemd", policy).run();
    let faults = thrash_zram_faults(&label, &out);
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// (g) Issue 24, swapping counts as thrashing: four apps of 200 MiB re-read all their memory
/// every second in 768 MiB with zram (the kernel alone kept all four, PSI full for 37 s of
/// 60). Relief must come: a kill of a cached app (adj 900); the user's two apps (adj 0),
/// which fit in RAM once the cached ones are gone, must live.
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn thrash_on_zram_takes_cached_apps_only_under_the_built_in_policy() {
    thrash_zram_under(None);
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn thrash_on_zram_takes_cached_apps_only_under_desktop_toml() {
    thrash_zram_under(Some("desktop.toml"));
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn thrash_on_zram_takes_cached_apps_only_under_embedded_toml() {
    thrash_zram_under(Some("embedded.toml"));
}

#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn thrash_on_zram_takes_cached_apps_only_under_android_toml() {
    thrash_zram_under(Some("android.toml"));
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

/// Issue 21 item 5: ten minutes of 30 s cycles (cached apps, a runaway, a thrash burst)
/// under embedded.toml — every runaway killed by lowmemd, no kernel OOM kill, nothing below
/// adj 900 but the runaways killed, lowmemd's RSS, fds and threads flat, a clean stop
/// (`soak::verdicts`). ~12 minutes: the longest VM test by far (VMs run one at a time).
#[test]
#[ignore = "needs qemu-system-x86_64, a Debian cloud kernel and busybox-static (.ci/run installs them): cargo test -- --include-ignored"]
fn a_ten_minute_soak_kills_every_runaway_and_stays_flat() {
    let out = soak::vm(soak::duration_s(600)).run();
    let cycles = soak::cycles(&out);
    let verdicts = soak::verdicts(&out, &cycles);
    println!("{}", verdicts.join("\n"));
    println!("{}", soak::table(&cycles, 120, 100));
    let failed: Vec<&String> = verdicts.iter().filter(|v| v.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "{failed:#?}\nlowmemd log (the end):\n{}",
        tail(&out.lowmemd_log, 80)
    );
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn soak_flat_takes_warm_up_as_the_baseline_and_catches_a_slow_leak() {
    let run = |rss: &[u64]| -> Vec<soak::Cycle> {
        (0..rss.len())
            .map(|i| soak::Cycle {
                cycle: i as u64,
                rss_kib: rss[i],
                ..soak::Cycle::default()
            })
            .collect()
    };
    let rss = |c: &soak::Cycle| c.rss_kib;
    // Cycle 0 (before any load) is not counted; warm-up in the first third is the baseline.
    let warm_up = run(&[1200, 1500, 1560, 1640, 1660, 1664, 1664, 1668, 1680, 1680]);
    assert_eq!(soak::flat(&warm_up, "rss", rss, 256), Ok(()));
    // 40 KiB more every cycle: within 256 KiB of the first third's max at first, not later.
    let leak: Vec<u64> = (0..13).map(|i| 1500 + 40 * i).collect();
    assert!(soak::flat(&run(&leak), "rss", rss, 256).is_err());
    assert!(
        soak::flat(&run(&[1, 2, 3]), "rss", rss, 0).is_err(),
        "too few cycles"
    );
}

#[test]
fn soak_percentiles_are_nearest_rank() {
    let v = [5, 1, 4, 2, 3, 10, 6, 7, 9, 8];
    assert_eq!(soak::percentile(&v, 50), Some(5));
    assert_eq!(soak::percentile(&v, 95), Some(10));
    assert_eq!(soak::percentile(&v, 100), Some(10));
    assert_eq!(soak::percentile(&[7], 50), Some(7));
    assert_eq!(soak::percentile(&[], 50), None);
}
