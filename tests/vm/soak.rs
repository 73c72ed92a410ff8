//! The soak of tests/vm.rs and benches/vm_soak.rs (issue 21 item 5): one VM for
//! `LOWMEMD_SOAK_S` seconds of 30 s cycles (tests/vm/soak.sh: cached apps topped up, a
//! runaway, a thrash burst), lowmemd sampled at the end of every cycle. Here: the machine,
//! the cycles parsed back, what "flat" means, and the table the docs carry.
//!
//! The policy is `policies/embedded.toml`: a soak stands for a machine that stays up for
//! months, which is a board's life more than a desktop's, and embedded.toml is the shipped
//! policy that exercises the most of the daemon at once: the page-out tier (adj >= 200 at
//! 40 % available), the thrashing sampler (the part issue 21 saw wake most), the runaway
//! trend and the PSI levels. The built-in policy has the same kill levels and a narrower
//! page-out tier (adj >= 900 at 25 %).

use std::time::Duration;

use crate::harness::{Output, Vm};

pub const POLICY: &str = "embedded.toml";

/// `LOWMEMD_SOAK_S` if set, else `default_s` (the bench: 3600).
pub fn duration_s(default_s: u64) -> u64 {
    std::env::var("LOWMEMD_SOAK_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_s)
}

/// 768 MiB, zram swap of half of RAM, a 2 GiB disk for the thrash files, embedded.toml.
pub fn vm(soak_s: u64) -> Vm {
    Vm {
        name: "soak",
        mem_mib: 768,
        modules: &["zram", "lzo-rle", "virtio_pci", "virtio_blk"],
        script: include_str!("soak.sh"),
        // Set-up (writing the thrash files: 1-2 min under TCG on a loaded host), the last
        // cycle's overrun (its runaway may live 90 s), the dump.
        timeout: Duration::from_secs(soak_s + 420),
        disk_mib: 2048,
        env: vec![("SOAK_S", soak_s.to_string()), ("CYCLE_S", "30".into())],
        ..Vm::default()
    }
    .guard("lowmemd", Some(POLICY))
}

/// One `SOAK cycle=N ...` line, and the kills lowmemd logged during that cycle.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    pub cycle: u64,
    pub t_s: u64,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub swap_kib: u64,
    pub fds: u64,
    /// fds that are not the process cache's (not /proc/PID or a file in it).
    pub other_fds: u64,
    /// Processes the cache holds fds of, and of those the ones that have gone.
    pub cached_procs: u64,
    pub cached_dead: u64,
    pub threads: u64,
    /// Processes (and kernel threads) running in the guest at the sample.
    pub procs: u64,
    pub cpu_ticks: u64,
    /// Of which in the kernel (a page-out's reclaim and compression run in lowmemd).
    pub stime_ticks: u64,
    /// Kernel OOM kills since the soak began.
    pub oom_kill: u64,
    /// lowmemd's kills and page-outs since the soak began (its event log).
    pub kills: u64,
    pub pageouts: u64,
    /// Who ended this cycle's runaway: lowmemd, kernel, exited, survived (`-` in cycle 0).
    pub runaway: String,
    pub runaway_ms: u64,
    pub available_kib: u64,
    /// The event log's length at the sample.
    pub events: usize,
    /// sample_to_kill_ms of the kills logged in this cycle.
    pub latencies: Vec<u64>,
    /// (comm, oom_score_adj, level) of the kills logged in this cycle.
    pub killed: Vec<(String, i64, String)>,
}

pub fn cycles(out: &Output) -> Vec<Cycle> {
    let mut cycles: Vec<Cycle> = out
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("SOAK "))
        .map(parse_line)
        .collect();
    let mut from = 0;
    for c in &mut cycles {
        let to = c.events.min(out.events.len());
        for e in &out.events[from.min(to)..to] {
            if e["action"] == "kill" {
                c.latencies
                    .push(e["sample_to_kill_ms"].as_u64().unwrap_or(u64::MAX));
                c.killed.push((
                    e["comm"].as_str().unwrap_or("?").to_string(),
                    e["oom_score_adj"].as_i64().unwrap_or(i64::MIN),
                    e["level"].as_str().unwrap_or("?").to_string(),
                ));
            }
        }
        from = to;
    }
    cycles
}

fn parse_line(line: &str) -> Cycle {
    let mut c = Cycle::default();
    for kv in line.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let n = || v.parse::<u64>().unwrap_or(0);
        match k {
            "cycle" => c.cycle = n(),
            "t_s" => c.t_s = n(),
            "rss_kib" => c.rss_kib = n(),
            "anon_kib" => c.anon_kib = n(),
            "swap_kib" => c.swap_kib = n(),
            "fds" => c.fds = n(),
            "other_fds" => c.other_fds = n(),
            "cached_procs" => c.cached_procs = n(),
            "cached_dead" => c.cached_dead = n(),
            "threads" => c.threads = n(),
            "procs" => c.procs = n(),
            "cpu_ticks" => c.cpu_ticks = n(),
            "stime_ticks" => c.stime_ticks = n(),
            "oom_kill" => c.oom_kill = n(),
            "kills" => c.kills = n(),
            "pageouts" => c.pageouts = n(),
            "events" => c.events = n() as usize,
            "runaway" => c.runaway = v.to_string(),
            "runaway_ms" => c.runaway_ms = n(),
            "available_kib" => c.available_kib = n(),
            _ => {}
        }
    }
    c
}

/// Nearest-rank percentile (p in 0..=100) of `v`; None when empty.
pub fn percentile(v: &[u64], p: u32) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = (s.len() * p as usize).div_ceil(100).max(1);
    s.get(rank - 1).copied()
}

/// "Flat": the last third of the cycles never goes above the first third's maximum plus
/// `slack`. The first third's maximum, not the first sample, so that warm-up (the process
/// cache filling, buffers reaching their working size, the allocator's arenas) counts as
/// the baseline; a leak, however slow, keeps climbing into the last third, and a leak too
/// slow to clear the slack in the run is too slow to matter for its length. Needs at least
/// three cycles after cycle 0 (which is sampled before any load). Err says what grew.
pub fn flat(
    cycles: &[Cycle],
    what: &str,
    get: fn(&Cycle) -> u64,
    slack: u64,
) -> Result<(), String> {
    let loaded: Vec<u64> = cycles.iter().filter(|c| c.cycle > 0).map(get).collect();
    if loaded.len() < 3 {
        return Err(format!("{what}: only {} cycles", loaded.len()));
    }
    let third = loaded.len() / 3;
    let first = loaded[..third].iter().max().copied().unwrap_or(0);
    let last = loaded[loaded.len() - third..]
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    if last > first + slack {
        Err(format!(
            "{what} grew: the last third's max {last} > the first third's max {first} + {slack} (all: {loaded:?})"
        ))
    } else {
        Ok(())
    }
}

/// The docs' table: one row per `window_s` of the soak (by the cycles' t_s), each with the
/// last sample's RSS, fds and threads (and the window's max RSS), the window's kill latency
/// percentiles, its kills and runaways, and the kernel OOM kills so far.
pub fn table(cycles: &[Cycle], window_s: u64, ticks_per_s: u64) -> String {
    let mut out = String::from(
        "| minutes | cycles | RSS, KiB (max) | RssAnon + swap, KiB | fds (processes) | threads | CPU, s (in the kernel) | kills (runaways by lowmemd) | page-outs | sample_to_kill_ms p50 / p95 / max | kernel OOM kills |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let loaded: Vec<&Cycle> = cycles.iter().filter(|c| c.cycle > 0).collect();
    let mut prev = cycles.first().cloned().unwrap_or_default();
    let mut start = 0;
    while start < loaded.len() {
        let w = loaded[start].t_s / window_s;
        let end = start
            + loaded[start..]
                .iter()
                .take_while(|c| c.t_s / window_s == w)
                .count();
        let win = &loaded[start..end];
        let last = win[win.len() - 1];
        let lat: Vec<u64> = win.iter().flat_map(|c| c.latencies.clone()).collect();
        let pct = |p| percentile(&lat, p).map_or("—".into(), |v| v.to_string());
        let runaways = win.iter().filter(|c| c.runaway == "lowmemd").count();
        out.push_str(&format!(
            "| {}–{} | {} | {} ({}) | {} | {} ({}) | {} | {:.1} ({:.1}) | {} ({runaways}/{}) | {} | {} / {} / {} | {} |\n",
            w * window_s / 60,
            (w + 1) * window_s / 60,
            win.len(),
            last.rss_kib,
            win.iter().map(|c| c.rss_kib).max().unwrap_or(0),
            last.anon_kib + last.swap_kib,
            last.fds,
            last.procs,
            last.threads,
            last.cpu_ticks.saturating_sub(prev.cpu_ticks) as f64 / ticks_per_s as f64,
            last.stime_ticks.saturating_sub(prev.stime_ticks) as f64 / ticks_per_s as f64,
            last.kills.saturating_sub(prev.kills),
            win.len(),
            last.pageouts.saturating_sub(prev.pageouts),
            pct(50),
            pct(95),
            pct(100),
            last.oom_kill,
        ));
        prev = last.clone();
        start = end;
    }
    out
}

/// RSS slack for [`flat`]: lowmemd locks its memory (mlockall), so VmRSS moves only with
/// what it allocates; 256 KiB is room for the allocator's arenas settling, not for a leak
/// per kill (~20 kills per 10 minutes here).
pub const RSS_SLACK_KIB: u64 = 256;
/// lowmemd's process cache holds four fds per process its last scan saw (the guest's ~60
/// processes and kernel threads: ~250 fds), so the total follows the processes alive at
/// that scan, which differ between cycle ends by at most a cycle's eight short-lived ones
/// (a runaway, three cached apps, two readers and their two `timeout`s): 32 fds. The
/// cache's leaks are caught by [`MAX_CACHED_DEAD`], every other fd's by [`OTHER_FD_SLACK`].
pub const FD_SLACK: u64 = 32;
/// The fds that are not the cache's (PSI triggers, eventfds, the event log, the policy
/// watch) are fixed; one spare for a pidfd whose victim is still dying at the sample (a
/// kill "NOT confirmed within 1000 ms" keeps its pidfd until the exit). A pidfd leaked
/// per kill (three or more per cycle) clears it within a cycle.
pub const OTHER_FD_SLACK: u64 = 1;
/// Processes gone but still in the cache at a sample: at most what has died since its last
/// scan, a cycle's eight short-lived processes.
pub const MAX_CACHED_DEAD: u64 = 8;

/// The soak's checks, each `PASS name: seen` or `FAIL name: seen`: no kernel OOM kill;
/// every runaway killed by lowmemd; nothing else below adj 900 killed, the user's app
/// alive; RSS, fds and threads flat; lowmemd alive at the end and stopped cleanly.
pub fn verdicts(out: &Output, cycles: &[Cycle]) -> Vec<String> {
    let get = |k: &str| out.results.get(k).map_or("?", String::as_str).to_string();
    let mut v = Vec::new();
    let mut check = |name: &str, ok: bool, seen: String| {
        v.push(format!(
            "{} {name}: {seen}",
            if ok { "PASS" } else { "FAIL" }
        ));
    };
    let loaded: Vec<&Cycle> = cycles.iter().filter(|c| c.cycle > 0).collect();
    check(
        "cycles",
        loaded.len() >= 3 && get("cycles") == loaded.len().to_string(),
        format!("{} sampled, {} run", loaded.len(), get("cycles")),
    );
    check(
        "kernel_oom_kills",
        get("oom_kill_delta") == "0" && get("dmesg_out_of_memory") == "0",
        format!(
            "{} (/proc/vmstat oom_kill), {} 'Out of memory' in dmesg",
            get("oom_kill_delta"),
            get("dmesg_out_of_memory")
        ),
    );
    let not_lowmemd: Vec<String> = loaded
        .iter()
        .filter(|c| c.runaway != "lowmemd")
        .map(|c| format!("cycle {}: {} after {} ms", c.cycle, c.runaway, c.runaway_ms))
        .collect();
    check(
        "runaways_killed_by_lowmemd",
        !loaded.is_empty() && not_lowmemd.is_empty(),
        format!(
            "{}/{}; runaway lived p50 {} ms, max {} ms{}",
            loaded.len() - not_lowmemd.len(),
            loaded.len(),
            percentile(&loaded.iter().map(|c| c.runaway_ms).collect::<Vec<_>>(), 50).unwrap_or(0),
            loaded.iter().map(|c| c.runaway_ms).max().unwrap_or(0),
            if not_lowmemd.is_empty() {
                String::new()
            } else {
                format!("; not by lowmemd: {not_lowmemd:?}")
            }
        ),
    );
    let others: Vec<String> = cycles
        .iter()
        .flat_map(|c| c.killed.iter().map(move |k| (c.cycle, k)))
        .filter(|(_, (comm, adj, _))| comm != "runaway" && *adj < 900)
        .map(|(n, (comm, adj, level))| format!("cycle {n}: {comm} (adj {adj}, level {level})"))
        .collect();
    check(
        "only_runaways_below_adj_900",
        others.is_empty() && get("fg_alive") == "1",
        format!(
            "user's app alive {}; other kills below adj 900: {others:?}",
            get("fg_alive")
        ),
    );
    for (what, f, slack) in [
        (
            "rss_kib",
            (|c: &Cycle| c.rss_kib) as fn(&Cycle) -> u64,
            RSS_SLACK_KIB,
        ),
        ("fds", |c: &Cycle| c.fds, FD_SLACK),
        ("other_fds", |c: &Cycle| c.other_fds, OTHER_FD_SLACK),
        ("threads", |c: &Cycle| c.threads, 0),
    ] {
        let r = flat(cycles, what, f, slack);
        let range = |v: Vec<u64>| {
            format!(
                "{}..{}",
                v.iter().min().unwrap_or(&0),
                v.iter().max().unwrap_or(&0)
            )
        };
        let seen = match &r {
            Ok(()) => format!(
                "{} over the run",
                range(loaded.iter().map(|c| f(c)).collect())
            ),
            Err(e) => e.clone(),
        };
        check(&format!("{what}_flat"), r.is_ok(), seen);
    }
    let dead = loaded.iter().map(|c| c.cached_dead).max().unwrap_or(0);
    check(
        "cache_drops_the_dead",
        dead <= MAX_CACHED_DEAD,
        format!(
            "at most {dead} gone processes still cached at a sample (of {} cached)",
            loaded.iter().map(|c| c.cached_procs).max().unwrap_or(0)
        ),
    );
    check(
        "lowmemd_alive",
        get("lowmemd_alive") == "1" && get("lowmemd_exit") == "0",
        format!(
            "alive {}, exit {} on SIGTERM",
            get("lowmemd_alive"),
            get("lowmemd_exit")
        ),
    );
    v
}
