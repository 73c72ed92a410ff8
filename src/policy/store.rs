//! The policy in force, swapped atomically on reload. Readers take an `Arc` snapshot per
//! decision, so a reload lands between decisions, never inside one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::validate::{LoadError, compile, load};
use super::{DEFAULT_TOML, Policy};

pub struct PolicyStore {
    current: RwLock<Arc<Policy>>,
    generation: AtomicU64,
    source: Option<PathBuf>,
    hash: Mutex<String>,
    /// Held from reading the file to the swap. SIGHUP (main thread) and the file watch
    /// reload concurrently; unserialised, the one that read the older text could swap it in
    /// after the one that read the newer text, and the daemon would run a stale policy.
    reloading: Mutex<()>,
}

/// How a reload ended: the `result` label of `lowmemd_policy_reloads_total`. The strings
/// are a public interface: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Applied,
    Unchanged,
    Failed,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Applied,
        ReloadResult::Unchanged,
        ReloadResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Failed => "failed",
        }
    }
}

/// A short content hash (FNV-1a, 64 bit) naming which text is in force. Not a security
/// measure: it tells an operator whether the file they edited is the one running.
pub fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl PolicyStore {
    /// The built-in policy.
    pub fn builtin() -> Self {
        let policy =
            compile(Path::new("<built-in>"), DEFAULT_TOML).expect("built-in policy is valid");
        Self::with(policy, None, DEFAULT_TOML)
    }

    /// A policy file; an invalid one is an error (lowmemd refuses to start on it).
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let (policy, text) = load(path)?;
        Ok(Self::with(policy, Some(path.to_owned()), &text))
    }

    /// A store that holds `policy` and never reloads (for unit tests of its readers).
    #[cfg(test)]
    pub(crate) fn fixed(policy: Policy) -> Self {
        Self::with(policy, None, "")
    }

    fn with(policy: Policy, source: Option<PathBuf>, text: &str) -> Self {
        PolicyStore {
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(1),
            source,
            hash: Mutex::new(content_hash(text)),
            reloading: Mutex::new(()),
        }
    }

    pub fn get(&self) -> Arc<Policy> {
        self.current.read().clone()
    }

    /// Bumped on every applied reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// "FILE (hash H)" or "built-in default.toml (hash H)".
    pub fn describe(&self) -> String {
        let hash = self.hash.lock().clone();
        match &self.source {
            Some(p) => format!("{} (hash {hash})", p.display()),
            None => format!("built-in default.toml (hash {hash})"),
        }
    }

    /// Re-reads the file and, if it compiles, swaps it in. On any error the policy in force
    /// stays. Returns whether the text changed (an identical file is not "reloaded").
    pub fn reload(&self) -> Result<bool, LoadError> {
        let Some(path) = &self.source else {
            return Ok(false);
        };
        let _serial = self.reloading.lock();
        let (policy, text) = load(path)?;
        let hash = content_hash(&text);
        let mut current_hash = self.hash.lock();
        if *current_hash == hash {
            return Ok(false);
        }
        let policy = policy.keeping_minfree_of(&self.get());
        *self.current.write() = Arc::new(policy);
        *current_hash = hash;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Puts an lmkd client's minfree table (KiB, adj pairs) in force alongside the file's
    /// levels, replacing the one before; kept across reloads of the file.
    pub fn set_minfree(&self, client_pid: i32, targets: &[(u64, i16)]) {
        let _serial = self.reloading.lock();
        let policy = self.get().with_minfree(client_pid, targets);
        *self.current.write() = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    const BASE: &str =
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n";

    /// SIGHUP and the file watch reload at the same time while the file keeps changing: the
    /// text in force must never go back to an older version than one already seen in force.
    #[test]
    fn a_minfree_table_stays_in_force_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, BASE).unwrap();
        let store = PolicyStore::from_file(&path).unwrap();
        store.set_minfree(42, &[(92_160, 950), (73_728, 900)]);
        let names = |s: &PolicyStore| -> Vec<(String, i16)> {
            s.get()
                .levels
                .iter()
                .map(|l| (l.name.clone(), l.min_adj))
                .collect()
        };
        let want = vec![
            ("low".to_string(), 900),
            ("minfree_1".to_string(), 900),
            ("minfree_2".to_string(), 950),
        ];
        assert_eq!(names(&store), want);
        std::fs::write(&path, format!("{BASE}# edited\n")).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(names(&store), want);
        // A new table replaces the old one; it cannot reach below the policy's floor (900).
        store.set_minfree(7, &[(1024, 0)]);
        assert_eq!(names(&store)[1..], [("minfree_1".to_string(), 900)]);
        assert_eq!(store.get().levels[1].from_client, Some(7));
    }

    #[test]
    fn concurrent_reloads_never_install_an_older_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let tmp = dir.path().join("p.toml.tmp");
        std::fs::write(&path, format!("{BASE}# 0\n")).unwrap();
        let store = Arc::new(PolicyStore::from_file(&path).unwrap());
        let versions = Arc::new(std::sync::Mutex::new(HashMap::new()));
        versions
            .lock()
            .unwrap()
            .insert(content_hash(&format!("{BASE}# 0\n")), 0u64);
        let done = Arc::new(AtomicBool::new(false));
        // (highest version seen in force, times it went back)
        let seen = Arc::new(std::sync::Mutex::new((0u64, 0u32)));
        let reloaders: Vec<_> = (0..2)
            .map(|_| {
                let (store, versions, done, seen) =
                    (store.clone(), versions.clone(), done.clone(), seen.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        store.reload().unwrap();
                        // Observed under one lock, so observations are ordered in time.
                        let mut seen = seen.lock().unwrap();
                        let now = versions.lock().unwrap()[&*store.hash.lock()];
                        if now < seen.0 {
                            seen.1 += 1;
                        }
                        seen.0 = seen.0.max(now);
                    }
                })
            })
            .collect();
        for n in 1..=3000u64 {
            let text = format!("{BASE}# {n}\n");
            versions.lock().unwrap().insert(content_hash(&text), n);
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        done.store(true, Ordering::Release);
        for r in reloaders {
            r.join().unwrap();
        }
        assert_eq!(
            seen.lock().unwrap().1,
            0,
            "an older policy text was reinstalled"
        );
    }
}
