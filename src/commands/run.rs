//! `lowmemd run`: the daemon. Start-up probes, then the threads: the monitor (sensing),
//! the pipeline (deciding and acting), the metrics server and the policy watch; the main
//! thread waits for signals (SIGHUP reloads, SIGTERM/SIGINT stop).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lowmemd::caps::{CAP_KILL, KernelCaps};
use lowmemd::clock::monotonic_ms;
use lowmemd::health::Health;
use lowmemd::monitor::{self, Monitor, Outlets, tripwire};
use lowmemd::pipeline::Pipeline;
use lowmemd::pipeline::freeze::freezer;
use lowmemd::pipeline::kernel::System;
use lowmemd::pipeline::outcome::Observer;
use lowmemd::report::eventlog::EventLog;
use lowmemd::report::metrics::Metrics;
use lowmemd::report::{Reporter, logger, notify};
use lowmemd::{priority, procs, protect, reload};

use super::{CmdResult, exit, http, lmkd, load_store, resolve_scope};
use crate::cli::RunArgs;

pub fn run(args: &RunArgs) -> CmdResult {
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
        Some(f) => match EventLog::open(f) {
            Ok(log) => log,
            Err(e) if e.is_misconfiguration() => {
                return Err((exit::USAGE, format!("--event-log {f}: {e}")));
            }
            // Refusing to start would hand whoever planted this the power to switch the
            // killer off; every action is still in the log lines (stderr or the journal).
            Err(e) => {
                log::error!("--event-log: {e}; running without an event log");
                EventLog::none()
            }
        },
        None => EventLog::none(),
    };
    let health = Arc::new(Health::new(monotonic_ms()));
    let metrics = Arc::new(Metrics::new(&caps, health.clone()));
    metrics.adopt_policy(&store.get(), &scope.describe(), &store.describe());
    let http::Serving {
        metrics_addr,
        status_socket,
    } = http::serve(args, &metrics, &scope)?;
    let lmkd_socket = lmkd::prepare(args)?;
    for w in protect::protect_self(&caps) {
        log::warn!("{w}");
    }
    let wake = monitor::wake_fd().map_err(|e| (exit::RUNTIME, format!("eventfd: {e}")))?;
    let waker = Arc::new(
        wake.try_clone()
            .map_err(|e| (exit::RUNTIME, e.to_string()))?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let outlets = Outlets {
        pressure_events: metrics.pressure_events.clone(),
        health: health.clone(),
        watchdog: Box::new(|now| notify::get().watchdog(now)),
        observe: {
            let metrics = metrics.clone();
            Box::new(move |mem, level, policy| metrics.observe_memory(mem, level, policy))
        },
        max_sleep_ms: notify::get().watchdog_every_ms(),
    };
    // A memory.high tripwire a previous run could not lift (SIGKILL, a crash) goes first:
    // whatever this run's policy says, the cgroup gets back what its owner had.
    let runtime_dir =
        tripwire::record::runtime_dir(std::env::var_os("RUNTIME_DIRECTORY").as_deref());
    if let Some(said) = tripwire::restore_left_behind(&scope, &runtime_dir) {
        log::warn!("{said}");
    }
    // So does an app a previous run froze and could not thaw: never left frozen.
    for said in freezer::thaw_left_behind(&runtime_dir) {
        log::warn!("{said}");
    }
    let freezes = freezer::Records::open(runtime_dir.clone());
    let (mut mon, mut warnings) = Monitor::open(
        scope.clone(),
        store.clone(),
        wake,
        stop.clone(),
        outlets,
        caps.psi,
    );
    // A dry run changes nothing: memory.high throttles the workload it is set on.
    if !args.dry_run {
        warnings.extend(mon.allow_tripwire(runtime_dir.clone()));
    }
    if let Some(n) = args.fail_monitor_after {
        mon.fail_after_polls(n);
    }
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
    if let Some(path) = &status_socket {
        log::info!("status for `lowmemd status` on {}", path.display());
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
    if let Some(t) = mon.tripwire_state() {
        log::info!("{t}");
    }

    let (tx, rx) = crossbeam_channel::bounded(1);
    let rx_monitor = rx.clone();
    let on_stop = stop.clone();
    let monitor = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let hurried = priority::hurry_this_thread();
            if let Some(w) = priority::hurried_warning("monitor", &hurried) {
                log::warn!("{w}");
            }
            mon.run(tx, rx_monitor);
            exit_unless_stopping("monitor", &on_stop);
        })
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    // Registrations hold a pidfd each: their share of the fd limit is taken from the
    // process cache's, so that /proc and the scope can always be read.
    let fd_limit = procs::raise_fd_limit();
    let lmkd_cap = lmkd_socket.as_ref().map(|_| lmkd::fd_share(fd_limit));
    let cache_capacity = procs::cache_capacity(fd_limit - lmkd_cap.unwrap_or(0) as u64);
    let pageout_off = caps.pageout_unavailable();
    let mut reporter = Reporter::new(metrics.clone(), events);
    if args.dry_run {
        reporter = reporter.without_hooks();
    }
    let mut observer: Box<dyn Observer> = Box::new(reporter);
    let mut registrations = None;
    if let Some(lmkd) = lmkd_socket {
        let cap = lmkd_cap.unwrap_or(0);
        log::info!(
            "lmkd: at most {cap} registrations and {cache_capacity} cached processes under an fd limit of {fd_limit}"
        );
        let daemon = lmkd::Daemon {
            args,
            store: &store,
            metrics: &metrics,
            waker: &waker,
            scope: &scope,
        };
        let started = lmkd::start(lmkd, cap, daemon, observer)?;
        observer = started.observer;
        registrations = Some(started.registrations);
    }
    let system = System::keeping_table(scope, caps, cache_capacity);
    let system = match freezes {
        Ok(records) => system.with_freezes(records),
        Err(e) => {
            if store.get().thaw_after_ms().is_some() {
                log::warn!("freeze tier off: {e}");
            }
            system
        }
    };
    let mut pipeline = Pipeline::new(
        Box::new(system),
        store.clone(),
        args.dry_run,
        observer,
        health,
    );
    if let Some(r) = registrations {
        pipeline.set_registrations(r);
    }
    if let Some(why) = pageout_off {
        pipeline.disable_pageout(why, true);
    }
    let on_stop = stop.clone();
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let hurried = priority::hurry_this_thread();
            if let Some(w) = priority::hurried_warning("pipeline", &hurried) {
                log::warn!("{w}");
            }
            pipeline.run(rx);
            exit_unless_stopping("pipeline", &on_stop);
        })
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;

    notify::get().send("READY=1\nSTATUS=watching memory pressure");
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            notify::reloading();
            reload::reload(&store, &metrics, "SIGHUP", &|| monitor::wake(&*waker));
            notify::get().send("READY=1");
            continue;
        }
        log::info!("signal {sig}: stopping");
        notify::get().send("STOPPING=1");
        break;
    }
    stop.store(true, Ordering::Release);
    monitor::wake(&*waker);
    // The pipeline may be waiting out a victim's deadline: stop within a second anyway
    // (returning ends the threads with the process).
    let deadline = Instant::now() + STOP_WITHIN;
    while !(monitor.is_finished() && pipeline.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The pipeline thawed what it froze as it ended; if it is still waiting out a victim,
    // its records say what to thaw.
    for said in freezer::thaw_left_behind(&runtime_dir) {
        log::info!("{said}");
    }
    if let Some(path) = &status_socket {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    logger::drain(Duration::from_millis(100));
    Ok(())
}

/// How long SIGTERM waits for the worker threads before the process exits regardless.
const STOP_WITHIN: Duration = Duration::from_millis(700);

/// A worker thread that ends while nobody asked it to leaves the machine unprotected: exit
/// non-zero at once, so that systemd, BusyBox or Kubernetes restart lowmemd.
fn exit_unless_stopping(thread: &str, stopping: &AtomicBool) {
    if stopping.load(Ordering::Acquire) {
        return;
    }
    log::error!(
        "the {thread} thread stopped: nothing is protected any more; exiting so that the service manager restarts lowmemd"
    );
    logger::drain(Duration::from_millis(200));
    std::process::exit(i32::from(exit::RUNTIME));
}
