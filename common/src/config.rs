//! One server configuration, built once from the shared flags.
//!
//! Every TCP server of the workspace keeps the same promises (the root
//! README, "What every server promises"). This module holds the numbers those
//! promises are made of, so no chapter keeps its own copy of them:
//!
//! | promise | field | flag, default |
//! |---|---|---|
//! | a frame is bounded | `max_frame` | `--max-frame 1MiB` |
//! | connections are bounded | `max_conns` | `--max-conns 1024` |
//! | unsent echoes per connection are bounded | `max_pending` | `--max-pending 256KiB` |
//! | a client that sends nothing is closed | `idle_timeout` | `--idle-timeout 30s` (`0`: never) |
//! | a client that stops reading is closed | `stall_timeout` | `--stall-timeout 10s` |
//! | shutdown cannot hang | `grace` | `--grace 5s` |
//!
//! **Backpressure** (`max_pending`): once a connection has this many echo
//! bytes waiting to be written, the server stops *reading* from it until the
//! kernel takes some. A client that sends and never reads therefore costs at
//! most `max_pending` plus one read, however much it sends; its own send
//! buffer fills and *its* `write()` blocks, which is TCP flow control doing
//! its job.
//!
//! **Idle versus stalled.** Idle means nothing *received* for
//! `idle_timeout`. Stalled means echoes are waiting and the kernel has taken
//! *none* of their bytes for `stall_timeout`: the peer's receive window is
//! closed because it does not read. A blocked write is not activity, so a
//! client cannot keep a connection (or a shutdown) alive by never reading.
//!
//! **Shutdown** within `grace` of the signal: stop accepting; echo every
//! complete frame already received (our buffers, a TLS session, the kernel's
//! receive queue) without waiting for more; send FIN; read and discard until
//! the peer's FIN or the deadline, so that `close()` never turns into a reset
//! that destroys echoes still in flight; then close. At the deadline every
//! connection still open is cut, whatever its client does.

use std::time::Duration;

pub use crate::framing::DEFAULT_MAX_FRAME;
use crate::framing::Framing;

// Each default is written once, here (and `DEFAULT_MAX_FRAME` beside the
// codec it limits). `ServerConfig::default()` is built from these, the flags
// of `crate::cli` show them in `--help` through `cli::size_text` and
// `cli::duration_text`, and a test parses an empty command line and compares.
// This module imports nothing from `cli`: the flags depend on the
// configuration, never the other way round.

/// Default `--max-conns`.
pub const DEFAULT_MAX_CONNS: usize = 1024;
/// Default `--max-pending`: unsent echo bytes one connection may hold before
/// the server stops reading from it.
pub const DEFAULT_MAX_PENDING: usize = 256 * 1024;
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--stall-timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default `--work`: pure I/O.
pub const DEFAULT_WORK: u32 = 0;

// ANCHOR: config
/// What every server needs to know besides its listener and its shutdown
/// signal. Chapters with flags of their own keep them next to this, never a
/// copy of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub framing: Framing,
    pub max_frame: usize,
    /// Most clients served at once. Over it a new client is refused (or
    /// waits in the backlog; each chapter documents which).
    pub max_conns: usize,
    /// Backpressure: stop reading a connection with this many unsent bytes.
    pub max_pending: usize,
    /// Close a connection that sends nothing for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose pending echoes made no progress this long.
    pub stall_timeout: Duration,
    /// The whole shutdown, from the signal to the last close.
    pub grace: Duration,
    /// Rounds of [`crate::work::work`] per frame before its echo.
    pub work: u32,
}
// ANCHOR_END: config

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            framing: Framing::default(),
            max_frame: DEFAULT_MAX_FRAME,
            max_conns: DEFAULT_MAX_CONNS,
            max_pending: DEFAULT_MAX_PENDING,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            grace: DEFAULT_GRACE,
            work: DEFAULT_WORK,
        }
    }
}

impl ServerConfig {
    /// The socket send timeout (`SO_SNDTIMEO`) for blocking servers: a
    /// `write()` that moves no byte for this long fails with `EAGAIN`, which
    /// is exactly "stalled". (A write that moves some bytes returns early
    /// with a short count, and `write_all` starts a fresh wait.)
    pub fn write_timeout(&self) -> Duration {
        self.stall_timeout
    }
}
