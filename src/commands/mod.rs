//! The subcommands, one file each: `run` (the daemon: start-up probes and thread wiring),
//! `rank`, `check`, `doctor` and `status` (one-shot). Each returns a [`CmdResult`]: an exit
//! code and a message on failure.

pub mod check;
pub mod doctor;
pub mod rank;
pub mod run;
pub mod status;

use lowmemd::policy::Policy;
use lowmemd::policy::store::PolicyStore;
use lowmemd::procs::ProcRoot;
use lowmemd::scope::{Scope, ScopeError};

use crate::cli::{PolicyArgs, ScopeArgs};

/// Exit codes: a public interface, never renumber.
pub mod exit {
    pub const RUNTIME: u8 = 1;
    /// Bad command line or configuration (clap uses 2 for usage errors too).
    pub const USAGE: u8 = 2;
    /// The kernel lacks a feature lowmemd needs for what was asked.
    pub const KERNEL: u8 = 3;
    /// Missing privilege for what was asked.
    pub const PRIVILEGE: u8 = 4;
}

/// `Err((exit code, message))`.
pub type CmdResult = Result<(), (u8, String)>;

pub fn load_store(args: &PolicyArgs) -> Result<PolicyStore, (u8, String)> {
    match &args.policy {
        None => Ok(PolicyStore::builtin()),
        Some(path) => PolicyStore::from_file(path)
            .map_err(|e| (exit::USAGE, format!("invalid policy, not starting:\n{e}"))),
    }
}

/// `--cgroup` wins over the policy's `scope`.
pub fn resolve_scope(args: &ScopeArgs, policy: &Policy) -> Result<Scope, (u8, String)> {
    let proc = ProcRoot::default();
    let scope = match args.cgroup.as_ref().or(policy.scope.as_ref()) {
        Some(cg) => Scope::cgroup(proc, cg),
        None => Scope::system(proc),
    };
    scope.map_err(|e| {
        let code = match e {
            ScopeError::NotAbsolute(_) | ScopeError::NoSuchCgroup { .. } => exit::USAGE,
            ScopeError::NoMemoryController(_) => exit::KERNEL,
            ScopeError::Io { .. } | ScopeError::Malformed { .. } | ScopeError::Proc(_) => {
                exit::RUNTIME
            }
        };
        (code, e.to_string())
    })
}
