//! One `[[rule]]` table: its matchers (comm, cmdline regex, exe, uid/user, cgroup,
//! systemd_oom_preference) and its one effect (protect, prefer, avoid, set_adj, last or
//! owner_last); and the warnings where a rule lowers the kill order on what anyone can
//! choose (see `policy::rules` on trust).

use std::path::Path;

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
            trust_warnings(doc, t, &rule);
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

/// Warns where `rule` can make a process less killable than its own adj on what the
/// process or any user chooses: its name or command line (prctl, argv), or the program it
/// runs (anyone may run a program they can read, and LD_PRELOAD into it), without a
/// matcher that pins whose process it is (uid, cgroup, marking); and where a program it
/// names lives where others can write.
fn trust_warnings(doc: &mut Doc<'_>, t: &Table<'_, '_>, rule: &Rule) {
    let (m, effect) = (&rule.matcher, rule.effect);
    if !effect.lowers() {
        return;
    }
    let what = format!(
        "{} (rule {:?})",
        match effect {
            Effect::Protect => "protect",
            Effect::Last => "last",
            Effect::SetAdj(_) => "set_adj",
            _ => "avoid",
        },
        rule.name
    );
    let at = |key: &str| t.key_span(key).unwrap_or(t.span.clone());
    if !m.pins_owner() {
        let fix = "add `uid`/`user` (who started it) or `cgroup` (where root put it), or use `owner_last = true`";
        if !m.comm.is_empty() {
            doc.warning(
                &at("comm"),
                &t.key_path("comm"),
                format!("{what} by name: any process can take this name (prctl PR_SET_NAME) and so become less killable; {fix}"),
            );
        } else if m.cmdline.is_some() {
            doc.warning(
                &at("cmdline"),
                &t.key_path("cmdline"),
                format!("{what} by command line: any process can take this name (its own argv) and so become less killable; {fix}"),
            );
        } else if !m.exe.is_empty() {
            doc.warning(
                &at("exe"),
                &t.key_path("exe"),
                format!("{what} by program: any user can run it (and LD_PRELOAD their own code into it) and so become less killable; {fix}"),
            );
        }
    }
    for exe in &m.exe {
        if let Some(why) = writable_by_others(Path::new(exe)) {
            doc.warning(
                &at("exe"),
                &t.key_path("exe"),
                format!("{exe}: {why}: whoever can write there can run their own program under this path and so become less killable"),
            );
        }
    }
}

/// Why a program at `path` could be put there by someone other than root: the file, or a
/// directory on the way to it, owned by another user or writable by group or others
/// (sticky or not: /tmp lets anyone create the name). Parts that do not exist are what
/// the nearest existing directory allows.
fn writable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;

    for p in path.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if meta.uid() != 0 {
            return Some(format!("{} is owned by uid {}", p.display(), meta.uid()));
        }
        if meta.mode() & 0o022 != 0 && !meta.file_type().is_symlink() {
            return Some(format!(
                "{} is writable by {} (mode {:o})",
                p.display(),
                if meta.mode() & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                meta.mode() & 0o7777
            ));
        }
    }
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
    use std::path::Path;

    fn warnings(rules: &str) -> Vec<String> {
        let text = format!(
            "[[level]]\nname = \"l\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n\n{rules}"
        );
        super::super::compile(Path::new("p.toml"), &text)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.as_warning())
            .collect()
    }

    #[test]
    fn a_program_alone_or_one_others_can_write_draws_a_warning() {
        let w = warnings("[[rule]]\nexe = \"/usr/bin/env\"\nprotect = true\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("p.toml:8:1: warning: rule[1].exe: protect (rule \"rule[1]\") by program: any user can run it"),
            "{w:?}"
        );
        let w = warnings(
            "[[rule]]\nexe = [\"/usr/bin/env\", \"/tmp/lowmemd-x/app\"]\nuid = 0\navoid = 100\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("/tmp/lowmemd-x/app: /tmp is writable by everyone (mode 1777)"),
            "{w:?}"
        );
        // Raising, or ordering a user's own, is anyone's right: no warning.
        assert!(warnings("[[rule]]\ncomm = \"x\"\nprefer = 10\n").is_empty());
        assert!(warnings("[[rule]]\ncomm = \"x\"\nowner_last = true\n").is_empty());
        assert!(warnings("[[rule]]\ncomm = \"x\"\nset_adj = 1000\n").is_empty());
        assert_eq!(warnings("[[rule]]\ncomm = \"x\"\nset_adj = 999\n").len(), 1);
        assert!(
            warnings("[[rule]]\ncomm = \"x\"\ncgroup = \"/system.slice\"\nlast = true\n")
                .is_empty()
        );
    }

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
