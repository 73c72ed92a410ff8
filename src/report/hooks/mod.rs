//! Hooks: the policy's `[[hook]]` programs, run after an action was confirmed (or a level
//! started holding) with the event in their environment and as JSON on stdin.
//!
//! The pipeline never waits for a hook: [`Hooks`] (owned by the `Reporter`, called on the
//! pipeline thread) only builds a [`Job`] and hands it to the `hooks` thread through a
//! bounded queue; a full queue drops the job and counts it (`lowmemd_log_dropped_total
//! {output="hooks"}`). That thread runs the hooks one after another (`exec.rs`), each
//! killed at its timeout, each limited to `max_per_minute` starts.

mod exec;
mod orphans;

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::policy::{Hook, HookOn, Policy};
use crate::procs::printable;

use super::handoff::Handoff;
pub use exec::{HookError, Ran, Runner, run};
pub use orphans::adopt_orphans;

/// Jobs dropped because the hooks thread was behind (a hook at its timeout, say).
pub static HOOKS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Jobs waiting at most: a burst of kills each notifying is a handful, not hundreds.
const QUEUE: usize = 16;

/// One event for the hooks that follow it.
#[derive(Debug, Clone)]
pub struct Job {
    pub hooks: Vec<Hook>,
    /// `LOWMEMD_*` variables, from the event's fields.
    pub env: Vec<(String, String)>,
    /// The event as one line of JSON (what the event log has).
    pub stdin: Vec<u8>,
}

impl Job {
    /// A job for the hooks of `policy` that follow `on`, or `None` when there are none.
    pub fn new(hooks: &[Hook], on: HookOn, event: &impl Serialize) -> Option<Job> {
        let hooks: Vec<Hook> = hooks.iter().filter(|h| h.on == on).cloned().collect();
        if hooks.is_empty() {
            return None;
        }
        let value = serde_json::to_value(event).ok()?;
        let mut stdin = serde_json::to_vec(&value).ok()?;
        stdin.push(b'\n');
        Some(Job {
            hooks,
            env: environment(on, &value),
            stdin,
        })
    }
}

/// `LOWMEMD_EVENT` and one `LOWMEMD_<FIELD>` per top-level field of the event: strings with
/// their control characters escaped as in the logs (a process's name, a cgroup's path and a
/// rule's name come from whoever made them, and a hook may write them to a terminal or a
/// log of its own), numbers, `true`/`false`; null fields are left out.
pub fn environment(on: HookOn, event: &serde_json::Value) -> Vec<(String, String)> {
    let mut env = vec![("LOWMEMD_EVENT".to_string(), on.as_str().to_string())];
    let Some(fields) = event.as_object() else {
        return env;
    };
    for (k, v) in fields {
        let value = match v {
            serde_json::Value::Null | serde_json::Value::Array(_) => continue,
            serde_json::Value::Object(_) => continue,
            serde_json::Value::String(s) => printable(s).into_owned(),
            other => other.to_string(),
        };
        // An environment string ends at a NUL; no field of ours holds one, but be sure.
        if !value.contains('\0') {
            env.push((format!("LOWMEMD_{}", k.to_ascii_uppercase()), value));
        }
    }
    env
}

/// What the reporter keeps for hooks: the policy's hooks in force, the last level seen (to
/// notice one starting to hold) and the queue to the hooks thread (started at the first
/// job).
#[derive(Default)]
pub struct Hooks {
    hooks: RefCell<Vec<Hook>>,
    level: RefCell<Option<String>>,
    queue: RefCell<Option<Handoff<Job>>>,
    /// A dry run: nothing is fired.
    off: bool,
}

impl Hooks {
    /// Hooks that never run (a dry run).
    pub fn off() -> Self {
        Hooks {
            off: true,
            ..Hooks::default()
        }
    }

    /// Adopts the hooks of the policy in force: called with every sample, so a reload
    /// applies from the next action on.
    pub fn adopt(&self, policy: &Policy) {
        if *self.hooks.borrow() != policy.hooks {
            *self.hooks.borrow_mut() = policy.hooks.clone();
        }
    }

    /// Whether `level` (the level of this sample) is one that just started holding.
    pub fn level_started(&self, level: Option<&str>) -> bool {
        let mut last = self.level.borrow_mut();
        let started = level.is_some() && last.as_deref() != level;
        *last = level.map(str::to_owned);
        started
    }

    /// Queues `event` for the hooks that follow `on`; never waits.
    pub fn fire(&self, on: HookOn, event: &impl Serialize) {
        if self.off {
            return;
        }
        let Some(job) = Job::new(&self.hooks.borrow(), on, event) else {
            return;
        };
        let mut queue = self.queue.borrow_mut();
        if queue.is_none() {
            // Only hooks start processes in lowmemd: every orphan that comes to us is a
            // hook's (orphans.rs).
            if let Err(e) = adopt_orphans() {
                log::warn!(
                    "PR_SET_CHILD_SUBREAPER: {e}; a hook that detaches from its process group outlives its timeout"
                );
            }
            let mut runner = Runner::new();
            match Handoff::spawn("hooks", QUEUE, &HOOKS_DROPPED, move |job: Job| {
                runner.run(&job)
            }) {
                Ok(h) => *queue = Some(h),
                Err(e) => {
                    log::error!("cannot start the hooks thread: {e}; hooks do not run");
                    return;
                }
            }
        }
        if let Some(q) = queue.as_ref() {
            q.send(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_has_every_field_but_nulls() {
        let event = serde_json::json!({
            "action": "kill", "pid": 42, "comm": "a\nb", "rss_kib": 1024,
            "cgroup": "/user.slice/app.scope", "rule": null, "exit_confirmed": true,
        });
        let env = environment(HookOn::Kill, &event);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LOWMEMD_EVENT"), Some("kill"));
        assert_eq!(get("LOWMEMD_PID"), Some("42"));
        assert_eq!(get("LOWMEMD_COMM"), Some("a\\u{a}b"));
        assert_eq!(get("LOWMEMD_RSS_KIB"), Some("1024"));
        assert_eq!(get("LOWMEMD_CGROUP"), Some("/user.slice/app.scope"));
        assert_eq!(get("LOWMEMD_EXIT_CONFIRMED"), Some("true"));
        assert_eq!(get("LOWMEMD_RULE"), None);
    }

    #[test]
    fn a_cgroup_path_with_control_characters_is_escaped() {
        // Any user may name their own cgroup (`mkdir` in a delegated subtree) so.
        let event = serde_json::json!({
            "action": "kill", "cgroup": "/user.slice/a\nLOWMEMD_PID=1\u{1b}[2J\u{0}x",
        });
        let env = environment(HookOn::Kill, &event);
        let cgroup = env.iter().find(|(n, _)| n == "LOWMEMD_CGROUP").unwrap();
        assert_eq!(
            cgroup.1,
            "/user.slice/a\\u{a}LOWMEMD_PID=1\\u{1b}[2J\\u{0}x"
        );
    }

    #[test]
    fn a_level_starts_holding_once() {
        let h = Hooks::default();
        assert!(!h.level_started(None));
        assert!(h.level_started(Some("low")));
        assert!(!h.level_started(Some("low")));
        assert!(h.level_started(Some("critical")));
        assert!(h.level_started(Some("low")));
        assert!(!h.level_started(None));
        assert!(h.level_started(Some("low")));
    }
}
