//! Helpers shared by the integration tests: start a server in-process on
//! 127.0.0.1:0, connect with a read timeout, build expected wire bytes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_server::{Config, Model};
use bytes::BytesMut;
use common::{Framing, ServerConfig, Shutdown, Stats};

/// Every read in the tests gives up after this long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    handle: JoinHandle<io::Result<Arc<Stats>>>,
}

impl Server {
    pub fn start(model: Model, config: Config) -> Server {
        common::log::init_for_tests();
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let handle = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || async_server::run(model, listener, config, shutdown))
        };
        Server {
            addr,
            shutdown,
            handle,
        }
    }

    /// Trigger shutdown and wait for the server's summary.
    pub fn stop(self) -> Arc<Stats> {
        self.shutdown.trigger();
        self.join()
    }

    /// Wait for a server whose shutdown was already triggered.
    pub fn join(self) -> Arc<Stats> {
        self.handle.join().unwrap().unwrap()
    }
}

pub fn config(framing: Framing) -> Config {
    Config {
        common: ServerConfig {
            framing,
            ..ServerConfig::default()
        },
        threads: 2,
        ..Config::default()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

/// The wire bytes of `frames` in `framing`.
pub fn wire(framing: Framing, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        common::encode(framing, f, &mut out).unwrap();
    }
    out.to_vec()
}

/// Read until EOF (or the timeout, which fails the test).
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

/// `Stats` counters as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    pub timed_out: u64,
    pub cut: u64,
    pub frames: u64,
    pub bytes: u64,
}

pub fn counts(s: &Stats) -> Counts {
    Counts {
        accepted: Stats::get(&s.accepted),
        refused: Stats::get(&s.refused),
        errors: Stats::get(&s.errors),
        timed_out: Stats::get(&s.timed_out),
        cut: Stats::get(&s.cut),
        frames: Stats::get(&s.frames),
        bytes: Stats::get(&s.bytes),
    }
}

/// Payload `i` of client `c`: varied lengths, never a `\n`, so it is valid
/// in every framing.
pub fn payload(c: usize, i: usize) -> Vec<u8> {
    let len = 1 + (c * 7 + i * 13) % 300;
    (0..len)
        .map(|k| b"abcdefghijklmnopqrstuvwxyz0123456789"[(c + i + k) % 36])
        .collect()
}
