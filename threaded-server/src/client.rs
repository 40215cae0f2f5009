//! Clients for this chapter: a line client (messages in, echoes out) and a
//! concurrent load client (N connections, M verified echoes each, one thread
//! per connection, which is itself the thread-per-client pattern).
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p threaded-server -- server --model pool --workers 4
//! cargo run -p threaded-server -- client hello world             # two echoes
//! cargo run -p threaded-server -- client --connections 50 --echoes 200
//! ```
//!
//! What to watch: with `--model pool --workers 4`, 50 connections are
//! served four at a time; the load client still finishes, but connections
//! that waited in the queue report a long time to their first echo.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::framing::DEFAULT_MAX_FRAME;
use common::rng::SplitMix64;
use common::{ConnError, FramedStream, Framing};

/// One blocking connection that sends a frame and waits for its echo.
#[derive(Debug)]
pub struct EchoClient {
    framed: FramedStream<TcpStream>,
    framing: Framing,
}

impl EchoClient {
    /// Connect with a bounded `connect()` and a read timeout on every read.
    pub fn connect(addr: SocketAddr, framing: Framing, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(EchoClient {
            framed: FramedStream::new(stream, framing, DEFAULT_MAX_FRAME),
            framing,
        })
    }

    /// Send one frame and return its echo. In `raw` framing the echo may come
    /// back in several pieces (TCP keeps no message boundaries), so we read
    /// until as many bytes came back as we sent.
    pub fn echo(&mut self, payload: &[u8]) -> Result<Vec<u8>, ConnError> {
        if self.framing == Framing::Raw && payload.is_empty() {
            // Zero bytes in raw framing put nothing on the wire: no echo comes.
            return Ok(Vec::new());
        }
        self.framed.write_frame(payload)?;
        let mut echoed = Vec::with_capacity(payload.len());
        loop {
            match self.framed.read_frame()? {
                Some(frame) => echoed.extend_from_slice(&frame),
                None => {
                    return Err(ConnError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "server closed the connection after {} of {} echoed bytes",
                            echoed.len(),
                            payload.len()
                        ),
                    )));
                }
            }
            if self.framing != Framing::Raw || echoed.len() >= payload.len() {
                return Ok(echoed);
            }
        }
    }
}

/// What [`load`] does.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub framing: Framing,
    pub connections: usize,
    pub echoes: usize,
    /// Payload bytes per frame.
    pub size: usize,
    /// Bound on connect and on every read.
    pub timeout: Duration,
}

/// What [`load`] saw.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Echoes that came back byte for byte.
    pub verified: usize,
    /// One line per connection that failed (connect error, mismatch, ...).
    pub failures: Vec<String>,
    pub elapsed: Duration,
    /// Slowest time from connect to first echo: queueing in a pool shows here.
    pub max_first_echo: Duration,
}

/// The payload a load connection sends: deterministic, and never a `\n`
/// in `line` framing (a newline would split the frame in two).
pub fn payload(conn: usize, echo: usize, size: usize, framing: Framing) -> Vec<u8> {
    let mut rng = SplitMix64::new(((conn as u64) << 32) ^ echo as u64);
    let mut buf = vec![0; size];
    rng.fill(&mut buf);
    if framing == Framing::Line {
        for b in &mut buf {
            *b = b'!' + *b % 94; // printable ASCII, no newline
        }
    }
    buf
}

/// `connections` threads, each connecting and doing `echoes` round trips,
/// all at once; every echo is compared with what was sent.
pub fn load(spec: &LoadSpec) -> LoadResult {
    let started = Instant::now();
    let handles: Vec<_> = (0..spec.connections)
        .map(|c| {
            let spec = spec.clone();
            thread::Builder::new()
                .name(format!("client-{c}"))
                .stack_size(128 * 1024)
                .spawn(move || one_connection(&spec, c))
        })
        .collect();
    let mut result = LoadResult {
        verified: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
        max_first_echo: Duration::ZERO,
    };
    for (c, handle) in handles.into_iter().enumerate() {
        match handle {
            Err(e) => result
                .failures
                .push(format!("connection {c}: cannot spawn a thread: {e}")),
            Ok(h) => match h.join() {
                Ok(Ok((n, first))) => {
                    result.verified += n;
                    result.max_first_echo = result.max_first_echo.max(first);
                }
                Ok(Err(e)) => result.failures.push(format!("connection {c}: {e}")),
                Err(_) => result
                    .failures
                    .push(format!("connection {c}: client thread panicked")),
            },
        }
    }
    result.elapsed = started.elapsed();
    result
}

fn one_connection(spec: &LoadSpec, c: usize) -> Result<(usize, Duration), String> {
    let start = Instant::now();
    let mut client = EchoClient::connect(spec.addr, spec.framing, spec.timeout)
        .map_err(|e| format!("connect: {e}"))?;
    let mut first = Duration::ZERO;
    for i in 0..spec.echoes {
        let sent = payload(c, i, spec.size, spec.framing);
        let got = client.echo(&sent).map_err(|e| {
            if e.is_timeout() {
                // A pool with every worker busy leaves us queued, unanswered.
                format!("echo {i}: no echo within {:?} (--timeout)", spec.timeout)
            } else {
                format!("echo {i}: {e}")
            }
        })?;
        if got != sent {
            return Err(format!(
                "echo {i}: {} bytes came back for {} sent, and they differ",
                got.len(),
                sent.len()
            ));
        }
        if i == 0 {
            first = start.elapsed();
        }
    }
    Ok((spec.echoes, first))
}
