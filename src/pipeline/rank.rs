//! Victim ranking: a pure function over a process table and the policy's rules. Processes a
//! `last` rule matched go after all others; then highest effective `oom_score_adj` first
//! (the kernel's value, changed by the first matching rule); inside one adj, the largest
//! (RSS + swap) first; equal sizes go to the youngest process, which has the least work to
//! lose. Where the level ranks by owner (`owner.rs`), a band's candidates go owner by owner,
//! the owner holding the most first. Last, [`settle`] puts each user's `owner_last`
//! processes after that user's others without moving anyone else's earlier.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::policy::rules::{Rule, Standing, standing};
use crate::procs::{Marking, ProcInfo};

use super::registered::Registered;

/// Why a process may not be a victim. The `Display` strings are shown by `lowmemd rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    #[error("init (pid 1)")]
    Init,
    #[error("kernel thread")]
    KernelThread,
    #[error("lowmemd itself")]
    Myself,
    #[error("oom_score_adj -1000 (unkillable)")]
    Unkillable,
    #[error("protected by a policy rule")]
    Protected,
    #[error("zombie or exiting (no memory to free)")]
    Zombie,
    #[error("adj below this level's floor")]
    BelowFloor,
    #[error("acted on recently")]
    RecentlyActed,
    #[error("nothing to free (no resident or swapped memory)")]
    NothingToFree,
    /// Shown by `lowmemd rank` under `candidates = "registered"` (the pipeline leaves
    /// unregistered processes out before ranking).
    #[error("not registered over the lmkd socket (candidates = \"registered\")")]
    NotRegistered,
}

/// The context ranking needs besides the process table.
#[derive(Debug, Clone)]
pub struct RankContext<'a> {
    /// lowmemd's own pid.
    pub self_pid: i32,
    /// The lowest adj the deciding level may touch; `None` ranks without a floor.
    pub min_adj: Option<i16>,
    /// Incarnations (pid, starttime) not to pick: acted on lately, or dying. A set: a user
    /// can make thousands of processes that will not exit, and each is looked up per process.
    pub recent: &'a BTreeSet<(i32, u64)>,
    /// The policy's rules, first match wins.
    pub rules: &'a [Rule],
}

impl Default for RankContext<'_> {
    fn default() -> Self {
        static NONE: BTreeSet<(i32, u64)> = BTreeSet::new();
        RankContext {
            self_pid: 0,
            min_adj: None,
            recent: &NONE,
            rules: &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranked {
    #[serde(flatten)]
    pub proc: RankedProc,
    pub excluded: Option<Exclusion>,
}

/// The serialisable view of a ranked process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankedProc {
    pub pid: i32,
    pub comm: String,
    pub oom_score_adj: i16,
    /// The adj ranking used: `oom_score_adj` changed by the matching rule, if any.
    pub effective_adj: i16,
    /// The name of the rule that matched.
    pub rule: Option<String>,
    /// A `last` rule matched: ranked after every candidate without one.
    pub last: bool,
    /// Ranked after the other candidates of this uid and nowhere else: an `owner_last`
    /// rule, or a marking this user (not root) set on their own cgroup.
    pub owner_last: Option<u32>,
    pub rss_kib: u64,
    pub swap_kib: u64,
    pub starttime: u64,
    /// Registered over the lmkd socket (uid and owning client), when the daemon has one.
    pub registered: Option<Registered>,
    /// The cgroup in the unified hierarchy, full path; null when nothing needed it read (the
    /// victim's is always read before it is acted on).
    pub cgroup: Option<String>,
    /// systemd's ManagedOOMPreference= marking that applies, and where it is.
    pub marking: Option<Marking>,
    /// The owner (effective uid), when read; always for a victim.
    pub uid: Option<u32>,
    /// The real uid, read where a level ranks by user.
    #[serde(skip)]
    pub real_uid: Option<u32>,
    /// What owns it where the level ranks by owner (`rank_by`): a cgroup path or
    /// `uid N`; null under per-process ranking or when its cgroup or uid is unknown.
    pub owner: Option<String>,
    /// What the owner's candidates of this band hold together (RSS + swap); set with
    /// `owner`, and for an unowned process under owner ranking its own size.
    pub owner_kib: Option<u64>,
}

impl From<ProcInfo> for RankedProc {
    /// A process as ranked without rules.
    fn from(p: ProcInfo) -> Self {
        Self {
            pid: p.pid,
            comm: p.comm,
            oom_score_adj: p.oom_score_adj,
            effective_adj: p.oom_score_adj,
            rule: None,
            last: false,
            owner_last: None,
            rss_kib: p.rss_kib,
            swap_kib: p.swap_kib,
            starttime: p.starttime,
            registered: None,
            cgroup: p.attrs.unified_cgroup,
            marking: p.attrs.marking,
            uid: p.attrs.uid,
            real_uid: p.attrs.real_uid,
            owner: None,
            owner_kib: None,
        }
    }
}

impl RankedProc {
    pub fn size_kib(&self) -> u64 {
        self.rss_kib + self.swap_kib
    }
}

/// Why `p` may not be a victim, if it may not; `protected` and `effective_adj` come from the
/// rules.
pub fn exclusion(
    p: &ProcInfo,
    protected: bool,
    effective_adj: i16,
    ctx: &RankContext<'_>,
) -> Option<Exclusion> {
    // Order matters only for what `rank` prints: the most fundamental reason first.
    if p.pid == 1 {
        Some(Exclusion::Init)
    } else if p.is_kernel_thread() {
        Some(Exclusion::KernelThread)
    } else if p.pid == ctx.self_pid {
        Some(Exclusion::Myself)
    } else if p.oom_score_adj <= -1000 {
        Some(Exclusion::Unkillable)
    } else if protected {
        Some(Exclusion::Protected)
    } else if p.is_zombie() {
        Some(Exclusion::Zombie)
    } else if ctx.min_adj.is_some_and(|floor| effective_adj < floor) {
        Some(Exclusion::BelowFloor)
    } else if ctx.recent.contains(&(p.pid, p.starttime)) {
        Some(Exclusion::RecentlyActed)
    } else if p.size_kib() == 0 {
        // A process whose memory is gone (reaped by process_mrelease while it cannot exit,
        // say) frees nothing when killed again.
        Some(Exclusion::NothingToFree)
    } else {
        None
    }
}

/// Ranks the whole table: candidates first, best victim first, then the excluded ones in the
/// same order (so `lowmemd rank` reads top-down).
pub fn rank(procs: Vec<ProcInfo>, ctx: &RankContext<'_>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = procs
        .into_iter()
        .map(|p| {
            let st = standing(ctx.rules, &p.comm, &p.attrs, p.oom_score_adj);
            let excluded = exclusion(&p, st.protected, st.effective_adj, ctx);
            Ranked {
                excluded,
                proc: ranked_proc(p, &st, ctx),
            }
        })
        .collect();
    sort(&mut ranked);
    ranked
}

/// `p` as ranked under its rule standing `st`.
fn ranked_proc(p: ProcInfo, st: &Standing, ctx: &RankContext<'_>) -> RankedProc {
    RankedProc {
        effective_adj: st.effective_adj,
        rule: st.rule.map(|i| ctx.rules[i].name.clone()),
        last: st.last,
        owner_last: st.owner_last,
        ..p.into()
    }
}

/// The first `k` of [`candidates`], in the same order, without ranking the whole table:
/// one pass computes each process's place (its rule standing, a small key) and only the
/// first `k` are made candidates. Ranking 20,000 processes in full took ~13 ms of the kill
/// path here (~650 ns a process, most of it moving and page-faulting the ranked copies of
/// the table); a kill needs its first one or few. Where a candidate's `owner_last` could
/// move another's place ([`settle`]), the table is handed back for the full ranking.
pub fn first_candidates(
    mut procs: Vec<ProcInfo>,
    ctx: &RankContext<'_>,
    k: usize,
) -> Result<FirstCandidates, Vec<ProcInfo>> {
    let mut keyed: Vec<(Key, u32)> = Vec::with_capacity(procs.len());
    for (i, p) in procs.iter().enumerate() {
        let st = standing(ctx.rules, &p.comm, &p.attrs, p.oom_score_adj);
        if exclusion(p, st.protected, st.effective_adj, ctx).is_some() {
            continue;
        }
        if st.owner_last.is_some() {
            return Err(procs);
        }
        let (size, adj) = (p.size_kib(), Reverse(st.effective_adj));
        let key = (
            st.last,
            adj,
            Reverse(size),
            0,
            Reverse(size),
            Reverse(p.starttime),
            p.pid,
        );
        keyed.push((key, i as u32));
    }
    let count = keyed.len();
    if keyed.len() > k {
        keyed.select_nth_unstable(k);
        keyed.truncate(k);
    }
    // Keys end with the pid: no two are equal.
    keyed.sort_unstable();
    let first = keyed
        .iter()
        .map(|&(_, i)| {
            let p = std::mem::replace(&mut procs[i as usize], ProcInfo::taken());
            let st = standing(ctx.rules, &p.comm, &p.attrs, p.oom_score_adj);
            ranked_proc(p, &st, ctx)
        })
        .collect();
    Ok(FirstCandidates {
        first,
        rest: procs,
        count,
    })
}

/// What [`first_candidates`] found.
#[derive(Debug)]
pub struct FirstCandidates {
    /// The first candidates, best victim first.
    pub first: Vec<RankedProc>,
    /// The table without them (their places hold [`ProcInfo::taken`]): every candidate
    /// here ranks after every one of `first`.
    pub rest: Vec<ProcInfo>,
    /// How many candidates the table holds in all.
    pub count: usize,
}

/// Candidates first, best victim first, then the excluded ones in the same order.
pub fn sort(ranked: &mut [Ranked]) {
    // Cached: the key hashes the owner's name, once per process rather than per comparison.
    ranked.sort_by_cached_key(|r| (r.excluded.is_some(), order(&r.proc)));
    let n = ranked.iter().take_while(|r| r.excluded.is_none()).count();
    settle_by(&mut ranked[..n], |r| &r.proc);
}

type Key = (
    bool,
    Reverse<i16>,
    Reverse<u64>,
    u64,
    Reverse<u64>,
    Reverse<u64>,
    i32,
);

/// The victim order among candidates: those a `last` rule holds back after all others;
/// then highest effective adj; then the owner holding the most (where the level ranks by
/// owner; equal totals by a hash of the owner's name, so members of one owner stay together
/// and the order holds from scan to scan), each process alone counting as its own owner
/// otherwise; then largest, youngest.
fn order(p: &RankedProc) -> Key {
    (
        p.last,
        Reverse(p.effective_adj),
        Reverse(p.owner_kib.unwrap_or_else(|| p.size_kib())),
        p.owner.as_deref().map_or(0, owner_tag),
        Reverse(p.size_kib()),
        Reverse(p.starttime),
        p.pid,
    )
}

/// A stable stand-in for an owner's name in the sort key (a key borrowing the name could
/// not be cached): `DefaultHasher::new` has fixed keys, so the same from scan to scan.
fn owner_tag(owner: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut h);
    h.finish()
}

/// Orders candidates (best victim first) after the set of them changed (some left out,
/// sizes read): [`order`], then each user's `owner_last` processes after that user's
/// others.
pub fn settle(cands: &mut [RankedProc]) {
    cands.sort_by_cached_key(order);
    settle_by(cands, |p| p);
}

/// On candidates already in [`order`]: where user U has `owner_last` processes, U's other
/// candidates ranked behind the first of them are pulled forward to just before it. So U's
/// held-back processes go after all of U's others, and nobody else's process moves
/// earlier — at most later, behind U's pulled ones (which is what U could do alone, by
/// raising their other processes' adj). Holding a process back behind other users' would
/// let a user's marking push someone else's process towards the killer. A process whose
/// uid is unknown, or that a root `last` rule holds back, is not pulled.
fn settle_by<T>(items: &mut [T], proc: impl Fn(&T) -> &RankedProc) {
    let mut first_held: HashMap<u32, Key> = HashMap::new();
    for p in items.iter().map(&proc) {
        if let Some(u) = p.owner_last {
            // In order: the first seen is the best.
            first_held.entry(u).or_insert_with(|| order(p));
        }
    }
    if first_held.is_empty() {
        return;
    }
    items.sort_by_cached_key(|t| {
        let p = proc(t);
        let own = order(p);
        if p.owner_last.is_some() {
            return (own, true, own);
        }
        match p.uid.and_then(|u| first_held.get(&u)) {
            Some(held) if !p.last && *held < own => (*held, false, own),
            _ => (own, false, own),
        }
    });
}

/// With swap in use, the size that orders victims includes swapped-out memory, which costs
/// a `status` read per process (~10 µs against ~1.4 µs for the rest). Only the first band
/// (the candidates sharing the highest effective adj) can give the victim, so only they
/// get `swap_kib` (from `read_swap`) and all are ordered again; the rest keep their RSS
/// order. (With `owner_last`, a user's process pulled forward may come from a lower band:
/// it is ordered by RSS among that user's own.)
pub fn add_swap_to_first_band(
    cands: &mut [RankedProc],
    mut read_swap: impl FnMut(&RankedProc) -> Option<u64>,
) {
    let Some(top) = cands
        .iter()
        .map(|c| (c.last, Reverse(c.effective_adj)))
        .min()
    else {
        return;
    };
    for c in cands
        .iter_mut()
        .filter(|c| (c.last, Reverse(c.effective_adj)) == top)
    {
        c.swap_kib = read_swap(c).unwrap_or(0);
    }
    settle(cands);
}

/// Only the candidates, best victim first. Placeholders a [`first_candidates`] left
/// ([`ProcInfo::taken`]) are not among them.
pub fn candidates(mut procs: Vec<ProcInfo>, ctx: &RankContext<'_>) -> Vec<RankedProc> {
    procs.retain(|p| !p.is_taken());
    rank(procs, ctx)
        .into_iter()
        .take_while(|r| r.excluded.is_none())
        .map(|r| r.proc)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn proc(pid: i32, adj: i16, rss_kib: u64) -> ProcInfo {
        ProcInfo::for_tests(pid, adj, rss_kib)
    }

    fn pids(r: &[RankedProc]) -> Vec<i32> {
        r.iter().map(|p| p.pid).collect()
    }

    #[test]
    fn highest_adj_first_then_largest() {
        let procs = vec![
            proc(10, 0, 500_000),
            proc(11, 900, 10_000),
            proc(12, 1000, 5_000),
            proc(13, 900, 20_000),
        ];
        let ctx = RankContext::default();
        assert_eq!(pids(&candidates(procs, &ctx)), [12, 13, 11, 10]);
    }

    #[test]
    fn swap_counts_toward_size() {
        let mut a = proc(10, 500, 10_000);
        a.swap_kib = 50_000;
        let b = proc(11, 500, 40_000);
        assert_eq!(
            pids(&candidates(vec![b, a], &RankContext::default())),
            [10, 11]
        );
    }

    #[test]
    fn ties_go_to_the_youngest_then_lowest_pid() {
        let mut a = proc(20, 100, 1000);
        let mut b = proc(21, 100, 1000);
        let mut c = proc(22, 100, 1000);
        a.starttime = 50;
        b.starttime = 90;
        c.starttime = 90;
        assert_eq!(
            pids(&candidates(vec![a, c, b], &RankContext::default())),
            [21, 22, 20]
        );
    }

    #[test]
    fn never_init_kthreads_self_unkillable_or_zombies() {
        let init = proc(1, 1000, 1 << 30);
        let mut kthread = proc(2, 1000, 0);
        kthread.flags = 0x0020_0000;
        let me = proc(77, 1000, 1 << 30);
        let unkillable = proc(78, -1000, 1 << 30);
        let mut zombie = proc(79, 1000, 0);
        zombie.state = 'Z';
        let ok = proc(80, 0, 10);
        let ctx = RankContext {
            self_pid: 77,
            ..Default::default()
        };
        let ranked = rank(vec![init, kthread, me, unkillable, zombie, ok], &ctx);
        let why: Vec<_> = ranked.iter().map(|r| (r.proc.pid, r.excluded)).collect();
        assert_eq!(why[0], (80, None));
        assert!(why.contains(&(1, Some(Exclusion::Init))));
        assert!(why.contains(&(2, Some(Exclusion::KernelThread))));
        assert!(why.contains(&(77, Some(Exclusion::Myself))));
        assert!(why.contains(&(78, Some(Exclusion::Unkillable))));
        assert!(why.contains(&(79, Some(Exclusion::Zombie))));
    }

    #[test]
    fn swap_is_read_for_the_first_band_only_and_reorders_it() {
        let procs = vec![
            proc(10, 1000, 30_000),
            proc(11, 1000, 20_000),
            proc(12, 900, 10_000),
        ];
        let mut cands = candidates(procs, &RankContext::default());
        assert_eq!(pids(&cands), [10, 11, 12]);
        let mut read = Vec::new();
        // p11 has 50 MiB swapped out: the larger victim.
        add_swap_to_first_band(&mut cands, |c| {
            read.push(c.pid);
            Some(if c.pid == 11 { 50_000 } else { 0 })
        });
        assert_eq!(read, [10, 11], "only the adj-1000 band is read");
        assert_eq!(pids(&cands), [11, 10, 12]);
    }

    #[test]
    fn floor_and_recent_exclude() {
        let procs = vec![proc(5, 1000, 1), proc(6, 950, 1), proc(7, 100, 1)];
        let recent = BTreeSet::from([(5, 105)]);
        let ctx = RankContext {
            self_pid: 0,
            min_adj: Some(900),
            recent: &recent,
            rules: &[],
        };
        assert_eq!(pids(&candidates(procs, &ctx)), [6]);
    }

    /// The kill path ranks only the first few of a large table: they must be exactly the
    /// full ranking's first, whatever rules, exclusions and ties there are, and the rest
    /// must rank after them.
    #[test]
    fn the_first_candidates_alone_are_the_full_ranking_s_first() {
        use crate::policy::rules::{Effect, Matcher, Rule};
        let rule = |name: &str, comm: &str, effect| Rule {
            name: name.into(),
            line: 1,
            matcher: Matcher {
                comm: vec![comm.into()],
                ..Default::default()
            },
            effect,
        };
        let rules = [
            rule("avoided", "p3", Effect::Last),
            rule("kept", "p5", Effect::Protect),
            rule("raised", "p7", Effect::Shift(600)),
            rule("pinned", "p9", Effect::SetAdj(950)),
        ];
        // Sizes that tie (pid % 5), adjs in three bands, init, a zombie, one recently acted
        // on, one below the floor.
        let table: Vec<ProcInfo> = (1..=200)
            .map(|pid| {
                let adj = [0, 300, 900][pid as usize % 3];
                let mut p = proc(pid, adj, 1_000 * (pid as u64 % 5 + 1));
                if pid == 11 {
                    p.state = 'Z';
                }
                if pid == 13 {
                    p.oom_score_adj = -100;
                }
                p
            })
            .collect();
        let recent = BTreeSet::from([(15, 115)]);
        let ctx = RankContext {
            self_pid: 17,
            min_adj: Some(0),
            recent: &recent,
            rules: &rules,
        };
        let full = candidates(table.clone(), &ctx);
        for k in [0, 1, 5, 64, 500] {
            let f = first_candidates(table.clone(), &ctx, k).unwrap();
            assert_eq!(f.count, full.len());
            assert_eq!(f.first[..], full[..k.min(full.len())], "k = {k}");
            let rest = candidates(f.rest, &ctx);
            assert_eq!(rest[..], full[k.min(full.len())..], "k = {k}");
        }
        // A user's `owner_last` reorders around it: the full ranking is needed.
        let held = [Rule {
            effect: Effect::OwnerLast,
            ..rule("held", "p4", Effect::Last)
        }];
        let mut owned = table.clone();
        owned[3].attrs.uid = Some(1000);
        let ctx = RankContext {
            rules: &held,
            ..ctx
        };
        assert_eq!(first_candidates(owned.clone(), &ctx, 5).unwrap_err(), owned);
    }

    /// systemd-oomd's `avoid`: such a process goes only when no unmarked one is left, even
    /// a smaller one at a lower adj; the level's floor still applies to its own adj.
    #[test]
    fn last_rule_ranks_after_every_other_candidate() {
        use crate::policy::rules::{Effect, Matcher, Rule};
        let rules = [Rule {
            name: "avoided".into(),
            line: 1,
            matcher: Matcher {
                comm: vec!["p10".into(), "p12".into()],
                ..Default::default()
            },
            effect: Effect::Last,
        }];
        let procs = vec![
            proc(10, 1000, 900_000),
            proc(11, 300, 10),
            proc(12, 100, 900_000),
            proc(13, 900, 20),
        ];
        let ctx = RankContext {
            min_adj: Some(200),
            rules: &rules,
            ..Default::default()
        };
        let ranked = candidates(procs, &ctx);
        assert_eq!(pids(&ranked), [13, 11, 10]);
        assert!(ranked[2].last && !ranked[0].last);
    }

    /// Issue 19, item 3: a marking a user set on their own cgroup. Before: their avoided
    /// adj-1000 process went behind root's adj-0 processes. Now it goes after their own
    /// other candidate only, which is pulled forward to its place: root's processes keep
    /// their places behind both.
    #[test]
    fn a_users_avoid_marking_orders_only_that_users_own_processes() {
        use crate::policy::rules::{Effect, Matcher, Rule};
        use crate::procs::{Marking, OomPreference};
        let rules = [Rule {
            name: "systemd-avoid".into(),
            line: 1,
            matcher: Matcher {
                marking: Some(OomPreference::Avoid),
                ..Default::default()
            },
            effect: Effect::Last,
        }];
        let owned = |mut p: ProcInfo, uid: u32| {
            p.attrs.uid = Some(uid);
            p
        };
        let marked = |mut p: ProcInfo, owner: u32| {
            p.attrs.marking = Some(Marking {
                preference: OomPreference::Avoid,
                cgroup: "/user.slice/user-65534.slice/user@65534.service/app.slice".into(),
                owner,
            });
            p
        };
        let user_hog = marked(owned(proc(10, 1000, 500_000), 65534), 65534);
        let user_small = owned(proc(11, 100, 1_000), 65534);
        let root_big = owned(proc(20, 0, 900_000), 0);
        let root_mid = owned(proc(21, 500, 50_000), 0);
        let other_user = owned(proc(30, 300, 10_000), 1000);
        let ctx = RankContext {
            rules: &rules,
            ..Default::default()
        };
        let procs = || {
            vec![
                user_hog.clone(),
                user_small.clone(),
                root_big.clone(),
                root_mid.clone(),
                other_user.clone(),
            ]
        };
        let ranked = candidates(procs(), &ctx);
        // Without the marking: 10, 21, 30, 11, 20. The user's small one takes the place
        // of their marked one; everyone else's order is as without it.
        assert_eq!(pids(&ranked), [11, 10, 21, 30, 20]);
        assert_eq!(ranked[1].owner_last, Some(65534));
        assert!(!ranked[1].last, "not held back behind anyone else's");
        // The same marking set by root keeps its meaning: after every unmarked candidate.
        let by_root: Vec<ProcInfo> = procs()
            .into_iter()
            .map(|p| if p.pid == 10 { marked(p, 0) } else { p })
            .collect();
        assert_eq!(pids(&candidates(by_root, &ctx)), [21, 30, 11, 20, 10]);
        // Ordered again after some are left out (a page-out level's eligibility): still
        // never behind another user's process it was ahead of.
        let mut some = candidates(procs(), &ctx);
        some.retain(|p| p.pid != 11);
        settle(&mut some);
        assert_eq!(pids(&some), [10, 21, 30, 20]);
        // A marking whose user is unknown orders nothing.
        let mut unknown = procs();
        unknown[1].attrs.uid = None;
        assert_eq!(pids(&candidates(unknown, &ctx)), [10, 21, 30, 11, 20]);
    }
}
