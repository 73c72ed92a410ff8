//! From the file as written to a [`Policy`]: every key's type and range, unknown keys, the
//! order of levels and the shape of rules, all checked in one pass. Each problem names the
//! file, line:column and key, and says what would be valid. The top-level keys are read
//! here; `level.rs` and `rule.rs` read one table each.

mod level;
mod rule;

use std::path::Path;

use super::Policy;
use super::raw::{Doc, Problem, Table};
use level::{check_level_order, read_level};
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
    #[error("{path}: {size} bytes is too large for a policy file (at most 1 MiB)")]
    TooLarge { path: std::path::PathBuf, size: u64 },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Reads and compiles a policy file. Returns the policy and the text (for hashing).
pub fn load(path: &Path) -> Result<(Policy, String), LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(LoadError::Directory {
            path: path.to_owned(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
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
        Some(p) if doc.problems.is_empty() => Ok(p),
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
        if let Some(l) = read_level(doc, &mut lt, psi_window_ms) {
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
    let allow_pid_kill = t.boolean(doc, "allow_pid_kill").unwrap_or(false);
    Some(Policy {
        allow_pid_kill,
        scope,
        psi_window_ms,
        thrashing_window_ms,
        levels,
        rules,
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
    }
}
