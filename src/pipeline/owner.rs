//! Ranking by owner (`rank_by = "cgroup" | "uid"`): which app, unit, pod or user owns each
//! candidate, and what the owner's candidates of one band hold together. Pure: the order
//! itself is `rank::order`, which puts the owner holding the most first, then its largest
//! process.
//!
//! Why: a per-process killer takes the single largest process, the 100 MiB browser, while
//! a build of eight 30 MiB compilers holds 240 MiB; a per-cgroup killer sees the build but
//! kills the whole cgroup, and finds nothing when an app is split into many small leaves.
//! Ranking by owner and killing by process takes one compiler. Only candidates count:
//! protected processes, those below the level's floor and those of another adj band (a
//! `last` one, or one at another effective adj) add nothing to their owner's total here.

use std::collections::HashMap;

use crate::policy::RankBy;
use crate::procs::is_within;

use super::rank::{Ranked, RankedProc};

/// The owner of `p` under `by`, if it has one: its cgroup's owning cgroup, or `uid N` (the
/// real uid: /proc/PID's owner is root for a non-dumpable process, whoever runs it).
/// `scope` is the scope's cgroup (`None`: the whole system). A process whose cgroup or uid
/// was not read (it raced away, or the policy needs neither) has none: it ranks alone.
pub fn owner_of(p: &RankedProc, by: RankBy, scope: Option<&str>) -> Option<String> {
    match by {
        RankBy::Process => None,
        RankBy::Uid => p.real_uid.map(|u| format!("uid {u}")),
        RankBy::Cgroup { depth } => p.cgroup.as_deref().map(|c| cgroup_owner(c, depth, scope)),
    }
}

/// The cgroup that owns a process in cgroup `path`: the one `depth` components below the
/// scope, or (`None`) the app's own cgroup as the desktop, systemd or the orchestrator
/// names it (see [`app_end`]). Never above the scope; a cgroup shallower than `depth` is
/// its own owner.
pub fn cgroup_owner(path: &str, depth: Option<u8>, scope: Option<&str>) -> String {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let below = scope
        .filter(|s| is_within(path, s))
        .map_or(0, |s| s.split('/').filter(|c| !c.is_empty()).count());
    let end = match depth {
        Some(d) => (below + d as usize).min(comps.len()),
        None => app_end(&comps, below),
    };
    format!("/{}", comps[..end].join("/"))
}

/// How many leading components of a cgroup path name the app, looking only at components
/// from index `from` (below the scope):
/// - a Kubernetes pod (`kubepods…/[qos/]pod<uid>` with the cgroupfs driver,
///   `kubepods-<qos>-pod<uid>.slice` with systemd's): the pod, not each container in it;
/// - a Docker container under the cgroupfs driver (`/docker/<id>`); with systemd's driver
///   it is a `docker-<id>.scope`, found below;
/// - else the deepest systemd unit: `app-*.scope` (a desktop app), `*.service`, a session's
///   `*.scope`: so an app spread over sub-cgroups of its unit is one owner, and a user's
///   `user@UID.service` is not the owner of every app below it;
/// - else the leaf itself.
fn app_end(comps: &[&str], from: usize) -> usize {
    let eligible = |i: usize| i >= from;
    if let Some(k) = comps.iter().position(|c| c.starts_with("kubepods"))
        && let Some(p) = (k + 1..comps.len()).find(|&i| eligible(i) && is_pod(comps[i]))
    {
        return p + 1;
    }
    if let Some(d) = comps.iter().position(|c| *c == "docker")
        && d + 1 < comps.len()
        && eligible(d + 1)
    {
        return d + 2;
    }
    match (from..comps.len())
        .rev()
        .find(|&i| comps[i].ends_with(".scope") || comps[i].ends_with(".service"))
    {
        Some(i) => i + 1,
        None => comps.len().max(from),
    }
}

/// A pod's cgroup: `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid>.slice`
/// (systemd driver).
fn is_pod(c: &str) -> bool {
    c.starts_with("pod") || (c.ends_with(".slice") && c.contains("-pod"))
}

/// Sets `owner` and `owner_kib` of every candidate: the owner's total is over the
/// candidates of the same band (`last`, effective adj) only. Under per-process ranking
/// both are cleared. Order them again afterwards (`rank::settle` or `rank::sort`).
pub fn annotate(cands: &mut [RankedProc], by: RankBy, scope: Option<&str>) {
    annotate_by(cands, |c| Some(c), by, scope);
}

/// [`annotate`] over a whole ranked table (`lowmemd rank`): the excluded are left alone.
pub fn annotate_ranked(ranked: &mut [Ranked], by: RankBy, scope: Option<&str>) {
    annotate_by(
        ranked,
        |r| r.excluded.is_none().then_some(&mut r.proc),
        by,
        scope,
    );
}

fn annotate_by<T>(
    items: &mut [T],
    cand: impl Fn(&mut T) -> Option<&mut RankedProc>,
    by: RankBy,
    scope: Option<&str>,
) {
    let mut totals: HashMap<(bool, i16, String), u64> = HashMap::new();
    for c in items.iter_mut().filter_map(&cand) {
        c.owner = owner_of(c, by, scope);
        c.owner_kib = None;
        if let Some(o) = &c.owner {
            *totals
                .entry((c.last, c.effective_adj, o.clone()))
                .or_default() += c.size_kib();
        }
    }
    if !by.by_owner() {
        return;
    }
    for c in items.iter_mut().filter_map(&cand) {
        c.owner_kib = Some(match &c.owner {
            Some(o) => totals[&(c.last, c.effective_adj, o.clone())],
            None => c.size_kib(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::rank::{RankContext, candidates, settle};
    use crate::procs::ProcInfo;

    const APP: RankBy = RankBy::Cgroup { depth: None };

    fn in_cgroup(pid: i32, adj: i16, mib: u64, cgroup: Option<&str>) -> ProcInfo {
        let mut p = ProcInfo::for_tests(pid, adj, mib * 1024);
        p.attrs.unified_cgroup = cgroup.map(String::from);
        p
    }

    fn ranked(procs: Vec<ProcInfo>, by: RankBy, ctx: &RankContext<'_>) -> Vec<RankedProc> {
        let mut c = candidates(procs, ctx);
        annotate(&mut c, by, None);
        settle(&mut c);
        c
    }

    fn pids(r: &[RankedProc]) -> Vec<i32> {
        r.iter().map(|p| p.pid).collect()
    }

    /// Eight 30 MiB compilers and a 100 MiB browser, all at adj 0.
    fn build_and_browser() -> Vec<ProcInfo> {
        let mut v: Vec<ProcInfo> = (0..8)
            .map(|i| in_cgroup(100 + i, 0, 30, Some("/user.slice/session-2.scope")))
            .collect();
        v.push(in_cgroup(
            200,
            0,
            100,
            Some("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1.scope"),
        ));
        v
    }

    #[test]
    fn the_owner_holding_most_goes_first_then_its_largest_process() {
        let mut procs = build_and_browser();
        procs[3].rss_kib = 31 * 1024; // the largest compiler
        let ctx = RankContext::default();
        let by_process = ranked(procs.clone(), RankBy::Process, &ctx);
        assert_eq!(by_process[0].pid, 200, "alone, the browser is the largest");
        assert_eq!(by_process[0].owner, None);
        let by_app = ranked(procs, APP, &ctx);
        assert_eq!(
            pids(&by_app)[..2],
            [103, 107],
            "the build's largest, then its youngest"
        );
        assert_eq!(
            by_app[0].owner.as_deref(),
            Some("/user.slice/session-2.scope")
        );
        assert_eq!(by_app[0].owner_kib, Some((7 * 30 + 31) * 1024));
        assert_eq!(by_app[8].pid, 200, "the browser after the whole build");
        assert_eq!(by_app[8].owner_kib, Some(100 * 1024));
    }

    #[test]
    fn adj_still_comes_first_and_only_the_bands_own_candidates_count() {
        // The build's compilers at adj 0 do not make its one adj-900 helper the victim of
        // a level whose floor is 900, nor of any band but their own.
        let mut procs = build_and_browser();
        procs.push(in_cgroup(300, 900, 5, Some("/user.slice/session-2.scope")));
        procs.push(in_cgroup(301, 900, 50, Some("/system.slice/cache.service")));
        let floor = RankContext {
            min_adj: Some(900),
            ..Default::default()
        };
        let r = ranked(procs.clone(), APP, &floor);
        assert_eq!(pids(&r), [301, 300]);
        assert_eq!(
            r[1].owner_kib,
            Some(5 * 1024),
            "not 245 MiB: adj 0 is not this band"
        );
        // Without a floor: the adj-900 band first, the build's adj-0 grouping after it.
        let r = ranked(procs, APP, &RankContext::default());
        assert_eq!(pids(&r)[..3], [301, 300, 107]);
    }

    #[test]
    fn protected_members_do_not_count_towards_their_owner() {
        use crate::policy::rules::{Effect, Matcher, Rule};
        let rules = [Rule {
            name: "keep-ld".into(),
            line: 1,
            matcher: Matcher {
                comm: (100..108).map(|p| format!("p{p}")).collect(),
                ..Default::default()
            },
            effect: Effect::Protect,
        }];
        let mut procs = build_and_browser();
        procs.push(in_cgroup(108, 0, 10, Some("/user.slice/session-2.scope")));
        let ctx = RankContext {
            rules: &rules,
            ..Default::default()
        };
        let r = ranked(procs, APP, &ctx);
        assert_eq!(
            pids(&r),
            [200, 108],
            "the build's 10 MiB left is less than the browser"
        );
        assert_eq!(r[1].owner_kib, Some(10 * 1024));
    }

    #[test]
    fn a_process_without_a_cgroup_ranks_alone_by_its_own_size() {
        let mut procs = build_and_browser();
        procs.push(in_cgroup(400, 0, 300, None));
        procs.push(in_cgroup(401, 0, 20, None));
        let r = ranked(procs, APP, &RankContext::default());
        assert_eq!(r[0].pid, 400, "300 MiB alone beats the build's 240");
        assert_eq!(
            (r[0].owner.as_deref(), r[0].owner_kib),
            (None, Some(300 * 1024))
        );
        assert_eq!(r[1].pid, 107);
        // Two unowned processes are not one owner: the 20 MiB one ranks by its 20 MiB.
        assert_eq!(pids(&r)[9..], [200, 401]);
    }

    #[test]
    fn equal_totals_keep_each_owners_members_together() {
        let procs = vec![
            in_cgroup(11, 0, 10, Some("/a.service")),
            in_cgroup(12, 0, 30, Some("/b.service")),
            in_cgroup(13, 0, 30, Some("/a.service")),
            in_cgroup(14, 0, 10, Some("/b.service")),
        ];
        let r = ranked(procs, APP, &RankContext::default());
        let owners: Vec<_> = r.iter().map(|p| p.owner.clone().unwrap()).collect();
        assert_eq!(owners[0], owners[1], "{owners:?}");
        assert_eq!(owners[2], owners[3], "{owners:?}");
        assert!(
            r[0].size_kib() > r[1].size_kib(),
            "largest first within an owner"
        );
        // The same order every time (the tie is broken by the name, not by the scan order).
        let again = ranked(
            vec![
                in_cgroup(14, 0, 10, Some("/b.service")),
                in_cgroup(13, 0, 30, Some("/a.service")),
                in_cgroup(12, 0, 30, Some("/b.service")),
                in_cgroup(11, 0, 10, Some("/a.service")),
            ],
            APP,
            &RankContext::default(),
        );
        assert_eq!(pids(&again), pids(&r));
    }

    #[test]
    fn by_uid_groups_a_users_processes() {
        let mut procs: Vec<ProcInfo> = (0..4).map(|i| in_cgroup(10 + i, 0, 40, None)).collect();
        procs.push(in_cgroup(20, 0, 100, None));
        for p in &mut procs {
            p.attrs.real_uid = Some(if p.pid == 20 { 0 } else { 1000 });
            // /proc/PID of a non-dumpable process is root's: not who runs it.
            p.attrs.uid = Some(0);
        }
        let r = ranked(procs, RankBy::Uid, &RankContext::default());
        assert_eq!(r[0].owner.as_deref(), Some("uid 1000"));
        assert_eq!(r[0].owner_kib, Some(160 * 1024));
        assert_eq!(r[4].pid, 20);
    }

    #[test]
    fn an_owner_last_process_stays_behind_its_users_others() {
        // owner_last is applied after grouping: the user's held-back process in the large
        // group does not go first, and nobody else's moves earlier because of it.
        let mut procs = build_and_browser();
        for p in &mut procs {
            p.attrs.uid = Some(1000);
        }
        let mut c = candidates(procs, &RankContext::default());
        let held = 103; // a compiler, held back behind the user's others
        c.iter_mut().find(|p| p.pid == held).unwrap().owner_last = Some(1000);
        annotate(&mut c, APP, None);
        settle(&mut c);
        assert_eq!(c.last().unwrap().pid, held, "{:?}", pids(&c));
        assert_ne!(c[0].pid, held);
    }

    #[test]
    fn app_cgroups_are_found_by_their_names() {
        let own = |p: &str| cgroup_owner(p, None, None);
        let app = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1.scope";
        assert_eq!(own(app), app);
        assert_eq!(own(&format!("{app}/tab-3")), app, "a sub-cgroup of the app");
        assert_eq!(
            own("/system.slice/build.service/job-7"),
            "/system.slice/build.service"
        );
        assert_eq!(
            own("/user.slice/user-1000.slice/user@1000.service/init.scope"),
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
            "not the user's whole manager"
        );
        assert_eq!(
            own("/kubepods/burstable/pod1234/ctr-a"),
            "/kubepods/burstable/pod1234"
        );
        assert_eq!(own("/kubepods/pod99/ctr-b"), "/kubepods/pod99");
        let sd = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice";
        assert_eq!(
            own(&format!("{sd}/cri-containerd-abc.scope")),
            sd,
            "not the container"
        );
        assert_eq!(own("/docker/0123abc"), "/docker/0123abc");
        assert_eq!(own("/box/app"), "/box/app", "no unit: the leaf");
        assert_eq!(own("/"), "/");
    }

    #[test]
    fn owners_are_never_above_the_scope_and_depth_counts_below_it() {
        let scope = Some("/system.slice/build.service");
        assert_eq!(
            cgroup_owner("/system.slice/build.service/a/b", None, scope),
            "/system.slice/build.service/a/b",
            "the unit is the scope itself: the leaf below it"
        );
        let scope = Some("/box");
        assert_eq!(cgroup_owner("/box/app/x/y", Some(1), scope), "/box/app");
        assert_eq!(cgroup_owner("/box/app/x/y", Some(2), scope), "/box/app/x");
        assert_eq!(cgroup_owner("/box/app", Some(3), scope), "/box/app");
        assert_eq!(cgroup_owner("/box", Some(1), scope), "/box");
        // The scope is the pod tree: pods below it are found all the same.
        let kube = Some("/kubepods");
        assert_eq!(
            cgroup_owner("/kubepods/burstable/pod7/c1", None, kube),
            "/kubepods/burstable/pod7"
        );
    }
}
