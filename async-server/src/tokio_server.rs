//! The course's asyncio echo server, made real with tokio.
//!
//! The Python original is a dozen lines: `start_server`, and per connection
//! `data = await reader.read(100)`, `writer.write(data)`, `await
//! writer.drain()`, `writer.close()`. This file keeps that shape: an accept
//! loop, one task per connection, and in each task a loop that *awaits* the
//! next bytes (one `read`, as `reader.read(100)`), echoes every frame they
//! complete and awaits the write. Every wait is an `.await`
//! inside a `tokio::select!` that also waits for what could end it (a timer,
//! the shutdown signal); there is no state machine, no readiness flag and no
//! `WouldBlock` anywhere in this file. Read it beside `event_loop/mod.rs`, which
//! does the same job by hand: there each of these awaits is a state the
//! connection must remember, and an event that must bring it back.
//!
//! What a server facing real clients adds to the Python version (the
//! contract every server of the workspace keeps, `common::config`):
//!
//! - framing (`--framing line|length|raw`) by [`AsyncFramed`], the same
//!   sans-I/O decoder the blocking and mio servers call;
//! - `--max-conns` with a semaphore (in `common::tokio_accept::serve`): a
//!   client over the limit is
//!   **refused** (accepted, then closed at once), never parked;
//! - `--idle-timeout`: nothing received for that long, the connection ends;
//! - `--stall-timeout`: echoes are owed and the client has taken none of
//!   their bytes for that long (it stopped reading): the connection ends. A
//!   write that is waiting is not activity;
//! - backpressure for free: a task that is awaiting a write does not read,
//!   so a client that never reads costs at most `--max-pending` plus one
//!   read of echoes;
//! - the accept loop itself, shared with tls-echo (`common::tokio_accept`):
//!   accept errors through `common::net::accept_policy` (retry, back off
//!   with a sleep that shutdown interrupts, or stop and drain);
//! - graceful shutdown within `--grace` of the signal: stop accepting; each
//!   task echoes every frame already received (its buffer and the kernel's
//!   receive queue), sends FIN, and reads and discards until the client's
//!   FIN; at the deadline whatever is left is cut;
//! - `--addr unix:PATH`: the same task over a Unix domain socket (`Conn<S>`
//!   is generic over the socket; only TCP gets `TCP_NODELAY`);
//! - `--threads N` (1 = tokio's current-thread runtime, so the comparison
//!   with the one-thread event loop is fair) and `--work N` run inline or on
//!   rayon (`--offload rayon`).
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p async-server -- server --model tokio --threads 1
//! nc 127.0.0.1 7004          # type lines; each comes back
//! ```
//!
//! What an echo costs besides its `read` and `write`: every future polled
//! and every clock read, once per echo, adds up against a bare tokio loop
//! (`examples/bare_tokio_echo.rs`, `scripts/bare_vs_tokio.sh`). So a write
//! is tried once before the stall timer is armed (`Conn::write_queued`),
//! the shutdown signal and the idle timer are polled only when they may
//! have fired (`StopSignal`, `IdleTimer::poll_fired`), activity is noted by
//! the coarse clock (`coarse_now`), and without `--work` a frame goes from
//! the read buffer to the write queue without being handed out
//! (`AsyncFramed::echo_buffered_frame`). Each says why where it is done;
//! the waits are in `tokio_server/waits.rs`.
//!
//! What to watch: every `.await` below is a point where this task gives its
//! thread back to the runtime, which then runs whichever other task the
//! kernel (through epoll) says is ready. Nothing else ever switches tasks: a
//! task that computes for a second without an `.await` (`--work` with
//! `--offload none`) stalls every connection on its thread. `RUST_LOG=debug`
//! shows each frame.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use bytes::Bytes;
use common::conn::{End, log_close};
use common::framing::tokio_io::AsyncFramed;
use common::tokio_accept;
use common::{Shutdown, Stats};
use log::{debug, info};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout, timeout_at};

use crate::listen::SocketFile;

mod waits;
use crate::{Config, Listener, Offload, Peer};
use waits::{IdleTimer, StopSignal, poll_once};

/// Build the runtime `config.threads` asks for and serve `listener` on it
/// until `shutdown`. Blocks the calling thread.
pub fn run(listener: Listener, config: Config, shutdown: Shutdown) -> io::Result<crate::Report> {
    // One thread: everything (accepting, every connection, timers) takes
    // turns on the calling thread, like asyncio's event loop. More: a pool of
    // workers that steal ready tasks from each other.
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("tokio-worker")
            .enable_all()
            .build()?
    };
    info!(
        "tokio model: {} runtime, {} thread(s)",
        if config.threads <= 1 {
            "current-thread"
        } else {
            "multi-thread"
        },
        config.threads.max(1)
    );
    // tokio registers the socket with its epoll instance; it must be in
    // non-blocking mode or an `accept()` would freeze a runtime thread.
    let stats = runtime.block_on(async move {
        let listener = match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                AnyListener::Tcp(TcpListener::from_std(l)?)
            }
            Listener::Unix(u) => {
                u.listener.set_nonblocking(true)?;
                AnyListener::Unix(UnixListener::from_std(u.listener)?, u.file)
            }
        };
        serve(listener, config, shutdown).await
    });
    // Every task has ended or been aborted. A worker may still be inside one
    // last inline `--work` computation (no await, so no way to stop it):
    // do not wait for it.
    runtime.shutdown_background();
    stats.map(crate::Report::from)
}

/// A listening socket under tokio: TCP, or a Unix socket and its file
/// (removed when this is dropped, i.e. when the server stops accepting).
#[derive(Debug)]
pub enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// An accepted connection of either kind.
enum AnyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// [`AnyListener`] as the shared accept loop takes it, with the count that
/// names Unix peers (they have no address to tell them apart).
struct Accepting {
    listener: AnyListener,
    unix_peers: u64,
}

impl tokio_accept::Listener for Accepting {
    type Stream = AnyStream;
    type Peer = Peer;

    /// Cancel-safe (tokio's `accept` is): a `select!` branch that loses
    /// loses no connection.
    async fn accept(&mut self) -> io::Result<(AnyStream, Peer)> {
        match &self.listener {
            AnyListener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                Ok((AnyStream::Tcp(s), Peer::Tcp(a)))
            }
            AnyListener::Unix(l, _) => {
                let (s, a) = l.accept().await?;
                self.unix_peers += 1;
                let peer = Peer::Unix {
                    path: a.as_pathname().map(std::path::Path::to_path_buf),
                    n: self.unix_peers,
                };
                Ok((AnyStream::Unix(s), peer))
            }
        }
    }
}

/// The accept loop, for callers that already have a runtime: the shared
/// one of `common::tokio_accept` (`--max-conns`, accept errors, the drain
/// at shutdown), with this model's [`connection`] as what each task does.
pub async fn serve(
    listener: AnyListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let ctx = Arc::new(Ctx {
        config,
        stats: stats.clone(),
        shutdown: shutdown.clone(),
    });
    let listener = Accepting {
        listener,
        unix_peers: 0,
    };
    tokio_accept::serve(
        listener,
        &ctx.config.common,
        &stats,
        &shutdown,
        |stream, peer| {
            let ctx = ctx.clone();
            async move {
                // One generic `connection` compiled for each kind of socket.
                match stream {
                    AnyStream::Tcp(s) => {
                        // Echoes are small writes the client waits for: send
                        // each at once instead of letting Nagle's algorithm
                        // hold it for a possible next one.
                        if let Err(e) = s.set_nodelay(true) {
                            debug!("{peer}: TCP_NODELAY: {e}");
                        }
                        connection(s, peer, &ctx).await;
                    }
                    AnyStream::Unix(s) => connection(s, peer, &ctx).await,
                }
            }
        },
    )
    .await?;
    Ok(stats)
}

/// The end of the grace period: `--grace` after the signal.
fn deadline(ctx: &Ctx) -> Instant {
    tokio_accept::deadline(&ctx.shutdown, ctx.config.common.grace)
}

/// What every connection task shares.
#[derive(Debug)]
struct Ctx {
    config: Config,
    stats: Arc<Stats>,
    shutdown: Shutdown,
}

impl Ctx {
    /// Resolves at the shutdown deadline (never, while nobody asked to stop).
    async fn cut(&self) {
        tokio_accept::cut_at_deadline(&self.shutdown, self.config.common.grace).await;
    }

    /// `--work N` on one frame; the echo is the frame itself.
    async fn work(&self, frame: Bytes) -> Flow<Bytes> {
        let rounds = self.config.common.work;
        if rounds == 0 {
            return Ok(frame);
        }
        match self.config.offload {
            Offload::None => {
                // No `.await` in here: while this runs, this runtime thread
                // serves nobody else. That is "blocking the runtime".
                std::hint::black_box(common::work::work(&frame, rounds));
                Ok(frame)
            }
            Offload::Rayon => {
                let (tx, rx) = oneshot::channel();
                rayon::spawn(move || {
                    std::hint::black_box(common::work::work(&frame, rounds));
                    // Err only if the task is gone (cut at the deadline).
                    let _ = tx.send(frame);
                });
                // Await point: this task sleeps while a rayon thread works;
                // its runtime thread serves other connections meanwhile. A
                // long job cannot carry the connection past the deadline.
                tokio::select! {
                    done = rx => Ok(done.map_err(|_| io::Error::other("the rayon job was dropped"))?),
                    () = self.cut() => Err(End::Cut),
                }
            }
        }
    }
}

/// Serve one connection and log how it ended. Never fails: a connection's
/// error ends only that connection.
async fn connection<S>(stream: S, peer: Peer, ctx: &Ctx)
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin,
{
    let common = &ctx.config.common;
    let mut conn = Conn {
        framed: AsyncFramed::new(stream, common.framing, common.max_frame),
        peer,
        echoed: Tally {
            frames: 0,
            bytes: 0,
            stats: ctx.stats.clone(),
        },
    };
    let end = conn.serve(ctx).await.unwrap_or_else(|end| end);
    let Tally { frames, bytes, .. } = conn.echoed;
    log_close(&conn.peer, frames, bytes, &end, &ctx.stats);
}

/// `Err(end)`: the connection is over, and this is how it ended.
type Flow<T> = Result<T, End>;

/// One connection: the framed socket (TCP or Unix) and what it has echoed.
struct Conn<S> {
    framed: AsyncFramed<S>,
    peer: Peer,
    echoed: Tally,
}

/// The frames and payload bytes one connection has echoed, added to the
/// server's [`Stats`] once, when the connection ends (in `drop`, so a task
/// aborted at the deadline counts too). Not per frame: the two atomic
/// additions on the counters every task shares were about 0.5% of this
/// server's CPU per echo (`perf annotate`: a `lock add` waits for the
/// stores before it), and on the multi-thread runtime their cache line
/// would travel between cores. The summary reads them after every task.
struct Tally {
    frames: u64,
    bytes: u64,
    stats: Arc<Stats>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.stats.frames.fetch_add(self.frames, Relaxed);
        self.stats.bytes.fetch_add(self.bytes, Relaxed);
    }
}

impl<S: AsyncRead + AsyncWrite + AsRawFd + Unpin> Conn<S> {
    /// The echo loop: await bytes from the client, echo every frame they
    /// complete, await the write; until the client closes, a timeout fires,
    /// or shutdown.
    // ANCHOR: conn-loop
    async fn serve(&mut self, ctx: &Ctx) -> Flow<End> {
        let mut stop = StopSignal::new(&ctx.shutdown);
        let mut idle = IdleTimer::new(ctx.config.common.idle_timeout);
        // Frames left in the buffer by a batch that `--max-pending` cut
        // short: they are echoed before anything more is read.
        let mut more = false;
        loop {
            if !more {
                // Await point 1, where a connection spends its life: bytes
                // from the client (one `read()`), the idle timer or
                // shutdown, whichever comes first. `read_more` is
                // cancel-safe: if another branch wins, nothing was read.
                // (`biased` polls in this order: `stop` first, so a client
                // whose bytes are always ready still notices shutdown; it
                // costs one atomic load, see `StopSignal`.)
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    read = self.framed.read_more() => read?,
                    () = std::future::poll_fn(|cx| idle.poll_fired(cx)), if idle.on() => {
                        idle.fired()?;
                        continue;
                    }
                };
                idle.heard();
            }
            // Echo every frame now complete (none, if the bytes end inside
            // one). After the client's FIN an unfinished frame is an
            // error, which waits until the echoes before it are written.
            let batch = self.echo_batch(ctx).await;
            // Await point 2: write the echoes. While this waits the task
            // reads nothing: that is the backpressure. `false`: shutdown
            // came while it waited.
            if !self.write_queued(ctx, Pin::new(&mut stop)).await? {
                break;
            }
            more = batch?;
            // The client sent FIN (a `read` returned 0) and every echo owed
            // is written: send ours and go.
            if self.framed.is_eof() && !more {
                self.close_write().await;
                return Ok(End::PeerClosed);
            }
        }
        // Shutdown, within the deadline: whatever the client does (never
        // reads, keeps sending, never closes), this returns by then.
        match timeout_at(deadline(ctx), self.finish(ctx)).await {
            Ok(end) => end,
            Err(_) => Ok(End::Cut),
        }
    }
    // ANCHOR_END: conn-loop

    /// Queue the echo of every complete frame in the buffer (a client may
    /// pipeline many in one `write`); their echoes leave in one `write`.
    /// Stops early once `--max-pending` bytes are queued, and then says
    /// `true`: more frames may be waiting in the buffer.
    async fn echo_batch(&mut self, ctx: &Ctx) -> Flow<bool> {
        let common = &ctx.config.common;
        loop {
            if self.framed.queued() >= common.max_pending {
                return Ok(true);
            }
            let len = if common.work == 0 {
                // Nothing to do to the frame: its echo goes from the read
                // buffer to the write queue, no `Bytes` made of it.
                self.framed.echo_buffered_frame()?
            } else {
                match self.framed.try_buffered_frame()? {
                    Some(frame) => {
                        // Boxed: the `work` future (a rayon channel, a
                        // timer) is large, and inline it would make this
                        // future as large, to be built and moved on every
                        // echo, with `--work` or without.
                        let frame = Box::pin(ctx.work(frame)).await?;
                        self.framed.queue_frame(&frame)?;
                        Some(frame.len())
                    }
                    None => None,
                }
            };
            let Some(len) = len else {
                return Ok(false);
            };
            debug!("{}: frame of {len} bytes", self.peer);
            self.echoed.frames += 1;
            self.echoed.bytes += len as u64;
        }
    }

    /// Write every queued echo. Each `write_some` waits until the kernel
    /// takes at least one byte (a short write is normal: the socket's send
    /// buffer was nearly full), and the stall timer restarts only then: a
    /// client that stops reading fills our send buffer, and after
    /// `--stall-timeout` without one byte taken it is closed. A wait also
    /// ends when `stop` resolves (shutdown): then `Ok(false)`, with echoes
    /// still queued.
    async fn write_queued(
        &mut self,
        ctx: &Ctx,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Flow<bool> {
        let stall = ctx.config.common.stall_timeout;
        while self.framed.queued() > 0 {
            let write = self.framed.write_some();
            tokio::pin!(write);
            // Nearly every write finishes at once (the send buffer has
            // room), so try it once with no timer and no `select!`: arming
            // a timer for every write costs a clock read and a timer entry
            // per echo. Only a write that must wait gets the stall timer,
            // which then times the wait itself, and the stop signal. The
            // same future goes on: nothing is lost.
            let written = match poll_once(write.as_mut()).await {
                Poll::Ready(written) => written,
                Poll::Pending => tokio::select! {
                    biased;
                    () = stop.as_mut() => return Ok(false),
                    written = timeout(stall, write) => {
                        written.map_err(|_| End::Stalled(stall))?
                    }
                },
            };
            written?;
        }
        Ok(true)
    }

    /// `shutdown(SHUT_WR)`: send FIN, "no more data from me".
    async fn close_write(&mut self) {
        if let Err(e) = self.framed.get_mut().shutdown().await {
            // ENOTCONN: the peer already reset the connection. Nothing owed.
            debug!("{}: shutdown(Write): {e}", self.peer);
        }
    }

    /// Graceful shutdown for this connection (the caller bounds it by the
    /// deadline): echo every frame already received, without waiting for
    /// new bytes; send FIN; read and discard until the client's FIN.
    async fn finish(&mut self, ctx: &Ctx) -> Flow<End> {
        loop {
            // Frames already in our buffer, written as we go so the queue
            // stays under --max-pending however much the client sent.
            let batch = self.echo_batch(ctx).await;
            // Shutdown has come already: nothing left to stop the wait.
            self.write_queued(ctx, pin!(std::future::pending())).await?;
            if batch? {
                continue; // stopped at --max-pending: more frames buffered
            }
            // Then the kernel's receive queue: bytes the client sent before
            // now. Reading them cannot wait (they are there); once the
            // queue is empty everything received has been echoed.
            if self.framed.is_eof() || unread_bytes(self.framed.get_ref()) == 0 {
                break;
            }
            self.framed.read_more().await?;
        }
        let unfinished = self.framed.pending();
        self.close_write().await;
        // Closing a socket whose receive queue holds unread bytes makes
        // Linux send RST instead of FIN, and a RST can destroy echoes still
        // on their way to the client. So read (and drop) until it closes.
        while self.framed.discard().await? > 0 {}
        Ok(End::Shutdown { unfinished })
    }
}

/// Bytes in the kernel's receive queue for this socket (`FIONREAD`, alias
/// `SIOCINQ`). tokio's own readiness flag cannot answer "is anything left?"
/// here: it is set by the epoll event, which the runtime may not have
/// processed yet for bytes that arrived a moment before the signal.
fn unread_bytes(stream: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, which we own, for a descriptor the
    // stream keeps open for this whole call.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r != 0 {
        debug!("ioctl(FIONREAD): {}", io::Error::last_os_error());
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}
