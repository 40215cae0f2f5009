//! `chat`: the second program of the course, a chat room, where clients
//! talk to *each other*. It speaks Protohackers' "Budget Chat" line protocol
//! (so `nc` and other people's clients and checkers work with it), and it is
//! written three times, once per design, to show what an echo never does:
//! shared state, fan-out, and a member who stops reading.
//!
//! | module | what it holds |
//! |---|---|
//! | [`protocol`] | the name rule and every line the server says (sans-I/O) |
//! | [`outbox`] | a member's bounded outbox and the `--slow` policy (sans-I/O) |
//! | [`room`] | membership and fan-out, generic over what a design keeps per member (sans-I/O) |
//! | [`threads`] | design 1: a thread per member, the room behind a `Mutex`, a writer thread per member |
//! | [`tokio_room`] | design 2: a tokio task per member, bounded channels, `try_send` |
//! | [`event_loop`] | design 3: one mio loop, per-connection outboxes, `WRITABLE` only while output waits |
//! | [`client`] | `chat client --name NAME`: stdin lines in, room lines out |
//!
//! Every design keeps the contract of every server of the workspace
//! (`--max-conns`, idle and stall timeouts, the accept-error policy, a
//! shutdown within `--grace` with one summary line) and, on top, the chat's
//! own promise: one slow member never holds up the room.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::{ServerConfig, Shutdown, Stats};

pub mod client;
pub mod event_loop;
pub mod outbox;
pub mod protocol;
pub mod room;
pub mod threads;
pub mod tokio_room;

pub use outbox::SlowPolicy;

/// The chat chapter's default port (the echo chapters use 7001 to 7006).
pub const PORT: u16 = 7007;

/// The three designs (`--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// A thread per member; the room behind a `Mutex`; a writer thread per member.
    Threads,
    /// A tokio task per member; bounded channels filled with `try_send`.
    Tokio,
    /// One mio readiness loop; per-connection outboxes.
    EventLoop,
}

impl Model {
    pub const ALL: [Model; 3] = [Model::Threads, Model::Tokio, Model::EventLoop];

    pub fn name(self) -> &'static str {
        match self {
            Model::Threads => "threads",
            Model::Tokio => "tokio",
            Model::EventLoop => "event-loop",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The contract's numbers plus the chat's one flag of its own.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// `max_frame` bounds one line; `max_pending` one member's outbox.
    pub server: ServerConfig,
    pub slow: SlowPolicy,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            server: ServerConfig::default(),
            slow: SlowPolicy::Skip,
        }
    }
}

/// The summary line's counters: the contract's, plus the room's.
#[derive(Debug, Default)]
pub struct ChatStats {
    pub base: Stats,
    pub joined: AtomicU64,
    /// Lines said by joined members.
    pub said: AtomicU64,
    /// Messages queued to a member (one line said to N others is N).
    pub deliveries: AtomicU64,
    /// Messages dropped for a full outbox (`--slow skip`).
    pub skipped: AtomicU64,
    /// Members closed for a full outbox (`--slow disconnect`).
    pub slow_closed: AtomicU64,
}

impl ChatStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

impl fmt::Display for ChatStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} joined, {} lines said, {} deliveries, {} skipped, {} closed as slow",
            self.base,
            self.joined.load(Relaxed),
            self.said.load(Relaxed),
            self.deliveries.load(Relaxed),
            self.skipped.load(Relaxed),
            self.slow_closed.load(Relaxed),
        )
    }
}

/// Offer `msg` to one outbox and count the verdict; `false`: close the
/// member (full, `--slow disconnect`). The one place the three designs'
/// deliveries are counted.
pub fn count(verdict: outbox::Admit, stats: &ChatStats) -> bool {
    match verdict {
        outbox::Admit::Queue => {
            ChatStats::bump(&stats.deliveries);
            true
        }
        outbox::Admit::Skipped => {
            ChatStats::bump(&stats.skipped);
            true
        }
        outbox::Admit::Overflow => {
            ChatStats::bump(&stats.slow_closed);
            false
        }
    }
}

/// Why a member was closed by the server, beyond the contract's reasons.
pub fn slow_error(limit: usize) -> io::Error {
    io::Error::other(format!(
        "outbox full ({limit} bytes, --max-pending) with --slow disconnect: closed as slow"
    ))
}

/// Serve the room on `listener` with `model` until `shutdown`; returns the
/// counters after the summary line has been logged.
pub fn run(
    model: Model,
    listener: TcpListener,
    config: &ChatConfig,
    shutdown: &Shutdown,
) -> io::Result<Arc<ChatStats>> {
    let stats = Arc::new(ChatStats::default());
    match model {
        Model::Threads => threads::run(listener, config, shutdown, &stats)?,
        Model::Tokio => tokio_room::run(listener, config, shutdown, &stats)?,
        Model::EventLoop => event_loop::run(listener, config, shutdown, &stats)?,
    }
    log::info!("chat ({model}) stopped: {stats}");
    Ok(stats)
}
