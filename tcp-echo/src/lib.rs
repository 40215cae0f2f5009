//! Chapter 5.1 of the course: a TCP server and client, blocking and
//! iterative, the way the first socket program in every course is written.
//!
//! - [`server`]: `socket` / `bind` / `listen` / `accept` / `recv` / `send` /
//!   `close`, one client at a time, with the shared framing, an idle
//!   timeout, half-close and a graceful Ctrl-C.
//! - [`client`]: `connect`, one frame per message, round-trip times.
//!
//! The binary (`src/main.rs`) wires them to the command line; `cargo run -p
//! tcp-echo` with no arguments runs both in one process (the demo).

pub mod client;
pub mod server;
