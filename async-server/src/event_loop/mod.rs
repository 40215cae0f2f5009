//! Multiplexing made visible: one thread, non-blocking sockets and a
//! readiness loop on mio (epoll on Linux). This is what tokio does for you in
//! `tokio_server.rs`, written out by hand. **Start here**: this file is the
//! loop (`EventLoop::run`: wait for events, drive the ready connections,
//! sweep the timers) and one connection's turn (`Conn::drive`: write, read,
//! echo, until the kernel says `WouldBlock`). Read it beside
//! `../uring/mod.rs`, which drives the same `common::echo::Echo` on
//! completions: what differs is only how the loop waits.
//!
//! Run with (two terminals):
//!
//! ```text
//! RUST_LOG=trace cargo run -p async-server -- server --model event-loop
//! nc 127.0.0.1 7004          # type lines; the trace shows each epoll event
//! ```
//!
//! Two loops, and which one each client lands on (`connected to loop N`):
//!
//! ```text
//! RUST_LOG=info cargo run -p async-server -- server --model event-loop --loops 2
//! for i in 1 2 3 4; do echo hi | nc -N 127.0.0.1 7004; done
//! ```
//!
//! The rest, a file each: `setup.rs` (one loop's epoll, waker, sweep),
//! `sockets.rs` (TCP or Unix), `accept.rs`, `timers.rs` (the sweep and the
//! shutdown drain), `balance.rs` (`--loops N`: reuseport or an acceptor).
//! The README's "How the event loop works" is the long explanation
//! (select, poll, epoll; edge-triggered events; what each non-blocking call
//! can answer; many loops).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::conn::{End, log_close};
use common::echo::{Ctx, Echo, Finish, Phase, Spare};
use common::net::Backoff;
use common::{ConnError, ServerConfig, Shutdown, Stats};
use log::{debug, trace, warn};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::{Config, Listener, Peer, Report};
use balance::{Handoff, Inbox};
use sockets::{Listen, Stream};

mod accept;
mod balance;
mod setup;
mod sockets;
mod timers;

pub use balance::{SKIP_QUEUED, STALLED_AFTER};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection in slot `i` of the table has token `FIRST_CONN + i`.
const FIRST_CONN: usize = 2;

/// Reads one connection may do per turn. A client that sends as fast as we
/// echo would otherwise keep the loop to itself; after this many reads it
/// goes to the back of the `ready` queue and the others get their turn.
const READ_BUDGET: usize = 16;

/// How many events one `epoll_wait` may return. More ready sockets than
/// this are simply reported by the next call.
const EVENTS_CAPACITY: usize = 1024;

/// Serve `listener` until `shutdown`: one loop on the calling thread, or
/// `config.loops` loops spread by `config.balance` (`balance.rs`). Blocks.
/// `--work` runs inline; `per_loop` in the report says how many
/// connections each loop served.
pub fn run(listener: Listener, config: Config, shutdown: Shutdown) -> io::Result<Report> {
    balance::run_loops(listener, config, shutdown)
}

/// What to do with a connection after `drive`.
#[derive(Debug)]
enum Next {
    /// Wait for the next event.
    Wait,
    /// It used its read budget with data left: run it again without waiting
    /// for an event (edge-triggered: none would come).
    Again,
    Close(End),
}

struct EventLoop {
    /// Which loop this is (0 with a single loop; 0 is the acceptor).
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    /// `None` once shutdown began (the listening socket is closed), and
    /// always for the loops an acceptor hands connections to.
    listener: Option<Listen>,
    /// Accepting is backing off (out of file descriptors or memory): the
    /// listener is deregistered until then.
    accept_paused_until: Option<Instant>,
    backoff: Backoff,
    /// The connection table: token `FIRST_CONN + i` is slot `i`. Freed slots
    /// are reused, so the table never grows past the peak connection count.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections open in this loop.
    open: usize,
    /// Connections open in every loop together (`--max-conns`).
    open_total: Arc<AtomicUsize>,
    /// Connections this loop served (the per-loop line of the summary).
    served: u64,
    unix_peers: Arc<AtomicU64>,
    /// `--balance acceptor`, loop 0: the other loops, dealt in turn.
    handoff: Vec<Handoff>,
    /// Whose turn is next: 0 is this loop, `i` is `handoff[i - 1]`.
    next_turn: usize,
    /// `--balance acceptor`, loops 1..: connections handed to us.
    inbox: Option<Inbox>,
    /// Connections to drive again before sleeping (see `Next::Again`).
    ready: VecDeque<usize>,
    /// One read buffer for every connection (the loop handles one socket
    /// at a time); connections keep only an unfinished frame.
    scratch: Vec<u8>,
    /// The decode scratch and spare echo buffers, lent to the busy
    /// connection.
    spare: Spare,
    /// Idle and stalled connections are found by a sweep this often.
    sweep_every: Duration,
    next_sweep: Instant,
    config: ServerConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Set when shutdown begins: connections still open then are cut.
    deadline: Option<Instant>,
    /// More than one loop: the log lines say which.
    many: bool,
    /// A fatal accept error: the loop drains, then ends with it.
    fatal: Option<io::Error>,
}

impl EventLoop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            if self.deadline.is_some() && self.open == 0 && self.inbox_finished() {
                return self.fatal.take().map_or(Ok(()), Err);
            }
            let timeout = self.poll_timeout(Instant::now());
            // epoll_wait: the one place this thread sleeps.
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // EINTR: a signal interrupted the wait.
                }
                return Err(e);
            }
            for event in events.iter() {
                trace!(
                    "event {:?}: readable={} writable={} read_closed={} write_closed={} error={}",
                    event.token(),
                    event.is_readable(),
                    event.is_writable(),
                    event.is_read_closed(),
                    event.is_write_closed(),
                    event.is_error()
                );
                match event.token() {
                    LISTENER => self.accept_all()?,
                    WAKER => self.woken(),
                    // Whatever the event says (readable, writable, hang-up,
                    // error), `drive` tries both directions until WouldBlock
                    // and finds out from the syscalls themselves.
                    // `is_read_closed`: the peer's FIN is already queued
                    // behind the data; read until `Ok(0)` to see it.
                    Token(t) => self.drive(t - FIRST_CONN, !event.is_read_closed()),
                }
            }
            for i in std::mem::take(&mut self.ready) {
                self.drive(i, false);
            }
            let now = Instant::now();
            self.timers(now)?;
            if let Some(deadline) = self.deadline
                && now >= deadline
            {
                // Handed over but never picked up: they are cut too.
                self.inbox_finished();
                if self.open > 0 {
                    warn!(
                        "{} connection(s) still open at the --grace deadline ({:?}): cutting them",
                        self.open, self.config.grace
                    );
                }
                for i in 0..self.conns.len() {
                    self.close(i, End::Cut);
                }
                return self.fatal.take().map_or(Ok(()), Err);
            }
        }
    }

    /// The waker fired: connections handed over by the acceptor, or the
    /// shutdown signal (or both).
    fn woken(&mut self) {
        self.inbox_finished();
        if self.shutdown.is_triggered() {
            self.begin_shutdown();
        }
    }
    /// Run connection `i` as far as it can go without blocking.
    /// `short_read_drains`: see [`Conn::drive`].
    fn drive(&mut self, i: usize, short_read_drains: bool) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return; // a stale event for a slot closed earlier in this batch
        };
        let next = conn.drive(
            &mut self.scratch,
            &mut self.spare,
            &self.config,
            &self.stats,
            short_read_drains,
        );
        match next {
            Ok(Next::Close(end)) => self.close(i, end),
            Err(e) => self.close(i, End::Error(e)),
            Ok(next) => {
                if matches!(next, Next::Again) {
                    self.ready.push_back(i);
                }
                let max_pending = self.config.max_pending;
                let token = Token(FIRST_CONN + i);
                if let Err(e) = conn.update_interest(self.poll.registry(), token, max_pending) {
                    self.close(i, End::from(e));
                }
            }
        }
    }

    /// Deregister, count, log the closing line; dropping the socket closes it.
    fn close(&mut self, i: usize, end: End) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        self.open -= 1;
        self.open_total.fetch_sub(1, Ordering::SeqCst);
        // epoll_ctl(DEL). Closing the fd would also remove it from the
        // interest list; saying so explicitly keeps mio portable.
        let _ = self.poll.registry().deregister(conn.stream.source());
        let (frames, bytes) = conn.echo.tally();
        log_close(&conn.peer, frames, bytes, &end, &self.stats);
        // `conn` drops here: close(fd).
    }
}

/// One connection: its socket, its [`Echo`] (every rule of the echo), and
/// what epoll watches for it.
struct Conn {
    stream: Stream,
    peer: Peer,
    echo: Echo,
    /// What epoll currently watches for this socket.
    interest: Interest,
}

impl Conn {
    /// Write, read, echo, repeat, until the kernel says `WouldBlock` in the
    /// direction(s) we care about, `--max-pending` is reached
    /// (backpressure: the peer's bytes wait in *its* kernel buffers), or
    /// the read budget is used.
    ///
    /// `short_read_drains`: a read that returns less than asked means the
    /// receive queue is empty *now*, and any later arrival raises a new
    /// edge, so we stop there instead of spending a `read()` on EAGAIN
    /// (epoll(7) says as much for stream sockets). Not when the event
    /// already reported the peer's FIN: that raises no new edge.
    fn drive(
        &mut self,
        scratch: &mut [u8],
        spare: &mut Spare,
        config: &ServerConfig,
        stats: &Stats,
        short_read_drains: bool,
    ) -> Result<Next, ConnError> {
        let now = Instant::now();
        let mut reads = 0;
        loop {
            self.flush(now, spare)?;
            let fin = match self.echo.finish() {
                Finish::No => false,
                Finish::Fin => true,
                Finish::FinAndClose(end) => {
                    self.shutdown_write();
                    return Ok(Next::Close(end));
                }
                Finish::Close(end) => return Ok(Next::Close(end)),
            };
            if fin {
                // Shutting down, every echo out: FIN, then read and drop
                // until the peer's (closing on unread bytes sends RST,
                // which can destroy echoes still on their way).
                self.shutdown_write();
            }
            if !self.echo.wants_input(config.max_pending) {
                // Edge-triggered: bytes that arrive meanwhile raise no new
                // event, so the next `drive` (when the echoes drain) reads.
                trace!(
                    "{}: not reading ({} echo bytes wait)",
                    self.peer,
                    self.echo.pending()
                );
                return Ok(Next::Wait);
            }
            if reads == READ_BUDGET {
                return Ok(Next::Again);
            }
            reads += 1;
            let mut cx = Ctx {
                now,
                config,
                stats,
                spare,
                peer: &self.peer,
            };
            match self.stream.read(scratch) {
                Ok(0) => {
                    trace!("{}: read 0 bytes (FIN)", self.peer);
                    self.echo.received_eof(&mut cx)?;
                }
                Ok(n) => {
                    trace!("{}: read {n} bytes", self.peer);
                    self.echo.received(&scratch[..n], &mut cx)?;
                    if short_read_drains && n < scratch.len() {
                        // The queue is empty now: draining, that is all
                        // there was; otherwise wait for the next edge.
                        self.echo.input_exhausted();
                        self.flush(now, spare)?;
                        if self.echo.phase() == Phase::InputDone {
                            continue;
                        }
                        return Ok(Next::Wait);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Draining: everything sent before now has been read.
                    self.echo.input_exhausted();
                    if self.echo.phase() == Phase::InputDone {
                        continue;
                    }
                    return Ok(Next::Wait);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `shutdown(SHUT_WR)`: FIN after the bytes already queued.
    fn shutdown_write(&self) {
        if let Err(e) = self.stream.shutdown_write() {
            debug!("{}: shutdown(Write): {e}", self.peer);
        }
    }

    /// Write as much as the kernel takes now; a short write keeps the rest
    /// for the next `WRITABLE` event.
    fn flush(&mut self, now: Instant, spare: &mut Spare) -> io::Result<()> {
        loop {
            let out = self.echo.to_send();
            if out.is_empty() {
                return Ok(());
            }
            match self.stream.write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    trace!("{}: wrote {n} of {} bytes", self.peer, out.len());
                    self.echo.sent(n, now, spare);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ask epoll for exactly what we can act on: `READABLE` while the echo
    /// wants input, `WRITABLE` only while output is pending. A socket is
    /// writable almost all the time, so watching it always would wake us
    /// for nothing.
    fn update_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        max_pending: usize,
    ) -> io::Result<()> {
        let read = self.echo.wants_input(max_pending);
        let write = self.echo.pending() > 0;
        let wanted = match (read, write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // Nothing to wait for cannot happen (input done with nothing to
            // write means closed); READABLE at least reports a reset.
            (_, false) => Interest::READABLE,
        };
        if wanted != self.interest {
            trace!("{}: interest {:?} -> {wanted:?}", self.peer, self.interest);
            // epoll_ctl(MOD). It also re-checks readiness: if the socket is
            // already writable, the event comes at once.
            registry.reregister(self.stream.source(), token, wanted)?;
            self.interest = wanted;
        }
        Ok(())
    }
}
