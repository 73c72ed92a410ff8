//! The tripwire against a fake cgroup-v2 directory (plain files: the kernel's own
//! behaviour is what the VM test checks): what it writes, what it leaves alone, what it
//! puts back.

use std::path::{Path, PathBuf};

use super::{Tripwire, Unavailable, record, restore_left_behind};
use crate::procs::ProcRoot;
use crate::scope::memcg::Version;
use crate::scope::{CgroupScope, Scope};

const LIMIT_KIB: u64 = 256 * 1024;
const BOUND: &str = "201326592";

struct Fake {
    base: PathBuf,
    scope: Scope,
}

impl Fake {
    fn new(tag: &str, name: &str) -> Fake {
        let base = std::env::temp_dir().join(format!("lowmemd-tw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("cg");
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("memory.high", "max\n"),
            ("memory.max", "268435456\n"),
            (
                "memory.events.local",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            ),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let scope = Scope {
            proc: ProcRoot::default(),
            cgroup: Some(CgroupScope {
                name: name.into(),
                version: Version::V2,
                memcg_dir: dir,
                unified_dir: None,
            }),
            system_total_kib: 1 << 30,
        };
        Fake { base, scope }
    }

    fn high(&self) -> String {
        std::fs::read_to_string(self.dir().join("memory.high"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn set_high(&self, v: &str) {
        std::fs::write(self.dir().join("memory.high"), v).unwrap();
    }

    fn dir(&self) -> &Path {
        &self.scope.cgroup.as_ref().unwrap().memcg_dir
    }

    fn runtime(&self) -> PathBuf {
        self.base.join("rt")
    }

    fn record(&self) -> PathBuf {
        record::path_for(&self.runtime(), "/box")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

const MIB: u64 = 1024;
const W: [f64; 3] = [25.0, 15.0, 5.0];

#[test]
fn it_is_set_below_the_first_watermark_lifted_when_crossed_and_on_the_way_out() {
    let f = Fake::new("cycle", "/box");
    let mut t = Tripwire::open(&f.scope, true, &f.runtime()).unwrap();
    assert!(t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap().is_empty());
    assert_eq!(f.high(), BOUND);
    assert!(t.kernel_watches(60 * MIB));
    assert_eq!(
        record::load(&f.record()).unwrap().written,
        BOUND,
        "remembered first"
    );
    // The kernel counted a high event: lifted, the poll takes over, nothing remembered.
    std::fs::write(f.dir().join("memory.events.local"), "low 0\nhigh 3\n").unwrap();
    t.tend(LIMIT_KIB, 190 * MIB, &W).unwrap();
    assert_eq!(f.high(), "max");
    assert!(!t.kernel_watches(190 * MIB));
    assert!(!f.record().exists());
    // Back well below it: set again; dropped (the daemon stopping): max again.
    t.tend(LIMIT_KIB, 20 * MIB, &W).unwrap();
    assert_eq!(f.high(), BOUND);
    drop(t);
    assert_eq!(f.high(), "max");
    assert!(!f.record().exists());
}

#[test]
fn someone_elses_memory_high_is_never_overwritten() {
    let f = Fake::new("foreign", "/box");
    f.set_high("209715200");
    assert!(matches!(
        Tripwire::open(&f.scope, true, &f.runtime()),
        Err(Unavailable::Foreign { .. })
    ));
    assert_eq!(f.high(), "209715200");
    // Written over ours while it is set: theirs from then on, said once, kept on exit.
    f.set_high("max");
    let mut t = Tripwire::open(&f.scope, true, &f.runtime()).unwrap();
    t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap();
    assert_eq!(f.high(), BOUND);
    f.set_high("104857600");
    let said = t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap();
    assert!(said[0].contains("set by someone else"), "{said:?}");
    assert!(
        t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap().is_empty(),
        "said once"
    );
    assert!(!t.kernel_watches(60 * MIB));
    drop(t);
    assert_eq!(f.high(), "104857600");
    assert!(!f.record().exists());
}

#[test]
fn a_tripwire_left_by_a_killed_lowmemd_is_put_back_at_the_next_start() {
    let f = Fake::new("crash", "/box");
    let mut t = Tripwire::open(&f.scope, true, &f.runtime()).unwrap();
    t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap();
    // SIGKILL: no Drop.
    std::mem::forget(t);
    assert_eq!(f.high(), BOUND);
    let said = restore_left_behind(&f.scope, &f.runtime()).unwrap();
    assert!(said.contains("put back max"), "{said}");
    assert_eq!(f.high(), "max");
    assert!(!f.record().exists());
    // Changed since by someone: left alone.
    let mut t = Tripwire::open(&f.scope, true, &f.runtime()).unwrap();
    t.tend(LIMIT_KIB, 60 * MIB, &W).unwrap();
    std::mem::forget(t);
    f.set_high("150000000");
    let said = restore_left_behind(&f.scope, &f.runtime()).unwrap();
    assert!(said.contains("left alone"), "{said}");
    assert_eq!(f.high(), "150000000");
}

#[test]
fn kubelet_cgroups_and_the_policy_key_keep_it_off() {
    let f = Fake::new("kube", "/kubepods/burstable");
    assert!(matches!(
        Tripwire::open(&f.scope, true, &f.runtime()),
        Err(Unavailable::Kubelet(_))
    ));
    let g = Fake::new("off", "/box");
    assert!(matches!(
        Tripwire::open(&g.scope, false, &g.runtime()),
        Err(Unavailable::Off)
    ));
    assert_eq!(f.high(), "max");
    assert_eq!(g.high(), "max");
}

#[test]
fn a_tripwire_that_cannot_be_set_says_so_once_and_changes_nothing() {
    let f = Fake::new("fails", "/box");
    let mut t = Tripwire::open(&f.scope, true, &f.runtime()).unwrap();
    // The record cannot be written (here: the runtime directory turned into a file).
    std::fs::remove_dir_all(f.runtime()).unwrap();
    std::fs::write(f.runtime(), "").unwrap();
    assert!(matches!(
        t.tend(LIMIT_KIB, 60 * MIB, &W),
        Err(Unavailable::Unwritable(_))
    ));
    assert_eq!(f.high(), "max", "not set without a record");
    assert!(!t.kernel_watches(60 * MIB));
}
