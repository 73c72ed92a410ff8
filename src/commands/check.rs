//! `lowmemd check`: validates policy files, naming file, line and key of every problem;
//! warns (on stderr, exit code unchanged) where a valid rule is probably not meant, such as
//! a protection any process can take by its name; with `--explain`, says in words what each
//! would do.

use lowmemd::policy::explain::explain;
use lowmemd::policy::validate::load;

use super::{CmdResult, exit, resolve_scope, stderr, stdout, write_failed};
use crate::cli::{CheckArgs, ScopeArgs};

pub fn run(args: &CheckArgs) -> CmdResult {
    let (mut out, mut err) = (stdout(), stderr());
    let mut invalid = 0;
    // Every file is checked even when the reader has gone: the exit code still tells.
    for file in &args.files {
        match load(file) {
            Ok((policy, _)) => {
                for w in &policy.warnings {
                    writeln!(err, "{}", w.as_warning()).map_err(write_failed("stderr"))?;
                }
                writeln!(out, "{}: ok", file.display()).map_err(write_failed("stdout"))?;
                if args.explain {
                    // Sizes for the scope the policy names, when it exists here.
                    let total = resolve_scope(&ScopeArgs { cgroup: None }, &policy)
                        .ok()
                        .and_then(|s| s.read_memory().ok())
                        .map(|m| m.total_kib);
                    write!(out, "{}", explain(&policy, total)).map_err(write_failed("stdout"))?;
                }
            }
            Err(e) => {
                invalid += 1;
                writeln!(err, "{e}").map_err(write_failed("stderr"))?;
            }
        }
    }
    out.flush().map_err(write_failed("stdout"))?;
    if invalid > 0 {
        return Err((
            exit::USAGE,
            format!("{invalid} of {} policy files invalid", args.files.len()),
        ));
    }
    Ok(())
}
