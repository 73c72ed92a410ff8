//! A build without the `hooks` feature: a policy with `[[hook]]` is refused at load
//! (`policy::validate`), so no hook ever follows an action; the `Reporter` calls these.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::policy::{HookOn, Policy};

/// Never counts: no job is ever queued (the metric keeps its label in every build).
pub static HOOKS_DROPPED: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct Hooks;

impl Hooks {
    pub fn off() -> Self {
        Hooks
    }

    pub fn adopt(&self, _policy: &Policy) {}

    /// No hook follows a level, so whether one started does not matter.
    pub fn level_started(&self, _level: Option<&str>) -> bool {
        false
    }

    pub fn fire(&self, _on: HookOn, _event: &impl Serialize) {}
}
