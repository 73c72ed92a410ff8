//! The socket's connections: who gets a slot, how fast each is read, when an idle one is
//! let go. Three slots as lmkd has, and a fourth kept for root, so that peers of other uids
//! cannot lock root's client out; an untrusted client idle for [`IDLE_TIMEOUT`] frees its
//! slot.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peer::{Bucket, Peer, Trust};
use super::registry::Owner;

/// lmkd serves at most this many data connections at once (root has one more).
pub const MAX_CLIENTS: usize = 3;
/// An untrusted client that sends nothing for this long is disconnected, so that idle
/// peers cannot hold every slot. Trusted clients may idle: system_server subscribes to
/// kills and may be quiet for hours.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Packets per second (and burst) read from a trusted client: Android's system_server sends
/// a few hundred PROCPRIO at boot and a handful per second after.
const TRUSTED_RATE: (u32, u32) = (1000, 1000);
/// Packets per second (and burst) read from an untrusted client.
const UNTRUSTED_RATE: (u32, u32) = (100, 100);

#[derive(Clone)]
pub struct Client {
    /// Connection number, unique for the daemon's life.
    pub conn: u64,
    pub fd: Arc<OwnedFd>,
    pub peer: Peer,
    bucket: Bucket,
    /// When its last packet was read.
    active: Instant,
    /// Whether it is over its rate now (counted once per episode).
    throttled: bool,
}

impl Client {
    /// What the registry records as the owner of what this client registers.
    pub fn owner(&self) -> Owner {
        Owner {
            conn: self.conn,
            peer: self.peer,
        }
    }
}

pub struct Clients {
    list: Vec<Client>,
    trust: Trust,
    idle_timeout: Duration,
    next_conn: u64,
}

impl Clients {
    pub fn new(trust: Trust, idle_timeout: Duration) -> Self {
        Clients {
            list: Vec::new(),
            trust,
            idle_timeout,
            next_conn: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.list.iter()
    }

    pub fn get(&self, conn: u64) -> Option<&Client> {
        self.list.iter().find(|c| c.conn == conn)
    }

    /// Takes a connection from a peer of `pid` and `uid` (SO_PEERCRED), or `None` when no
    /// slot is free for it.
    pub fn admit(&mut self, fd: OwnedFd, pid: i32, uid: u32, now: Instant) -> Option<&Client> {
        let others = self.list.iter().filter(|c| c.peer.uid != 0).count();
        let all_taken = self.list.len() > MAX_CLIENTS;
        if all_taken || (uid != 0 && others >= MAX_CLIENTS) {
            return None;
        }
        let peer = self.trust.peer(pid, uid);
        let (rate, burst) = if peer.trusted {
            TRUSTED_RATE
        } else {
            UNTRUSTED_RATE
        };
        self.list.push(Client {
            conn: self.next_conn,
            fd: Arc::new(fd),
            peer,
            bucket: Bucket::new(rate, burst, now),
            active: now,
            throttled: false,
        });
        self.next_conn += 1;
        self.list.last()
    }

    pub fn remove(&mut self, conn: u64) -> Option<Client> {
        let i = self.list.iter().position(|c| c.conn == conn)?;
        Some(self.list.remove(i))
    }

    /// The clients to poll: those with a token (the others' packets wait in their socket).
    pub fn readable(&mut self, now: Instant) -> Vec<Client> {
        (self.list.iter_mut())
            .filter_map(|c| c.bucket.ready(now).then(|| c.clone()))
            .collect()
    }

    /// Takes a token of `conn` for one packet; `None` when it has none or is gone.
    pub fn take(&mut self, conn: u64, now: Instant) -> Option<Client> {
        let c = self.list.iter_mut().find(|c| c.conn == conn)?;
        if !c.bucket.take(now) {
            return None;
        }
        c.active = now;
        Some(c.clone())
    }

    /// The clients that ran out of tokens since the last call (once per episode).
    pub fn newly_throttled(&mut self, now: Instant) -> Vec<Peer> {
        let mut newly = Vec::new();
        for c in &mut self.list {
            let over = !c.bucket.ready(now);
            if over && !c.throttled {
                newly.push(c.peer);
            }
            c.throttled = over;
        }
        newly
    }

    /// The untrusted clients idle for the timeout.
    pub fn idle(&self, now: Instant) -> Vec<u64> {
        (self.list.iter())
            .filter(|c| !c.peer.trusted && now.duration_since(c.active) >= self.idle_timeout)
            .map(|c| c.conn)
            .collect()
    }

    /// How long until a throttled client has a token or an idle one is due to go.
    pub fn wake_in(&self, now: Instant) -> Option<Duration> {
        let tokens = (self.list.iter())
            .filter(|c| c.throttled)
            .map(|c| c.bucket.wait());
        let idle = (self.list.iter())
            .filter(|c| !c.peer.trusted)
            .map(|c| (c.active + self.idle_timeout).saturating_duration_since(now));
        tokens.chain(idle).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn three_slots_for_anyone_and_one_more_for_root() {
        let now = Instant::now();
        let mut c = Clients::new(Trust::default(), IDLE_TIMEOUT);
        for _ in 0..3 {
            assert!(c.admit(fd(), 10, 65534, now).is_some());
        }
        assert!(c.admit(fd(), 11, 65534, now).is_none(), "a 4th peer");
        assert!(c.admit(fd(), 12, 0, now).unwrap().peer.trusted, "root");
        assert!(c.admit(fd(), 13, 0, now).is_none(), "all four taken");
        // Root first: the other uids still have their three.
        let mut c = Clients::new(Trust::default(), IDLE_TIMEOUT);
        assert!(c.admit(fd(), 12, 0, now).is_some());
        for _ in 0..3 {
            assert!(c.admit(fd(), 10, 65534, now).is_some());
        }
        assert!(c.admit(fd(), 13, 0, now).is_none());
    }

    #[test]
    fn untrusted_idle_clients_go_and_trusted_ones_stay() {
        let now = Instant::now();
        let mut c = Clients::new(Trust::new(vec![1000]), Duration::from_secs(5));
        let idle = c.admit(fd(), 10, 65534, now).unwrap().conn;
        let busy = c.admit(fd(), 11, 65534, now).unwrap().conn;
        c.admit(fd(), 12, 1000, now).unwrap();
        assert_eq!(c.wake_in(now), Some(Duration::from_secs(5)));
        let later = now + Duration::from_secs(4);
        assert!(c.take(busy, later).is_some());
        assert_eq!(c.idle(now + Duration::from_secs(5)), [idle]);
        assert!(c.remove(idle).is_some());
        assert!(c.idle(now + Duration::from_secs(8)).is_empty());
        assert_eq!(c.idle(now + Duration::from_secs(9)), [busy]);
    }

    #[test]
    fn a_client_over_its_rate_is_not_polled_and_counted_once() {
        let now = Instant::now();
        let mut c = Clients::new(Trust::default(), IDLE_TIMEOUT);
        let conn = c.admit(fd(), 10, 65534, now).unwrap().conn;
        let (_, burst) = UNTRUSTED_RATE;
        for _ in 0..burst {
            assert!(c.take(conn, now).is_some());
        }
        assert!(c.take(conn, now).is_none());
        assert!(c.readable(now).is_empty());
        assert_eq!(c.newly_throttled(now).len(), 1);
        assert!(c.newly_throttled(now).is_empty(), "once per episode");
        assert_eq!(c.wake_in(now), Some(Duration::from_millis(10)));
        assert_eq!(c.readable(now + Duration::from_millis(10)).len(), 1);
    }
}
