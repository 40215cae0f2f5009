//! Chapter 7, threads + sockets: serve many clients at once with OS threads.
//!
//! Two designs, same protocol, same flags, each in its own file so you can put
//! them side by side (`diff src/per_client.rs src/pool.rs`):
//!
//! | file                         | what it shows                                                  |
//! |------------------------------|----------------------------------------------------------------|
//! | [`per_client`]               | one named OS thread per accepted connection, `--max-conns`      |
//! | [`pool`]                     | `--workers N` threads fed by a bounded crossbeam-channel queue |
//! | [`accept`]                   | the accept loop both share: the accept-error policy, waking on Ctrl-C |
//! | [`conn`]                     | what both do with a connection: serve it (`common::blocking`), log its end, contain a panic, join by the deadline |
//! | [`client`]                   | a line client and a concurrent load client                     |
//! | [`demo`]                     | both models in-process with concurrent clients, transcript     |
//!
//! Run with:
//!
//! ```text
//! cargo run -p threaded-server                                     # the demo
//! cargo run -p threaded-server -- server --model pool --workers 4  # terminal 1
//! nc 127.0.0.1 7003                                                # terminal 2
//! ```
//!
//! Both servers are library functions taking an already bound listener, a
//! [`Config`], a [`Shutdown`] and the [`Stats`] to count into, so the tests
//! and `loadgen` start them on port 0 and watch the counters live.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use common::cli::ServerArgs;
use common::{ServerConfig, Shutdown, Stats};
use log::info;

pub mod accept;
pub mod client;
pub mod conn;
pub mod demo;
pub mod per_client;
pub mod pool;

/// How often every blocking call in this chapter wakes up to look at the
/// shutdown flag (and, for connections, at the idle clock). Blocking threads
/// cannot be interrupted from outside, so they must come up for air: a
/// `SO_RCVTIMEO` of this length makes `read()`/`accept()` return `EAGAIN`.
/// Shorter means a faster Ctrl-C and more wake-ups (negligible: 200 idle
/// threads waking 10 times a second is 2,000 cheap syscalls a second).
pub use common::blocking::TICK;

/// Default `--stack-size`. Rust's own default for spawned threads is 2 MiB;
/// an echo loop keeps its buffers on the heap and needs a few KiB of stack.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Default `--workers` (pool model).
pub const DEFAULT_WORKERS: usize = 16;

/// Default `--queue` (pool model).
pub const DEFAULT_QUEUE: usize = 64;

/// Which design serves the connections (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Model {
    /// One OS thread per connection (src/per_client.rs).
    #[default]
    PerClient,
    /// A fixed set of worker threads fed by a bounded queue (src/pool.rs).
    Pool,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::PerClient, Model::Pool];

    pub fn name(self) -> &'static str {
        match self {
            Model::PerClient => "per-client",
            Model::Pool => "pool",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the pool's acceptor does with a new connection when every worker is
/// busy and the queue is full (`--when-full`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WhenFull {
    /// The acceptor waits for room in the queue and stops calling `accept()`
    /// meanwhile. New clients still connect (the kernel completes the
    /// handshake) and wait in the listen backlog, unserved; when the backlog
    /// is full too, the kernel drops their SYNs and their `connect()` retries.
    /// Nobody is turned away; everybody waits. This is back-pressure.
    #[default]
    Wait,
    /// The acceptor closes the new connection at once (the client reads EOF
    /// or a reset), logs it and counts it as refused. Fast failure the client
    /// can see and retry elsewhere.
    Refuse,
}

/// Everything a server needs to know: the contract every server keeps
/// ([`ServerConfig`], from the shared flags) and this chapter's own flags.
/// Built from the command line, or by hand in tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Framing, limits, timeouts and grace: the same in every chapter.
    pub common: ServerConfig,
    pub model: Model,
    /// Pool only: worker threads.
    pub workers: usize,
    /// Pool only: accepted connections waiting for a worker.
    pub queue: usize,
    /// Pool only: what to do when the queue is full.
    pub when_full: WhenFull,
    /// Stack reserved for each thread we spawn, in bytes.
    pub stack_size: usize,
    /// **Testing only.** The n-th connection served (counting from 1) panics
    /// its serving thread as it starts, to show (and test) that a panic is
    /// contained. Checked once per connection, at its entry, never per frame.
    /// `None` in normal use; the CLI flag behind it is hidden.
    #[doc(hidden)]
    pub inject_panic: Option<conn::PanicAt>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            common: ServerConfig::default(),
            model: Model::PerClient,
            workers: DEFAULT_WORKERS,
            queue: DEFAULT_QUEUE,
            when_full: WhenFull::Wait,
            stack_size: DEFAULT_STACK_SIZE,
            inject_panic: None,
        }
    }
}

impl Config {
    /// The shared flags; the chapter's own ones keep their defaults.
    pub fn from_args(args: &ServerArgs, model: Model) -> Self {
        Config {
            common: args.config(),
            model,
            ..Config::default()
        }
    }

    /// The CLI refuses these values while parsing; a library caller gets
    /// the same refusal here, before anything is served.
    fn validate(&self) -> io::Result<()> {
        let bad = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        if self.model == Model::Pool && self.workers == 0 {
            return bad("--workers must be at least 1");
        }
        if self.common.max_conns == 0 {
            return bad("--max-conns must be at least 1");
        }
        Ok(())
    }
}

/// What one pool worker did, logged at shutdown to show how evenly the work
/// spread (the "fairness" column of the classic server comparisons).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub name: String,
    pub connections: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Connections whose handler panicked (contained; the worker carried on).
    pub panics: u64,
}

impl WorkerReport {
    /// Per-worker counts at shutdown, so a reader sees how evenly work spread.
    pub fn log_fairness(reports: &[WorkerReport]) {
        let total_frames: u64 = reports.iter().map(|r| r.frames).sum();
        for r in reports {
            let share = if total_frames == 0 {
                0.0
            } else {
                100.0 * r.frames as f64 / total_frames as f64
            };
            info!(
                "pool: {}: {} connections, {} frames ({share:.1}% of all frames), {} panics",
                r.name, r.connections, r.frames, r.panics
            );
        }
        if let (Some(min), Some(max)) = (
            reports.iter().map(|r| r.frames).min(),
            reports.iter().map(|r| r.frames).max(),
        ) {
            info!("pool: frames per worker: min {min}, max {max}");
        }
    }
}

/// What a server run returns once it has shut down. The counters are in the
/// [`Stats`] the caller passed in.
#[derive(Clone, Debug)]
pub struct Report {
    pub model: Model,
    /// Pool: one entry per worker, in order. Per-client: empty.
    pub workers: Vec<WorkerReport>,
    /// Threads spawned to serve connections (per-client: one per connection;
    /// pool: the workers, however many connections they served).
    pub threads_spawned: u64,
    /// Pool: connections still queued (or held by the acceptor) at shutdown,
    /// served and drained each on a short-lived thread of its own.
    pub drained: u64,
    /// Threads still running at the grace deadline (plus a margin), left
    /// behind so the process can exit. 0 unless something blocked without
    /// a timeout, which would be a bug: every socket call here has one.
    pub abandoned: u64,
}

/// Serve until `shutdown` is triggered, with the design `config.model` names.
/// Returns once every thread has been joined and the summary line logged.
pub fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> io::Result<Report> {
    config.validate()?;
    match config.model {
        Model::PerClient => per_client::run(listener, config, shutdown, stats),
        Model::Pool => pool::run(listener, config, shutdown, stats),
    }
}
