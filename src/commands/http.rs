//! The metrics endpoint and the status socket wired into `run` (the `http` feature;
//! without it, `http_off.rs` refuses the flags that ask for them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lowmemd::report::metrics::Metrics;
use lowmemd::report::{http, status_socket};
use lowmemd::scope::Scope;

use crate::cli::RunArgs;
use crate::commands::exit;

/// Where the daemon answers: the TCP address bound, the status socket's path.
pub struct Serving {
    pub metrics_addr: Option<SocketAddr>,
    pub status_socket: Option<PathBuf>,
}

/// Starts the HTTP server on `--metrics-listen` (unless `off`) and on the status socket.
pub fn serve(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    scope: &Arc<Scope>,
) -> Result<Serving, (u8, String)> {
    let served = http::Shared::new(metrics.clone(), scope.clone());
    let metrics_addr = match args.metrics_listen.as_str() {
        "off" => None,
        addr => {
            let parsed: SocketAddr = addr.parse().map_err(|e| {
                (
                    exit::USAGE,
                    format!(
                        "--metrics-listen {addr:?}: {e} (use HOST:PORT, e.g. {}, or off)",
                        http::DEFAULT_ADDR
                    ),
                )
            })?;
            match http::spawn(parsed, served.clone()).map_err(|e| (exit::RUNTIME, e.to_string()))? {
                http::Listening::Bound(bound) => Some(bound),
                // A scrape endpoint is not worth the protection (with Restart=always, an
                // exit here would loop for as long as the squatter holds the port).
                http::Listening::Retrying(e) => {
                    log::error!(
                        "--metrics-listen {addr}: {e} (another lowmemd, or another program on that port?); protecting anyway, trying again in the background"
                    );
                    None
                }
            }
        }
    };
    let status_socket = status_socket::place(
        args.status_socket.as_deref(),
        std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
    );
    let status_socket = status_socket.and_then(|path| {
        match status_socket::create(&path).and_then(|l| {
            http::spawn_unix(l, served.clone()).map_err(|source| {
                status_socket::StatusSocketError::Io {
                    path: path.clone(),
                    source,
                }
            })
        }) {
            Ok(()) => Some(path),
            Err(e) => {
                log::warn!("status socket: {e}; `lowmemd status` can only ask the TCP port");
                None
            }
        }
    });
    Ok(Serving {
        metrics_addr,
        status_socket,
    })
}
