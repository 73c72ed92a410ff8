//! Logging: to the journal with native fields when systemd connected our stderr to it
//! (PRIORITY from the level, plus LOWMEMD_ACTION, LOWMEMD_PID, LOWMEMD_COMM, LOWMEMD_REASON,
//! LOWMEMD_LEVEL on action records); otherwise one syslog-friendly line per record on
//! stderr, `lowmemd[level]: message`.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "lowmemd[{}]: {}",
                r.level().as_str().to_ascii_lowercase(),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

pub fn init(level: LevelFilter) {
    static LOGGER: Stderr = Stderr;
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten()
        .map(|j| j.with_syslog_identifier("lowmemd".into()).install().is_ok())
        .unwrap_or(false);
    if journal || log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
