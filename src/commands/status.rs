//! `lowmemd status`: asks a running daemon for its `/status` and says it in words.
//!
//! It asks the daemon's status socket when there is one, and believes it only when the
//! peer (SO_PEERCRED) is root, the owner of the socket's directory (the daemon's user, who
//! created it) or the caller: anyone can bind the TCP port while lowmemd does not hold it.
//! Without a socket it asks the TCP port and says so. Either way the answer is read with a
//! size cap and a deadline: whoever answers cannot make `status` hang or grow.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lowmemd::procs::printable;
use lowmemd::report::status_socket::{FILE_NAME, UNIT_RUNTIME_DIR};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::{CmdResult, exit, stdout, write_failed};
use crate::cli::StatusArgs;

/// A `/status` is a few KiB (32 actions at most); anything far beyond is not lowmemd.
const ANSWER_CAP: usize = 1 << 20;
/// The whole exchange, connect to last byte.
const DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends the request on `s` and reads the answer, within [`ANSWER_CAP`] and [`DEADLINE`];
/// the body of a 200, or what went wrong.
fn exchange<S: Read + Write>(
    s: &mut S,
    host: &str,
    started: Instant,
    set_timeout: impl Fn(&S, Duration) -> io::Result<()>,
) -> Result<String, String> {
    // One write: a server that reads one segment and closes must not reset us.
    let request = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let late = || format!("no answer within {} s", DEADLINE.as_secs());
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = DEADLINE.checked_sub(started.elapsed()).ok_or_else(late)?;
        set_timeout(s, left.max(Duration::from_millis(1))).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if raw.len() + n > ANSWER_CAP => {
                return Err(format!(
                    "answer larger than {} KiB: not a lowmemd status",
                    ANSWER_CAP >> 10
                ));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(printable(head.lines().next().unwrap_or("")).into_owned());
    }
    Ok(body.to_string())
}

/// GETs `/status` from `addr` (HOST:PORT); the body, or what went wrong.
pub fn fetch(addr: &str) -> Result<String, String> {
    let started = Instant::now();
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    exchange(&mut s, addr, started, |s, d| s.set_read_timeout(Some(d)))
}

/// The status socket to ask: `--status-socket`, else `$RUNTIME_DIRECTORY/status.sock`,
/// else the unit's; with whether it was named on the command line.
fn socket_path(args: &StatusArgs) -> (PathBuf, bool) {
    match (&args.status_socket, std::env::var_os("RUNTIME_DIRECTORY")) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(d)) => (Path::new(&d).join(FILE_NAME), false),
        (None, None) => (Path::new(UNIT_RUNTIME_DIR).join(FILE_NAME), false),
    }
}

/// Whether a status socket's peer may speak for lowmemd: root, the owner of the socket's
/// directory (who made the socket, or could replace it), or ourselves.
fn trusted(peer_uid: u32, dir_owner: Option<u32>, me: u32) -> bool {
    peer_uid == 0 || peer_uid == me || Some(peer_uid) == dir_owner
}

/// GETs `/status` through the socket at `path`, after checking who serves it.
pub fn fetch_unix(path: &Path) -> Result<String, String> {
    let started = Instant::now();
    // Non-blocking connect: a listener whose backlog is full answers EAGAIN at once
    // instead of holding us past the deadline.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| e.to_string())?;
    let addr = SocketAddrUnix::new(path).map_err(|e| e.to_string())?;
    rustix::net::connect(&fd, &addr).map_err(|e| match e {
        rustix::io::Errno::CONNREFUSED => "refuses connections: is lowmemd running?".into(),
        e => e.to_string(),
    })?;
    rustix::io::ioctl_fionbio(&fd, false).map_err(|e| e.to_string())?;
    let peer = rustix::net::sockopt::socket_peercred(&fd).map_err(|e| e.to_string())?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir_owner = std::fs::metadata(dir.unwrap_or(Path::new(".")))
        .ok()
        .map(|m| m.uid());
    let (uid, me) = (peer.uid.as_raw(), rustix::process::geteuid().as_raw());
    if !trusted(uid, dir_owner, me) {
        return Err(format!(
            "served by pid {} as uid {uid}, neither root, the directory's owner ({}) nor you: not believed",
            peer.pid.as_raw_nonzero(),
            dir_owner.map_or("?".into(), |u| u.to_string())
        ));
    }
    let mut s = UnixStream::from(fd);
    exchange(&mut s, "lowmemd", started, |s, d| {
        s.set_read_timeout(Some(d))
    })
}

/// The status document: from the socket when there is one, else from the TCP port (said
/// on stderr, which `--json` leaves alone).
fn fetch_any(args: &StatusArgs) -> Result<String, (u8, String)> {
    let (path, named) = socket_path(args);
    if std::fs::symlink_metadata(&path).is_ok() {
        return fetch_unix(&path).map_err(|e| (exit::RUNTIME, format!("{}: {e}", path.display())));
    }
    if named {
        return Err((
            exit::USAGE,
            format!("--status-socket {}: no such socket", path.display()),
        ));
    }
    eprintln!(
        "lowmemd status: no status socket at {}: asking http://{} over TCP (whoever holds that port answers)",
        path.display(),
        args.addr
    );
    fetch(&args.addr).map_err(|e| {
        (
            exit::RUNTIME,
            format!(
                "{}: {e} (is lowmemd running with --metrics-listen {}?)",
                args.addr, args.addr
            ),
        )
    })
}

fn kib(v: &serde_json::Value) -> String {
    format!("{} MiB", v.as_u64().unwrap_or(0) / 1024)
}

/// A human summary of a `/status` document.
pub fn render(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lowmemd {} up {} s",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_s"]
    );
    let _ = writeln!(
        s,
        "health:  {}",
        match (v["healthy"].as_bool(), v["scope_ok"].as_bool()) {
            (Some(true), _) => "ok",
            (_, Some(false)) => "NOT PROTECTING: the scope cannot be read (its cgroup is gone?)",
            (Some(false), _) => "NOT PROTECTING: a worker thread is stuck",
            _ => "unknown (an older lowmemd)",
        }
    );
    let _ = writeln!(s, "scope:   {}", v["scope"].as_str().unwrap_or("?"));
    let _ = writeln!(s, "policy:  {}", v["policy"].as_str().unwrap_or("?"));
    let m = &v["memory"];
    let _ = writeln!(
        s,
        "memory:  {} of {} available ({} %); swap {} free of {}",
        kib(&m["available_kib"]),
        kib(&m["total_kib"]),
        v["available_pct"],
        kib(&m["swap_free_kib"]),
        kib(&m["swap_total_kib"])
    );
    if m["swap_total_kib"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            s,
            "judged:  {} % of the scope (available + swap headroom {})",
            v["headroom_pct"],
            kib(&m["swap_headroom_kib"])
        );
    }
    let _ = writeln!(s, "level:   {}", v["current_level"].as_str().unwrap_or("?"));
    for l in v["levels"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  {}", l.as_str().unwrap_or(""));
    }
    let frozen = v["frozen"].as_array().cloned().unwrap_or_default();
    if !frozen.is_empty() {
        let _ = writeln!(s, "frozen:  {} apps", frozen.len());
        let now = Some(lowmemd::clock::wall_ms());
        for f in &frozen {
            let since = match (now, f["since_unix_ms"].as_u64()) {
                (Some(now), Some(t)) => format!("{} s", now.saturating_sub(t) / 1000),
                _ => "?".into(),
            };
            let _ = writeln!(
                s,
                "  {} for pid {} ({}) at {}, frozen {since}, returned {}",
                printable(f["cgroup"].as_str().unwrap_or("?")),
                f["pid"],
                printable(f["comm"].as_str().unwrap_or("?")),
                f["level"].as_str().unwrap_or("?"),
                kib(&f["freed_kib"])
            );
        }
    }
    let actions = v["last_actions"].as_array().cloned().unwrap_or_default();
    if actions.is_empty() {
        let _ = writeln!(s, "last actions: none");
    } else {
        let _ = writeln!(s, "last actions (newest last):");
        for a in actions.iter().rev().take(10).rev() {
            if a["action"] == "thaw" {
                let _ = writeln!(
                    s,
                    "  thaw {} ({}) after {} ms frozen",
                    printable(a["frozen_cgroup"].as_str().unwrap_or("?")),
                    a["reason"].as_str().unwrap_or("?"),
                    a["frozen_ms"]
                );
                continue;
            }
            let what = match a["action"].as_str() {
                Some("pageout" | "would_pageout") => format!("freed {}", kib(&a["freed_kib"])),
                Some("freeze" | "would_freeze") => format!(
                    "froze {} ({} processes), returned {}",
                    printable(a["frozen_cgroup"].as_str().unwrap_or("?")),
                    a["processes"],
                    kib(&a["freed_kib"])
                ),
                _ => format!(
                    "{} rss, exit {}",
                    kib(&a["rss_kib"]),
                    if a["exit_confirmed"] == true {
                        "confirmed"
                    } else {
                        "not confirmed"
                    }
                ),
            };
            let _ = writeln!(
                s,
                "  {} pid {} ({}) adj {}: {} at {} — {}",
                a["action"].as_str().unwrap_or("?"),
                a["pid"],
                printable(a["comm"].as_str().unwrap_or("?")),
                a["effective_adj"],
                a["reason"].as_str().unwrap_or("?"),
                a["level"].as_str().unwrap_or("?"),
                what
            );
        }
    }
    s
}

pub fn run(args: &StatusArgs) -> CmdResult {
    let body = fetch_any(args)?;
    let fail = |e: String| (exit::RUNTIME, e);
    let mut out = stdout();
    if args.json {
        writeln!(out, "{body}")
    } else {
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| fail(format!("not a lowmemd status: {e}")))?;
        write!(out, "{}", render(&v))
    }
    .and_then(|()| out.flush())
    .map_err(write_failed("stdout"))
}

#[cfg(test)]
mod tests {
    use super::{render, trusted};

    #[test]
    fn status_lists_the_frozen_apps_and_says_each_freeze_and_thaw() {
        let v = serde_json::json!({
            "version": "x", "uptime_s": 5, "healthy": true, "scope": "/box", "policy": "p",
            "memory": {}, "current_level": "cached", "levels": [],
            "frozen": [{"cgroup": "/box/app-a.scope", "level": "cached", "pid": 10,
                        "comm": "app\u{1b}", "since_unix_ms": 0, "freed_kib": 2048}],
            "last_actions": [
                {"action": "freeze", "pid": 10, "comm": "app", "effective_adj": 900,
                 "reason": "low_memory", "level": "cached", "frozen_cgroup": "/box/app-a.scope",
                 "processes": 2, "freed_kib": 2048},
                {"action": "thaw", "frozen_cgroup": "/box/app-a.scope",
                 "reason": "pressure_gone", "frozen_ms": 61000}
            ]
        });
        let text = render(&v);
        assert!(text.contains("frozen:  1 apps"), "{text}");
        assert!(
            text.contains("/box/app-a.scope for pid 10 (app\\u{1b}) at cached"),
            "{text}"
        );
        assert!(
            text.contains("froze /box/app-a.scope (2 processes), returned 2 MiB"),
            "{text}"
        );
        assert!(
            text.contains("thaw /box/app-a.scope (pressure_gone) after 61000 ms frozen"),
            "{text}"
        );
    }

    #[test]
    fn root_the_directorys_owner_or_the_caller_may_serve_the_socket() {
        assert!(trusted(0, Some(500), 1000));
        assert!(trusted(500, Some(500), 1000), "the daemon's (dynamic) user");
        assert!(
            trusted(1000, Some(500), 1000),
            "a lowmemd of the caller's own"
        );
        assert!(!trusted(65534, Some(0), 1000), "someone else in /tmp");
        assert!(!trusted(65534, None, 0));
    }
}
