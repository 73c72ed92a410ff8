//! The thaw stage: which frozen apps to thaw now (`frozen::thaw_reason` on what is read of
//! their processes: gone, or their adj right now), and the thaw itself. The conductor runs
//! it at every sample and, while anything is frozen, at least once a second.

use crate::procs::Needs;

use super::freezer::FreezerError;
use super::frozen::{Frozen, FrozenApp, Thaw, thaw_reason};
use crate::pipeline::kernel::Kernel;

/// The apps of `frozen` due for a thaw at `now`, by index, with why (`shutdown`: all of
/// them). `thaw_after_ms`: the policy's freeze levels' longest hysteresis.
pub fn due(
    kernel: &dyn Kernel,
    frozen: &Frozen,
    now: u64,
    thaw_after_ms: Option<u64>,
    shutdown: bool,
) -> Vec<(usize, Thaw)> {
    frozen
        .apps()
        .iter()
        .enumerate()
        .filter_map(|(i, app)| {
            if shutdown {
                return Some((i, Thaw::Shutdown));
            }
            let adjs = alive_adjs(kernel, app);
            thaw_reason(app, now, frozen.last_held_ms(), thaw_after_ms, &adjs).map(|r| (i, r))
        })
        .collect()
}

/// The adj of each process of `app` still there. Read by pid after a pidfd said it has not
/// exited: a recycled pid could only make us thaw early, never freeze anything.
fn alive_adjs(kernel: &dyn Kernel, app: &FrozenApp) -> Vec<i16> {
    app.members
        .iter()
        .filter(|t| !kernel.exited(t))
        .filter_map(|t| kernel.reread(t.proc.pid, Needs::default()).1)
        .collect()
}

/// Thaws `app`'s cgroup, or continues the process stopped alone.
pub fn thaw(kernel: &dyn Kernel, app: &FrozenApp) -> Result<(), FreezerError> {
    match (app.stopped, app.members.first()) {
        (true, Some(t)) => kernel.stop_alone(t, false),
        _ => kernel.set_frozen(&app.cgroup, false),
    }
}
