//! The plan: one decision of the monitor resolved once, right before acting — memory
//! re-read and decided again (`recheck`), and, while a gentle action runs, asked again
//! whether a more severe level has come (`Plan::escalated`).

use super::kernel::Kernel;
use crate::policy::decide::{Decision, LastActions, decide};
use crate::policy::{Level, Policy};
use crate::sample::Sample;

/// One decision, resolved once: the level it names, the sample that decided and the
/// memory re-read right before acting. What every stage is given.
#[derive(Debug)]
pub struct Plan<'a> {
    pub policy: &'a Policy,
    pub decision: Decision,
    pub level: &'a Level,
    /// The sample the monitor decided on.
    pub sample: &'a Sample,
    /// The same with memory re-read right before acting.
    pub fresh: Sample,
    /// The pipeline's last actions when the plan was made (cooldowns, PSI counted once).
    pub last: LastActions,
}

impl Plan<'_> {
    /// Whether memory, re-read now, calls for a more severe level than this plan's: a
    /// gentle action (page-out, freeze) then gives way between its steps, so the kill that
    /// level asks for is not held up behind work that can no longer keep up.
    pub fn escalated(&self, kernel: &dyn Kernel) -> bool {
        let Ok(mem) = kernel.memory() else {
            return false;
        };
        let mut now = self.fresh.clone();
        now.mem = mem;
        now.at_ms = kernel.now_ms();
        decide(&now, self.policy, self.last)
            .is_some_and(|d| d.more_severe_than(&self.decision, self.policy))
    }
}

/// The earlyoom re-check: memory re-read right before acting (the shortage may have passed
/// since the sample, or since the previous victim of this decision), decided again, acting
/// at the level that holds now but never a more severe one than decided (`true` beside the
/// plan: a more severe one holds now). `None`: no level holds any more.
pub fn recheck<'a>(
    kernel: &dyn Kernel,
    policy: &'a Policy,
    decided: &Decision,
    sample: &'a Sample,
    last: LastActions,
) -> Option<(Plan<'a>, bool)> {
    let mut fresh = sample.clone();
    match kernel.memory() {
        Ok(mem) => fresh.mem = mem,
        Err(e) => log::warn!("re-reading memory before a kill failed: {e}; using the sample"),
    }
    fresh.at_ms = kernel.now_ms();
    let now = decide(&fresh, policy, last)?;
    let escalated = now.more_severe_than(decided, policy);
    let decision = if escalated { decided.clone() } else { now };
    let plan = Plan {
        policy,
        level: decision.level(policy),
        decision,
        sample,
        fresh,
        last,
    };
    Some((plan, escalated))
}
