//! What an idle lowmemd costs (issue 11: a daemon that runs for years on a battery): per
//! policy, wake-ups (context switches of all its threads), CPU time and RSS over a window
//! in which nothing happens, with `earlyoom --dryrun` measured beside it in the same run
//! and the same window as the baseline.
//!
//! Rows: the built-in policy, policies/desktop.toml, policies/embedded.toml and a policy of
//! PSI conditions only (written to a temp file and checked with `lowmemd check`), each
//! `lowmemd run --dry-run --metrics-listen off` on the system scope; the built-in policy with
//! the metrics server on; and the built-in policy
//! on a 256 MiB memcg held at ~60 % by a `lowmemd-workload` (root and a cgroup-v1 memory
//! controller; the row says why when it cannot run). All daemons run at once — they are
//! idle — settle 2 s, then are measured over IDLE_SECONDS (default 30).
//!
//! `cargo bench --bench idle` (builds target/release/lowmemd, the bench profile);
//! `IDLE_SECONDS=5 cargo bench --bench idle` for a quick try. earlyoom comes from Debian
//! (`apt-get install -y earlyoom`); without it the bench says so and measures lowmemd alone.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/idle.rs"]
mod idle;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestCgroup;
use idle::{Daemon, Reading, Usage, lowmemd_command};

const SETTLE: Duration = Duration::from_secs(2);
const MEMCG_LIMIT_MIB: u64 = 256;
/// 150 of 256 MiB: ~60 % used, 40 % available, above every watermark of the built-in
/// policy (25 % is the highest), so the daemon is idle there, not near a level.
const MEMCG_WORKLOAD_MIB: u64 = 150;

/// The memcg row's set-up: the cgroup, and the workload holding memory in it. Field order
/// is drop order: the workload stops before the cgroup is removed.
struct MemcgRow {
    _workload: Daemon,
    cg: TestCgroup,
}

fn memcg_row(dir: &Path) -> Result<MemcgRow, String> {
    if let Some(why) = common::real_kernel_missing() {
        return Err(why.into());
    }
    let cg = TestCgroup::create("idle-bench", MEMCG_LIMIT_MIB);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lowmemd-workload"));
    for f in cg.procs_files() {
        cmd.arg("--cgroup-procs").arg(f);
    }
    cmd.args([
        "--name",
        "idle-hold",
        "--mib",
        &MEMCG_WORKLOAD_MIB.to_string(),
    ]);
    let workload = Daemon::spawn("lowmemd-workload", cmd, dir.join("workload.err"))
        .map_err(|e| format!("spawn lowmemd-workload: {e}"))?;
    // It prints `ready` on stdout, which the guard closes: wait for the memcg to fill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.usage_mib() < MEMCG_WORKLOAD_MIB * 95 / 100 {
        if Instant::now() > deadline {
            return Err(format!(
                "the workload did not reach {MEMCG_WORKLOAD_MIB} MiB: {}",
                workload.stderr()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(MemcgRow {
        _workload: workload,
        cg,
    })
}

/// One row: a lowmemd and, on the system scope, an earlyoom beside it.
struct Row {
    label: String,
    lowmemd: Daemon,
    earlyoom: Option<Daemon>,
}

fn idle_seconds() -> u64 {
    match std::env::var("IDLE_SECONDS") {
        Err(_) => 30,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("IDLE_SECONDS={v:?}: use a whole number of seconds > 0"),
        },
    }
}

fn cells(u: Option<&Usage>) -> [String; 3] {
    match u {
        Some(u) => [
            u.wakeups.to_string(),
            u.cpu_ms.to_string(),
            format!("{} ({} + {})", u.rss_kib, u.rss_anon_kib, u.rss_file_kib),
        ],
        None => ["—".into(), "—".into(), "—".into()],
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / test harness probing: nothing to list.
        return;
    }
    if !run() {
        // Interrupted: the daemons are stopped and the memcg removed by now.
        std::process::exit(130);
    }
}

/// The whole bench; false when a signal cut the window short. Every guard is a local here,
/// so they are all dropped (daemons stopped, memcg removed) before `main` exits.
fn run() -> bool {
    let secs = idle_seconds();
    // Ctrl-C or SIGTERM ends the window early; the guards then stop the daemons and remove
    // the memcg as on a normal exit.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone()).expect("signal handler");
    }
    let lowmemd = Path::new(env!("CARGO_BIN_EXE_lowmemd"));
    let dir = tempfile::tempdir().expect("temp dir");
    let psi_only = idle::write_psi_only_policy(lowmemd, &dir.path().join("policy"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies: [(&str, Option<PathBuf>); 4] = [
        ("default (built-in)", None),
        (
            "policies/desktop.toml",
            Some(repo.join("policies/desktop.toml")),
        ),
        (
            "policies/embedded.toml",
            Some(repo.join("policies/embedded.toml")),
        ),
        ("PSI-only (temp file)", Some(psi_only)),
    ];

    // Declared before the rows, so dropped after them: every daemon stops before the
    // workload and the memcg go.
    let memcg = memcg_row(dir.path());
    let mut earlyoom_missing = None;
    let mut rows = Vec::new();
    for (i, (label, policy)) in policies.iter().enumerate() {
        let cmd = lowmemd_command(lowmemd, policy.as_deref(), &[]);
        let lowmemd = Daemon::spawn("lowmemd", cmd, dir.path().join(format!("lowmemd{i}.err")))
            .expect("spawn lowmemd");
        let mut eo = Command::new("earlyoom");
        eo.arg("--dryrun");
        let earlyoom = match Daemon::spawn("earlyoom", eo, dir.path().join(format!("eo{i}.err"))) {
            Ok(d) => Some(d),
            Err(e) => {
                earlyoom_missing = Some(format!(
                    "earlyoom could not be started ({e}): `apt-get install -y earlyoom`; measured lowmemd alone"
                ));
                None
            }
        };
        rows.push(Row {
            label: label.to_string(),
            lowmemd,
            earlyoom,
        });
    }
    // The built-in policy with the metrics server on (an ephemeral port): what its thread,
    // its code and the registry's buffers add. No earlyoom beside it (earlyoom has none).
    let mut metrics_on = Command::new(lowmemd);
    metrics_on.args(["run", "--dry-run", "--metrics-listen", "127.0.0.1:0"]);
    rows.push(Row {
        label: "default (built-in), metrics on".into(),
        lowmemd: Daemon::spawn(
            "lowmemd",
            metrics_on,
            dir.path().join("lowmemd-metrics.err"),
        )
        .expect("spawn lowmemd"),
        earlyoom: None,
    });
    if let Some(why) = &earlyoom_missing {
        eprintln!("idle bench: {why}");
    }
    let mut memcg_note = None;
    match &memcg {
        Ok(m) => {
            let cmd = lowmemd_command(lowmemd, None, &["--cgroup", &m.cg.name]);
            rows.push(Row {
                // Filled in at the end, with the share of the limit then in use.
                label: String::new(),
                lowmemd: Daemon::spawn("lowmemd", cmd, dir.path().join("lowmemd-memcg.err"))
                    .expect("spawn lowmemd"),
                earlyoom: None,
            });
        }
        Err(why) => {
            memcg_note = Some(format!("memcg row not run: {why}"));
            eprintln!("idle bench: {}", memcg_note.as_deref().unwrap_or_default());
        }
    }

    std::thread::sleep(SETTLE);
    for row in &mut rows {
        row.lowmemd.assert_started(idle::STARTED);
        if let Some(eo) = &mut row.earlyoom {
            eo.assert_started("");
        }
    }
    let read = |d: &Daemon| -> Reading {
        idle::read(d.pid()).unwrap_or_else(|e| panic!("reading {} {}: {e}", d.name, d.pid()))
    };
    let before: Vec<(Reading, Option<Reading>)> = rows
        .iter()
        .map(|r| (read(&r.lowmemd), r.earlyoom.as_ref().map(read)))
        .collect();
    let start = Instant::now();
    let window = Duration::from_secs(secs);
    while start.elapsed() < window && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(window.saturating_sub(start.elapsed())));
    }
    if interrupted.load(Ordering::Relaxed) {
        eprintln!("idle bench: interrupted; stopping the daemons and cleaning up");
        return false;
    }
    let usage: Vec<(Usage, Option<Usage>)> = rows
        .iter()
        .zip(&before)
        .map(|(r, (bl, be))| {
            let l = Usage::between(r.lowmemd.pid(), bl, &read(&r.lowmemd));
            let e = r
                .earlyoom
                .as_ref()
                .zip(be.as_ref())
                .map(|(d, b)| Usage::between(d.pid(), b, &read(d)));
            (l, e)
        })
        .collect();
    if let (Ok(m), Some(row)) = (&memcg, rows.last_mut()) {
        row.label = format!(
            "default, memcg {MEMCG_LIMIT_MIB} MiB at {:.0} % used",
            m.cg.usage_mib() as f64 * 100.0 / MEMCG_LIMIT_MIB as f64
        );
    }
    for row in &mut rows {
        row.lowmemd.assert_started(idle::STARTED);
        row.lowmemd.stop();
        if let Some(eo) = &mut row.earlyoom {
            eo.stop();
        }
    }

    println!(
        "idle cost over {secs} s (after {} s to settle), all daemons side by side:",
        SETTLE.as_secs()
    );
    println!();
    println!(
        "| policy | lowmemd wake-ups/{secs} s | lowmemd CPU ms | lowmemd RSS KiB (anon + file) | earlyoom wake-ups/{secs} s | earlyoom CPU ms | earlyoom RSS KiB (anon + file) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (row, (l, e)) in rows.iter().zip(&usage) {
        let label = &row.label;
        let [lw, lc, lr] = cells(Some(l));
        let [ew, ec, er] = cells(e.as_ref());
        println!("| {label} | {lw} | {lc} | {lr} | {ew} | {ec} | {er} |");
    }
    println!();
    println!(
        "wake-ups: voluntary + involuntary context switches of all threads; CPU: utime + stime \
         ({} ms ticks); RSS: VmRSS at the end (RssAnon + RssFile). earlyoom watches the whole system only (no memcg row).",
        1000 / rustix::param::clock_ticks_per_second().max(1)
    );
    for note in [earlyoom_missing, memcg_note].into_iter().flatten() {
        println!("{note}");
    }
    for (row, (l, _)) in rows.iter().zip(&usage) {
        eprintln!("lowmemd, {}: {}", row.label, l.per_thread.join(", "));
    }
    true
}
