//! The layout reads in one direction: every `crate::` import of a top-level module of
//! `src/` points to a module in a lower layer (the list below, also in lib.rs and the
//! README), so there is no cycle and the pipeline reads top to bottom. A new top-level
//! module must be placed in a layer here before it can land.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. A module may import modules of lower layers only, never of its own layer
/// or above.
const LAYERS: &[&[&str]] = &[
    &["sys", "clock", "sample", "health", "runtime", "features"],
    &["priority"],
    &["procs"],
    &["scope"],
    &["caps"],
    &["policy"],
    &["monitor", "pipeline"],
    &["report"],
    &["reload", "protect"],
    // lmkd's client socket: reads the pipeline's facts, feeds it registrations through
    // `pipeline::registered`.
    &["lmkd"],
    // The binary: main.rs wires these; commands use the CLI's argument types.
    &["cli"],
    &["commands"],
];

/// Code lines (before the unit tests) a file may have before it must be split.
const MAX_CODE_LINES: usize = 450;

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "main.rs" | "lib.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every top-level module named after `crate::`, including inside `use crate::{a, b::c}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0 after a '{' or ','.
            let (mut depth, mut at_name) = (0usize, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_name = true,
                    c if at_name && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident_at(&group[j..]).to_string());
                        at_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(me) = top_module(rel) else { continue };
        let Some(my_layer) = layer(&me) else {
            wrong.push(format!(
                "{}: module {me} is in no layer of tests/layout.rs",
                rel.display()
            ));
            continue;
        };
        for dep in imports(&code(&std::fs::read_to_string(f).unwrap())) {
            if dep == me || dep == "self" {
                continue;
            }
            match layer(&dep) {
                Some(l) if l < my_layer => {}
                Some(_) => wrong.push(format!(
                    "{}: {me} imports crate::{dep}, which is not below it",
                    rel.display()
                )),
                None => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_holds_more_than_one_jobs_worth_of_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let big: Vec<String> = files
        .iter()
        // A module's unit tests in a file of their own (`tests.rs`) are not its code.
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .filter_map(|f| {
            let n = code_lines(&std::fs::read_to_string(f).unwrap());
            (n > MAX_CODE_LINES).then(|| format!("{}: {n} code lines", f.display()))
        })
        .collect();
    assert!(big.is_empty(), "split these by job:\n{}", big.join("\n"));
}

/// The lines of a file that are not its unit tests: everything but a trailing
/// `#[cfg(test)] mod tests { ... }` block. A `#[cfg(test)]` on anything else (a test-only
/// constructor, `mod tests;` declared at the top) counts as code, so the guard cannot be
/// dodged by an attribute early in the file.
fn code_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.windows(2).rposition(|w| {
        w[0].trim() == "#[cfg(test)]" && w[1].starts_with("mod ") && w[1].trim_end().ends_with('{')
    });
    match tail {
        // Only when that block closes the file: a `}` at column 0 as the last code line.
        Some(i) if lines[i + 1..].iter().rev().find(|l| !l.trim().is_empty()) == Some(&"}") => i,
        _ => lines.len(),
    }
}

#[test]
fn the_size_guard_counts_everything_but_a_trailing_test_module() {
    let code: String = (0..500).map(|i| format!("fn f{i}() {{}}\n")).collect();
    // A planted attribute at the top used to cut the count to the lines above it.
    let planted = format!("#[cfg(test)]\nmod tests;\n{code}");
    assert_eq!(code_lines(&planted), 502);
    let with_tests = format!("{code}#[cfg(test)]\nmod tests {{\n    fn t() {{}}\n}}\n");
    assert_eq!(code_lines(&with_tests), 500);
    let helper_then_code = format!("#[cfg(test)]\nmod helper {{\n}}\n{code}");
    assert_eq!(code_lines(&helper_then_code), 503);
}

#[test]
fn the_import_scanner_sees_grouped_and_nested_imports() {
    let text = "use crate::{a, b::{c, d}, e::f};\nlet x = crate::g::h();\n// crate::comment\n#[cfg(test)]\nuse crate::z;";
    let found = imports(&code(text));
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "b", "e", "g"]);
}
