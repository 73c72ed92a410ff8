//! The victim's app: its leaf cgroup, when that may be acted on whole — killed with
//! `kill = "cgroup"`, or frozen by a freeze level. Which cgroup qualifies (`group::refusal`),
//! and every member checked and pinned before anything signals or freezes it.

use crate::policy::Policy;
use crate::policy::rules::standing;
use crate::procs::printable;

use super::group;
use super::kernel::Kernel;
use super::pin::{PinError, Target};

/// The pinned members of the victim's leaf cgroup other than the victim, or why the cgroup
/// may not be acted on whole: it is not an app below the scope, or one of its processes is
/// protected (or, given a `floor`, has an adj below it: a foreground process sharing the
/// app's cgroup), or its membership changed while it was being pinned.
pub fn members(
    kernel: &dyn Kernel,
    policy: &Policy,
    victim: &Target,
    cgroup: &str,
    self_pid: i32,
    floor: Option<i16>,
) -> Result<Vec<Target>, String> {
    if let Some(why) = group::refusal(kernel.scope_cgroup().as_deref(), cgroup) {
        return Err(why);
    }
    let members = kernel
        .cgroup_members(cgroup)
        .map_err(|e| format!("its processes cannot be read: {e}"))?;
    if !members.iter().any(|m| m.proc.pid == victim.proc.pid) {
        return Err(format!("pid {} is no longer in it", victim.proc.pid));
    }
    let needs = policy.facts.needs;
    for m in &members {
        let p = &m.proc;
        let who = format!("pid {} ({})", p.pid, printable(&p.comm));
        if p.pid == 1 {
            return Err(format!("it holds {who}, PID 1"));
        }
        if p.pid == self_pid {
            return Err(format!("it holds {who}, lowmemd itself"));
        }
        if m.kernel_thread {
            return Err(format!("it holds {who}, a kernel thread"));
        }
        let (attrs, adj) = kernel.reread(p.pid, needs);
        // Unreadable: exited since the listing.
        let Some(adj) = adj else { continue };
        if adj <= -1000 {
            return Err(format!("it holds {who}, protected by oom_score_adj -1000"));
        }
        let st = standing(&policy.rules, &p.comm, &attrs, adj);
        if st.protected {
            let rule = st
                .rule
                .and_then(|i| policy.rules.get(i))
                .map_or("a", |r| r.name.as_str());
            return Err(format!("it holds {who}, protected by rule {rule}"));
        }
        if let Some(floor) = floor
            && st.effective_adj < floor
        {
            return Err(format!(
                "it holds {who} at adj {} (below {floor}): not the app alone",
                st.effective_adj
            ));
        }
    }
    let mut pinned = Vec::new();
    let mut allowed = vec![victim.proc.pid];
    for m in members {
        let pid = m.proc.pid;
        if pid == victim.proc.pid {
            continue;
        }
        allowed.push(pid);
        match kernel.pin(m.proc) {
            Ok(t) => pinned.push(t),
            // Gone, or dying already: nothing to kill or wait for.
            Err(PinError::Vanished(_) | PinError::Dying(_)) => {}
            Err(e) => return Err(format!("a member cannot be pinned: {e}")),
        }
    }
    // cgroup.kill kills (and cgroup.freeze freezes) whatever is in the cgroup when it is
    // written: a process that joined since the protection check was not checked.
    let now = kernel
        .cgroup_members(cgroup)
        .map_err(|e| format!("its processes cannot be read: {e}"))?;
    if let Some(m) = now.iter().find(|m| !allowed.contains(&m.proc.pid)) {
        return Err(format!(
            "pid {} ({}) joined it while it was being pinned",
            m.proc.pid,
            printable(&m.proc.comm)
        ));
    }
    Ok(pinned)
}
