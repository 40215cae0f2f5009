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
//! Two loops, and which one each client lands on (`connected to loop N`):
//!
//! ```text
//! RUST_LOG=info cargo run -p async-server -- server --model event-loop --loops 2
//! for i in 1 2 3 4; do echo hi | nc -N 127.0.0.1 7004; done
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
//!
//! # Many loops (`--loops N`)
//!
//! One loop is one thread, so it uses one CPU. `--loops N` runs N loops,
//! each a thread with its own `mio::Poll` (its own epoll instance) and its
//! own connection table, sharing nothing per connection: the design of
//! nginx's workers, seastar and glommio. What they share is the contract:
//! one [`Stats`], one atomic count of open connections for `--max-conns`
//! (across every loop), and one [`Shutdown`], whose deadline is the same
//! instant for every loop. Two ways to spread the connections
//! (`--balance`):
//!
//! - `reuseport`: every loop has its own listening socket, all bound to the
//!   same address with `SO_REUSEPORT`, and the *kernel* picks the socket of
//!   each new connection by a hash of the client's address and port. No
//!   thread hands anything to another, but the kernel does not know whether
//!   a loop is busy: a loop stuck on a long `--work` keeps receiving its
//!   share, which waits in its backlog.
//! - `acceptor`: loop 0 alone listens, and deals each accepted connection
//!   round-robin (itself included) to the loops through a channel, then
//!   wakes the receiving loop with its [`Waker`]. One more hop and one
//!   `eventfd` write per connection, but the acceptor sees each loop's
//!   queue and skips a loop that has left a connection waiting for
//!   [`STALLED_AFTER`] (or has [`SKIP_QUEUED`] of them): a stalled loop.
//!
//! The shutdown summary adds a line `connections per loop: [512, 488]`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::conn::{End, log_close};
use common::framing::READ_CHUNK;
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{ConnError, Decoder, FrameError, ServerConfig, Shutdown, Stats, encode};
use log::{debug, error, info, trace, warn};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::listen::{SocketFile, has_reuseport, listen_reuseport};
use crate::{Balance, Config, Listener, Offload, Peer};

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

/// `--balance acceptor`: a loop that has this many handed-over connections
/// it has not picked up yet is skipped by the acceptor; the connection goes
/// to the next loop in turn. Large on purpose: a loop that shares a CPU with
/// the acceptor (both pinned to one core) does not run while the acceptor
/// takes a burst of connects, and a small cap would hand the whole burst to
/// the acceptor's own loop. Time, not count, is what says "stuck".
pub const SKIP_QUEUED: usize = 4096;

/// `--balance acceptor`: a loop that has left a handed-over connection
/// waiting this long is stuck (a long `--work`, say: a healthy loop picks
/// its connections up within microseconds of the wake-up) and is skipped
/// until it has taken them.
pub const STALLED_AFTER: Duration = Duration::from_millis(50);

/// The acceptor's test: skip a loop with `queued` connections not picked
/// up, the oldest of them handed over at `since`?
fn looks_stalled(queued: usize, since: Instant, now: Instant) -> bool {
    queued >= SKIP_QUEUED || (queued > 0 && now.saturating_duration_since(since) >= STALLED_AFTER)
}

/// What [`run_report`] returns: the summary counters, and how many
/// connections each loop served (`per_loop[i]` for loop `i`).
#[derive(Debug)]
pub struct Report {
    pub stats: Arc<Stats>,
    pub per_loop: Vec<u64>,
}

/// Serve `listener` until `shutdown`: one loop on the calling thread, or
/// `config.loops` loops (see the module docs). Blocks.
pub fn run(listener: Listener, config: Config, shutdown: Shutdown) -> io::Result<Arc<Stats>> {
    run_report(listener, config, shutdown).map(|report| report.stats)
}

/// [`run`], returning the connections each loop served too.
pub fn run_report(listener: Listener, config: Config, shutdown: Shutdown) -> io::Result<Report> {
    if config.offload == Offload::Rayon && config.common.work > 0 {
        // Kept out on purpose: see Exercises in the README.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the event loop runs --work inline (one thread per loop by design); --offload rayon is for --model tokio",
        ));
    }
    let loops = config.loops.max(1);
    let balance = (loops > 1).then_some(config.balance);
    // Every loop's listening socket; `None` for the loops the acceptor
    // hands connections to.
    let mut listeners: Vec<Option<Listen>> = Vec::with_capacity(loops);
    match (listener, balance) {
        (Listener::Tcp(first), Some(Balance::Reuseport)) => {
            if !has_reuseport(&first)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--balance reuseport: the listener must be bound with SO_REUSEPORT (async_server::listen_reuseport) for more loops to join it",
                ));
            }
            // The port the first socket got (it may have asked for 0).
            let addr = first.local_addr()?;
            listeners.push(Some(Listen::tcp(first)?));
            for _ in 1..loops {
                let more = listen_reuseport(addr).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("binding another SO_REUSEPORT listener on {addr}: {e}"),
                    )
                })?;
                listeners.push(Some(Listen::tcp(more)?));
            }
        }
        (Listener::Unix(_), Some(Balance::Reuseport)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--balance reuseport is for TCP (a socket file can be bound only once); use --balance acceptor with unix:",
            ));
        }
        (listener, _) => {
            listeners.push(Some(Listen::new(listener)?));
            listeners.resize_with(loops, || None);
        }
    }
    let stats = Arc::new(Stats::new());
    let open_total = Arc::new(AtomicUsize::new(0));
    let unix_peers = Arc::new(AtomicU64::new(0));
    let mut els = Vec::with_capacity(loops);
    for (id, listener) in listeners.into_iter().enumerate() {
        let mut el = EventLoop::new(
            id,
            listener,
            &config.common,
            &stats,
            &open_total,
            &unix_peers,
            &shutdown,
        )?;
        el.many = loops > 1;
        els.push(el);
    }
    if balance == Some(Balance::Acceptor) {
        // One channel per receiving loop; the acceptor keeps the senders
        // and the receivers' wakers.
        let mut handoff = Vec::with_capacity(loops - 1);
        for el in els.iter_mut().skip(1) {
            let (tx, rx) = mpsc::channel();
            let queued = Arc::new(AtomicUsize::new(0));
            el.inbox = Some(Inbox {
                rx,
                queued: queued.clone(),
            });
            handoff.push(Handoff {
                tx: Some(tx),
                waker: el.waker.clone(),
                queued,
                since: Instant::now(),
                seen: 0,
            });
        }
        els[0].handoff = handoff;
    }
    match balance {
        None => info!("event-loop model: one thread, mio over epoll"),
        Some(b) => info!(
            "event-loop model: {loops} loops (threads), each mio over epoll, --balance {}",
            b.name()
        ),
    }
    let mut els = els.into_iter();
    let Some(mut first) = els.next() else {
        return Err(io::Error::other("no event loop"));
    };
    let mut threads = Vec::with_capacity(loops - 1);
    for mut el in els {
        let name = format!("event-loop-{}", el.id);
        let stop = shutdown.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let result = el.run();
            if let Err(e) = &result {
                // Stop the others too: one summary, one exit.
                error!("event loop {}: {e}; stopping every loop", el.id);
                stop.trigger();
            }
            result.map(|()| el.served)
        });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // The loops already started need a shutdown to end.
                shutdown.trigger();
                for t in threads {
                    let _ = t.join();
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("starting an event loop thread: {e}"),
                ));
            }
        }
    }
    let mut result = first.run();
    if result.is_err() && loops > 1 {
        shutdown.trigger();
    }
    // Loop 0 ended by an error before its shutdown: the receiving loops
    // must still learn that nothing more comes.
    first.stop_dealing();
    let mut per_loop = vec![first.served];
    drop(first);
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(served)) => per_loop.push(served),
            Ok(Err(e)) => {
                per_loop.push(0);
                if result.is_ok() {
                    result = Err(e);
                }
            }
            Err(_) => {
                per_loop.push(0);
                if result.is_ok() {
                    result = Err(io::Error::other(format!("event loop {} panicked", i + 1)));
                }
            }
        }
    }
    result?;
    if loops > 1 {
        info!("connections per loop: {per_loop:?}");
    }
    Ok(Report { stats, per_loop })
}

/// A listening socket of one loop.
enum Listen {
    Tcp(TcpListener),
    /// The file guard is dropped with the listener: the socket file goes
    /// when the loop stops listening.
    Unix {
        listener: UnixListener,
        _file: SocketFile,
    },
}

impl Listen {
    fn new(listener: Listener) -> io::Result<Listen> {
        match listener {
            Listener::Tcp(l) => Listen::tcp(l),
            Listener::Unix(u) => {
                u.listener.set_nonblocking(true)?;
                Ok(Listen::Unix {
                    listener: UnixListener::from_std(u.listener),
                    _file: u.file,
                })
            }
        }
    }

    /// Non-blocking: `accept()` with an empty backlog must say
    /// `WouldBlock`, not put the only thread to sleep.
    fn tcp(l: std::net::TcpListener) -> io::Result<Listen> {
        l.set_nonblocking(true)?;
        Ok(Listen::Tcp(TcpListener::from_std(l)))
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Listen::Tcp(l) => l,
            Listen::Unix { listener, .. } => listener,
        }
    }

    /// `accept4(..., SOCK_NONBLOCK)`. `unix_peers` numbers the Unix clients,
    /// which usually have no name.
    fn accept(&mut self, unix_peers: &AtomicU64) -> io::Result<(Stream, Peer)> {
        match self {
            Listen::Tcp(l) => l.accept().map(|(s, a)| {
                // Echoes are small writes the client waits for: no Nagle.
                if let Err(e) = s.set_nodelay(true) {
                    debug!("{a}: TCP_NODELAY: {e}");
                }
                (Stream::Tcp(s), Peer::Tcp(a))
            }),
            Listen::Unix { listener, .. } => listener.accept().map(|(s, a)| {
                let n = unix_peers.fetch_add(1, Ordering::Relaxed) + 1;
                let peer = a
                    .as_pathname()
                    .map(|p| Peer::Unix {
                        path: Some(p.to_path_buf()),
                        n,
                    })
                    .unwrap_or(Peer::Unix { path: None, n });
                (Stream::Unix(s), peer)
            }),
        }
    }
}

/// A connection's socket: TCP or Unix, the same non-blocking calls.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// `shutdown(SHUT_WR)`: FIN (for a Unix socket: the peer reads EOF).
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A receiving loop's end of the acceptor's channel.
struct Inbox {
    rx: Receiver<(Stream, Peer)>,
    /// Connections sent and not yet taken (what the acceptor looks at).
    queued: Arc<AtomicUsize>,
}

/// The acceptor's way to one receiving loop.
struct Handoff {
    /// `None` once the acceptor stopped accepting: the receiver sees the
    /// channel disconnected and knows nothing more will come.
    tx: Option<Sender<(Stream, Peer)>>,
    waker: Arc<Waker>,
    queued: Arc<AtomicUsize>,
    /// When the loop last made progress: its queue was empty, or it had
    /// taken some of it since we last looked. Older than [`STALLED_AFTER`]
    /// with connections still queued: the loop is stuck.
    since: Instant,
    /// `queued` right after our last hand-over: a smaller value now means
    /// the loop has picked some up (progress, even if never back to empty).
    seen: usize,
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
    scratch: Vec<u8>,
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
}

impl EventLoop {
    fn new(
        id: usize,
        mut listener: Option<Listen>,
        config: &ServerConfig,
        stats: &Arc<Stats>,
        open_total: &Arc<AtomicUsize>,
        unix_peers: &Arc<AtomicU64>,
        shutdown: &Shutdown,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener.source(), LISTENER, Interest::READABLE)?;
        }
        // The waker is an eventfd registered with epoll: writing to it from
        // another thread (the signal thread, via `Shutdown::on_trigger`, or
        // the acceptor handing over a connection) makes `poll()` return with
        // a WAKER event. Without it, a loop sleeping in `epoll_wait` could
        // not notice Ctrl-C.
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        shutdown.on_trigger({
            let waker = waker.clone();
            move || {
                if let Err(e) = waker.wake() {
                    error!("could not wake event loop {id}: {e}");
                }
            }
        });
        // Timers are found by a sweep over the table, often enough to close
        // a connection within a quarter of its timeout of when it is due.
        let shortest = config
            .idle_timeout
            .map_or(config.stall_timeout, |idle| idle.min(config.stall_timeout));
        Ok(EventLoop {
            id,
            poll,
            waker,
            listener,
            accept_paused_until: None,
            backoff: Backoff::new(),
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            open_total: open_total.clone(),
            served: 0,
            unix_peers: unix_peers.clone(),
            handoff: Vec::new(),
            next_turn: 0,
            inbox: None,
            ready: VecDeque::new(),
            // One read buffer for every connection: the loop handles one
            // socket at a time, so it only ever needs one. Connections keep
            // only the leftovers (an unfinished frame) in their own `rbuf`.
            scratch: vec![0; READ_CHUNK],
            sweep_every: (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            next_sweep: Instant::now(),
            config: config.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            deadline: None,
            many: false,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            if self.deadline.is_some() && self.open == 0 && self.inbox_finished() {
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
                return Ok(());
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

    /// Take every connection the acceptor handed over. True when none can
    /// come any more: no acceptor, or it stopped accepting and said so by
    /// dropping its end of the channel.
    fn inbox_finished(&mut self) -> bool {
        loop {
            let Some(inbox) = &self.inbox else {
                return true;
            };
            match inbox.rx.try_recv() {
                Ok((stream, peer)) => {
                    inbox.queued.fetch_sub(1, Ordering::Relaxed);
                    self.add_conn(stream, peer);
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
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
                    .register(listener.source(), LISTENER, Interest::READABLE)?;
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
            match listener.accept(&self.unix_peers) {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    if !self.admit(&peer) {
                        continue; // dropping `stream` closes it
                    }
                    if self.handoff.is_empty() {
                        self.add_conn(stream, peer);
                    } else {
                        self.deal(stream, peer);
                    }
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
                        self.poll.registry().deregister(listener.source())?;
                        self.accept_paused_until = Some(Instant::now() + delay);
                        return Ok(());
                    }
                    AcceptAction::Fatal => return Err(e),
                },
            }
        }
    }

    /// `--max-conns`, counted over every loop: take a slot, or refuse.
    fn admit(&self, peer: &Peer) -> bool {
        let max = self.config.max_conns;
        if self.open_total.fetch_add(1, Ordering::SeqCst) >= max {
            self.open_total.fetch_sub(1, Ordering::SeqCst);
            Stats::inc(&self.stats.refused);
            warn!("{peer}: refused: {max} connections already open (--max-conns)");
            return false;
        }
        true
    }

    /// `--balance acceptor`: give an admitted connection to the next loop in
    /// turn (this one included), skipping a loop that has not picked up
    /// [`SKIP_QUEUED`] connections already (it is stuck) or has stopped.
    fn deal(&mut self, stream: Stream, peer: Peer) {
        let turns = self.handoff.len() + 1;
        let mut conn = (stream, peer);
        for _ in 0..turns {
            let turn = self.next_turn;
            self.next_turn = (turn + 1) % turns;
            if turn == 0 {
                let (stream, peer) = conn;
                self.add_conn(stream, peer);
                return;
            }
            let to = &mut self.handoff[turn - 1];
            if to.tx.is_none() {
                continue; // shutting down
            }
            let queued = to.queued.load(Ordering::Relaxed);
            let now = Instant::now();
            if queued == 0 || queued < to.seen {
                to.since = now;
            }
            to.seen = queued;
            if looks_stalled(queued, to.since, now) {
                debug!("loop {turn} has left {queued} connection(s) waiting: skipping it");
                continue;
            }
            to.seen = to.queued.fetch_add(1, Ordering::Relaxed) + 1;
            let Some(tx) = &to.tx else { continue };
            match tx.send(conn) {
                Ok(()) => {
                    trace!("handed a connection to loop {turn}");
                    // An eventfd write: the receiving loop's epoll_wait returns.
                    if let Err(e) = to.waker.wake() {
                        error!("could not wake event loop {turn}: {e}");
                    }
                    return;
                }
                // That loop has ended (an error stopped it): next one.
                Err(mpsc::SendError(back)) => {
                    to.queued.fetch_sub(1, Ordering::Relaxed);
                    conn = back;
                }
            }
        }
        // Every other loop is stuck or gone: serve it here.
        let (stream, peer) = conn;
        self.add_conn(stream, peer);
    }

    /// A new connection, already admitted under `--max-conns`.
    fn add_conn(&mut self, mut stream: Stream, peer: Peer) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // epoll_ctl(ADD). If bytes arrived already, epoll reports them at once.
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            Token(FIRST_CONN + i),
            Interest::READABLE,
        ) {
            warn!("{peer}: cannot register with epoll: {e}");
            self.free.push(i);
            self.open_total.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if self.many {
            info!(
                "{peer}: connected to loop {} ({} open there)",
                self.id,
                self.open + 1
            );
        } else {
            info!("{peer}: connected ({} open)", self.open + 1);
        }
        self.conns[i] = Some(Conn::new(stream, peer, &self.config));
        self.open += 1;
        self.served += 1;
        Stats::inc(&self.stats.accepted);
        if self.deadline.is_some() {
            // Handed over just as shutdown began: drain it like the others.
            self.drive(i, false);
        }
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
        self.open_total.fetch_sub(1, Ordering::SeqCst);
        // epoll_ctl(DEL). Closing the fd would also remove it from the
        // interest list; saying so explicitly keeps mio portable.
        let _ = self.poll.registry().deregister(conn.stream.source());
        // A truncated last frame was kept for this line, once the echoes
        // owed before it had gone out.
        let end = match (end, conn.error.take()) {
            (End::PeerClosed, Some(e)) => End::from(e),
            (end, _) => end,
        };
        log_close(&conn.peer, conn.frames, conn.bytes, &end, &self.stats);
        // `conn` drops here: close(fd).
    }

    /// The acceptor: nothing more will be handed over. Dropping the senders
    /// tells the receiving loops so (their channel disconnects); wake them
    /// to see it, or an idle one would sleep until the deadline.
    fn stop_dealing(&mut self) {
        for to in &mut self.handoff {
            if to.tx.take().is_some()
                && let Err(e) = to.waker.wake()
            {
                error!("could not wake an event loop: {e}");
            }
        }
    }

    /// The waker fired: stop accepting, and let every connection echo what
    /// the kernel has already received, then say goodbye.
    fn begin_shutdown(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(listener.source());
            // Dropped: the port is closed, new clients are refused. (A Unix
            // socket's file is removed with it: nobody can connect().)
        }
        // Closing the listening socket: the kernel refuses new clients, and
        // resets the ones still in the backlog (never accepted, never served).
        self.accept_paused_until = None;
        self.stop_dealing();
        let grace = self.config.grace;
        self.deadline = Some(
            self.shutdown
                .deadline(grace)
                .unwrap_or_else(|| Instant::now() + grace),
        );
        if self.many {
            info!(
                "loop {}: shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
                self.id, self.open
            );
        } else {
            info!(
                "shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
                self.open
            );
        }
        for i in 0..self.conns.len() {
            self.drive(i, false);
        }
    }
}

/// One connection's state machine.
struct Conn {
    stream: Stream,
    peer: Peer,
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
    fn new(stream: Stream, peer: Peer, config: &ServerConfig) -> Self {
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
                if let Err(e) = self.stream.shutdown_write() {
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
            registry.reregister(self.stream.source(), token, wanted)?;
            self.interest = wanted;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_skipped_once_it_leaves_connections_waiting() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Nothing waiting: never skipped, however long ago.
        assert!(!looks_stalled(0, t0, t0 + ms(10_000)));
        // Just handed over: give it its wake-up.
        assert!(!looks_stalled(1, t0, t0 + ms(1)));
        assert!(!looks_stalled(3, t0, t0 + STALLED_AFTER - ms(1)));
        // Left waiting: stuck.
        assert!(looks_stalled(1, t0, t0 + STALLED_AFTER));
        // Too many at once, even if recent.
        assert!(looks_stalled(SKIP_QUEUED, t0, t0));
        assert!(!looks_stalled(SKIP_QUEUED - 1, t0, t0));
    }
}
