//! Many loops (`--loops N`) and how connections are spread over them
//! (`--balance reuseport`: the kernel hashes; `--balance acceptor`: loop 0
//! deals them round-robin, skipping a stalled loop). The README's "Many
//! loops" says when each wins. Part of the event-loop model; the loop is in
//! `mod.rs`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use common::{Shutdown, Stats};
use log::{debug, error, info, trace};
use mio::Waker;

use super::EventLoop;
use super::sockets::{Listen, Stream};
use crate::listen::{has_reuseport, listen_reuseport};
use crate::{Balance, Config, Listener, Offload, Peer, Report};

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

/// Start `config.loops` loops (the calling thread runs loop 0) and wait
/// for them all; see [`super::run`].
pub(super) fn run_loops(
    listener: Listener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Report> {
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
    Ok(Report {
        stats,
        per_loop,
        ring: None,
    })
}

/// A receiving loop's end of the acceptor's channel.
pub(super) struct Inbox {
    rx: Receiver<(Stream, Peer)>,
    /// Connections sent and not yet taken (what the acceptor looks at).
    queued: Arc<AtomicUsize>,
}

/// The acceptor's way to one receiving loop.
pub(super) struct Handoff {
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

impl EventLoop {
    /// Take every connection the acceptor handed over. True when none can
    /// come any more: no acceptor, or it stopped accepting and said so by
    /// dropping its end of the channel.
    pub(super) fn inbox_finished(&mut self) -> bool {
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

    /// `--balance acceptor`: give an admitted connection to the next loop in
    /// turn (this one included), skipping a loop that has not picked up
    /// [`SKIP_QUEUED`] connections already (it is stuck) or has stopped.
    pub(super) fn deal(&mut self, stream: Stream, peer: Peer) {
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

    /// The acceptor: nothing more will be handed over. Dropping the senders
    /// tells the receiving loops so (their channel disconnects); wake them
    /// to see it, or an idle one would sleep until the deadline.
    pub(super) fn stop_dealing(&mut self) {
        for to in &mut self.handoff {
            if to.tx.take().is_some()
                && let Err(e) = to.waker.wake()
            {
                error!("could not wake an event loop: {e}");
            }
        }
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
