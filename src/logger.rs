//! A small stderr logger: one line per record, `lowmemd[LEVEL]: message`. journald and
//! syslog both take this as is.

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
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
