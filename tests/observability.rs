//! What operators see: the scrape is valid Prometheus text (promtool), the alert rules and
//! the dashboard refer only to metrics that exist, the counters agree with the event log
//! after a real pressure scenario, and hostile HTTP clients cannot delay a kill.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Scenario, Workload, actions, cached_apps, http_get, metric_sum};

/// promtool, from Debian's prometheus package (.ci/run installs it); panics when it is missing
/// (the test that needs it is `#[ignore]`d for that).
fn promtool() -> &'static str {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "promtool is not installed (apt-get install prometheus)");
    "promtool"
}

/// A dry-run daemon on the whole system with metrics on a free loopback port.
struct DryDaemon {
    child: std::process::Child,
    addr: String,
}

impl DryDaemon {
    fn start() -> DryDaemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lowmemd"))
            .args(["run", "--dry-run", "--metrics-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut addr = None;
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line.split("metrics on http://").nth(1) {
                addr = Some(rest.split('/').next().unwrap().to_string());
                break;
            }
            line.clear();
        }
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        DryDaemon {
            child,
            addr: addr.expect("metrics endpoint announced"),
        }
    }
}

impl Drop for DryDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metric names a scrape exposes (histograms with their _bucket/_sum/_count series).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut f = rest.split(' ');
            let (name, kind) = (f.next().unwrap(), f.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("lowmemd_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn rules_and_dashboard_use_real_metrics() {
    let d = DryDaemon::start();
    let (code, body) = http_get(&d.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let names = exposed_names(&body);
    for must in [
        "lowmemd_kills_total",
        "lowmemd_pageouts_total",
        "lowmemd_signal_to_exit_seconds",
        "lowmemd_build_info",
    ] {
        assert!(names.contains(must), "{must} missing from the scrape");
    }
    let rules = std::fs::read_to_string("deploy/prometheus/lowmemd-rules.yml").unwrap();
    let dash_text = std::fs::read_to_string("deploy/grafana/lowmemd-dashboard.json").unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).expect("dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10);
    for (what, text) in [("rules", rules.clone()), ("dashboard", exprs.join("\n"))] {
        let unknown: Vec<_> = referenced_names(&text)
            .difference(&names)
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "{what} refers to metrics that do not exist: {unknown:?}"
        );
    }
    let (code, status) = http_get(&d.addr, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["current_level"], "none");
    assert_eq!(status["levels"].as_array().unwrap().len(), 4);
}

#[test]
#[ignore = "needs promtool (Debian package prometheus; .ci/run installs it): cargo test -- --include-ignored"]
fn promtool_accepts_the_scrape_and_the_rules() {
    let promtool = promtool();
    let d = DryDaemon::start();
    let (code, body) = http_get(&d.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(promtool)
        .args(["check", "rules", "deploy/prometheus/lowmemd-rules.yml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_errors_are_proper_status_codes() {
    let d = DryDaemon::start();
    assert_eq!(http_get(&d.addr, "/nope").unwrap().0, 404);
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn counters_agree_with_the_event_log() {
    let mut sc = Scenario::start("metrics", 256, &[]);
    let apps = cached_apps(&sc.cg, 170);
    let events = sc.daemon.events();
    let (code, text) = http_get(&sc.daemon.metrics_addr(), "/metrics").unwrap();
    let (_, status) = http_get(&sc.daemon.metrics_addr(), "/status").unwrap();
    sc.daemon.stop();
    assert_eq!(code, 200);
    assert!(apps.fg.alive() && apps.small.alive());
    let kills = actions(&events, "kill");
    assert!(kills.len() >= 2, "{events:#?}");
    let confirmed = kills.iter().filter(|k| k["exit_confirmed"] == true).count();
    assert_eq!(
        metric_sum(&text, "lowmemd_kills_total") as usize,
        kills.len()
    );
    assert_eq!(
        metric_sum(&text, "lowmemd_decision_to_signal_seconds_count") as usize,
        kills.len()
    );
    assert_eq!(
        metric_sum(&text, "lowmemd_signal_to_exit_seconds_count") as usize,
        confirmed
    );
    // Each kill is counted under the level and reason its record names (the growing
    // foreground may meet the runaway level before the low one: the same victims).
    for k in &kills {
        let (level, reason) = (k["level"].as_str().unwrap(), k["reason"].as_str().unwrap());
        let labelled: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("lowmemd_kills_total{")
                    && l.contains(&format!(r#"level="{level}""#))
                    && l.contains(&format!(r#"reason="{reason}""#))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let recorded = kills
            .iter()
            .filter(|o| o["level"] == level && o["reason"] == reason)
            .count();
        assert_eq!(labelled as usize, recorded, "{level}/{reason}");
    }
    assert!(metric_sum(&text, "lowmemd_pressure_events_total") >= 1.0);
    // Each kill record carries the triggering snapshot.
    for k in &kills {
        assert!(
            k.get("psi_some_avg10").is_some() && k.get("swap_free_kib").is_some(),
            "{k}"
        );
    }
    // /status shows the same kills as the event log, newest last.
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let ring: Vec<_> = status["last_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "kill")
        .collect();
    assert_eq!(ring.len(), kills.len());
    assert_eq!(ring.last().unwrap()["pid"], kills.last().unwrap()["pid"]);
}

#[test]
#[ignore = "needs root and a cgroup-v1 memory controller: run as root with cargo test -- --include-ignored"]
fn hostile_http_clients_do_not_delay_a_kill() {
    let mut sc = Scenario::start("http-abuse", 256, &[]);
    let addr = sc.daemon.metrics_addr();
    // Idle clients that connect and never send, plus a flood, plus garbage and a 1 MiB header.
    let idle: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    let abuse = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let flood: Vec<TcpStream> = (0..500)
                .filter_map(|_| TcpStream::connect(&addr).ok())
                .collect();
            let mut garbage = TcpStream::connect(&addr).unwrap();
            let _ = garbage.write_all(&[0xffu8; 4096]);
            let mut big = TcpStream::connect(&addr).unwrap();
            let _ = big.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ");
            let _ = big.write_all(&vec![b'a'; 1 << 20]);
            (flood, garbage, big)
        })
    };
    let small = Workload::ready(&sc.cg, "small", 0, 8);
    let mut leak = Workload::spawn(&sc.cg, "leak", 0, 0, 100);
    assert!(leak.wait_ready());
    let died = leak.wait_dead(Duration::from_secs(8));
    let held = abuse.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let events = sc.daemon.events();
    assert!(died, "the leak must die");
    assert_eq!(
        sc.cg.oom_kills(),
        0,
        "lowmemd, not the kernel, must have killed it"
    );
    let kills = actions(&events, "kill");
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["pid"], leak.pid);
    assert!(
        kills[0]["sample_to_kill_ms"].as_u64().unwrap() < 100,
        "{}",
        kills[0]
    );
    drop(held);
    drop(idle);
    // Once the abusers are gone the endpoint answers again.
    let mut ok = false;
    for _ in 0..50 {
        if http_get(&addr, "/metrics")
            .is_ok_and(|(c, b)| c == 200 && b.contains("lowmemd_kills_total"))
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "a later scrape must succeed");
    sc.daemon.stop();
    assert!(small.alive());
}
