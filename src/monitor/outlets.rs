//! What the monitor tells the rest of the daemon besides samples: pressure events by
//! source, and that it is alive (for the service manager's watchdog). Handed in by main, so
//! the monitor knows nothing of metrics or systemd.

use std::sync::Arc;

use prometheus::IntCounterVec;

use crate::health::Health;
use crate::policy::Policy;
use crate::sample::{MemSnapshot, PsiKind};

/// Where a pressure event came from: the `source` label of
/// `lowmemd_pressure_events_total`. The strings are a public interface: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PsiSome,
    PsiFull,
    Vmpressure,
    Watermark,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::PsiSome,
        Source::PsiFull,
        Source::Vmpressure,
        Source::Watermark,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::PsiSome => "psi_some",
            Source::PsiFull => "psi_full",
            Source::Vmpressure => "vmpressure",
            Source::Watermark => "watermark",
        }
    }
}

impl From<PsiKind> for Source {
    fn from(k: PsiKind) -> Self {
        match k {
            PsiKind::Some => Source::PsiSome,
            PsiKind::Full => Source::PsiFull,
        }
    }
}

/// Takes the scope's memory and the name of the level it falls in (for gauges).
pub type Observe = Box<dyn Fn(&MemSnapshot, Option<&str>, &Policy) + Send>;

/// What the monitor reports besides samples, wired by main: it counts pressure events and
/// keeps the service manager's watchdog fed without knowing either.
pub struct Outlets {
    /// `lowmemd_pressure_events_total`, labelled by [`Source::as_str`].
    pub pressure_events: IntCounterVec,
    /// Where the monitor says it is awake and whether the scope can be read.
    pub health: Arc<Health>,
    /// Called on every wake-up with the monotonic time while both worker threads make
    /// progress: the service manager's watchdog hears from the loop that must never stall.
    pub watchdog: Box<dyn Fn(u64) + Send>,
    /// Called on every poll with the scope's memory and the level it falls in: the gauges
    /// and `/status` stay fresh without waking the pipeline.
    pub observe: Observe,
    /// Wake at least this often (half the watchdog interval), if set.
    pub max_sleep_ms: Option<u64>,
}

impl Outlets {
    pub fn count(&self, source: Source, n: u64) {
        self.pressure_events
            .with_label_values(&[source.as_str()])
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_sources_keep_their_label_values() {
        let labels: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(labels, ["psi_some", "psi_full", "vmpressure", "watermark"]);
        assert_eq!(Source::from(PsiKind::Full), Source::PsiFull);
    }
}
