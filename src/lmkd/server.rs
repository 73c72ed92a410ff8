//! The socket's thread: accepts up to three clients, reads one packet at a time, answers as
//! lmkd does. A client is never waited on: replies and notifications are sent with
//! MSG_DONTWAIT, and nothing the kill path needs is held while a client is served.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use crate::report::metrics::Metrics;

use super::Hub;
use super::protocol::{self, Command, MAX_PACKET, ProtocolError, Target};
use super::registry::{Owner, Registry};
use super::snapshot::Publisher;

/// lmkd serves at most this many data connections at once.
pub const MAX_CLIENTS: usize = 3;
/// The socket's thread wakes at least this often to drop the records of exited processes.
const TICK: Duration = Duration::from_secs(2);
/// LMK_TARGET is taken at most once per this long (as lmkd).
const TARGET_EVERY: Duration = Duration::from_secs(1);
/// One log line per kind of bad input per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Client {
    conn: u64,
    fd: Arc<OwnedFd>,
    pid: i32,
    uid: u32,
}

/// The LMK_TARGET table in force and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinfreeTable {
    pub client_pid: i32,
    pub targets: Vec<Target>,
}

impl MinfreeTable {
    /// "kill adj ≥ 900 below 72 MiB free+file, adj ≥ 950 below 90 MiB free+file".
    pub fn describe(&self, page_kib: u64) -> String {
        self.targets
            .iter()
            .map(|t| {
                format!(
                    "kill adj ≥ {} below {} MiB free+file",
                    t.adj,
                    u64::from(t.minfree_pages) * page_kib / 1024
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

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
    clients: Vec<Client>,
    next_conn: u64,
    boot_completed: bool,
    minfree: Option<MinfreeTable>,
    last_target: Option<Instant>,
    warned: HashMap<&'static str, (Instant, u64)>,
    /// Writes the registrations for `lowmemd rank`, when there is somewhere to.
    publisher: Option<Publisher>,
    /// Records left after the last pass, to see exits.
    last_count: usize,
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
            registry,
            hub,
            metrics,
            controls,
            clients: Vec::new(),
            next_conn: 1,
            boot_completed: false,
            minfree: None,
            last_target: None,
            warned: HashMap::new(),
            publisher: None,
            last_count: 0,
        }
    }

    /// Publishes the registrations for `lowmemd rank` through `publisher`.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    pub fn run(mut self) {
        self.publish();
        loop {
            let mut fds = Vec::with_capacity(1 + self.clients.len());
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            for c in &self.clients {
                fds.push(PollFd::new(&*c.fd, PollFlags::IN));
            }
            // Wake now and then to drop records of processes that exited, and when the
            // snapshot for `lowmemd rank` is due.
            let wait = (self.publisher.as_ref())
                .and_then(|p| p.due_in(Instant::now()))
                .map_or(TICK, |d| d.min(TICK));
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
            let mut gone = Vec::new();
            let served: Vec<Client> = (self.clients.iter().enumerate())
                .filter(|(i, _)| ready[i + 1])
                .map(|(_, c)| c.clone())
                .collect();
            for c in &served {
                if !self.serve(c) {
                    gone.push(c.conn);
                }
            }
            for conn in gone {
                self.disconnect(conn);
            }
            if ready[0] {
                self.accept();
            }
            let left = self.registry.prune();
            self.metrics.lmkd_registered.set(left as i64);
            if let Some(p) = &mut self.publisher {
                // Exits show here (commands mark it in `publish`).
                if left != self.last_count {
                    p.mark();
                }
                let registry = &self.registry;
                p.flush(Instant::now(), || registry.entries());
            }
            self.last_count = left;
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
            let (pid, uid) = match rustix::net::sockopt::socket_peercred(&fd) {
                Ok(c) => (c.pid.as_raw_nonzero().get(), c.uid.as_raw()),
                Err(_) => (0, u32::MAX),
            };
            if self.clients.len() >= MAX_CLIENTS {
                self.reject(
                    "too_many_clients",
                    format_args!(
                        "refused a connection from pid {pid} uid {uid}: already {MAX_CLIENTS} clients"
                    ),
                );
                continue;
            }
            let conn = self.next_conn;
            self.next_conn += 1;
            log::info!("lmkd client connected: pid {pid} uid {uid} (connection {conn})");
            self.clients.push(Client {
                conn,
                fd: Arc::new(fd),
                pid,
                uid,
            });
            self.metrics.lmkd_clients.set(self.clients.len() as i64);
            self.publish();
        }
    }

    fn disconnect(&mut self, conn: u64) {
        if let Some(c) = self.clients.iter().find(|c| c.conn == conn) {
            log::info!(
                "lmkd client pid {} disconnected; its registrations stay, unowned",
                c.pid
            );
        }
        self.clients.retain(|c| c.conn != conn);
        self.registry.disown(conn);
        self.hub.forget(conn);
        self.metrics.lmkd_clients.set(self.clients.len() as i64);
        self.publish();
    }

    /// Reads and answers one packet; false when the client hung up.
    fn serve(&mut self, c: &Client) -> bool {
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
                self.command(c, cmd);
            }
            Err(e) => self.bad_packet(c, &e),
        }
        true
    }

    fn bad_packet(&mut self, c: &Client, e: &ProtocolError) {
        self.reject(e.why(), format_args!("client pid {}: {e}", c.pid));
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
            log::debug!("lmkd client pid {}: reply not sent: {e}", c.pid);
        }
    }

    fn owner(c: &Client) -> Owner {
        Owner {
            conn: c.conn,
            pid: c.pid,
        }
    }

    fn command(&mut self, c: &Client, cmd: Command) {
        match cmd {
            Command::ProcPrio(p) => self.register(c, &[p]),
            Command::ProcsPrio(ps) => self.register(c, &ps),
            Command::ProcRemove { pid } => {
                if let Err(e) = self.registry.remove(pid, Self::owner(c)) {
                    self.reject(
                        e.why(),
                        format_args!("client pid {}: LMK_PROCREMOVE: {e}", c.pid),
                    );
                }
            }
            Command::ProcPurge => {
                let n = self.registry.purge(c.conn);
                log::info!("lmkd client pid {}: purged its {n} registrations", c.pid);
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
                let ok = (self.controls.reload)();
                self.reply(c, &[protocol::LMK_UPDATE_PROPS, if ok { 0 } else { -1 }]);
            }
            Command::StartMonitoring => {}
            Command::BootCompleted => {
                let already = std::mem::replace(&mut self.boot_completed, true);
                self.reply(c, &[protocol::LMK_BOOT_COMPLETED, i32::from(already)]);
            }
            Command::Target(targets) => self.target(c, targets),
        }
        self.metrics
            .lmkd_registered
            .set(self.registry.prune() as i64);
        self.publish();
    }

    fn register(&mut self, c: &Client, prios: &[protocol::Prio]) {
        for p in prios {
            match self.registry.register(p, Self::owner(c)) {
                Ok(()) => log::debug!(
                    "lmkd client pid {} (uid {}): pid {} uid {} adj {}",
                    c.pid,
                    c.uid,
                    p.pid,
                    p.uid,
                    p.adj
                ),
                Err(e) => self.reject(
                    e.why(),
                    format_args!("client pid {}: LMK_PROCPRIO: {e}", c.pid),
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
                    c.pid
                ),
            );
            return;
        }
        self.last_target = Some(now);
        let table = MinfreeTable {
            client_pid: c.pid,
            targets,
        };
        let page_kib = rustix::param::page_size() as u64 / 1024;
        log::info!(
            "minfree from client pid {}: {}",
            c.pid,
            table.describe(page_kib)
        );
        let kib: Vec<(u64, i16)> = table
            .targets
            .iter()
            .map(|t| (u64::from(t.minfree_pages) * page_kib, t.adj))
            .collect();
        (self.controls.set_minfree)(c.pid, &kib);
        self.minfree = Some(table);
        self.publish();
    }

    /// The socket's state in `/status`; the snapshot for `lowmemd rank` is due.
    fn publish(&mut self) {
        if let Some(p) = &mut self.publisher {
            p.mark();
        }
        let page_kib = rustix::param::page_size() as u64 / 1024;
        let clients: Vec<_> = self
            .clients
            .iter()
            .map(|c| serde_json::json!({ "pid": c.pid, "uid": c.uid }))
            .collect();
        let minfree = self.minfree.as_ref().map(|m| {
            serde_json::json!({
                "client_pid": m.client_pid,
                "describe": m.describe(page_kib),
                "targets": m.targets.iter().map(|t| serde_json::json!({
                    "minfree_pages": t.minfree_pages,
                    "minfree_kib": u64::from(t.minfree_pages) * page_kib,
                    "adj": t.adj,
                })).collect::<Vec<_>>(),
            })
        });
        self.metrics.set_lmkd_status(serde_json::json!({
            "clients": clients,
            "registered": self.registry.entries(),
            "minfree": minfree,
        }));
    }
}

/// Every `why` of `lowmemd_lmkd_rejected_total`.
const ALL_WHYS: [&[&str]; 3] = [
    &ProtocolError::WHYS,
    &super::registry::RegistryError::WHYS,
    &["too_many_clients", "rate_limited"],
];
