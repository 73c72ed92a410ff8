//! What the socket's thread keeps up to date besides answering clients: the registry pruned
//! of exited processes, `/status` and the registered gauge, the snapshot for `lowmemd rank`,
//! and policy reloads asked for with LMK_UPDATE_PROPS. On timers, never per packet: each
//! walks the whole registry (per packet, 1,000 registrations and a GETKILLCNT flood took
//! 11 s of daemon CPU in 12, sample→kill 6 ms → 11–32 ms), and 5,000 LMK_UPDATE_PROPS were
//! 4,723 reloads and as many log lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::report::metrics::Metrics;

use super::clients::Clients;
use super::protocol::Target;
use super::registry::{Entry, Registry};
use super::snapshot::Publisher;

/// Exited processes' records are dropped at least this often.
const TICK: Duration = Duration::from_secs(2);
/// `/status` and the registered gauge are rebuilt at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// LMK_UPDATE_PROPS reloads the policy at most once per this long; requests in between are
/// answered together by the next reload.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

pub struct Upkeep {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Writes the registrations for `lowmemd rank`, when there is somewhere to.
    publisher: Option<Publisher>,
    /// Records left after the last prune, to see exits.
    last_count: usize,
    next_prune: Instant,
    /// `/status` is out of date.
    dirty: bool,
    last_refresh: Option<Instant>,
}

impl Upkeep {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Upkeep {
            registry,
            metrics,
            publisher: None,
            last_count: 0,
            next_prune: Instant::now(),
            dirty: true,
            last_refresh: None,
        }
    }

    pub fn set_publisher(&mut self, publisher: Publisher) {
        self.publisher = Some(publisher);
    }

    /// The registrations or the socket's state changed.
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// How long until something is due.
    pub fn wake_in(&self, now: Instant) -> Duration {
        let mut wait = self.next_prune.saturating_duration_since(now).min(TICK);
        if self.dirty {
            let due = (self.last_refresh).map_or(now, |t| t + REFRESH_EVERY);
            wait = wait.min(due.saturating_duration_since(now));
        }
        if let Some(d) = self.publisher.as_ref().and_then(|p| p.due_in(now)) {
            wait = wait.min(d);
        }
        wait
    }

    /// Does what is due: prunes every [`TICK`]; rebuilds `/status` from `status` (given
    /// the live registrations) at most every [`REFRESH_EVERY`] when something changed;
    /// writes the snapshot when its own schedule says.
    pub fn run(&mut self, now: Instant, status: impl FnOnce(Vec<Entry>) -> serde_json::Value) {
        if now >= self.next_prune {
            self.next_prune = now + TICK;
            let left = self.registry.prune();
            if left != self.last_count {
                self.dirty = true;
            }
            self.last_count = left;
        }
        let due = self.last_refresh.is_none_or(|t| now >= t + REFRESH_EVERY);
        if self.dirty && due {
            self.dirty = false;
            self.last_refresh = Some(now);
            if let Some(p) = &mut self.publisher {
                p.mark();
            }
            let registered = self.registry.entries();
            self.metrics.lmkd_registered.set(registered.len() as i64);
            self.metrics.set_lmkd_status(status(registered));
        }
        if let Some(p) = &mut self.publisher {
            let registry = &self.registry;
            p.flush(now, || registry.entries());
        }
    }
}

/// The LMK_UPDATE_PROPS waiting for a reload, by connection.
#[derive(Default)]
pub struct Reloads {
    waiting: Vec<(u64, u32)>,
    last: Option<Instant>,
}

impl Reloads {
    pub fn ask(&mut self, conn: u64) {
        match self.waiting.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.waiting.push((conn, 1)),
        }
    }

    pub fn forget(&mut self, conn: u64) {
        self.waiting.retain(|(c, _)| *c != conn);
    }

    pub fn wake_in(&self, now: Instant) -> Option<Duration> {
        if self.waiting.is_empty() {
            return None;
        }
        let due = self.last.map_or(now, |t| t + RELOAD_EVERY);
        Some(due.saturating_duration_since(now))
    }

    /// When a reload is due: the requests it answers, as (connection, how many).
    pub fn due(&mut self, now: Instant) -> Option<Vec<(u64, u32)>> {
        if self.wake_in(now) != Some(Duration::ZERO) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.waiting))
    }
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

    /// The table in `/status`.
    pub fn to_json(&self, page_kib: u64) -> serde_json::Value {
        let targets: Vec<_> = (self.targets.iter())
            .map(|t| {
                serde_json::json!({
                    "minfree_pages": t.minfree_pages,
                    "minfree_kib": u64::from(t.minfree_pages) * page_kib,
                    "adj": t.adj,
                })
            })
            .collect();
        serde_json::json!({
            "client_pid": self.client_pid,
            "describe": self.describe(page_kib),
            "targets": targets,
        })
    }
}

/// The socket's state in `/status`.
pub fn status(
    clients: &Clients,
    minfree: &Option<MinfreeTable>,
    registered: Vec<Entry>,
) -> serde_json::Value {
    let page_kib = rustix::param::page_size() as u64 / 1024;
    let clients: Vec<_> = (clients.iter())
        .map(|c| serde_json::json!({ "pid": c.peer.pid, "uid": c.peer.uid, "trusted": c.peer.trusted }))
        .collect();
    serde_json::json!({
        "clients": clients,
        "registered": registered,
        "minfree": minfree.as_ref().map(|m| m.to_json(page_kib)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_asked_within_a_second_are_one_reload() {
        let t0 = Instant::now();
        let mut r = Reloads::default();
        assert_eq!(r.due(t0), None, "nothing asked");
        r.ask(1);
        assert_eq!(r.due(t0), Some(vec![(1, 1)]), "the first at once");
        for _ in 0..5000 {
            r.ask(1);
        }
        r.ask(2);
        let half = t0 + Duration::from_millis(500);
        assert_eq!(r.wake_in(half), Some(Duration::from_millis(500)));
        assert_eq!(r.due(half), None);
        r.forget(2);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.due(t1), Some(vec![(1, 5000)]), "one reload answers all");
        assert_eq!(r.wake_in(t1), None);
    }
}
