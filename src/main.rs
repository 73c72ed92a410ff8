//! The `lowmemd` command: argument parsing, start-up probes, thread wiring and exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

use lowmemd::caps::{CAP_KILL, KernelCaps};
use lowmemd::events::EventLog;
use lowmemd::metrics::Metrics;
use lowmemd::monitor::MemSnapshot;
use lowmemd::monitor::{self, Monitor};
use lowmemd::pipeline::Pipeline;
use lowmemd::policy::Policy;
use lowmemd::policy::explain::explain;
use lowmemd::policy::rules;
use lowmemd::policy::store::PolicyStore;
use lowmemd::policy::validate::load;
use lowmemd::procs::ProcRoot;
use lowmemd::rank::{RankContext, Ranked, rank};
use lowmemd::scope::{Scope, ScopeError};
use lowmemd::{http, reload};

/// Exit codes: a public interface, never renumber.
mod exit {
    pub const RUNTIME: u8 = 1;
    /// Bad command line or configuration (clap uses 2 for usage errors too).
    pub const USAGE: u8 = 2;
    /// The kernel lacks a feature lowmemd needs for what was asked.
    pub const KERNEL: u8 = 3;
    /// Missing privilege for what was asked.
    pub const PRIVILEGE: u8 = 4;
}

mod cli;

use cli::{
    CheckArgs, Cli, Command, DoctorArgs, PolicyArgs, RankArgs, RunArgs, ScopeArgs, StatusArgs,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    lowmemd::logger::init(cli.log_level);
    let result = match cli.command {
        Some(Command::Rank(a)) => cmd_rank(&a),
        Some(Command::Run(a)) => cmd_run(&a),
        Some(Command::Check(a)) => cmd_check(&a),
        Some(Command::Status(a)) => cmd_status(&a),
        Some(Command::Doctor(a)) => cmd_doctor(&a),
        None => cmd_run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            log::error!("{msg}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<(), (u8, String)>;

fn load_store(args: &PolicyArgs) -> Result<PolicyStore, (u8, String)> {
    match &args.policy {
        None => Ok(PolicyStore::builtin()),
        Some(path) => PolicyStore::from_file(path)
            .map_err(|e| (exit::USAGE, format!("invalid policy, not starting:\n{e}"))),
    }
}

/// `--cgroup` wins over the policy's `scope`.
fn resolve_scope(args: &ScopeArgs, policy: &Policy) -> Result<Scope, (u8, String)> {
    let proc = ProcRoot::default();
    let scope = match args.cgroup.as_ref().or(policy.scope.as_ref()) {
        Some(cg) => Scope::cgroup(proc, cg),
        None => Scope::system(proc),
    };
    scope.map_err(|e| {
        let code = match e {
            ScopeError::NotAbsolute(_) | ScopeError::NoSuchCgroup { .. } => exit::USAGE,
            ScopeError::NoMemoryController(_) => exit::KERNEL,
            ScopeError::Read(_) => exit::RUNTIME,
        };
        (code, e.to_string())
    })
}

fn cmd_check(args: &CheckArgs) -> CmdResult {
    let mut invalid = 0;
    for file in &args.files {
        match load(file) {
            Ok((policy, _)) => {
                println!("{}: ok", file.display());
                if args.explain {
                    // Sizes for the scope the policy names, when it exists here.
                    let total = resolve_scope(&ScopeArgs { cgroup: None }, &policy)
                        .ok()
                        .and_then(|s| s.read_memory().ok())
                        .map(|m| m.total_kib);
                    print!("{}", explain(&policy, total));
                }
            }
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
            }
        }
    }
    if invalid > 0 {
        return Err((
            exit::USAGE,
            format!("{invalid} of {} policy files invalid", args.files.len()),
        ));
    }
    Ok(())
}

fn cmd_rank(args: &RankArgs) -> CmdResult {
    let policy = load_store(&args.policy)?.get();
    let scope = resolve_scope(&args.scope, &policy)?;
    let pids = scope.pids().map_err(|e| (exit::RUNTIME, e.to_string()))?;
    let mem = scope
        .read_memory()
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    let scan = scope
        .proc
        .scan_with(pids, mem.swap_used_kib() > 0, rules::needs(&policy.rules));
    let ctx = RankContext {
        self_pid: std::process::id() as i32,
        rules: &policy.rules,
        ..Default::default()
    };
    let ranked = rank(scan.procs, &ctx);
    let mut out = std::io::stdout().lock();
    // A closed stdout (`lowmemd rank | head`) is the reader's choice, not our error.
    match print_rank(&mut out, args.json, &scope, &mem, &ranked, scan.vanished) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err((exit::RUNTIME, e.to_string())),
        _ => Ok(()),
    }
}

fn print_rank(
    out: &mut impl std::io::Write,
    json: bool,
    scope: &Scope,
    mem: &MemSnapshot,
    ranked: &[Ranked],
    vanished: usize,
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, ranked)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "scope {}: {} of {} MiB available ({:.1} %)",
        scope.describe(),
        mem.available_kib / 1024,
        mem.total_kib / 1024,
        mem.available_pct()
    )?;
    writeln!(
        out,
        "{:>7} {:>5} {:>5} {:>9}  {:<16} {:<16} EXCLUDED",
        "PID", "ADJ", "EFF", "SIZE_MiB", "COMM", "RULE"
    )?;
    for r in ranked {
        writeln!(
            out,
            "{:>7} {:>5} {:>5} {:>9.1}  {:<16} {:<16} {}",
            r.proc.pid,
            r.proc.oom_score_adj,
            r.proc.effective_adj,
            r.proc.size_kib() as f64 / 1024.0,
            r.proc.comm,
            r.proc.rule.as_deref().unwrap_or("-"),
            r.excluded.map(|e| e.to_string()).unwrap_or_default()
        )?;
    }
    if vanished > 0 {
        writeln!(out, "({vanished} processes exited while being read)")?;
    }
    Ok(())
}

fn cmd_run(args: &RunArgs) -> CmdResult {
    let store = Arc::new(load_store(&args.policy)?);
    let scope = Arc::new(resolve_scope(&args.scope, &store.get())?);
    let mut caps = KernelCaps::probe();
    caps.pretend_missing(&args.pretend_missing)
        .map_err(|e| (exit::USAGE, format!("--pretend-missing: {e}")))?;
    let allow_pid_kill = store.get().allow_pid_kill;
    if !args.dry_run {
        if !caps.pidfd && !allow_pid_kill {
            return Err((
                exit::KERNEL,
                format!(
                    "kernel {} has no pidfds (pidfd_open, Linux 5.3+): lowmemd will not kill by raw pid unless the policy says allow_pid_kill = true; use --dry-run to watch only",
                    caps.kernel_release
                ),
            ));
        }
        if !caps.has_cap(CAP_KILL) {
            return Err((
                exit::PRIVILEGE,
                "killing other users' processes needs CAP_KILL (run as root, or with --dry-run to watch only)".into(),
            ));
        }
    }
    let events = match &args.event_log {
        Some(f) => EventLog::open(f).map_err(|e| (exit::USAGE, format!("--event-log {f}: {e}")))?,
        None => EventLog::none(),
    };
    let metrics = Arc::new(Metrics::new(&caps));
    metrics.adopt_policy(&store.get(), &scope.describe(), &store.describe());
    let metrics_addr = match args.metrics_listen.as_str() {
        "off" => None,
        addr => {
            let parsed: std::net::SocketAddr = addr.parse().map_err(|e| {
                (
                    exit::USAGE,
                    format!(
                        "--metrics-listen {addr:?}: {e} (use HOST:PORT, e.g. {}, or off)",
                        http::DEFAULT_ADDR
                    ),
                )
            })?;
            let bound = http::spawn(parsed, metrics.clone(), scope.psi_path()).map_err(|e| {
                (
                    exit::USAGE,
                    format!(
                        "--metrics-listen {addr}: {e} (another lowmemd? use another address or off)"
                    ),
                )
            })?;
            Some(bound)
        }
    };
    for w in lowmemd::protect::protect_self(&caps) {
        log::warn!("{w}");
    }
    let wake = monitor::wake_fd().map_err(|e| (exit::RUNTIME, format!("eventfd: {e}")))?;
    let waker = Arc::new(
        wake.try_clone()
            .map_err(|e| (exit::RUNTIME, e.to_string()))?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (mon, warnings) = Monitor::open(
        scope.clone(),
        store.clone(),
        wake,
        stop.clone(),
        metrics.clone(),
        caps.psi,
    );
    for f in caps.fallbacks(allow_pid_kill) {
        log::warn!("fallback: {f}");
    }
    for w in warnings {
        log::warn!("{w}");
    }
    // Handlers and the file watch go in before we say we run: a SIGHUP or an edit right
    // after start-up must neither kill the daemon (SIGHUP's default) nor be missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| (exit::RUNTIME, format!("installing signal handlers: {e}")))?;
    let notify_waker = waker.clone();
    let _watch = reload::watch(
        store.clone(),
        metrics.clone(),
        Box::new(move || monitor::wake(&*notify_waker)),
    );
    let mem = scope
        .read_memory()
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    log::info!("{}", caps.summary());
    log::info!("policy in force: {}", store.describe());
    if let Some(addr) = metrics_addr {
        log::info!("metrics on http://{addr}/metrics, status on http://{addr}/status");
    }
    log::info!(
        "monitoring {}: {} of {} MiB available; sources: {}; levels: {}{}",
        scope.describe(),
        mem.available_kib / 1024,
        mem.total_kib / 1024,
        mon.sources(),
        store.get().summary(),
        if args.dry_run {
            " (dry run: no signals)"
        } else {
            ""
        }
    );

    let (tx, rx) = crossbeam_channel::bounded(1);
    let rx_monitor = rx.clone();
    let monitor = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || mon.run(tx, rx_monitor))
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    let cache_capacity = lowmemd::procs::cache_capacity(lowmemd::procs::raise_fd_limit());
    let pageout_off = caps.pageout_unavailable();
    let mut pipeline = Pipeline::new(
        scope,
        store.clone(),
        caps,
        args.dry_run,
        events,
        metrics.clone(),
        cache_capacity,
    );
    if let Some(why) = pageout_off {
        pipeline.disable_pageout(why, true);
    }
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || pipeline.run(rx))
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;

    lowmemd::notify::get().send("READY=1\nSTATUS=watching memory pressure");
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            lowmemd::notify::reloading();
            reload::reload(&store, &metrics, "SIGHUP", &|| monitor::wake(&*waker));
            lowmemd::notify::get().send("READY=1");
            continue;
        }
        log::info!("signal {sig}: stopping");
        lowmemd::notify::get().send("STOPPING=1");
        break;
    }
    stop.store(true, Ordering::Release);
    monitor::wake(&*waker);
    let _ = monitor.join();
    pipeline
        .join()
        .map_err(|_| (exit::RUNTIME, "pipeline thread panicked".to_string()))?;
    log::info!("stopped");
    Ok(())
}

fn cmd_doctor(args: &DoctorArgs) -> CmdResult {
    let policy = load_store(&args.policy)?.get();
    let mut caps = KernelCaps::probe();
    caps.pretend_missing(&args.pretend_missing)
        .map_err(|e| (exit::USAGE, format!("--pretend-missing: {e}")))?;
    let report = lowmemd::doctor::examine(&caps, &policy);
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| (exit::RUNTIME, e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", lowmemd::doctor::render(&report));
    }
    if !report.can_protect {
        return Err((
            exit::RUNTIME,
            "lowmemd could not protect this machine as it is".into(),
        ));
    }
    Ok(())
}

fn cmd_status(args: &StatusArgs) -> CmdResult {
    let fail = |e: String| {
        (
            exit::RUNTIME,
            format!(
                "{}: {e} (is lowmemd running with --metrics-listen {}?)",
                args.addr, args.addr
            ),
        )
    };
    let body = lowmemd::status::fetch(&args.addr).map_err(fail)?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| fail(format!("not a lowmemd status: {e}")))?;
    print!("{}", lowmemd::status::render(&v));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_default_metrics_address_is_the_servers() {
        assert_eq!(
            super::cli::DEFAULT_METRICS_ADDR,
            lowmemd::http::DEFAULT_ADDR
        );
    }
}
