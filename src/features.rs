//! The Cargo features this build has. A board build leaves out what it does not use
//! (`Cargo.toml` `[features]`, what each costs in docs/deployment.md); whatever needs a
//! missing one — a policy key, a command-line flag — is refused with an error that names the
//! feature and lists this build's, never silently ignored.

/// Every optional feature, with whether this build has it, in `Cargo.toml`'s order.
pub const ALL: &[(&str, bool)] = &[
    ("lmkd", cfg!(feature = "lmkd")),
    ("http", cfg!(feature = "http")),
    ("hooks", cfg!(feature = "hooks")),
    ("journald", cfg!(feature = "journald")),
    ("cli-help", cfg!(feature = "cli-help")),
];

/// The features built in, space-separated (`none` without any).
pub fn built_in() -> String {
    let on: Vec<&str> = ALL.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if on.is_empty() {
        "none".to_string()
    } else {
        on.join(" ")
    }
}

/// What `--version` prints after the name: the version and the features built in.
pub fn version() -> String {
    format!("{} (features: {})", env!("CARGO_PKG_VERSION"), built_in())
}

/// Why `what` cannot be had in this build: `what` needs `feature`, which it leaves out.
pub fn missing(what: &str, feature: &str) -> String {
    format!(
        "{what} needs the `{feature}` feature; this build has: {} (rebuild with `--features {feature}`)",
        built_in()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_feature_is_named_with_what_the_build_has() {
        let m = missing("key candidates = \"registered\"", "lmkd");
        assert!(
            m.starts_with(
                "key candidates = \"registered\" needs the `lmkd` feature; this build has: "
            ),
            "{m}"
        );
        assert!(m.contains(&built_in()), "{m}");
        assert!(version().contains(env!("CARGO_PKG_VERSION")));
    }
}
