//! Chapters 9 and 10: asynchronous I/O, multiplexing and completion
//! I/O, as three echo servers that speak the workspace's one protocol and
//! take the same flags.
//!
//! | module            | what it shows                                                        |
//! |-------------------|----------------------------------------------------------------------|
//! | [`tokio_server`]  | the course's asyncio echo server made real: one task per connection, `.await` at every point that could block |
//! | [`event_loop`]    | the machinery underneath: non-blocking sockets, `epoll` through mio, interest managed by hand; one loop, or `--loops N` of them spread by `SO_REUSEPORT` or an acceptor. A folder: `mod.rs` holds the loop |
//! | [`uring`]         | completion I/O: one thread, one io_uring; the kernel does the `recv`/`send` and reports results, not readiness. A folder: `mod.rs` holds the loop |
//!
//! The event loop and uring drive the same per-connection echo,
//! `common::echo::Echo` (the blocking chapters drive it too); they differ
//! only in how they wait.
//! | [`listen`]        | where a server listens: a TCP port (shared with `SO_REUSEPORT`), or a Unix socket file (`--addr unix:PATH`) |
//! | [`client`]        | a small blocking client (`async-server client`)                      |
//! | [`demo`]          | every model in one process with concurrent clients (`async-server`) |
//!
//! Run with:
//!
//! ```text
//! cargo run -p async-server                                   # the demo
//! cargo run -p async-server -- server --model event-loop      # terminal 1
//! nc 127.0.0.1 7004                                           # terminal 2
//! ```
//!
//! Every server is a library function that takes an already-bound
//! [`Listener`] (a `std::net::TcpListener` converts into one), a [`Config`]
//! and a [`Shutdown`], so tests start them on port 0 in-process. All keep
//! the contract every server of the workspace keeps (limits, idle and stall
//! timeouts, accept back-off, shutdown within `--grace`): its numbers are
//! [`Config::common`], its closing lines and counters `common::conn`. A
//! model is one file, one [`Model`] variant and one arm of [`run`]; flags
//! of its own go in [`Config`] beside `common`. Every model's `run` takes
//! `(Listener, Config, Shutdown)` and returns one [`Report`].

use std::io;
use std::sync::Arc;

use common::{ServerConfig, Shutdown, Stats};

pub mod client;
pub mod demo;
pub mod event_loop;
pub mod listen;
pub mod tokio_server;
pub mod uring;

pub use listen::{Listener, Peer, UnixSocketFile, listen_reuseport};

/// Which design serves the connections (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// tokio: one task per connection on an async runtime.
    Tokio,
    /// mio: one thread, one readiness loop, every connection a state machine.
    EventLoop,
    /// io_uring: one thread, completion I/O (Linux 5.19+, where allowed).
    Uring,
}

impl Model {
    /// Every model, including `uring`, which the kernel may refuse: loops
    /// that must run everywhere use [`Model::available`].
    pub const ALL: [Model; 3] = [Model::Tokio, Model::EventLoop, Model::Uring];
    /// The models that run on any kernel (readiness: epoll).
    pub const PORTABLE: [Model; 2] = [Model::Tokio, Model::EventLoop];

    pub fn name(self) -> &'static str {
        match self {
            Model::Tokio => "tokio",
            Model::EventLoop => "event-loop",
            Model::Uring => "uring",
        }
    }

    /// The portable models, plus `uring` where this kernel allows io_uring
    /// ([`uring::probe`]); otherwise the one-line reason it was left out,
    /// for the caller to print (the demo and the tests do).
    pub fn available() -> (Vec<Model>, Option<String>) {
        let mut models = Model::PORTABLE.to_vec();
        match uring::probe() {
            Ok(()) => {
                models.push(Model::Uring);
                (models, None)
            }
            Err(reason) => (models, Some(reason)),
        }
    }
}

/// How `--model event-loop --loops N` spreads connections over its loops
/// (`--balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    /// Every loop has its own `SO_REUSEPORT` listener on the same address;
    /// the kernel hashes each new connection to one of them.
    #[default]
    Reuseport,
    /// Loop 0 accepts them all and deals them round-robin (itself
    /// included) to the loops, through a channel and each loop's `Waker`.
    Acceptor,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::Reuseport => "reuseport",
            Balance::Acceptor => "acceptor",
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

/// Everything every model needs to know: the contract every server of the
/// workspace keeps ([`ServerConfig`]: limits, timeouts, grace), and this
/// chapter's own flags. Built from the command line by `main`, or directly
/// by tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared flags. Over `max_conns` a new client is *refused*
    /// (accepted and closed at once, counted in `Stats::refused`) in both
    /// models; see the README for why refusing beats waiting here.
    pub common: ServerConfig,
    /// Where `--work` runs (tokio model only; the event loop and uring run
    /// it inline).
    pub offload: Offload,
    /// tokio worker threads (1 = current-thread runtime). Ignored by the
    /// event loop, which is one thread per loop by design.
    pub threads: usize,
    /// Event loops (`--loops`, event-loop model only): each a thread with
    /// its own `mio::Poll`. 1 is the classic single loop.
    pub loops: usize,
    /// How connections are spread over `loops` (event-loop model only).
    pub balance: Balance,
    /// The uring model's ring: its sizes, `--sqpoll`, `--recv` (uring
    /// model only).
    pub uring: uring::RingOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            common: ServerConfig::default(),
            offload: Offload::None,
            threads: default_threads(),
            loops: 1,
            balance: Balance::Reuseport,
            uring: uring::RingOptions::default(),
        }
    }
}

/// One worker thread per CPU, as tokio itself defaults to.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What every model's `run` returns: the counters behind the summary line,
/// and what only some models count.
#[derive(Debug)]
pub struct Report {
    pub stats: Arc<Stats>,
    /// event-loop: how many connections each loop served (`per_loop[i]` for
    /// loop `i`); empty for the other models.
    pub per_loop: Vec<u64>,
    /// uring: how the ring was used; `None` for the other models.
    pub ring: Option<uring::RingCounters>,
}

impl From<Arc<Stats>> for Report {
    fn from(stats: Arc<Stats>) -> Report {
        Report {
            stats,
            per_loop: Vec::new(),
            ring: None,
        }
    }
}

/// Serve `listener` with `model` until `shutdown` and its `--grace` period
/// are over; blocks the calling thread. Logs the one summary line and
/// returns the counters behind it. `listener` is a bound
/// `std::net::TcpListener` or a [`Listener`] (a Unix socket file: tokio
/// and event-loop models only). For `--loops N --balance reuseport` the
/// TCP listener must have been bound with [`listen_reuseport`]. Every
/// model's own `run` has this signature (less `model`) and returns a
/// [`Report`].
pub fn run(
    model: Model,
    listener: impl Into<Listener>,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let listener = listener.into();
    let report = match model {
        Model::Tokio => tokio_server::run(listener, config, shutdown),
        Model::EventLoop => event_loop::run(listener, config, shutdown),
        Model::Uring => uring::run(listener, config, shutdown),
    }?;
    log::info!("async-server stopped: {}", report.stats);
    Ok(report.stats)
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
