//! The UDP echo server: one socket, one loop, `recv_from` then `send_to`.
//!
//! Run with:
//!
//! ```text
//! terminal 1:  RUST_LOG=debug cargo run -p udp-echo -- server --drop 20 --seed 7
//! terminal 2:  nc -u 127.0.0.1 7002          (type lines; each is one datagram)
//!         or:  cargo run -p udp-echo -- client hello world
//! ```
//!
//! What to watch: there is no `accept()` and no per-client socket. Every
//! datagram arrives on the same socket together with its sender's address,
//! and the reply is addressed by hand with `send_to`. The server keeps no
//! state about a client between datagrams, so "a client connects" and "a
//! client leaves" never happen; the debug log shows each datagram, and
//! `info` the first datagram from each new address. With `--drop` some
//! datagrams are thrown away, exactly as a congested router would, and only
//! the client can notice.
//!
//! Compare with the TCP chapter's server: no framing (the kernel keeps each
//! datagram's boundaries), no connection limit (there are no connections), no
//! idle or stall timeout (nothing to time out: `send_to` never waits for the
//! peer), and a single thread serves everyone because no client can make it
//! wait: one `recv_from` returns one whole datagram, never half of one.
//!
//! Of the contract every TCP server keeps (the root README, "What every
//! server promises"), what applies to UDP: one accept-free receive loop
//! whose error back-off ends at once on shutdown; at shutdown, answer the
//! datagrams already received (a bounded, non-blocking drain: at most
//! [`DRAIN_LIMIT`], so it needs no `--grace`); one summary line,
//! `udp-echo stopped: ...`.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::Shutdown;
use common::net::Backoff;
use common::rng::SplitMix64;
use socket2::{Domain, Protocol, Socket, Type};

use crate::guard::PortSet;
use crate::wire::RECV_BUFFER;

/// How long one `recv_from` blocks before the loop checks for shutdown.
///
/// A thread blocked in `recvfrom(2)` does not return when Ctrl-C arrives
/// (signal-hook catches the signal on another thread, so ours is not even
/// interrupted with `EINTR`). `SO_RCVTIMEO` makes the call give up after
/// this long with `EAGAIN` (`WouldBlock`), and the loop looks at the flag.
/// Shutdown therefore takes up to this long; a datagram that arrives
/// meanwhile still wakes the call at once, so it costs no latency.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How many distinct peers the server remembers, only to log "new peer"
/// once each and count them. UDP source addresses cost an attacker nothing
/// to forge, so any per-peer memory must be bounded.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// At shutdown, how many datagrams already queued in the kernel are still
/// answered before the server exits (they were received; see `drain`).
pub const DRAIN_LIMIT: u64 = 4096;

/// The server's settings (the `server` subcommand's flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Share of incoming datagrams to throw away, 0.0 to 100.0 (`--drop`).
    pub drop_percent: f64,
    /// Seed of the generator that decides which ones (`--seed`).
    pub seed: u64,
    /// Source ports never answered (`--guard-ports`).
    pub guard: PortSet,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drop_percent: 0.0,
            seed: 0,
            guard: PortSet::default(),
        }
    }
}

/// What the server did, logged as its one summary line at shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams `recv_from` returned (answered or not).
    pub datagrams: u64,
    /// Their total payload bytes.
    pub bytes: u64,
    /// Datagrams echoed back.
    pub echoed: u64,
    /// Datagrams thrown away by `--drop`.
    pub dropped: u64,
    /// Datagrams not answered because of the reflection guard.
    pub guarded: u64,
    /// Replies `send_to` failed to send.
    pub send_errors: u64,
    /// Distinct peers seen (counting stops at [`MAX_TRACKED_PEERS`]).
    pub peers: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_least = if self.peers >= MAX_TRACKED_PEERS {
            "at least "
        } else {
            ""
        };
        write!(
            f,
            "{} datagrams ({} payload bytes) from {at_least}{} peer{}: {} echoed, \
             {} dropped by --drop, {} refused by the reflection guard, {} send errors",
            self.datagrams,
            self.bytes,
            self.peers,
            if self.peers == 1 { "" } else { "s" },
            self.echoed,
            self.dropped,
            self.guarded,
            self.send_errors,
        )
    }
}

/// Bind a UDP socket for the server. IPv6 `[::]` is made dual-stack (IPv4
/// clients then appear as `[::ffff:a.b.c.d]:port`), as `common::net::listen`
/// does for TCP. No `listen()` and no backlog: UDP has no connections to
/// queue, only datagrams, which wait in the socket's receive buffer.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Serve `socket` until `shutdown` is triggered; return what was done.
///
/// Errors about one datagram (a failed `send_to`, an ICMP error reported on
/// the socket) are logged and the loop goes on. Only an error that says the
/// socket itself is unusable ends the server.
pub fn run(socket: UdpSocket, config: ServerConfig, shutdown: Shutdown) -> io::Result<Summary> {
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    let local = socket.local_addr()?;
    let guard = if config.guard.is_empty() {
        "off".to_string()
    } else {
        format!("source ports {}", config.guard)
    };
    log::info!(
        "udp echo on {local}: dropping {}% of datagrams (seed {}), reflection guard {guard}",
        config.drop_percent,
        config.seed
    );
    let mut server = Server {
        rng: SplitMix64::new(config.seed),
        config,
        peers: HashSet::new(),
        summary: Summary::default(),
    };
    // One buffer, reused for every datagram, on the heap (64 KiB is a lot of
    // stack for a thread).
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut backoff = Backoff::new();

    // ANCHOR: recv-loop
    while !shutdown.is_triggered() {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                backoff.reset();
                server.handle(&socket, &buf[..n], peer);
            }
            // The SO_RCVTIMEO timeout: nothing arrived in POLL_INTERVAL. Linux
            // reports it as EAGAIN (WouldBlock); other systems as ETIMEDOUT.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // A signal landed on this thread before any data did: try again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_fatal(&e) => return Err(e),
            // Anything else is about one datagram or a passing shortage. One
            // surprise: an ICMP "port unreachable" for an earlier reply
            // (its client had gone) can be reported here as ECONNREFUSED or,
            // on Windows, WSAECONNRESET. On an unconnected socket Linux only
            // does that with IP_RECVERR, but the loop must survive it: one
            // vanished client must not stop the server.
            Err(e) => {
                let delay = backoff.next_delay();
                log::warn!("recv_from: {e}; carrying on in {delay:?}");
                // A pause, so a persistent error cannot spin; shutdown ends it.
                shutdown.wait_timeout(delay);
            }
        }
    }
    // ANCHOR_END: recv-loop
    server.drain(&socket, &mut buf);
    // The one summary line, as every server of the workspace logs it. (UDP
    // has no connections, so its counters are datagrams, not `Stats`.)
    log::info!("udp-echo stopped: {}", server.summary);
    Ok(server.summary)
}

/// Errors that say the socket itself is broken, not one datagram.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT)
    )
}

struct Server {
    config: ServerConfig,
    rng: SplitMix64,
    peers: HashSet<SocketAddr>,
    summary: Summary,
}

impl Server {
    /// One datagram in, at most one out.
    fn handle(&mut self, socket: &UdpSocket, datagram: &[u8], peer: SocketAddr) {
        let s = &mut self.summary;
        s.datagrams += 1;
        s.bytes += datagram.len() as u64;
        let new_peer = self.peers.len() < MAX_TRACKED_PEERS && self.peers.insert(peer);
        if new_peer {
            s.peers = self.peers.len();
        }
        log::trace!("recv_from {peer}: {} bytes", datagram.len());
        if new_peer {
            log::info!("{peer}: first datagram from this peer");
        }

        // Simulated loss first, as if the datagram had died on the way: one
        // draw of the seeded generator per datagram received, so a given seed
        // always drops the same datagrams (the 3rd, the 9th...) whatever
        // they contain and whoever sent them.
        if self.config.drop_percent > 0.0 && self.rng.chance(self.config.drop_percent) {
            s.dropped += 1;
            log::debug!(
                "{peer}: datagram #{} ({} bytes) dropped (--drop {}%)",
                s.datagrams,
                datagram.len(),
                self.config.drop_percent
            );
            return;
        }

        // ANCHOR: guard
        if self.config.guard.contains(peer.port()) {
            s.guarded += 1;
            // Warn once per peer, then quietly count: a flood of forged
            // datagrams must not become a flood of log lines too.
            if new_peer {
                log::warn!(
                    "{peer}: not answering: source port {} is in the reflection guard \
                     ({}); an echo to a service port could start an endless loop or \
                     reflect a forged request at a victim (see --guard-ports)",
                    peer.port(),
                    self.config.guard
                );
            } else {
                log::debug!("{peer}: not answering (reflection guard)");
            }
            return;
        }
        // ANCHOR_END: guard

        // `send_to` on a UDP socket sends the whole datagram or nothing:
        // there are no short writes. It can still fail: EMSGSIZE cannot
        // happen for an echo (the request fitted), but ENOBUFS (a full
        // interface queue) or EHOSTUNREACH can, and a lost reply is just
        // more loss, which UDP clients must live with anyway.
        match socket.send_to(datagram, peer) {
            Ok(_) => {
                s.echoed += 1;
                log::debug!("{peer}: echoed {} bytes", datagram.len());
            }
            Err(e) => {
                s.send_errors += 1;
                log::warn!("{peer}: send_to failed: {e}");
            }
        }
    }

    /// Answer what is already waiting in the socket's receive buffer, then
    /// stop. Those datagrams were delivered to us; dropping them on the floor
    /// would be loss we caused. Non-blocking, so it ends when the queue is
    /// empty (`WouldBlock`), and bounded, so a flood cannot keep it going.
    fn drain(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        if let Err(e) = socket.set_nonblocking(true) {
            log::warn!("cannot drain the receive queue: {e}");
            return;
        }
        for _ in 0..DRAIN_LIMIT {
            match socket.recv_from(buf) {
                Ok((n, peer)) => self.handle(socket, &buf[..n], peer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: the queue is empty. Anything else: give up too.
                Err(_) => return,
            }
        }
    }
}
