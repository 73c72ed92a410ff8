//! The kernel tripwire of a cgroup-v2 memcg scope (issue 25). v2 has no usage threshold
//! notification (v1's `cgroup.event_control`, see `threshold.rs`), so without one the
//! monitor polls as often as the machine's worst fill rate could reach a watermark: ~90
//! wake-ups a second in a 256 MiB memcg. Instead, where the scope's cgroup has no
//! `memory.high` of its own (`max`), lowmemd writes one at the usage above which the
//! available memory could first fall below the highest watermark (`limit − watermark`, as
//! the v1 thresholds), and waits: usage crossing it makes the kernel count a `high` event
//! in `memory.events.local`, whose change it signals to inotify (kernfs' "file modified"
//! notification), and reclaim and throttle the allocating task on its way back to user
//! space, buying time.
//!
//! `memory.high` is a throttle, not only a signal: held there it would cap the page cache
//! of a workload that simply lives above it. So the tripwire is lifted (back to `max`) as
//! soon as it is crossed, and the adaptive poll takes over, as above the lowest v1
//! threshold; it is set again once usage is back below it by a margin. Watched the same
//! way: `memory.high` (someone else writing it: theirs from then on, never overwritten)
//! and `memory.max` (the watermarks move with the limit).

#[cfg(test)]
mod fake_cgroup;
pub mod record;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use super::threshold::usages_for;
use crate::scope::memcg::{Version, parse_stat_key};
use crate::scope::{CgroupScope, Scope};
use record::Record;

#[derive(Debug, thiserror::Error)]
pub enum TripwireError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("inotify on {path}: {source}")]
    Inotify {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why no tripwire is set: the adaptive poll stands in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// `memory_high_tripwire = false`.
    Off,
    /// The system scope, or a v1 memcg (which has usage thresholds instead).
    NotV2,
    /// A cgroup kubelet manages: its MemoryQoS writes `memory.high` on pods.
    Kubelet(String),
    /// No `memory.high` (the root cgroup).
    NoMemoryHigh(PathBuf),
    /// Someone else's value, left alone.
    Foreign { path: PathBuf, value: String },
    /// The original could not be remembered, so it would not be restored after a crash.
    NoRecord(String),
    /// Writing `memory.high` failed (a read-only cgroupfs: systemd's
    /// ProtectControlGroups=yes).
    Unwritable(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Off => write!(f, "the policy says memory_high_tripwire = false"),
            Unavailable::NotV2 => write!(f, "only for a cgroup-v2 memcg scope"),
            Unavailable::Kubelet(c) => write!(
                f,
                "{c} is managed by kubelet (its MemoryQoS writes memory.high): not touched"
            ),
            Unavailable::NoMemoryHigh(p) => write!(f, "{} has no memory.high", p.display()),
            Unavailable::Foreign { path, value } => write!(
                f,
                "{} is {value}, set by someone else: left alone",
                path.display()
            ),
            Unavailable::NoRecord(e) => write!(
                f,
                "cannot remember the original value ({e}): not set, so none could be left behind"
            ),
            Unavailable::Unwritable(e) => write!(
                f,
                "cannot write it ({e}; under systemd, ProtectControlGroups=no allows it)"
            ),
        }
    }
}

/// Whether kubelet manages the cgroup `name`: the pod hierarchy is `/kubepods...` under
/// both of its cgroup drivers (`/kubepods/burstable/pod<uid>`, `/kubepods.slice/
/// kubepods-burstable.slice/...`), wherever the node puts it.
pub fn kubelet_managed(name: &str) -> bool {
    name.split('/').any(|c| c.starts_with("kubepods"))
}

/// Whether a tripwire may be set on `scope` at all, before its `memory.high` is read.
pub fn eligible(scope: &Scope, enabled: bool) -> Result<&CgroupScope, Unavailable> {
    if !enabled {
        return Err(Unavailable::Off);
    }
    let c = scope.cgroup.as_ref().ok_or(Unavailable::NotV2)?;
    if c.version != Version::V2 {
        return Err(Unavailable::NotV2);
    }
    if kubelet_managed(&c.name) {
        return Err(Unavailable::Kubelet(c.name.clone()));
    }
    let high = c.memcg_dir.join("memory.high");
    if !high.exists() {
        return Err(Unavailable::NoMemoryHigh(c.memcg_dir.clone()));
    }
    Ok(c)
}

/// Where the tripwire should be after a reading, in KiB (`None`: lifted). `armed`: where it
/// is now; `crossed`: the kernel counted a `high` event since the last reading. The bound
/// is the lowest v1-style usage threshold, page-aligned down (the kernel keeps pages).
pub fn next_bound(
    armed: Option<u64>,
    limit_kib: u64,
    usage_kib: u64,
    watermark_pcts: &[f64],
    page_kib: u64,
    crossed: bool,
) -> Option<u64> {
    let bound = usages_for(limit_kib, watermark_pcts).first().copied()?;
    let bound = bound - bound % page_kib.max(1);
    if bound == 0 || crossed || usage_kib >= bound {
        return None;
    }
    // Set again only with room below it: a workload hovering at the bound would otherwise
    // be throttled and woken over and over. 1/32 of the limit is 8 MiB in 256 MiB.
    let margin = limit_kib / 32;
    (armed.is_some() || usage_kib + margin < bound).then_some(bound)
}

/// The tripwire of one scope: the inotify watch and what lowmemd wrote.
pub struct Tripwire {
    dir: PathBuf,
    record_path: PathBuf,
    watch: OwnedFd,
    events_file: PathBuf,
    page_kib: u64,
    /// Where it is set (KiB), while it is.
    armed_kib: Option<u64>,
    /// The `high` count last read.
    high_events: u64,
    /// Someone else's value, as last reported.
    foreign: Option<String>,
}

impl AsFd for Tripwire {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.watch.as_fd()
    }
}

impl Tripwire {
    /// Opens the watch for `scope` if a tripwire may be set there; its records go in
    /// `runtime_dir`. Sets nothing yet ([`Tripwire::tend`] does).
    pub fn open(scope: &Scope, enabled: bool, runtime_dir: &Path) -> Result<Self, Unavailable> {
        let c = eligible(scope, enabled)?;
        record::check_dir(runtime_dir).map_err(|e| Unavailable::NoRecord(e.to_string()))?;
        let dir = c.memcg_dir.clone();
        let watch = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| Unavailable::NoRecord(format!("inotify: {e}")))?;
        // The local events: a child's own memory.high crossed is not ours to wake for.
        let events_file = ["memory.events.local", "memory.events"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .unwrap_or_else(|| dir.join("memory.events"));
        for p in [
            &events_file,
            &dir.join("memory.high"),
            &dir.join("memory.max"),
        ] {
            inotify::add_watch(&watch, p, WatchFlags::MODIFY).map_err(|e| {
                Unavailable::NoRecord(
                    TripwireError::Inotify {
                        path: p.clone(),
                        source: e.into(),
                    }
                    .to_string(),
                )
            })?;
        }
        let mut t = Tripwire {
            record_path: record::path_for(runtime_dir, &c.name),
            dir,
            watch,
            events_file,
            page_kib: (rustix::param::page_size() as u64 / 1024).max(1),
            armed_kib: None,
            high_events: 0,
            foreign: None,
        };
        t.high_events = t.read_high_events();
        match t.read_high() {
            Some(v) if v == "max" => Ok(t),
            Some(value) => Err(Unavailable::Foreign {
                path: t.dir.join("memory.high"),
                value,
            }),
            None => Err(Unavailable::NoMemoryHigh(t.dir.clone())),
        }
    }

    fn read_high(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("memory.high"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn read_high_events(&self) -> u64 {
        std::fs::read_to_string(&self.events_file)
            .ok()
            .and_then(|t| parse_stat_key(&t, "high"))
            .unwrap_or(0)
    }

    /// Reads what the watch has queued (it only wakes the monitor to look).
    pub fn drain(&self) {
        let mut buf = [0u8; 1024];
        while matches!(rustix::io::read(&self.watch, &mut buf), Ok(n) if n > 0) {}
    }

    /// Where it is set, KiB.
    pub fn armed_kib(&self) -> Option<u64> {
        self.armed_kib
    }

    /// Whether usage is below the tripwire: no watermark can be crossed before the kernel
    /// says so.
    pub fn kernel_watches(&self, usage_kib: u64) -> bool {
        self.armed_kib.is_some_and(|b| usage_kib < b)
    }

    /// Sets, moves or lifts the tripwire after a reading; returns what to log (news of
    /// someone else's value), or why it cannot go on (then it is dropped: tried again at
    /// every poll, a failing write would be a warning per poll).
    pub fn tend(
        &mut self,
        limit_kib: u64,
        usage_kib: u64,
        pcts: &[f64],
    ) -> Result<Vec<String>, Unavailable> {
        let mut said = Vec::new();
        let events = self.read_high_events();
        let crossed = events > self.high_events;
        self.high_events = events;
        let Some(now) = self.read_high() else {
            return Ok(said);
        };
        let ours = self.armed_kib.map(|k| (k * 1024).to_string());
        if ours.as_deref() != Some(now.as_str()) && now != "max" {
            // Written by someone else (over ours, or while it was lifted): theirs now.
            if self.armed_kib.take().is_some() {
                record::remove(&self.record_path);
            }
            if self.foreign.as_deref() != Some(now.as_str()) {
                said.push(format!(
                    "memory.high tripwire: {}; polling instead",
                    Unavailable::Foreign {
                        path: self.dir.join("memory.high"),
                        value: now.clone()
                    }
                ));
            }
            self.foreign = Some(now);
            return Ok(said);
        }
        if ours.is_some() && now == "max" {
            // Reset to max by someone (systemd re-applying a unit's MemoryHigh=infinity).
            self.armed_kib = None;
            record::remove(&self.record_path);
        }
        if self.foreign.take().is_some() {
            said.push(format!(
                "{} is max again: the tripwire may be set",
                self.dir.join("memory.high").display()
            ));
        }
        let want = next_bound(
            self.armed_kib,
            limit_kib,
            usage_kib,
            pcts,
            self.page_kib,
            crossed,
        );
        if want != self.armed_kib
            && let Err(e) = self.set(want)
        {
            return Err(Unavailable::Unwritable(e.to_string()));
        }
        Ok(said)
    }

    /// Writes `bound` (`None`: max): the record first, removed only once max is back.
    fn set(&mut self, bound: Option<u64>) -> Result<(), TripwireError> {
        let path = self.dir.join("memory.high");
        let io = |source| TripwireError::Io {
            path: path.clone(),
            source,
        };
        match bound {
            Some(kib) => {
                let bytes = (kib * 1024).to_string();
                record::save(
                    &self.record_path,
                    &Record {
                        dir: self.dir.clone(),
                        original: "max".into(),
                        written: bytes.clone(),
                    },
                )?;
                if let Err(e) = std::fs::write(&path, &bytes) {
                    record::remove(&self.record_path);
                    self.armed_kib = None;
                    return Err(io(e));
                }
                self.armed_kib = Some(kib);
            }
            None => {
                std::fs::write(&path, "max").map_err(io)?;
                self.armed_kib = None;
                record::remove(&self.record_path);
            }
        }
        Ok(())
    }

    /// One word for the start-up line.
    pub fn describe(&self) -> String {
        match self.armed_kib {
            Some(k) => format!("memory_high_tripwire({} MiB)", k / 1024),
            None => "memory_high_tripwire(lifted)".into(),
        }
    }
}

impl Drop for Tripwire {
    /// Lifts it on the way out, unless someone else's value is there by now.
    fn drop(&mut self) {
        let Some(kib) = self.armed_kib else { return };
        if self.read_high().as_deref() == Some((kib * 1024).to_string().as_str()) {
            let _ = self.set(None);
        } else {
            record::remove(&self.record_path);
        }
    }
}

/// At start-up: puts back a `memory.high` of `scope` that a lowmemd which did not exit
/// cleanly left set, unless it was changed since. Returns what to log.
pub fn restore_left_behind(scope: &Scope, runtime_dir: &Path) -> Option<String> {
    let c = scope.cgroup.as_ref()?;
    let path = record::path_for(runtime_dir, &c.name);
    let rec = record::load(&path)?;
    // Only the cgroup the record names, and only ours to judge: a record naming another
    // directory was not written for this scope.
    if rec.dir != c.memcg_dir {
        return None;
    }
    let high = rec.dir.join("memory.high");
    let now = std::fs::read_to_string(&high).ok()?.trim().to_owned();
    let said = if now == rec.written {
        match std::fs::write(&high, &rec.original) {
            Ok(()) => format!(
                "{}: put back {} (a previous lowmemd set {now} and did not exit cleanly)",
                high.display(),
                rec.original
            ),
            Err(e) => {
                return Some(format!(
                    "{}: cannot put back {}: {e}",
                    high.display(),
                    rec.original
                ));
            }
        }
    } else {
        format!(
            "{}: a previous lowmemd's tripwire was replaced by {now} since: left alone",
            high.display()
        )
    };
    record::remove(&path);
    Some(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024;

    #[test]
    fn the_tripwire_sits_where_the_highest_watermark_could_first_be_reached() {
        // 256 MiB, watermarks 25 / 15 / 5 %: usage above 192 MiB could leave < 25 %.
        let w = [25.0, 15.0, 5.0];
        assert_eq!(
            next_bound(None, 256 * MIB, 60 * MIB, &w, 4, false),
            Some(192 * MIB)
        );
        // It moves with the watermark in force (a reload, an lmkd minfree table) and the
        // limit.
        assert_eq!(
            next_bound(Some(192 * MIB), 256 * MIB, 60 * MIB, &[10.0], 4, false),
            Some(235_928)
        );
        assert_eq!(
            next_bound(Some(192 * MIB), 512 * MIB, 60 * MIB, &w, 4, false),
            Some(384 * MIB)
        );
        // Page-aligned: the kernel reads back whole pages.
        assert_eq!(
            next_bound(None, 1000, 0, &[33.0], 64, false).unwrap() % 64,
            0
        );
        // No watermark, nothing to wire.
        assert_eq!(next_bound(None, 256 * MIB, 0, &[], 4, false), None);
    }

    #[test]
    fn crossed_it_is_lifted_and_set_again_only_with_room_below() {
        let w = [25.0];
        // The kernel counted a high event, or usage is past it: lifted, poll instead.
        assert_eq!(
            next_bound(Some(192 * MIB), 256 * MIB, 190 * MIB, &w, 4, true),
            None
        );
        assert_eq!(
            next_bound(Some(192 * MIB), 256 * MIB, 200 * MIB, &w, 4, false),
            None
        );
        // Back below it, but within 8 MiB: not yet (a workload hovering there would be
        // throttled and would wake lowmemd over and over).
        assert_eq!(next_bound(None, 256 * MIB, 188 * MIB, &w, 4, false), None);
        assert_eq!(
            next_bound(None, 256 * MIB, 180 * MIB, &w, 4, false),
            Some(192 * MIB)
        );
        // Armed and calm: it stays even within the margin.
        assert_eq!(
            next_bound(Some(192 * MIB), 256 * MIB, 188 * MIB, &w, 4, false),
            Some(192 * MIB)
        );
    }

    #[test]
    fn kubelet_cgroups_are_never_touched() {
        for c in [
            "/kubepods",
            "/kubepods/burstable/pod1234",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/node/kubepods-pod1.slice",
        ] {
            assert!(kubelet_managed(c), "{c}");
        }
        for c in ["/box", "/system.slice/nginx.service", "/"] {
            assert!(!kubelet_managed(c), "{c}");
        }
    }
}
