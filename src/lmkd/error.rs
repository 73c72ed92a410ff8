//! Why the registry refused a client's request: one error, its label per kind.

use rustix::io::Errno;

use crate::procs::ProcError;

/// A registration refused. The `why()` strings are `lowmemd_lmkd_rejected_total` labels.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("pid {0} does not exist")]
    NoSuchProcess(i32),
    #[error("pid {pid} belongs to uid {actual}, not to uid {claimed} as the packet says")]
    WrongUid { pid: i32, claimed: u32, actual: u32 },
    #[error("pid {pid} is {what}: no client may re-prioritise it")]
    Protected { pid: i32, what: &'static str },
    #[error(
        "pid {pid} belongs to uid {actual}; the client runs as uid {peer}, which is not trusted (--lmkd-trusted-uid) and may only act on its own processes"
    )]
    NotPeersProcess { pid: i32, actual: u32, peer: u32 },
    #[error(
        "pid {pid}: adj {adj} is below {lowest}, the lowest the process could set itself; only a trusted client may go lower"
    )]
    BelowFloor { pid: i32, adj: i32, lowest: i16 },
    #[error(
        "pid {pid}: already {cap} registrations, as many as the fd limit allows (untrusted clients: half of it)"
    )]
    Full { pid: i32, cap: usize },
    #[error("pid {pid} is registered by client pid {owner}, which is still connected")]
    NotOwner { pid: i32, owner: i32 },
    #[error("pid {0} is not registered")]
    NotRegistered(i32),
    #[error("cannot pin pid {pid} with a pidfd: {source} (pidfds need Linux 5.3)")]
    Pidfd { pid: i32, source: Errno },
    #[error("setting oom_score_adj of pid {pid}: {source}")]
    WriteAdj { pid: i32, source: std::io::Error },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

impl RegistryError {
    pub fn why(&self) -> &'static str {
        match self {
            RegistryError::NoSuchProcess(_) => "no_such_process",
            RegistryError::WrongUid { .. } => "wrong_uid",
            RegistryError::Protected { .. } => "protected_process",
            RegistryError::NotPeersProcess { .. } => "not_peers_process",
            RegistryError::BelowFloor { .. } => "adj_below_floor",
            RegistryError::Full { .. } => "registry_full",
            RegistryError::NotOwner { .. } => "not_owner",
            RegistryError::NotRegistered(_) => "not_registered",
            RegistryError::Pidfd { .. } | RegistryError::WriteAdj { .. } => "failed",
            RegistryError::Proc(ProcError::Vanished { .. }) => "no_such_process",
            RegistryError::Proc(_) => "failed",
        }
    }

    pub const WHYS: [&'static str; 9] = [
        "no_such_process",
        "wrong_uid",
        "protected_process",
        "not_peers_process",
        "adj_below_floor",
        "registry_full",
        "not_owner",
        "not_registered",
        "failed",
    ];
}
