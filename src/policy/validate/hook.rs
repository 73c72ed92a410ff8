//! One `[[hook]]` table: `on`, `exec`, `timeout_ms`, `max_per_minute`, `user`, `name`.

use crate::policy::hooks::{Hook, HookOn, HookUser};
use crate::policy::raw::{Doc, Table};

/// Reads and checks one hook (the `index`th, 0-based).
pub(super) fn read_hook(doc: &mut Doc<'_>, t: &mut Table<'_, '_>, index: usize) -> Option<Hook> {
    let before = doc.problems.len();
    let (line, _) = doc.line_col(t.span.start);
    let name = t
        .string(doc, "name")
        .map_or_else(|| format!("hook[{}]", index + 1), |(n, _)| n);
    let on = match t.string(doc, "on") {
        Some((v, _)) if v == "kill" => Some(HookOn::Kill),
        Some((v, _)) if v == "pageout" => Some(HookOn::Pageout),
        Some((v, _)) if v == "level" => Some(HookOn::Level),
        Some((v, _)) if v == "freeze" => Some(HookOn::Freeze),
        Some((v, span)) => {
            doc.problem(
                &span,
                &t.key_path("on"),
                format!("{v:?} is none of \"kill\", \"pageout\", \"freeze\", \"level\""),
            );
            None
        }
        None => {
            doc.problem(
                &t.span,
                &t.key_path("on"),
                "missing: say when the hook runs: on = \"kill\", \"pageout\", \"freeze\" or \"level\"",
            );
            None
        }
    };
    let given = t.has("exec");
    let exec = match t.strings(doc, "exec") {
        Some(args) => {
            let (first, span) = &args[0];
            if !first.starts_with('/') {
                doc.problem(
                    span,
                    &t.key_path("exec"),
                    format!("{first:?}: the program must be an absolute path (no shell, no PATH search), e.g. [\"/usr/local/bin/notify\", \"arg\"]"),
                );
            }
            if let Some((_, span)) = args.iter().find(|(a, _)| a.contains('\0')) {
                doc.problem(span, &t.key_path("exec"), "an argument holds a NUL byte");
            }
            args.into_iter().map(|(a, _)| a).collect()
        }
        // Given but unusable: `strings` said why.
        None if given => Vec::new(),
        None => {
            doc.problem(
                &t.span,
                &t.key_path("exec"),
                "missing: the program and its arguments, e.g. exec = [\"/usr/local/bin/notify\"]",
            );
            Vec::new()
        }
    };
    let timeout_ms = t
        .int(doc, "timeout_ms", 10..=60_000, "milliseconds")
        .unwrap_or(5000) as u64;
    let max_per_minute = t
        .int(doc, "max_per_minute", 1..=600, "starts per minute")
        .unwrap_or(10) as u32;
    let user = t
        .string(doc, "user")
        .and_then(|(u, span)| match passwd(&u) {
            Some((uid, gid)) => Some(HookUser { name: u, uid, gid }),
            None => {
                doc.problem(
                    &span,
                    &t.key_path("user"),
                    format!("no user {u:?} in /etc/passwd"),
                );
                None
            }
        });
    if doc.problems.len() != before {
        return None;
    }
    Some(Hook {
        name,
        line,
        on: on?,
        exec,
        timeout_ms,
        max_per_minute,
        user,
    })
}

/// The uid and gid of `user` from /etc/passwd.
pub fn passwd(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::hooks::HookOn;
    use crate::policy::validate::compile;

    const LEVEL: &str =
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n";

    #[test]
    fn a_hook_with_defaults() {
        let p = compile(
            Path::new("p.toml"),
            &format!("{LEVEL}\n[[hook]]\non = \"kill\"\nexec = [\"/bin/true\", \"x\"]\n"),
        )
        .unwrap();
        let h = &p.hooks[0];
        assert_eq!(
            (h.on, h.exec.as_slice(), h.timeout_ms, h.max_per_minute),
            (
                HookOn::Kill,
                ["/bin/true".to_string(), "x".into()].as_slice(),
                5000,
                10
            )
        );
        assert_eq!((h.name.as_str(), h.line, &h.user), ("hook[1]", 7, &None));
        let root = compile(
            Path::new("p.toml"),
            &format!("{LEVEL}\n[[hook]]\non = \"level\"\nexec = \"/bin/true\"\nuser = \"root\"\n"),
        )
        .unwrap();
        assert_eq!(root.hooks[0].user.as_ref().map(|u| u.uid), Some(0));
    }

    #[test]
    fn every_hook_problem_names_its_key() {
        let err = compile(
            Path::new("p.toml"),
            &format!(
                "{LEVEL}\n[[hook]]\non = \"kil\"\nexec = [\"notify-send\"]\ntimeout_ms = 0\nuser = \"no-such-user-here\"\n\n[[hook]]\nexec = []\n"
            ),
        )
        .unwrap_err();
        let p: Vec<String> = err.iter().map(|p| p.to_string()).collect();
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(
            p[0].starts_with("p.toml:8:6: hook[1].on: \"kil\" is none of"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with(
                "p.toml:9:9: hook[1].exec: \"notify-send\": the program must be an absolute path"
            ),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with("p.toml:10:14: hook[1].timeout_ms: 0 is out of range"),
            "{p:#?}"
        );
        assert!(
            p[3].starts_with("p.toml:11:8: hook[1].user: no user"),
            "{p:#?}"
        );
        assert!(p[4].contains("hook[2].on: missing"), "{p:#?}");
        assert!(
            p[5].contains("p.toml:14:8: hook[2].exec: an empty list"),
            "{p:#?}"
        );
    }
}
