//! Multiplexing made visible: one thread, non-blocking sockets and a
//! readiness loop on mio (epoll on Linux). This is what tokio does for you in
//! `tokio_server.rs`, written out by hand.
//!
//! Run with (two terminals):
//!
//! ```text
//! RUST_LOG=trace cargo run -p async-server -- server --model event-loop
//! nc 127.0.0.1 7004          # type lines; the trace shows each epoll event
//! ```
//!
//! # select, poll, epoll, and what mio hides
//!
//! A thread that calls `read()` on a socket with no data sleeps in the kernel
//! until data comes. With one thread and many sockets that is useless: while
//! it sleeps on client A, client B's request waits. Three generations of
//! system calls let one thread ask "which of these sockets can I use without
//! sleeping?":
//!
//! - `select(nfds, readfds, writefds, ...)` (1983): three bitmaps of file
//!   descriptor numbers, at most `FD_SETSIZE` = 1024 of them. The kernel scans
//!   every bit on every call and overwrites the bitmaps with the answer, so
//!   the caller rebuilds them each time. O(number of sockets) per call.
//! - `poll(fds, n, timeout)`: an array of `{fd, events, revents}`, no 1024
//!   limit, but still the whole array crosses into the kernel and is scanned
//!   on every call. With 10,000 mostly idle clients, each wakeup pays for all
//!   10,000.
//! - `epoll` (Linux 2.6): the interest list lives *in the kernel*.
//!   `epoll_ctl(ADD/MOD/DEL)` changes it once per socket; `epoll_wait`
//!   returns only the sockets that are ready, as `(events, user data)` pairs:
//!   the cost is proportional to the activity, not to the number of clients.
//!   BSD and macOS have `kqueue`, Windows has IOCP; same idea.
//!
//! mio is a thin portable layer over these: `Poll` is the epoll instance,
//! `Registry::register/reregister/deregister` are `epoll_ctl`, `Poll::poll`
//! is `epoll_wait`, a [`Token`] is the user data that comes back with each
//! event (here: which slot of our connection table), and [`Interest`] is the
//! `EPOLLIN`/`EPOLLOUT` mask. mio registers everything **edge-triggered**
//! (`EPOLLET`): an event says "this socket *became* readable", once. If we
//! read only part of what is waiting, no new event comes for the rest, so
//! the rule of this file is: after an event, read (or write) until the
//! kernel answers `WouldBlock`, or remember yourself that work is left (the
//! `ready` queue and the backpressure pause below).
//!
//! What each non-blocking call can answer, and what we do:
//!
//! | answer                 | meaning                                   | we                              |
//! |------------------------|-------------------------------------------|---------------------------------|
//! | `read` → `Ok(n > 0)`   | n bytes were waiting                      | decode, echo, read again        |
//! | `read` → `Ok(0)`       | the peer sent FIN (maybe a half-close)    | echo what is owed, FIN, close   |
//! | `write` → `Ok(n < len)`| short write: the send buffer filled up    | keep the rest, want `WRITABLE`  |
//! | `WouldBlock` (EAGAIN)  | nothing now; an event will come later     | back to `epoll_wait`            |
//! | `Interrupted` (EINTR)  | a signal arrived during the call          | simply call again               |
//! | other errors           | reset, broken pipe...                     | close this connection only      |
//!
//! Every `.await` of `tokio_server.rs` is a state here: "waiting for bytes"
//! is a connection registered `READABLE`, "waiting for room to write" is
//! `WRITABLE` plus the unsent bytes kept in `wbuf`, "paused" is the
//! backpressure flag, "draining" and "FIN sent" are the shutdown. Timers are
//! one sweep over the table; the shutdown deadline is the poll timeout.
//!
//! What to watch: the server never sleeps anywhere but in `poll()`, holds
//! 10,000 clients in one thread, and a client that never reads gets its
//! reading paused once `--max-pending` bytes of echoes wait for it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::conn::{End, log_close};
use common::framing::READ_CHUNK;
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{ConnError, Decoder, FrameError, ServerConfig, Shutdown, Stats, encode};
use log::{debug, error, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::{Config, Offload};

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

/// Serve `listener` on the calling thread until `shutdown`.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    if config.offload == Offload::Rayon && config.common.work > 0 {
        // Kept out on purpose: see Exercises in the README.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the event loop runs --work inline (one thread by design); --offload rayon is for --model tokio",
        ));
    }
    // Non-blocking: `accept()` with an empty backlog must say `WouldBlock`,
    // not put the only thread to sleep.
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    // The waker is an eventfd registered with epoll: writing to it from
    // another thread (the signal thread, via `Shutdown::on_trigger`) makes
    // `poll()` return with a WAKER event. Without it, a loop sleeping in
    // `epoll_wait` could not notice Ctrl-C.
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    shutdown.on_trigger({
        let waker = waker.clone();
        move || {
            if let Err(e) = waker.wake() {
                error!("could not wake the event loop: {e}");
            }
        }
    });
    let stats = Arc::new(Stats::new());
    let config = config.common;
    // Timers are found by a sweep over the table, often enough to close a
    // connection within a quarter of its timeout of when it is due.
    let shortest = config
        .idle_timeout
        .map_or(config.stall_timeout, |idle| idle.min(config.stall_timeout));
    let mut el = EventLoop {
        poll,
        listener: Some(listener),
        accept_paused_until: None,
        backoff: Backoff::new(),
        conns: Vec::new(),
        free: Vec::new(),
        open: 0,
        ready: VecDeque::new(),
        // One read buffer for every connection: the loop handles one socket
        // at a time, so it only ever needs one. Connections keep only the
        // leftovers (an unfinished frame) in their own `rbuf`.
        scratch: vec![0; READ_CHUNK],
        sweep_every: (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        next_sweep: Instant::now(),
        config,
        stats: stats.clone(),
        shutdown,
        deadline: None,
    };
    info!("event-loop model: one thread, mio over epoll");
    el.run()?;
    drop(waker);
    Ok(stats)
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
    poll: Poll,
    /// `None` once shutdown began: the listening socket is closed.
    listener: Option<TcpListener>,
    /// Accepting is backing off (out of file descriptors or memory): the
    /// listener is deregistered until then.
    accept_paused_until: Option<Instant>,
    backoff: Backoff,
    /// The connection table: token `FIRST_CONN + i` is slot `i`. Freed slots
    /// are reused, so the table never grows past the peak connection count.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    /// Connections to drive again before sleeping (see `Next::Again`).
    ready: VecDeque<usize>,
    scratch: Vec<u8>,
    /// Idle and stalled connections are found by a sweep this often.
    sweep_every: Duration,
    next_sweep: Instant,
    config: ServerConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Set when shutdown begins: connections still open then are cut.
    deadline: Option<Instant>,
}

impl EventLoop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            if self.deadline.is_some() && self.open == 0 {
                return Ok(());
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
                    WAKER => self.begin_shutdown(),
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
                if self.open > 0 {
                    warn!(
                        "{} connection(s) still open at the --grace deadline ({:?}): cutting them",
                        self.open, self.config.grace
                    );
                }
                for i in 0..self.conns.len() {
                    self.close(i, End::Cut);
                }
                return Ok(());
            }
        }
    }

    /// How long `poll()` may sleep: until the next timer, or not at all if
    /// some connection still has work queued.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let sweep = (self.open > 0).then_some(self.next_sweep);
        [sweep, self.accept_paused_until, self.deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    fn timers(&mut self, now: Instant) -> io::Result<()> {
        if let Some(until) = self.accept_paused_until
            && now >= until
        {
            self.accept_paused_until = None;
            if let Some(listener) = &mut self.listener {
                debug!("accept: resuming after the back-off");
                self.poll
                    .registry()
                    .register(listener, LISTENER, Interest::READABLE)?;
                // Connections may be waiting in the backlog already.
                self.accept_all()?;
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.sweep_every;
            // O(connections) once per `sweep_every`, not per event: cheap
            // even at 10,000 clients. A timer wheel would be exact; this is
            // simple.
            for i in 0..self.conns.len() {
                if let Some(end) = self.conns[i]
                    .as_ref()
                    .and_then(|conn| conn.timed_out(now, &self.config))
                {
                    self.close(i, end);
                }
            }
        }
        Ok(())
    }

    /// Accept until the backlog is empty (edge-triggered: one event may stand
    /// for many waiting connections).
    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let Some(listener) = &mut self.listener else {
                return Ok(());
            };
            if self.accept_paused_until.is_some() {
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    self.add_conn(stream, peer);
                }
                // The backlog is empty: back to epoll_wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => match accept_policy(&e, &mut self.backoff) {
                    // ECONNABORTED (the client gave up while queued),
                    // EINTR...: about one connection; try the next.
                    AcceptAction::Retry => {}
                    // EMFILE, ENOBUFS, ENOMEM: the connection stays in the
                    // backlog, so the listener stays readable, and accepting
                    // again at once would fail again, forever, at 100% CPU.
                    // Take the listener out of epoll and make the delay the
                    // poll timeout (`poll_timeout`); the waker still ends
                    // the wait on shutdown. (Another classic trick for
                    // EMFILE: keep a spare fd open, close it to accept and
                    // immediately close the newcomer, so it is at least told.)
                    AcceptAction::Wait(delay) => {
                        self.poll.registry().deregister(listener)?;
                        self.accept_paused_until = Some(Instant::now() + delay);
                        return Ok(());
                    }
                    AcceptAction::Fatal => return Err(e),
                },
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.open >= self.config.max_conns {
            Stats::inc(&self.stats.refused);
            warn!(
                "{peer}: refused: {} connections already open (--max-conns)",
                self.config.max_conns
            );
            return; // dropping `stream` closes it
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: TCP_NODELAY: {e}");
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // epoll_ctl(ADD). If bytes arrived already, epoll reports them at once.
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(FIRST_CONN + i), Interest::READABLE)
        {
            warn!("{peer}: cannot register with epoll: {e}");
            self.free.push(i);
            return;
        }
        self.conns[i] = Some(Conn::new(stream, peer, &self.config));
        self.open += 1;
        Stats::inc(&self.stats.accepted);
        info!("{peer}: connected ({} open)", self.open);
    }

    /// Run connection `i` as far as it can go without blocking.
    /// `short_read_drains`: see [`Conn::drive`].
    fn drive(&mut self, i: usize, short_read_drains: bool) {
        let draining = self.deadline.is_some();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return; // a stale event for a slot closed earlier in this batch
        };
        let next = conn.drive(
            &mut self.scratch,
            &self.config,
            &self.stats,
            draining,
            short_read_drains,
        );
        match next {
            Ok(Next::Close(end)) => self.close(i, end),
            Err(e) => self.close(i, End::Error(e)),
            Ok(next) => {
                if matches!(next, Next::Again) {
                    self.ready.push_back(i);
                }
                if let Err(e) = conn.update_interest(self.poll.registry(), Token(FIRST_CONN + i)) {
                    self.close(i, End::from(e));
                }
            }
        }
    }

    fn close(&mut self, i: usize, end: End) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        self.open -= 1;
        // epoll_ctl(DEL). Closing the fd would also remove it from the
        // interest list; saying so explicitly keeps mio portable.
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // A truncated last frame was kept for this line, once the echoes
        // owed before it had gone out.
        let end = match (end, conn.error.take()) {
            (End::PeerClosed, Some(e)) => End::from(e),
            (end, _) => end,
        };
        log_close(&conn.peer, conn.frames, conn.bytes, &end, &self.stats);
        // `conn` drops here: close(fd).
    }

    /// The waker fired: stop accepting, and let every connection echo what
    /// the kernel has already received, then say goodbye.
    fn begin_shutdown(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            // Dropped: the port is closed, new clients are refused.
        }
        // Closing the listening socket: the kernel refuses new clients, and
        // resets the ones still in the backlog (never accepted, never served).
        self.accept_paused_until = None;
        let grace = self.config.grace;
        self.deadline = Some(
            self.shutdown
                .deadline(grace)
                .unwrap_or_else(|| Instant::now() + grace),
        );
        info!(
            "shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
            self.open
        );
        for i in 0..self.conns.len() {
            self.drive(i, false);
        }
    }
}

/// One connection's state machine.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    /// Leftover bytes of an unfinished frame.
    rbuf: BytesMut,
    /// Echoes the kernel has not taken yet.
    wbuf: BytesMut,
    /// We take no more input: the peer sent FIN, or we are shutting down.
    input_done: bool,
    peer_eof: bool,
    /// We sent our FIN (`shutdown(Write)`).
    fin_sent: bool,
    /// Reading paused: `wbuf` reached `--max-pending`.
    paused: bool,
    /// What epoll currently watches for this socket.
    interest: Interest,
    /// A truncated last frame: logged when the connection closes.
    error: Option<FrameError>,
    /// Bytes of an unfinished frame dropped when we sent FIN at shutdown.
    unfinished: usize,
    /// When a byte last arrived (`--idle-timeout`).
    last_read: Instant,
    /// While echoes are unsent: since when the kernel has taken none of
    /// them (`--stall-timeout`). `None` while `wbuf` is empty.
    stalled_since: Option<Instant>,
    frames: u64,
    bytes: u64,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, config: &ServerConfig) -> Self {
        Conn {
            stream,
            peer,
            decoder: Decoder::new(config.framing, config.max_frame),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            input_done: false,
            peer_eof: false,
            fin_sent: false,
            paused: false,
            interest: Interest::READABLE,
            error: None,
            unfinished: 0,
            last_read: Instant::now(),
            stalled_since: None,
            frames: 0,
            bytes: 0,
        }
    }

    /// Write, read, echo, repeat, until the kernel says `WouldBlock` in the
    /// direction(s) we care about, the backpressure cap is hit, or the read
    /// budget is used.
    ///
    /// `short_read_drains`: a read that returns less than asked means the
    /// receive queue is empty *now*, and any later arrival raises a new
    /// edge, so we stop there instead of spending a `read()` on EAGAIN
    /// (epoll(7) says as much for stream sockets). Not when the event
    /// already reported the peer's FIN: that raises no new edge.
    fn drive(
        &mut self,
        scratch: &mut [u8],
        config: &ServerConfig,
        stats: &Stats,
        draining: bool,
        short_read_drains: bool,
    ) -> Result<Next, ConnError> {
        let mut reads = 0;
        loop {
            self.flush()?;
            if self.input_done {
                break;
            }
            // Backpressure: the peer is not taking its echoes. Stop reading
            // (its bytes wait in *its* kernel buffers, then it blocks) until
            // the output drains. Memory per client stays under
            // `--max-pending` + one read's echoes.
            if self.wbuf.len() >= config.max_pending {
                if !self.paused {
                    debug!(
                        "{}: {} bytes unsent, pausing reads",
                        self.peer,
                        self.wbuf.len()
                    );
                }
                self.paused = true;
                break;
            }
            if self.paused {
                // Edge-triggered: the bytes that arrived while we were
                // paused raised no new event, so we simply read now.
                debug!("{}: output drained, resuming reads", self.peer);
                self.paused = false;
            }
            if reads == READ_BUDGET {
                return Ok(Next::Again);
            }
            reads += 1;
            match self.stream.read(scratch) {
                Ok(0) => {
                    trace!("{}: read 0 bytes (FIN)", self.peer);
                    self.peer_eof = true;
                    self.input_done = true;
                    self.echo_eof(config, stats)?;
                }
                Ok(n) => {
                    trace!("{}: read {n} bytes", self.peer);
                    self.last_read = Instant::now();
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    self.echo_frames(config, stats)?;
                    if short_read_drains && n < scratch.len() {
                        self.flush()?;
                        if draining {
                            self.input_done = true;
                            continue;
                        }
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if draining {
                        // Shutting down and the receive queue is empty:
                        // everything sent before now has been read.
                        self.input_done = true;
                        continue;
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.input_done && self.wbuf.is_empty() {
            if !self.fin_sent {
                self.fin_sent = true;
                self.unfinished = self.rbuf.len();
                // FIN: "no more echoes". After the peer's own FIN (a
                // half-close) this completes a clean close.
                if let Err(e) = self.stream.shutdown(std::net::Shutdown::Write) {
                    debug!("{}: shutdown(Write): {e}", self.peer);
                }
            }
            if self.peer_eof || self.error.is_some() {
                return Ok(Next::Close(End::PeerClosed));
            }
            // Shutting down but the peer has not closed: read and drop until
            // it does, because closing with unread bytes sends RST, which can
            // destroy echoes still on their way to it.
            for _ in 0..READ_BUDGET {
                match self.stream.read(scratch) {
                    Ok(0) => {
                        let unfinished = self.unfinished;
                        return Ok(Next::Close(End::Shutdown { unfinished }));
                    }
                    Ok(n) => trace!("{}: discarded {n} bytes after shutdown", self.peer),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Wait),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Next::Again);
        }
        Ok(Next::Wait)
    }

    /// Cut every complete frame out of `rbuf` and queue its echo.
    fn echo_frames(&mut self, config: &ServerConfig, stats: &Stats) -> Result<(), ConnError> {
        while let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
            self.echo(&frame, config, stats)?;
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new(); // an idle connection holds no buffer
        }
        Ok(())
    }

    /// After FIN: the last frames, and a warning if one was unfinished.
    fn echo_eof(&mut self, config: &ServerConfig, stats: &Stats) -> Result<(), ConnError> {
        loop {
            match self.decoder.decode_eof(&mut self.rbuf) {
                Ok(Some(frame)) => self.echo(&frame, config, stats)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // Still flush the echoes we owe; report at close.
                    self.error = Some(e);
                    return Ok(());
                }
            }
        }
    }

    fn echo(
        &mut self,
        frame: &[u8],
        config: &ServerConfig,
        stats: &Stats,
    ) -> Result<(), ConnError> {
        debug!("{}: frame of {} bytes", self.peer, frame.len());
        if config.work > 0 {
            // Inline: the whole loop, every client, waits for this.
            std::hint::black_box(common::work::work(frame, config.work));
        }
        encode(config.framing, frame, &mut self.wbuf)?;
        stats.add_frame(frame.len());
        self.frames += 1;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Write as much of `wbuf` as the kernel takes now.
    fn flush(&mut self) -> io::Result<()> {
        let mut progress = false;
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // Possibly a short write: keep the rest for the next
                // WRITABLE event.
                Ok(n) => {
                    trace!("{}: wrote {n} of {} bytes", self.peer, self.wbuf.len());
                    self.wbuf.advance(n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
            self.stalled_since = None;
        } else if progress || self.stalled_since.is_none() {
            // The stall clock restarts only when the kernel took a byte: a
            // write that is waiting is not progress.
            self.stalled_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The sweep's question: has this connection been silent for
    /// `--idle-timeout` (while we owe it nothing and still read from it), or
    /// have its echoes waited `--stall-timeout` without the client taking a
    /// byte?
    fn timed_out(&self, now: Instant, config: &ServerConfig) -> Option<End> {
        let stall = config.stall_timeout;
        if let Some(since) = self.stalled_since
            && now.duration_since(since) >= stall
        {
            return Some(End::Stalled(stall));
        }
        let idle = config.idle_timeout?;
        let waiting_for_input = !self.input_done && self.wbuf.is_empty();
        (waiting_for_input && now.duration_since(self.last_read) >= idle).then_some(End::Idle(idle))
    }

    /// Ask epoll for exactly what we can act on: `READABLE` unless paused,
    /// `WRITABLE` only while output is pending. A socket is writable almost
    /// all the time, so watching it always would wake us for nothing.
    fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let read = if self.input_done {
            self.fin_sent && !self.peer_eof // draining: wait for the peer's FIN
        } else {
            !self.paused
        };
        let write = !self.wbuf.is_empty();
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
            registry.reregister(&mut self.stream, token, wanted)?;
            self.interest = wanted;
        }
        Ok(())
    }
}
