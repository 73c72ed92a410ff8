//! What a compiled policy tells the rest of the daemon so that it need not work it out
//! again: the watermarks the monitor watches, and the facts of the rules the kill path uses.

use super::rules::{self, Effect, Rule};

/// A level of available memory the monitor watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    /// Percent of the scope's RAM.
    pub pct: f64,
    /// Judged on available RAM plus swap headroom (else RAM alone).
    pub counts_swap: bool,
}

impl Watermark {
    /// Whether `mem` is below it.
    pub fn holds(&self, mem: &crate::sample::MemSnapshot) -> bool {
        mem.headroom_pct(self.counts_swap) < self.pct
    }
}

/// Facts of a policy's rules that the kill path would otherwise work out per decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// The process attributes the rules read.
    pub needs: crate::procs::Needs,
    /// Some rule may lift a process's adj (`set_adj`, `prefer`): processes below a level's
    /// floor must be read too, since a rule may lift them over it.
    pub rules_can_raise: bool,
}

impl Facts {
    pub fn of(rules: &[Rule]) -> Self {
        Facts {
            needs: rules::needs(rules),
            rules_can_raise: rules.iter().any(|r| {
                matches!(r.effect, Effect::SetAdj(_))
                    || matches!(r.effect, Effect::Shift(n) if n > 0)
            }),
        }
    }
}
