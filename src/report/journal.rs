//! The journal sink of `logger.rs` (the `journald` feature): native fields through
//! systemd-journal-logger when systemd connected our stderr to the journal.

use log::{Level, Log, Record};
use systemd_journal_logger::JournalLog;

use super::logger::escape_controls;

pub struct Journal(JournalLog);

/// The journal, when our stderr is connected to it.
pub fn connected() -> Option<Journal> {
    if !systemd_journal_logger::connected_to_journal() {
        return None;
    }
    let log = JournalLog::new().ok()?;
    Some(Journal(log.with_syslog_identifier("lowmemd".into())))
}

impl Journal {
    pub fn write(&self, level: Level, message: &str, fields: &[(String, String)]) {
        let fields: Vec<(&str, &str)> = (fields.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let message = escape_controls(message);
        self.0.log(
            &Record::builder()
                .level(level)
                .target("lowmemd")
                .args(format_args!("{message}"))
                .key_values(&fields)
                .build(),
        );
    }
}
