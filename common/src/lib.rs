//! `common`: what every chapter of the course shares. No chapter is
//! imported here; every chapter imports this (ARCHITECTURE.md, "What may
//! import what").
//!
//! A map, in the order a reader meets it:
//!
//! * **The wire.** [`framing`] is the one protocol: `framing/codec.rs` cuts
//!   frames off a buffer and appends them to one, touching no socket (the
//!   fuzz target and the property tests call it alone); beside it,
//!   `framing/blocking_io.rs` ([`FramedStream`]) and `framing/tokio_io.rs`
//!   (`framing::tokio_io::AsyncFramed`, feature `tokio`) put it on a socket.
//! * **The contract every server keeps.** [`config`] holds its numbers
//!   ([`ServerConfig`]: limits, idle and stall timeouts, `--grace`) and
//!   every default, once; [`cli`] turns flags into them and never the other
//!   way round; [`conn`] says how a connection ended (one closing line, one
//!   counter); [`stats`] adds those counters up for the summary line.
//! * **Accepting and stopping.** [`net`] binds (`listen`), raises the fd
//!   limit and holds the one accept-error policy (`accept_policy`, and
//!   `fatal_accept` for a listener that is gone); [`shutdown`] turns Ctrl-C
//!   and SIGTERM into one signal to poll, wait on, `select!` on or `.await`.
//! * **Loops shared by several designs.** [`echo`] is one connection's echo
//!   without I/O (bytes in, frames out, what to write next, the idle and
//!   stall rule, what the drain still owes), driven by the event loop, the
//!   io_uring loop and [`blocking`], the echo over a blocking socket
//!   (tcp-echo, both threaded-server models);
//!   `tokio_accept` (feature `tokio`) is the accept-and-drain loop of the
//!   tokio model and tls-echo.
//! * **Small tools.** [`work`] (the CPU-bound `--work N`), [`rng`] (a tiny
//!   seeded generator), [`log`] (one `init()` for env_logger).
//!
//! | module | what it holds |
//! |---|---|
//! | [`framing`] | the codec (sans-I/O) and its blocking and tokio adapters |
//! | [`config`] | [`ServerConfig`] and the default of every shared flag |
//! | [`cli`] | the flags every server shares, their parsers, the edges of `main` |
//! | [`conn`] | how a connection ends: one closing log line and counter |
//! | [`stats`] | the counters behind every server's summary line |
//! | [`net`] | `listen()`, the fd limit, the accept-error policy |
//! | [`shutdown`] | Ctrl-C / SIGTERM as a signal |
//! | [`blocking`] | the contract over blocking sockets: bounded echo writes, stall timeout, the shutdown drain |
//! | [`echo`] | one connection's echo as a state machine without I/O (backpressure, idle and stall clocks, the shutdown drain), driven by the event loop, the io_uring loop and the blocking loop |
//! | `tokio_accept` | (feature `tokio`) the accept-and-drain loop every tokio server shares |
//! | [`work`], [`rng`], [`log`] | `--work N`, seeded test data, logging |
//!
//! Nothing here opens a socket on its own except [`net::listen`]; the codec
//! is tested, fuzzed and property-tested without any I/O.

pub mod blocking;
pub mod cli;
pub mod config;
pub mod conn;
pub mod echo;
pub mod framing;
pub mod log;
pub mod net;
pub mod rng;
pub mod shutdown;
pub mod stats;
#[cfg(feature = "tokio")]
pub mod tokio_accept;
pub mod work;

pub use config::ServerConfig;
pub use framing::{ConnError, Decoder, FrameError, FramedStream, Framing, encode};
pub use shutdown::Shutdown;
pub use stats::Stats;
