//! The course's asyncio echo server, made real with tokio.
//!
//! The Python original is a dozen lines: `start_server`, and per connection
//! `data = await reader.read(100)`, print the peer and the message,
//! `writer.write(data)`, `await writer.drain()`, `writer.close()`. This file
//! keeps exactly that shape (bind, an accept loop, one task per connection,
//! read, write, flush) and adds what a server facing real clients needs:
//!
//! - the workspace's framing (`--framing line|length|raw`) through the
//!   sans-I/O [`Decoder`], so the bytes a task reads are cut into frames by
//!   the same code the blocking and mio servers use;
//! - `--max-conns` with a [`Semaphore`]: a client over the limit is
//!   **refused** (accepted, then closed at once), never parked;
//! - `--idle-timeout`: a connection that neither sends nor takes its echoes
//!   for that long is closed;
//! - backpressure for free: a task that cannot write does not read, so a
//!   client that never reads costs at most `--max-pending` bytes plus one read;
//! - graceful shutdown: stop accepting, tell every task, let each one echo
//!   what it has already received, wait for them with a deadline (`--grace`);
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
//! What to watch: every `.await` below is a point where this task gives its
//! thread back to the runtime, which then runs whichever other task the
//! kernel (through epoll) says is ready. Nothing else ever switches tasks: a
//! task that computes for a second without an `.await` (`--work` with
//! `--offload none`) stalls every connection on its thread. `RUST_LOG=debug`
//! shows each frame.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::framing::READ_CHUNK;
use common::net::{Backoff, is_fd_exhaustion, is_transient_accept_error};
use common::{ConnError, Decoder, Shutdown, Stats, encode};
use log::{debug, error, info, trace, warn};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::{Config, End, Offload, log_close};

/// Build the runtime `config.threads` asks for and serve `listener` on it
/// until `shutdown`. Blocks the calling thread.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
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
    listener.set_nonblocking(true)?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        serve(listener, config, shutdown).await
    })
}

/// The accept loop, for callers that already have a runtime.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let ctx = Arc::new(Ctx {
        config,
        stats: stats.clone(),
    });
    // One permit per connection slot. `try_acquire` never waits: over the
    // limit we refuse at once (see the README for the trade-off).
    let slots = Arc::new(Semaphore::new(ctx.config.max_conns));
    // Every connection task, so shutdown can wait for (or abort) them. Tasks
    // that finished are reaped in the loop below, or their results pile up.
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();
    let stop = shutdown.triggered();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => reap(done),
            // Await point: the task sleeps until epoll reports the listening
            // socket readable, i.e. a finished handshake waits in the backlog.
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        Stats::inc(&ctx.stats.refused);
                        warn!("{peer}: refused: {} connections already open (--max-conns)", ctx.config.max_conns);
                        // Dropping the socket closes it: the client reads EOF
                        // (or a reset, if it had already sent something).
                        drop(stream);
                        continue;
                    };
                    Stats::inc(&ctx.stats.accepted);
                    let open = ctx.config.max_conns - slots.available_permits();
                    info!("{peer}: connected ({open} open)");
                    let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        handle(stream, peer, &ctx, &shutdown).await;
                        // The slot frees when the task ends, however it ends.
                        drop(permit);
                    });
                }
                Err(e) if is_fd_exhaustion(&e) => {
                    // EMFILE: the connection stays in the backlog and the
                    // listener stays readable, so accepting again at once
                    // would spin. Sleep (still listening for shutdown).
                    let delay = backoff.next_delay();
                    warn!("accept: {e}; out of file descriptors, pausing accept for {delay:?}");
                    tokio::select! {
                        () = &mut stop => break,
                        () = sleep(delay) => {}
                    }
                }
                Err(e) if is_transient_accept_error(&e) => {
                    debug!("accept: {e} (transient, carrying on)");
                }
                Err(e) => {
                    error!("accept: {e}; the listener is broken, stopping");
                    return Err(e);
                }
            },
        }
    }

    // Closing the listening socket: new clients are now refused by the kernel.
    drop(listener);
    let grace = ctx.config.grace;
    info!(
        "shutting down: waiting up to {grace:?} for {} connection(s) to finish their echoes",
        tasks.len()
    );
    let deadline = sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(done) => reap(done),
                None => break,
            },
            () = &mut deadline => {
                warn!("{} connection(s) still open after {grace:?}: closing them", tasks.len());
                tasks.abort_all();
                while let Some(done) = tasks.join_next().await {
                    if let Err(e) = done
                        && !e.is_cancelled()
                    {
                        error!("connection task failed: {e}");
                    }
                }
                break;
            }
        }
    }
    info!("summary: {stats}");
    Ok(stats)
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        // Only a bug can get here (a panic in a task); the server carries on.
        error!("connection task failed: {e}");
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Ctx {
    config: Config,
    stats: Arc<Stats>,
}

impl Ctx {
    /// `--work N` on one frame; the echo is the frame itself.
    async fn work(&self, frame: Bytes) -> io::Result<Bytes> {
        let rounds = self.config.work;
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
                    // Err only if the task was aborted (shutdown deadline).
                    let _ = tx.send(frame);
                });
                // Await point: this task sleeps while a rayon thread works;
                // its runtime thread serves other connections meanwhile.
                rx.await
                    .map_err(|_| io::Error::other("the rayon job was dropped"))
            }
        }
    }
}

/// Serve one connection and log how it ended. Never fails: a connection's
/// error ends only that connection.
async fn handle(stream: TcpStream, peer: SocketAddr, ctx: &Ctx, shutdown: &Shutdown) {
    // Echoes are small writes the client waits for: send each at once
    // instead of letting Nagle's algorithm hold it for a possible next one.
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{peer}: TCP_NODELAY: {e}");
    }
    let mut conn = Conn {
        stream,
        peer,
        decoder: Decoder::new(ctx.config.framing, ctx.config.max_frame),
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        chunk: KEEP_BUFFER,
        frames: 0,
        bytes: 0,
        last_active: Instant::now(),
        idle: ctx.config.idle_timeout,
        timer: Box::pin(sleep_until(
            Instant::now() + ctx.config.idle_timeout.unwrap_or(NEVER),
        )),
    };
    let result = conn.serve(ctx, shutdown).await;
    log_close(peer, conn.frames, conn.bytes, result, &ctx.stats);
}

/// "Never" for a disabled idle timer (a year; `Instant + Duration::MAX`
/// would overflow).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Buffers up to this size stay with an idle connection (see `serve`).
const KEEP_BUFFER: usize = 4 * 1024;

/// One connection: its socket, its two buffers and its idle timer.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    /// Bytes read but not yet cut into frames.
    rbuf: BytesMut,
    /// Echoes encoded but not yet accepted by the kernel.
    wbuf: BytesMut,
    /// Bytes asked of the next `read()`: 4 KiB, doubling up to 64 KiB.
    chunk: usize,
    frames: u64,
    bytes: u64,
    /// Last time a read or a write made progress.
    last_active: Instant,
    idle: Option<Duration>,
    /// Fires at `last_active + idle` at the earliest. Moved forward lazily,
    /// only when it fires, so a busy connection does not touch the runtime's
    /// timer wheel on every read.
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    async fn serve(&mut self, ctx: &Ctx, shutdown: &Shutdown) -> Result<End, ConnError> {
        let stop = shutdown.triggered();
        tokio::pin!(stop);
        loop {
            // While waiting, a connection holds at most a small buffer: a
            // large one (from a bulk transfer) is given back, a small one is
            // kept, since freeing and re-allocating it on every echo costs a
            // busy connection more CPU than its 4 KiB are worth.
            if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_BUFFER {
                self.rbuf = BytesMut::new();
            }
            // The await point of the whole server: park this task until the
            // kernel has bytes for us, shutdown comes, or the timer fires.
            tokio::select! {
                biased;
                () = &mut stop => return self.drain(ctx).await,
                () = self.timer.as_mut(), if self.idle.is_some() => {
                    self.check_idle()?;
                    continue;
                }
                ready = self.stream.readable() => ready?,
            }
            match self.read_some() {
                // 0 bytes: the peer sent FIN. It may be a half-close (it
                // still reads), so every owed echo goes out before we close.
                Ok(0) => {
                    self.finish_eof(ctx).await?;
                    return Ok(End::PeerClosed);
                }
                Ok(n) => trace!("{}: read {n} bytes", self.peer),
                // Readiness was stale (someone else drained the socket, or
                // a spurious wakeup): `readable()` will wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            self.echo_buffered(ctx).await?;
        }
    }

    /// One non-blocking `read()` into `rbuf` (`WouldBlock` if the kernel
    /// has nothing after all).
    fn read_some(&mut self) -> io::Result<usize> {
        // The room is reserved only now that data is waiting. It starts at
        // 4 KiB and doubles each time a read fills it, up to 64 KiB, where
        // one syscall takes everything a bulk sender's 64 KiB writes bring.
        self.rbuf.reserve(self.chunk);
        let room = self.rbuf.capacity() - self.rbuf.len();
        let mut got = None;
        // tokio remembers "readable" until a read says WouldBlock. A *short*
        // read already tells us the kernel queue is empty, so we report
        // WouldBlock from inside `try_io`, which clears that flag, and save
        // the extra `read()` that would only answer EAGAIN. (tokio's own
        // `AsyncRead` does the same; `try_io` only clears the flag if no new
        // epoll event arrived meanwhile, so no wakeup is lost.)
        let result = self.stream.try_io(Interest::READABLE, || {
            let n = self.stream.try_read_buf(&mut self.rbuf)?;
            got = Some(n);
            if n > 0 && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        let n = match (got, result) {
            (Some(n), _) => n,
            (None, result) => result?,
        };
        if n == room {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        self.last_active = Instant::now();
        Ok(n)
    }

    /// The idle timer fired. It is moved lazily, so first check whether the
    /// connection really made no progress for `idle`.
    fn check_idle(&mut self) -> io::Result<()> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        let deadline = self.last_active + idle;
        if deadline <= Instant::now() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("idle for {idle:?} (--idle-timeout)"),
            ));
        }
        self.timer.as_mut().reset(deadline);
        Ok(())
    }

    /// Echo every complete frame in `rbuf`, then write them all.
    async fn echo_buffered(&mut self, ctx: &Ctx) -> Result<(), ConnError> {
        while let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
            self.echo(frame, ctx).await?;
        }
        self.flush().await?;
        Ok(())
    }

    /// Queue one echo; write early if the queue reaches `--max-pending`.
    async fn echo(&mut self, frame: Bytes, ctx: &Ctx) -> Result<(), ConnError> {
        debug!("{}: frame of {} bytes", self.peer, frame.len());
        let frame = ctx.work(frame).await?;
        encode(ctx.config.framing, &frame, &mut self.wbuf)?;
        ctx.stats.add_frame(frame.len());
        self.frames += 1;
        self.bytes += frame.len() as u64;
        if self.wbuf.len() >= ctx.config.max_pending {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write all of `wbuf`. While this waits, this connection reads nothing:
    /// that is the backpressure that keeps a non-reading client from growing
    /// our memory.
    async fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                // A short write is normal: the kernel took what fitted in the
                // socket's send buffer. Drop that much and go round again.
                Ok(n) => {
                    trace!("{}: wrote {n} bytes", self.peer);
                    self.wbuf.advance(n);
                    self.last_active = Instant::now();
                }
                // The send buffer is full: the peer is slow or not reading.
                // Await point: park until epoll says there is room again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        biased;
                        ready = self.stream.writable() => ready?,
                        () = self.timer.as_mut(), if self.idle.is_some() => self.check_idle()?,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Release a large allocation; keep a small one for the next echo.
        if self.wbuf.capacity() > KEEP_BUFFER {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// The peer sent FIN: echo the last frames, report an unfinished one,
    /// and send our own FIN.
    async fn finish_eof(&mut self, ctx: &Ctx) -> Result<(), ConnError> {
        let result = loop {
            match self.decoder.decode_eof(&mut self.rbuf) {
                Ok(Some(frame)) => self.echo(frame, ctx).await?,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // Owed echoes go out even if the last frame was truncated.
        self.flush().await?;
        result?;
        self.close_write().await;
        Ok(())
    }

    /// `shutdown(SHUT_WR)`: send FIN, "no more data from me".
    async fn close_write(&mut self) {
        if let Err(e) = self.stream.shutdown().await {
            // ENOTCONN: the peer already reset the connection. Nothing owed.
            debug!("{}: shutdown(Write): {e}", self.peer);
        }
    }

    /// Graceful shutdown for this connection: echo everything the kernel has
    /// already received (without waiting for more), send FIN, then wait for
    /// the peer's FIN. The accept loop's `--grace` deadline bounds all of it.
    async fn drain(&mut self, ctx: &Ctx) -> Result<End, ConnError> {
        loop {
            match self.read_some() {
                Ok(0) => {
                    self.finish_eof(ctx).await?;
                    return Ok(End::Shutdown);
                }
                Ok(_) => self.echo_buffered(ctx).await?,
                // The kernel's receive queue is empty: everything the client
                // sent before now has been echoed.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !self.rbuf.is_empty() {
            debug!(
                "{}: shutdown with {} bytes of an unfinished frame",
                self.peer,
                self.rbuf.len()
            );
        }
        self.close_write().await;
        // Closing a socket whose receive queue holds unread bytes makes Linux
        // send RST instead of FIN, and a RST can destroy echoes still on
        // their way to the client. So read (and drop) until the peer closes.
        loop {
            self.stream.readable().await?;
            self.rbuf.clear();
            match self.read_some() {
                Ok(0) => return Ok(End::Shutdown),
                Ok(n) => trace!("{}: discarded {n} bytes after shutdown", self.peer),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
