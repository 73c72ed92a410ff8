//! A build without the `lmkd` feature: every flag, and every socket init passes, that asks
//! for lmkd's client socket is refused, naming the feature, rather than ignored (an app
//! manager would otherwise talk to nobody while the board ran on).

use std::path::Path;
use std::sync::Arc;

use lowmemd::features::missing;
use lowmemd::pipeline::outcome::Observer;
use lowmemd::pipeline::rank::Ranked;
use lowmemd::pipeline::registered::Registrations;
use lowmemd::policy::Candidates;
use lowmemd::procs::ProcRoot;

use crate::cli::RunArgs;
use crate::commands::exit;
use crate::commands::rank::Registered;

/// Never made: there is nothing to serve.
pub enum Prepared {}

pub fn prepare(args: &RunArgs) -> Result<Option<Prepared>, (u8, String)> {
    let asked = if args.lmkd_socket.is_some() {
        Some("--lmkd-socket")
    } else if args.lmkd_socket_group.is_some() {
        Some("--lmkd-socket-group")
    } else if !args.lmkd_trusted_uid.is_empty() {
        Some("--lmkd-trusted-uid")
    } else if std::env::var_os("ANDROID_SOCKET_lmkd").is_some() {
        Some("the lmkd socket Android init passed (ANDROID_SOCKET_lmkd)")
    } else if (std::env::var("LISTEN_FDNAMES").ok())
        .is_some_and(|names| names.split(':').any(|n| n == "lmkd"))
    {
        Some("the lmkd socket systemd passed (FileDescriptorName=lmkd)")
    } else {
        None
    };
    match asked {
        Some(what) => Err((exit::USAGE, missing(what, "lmkd"))),
        None => Ok(None),
    }
}

pub fn fd_share(_fd_limit: u64) -> usize {
    0
}

/// As in `lmkd.rs`: `run` builds it either way, only to hand it to a `start` never called.
#[allow(dead_code)]
pub struct Daemon<'a> {
    pub args: &'a RunArgs,
    pub store: &'a Arc<lowmemd::policy::store::PolicyStore>,
    pub metrics: &'a Arc<lowmemd::report::metrics::Metrics>,
    pub waker: &'a Arc<std::os::fd::OwnedFd>,
    pub scope: &'a lowmemd::scope::Scope,
}

/// The socket's thread started: the observer that also tells lmkd's subscribers of kills,
/// and the registrations the pipeline reads.
pub struct Started {
    pub observer: Box<dyn Observer>,
    pub registrations: Arc<dyn Registrations>,
}

pub fn start(
    p: Prepared,
    _cap: usize,
    _d: Daemon<'_>,
    _observer: Box<dyn Observer>,
) -> Result<Started, (u8, String)> {
    match p {}
}

/// Without the socket no daemon of this build publishes registrations: `--lmkd-socket` is
/// refused; without it there is nothing to show.
pub fn registrations(
    socket: Option<&Path>,
    _proc: &ProcRoot,
    _ranked: &mut [Ranked],
    _candidates: Candidates,
) -> Result<Registered, (u8, String)> {
    match socket {
        Some(_) => Err((exit::USAGE, missing("rank --lmkd-socket", "lmkd"))),
        None => Ok(Registered::Unknown),
    }
}
