//! `lowmemd check`: validates policy files, naming file, line and key of every problem;
//! with `--explain`, says in words what each would do.

use lowmemd::policy::explain::explain;
use lowmemd::policy::validate::load;

use super::{CmdResult, exit, resolve_scope};
use crate::cli::{CheckArgs, ScopeArgs};

pub fn run(args: &CheckArgs) -> CmdResult {
    let mut invalid = 0;
    for file in &args.files {
        match load(file) {
            Ok((policy, _)) => {
                println!("{}: ok", file.display());
                if args.explain {
                    // Sizes for the scope the policy names, when it exists here.
                    let total = resolve_scope(&ScopeArgs { cgroup: None }, &policy)
                        .ok()
                        .and_then(|s| s.read_memory().ok())
                        .map(|m| m.total_kib);
                    print!("{}", explain(&policy, total));
                }
            }
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
            }
        }
    }
    if invalid > 0 {
        return Err((
            exit::USAGE,
            format!("{invalid} of {} policy files invalid", args.files.len()),
        ));
    }
    Ok(())
}
