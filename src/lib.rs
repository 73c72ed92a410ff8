//! lowmemd: a low-memory-killer daemon. The pipeline, in the order data flows:
//!
//! `monitor` (samples) → `policy::decide` (level) → `procs` + `rank` (victim order) →
//! `target` (pidfd pin) → `act` (SIGKILL + mrelease) → `confirm` (pidfd readable) → `events`.
//! `pipeline` is the only module that knows that order.
#![deny(unsafe_code)]

pub mod act;
pub mod caps;
pub mod confirm;
pub mod doctor;
pub mod events;
pub mod http;
pub mod logger;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod pageout;
pub mod pipeline;
pub mod policy;
pub mod procs;
pub mod protect;
pub mod rank;
pub mod reload;
pub mod scope;
pub mod status;
pub mod sys;
pub mod target;
