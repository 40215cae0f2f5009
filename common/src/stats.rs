//! Counters every server keeps and logs as its one summary line at shutdown.
//! Atomics, so any number of threads or tasks can bump them without a lock
//! (`Relaxed` is enough: they are tallies, never used to order other memory).
//!
//! Every server prints the same line, so two servers can be compared from
//! their logs alone:
//!
//! ```text
//! tcp-echo stopped: 3 connections served, 0 refused, 0 closed on error, 1 timed out, 0 cut at the deadline, 5 frames, 38 payload bytes echoed
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused (over `--max-conns`).
    pub refused: AtomicU64,
    /// Connections closed because of an error: I/O (reset, broken pipe) or
    /// protocol (oversized or truncated frame, garbage).
    pub errors: AtomicU64,
    /// Connections closed by `--idle-timeout` or `--stall-timeout`: not the
    /// server's fault nor necessarily the client's, so counted apart.
    pub timed_out: AtomicU64,
    /// Connections still open at the `--grace` deadline, closed there.
    pub cut: AtomicU64,
    /// Frames echoed.
    pub frames: AtomicU64,
    /// Payload bytes received in complete frames.
    pub bytes: AtomicU64,
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_frame(&self, payload_len: usize) {
        self.frames.fetch_add(1, Relaxed);
        self.bytes.fetch_add(payload_len as u64, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections served, {} refused, {} closed on error, {} timed out, {} cut at the deadline, {} frames, {} payload bytes echoed",
            self.accepted.load(Relaxed),
            self.refused.load(Relaxed),
            self.errors.load(Relaxed),
            self.timed_out.load(Relaxed),
            self.cut.load(Relaxed),
            self.frames.load(Relaxed),
            self.bytes.load(Relaxed),
        )
    }
}
