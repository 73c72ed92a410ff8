//! The `lowmemd` command: parses the command line, starts logging, runs the subcommand
//! (`commands/`) and turns its result into a documented exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Before any thread exists: each would otherwise get a malloc arena of its own.
    lowmemd::sys::single_malloc_arena();
    let cli = Cli::parse();
    lowmemd::report::logger::init(cli.log_level);
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

#[cfg(test)]
mod tests {
    #[test]
    fn cli_default_metrics_address_is_the_servers() {
        assert_eq!(
            super::cli::DEFAULT_METRICS_ADDR,
            lowmemd::report::http::DEFAULT_ADDR
        );
    }
}
