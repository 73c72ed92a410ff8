//! Rules that change a process's standing: `protect` (never a victim), `prefer`/`avoid`
//! (shift its effective adj), `set_adj` (give a class to programs that set none), `last`
//! (a victim only when no unmarked candidate is left, as systemd-oomd treats
//! `ManagedOOMPreference=avoid`). The first rule whose matchers all match decides; later
//! rules are not consulted.

use serde::Serialize;

use crate::procs::{Attrs, Needs, OomPreference, is_within};

/// All matchers of a rule must match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Exact comm (≤ 15 bytes, as the kernel stores it); any of these. Empty: any comm.
    pub comm: Vec<String>,
    pub cmdline: Option<regex_lite::Regex>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    /// A cgroup path: matches it and everything below.
    pub cgroup: Option<String>,
    /// systemd's ManagedOOMPreference= marking of the process's cgroup or an ancestor
    /// (`procs::markings`: the strongest one, `omit` only from root-owned cgroups).
    pub marking: Option<OomPreference>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.comm == o.comm
            && self.cmdline.as_ref().map(|r| r.as_str()) == o.cmdline.as_ref().map(|r| r.as_str())
            && self.exe == o.exe
            && self.uid == o.uid
            && self.cgroup == o.cgroup
            && self.marking == o.marking
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Protect,
    /// `prefer = N` is `Shift(N)`, `avoid = N` is `Shift(-N)`.
    Shift(i16),
    SetAdj(i16),
    /// Ranked after every candidate without it, whatever their adj (the level's floor still
    /// applies to its own adj): picked only when nothing else is left.
    Last,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's `name`, or `rule[N]` (1-based position in the file).
    pub name: String,
    /// Line in the policy file, for `lowmemd rank --policy` and `check --explain`.
    pub line: usize,
    pub matcher: Matcher,
    pub effect: Effect,
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// A process's standing after the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub effective_adj: i16,
    pub protected: bool,
    /// Index of the rule that matched.
    pub rule: Option<usize>,
    /// A `last` rule matched: ranked after every candidate without one.
    pub last: bool,
}

impl Rule {
    pub fn matches(&self, comm: &str, attrs: &Attrs) -> bool {
        let m = &self.matcher;
        (m.comm.is_empty() || m.comm.iter().any(|c| c == comm))
            && m.cmdline
                .as_ref()
                .is_none_or(|re| attrs.cmdline.as_deref().is_some_and(|c| re.is_match(c)))
            && m.exe
                .as_deref()
                .is_none_or(|e| attrs.exe.as_deref() == Some(e))
            && m.uid.is_none_or(|u| attrs.uid == Some(u))
            && m.cgroup
                .as_deref()
                .is_none_or(|cg| attrs.cgroups.iter().any(|p| is_within(p, cg)))
            && m.marking
                .is_none_or(|want| attrs.marking.as_ref().is_some_and(|k| k.preference == want))
    }
}

/// What the rules need read.
pub fn needs(rules: &[Rule]) -> Needs {
    let mut n = Needs::default();
    for r in rules {
        n.cmdline |= r.matcher.cmdline.is_some();
        n.exe |= r.matcher.exe.is_some();
        n.uid |= r.matcher.uid.is_some();
        n.cgroup |= r.matcher.cgroup.is_some();
        n.marking |= r.matcher.marking.is_some();
        n.comm |= !r.matcher.comm.is_empty();
    }
    n
}

/// Applies the first matching rule. An adj of -1000 stays unkillable whatever the rules say,
/// and shifted values stay inside -999..=1000, so no rule can make a process unkillable by
/// accident or killable against the kernel's own marking.
pub fn standing(rules: &[Rule], comm: &str, attrs: &Attrs, adj: i16) -> Standing {
    let mut s = Standing {
        effective_adj: adj,
        protected: false,
        rule: None,
        last: false,
    };
    if adj <= -1000 {
        return s;
    }
    if let Some((i, r)) = rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(comm, attrs))
    {
        s.rule = Some(i);
        match r.effect {
            Effect::Protect => s.protected = true,
            Effect::Shift(n) => s.effective_adj = (adj as i32 + n as i32).clamp(-999, 1000) as i16,
            Effect::SetAdj(n) => s.effective_adj = n,
            Effect::Last => s.last = true,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(matcher: Matcher, effect: Effect) -> Rule {
        Rule {
            name: "r".into(),
            line: 1,
            matcher,
            effect,
        }
    }

    #[test]
    fn first_match_wins_and_minus_1000_stays() {
        let rules = vec![
            rule(
                Matcher {
                    comm: vec!["sshd".into(), "Xorg".into()],
                    ..Default::default()
                },
                Effect::Protect,
            ),
            rule(Matcher::default(), Effect::Shift(300)),
        ];
        let none = Attrs::default();
        assert!(standing(&rules, "sshd", &none, 0).protected);
        assert!(standing(&rules, "Xorg", &none, 0).protected);
        let other = standing(&rules, "chrome", &none, 800);
        assert_eq!((other.effective_adj, other.rule), (1000, Some(1)));
        let unkillable = standing(&rules, "chrome", &none, -1000);
        assert_eq!((unkillable.effective_adj, unkillable.rule), (-1000, None));
    }

    #[test]
    fn all_matchers_must_match() {
        let r = rule(
            Matcher {
                cmdline: Some(regex_lite::Regex::new("--type=renderer").unwrap()),
                uid: Some(1000),
                cgroup: Some("/user.slice".into()),
                ..Default::default()
            },
            Effect::SetAdj(900),
        );
        let mut a = Attrs {
            cmdline: Some("chrome --type=renderer".into()),
            uid: Some(1000),
            cgroups: vec!["/user.slice/user-1000.slice".into()],
            ..Default::default()
        };
        assert!(r.matches("chrome", &a));
        a.uid = Some(0);
        assert!(!r.matches("chrome", &a));
        a.uid = Some(1000);
        a.cgroups = vec!["/user.slice2".into()];
        assert!(!r.matches("chrome", &a));
    }

    #[test]
    fn markings_match_exactly_and_absent_never_matches() {
        use crate::procs::Marking;
        let omit = rule(
            Matcher {
                marking: Some(OomPreference::Omit),
                ..Default::default()
            },
            Effect::Protect,
        );
        let avoid = rule(
            Matcher {
                marking: Some(OomPreference::Avoid),
                ..Default::default()
            },
            Effect::Last,
        );
        let rules = [omit, avoid];
        let marked = |p| Attrs {
            marking: Some(Marking {
                preference: p,
                cgroup: "/a".into(),
            }),
            ..Default::default()
        };
        assert!(standing(&rules, "x", &marked(OomPreference::Omit), 0).protected);
        let s = standing(&rules, "x", &marked(OomPreference::Avoid), 0);
        assert_eq!((s.protected, s.last, s.rule), (false, true, Some(1)));
        let none = standing(&rules, "x", &Attrs::default(), 0);
        assert_eq!((none.protected, none.last, none.rule), (false, false, None));
    }
}
