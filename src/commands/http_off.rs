//! A build without the `http` feature serves neither /metrics nor /status: a flag that asks
//! for them is refused, naming the feature (`--metrics-listen` defaults to `off` here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lowmemd::features::missing;
use lowmemd::report::metrics::Metrics;
use lowmemd::scope::Scope;

use crate::cli::RunArgs;
use crate::commands::exit;

pub struct Serving {
    pub metrics_addr: Option<SocketAddr>,
    pub status_socket: Option<PathBuf>,
}

pub fn serve(
    args: &RunArgs,
    _metrics: &Arc<Metrics>,
    _scope: &Arc<Scope>,
) -> Result<Serving, (u8, String)> {
    if args.metrics_listen != "off" {
        let what = format!("--metrics-listen {}", args.metrics_listen);
        return Err((exit::USAGE, missing(&what, "http")));
    }
    if args.status_socket.is_some() {
        return Err((exit::USAGE, missing("--status-socket", "http")));
    }
    Ok(Serving {
        metrics_addr: None,
        status_socket: None,
    })
}
