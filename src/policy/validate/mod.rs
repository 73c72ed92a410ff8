//! From the file as written to a [`Policy`]: every key's type and range, unknown keys, the
//! order of levels and the shape of rules, all checked in one pass. Each problem names the
//! file, line:column and key, and says what would be valid. The top-level keys are read
//! here; `level.rs`, `rule.rs` and `hook.rs` read one table each.

mod freeze;
mod hook;
mod level;
mod rank_by;
mod rule;

use std::path::Path;

use super::raw::{Doc, Problem, Table};
use super::{Candidates, Policy, RankBy};
use crate::features::missing;
pub use hook::passwd;
use hook::read_hook;
use level::{check_level_order, read_level};
use rank_by::read_rank_by;
use rule::read_rule;

/// The kernel's PSI trigger window bounds (privileged; unprivileged windows are widened to
/// 2 s multiples at run time).
const PSI_WINDOW_MS: std::ops::RangeInclusive<i64> = 500..=10_000;
/// Largest policy file read; anything bigger is not a policy.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a directory, not a policy file")]
    Directory { path: std::path::PathBuf },
    #[error(
        "{path}: is {kind}, not a regular file (a policy is a regular file; symlinks are followed)"
    )]
    NotRegular {
        path: std::path::PathBuf,
        kind: &'static str,
    },
    #[error("{path}: {size} bytes is too large for a policy file (at most 1 MiB)")]
    TooLarge { path: std::path::PathBuf, size: u64 },
    /// The file grew past the limit between fstat and read (a log, a /proc or /sys file).
    #[error("{path}: more than 1 MiB read, too large for a policy file (at most 1 MiB)")]
    TooLong { path: std::path::PathBuf },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Reads and compiles a policy file. Returns the policy and the text (for hashing).
///
/// The path is often not ours to trust: an operator's typo, a symlink an orchestrator swaps,
/// a file a reload finds replaced. Only a regular file (after symlinks) of at most 1 MiB is
/// read: a FIFO would block the reading thread (a reload, or SIGHUP handling in main)
/// forever, and /dev/zero reports size 0 and never ends, so a size check by `stat` alone let
/// the daemon allocate until killed.
pub fn load(path: &Path) -> Result<(Policy, String), LoadError> {
    let bytes = read_limited(path)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let good = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let mut doc = Doc::new(path, &good);
            doc.problem(
                &(valid..valid),
                "",
                "not UTF-8 text: a policy file is TOML (is this a binary file?)",
            );
            return Err(LoadError::Invalid(doc.problems));
        }
    };
    let policy = compile(path, &text).map_err(LoadError::Invalid)?;
    Ok((policy, text))
}

/// The bytes of a regular file of at most [`MAX_FILE_BYTES`], or why not.
fn read_limited(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    // Refuse before opening where we can: opening a device may itself act (a watchdog
    // starts counting, a tape rewinds, a socket cannot be opened at all).
    check_regular(path, &std::fs::metadata(path).map_err(io)?)?;
    // The file may be swapped between that stat and this open. O_NONBLOCK makes opening a
    // FIFO return at once instead of waiting for a writer, O_NOCTTY keeps a terminal from
    // becoming ours; the fstat of what was opened is the check that counts.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_regular(path, &meta)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    // /proc and /sys files are regular but report size 0, and a file may grow while we
    // read: the limit holds on what is read, not on what fstat said.
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLong {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::FileTypeExt;

    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        return Err(LoadError::Directory {
            path: path.to_owned(),
        });
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of an unknown kind"
    };
    Err(LoadError::NotRegular {
        path: path.to_owned(),
        kind,
    })
}

/// Compiles policy text; `file` only names it in problems.
pub fn compile(file: &Path, text: &str) -> Result<Policy, Vec<Problem>> {
    let mut doc = Doc::new(file, text);
    let Some(root) = doc.parse() else {
        return Err(doc.problems);
    };
    let mut t = Table::new(root.get_ref(), String::new(), root.span());
    let policy = read_policy(&mut doc, &mut t);
    t.finish(&mut doc);
    match policy {
        Some(mut p) if doc.problems.is_empty() => {
            p.warnings = doc.warnings;
            p.warnings.sort_by_key(|w| (w.line, w.column));
            Ok(p)
        }
        _ => {
            let mut problems = doc.problems;
            problems.sort_by_key(|p| (p.line, p.column));
            Err(problems)
        }
    }
}

fn read_policy(doc: &mut Doc<'_>, t: &mut Table<'_, '_>) -> Option<Policy> {
    let scope = match t.string(doc, "scope") {
        None => None,
        Some((s, _)) if s == "system" => None,
        Some((s, _)) if s.starts_with('/') => Some(s),
        Some((s, span)) => {
            doc.problem(
                &span,
                "scope",
                format!("{s:?} is neither \"system\" nor a cgroup path starting with '/' (e.g. \"/box\")"),
            );
            None
        }
    };
    let psi_window_ms = match t.table(doc, "psi") {
        Some(mut psi) => {
            let w = psi.int(
                doc,
                "window_ms",
                PSI_WINDOW_MS,
                "milliseconds, the kernel's 0.5-10 s",
            );
            psi.finish(doc);
            w.unwrap_or(1000) as u64
        }
        None => 1000,
    };
    let thrashing_window_ms = match t.table(doc, "thrashing") {
        Some(mut th) => {
            let w = th.int(doc, "window_ms", 100..=60_000, "milliseconds");
            th.finish(doc);
            w.unwrap_or(1000) as u64
        }
        None => 1000,
    };
    let rank_by = read_rank_by(doc, t, RankBy::Process);
    let level_tables = t.tables(doc, "level");
    if level_tables.is_empty() && !t.has("level") {
        doc.problem(
            &(0..0),
            "level",
            "no [[level]]: a policy needs at least one level (see policies/default.toml)",
        );
    }
    let mut levels = Vec::new();
    let mut spans = Vec::new();
    for mut lt in level_tables {
        let span = lt.span.clone();
        if let Some(l) = read_level(doc, &mut lt, psi_window_ms, rank_by) {
            levels.push(l);
            spans.push((span, lt.path.clone()));
        }
        lt.finish(doc);
    }
    check_level_order(doc, &levels, &spans);
    let mut rules = Vec::new();
    for (i, mut rt) in t.tables(doc, "rule").into_iter().enumerate() {
        if let Some(r) = read_rule(doc, &mut rt, i) {
            rules.push(r);
        }
        rt.finish(doc);
    }
    let mut hooks = Vec::new();
    for (i, mut ht) in t.tables(doc, "hook").into_iter().enumerate() {
        // A build without hooks would load the policy and never run them: refused instead.
        if !cfg!(feature = "hooks") {
            doc.problem(&ht.span, &ht.path, missing("[[hook]]", "hooks"));
        }
        if let Some(h) = read_hook(doc, &mut ht, i) {
            hooks.push(h);
        }
        ht.finish(doc);
    }
    let allow_pid_kill = t.boolean(doc, "allow_pid_kill").unwrap_or(false);
    let count_swap = t.boolean(doc, "count_swap").unwrap_or(true);
    let memory_high_tripwire = t.boolean(doc, "memory_high_tripwire").unwrap_or(true);
    let candidates = match t.string(doc, "candidates") {
        None => Candidates::All,
        Some((s, _)) if s == "all" => Candidates::All,
        // Without lmkd's socket nothing is ever registered: the levels would kill nothing.
        Some((s, span)) if s == "registered" && !cfg!(feature = "lmkd") => {
            let what = "candidates = \"registered\" (processes registered over the lmkd socket)";
            doc.problem(&span, "candidates", missing(what, "lmkd"));
            Candidates::All
        }
        Some((s, _)) if s == "registered" => Candidates::Registered,
        Some((s, span)) => {
            doc.problem(
                &span,
                "candidates",
                format!("{s:?} is neither \"all\" nor \"registered\" (processes registered over the lmkd socket)"),
            );
            Candidates::All
        }
    };
    let facts = crate::policy::Facts::of(&rules);
    Some(Policy {
        allow_pid_kill,
        count_swap,
        memory_high_tripwire,
        candidates,
        rank_by,
        scope,
        psi_window_ms,
        thrashing_window_ms,
        levels,
        rules,
        hooks,
        warnings: Vec::new(),
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Combine;

    fn problems(text: &str) -> Vec<String> {
        compile(Path::new("p.toml"), text)
            .unwrap_err()
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        let p = problems(
            "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 2000\navailable_below_pct = 150\nbogus = 1\n",
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("p.toml:4:11: level[1].min_adj: 2000 is out of range"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("p.toml:5:23: level[1].available_below_pct: 150 is out of range"),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with("p.toml:6:1: level[1].bogus: unknown key"),
            "{p:#?}"
        );
    }

    fn load_err(path: &Path) -> String {
        let started = std::time::Instant::now();
        let e = load(path).unwrap_err().to_string();
        assert!(
            started.elapsed().as_secs() < 2,
            "{e}: took {:?}",
            started.elapsed()
        );
        e
    }

    /// A board build leaves out lmkd's socket and may leave out hooks: a policy that needs
    /// either is refused by name (what the build has is listed), never loaded to do nothing.
    /// Both branches: the default build loads it, `--no-default-features` refuses it.
    #[test]
    fn a_key_that_needs_a_left_out_feature_is_refused_naming_the_feature() {
        let text = format!(
            "candidates = \"registered\"\n{}\n[[hook]]\non = \"kill\"\nexec = [\"/bin/true\"]\n",
            "[[level]]\nname = \"low\"\naction = \"kill\"\navailable_below_pct = 5\nmin_adj = 0"
        );
        let result = compile(Path::new("p.toml"), &text);
        let p: Vec<String> = match &result {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|p| p.to_string()).collect(),
        };
        let has = crate::features::built_in();
        let lmkd = p.iter().find(|m| m.contains("`lmkd`"));
        if cfg!(all(feature = "lmkd", feature = "hooks")) {
            assert_eq!(
                result.map(|p| p.candidates).ok(),
                Some(Candidates::Registered),
                "{p:#?}"
            );
        }
        if cfg!(feature = "lmkd") {
            assert!(lmkd.is_none(), "{p:#?}");
        } else {
            let want = format!(
                "p.toml:1:14: candidates: candidates = \"registered\" (processes registered over the lmkd socket) needs the `lmkd` feature; this build has: {has} (rebuild with `--features lmkd`)"
            );
            assert_eq!(lmkd.map(String::as_str), Some(want.as_str()), "{p:#?}");
        }
        let hooks = p.iter().find(|m| m.contains("`hooks`"));
        if cfg!(feature = "hooks") {
            assert!(hooks.is_none(), "{p:#?}");
        } else {
            let want = format!(
                "p.toml:7:1: hook[1]: [[hook]] needs the `hooks` feature; this build has: {has}"
            );
            assert!(hooks.is_some_and(|m| m.starts_with(&want)), "{p:#?}");
        }
    }

    // FIFOs and /dev/zero are in tests/hostile_files.rs, where a regression hangs or
    // allocates in a child under a timeout and a memory limit, not in the test runner.
    #[test]
    fn devices_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let null = dir.path().join("null.toml");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        let e = load_err(&null);
        assert!(
            e.contains("null.toml: is a character device, not a regular file"),
            "{e}"
        );
        let e = load_err(dir.path());
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn size_is_limited_on_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = load_err(&big);
        assert!(e.contains("1048577 bytes is too large"), "{e}");
        // Exactly the limit is read (and then is merely not a policy).
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert!(matches!(load(&big), Err(LoadError::Invalid(_))));
        // /proc files say size 0; kallsyms is several MiB where the kernel has it.
        let kallsyms = Path::new("/proc/kallsyms");
        if kallsyms.exists() {
            let e = load_err(kallsyms);
            assert!(e.contains("more than 1 MiB read"), "{e}");
        }
    }

    #[test]
    fn minimal_policy_compiles_with_documented_defaults() {
        let p = compile(
            Path::new("p.toml"),
            "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n",
        )
        .unwrap();
        let l = &p.levels[0];
        assert_eq!(
            (l.max_victims, l.wait_ms, l.cooldown_ms, l.combine),
            (1, 1000, 0, Combine::Any)
        );
        assert_eq!(p.psi_window_ms, 1000);
        assert_eq!(p.scope, None);
        assert!(
            p.count_swap,
            "swap is headroom unless a policy says otherwise"
        );
    }
}
