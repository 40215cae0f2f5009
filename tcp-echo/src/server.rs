//! The iterative TCP echo server: the first server of every course.
//!
//! One client at a time: `accept()` a connection, serve it until it closes,
//! then `accept()` the next. While one client is being served, the others
//! wait in the kernel's listen backlog: their `connect()` has already
//! succeeded (the kernel finished the three-way handshake for us), but
//! nobody reads what they send. That is the lesson of this chapter, and the
//! reason the threads chapter exists.
//!
//! Run it, and talk to it from a second terminal:
//!
//! ```text
//! cargo run -p tcp-echo -- server              # terminal 1: listening on 127.0.0.1:7001
//! nc 127.0.0.1 7001                            # terminal 2: type lines, see them echoed
//! nc 127.0.0.1 7001                            # terminal 3: typed lines wait for terminal 2 to quit
//! ```
//!
//! The steps, and the syscalls behind them:
//!
//! | step      | syscall                      | where                          |
//! |-----------|------------------------------|--------------------------------|
//! | socket    | `socket(AF_INET, SOCK_STREAM)` | `common::net::listen`        |
//! | bind      | `bind(fd, 127.0.0.1:7001)`   | `common::net::listen`          |
//! | listen    | `listen(fd, backlog)`        | `common::net::listen`          |
//! | accept    | `accept4(fd)` -> new fd      | [`run`]                        |
//! | recv      | `recvfrom(fd)` / `read(fd)`  | `FramedStream::read_frame`     |
//! | send      | `sendto(fd)` / `write(fd)`   | `FramedStream::flush`          |
//! | close     | `close(fd)`                  | dropping the `TcpStream`       |
//!
//! `strace -f -e trace=network cargo run -p tcp-echo -- server` shows them live.

use std::io;
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::framing::{ConnError, FramedStream, Framing};
use common::{Shutdown, Stats};

/// How often a blocked `read()` wakes up to check for Ctrl-C and idleness.
/// A blocking `recv()` cannot be interrupted by a flag, so we give it a
/// timeout (`SO_RCVTIMEO`) and look at the flag each time it expires.
/// Shorter reacts faster to Ctrl-C; longer wakes the CPU less.
const POLL: Duration = Duration::from_millis(200);

/// What the server needs to know; built from `common::cli::ServerArgs`.
#[derive(Debug, Clone)]
pub struct Config {
    pub framing: Framing,
    pub max_frame: usize,
    /// Close a client that sends nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Rounds of `common::work::work` per frame before its echo.
    pub work: u32,
}

impl Config {
    pub fn from_args(args: &common::cli::ServerArgs) -> Self {
        Config {
            framing: args.framing,
            max_frame: args.max_frame,
            idle_timeout: args.idle(),
            work: args.work,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_args(&common::cli::ServerArgs::default())
    }
}

/// Serve clients one at a time until `shutdown` is triggered; returns the
/// counters that the summary line reports.
///
/// `accept()` blocks, and a blocking `accept()` does not return when Ctrl-C
/// arrives. So when shutdown is triggered we connect to ourselves: the
/// "wake-up connection" makes `accept()` return, and the loop sees the flag.
pub fn run(listener: TcpListener, config: &Config, shutdown: &Shutdown) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let local = listener.local_addr()?;
    shutdown.on_trigger(move || {
        // Connecting to 0.0.0.0 is not portable; reach the same port over
        // loopback instead. The result does not matter: if the connect fails,
        // the listener is already gone.
        let wake = wake_addr(local);
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    });

    let mut backoff = common::net::Backoff::new();
    while !shutdown.is_triggered() {
        // accept(): take the oldest completed connection off the backlog,
        // blocking until there is one. Returns a *new* socket for that client;
        // the listening socket stays open for the next.
        let (stream, peer) = match listener.accept() {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            Err(e) if common::net::is_transient_accept_error(&e) => {
                // EMFILE (out of file descriptors), ECONNABORTED (the client
                // gave up while queued), ... Retrying at once would spin, so
                // wait, growing the delay while the error lasts.
                let delay = backoff.next_delay();
                log::warn!("accept failed: {e}; retrying in {delay:?}");
                shutdown.wait_timeout(delay);
                continue;
            }
            Err(e) => return Err(e),
        };
        if shutdown.is_triggered() {
            // Most likely our own wake-up connection.
            break;
        }
        Stats::inc(&stats.accepted);
        serve(stream, peer, config, shutdown, &stats);
    }
    log::info!("tcp-echo stopped: {stats}");
    Ok(stats)
}

/// Where to connect to wake our own `accept()`.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Counters for one connection, for its closing log line.
#[derive(Debug, Default)]
struct Served {
    frames: u64,
    bytes: u64,
}

/// Serve one client to the end. Every error ends only this connection: it
/// is logged with the peer's address and never reaches the accept loop.
fn serve(stream: TcpStream, peer: SocketAddr, config: &Config, shutdown: &Shutdown, stats: &Stats) {
    log::info!("{peer}: connected");
    let started = Instant::now();
    let mut served = Served::default();
    let result = echo_loop(&stream, peer, config, shutdown, stats, &mut served);
    let how = match &result {
        Ok(how) => how.to_string(),
        Err(e) => {
            Stats::inc(&stats.errors);
            match e {
                ConnError::Io(io) if common::net::is_disconnect(io) => {
                    format!("peer vanished ({io})")
                }
                other => format!("error: {other}"),
            }
        }
    };
    let line = format!(
        "{peer}: closed after {:.1?}, {} frames, {} bytes echoed; {how}",
        started.elapsed(),
        served.frames,
        served.bytes
    );
    match result {
        Err(ConnError::Frame(_)) => log::warn!("{line}"),
        _ => log::info!("{line}"),
    }
    // Dropping `stream` here is the `close()`. If unread bytes are still in
    // the kernel's receive queue (say, the rest of an oversized frame), Linux
    // answers with a reset (RST) instead of a polite FIN.
}

fn echo_loop(
    stream: &TcpStream,
    peer: SocketAddr,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Stats,
    served: &mut Served,
) -> Result<&'static str, ConnError> {
    stream.set_read_timeout(Some(POLL))?;
    // A client that sends but never reads fills our socket send buffer, and
    // then `write()` blocks. Without a write timeout that one client would
    // hold this one-at-a-time server forever.
    stream.set_write_timeout(Some(config.idle_timeout.unwrap_or(Duration::from_secs(30))))?;
    // Nagle's algorithm holds back small writes while earlier data is
    // unacknowledged; for request/response echo that only adds latency.
    stream.set_nodelay(true)?;

    // `&TcpStream` implements Read and Write, so the framed adapter can
    // borrow the socket while we keep using it for options.
    let mut framed = FramedStream::new(stream, config.framing, config.max_frame);
    let mut last_activity = Instant::now();
    let mut last_bytes = 0;
    loop {
        match framed.read_frame() {
            Ok(Some(frame)) => {
                last_activity = Instant::now();
                echo(&mut framed, &frame, peer, config, stats, served)?;
                // Echo every frame that is already buffered, then send them
                // all with one write: pipelined requests cost one syscall.
                while let Some(frame) = framed.try_buffered_frame()? {
                    echo(&mut framed, &frame, peer, config, stats, served)?;
                }
                framed.flush()?;
                if shutdown.is_triggered() {
                    return drain_on_shutdown(&mut framed, peer, config, stats, served);
                }
            }
            // read() returned 0: the client shut down its write side (a
            // half-close, `shutdown(SHUT_WR)`) or closed. Everything it sent
            // has been echoed, so close our side too.
            Ok(None) => return Ok("client closed its side"),
            // SO_RCVTIMEO expired: no bytes for POLL. Partial frames stay
            // buffered inside `framed`, so nothing is lost by waking up.
            Err(e) if e.is_timeout() => {
                if shutdown.is_triggered() {
                    return drain_on_shutdown(&mut framed, peer, config, stats, served);
                }
                if framed.bytes_read() != last_bytes {
                    // Bytes of an unfinished frame arrived: slow, not idle.
                    last_bytes = framed.bytes_read();
                    last_activity = Instant::now();
                }
                if config
                    .idle_timeout
                    .is_some_and(|idle| last_activity.elapsed() >= idle)
                {
                    return Ok("idle timeout");
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn echo(
    framed: &mut FramedStream<&TcpStream>,
    frame: &[u8],
    peer: SocketAddr,
    config: &Config,
    stats: &Stats,
    served: &mut Served,
) -> Result<(), ConnError> {
    log::debug!("{peer}: frame of {} bytes", frame.len());
    if config.work > 0 {
        common::work::work(frame, config.work);
    }
    framed.queue_frame(frame)?;
    stats.add_frame(frame.len());
    served.frames += 1;
    served.bytes += frame.len() as u64;
    Ok(())
}

/// Shutdown while a client is connected: echo everything the kernel has
/// already received for it, then close. Bytes of an unfinished frame cannot
/// be echoed (there is no frame yet); they are reported.
fn drain_on_shutdown(
    framed: &mut FramedStream<&TcpStream>,
    peer: SocketAddr,
    config: &Config,
    stats: &Stats,
    served: &mut Served,
) -> Result<&'static str, ConnError> {
    // Non-blocking reads return WouldBlock once the receive queue is empty
    // instead of waiting for bytes that may never come.
    framed.get_ref().set_nonblocking(true)?;
    loop {
        match framed.read_frame() {
            Ok(Some(frame)) => echo(framed, &frame, peer, config, stats, served)?,
            Ok(None) => break,
            Err(ConnError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    framed.get_ref().set_nonblocking(false)?;
    framed.flush()?;
    // Tell the client we are done sending (FIN) before the socket closes.
    let _ = framed.get_ref().shutdown(Direction::Write);
    if framed.pending() > 0 {
        log::warn!(
            "{peer}: shutting down with {} bytes of an unfinished frame",
            framed.pending()
        );
    }
    Ok("server shutting down")
}
