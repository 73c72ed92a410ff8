//! The socket's thread: accepts clients (`clients`), reads one packet at a time, answers
//! as lmkd does. A client is never waited on: replies and notifications are sent with
//! MSG_DONTWAIT, and nothing the kill path needs is held while a client is served.
//!
//! What a client may do is what its peer credentials allow (`peer`): an untrusted client
//! acts only on its own processes and never sends LMK_TARGET, LMK_UPDATE_PROPS or
//! LMK_BOOT_COMPLETED. What a
//! client may cost is bounded: its packets are read at a rate, an idle untrusted client is
//! let go (`clients`), policy reloads are coalesced, and the registry is pruned and
//! published on a timer, never per packet (`upkeep`).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use crate::report::metrics::Metrics;

use super::Hub;
use super::clients::{Client, Clients, IDLE_TIMEOUT};
use super::peer::Trust;
use super::protocol::{self, Command, MAX_PACKET, ProtocolError, Target};
use super::registry::Registry;
use super::snapshot::Publisher;
use super::upkeep::{MinfreeTable, Reloads, Upkeep, status};

/// LMK_TARGET is taken at most once per this long (as lmkd).
const TARGET_EVERY: Duration = Duration::from_secs(1);
/// One log line per kind of bad input per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the socket's commands change in the daemon, handed in by `run`.
pub struct Controls {
    /// LMK_UPDATE_PROPS: reloads the policy; true when the policy in force is valid.
    pub reload: Box<dyn Fn() -> bool + Send>,
    /// LMK_TARGET: puts a client's (pid) minfree table, as (KiB, adj) pairs, in force.
    pub set_minfree: SetMinfree,
}

pub type SetMinfree = Box<dyn Fn(i32, &[(u64, i16)]) + Send>;

pub struct Server {
    listener: OwnedFd,
    registry: Arc<Registry>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    controls: Controls,
    clients: Clients,
    boot_completed: bool,
    minfree: Option<MinfreeTable>,
    last_target: Option<Instant>,
    warned: HashMap<&'static str, (Instant, u64)>,
    upkeep: Upkeep,
    /// LMK_UPDATE_PROPS waiting for the next reload.
    reloads: Reloads,
}

impl Server {
    pub fn new(
        listener: OwnedFd,
        registry: Arc<Registry>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        controls: Controls,
    ) -> Self {
        metrics.adopt_lmkd_labels(&Command::LABELS, &ALL_WHYS.concat());
        Server {
            listener,
            upkeep: Upkeep::new(registry.clone(), metrics.clone()),
            registry,
            hub,
            metrics,
            controls,
            clients: Clients::new(Trust::default(), IDLE_TIMEOUT),
            boot_completed: false,
            minfree: None,
            last_target: None,
            warned: HashMap::new(),
            reloads: Reloads::default(),
        }
    }

    /// Trusts clients of these uids besides root (`--lmkd-trusted-uid`), and lets
    /// untrusted ones go after `idle` without a packet. Before `run`: no client yet.
    pub fn with_clients(mut self, trust: Trust, idle: Duration) -> Self {
        self.clients = Clients::new(trust, idle);
        self
    }

    /// Publishes the registrations for `lowmemd rank` through `publisher`.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.upkeep.set_publisher(publisher);
        self
    }

    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            let polled = self.clients.readable(now);
            let mut fds = Vec::with_capacity(1 + polled.len());
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            for c in &polled {
                fds.push(PollFd::new(&*c.fd, PollFlags::IN));
            }
            let wait = self.next_wake(now);
            let tick = Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            if let Err(e) = rustix::event::poll(&mut fds, Some(&tick)) {
                if e != rustix::io::Errno::INTR {
                    log::error!("lmkd socket: poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            // Clients first: a slot freed by a hang-up is free for a waiting connection.
            let served: Vec<u64> = (polled.iter().enumerate())
                .filter(|(k, _)| ready[k + 1])
                .map(|(_, c)| c.conn)
                .collect();
            for conn in served {
                if !self.serve(conn) {
                    self.disconnect(conn, "disconnected");
                }
            }
            self.note_throttled();
            if ready[0] {
                self.accept();
            }
            let now = Instant::now();
            self.let_idle_go(now);
            self.reload_if_due(now);
            let (clients, minfree) = (&self.clients, &self.minfree);
            self.upkeep
                .run(now, |registered| status(clients, minfree, registered));
        }
    }

    /// How long the thread may sleep: until the next prune, `/status` refresh, snapshot,
    /// coalesced reload, idle deadline or token of a client over its rate.
    fn next_wake(&self, now: Instant) -> Duration {
        let mut wait = self.upkeep.wake_in(now);
        if let Some(d) = self.reloads.wake_in(now) {
            wait = wait.min(d);
        }
        if let Some(d) = self.clients.wake_in(now) {
            wait = wait.min(d);
        }
        // At least 1 ms: a deadline met just now must not spin.
        wait.max(Duration::from_millis(1))
    }

    /// Counts each client that ran out of tokens, once per episode of it.
    fn note_throttled(&mut self) {
        for p in self.clients.newly_throttled(Instant::now()) {
            self.reject(
                "rate_limited",
                format_args!(
                    "client pid {} (uid {}) sends faster than it is read: its packets wait",
                    p.pid, p.uid
                ),
            );
        }
    }

    fn let_idle_go(&mut self, now: Instant) {
        for conn in self.clients.idle(now) {
            self.metrics
                .lmkd_rejected
                .with_label_values(&["idle_timeout"])
                .inc();
            self.disconnect(conn, "idle: disconnected");
        }
    }

    fn accept(&mut self) {
        loop {
            let fd = match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
                Err(e) => {
                    log::warn!("lmkd socket: accept: {e}");
                    return;
                }
            };
            // Credentials the kernel took at connect(2): what a packet says is never asked.
            let (pid, uid) = match rustix::net::sockopt::socket_peercred(&fd) {
                Ok(c) => (c.pid.as_raw_nonzero().get(), c.uid.as_raw()),
                Err(_) => (0, u32::MAX),
            };
            let count = self.clients.len();
            let Some(c) = self.clients.admit(fd, pid, uid, Instant::now()) else {
                self.reject(
                    "too_many_clients",
                    format_args!(
                        "refused a connection from pid {pid} uid {uid}: already {count} clients"
                    ),
                );
                continue;
            };
            let trusted = if c.peer.trusted {
                "trusted"
            } else {
                "untrusted"
            };
            log::info!(
                "lmkd client connected: pid {pid} uid {uid}, {trusted} (connection {})",
                c.conn
            );
            self.metrics.lmkd_clients.set(self.clients.len() as i64);
            self.upkeep.changed();
        }
    }

    fn disconnect(&mut self, conn: u64, how: &str) {
        if let Some(c) = self.clients.remove(conn) {
            log::info!(
                "lmkd client pid {} {how}; its registrations stay, unowned",
                c.peer.pid
            );
        }
        self.reloads.forget(conn);
        self.registry.disown(conn);
        self.hub.forget(conn);
        self.metrics.lmkd_clients.set(self.clients.len() as i64);
        self.upkeep.changed();
    }

    /// Reads and answers one packet of connection `conn`; false when the client hung up.
    fn serve(&mut self, conn: u64) -> bool {
        let Some(c) = self.clients.take(conn, Instant::now()) else {
            return true;
        };
        let mut buf = [0u8; MAX_PACKET + 4];
        let (_, len) =
            match rustix::net::recv(&*c.fd, &mut buf[..], RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
                Ok(r) => r,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return true,
                Err(_) => return false,
            };
        // lmkd treats an empty read as the end of the connection.
        if len == 0 {
            return false;
        }
        match protocol::parse(&buf, len) {
            Ok(cmd) => {
                self.metrics
                    .lmkd_commands
                    .with_label_values(&[cmd.label()])
                    .inc();
                self.command(&c, cmd);
            }
            Err(e) => self.bad_packet(&c, &e),
        }
        true
    }

    fn bad_packet(&mut self, c: &Client, e: &ProtocolError) {
        self.reject(e.why(), format_args!("client pid {}: {e}", c.peer.pid));
    }

    /// Counts a refusal and says it, at most once per kind per [`WARN_EVERY`] (with how
    /// many were not said): a hostile client cannot flood the journal.
    fn reject(&mut self, why: &'static str, what: std::fmt::Arguments<'_>) {
        self.metrics.lmkd_rejected.with_label_values(&[why]).inc();
        let now = Instant::now();
        let (last, quiet) = self.warned.entry(why).or_insert((now - WARN_EVERY, 0));
        if now.duration_since(*last) >= WARN_EVERY {
            let more = if *quiet > 0 {
                format!(" ({quiet} more like it not logged)")
            } else {
                String::new()
            };
            log::warn!("lmkd socket: {what}{more}");
            *last = now;
            *quiet = 0;
        } else {
            *quiet += 1;
        }
    }

    fn reply(&self, c: &Client, words: &[i32]) {
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        if let Err(e) = rustix::net::send(&*c.fd, &protocol::encode(words), flags) {
            log::debug!("lmkd client pid {}: reply not sent: {e}", c.peer.pid);
        }
    }

    /// Refuses a command only a trusted client may send; true when refused.
    fn untrusted(&mut self, c: &Client, what: &str) -> bool {
        if c.peer.trusted {
            return false;
        }
        self.reject(
            "untrusted_command",
            format_args!(
                "client pid {} uid {}: {what} refused: only root and --lmkd-trusted-uid clients may send it",
                c.peer.pid, c.peer.uid
            ),
        );
        true
    }

    /// Answers the LMK_UPDATE_PROPS waiting, with one reload, when one is due.
    fn reload_if_due(&mut self, now: Instant) {
        let Some(waiting) = self.reloads.due(now) else {
            return;
        };
        let ok = (self.controls.reload)();
        for (conn, n) in waiting {
            if let Some(c) = self.clients.get(conn) {
                for _ in 0..n {
                    self.reply(c, &[protocol::LMK_UPDATE_PROPS, if ok { 0 } else { -1 }]);
                }
            }
        }
    }

    fn command(&mut self, c: &Client, cmd: Command) {
        match cmd {
            Command::ProcPrio(p) => self.register(c, &[p]),
            Command::ProcsPrio(ps) => self.register(c, &ps),
            Command::ProcRemove { pid } => {
                self.upkeep.changed();
                if let Err(e) = self.registry.remove(pid, c.owner()) {
                    self.reject(
                        e.why(),
                        format_args!("client pid {}: LMK_PROCREMOVE: {e}", c.peer.pid),
                    );
                }
            }
            Command::ProcPurge => {
                self.upkeep.changed();
                let n = self.registry.purge(c.conn);
                log::info!(
                    "lmkd client pid {}: purged its {n} registrations",
                    c.peer.pid
                );
            }
            Command::GetKillCnt { min_adj, max_adj } => {
                let n = self.hub.kill_count(min_adj, max_adj);
                self.reply(
                    c,
                    &[protocol::LMK_GETKILLCNT, n.min(i32::MAX as u64) as i32],
                );
            }
            Command::Subscribe(ev) => self.hub.subscribe(c.conn, c.fd.clone(), ev),
            Command::UpdateProps => {
                if self.untrusted(c, "LMK_UPDATE_PROPS") {
                    // As lmkd answers a reload that failed.
                    self.reply(c, &[protocol::LMK_UPDATE_PROPS, -1]);
                } else {
                    self.reloads.ask(c.conn);
                }
            }
            Command::StartMonitoring => {}
            // Another client's "boot completed" would make system_server's "already handled".
            Command::BootCompleted if self.untrusted(c, "LMK_BOOT_COMPLETED") => {
                self.reply(c, &[protocol::LMK_BOOT_COMPLETED, -1]);
            }
            Command::BootCompleted => {
                let already = std::mem::replace(&mut self.boot_completed, true);
                self.reply(c, &[protocol::LMK_BOOT_COMPLETED, i32::from(already)]);
            }
            Command::Target(targets) => {
                if !self.untrusted(c, "LMK_TARGET") {
                    self.target(c, targets)
                }
            }
        }
    }

    fn register(&mut self, c: &Client, prios: &[protocol::Prio]) {
        self.upkeep.changed();
        for p in prios {
            match self.registry.register(p, c.owner()) {
                Ok(()) => log::debug!(
                    "lmkd client pid {} (uid {}): pid {} uid {} adj {}",
                    c.peer.pid,
                    c.peer.uid,
                    p.pid,
                    p.uid,
                    p.adj
                ),
                Err(e) => self.reject(
                    e.why(),
                    format_args!("client pid {}: LMK_PROCPRIO: {e}", c.peer.pid),
                ),
            }
        }
    }

    fn target(&mut self, c: &Client, targets: Vec<Target>) {
        let now = Instant::now();
        if self
            .last_target
            .is_some_and(|t| now.duration_since(t) < TARGET_EVERY)
        {
            self.reject(
                "rate_limited",
                format_args!(
                    "client pid {}: LMK_TARGET more than once a second: ignored",
                    c.peer.pid
                ),
            );
            return;
        }
        self.last_target = Some(now);
        let table = MinfreeTable {
            client_pid: c.peer.pid,
            targets,
        };
        let page_kib = rustix::param::page_size() as u64 / 1024;
        log::info!(
            "minfree from client pid {}: {}",
            c.peer.pid,
            table.describe(page_kib)
        );
        let kib: Vec<(u64, i16)> = table
            .targets
            .iter()
            .map(|t| (u64::from(t.minfree_pages) * page_kib, t.adj))
            .collect();
        (self.controls.set_minfree)(c.peer.pid, &kib);
        self.minfree = Some(table);
        self.upkeep.changed();
    }
}

/// Every `why` of `lowmemd_lmkd_rejected_total`.
const ALL_WHYS: [&[&str]; 3] = [
    &ProtocolError::WHYS,
    &super::registry::RegistryError::WHYS,
    &[
        "too_many_clients",
        "rate_limited",
        "untrusted_command",
        "idle_timeout",
    ],
];
