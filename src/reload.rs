//! Hot reload of the policy file: on SIGHUP (from main) and when the file changes on disk.
//! Editors replace files rather than write them in place, so the directory is watched, and
//! any create, write, move or delete of the file's name triggers a reload.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use crate::policy::store::{PolicyStore, ReloadResult};
use crate::report::metrics::Metrics;

/// Reloads and reports; `notify` is called when a new policy is in force (to wake the
/// monitor, which re-registers its triggers).
pub fn reload(store: &PolicyStore, metrics: &Metrics, why: &str, notify: &dyn Fn()) {
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
                            Ok(ev) => {
                                hit |= ev.file_name().is_some_and(|c| {
                                    OsStr::from_bytes(c.to_bytes()) == name.as_os_str()
                                });
                            }
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
