//! The metrics endpoint: `/metrics` (Prometheus text format), `/status` (JSON) and `/`.
//!
//! A deliberately small server on its own threads: requests are parsed with httparse, each
//! connection gets a 2 s read timeout and a 5 s overall deadline, headers are capped at
//! 8 KiB, and at most 16 connections are served at once (more get a 503 and are closed).
//! Nothing here takes a lock the pipeline holds for longer than a copy, so a slow,
//! malformed or flooding client cannot delay a decision.
//!
//! The same server answers on the status socket (`status_socket.rs`), a Unix socket in the
//! runtime directory that only lowmemd can create: `lowmemd status` asks there first, since
//! anyone may bind the TCP port while lowmemd does not hold it.
//!
//! A TCP port another process holds costs the scrape, never the protection: the failed bind
//! is counted (`lowmemd_metrics_bind_failures_total`) and retried on the HTTP thread, with
//! back-off, until it succeeds.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::metrics::Metrics;
use crate::scope::Scope;

/// Outside Prometheus' exporter range 9100-9999, which is fully allocated.
pub const DEFAULT_ADDR: &str = "127.0.0.1:10104";
const MAX_CONNECTIONS: usize = 16;
const HEADER_CAP: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// PSI averages are read at most this often: reading the pressure file that holds our
/// triggers can delay them (DESIGN.md §4).
const PSI_READ_EVERY: Duration = Duration::from_secs(5);
/// A failed bind is retried after 1 s, then twice as long each time, at most a minute apart:
/// a port freed is served within a minute, a port held for days costs a line of debug log
/// a minute.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the HTTP and status-socket threads share.
pub struct Shared {
    metrics: Arc<Metrics>,
    scope: Arc<Scope>,
    psi_read: Mutex<Option<Instant>>,
    active: AtomicUsize,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>, scope: Arc<Scope>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics,
            scope,
            psi_read: Mutex::new(None),
            active: AtomicUsize::new(0),
        })
    }
}

/// Where the metrics endpoint stands after [`spawn`].
#[derive(Debug)]
pub enum Listening {
    /// Serving on this address.
    Bound(SocketAddr),
    /// The address could not be bound (why): the HTTP thread retries, with back-off, and
    /// says when it serves.
    Retrying(io::Error),
}

/// Binds `addr` and serves on a background thread; if the bind fails, counts it and goes
/// on trying on that thread. Only a thread that cannot start is an error.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<Listening> {
    let (listener, listening) = match TcpListener::bind(addr) {
        Ok(l) => {
            let bound = l.local_addr()?;
            (Some(l), Listening::Bound(bound))
        }
        Err(e) => {
            shared.metrics.metrics_bind_failures.inc();
            (None, Listening::Retrying(e))
        }
    };
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let listener = listener.unwrap_or_else(|| bind_with_backoff(addr, &shared.metrics));
            accept_loop(listener.incoming(), shared)
        })?;
    Ok(listening)
}

/// Binds `addr`, however long that takes; each failure counted.
fn bind_with_backoff(addr: SocketAddr, metrics: &Metrics) -> TcpListener {
    let mut wait = RETRY_FIRST;
    loop {
        std::thread::sleep(wait);
        match TcpListener::bind(addr) {
            Ok(l) => {
                log::info!(
                    "metrics on http://{addr}/metrics, status on http://{addr}/status (the address is free now)"
                );
                return l;
            }
            Err(e) => {
                metrics.metrics_bind_failures.inc();
                wait = (wait * 2).min(RETRY_MAX);
                log::debug!("--metrics-listen {addr}: {e}; trying again in {wait:?}");
            }
        }
    }
}

/// Serves the status socket `listener` on a background thread.
pub fn spawn_unix(listener: UnixListener, shared: Arc<Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("status-sock".into())
        .spawn(move || accept_loop(listener.incoming(), shared))?;
    Ok(())
}

/// A connection either server accepts.
trait Conn: Read + Write + Send + 'static {
    fn timeouts(&self, d: Duration) -> io::Result<()>;
    fn nonblocking(&self) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

impl Conn for UnixStream {
    fn timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
    fn nonblocking(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

fn accept_loop<C: Conn>(incoming: impl Iterator<Item = io::Result<C>>, shared: Arc<Shared>) {
    for conn in incoming {
        let Ok(mut stream) = conn else { continue };
        if shared.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            // Best effort, never blocking the accept loop.
            let _ = stream.nonblocking();
            let _ = stream.write(response(503, "text/plain", b"busy\n", false).as_slice());
            continue;
        }
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _ = serve(&mut stream, &shared2);
                shared2.active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn response(code: u16, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        reason_phrase(code),
        body.len(),
        if code == 405 { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

/// What the bytes of a request received so far ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The head is not complete yet: read on (up to the 8 KiB cap).
    Partial,
    /// A GET (or HEAD: `head`) of `path`, the query string still on it.
    Get { path: String, head: bool },
    /// Answer with this status and plain-text body, and close.
    Refuse(u16, String),
}

/// Parses the head of a request from the bytes received so far (pure, so a fuzz target
/// can feed it anything a client could send).
pub fn parse_request(buf: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("");
            let head = method == "HEAD";
            if method != "GET" && !head {
                return Request::Refuse(405, "GET or HEAD only\n".into());
            }
            Request::Get {
                path: req.path.unwrap_or("").to_string(),
                head,
            }
        }
        Ok(httparse::Status::Partial) => Request::Partial,
        Err(httparse::Error::TooManyHeaders) => Request::Refuse(431, "too many headers\n".into()),
        Err(e) => Request::Refuse(400, format!("malformed request: {e}\n")),
    }
}

/// Reads one request (or gives up), answers it, closes.
fn serve(stream: &mut impl Conn, shared: &Shared) -> io::Result<()> {
    stream.timeouts(READ_TIMEOUT)?;
    let started = Instant::now();
    let mut buf = vec![0u8; HEADER_CAP];
    let mut len = 0;
    let (path, head) = loop {
        if started.elapsed() > REQUEST_DEADLINE {
            return stream.write_all(&response(408, "text/plain", b"too slow\n", false));
        }
        if len == buf.len() {
            return stream.write_all(&response(431, "text/plain", b"headers over 8 KiB\n", false));
        }
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return stream.write_all(&response(408, "text/plain", b"too slow\n", false));
            }
            Err(e) => return Err(e),
        };
        len += n;
        match parse_request(&buf[..len]) {
            Request::Partial => continue,
            Request::Get { path, head } => break (path, head),
            Request::Refuse(code, body) => {
                return stream.write_all(&response(code, "text/plain", body.as_bytes(), false));
            }
        }
    };
    let path = path.split('?').next().unwrap_or("");
    let reply = match path {
        "/metrics" => {
            refresh_psi(shared);
            response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &shared.metrics.render(),
                head,
            )
        }
        "/status" => response(200, "application/json", &shared.metrics.status_json(), head),
        "/" => response(
            200,
            "text/plain; charset=utf-8",
            b"lowmemd: /metrics (Prometheus), /status (JSON)\n",
            head,
        ),
        _ => response(
            404,
            "text/plain",
            b"not found: try /metrics or /status\n",
            head,
        ),
    };
    stream.write_all(&reply)
}

/// Updates the PSI avg10 gauges from the scope's pressure file, at most every 5 s.
fn refresh_psi(shared: &Shared) {
    {
        let mut last = shared.psi_read.lock();
        if last.is_some_and(|t| t.elapsed() < PSI_READ_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    if let Some((some, full)) = shared.scope.psi_avg10() {
        shared.metrics.psi_some_avg10.set(some);
        shared.metrics.psi_full_avg10.set(full);
    }
}
