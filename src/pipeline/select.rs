//! The select stage: scan the scope, rank (`rank.rs`), pin the first candidate that is
//! still itself (`pin.rs`) and still eligible once its attributes are read again. A
//! function from the plan and what the ledger excludes to a [`Selection`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::policy::rules::standing;
use crate::policy::{Candidates, Level, Policy, RankBy};
use crate::procs::{Needs, ProcInfo, printable};
use crate::scope::ScopeError;

use super::Plan;
use super::kernel::Kernel;
use super::outcome::Skip;
use super::owner;
use super::pageout::tracker::Tracker;
use super::pin::{PinError, Target};
use super::rank::{
    RankContext, RankedProc, add_swap_to_first_band, candidates, first_candidates, settle,
};
use super::registered::Registrations;

/// How many candidates a kill ranks at first where the order of the first few does not
/// depend on the rest (see [`first_candidates`]): pinning rarely skips more than one.
const FIRST: usize = 64;

/// What the stage needs besides the plan and the kernel.
pub struct Context<'a> {
    pub self_pid: i32,
    /// Incarnations (pid, starttime) not to pick: acted on lately, or still dying.
    pub excluded: &'a BTreeSet<(i32, u64)>,
    pub registrations: Option<&'a dyn Registrations>,
    /// At a kill level, how many candidates found dying to collect for reaping before
    /// looking no further (0: passed over like any other skip).
    pub reap: usize,
    /// For page-out and freeze levels: who was paged out lately.
    pub pageouts: &'a Tracker,
}

/// What one selection found.
#[derive(Debug, Default)]
pub struct Selection {
    /// The pinned victim, if any candidate was still itself and eligible.
    pub target: Option<Target>,
    /// Candidates ranked, and how long listing, reading and ranking took.
    pub candidates: usize,
    pub took: Duration,
    /// Why each candidate tried before the victim (or all of them) was passed over.
    pub skips: Vec<Skip>,
    /// At a kill level, the candidates ahead of the victim that someone else killed already
    /// and that still hold their memory, pinned (`kill::finish`).
    pub dying: Vec<Target>,
}

/// Ranks the scope's processes for `plan` and pins the first candidate that is still
/// itself. An unreadable scope is an error; no candidate at all is an empty selection.
pub fn select(
    kernel: &mut dyn Kernel,
    plan: &Plan<'_>,
    cx: &Context<'_>,
) -> Result<Selection, ScopeError> {
    let (policy, level) = (plan.policy, plan.level);
    // Processes below the floor are not sized, unless a rule could lift them over it.
    let floor = (!policy.facts.rules_can_raise).then_some(level.min_adj);
    // VmSwap costs a `status` read per process: only worth it when swap is in use, and
    // then only for the first band (see `rank::add_swap_to_first_band`).
    let with_swap = plan.fresh.mem.swap_used_kib() > 0;
    let started = Instant::now();
    let scan = kernel.scan(floor, false, policy.facts.needs.union(policy.owner_needs()))?;
    for e in &scan.errors {
        log::debug!("skipping unreadable process: {e}");
    }
    let ctx = RankContext {
        self_pid: cx.self_pid,
        min_adj: Some(level.min_adj),
        recent: cx.excluded,
        rules: &policy.rules,
    };
    let registered_only = policy.candidates == Candidates::Registered;
    // Where nothing but the process's own standing orders it (no owner grouping, no
    // filter after ranking, no swap to add to the first band), the first few are ranked
    // alone, and the rest only if none of them can be pinned.
    let alone = level.rank_by == RankBy::Process
        && !registered_only
        && !level.action.is_gentle()
        && !with_swap;
    let firsts = if alone {
        first_candidates(scan.procs, &ctx, FIRST)
    } else {
        Err(scan.procs)
    };
    let (cands, rest, count) = match firsts {
        Ok(f) => (f.first, Some(f.rest), f.count),
        Err(procs) => {
            let all = rank_all(kernel, procs, &ctx, plan, cx, with_swap);
            let n = all.len();
            (all, None, n)
        }
    };
    if log::log_enabled!(log::Level::Debug) {
        log::debug!("level {}: first candidates: {}", level.name, head(&cands));
    }
    let mut out = Selection {
        candidates: count,
        took: started.elapsed(),
        ..Default::default()
    };
    let registered = |mut c: RankedProc| {
        c.registered = cx.registrations.and_then(|r| r.lookup(c.pid, c.starttime));
        c
    };
    let cands = cands.into_iter().map(registered);
    if !pin_first(kernel, policy, level, cands, cx.reap, &mut out)
        && let Some(rest) = rest
    {
        let cands = candidates(rest, &ctx).into_iter().map(registered);
        pin_first(kernel, policy, level, cands, cx.reap, &mut out);
    }
    // Dying candidates not collected: at a page-out or freeze level there is nothing to do
    // with them; at a kill level this decision reaped as many as it may.
    let dying = out.skips.iter().filter(|&&s| s == Skip::Dying).count() - out.dying.len();
    if dying > 0 {
        let level_of = if level.action.is_gentle() {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level_of,
            "level {}: {dying} candidates someone else killed (dying) passed over",
            level.name
        );
    }
    // Where the time from the sample to the action went (a kill's record has the signal's).
    log::debug!(
        "level {}: memory re-read {} ms after the sample; {} candidates ranked in {} ms; pid {:?} pinned {} ms after the sample",
        level.name,
        plan.fresh.at_ms.saturating_sub(plan.sample.at_ms),
        out.candidates,
        out.took.as_millis(),
        out.target.as_ref().map(|t| t.proc.pid),
        kernel.now_ms().saturating_sub(plan.sample.at_ms)
    );
    Ok(out)
}

/// The first few candidates as ranked, with what ranked them: why this victim and not
/// another, when a kill surprises.
fn head(cands: &[RankedProc]) -> String {
    let owned = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{} MiB", k / 1024));
    cands
        .iter()
        .take(4)
        .map(|c| {
            format!(
                "pid {} ({}) adj {} rss {} MiB swap {} MiB owner {} {}",
                c.pid,
                printable(&c.comm),
                c.effective_adj,
                c.rss_kib / 1024,
                c.swap_kib / 1024,
                c.owner.as_deref().unwrap_or("-"),
                owned(c.owner_kib)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every candidate of `procs` for the plan's level, best victim first.
fn rank_all(
    kernel: &mut dyn Kernel,
    procs: Vec<ProcInfo>,
    ctx: &RankContext<'_>,
    plan: &Plan<'_>,
    cx: &Context<'_>,
    with_swap: bool,
) -> Vec<RankedProc> {
    let (policy, level, now) = (plan.policy, plan.level, plan.fresh.at_ms);
    let registered_only = policy.candidates == Candidates::Registered;
    let mut cands: Vec<RankedProc> = candidates(procs, ctx)
        .into_iter()
        .map(|mut c| {
            c.registered = cx.registrations.and_then(|r| r.lookup(c.pid, c.starttime));
            c
        })
        .filter(|c| !registered_only || c.registered.is_some())
        .filter(|c| !level.action.is_gentle() || cx.pageouts.eligible(c, level, now))
        .collect();
    if with_swap {
        add_swap_to_first_band(&mut cands, |c| kernel.swap_kib(c.pid));
    }
    // Owners' totals are over what is left after filtering, with swap where it was read;
    // and filtering may have left out a user's process that another of theirs was ordered
    // behind (`rank::settle`): order what is left.
    let scope = kernel.scope_cgroup();
    owner::annotate(&mut cands, level.rank_by, scope.as_deref());
    settle(&mut cands);
    cands
}

/// Pins the first of `cands` that is still itself and eligible into `out.target`, noting
/// why each one before it was passed over. At a kill level, up to `reap` found dying on the
/// way are kept in `out.dying`, and with that many it looks no further: they are reaped
/// first. Whether to look no further.
fn pin_first(
    kernel: &mut dyn Kernel,
    policy: &Policy,
    level: &Level,
    cands: impl Iterator<Item = RankedProc>,
    reap: usize,
    out: &mut Selection,
) -> bool {
    for cand in cands {
        match kernel.pin(cand) {
            Ok(mut t) => {
                if eligible(&*kernel, policy, level.min_adj, &mut t) {
                    out.target = Some(t);
                    return true;
                }
                out.skips.push(Skip::RuleChanged);
                log::info!(
                    "skipped pid {} ({}): its rule standing changed since ranking",
                    t.proc.pid,
                    printable(&t.proc.comm)
                );
            }
            // Someone killed it before us and it still holds its memory: at a kill level it
            // is reaped (`kill::finish`) and memory read again before the next one dies for
            // the same shortage, as the kernel's OOM killer waits for its victim rather than
            // take a second.
            Err(PinError::Dying(t)) if !level.action.is_gentle() && out.dying.len() < reap => {
                out.skips.push(Skip::Dying);
                out.dying.push(*t);
                // Each is a pidfd held: a user's thousands go a batch at a time.
                if out.dying.len() == reap {
                    return true;
                }
            }
            Err(e) => match e.skip() {
                Some(why) => {
                    out.skips.push(why);
                    // A process that exits by itself is the normal race: not worth a line;
                    // those dying may be a user's thousands, told at once (`select`).
                    if !matches!(e, PinError::Vanished(_) | PinError::Dying(_)) {
                        log::info!("skipped: {e}");
                    }
                }
                None => log::warn!("cannot pin a victim: {e}"),
            },
        }
    }
    false
}

/// Rule attributes and oom_score_adj were read when the process was ranked; an exec or a
/// new adj since (a process that just made itself -1000) may have changed what it is.
/// Re-read both for the pinned victim and apply the rules again. Its cgroup and owner are
/// read here too, whatever the rules need: records and hooks name them.
fn eligible(kernel: &dyn Kernel, policy: &Policy, min_adj: i16, t: &mut Target) -> bool {
    let always = Needs {
        cgroup: true,
        uid: true,
        ..Default::default()
    };
    let needs = policy.facts.needs.union(always);
    let (attrs, adj) = kernel.reread(t.proc.pid, needs);
    t.proc.cgroup = attrs.unified_cgroup.clone().or(t.proc.cgroup.take());
    t.proc.uid = attrs.uid.or(t.proc.uid);
    if needs.marking {
        t.proc.marking = attrs.marking.clone();
    }
    // Unreadable: it is exiting; the signal will tell. (Read by path after the pin: a
    // recycled number could only make us skip, never hit another process: the signal goes
    // through the pidfd.)
    let adj = adj.unwrap_or(t.proc.oom_score_adj);
    if adj <= -1000 {
        return false;
    }
    let st = standing(&policy.rules, &t.proc.comm, &attrs, adj);
    !st.protected && st.effective_adj >= min_adj
}
