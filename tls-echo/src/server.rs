//! The TLS echo server: tokio accepts, each connection's task does its own
//! TLS handshake (with a deadline), then echoes frames through rustls, and
//! keeps the contract every server of the workspace keeps (root README,
//! "What every server promises").
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p tls-echo -- server                       # prints: listening on 127.0.0.1:7005
//! cargo run -p tls-echo -- client hello world           # trusts /tmp/tls-echo-ca.pem
//! openssl s_client -connect 127.0.0.1:7005 -CAfile /tmp/tls-echo-ca.pem -quiet
//! ```
//!
//! What to watch: `RUST_LOG=debug` logs every frame; each connection logs
//! the version, cipher suite and key-exchange group it negotiated; a client
//! that speaks plaintext (`nc 127.0.0.1 7005`) gets a one-line answer in
//! plaintext and is closed, and the failed handshake is logged with why.
//! Ctrl-C while clients are connected: every frame they had sent comes
//! back, then a `close_notify`; a client that never reads is cut at the
//! `--grace` deadline, and the server is gone by then whatever happens.
//!
//! Why tokio: a TLS handshake is several round trips, and a client may open
//! a connection and then say nothing. With a thread per client, a thousand
//! such clients pin a thousand threads; with tasks they cost a few KiB each,
//! and the handshake's deadline is one `tokio::time::timeout`. The
//! handshake runs *inside the connection's task*, never in the accept loop,
//! so one slow or hostile client cannot stall anybody else's accept.
//!
//! After the handshake the connection is a `select!` over four things: the
//! connection's I/O (write pending echoes *and* read more frames, both at
//! once, see [`Conn::poll_io`]), the stall timer, the idle timer and the
//! shutdown signal. Reading goes on while echoes wait, up to
//! `--max-pending` unsent bytes, so a client that writes a lot before it
//! reads is served; at the limit the server stops reading it, and the
//! client's own `write()` blocks: backpressure, TCP flow control doing its
//! job.
//!
//! **Where the bytes of a TLS connection hide at shutdown.** A frame the
//! client sent may be (1) in our buffer, decoded or not, (2) decrypted
//! inside rustls, waiting for us to read the plaintext, (3) still encrypted
//! in the kernel's receive queue. [`Conn::shut_down`] echoes all three
//! without waiting for new bytes: it polls the read exactly once (rustls
//! hands out its buffered plaintext first, then reads the kernel), and
//! asks the kernel directly (`recv(MSG_PEEK | MSG_DONTWAIT)`) whether bytes
//! are there that tokio has not been told about yet.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use common::conn::{End, log_close};
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{Decoder, FrameError, ServerConfig, Shutdown, Stats, encode};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection: a record of content type 22,
/// "handshake", carrying the ClientHello.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that speaks plaintext to us reads before we hang up. Sent
/// in clear on purpose, like nginx's "plain HTTP request was sent to HTTPS
/// port": it is an error message, not a fallback, and no data is echoed.
pub const PLAINTEXT_REPLY: &[u8] =
    b"error: this is a TLS server; connect with a TLS client (tls-echo client, openssl s_client)\n";

/// Bytes asked of one read. A TLS record carries at most 16 KiB of
/// plaintext, and tokio-rustls fills the buffer from as many records as it
/// has decrypted, so this is one record or a few.
const READ_CHUNK: usize = 16 * 1024;

/// How long an aborted connection task may take to be dropped after the
/// grace deadline, before the server returns anyway.
const ABORT_WAIT: Duration = Duration::from_millis(100);

/// The shared server configuration plus what only a TLS server has.
#[derive(Debug, Clone)]
pub struct Config {
    /// Framing, limits, timeouts, grace: the same as every other server.
    pub common: ServerConfig,
    /// The whole TLS handshake, from accept to the first application byte.
    pub handshake_timeout: Duration,
    pub tls: Arc<rustls::ServerConfig>,
}

impl Config {
    /// The shared configuration and a TLS configuration, with the default
    /// handshake timeout.
    pub fn new(common: ServerConfig, tls: Arc<rustls::ServerConfig>) -> Self {
        Config {
            common,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls,
        }
    }
}

/// Serve on a std listener (already bound, e.g. by `common::net::listen`)
/// until `shutdown` fires; builds its own multi-threaded tokio runtime.
/// Returns the final counters, which it has also logged as one line, no
/// later than `--grace` after the shutdown signal.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tls-echo")
        .build()?;
    let result = runtime.block_on(async {
        // tokio needs the socket in non-blocking mode: its reactor (epoll)
        // waits for readiness, then calls accept() expecting EAGAIN, not a block.
        listener.set_nonblocking(true)?;
        serve(TcpListener::from_std(listener)?, config, shutdown).await
    });
    // Dropping a runtime waits for its worker threads; one stuck in a long
    // `--work` computation would hold the process past the deadline.
    // `serve` has already aborted every task: give the threads a moment and
    // leave the rest to process exit.
    runtime.shutdown_timeout(ABORT_WAIT);
    result
}

/// The accept loop, for callers that already run inside tokio. Returns
/// when shutdown was triggered and every connection has finished (or was
/// cut at the `--grace` deadline), or when the listener broke.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let config = Arc::new(config);
    let acceptor = TlsAcceptor::from(config.tls.clone());
    // One permit per connection. `try_acquire` never waits: over the limit a
    // client is refused (closed at once) rather than queued, so it learns
    // quickly and we hold no socket we will not serve. `Semaphore::new`
    // panics above MAX_PERMITS (2^61 on 64-bit); the CLI allows at most a
    // million, and the clamp keeps a library caller from a panic too.
    let max_conns = config.common.max_conns.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_conns));
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();
    let mut fatal = None;

    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.triggered() => break,
        };
        // Reap finished tasks so the set does not grow forever.
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(pair) => {
                backoff.reset();
                pair
            }
            // One policy for every server (common::net): retry at once,
            // back off (EMFILE: the pending connection stays queued and the
            // listener stays readable, so retrying at once would spin), or
            // stop. The back-off sleep is cut short by shutdown.
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                AcceptAction::Wait(delay) => {
                    tokio::select! {
                        () = sleep(delay) => continue,
                        () = shutdown.triggered() => break,
                    }
                }
                AcceptAction::Fatal => {
                    // Serve no one new, but let the connections we have
                    // finish as in any shutdown, then report the error.
                    fatal = Some(e);
                    shutdown.trigger();
                    break;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Stats::inc(&stats.refused);
            log::warn!("{peer}: refused, already serving --max-conns {max_conns}");
            drop(tcp);
            continue;
        };
        Stats::inc(&stats.accepted);
        log::info!("{peer}: connected");
        let (acceptor, config, stats, shutdown) = (
            acceptor.clone(),
            config.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit; // released when the task ends, however it ends
            serve_connection(tcp, peer, &acceptor, &config, &stats, &shutdown).await;
        });
    }

    // Stop accepting. Dropping the listener closes it: new clients get
    // ECONNREFUSED, and connections the kernel had completed but we had not
    // yet accepted (the backlog) are reset by the kernel.
    drop(listener);
    while tasks.try_join_next().is_some() {}
    let grace = config.common.grace;
    log::info!(
        "shutting down: {} connection(s) open, {grace:?} to finish",
        tasks.len()
    );
    // Every task watches the same deadline and cuts its own connection
    // there (logging it). This is the backstop for a task that does not:
    // at the deadline it is aborted, which drops its future; the drop logs
    // the cut (see `Tally`).
    let deadline = shutdown
        .deadline(grace)
        .map_or_else(|| Instant::now() + grace, Instant::from_std);
    let finished = tokio::time::timeout_at(deadline, async {
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                log::error!("a connection task failed: {e}");
            }
        }
    })
    .await;
    if finished.is_err() {
        log::warn!(
            "{} connection task(s) still running at the --grace deadline: aborting them",
            tasks.len()
        );
        tasks.abort_all();
        let _ = tokio::time::timeout(ABORT_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    log::info!("tls-echo stopped: {stats}");
    match fatal {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Resolves at the `--grace` deadline: never before shutdown is triggered,
/// then `grace` after the signal. Every wait of a connection races it.
async fn cut_deadline(shutdown: &Shutdown, grace: Duration) {
    shutdown.triggered().await;
    if let Some(at) = shutdown.deadline(grace) {
        sleep_until(Instant::from_std(at)).await;
    }
}

/// What one connection has echoed, and the promise that its one closing
/// line (`common::conn::log_close`) is logged exactly once: by
/// [`Tally::close`], or, if the task is aborted at the deadline (its future
/// dropped), by `Drop`, as a cut.
struct Tally<'a> {
    peer: SocketAddr,
    frames: u64,
    bytes: u64,
    stats: &'a Stats,
    logged: bool,
}

impl<'a> Tally<'a> {
    fn new(peer: SocketAddr, stats: &'a Stats) -> Self {
        Tally {
            peer,
            frames: 0,
            bytes: 0,
            stats,
            logged: false,
        }
    }

    fn close(&mut self, end: &End) {
        if !self.logged {
            self.logged = true;
            log_close(&self.peer, self.frames, self.bytes, end, self.stats);
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.close(&End::Cut);
    }
}

/// One client from TCP accept to close. Never returns an error: whatever
/// goes wrong is logged with the peer address and ends only this connection.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    config: &Config,
    stats: &Stats,
    shutdown: &Shutdown,
) {
    let mut tally = Tally::new(peer, stats);
    // ANCHOR: handshake-deadline
    // The handshake gets one deadline for everything: waiting for the first
    // byte, the ClientHello, our key share and certificate, the client's
    // Finished. A client that connects and never speaks TLS is gone after it.
    // Atomic only because the task must be `Send`; one task touches it.
    let spoke = AtomicBool::new(false);
    let mut handshake = pin!(tokio::time::timeout(
        config.handshake_timeout,
        handshake(tcp, acceptor, &spoke)
    ));
    // ANCHOR_END: handshake-deadline
    let handshake = tokio::select! {
        r = &mut handshake => r,
        () = shutdown.triggered() => {
            if !spoke.load(Relaxed) {
                // Silent so far: nothing is owed (no application data can
                // arrive before the handshake is done; no 0-RTT here).
                tally.close(&End::Shutdown { unfinished: 0 });
                return;
            }
            // A client in the middle of its handshake is served like any
            // other: let it finish (or fail), within the deadline.
            tokio::select! {
                r = &mut handshake => r,
                () = cut_deadline(shutdown, config.common.grace) => {
                    tally.close(&End::Cut);
                    return;
                }
            }
        }
    };
    let tls = match handshake {
        Ok(Ok(Hello::Tls(tls))) => tls,
        Ok(Ok(Hello::Closed)) => {
            tally.close(&End::PeerClosed);
            return;
        }
        Ok(Ok(Hello::Plaintext(tcp, first))) => {
            let why = format!(
                "TLS handshake failed: first byte {first:#04x} ({:?}) is not a TLS handshake record (0x16); plaintext client? Answered in plaintext",
                char::from(first)
            );
            tally.close(&End::from(io::Error::new(io::ErrorKind::InvalidData, why)));
            reply_plaintext_and_close(tcp, shutdown, config.common.grace).await;
            return;
        }
        Ok(Err(e)) => {
            // A client that refused *us* sends a fatal alert (UnknownCA,
            // BadCertificate): its decision, as legitimate as a reset, so it
            // is logged as a disconnect (info), as nginx logs client-caused
            // handshake failures at info. So is a reset (`openssl s_time`
            // resets the moment its side of the handshake is done). Any
            // other failure, where the client broke the protocol or did not
            // meet ours (no certificate for mutual TLS), is a warn.
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|tls| matches!(tls, rustls::Error::AlertReceived(_)));
            let kind = if alert {
                io::ErrorKind::ConnectionAborted
            } else {
                e.kind()
            };
            let e = io::Error::new(kind, format!("TLS handshake failed: {e}"));
            tally.close(&End::from(e));
            return;
        }
        Err(_) => {
            // Like an idle client, the silence of the peer: timed out, not
            // an error.
            tally.logged = true;
            Stats::inc(&stats.timed_out);
            log::warn!(
                "{peer}: no complete TLS handshake within {:?} (--handshake-timeout), closing",
                config.handshake_timeout
            );
            return;
        }
    };
    log_negotiated(peer, &tls);

    let mut conn = Conn::new(tls, &config.common, tally);
    let end = conn.serve(shutdown).await;
    conn.tally.close(&end);
}

/// How a handshake ended, when it did not fail.
// One per connection, moved at once into `Conn`: boxing the big variant
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Hello {
    Tls(TlsStream<TcpStream>),
    /// The client closed before sending a byte.
    Closed,
    /// The first byte is not a TLS record: a plaintext client.
    Plaintext(TcpStream, u8),
}

// ANCHOR: handshake
/// Look at the first byte, then run the TLS handshake. `spoke` becomes
/// true once the client has sent something.
async fn handshake(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    spoke: &AtomicBool,
) -> io::Result<Hello> {
    // `peek` (recv with MSG_PEEK) copies the first byte without consuming
    // it, so rustls still reads the whole ClientHello afterwards.
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(Hello::Closed);
    }
    spoke.store(true, Relaxed);
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Hello::Plaintext(tcp, first[0]));
    }
    // From here on rustls reads the ClientHello, picks the version, cipher
    // suite and group, sends ServerHello + (encrypted, in TLS 1.3) its
    // certificate and a signature proving it holds the certificate's key.
    tcp.set_nodelay(true)?;
    acceptor.accept(tcp).await.map(Hello::Tls)
}
// ANCHOR_END: handshake

/// Tell a plaintext client what went wrong, then close without a reset.
async fn reply_plaintext_and_close(mut tcp: TcpStream, shutdown: &Shutdown, grace: Duration) {
    let goodbye = async {
        // 90 bytes: the kernel's send buffer takes them at once.
        let _ = tcp.write_all(PLAINTEXT_REPLY).await;
        // Half-close (FIN) first, then read and discard what the client
        // sent. Closing a socket whose receive queue still holds unread
        // bytes makes Linux send RST instead of FIN, and an RST can destroy
        // our reply in the client's receive queue before it reads it.
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n @ 1..) = tcp.read(&mut sink).await {
            total += n;
            if total > 1 << 20 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(2), goodbye) => {}
        () = cut_deadline(shutdown, grace) => {}
    }
}

fn log_negotiated(peer: SocketAddr, tls: &TlsStream<TcpStream>) {
    let (_, conn) = tls.get_ref();
    let client_cert = match conn.peer_certificates() {
        Some(chain) => format!(", client certificate verified ({} in chain)", chain.len()),
        None => String::new(),
    };
    log::info!(
        "{peer}: handshake done: {}{client_cert}",
        crate::Negotiated::of(conn)
    );
}

/// What one step of [`Conn::poll_io`] did.
enum Io {
    /// rustls took this many bytes of our pending echoes.
    Wrote(usize),
    /// rustls handed its last encrypted bytes to the kernel.
    Flushed,
    /// This many plaintext bytes arrived; 0 is the peer's `close_notify`.
    Read(usize),
}

/// A connection after its handshake: the TLS stream and the two buffers,
/// the same echo as every other chapter's (`common::Decoder` and
/// `common::encode`), only over an encrypted stream.
///
/// It does not use `common::framing::tokio_io::AsyncFramed`: that adapter reads *or*
/// writes (each an `async fn` borrowing the whole stream), and this server
/// must do both at once, so a client that writes a batch before reading
/// any of it is still read while its echoes wait.
struct Conn<'a> {
    tls: TlsStream<TcpStream>,
    decoder: Decoder,
    /// Plaintext received, not yet cut into frames.
    rbuf: BytesMut,
    /// Echoes encoded, not yet taken by rustls. Kept under
    /// `--max-pending`, give or take one frame; rustls buffers at most
    /// 64 KiB more (its default `set_buffer_limit`) before its `write`
    /// waits for the kernel.
    out: BytesMut,
    /// The peer closed its sending side (`close_notify`, or a bare FIN).
    eof: bool,
    config: &'a ServerConfig,
    tally: Tally<'a>,
}

impl<'a> Conn<'a> {
    fn new(tls: TlsStream<TcpStream>, config: &'a ServerConfig, tally: Tally<'a>) -> Self {
        Conn {
            tls,
            decoder: Decoder::new(config.framing, config.max_frame),
            rbuf: BytesMut::new(),
            out: BytesMut::new(),
            eof: false,
            config,
            tally,
        }
    }

    /// Echoes waiting: in our buffer, or encrypted inside rustls.
    fn pending(&self) -> bool {
        !self.out.is_empty() || self.tls.get_ref().1.wants_write()
    }

    /// Below `--max-pending`: reading more is allowed.
    fn may_read(&self) -> bool {
        !self.eof && self.out.len() < self.config.max_pending
    }

    /// The echo loop, until the peer closes, a timeout, an error or the
    /// shutdown; returns how it ended (the caller logs it).
    async fn serve(&mut self, shutdown: &Shutdown) -> End {
        let idle = self.config.idle_timeout;
        let stall = self.config.stall_timeout;
        let mut last_rx = Instant::now();
        // When the pending echoes last made progress (or became pending).
        let mut stalled_since: Option<Instant> = None;
        loop {
            if let Err(e) = self.queue_echoes() {
                return self.refuse(e, shutdown).await;
            }
            let pending = self.pending();
            let since = if pending {
                *stalled_since.get_or_insert_with(Instant::now)
            } else {
                stalled_since = None;
                if self.eof {
                    // Everything echoed and the peer is done: our own
                    // close_notify and FIN, then close.
                    return self.close(End::PeerClosed, shutdown).await;
                }
                Instant::now()
            };
            let read = self.may_read();
            tokio::select! {
                // Checked first: once shutdown is triggered the loop ends
                // here, whatever else is ready.
                biased;
                () = shutdown.triggered() => return self.shut_down(shutdown).await,
                io = poll_fn(|cx| self.poll_io(cx, read)) => match io {
                    Ok(Io::Wrote(n)) => {
                        log::trace!("{}: rustls took {n} bytes of echoes", self.tally.peer);
                        stalled_since = Some(Instant::now());
                    }
                    Ok(Io::Flushed) => stalled_since = Some(Instant::now()),
                    Ok(Io::Read(0)) => self.eof = true,
                    Ok(Io::Read(n)) => {
                        log::trace!("{}: {n} bytes of plaintext", self.tally.peer);
                        last_rx = Instant::now();
                    }
                    Err(e) => match self.read_error(e) {
                        Ok(()) => {}
                        Err(end) => return end,
                    },
                },
                // A blocked write is not activity: the stall timer runs
                // while echoes wait, and only their progress resets it.
                () = sleep_until(since + stall), if pending => return End::Stalled(stall),
                // Idle: nothing to send, nothing received.
                () = sleep_until(last_rx + idle.unwrap_or_default()), if idle.is_some() && !pending && read => {
                    let Some(idle) = idle else { continue };
                    return self.close(End::Idle(idle), shutdown).await;
                }
            }
        }
    }

    /// A read error: the end of the connection, except a TCP FIN without
    /// `close_notify`, which rustls reports as `UnexpectedEof` because an
    /// attacker can forge a FIN but not a close_notify. Between frames
    /// nothing was cut short and many clients simply close the socket, so
    /// this is a normal end of stream (an unfinished frame still becomes
    /// `FrameError::Truncated` in `queue_echoes`).
    fn read_error(&mut self, e: io::Error) -> Result<(), End> {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            log::debug!("{}: TCP closed without TLS close_notify", self.tally.peer);
            self.eof = true;
            Ok(())
        } else {
            Err(End::from(e))
        }
    }

    /// Cut every complete frame off the plaintext buffer and encode its
    /// echo, until `--max-pending` bytes wait (the rest stays in `rbuf`,
    /// and reading stops: backpressure).
    fn queue_echoes(&mut self) -> Result<(), FrameError> {
        while self.out.len() < self.config.max_pending {
            let frame = if self.eof {
                self.decoder.decode_eof(&mut self.rbuf)?
            } else {
                self.decoder.decode(&mut self.rbuf)?
            };
            let Some(frame) = frame else { break };
            log::debug!("{}: frame of {} bytes", self.tally.peer, frame.len());
            if self.config.work > 0 {
                // CPU work runs on this runtime worker thread, as in a naive
                // async server; the async-server chapter shows how to move it off.
                std::hint::black_box(common::work::work(&frame, self.config.work));
            }
            encode(self.decoder.framing(), &frame, &mut self.out)?;
            self.tally.stats.add_frame(frame.len());
            self.tally.frames += 1;
            self.tally.bytes += frame.len() as u64;
        }
        Ok(())
    }

    /// One step of the connection's I/O, both directions at once: hand
    /// pending echoes to rustls (or flush rustls to the kernel) and, if
    /// `read`, read more plaintext. Ready with whichever happened first;
    /// pending (with both wakers registered) when neither can progress.
    ///
    /// Each direction is a fresh `write`/`read_buf` future polled once and
    /// dropped: both are cancel-safe (a dropped `write` wrote nothing, a
    /// dropped `read_buf` read nothing), so no byte is lost or sent twice.
    fn poll_io(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<io::Result<Io>> {
        if !self.out.is_empty() {
            // tokio-rustls encrypts into rustls's buffer and writes what the
            // kernel takes; it returns Pending only when rustls's buffer is
            // full and the kernel's send buffer too (the peer's window is
            // closed because it does not read).
            let polled = pin!(self.tls.write(&self.out)).poll(cx);
            if let Poll::Ready(r) = polled {
                return Poll::Ready(r.map(|n| {
                    self.out.advance(n);
                    Io::Wrote(n)
                }));
            }
        } else if self.tls.get_ref().1.wants_write()
            && let Poll::Ready(r) = Pin::new(&mut self.tls).poll_flush(cx)
        {
            return Poll::Ready(r.map(|()| Io::Flushed));
        }
        if read {
            self.rbuf.reserve(READ_CHUNK);
            let polled = pin!(self.tls.read_buf(&mut self.rbuf)).poll(cx);
            if let Poll::Ready(r) = polled {
                return Poll::Ready(r.map(Io::Read));
            }
        }
        Poll::Pending
    }

    /// Write every pending echo, bounded by the stall timeout (no progress
    /// for that long) and the grace deadline.
    async fn finish_writes(&mut self, shutdown: &Shutdown) -> Result<(), End> {
        let stall = self.config.stall_timeout;
        let mut since = Instant::now();
        while self.pending() {
            tokio::select! {
                biased;
                () = cut_deadline(shutdown, self.config.grace) => return Err(End::Cut),
                io = poll_fn(|cx| self.poll_io(cx, false)) => {
                    io?;
                    since = Instant::now();
                }
                () = sleep_until(since + stall) => return Err(End::Stalled(stall)),
            }
        }
        Ok(())
    }

    /// Finish a connection whose input is over: write what is owed, then
    /// `close_notify` and FIN (`TlsStream::shutdown`). Without close_notify
    /// the peer cannot tell our close from an attacker cutting the
    /// connection (a "truncation attack").
    async fn close(&mut self, end: End, shutdown: &Shutdown) -> End {
        if let Err(end) = self.finish_writes(shutdown).await {
            return end;
        }
        let stall = self.config.stall_timeout;
        tokio::select! {
            biased;
            () = cut_deadline(shutdown, self.config.grace) => End::Cut,
            // An error here (the peer already reset) changes nothing: it
            // was leaving anyway.
            _ = self.tls.shutdown() => end,
            () = sleep(stall) => End::Stalled(stall),
        }
    }

    /// The client broke the protocol (an oversized or truncated frame):
    /// echo what it is owed up to the bad frame, say goodbye, report it.
    async fn refuse(&mut self, e: FrameError, shutdown: &Shutdown) -> End {
        self.close(End::from(e), shutdown).await
    }

    /// The graceful shutdown of one connection, within `--grace` of the
    /// signal:
    ///
    /// 1. echo every complete frame already received, without waiting for
    ///    new bytes: our buffer, rustls's decrypted plaintext, the kernel's
    ///    receive queue; write as we go, so the queue stays within
    ///    `--max-pending`;
    /// 2. `close_notify` + FIN;
    /// 3. read and discard until the peer closes too, so that our `close()`
    ///    is not turned into a reset (Linux sends RST when a socket is
    ///    closed with unread bytes) that would destroy echoes still in
    ///    flight to the client;
    ///
    /// and at the deadline, wherever it is, cut.
    async fn shut_down(&mut self, shutdown: &Shutdown) -> End {
        let grace = self.config.grace;
        let stall = self.config.stall_timeout;
        let mut input_done = self.eof;
        let mut since = Instant::now();
        loop {
            if let Err(e) = self.queue_echoes() {
                return self.refuse(e, shutdown).await;
            }
            if !input_done && self.may_read() {
                match self.read_now() {
                    Some(Ok(Io::Read(0))) => self.eof = true,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if let Err(end) = self.read_error(e) {
                            return end;
                        }
                    }
                    None if self.kernel_has_bytes() => {
                        // Bytes the kernel holds but tokio has not been told
                        // about yet (its epoll event is on its way): wait
                        // for that readiness, not for new bytes.
                        tokio::select! {
                            () = cut_deadline(shutdown, grace) => return End::Cut,
                            _ = self.tls.get_ref().0.readable() => {}
                        }
                    }
                    None => input_done = true,
                }
                input_done |= self.eof;
                continue;
            }
            if !self.pending() {
                if input_done {
                    break;
                }
                continue;
            }
            // Echoes wait (and, if we are at --max-pending, reading waits
            // for them): one write step.
            tokio::select! {
                biased;
                () = cut_deadline(shutdown, grace) => return End::Cut,
                io = poll_fn(|cx| self.poll_io(cx, false)) => match io {
                    Ok(_) => since = Instant::now(),
                    Err(e) => return End::from(e),
                },
                () = sleep_until(since + stall) => return End::Stalled(stall),
            }
        }
        let unfinished = self.rbuf.len();
        let eof = self.eof;
        match self.close(End::Shutdown { unfinished }, shutdown).await {
            End::Shutdown { .. } if !eof => {}
            end => return end,
        }
        // Our FIN is sent. Read and discard until the peer's close_notify
        // or FIN, so the last echoes reach it intact.
        let mut sink = BytesMut::new();
        loop {
            sink.clear();
            sink.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                () = cut_deadline(shutdown, grace) => return End::Cut,
                r = self.tls.read_buf(&mut sink) => match r {
                    Ok(1..) => continue,
                    // Ok(0): close_notify; Err: FIN without it, or a reset.
                    _ => break,
                },
            }
        }
        End::Shutdown { unfinished }
    }

    /// Poll the read once: plaintext rustls already decrypted, or whatever
    /// the kernel hands over right now. `None`: nothing is ready.
    fn read_now(&mut self) -> Option<io::Result<Io>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match self.poll_io(&mut cx, true) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// Does the kernel's receive queue hold anything (bytes, or the FIN)?
    /// Asks the socket itself, `recv(MSG_PEEK)` on the non-blocking socket,
    /// because tokio's cached readiness may lag behind the kernel.
    fn kernel_has_bytes(&self) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        socket2::SockRef::from(self.tls.get_ref().0)
            .peek(&mut byte)
            .is_ok()
    }
}
