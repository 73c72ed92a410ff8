//! The event log: one JSON object per line per action, appended and flushed line by line so
//! a crash loses nothing already decided.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use parking_lot::Mutex;
use serde::Serialize;

use crate::policy::decide::Decision;
use crate::rank::RankedProc;

/// Whom an action was taken on: the victim as ranked (kill and page-out records share it).
#[derive(Debug, Clone, Serialize)]
pub struct Victim {
    pub pid: i32,
    pub comm: String,
    pub oom_score_adj: i16,
    /// The adj ranking used, after the policy's rules.
    pub effective_adj: i16,
    /// The rule that matched the victim, if any.
    pub rule: Option<String>,
}

impl From<&RankedProc> for Victim {
    fn from(p: &RankedProc) -> Self {
        Victim {
            pid: p.pid,
            comm: p.comm.clone(),
            oom_score_adj: p.oom_score_adj,
            effective_adj: p.effective_adj,
            rule: p.rule.clone(),
        }
    }
}

/// Why: the reason name, the condition that fired (in words, with what was measured) and
/// the policy level that decided.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub reason: &'static str,
    pub condition: String,
    pub level: String,
}

impl Cause {
    pub fn new(decision: &Decision, level: &str) -> Self {
        Cause {
            reason: decision.reason.as_str(),
            condition: decision.fired.to_string(),
            level: level.to_string(),
        }
    }
}

/// One action. Field names are a public interface (documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct ActionEvent {
    /// Wall-clock time of the signal (or would-be signal), ms since the Unix epoch.
    pub ts_ms: u64,
    /// `kill` or `would_kill` (dry run).
    pub action: &'static str,
    #[serde(flatten)]
    pub victim: Victim,
    pub rss_kib: u64,
    pub swap_kib: u64,
    #[serde(flatten)]
    pub cause: Cause,
    /// The scope's available memory in the sample that decided.
    pub scope_available_kib: u64,
    pub scope_total_kib: u64,
    /// Available memory re-read right before the signal.
    pub available_at_kill_kib: u64,
    /// The rest of the triggering snapshot: PSI avg10 of the scope (read right after the
    /// signal, so it never delays it; null without PSI), free swap (zram-aware) and the
    /// thrashing measure (null when the policy does not ask for it).
    pub psi_some_avg10: Option<f64>,
    pub psi_full_avg10: Option<f64>,
    pub swap_free_kib: u64,
    pub thrashing_pct: Option<f64>,
    /// The pidfd became readable before the deadline.
    pub exit_confirmed: bool,
    /// From the signal to the pidfd readable; null when not confirmed or a dry run.
    pub kill_to_exit_ms: Option<u64>,
    /// From the sample that crossed the threshold to the signal.
    pub sample_to_kill_ms: u64,
    /// Available memory measured after the exit was confirmed (informational: the kernel
    /// may report freed pages late).
    pub available_after_kib: Option<u64>,
}

/// One page-out. Field names are a public interface (documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct PageoutEvent {
    pub ts_ms: u64,
    /// `pageout`, or `would_pageout` in a dry run.
    pub action: &'static str,
    #[serde(flatten)]
    pub victim: Victim,
    /// Resident size of the ranges asked for (from smaps), this event.
    pub requested_kib: u64,
    /// Resident memory the process lost, measured (RssAnon + RssFile + RssShmem before −
    /// after): what the kernel really reclaimed, not what it accepted.
    pub freed_kib: u64,
    pub rss_anon_before_kib: u64,
    pub rss_anon_after_kib: u64,
    pub rss_file_before_kib: u64,
    pub rss_file_after_kib: u64,
    /// Growth of the process's swapped-out memory (anonymous pages sent to swap).
    pub swap_delta_kib: u64,
    /// The scope's available memory before and after.
    pub scope_available_before_kib: u64,
    pub scope_available_after_kib: Option<u64>,
    /// More of this process is left for the next event (the per-event cap was reached).
    pub unfinished: bool,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub cause: Cause,
}

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

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
