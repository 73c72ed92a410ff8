//! The event log: one JSON object per line per action, appended and flushed line by line so
//! a crash loses nothing already decided.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use parking_lot::Mutex;
use serde::Serialize;

/// Where events go: nowhere, stdout, or an appended file.
pub struct EventLog {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl EventLog {
    pub fn none() -> Self {
        EventLog { out: None }
    }

    /// `-` is stdout; anything else is a file opened for append (created if missing).
    pub fn open(target: &str) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(target))?,
            )
        };
        Ok(EventLog {
            out: Some(Mutex::new(out)),
        })
    }

    pub fn record(&self, event: &impl Serialize) {
        let Some(out) = &self.out else { return };
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                log::error!("event log: cannot serialise an event: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut w = out.lock();
        if let Err(e) = w.write_all(&line).and_then(|()| w.flush()) {
            log::error!("event log: write failed: {e}");
        }
    }
}
