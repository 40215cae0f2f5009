//! The tokio accept-and-drain loop, written once for every tokio server:
//! async-server's tokio model (`async-server/src/tokio_server.rs`, plain
//! echo over TCP or a Unix socket) and tls-echo (`tls-echo/src/server.rs`,
//! a TLS handshake and then the echo). What a connection *does* is the
//! caller's `handle` future; what every server owes around it is here:
//!
//! - `--max-conns` with a [`Semaphore`]: one permit per connection task,
//!   taken with `try_acquire` so a client over the limit is **refused**
//!   (accepted, then closed at once: it reads EOF), never parked;
//! - accept errors through [`accept_policy`]: retry, back off with a sleep
//!   that shutdown cuts short, or [`fatal_accept`] (stop, drain, report);
//! - finished tasks are reaped as they end, so the set does not grow;
//! - shutdown: stop accepting and close the listener (the kernel resets the
//!   clients still in its backlog, never accepted), then wait for every
//!   connection task until the `--grace` deadline. Each task is expected to
//!   cut its own connection at that deadline and log it; a task still
//!   running [`CUT_MARGIN`] later is aborted (its future dropped).
//!
//! Not a tutorial file of its own: read it from either caller.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::net::{AcceptAction, Backoff, accept_policy, fatal_accept};
use crate::{ServerConfig, Shutdown, Stats};

/// How long after the `--grace` deadline a connection task that has not
/// ended is aborted. Tasks cut themselves at the deadline; this only gives
/// the last of them time to write their closing line.
pub const CUT_MARGIN: Duration = Duration::from_millis(250);

/// How long the aborted tasks may take to be dropped before the loop
/// returns anyway (a task inside a long computation cannot be stopped).
pub const ABORT_WAIT: Duration = Duration::from_millis(100);

/// A listening socket the loop can take connections from.
pub trait Listener {
    /// The accepted connection, handed to the caller's `handle`.
    type Stream: Send + 'static;
    /// Who it is, for the log lines (an address, a Unix peer).
    type Peer: fmt::Display + Send + 'static;
    /// Await the next connection. Must be cancel-safe (tokio's `accept`
    /// is): the loop races it against shutdown and the reaping of tasks.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, Self::Peer)>>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// The end of the grace period: `grace` after the shutdown signal (or from
/// now, if asked before any signal).
pub fn deadline(shutdown: &Shutdown, grace: Duration) -> Instant {
    shutdown
        .deadline(grace)
        .map_or_else(|| Instant::now() + grace, Instant::from_std)
}

/// Resolves at the `--grace` deadline: never before shutdown is triggered.
/// Every wait of a connection races it.
pub async fn cut_at_deadline(shutdown: &Shutdown, grace: Duration) {
    shutdown.triggered().await;
    tokio::time::sleep_until(deadline(shutdown, grace)).await;
}

// ANCHOR: serve
/// Accept on `listener` until `shutdown`, running `handle(stream, peer)` as
/// one task per admitted connection, then drain (module docs). Counts
/// `accepted` and `refused` in `stats`; the connection's own counters are
/// the handler's. Returns once every task has ended, with the error of a
/// fatal accept if there was one.
pub async fn serve<L, H, F>(
    mut listener: L,
    config: &ServerConfig,
    stats: &Stats,
    shutdown: &Shutdown,
    mut handle: H,
) -> io::Result<()>
where
    L: Listener,
    H: FnMut(L::Stream, L::Peer) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // tokio panics above `MAX_PERMITS` (usize::MAX >> 3), far above anything
    // `--max-conns` accepts; `min` keeps a library caller safe too.
    let max_conns = config.max_conns.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_conns));
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();
    let mut fatal = None;
    let stop = shutdown.triggered();
    tokio::pin!(stop);

    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                reap(done);
                continue;
            }
            // Await point: the task sleeps until epoll reports the listening
            // socket readable, i.e. a finished handshake waits in the backlog.
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                // EMFILE, ENOBUFS...: the connection stays in the backlog and
                // the listener stays readable, so accepting again at once
                // would spin. Sleep, unless shutdown comes first.
                AcceptAction::Wait(delay) => {
                    tokio::select! {
                        biased;
                        () = &mut stop => break,
                        () = sleep(delay) => continue,
                    }
                }
                AcceptAction::Fatal => {
                    fatal = Some(fatal_accept(e, shutdown));
                    break;
                }
            },
        };
        backoff.reset();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Stats::inc(&stats.refused);
            log::warn!("{peer}: refused: {max_conns} connections already open (--max-conns)");
            // Dropping the socket closes it: the client reads EOF (or a
            // reset, if it had already sent something).
            drop(stream);
            continue;
        };
        Stats::inc(&stats.accepted);
        log::info!(
            "{peer}: connected ({} open)",
            max_conns - slots.available_permits()
        );
        let connection = handle(stream, peer);
        tasks.spawn(async move {
            connection.await;
            // The slot frees when the task ends, however it ends (an abort
            // drops this future, and the permit with it).
            drop(permit);
        });
    }

    // Closing the listening socket: the kernel refuses new clients, and
    // resets the ones still in the backlog (never accepted, never served).
    // A Unix socket's file is removed with it, if the listener owns it.
    drop(listener);
    let grace = config.grace;
    log::info!(
        "shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
        tasks.len()
    );
    let all_done = async {
        while let Some(done) = tasks.join_next().await {
            reap(done);
        }
    };
    if timeout_at(deadline(shutdown, grace) + CUT_MARGIN, all_done)
        .await
        .is_err()
    {
        log::error!(
            "{} connection task(s) outlived the --grace deadline: aborting them",
            tasks.len()
        );
        tasks.abort_all();
        let _ = timeout(ABORT_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    fatal.map_or(Ok(()), Err)
}
// ANCHOR_END: serve

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && !e.is_cancelled()
    {
        // Only a bug can get here (a panic in a task); the server carries on.
        log::error!("connection task failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    /// A listener that plays a script of accept results, then waits forever.
    struct Script(VecDeque<io::Result<(u32, &'static str)>>);

    impl Listener for Script {
        type Stream = u32;
        type Peer = &'static str;
        async fn accept(&mut self) -> io::Result<(u32, &'static str)> {
            match self.0.pop_front() {
                Some(next) => next,
                None => std::future::pending().await,
            }
        }
    }

    fn config(max_conns: usize) -> ServerConfig {
        ServerConfig {
            max_conns,
            grace: Duration::from_secs(5),
            ..ServerConfig::default()
        }
    }

    /// A broken listener ends the loop the way a shutdown does: the open
    /// connection is drained (its task runs to its end), the client over
    /// `--max-conns` was refused, and the error is what the loop returns.
    #[tokio::test]
    async fn a_fatal_accept_error_drains_then_returns_the_error() {
        let script = Script(VecDeque::from([
            Ok((1, "first")),
            Ok((2, "second")),
            Err(io::Error::from_raw_os_error(libc::EBADF)),
        ]));
        let (stats, shutdown) = (Stats::new(), Shutdown::new());
        let drained = Arc::new(AtomicBool::new(false));
        let served = timeout(
            Duration::from_secs(10),
            serve(script, &config(1), &stats, &shutdown, |_conn, _peer| {
                let (shutdown, drained) = (shutdown.clone(), drained.clone());
                async move {
                    // Stands for a connection that finishes its echoes
                    // after the shutdown signal, within the grace period.
                    shutdown.triggered().await;
                    tokio::task::yield_now().await;
                    drained.store(true, SeqCst);
                }
            }),
        )
        .await
        .expect("the loop must end within the grace period");
        assert_eq!(served.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(
            shutdown.is_triggered(),
            "the fatal error triggers the shutdown"
        );
        assert!(drained.load(SeqCst), "the open connection was not drained");
        assert_eq!(Stats::get(&stats.accepted), 1);
        assert_eq!(Stats::get(&stats.refused), 1);
    }

    /// A lost connection (`ECONNABORTED`) is retried at once; the loop ends
    /// cleanly on the shutdown signal.
    #[tokio::test]
    async fn a_lost_connection_is_retried_and_shutdown_ends_the_loop() {
        let script = Script(VecDeque::from([
            Err(io::Error::from_raw_os_error(libc::ECONNABORTED)),
            Ok((1, "one")),
        ]));
        let (stats, shutdown) = (Stats::new(), Shutdown::new());
        let trigger = shutdown.clone();
        let served = timeout(
            Duration::from_secs(10),
            serve(
                script,
                &config(4),
                &stats,
                &shutdown,
                move |_conn, _peer| {
                    trigger.trigger();
                    async {}
                },
            ),
        )
        .await
        .expect("the loop must end once shutdown is triggered");
        assert!(served.is_ok(), "{served:?}");
        assert_eq!(Stats::get(&stats.accepted), 1);
    }
}
