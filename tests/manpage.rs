//! deploy/man/lowmemd.8 is generated from the CLI definition (clap_mangen) and must match
//! it. After changing the CLI: `UPDATE_GOLDEN=1 cargo test --test manpage`.

#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

use clap::CommandFactory;

#[test]
fn man_page_matches_the_cli() {
    let mut out = Vec::new();
    clap_mangen::Man::new(cli::Cli::command().name("lowmemd"))
        .section("8")
        .render(&mut out)
        .unwrap();
    let path = "deploy/man/lowmemd.8";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &out).unwrap();
    }
    let want = std::fs::read(path).expect("deploy/man/lowmemd.8 (generate with UPDATE_GOLDEN=1)");
    assert!(
        want == out,
        "deploy/man/lowmemd.8 is out of date: UPDATE_GOLDEN=1 cargo test --test manpage"
    );
    let text = String::from_utf8(out).unwrap();
    for needle in ["lowmemd", "doctor", "check", "Exit codes"] {
        assert!(text.contains(needle), "{needle}");
    }
}
