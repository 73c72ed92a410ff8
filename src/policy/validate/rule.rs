//! One `[[rule]]` table: its matchers (comm, cmdline regex, exe, uid/user, cgroup,
//! systemd_oom_preference) and its one effect (protect, prefer, avoid, set_adj, last or
//! owner_last).

use crate::policy::raw::{Doc, Table};
use crate::policy::rules::{Effect, Matcher, Rule};
use crate::procs::OomPreference;

/// The kernel stores at most 15 bytes of comm.
const COMM_MAX: usize = 15;

/// Reads and checks one rule (the `index`th, 1-based in its name when it has none).
pub(super) fn read_rule(doc: &mut Doc<'_>, t: &mut Table<'_, '_>, index: usize) -> Option<Rule> {
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
    let marking = match t.string(doc, "systemd_oom_preference") {
        None => None,
        Some((v, _)) if v == "avoid" => Some(OomPreference::Avoid),
        Some((v, _)) if v == "omit" => Some(OomPreference::Omit),
        Some((v, span)) => {
            doc.problem(
                &span,
                &t.key_path("systemd_oom_preference"),
                format!("{v:?} is neither \"avoid\" nor \"omit\" (systemd's ManagedOOMPreference=; \"none\" is every unmarked process: leave the key out)"),
            );
            None
        }
    };
    let matcher = Matcher {
        comm,
        cmdline,
        exe,
        uid,
        cgroup,
        marking,
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
    if t.boolean(doc, "last") == Some(true) {
        effects.push(("last", Effect::Last));
    }
    if t.boolean(doc, "owner_last") == Some(true) {
        effects.push(("owner_last", Effect::OwnerLast));
    }
    if doc.problems.len() != before {
        return None;
    }
    if matcher == Matcher::default() {
        doc.problem(
            &t.span,
            &t.path,
            "matches nothing: give at least one of comm, cmdline, exe, uid, user, cgroup, systemd_oom_preference",
        );
        return None;
    }
    match effects.as_slice() {
        [(_, effect)] => {
            let rule = Rule {
                name,
                line,
                matcher,
                effect: *effect,
            };
            Some(rule)
        }
        [] => {
            doc.problem(
                &t.span,
                &t.path,
                "no effect: give one of protect = true, prefer = N, avoid = N, set_adj = N, last = true, owner_last = true",
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

/// A key holding an absolute path or an array of them; `hint` says what would be valid.
fn absolute(
    doc: &mut Doc<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
    hint: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for (v, span) in t.strings(doc, key).unwrap_or_default() {
        if v.starts_with('/') {
            out.push(v);
        } else {
            doc.problem(&span, &t.key_path(key), format!("{v:?}: {hint}"));
        }
    }
    out
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
    use std::path::Path;

    #[test]
    fn exe_and_cgroup_take_lists_of_absolute_paths() {
        let text = "[[level]]\nname = \"l\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n\n\
                    [[rule]]\nexe = [\"/a\", \"b\"]\ncgroup = [\"/c\", \"/d\"]\nprotect = true\n";
        let e = super::super::compile(Path::new("p.toml"), text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            "p.toml:8:14: rule[1].exe: \"b\": use an absolute path, as /proc/PID/exe shows it"
        );
    }
}
