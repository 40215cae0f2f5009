//! The TCP relay: toxics on a byte stream, modelled on Shopify's toxiproxy.
//!
//! ```text
//!  client ──► [client socket] ─ up pump ──► [upstream socket] ──► server
//!  client ◄── [client socket] ◄─ down pump ─ [upstream socket] ◄── server
//! ```
//!
//! Run with, in three terminals: `cargo run -p tcp-echo -- server --framing raw`,
//! `cargo run -p impair -- tcp --listen 127.0.0.1:7101 --upstream 127.0.0.1:7001 --split`
//! and `printf 'hello world\n' | nc -N 127.0.0.1 7101`; with `RUST_LOG=debug`
//! on the server, watch it receive `hello world` in a dozen pieces.
//!
//! What TCP promises survives every toxic here: each byte arrives, once, in
//! order. What it never promised is what the toxics change: *where the
//! stream is cut* (`--split`, `--coalesce`: one `send` is not one `recv`, the
//! "sticky packet" 粘包 question), *when* bytes arrive (`--delay`,
//! `--jitter`, `--rate`), and whether the peer keeps up (`--stall-after`)
//! or lives at all (`--reset-after`).
//!
//! Each direction of a connection is a pump: a reader that reads up to
//! 16 KiB at a time into a queue, and a writer that takes chunks off it.
//! The queue is bounded in *bytes* by a semaphore of `--buffer` permits: the
//! reader takes permits before each `read()` and the writer gives them back
//! as bytes leave. When the far side stops reading, the writer's `write()`
//! waits, no permits come back, the reader stops reading, the kernel's
//! receive buffer fills and TCP's window closes on the sender. That is
//! backpressure: the relay holds at most `--buffer` bytes per direction,
//! whatever the peers do.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use common::Shutdown;
use common::net::{AcceptAction, Backoff};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fate::{self, Dir, Direction};
use crate::stats::Stats;

/// The most one `read()` takes (and so the most one chunk holds).
const READ_CHUNK: usize = 16 * 1024;

/// With `--rate`, bytes are paced in pieces of at most this (about one
/// Ethernet segment), so a 16 KiB read does not leave as one 130 ms burst.
const PACE_PIECE: usize = 1448;

/// How long to wait for the upstream server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What happens to one direction of the stream.
#[derive(Debug, Clone, Default)]
pub struct TcpToxics {
    pub delay: Duration,
    pub jitter: Duration,
    pub rate: Option<u64>,
    /// Cut writes into pieces of 1..=N bytes.
    pub split: Option<usize>,
    pub split_gap: Duration,
    /// Hold and merge what arrives within this long.
    pub coalesce: Option<Duration>,
    pub stall_after: Option<usize>,
    pub stall: Duration,
    pub reset_after: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub upstream: SocketAddr,
    pub seed: u64,
    pub direction: Direction,
    pub report: Option<Duration>,
    pub toxics: TcpToxics,
    /// Bytes held per direction of a connection (backpressure beyond).
    pub buffer: usize,
    pub max_conns: usize,
}

impl TcpConfig {
    /// A relay to `upstream` that changes nothing (tests add toxics).
    pub fn new(upstream: SocketAddr) -> Self {
        TcpConfig {
            upstream,
            seed: 1,
            direction: Direction::Both,
            report: None,
            toxics: TcpToxics::default(),
            buffer: 64 * 1024,
            max_conns: 1024,
        }
    }

    fn toxics(&self, dir: Dir) -> TcpToxics {
        if self.direction.includes(dir) {
            self.toxics.clone()
        } else {
            TcpToxics::default()
        }
    }
}

/// Why a connection ended other than by both sides closing.
#[derive(Debug)]
enum End {
    /// `--reset-after` reached in this direction.
    Reset(Dir),
    Io(Dir, io::Error),
}

enum Msg {
    Data(Vec<u8>, Instant),
    /// The source sent FIN: pass it on with `shutdown(SHUT_WR)`.
    Eof,
}

/// Accept connections on `listener` and relay each to `config.upstream`
/// until `shutdown`; then drop every connection and log the summary.
pub async fn run(
    listener: TcpListener,
    config: TcpConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_conns));
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::new();
    let mut fatal = None;
    let mut next_id = 0u64;
    let mut report = config
        .report
        .map(|d| tokio::time::interval_at(Instant::now() + d, d));
    log::info!(
        "impair tcp: relaying {} -> {}, {:?} on {:?}, buffer {} bytes per direction, seed {}",
        listener.local_addr()?,
        config.upstream,
        config.toxics,
        config.direction,
        config.buffer,
        config.seed
    );
    loop {
        tokio::select! {
            _ = shutdown.triggered() => break,
            _ = tick(&mut report) => log::info!("impair tcp: {}", stats.tcp()),
            // Reap finished connections so the set stays as big as the
            // number of live ones.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((client, peer)) => {
                    backoff.reset();
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        stats.refused.fetch_add(1, Relaxed);
                        log::warn!("{peer}: refused, already {} connections (--max-conns)", config.max_conns);
                        continue;
                    };
                    stats.opened.fetch_add(1, Relaxed);
                    let (config, stats) = (config.clone(), stats.clone());
                    let id = next_id;
                    next_id += 1;
                    conns.spawn(async move {
                        connection(client, peer, id, &config, &stats).await;
                        drop(slot);
                    });
                }
                // The contract's one accept policy (logged inside): retry
                // at once, back off (EMFILE...; the wait is interrupted by
                // shutdown), or stop because the listener itself is broken.
                Err(e) => match common::net::accept_policy(&e, &mut backoff) {
                    AcceptAction::Retry => {}
                    AcceptAction::Wait(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = shutdown.triggered() => break,
                        }
                    }
                    AcceptAction::Fatal => {
                        fatal = Some(common::net::fatal_accept(e, &shutdown));
                        break;
                    }
                },
            }
        }
    }
    // Dropping the set aborts every connection task; their sockets close.
    // A relay owes nobody a graceful drain: the servers behind it do that.
    let live = conns.len();
    drop(conns);
    log::info!(
        "impair tcp stopped ({live} connections cut): {}",
        stats.tcp()
    );
    fatal.map_or(Ok(()), Err)
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Close with RST instead of FIN: `SO_LINGER` on with a zero timeout makes
/// `close()` discard anything unsent and send a reset.
fn set_reset_on_close(s: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)) {
        log::debug!("SO_LINGER: {e}");
    }
}

/// Bytes in the socket's send queue not yet acknowledged by the peer
/// (`SIOCOUTQ`, spelled `TIOCOUTQ` in libc). Linux only; elsewhere 0.
fn unacked_bytes(s: &TcpStream) -> usize {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one c_int through the pointer we pass,
        // which points at `n`, alive for the call; the fd is owned by `s`.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            return usize::try_from(n).unwrap_or(0);
        }
    }
    let _ = s;
    0
}

async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    id: u64,
    config: &TcpConfig,
    stats: &Stats,
) {
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(config.upstream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::warn!("{peer}: cannot connect to {}: {e}", config.upstream);
                stats.refused.fetch_add(1, Relaxed);
                // Reset, so the client learns at once that nobody is there.
                set_reset_on_close(&client);
                return;
            }
            Err(_) => {
                log::warn!(
                    "{peer}: {} did not accept within {CONNECT_TIMEOUT:?}",
                    config.upstream
                );
                stats.refused.fetch_add(1, Relaxed);
                set_reset_on_close(&client);
                return;
            }
        };
    // No Nagle on our side: each write (each --split piece) leaves at once as
    // its own segment, so the relay adds no delay the toxics did not ask for.
    for s in [&client, &upstream] {
        if let Err(e) = s.set_nodelay(true) {
            log::debug!("{peer}: TCP_NODELAY: {e}");
        }
    }
    log::info!("{peer}: connection {id} relayed to {}", config.upstream);

    let result = {
        // Borrowed halves: the streams stay ours, so after the pumps end we
        // can still set SO_LINGER on them before they close.
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let up = pump(cr, uw, Dir::Up, id, config, stats);
        let down = pump(ur, cw, Dir::Down, id, config, stats);
        // try_join: the first error ends both pumps at once.
        tokio::try_join!(up, down)
    };
    match result {
        Ok(((), ())) => {
            stats.closed.fetch_add(1, Relaxed);
            log::info!("{peer}: connection {id} closed by both sides");
        }
        Err(End::Reset(dir)) => {
            // The last bytes before the reset point must reach the peer
            // before RST, which makes its kernel drop anything unsent. On
            // loopback they are acknowledged within microseconds; a peer
            // whose receive window is full gets its reset after 2 s anyway.
            let target = match dir {
                Dir::Up => &upstream,
                Dir::Down => &client,
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            while unacked_bytes(target) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            set_reset_on_close(&client);
            set_reset_on_close(&upstream);
            stats.resets.fetch_add(1, Relaxed);
            log::info!("{peer}: connection {id} reset by --reset-after ({dir})");
        }
        Err(End::Io(dir, e)) => {
            // One side reset or failed: the other side gets a reset too,
            // as it would if the path between them broke.
            set_reset_on_close(&client);
            set_reset_on_close(&upstream);
            stats.resets.fetch_add(1, Relaxed);
            if common::net::is_disconnect(&e) {
                log::info!("{peer}: connection {id} ended ({dir}): {e}");
            } else {
                log::warn!("{peer}: connection {id} failed ({dir}): {e}");
            }
        }
    }
}

/// One direction: `src` to `dst`, through a queue bounded by `config.buffer`.
async fn pump<R, W>(
    mut src: R,
    mut dst: W,
    dir: Dir,
    id: u64,
    config: &TcpConfig,
    stats: &Stats,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let toxics = config.toxics(dir);
    let d = stats.dir(dir);
    let buffer = config.buffer;
    let chunk = buffer.min(READ_CHUNK);
    let space = Semaphore::new(buffer);
    // Unbounded on purpose: the bound is the semaphore, counted in bytes,
    // which a channel's capacity (counted in messages) cannot express.
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    // Bytes read and not yet written, for the `buffered` gauge.
    let queued = Queued {
        bytes: AtomicUsize::new(0),
        stats,
    };

    let reader = async {
        let mut buf = vec![0u8; chunk];
        loop {
            // Permits for a whole chunk before reading: the queue plus this
            // read can never exceed `buffer`. (chunk <= 16 KiB fits in u32.)
            let permits = u32::try_from(chunk).unwrap_or(u32::MAX);
            let Ok(permit) = space.acquire_many(permits).await else {
                return Ok(());
            };
            permit.forget();
            let n = match src.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Err(End::Io(dir, e)),
            };
            // Give back what the read did not fill.
            space.add_permits(chunk - n);
            if n == 0 {
                // Ok(0): the peer sent FIN. It will send nothing more, but it
                // may still read: pass the half-close on, do not close.
                let _ = tx.send(Msg::Eof);
                return Ok(());
            }
            stats.add_buffered(n);
            queued.bytes.fetch_add(n, Relaxed);
            d.received.fetch_add(1, Relaxed);
            d.bytes_in.fetch_add(n as u64, Relaxed);
            if tx
                .send(Msg::Data(buf[..n].to_vec(), Instant::now()))
                .is_err()
            {
                return Ok(());
            }
        }
    };

    let writer = async {
        let mut rng = fate::stream(config.seed, dir, id);
        let mut forwarded = 0usize;
        let mut stalled = false;
        let mut last_departure = Instant::now();
        let mut link_free = Instant::now();
        // --reset-after 0: reset before the first byte.
        if toxics.reset_after == Some(0) {
            return Err(End::Reset(dir));
        }
        loop {
            let (mut data, arrival) = match rx.recv().await {
                Some(Msg::Data(b, t)) => (b, t),
                Some(Msg::Eof) | None => {
                    // shutdown(SHUT_WR): our FIN, after every byte before it.
                    if let Err(e) = dst.shutdown().await {
                        return Err(End::Io(dir, e));
                    }
                    return Ok(());
                }
            };
            let mut eof_after = false;
            if let Some(window) = toxics.coalesce {
                // Hold the first chunk and merge whatever else arrives in
                // the window (up to the buffer bound) into one write.
                let until = arrival + window;
                let mut merged = 1;
                while data.len() < buffer {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(Msg::Data(more, _))) => {
                            data.extend_from_slice(&more);
                            merged += 1;
                        }
                        Ok(Some(Msg::Eof) | None) => {
                            eof_after = true;
                            break;
                        }
                        Err(_window_over) => break,
                    }
                }
                if merged > 1 {
                    d.coalesced.fetch_add(1, Relaxed);
                }
            }
            // Ordered delay: a chunk never leaves before the one ahead of it,
            // however the jitter fell (TCP delivers in order).
            let departure = (arrival + fate::jittered(&mut rng, toxics.delay, toxics.jitter))
                .max(last_departure);
            last_departure = departure;
            if departure > arrival + Duration::from_micros(100) || toxics.coalesce.is_some() {
                d.delayed.fetch_add(1, Relaxed);
            }
            tokio::time::sleep_until(departure).await;

            let sizes = match toxics.split {
                Some(max) => fate::split_sizes(&mut rng, data.len(), max),
                None => vec![data.len()],
            };
            let mut off = 0;
            for (i, size) in sizes.iter().enumerate() {
                let mut piece = &data[off..off + size];
                off += size;
                if i > 0 && !toxics.split_gap.is_zero() {
                    tokio::time::sleep(toxics.split_gap).await;
                }
                while !piece.is_empty() {
                    let mut take = piece.len();
                    if let Some(s) = toxics.stall_after.filter(|_| !stalled) {
                        take = take.min(s.saturating_sub(forwarded));
                    }
                    if let Some(r) = toxics.reset_after {
                        take = take.min(r.saturating_sub(forwarded));
                    }
                    if take == 0 {
                        // At a boundary with bytes still to send: a reset
                        // boundary returns right after its last write
                        // (below), so this is the stall.
                        stalled = true;
                        d.stalls.fetch_add(1, Relaxed);
                        log::info!(
                            "connection {id} {dir}: stalled after {forwarded} bytes for {:?}",
                            toxics.stall
                        );
                        tokio::time::sleep(toxics.stall).await;
                        continue;
                    }
                    if let Some(bits) = toxics.rate {
                        take = take.min(PACE_PIECE);
                        let start = Instant::now().max(link_free);
                        link_free = start + fate::transmit_time(take, bits);
                        tokio::time::sleep_until(start).await;
                    }
                    // write_all: a short write is normal on a socket; it
                    // loops until the kernel took every byte.
                    if let Err(e) = dst.write_all(&piece[..take]).await {
                        return Err(End::Io(dir, e));
                    }
                    piece = &piece[take..];
                    forwarded += take;
                    space.add_permits(take);
                    stats.sub_buffered(take);
                    queued.bytes.fetch_sub(take, Relaxed);
                    d.sent.fetch_add(1, Relaxed);
                    d.bytes_out.fetch_add(take as u64, Relaxed);
                    if toxics.reset_after == Some(forwarded) {
                        return Err(End::Reset(dir));
                    }
                }
            }
            if eof_after {
                if let Err(e) = dst.shutdown().await {
                    return Err(End::Io(dir, e));
                }
                return Ok(());
            }
        }
    };

    tokio::try_join!(reader, writer).map(|_| ())
}

/// The bytes a pump holds. Whatever is still queued when the pump ends (a
/// reset, an error, or the other direction's error dropping this pump's
/// future mid-await) leaves the `buffered` gauge in `Drop`, which runs in
/// every one of those cases; code after an `.await` would not run when the
/// future is dropped. An atomic only because the reader and writer futures
/// share it by reference (a `Cell` would make the connection's future not
/// `Send`).
struct Queued<'a> {
    bytes: AtomicUsize,
    stats: &'a Stats,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.stats.sub_buffered(self.bytes.load(Relaxed));
    }
}
