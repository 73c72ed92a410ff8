//! From the file as written to a [`Policy`]: every key's type and range, unknown keys, the
//! order of levels and the shape of rules, all checked in one pass. Each problem names the
//! file, line:column and key, and says what would be valid.

use std::ops::Range;
use std::path::Path;

use super::raw::{Doc, Problem, Table};
use super::rules::{Effect, Matcher, Rule};
use super::{Action, Combine, Conditions, Level, PageoutLimits, Policy, PsiCondition, PsiKind};

/// The kernel's PSI trigger window bounds (privileged; unprivileged windows are widened to
/// 2 s multiples at run time).
const PSI_WINDOW_MS: std::ops::RangeInclusive<i64> = 500..=10_000;
/// The kernel stores at most 15 bytes of comm.
const COMM_MAX: usize = 15;
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

fn read_level(doc: &mut Doc<'_>, t: &mut Table<'_, '_>, window_ms: u64) -> Option<Level> {
    let before = doc.problems.len();
    let name = match t.string(doc, "name") {
        Some((n, span)) => {
            let ok = !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                doc.problem(
                    &span,
                    &t.key_path("name"),
                    format!("{n:?}: use 1-32 characters of a-z, 0-9 and _"),
                );
            }
            n
        }
        None => {
            doc.problem(&t.span, &t.path, "missing `name` (e.g. name = \"low\")");
            String::new()
        }
    };
    let action = match t.string(doc, "action") {
        Some((a, _)) if a == "kill" => Action::Kill,
        Some((a, _)) if a == "none" => Action::None,
        Some((a, _)) if a == "pageout" => Action::Pageout,
        Some((a, span)) => {
            doc.problem(
                &span,
                &t.key_path("action"),
                format!("{a:?}: use \"kill\", \"pageout\" or \"none\""),
            );
            Action::None
        }
        None => {
            doc.problem(
                &t.span,
                &t.path,
                "missing `action` (\"kill\", \"pageout\" or \"none\")",
            );
            Action::None
        }
    };
    let min_adj = t.int(doc, "min_adj", -1000..=1000, "oom_score_adj");
    if min_adj.is_none() && !t.has("min_adj") {
        doc.problem(
            &t.span,
            &t.path,
            "missing `min_adj` (the lowest oom_score_adj it may kill, -1000..=1000)",
        );
    }
    let max_victims = t
        .int(doc, "max_victims", 1..=16, "processes per decision")
        .unwrap_or(1);
    let wait_ms = t
        .int(doc, "wait_ms", 10..=60_000, "milliseconds")
        .unwrap_or(1000);
    let cooldown_ms = t
        .int(doc, "cooldown_ms", 0..=3_600_000, "milliseconds")
        .unwrap_or(0);
    let combine = match t.string(doc, "when") {
        None => Combine::Any,
        Some((w, _)) if w == "any" => Combine::Any,
        Some((w, _)) if w == "all" => Combine::All,
        Some((w, span)) => {
            doc.problem(
                &span,
                &t.key_path("when"),
                format!("{w:?}: use \"any\" or \"all\""),
            );
            Combine::Any
        }
    };
    let pct = "percent, 0-100";
    let psi_unit = format!("milliseconds of stall within the {window_ms} ms PSI window");
    let psi = |doc: &mut Doc<'_>, t: &mut Table<'_, '_>, key: &'static str, kind| {
        let ms = t.int(doc, key, 1..=window_ms as i64, &psi_unit)?;
        Some(PsiCondition {
            kind,
            stall_pct: ms as f64 * 100.0 / window_ms as f64,
        })
    };
    let conditions = Conditions {
        available_below_pct: t.number(doc, "available_below_pct", 0.0..=100.0, pct),
        available_below_kib: t
            .int(doc, "available_below_kib", 1..=i64::MAX, "KiB")
            .map(|k| k as u64),
        psi_some: psi(doc, t, "psi_some_ms", PsiKind::Some),
        psi_full: psi(doc, t, "psi_full_ms", PsiKind::Full),
        swap_free_below_pct: t.number(doc, "swap_free_below_pct", 0.0..=100.0, pct),
        thrashing_above_pct: t.number(
            doc,
            "thrashing_above_pct",
            0.0..=1000.0,
            "percent of the file cache refaulted per window, 0-1000",
        ),
        pressure_after_kill_ms: t
            .int(doc, "pressure_after_kill_ms", 1..=3_600_000, "milliseconds")
            .map(|m| m as u64),
    };
    let defaults = PageoutLimits::default();
    let pageout = PageoutLimits {
        max_kib_per_event: t
            .int(doc, "pageout_max_mib", 1..=1 << 20, "MiB advised per event")
            .map_or(defaults.max_kib_per_event, |m| m as u64 * 1024),
        again_after_ms: t
            .int(
                doc,
                "pageout_again_after_ms",
                0..=86_400_000,
                "milliseconds",
            )
            .map_or(defaults.again_after_ms, |m| m as u64),
        regrow_pct: t
            .number(
                doc,
                "pageout_regrow_pct",
                0.0..=1000.0,
                "percent of the size after the last page-out",
            )
            .unwrap_or(defaults.regrow_pct),
    };
    if action != Action::Pageout {
        for key in [
            "pageout_max_mib",
            "pageout_again_after_ms",
            "pageout_regrow_pct",
        ] {
            if t.has(key) {
                doc.problem(
                    &t.span,
                    &t.key_path(key),
                    "only for action = \"pageout\" levels",
                );
            }
        }
    }
    if conditions == Conditions::default() && doc.problems.len() == before {
        doc.problem(
            &t.span,
            &t.path,
            "no condition: give at least one of available_below_pct, available_below_kib, psi_some_ms, psi_full_ms, swap_free_below_pct, thrashing_above_pct, pressure_after_kill_ms",
        );
    }
    (doc.problems.len() == before).then(|| Level {
        name,
        action,
        min_adj: min_adj.unwrap_or(0) as i16,
        max_victims: max_victims as u32,
        wait_ms: wait_ms as u64,
        cooldown_ms: cooldown_ms as u64,
        combine,
        conditions,
        pageout,
    })
}

/// Levels come most severe first: a later level fires at more available memory, a later
/// kill level touches no lower adj than an earlier one (page-out levels may reach lower:
/// paging out is gentler than killing), and names are unique.
fn check_level_order(doc: &mut Doc<'_>, levels: &[Level], spans: &[(Range<usize>, String)]) {
    for (i, l) in levels.iter().enumerate() {
        let (span, path) = &spans[i];
        if let Some(j) = levels[..i].iter().position(|o| o.name == l.name) {
            doc.problem(
                span,
                path,
                format!("duplicate level name {:?} (also {})", l.name, spans[j].1),
            );
        }
        let Some(prev) = i.checked_sub(1).map(|p| &levels[p]) else {
            continue;
        };
        let order = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a.total_cmp(&b));
        let pairs = [
            (
                "available_below_pct",
                order(
                    prev.conditions.available_below_pct,
                    l.conditions.available_below_pct,
                ),
            ),
            (
                "available_below_kib",
                order(
                    prev.conditions.available_below_kib.map(|k| k as f64),
                    l.conditions.available_below_kib.map(|k| k as f64),
                ),
            ),
        ];
        for (key, cmp) in pairs {
            match cmp {
                Some(std::cmp::Ordering::Greater) => doc.problem(
                    span,
                    &format!("{path}.{key}"),
                    format!(
                        "levels must be ordered most severe first: {:?} fires at more available memory than {:?}, so it must come before it",
                        prev.name, l.name
                    ),
                ),
                Some(std::cmp::Ordering::Equal) => doc.problem(
                    span,
                    &format!("{path}.{key}"),
                    format!("overlaps level {:?}: two levels with the same threshold can never both be reached", prev.name),
                ),
                _ => {}
            }
        }
        if l.action == Action::Kill && prev.action == Action::Kill && l.min_adj < prev.min_adj {
            doc.problem(
                span,
                &format!("{path}.min_adj"),
                format!(
                    "{} is below the more severe level {:?}'s {}: a milder level must not touch more processes",
                    l.min_adj, prev.name, prev.min_adj
                ),
            );
        }
    }
}

fn read_rule(doc: &mut Doc<'_>, t: &mut Table<'_, '_>, index: usize) -> Option<Rule> {
    let before = doc.problems.len();
    let (line, _) = doc.line_col(t.span.start);
    let name = t
        .string(doc, "name")
        .map_or_else(|| format!("rule[{}]", index + 1), |(n, _)| n);
    let mut comm = Vec::new();
    for (c, span) in t.strings(doc, "comm").unwrap_or_default() {
        if c.is_empty() || c.len() > COMM_MAX {
            doc.problem(
                &span,
                &t.key_path("comm"),
                format!("{c:?} can never match: the kernel keeps 1-15 bytes of a process name (use `cmdline` or `exe` for longer names)"),
            );
        } else {
            comm.push(c);
        }
    }
    let cmdline = t
        .string(doc, "cmdline")
        .and_then(|(c, span)| match regex_lite::Regex::new(&c) {
            Ok(re) => Some(re),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                doc.problem(
                    &span,
                    &t.key_path("cmdline"),
                    format!("bad regular expression {c:?}: {first}"),
                );
                None
            }
        });
    let exe = absolute(
        doc,
        t,
        "exe",
        "use an absolute path, as /proc/PID/exe shows it",
    );
    let mut uid = t
        .int(doc, "uid", 0..=u32::MAX as i64, "user id")
        .map(|u| u as u32);
    if let Some((user, span)) = t.string(doc, "user") {
        if uid.is_some() {
            doc.problem(&span, &t.key_path("user"), "give `user` or `uid`, not both");
        }
        match lookup_user(&user) {
            Some(u) => uid = Some(u),
            None => doc.problem(
                &span,
                &t.key_path("user"),
                format!("no user {user:?} in /etc/passwd (use `uid` for a number)"),
            ),
        }
    }
    let cgroup = absolute(
        doc,
        t,
        "cgroup",
        "use a path as in /proc/PID/cgroup, starting with '/'",
    );
    let matcher = Matcher {
        comm,
        cmdline,
        exe,
        uid,
        cgroup,
    };
    let mut effects = Vec::new();
    if t.boolean(doc, "protect") == Some(true) {
        effects.push(("protect", Effect::Protect));
    }
    if let Some(n) = t.int(doc, "prefer", 1..=2000, "added to oom_score_adj") {
        effects.push(("prefer", Effect::Shift(n as i16)));
    }
    if let Some(n) = t.int(doc, "avoid", 1..=2000, "subtracted from oom_score_adj") {
        effects.push(("avoid", Effect::Shift(-n as i16)));
    }
    if let Some(n) = t.int(
        doc,
        "set_adj",
        -999..=1000,
        "oom_score_adj; use `protect = true` to never kill",
    ) {
        effects.push(("set_adj", Effect::SetAdj(n as i16)));
    }
    if doc.problems.len() != before {
        return None;
    }
    if matcher == Matcher::default() {
        doc.problem(
            &t.span,
            &t.path,
            "matches nothing: give at least one of comm, cmdline, exe, uid, user, cgroup",
        );
        return None;
    }
    match effects.as_slice() {
        [(_, effect)] => Some(Rule {
            name,
            line,
            matcher,
            effect: *effect,
        }),
        [] => {
            doc.problem(
                &t.span,
                &t.path,
                "no effect: give one of protect = true, prefer = N, avoid = N, set_adj = N",
            );
            None
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
            doc.problem(
                &t.span,
                &t.path,
                format!("one effect per rule, found {}", names.join(" and ")),
            );
            None
        }
    }
}

/// A string key that must hold an absolute path; `hint` says what would be valid.
fn absolute(
    doc: &mut Doc<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
    hint: &str,
) -> Option<String> {
    let (v, span) = t.string(doc, key)?;
    if v.starts_with('/') {
        return Some(v);
    }
    doc.problem(&span, &t.key_path(key), format!("{v:?}: {hint}"));
    None
}

/// The uid of `user` from /etc/passwd.
fn lookup_user(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
