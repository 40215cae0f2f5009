//! Helpers shared by the integration tests: start a server in-process on
//! 127.0.0.1:0 in each model, build expected wire bytes, wait for the
//! kernel to acknowledge. The helpers every chapter shares (sockets with
//! timeouts, bounded waits, child processes) come from `test-support`,
//! re-exported here so a test file needs only `mod support;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_server::{Balance, Config, Model};
use bytes::BytesMut;
use common::{Framing, ServerConfig, Shutdown, Stats};

/// Every read in the tests gives up after this long.
pub const READ_TIMEOUT: Duration = test_support::LIMIT;

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{
    ServerProcess, assert_closed, connect, read_n, read_to_end as read_to_eof, unacked, wait_until,
    wait_until_acked,
};

/// A model as the tests run it: one of [`models`], or the event loop with
/// two loops in one of the two `--balance` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub model: Model,
    pub loops: usize,
    pub balance: Balance,
}

impl From<Model> for Variant {
    fn from(model: Model) -> Self {
        Variant {
            model,
            loops: 1,
            balance: Balance::Reuseport,
        }
    }
}

impl Variant {
    pub fn loops(loops: usize, balance: Balance) -> Variant {
        Variant {
            model: Model::EventLoop,
            loops,
            balance,
        }
    }

    /// As on the command line: `event-loop --loops 2 --balance acceptor`.
    pub fn name(&self) -> String {
        if self.loops > 1 {
            format!(
                "{} --loops {} --balance {}",
                self.model.name(),
                self.loops,
                self.balance.name()
            )
        } else {
            self.model.name().to_owned()
        }
    }

    /// Its flags, for the binary: `["--model", "event-loop", "--loops", "2", ...]`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--model".to_owned(), self.model.name().to_owned()];
        if self.loops > 1 {
            args.extend([
                "--loops".to_owned(),
                self.loops.to_string(),
                "--balance".to_owned(),
                self.balance.name().to_owned(),
            ]);
        }
        args
    }

    /// A listener on 127.0.0.1:0 the way `main` binds it for this variant
    /// (`SO_REUSEPORT` for more loops that each listen).
    pub fn listen(&self) -> std::net::TcpListener {
        let addr = "127.0.0.1:0".parse().unwrap();
        if self.loops > 1 && self.balance == Balance::Reuseport {
            async_server::listen_reuseport(addr).unwrap()
        } else {
            common::net::listen(addr).unwrap()
        }
    }

    pub fn configure(&self, config: &mut Config) {
        config.loops = self.loops;
        config.balance = self.balance;
    }
}

/// [`models`], then the event loop with two loops in each balance mode.
pub fn variants() -> Vec<Variant> {
    let mut v: Vec<Variant> = models().into_iter().map(Variant::from).collect();
    v.push(Variant::loops(2, Balance::Reuseport));
    v.push(Variant::loops(2, Balance::Acceptor));
    v
}

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    handle: JoinHandle<io::Result<Arc<Stats>>>,
}

impl Server {
    pub fn start(variant: impl Into<Variant>, mut config: Config) -> Server {
        common::log::init_for_tests();
        let variant = variant.into();
        variant.configure(&mut config);
        let listener = variant.listen();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let handle = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || async_server::run(variant.model, listener, config, shutdown))
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

/// The models the tests loop over: tokio, the event loop, and uring where
/// the kernel allows io_uring (otherwise the reason is printed once per call).
pub fn models() -> Vec<Model> {
    let (models, refused) = Model::available();
    if let Some(reason) = refused {
        eprintln!("--model uring skipped: {reason}");
    }
    models
}

/// [`models`] by their `--model` names.
pub fn model_names() -> Vec<&'static str> {
    models().into_iter().map(Model::name).collect()
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

/// The wire bytes of `frames` in `framing`.
pub fn wire(framing: Framing, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        common::encode(framing, f, &mut out).unwrap();
    }
    out.to_vec()
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

/// About 64 KiB of valid frames in `framing`; [`write_until_blocked`]
/// sends it over and over. Its frames are 40 bytes on the wire or less.
pub fn stream_chunk(framing: Framing) -> Vec<u8> {
    let one = payload(1, 2);
    let frames: Vec<&[u8]> = vec![&one; 64 * 1024 / (one.len() + 4)];
    wire(framing, &frames)
}

/// Write valid frames of `framing` (64 KiB a write) until a write makes no
/// progress for 200 ms, i.e. every buffer on the way to a server that
/// stopped reading us is full, or `cap` bytes went out. Returns the bytes
/// written. A bounded wait for an event (the write blocks), not a guess.
pub fn write_until_blocked(s: &mut TcpStream, framing: Framing, cap: usize) -> usize {
    use std::io::Write;
    let chunk = stream_chunk(framing);
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The stream is `chunk` repeated; a short write resumes at `off`.
    let (mut sent, mut off) = (0usize, 0usize);
    while sent < cap {
        match s.write(&chunk[off..]) {
            Ok(n) => {
                sent += n;
                off = (off + n) % chunk.len();
            }
            Err(_) => break,
        }
    }
    sent
}
