//! Hot reload of the policy file: on SIGHUP (from main) and when the file changes on disk.
//! Editors replace files rather than write them in place, so the directory is watched, and
//! any create, write, move or delete of the file's name triggers a reload — or of the name
//! its symlink goes through, for Kubernetes ConfigMap mounts (see [`names_that_matter`]).

use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::policy::store::{PolicyStore, ReloadResult};
use crate::report::metrics::Metrics;

/// Reloads and reports; `notify` is called when a new policy is in force (to wake the
/// monitor, which re-registers its triggers).
/// Reloads and says how it went (also in logs and `lowmemd_policy_reloads_total`).
pub fn reload(
    store: &PolicyStore,
    metrics: &Metrics,
    why: &str,
    notify: &dyn Fn(),
) -> ReloadResult {
    let result = match store.reload() {
        Ok(true) => {
            log::info!(
                "policy reloaded ({why}): now in force: {}",
                store.describe()
            );
            let scope = metrics.scope_name();
            metrics.adopt_policy(&store.get(), &scope, &store.describe());
            notify();
            ReloadResult::Applied
        }
        Ok(false) => {
            log::info!(
                "policy reload ({why}): file unchanged, keeping {}",
                store.describe()
            );
            ReloadResult::Unchanged
        }
        Err(e) => {
            log::error!(
                "policy reload ({why}) failed, keeping {}:\n{e}",
                store.describe()
            );
            ReloadResult::Failed
        }
    };
    metrics.reloads.with_label_values(&[result.as_str()]).inc();
    result
}

/// Puts an lmkd client's LMK_TARGET table (KiB, adj pairs) in force alongside the policy's
/// levels, and reports it like a reload.
pub fn adopt_minfree(
    store: &PolicyStore,
    metrics: &Metrics,
    client_pid: i32,
    targets: &[(u64, i16)],
    notify: &dyn Fn(),
) {
    store.set_minfree(client_pid, targets);
    let policy = store.get();
    let scope = metrics.scope_name();
    metrics.adopt_policy(&policy, &scope, &store.describe());
    for l in policy.levels.iter().filter(|l| l.from_client.is_some()) {
        log::info!(
            "in force alongside the policy: {}",
            crate::policy::explain::level_short(l)
        );
    }
    notify();
}

/// Starts a thread that reloads `store` when its file changes. `None` for the built-in
/// policy; an inotify failure is reported and leaves SIGHUP as the way to reload.
pub fn watch(
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    notify: Box<dyn Fn() + Send>,
) -> Option<std::thread::JoinHandle<()>> {
    let path = store.source()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name()?.to_owned();
    let fd: OwnedFd = match inotify::init(CreateFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot watch {} ({e}); reload with SIGHUP", path.display());
            return None;
        }
    };
    let mask =
        WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::CREATE | WatchFlags::DELETE;
    if let Err(e) = inotify::add_watch(&fd, &dir, mask) {
        log::warn!("cannot watch {} ({e}); reload with SIGHUP", dir.display());
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            loop {
                let mut hit = false;
                {
                    let mut reader = inotify::Reader::new(&fd, &mut buf);
                    // Blocks for the first event, then drains what is buffered.
                    loop {
                        match reader.next() {
                            Ok(ev) if !hit => {
                                // An overflowed queue lost events that may have mattered.
                                // The names are read per event: the links they come from
                                // are what the events change.
                                hit = ev.events().contains(ReadFlags::QUEUE_OVERFLOW)
                                    || ev.file_name().is_some_and(|c| {
                                        let c = OsStr::from_bytes(c.to_bytes());
                                        names_that_matter(&dir, &name).iter().any(|n| n == c)
                                    });
                            }
                            Ok(_) => {}
                            Err(rustix::io::Errno::INTR) => continue,
                            Err(e) => {
                                log::error!("policy watch stopped: {e}");
                                return;
                            }
                        }
                        if reader.is_buffer_empty() {
                            break;
                        }
                    }
                }
                if hit {
                    // An editor's save is several events (write, rename); let them land.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    reload(&store, &metrics, "file changed", &*notify);
                }
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::warn!("cannot start the policy watch thread ({e}); reload with SIGHUP");
            None
        }
    }
}

/// The names in `dir` whose change can change what `dir/name` resolves to: `name`, and, when
/// it is a symlink whose relative target starts with another entry of `dir` (`other.toml`,
/// `..data/policy.toml`), that entry.
/// kubelet mounts a ConfigMap as `policy.toml -> ..data/policy.toml` with `..data` a symlink
/// to a timestamped directory, and updates it by renaming a new `..data` over the old one:
/// `policy.toml` itself sees no event. The same holds for any `current -> release-N`
/// deployment. Read again for every event, as the links change.
fn names_that_matter(dir: &Path, name: &OsStr) -> Vec<OsString> {
    let mut names = vec![name.to_owned()];
    if let Ok(target) = std::fs::read_link(dir.join(name)) {
        let first = target
            .components()
            .find(|c| !matches!(c, Component::CurDir));
        if let Some(Component::Normal(first)) = first {
            names.push(first.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configmap_symlink_makes_its_data_link_matter() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let name = OsStr::new("policy.toml");
        std::fs::write(dir.join(name), "").unwrap();
        assert_eq!(names_that_matter(dir, name), [name]);
        std::fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink("..data/policy.toml", dir.join(name)).unwrap();
        assert_eq!(names_that_matter(dir, name), [name, OsStr::new("..data")]);
        std::fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink("./current/policy.toml", dir.join(name)).unwrap();
        assert_eq!(names_that_matter(dir, name), [name, OsStr::new("current")]);
        std::fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink("other.toml", dir.join(name)).unwrap();
        assert_eq!(
            names_that_matter(dir, name),
            [name, OsStr::new("other.toml")]
        );
        // Outside `dir`: only the name's own events are seen here (SIGHUP for the rest).
        for target in ["../etc/policy.toml", "/etc/policy.toml"] {
            std::fs::remove_file(dir.join(name)).unwrap();
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
            assert_eq!(names_that_matter(dir, name), [name], "{target}");
        }
    }
}
