//! Helpers shared by the integration tests: start a server in-process on
//! 127.0.0.1:0, build wire bytes by hand (independently of `common`'s codec,
//! so a codec bug cannot hide in both ends), read with a timeout.
// Test helpers: a failed unwrap is a failed test, which is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Framing, ServerConfig, Shutdown, Stats};
use crossbeam_channel::Receiver;
use threaded_server::{Config, Report};

/// Bound on every read a test makes, and on waiting for a server to stop.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Poll `cond` until it holds, failing the test after [`TIMEOUT`]. For
/// waiting on a server-side counter; not a sleep standing in for an event.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
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
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Send one frame and assert its echo comes back byte for byte.
pub fn echo(s: &mut TcpStream, framing: Framing, payload: &[u8]) {
    let w = wire(framing, payload);
    s.write_all(&w).unwrap();
    assert_eq!(read_n(s, w.len()), w, "echo of {} bytes", payload.len());
}

/// The server closed this connection: the next read returns 0 (FIN) or a
/// reset (closed with our bytes unread). Anything else fails the test.
pub fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "expected the server to close, got {n} bytes: {:?}",
            &buf[..n]
        ),
        Err(e) => panic!("expected the server to close, got {e}"),
    }
}

/// Nothing arrives within `window`: the read times out. Used only to show a
/// client is *not* being served (a negative can only be observed over time).
pub fn assert_silent(s: &mut TcpStream, window: Duration) {
    s.set_read_timeout(Some(window)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected no reply within {window:?}, got {other:?}"),
    }
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
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
