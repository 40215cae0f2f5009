//! `common`: what every chapter of the course shares.
//!
//! | module       | what it holds                                                    |
//! |--------------|------------------------------------------------------------------|
//! | [`blocking`] | the contract over blocking sockets: bounded echo writes, stall timeout, the shutdown drain |
//! | [`framing`]  | the wire protocol as pure functions over buffers (sans-I/O), plus a blocking adapter and (feature `tokio`) an async one |
//! | [`cli`]      | the flags every server shares (`--addr`, `--framing`, limits, `--work`) and duration/size parsers |
//! | [`config`]   | [`ServerConfig`]: the numbers of the contract every server keeps (limits, timeouts, grace) |
//! | [`conn`]     | how a connection ends: one closing log line and counter for every server |
//! | [`echo`]     | one connection's echo as a state machine without I/O (backpressure, idle and stall clocks, the shutdown drain), driven by every loop |
//! | [`shutdown`] | Ctrl-C / SIGTERM as a signal to poll, wait on, `select!` on or `.await` |
//! | [`net`]      | `listen()` with the right socket options, fd limit, the one accept-error policy |
//! | [`stats`]    | the counters behind every server's summary line                  |
//! | [`work`]     | the CPU-bound function behind `--work N`                          |
//! | [`rng`]      | a tiny seeded generator for reproducible loss and test data       |
//! | [`log`]      | one `init()` for env_logger                                       |
//!
//! Nothing here opens a socket on its own except [`net::listen`]; the codecs
//! are tested, fuzzed and property-tested without any I/O.

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
pub mod work;

pub use config::ServerConfig;
pub use framing::{ConnError, Decoder, FrameError, FramedStream, Framing, encode};
pub use shutdown::Shutdown;
pub use stats::Stats;
