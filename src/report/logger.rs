//! Logging: to the journal with native fields when systemd connected our stderr to it
//! (PRIORITY from the level, plus LOWMEMD_ACTION, LOWMEMD_PID, LOWMEMD_COMM, LOWMEMD_REASON,
//! LOWMEMD_LEVEL on action records); otherwise one syslog-friendly line per record on
//! stderr, `lowmemd[level]: message`.
//!
//! Records are formatted by the caller and written by the `log-writer` thread through a
//! bounded queue (`handoff.rs`): a journald that stalls under memory pressure, or a stderr
//! pipe nobody reads, must never hold up a kill. Control characters in a message are
//! escaped (process names are chosen by the processes), and each line of a multi-line
//! message carries the prefix, so no message can forge another.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use super::handoff::{Handoff, LOG_DROPPED};
use super::journal::{self, Journal};

/// Records waiting for the writer; a burst beyond this is dropped (and counted).
const QUEUE: usize = 1024;

/// One record, owned, for the writer thread.
struct Line {
    level: Level,
    message: String,
    fields: Vec<(String, String)>,
}

struct QueueLogger {
    out: Handoff<Line>,
}

/// Collects a record's key-values (the journal fields) as owned strings.
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

impl Log for QueueLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut fields = Fields(Vec::new());
        let _ = r.key_values().visit(&mut fields);
        self.out.send(Line {
            level: r.level(),
            message: r.args().to_string(),
            fields: fields.0,
        });
    }

    fn flush(&self) {}
}

static LOGGER: OnceLock<QueueLogger> = OnceLock::new();

/// `s` with control characters other than newline and tab escaped (`\u{1b}`), so that a
/// process-chosen string cannot move the cursor, recolour a terminal or forge a record.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The stderr form of a record: every line prefixed, control characters escaped.
fn stderr_lines(level: Level, message: &str) -> String {
    let tag = level.as_str().to_ascii_lowercase();
    let mut out = String::with_capacity(message.len() + 16);
    for line in escape_controls(message).split('\n') {
        out.push_str("lowmemd[");
        out.push_str(&tag);
        out.push_str("]: ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

enum Sink {
    Journal(Journal),
    Stderr,
}

impl Sink {
    fn write(&self, line: Line) {
        match self {
            Sink::Stderr => {
                let _ =
                    std::io::stderr().write_all(stderr_lines(line.level, &line.message).as_bytes());
            }
            Sink::Journal(journal) => journal.write(line.level, &line.message, &line.fields),
        }
    }
}

/// Installs the logger and starts its writer thread. Before this (and if the thread
/// cannot start) records go nowhere.
pub fn init(level: LevelFilter) {
    let sink = journal::connected().map_or(Sink::Stderr, Sink::Journal);
    let Ok(out) = Handoff::spawn("log-writer", QUEUE, &LOG_DROPPED, move |line| {
        sink.write(line)
    }) else {
        let _ = writeln!(
            std::io::stderr(),
            "lowmemd: cannot start the log writer thread"
        );
        return;
    };
    let logger = LOGGER.get_or_init(|| QueueLogger { out });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Gives the writer up to `timeout` to write what is queued (before the process exits).
pub fn drain(timeout: Duration) {
    if let Some(l) = LOGGER.get() {
        l.out.drain(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_name_cannot_forge_a_line_or_reach_the_terminal() {
        let comm = "x\u{1b}[2J\rlowmemd[info]: fake";
        let out = stderr_lines(Level::Warn, &format!("killed pid 7 ({comm})"));
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(
            out.contains("\\u{1b}[2J\\u{d}lowmemd[info]: fake"),
            "{out:?}"
        );
        // A message of several lines keeps the prefix on each.
        let two = stderr_lines(Level::Error, "invalid policy:\np.toml:1:1: bad");
        assert_eq!(
            two,
            "lowmemd[error]: invalid policy:\nlowmemd[error]: p.toml:1:1: bad\n"
        );
    }
}
