//! `rank_by` and `owner_depth`: how a level orders the candidates of one adj band. Written
//! at the top level (the default of every level) or in a `[[level]]` (that level only).

use crate::policy::RankBy;
use crate::policy::raw::{Doc, Table};

/// Deepest `owner_depth`: deeper than any cgroup tree we have seen (systemd's user apps
/// sit 5 below the root, a Kubernetes container 4), shallow enough to catch a typo.
const MAX_DEPTH: i64 = 16;

/// Reads `rank_by` and `owner_depth` of table `t`; `inherited` is what applies when `t`
/// has no `rank_by` of its own (the top level's, for a level).
pub(super) fn read_rank_by(doc: &mut Doc<'_>, t: &mut Table<'_, '_>, inherited: RankBy) -> RankBy {
    let by = match t.string(doc, "rank_by") {
        None => inherited,
        Some((s, _)) if s == "process" => RankBy::Process,
        Some((s, _)) if s == "cgroup" => RankBy::Cgroup { depth: None },
        Some((s, _)) if s == "uid" => RankBy::Uid,
        Some((s, span)) => {
            doc.problem(
                &span,
                &t.key_path("rank_by"),
                format!("{s:?}: use \"process\" (each by its own size), \"cgroup\" (by app, unit or pod) or \"uid\" (by user)"),
            );
            inherited
        }
    };
    let depth = t.int(
        doc,
        "owner_depth",
        1..=MAX_DEPTH,
        "cgroup levels below the scope",
    );
    match (by, depth) {
        (RankBy::Cgroup { .. }, Some(d)) => RankBy::Cgroup {
            depth: Some(d as u8),
        },
        (_, Some(_)) => {
            let span = t.key_span("owner_depth").unwrap_or_else(|| t.span.clone());
            doc.problem(
                &span,
                &t.key_path("owner_depth"),
                "only with rank_by = \"cgroup\": it says which cgroup below the scope owns a process",
            );
            by
        }
        (by, None) => by,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::RankBy;
    use crate::policy::validate::compile;

    const LEVEL: &str =
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 0\navailable_below_pct = 5\n";

    fn levels(text: &str) -> Vec<RankBy> {
        let p = compile(Path::new("p.toml"), text).unwrap();
        p.levels.iter().map(|l| l.rank_by).collect()
    }

    #[test]
    fn levels_inherit_the_top_level_rank_by_and_may_override_it() {
        assert_eq!(levels(LEVEL), [RankBy::Process]);
        let top = format!("rank_by = \"cgroup\"\n{LEVEL}");
        assert_eq!(levels(&top), [RankBy::Cgroup { depth: None }]);
        let own = format!("rank_by = \"cgroup\"\nowner_depth = 2\n{LEVEL}rank_by = \"uid\"\n");
        assert_eq!(levels(&own), [RankBy::Uid]);
        let deeper = format!("rank_by = \"cgroup\"\nowner_depth = 2\n{LEVEL}owner_depth = 1\n");
        assert_eq!(levels(&deeper), [RankBy::Cgroup { depth: Some(1) }]);
        let inherited = format!("rank_by = \"cgroup\"\nowner_depth = 2\n{LEVEL}");
        assert_eq!(levels(&inherited), [RankBy::Cgroup { depth: Some(2) }]);
    }

    #[test]
    fn owner_depth_without_cgroup_ranking_is_refused() {
        let text = format!("{LEVEL}owner_depth = 2\n");
        let e = compile(Path::new("p.toml"), &text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("only with rank_by"), "{}", e[0]);
    }
}
