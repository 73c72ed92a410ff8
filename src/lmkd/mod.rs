//! lmkd's client socket: Android-style app managers (written against AOSP's `lmkd.h`) push
//! process priorities, kill thresholds and subscriptions to lowmemd as they would to lmkd.
//!
//! - `protocol`: the packets, parsed and encoded (pure).
//! - `peer`: who a client is (SO_PEERCRED) and what it may do: trust, floors, rate limits.
//! - `procdir`: a registered process read and written through its pinned /proc directory.
//! - `registry`: the pidfd-pinned table of registered processes, read by the pipeline.
//! - `clients`: the connections: slots (one kept for root), read rates, idle timeouts.
//! - `socket`: the listening socket: created, or inherited from init or systemd.
//! - `server`: the socket's own thread, one packet at a time, never blocking on a client.
//! - `upkeep`: on timers, the registry pruned, `/status` rebuilt, the snapshot written.
//! - `snapshot`: the registrations published to a file for `lowmemd rank`.
//! - this file: the `Hub` the kill path tells of kills (counts per adj, subscribers'
//!   notifications sent without blocking), and the observer that feeds it.

pub mod clients;
pub mod error;
pub mod peer;
mod procdir;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod socket;
pub mod upkeep;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rustix::net::SendFlags;

use crate::clock::monotonic_ms;
use crate::pipeline::outcome::{Ending, Freeze, Kill, Observer, Pageout, Skip, Thawed};
use crate::policy::Policy;
use crate::report::metrics::Metrics;
use crate::sample::MemSnapshot;
use protocol::{Event, KillStat};

struct Subscriber {
    conn: u64,
    fd: Arc<OwnedFd>,
    kill: bool,
    stat: bool,
}

/// What the kill path and the socket thread share besides the registry.
pub struct Hub {
    /// Kills so far, by the victim's oom_score_adj (LMK_GETKILLCNT).
    kills: Mutex<BTreeMap<i16, u64>>,
    subscribers: Mutex<Vec<Subscriber>>,
    metrics: Arc<Metrics>,
    /// When a full subscriber buffer was last warned about (monotonic ms).
    dropped_warned_ms: AtomicU64,
}

/// One warning about dropped notifications per this long.
const DROP_WARN_EVERY_MS: u64 = 10_000;

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            kills: Mutex::new(BTreeMap::new()),
            subscribers: Mutex::new(Vec::new()),
            metrics,
            dropped_warned_ms: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self, conn: u64, fd: Arc<OwnedFd>, event: Event) {
        let mut subs = self.subscribers.lock();
        let i = match subs.iter().position(|s| s.conn == conn) {
            Some(i) => i,
            None => {
                subs.push(Subscriber {
                    conn,
                    fd,
                    kill: false,
                    stat: false,
                });
                subs.len() - 1
            }
        };
        match event {
            Event::Kill => subs[i].kill = true,
            Event::Stat => subs[i].stat = true,
        }
    }

    pub fn forget(&self, conn: u64) {
        self.subscribers.lock().retain(|s| s.conn != conn);
    }

    /// LMK_GETKILLCNT: kills of processes whose adj was in `min..=max`.
    pub fn kill_count(&self, min: i32, max: i32) -> u64 {
        if min > max {
            return 0;
        }
        let (lo, hi) = (min.clamp(-1000, 1000) as i16, max.clamp(-1000, 1000) as i16);
        self.kills.lock().range(lo..=hi).map(|(_, n)| n).sum()
    }

    /// Counts a kill and tells the subscribers: never waits (MSG_DONTWAIT); a full buffer
    /// drops the packet and counts it.
    fn killed(&self, k: &Kill<'_>) {
        let v = k.victim;
        *self.kills.lock().entry(v.oom_score_adj).or_default() += 1;
        let prockill = v.registered.map(|r| protocol::prockill(v.pid, r.uid));
        let stat = protocol::kill_stat(&KillStat {
            pgfault: -1,
            pgmajfault: -1,
            rss_bytes: (v.rss_kib * 1024) as i64,
            cache_bytes: -1,
            swap_bytes: (v.swap_kib * 1024) as i64,
            start_time_ns: -1,
            uid: v.registered.map_or(-1, |r| r.uid as i32),
            oom_score: i32::from(v.oom_score_adj),
            min_oom_score: i32::from(k.level.min_adj),
            free_mem_kib: k.available_at_kill_kib as i64,
            free_swap_kib: k.sample.mem.swap_free_kib as i64,
            kill_reason: protocol::KILL_REASON_LOW_MEM,
            thrashing: k.sample.thrashing_pct.map_or(0, |t| t as i32),
            max_thrashing: 0,
            taskname: &v.comm,
        });
        let subs = self.subscribers.lock();
        for s in subs.iter() {
            if s.kill
                && let Some(p) = &prockill
            {
                self.send(s, p);
            }
            if s.stat {
                self.send(s, &stat);
            }
        }
    }

    fn send(&self, s: &Subscriber, packet: &[u8]) {
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        match rustix::net::send(&*s.fd, packet, flags) {
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => {
                self.metrics.lmkd_dropped.inc();
                let now = monotonic_ms();
                let last = self.dropped_warned_ms.load(Ordering::Relaxed);
                if last == 0 || now.saturating_sub(last) >= DROP_WARN_EVERY_MS {
                    self.dropped_warned_ms.store(now, Ordering::Relaxed);
                    log::warn!(
                        "lmkd client connection {} does not read its kill notifications: dropping them (lowmemd_lmkd_notifications_dropped_total)",
                        s.conn
                    );
                }
            }
            // Gone: the socket thread sees the hang-up and forgets it.
            Err(_) => {}
        }
    }
}

/// The pipeline's observer with the lmkd hub told of every kill (after the report's own
/// records): the observer `run` hands the pipeline when the socket is served.
pub struct Notifying {
    pub inner: Box<dyn Observer>,
    pub hub: Arc<Hub>,
}

impl Observer for Notifying {
    fn sampled(&self, mem: &MemSnapshot, level: Option<&str>, policy: &Policy) {
        self.inner.sampled(mem, level, policy)
    }
    fn recovered(&self) {
        self.inner.recovered()
    }
    fn ranked(&self, took: Duration, candidates: usize) {
        self.inner.ranked(took, candidates)
    }
    fn skipped(&self, why: Skip) {
        self.inner.skipped(why)
    }
    fn killed(&self, kill: &Kill<'_>) {
        self.inner.killed(kill);
        if kill.ending != Ending::DryRun {
            self.hub.killed(kill);
        }
    }
    fn paged_out(&self, pageout: &Pageout<'_>) {
        self.inner.paged_out(pageout)
    }
    fn froze(&self, freeze: &Freeze<'_>) {
        self.inner.froze(freeze)
    }
    fn thawed(&self, thaw: &Thawed<'_>) {
        self.inner.thawed(thaw)
    }
}
