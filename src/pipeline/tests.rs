//! The pipeline's own logic on a fake kernel with a clock of its own: one victim in flight,
//! stale samples, the wait deadline, victims that never exit, cooldown, dry-run pacing,
//! `max_victims`, a victim gone before the signal. No root, no /proc, milliseconds.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::confirm::Outcome;
use super::freeze::freezer::FreezerError;
use super::freeze::frozen::Thaw;
use super::group::{GroupError, Member};
use super::kernel::Kernel;
use super::outcome::{Ending, Freeze, GroupKill, Kill, Observer, Pageout, Skip, Thawed};
use super::pageout::Advised;
use super::pin::{PinError, Target};
use super::rank::RankedProc;
use super::signal::{KillError, Reap, Release};
use super::{Pipeline, PolicyStore};
use crate::health::Health;
use crate::policy::Policy;
use crate::policy::decide::{Decided, decide};
use crate::procs::{Attrs, MemDetail, Needs, ProcError, ProcInfo, Region, Scan};
use crate::sample::{MemSnapshot, Sample};
use crate::scope::ScopeError;

const MIB: u64 = 1024;

/// How a fake process answers SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Exit {
    /// Its pidfd becomes readable this long after the signal.
    After(u64),
    /// Never (frozen, stuck in D state).
    Never,
    /// It was gone before the signal arrived (ESRCH).
    Gone,
}

#[derive(Debug, Clone)]
struct FakeProc {
    pid: i32,
    adj: i16,
    rss_kib: u64,
    exit: Exit,
    dead: bool,
    /// Its cgroup in the unified hierarchy.
    cgroup: Option<String>,
    /// When SIGKILL reached it: its exit time counts from here.
    signalled_at: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    now_ms: u64,
    total_kib: u64,
    used_kib: u64,
    /// Free memory and file cache (lmkd's minfree measure); free = total − used unless set.
    free_file_kib: Option<(u64, u64)>,
    procs: Vec<FakeProc>,
    /// Pids signalled, in order.
    signalled: Vec<i32>,
    /// Cgroups killed whole, in order.
    cgroups_killed: Vec<String>,
    /// (pid, adj): the process changes its adj right after the next scan read it.
    after_scan: Option<(i32, i16)>,
    /// Cgroups frozen now, and every freeze (`+cgroup`) and thaw (`-cgroup`) in order.
    frozen: Vec<String>,
    freezer_log: Vec<String>,
    /// Pids that exit right after the next scan read them.
    vanish_after_scan: Vec<i32>,
    /// Page-out: set, processes answer status and smaps with their size as anonymous memory.
    pageout: Option<FakePageout>,
    /// The kernel lacks process_mrelease.
    no_mrelease: bool,
    /// Pids process_mrelease refuses (memory shared with a live process).
    unreapable: Vec<i32>,
    /// Pids whose memory process_mrelease reaped, in order.
    released: Vec<i32>,
    /// Pids process_mrelease reaps without freeing anything (their memory is shared).
    reaps_nothing: Vec<i32>,
    /// How many had been reaped at each scan (one a pass).
    reaped_at_scan: Vec<usize>,
}

/// How the fake answers page-outs.
#[derive(Debug, Default)]
struct FakePageout {
    swap: bool,
    /// Memory used elsewhere grows by this much during each process_madvise call (a
    /// foreground job growing faster than page-out frees).
    grow_per_call_kib: u64,
    /// process_madvise calls and smaps reads, counted.
    calls: u32,
    smaps_reads: u32,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn new(total_mib: u64, used_mib: u64, procs: &[(i32, i16, u64, Exit)]) -> Fake {
        Fake(Arc::new(Mutex::new(State {
            now_ms: 1_000_000,
            total_kib: total_mib * MIB,
            used_kib: used_mib * MIB,
            free_file_kib: None,
            procs: procs
                .iter()
                .map(|&(pid, adj, rss_mib, exit)| FakeProc {
                    pid,
                    adj,
                    rss_kib: rss_mib * MIB,
                    exit,
                    dead: false,
                    cgroup: None,
                    signalled_at: None,
                })
                .collect(),
            signalled: Vec::new(),
            cgroups_killed: Vec::new(),
            after_scan: None,
            frozen: Vec::new(),
            freezer_log: Vec::new(),
            vanish_after_scan: Vec::new(),
            pageout: None,
            no_mrelease: false,
            unreapable: Vec::new(),
            released: Vec::new(),
            reaps_nothing: Vec::new(),
            reaped_at_scan: Vec::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// A sample of the fake's memory now.
    fn sample(&self) -> Sample {
        let s = self.state();
        Sample {
            at_ms: s.now_ms,
            mem: mem(&s),
            psi: Vec::new(),
            vmpressure_ms: None,
            thrashing_pct: None,
            thrashing_since_ms: 0,
            headroom_fall_kib_s: None,
            swap_absorbing_ms: None,
        }
    }

    fn advance(&self, ms: u64) {
        self.state().now_ms += ms;
    }

    fn signalled(&self) -> Vec<i32> {
        self.state().signalled.clone()
    }

    /// Puts `pids` into the unified-hierarchy cgroup `cgroup`.
    fn in_cgroup(&self, cgroup: &str, pids: &[i32]) {
        for p in self.state().procs.iter_mut() {
            if pids.contains(&p.pid) {
                p.cgroup = Some(cgroup.into());
            }
        }
    }

    /// Someone else SIGKILLs `pid` now: its exit counts from here.
    fn killed_by_another(&self, pid: i32) {
        let mut s = self.state();
        let now = s.now_ms;
        let p = s.procs.iter_mut().find(|p| p.pid == pid).unwrap();
        p.signalled_at = Some(now);
    }

    fn released(&self) -> Vec<i32> {
        self.state().released.clone()
    }

    fn cgroups_killed(&self) -> Vec<String> {
        self.state().cgroups_killed.clone()
    }
}

fn mem(s: &State) -> MemSnapshot {
    MemSnapshot {
        total_kib: s.total_kib,
        available_kib: s.total_kib.saturating_sub(s.used_kib),
        free_kib: s
            .free_file_kib
            .map_or(s.total_kib.saturating_sub(s.used_kib), |f| f.0),
        file_kib: s.free_file_kib.map_or(0, |f| f.1),
        ..Default::default()
    }
}

impl Kernel for Fake {
    fn now_ms(&self) -> u64 {
        self.state().now_ms
    }

    fn memory(&self) -> Result<MemSnapshot, ScopeError> {
        Ok(mem(&self.state()))
    }

    fn scan(&mut self, _: Option<i16>, _: bool, _: Needs) -> Result<Scan, ScopeError> {
        let mut s = self.state();
        let reaped = s.released.len();
        s.reaped_at_scan.push(reaped);
        let procs = s
            .procs
            .iter()
            .filter(|p| !p.dead)
            .map(|p| {
                let mut info = ProcInfo::for_tests(p.pid, p.adj, p.rss_kib);
                info.attrs.unified_cgroup = p.cgroup.clone();
                info
            })
            .collect();
        for pid in std::mem::take(&mut s.vanish_after_scan) {
            s.procs
                .iter_mut()
                .filter(|p| p.pid == pid)
                .for_each(|p| p.dead = true);
        }
        if let Some((pid, adj)) = s.after_scan.take() {
            s.procs
                .iter_mut()
                .filter(|p| p.pid == pid)
                .for_each(|p| p.adj = adj);
        }
        Ok(Scan {
            procs,
            ..Default::default()
        })
    }

    fn swap_kib(&self, _: i32) -> Option<u64> {
        Some(0)
    }

    fn pin(&self, cand: RankedProc) -> Result<Target, PinError> {
        let s = self.state();
        let Some(p) = s.procs.iter().find(|p| p.pid == cand.pid && !p.dead) else {
            return Err(PinError::Vanished(cand.pid));
        };
        let t = Target::for_tests(None, cand);
        if p.signalled_at.is_some() {
            return Err(PinError::Dying(Box::new(t)));
        }
        Ok(t)
    }

    fn reread(&self, pid: i32, _: Needs) -> (Attrs, Option<i16>) {
        let s = self.state();
        let p = s.procs.iter().find(|p| p.pid == pid && !p.dead);
        let attrs = Attrs {
            unified_cgroup: p.and_then(|p| p.cgroup.clone()),
            ..Default::default()
        };
        (attrs, p.map(|p| p.adj))
    }

    fn scope_cgroup(&self) -> Option<String> {
        Some("/box".into())
    }

    fn cgroup_members(&self, cgroup: &str) -> Result<Vec<Member>, GroupError> {
        Ok(self
            .state()
            .procs
            .iter()
            .filter(|p| !p.dead && p.cgroup.as_deref() == Some(cgroup))
            .map(|p| Member {
                proc: RankedProc::from(ProcInfo::for_tests(p.pid, p.adj, p.rss_kib)),
                kernel_thread: false,
            })
            .collect())
    }

    fn kill_cgroup(&self, cgroup: &str, members: &[Target]) -> Result<(), GroupError> {
        let mut s = self.state();
        s.cgroups_killed.push(cgroup.into());
        s.signalled.extend(members.iter().map(|t| t.proc.pid));
        let now = s.now_ms;
        for p in s.procs.iter_mut() {
            if members.iter().any(|t| t.proc.pid == p.pid) {
                p.signalled_at = Some(now);
            }
        }
        Ok(())
    }

    fn kill(&self, target: &Target) -> Result<Reap, KillError> {
        let mut s = self.state();
        let now = s.now_ms;
        let p = s
            .procs
            .iter_mut()
            .find(|p| p.pid == target.proc.pid)
            .unwrap();
        if p.exit == Exit::Gone {
            p.dead = true;
            return Ok(Reap::AlreadyGone);
        }
        let pid = p.pid;
        p.signalled_at = Some(now);
        s.signalled.push(pid);
        Ok(Reap::Released)
    }

    /// Reaped: its memory is back at once, the process lingers until its exit.
    fn release(&self, target: &Target) -> Release {
        let mut s = self.state();
        if s.no_mrelease {
            return Release::Unavailable;
        }
        if s.unreapable.contains(&target.proc.pid) {
            return Release::Refused;
        }
        if s.reaps_nothing.contains(&target.proc.pid) {
            s.released.push(target.proc.pid);
            return Release::Released;
        }
        let p = s
            .procs
            .iter_mut()
            .find(|p| p.pid == target.proc.pid)
            .unwrap();
        let freed = std::mem::take(&mut p.rss_kib);
        s.used_kib = s.used_kib.saturating_sub(freed);
        s.released.push(target.proc.pid);
        Release::Released
    }

    fn wait_exit(&self, target: &Target, deadline_ms: u64) -> Outcome {
        let mut s = self.state();
        let now = s.now_ms;
        let i = s
            .procs
            .iter()
            .position(|p| p.pid == target.proc.pid)
            .unwrap();
        let from = s.procs[i].signalled_at.unwrap_or(now);
        match s.procs[i].exit {
            Exit::After(ms) if from + ms < deadline_ms => {
                s.now_ms = now.max(from + ms);
                if !s.procs[i].dead {
                    s.procs[i].dead = true;
                    s.used_kib = s.used_kib.saturating_sub(s.procs[i].rss_kib);
                }
                Outcome::Exited { at_ms: from + ms }
            }
            _ => {
                s.now_ms = deadline_ms;
                Outcome::TimedOut
            }
        }
    }

    fn exited(&self, target: &Target) -> bool {
        let s = self.state();
        s.procs.iter().any(|p| {
            p.pid == target.proc.pid
                && (p.dead
                    || matches!((p.exit, p.signalled_at), (Exit::After(ms), Some(at)) if at + ms <= s.now_ms))
        })
    }

    fn gone(&self, pid: i32, starttime: u64) -> bool {
        let s = self.state();
        // The fake's starttime is 100 + pid: another one is a new incarnation.
        let alive = s.procs.iter().any(|p| p.pid == pid && !p.dead);
        !alive || starttime != 100 + pid as u64
    }

    fn psi_avg10(&self) -> Option<(f64, f64)> {
        None
    }

    fn mem_detail(&self, pid: i32) -> Result<MemDetail, ProcError> {
        let s = self.state();
        match (&s.pageout, s.procs.iter().find(|p| p.pid == pid && !p.dead)) {
            (Some(_), Some(p)) => Ok(MemDetail {
                rss_anon_kib: p.rss_kib,
                ..Default::default()
            }),
            _ => Err(ProcError::Vanished { pid }),
        }
    }

    fn smaps(&self, pid: i32) -> Result<Vec<Region>, ProcError> {
        let mut s = self.state();
        let rss_kib = s.procs.iter().find(|p| p.pid == pid).map(|p| p.rss_kib);
        match (s.pageout.as_mut(), rss_kib) {
            (Some(po), Some(rss_kib)) => {
                po.smaps_reads += 1;
                Ok(vec![Region {
                    start: 1 << 30,
                    end: (1 << 30) + rss_kib * 1024,
                    backing: crate::procs::Backing::Anon,
                    shared: false,
                    rss_kib,
                    locked: false,
                    hugetlb: false,
                    device: false,
                }])
            }
            _ => Err(ProcError::Vanished { pid }),
        }
    }

    fn swap_active(&self) -> bool {
        self.state().pageout.as_ref().is_some_and(|po| po.swap)
    }

    /// Each call pages out its bytes of the process and lets the elsewhere grow.
    fn advise(&self, target: &Target, batches: &[Vec<(u64, u64)>]) -> Advised {
        let mut s = self.state();
        let bytes: u64 = batches.iter().flatten().map(|r| r.1).sum();
        let grow = s.pageout.as_ref().map_or(0, |po| po.grow_per_call_kib);
        if let Some(po) = s.pageout.as_mut() {
            po.calls += batches.len() as u32;
        }
        let freed = bytes / 1024;
        if let Some(p) = s.procs.iter_mut().find(|p| p.pid == target.proc.pid) {
            p.rss_kib = p.rss_kib.saturating_sub(freed);
        }
        s.used_kib = (s.used_kib + grow * batches.len() as u64).saturating_sub(freed);
        s.now_ms += 50;
        Advised {
            advised_bytes: bytes,
            calls: batches.len() as u32,
            ..Default::default()
        }
    }

    fn set_frozen(&self, cgroup: &str, frozen: bool) -> Result<(), FreezerError> {
        let mut s = self.state();
        s.frozen.retain(|c| c != cgroup);
        if frozen {
            s.frozen.push(cgroup.into());
        }
        s.freezer_log
            .push(format!("{}{cgroup}", if frozen { '+' } else { '-' }));
        Ok(())
    }

    fn stop_alone(&self, target: &Target, stop: bool) -> Result<(), FreezerError> {
        let pid = target.proc.pid;
        let mut s = self.state();
        s.freezer_log
            .push(format!("{}pid {pid}", if stop { '+' } else { '-' }));
        Ok(())
    }

    fn is_frozen(&self, cgroup: &str) -> Result<bool, FreezerError> {
        Ok(self.state().frozen.iter().any(|c| c == cgroup))
    }

    fn swap_ram_kib(&self) -> u64 {
        0
    }
}

/// What the pipeline told its observer.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Killed(i32, Ending),
    /// The victim's whole cgroup was killed with it.
    Group(i32, GroupKill),
    Skipped(Skip),
    Recovered,
    Froze(String),
    Thawed(String, Thaw),
    /// A page-out of the pid, and whether it was interrupted.
    PagedOut(i32, bool),
}

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<Seen>>>);

impl Record {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn groups(&self) -> Vec<(i32, GroupKill)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Group(pid, g) => Some((pid, g)),
                _ => None,
            })
            .collect()
    }

    fn kills(&self) -> Vec<(i32, Ending)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Killed(pid, e) => Some((pid, e)),
                _ => None,
            })
            .collect()
    }
}

impl Observer for Record {
    fn sampled(&self, _: &MemSnapshot, _: Option<&str>, _: &Policy) {}
    fn recovered(&self) {
        self.0.lock().unwrap().push(Seen::Recovered);
    }
    fn ranked(&self, _: Duration, _: usize) {}
    fn skipped(&self, why: Skip) {
        self.0.lock().unwrap().push(Seen::Skipped(why));
    }
    fn killed(&self, k: &Kill<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Killed(k.victim.pid, k.ending));
        if let Some(g) = &k.group {
            self.0
                .lock()
                .unwrap()
                .push(Seen::Group(k.victim.pid, g.clone()));
        }
    }
    fn paged_out(&self, p: &Pageout<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::PagedOut(p.victim.pid, p.interrupted));
    }
    fn froze(&self, f: &Freeze<'_>) {
        if !f.dry_run {
            self.0.lock().unwrap().push(Seen::Froze(f.cgroup.into()));
        }
    }
    fn thawed(&self, t: &Thawed<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Thawed(t.cgroup.into(), t.reason));
    }
}

/// One kill level below 10 % available, killing adj ≥ 900, waiting 1 s, with `extra` keys.
/// Hands `sample` to the pipeline as the monitor does: with the decision taken on it, from
/// the last actions the pipeline reports.
fn feed(p: &mut Pipeline, sample: Sample) {
    let decision = decide(&sample, &p.store.get(), p.ledger.last());
    p.handle(Decided { sample, decision });
}

fn policy(extra: &str) -> Arc<PolicyStore> {
    let text = format!(
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\nwait_ms = 1000\n{extra}"
    );
    let policy = crate::policy::validate::compile(Path::new("test.toml"), &text).unwrap();
    Arc::new(PolicyStore::fixed(policy))
}

fn pipeline(fake: &Fake, store: Arc<PolicyStore>, dry_run: bool) -> (Pipeline, Record) {
    let record = Record::default();
    let now = fake.now_ms();
    let p = Pipeline::new(
        Box::new(fake.clone()),
        store,
        dry_run,
        Box::new(record.clone()),
        Arc::new(Health::new(now)),
    );
    (p, record)
}

#[test]
fn one_victim_at_a_time_and_never_for_a_stale_sample() {
    // 5 % available; killing p101 (adj 1000) frees enough to leave the level.
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 100, Exit::After(20)),
            (102, 900, 100, Exit::After(20)),
        ],
    );
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    let stale = fake.sample();
    feed(&mut p, stale.clone());
    assert_eq!(fake.signalled(), [101]);
    assert_eq!(
        seen.kills(),
        [(
            101,
            Ending::Exited {
                signal_to_exit_ms: 20
            }
        )]
    );
    // The same shortage, seen before the kill ended, earns no second kill.
    feed(&mut p, stale);
    fake.advance(10);
    feed(&mut p, fake.sample());
    assert_eq!(
        fake.signalled(),
        [101],
        "memory recovered: nothing more to do"
    );
}

#[test]
fn a_victim_that_never_exits_is_waited_for_once_and_never_picked_again() {
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 100, Exit::Never),
            (102, 900, 10, Exit::After(5)),
        ],
    );
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(seen.kills(), [(101, Ending::Unconfirmed)]);
    assert_eq!(
        fake.now_ms(),
        t0 + 1000,
        "waited exactly until the level's deadline"
    );
    // Still short of memory: the next victim is p102, not p101 again.
    fake.advance(10);
    feed(&mut p, fake.sample());
    // Long after: p101 is still there, still first by adj, and still not chosen.
    for _ in 0..30 {
        fake.advance(1000);
        feed(&mut p, fake.sample());
    }
    assert_eq!(fake.signalled(), [101, 102]);
}

#[test]
fn cooldown_holds_the_level_back_after_an_action() {
    let fake = Fake::new(
        1000,
        990,
        &[
            (101, 1000, 10, Exit::After(10)),
            (102, 950, 10, Exit::After(10)),
        ],
    );
    let (mut p, _) = pipeline(&fake, policy("cooldown_ms = 5000\n"), false);
    feed(&mut p, fake.sample());
    fake.advance(100);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101], "inside the cooldown");
    fake.advance(5000);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101, 102]);
}

#[test]
fn a_dry_run_signals_nothing_and_paces_as_if_each_kill_ran_to_its_deadline() {
    let fake = Fake::new(
        1000,
        990,
        &[
            (101, 1000, 10, Exit::After(10)),
            (102, 950, 10, Exit::After(10)),
        ],
    );
    let (mut p, seen) = pipeline(&fake, policy(""), true);
    feed(&mut p, fake.sample());
    fake.advance(500);
    feed(&mut p, fake.sample());
    assert_eq!(
        seen.kills(),
        [(101, Ending::DryRun)],
        "within the pretend wait"
    );
    fake.advance(600);
    feed(&mut p, fake.sample());
    fake.advance(2000);
    feed(&mut p, fake.sample());
    assert_eq!(seen.kills(), [(101, Ending::DryRun), (102, Ending::DryRun)]);
    assert!(fake.signalled().is_empty());
}

#[test]
fn max_victims_kills_on_while_memory_stays_short_and_stops_when_it_recovers() {
    let procs = [
        (101, 1000, 10, Exit::After(5)),
        (102, 990, 10, Exit::After(5)),
        (103, 980, 10, Exit::After(5)),
        (104, 970, 10, Exit::After(5)),
    ];
    let fake = Fake::new(1000, 990, &procs);
    let (mut p, _) = pipeline(&fake, policy("max_victims = 3\n"), false);
    feed(&mut p, fake.sample());
    assert_eq!(
        fake.signalled(),
        [101, 102, 103],
        "three victims for one decision"
    );
    // 95 MiB victims: the first kill ends the shortage, the decision stops there.
    let big: Vec<_> = procs
        .iter()
        .map(|&(pid, adj, _, e)| (pid, adj, 95, e))
        .collect();
    let fake = Fake::new(1000, 990, &big);
    let (mut p, seen) = pipeline(&fake, policy("max_victims = 3\n"), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101]);
    assert!(seen.seen().contains(&Seen::Recovered));
}

#[test]
fn a_victim_gone_before_the_signal_is_not_a_kill() {
    let fake = Fake::new(
        1000,
        990,
        &[(101, 1000, 10, Exit::Gone), (102, 950, 10, Exit::After(5))],
    );
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(seen.seen(), [Seen::Skipped(Skip::Vanished)]);
    assert!(fake.signalled().is_empty());
    fake.advance(10);
    feed(&mut p, fake.sample());
    assert_eq!(
        seen.kills(),
        [(
            102,
            Ending::Exited {
                signal_to_exit_ms: 5
            }
        )]
    );
}

#[test]
fn when_every_one_of_the_first_ranked_candidates_is_gone_the_rest_are_ranked_and_pinned() {
    // 100 at one adj, the largest first; the 70 largest exit between scan and pin: more
    // than the select stage ranks at first.
    let procs: Vec<(i32, i16, u64, Exit)> = (0..100)
        .map(|i| (101 + i, 1000, 200 - i as u64, Exit::After(5)))
        .collect();
    let fake = Fake::new(100_000, 99_000, &procs);
    fake.state().vanish_after_scan = (101..171).collect();
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [171]);
    let skipped = seen
        .seen()
        .iter()
        .filter(|s| **s == Seen::Skipped(Skip::Vanished))
        .count();
    assert_eq!(skipped, 70);
}

#[test]
fn a_victim_that_made_itself_unkillable_after_ranking_is_skipped() {
    let fake = Fake::new(
        1000,
        990,
        &[
            (101, 1000, 10, Exit::After(5)),
            (102, 950, 10, Exit::After(5)),
        ],
    );
    // Ranked at 1000, then it writes -1000 to its oom_score_adj before the pin.
    fake.state().after_scan = Some((101, -1000));
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [102]);
    assert_eq!(seen.seen()[0], Seen::Skipped(Skip::RuleChanged));
}

/// Registrations of fixed (pid, starttime) incarnations, as the lmkd table would answer.
struct FixedRegistrations(Vec<(i32, u64)>);

impl super::registered::Registrations for FixedRegistrations {
    fn lookup(&self, pid: i32, starttime: u64) -> Option<super::registered::Registered> {
        self.0
            .contains(&(pid, starttime))
            .then_some(super::registered::Registered {
                uid: 10_000 + pid as u32,
                owner_pid: Some(4242),
            })
    }
}

fn registered_only_policy() -> Arc<PolicyStore> {
    let text = "candidates = \"registered\"\n\n[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\nwait_ms = 1000\n";
    let policy = crate::policy::validate::compile(Path::new("test.toml"), text).unwrap();
    Arc::new(PolicyStore::fixed(policy))
}

#[test]
fn registered_only_skips_unregistered_processes_even_when_they_rank_first() {
    // p101 ranks first (adj 1000) but is not registered; p102 (adj 900) is. The fake's
    // starttime is 100 + pid.
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 100, Exit::After(20)),
            (102, 900, 100, Exit::After(20)),
        ],
    );
    let (mut p, _) = pipeline(&fake, registered_only_policy(), false);
    p.set_registrations(Arc::new(FixedRegistrations(vec![(102, 202)])));
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [102]);
}

#[test]
fn registered_only_never_takes_a_recycled_pid_for_the_registered_process() {
    // pid 101 was registered with another starttime: a different incarnation.
    let fake = Fake::new(1000, 950, &[(101, 1000, 100, Exit::After(20))]);
    let (mut p, _) = pipeline(&fake, registered_only_policy(), false);
    p.set_registrations(Arc::new(FixedRegistrations(vec![(101, 7)])));
    feed(&mut p, fake.sample());
    assert!(fake.signalled().is_empty());
}

#[test]
fn with_candidates_all_a_registered_victim_carries_its_registration() {
    let fake = Fake::new(1000, 950, &[(101, 1000, 100, Exit::After(20))]);
    let (mut p, _) = pipeline(&fake, policy(""), false);
    let seen = Arc::new(Mutex::new(None));
    struct Grab(Arc<Mutex<Option<super::registered::Registered>>>);
    impl Observer for Grab {
        fn sampled(&self, _: &MemSnapshot, _: Option<&str>, _: &Policy) {}
        fn recovered(&self) {}
        fn ranked(&self, _: Duration, _: usize) {}
        fn skipped(&self, _: Skip) {}
        fn killed(&self, k: &Kill<'_>) {
            *self.0.lock().unwrap() = k.victim.registered;
        }
        fn paged_out(&self, _: &Pageout<'_>) {}
        fn froze(&self, _: &Freeze<'_>) {}
        fn thawed(&self, _: &Thawed<'_>) {}
    }
    p.observer = Box::new(Grab(seen.clone()));
    p.set_registrations(Arc::new(FixedRegistrations(vec![(101, 201)])));
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101]);
    assert_eq!(
        *seen.lock().unwrap(),
        Some(super::registered::Registered {
            uid: 10_101,
            owner_pid: Some(4242)
        })
    );
}

/// Log lines of this test binary, captured (one logger per process).
fn captured_logs() -> &'static Mutex<Vec<String>> {
    struct Capture;
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            LINES.lock().unwrap().push(r.args().to_string());
        }
        fn flush(&self) {}
    }
    static LOGGER: Capture = Capture;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    &LINES
}

#[test]
fn a_level_without_candidates_says_so_when_it_starts_and_when_it_ends() {
    // Says once when it starts and once when it has not held for 30 s, however often it
    // came and went in between.
    let logs = captured_logs();
    // Short of memory, but the only process is below the level's floor.
    let fake = Fake::new(1000, 990, &[(101, 0, 500, Exit::After(5))]);
    let store = {
        let text = "[[level]]\nname = \"quiet\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n";
        let policy = crate::policy::validate::compile(Path::new("test.toml"), text).unwrap();
        Arc::new(PolicyStore::fixed(policy))
    };
    let (mut p, _) = pipeline(&fake, store, false);
    // Holding for 30 s, then on and off (a PSI level holds a window at a time): one spell.
    for i in 0..40 {
        fake.state().used_kib = if i < 30 || i % 2 == 0 { 990 } else { 500 } * MIB;
        feed(&mut p, fake.sample());
        fake.advance(1000);
    }
    // Not holding for 30 s: the spell is over.
    fake.state().used_kib = 500 * MIB;
    for _ in 0..31 {
        feed(&mut p, fake.sample());
        fake.advance(1000);
    }
    let mine: Vec<String> = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("level quiet"))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert!(mine[0].contains("holds but no process"), "{mine:#?}");
    assert!(
        mine[1].contains("no candidate from 68 s to 30 s ago (35 checks)"),
        "{mine:#?}"
    );
    assert!(fake.signalled().is_empty());
}

/// An app cgroup: the adj-1000 p101 decides, and its two adj-0 peers go with it; the
/// sibling app is untouched.
fn apps() -> Fake {
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 100, Exit::After(20)),
            (102, 0, 30, Exit::After(5)),
            (103, 0, 20, Exit::After(40)),
            (201, 900, 50, Exit::After(5)),
        ],
    );
    fake.in_cgroup("/box/app-a.scope", &[101, 102, 103]);
    fake.in_cgroup("/box/app-b.scope", &[201]);
    fake
}

/// Issue 22: the stage groups the deciding band by owner. Three 30 MiB processes of one
/// app (90 MiB together) go before a 60 MiB process alone; per-process, the 60 MiB one
/// goes first. An owner's process below the level's floor adds nothing.
#[test]
fn a_level_ranking_by_cgroup_takes_the_largest_owners_largest_process() {
    let procs = [
        (101, 1000, 30, Exit::After(5)),
        (102, 1000, 31, Exit::After(5)),
        (103, 1000, 29, Exit::After(5)),
        (104, 0, 500, Exit::After(5)),
        (201, 1000, 60, Exit::After(5)),
    ];
    let run = |extra: &str| {
        let fake = Fake::new(1000, 950, &procs);
        fake.in_cgroup("/box/app-a.scope/worker", &[101, 102, 103, 104]);
        fake.in_cgroup("/box/app-b.scope", &[201]);
        let (mut p, seen) = pipeline(&fake, policy(extra), false);
        feed(&mut p, fake.sample());
        seen.kills().into_iter().map(|k| k.0).collect::<Vec<_>>()
    };
    assert_eq!(run("rank_by = \"cgroup\"\n"), [102]);
    assert_eq!(run(""), [201]);
    // The cgroup one level below the scope is the same app here.
    assert_eq!(run("rank_by = \"cgroup\"\nowner_depth = 1\n"), [102]);
}

#[test]
fn kill_cgroup_takes_the_victims_whole_app_and_waits_for_every_member() {
    let fake = apps();
    let (mut p, seen) = pipeline(&fake, policy("kill = \"cgroup\"\n"), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(fake.cgroups_killed(), ["/box/app-a.scope"]);
    assert_eq!(fake.signalled(), [101, 102, 103]);
    assert_eq!(
        seen.kills(),
        [(
            101,
            Ending::Exited {
                signal_to_exit_ms: 40
            }
        )],
        "the last member's exit ends it"
    );
    assert_eq!(fake.now_ms(), t0 + 40);
    assert_eq!(
        seen.groups(),
        [(
            101,
            GroupKill {
                cgroup: "/box/app-a.scope".into(),
                processes: 3,
                rss_kib: 150 * MIB,
            }
        )]
    );
}

#[test]
fn kill_process_is_the_default_even_inside_an_app_cgroup() {
    let fake = apps();
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101]);
    assert!(fake.cgroups_killed().is_empty() && seen.groups().is_empty());
}

#[test]
fn an_app_with_a_protected_process_loses_only_the_victim() {
    for extra in [
        // A protect rule by comm.
        "kill = \"cgroup\"\n[[rule]]\nname = \"keep\"\ncomm = \"p103\"\nprotect = true\n",
        // oom_score_adj -1000 (below).
        "kill = \"cgroup\"\n",
    ] {
        let fake = apps();
        if !extra.contains("rule") {
            fake.state().procs[2].adj = -1000;
        }
        let (mut p, seen) = pipeline(&fake, policy(extra), false);
        feed(&mut p, fake.sample());
        assert_eq!(fake.signalled(), [101], "{extra}");
        assert!(fake.cgroups_killed().is_empty());
        assert!(seen.groups().is_empty());
        assert!(p.ledger.spared("/box/app-a.scope"));
    }
}

#[test]
fn the_scope_itself_a_slice_or_init_scope_is_never_killed_whole() {
    for cg in [
        "/box",
        "/box/apps.slice",
        "/box/init.scope",
        "/elsewhere/app.scope",
    ] {
        let fake = apps();
        fake.in_cgroup(cg, &[101, 102, 103]);
        let (mut p, _) = pipeline(&fake, policy("kill = \"cgroup\"\n"), false);
        feed(&mut p, fake.sample());
        assert_eq!(fake.signalled(), [101], "{cg}");
        assert!(fake.cgroups_killed().is_empty(), "{cg}");
    }
}

#[test]
fn a_member_that_never_exits_leaves_the_kill_unconfirmed_and_stays_pinned() {
    let fake = apps();
    fake.state().procs[1].exit = Exit::Never;
    let (mut p, seen) = pipeline(&fake, policy("kill = \"cgroup\"\n"), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(seen.kills(), [(101, Ending::Unconfirmed)]);
    assert_eq!(fake.now_ms(), t0 + 1000, "one deadline for all members");
    assert_eq!(p.ledger.dying().len(), 1);
    assert_eq!(p.ledger.dying()[0].proc.pid, 102);
}

/// Decided on a minfree level (adj >= 0) whose shortage passed by the re-read before the
/// kill, while the policy's "low" (adj >= 900) still holds: the kill is at "low", so the
/// adj-0 process lives; and the other way round, a decision at "low" never turns into a
/// kill at the table's adj 0.
#[test]
fn a_minfree_level_that_passed_before_the_kill_does_not_kill_at_its_adj() {
    let fake = Fake::new(1000, 950, &[(101, 0, 100, Exit::After(20))]);
    // The policy may kill down to adj 0 (below 1 %), so the table's adj 0 stands.
    let text = "[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 1\n\
                [[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n";
    let policy = crate::policy::validate::compile(Path::new("test.toml"), text).unwrap();
    let store = Arc::new(PolicyStore::fixed(policy));
    store.set_minfree(7, &[(50 * MIB, 0)]);
    assert_eq!(store.get().levels[2].min_adj, 0);
    let (mut p, _seen) = pipeline(&fake, store.clone(), false);
    let mut sample = fake.sample();
    (sample.mem.free_kib, sample.mem.file_kib) = (10 * MIB, 10 * MIB);
    fake.state().free_file_kib = Some((200 * MIB, 10 * MIB));
    feed(&mut p, sample);
    assert_eq!(fake.signalled(), Vec::<i32>::new());

    let fake = Fake::new(1000, 950, &[(101, 0, 100, Exit::After(20))]);
    let (mut p, _seen) = pipeline(&fake, store, false);
    let sample = fake.sample();
    fake.state().free_file_kib = Some((10 * MIB, 10 * MIB));
    feed(&mut p, sample);
    assert_eq!(fake.signalled(), Vec::<i32>::new());
}

/// A level held with nobody to kill, then let go; a new process comes and the level holds
/// again at once (lmkd's acceptance scenario: one child after another): it is killed on
/// the first sample, not after the no-candidate back-off.
#[test]
fn a_level_that_let_go_looks_again_at_once() {
    let fake = Fake::new(1000, 950, &[]);
    let (mut p, _) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    fake.advance(10);
    fake.state().used_kib = 500 * MIB;
    feed(&mut p, fake.sample());
    fake.advance(10);
    fake.state().procs.push(FakeProc {
        pid: 102,
        adj: 900,
        rss_kib: 400 * MIB,
        exit: Exit::After(5),
        dead: false,
        cgroup: None,
        signalled_at: None,
    });
    fake.state().used_kib = 950 * MIB;
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [102]);
}

/// A freeze level under 50 % available (adj ≥ 900, thawed 5 s after it lets go) above the
/// kill level under 10 %.
fn freezing(extra: &str) -> Arc<PolicyStore> {
    let text = format!(
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\nwait_ms = 1000\n\
         [[level]]\nname = \"cached\"\naction = \"freeze\"\nmin_adj = 900\navailable_below_pct = 50\nthaw_after_ms = 5000\n{extra}"
    );
    let policy = crate::policy::validate::compile(Path::new("test.toml"), &text).unwrap();
    Arc::new(PolicyStore::fixed(policy))
}

impl Fake {
    fn freezer_log(&self) -> Vec<String> {
        self.state().freezer_log.clone()
    }

    fn set_used_mib(&self, mib: u64) {
        self.state().used_kib = mib * MIB;
    }

    fn set_adj(&self, pid: i32, adj: i16) {
        for p in self.state().procs.iter_mut().filter(|p| p.pid == pid) {
            p.adj = adj;
        }
    }
}

/// Two cached apps (adj 900, one of two processes) and a foreground one (adj 0), each in
/// its own cgroup; 60 % of memory used.
fn three_apps() -> Fake {
    let fake = Fake::new(
        1000,
        600,
        &[
            (10, 900, 100, Exit::After(5)),
            (11, 900, 50, Exit::After(5)),
            (20, 950, 40, Exit::After(5)),
            (30, 0, 200, Exit::After(5)),
        ],
    );
    fake.in_cgroup("/box/app-a.scope", &[10, 11]);
    fake.in_cgroup("/box/app-b.scope", &[20]);
    fake.in_cgroup("/box/app-c.scope", &[30]);
    fake
}

#[test]
fn a_freeze_level_freezes_each_cached_app_once_and_thaws_it_when_pressure_stays_away() {
    let fake = three_apps();
    let (mut p, seen) = pipeline(&fake, freezing(""), false);
    feed(&mut p, fake.sample());
    fake.advance(100);
    feed(&mut p, fake.sample());
    fake.advance(100);
    feed(&mut p, fake.sample());
    // app-b first (adj 950), then app-a; never the foreground app, never twice, no kill.
    assert_eq!(
        fake.freezer_log(),
        ["+/box/app-b.scope", "+/box/app-a.scope"]
    );
    assert!(fake.signalled().is_empty());
    // Memory returns: nothing thaws before the level has let go for 5 s.
    fake.set_used_mib(100);
    fake.advance(4000);
    feed(&mut p, fake.sample());
    assert_eq!(fake.freezer_log().len(), 2);
    fake.advance(1500);
    feed(&mut p, fake.sample());
    assert_eq!(
        fake.freezer_log()[2..],
        ["-/box/app-a.scope", "-/box/app-b.scope"]
    );
    assert!(
        seen.seen()
            .contains(&Seen::Thawed("/box/app-a.scope".into(), Thaw::PressureGone))
    );
    assert!(fake.state().frozen.is_empty());
}

#[test]
fn an_app_sharing_its_cgroup_with_a_foreground_process_is_never_frozen() {
    let fake = three_apps();
    // The foreground process joins app-b's cgroup; app-a holds a protected one.
    fake.in_cgroup("/box/app-b.scope", &[20, 30]);
    let (mut p, _) = pipeline(
        &fake,
        freezing("[[rule]]\nname = \"keep\"\ncomm = \"p11\"\nprotect = true\n"),
        false,
    );
    for _ in 0..3 {
        feed(&mut p, fake.sample());
        fake.advance(100);
    }
    assert!(fake.freezer_log().is_empty(), "{:?}", fake.freezer_log());
}

#[test]
fn an_app_brought_to_the_foreground_thaws_at_once() {
    let fake = three_apps();
    let (mut p, seen) = pipeline(&fake, freezing(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.freezer_log(), ["+/box/app-b.scope"]);
    fake.set_adj(20, 0);
    fake.advance(100);
    feed(&mut p, fake.sample());
    assert!(
        seen.seen()
            .contains(&Seen::Thawed("/box/app-b.scope".into(), Thaw::AdjImproved))
    );
    assert_eq!(fake.freezer_log()[1], "-/box/app-b.scope");
}

#[test]
fn a_dry_run_freezes_nothing() {
    let fake = three_apps();
    let (mut p, _) = pipeline(&fake, freezing(""), true);
    for _ in 0..3 {
        feed(&mut p, fake.sample());
        fake.advance(100);
    }
    assert!(fake.freezer_log().is_empty());
}

#[test]
fn a_frozen_app_is_still_killed_when_memory_runs_out_and_then_forgotten() {
    let fake = three_apps();
    let (mut p, seen) = pipeline(&fake, freezing(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.freezer_log(), ["+/box/app-b.scope"]);
    fake.set_used_mib(950);
    fake.advance(100);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [20], "the frozen app is the first victim");
    fake.advance(100);
    fake.set_used_mib(100);
    feed(&mut p, fake.sample());
    assert!(
        seen.seen()
            .contains(&Seen::Thawed("/box/app-b.scope".into(), Thaw::Exited))
    );
}

#[test]
fn nothing_stays_frozen_when_the_pipeline_ends() {
    let fake = three_apps();
    let (p, seen) = pipeline(&fake, freezing(""), false);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let sample = fake.sample();
    let decision = decide(&sample, &p.store.get(), p.ledger.last());
    tx.send(Decided { sample, decision }).unwrap();
    drop(tx);
    p.run(rx);
    assert_eq!(
        fake.freezer_log(),
        ["+/box/app-b.scope", "-/box/app-b.scope"]
    );
    assert!(
        seen.seen()
            .contains(&Seen::Thawed("/box/app-b.scope".into(), Thaw::Shutdown))
    );
}

#[test]
fn with_sigstop_a_process_without_an_app_of_its_own_is_stopped_alone_and_continued() {
    let fake = three_apps();
    // A cached process that shares app-c with the foreground one.
    fake.in_cgroup("/box/app-c.scope", &[20, 30]);
    let (mut p, seen) = pipeline(
        &fake,
        freezing("freeze_lone_process = \"sigstop\"\n"),
        false,
    );
    fake.set_adj(10, 0);
    fake.set_adj(11, 0);
    feed(&mut p, fake.sample());
    assert_eq!(
        fake.freezer_log(),
        ["+pid 20"],
        "app-c holds a foreground process"
    );
    fake.set_used_mib(100);
    fake.advance(6000);
    feed(&mut p, fake.sample());
    assert_eq!(fake.freezer_log(), ["+pid 20", "-pid 20"]);
    assert!(
        seen.seen()
            .contains(&Seen::Thawed("pid 20".into(), Thaw::PressureGone))
    );
}

/// A kill level at 10 % (adj ≥ 900, a 500 ms cooldown) above a page-out level at 25 %
/// (adj ≥ 900, 128 MiB an event, 16 calls of 8 MiB), on a fake that answers page-outs.
fn pageout_fake(used_mib: u64, swap: bool, grow_per_call_mib: u64) -> (Fake, Pipeline, Record) {
    let fake = Fake::new(1000, used_mib, &[(101, 900, 200, Exit::After(10))]);
    fake.state().pageout = Some(FakePageout {
        swap,
        grow_per_call_kib: grow_per_call_mib * MIB,
        ..Default::default()
    });
    let store = policy(
        "cooldown_ms = 500\n[[level]]\nname = \"moderate\"\naction = \"pageout\"\nmin_adj = 900\navailable_below_pct = 25\npageout_max_mib = 128\n",
    );
    let (p, seen) = pipeline(&fake, store, false);
    (fake, p, seen)
}

fn pageout_calls(fake: &Fake) -> (u32, u32) {
    let s = fake.state();
    let po = s.pageout.as_ref().unwrap();
    (po.calls, po.smaps_reads)
}

#[test]
fn a_page_out_gives_way_once_memory_falls_to_a_kill_level() {
    // 20 % available: the page-out level. Each 8 MiB call frees 8 MiB while the job grows
    // 40: after the 4th call 7.2 % is left, under the kill level's 10 %.
    let (fake, mut p, seen) = pageout_fake(800, true, 40);
    feed(&mut p, fake.sample());
    assert_eq!(
        pageout_calls(&fake).0,
        4,
        "stopped before the 5th of 16 calls"
    );
    assert_eq!(seen.seen(), [Seen::PagedOut(101, true)]);
    fake.advance(10);
    feed(&mut p, fake.sample());
    assert_eq!(
        fake.signalled(),
        [101],
        "the next sample kills: no cooldown counts from a page-out cut short"
    );
}

#[test]
fn a_page_out_runs_its_whole_event_while_it_keeps_up() {
    let (fake, mut p, seen) = pageout_fake(800, true, 0);
    feed(&mut p, fake.sample());
    assert_eq!(pageout_calls(&fake).0, 16, "128 MiB in 8 MiB calls");
    assert_eq!(seen.seen(), [Seen::PagedOut(101, false)]);
}

#[test]
fn a_page_out_is_not_begun_when_a_kill_level_holds_on_fresh_memory() {
    let (fake, mut p, seen) = pageout_fake(800, true, 0);
    let sample = fake.sample();
    // Memory falls to 5 % between the monitor's sample and the pipeline's re-check.
    fake.state().used_kib = 950 * MIB;
    feed_decided_on(&mut p, sample);
    assert_eq!(pageout_calls(&fake), (0, 0), "no smaps read, no call");
    assert!(seen.seen().is_empty(), "{:?}", seen.seen());
    fake.advance(10);
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [101]);
}

#[test]
fn a_process_with_nothing_to_reclaim_is_not_asked_and_not_tried_again() {
    // No swap: its 200 MiB of anonymous memory cannot be paged out.
    let (fake, mut p, seen) = pageout_fake(800, false, 0);
    feed(&mut p, fake.sample());
    fake.advance(1000);
    feed(&mut p, fake.sample());
    assert_eq!(pageout_calls(&fake), (0, 0), "neither smaps nor a call");
    assert!(
        seen.seen().is_empty(),
        "not a page-out event: {:?}",
        seen.seen()
    );
}

/// `feed`, with the decision taken on `sample` handed over after memory already changed.
fn feed_decided_on(p: &mut Pipeline, sample: Sample) {
    let decision = decide(&sample, &p.store.get(), p.ledger.last());
    assert!(decision.is_some());
    p.handle(Decided { sample, decision });
}

/// Two adj-1000 processes in 1000 MiB with 950 used; 101, the larger, killed by someone
/// else before the sample and exiting `exit` after that.
fn one_dying(exit: Exit) -> Fake {
    let fake = Fake::new(
        1000,
        950,
        &[(101, 1000, 300, exit), (102, 1000, 100, Exit::After(20))],
    );
    fake.killed_by_another(101);
    fake
}

/// The kernel's OOM killer (or a user, or another daemon) killed the largest process and it
/// is still exiting, its memory not yet back: that memory is reaped, memory read again, and
/// nobody else is killed for the same shortage — where lowmemd used to pass over the dying
/// one and kill the next.
#[test]
fn a_candidate_someone_else_killed_is_reaped_not_passed_over_for_the_next() {
    let fake = one_dying(Exit::Never);
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101]);
    assert!(fake.signalled().is_empty(), "nobody signalled");
    assert_eq!(seen.seen(), [Seen::Skipped(Skip::Dying), Seen::Recovered]);
    // It lingers (frozen, say): passed over, its pidfd closed; a new shortage takes the
    // next.
    assert_eq!(passed_over(&p), [101]);
    assert!(p.ledger.dying().is_empty(), "no pidfd held for it");
    fake.state().used_kib = 950 * MIB;
    fake.advance(100);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101], "reaped once");
    assert_eq!(fake.signalled(), [102]);
}

/// The pids the ledger passes over (acted on lately, or dying).
fn passed_over(p: &Pipeline) -> Vec<i32> {
    p.ledger.excluded().iter().map(|&(pid, _)| pid).collect()
}

/// A reaped one that does not exit (a tracer holds it) is passed over until it is gone,
/// not reaped again and no fd held for it; once gone, it is forgotten.
#[test]
fn a_reaped_one_is_passed_over_until_it_is_gone() {
    let fake = one_dying(Exit::Never);
    let (mut p, _) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101]);
    fake.advance(600_000);
    fake.state().used_kib = 950 * MIB;
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101], "reaped once");
    assert_eq!(fake.signalled(), [102]);
    assert_eq!(passed_over(&p), [101]);
    assert!(p.ledger.dying().is_empty() && p.ledger.unpinned().len() == 1);
    assert!(!fake.gone(101, 201), "alive: its own starttime");
    assert!(fake.gone(101, 999), "another incarnation");
    fake.state().procs[0].dead = true;
    fake.advance(10_000);
    p.ledger
        .prune(fake.now_ms(), |t| fake.exited(t), |p, s| fake.gone(p, s));
    assert!(passed_over(&p).is_empty());
}

/// Candidates found dying that the kernel will not reap fill a pass's batch before the live
/// victim: the decision goes on to it, rather than end with nobody killed.
#[test]
fn a_full_batch_of_dying_that_frees_nothing_does_not_spare_the_victim() {
    use super::kill::REAP_BATCH;
    for no_mrelease in [false, true] {
        // Without process_mrelease the first pass waits once, the next fills a batch.
        let crowd = REAP_BATCH * if no_mrelease { 2 } else { 1 } + 8;
        let mut procs: Vec<_> = (0..crowd as i32)
            .map(|i| (1000 + i, 1000, 1, Exit::Never))
            .collect();
        procs.push((102, 900, 100, Exit::After(20)));
        let fake = Fake::new(1000, 990, &procs);
        for i in 0..crowd as i32 {
            fake.killed_by_another(1000 + i);
            fake.state().unreapable.push(1000 + i);
        }
        fake.state().no_mrelease = no_mrelease;
        let (mut p, _) = pipeline(&fake, policy(""), false);
        feed(&mut p, fake.sample());
        assert_eq!(fake.signalled(), [102], "no_mrelease {no_mrelease}");
        assert!(fake.released().is_empty());
    }
}

/// A user can keep any number of their own killed processes from exiting (a ptrace stop
/// with SIGKILL pending). Each decision reaps a bounded number, a batch a pass, holding no
/// pidfd for any afterwards, then goes on to a live victim.
#[test]
fn a_crowd_of_dying_is_reaped_a_batch_at_a_time_and_a_live_victim_still_dies() {
    use super::kill::{REAP_BATCH, REAP_PASSES};
    let crowd = REAP_BATCH * REAP_PASSES + 10;
    let mut procs: Vec<_> = (0..crowd as i32)
        .map(|i| (1000 + i, 1000, 1, Exit::Never))
        .collect();
    procs.push((102, 900, 100, Exit::After(20)));
    // Reaping them all would not end the shortage.
    let fake = Fake::new(100_000, 99_900, &procs);
    for i in 0..crowd as i32 {
        fake.killed_by_another(1000 + i);
    }
    let (mut p, _) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released().len(), REAP_BATCH * REAP_PASSES);
    assert_eq!(
        fake.signalled(),
        [102],
        "the live victim, once the reaps are spent"
    );
    assert!(p.ledger.dying().is_empty(), "no pidfd kept for the crowd");
    let at = fake.state().reaped_at_scan.clone();
    assert!(
        at.windows(2).all(|w| w[1] - w[0] <= REAP_BATCH),
        "at most a batch a pass: {at:?}"
    );
}

/// Many dying at once cost one decision, not one each: a batch is reaped in one pass.
#[test]
fn every_dying_candidate_is_reaped_in_one_decision() {
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 200, Exit::Never),
            (103, 1000, 150, Exit::Never),
            (104, 1000, 120, Exit::Never),
            (102, 1000, 100, Exit::After(20)),
        ],
    );
    for pid in [101, 103, 104] {
        fake.killed_by_another(pid);
    }
    let (mut p, _) = pipeline(&fake, policy(""), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101, 103, 104]);
    assert!(fake.signalled().is_empty());
}

/// Without process_mrelease the largest dying one is waited for, once, up to the level's
/// deadline: if it exits, nobody else dies; if it is stuck, the next is killed after that
/// one wait, and the stuck one never costs another while it lives.
#[test]
fn without_mrelease_a_dying_candidate_is_waited_for_once() {
    let fake = one_dying(Exit::After(300));
    fake.state().no_mrelease = true;
    let (mut p, seen) = pipeline(&fake, policy(""), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(fake.now_ms(), t0 + 300, "waited for its exit");
    assert!(fake.signalled().is_empty() && fake.released().is_empty());
    assert!(seen.kills().is_empty());

    // Stuck, and a second one dying too: one wait (for the larger), then memory read
    // again, then the next killed.
    let fake = Fake::new(
        1000,
        950,
        &[
            (101, 1000, 300, Exit::Never),
            (103, 1000, 150, Exit::Never),
            (102, 1000, 100, Exit::After(20)),
        ],
    );
    fake.killed_by_another(101);
    fake.killed_by_another(103);
    fake.state().no_mrelease = true;
    let (mut p, _) = pipeline(&fake, policy(""), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [102], "killed after the one wait");
    assert_eq!(
        fake.now_ms(),
        t0 + 1000 + 20,
        "one deadline (wait_ms), then the kill"
    );
    assert_eq!(passed_over(&p), [101, 103], "both passed over from now on");
}

/// A stall level (`some` PSI held a window, adj >= 900) decides on a sample whose stall is
/// current, pid 101 killed by someone else before it.
fn decide_a_stall_with_101_dying(fake: &Fake) -> Record {
    fake.killed_by_another(101);
    let text = "[psi]\nwindow_ms = 1000\n[[level]]\nname = \"stall\"\naction = \"kill\"\nmin_adj = 900\npsi_some_ms = 100\nwait_ms = 1000\n";
    let policy = crate::policy::validate::compile(Path::new("test.toml"), text).unwrap();
    let (mut p, seen) = pipeline(fake, Arc::new(PolicyStore::fixed(policy.clone())), false);
    let mut sample = fake.sample();
    sample.psi = policy
        .psi_conditions()
        .into_iter()
        .map(|condition| crate::sample::PsiFired {
            condition,
            window_ms: 1000,
            last_fired_ms: Some(sample.at_ms),
            streak_since_ms: Some(sample.at_ms - 1000),
            run_stall_ms: Some(1000),
        })
        .collect();
    feed_decided_on(&mut p, sample);
    seen
}

/// A stall level (PSI) must not fire again on the stall the dying process caused once its
/// memory is back: the stall seen before the reap counts no more, as after a kill.
#[test]
fn a_stall_level_does_not_kill_the_next_after_a_reap() {
    let fake = Fake::new(
        1000,
        100,
        &[
            (101, 1000, 300, Exit::Never),
            (102, 1000, 100, Exit::After(20)),
        ],
    );
    let seen = decide_a_stall_with_101_dying(&fake);
    assert_eq!(fake.released(), [101]);
    assert!(fake.signalled().is_empty(), "{:?}", seen.seen());
}

/// A user can put a tiny process of theirs, killed and held in a ptrace stop, ahead of every
/// decision (adj 1000 ranks first whatever its size): reaping it frees nothing worth a new
/// reading, so a stall level still kills the live victim in the same decision.
#[test]
fn a_tiny_dying_process_does_not_hold_a_stall_level_back() {
    let fake = Fake::new(
        1000,
        100,
        &[
            (101, 1000, 1, Exit::Never),
            (102, 900, 100, Exit::After(20)),
        ],
    );
    let seen = decide_a_stall_with_101_dying(&fake);
    assert_eq!(fake.released(), [101]);
    assert_eq!(fake.signalled(), [102], "{:?}", seen.seen());
}

/// A user's killed-but-stuck process that maps shared memory ranks large, and reaping it
/// frees nothing: what came back is measured, not taken from its size, so a stall level
/// still kills the live victim in the same decision.
#[test]
fn a_dying_process_whose_reap_frees_nothing_does_not_hold_a_stall_level_back() {
    let fake = Fake::new(
        1000,
        100,
        &[
            (101, 1000, 300, Exit::Never),
            (102, 900, 100, Exit::After(20)),
        ],
    );
    fake.state().reaps_nothing.push(101);
    let seen = decide_a_stall_with_101_dying(&fake);
    assert_eq!(fake.released(), [101]);
    assert_eq!(fake.signalled(), [102], "{:?}", seen.seen());
}

/// A reap too small to void the stall evidence still has memory read again before anyone
/// else dies: 8 MiB back in 1000 is enough to end a 5 % watermark's shortage.
#[test]
fn memory_is_read_again_after_any_reap_before_a_kill() {
    let fake = Fake::new(
        1000,
        955,
        &[
            (101, 1000, 8, Exit::Never),
            (102, 900, 100, Exit::After(20)),
        ],
    );
    fake.killed_by_another(101);
    let text = "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 5\nwait_ms = 1000\n";
    let policy = crate::policy::validate::compile(Path::new("test.toml"), text).unwrap();
    let (mut p, seen) = pipeline(&fake, Arc::new(PolicyStore::fixed(policy)), false);
    feed(&mut p, fake.sample());
    assert_eq!(fake.released(), [101]);
    assert!(fake.signalled().is_empty(), "{:?}", seen.seen());
}

/// One the kernel will not reap (its memory shared with a live process) frees nothing by
/// exiting either: passed over at once, no wait.
#[test]
fn a_dying_candidate_the_kernel_will_not_reap_is_passed_over_at_once() {
    let fake = one_dying(Exit::Never);
    fake.state().unreapable.push(101);
    let (mut p, _) = pipeline(&fake, policy(""), false);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert_eq!(fake.signalled(), [102]);
    assert!(fake.now_ms() < t0 + 1000, "no wait for it");
    assert!(passed_over(&p).contains(&101));
}

/// A dry run reaps nothing and waits for nothing, and never comes back to the same dying
/// one: the next sample's would-be victim is the next candidate.
#[test]
fn a_dry_run_leaves_a_dying_candidate_alone() {
    let fake = one_dying(Exit::Never);
    let (mut p, seen) = pipeline(&fake, policy(""), true);
    let t0 = fake.now_ms();
    feed(&mut p, fake.sample());
    assert!(fake.released().is_empty() && fake.signalled().is_empty());
    assert_eq!(fake.now_ms(), t0, "no wait");
    assert_eq!(seen.kills(), [(102, Ending::DryRun)]);
    assert_eq!(passed_over(&p), [101, 102]);
}
