//! A freeze level's own keys: its hysteresis and its compaction gates, each checked for type
//! and range, and refused on levels that do not freeze.

use crate::policy::raw::{Doc, Table};
use crate::policy::{Action, FreezeLimits};

const KEYS: [&str; 6] = [
    "freeze_lone_process",
    "thaw_after_ms",
    "freeze_pageout",
    "freeze_min_anon_mib",
    "freeze_min_change_mib",
    "freeze_file_only_below_swap_free_pct",
];

/// The freeze limits of a level whose action is `action` (the defaults on other levels,
/// where any of the keys is a problem).
pub(super) fn read_freeze(
    doc: &mut Doc<'_>,
    t: &mut Table<'_, '_>,
    action: Action,
) -> FreezeLimits {
    let d = FreezeLimits::default();
    let mib = |doc: &mut Doc<'_>, t: &mut Table<'_, '_>, key, default: u64| {
        t.int(doc, key, 0..=1 << 20, "MiB")
            .map_or(default, |m| m as u64 * 1024)
    };
    // Read (and checked) on every level, so that a misplaced key is named as misplaced.
    let limits = FreezeLimits {
        thaw_after_ms: t
            .int(
                doc,
                "thaw_after_ms",
                1000..=86_400_000,
                "milliseconds without a freeze level holding before a thaw",
            )
            .map_or(d.thaw_after_ms, |m| m as u64),
        pageout: t.boolean(doc, "freeze_pageout").unwrap_or(d.pageout),
        min_anon_kib: mib(doc, t, "freeze_min_anon_mib", d.min_anon_kib),
        min_change_kib: mib(doc, t, "freeze_min_change_mib", d.min_change_kib),
        file_only_below_swap_free_pct: t
            .number(
                doc,
                "freeze_file_only_below_swap_free_pct",
                0.0..=100.0,
                "percent of swap free, 0-100",
            )
            .unwrap_or(d.file_only_below_swap_free_pct),
        sigstop_lone: match t.string(doc, "freeze_lone_process") {
            None => d.sigstop_lone,
            Some((v, _)) if v == "pageout" => false,
            Some((v, _)) if v == "sigstop" => true,
            Some((v, span)) => {
                doc.problem(
                    &span,
                    &t.key_path("freeze_lone_process"),
                    format!(
                        "{v:?}: use \"pageout\" (page it out alone) or \"sigstop\" (stop it alone)"
                    ),
                );
                d.sigstop_lone
            }
        },
    };
    if action == Action::Freeze {
        return limits;
    }
    for key in KEYS {
        if t.has(key) {
            let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
            doc.problem(
                &span,
                &t.key_path(key),
                "only for action = \"freeze\" levels",
            );
        }
    }
    d
}
