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
//! once, see `Conn::poll_io` in `server/echo.rs`), the stall timer, the idle timer and the
//! shutdown signal. Reading goes on while echoes wait, up to
//! `--max-pending` unsent bytes, so a client that writes a lot before it
//! reads is served; at the limit the server stops reading it, and the
//! client's own `write()` blocks: backpressure, TCP flow control doing its
//! job.
//!
//! **Where the bytes of a TLS connection hide at shutdown.** A frame the
//! client sent may be (1) in our buffer, decoded or not, (2) decrypted
//! inside rustls, waiting for us to read the plaintext, (3) still encrypted
//! in the kernel's receive queue. `Conn::shut_down` echoes all three
//! without waiting for new bytes: it polls the read exactly once (rustls
//! hands out its buffered plaintext first, then reads the kernel), and
//! asks the kernel directly (`recv(MSG_PEEK | MSG_DONTWAIT)`) whether bytes
//! are there that tokio has not been told about yet.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::conn::{End, log_close};
use common::tokio_accept;
use common::{ServerConfig, Shutdown, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

mod echo;
use echo::Conn;

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
    runtime.shutdown_timeout(tokio_accept::ABORT_WAIT);
    result
}

/// The accept loop, for callers that already run inside tokio: the one
/// every tokio server shares (`common::tokio_accept`: `--max-conns`, accept
/// errors, the drain at shutdown), with a TLS handshake and then the echo
/// as what each connection's task does. Returns when shutdown was triggered
/// and every connection has finished (or was cut at the `--grace`
/// deadline), or, after the same drain, when the listener broke; either way
/// after logging the summary line.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::new());
    let config = Arc::new(config);
    let acceptor = TlsAcceptor::from(config.tls.clone());
    let served = tokio_accept::serve(listener, &config.common, &stats, &shutdown, |tcp, peer| {
        let (acceptor, config, stats, shutdown) = (
            acceptor.clone(),
            config.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        async move { serve_connection(tcp, peer, &acceptor, &config, &stats, &shutdown).await }
    })
    .await;
    log::info!("tls-echo stopped: {stats}");
    served.map(|()| stats)
}

/// Resolves at the `--grace` deadline: never before shutdown is triggered,
/// then `grace` after the signal. Every wait of a connection races it.
async fn cut_deadline(shutdown: &Shutdown, grace: Duration) {
    tokio_accept::cut_at_deadline(shutdown, grace).await;
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
    conn.close_tally(&end);
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
