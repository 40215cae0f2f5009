//! Chapter 5 of the course: a TCP server and client, blocking and
//! iterative, the way the first socket program in every course is written.
//!
//! - [`server`]: `socket` / `bind` / `listen` / `accept` / `recv` / `send` /
//!   `close`, one client at a time, keeping the contract every server
//!   keeps (limits, idle and stall timeouts, half-close, a Ctrl-C bounded by
//!   `--grace`); what happens on the connection is `common::blocking`.
//! - [`client`]: `connect`, one frame per message, round-trip times.
//!
//! The binary (`src/main.rs`) wires them to the command line; `cargo run -p
//! tcp-echo` with no arguments runs both in one process (the demo).

pub mod client;
pub mod server;
