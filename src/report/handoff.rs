//! Handing output off without waiting: a bounded queue drained by a writer thread of its
//! own. A reader that stops reading (a stalled journald, a pipe nobody drains, a full disk
//! on NFS) then blocks only that writer; the thread that produced the line — the pipeline,
//! in the middle of a kill — drops it and counts the drop instead of waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

/// Lines dropped because a queue was full, per output (`lowmemd_log_dropped_total`).
pub static LOG_DROPPED: AtomicU64 = AtomicU64::new(0);
pub static EVENTS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// The sending side; the writer thread owns the receiving side and the sink.
pub struct Handoff<T> {
    tx: Sender<T>,
    dropped: &'static AtomicU64,
    /// Queued or being written: a drain waits for the write, not only the dequeue.
    pending: Arc<AtomicUsize>,
}

impl<T: Send + 'static> Handoff<T> {
    /// Starts thread `name` calling `write` for every item, in order, until every sender is
    /// gone. At most `capacity` items wait; more are dropped and counted in `dropped`.
    pub fn spawn(
        name: &str,
        capacity: usize,
        dropped: &'static AtomicU64,
        mut write: impl FnMut(T) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<T>(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = pending.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Started by whichever thread first needs it, possibly the kill path's.
                crate::priority::calm_this_thread();
                for item in rx {
                    write(item);
                    written.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        Ok(Handoff {
            tx,
            dropped,
            pending,
        })
    }

    /// Queues `item` without waiting; a full queue drops it (counted).
    pub fn send(&self, item: T) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<T> Handoff<T> {
    /// Waits until the writer wrote everything queued, or `timeout` passed (a stuck writer
    /// must not hold up the caller: this is for a clean exit, not a guarantee).
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl<T> Drop for Handoff<T> {
    /// The last records (a kill's, right before SIGTERM) get a moment to be written.
    fn drop(&mut self) {
        self.drain(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_stuck_writer_costs_drops_not_waits() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        // The writer blocks on its first item until the test lets it go.
        let h = Handoff::spawn("test-writer", 2, &DROPPED, move |_: u32| {
            g.wait();
        })
        .unwrap();
        let started = Instant::now();
        for i in 0..100 {
            h.send(i);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // One item in the writer's hands, two queued, the rest dropped.
        let dropped = DROPPED.load(Ordering::Relaxed);
        assert!((97..=98).contains(&dropped), "{dropped}");
        gate.wait();
    }
}
