//! Helpers shared by the integration tests: start a server in-process on
//! 127.0.0.1:0, build wire bytes by hand (independently of `common`'s codec,
//! so a codec bug cannot hide in both ends), read with a timeout. The
//! helpers every chapter shares come from the `test-support` crate.
// Test helpers: a failed unwrap is a failed test, which is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Framing, ServerConfig, Shutdown, Stats};
use crossbeam_channel::Receiver;
use threaded_server::{Config, Report};

/// Bound on every read a test makes, and on waiting for a server to stop.
pub const TIMEOUT: Duration = test_support::LIMIT;

pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub stats: Arc<Stats>,
    done: Receiver<io::Result<Report>>,
}

/// Start `config`'s model on 127.0.0.1:0 in a thread of this process.
pub fn start(config: Config) -> Running {
    // A client a test leaves connected would hold the shutdown until the
    // grace deadline; tests close their clients, and a short grace keeps a
    // mistake from costing 5 s.
    let config = if config.common.grace == common::config::DEFAULT_GRACE {
        Config {
            common: ServerConfig {
                grace: Duration::from_secs(2),
                ..config.common
            },
            ..config
        }
    } else {
        config
    };
    common::log::init_for_tests();
    let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let stats = Arc::new(Stats::new());
    let (tx, done) = crossbeam_channel::bounded(1);
    {
        let (shutdown, stats) = (shutdown.clone(), stats.clone());
        thread::spawn(move || {
            let _ = tx.send(threaded_server::run(listener, &config, &shutdown, &stats));
        });
    }
    Running {
        addr,
        shutdown,
        stats,
        done,
    }
}

impl Running {
    /// Trigger shutdown and wait (bounded) for `run` to return.
    pub fn stop(self) -> Report {
        self.shutdown.trigger();
        self.wait_stopped()
    }

    pub fn wait_stopped(self) -> Report {
        self.done
            .recv_timeout(TIMEOUT)
            .expect("server did not stop within the timeout")
            .expect("server returned an error")
    }

    pub fn accepted(&self) -> u64 {
        Stats::get(&self.stats.accepted)
    }

    pub fn refused(&self) -> u64 {
        Stats::get(&self.stats.refused)
    }

    pub fn errors(&self) -> u64 {
        Stats::get(&self.stats.errors)
    }

    pub fn frames(&self) -> u64 {
        Stats::get(&self.stats.frames)
    }

    pub fn timed_out(&self) -> u64 {
        Stats::get(&self.stats.timed_out)
    }

    pub fn cut(&self) -> u64 {
        Stats::get(&self.stats.cut)
    }

    /// Connections completed by the kernel and waiting in the listen
    /// backlog for our `accept()` (`/proc/net/tcp` shows that count as the
    /// `rx_queue` of a socket in state 0A, LISTEN). An event to wait on:
    /// "the acceptor has taken every client that connected".
    pub fn backlog(&self) -> u64 {
        listen_backlog(self.addr)
    }
}

/// See [`Running::backlog`].
pub fn listen_backlog(addr: SocketAddr) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{:04X}", addr.port());
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[1].ends_with(&local) && f[3] == "0A")
                .then(|| u64::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no listening socket on {addr} in /proc/net/tcp"))
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{assert_closed, assert_silent, wait_until};

/// A connection with [`TIMEOUT`] on connect, read and write, and no
/// Nagle delay (the tests time small echoes).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = test_support::connect(addr);
    s.set_nodelay(true).unwrap();
    s
}

/// One frame's bytes on the wire, written out by hand.
pub fn wire(framing: Framing, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        Framing::Line => {
            assert!(!payload.contains(&b'\n'));
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Framing::Length => {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        Framing::Raw => out.extend_from_slice(payload),
    }
    out
}

/// Read exactly `n` bytes (within the socket's read timeout).
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    test_support::read_n(s, n).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"))
}

/// Send one frame and assert its echo comes back byte for byte.
pub fn echo(s: &mut TcpStream, framing: Framing, payload: &[u8]) {
    let w = wire(framing, payload);
    s.write_all(&w).unwrap();
    assert_eq!(read_n(s, w.len()), w, "echo of {} bytes", payload.len());
}

/// A deterministic payload; printable and newline-free for `line` framing.
pub fn payload(seed: u64, len: usize, framing: Framing) -> Vec<u8> {
    let mut rng = common::rng::SplitMix64::new(seed);
    let mut buf = vec![0; len];
    rng.fill(&mut buf);
    if framing == Framing::Line {
        for b in &mut buf {
            *b = b' ' + *b % 95;
        }
    }
    buf
}
