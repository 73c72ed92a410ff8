//! lmkd's client socket wired into `run` and `rank` (the `lmkd` feature; without it,
//! `lmkd_off.rs` refuses every flag and inherited socket that asks for it).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lowmemd::lmkd::clients::IDLE_TIMEOUT;
use lowmemd::lmkd::peer::Trust;
use lowmemd::lmkd::registry::{self, Registry};
use lowmemd::lmkd::server::{Controls, Server};
use lowmemd::lmkd::snapshot::{self, Publisher, Snapshot, Writer};
use lowmemd::lmkd::socket::{self, Origin};
use lowmemd::lmkd::{Hub, Notifying};
use lowmemd::monitor;
use lowmemd::pipeline::outcome::Observer;
use lowmemd::pipeline::rank::{Exclusion, Ranked, sort};
use lowmemd::pipeline::registered::Registrations;
use lowmemd::policy::Candidates;
use lowmemd::policy::store::{PolicyStore, ReloadResult};
use lowmemd::procs::ProcRoot;
use lowmemd::reload;
use lowmemd::report::metrics::Metrics;
use lowmemd::scope::Scope;

use crate::cli::RunArgs;
use crate::commands::exit;
use crate::commands::rank::Registered;

/// The socket to serve and whom to trust on it, read before anything starts.
pub struct Prepared {
    listener: OwnedFd,
    origin: Origin,
    trust: Trust,
}

/// The lmkd socket to serve: inherited from Android init or systemd, or created at
/// `--lmkd-socket`; `None` when neither asks for one.
pub fn prepare(args: &RunArgs) -> Result<Option<Prepared>, (u8, String)> {
    let trust = (args.lmkd_trusted_uid.iter())
        .map(|u| socket::user_id(u))
        .collect::<Result<Vec<_>, _>>()
        .map(Trust::new)
        .map_err(|e| (exit::USAGE, format!("--lmkd-trusted-uid: {e}")))?;
    let inherited = socket::inherited().map_err(|e| (exit::USAGE, format!("lmkd socket: {e}")))?;
    let (listener, origin) = match (inherited, &args.lmkd_socket) {
        (Some(s), _) => s,
        (None, None) => return Ok(None),
        (None, Some(path)) => {
            let fd = socket::create(path, args.lmkd_socket_group.as_deref())
                .map_err(|e| (exit::USAGE, format!("--lmkd-socket: {e}")))?;
            (fd, Origin::Path(path.clone()))
        }
    };
    Ok(Some(Prepared {
        listener,
        origin,
        trust,
    }))
}

/// Registrations hold a pidfd each: their share of the fd limit.
pub fn fd_share(fd_limit: u64) -> usize {
    registry::capacity(fd_limit)
}

/// What `start` needs from the daemon.
pub struct Daemon<'a> {
    pub args: &'a RunArgs,
    pub store: &'a Arc<PolicyStore>,
    pub metrics: &'a Arc<Metrics>,
    pub waker: &'a Arc<OwnedFd>,
    pub scope: &'a Scope,
}

/// The socket's thread started: the observer that also tells lmkd's subscribers of kills,
/// and the registrations the pipeline reads.
pub struct Started {
    pub observer: Box<dyn Observer>,
    pub registrations: Arc<dyn Registrations>,
}

/// Starts the socket's thread; returns the observer that also tells lmkd's subscribers of
/// kills, and the registrations the pipeline reads.
pub fn start(
    p: Prepared,
    cap: usize,
    d: Daemon<'_>,
    observer: Box<dyn Observer>,
) -> Result<Started, (u8, String)> {
    let registry = Arc::new(Registry::new(d.scope.proc.clone(), cap));
    let hub = Arc::new(Hub::new(d.metrics.clone()));
    let observer = Box::new(Notifying {
        inner: observer,
        hub: hub.clone(),
    });
    let (reload_store, reload_metrics, reload_waker) =
        (d.store.clone(), d.metrics.clone(), d.waker.clone());
    let reload = Box::new(move || {
        let r = reload::reload(&reload_store, &reload_metrics, "LMK_UPDATE_PROPS", &|| {
            monitor::wake(&*reload_waker)
        });
        r != ReloadResult::Failed
    });
    let (minfree_store, minfree_metrics, minfree_waker) =
        (d.store.clone(), d.metrics.clone(), d.waker.clone());
    let set_minfree = Box::new(move |pid: i32, targets: &[(u64, i16)]| {
        reload::adopt_minfree(&minfree_store, &minfree_metrics, pid, targets, &|| {
            monitor::wake(&*minfree_waker)
        })
    });
    let controls = Controls {
        reload,
        set_minfree,
    };
    let mut server = Server::new(
        p.listener,
        registry.clone(),
        hub,
        d.metrics.clone(),
        controls,
    )
    .with_clients(
        p.trust,
        (d.args.lmkd_idle_timeout_ms).map_or(IDLE_TIMEOUT, Duration::from_millis),
    );
    match snapshot::place(&p.origin, std::env::var_os("RUNTIME_DIRECTORY").as_deref()) {
        Some(path) => {
            let me = std::process::id() as i32;
            let starttime = (d.scope.proc.read_stat(me, &mut Vec::new()))
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
    log::info!("serving lmkd's protocol on {}", p.origin);
    Ok(Started {
        observer,
        registrations: registry,
    })
}

/// Reads the snapshot of `--lmkd-socket`'s daemon, or of the systemd unit's when it exists,
/// and fills in who registered each ranked process; under `candidates = "registered"` the
/// others are excluded, as the daemon leaves them out. A missing or stale snapshot is said
/// and ranking goes on; a malformed one is an error.
pub fn registrations(
    socket: Option<&Path>,
    proc: &ProcRoot,
    ranked: &mut [Ranked],
    candidates: Candidates,
) -> Result<Registered, (u8, String)> {
    let path = match socket {
        Some(s) => snapshot::beside_socket(s),
        None if Path::new(snapshot::DEFAULT_PATH).exists() => snapshot::DEFAULT_PATH.into(),
        None => return Ok(Registered::Unknown),
    };
    let snap = match Snapshot::read(&path) {
        Ok(snap) if snap.writer_alive(proc) => snap,
        Ok(snap) => {
            return Ok(Registered::NotShown(format!(
                "{}: written by lowmemd pid {}, which is no longer running",
                path.display(),
                snap.daemon.pid
            )));
        }
        Err(e) if e.is_unreadable() => {
            return Ok(Registered::NotShown(match socket {
                Some(s) => format!(
                    "{e} (is lowmemd running with --lmkd-socket {}?)",
                    s.display()
                ),
                None => e.to_string(),
            }));
        }
        Err(e) => return Err((exit::RUNTIME, format!("lmkd registrations: {e}"))),
    };
    let table = snap.lookup_table();
    for r in ranked.iter_mut() {
        r.proc.registered = table.lookup(r.proc.pid, r.proc.starttime);
        if candidates == Candidates::Registered
            && r.proc.registered.is_none()
            && r.excluded.is_none()
        {
            r.excluded = Some(Exclusion::NotRegistered);
        }
    }
    sort(ranked);
    Ok(Registered::Shown {
        path,
        count: snap.registered.len(),
        daemon: snap.daemon.pid,
    })
}
