//! A build without the `http` feature serves no status socket and no /status, so `lowmemd
//! status` has nothing to ask: it says so, naming the feature.

use lowmemd::features::missing;

use super::{CmdResult, exit};
use crate::cli::StatusArgs;

pub fn run(_args: &StatusArgs) -> CmdResult {
    Err((exit::USAGE, missing("lowmemd status", "http")))
}
