//! The iterative TCP echo server: the first server of every course.
//!
//! One client at a time: `accept()` a connection, serve it until it closes,
//! then `accept()` the next. While one client is being served, the others
//! wait in the kernel's listen backlog: their `connect()` has already
//! succeeded (the kernel finished the three-way handshake for us), but
//! nobody reads what they send. That is the lesson of this chapter, and the
//! reason the threads chapter exists. (So `--max-conns` means nothing here:
//! the flag is accepted, as by every server, and the start-up log says the
//! server holds one connection whatever its value.)
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
//! | recv      | `recvfrom(fd)` / `read(fd)`  | `common::blocking::EchoConn::serve` |
//! | send      | `sendto(fd)` / `write(fd)`   | `common::blocking::EchoConn::serve` |
//! | close     | `close(fd)`                  | dropping the `TcpStream`       |
//!
//! `strace -f -e trace=network cargo run -p tcp-echo -- server` shows them live.
//!
//! What the server promises (the root README's "What every server
//! promises"): frames up to `--max-frame`; at most `--max-pending` unsent
//! echo bytes (then it stops reading that client); `--idle-timeout` for a
//! client that sends nothing and `--stall-timeout` for one that stops
//! reading; and a shutdown bounded by `--grace`. Shutdown here means: the
//! client being served gets every echo it is owed, then FIN
//! (`common::blocking`); the clients still in the backlog were never
//! accepted, and the kernel resets them when the listener closes.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::blocking::EchoConn;
use common::conn::{End, log_close};
use common::net::{AcceptAction, Backoff, accept_policy, fatal_accept};
use common::{ServerConfig, Shutdown, Stats};

/// How often a blocked `read()` wakes up to check for Ctrl-C and idleness.
/// A blocking `recv()` cannot be interrupted by a flag, so we give it a
/// timeout (`SO_RCVTIMEO`) and look at the flag each time it expires.
/// Shorter reacts faster to Ctrl-C; longer wakes the CPU less.
const POLL: Duration = Duration::from_millis(200);

/// Serve clients one at a time until `shutdown` is triggered; returns the
/// counters that the summary line reports.
///
/// `accept()` blocks, and a blocking `accept()` does not return when Ctrl-C
/// arrives. So when shutdown is triggered we connect to ourselves: the
/// "wake-up connection" makes `accept()` return, and the loop sees the flag.
pub fn run(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let local = listener.local_addr()?;
    listener.set_nonblocking(false)?;
    // The safety net for the wake-up connection below (which needs a free
    // file descriptor): Linux honours SO_RCVTIMEO for accept(2) too, so a
    // blocked accept() gives up after POLL with EAGAIN and the loop looks at
    // the shutdown flag.
    socket2::SockRef::from(&listener).set_read_timeout(Some(POLL))?;
    if config.max_conns != common::config::DEFAULT_MAX_CONNS {
        log::warn!(
            "--max-conns {} has no effect: an iterative server holds one connection at a time",
            config.max_conns
        );
    }
    shutdown.on_trigger(move || {
        // Connecting to 0.0.0.0 is not portable; reach the same port over
        // loopback instead. The result does not matter: if the connect fails,
        // the listener is already gone.
        let _ = TcpStream::connect_timeout(&wake_addr(local), Duration::from_secs(1));
    });

    // ANCHOR: accept-loop
    let mut backoff = Backoff::new();
    let mut fatal = None;
    while !shutdown.is_triggered() {
        // accept(): take the oldest completed connection off the backlog,
        // blocking until there is one. Returns a *new* socket for that client;
        // the listening socket stays open for the next.
        let (stream, peer) = match listener.accept() {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            // SO_RCVTIMEO expired and nobody connected: look at the flag.
            Err(e) if common::framing::is_timeout(&e) => continue,
            // One policy for every server (common::net::accept_policy): a
            // lost connection is retried at once; EMFILE and friends wait,
            // longer each time, and the wait ends early on shutdown.
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                AcceptAction::Wait(delay) => {
                    shutdown.wait_timeout(delay);
                    continue;
                }
                // The listener is broken: stop as on Ctrl-C, then say so.
                AcceptAction::Fatal => {
                    fatal = Some(fatal_accept(e, shutdown));
                    break;
                }
            },
        };
        if shutdown.is_triggered() {
            // Most likely our own wake-up connection.
            break;
        }
        Stats::inc(&stats.accepted);
        serve(&stream, peer, config, shutdown, &stats);
    }
    // ANCHOR_END: accept-loop
    // Closing the listener: connections still waiting in its backlog were
    // never accepted, and the kernel answers them with a reset.
    drop(listener);
    log::info!("tcp-echo stopped: {stats}");
    fatal.map_or(Ok(stats), Err)
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

/// Serve one client to the end, then log its one closing line. Every error
/// ends only this connection and never reaches the accept loop.
fn serve(
    stream: &TcpStream,
    peer: SocketAddr,
    config: &ServerConfig,
    shutdown: &Shutdown,
    stats: &Stats,
) {
    log::info!("{peer}: connected");
    // The echo loop every blocking server shares (common::blocking):
    // read a frame (SO_RCVTIMEO = POLL, to notice Ctrl-C and idleness),
    // echo it and every frame pipelined behind it with one write, until the
    // client closes, goes idle, stops reading or breaks the protocol, or
    // shutdown drains the connection.
    let (end, echoed) = match EchoConn::new(stream, config, shutdown, stats) {
        Ok(mut conn) => (conn.serve(POLL), conn.echoed()),
        Err(e) => (End::from(e), Default::default()),
    };
    log_close(&peer, echoed.frames, echoed.bytes, &end, stats);
    // Dropping `stream` (in `run`) is the `close()`.
}
