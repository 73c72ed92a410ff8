//! One `[[level]]` table: its name, action, conditions and limits, each checked for type
//! and range; then the order of all levels (most severe first, thresholds that do not
//! overlap).

use std::ops::Range;

use crate::policy::raw::{Doc, Table};
use crate::policy::{
    Action, Combine, Conditions, KillMode, Level, PageoutLimits, PsiCondition, PsiKind, RankBy,
};

use super::freeze::read_freeze;
use super::read_rank_by;

/// Reads and checks one level; `None` (with its problems recorded) when it is invalid.
pub(super) fn read_level(
    doc: &mut Doc<'_>,
    t: &mut Table<'_, '_>,
    window_ms: u64,
    rank_by: RankBy,
) -> Option<Level> {
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
            } else if n.starts_with("minfree_") {
                doc.problem(
                    &span,
                    &t.key_path("name"),
                    format!("{n:?}: names starting with minfree_ are the levels an lmkd client's LMK_TARGET makes; pick another"),
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
        Some((a, _)) if a == "freeze" => Action::Freeze,
        Some((a, span)) => {
            doc.problem(
                &span,
                &t.key_path("action"),
                format!("{a:?}: use \"kill\", \"pageout\", \"freeze\" or \"none\""),
            );
            Action::None
        }
        None => {
            doc.problem(
                &t.span,
                &t.path,
                "missing `action` (\"kill\", \"pageout\", \"freeze\" or \"none\")",
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
    // A duration shorter than one window says nothing more than one firing.
    let for_unit = format!(
        "milliseconds the stall must go on, window after window: from one {window_ms} ms PSI window to 10 minutes"
    );
    let sustained = |doc: &mut Doc<'_>, t: &mut Table<'_, '_>, key: &'static str, base| {
        let ms = t.int(doc, key, window_ms as i64..=600_000, &for_unit)?;
        if !t.has(base) {
            let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
            doc.problem(
                &span,
                &t.key_path(key),
                format!("needs `{base}` in the same level: it says how long that stall must go on"),
            );
        }
        Some(ms as u64)
    };
    let conditions = Conditions {
        available_below_pct: t.number(doc, "available_below_pct", 0.0..=100.0, pct),
        available_below_kib: t
            .int(doc, "available_below_kib", 1..=i64::MAX, "KiB")
            .map(|k| k as u64),
        exhausted_within_ms: t
            .int(
                doc,
                "exhausted_within_ms",
                100..=600_000,
                "milliseconds until the headroom is gone at the fall just measured",
            )
            .map(|m| m as u64),
        psi_while_swapping_out: t.boolean(doc, "psi_while_swapping_out").unwrap_or(true),
        psi_some: psi(doc, t, "psi_some_ms", PsiKind::Some),
        psi_full: psi(doc, t, "psi_full_ms", PsiKind::Full),
        psi_some_for_ms: sustained(doc, t, "psi_some_for_ms", "psi_some_ms"),
        psi_full_for_ms: sustained(doc, t, "psi_full_for_ms", "psi_full_ms"),
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
        free_and_file_below_kib: None,
    };
    let memory =
        conditions.available_below_pct.is_some() || conditions.available_below_kib.is_some();
    let psi = conditions.psi_some.is_some() || conditions.psi_full.is_some();
    for (key, has_what_it_qualifies, what) in [
        (
            "exhausted_within_ms",
            memory,
            "`available_below_pct` or `available_below_kib` in the same level: it says how little headroom must be left before the trend counts",
        ),
        (
            "psi_while_swapping_out",
            psi,
            "`psi_some_ms` or `psi_full_ms` in the same level: it says when their stall counts",
        ),
    ] {
        if t.has(key) && !has_what_it_qualifies {
            let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
            doc.problem(&span, &t.key_path(key), format!("needs {what}"));
        }
    }
    let defaults = PageoutLimits {
        // A frozen app's compaction is throttled as Android throttles a full one: its
        // delta gate (`freeze_min_change_mib`) already skips one that would find nothing.
        again_after_ms: if action == Action::Freeze {
            10_000
        } else {
            PageoutLimits::default().again_after_ms
        },
        ..Default::default()
    };
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
    let gentle = "only for action = \"pageout\" or \"freeze\" levels";
    for (key, allowed, why) in [
        ("pageout_max_mib", action.is_gentle(), gentle),
        ("pageout_again_after_ms", action.is_gentle(), gentle),
        (
            "pageout_regrow_pct",
            action == Action::Pageout,
            "only for action = \"pageout\" levels (a freeze level's `freeze_min_change_mib` says when its page-out is worth repeating)",
        ),
    ] {
        if !allowed && t.has(key) {
            doc.problem(&t.span, &t.key_path(key), why);
        }
    }
    let freeze = read_freeze(doc, t, action);
    let kill = match t.string(doc, "kill") {
        None => KillMode::Process,
        Some((k, _)) if k == "process" => KillMode::Process,
        Some((k, _)) if k == "cgroup" => KillMode::Cgroup,
        Some((k, span)) => {
            doc.problem(
                &span,
                &t.key_path("kill"),
                format!("{k:?}: use \"process\" or \"cgroup\""),
            );
            KillMode::Process
        }
    };
    if action != Action::Kill && t.has("kill") {
        doc.problem(
            &t.span,
            &t.key_path("kill"),
            "only for action = \"kill\" levels",
        );
    }
    let rank_by = read_rank_by(doc, t, rank_by);
    if action == Action::None {
        for key in ["rank_by", "owner_depth"] {
            if t.has(key) {
                let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
                doc.problem(
                    &span,
                    &t.key_path(key),
                    "only for action = \"kill\", \"pageout\" or \"freeze\" levels: a level that only logs picks no victim",
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
        freeze,
        kill,
        rank_by,
        from_client: None,
    })
}

/// Levels come most severe first: a later level fires at more available memory, a later
/// kill level touches no lower adj than an earlier one (page-out levels may reach lower:
/// paging out is gentler than killing), and names are unique.
pub(super) fn check_level_order(
    doc: &mut Doc<'_>,
    levels: &[Level],
    spans: &[(Range<usize>, String)],
) {
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
        // A watermark qualified by a trend fires at a different point than a plain one (only
        // while memory is falling fast), so the two do not compete for the same memory.
        let plain = |l: &Level| l.conditions.exhausted_within_ms.is_none();
        let comparable = plain(prev) && plain(l);
        let order = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .filter(|_| comparable)
                .map(|(a, b)| a.total_cmp(&b))
        };
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
