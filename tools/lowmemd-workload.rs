//! lowmemd-workload: a memory load generator for lowmemd's tests and benchmarks, and for
//! trying lowmemd by hand. It joins the given cgroups, takes an oom_score_adj and a name,
//! then allocates (and touches) anonymous memory at a set rate, and holds it until killed.
//!
//! Prints `ready` once `--mib` is reached (or at once when it grows without bound).
//! `--compress-ratio` sets how well its memory compresses in zram; `--cycle-ms` keeps
//! re-reading it (an app in use, whose working set must stay in RAM).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Write our pid into this cgroup.procs file first (repeat for v1 and cgroup2).
    #[arg(long, value_name = "FILE")]
    cgroup_procs: Vec<std::path::PathBuf>,
    /// oom_score_adj to take (raising needs no privilege; lowering below the inherited value
    /// needs CAP_SYS_RESOURCE).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    adj: i32,
    /// Process name (comm), at most 15 bytes.
    #[arg(long)]
    name: Option<String>,
    /// Total anonymous memory to allocate, in MiB; 0 grows without bound.
    #[arg(long, default_value_t = 0)]
    mib: u64,
    /// Allocation rate in MiB/s; 0 allocates as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// After allocating, map this file (shared, read-only) and read every page of it over
    /// and over: in a memcg smaller than the file, the page cache thrashes.
    #[arg(long, value_name = "FILE", conflicts_with = "hold_file")]
    reread: Option<std::path::PathBuf>,
    /// After allocating, read this file twice (so its pages land on the *active* file list,
    /// which neither the kernel nor lowmemd counts as cheaply reclaimable), then map it
    /// shared and hold the mapping: hot file pages that only a page-out gives back.
    #[arg(long, value_name = "FILE")]
    hold_file: Option<std::path::PathBuf>,
    /// Ignored arguments that only make the command line long (tests of how much of a
    /// cmdline lowmemd reads).
    #[arg(long, value_name = "TEXT", hide = true)]
    pad: Vec<String>,
    /// Fault each page in by writing one byte to it instead of filling it with data:
    /// as fast as the kernel hands out pages (a runaway at full speed), but the pages
    /// compress to almost nothing.
    #[arg(long)]
    touch_only: bool,
    /// A latency probe instead of a load: after allocating `--mib`, every 50 ms read every
    /// page of that memory and `--probe-file`, and note how late each tick finished; on
    /// SIGTERM print `probe ticks=N max_ms=.. p99_ms=.. stalled_ms=..` and exit 0.
    /// `stalled_ms` sums how far ticks finished beyond one period after they were due.
    #[arg(long, conflicts_with_all = ["reread", "hold_file"])]
    probe: bool,
    /// The small file the probe reads on every tick.
    #[arg(long, value_name = "FILE", requires = "probe")]
    probe_file: Option<std::path::PathBuf>,
    /// How well the memory compresses (zram's orig_data_size / compr_data_size, roughly):
    /// each 4 KiB page holds 4096 / RATIO pseudo-random bytes, the rest zeros. 2 is program
    /// data; 3 is what zram achieves on a typical desktop (the ~3:1 of issue 24).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    compress_ratio: u32,
    /// After allocating, read one byte of every page of the memory every MS milliseconds
    /// (back to back when a pass takes longer): a working set that must stay in RAM, so
    /// that several of these over RAM make a machine with swap thrash.
    #[arg(long, value_name = "MS", conflicts_with_all = ["reread", "hold_file", "probe"])]
    cycle_ms: Option<u64>,
    /// Fork this many idle children first (same cgroups, adj and name), each touching
    /// `--child-kib` of its own memory and sleeping until killed: a crowded process table
    /// in about a second, where spawning as many programs would take minutes. They die
    /// with this process (PR_SET_PDEATHSIG), which reaps nothing (SIGCHLD ignored). With
    /// `--mib 0` this process then allocates nothing.
    #[arg(long, default_value_t = 0, conflicts_with_all = ["reread", "hold_file", "probe"])]
    children: u32,
    /// Memory each child touches, in KiB.
    #[arg(long, default_value_t = 64, requires = "children")]
    child_kib: usize,
}

const CHUNK: usize = 1 << 20;

/// 1 MiB of memory that compresses about `ratio`:1: each 4 KiB page starts with 4096 /
/// `ratio` pseudo-random bytes (which no compressor shrinks), the rest zeros (which cost
/// almost nothing). Every page is written, so all are really faulted in (a zero fill could
/// map the shared zero page), and zram cannot store them as "same-filled" pages for free,
/// which would make swap look faster than it is.
fn chunk(seed: &mut u64, ratio: u32) -> Vec<u8> {
    let random = (4096 / ratio as usize).next_multiple_of(8).min(4096);
    let mut v = vec![0u8; CHUNK];
    for page in v.chunks_mut(4096) {
        for word in page[..random].chunks_mut(8) {
            // xorshift64
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            word.copy_from_slice(&seed.to_ne_bytes());
        }
    }
    v
}

/// Maps `path` whole, shared and read-only, the way programs map their code and data files.
fn map_file(path: &std::path::Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty file",
        ));
    }
    // SAFETY: the mapping is read-only and only ever read; the files mapped are test data
    // that nothing truncates while this process lives (a truncation would fault us, the load
    // generator, not lowmemd).
    #[allow(unsafe_code)]
    unsafe {
        memmap2::Mmap::map(&file)
    }
}

/// Reads one byte of every page (faulting it in if it was evicted); returns their sum so
/// the reads cannot be optimised away.
fn touch_pages(map: &[u8]) -> u64 {
    let page = rustix::param::page_size();
    map.iter()
        .step_by(page)
        .map(|b| u64::from(std::hint::black_box(*b)))
        .sum()
}

/// 1 MiB with one byte written per 4 KiB page: every page faulted in, nothing else done.
fn touched() -> Vec<u8> {
    let mut v = vec![0u8; CHUNK];
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    v
}

/// Forks `n` idle children (see `--children`). Returns once all are forked.
fn fork_children(n: u32, kib: usize) {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler; ignoring
    // SIGCHLD makes the kernel reap the children as they die, so none lingers as a zombie
    // (which lowmemd would see, and which would hold a pid).
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let parent = rustix::process::getpid();
    for i in 0..n {
        // SAFETY: this process is single-threaded here (no thread was started: the probe's
        // signal thread is not, `--children` conflicts with it), so the child is a complete
        // copy and may allocate; it never returns into the parent's code below.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::fork() };
        match pid {
            0 => idle_child(parent, kib),
            p if p < 0 => {
                eprintln!(
                    "lowmemd-workload: fork of child {i}: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(2);
            }
            _ => {}
        }
    }
}

/// A forked child: dies with its parent, touches `kib` KiB, sleeps until killed.
fn idle_child(parent: rustix::process::Pid, kib: usize) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // The parent died before the death signal was armed.
    if rustix::process::getppid() != Some(parent) {
        std::process::exit(0);
    }
    let mut mem = vec![0u8; kib * 1024];
    for page in mem.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&mem);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

const PROBE_PERIOD: Duration = Duration::from_millis(50);

/// The latency probe (`--probe`): ticks every [`PROBE_PERIOD`] until SIGTERM or SIGINT,
/// each touching `held` and reading `file`, then prints how late the ticks finished. A tick
/// that overran the next ones' due times swallows them: a 2 s stall counts once, as 2 s.
fn probe(held: &[Vec<u8>], file: Option<&std::path::Path>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop)).expect("signal handler");
    }
    let start = Instant::now();
    let mut late_us: Vec<u64> = Vec::new();
    let mut tick = 1u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = start + PROBE_PERIOD * tick;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for chunk in held {
            std::hint::black_box(touch_pages(chunk));
        }
        if let Some(path) = file {
            std::hint::black_box(std::fs::read(path).map(|b| b.len()).unwrap_or(0));
        }
        let late = Instant::now().saturating_duration_since(due);
        late_us.push(u64::try_from(late.as_micros()).unwrap_or(u64::MAX));
        // The next tick still due: one period on, or the first not yet passed.
        let elapsed = start.elapsed().as_micros();
        let next = u32::try_from(elapsed / PROBE_PERIOD.as_micros() + 1).unwrap_or(u32::MAX);
        tick = next.max(tick + 1);
    }
    let period_us = u64::try_from(PROBE_PERIOD.as_micros()).unwrap_or(u64::MAX);
    let stalled_us: u64 = late_us.iter().map(|l| l.saturating_sub(period_us)).sum();
    let mut sorted = late_us.clone();
    sorted.sort_unstable();
    let p99 = sorted
        .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0);
    let ms = |us: u64| format!("{}.{}", us / 1000, us % 1000 / 100);
    println!(
        "probe ticks={} max_ms={} p99_ms={} stalled_ms={}",
        late_us.len(),
        ms(sorted.last().copied().unwrap_or(0)),
        ms(p99),
        ms(stalled_us)
    );
}

/// `--cycle-ms`: reads every page of `held` once per `period`, forever. A pass that takes
/// longer than the period (pages coming back from swap) is followed by the next at once.
fn cycle(held: &[Vec<u8>], period: Duration) -> ! {
    loop {
        let due = Instant::now() + period;
        for chunk in held {
            std::hint::black_box(touch_pages(chunk));
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn main() {
    let args = Args::parse();
    let pid = std::process::id().to_string();
    for f in &args.cgroup_procs {
        if let Err(e) = std::fs::write(f, &pid) {
            eprintln!("lowmemd-workload: {}: {e}", f.display());
            std::process::exit(2);
        }
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", args.adj.to_string()) {
        eprintln!("lowmemd-workload: oom_score_adj {}: {e}", args.adj);
        std::process::exit(2);
    }
    if let Some(name) = &args.name {
        let c = std::ffi::CString::new(name.as_bytes()).expect("name without NUL");
        let _ = rustix::thread::set_name(&c);
    }
    if args.children > 0 {
        fork_children(args.children, args.child_kib);
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    let say = |what: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{what}");
        let _ = out.flush();
    };
    // A probe or a crowd of children with `--mib 0` touches no memory; only a load grows
    // without bound.
    let unbounded = args.mib == 0 && !args.probe && args.children == 0;
    if unbounded {
        say("ready");
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    while unbounded || (held.len() as u64) < args.mib {
        held.push(if args.touch_only {
            touched()
        } else {
            chunk(&mut seed, args.compress_ratio)
        });
        if args.rate > 0 {
            let due = Duration::from_secs_f64(held.len() as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    if let Some(path) = &args.hold_file {
        for _ in 0..2 {
            let copied = std::fs::File::open(path)
                .and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()));
            if let Err(e) = copied {
                eprintln!("lowmemd-workload: {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    let map = args
        .reread
        .as_ref()
        .or(args.hold_file.as_ref())
        .map(|path| {
            let map = map_file(path).unwrap_or_else(|e| {
                eprintln!("lowmemd-workload: {}: {e}", path.display());
                std::process::exit(2);
            });
            std::hint::black_box(touch_pages(&map));
            map
        });
    say("ready");
    if args.probe {
        probe(&held, args.probe_file.as_deref());
        return;
    }
    if let Some(ms) = args.cycle_ms {
        cycle(&held, Duration::from_millis(ms));
    }
    if let (Some(map), true) = (&map, args.reread.is_some()) {
        loop {
            std::hint::black_box(touch_pages(map));
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
