//! # Chapter 6: UDP, datagrams without a connection
//!
//! A UDP echo server and a client that shows what UDP leaves to you: the
//! kernel keeps each datagram whole (one `send` is one `recv`, 0 to 65,507
//! bytes over IPv4), but promises neither delivery nor order, and nobody
//! tells the sender. The server can lose datagrams on purpose (`--drop`),
//! and the client numbers its datagrams, times out, retries and counts.
//!
//! | module       | what it shows                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | [`server`]   | the `recv_from` / `send_to` loop, simulated loss, shutdown by timeout |
//! | [`client`]   | a connected UDP socket, sequence numbers, timeouts, retries, RTTs      |
//! | [`wire`]     | datagram size limits and the client's 6-byte header (no I/O)           |
//! | [`guard`]    | the reflection guard: source ports the server never answers           |
//! | [`demo`]     | both in one process, the default subcommand                            |
//!
//! Run with `cargo run -p udp-echo` (the demo), or in two terminals:
//! `cargo run -p udp-echo -- server` and `nc -u 127.0.0.1 7002`.

pub mod client;
pub mod demo;
pub mod guard;
pub mod server;
pub mod wire;

pub use client::{ClientConfig, ClientError, Report};
pub use guard::PortSet;
pub use server::{ServerConfig, Summary};
