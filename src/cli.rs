//! The command line: every subcommand and flag, with the help text that teaches them.
//! Definitions only; `main.rs` acts on them. Also read by the man-page test, which renders
//! this definition with clap_mangen.

use clap::{Args, Parser, Subcommand};

/// The default metrics address (also `http::DEFAULT_ADDR`; kept literal so this file stands
/// alone for the man-page generator).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:10104";
/// `run --metrics-listen`'s default: a build without the `http` feature serves nothing.
#[cfg(feature = "http")]
const DEFAULT_METRICS_LISTEN: &str = DEFAULT_METRICS_ADDR;
#[cfg(not(feature = "http"))]
const DEFAULT_METRICS_LISTEN: &str = "off";

pub const AFTER_HELP: &str = "\
Exit codes:
  0  clean stop (SIGTERM/SIGINT) or success (check: every file valid)
  1  runtime error
  2  bad usage or configuration (an invalid policy, a cgroup that does not exist)
  3  the kernel lacks a required feature (pidfd_open, Linux 5.3, to kill)
  4  missing privilege (CAP_KILL to kill; try --dry-run to watch only)

Examples:
  lowmemd rank                                what would be killed first, system-wide
  sudo lowmemd run --dry-run                  decide and log, never signal
  lowmemd check --explain policies/desktop.toml
  sudo lowmemd run --policy /etc/lowmemd/policy.toml --event-log /var/log/lowmemd.jsonl
  sudo kill -HUP $(pidof lowmemd)             reload the policy (it also reloads on save)";

/// lowmemd: acts on memory pressure before the kernel OOM killer and before the machine
/// freezes. Watches PSI, vmpressure and available memory of the system or of one cgroup,
/// kills the most expendable process (highest oom_score_adj, then largest) through a pidfd,
/// and confirms its exit.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `lowmemd` alone is `lowmemd run`.
    #[command(flatten)]
    pub run: RunArgs,
    /// Log verbosity: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch memory and kill on pressure (the default command).
    Run(RunArgs),
    /// Print the current kill order, most killable first, with why others are excluded.
    Rank(RankArgs),
    /// Validate policy files (exit 0 when all are valid, 2 otherwise).
    Check(CheckArgs),
    /// Ask a running daemon what it sees and did (through its status socket, else its
    /// metrics endpoint).
    Status(StatusArgs),
    /// What this machine offers lowmemd, and what lowmemd will do here (exit 1 only when it
    /// could not protect the machine at all).
    Doctor(DoctorArgs),
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "FEATURES", value_delimiter = ',', hide = true)]
    pub pretend_missing: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The daemon's --metrics-listen address, asked only when there is no status socket.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR, value_name = "HOST:PORT")]
    pub addr: String,
    /// The daemon's status socket (its `run --status-socket`). Default: status.sock in
    /// $RUNTIME_DIRECTORY, else /run/lowmemd/status.sock (the unit's), when it exists.
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<std::path::PathBuf>,
    /// Print the daemon's JSON as is.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// The policy file (TOML; see policies/README.md). Default: the built-in
    /// policies/default.toml.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also print each valid policy in plain words.
    #[arg(long)]
    pub explain: bool,
    /// Policy files to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    /// Protect one cgroup subtree, named as in /proc/PID/cgroup (e.g. /box) instead of the
    /// whole system. Overrides the policy's `scope`.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Decide, rank and log as usual, but never send a signal (events say `would_kill`).
    #[arg(long)]
    pub dry_run: bool,
    /// Append one JSON object per action to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub event_log: Option<String>,
    /// Behave as if the kernel lacked these features (comma-separated: psi, pidfd,
    /// process_mrelease, process_madvise, madv_pageout), to exercise the fallbacks.
    #[arg(long, value_name = "FEATURES", value_delimiter = ',', hide = true)]
    pub pretend_missing: Vec<String>,
    /// Make the monitor fail as a poll error would, after this many polls, to exercise
    /// what the daemon does when a worker thread dies (it must exit non-zero).
    #[arg(long, value_name = "SAMPLES", hide = true)]
    pub fail_monitor_after: Option<u64>,
    /// Serve /metrics (Prometheus) and /status (JSON) on this address, or `off`.
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN, value_name = "HOST:PORT|off")]
    pub metrics_listen: String,
    /// Serve lmkd's client protocol (Android-style app managers register processes, ask
    /// for kill counts, subscribe to kills) on a SOCK_SEQPACKET socket created at PATH,
    /// mode 0660. A socket passed by Android init (ANDROID_SOCKET_lmkd) or systemd
    /// (LISTEN_FDS, FileDescriptorName=lmkd) is served without this flag.
    #[arg(long, value_name = "PATH")]
    pub lmkd_socket: Option<std::path::PathBuf>,
    /// Serve /status and /metrics also on a Unix socket at PATH (mode 0666), for `lowmemd
    /// status`. Default: status.sock in $RUNTIME_DIRECTORY when set (systemd's
    /// RuntimeDirectory=; the shipped unit's is /run/lowmemd/status.sock).
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<std::path::PathBuf>,
    /// The group that owns the --lmkd-socket file (its members may connect). A member that
    /// is not trusted (see --lmkd-trusted-uid) may act only on its own processes.
    #[arg(long, value_name = "NAME", requires = "lmkd_socket")]
    pub lmkd_socket_group: Option<String>,
    /// An lmkd client running as this user (name or number; repeatable) is trusted as root's
    /// is: it may set any process's adj and send LMK_TARGET and LMK_UPDATE_PROPS (Android's
    /// system_server). Any other client may only act on processes of its own uid, never
    /// below the adj they could set themselves.
    #[arg(long, value_name = "USER")]
    pub lmkd_trusted_uid: Vec<String>,
    /// Disconnect an untrusted lmkd client after this long without a packet (tests).
    #[arg(long, value_name = "MS", hide = true)]
    pub lmkd_idle_timeout_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RankArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show which processes clients registered with the daemon serving lmkd's protocol on
    /// PATH (its `run --lmkd-socket PATH`), from the snapshot it keeps in PATH.registered.
    /// Without it: /run/lowmemd/lmkd.registered when it exists (the systemd unit's).
    #[arg(long, value_name = "PATH")]
    pub lmkd_socket: Option<std::path::PathBuf>,
}
