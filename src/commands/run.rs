//! `lowmemd run`: the daemon. Start-up probes, then the threads: the monitor (sensing),
//! the pipeline (deciding and acting), the metrics server and the policy watch; the main
//! thread waits for signals (SIGHUP reloads, SIGTERM/SIGINT stop).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lowmemd::caps::{CAP_KILL, KernelCaps};
use lowmemd::clock::monotonic_ms;
use lowmemd::health::Health;
use lowmemd::lmkd::clients::IDLE_TIMEOUT;
use lowmemd::lmkd::peer::Trust;
use lowmemd::lmkd::registry::{self, Registry};
use lowmemd::lmkd::server::{Controls, Server};
use lowmemd::lmkd::snapshot::{self, Publisher, Writer};
use lowmemd::lmkd::socket::{self, Origin};
use lowmemd::lmkd::{Hub, Notifying};
use lowmemd::monitor::{self, Monitor, Outlets, tripwire};
use lowmemd::pipeline::Pipeline;
use lowmemd::pipeline::freeze::freezer;
use lowmemd::pipeline::kernel::System;
use lowmemd::pipeline::outcome::Observer;
use lowmemd::policy::store::ReloadResult;
use lowmemd::report::eventlog::EventLog;
use lowmemd::report::metrics::Metrics;
use lowmemd::report::{Reporter, http, logger, notify, status_socket};
use lowmemd::{procs, protect, reload};

use super::{CmdResult, exit, load_store, resolve_scope};
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
    let served = http::Shared::new(metrics.clone(), scope.clone());
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
            match http::spawn(parsed, served.clone()).map_err(|e| (exit::RUNTIME, e.to_string()))? {
                http::Listening::Bound(bound) => Some(bound),
                // A scrape endpoint is not worth the protection (with Restart=always, an
                // exit here would loop for as long as the squatter holds the port).
                http::Listening::Retrying(e) => {
                    log::error!(
                        "--metrics-listen {addr}: {e} (another lowmemd, or another program on that port?); protecting anyway, trying again in the background"
                    );
                    None
                }
            }
        }
    };
    let status_socket = status_socket::place(
        args.status_socket.as_deref(),
        std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
    );
    let status_socket = status_socket.and_then(|path| {
        match status_socket::create(&path).and_then(|l| {
            http::spawn_unix(l, served.clone()).map_err(|source| {
                status_socket::StatusSocketError::Io {
                    path: path.clone(),
                    source,
                }
            })
        }) {
            Ok(()) => Some(path),
            Err(e) => {
                log::warn!("status socket: {e}; `lowmemd status` can only ask the TCP port");
                None
            }
        }
    });
    let lmkd_socket = lmkd_listener(args)?;
    let lmkd_trust = (args.lmkd_trusted_uid.iter())
        .map(|u| socket::user_id(u))
        .collect::<Result<Vec<_>, _>>()
        .map(Trust::new)
        .map_err(|e| (exit::USAGE, format!("--lmkd-trusted-uid: {e}")))?;
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
    let runtime_dir_at_stop = runtime_dir.clone();
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
            mon.run(tx, rx_monitor);
            exit_unless_stopping("monitor", &on_stop);
        })
        .map_err(|e| (exit::RUNTIME, e.to_string()))?;
    // Registrations hold a pidfd each: their share of the fd limit is taken from the
    // process cache's, so that /proc and the scope can always be read.
    let fd_limit = procs::raise_fd_limit();
    let lmkd_cap = lmkd_socket.as_ref().map(|_| registry::capacity(fd_limit));
    let cache_capacity = procs::cache_capacity(fd_limit - lmkd_cap.unwrap_or(0) as u64);
    let pageout_off = caps.pageout_unavailable();
    let mut reporter = Reporter::new(metrics.clone(), events);
    if args.dry_run {
        reporter = reporter.without_hooks();
    }
    let mut observer: Box<dyn Observer> = Box::new(reporter);
    let mut registrations = None;
    if let Some(lmkd) = lmkd_socket {
        let (listener, origin) = lmkd;
        let cap = lmkd_cap.unwrap_or(0);
        log::info!(
            "lmkd: at most {cap} registrations and {cache_capacity} cached processes under an fd limit of {fd_limit}"
        );
        let registry = Arc::new(Registry::new(scope.proc.clone(), cap));
        let hub = Arc::new(Hub::new(metrics.clone()));
        observer = Box::new(Notifying {
            inner: observer,
            hub: hub.clone(),
        });
        registrations = Some(registry.clone());
        let (reload_store, reload_metrics, reload_waker) =
            (store.clone(), metrics.clone(), waker.clone());
        let reload = Box::new(move || {
            let r = reload::reload(&reload_store, &reload_metrics, "LMK_UPDATE_PROPS", &|| {
                monitor::wake(&*reload_waker)
            });
            r != ReloadResult::Failed
        });
        let (minfree_store, minfree_metrics, minfree_waker) =
            (store.clone(), metrics.clone(), waker.clone());
        let set_minfree = Box::new(move |pid: i32, targets: &[(u64, i16)]| {
            reload::adopt_minfree(&minfree_store, &minfree_metrics, pid, targets, &|| {
                monitor::wake(&*minfree_waker)
            })
        });
        let controls = Controls {
            reload,
            set_minfree,
        };
        let mut server = Server::new(listener, registry, hub, metrics.clone(), controls)
            .with_clients(
                lmkd_trust.clone(),
                (args.lmkd_idle_timeout_ms).map_or(IDLE_TIMEOUT, Duration::from_millis),
            );
        match snapshot::place(&origin, std::env::var_os("RUNTIME_DIRECTORY").as_deref()) {
            Some(path) => {
                let me = std::process::id() as i32;
                let starttime = (scope.proc.read_stat(me, &mut Vec::new()))
                    .map_err(|e| (exit::RUNTIME, e.to_string()))?
                    .starttime;
                log::info!(
                    "lmkd registrations published for `lowmemd rank` to {}",
                    path.display()
                );
                let publisher = Publisher::new(path, Writer { pid: me, starttime });
                server = server.with_publisher(publisher);
            }
            None => log::info!(
                "lmkd registrations are not published for `lowmemd rank`: the socket is inherited and RUNTIME_DIRECTORY is not set (systemd: RuntimeDirectory=lowmemd)"
            ),
        }
        std::thread::Builder::new()
            .name("lmkd".into())
            .spawn(move || server.run())
            .map_err(|e| (exit::RUNTIME, e.to_string()))?;
        log::info!("serving lmkd's protocol on {origin}");
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
    for said in freezer::thaw_left_behind(&runtime_dir_at_stop) {
        log::info!("{said}");
    }
    if let Some(path) = &status_socket {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    logger::drain(Duration::from_millis(100));
    Ok(())
}

/// The lmkd socket to serve: inherited from Android init or systemd, or created at
/// `--lmkd-socket`.
fn lmkd_listener(args: &RunArgs) -> Result<Option<(OwnedFd, Origin)>, (u8, String)> {
    let inherited = socket::inherited().map_err(|e| (exit::USAGE, format!("lmkd socket: {e}")))?;
    if let Some(s) = inherited {
        return Ok(Some(s));
    }
    let Some(path) = &args.lmkd_socket else {
        return Ok(None);
    };
    let fd = socket::create(path, args.lmkd_socket_group.as_deref())
        .map_err(|e| (exit::USAGE, format!("--lmkd-socket: {e}")))?;
    Ok(Some((fd, Origin::Path(path.clone()))))
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
