//! Who is on the other end of a connection and what they may do: the rules of the trust
//! boundary (DESIGN §2b), pure so that each is a unit test.
//!
//! A peer is named by the kernel (SO_PEERCRED, taken when it connected), never by what a
//! packet says. Root and the uids the operator names (`--lmkd-trusted-uid`, Android's
//! system_server) are trusted; every other peer may only do what it could do alone: act on
//! processes of its own uid, and never set an adj below what the process could set itself.

use std::time::{Duration, Instant};

/// A connected client as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub trusted: bool,
}

/// The uids trusted besides root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    uids: Vec<u32>,
}

impl Trust {
    pub fn new(uids: Vec<u32>) -> Self {
        Trust { uids }
    }

    pub fn peer(&self, pid: i32, uid: u32) -> Peer {
        Peer {
            pid,
            uid,
            trusted: uid == 0 || self.uids.contains(&uid),
        }
    }
}

/// Why no peer, trusted or not, may re-prioritise a process: PID 1 and lowmemd (adj 1000
/// makes either the kernel OOM killer's first pick), kernel threads (no adj of their own),
/// and a process at -1000 (whoever put it there meant it never to be killed).
pub fn untouchable(pid: i32, me: i32, kernel_thread: bool, adj: i16) -> Option<&'static str> {
    if pid == 1 {
        Some("PID 1")
    } else if pid == me {
        Some("lowmemd itself")
    } else if kernel_thread {
        Some("a kernel thread")
    } else if adj == -1000 {
        Some("at oom_score_adj -1000")
    } else {
        None
    }
}

/// What lowmemd remembers of its own writes to a registered process's adj.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The adj the process had before lowmemd first wrote it for an untrusted peer; `None`
    /// once a trusted peer wrote it.
    pub floor: Option<i16>,
    /// The adj lowmemd wrote last.
    pub adj: i16,
}

/// The lowest adj an untrusted peer may set on a process now at `current`.
///
/// The kernel lets a process without CAP_SYS_RESOURCE set any adj at or above its
/// `oom_score_adj_min`, which it does not export; a process's current adj is never below
/// it, so `current` is always safe. Lower than `current` is allowed in one case: back down
/// to where the process stood before lowmemd first raised it for an untrusted peer, when
/// nothing but lowmemd changed it since (its adj is still the one lowmemd wrote). That
/// undoes lowmemd's own raise (which, were lowmemd to hold CAP_SYS_RESOURCE, would also
/// have raised the kernel's minimum) and nothing anyone else did: a raise by root, or by a
/// trusted peer, stays a floor.
pub fn lowest_untrusted(current: i16, written: Option<Written>) -> i16 {
    match written {
        Some(Written {
            floor: Some(f),
            adj,
        }) if adj == current => f.min(current),
        _ => current,
    }
}

/// The floor a record keeps after an untrusted peer's write.
pub fn floor_after_untrusted(current: i16, written: Option<Written>) -> i16 {
    match written {
        Some(Written {
            floor: Some(f),
            adj,
        }) if adj == current => f,
        _ => current,
    }
}

/// A token bucket: a peer's packets are read at most `rate` per second after a burst. A
/// peer over its rate is not read until it has a token again (its own sends block or fail
/// with EAGAIN), so a flood costs the daemon nothing and loses nothing.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Whether a packet may be read now (takes its token).
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there, without taking it.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// How long until the next token.
    pub fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_named_uids_are_trusted_and_no_one_else() {
        let t = Trust::new(vec![1000]);
        assert!(t.peer(5, 0).trusted);
        assert!(t.peer(5, 1000).trusted);
        assert!(!t.peer(5, 65534).trusted);
        assert!(!Trust::default().peer(5, 1000).trusted);
    }

    #[test]
    fn pid_1_lowmemd_kernel_threads_and_minus_1000_are_untouchable() {
        assert_eq!(untouchable(1, 50, false, 0), Some("PID 1"));
        assert_eq!(untouchable(50, 50, false, 0), Some("lowmemd itself"));
        assert_eq!(untouchable(2, 50, true, 0), Some("a kernel thread"));
        assert_eq!(
            untouchable(70, 50, false, -1000),
            Some("at oom_score_adj -1000")
        );
        assert_eq!(untouchable(70, 50, false, -999), None);
    }

    #[test]
    fn an_untrusted_peer_goes_down_only_to_where_the_process_stood() {
        // First registration: no lower than now.
        assert_eq!(lowest_untrusted(500, None), 500);
        assert_eq!(floor_after_untrusted(500, None), 500);
        // lowmemd raised it to 800 for the peer: back to 500, not below.
        let ours = Some(Written {
            floor: Some(500),
            adj: 800,
        });
        assert_eq!(lowest_untrusted(800, ours), 500);
        assert_eq!(floor_after_untrusted(800, ours), 500);
        // Someone else moved it since (root raised it to 900): 900 is the floor now.
        assert_eq!(lowest_untrusted(900, ours), 900);
        assert_eq!(floor_after_untrusted(900, ours), 900);
        // The process lowered itself to 600 (it may): from there.
        assert_eq!(lowest_untrusted(600, ours), 600);
        // A trusted peer wrote last: its value is a floor.
        let trusted = Some(Written {
            floor: None,
            adj: 100,
        });
        assert_eq!(lowest_untrusted(100, trusted), 100);
    }

    #[test]
    fn a_bucket_gives_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.ready(t0));
        assert_eq!(b.wait(), Duration::from_millis(100));
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(100)));
        // Idle for a minute: the burst again, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }
}
