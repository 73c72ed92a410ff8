//! The `lowmemd` command: parses the command line, starts logging, runs the subcommand
//! (`commands/`) and turns its result into a documented exit code.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod commands;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Before any thread exists: each would otherwise get a malloc arena of its own.
    lowmemd::sys::single_malloc_arena();
    // `--version` names the optional features built in (a board build leaves some out).
    let version = lowmemd::features::version().leak();
    let matches = Cli::command().version(&*version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The daemon, before its logger opens the journal's socket: see sys::close_inherited_fds.
    let daemon = matches!(cli.command, None | Some(Command::Run(_)));
    let closed = daemon.then(close_inherited_fds);
    lowmemd::report::logger::init(cli.log_level);
    match closed {
        Some(Ok(0)) | None => {}
        Some(Ok(n)) => log::info!("closed {n} descriptors left open by whatever started lowmemd"),
        Some(Err(e)) => {
            log::warn!("/proc/self/fd: {e}; descriptors inherited at start-up stay open")
        }
    }
    let result = match cli.command {
        Some(Command::Rank(a)) => commands::rank::run(&a),
        Some(Command::Run(a)) => commands::run::run(&a),
        Some(Command::Check(a)) => commands::check::run(&a),
        Some(Command::Status(a)) => commands::status::run(&a),
        Some(Command::Doctor(a)) => commands::doctor::run(&a),
        None => commands::run::run(&cli.run),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            log::error!("{msg}");
            ExitCode::from(code)
        }
    };
    // Log lines are written by a thread of their own: let it say the last ones.
    lowmemd::report::logger::drain(std::time::Duration::from_millis(500));
    code
}

/// Closes what whoever started us left open, sparing what a service manager passed on
/// purpose (systemd's LISTEN_FDS, Android init's ANDROID_SOCKET_lmkd).
fn close_inherited_fds() -> std::io::Result<usize> {
    let var = |k: &str| std::env::var(k).ok();
    let keep = lowmemd::sys::fds_meant_for_us(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("ANDROID_SOCKET_lmkd").as_deref(),
        std::process::id(),
    );
    lowmemd::sys::close_inherited_fds(&keep)
}

#[cfg(all(test, feature = "http"))]
mod tests {
    #[test]
    fn cli_default_metrics_address_is_the_servers() {
        assert_eq!(
            super::cli::DEFAULT_METRICS_ADDR,
            lowmemd::report::http::DEFAULT_ADDR
        );
    }
}
