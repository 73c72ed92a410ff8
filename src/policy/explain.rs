//! The policy in plain words, for `lowmemd check --explain` and the start-up line.

use std::fmt::Write;

use super::rules::Effect;
use super::{Action, Combine, KillMode, Level, Policy, RankBy};

fn action_words(l: &Level) -> String {
    match l.action {
        Action::Kill if l.max_victims > 1 => format!(
            "kill up to {} processes with adj ≥ {}",
            l.max_victims, l.min_adj
        ),
        Action::Kill => format!("kill adj ≥ {}", l.min_adj),
        Action::Pageout => format!(
            "page out up to {} processes with adj ≥ {} (at most {} MiB per event)",
            l.max_victims,
            l.min_adj,
            l.pageout.max_kib_per_event / 1024
        ),
        Action::Freeze if l.max_victims > 1 => format!(
            "freeze the apps of up to {} processes with adj ≥ {}",
            l.max_victims, l.min_adj
        ),
        Action::Freeze => format!("freeze the app of a process with adj ≥ {}", l.min_adj),
        Action::None => "log only".to_string(),
    }
}

/// What a freeze level does besides freezing, in words.
fn freeze_words(l: &Level) -> String {
    let f = &l.freeze;
    let compact = if f.pageout {
        format!(
            "then page its memory out unless it holds under {} of anonymous memory or changed by at most {} since its last page-out (at most every {:.0} s, file pages only below {:.0} % swap free)",
            mib(f.min_anon_kib as f64),
            mib(f.min_change_kib as f64),
            l.pageout.again_after_ms as f64 / 1000.0,
            f.file_only_below_swap_free_pct
        )
    } else {
        "without paging it out".to_string()
    };
    format!(
        "    only an app cgroup of its own that holds no protected or lower-adj process; {compact}; thawed {:.0} s after no freeze level holds, or at once when its adj drops below {}",
        f.thaw_after_ms as f64 / 1000.0,
        l.min_adj
    )
}

fn mib(kib: f64) -> String {
    format!("{:.0} MiB", kib / 1024.0)
}

/// The conditions of a level in words; `total_kib` turns percentages into sizes; without
/// windows (the start-up line, where the monitor reports the windows in force) PSI and
/// thrashing are given as shares only.
fn conditions_words(
    l: &Level,
    total_kib: Option<u64>,
    windows_ms: Option<(u64, u64)>,
) -> Vec<String> {
    let over = |ms: Option<u64>| {
        ms.map(|w| format!(" over {:.1} s", w as f64 / 1000.0))
            .unwrap_or_default()
    };
    let (psi_window_ms, thrash_window_ms) = (windows_ms.map(|w| w.0), windows_ms.map(|w| w.1));
    let c = &l.conditions;
    let mut out = Vec::new();
    if let Some(p) = c.available_below_pct {
        out.push(match total_kib {
            Some(t) => format!(
                "available < {p} % of {} = {}",
                mib(t as f64),
                mib(t as f64 * p / 100.0)
            ),
            None => format!("available < {p} %"),
        });
    }
    if let Some(k) = c.available_below_kib {
        out.push(format!("available < {}", mib(k as f64)));
    }
    if let Some(ms) = c.exhausted_within_ms
        && let Some(memory) = out.last_mut()
    {
        // A trend qualifies the watermark: both must hold for it to count.
        *memory = format!(
            "{memory} and falling so fast it is gone within {:.1} s (the fall of the last {:.0} s)",
            ms as f64 / 1000.0,
            crate::sample::TREND_WINDOW_MS as f64 / 1000.0
        );
    }
    for (psi, for_ms) in [
        (c.psi_some, c.psi_some_for_ms),
        (c.psi_full, c.psi_full_for_ms),
    ] {
        let Some(psi) = psi else { continue };
        let mut sustained = for_ms
            .map(|ms| format!(" kept up for {:.0} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        if !c.psi_while_swapping_out {
            sustained.push_str(" (not while swap is absorbing a growing job)");
        }
        out.push(format!(
            "PSI {} > {:.0} %{}{sustained}",
            psi.kind.as_str(),
            psi.stall_pct,
            over(psi_window_ms)
        ));
    }
    if let Some(p) = c.swap_free_below_pct {
        out.push(format!("free swap < {p} % (never without swap)"));
    }
    if let Some(p) = c.thrashing_above_pct {
        out.push(format!(
            "file refaults > {p} % of the file cache{}",
            over(thrash_window_ms)
        ));
    }
    if let Some(ms) = c.pressure_after_kill_ms {
        out.push(format!("PSI still firing within {ms} ms after a kill"));
    }
    if let Some(kib) = c.free_and_file_below_kib {
        let from = l
            .from_client
            .map(|pid| format!(" (minfree from lmkd client pid {pid})"))
            .unwrap_or_default();
        out.push(format!(
            "free and file cache both < {}{from}",
            mib(kib as f64)
        ));
    }
    out
}

/// How victims are ordered inside one adj band, in words.
fn rank_words(by: RankBy) -> String {
    let grouped = |what: &str| {
        format!(
            "highest adj first; in one adj, grouped by {what}: the owner whose candidates hold the most (RSS + swap) first, then its largest process"
        )
    };
    match by {
        RankBy::Process => {
            "highest adj first; in one adj, the largest process (RSS + swap) first".into()
        }
        RankBy::Cgroup { depth: None } => grouped(
            "app cgroup (app-*.scope, *.service, a session's scope, a Kubernetes pod, a Docker container; else the leaf cgroup)",
        ),
        RankBy::Cgroup { depth: Some(d) } => grouped(&format!(
            "the cgroup {d} level{} below the scope",
            if d == 1 { "" } else { "s" }
        )),
        RankBy::Uid => grouped("user (uid)"),
    }
}

/// "critical: kill adj ≥ 0 when available<5% or psi_full>50%" — one short line per level.
pub fn level_short(l: &Level) -> String {
    let words = conditions_words(l, None, None);
    let join = if l.combine == Combine::All {
        " and "
    } else {
        " or "
    };
    format!("{}: {} when {}", l.name, action_words(l), words.join(join))
}

/// The whole policy in plain words.
pub fn explain(p: &Policy, total_kib: Option<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scope: {}",
        p.scope
            .as_deref()
            .map_or("the whole system".to_string(), |c| format!("cgroup {c}"))
    );
    let _ = writeln!(
        s,
        "{}",
        if p.count_swap {
            "available memory: RAM plus what swap can still take (disk swap's free space; zram's free slots times 1 - 1/ratio, the ratio measured); RAM alone without swap"
        } else {
            "available memory: RAM alone, swap not counted (count_swap = false)"
        }
    );
    let _ = writeln!(s, "victims: {}", rank_words(p.rank_by));
    let _ = writeln!(
        s,
        "levels, most severe first (the first that fires decides):"
    );
    for l in &p.levels {
        let ram_only = l.action.is_gentle()
            && p.count_swap
            && l.conditions
                .available_below_pct
                .or(l.conditions.available_below_kib.map(|k| k as f64))
                .is_some();
        let join = if l.combine == Combine::All {
            " and "
        } else {
            " or "
        };
        let words = conditions_words(l, total_kib, Some((p.psi_window_ms, p.thrashing_window_ms)));
        let _ = writeln!(
            s,
            "  {}: {} when {}",
            l.name,
            action_words(l),
            words.join(join)
        );
        if ram_only {
            let _ = writeln!(
                s,
                "    available RAM alone: page-out chooses what goes to swap, so it acts while RAM runs short"
            );
        }
        if l.action == Action::Freeze {
            let _ = writeln!(s, "{}", freeze_words(l));
        }
        if l.action != Action::None && l.rank_by != p.rank_by {
            let _ = writeln!(s, "    victims: {}", rank_words(l.rank_by));
        }
        if l.action == Action::Kill && l.kill == KillMode::Cgroup {
            let _ = writeln!(
                s,
                "    with each victim, its whole leaf cgroup when that is an app below the scope holding no protected process"
            );
        }
        if l.action == Action::Kill {
            let _ = writeln!(
                s,
                "    wait up to {} ms for each exit{}",
                l.wait_ms,
                if l.cooldown_ms > 0 {
                    format!(", then {} ms of cooldown", l.cooldown_ms)
                } else {
                    String::new()
                }
            );
        }
    }
    if p.rules.is_empty() {
        let _ = writeln!(s, "rules: none (oom_score_adj decides alone)");
    } else {
        let _ = writeln!(s, "rules (the first that matches decides):");
        for r in &p.rules {
            let m = &r.matcher;
            let mut what = Vec::new();
            let any_of = |key: &str, all: &[String]| match all {
                [] => None,
                [one] => Some(format!("{key} {one}")),
                many => Some(format!("{key} one of {}", many.join(", "))),
            };
            let quoted: Vec<String> = m.comm.iter().map(|c| format!("{c:?}")).collect();
            what.extend(any_of("comm", &quoted));
            if let Some(c) = &m.cmdline {
                what.push(format!("cmdline ~ /{}/", c.as_str()));
            }
            what.extend(any_of("exe", &m.exe));
            if let Some(u) = m.uid {
                what.push(format!("uid {u}"));
            }
            what.extend(any_of("in cgroup", &m.cgroup));
            if let Some(p) = m.marking {
                what.push(format!("cgroup marked ManagedOOMPreference={}", p.as_str()));
            }
            let mut effect = match r.effect {
                Effect::Protect => "never kill".to_string(),
                Effect::Shift(n) if n > 0 => format!("adj + {n} (prefer)"),
                Effect::Shift(n) => format!("adj − {} (avoid)", -n),
                Effect::SetAdj(n) => format!("adj = {n}"),
                Effect::Last => "only after every candidate without it (last)".to_string(),
                Effect::OwnerLast => {
                    "after the other candidates of the same user, nowhere else (owner_last)"
                        .to_string()
                }
            };
            if m.marking.is_some() && r.effect.lowers() {
                effect.push_str("; where a user, not root, set the marking: only after that user's other candidates");
            }
            let _ = writeln!(
                s,
                "  {} (line {}): {} → {}",
                r.name,
                r.line,
                what.join(" and "),
                effect
            );
        }
    }
    if !p.hooks.is_empty() {
        let _ = writeln!(s, "hooks (run after the action, on a thread of their own):");
        for h in &p.hooks {
            let _ = writeln!(
                s,
                "  {} (line {}): on {}: {} as {}, killed after {} ms, at most {} per minute",
                h.name,
                h.line,
                h.on.as_str(),
                h.exec.join(" "),
                h.user
                    .as_ref()
                    .map_or("nobody (lowmemd's own user when not root)", |u| u
                        .name
                        .as_str()),
                h.timeout_ms,
                h.max_per_minute
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::validate::compile;

    #[test]
    fn explain_says_how_each_level_ranks() {
        let p = compile(
            Path::new("p.toml"),
            "rank_by = \"cgroup\"\n[[level]]\nname = \"critical\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\nrank_by = \"uid\"\n",
        )
        .unwrap();
        let text = super::explain(&p, None);
        assert!(
            text.contains(
                "victims: highest adj first; in one adj, grouped by app cgroup (app-*.scope"
            ),
            "{text}"
        );
        let low = text.split("  low:").nth(1).unwrap();
        assert!(
            low.contains("    victims: highest adj first; in one adj, grouped by user (uid)"),
            "{text}"
        );
        let critical = text.split("  critical:").nth(1).unwrap();
        assert!(
            critical
                .split("  low:")
                .next()
                .unwrap()
                .matches("victims")
                .count()
                == 0,
            "{text}"
        );
    }
}
