//! The processes clients registered (LMK_PROCPRIO), each pinned by a pidfd: a record names
//! one incarnation, and a recycled pid is never taken for it (the pidfd of an exited
//! process is readable, and the starttime must match too). Shared by the socket thread,
//! which writes it, and the pipeline, which reads it through `Registrations` without ever
//! waiting on a client.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::pipeline::registered::{Registered, Registrations};
use crate::procs::{PF_KTHREAD, ProcRoot};

pub use super::error::RegistryError;
use super::peer::{self, Peer, Written};
use super::procdir::{ProcDir, exited};
use super::protocol::{Prio, ProcType};

/// The connection that owns a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Connection number, unique for the daemon's life.
    pub conn: u64,
    /// The client, from SO_PEERCRED.
    pub peer: Peer,
}

/// The fds kept for everything but registrations and the process cache: /proc and the
/// scope's files, the PSI triggers, the sockets, a kill's pidfds (the victim, at most 16
/// victims not yet gone, a batch of 16 found dying: `pipeline::ledger`, `pipeline::kill`;
/// a `kill = "cgroup"` level pins every member of the victim's app besides, and spares the
/// app when the fds run out). `procs::cache_capacity` keeps the same 128 back.
pub const FD_RESERVE: u64 = 128;
/// At most this many registrations under any fd limit (as many as the process cache).
pub const MAX_REGISTRATIONS: usize = 4096;

/// How many registrations (one pidfd each) an fd limit allows: a fifth of what the reserve
/// leaves, so that the process cache (four fds per process) keeps as many processes as
/// there may be registrations. `run` gives the cache the rest.
pub fn capacity(fd_limit: u64) -> usize {
    ((fd_limit.saturating_sub(FD_RESERVE) / 5) as usize).min(MAX_REGISTRATIONS)
}

struct Record {
    pidfd: OwnedFd,
    starttime: u64,
    uid: u32,
    adj: i16,
    ptype: ProcType,
    /// `None` once the owning connection closed: any client may claim it.
    owner: Option<Owner>,
    /// Where the process stood before lowmemd first raised it for an untrusted peer
    /// (`peer::lowest_untrusted`); `None` after a trusted peer's write.
    floor: Option<i16>,
}

/// One record, for logs, `/status` and the snapshot `lowmemd rank` reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub pid: i32,
    /// The incarnation: clock ticks after boot, as in /proc/PID/stat.
    pub starttime: u64,
    pub uid: u32,
    pub adj: i16,
    pub service: bool,
    pub owner_pid: Option<i32>,
}

pub struct Registry {
    proc: ProcRoot,
    table: Mutex<HashMap<i32, Record>>,
    /// At most this many records (each holds a pidfd: see [`capacity`]).
    cap: usize,
    /// lowmemd's own pid, which no client may re-prioritise.
    me: i32,
}

impl Registry {
    pub fn new(proc: ProcRoot, cap: usize) -> Self {
        Registry {
            proc,
            table: Mutex::new(HashMap::new()),
            cap,
            me: std::process::id() as i32,
        }
    }

    /// Validates and applies one LMK_PROCPRIO record: the process exists, runs as the uid
    /// the packet says, is one the client may act on (its own, unless the client is
    /// trusted; never PID 1, lowmemd, a kernel thread or an adj -1000 process) and the adj
    /// is one it may set; then its oom_score_adj is written and it is pinned. All file and
    /// syscall work happens before the table's lock is taken.
    pub fn register(&self, prio: &Prio, owner: Owner) -> Result<(), RegistryError> {
        let pid = prio.pid;
        if let Some(what) = peer::untouchable(pid, self.me, false, 0) {
            return Err(RegistryError::Protected { pid, what });
        }
        self.check_room(pid, owner.peer.trusted)?;
        let raw = Pid::from_raw(pid).ok_or(RegistryError::NoSuchProcess(pid))?;
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
            Errno::SRCH => RegistryError::NoSuchProcess(pid),
            source => RegistryError::Pidfd { pid, source },
        })?;
        let dir = ProcDir::open(&self.proc, pid, &pidfd)?;
        let actual = dir.real_uid()?;
        if actual != prio.uid {
            return Err(RegistryError::WrongUid {
                pid,
                claimed: prio.uid,
                actual,
            });
        }
        let stat = dir.stat()?;
        let current = dir.adj()?;
        if let Some(what) = peer::untouchable(pid, self.me, stat.flags & PF_KTHREAD != 0, current) {
            return Err(RegistryError::Protected { pid, what });
        }
        let me = owner.peer;
        if !me.trusted && actual != me.uid {
            return Err(RegistryError::NotPeersProcess {
                pid,
                actual,
                peer: me.uid,
            });
        }
        let written = match self.owned_by_other(pid, stat.starttime, owner) {
            Err(o) => {
                return Err(RegistryError::NotOwner {
                    pid,
                    owner: o.peer.pid,
                });
            }
            Ok(w) => w,
        };
        let floor = if me.trusted {
            None
        } else {
            let lowest = peer::lowest_untrusted(current, written);
            if prio.adj < i32::from(lowest) {
                return Err(RegistryError::BelowFloor {
                    pid,
                    adj: prio.adj,
                    lowest,
                });
            }
            Some(peer::floor_after_untrusted(current, written))
        };
        dir.write_adj(prio.adj)?;
        let rec = Record {
            pidfd,
            starttime: stat.starttime,
            uid: actual,
            adj: prio.adj as i16,
            ptype: prio.ptype,
            owner: Some(owner),
            floor,
        };
        self.table.lock().insert(pid, rec);
        Ok(())
    }

    /// Refuses a new record when the table is full (before a pidfd is opened for it).
    /// Untrusted clients' records (those with a floor) may fill half of it together, so
    /// that they cannot leave system_server no room.
    fn check_room(&self, pid: i32, trusted: bool) -> Result<(), RegistryError> {
        let mut t = self.table.lock();
        if t.contains_key(&pid) {
            return Ok(());
        }
        let cap = if trusted { self.cap } else { self.cap / 2 };
        let held = |t: &HashMap<i32, Record>| {
            (t.values())
                .filter(|r| trusted || r.floor.is_some())
                .count()
        };
        if held(&t) >= cap {
            t.retain(|_, r| !exited(&r.pidfd));
            if held(&t) >= cap {
                return Err(RegistryError::Full { pid, cap });
            }
        }
        Ok(())
    }

    /// The owner of a live record of this incarnation when it is another connection
    /// (`Err`); else what lowmemd wrote for the record, if there is one.
    fn owned_by_other(
        &self,
        pid: i32,
        starttime: u64,
        me: Owner,
    ) -> Result<Option<Written>, Owner> {
        let t = self.table.lock();
        let Some(r) = t.get(&pid) else {
            return Ok(None);
        };
        let live = r.starttime == starttime && !exited(&r.pidfd);
        if let Some(o) = r.owner.filter(|o| live && o.conn != me.conn) {
            return Err(o);
        }
        Ok(live.then_some(Written {
            floor: r.floor,
            adj: r.adj,
        }))
    }

    /// LMK_PROCREMOVE: only the owner (or anyone, for an unowned record) may; an untrusted
    /// client only for a process of its own uid (dropping a registration can take a
    /// process out of a `registered`-only policy's candidates).
    pub fn remove(&self, pid: i32, me: Owner) -> Result<(), RegistryError> {
        let mut t = self.table.lock();
        let Some(r) = t.get(&pid) else {
            return Err(RegistryError::NotRegistered(pid));
        };
        if !me.peer.trusted && r.uid != me.peer.uid {
            return Err(RegistryError::NotPeersProcess {
                pid,
                actual: r.uid,
                peer: me.peer.uid,
            });
        }
        if !exited(&r.pidfd)
            && let Some(o) = r.owner.filter(|o| o.conn != me.conn)
        {
            return Err(RegistryError::NotOwner {
                pid,
                owner: o.peer.pid,
            });
        }
        t.remove(&pid);
        Ok(())
    }

    /// LMK_PROCPURGE: drops the sender's records; returns how many.
    pub fn purge(&self, conn: u64) -> usize {
        let mut t = self.table.lock();
        let before = t.len();
        t.retain(|_, r| r.owner.is_none_or(|o| o.conn != conn));
        before - t.len()
    }

    /// A connection closed: its records stay, unowned, for a restarted client to claim.
    pub fn disown(&self, conn: u64) {
        for r in self.table.lock().values_mut() {
            if r.owner.is_some_and(|o| o.conn == conn) {
                r.owner = None;
            }
        }
    }

    /// Drops the records of processes that exited; returns how many are left.
    pub fn prune(&self) -> usize {
        let mut t = self.table.lock();
        t.retain(|_, r| !exited(&r.pidfd));
        t.len()
    }

    /// The live records, by pid.
    pub fn entries(&self) -> Vec<Entry> {
        let mut t = self.table.lock();
        t.retain(|_, r| !exited(&r.pidfd));
        let mut v: Vec<Entry> = t
            .iter()
            .map(|(&pid, r)| Entry {
                pid,
                starttime: r.starttime,
                uid: r.uid,
                adj: r.adj,
                service: r.ptype == ProcType::Service,
                owner_pid: r.owner.map(|o| o.peer.pid),
            })
            .collect();
        v.sort_by_key(|e| e.pid);
        v
    }
}

impl Registrations for Registry {
    fn lookup(&self, pid: i32, starttime: u64) -> Option<Registered> {
        let mut t = self.table.lock();
        let r = t.get(&pid)?;
        // An exited process's record is stale: its pid may already name another process.
        if exited(&r.pidfd) {
            t.remove(&pid);
            return None;
        }
        (r.starttime == starttime).then_some(Registered {
            uid: r.uid,
            owner_pid: r.owner.map(|o| o.peer.pid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn me(conn: u64) -> Owner {
        Owner {
            conn,
            peer: Peer {
                pid: 1000 + conn as i32,
                uid: 0,
                trusted: true,
            },
        }
    }

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn prio(pid: i32, adj: i32) -> Prio {
        Prio {
            pid,
            uid: rustix::process::getuid().as_raw(),
            adj,
            ptype: ProcType::App,
        }
    }

    fn starttime(pid: i32) -> u64 {
        ProcRoot::default()
            .read_stat(pid, &mut Vec::new())
            .unwrap()
            .starttime
    }

    #[test]
    fn registers_sets_the_adj_and_forgets_the_process_once_it_exits() {
        let reg = Registry::new(ProcRoot::default(), 16);
        let mut child = sleeper();
        let pid = child.id() as i32;
        reg.register(&prio(pid, 900), me(1)).unwrap();
        let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        assert_eq!(adj.trim(), "900");
        let st = starttime(pid);
        assert_eq!(
            reg.lookup(pid, st),
            Some(Registered {
                uid: rustix::process::getuid().as_raw(),
                owner_pid: Some(1001)
            })
        );
        // Another incarnation under the same pid is not the registered one.
        assert_eq!(reg.lookup(pid, st + 1), None);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(reg.lookup(pid, st), None);
        assert!(reg.entries().is_empty());
    }

    #[test]
    fn refuses_a_wrong_uid_and_a_missing_pid() {
        let reg = Registry::new(ProcRoot::default(), 16);
        let mut child = sleeper();
        let pid = child.id() as i32;
        let mut p = prio(pid, 900);
        p.uid = p.uid.wrapping_add(1);
        assert!(matches!(
            reg.register(&p, me(1)),
            Err(RegistryError::WrongUid { .. })
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        let e = reg.register(&prio(pid, 900), me(1)).unwrap_err();
        assert_eq!(e.why(), "no_such_process", "{e}");
        assert!(reg.entries().is_empty());
    }

    #[test]
    fn only_the_owner_removes_and_a_disowned_record_can_be_claimed() {
        let reg = Registry::new(ProcRoot::default(), 16);
        let mut child = sleeper();
        let pid = child.id() as i32;
        reg.register(&prio(pid, 900), me(1)).unwrap();
        assert_eq!(reg.remove(pid, me(2)).unwrap_err().why(), "not_owner");
        assert_eq!(
            reg.register(&prio(pid, 950), me(2)).unwrap_err().why(),
            "not_owner"
        );
        reg.disown(1);
        assert_eq!(reg.entries()[0].owner_pid, None);
        reg.register(&prio(pid, 950), me(2)).unwrap();
        assert_eq!(reg.entries()[0].owner_pid, Some(1002));
        assert_eq!(reg.purge(1), 0);
        assert_eq!(reg.purge(2), 1);
        assert_eq!(reg.remove(pid, me(2)).unwrap_err().why(), "not_registered");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn untrusted(conn: u64, uid: u32) -> Owner {
        Owner {
            conn,
            peer: Peer {
                pid: 2000,
                uid,
                trusted: false,
            },
        }
    }

    fn adj(pid: i32) -> String {
        let a = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        a.trim().to_string()
    }

    #[test]
    fn an_untrusted_client_acts_on_its_own_uid_only_and_never_below_where_a_process_stood() {
        let reg = Registry::new(ProcRoot::default(), 16);
        let mut child = sleeper();
        let pid = child.id() as i32;
        let uid = rustix::process::getuid().as_raw();
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), "500").unwrap();
        let stranger = untrusted(1, uid.wrapping_add(1));
        let e = reg.register(&prio(pid, 900), stranger).unwrap_err();
        assert_eq!(e.why(), "not_peers_process", "{e}");
        let own = untrusted(2, uid);
        let e = reg.register(&prio(pid, 499), own).unwrap_err();
        assert_eq!(e.why(), "adj_below_floor", "{e}");
        assert_eq!(adj(pid), "500");
        reg.register(&prio(pid, 900), own).unwrap();
        reg.register(&prio(pid, 500), own).unwrap();
        assert_eq!(adj(pid), "500");
        // Someone else raised it: that is the floor now.
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), "700").unwrap();
        assert_eq!(
            reg.register(&prio(pid, 600), own).unwrap_err().why(),
            "adj_below_floor"
        );
        // Removing: only a record of its own uid.
        reg.disown(2);
        assert_eq!(
            reg.remove(pid, stranger).unwrap_err().why(),
            "not_peers_process"
        );
        reg.remove(pid, own).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn pid_1_and_lowmemd_are_refused_to_everyone_and_the_table_has_a_cap() {
        let reg = Registry::new(ProcRoot::default(), 1);
        let me_pid = std::process::id() as i32;
        for pid in [1, me_pid] {
            let e = reg.register(&prio(pid, 1000), me(1)).unwrap_err();
            assert_eq!(e.why(), "protected_process", "{e}");
        }
        let (mut a, mut b) = (sleeper(), sleeper());
        reg.register(&prio(a.id() as i32, 900), me(1)).unwrap();
        let e = reg.register(&prio(b.id() as i32, 900), me(1)).unwrap_err();
        assert_eq!(e.why(), "registry_full", "{e}");
        // Re-registering one already in is no new record.
        reg.register(&prio(a.id() as i32, 950), me(1)).unwrap();
        // An exited process's record makes room.
        a.kill().unwrap();
        a.wait().unwrap();
        reg.register(&prio(b.id() as i32, 900), me(1)).unwrap();
        b.kill().unwrap();
        b.wait().unwrap();
    }

    #[test]
    fn untrusted_clients_fill_half_the_table_and_leave_trusted_ones_room() {
        let reg = Registry::new(ProcRoot::default(), 2);
        let uid = rustix::process::getuid().as_raw();
        let (mut a, mut b, mut c) = (sleeper(), sleeper(), sleeper());
        let pid = |c: &std::process::Child| c.id() as i32;
        reg.register(&prio(pid(&a), 900), untrusted(1, uid))
            .unwrap();
        let e = reg
            .register(&prio(pid(&b), 900), untrusted(1, uid))
            .unwrap_err();
        assert_eq!(e.why(), "registry_full", "{e}");
        reg.register(&prio(pid(&b), 900), me(2)).unwrap();
        assert_eq!(
            reg.register(&prio(pid(&c), 900), me(2)).unwrap_err().why(),
            "registry_full"
        );
        for p in [&mut a, &mut b, &mut c] {
            p.kill().unwrap();
            p.wait().unwrap();
        }
    }

    #[test]
    fn the_fd_budget_leaves_the_reserve_and_the_cache_its_share() {
        assert_eq!(capacity(1600), 294);
        assert_eq!(capacity(100), 0);
        assert_eq!(capacity(1 << 20), MAX_REGISTRATIONS);
        let limit = 1600;
        let cache = crate::procs::cache_capacity(limit - capacity(limit) as u64);
        assert!(capacity(limit) + 4 * cache + FD_RESERVE as usize <= limit as usize);
    }
}
