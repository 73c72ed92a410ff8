//! The systemd notification protocol (`Type=notify`): READY, RELOADING, STOPPING and
//! watchdog pings, sent as datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket). Without `$NOTIFY_SOCKET` every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `$WATCHDOG_USEC`, in ms: ping at least this often.
    watchdog_every_ms: Option<u64>,
    last_ping_ms: AtomicU64,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog_every_ms = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|_| for_us && target.is_some())
            .map(|usec| (usec / 2000).max(1));
        Notifier {
            target,
            watchdog_every_ms,
            last_ping_ms: AtomicU64::new(0),
        }
    }

    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            log::debug!("sd_notify {state:?}: {e}");
        }
    }

    /// Pings the watchdog if half its interval passed since the last ping.
    pub fn watchdog(&self, now_ms: u64) {
        let Some(every) = self.watchdog_every_ms else {
            return;
        };
        let last = self.last_ping_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= every {
            self.last_ping_ms.store(now_ms, Ordering::Relaxed);
            self.send("WATCHDOG=1");
        }
    }

    /// How often the monitor must wake at least, for the watchdog.
    pub fn watchdog_every_ms(&self) -> Option<u64> {
        self.watchdog_every_ms
    }
}

/// The process's notifier (one service manager per process).
pub fn get() -> &'static Notifier {
    static N: OnceLock<Notifier> = OnceLock::new();
    N.get_or_init(Notifier::from_env)
}

/// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 asks for.
pub fn reloading() {
    let usec = crate::clock::monotonic_ms() * 1000;
    get().send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}
