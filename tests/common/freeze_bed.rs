//! The freeze tier's bed, shared by tests/freeze_pressure.rs and benches/freeze.rs: a
//! 256 MiB v1 memcg with zram swap on the host, app cgroups under its cgroup2 directory,
//! cached apps and a foreground job, lowmemd on the memcg with its own runtime directory.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{
    Daemon, Serial, TestCgroup, Workload, ZramSwap, actions, require_real_kernel, serial,
    write_policy,
};

pub const LIMIT_MIB: u64 = 256;
/// Freeze cached apps below 40 % available (RAM alone), thaw 10 s after that ends; kill
/// anything but protected processes only when RAM and zram are nearly gone.
pub const POLICY: &str = "[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 3\n\n\
    [[level]]\nname = \"cached\"\naction = \"freeze\"\nmin_adj = 900\navailable_below_pct = 40\nthaw_after_ms = 10000\n";
pub const KILL_ONLY: &str =
    "[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 3\n";

/// App cgroups under the test's cgroup2 directory, removed once their processes are gone.
pub struct Apps(pub Vec<PathBuf>);

impl Drop for Apps {
    fn drop(&mut self) {
        for d in &self.0 {
            // Never leave a test's app frozen, whatever failed.
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Everything one test needs, dropped in order: the daemon, the workloads, the app
/// cgroups, zram, the memcg, the lock.
pub struct Bed {
    pub cg: TestCgroup,
    _zram: ZramSwap,
    pub apps: Apps,
    runtime: tempfile::TempDir,
    dir: tempfile::TempDir,
}

pub fn bed(name: &str, apps: &[&str]) -> (Serial, Bed) {
    let lock = serial();
    require_real_kernel(name);
    let cg = TestCgroup::create(name, LIMIT_MIB);
    let zram = ZramSwap::set_up().unwrap_or_else(|e| panic!("cannot set up zram swap: {e}"));
    let v2 = cg
        .v2
        .clone()
        .expect("a cgroup2 mount (app cgroups live there)");
    let apps = Apps(
        apps.iter()
            .map(|n| {
                let d = v2.join(n);
                std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                d
            })
            .collect(),
    );
    let bed = Bed {
        cg,
        _zram: zram,
        apps,
        runtime: tempfile::tempdir().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    (lock, bed)
}

impl Bed {
    /// lowmemd on this memcg with `policy`, recording in the bed's runtime directory.
    pub fn daemon(&self, policy: &str, extra: &[&str]) -> Daemon {
        let path = write_policy(self.dir.path(), policy);
        let mut args: Vec<&OsStr> = vec![OsStr::new("--policy"), path.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let env = [("RUNTIME_DIRECTORY", self.runtime.path().as_os_str())];
        Daemon::start_env(&[], &env, &self.cg.name, &args)
    }

    /// A cached app (adj 900): 100 MiB of ~3:1-compressible memory in app cgroup `i`,
    /// every page read every 200 ms (it runs: its CPU time moves).
    pub fn cached_app(&self, i: usize) -> Workload {
        let mut w = Workload::spawn_in_with(
            &self.cg,
            &self.apps.0[i],
            "cached",
            900,
            (100, 200),
            &["--cycle-ms", "200", "--compress-ratio", "3"],
        );
        assert!(w.wait_ready(), "the cached app died growing");
        w
    }

    /// The foreground job (adj 0, the scope's own cgroup) that makes memory short.
    pub fn foreground(&self) -> Workload {
        let mut w = Workload::spawn(&self.cg, "fg", 0, 90, 200);
        assert!(w.wait_ready(), "the foreground job died growing");
        w
    }

    pub fn frozen(&self, i: usize) -> bool {
        let events = std::fs::read_to_string(self.apps.0[i].join("cgroup.events")).unwrap();
        events.lines().any(|l| l == "frozen 1")
    }
}

/// utime + stime of `pid`, in clock ticks: moves only while it runs.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Waits up to `timeout` for an event of `action`; returns the events then.
pub fn wait_action(d: &Daemon, action: &str, timeout: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = d.events();
        if !actions(&events, action).is_empty() || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The state letter of `pid` (`T`: stopped).
pub fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}
