//! The accept loop both thread models share: how a *blocking* `accept()`
//! notices Ctrl-C, and what to do when `accept()` fails.
//!
//! Run with (two terminals, then Ctrl-C the server and watch it stop at once
//! although it was blocked in `accept()`):
//!
//! ```text
//! RUST_LOG=trace cargo run -p threaded-server -- server
//! nc 127.0.0.1 7003
//! ```
//!
//! **Waking a blocked `accept()`.** A thread blocked in the `accept(2)`
//! syscall sleeps in the kernel until a client connects. Setting a flag from
//! another thread (the signal thread, on Ctrl-C) does not wake it: the server
//! would hang until the next client arrives. We use two ways out:
//!
//! 1. *Connect to ourselves.* When shutdown is triggered, a hook opens (and
//!    at once drops) a TCP connection to our own listening address, so
//!    `accept()` returns; the loop sees the flag and stops. Portable and
//!    instant.
//! 2. *A receive timeout on the listening socket.* Linux honours
//!    `SO_RCVTIMEO` for `accept(2)` too (see socket(7)): after [`TICK`] with no
//!    client, `accept()` fails with `EAGAIN` (`WouldBlock`) and the loop looks
//!    at the flag. This is the safety net for when (1) cannot work, say
//!    because the process is out of file descriptors and cannot even open
//!    the wake-up socket.
//!
//! (The other classic answer is a non-blocking listener polled with a sleep,
//! which adds up to one sleep of latency to every new connection.)
//!
//! **Accept errors**, with the one policy every server of the workspace
//! follows (`common::net::accept_policy`): an error about one connection
//! (`ECONNABORTED`: the client gave up while queued) is retried at once. The
//! dangerous one is `EMFILE` (out of file descriptors): the pending
//! connection stays in the backlog, the listener stays readable, and
//! retrying at once spins at 100% CPU writing the same log line. So we wait,
//! 10 ms, 20 ms, ... 1 s ([`Backoff`]), and the wait itself ends early on
//! shutdown. `EBADF` and the like mean the listener is broken: the server
//! shuts down the normal way and reports it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};

use common::Shutdown;
use common::framing::is_timeout;
use common::net::{AcceptAction, Backoff, accept_policy, fatal_accept};
use log::trace;

use crate::TICK;

/// A listening socket plus the policy above. `accept()` hands out
/// connections until shutdown; then the caller closes it with [`finish`].
///
/// [`finish`]: Acceptor::finish
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    shutdown: Shutdown,
    backoff: Backoff,
    /// A fatal error (the listener itself is broken), returned by `finish`.
    fatal: Option<io::Error>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, shutdown: &Shutdown) -> io::Result<Self> {
        // The caller may hand us a non-blocking listener (tests, loadgen):
        // this chapter is about blocking calls, so make sure it blocks.
        listener.set_nonblocking(false)?;
        // Way out (2): `setsockopt(SO_RCVTIMEO)` on the listening socket.
        socket2::SockRef::from(&listener).set_read_timeout(Some(TICK))?;

        // Way out (1): on shutdown, connect to ourselves. A listener bound to
        // 0.0.0.0 or [::] is reachable through the loopback address.
        let local = listener.local_addr()?;
        let wake = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
            }
            _ => local,
        };
        shutdown.on_trigger(move || {
            // Bounded: if the backlog is full, the kernel drops our SYN and
            // a plain connect() would retry for a minute. The stream is
            // dropped at once; the server reads EOF from it, if it looks.
            match TcpStream::connect_timeout(&wake, TICK) {
                Ok(_) => trace!("woke the accept loop by connecting to {wake}"),
                Err(e) => {
                    trace!("wake-up connection to {wake} failed ({e}); the accept timeout will do")
                }
            }
        });

        Ok(Acceptor {
            listener,
            shutdown: shutdown.clone(),
            backoff: Backoff::new(),
            fatal: None,
        })
    }

    /// Block until the next client, or return `None` once shutdown has been
    /// triggered (or the listener broke: see [`finish`](Self::finish)).
    pub fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            if self.shutdown.is_triggered() {
                return None;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    if self.shutdown.is_triggered() {
                        // Most likely our own wake-up connection. Either way
                        // we have stopped accepting: dropping it closes it.
                        trace!("{peer}: accepted after shutdown began; closing");
                        return None;
                    }
                    trace!("accept() -> {peer}");
                    return Some((stream, peer));
                }
                // SO_RCVTIMEO expired with nobody connecting: look at the flag.
                // (Not an accept error: handled before the policy.)
                Err(e) if is_timeout(&e) => trace!("accept() timed out; checking for shutdown"),
                // One policy for every server (common::net::accept_policy),
                // which also logs the error at the level it deserves.
                Err(e) => match accept_policy(&e, &mut self.backoff) {
                    AcceptAction::Retry => {}
                    // EMFILE and friends: sleep, but wake at once on shutdown.
                    AcceptAction::Wait(delay) => {
                        self.shutdown.wait_timeout(delay);
                    }
                    AcceptAction::Fatal => {
                        // EBADF, EINVAL...: the listener itself is broken.
                        // Stop the whole server the normal way, so every
                        // thread is joined and the summary is logged, then
                        // report it.
                        self.fatal = Some(fatal_accept(e, &self.shutdown));
                        return None;
                    }
                },
            }
        }
    }

    /// Close the listening socket. From now on the kernel refuses new
    /// connections (RST), and the ones still waiting in the backlog, which
    /// we never accepted, are reset. Returns the fatal accept error, if any.
    pub fn finish(self) -> io::Result<()> {
        drop(self.listener);
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The safety net's premise: on Linux, `SO_RCVTIMEO` makes a blocking
    /// `accept()` give up with `WouldBlock` instead of sleeping for ever.
    #[test]
    fn rcvtimeo_bounds_a_blocking_accept() {
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        socket2::SockRef::from(&listener)
            .set_read_timeout(Some(TICK))
            .unwrap();
        let started = Instant::now();
        let err = listener.accept().unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert!(started.elapsed() >= TICK / 2, "{:?}", started.elapsed());
    }

    /// Shutdown ends `accept()` (returns `None`) and `finish` closes the
    /// listener, after which the kernel refuses connections.
    #[test]
    fn shutdown_stops_accepting_and_finish_closes() {
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let mut acceptor = Acceptor::new(listener, &shutdown).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (_, peer) = acceptor.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        shutdown.trigger();
        assert!(acceptor.accept().is_none());
        acceptor.finish().unwrap();
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
