//! What the pipeline needs to know of processes a client registered (over the lmkd socket):
//! whether this incarnation is registered, and by whom. The table lives above the pipeline
//! (`lmkd::registry`); the pipeline sees it through this trait only, so imports keep
//! pointing down.

use serde::Serialize;

/// A registration of one process incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The uid the client registered the process under (checked against the process's).
    pub uid: u32,
    /// The pid of the connected client that owns the record; `None` once it disconnected.
    pub owner_pid: Option<i32>,
}

/// The registrations, read on the kill path: an implementation must answer from memory,
/// without blocking on clients.
pub trait Registrations: Send + Sync {
    /// The registration of the process `pid` started at `starttime` (clock ticks after
    /// boot, as in /proc/PID/stat), if that very incarnation is registered and alive.
    fn lookup(&self, pid: i32, starttime: u64) -> Option<Registered>;
}
