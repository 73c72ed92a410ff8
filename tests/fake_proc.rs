//! Ranking, pinning and scope handling on fake /proc trees: hostile names, processes that
//! vanish between reads, ties, and a recycled pid.

use std::path::Path;

use lowmemd::pipeline::pin::{PinError, pin};
use lowmemd::pipeline::rank::{Exclusion, RankContext, candidates, rank};
use lowmemd::procs::{ProcError, ProcRoot};
use lowmemd::scope::Scope;

const PF_KTHREAD: u32 = 0x0020_0000;

/// One fake process: its stat line (fields the kernel writes) and oom_score_adj.
struct Fake<'a> {
    pid: i32,
    comm: &'a str,
    state: char,
    flags: u32,
    starttime: u64,
    rss_pages: u64,
    adj: &'a str,
}

impl Fake<'_> {
    fn write(&self, root: &Path) {
        let dir = root.join(self.pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{} ({}) {} 1 {} {} 0 -1 {} 0 0 0 0 0 0 0 0 20 0 1 0 {} 1000000 {} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
            self.pid,
            self.comm,
            self.state,
            self.pid,
            self.pid,
            self.flags,
            self.starttime,
            self.rss_pages
        );
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("oom_score_adj"), format!("{}\n", self.adj)).unwrap();
    }
}

fn fake<'a>(pid: i32, comm: &'a str, adj: &'a str, rss_pages: u64) -> Fake<'a> {
    Fake {
        pid,
        comm,
        state: 'S',
        flags: 0x0040_0100,
        starttime: 5000 + pid as u64,
        rss_pages,
        adj,
    }
}

fn page_kib() -> u64 {
    (rustix::param::page_size() / 1024) as u64
}

#[test]
fn hostile_tree_ranks_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake(1, "init", "0", 5000).write(root);
    Fake {
        flags: PF_KTHREAD,
        ..fake(2, "kthreadd", "0", 0)
    }
    .write(root);
    // A comm built to confuse a parser that splits at the first ')'.
    fake(100, "a) Z 1 (b", "1000", 100).write(root);
    fake(101, "big", "900", 9000).write(root);
    fake(102, "small", "900", 10).write(root);
    fake(103, "protected", "-1000", 99_999).write(root);
    Fake {
        state: 'Z',
        ..fake(104, "zombie", "1000", 0)
    }
    .write(root);
    // Vanished between the listing and the read: the directory is there, its files not.
    std::fs::create_dir_all(root.join("105")).unwrap();
    // Vanished between the two reads: stat readable, oom_score_adj gone.
    fake(106, "halfgone", "1000", 1).write(root);
    std::fs::remove_file(root.join("106/oom_score_adj")).unwrap();
    // Garbage where a number belongs: reported with its path, not a panic.
    fake(107, "garbage", "lots", 1).write(root);
    std::fs::create_dir_all(root.join("not-a-pid")).unwrap();

    let proc = ProcRoot::new(root);
    let mut pids = proc.pids().unwrap();
    pids.sort();
    assert_eq!(pids, [1, 2, 100, 101, 102, 103, 104, 105, 106, 107]);
    let scan = proc.scan(pids, false);
    assert_eq!(scan.vanished, 2, "105 and 106 raced away");
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    let err = scan.errors[0].to_string();
    assert!(
        err.contains("107/oom_score_adj") && err.contains("lots"),
        "{err}"
    );

    let hostile = scan.procs.iter().find(|p| p.pid == 100).unwrap();
    assert_eq!(hostile.comm, "a) Z 1 (b");
    assert_eq!(hostile.rss_kib, 100 * page_kib());

    let ranked = rank(scan.procs.clone(), &RankContext::default());
    let order: Vec<(i32, Option<Exclusion>)> =
        ranked.iter().map(|r| (r.proc.pid, r.excluded)).collect();
    assert_eq!(
        order[..3],
        [(100, None), (101, None), (102, None)],
        "adj 1000 first, then the larger adj-900 process: {order:?}"
    );
    assert!(order.contains(&(1, Some(Exclusion::Init))));
    assert!(order.contains(&(2, Some(Exclusion::KernelThread))));
    assert!(order.contains(&(103, Some(Exclusion::Unkillable))));
    assert!(order.contains(&(104, Some(Exclusion::Zombie))));

    let floor = RankContext {
        min_adj: Some(950),
        ..Default::default()
    };
    let only: Vec<i32> = candidates(scan.procs, &floor)
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(only, [100]);
}

#[test]
fn equal_size_and_adj_prefers_the_youngest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    Fake {
        starttime: 100,
        ..fake(10, "old", "500", 50)
    }
    .write(root);
    Fake {
        starttime: 900,
        ..fake(11, "young", "500", 50)
    }
    .write(root);
    let proc = ProcRoot::new(root);
    let scan = proc.scan(proc.pids().unwrap(), false);
    let order: Vec<i32> = candidates(scan.procs, &RankContext::default())
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(order, [11, 10]);
}

/// A fake root for a real process: its stat says another starttime, as if the pid had been
/// recycled between ranking and pinning.
#[test]
fn pin_refuses_a_recycled_pid() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let real = ProcRoot::default();
    let mut buf = Vec::new();
    let stat = real.read_stat(pid, &mut buf).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy("/proc/meminfo", tmp.path().join("meminfo")).unwrap();
    Fake {
        starttime: stat.starttime + 1,
        ..fake(pid, "sleep", "0", 10)
    }
    .write(tmp.path());
    let fake_root = ProcRoot::new(tmp.path());
    let scope = Scope::system(fake_root.clone()).unwrap();
    let scan = fake_root.scan([pid], false);
    let mut cand = candidates(scan.procs, &RankContext::default()).remove(0);
    // Ranked with the real starttime, checked against the "recycled" one.
    cand.starttime = stat.starttime;
    match pin(&fake_root, &scope, cand.clone(), true) {
        Err(PinError::Recycled {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), (stat.starttime, stat.starttime + 1))
        }
        other => panic!("expected Recycled, got {other:?}"),
    }
    // The same process under the real /proc is the same incarnation.
    let real_scope = Scope::system(real.clone()).unwrap();
    let target = pin(&real, &real_scope, cand, true).expect("same incarnation pins");
    assert_eq!(target.proc.pid, pid);
    child.kill().unwrap();
    child.wait().unwrap();
    // Gone: pinning it again reports it vanished.
    let gone = real.scan([pid], false);
    assert_eq!(gone.procs.len() + gone.errors.len(), 0);
    assert!(matches!(
        real.read_stat(pid, &mut buf),
        Err(ProcError::Vanished { .. })
    ));
}
