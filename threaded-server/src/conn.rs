//! The per-connection echo loop both thread models run, one connection per
//! thread at a time: read a frame, (optionally) burn `--work`, echo it back.
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
//! - **Blocking reads with a short timeout.** Each connection's socket gets
//!   `SO_RCVTIMEO` = [`TICK`], so `read()` returns `EAGAIN` (Rust:
//!   `WouldBlock`) every tick even when the client is silent. That is how a
//!   thread blocked on one client still notices Ctrl-C, and how it measures
//!   idle time itself. A timeout in the middle of a frame loses nothing:
//!   [`FramedStream`] keeps the partial frame and the next call carries on.
//! - **Idle timeout.** "Idle" means no byte arrived for `--idle-timeout`.
//!   In a thread pool a silent client occupies a whole worker, so this limit
//!   is what keeps N silent clients from starving everybody else for ever.
//! - **Pipelining.** A client may send many frames before reading any echo.
//!   We echo every frame already buffered and send them in one `write()`.
//! - **Shutdown.** Once shutdown is triggered the loop stops waiting for new
//!   bytes, but first takes everything the kernel has already received for
//!   this socket (non-blocking reads until `WouldBlock`), echoes every
//!   complete frame, then closes. Nothing the server received is lost, and
//!   closing with an empty receive queue sends a clean FIN instead of a RST.
//! - **Errors end this connection only**, with the peer address in the log.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::framing::FrameError;
use common::net::is_disconnect;
use common::{ConnError, FramedStream, Shutdown, Stats};
use log::{debug, info, trace, warn};

use crate::{Config, TICK};

/// `SO_SNDTIMEO` when `--idle-timeout` is off. A client that stops reading
/// its echoes fills our send buffer and blocks our `write()`; without a limit
/// that thread (and a graceful shutdown waiting for it) would hang for ever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one connection cost us, for the pool's fairness report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub frames: u64,
    pub bytes: u64,
}

/// Why a connection ended without an error.
#[derive(Debug)]
enum End {
    /// `read()` returned 0 between frames: the client closed (or half-closed).
    PeerClosed,
    /// No byte arrived for the idle timeout.
    Idle(Duration),
    /// The server is shutting down; `unfinished` bytes of an incomplete
    /// frame were dropped (no echo was owed for them).
    Shutdown { unfinished: usize },
}

/// Serve one connection to the end and log how it ended. Never returns an
/// error: whatever goes wrong ends this connection only.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Stats,
) -> Served {
    let current = thread::current();
    let who = current.name().unwrap_or("unnamed thread");
    info!("{peer}: connected, served by {who}");
    let mut conn = Conn {
        stream: &stream,
        // `&TcpStream` implements Read + Write, so we keep `stream` to flip
        // it to non-blocking at shutdown.
        framed: FramedStream::new(&stream, config.framing, config.max_frame),
        peer,
        config,
        stats,
        served: Served::default(),
        queued: Served::default(),
    };
    let outcome = conn.echo_loop(shutdown);
    let Served { frames, bytes } = conn.served;
    let after = format!("after {frames} frames ({bytes} bytes) [{who}]");
    match outcome {
        Ok(End::PeerClosed) => info!("{peer}: closed by peer {after}"),
        Ok(End::Idle(idle)) => {
            Stats::inc(&stats.errors);
            info!("{peer}: idle for {idle:?} (--idle-timeout), closing {after}");
        }
        Ok(End::Shutdown { unfinished: 0 }) => info!("{peer}: closed for shutdown {after}"),
        Ok(End::Shutdown { unfinished }) => info!(
            "{peer}: closed for shutdown {after}, dropping {unfinished} bytes of an unfinished frame"
        ),
        Err(ConnError::Frame(e @ FrameError::Truncated { .. })) => {
            Stats::inc(&stats.errors);
            warn!("{peer}: {e} {after}");
        }
        Err(ConnError::Frame(e)) => {
            Stats::inc(&stats.errors);
            warn!("{peer}: {e}; closing {after}");
        }
        Err(ConnError::Io(e)) if is_disconnect(&e) => {
            Stats::inc(&stats.errors);
            info!("{peer}: disconnected ({e}) {after}");
        }
        Err(ConnError::Io(e)) if common::framing::is_timeout(&e) => {
            // Only writes can time out here: reads' timeouts are our ticks.
            Stats::inc(&stats.errors);
            warn!("{peer}: write timed out, client not reading its echoes; closing {after}");
        }
        Err(ConnError::Io(e)) => {
            Stats::inc(&stats.errors);
            warn!("{peer}: {e}; closing {after}");
        }
    }
    // Dropping `stream` here closes the socket (`close(2)`).
    conn.served
}

/// One connection being served: the socket, its buffers, and tallies.
struct Conn<'a> {
    stream: &'a TcpStream,
    framed: FramedStream<&'a TcpStream>,
    peer: SocketAddr,
    config: &'a Config,
    stats: &'a Stats,
    /// Echoes written to the socket.
    served: Served,
    /// Echoes queued in our buffer, not yet written (counted once they are).
    queued: Served,
}

impl Conn<'_> {
    fn echo_loop(&mut self, shutdown: &Shutdown) -> Result<End, ConnError> {
        // Wake at least every TICK, and often enough to honour a short idle
        // timeout. (A zero timeout would mean "block for ever" to the
        // kernel; std refuses it, hence the 1 ms floor.)
        let idle_timeout = self.config.idle_timeout;
        let tick = idle_timeout
            .map_or(TICK, |idle| idle.min(TICK))
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(tick))?;
        self.stream
            .set_write_timeout(Some(idle_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT)))?;
        // Echoes are small and latency matters: turn Nagle's algorithm off,
        // or a small write may wait up to 40 ms for the client's delayed ACK.
        self.stream.set_nodelay(true)?;

        let mut last_input = Instant::now();
        let mut pending_seen = 0;
        loop {
            if shutdown.is_triggered() {
                return self.drain_for_shutdown();
            }
            match self.framed.read_frame() {
                Ok(Some(frame)) => {
                    last_input = Instant::now();
                    self.echo(&frame)?;
                    // Frames the client pipelined are already in our buffer:
                    // echo them all, then send the lot with one write().
                    loop {
                        match self.framed.try_buffered_frame() {
                            Ok(Some(frame)) => self.echo(&frame)?,
                            Ok(None) => break,
                            Err(e) => {
                                // Echo what came before the bad frame, then close.
                                self.flush()?;
                                return Err(e.into());
                            }
                        }
                    }
                    self.flush()?;
                    pending_seen = self.framed.pending();
                }
                // read() returned 0 with no partial frame buffered.
                Ok(None) => return Ok(End::PeerClosed),
                // SO_RCVTIMEO expired: nothing arrived this tick, or only
                // part of a frame (which FramedStream keeps). Look around.
                Err(e) if e.is_timeout() => {
                    let pending = self.framed.pending();
                    trace!("{}: read() timed out ({pending} bytes pending)", self.peer);
                    if pending != pending_seen {
                        // Part of a frame arrived: the client is slow, not idle.
                        pending_seen = pending;
                        last_input = Instant::now();
                    }
                    if let Some(idle) = idle_timeout
                        && last_input.elapsed() >= idle
                    {
                        return Ok(End::Idle(idle));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Echo one frame: the optional CPU work, then queue it for the next flush.
    fn echo(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        // TESTING ONLY: see `Config::inject_panic_on`. Off (`None`) unless a
        // test or the hidden `--inject-panic-on` flag turns it on.
        if let Some(magic) = &self.config.inject_panic_on
            && frame == magic.as_slice()
        {
            panic!(
                "injected panic while serving {} (testing hook --inject-panic-on)",
                self.peer
            );
        }
        if self.config.work > 0 {
            // On *this* thread: with N busy workers, at most N frames are
            // being worked on at once, however many clients are waiting.
            common::work::work(frame, self.config.work);
        }
        debug!("{}: echo {} bytes", self.peer, frame.len());
        self.framed.queue_frame(frame)?;
        self.queued.frames += 1;
        self.queued.bytes += frame.len() as u64;
        Ok(())
    }

    /// Write every queued echo (`write_all`: a short write is continued, not
    /// lost), then count them as echoed.
    fn flush(&mut self) -> io::Result<()> {
        self.framed.flush()?;
        let Served { frames, bytes } = std::mem::take(&mut self.queued);
        self.stats.frames.fetch_add(frames, Relaxed);
        self.stats.bytes.fetch_add(bytes, Relaxed);
        self.served.frames += frames;
        self.served.bytes += bytes;
        Ok(())
    }

    /// Shutdown: echo every complete frame that has already reached this
    /// socket, without waiting for more, then let the caller close it.
    fn drain_for_shutdown(&mut self) -> Result<End, ConnError> {
        // Non-blocking: read() hands over what the kernel holds, then fails
        // with WouldBlock instead of waiting for the client to send more.
        self.stream.set_nonblocking(true)?;
        let mut failed = None;
        loop {
            match self.framed.read_frame() {
                Ok(Some(frame)) => self.echo(&frame)?,
                // End of stream, or the receive queue is empty: done.
                Ok(None) => break,
                Err(e) if e.is_timeout() => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Back to blocking (with the write timeout) so the echoes are written
        // in full even if the client's receive window is momentarily full.
        self.stream.set_nonblocking(false)?;
        self.flush()?;
        match failed {
            Some(e) => Err(e),
            // The client had closed its side too: nothing was cut short.
            None if self.framed.is_eof() => Ok(End::PeerClosed),
            None => Ok(End::Shutdown {
                unfinished: self.framed.pending(),
            }),
        }
    }
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

    /// A slot, or `None` when `max` connections are already held.
    pub fn try_acquire(&self) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                active: Arc::clone(&self.active),
            })
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

/// Helper for the models' logs: is this `io::Error` worth a warning?
pub fn describe_spawn_error(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::WouldBlock {
        // pthread_create's EAGAIN: out of threads (ulimit -u, kernel.threads-max)
        // or of memory for another stack.
        "out of threads or stack memory"
    } else {
        "thread creation failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_limit_counts_and_releases() {
        let limit = ConnLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none(), "third slot over max 2");
        assert_eq!(limit.active(), 2);
        drop(a);
        let c = limit.try_acquire().unwrap();
        assert_eq!(limit.active(), 2);
        drop((b, c));
        assert_eq!(limit.active(), 0);
    }

    #[test]
    fn slot_is_released_by_a_panic() {
        let limit = ConnLimit::new(1);
        let slot = limit.try_acquire().unwrap();
        let r = std::panic::catch_unwind(move || {
            let _slot = slot;
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(limit.active(), 0);
        assert!(limit.try_acquire().is_some());
    }
}
