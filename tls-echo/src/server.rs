//! The TLS echo server: tokio accepts, each connection's task does its own
//! TLS handshake (with a deadline), then echoes frames through rustls.
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
//!
//! Why tokio: a TLS handshake is several round trips, and a client may open
//! a connection and then say nothing. With a thread per client, a thousand
//! such clients pin a thousand threads; with tasks they cost a few KiB each,
//! and the handshake's deadline is one `tokio::time::timeout`. The
//! handshake runs *inside the connection's task*, never in the accept loop,
//! so one slow or hostile client cannot stall anybody else's accept.
//!
//! Everything after the handshake is the same echo as in the other
//! chapters: `AsyncFramed` (from `common`) does not know or care that the
//! stream under it encrypts, because `tokio_rustls::server::TlsStream`
//! implements the same `AsyncRead + AsyncWrite` as a `TcpStream`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::framing::tokio_io::AsyncFramed;
use common::net::{Backoff, is_disconnect, is_fd_exhaustion, is_transient_accept_error};
use common::{ConnError, FrameError, Framing, Shutdown, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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

/// Everything a server needs besides its listener and shutdown signal.
#[derive(Debug, Clone)]
pub struct Config {
    pub framing: Framing,
    pub max_frame: usize,
    pub max_conns: usize,
    /// Close a connection idle this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// `--work N` rounds of CPU work per frame.
    pub work: u32,
    /// The whole TLS handshake, from accept to the first application byte.
    pub handshake_timeout: Duration,
    pub tls: Arc<rustls::ServerConfig>,
}

impl Config {
    /// The shared flags plus a TLS configuration, with the default
    /// handshake timeout.
    pub fn new(args: &common::cli::ServerArgs, tls: Arc<rustls::ServerConfig>) -> Self {
        Config {
            framing: args.framing,
            max_frame: args.max_frame,
            max_conns: args.max_conns,
            idle_timeout: args.idle(),
            work: args.work,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls,
        }
    }
}

/// Serve on a std listener (already bound, e.g. by `common::net::listen`)
/// until `shutdown` fires; builds its own multi-threaded tokio runtime.
/// Returns the final counters, which it has also logged as one line.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tls-echo")
        .build()?;
    runtime.block_on(async {
        // tokio needs the socket in non-blocking mode: its reactor (epoll)
        // waits for readiness, then calls accept() expecting EAGAIN, not a block.
        listener.set_nonblocking(true)?;
        serve(TcpListener::from_std(listener)?, config, shutdown).await
    })
}

/// The accept loop, for callers that already run inside tokio.
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
    // quickly and we hold no socket we will not serve.
    let slots = Arc::new(Semaphore::new(config.max_conns));
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();

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
            Err(e) if is_transient_accept_error(&e) => {
                log::warn!("accept failed (will retry): {e}");
                if is_fd_exhaustion(&e) {
                    // The pending connection stays queued and the listener
                    // stays readable: retrying at once would spin.
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Stats::inc(&stats.refused);
            log::warn!(
                "{peer}: refused, already serving --max-conns {}",
                config.max_conns
            );
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

    // Stop accepting (dropping the listener closes it: new clients get
    // ECONNREFUSED), then let every connection finish what it owes.
    drop(listener);
    log::info!(
        "shutting down: waiting for {} connection(s)",
        config.max_conns - slots.available_permits()
    );
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            log::error!("a connection task failed: {e}");
        }
    }
    log::info!("tls-echo summary: {stats}");
    Ok(stats)
}

/// Why a connection ended, for the log line and the error counter.
enum End {
    /// Peer closed between frames, or we are shutting down.
    Clean,
    /// Peer closed TCP between frames without a TLS `close_notify`.
    NoCloseNotify,
    Idle(Duration),
    Conn(ConnError),
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
    // The handshake gets one deadline for everything: waiting for the first
    // byte, the ClientHello, our key share and certificate, the client's
    // Finished. A client that connects and never speaks TLS is gone after it.
    let handshake = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, handshake(tcp, peer, acceptor, stats)) => r,
        () = shutdown.triggered() => {
            log::info!("{peer}: closed during the handshake by shutdown");
            return;
        }
    };
    let tls = match handshake {
        Ok(Ok(Some(tls))) => tls,
        Ok(Ok(None)) => return, // logged by `handshake`
        Ok(Err(e)) if is_disconnect(&e) => {
            // Tools like `openssl s_time` reset the connection the moment
            // their side of the handshake is done: not our failure.
            Stats::inc(&stats.errors);
            log::info!("{peer}: went away during the TLS handshake ({e})");
            return;
        }
        Ok(Err(e)) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            Stats::inc(&stats.errors);
            log::warn!(
                "{peer}: TLS handshake failed: no complete handshake within {:?}",
                config.handshake_timeout
            );
            return;
        }
    };
    log_negotiated(peer, &tls);

    let mut framed = AsyncFramed::new(tls, config.framing, config.max_frame);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let end = echo(
        &mut framed,
        peer,
        config,
        stats,
        shutdown,
        &mut frames,
        &mut bytes,
    )
    .await;

    // Say goodbye properly: `shutdown()` on a TlsStream sends a TLS
    // `close_notify` alert, then a TCP FIN. Without close_notify the peer
    // cannot tell our close from an attacker cutting the connection (a
    // "truncation attack"). Bounded, since a peer that reads nothing could
    // leave the write pending forever.
    if !matches!(end, End::Conn(ConnError::Io(_))) {
        let _ = tokio::time::timeout(Duration::from_secs(5), framed.get_mut().shutdown()).await;
    }
    match end {
        End::Clean => log::info!("{peer}: closed after {frames} frames, {bytes} bytes"),
        End::NoCloseNotify => log::info!(
            "{peer}: closed (TCP only, no TLS close_notify) after {frames} frames, {bytes} bytes"
        ),
        End::Idle(d) => {
            Stats::inc(&stats.errors);
            log::info!("{peer}: idle for {d:?}, closed after {frames} frames");
        }
        End::Conn(ConnError::Frame(e @ FrameError::Truncated { .. })) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: {e} (after {frames} frames)");
        }
        End::Conn(ConnError::Frame(e)) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: {e}; closing (after {frames} frames)");
        }
        End::Conn(ConnError::Io(e)) if is_disconnect(&e) => {
            Stats::inc(&stats.errors);
            log::info!("{peer}: disconnected ({e}) after {frames} frames");
        }
        End::Conn(ConnError::Io(e)) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: {e} (after {frames} frames)");
        }
    }
}

/// Look at the first byte, then run the TLS handshake.
///
/// `Ok(None)`: not a TLS client; already answered and logged.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    stats: &Stats,
) -> io::Result<Option<TlsStream<TcpStream>>> {
    // `peek` (recv with MSG_PEEK) copies the first byte without consuming
    // it, so rustls still reads the whole ClientHello afterwards.
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        log::info!("{peer}: closed before sending anything");
        return Ok(None);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        log::warn!(
            "{peer}: TLS handshake failed: first byte {:#04x} ({:?}) is not a TLS handshake record (0x16); plaintext client?",
            first[0],
            char::from(first[0])
        );
        Stats::inc(&stats.errors);
        reply_plaintext_and_close(tcp).await;
        return Ok(None);
    }
    // From here on rustls reads the ClientHello, picks the version, cipher
    // suite and group, sends ServerHello + (encrypted, in TLS 1.3) its
    // certificate and a signature proving it holds the certificate's key.
    tcp.set_nodelay(true)?;
    acceptor.accept(tcp).await.map(Some)
}

/// Tell a plaintext client what went wrong, then close without a reset.
async fn reply_plaintext_and_close(mut tcp: TcpStream) {
    let _ = tcp.write_all(PLAINTEXT_REPLY).await;
    // Half-close (FIN) first, then read and discard what the client sent.
    // Closing a socket whose receive queue still holds unread bytes makes
    // Linux send RST instead of FIN, and an RST can destroy our reply in the
    // client's receive queue before it reads it.
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n @ 1..) = tcp.read(&mut sink).await {
            total += n;
            if total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
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

/// The echo loop proper: the same as every other chapter's.
async fn echo(
    framed: &mut AsyncFramed<TlsStream<TcpStream>>,
    peer: SocketAddr,
    config: &Config,
    stats: &Stats,
    shutdown: &Shutdown,
    frames: &mut u64,
    bytes: &mut u64,
) -> End {
    loop {
        let read = async {
            match config.idle_timeout {
                Some(d) => tokio::time::timeout(d, framed.read_frame())
                    .await
                    .map_err(|_| d),
                None => Ok(framed.read_frame().await),
            }
        };
        // `read_frame` is cancel-safe: if shutdown wins the race, bytes
        // already decrypted stay in the framer's buffer (drained below) and
        // bytes not yet decrypted stay in rustls.
        let mut shutting_down = false;
        let first = tokio::select! {
            r = read => r,
            () = shutdown.triggered() => { shutting_down = true; Ok(Ok(None)) }
        };
        let first: Option<Bytes> = match first {
            Err(d) => return End::Idle(d),
            // rustls reports a TCP close without close_notify as
            // UnexpectedEof, because an attacker can forge a FIN but not a
            // close_notify. Between frames nothing was cut short, and many
            // clients simply close the socket, so this is not counted as an
            // error; in the middle of a frame it is (FrameError::Truncated
            // would be the plaintext twin).
            Ok(Err(ConnError::Io(e)))
                if e.kind() == io::ErrorKind::UnexpectedEof && framed.pending() == 0 =>
            {
                return End::NoCloseNotify;
            }
            Ok(Err(e)) => return End::Conn(e),
            Ok(Ok(f)) => f,
        };
        let Some(first) = first else {
            if shutting_down {
                // Echo what was already received in full, then say goodbye.
                while let Ok(Some(frame)) = framed.try_buffered_frame() {
                    if let Err(e) = queue_echo(framed, peer, config, stats, &frame, frames, bytes) {
                        return End::Conn(e);
                    }
                }
                if let Err(e) = framed.flush().await {
                    return End::Conn(e.into());
                }
            }
            return End::Clean;
        };
        if let Err(e) = queue_echo(framed, peer, config, stats, &first, frames, bytes) {
            return End::Conn(e);
        }
        // A pipelining client may have sent many frames in one TLS record:
        // echo all that are already here with one flush (one write, and one
        // or a few TLS records) instead of one per frame.
        loop {
            match framed.try_buffered_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = queue_echo(framed, peer, config, stats, &frame, frames, bytes) {
                        return End::Conn(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Send what we owe before reporting the broken frame.
                    let _ = framed.flush().await;
                    return End::Conn(e.into());
                }
            }
        }
        if let Err(e) = framed.flush().await {
            return End::Conn(e.into());
        }
    }
}

fn queue_echo(
    framed: &mut AsyncFramed<TlsStream<TcpStream>>,
    peer: SocketAddr,
    config: &Config,
    stats: &Stats,
    frame: &[u8],
    frames: &mut u64,
    bytes: &mut u64,
) -> Result<(), ConnError> {
    log::debug!("{peer}: frame of {} bytes", frame.len());
    if config.work > 0 {
        // CPU work runs on this runtime worker thread, as in a naive async
        // server; the async-server chapter shows how to move it off.
        std::hint::black_box(common::work::work(frame, config.work));
    }
    framed.queue_frame(frame)?;
    stats.add_frame(frame.len());
    *frames += 1;
    *bytes += frame.len() as u64;
    Ok(())
}
