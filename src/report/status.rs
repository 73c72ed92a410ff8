//! The `/status` document's state: scope, policy, current level, memory, the last actions
//! and the lmkd socket's part. Behind one short-held lock; the HTTP thread renders it with
//! what is computed on request (uptime, health).

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;

use crate::clock::{monotonic_ms, wall_ms};
use crate::health::Health;
use crate::policy::Policy;
use crate::sample::MemSnapshot;

/// Actions kept for `/status`.
pub const RING: usize = 32;

/// The `/status` document, minus what is computed on request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub scope: String,
    pub policy: String,
    pub levels: Vec<String>,
    /// The level the last sample fell in (`none` outside every level).
    pub current_level: String,
    pub memory: MemSnapshot,
    /// Available RAM, percent of the scope.
    pub available_pct: f64,
    /// What the memory conditions judge: available RAM plus swap headroom where the policy
    /// counts swap, percent of the scope's RAM.
    pub headroom_pct: f64,
    pub started_unix_ms: u64,
    /// The last actions, newest last (the event log's records).
    pub last_actions: VecDeque<serde_json::Value>,
    /// The apps frozen now, oldest first.
    pub frozen: Vec<FrozenNow>,
    /// The lmkd socket, when served: its clients, registrations and LMK_TARGET table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmkd: Option<serde_json::Value>,
}

/// An app frozen now, as `/status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FrozenNow {
    pub cgroup: String,
    pub level: String,
    pub pid: i32,
    pub comm: String,
    pub since_unix_ms: u64,
    pub freed_kib: u64,
}

/// The `/status` state, shared between the writers and the HTTP thread.
#[derive(Debug)]
pub struct StatusBoard(Mutex<Status>);

impl StatusBoard {
    pub fn new() -> Self {
        StatusBoard(Mutex::new(Status {
            version: env!("CARGO_PKG_VERSION"),
            current_level: "none".into(),
            started_unix_ms: wall_ms(),
            ..Default::default()
        }))
    }

    /// The lmkd socket's state (its LMK_TARGET table, its clients).
    pub fn set_lmkd(&self, v: serde_json::Value) {
        self.0.lock().lmkd = Some(v);
    }

    /// The scope and policy in force, with each level in one line.
    pub fn adopt_policy(&self, policy: &Policy, scope: &str, describe: &str) {
        let mut st = self.0.lock();
        st.scope = scope.to_string();
        st.policy = describe.to_string();
        st.levels = policy
            .levels
            .iter()
            .map(crate::policy::explain::level_short)
            .collect();
    }

    pub fn scope_name(&self) -> String {
        self.0.lock().scope.clone()
    }

    pub fn observe_memory(&self, mem: &MemSnapshot, level: Option<&str>, policy: &Policy) {
        let mut st = self.0.lock();
        st.memory = *mem;
        st.available_pct = (mem.available_pct() * 10.0).round() / 10.0;
        st.headroom_pct = (mem.headroom_pct(policy.count_swap) * 10.0).round() / 10.0;
        st.current_level = level.unwrap_or("none").to_string();
    }

    /// Adds an action (an event-log record) to the ring.
    pub fn push_action(&self, event: &impl Serialize) {
        if let Ok(v) = serde_json::to_value(event) {
            let mut st = self.0.lock();
            if st.last_actions.len() == RING {
                st.last_actions.pop_front();
            }
            st.last_actions.push_back(v);
        }
    }

    /// An app frozen (`Some`) or thawed: the frozen list follows.
    pub fn set_frozen(&self, cgroup: &str, now: Option<FrozenNow>) {
        let mut st = self.0.lock();
        st.frozen.retain(|f| f.cgroup != cgroup);
        st.frozen.extend(now);
    }

    /// The document, with uptime and health as of now.
    pub fn to_json(&self, health: &Health) -> Vec<u8> {
        let st = self.0.lock().clone();
        let uptime_s = wall_ms().saturating_sub(st.started_unix_ms) / 1000;
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        v["uptime_s"] = uptime_s.into();
        v["healthy"] = health.healthy(monotonic_ms()).into();
        v["scope_ok"] = health.scope_ok().into();
        serde_json::to_vec_pretty(&v).unwrap_or_default()
    }
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}
