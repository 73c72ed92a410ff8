//! lowmemd: a low-memory-killer daemon. The pipeline, in the order data flows, one folder a
//! stage (imports point down this list, never up; `tests/layout.rs` checks it):
//!
//! - `sys`, `clock`, `sample`, `health`, `runtime`: raw syscalls; the clocks; what one
//!   sample holds (data only); whether the worker threads make progress; the records of
//!   what lowmemd changed outside itself, to undo after a crash.
//! - `priority`: the kill path's CPU priority (SCHED_FIFO, as lmkd's).
//! - `procs`: the process table (pure parsers, the stateless reader, the fd cache).
//! - `scope`: what is protected, the system or one cgroup: its memory, PSI file, swap.
//! - `caps`: what the kernel and our privileges allow, probed once.
//! - `policy`: raw TOML → validated `Policy`; the pure `decide`; rules.
//! - `monitor`: the sensing thread (PSI, vmpressure, watermarks) → `Sample`s.
//! - `pipeline`: rank → pin → kill, page out or freeze → confirm, one victim at a time, each fact
//!   handed to an `Observer`.
//! - `report`: the observer: records, event log, metrics + HTTP, logging, sd_notify.
//! - `reload`, `protect`: the daemon keeping itself current and alive.
//! - `lmkd`: lmkd's client socket, for Android-style app managers (beside the pipeline,
//!   which sees its registrations through `pipeline::registered`).
//!
//! - `features`: which of the optional Cargo features this build has (`lmkd`, `http`,
//!   `hooks`, `journald`, `cli-help`); a module that needs one is declared under its `cfg`.
//!
//! The `lowmemd` binary (`main.rs`, `cli.rs`, `commands/`) wires them together.

pub mod caps;
pub mod clock;
pub mod features;
pub mod health;
#[cfg(feature = "lmkd")]
pub mod lmkd;
pub mod monitor;
pub mod pipeline;
pub mod policy;
pub mod priority;
pub mod procs;
pub mod protect;
pub mod reload;
pub mod report;
pub mod runtime;
pub mod sample;
pub mod scope;
pub mod sys;

/// The parsers of input lowmemd does not control (proc and cgroup files, a policy file, lmkd
/// packets, HTTP requests, the registrations snapshot) gathered for the fuzz targets in
/// `fuzz/`. Not an API: most are public in their modules already; this adds the few that
/// are not.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::procs::parse::{
        cgroup_path_of, cgroup_paths, parse_adj, parse_real_uid, parse_statm, parse_vm_swap_kib,
        sigkill_pending,
    };
}
