//! `lowmemd status`: asks a running daemon for its `/status` and says it in words.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use lowmemd::procs::printable;

use super::{CmdResult, exit, stdout, write_failed};
use crate::cli::StatusArgs;

/// GETs `/status` from `addr` (HOST:PORT); the body, or what went wrong.
pub fn fetch(addr: &str) -> Result<String, String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s =
        TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
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
    let actions = v["last_actions"].as_array().cloned().unwrap_or_default();
    if actions.is_empty() {
        let _ = writeln!(s, "last actions: none");
    } else {
        let _ = writeln!(s, "last actions (newest last):");
        for a in actions.iter().rev().take(10).rev() {
            let what = match a["action"].as_str() {
                Some("pageout" | "would_pageout") => format!("freed {}", kib(&a["freed_kib"])),
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
    let fail = |e: String| {
        (
            exit::RUNTIME,
            format!(
                "{}: {e} (is lowmemd running with --metrics-listen {}?)",
                args.addr, args.addr
            ),
        )
    };
    let body = fetch(&args.addr).map_err(fail)?;
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
