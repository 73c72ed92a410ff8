//! The subcommands, one file each: `run` (the daemon: start-up probes and thread wiring),
//! `rank`, `check`, `doctor` and `status` (one-shot). Each returns a [`CmdResult`]: an exit
//! code and a message on failure.

pub mod check;
pub mod doctor;
pub mod rank;
pub mod run;
// `status` asks a daemon's status socket or /status: both come with `http`.
#[cfg(feature = "http")]
pub mod status;
#[cfg(not(feature = "http"))]
#[path = "status_off.rs"]
pub mod status;

// What an optional feature adds to `run` and `rank`, or, without it, the refusal of every
// flag that asks for it (`lowmemd::features`).
#[cfg(feature = "http")]
mod http;
#[cfg(not(feature = "http"))]
#[path = "http_off.rs"]
mod http;
#[cfg(feature = "lmkd")]
mod lmkd;
#[cfg(not(feature = "lmkd"))]
#[path = "lmkd_off.rs"]
mod lmkd;

use lowmemd::policy::Policy;
use lowmemd::policy::store::PolicyStore;
use lowmemd::procs::ProcRoot;
use lowmemd::scope::{Scope, ScopeError};

use crate::cli::{PolicyArgs, ScopeArgs};

/// Exit codes: a public interface, never renumber.
pub mod exit {
    pub const RUNTIME: u8 = 1;
    /// Bad command line or configuration (clap uses 2 for usage errors too).
    pub const USAGE: u8 = 2;
    /// The kernel lacks a feature lowmemd needs for what was asked.
    pub const KERNEL: u8 = 3;
    /// Missing privilege for what was asked.
    pub const PRIVILEGE: u8 = 4;
}

/// `Err((exit code, message))`.
pub type CmdResult = Result<(), (u8, String)>;

pub fn load_store(args: &PolicyArgs) -> Result<PolicyStore, (u8, String)> {
    match &args.policy {
        None => Ok(PolicyStore::builtin()),
        Some(path) => PolicyStore::from_file(path)
            .map_err(|e| (exit::USAGE, format!("invalid policy, not starting:\n{e}"))),
    }
}

/// `--cgroup` wins over the policy's `scope`.
pub fn resolve_scope(args: &ScopeArgs, policy: &Policy) -> Result<Scope, (u8, String)> {
    let proc = ProcRoot::default();
    let scope = match args.cgroup.as_ref().or(policy.scope.as_ref()) {
        Some(cg) => Scope::cgroup(proc, cg),
        None => Scope::system(proc),
    };
    scope.map_err(|e| {
        let code = match e {
            ScopeError::NotAbsolute(_) | ScopeError::NoSuchCgroup { .. } => exit::USAGE,
            ScopeError::NoMemoryController(_) => exit::KERNEL,
            ScopeError::Io { .. } | ScopeError::Malformed { .. } | ScopeError::Proc(_) => {
                exit::RUNTIME
            }
        };
        (code, e.to_string())
    })
}

/// Standard output or error that a closed pipe cannot crash. Rust ignores SIGPIPE, so a
/// reader that left (`lowmemd check *.toml | head -1`) turns the next write into EPIPE, on
/// which `println!` panics (exit 101). The reader's leaving is its choice, not our failure:
/// later writes are dropped and the command keeps its own result. Any other write error is
/// returned (`> /dev/full`).
pub struct Out<W: std::io::Write> {
    inner: W,
    gone: bool,
}

impl<W: std::io::Write> Out<W> {
    pub fn new(inner: W) -> Self {
        Out { inner, gone: false }
    }

    /// What `write!` and `writeln!` call.
    pub fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        if self.gone {
            return Ok(());
        }
        let written = self.inner.write_fmt(args);
        self.reader_gone_is_ok(written)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.gone {
            return Ok(());
        }
        let flushed = self.inner.flush();
        self.reader_gone_is_ok(flushed)
    }

    fn reader_gone_is_ok(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(())
            }
            r => r,
        }
    }
}

pub fn stdout() -> Out<std::io::StdoutLock<'static>> {
    Out::new(std::io::stdout().lock())
}

pub fn stderr() -> Out<std::io::StderrLock<'static>> {
    Out::new(std::io::stderr().lock())
}

/// The command's result when writing to `stream` failed other than by the reader leaving.
pub fn write_failed(stream: &'static str) -> impl Fn(std::io::Error) -> (u8, String) {
    move |e| (exit::RUNTIME, format!("writing to {stream}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::Out;

    /// A writer whose reader is gone after `left` writes.
    struct Pipe {
        left: usize,
        got: String,
    }

    impl std::io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.left -= 1;
            self.got.push_str(std::str::from_utf8(buf).unwrap());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_stops_output_without_error() {
        let mut out = Out::new(Pipe {
            left: 1,
            got: String::new(),
        });
        writeln!(out, "one").unwrap();
        writeln!(out, "two").unwrap();
        out.inner.left = 5;
        writeln!(out, "three").unwrap();
        out.flush().unwrap();
        assert_eq!(out.inner.got, "one\n", "nothing after the reader left");
    }

    #[test]
    fn other_write_errors_are_errors() {
        let mut out = Out::new(std::fs::File::open("/dev/null").unwrap());
        assert!(writeln!(out, "read-only").is_err());
    }
}
