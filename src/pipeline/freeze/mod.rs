//! The freeze stage: gentler than a kill, after Android's CachedAppOptimizer. The victim's
//! app — its own leaf cgroup, holding that app alone (`app.rs` checked every member) — is
//! frozen with the cgroup v2 freezer (`freezer.rs`), then each of its processes is paged
//! out (`pageout::run`) where Android's gates (`gates.rs`) say it is worth it, and what
//! that returned is measured as Android measures it: resident memory saved minus what
//! swap itself took in RAM (zram's growth). A function from the plan and the pinned app
//! to a [`FreezeReport`]; the ledger keeps what is frozen (`frozen.rs`) and the conductor
//! thaws it when `frozen::thaw_reason` says so.

pub mod freezer;
pub mod frozen;
pub mod gates;
pub mod thaw;

use crate::clock::wall_ms;

use super::kernel::Kernel;
use super::outcome::Freeze;
use super::pageout::{self, PageoutReport};
use super::pin::Target;
use super::rank::RankedProc;
use super::{Plan, app};
use freezer::FreezerError;
use frozen::{Frozen, FrozenApp};
use gates::{Compaction, Gate, Verdict, footprint_kib, judge};

/// An app frozen (or, in a dry run, one that would have been), and what its compaction
/// returned.
#[derive(Debug)]
pub struct Froze {
    /// The process that picked the app.
    pub victim: RankedProc,
    /// What the ledger keeps (in a dry run: what would have been frozen).
    pub app: FrozenApp,
    /// A dry run's: nothing was frozen.
    pub dry_run: bool,
    /// Resident size of its processes before.
    pub rss_kib: u64,
    /// Processes paged out, and the gates that skipped (or, `low_swap`, narrowed) others.
    pub compacted: u32,
    pub gates: Vec<Gate>,
    /// Resident memory its processes lost to the page-out.
    pub resident_saved_kib: u64,
    /// RAM swap itself took meanwhile (zram's `mem_used_total` growth).
    pub swap_ram_growth_kib: u64,
    /// The compactions to remember, per incarnation.
    pub compactions: Vec<((i32, u64), Compaction)>,
    /// Its compaction stopped because memory fell to a more severe level: the freeze is
    /// not an action that level's cooldown or its PSI's freshness should count from.
    pub gave_way: bool,
    pub end_ms: u64,
}

#[derive(Debug)]
pub enum FreezeReport {
    /// Frozen, or in a dry run, not.
    Frozen(Box<Froze>),
    /// Its app may not be frozen: why, and the victim given back (it may still be paged
    /// out alone).
    Refused(String, Target),
    /// The kernel or the runtime directory would not let us.
    Failed(FreezerError),
}

/// Why `cgroup` (an app's leaf cgroup, already accepted by `group::refusal`) may still not
/// be frozen: a user's whole login session or service manager is never one app.
pub fn refusal(cgroup: &str) -> Option<&'static str> {
    // A delegated subtree's owner names its cgroups: a newline there could forge a line of
    // the freeze record lowmemd writes before freezing it.
    if cgroup.chars().any(char::is_control) {
        return Some("its cgroup's name holds control characters");
    }
    let leaf = cgroup
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if leaf.starts_with("session-") && leaf.ends_with(".scope") {
        return Some("it is a user's login session, not one app");
    }
    if leaf.starts_with("user@") && leaf.ends_with(".service") {
        return Some("it is a user's service manager, not one app");
    }
    None
}

/// Freezes the app of the pinned `victim` — its leaf cgroup, when that holds the app alone
/// (`app::members`: every process pinned, none protected, none below the level's floor)
/// — then pages out each process the gates let through, remembered in `frozen`'s
/// compactions. A dry run freezes and pages out nothing.
pub fn run(
    kernel: &dyn Kernel,
    plan: &Plan<'_>,
    victim: Target,
    self_pid: i32,
    frozen: &Frozen,
    dry_run: bool,
) -> FreezeReport {
    let level = plan.level;
    let (cgroup, others) = match app_of(kernel, plan, &victim, self_pid) {
        Ok(app) => app,
        Err(why) if level.freeze.sigstop_lone => {
            log::info!(
                "level {}: pid {} stopped alone: {why}",
                level.name,
                victim.proc.pid
            );
            let name = format!("pid {}", victim.proc.pid);
            return hold(kernel, plan, name, vec![victim], frozen, dry_run, true);
        }
        Err(why) => return FreezeReport::Refused(why, victim),
    };
    match kernel.is_frozen(&cgroup) {
        Ok(false) => {}
        // Never ours to thaw later.
        Ok(true) => {
            return FreezeReport::Refused("it is frozen already, by someone else".into(), victim);
        }
        Err(e) => return FreezeReport::Failed(e),
    }
    let members: Vec<Target> = std::iter::once(victim).chain(others).collect();
    hold(kernel, plan, cgroup, members, frozen, dry_run, false)
}

/// The victim's app cgroup and its other pinned members, or why it may not be frozen.
fn app_of(
    kernel: &dyn Kernel,
    plan: &Plan<'_>,
    victim: &Target,
    self_pid: i32,
) -> Result<(String, Vec<Target>), String> {
    let cgroup = victim.proc.cgroup.clone().ok_or("its cgroup is unknown")?;
    if let Some(why) = refusal(&cgroup) {
        return Err(why.into());
    }
    let floor = Some(plan.level.min_adj);
    match app::members(kernel, plan.policy, victim, &cgroup, self_pid, floor) {
        Ok(others) => Ok((cgroup, others)),
        Err(why) => Err(format!("not its cgroup {cgroup}: {why}")),
    }
}

/// Freezes `members` — the cgroup `name`, or (`stopped`) the one process alone by SIGSTOP
/// — and pages them out under the gates. A dry run does neither.
fn hold(
    kernel: &dyn Kernel,
    plan: &Plan<'_>,
    name: String,
    members: Vec<Target>,
    frozen: &Frozen,
    dry_run: bool,
    stopped: bool,
) -> FreezeReport {
    let level = plan.level;
    let started = kernel.now_ms();
    let mut froze = Froze {
        victim: members[0].proc.clone(),
        dry_run,
        rss_kib: members.iter().map(|t| t.proc.rss_kib).sum(),
        app: FrozenApp {
            cgroup: name,
            stopped,
            level: level.name.clone(),
            floor: level.min_adj,
            since_ms: started,
            since_wall_ms: wall_ms(),
            members,
            freed_kib: 0,
        },
        compacted: 0,
        gates: Vec::new(),
        resident_saved_kib: 0,
        swap_ram_growth_kib: 0,
        compactions: Vec::new(),
        gave_way: false,
        end_ms: started,
    };
    if dry_run {
        return FreezeReport::Frozen(Box::new(froze));
    }
    let held = if stopped {
        kernel.stop_alone(&froze.app.members[0], true)
    } else {
        kernel.set_frozen(&froze.app.cgroup, true)
    };
    if let Err(e) = held {
        return FreezeReport::Failed(e);
    }
    if level.freeze.pageout {
        compact(kernel, plan, frozen, &mut froze);
    }
    froze.end_ms = kernel.now_ms();
    FreezeReport::Frozen(Box::new(froze))
}

impl Froze {
    /// What the observer is told of it.
    pub fn told<'a>(&'a self, plan: &'a Plan<'_>) -> Freeze<'a> {
        Freeze {
            victim: &self.victim,
            decision: &plan.decision,
            level: plan.level,
            cgroup: &self.app.cgroup,
            stopped: self.app.stopped,
            processes: self.app.members.len() as u32,
            rss_kib: self.rss_kib,
            dry_run: self.dry_run,
            wall_ms: self.app.since_wall_ms,
            compacted: self.compacted,
            gates: &self.gates,
            resident_saved_kib: self.resident_saved_kib,
            swap_ram_growth_kib: self.swap_ram_growth_kib,
            freed_kib: self.app.freed_kib,
            scope_available_before_kib: plan.fresh.mem.available_kib,
            duration_ms: self.end_ms.saturating_sub(self.app.since_ms),
        }
    }
}

/// Pages out the frozen app's processes under the gates and measures what came back.
fn compact(kernel: &dyn Kernel, plan: &Plan<'_>, frozen: &Frozen, froze: &mut Froze) {
    let level = plan.level;
    let mem = &plan.fresh.mem;
    let swap_free_pct = (mem.swap_total_kib > 0)
        .then(|| mem.swap_free_kib as f64 * 100.0 / mem.swap_total_kib as f64);
    let swap_ram_before = kernel.swap_ram_kib();
    for t in &froze.app.members {
        let who = (t.proc.pid, t.proc.starttime);
        let Ok(detail) = kernel.mem_detail(t.proc.pid) else {
            continue;
        };
        let last = frozen.last_compaction(who);
        let now = kernel.now_ms();
        let anon = match judge(
            &level.freeze,
            &level.pageout,
            &detail,
            last,
            now,
            swap_free_pct,
        ) {
            Verdict::Skip(gate) => {
                froze.gates.push(gate);
                continue;
            }
            Verdict::Go { anon } => anon,
        };
        if !anon && swap_free_pct.is_some() {
            froze.gates.push(Gate::LowSwap);
        }
        match pageout::run(kernel, plan, t, 0, anon, false) {
            PageoutReport::PagedOut(p) => {
                froze.compacted += 1;
                froze.resident_saved_kib += p.freed_kib;
                // One cut short is not remembered: the "unchanged" gate would skip it the
                // next time for having been compacted.
                if p.interrupted {
                    froze.gave_way = true;
                    break;
                }
                froze.compactions.push((
                    who,
                    Compaction {
                        at_ms: p.end_ms,
                        footprint_kib: footprint_kib(&p.after),
                    },
                ));
            }
            PageoutReport::Unreadable | PageoutReport::NothingToReclaim(_) => {}
            // Memory fell to a more severe level: the rest of the app stays frozen, not
            // paged out, and the kill that level asks for comes first.
            PageoutReport::GaveWay => {
                froze.gave_way = true;
                break;
            }
            PageoutReport::Refused(why) => {
                log::warn!(
                    "freeze level {}: no page-out of frozen apps: {why}",
                    level.name
                );
                break;
            }
        }
    }
    froze.swap_ram_growth_kib = kernel.swap_ram_kib().saturating_sub(swap_ram_before);
    froze.app.freed_kib = froze
        .resident_saved_kib
        .saturating_sub(froze.swap_ram_growth_kib);
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn a_cgroup_named_with_a_newline_is_never_frozen() {
        assert!(refusal("/user.slice/app-x.scope\ndir=/sys/fs/cgroup/system.slice").is_some());
    }

    #[test]
    fn a_login_session_or_a_user_manager_is_never_frozen_whole() {
        assert!(refusal("/user.slice/user-1000.slice/session-3.scope").is_some());
        assert!(refusal("/user.slice/user-1000.slice/user@1000.service").is_some());
        assert_eq!(
            refusal("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1.scope"),
            None
        );
    }
}
