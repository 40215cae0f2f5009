//! What both thread models do with an accepted connection, so that
//! `per_client.rs` and `pool.rs` differ only in *who* runs it: serve it to
//! its end, log how it ended, contain a panic, and, at shutdown, join the
//! threads that serve connections by the `--grace` deadline.
//!
//! Run with (two terminals; type lines in the second, then stop typing and
//! watch the server close you after the idle timeout):
//!
//! ```text
//! RUST_LOG=debug cargo run -p threaded-server -- server --idle-timeout 5s
//! nc 127.0.0.1 7003
//! ```
//!
//! What to watch:
//!
//! - **The echo loop is the one every blocking server runs**
//!   (`common::blocking::EchoConn::serve`): blocking reads with
//!   `SO_RCVTIMEO` = [`TICK`], so a thread blocked on a silent client still
//!   notices Ctrl-C and measures idle time itself; echoes written with
//!   `SO_SNDTIMEO` bounded by `--stall-timeout` and the shutdown deadline.
//! - **Idle timeout.** In a thread pool a silent client occupies a whole
//!   worker, so this limit is what keeps N silent clients from starving
//!   everybody else for ever. A client that stops *reading* is the stall
//!   timeout's business: a blocked write is not activity.
//! - **Shutdown.** Every connection echoes what it has received (its
//!   buffer and the kernel's receive queue), sends FIN, waits for the
//!   client's FIN, and is cut at the deadline. Every thread that serves a
//!   connection is joined by then ([`join_by`]), so the process exits
//!   within `--grace` and a tick, whatever the clients do.
//! - **Errors end this connection only**, with the peer address and the
//!   serving thread's name in the one closing line (`common::conn`).

use std::any::Any;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use common::blocking::{EchoConn, Tally};
use common::conn::{End, log_close};
use common::{Shutdown, Stats};
use log::{error, info, warn};

use crate::{Config, TICK};

/// Serve one connection to the end and log its one closing line. Never
/// returns an error: whatever goes wrong ends this connection only.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Stats,
) -> Tally {
    let current = thread::current();
    let who = current.name().unwrap_or("unnamed thread");
    info!("{peer}: connected, served by {who}");
    if let Some(at) = &config.inject_panic {
        at.tick(peer);
    }
    let (end, echoed) = match EchoConn::new(&stream, &config.common, shutdown, stats) {
        Ok(mut conn) => (conn.serve(TICK), conn.echoed()),
        Err(e) => (End::from(e), Tally::default()),
    };
    log_close(
        &format_args!("{peer} [{who}]"),
        echoed.frames,
        echoed.bytes,
        &end,
        stats,
    );
    // Dropping `stream` here closes the socket (`close(2)`).
    echoed
}

/// An accepted connection with its place under `--max-conns`: what the
/// acceptor hands to a connection thread (per-client) or to the queue (pool).
#[derive(Debug)]
pub struct Job {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Given back when the job is done, however it ends.
    pub slot: Slot,
}

impl Job {
    /// [`serve`] the connection on this thread, containing a panic: the
    /// connection's state (its socket, its buffers) is dropped, the panic is
    /// logged and counted, and `None` tells the caller; the thread carries
    /// on (a pool worker takes the next job).
    pub fn serve(self, config: &Config, shutdown: &Shutdown, stats: &Stats) -> Option<Tally> {
        let Job { stream, peer, slot } = self;
        // AssertUnwindSafe: if `serve` panics, everything it was using for
        // this connection is dropped with it; what it shares with others
        // (`stats`: atomics; `shutdown`: a flag and a Mutex-guarded list) has
        // no half-updated state a panic could expose.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            serve(stream, peer, config, shutdown, stats)
        }));
        drop(slot);
        outcome
            .map_err(|payload| {
                let current = thread::current();
                error!(
                    "{}: panicked while serving {peer} ({}); that connection is closed, \
                     the server carries on",
                    current.name().unwrap_or("?"),
                    panic_message(&*payload)
                );
                Stats::inc(&stats.errors);
            })
            .ok()
    }
}

/// **Testing only** (`Config::inject_panic`, the hidden `--inject-panic-on`
/// flag): a countdown of connections; the one that brings it to zero panics
/// as its thread starts serving it. Shared by the clones of a `Config`.
#[derive(Clone, Debug)]
pub struct PanicAt(Arc<AtomicU64>);

impl PanicAt {
    /// Panic while serving the `n`-th connection (1 = the first).
    pub fn connection(n: u64) -> Self {
        PanicAt(Arc::new(AtomicU64::new(n)))
    }

    fn tick(&self, peer: SocketAddr) {
        // After zero the counter wraps to u64::MAX: no second panic.
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            panic!("injected panic while serving {peer} (testing hook --inject-panic-on)");
        }
    }
}

/// The text of a panic payload (`panic!("...")` carries a `String` or `&str`).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Join every thread that has finished, and, with `deadline`, wait for the
/// others until then (plus a tick, for the last closing line). A thread
/// still running after that is left behind, logged and counted: the
/// process must exit within `--grace` whatever a client does. Returns what
/// each joined thread returned, or its panic message.
pub fn join_by<T>(
    threads: &mut Vec<JoinHandle<T>>,
    deadline: Option<Instant>,
) -> (Vec<Result<T, String>>, u64) {
    let mut done = Vec::new();
    loop {
        let mut i = 0;
        while i < threads.len() {
            if threads[i].is_finished() {
                let handle = threads.remove(i);
                done.push(handle.join().map_err(|p| panic_message(&*p).to_owned()));
            } else {
                i += 1;
            }
        }
        match deadline {
            Some(d) if !threads.is_empty() && Instant::now() < d + TICK => {
                // Each of them bounds its own blocking calls by the deadline,
                // so this waits at most grace + one tick.
                thread::sleep(TICK / 10);
            }
            _ => break,
        }
    }
    let abandoned = if deadline.is_some() {
        for t in threads.iter() {
            error!(
                "{}: still running after the --grace deadline; leaving it behind",
                t.thread().name().unwrap_or("?")
            );
        }
        std::mem::take(threads).len() as u64
    } else {
        0
    };
    (done, abandoned)
}

/// Counts connections held by the server, for `--max-conns`. The acceptor
/// takes a [`Slot`] per connection; dropping the slot (when the connection
/// ends, even by a panic, since unwinding runs `Drop`) gives it back.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    active: Arc<AtomicUsize>,
    max: usize,
}

impl ConnLimit {
    pub fn new(max: usize) -> Self {
        ConnLimit {
            active: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, or `None` when `max` connections are already held; then the
    /// refusal is logged and counted.
    pub fn try_acquire(&self, peer: SocketAddr, stats: &Stats) -> Option<Slot> {
        let slot = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                active: Arc::clone(&self.active),
            });
        if slot.is_none() {
            info!(
                "{peer}: refused, {} connections already (--max-conns); closing without a word",
                self.max
            );
            Stats::inc(&stats.refused);
        }
        slot
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place under `--max-conns`; see [`ConnLimit`].
#[derive(Debug)]
pub struct Slot {
    active: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A thread for serving connections, named and with `--stack-size`.
/// `pthread_create` failing with `EAGAIN` (Rust: `WouldBlock`) means out of
/// threads (`ulimit -u`, `kernel.threads-max`) or of memory for a stack:
/// logged, and the caller closes the connection it was for.
pub fn spawn<T: Send + 'static>(
    name: String,
    config: &Config,
    body: impl FnOnce() -> T + Send + 'static,
) -> Option<JoinHandle<T>> {
    match thread::Builder::new()
        .name(name.clone())
        .stack_size(config.stack_size)
        .spawn(body)
    {
        Ok(handle) => Some(handle),
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::WouldBlock {
                "out of threads or stack memory"
            } else {
                "thread creation failed"
            };
            warn!("{name}: {why}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn conn_limit_counts_and_releases() {
        let stats = Stats::new();
        let limit = ConnLimit::new(2);
        let a = limit.try_acquire(peer(), &stats).unwrap();
        let b = limit.try_acquire(peer(), &stats).unwrap();
        assert!(
            limit.try_acquire(peer(), &stats).is_none(),
            "third slot over max 2"
        );
        assert_eq!((limit.active(), Stats::get(&stats.refused)), (2, 1));
        drop(a);
        let c = limit.try_acquire(peer(), &stats).unwrap();
        assert_eq!(limit.active(), 2);
        drop((b, c));
        assert_eq!(limit.active(), 0);
    }

    #[test]
    fn slot_is_released_by_a_panic() {
        let stats = Stats::new();
        let limit = ConnLimit::new(1);
        let slot = limit.try_acquire(peer(), &stats).unwrap();
        let r = std::panic::catch_unwind(move || {
            let _slot = slot;
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(limit.active(), 0);
        assert!(limit.try_acquire(peer(), &stats).is_some());
    }

    /// A thread that will not finish by the deadline is left behind, and
    /// the join returns (bounded), reporting it.
    #[test]
    fn join_by_abandons_a_thread_past_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut threads = vec![
            thread::spawn(|| 1),
            thread::spawn(move || {
                let _ = rx.recv();
                2
            }),
        ];
        let (done, abandoned) = join_by(&mut threads, Some(Instant::now()));
        assert_eq!((done.len(), abandoned), (1, 1));
        assert!(matches!(done[0], Ok(1)));
        assert!(threads.is_empty());
        drop(tx);
    }
}
