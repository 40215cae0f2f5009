//! Chapters 6.2 and 6.3: asynchronous I/O and multiplexing, as two echo
//! servers that speak the workspace's one protocol and take the same flags.
//!
//! | module            | what it shows                                                        |
//! |-------------------|----------------------------------------------------------------------|
//! | [`tokio_server`]  | the course's asyncio echo server made real: one task per connection, `.await` at every point that could block |
//! | [`event_loop`]    | the machinery underneath: one thread, non-blocking sockets, `epoll` through mio, buffers and interest managed by hand |
//! | [`client`]        | a small blocking client (`async-server client`)                      |
//! | [`demo`]          | both models in one process with concurrent clients (`async-server`)  |
//!
//! Run with:
//!
//! ```text
//! cargo run -p async-server                                   # the demo
//! cargo run -p async-server -- server --model event-loop      # terminal 1
//! nc 127.0.0.1 7004                                           # terminal 2
//! ```
//!
//! Both servers are library functions that take an already-bound listener,
//! a [`Config`] and a [`Shutdown`], so tests start them on port 0 in-process.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::cli::ServerArgs;
use common::net::is_disconnect;
use common::{ConnError, Framing, Shutdown, Stats};

pub mod client;
pub mod demo;
pub mod event_loop;
pub mod tokio_server;
pub mod uring;

/// Which design serves the connections (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// tokio: one task per connection on an async runtime.
    Tokio,
    /// mio: one thread, one readiness loop, every connection a state machine.
    EventLoop,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::Tokio, Model::EventLoop];

    pub fn name(self) -> &'static str {
        match self {
            Model::Tokio => "tokio",
            Model::EventLoop => "event-loop",
        }
    }
}

/// Where `--work N` runs (`--offload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Offload {
    /// On the thread that does the I/O. In an async runtime this *blocks the
    /// runtime*: every other connection on that thread waits.
    #[default]
    None,
    /// On rayon's thread pool; the task awaits the answer on a oneshot channel.
    Rayon,
}

/// Default `--max-pending`: unsent echo bytes one connection may hold before
/// the server stops reading from it.
pub const DEFAULT_MAX_PENDING: usize = 256 * 1024;

/// Default `--grace`: how long shutdown waits for owed echoes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Everything both servers need to know. Built from the command line by
/// `main`, or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub framing: Framing,
    pub max_frame: usize,
    /// Most connections served at once. Over it a new client is *refused*
    /// (accepted and closed at once, counted in `Stats::refused`), in both
    /// models; see the README for why refusing beats waiting here.
    pub max_conns: usize,
    /// Close a connection that makes no progress (nothing read, nothing
    /// written) for this long. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// CPU work per frame (`--work N`).
    pub work: u32,
    /// Where that work runs (tokio model only; the event loop runs it inline).
    pub offload: Offload,
    /// Backpressure cap: once a connection's unsent output reaches this many
    /// bytes, stop reading from it until the peer catches up.
    pub max_pending: usize,
    /// Shutdown deadline: connections still open after this are cut.
    pub grace: Duration,
    /// tokio worker threads (1 = current-thread runtime). Ignored by the
    /// event loop, which is one thread by design.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_args(&ServerArgs::default())
    }
}

impl Config {
    /// The shared flags; chapter flags keep their defaults.
    pub fn from_args(args: &ServerArgs) -> Self {
        Config {
            framing: args.framing,
            max_frame: args.max_frame,
            max_conns: args.max_conns,
            idle_timeout: args.idle(),
            work: args.work,
            offload: Offload::None,
            max_pending: DEFAULT_MAX_PENDING,
            grace: DEFAULT_GRACE,
            threads: default_threads(),
        }
    }
}

/// One worker thread per CPU, as tokio itself defaults to.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Serve `listener` with `model` until `shutdown`; blocks the calling thread.
/// Returns the counters behind the summary line.
pub fn run(
    model: Model,
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<std::sync::Arc<common::Stats>> {
    match model {
        Model::Tokio => tokio_server::run(listener, config, shutdown),
        Model::EventLoop => event_loop::run(listener, config, shutdown),
    }
}

/// Raise the soft open-file limit to the hard one and log both figures.
/// Every socket is a file descriptor: with the usual soft limit of 1024 a
/// server could not hold more than about a thousand clients.
pub fn raise_fd_limit_logged() {
    match common::net::raise_fd_limit() {
        Ok((old, new)) if old == new => {
            log::info!("open-file limit (RLIMIT_NOFILE): {new} (already at the hard limit)")
        }
        Ok((old, new)) => {
            log::info!("open-file limit (RLIMIT_NOFILE) raised from {old} to {new}")
        }
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }
}

/// Why a connection ended without an error (both models).
#[derive(Debug, Clone, Copy)]
enum End {
    /// The peer closed its side (after any half-close, we echoed everything).
    PeerClosed,
    /// The server is shutting down; owed echoes were sent.
    Shutdown,
}

/// The one line both models log when a connection closes, with what it
/// served; an error also counts in `stats.errors`. Idle timeouts and peers
/// that vanished are `info` (normal life on a network); protocol errors and
/// unexpected I/O errors are `warn`.
fn log_close(
    peer: SocketAddr,
    frames: u64,
    bytes: u64,
    how: Result<End, ConnError>,
    stats: &Stats,
) {
    let served = format!("{frames} frames, {bytes} payload bytes echoed");
    match how {
        Ok(End::PeerClosed) => log::info!("{peer}: closed by peer, {served}"),
        Ok(End::Shutdown) => log::info!("{peer}: closed for shutdown, {served}"),
        Err(e) => {
            Stats::inc(&stats.errors);
            match e {
                ConnError::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                    log::info!("{peer}: closed: {e}, {served}")
                }
                ConnError::Io(e) if is_disconnect(&e) => {
                    log::info!("{peer}: disconnected: {e}, {served}")
                }
                e => log::warn!("{peer}: {e}; closing, {served}"),
            }
        }
    }
}
