//! Rules that change a process's standing: `protect` (never a victim), `prefer`/`avoid`
//! (shift its effective adj), `set_adj` (give a class to programs that set none), `last`
//! (a victim only when no unmarked candidate is left, as systemd-oomd treats
//! `ManagedOOMPreference=avoid`), `owner_last` (after the other candidates of the same user,
//! and nowhere else). The first rule whose matchers all match decides; later rules are not
//! consulted — except past a marking its owner, not root, set (see [`standing`]).
//!
//! Trust: a process chooses its own comm and command line, and any user can run any program
//! they can read (and LD_PRELOAD into it), so only the uid, a cgroup root placed it in, and
//! markings root set say who started it. `validate::rule` warns where a rule lowers the kill
//! order on the other matchers alone; a marking a user set is confined here.

use serde::Serialize;

use crate::procs::{Attrs, Needs, OomPreference, is_within};

/// What /proc/PID/exe shows after the program's file was removed or replaced (a package
/// upgrade): the running program is still the one that was at this path.
const DELETED: &str = " (deleted)";

/// All matchers of a rule must match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Exact comm (≤ 15 bytes, as the kernel stores it); any of these. Empty: any comm.
    pub comm: Vec<String>,
    pub cmdline: Option<regex_lite::Regex>,
    /// /proc/PID/exe, any of these (also with the kernel's " (deleted)" after it). Empty:
    /// any program.
    pub exe: Vec<String>,
    pub uid: Option<u32>,
    /// Cgroup paths: matches any of them and everything below. Empty: any cgroup.
    pub cgroup: Vec<String>,
    /// systemd's ManagedOOMPreference= marking of the process's cgroup or an ancestor
    /// (`procs::markings`: the strongest one root set, else the strongest one a user set).
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

impl Matcher {
    /// Whether who matches is decided by something the process's owner cannot choose: its
    /// uid, a cgroup (a process cannot move into a cgroup it does not own), or a marking
    /// (confined to its owner's processes when a user set it). Comm, command line and the
    /// program run are anyone's to take.
    pub fn pins_owner(&self) -> bool {
        self.uid.is_some() || !self.cgroup.is_empty() || self.marking.is_some()
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
    /// Ranked after the other candidates of the same uid, nowhere else (see
    /// `pipeline::rank::settle`): what a user could do alone, so safe on a name.
    OwnerLast,
}

impl Effect {
    /// Whether this effect can make a process less killable than its own adj says.
    pub fn lowers(self) -> bool {
        match self {
            Effect::Protect | Effect::Last => true,
            Effect::Shift(n) => n < 0,
            Effect::SetAdj(n) => n < 1000,
            Effect::OwnerLast => false,
        }
    }
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
    /// Ranked after the other candidates of this uid, and nowhere else: an `owner_last`
    /// rule, or a marking this (non-root) user set on their own cgroup.
    pub owner_last: Option<u32>,
}

impl Rule {
    pub fn matches(&self, comm: &str, attrs: &Attrs) -> bool {
        let m = &self.matcher;
        (m.comm.is_empty() || m.comm.iter().any(|c| c == comm))
            && m.cmdline
                .as_ref()
                .is_none_or(|re| attrs.cmdline.as_deref().is_some_and(|c| re.is_match(c)))
            && (m.exe.is_empty()
                || attrs.exe.as_deref().is_some_and(|e| {
                    let running = e.strip_suffix(DELETED).unwrap_or(e);
                    m.exe.iter().any(|want| want == running)
                }))
            && m.uid.is_none_or(|u| attrs.uid == Some(u))
            && (m.cgroup.is_empty()
                || m.cgroup
                    .iter()
                    .any(|cg| attrs.cgroups.iter().any(|p| is_within(p, cg))))
            && m.marking
                .is_none_or(|want| attrs.marking.as_ref().is_some_and(|k| k.preference == want))
    }

    /// The uid whose processes alone this match may reorder, when it rests on a marking
    /// that user set (not root): systemd-oomd honours such a marking only inside that
    /// user's own subtree.
    fn confined_to(&self, attrs: &Attrs) -> Option<u32> {
        self.matcher.marking?;
        attrs.marking.as_ref().map(|m| m.owner).filter(|&o| o != 0)
    }
}

/// What the rules need read.
pub fn needs(rules: &[Rule]) -> Needs {
    let mut n = Needs::default();
    for r in rules {
        n.cmdline |= r.matcher.cmdline.is_some();
        n.exe |= !r.matcher.exe.is_empty();
        // Markings and `owner_last` order a user's own processes: whose they are counts.
        n.uid |=
            r.matcher.uid.is_some() || r.matcher.marking.is_some() || r.effect == Effect::OwnerLast;
        n.cgroup |= !r.matcher.cgroup.is_empty();
        n.marking |= r.matcher.marking.is_some();
        n.comm |= !r.matcher.comm.is_empty();
    }
    n
}

/// Applies the first matching rule. An adj of -1000 stays unkillable whatever the rules say,
/// and shifted values stay inside -999..=1000, so no rule can make a process unkillable by
/// accident or killable against the kernel's own marking.
///
/// A rule matched through a marking a user set on their own cgroup cannot lower the
/// process's standing against anyone else's: its protect, last, avoid or lower set_adj
/// becomes "after that user's other candidates" (`owner_last`), and the rules after it
/// still decide the adj. An effect that raises (prefer) applies as written.
pub fn standing(rules: &[Rule], comm: &str, attrs: &Attrs, adj: i16) -> Standing {
    let mut s = Standing {
        effective_adj: adj,
        protected: false,
        rule: None,
        last: false,
        owner_last: None,
    };
    if adj <= -1000 {
        return s;
    }
    for (i, r) in rules.iter().enumerate() {
        if !r.matches(comm, attrs) {
            continue;
        }
        let lowers = match r.effect {
            Effect::SetAdj(n) => n < adj,
            e => e.lowers(),
        };
        if let Some(owner) = r.confined_to(attrs).filter(|_| lowers) {
            if s.owner_last.is_none() {
                s.owner_last = Some(owner);
                s.rule = Some(i);
            }
            continue;
        }
        s.rule = Some(i);
        match r.effect {
            Effect::Protect => s.protected = true,
            Effect::Shift(n) => s.effective_adj = (adj as i32 + n as i32).clamp(-999, 1000) as i16,
            Effect::SetAdj(n) => s.effective_adj = n,
            Effect::Last => s.last = true,
            Effect::OwnerLast => s.owner_last = s.owner_last.or(attrs.uid),
        }
        break;
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
                cgroup: vec!["/user.slice".into()],
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
                owner: 0,
            }),
            ..Default::default()
        };
        assert!(standing(&rules, "x", &marked(OomPreference::Omit), 0).protected);
        let s = standing(&rules, "x", &marked(OomPreference::Avoid), 0);
        assert_eq!((s.protected, s.last, s.rule), (false, true, Some(1)));
        let none = standing(&rules, "x", &Attrs::default(), 0);
        assert_eq!((none.protected, none.last, none.rule), (false, false, None));
    }

    /// A marking a user set on their own cgroup: protect and last become "after this
    /// user's other processes", and the rules after it still decide the adj; a raise
    /// applies as written. The program's path matches also after the file was replaced.
    #[test]
    fn a_users_marking_is_confined_to_their_own_processes() {
        use crate::procs::Marking;
        let rules = [
            rule(
                Matcher {
                    marking: Some(OomPreference::Omit),
                    ..Default::default()
                },
                Effect::Protect,
            ),
            rule(
                Matcher {
                    marking: Some(OomPreference::Avoid),
                    ..Default::default()
                },
                Effect::Shift(100),
            ),
            rule(
                Matcher {
                    exe: vec!["/usr/bin/tab".into()],
                    ..Default::default()
                },
                Effect::Shift(300),
            ),
        ];
        let marked = |p, owner| Attrs {
            uid: Some(1000),
            exe: Some("/usr/bin/tab (deleted)".into()),
            marking: Some(Marking {
                preference: p,
                cgroup: "/u".into(),
                owner,
            }),
            ..Default::default()
        };
        let s = standing(&rules, "x", &marked(OomPreference::Omit, 1000), 200);
        assert_eq!(
            (s.protected, s.owner_last, s.effective_adj, s.rule),
            (false, Some(1000), 500, Some(2))
        );
        let s = standing(&rules, "x", &marked(OomPreference::Omit, 0), 200);
        assert_eq!((s.protected, s.owner_last), (true, None));
        let s = standing(&rules, "x", &marked(OomPreference::Avoid, 1000), 200);
        assert_eq!(
            (s.owner_last, s.effective_adj, s.rule),
            (None, 300, Some(1))
        );
    }
}
