//! The server contract for **blocking** sockets, shared by `tcp-echo` (one
//! client at a time) and both `threaded-server` models (one thread per
//! connection): the echo loop with its idle timeout, bounded echo writes
//! and the stall timeout, and the shutdown drain. The chapters differ in who
//! runs a connection (the accept loop itself, a thread per client, a pool
//! worker); what happens on the connection is the same, so it lives once.
//!
//! Run any blocking server and watch a client that never reads being closed:
//!
//! ```text
//! cargo run -p tcp-echo -- server --stall-timeout 2s            # terminal 1
//! yes | nc -q -1 127.0.0.1 7001 > /dev/null & sleep 1; kill -STOP $!   # terminal 2: stop reading
//! ```
//!
//! What to watch (`RUST_LOG=debug`): the server stops reading that client
//! once `--max-pending` echo bytes are queued, then after `--stall-timeout`
//! without the kernel taking a byte it logs "took none of its echoes" and
//! closes it.
//!
//! **Why the writes are ours, not `write_all`.** A blocking `write()` on a
//! socket whose peer does not read sleeps until the peer's receive window
//! opens, which may be never. `SO_SNDTIMEO` bounds one `write()`: it returns
//! what it managed to send (a short count) or, having sent nothing, fails
//! with `EAGAIN` (`WouldBlock`). [`EchoConn::flush`] sets that timeout to the
//! smallest of: the stall time left, [`TICK`] (to look at the shutdown flag),
//! and the time left before the `--grace` deadline. A short count is
//! progress and restarts the stall clock; a timeout is not. So a client can
//! neither hold the connection (stall) nor the shutdown (grace) by not
//! reading. `FramedStream::flush` would drop the unsent rest on a timeout,
//! so echoes are queued in our own buffer instead.
//!
//! **Shutdown, four steps** ([`EchoConn::drain`]): echo every complete frame
//! already received, from our buffer and the kernel's receive queue
//! (non-blocking reads until `WouldBlock`, flushing whenever `--max-pending`
//! is reached, so the queue stays bounded even if the client keeps sending);
//! send FIN (`shutdown(SHUT_WR)`); read and discard until the peer's FIN, so
//! that `close()` with unread bytes never becomes a reset that destroys
//! echoes still in flight; at the deadline, cut.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::conn::End;
use crate::framing::{ConnError, FramedStream, encode, is_timeout};
use crate::stats::Stats;
use crate::{ServerConfig, Shutdown};

/// The longest any blocking call here sleeps before looking at the shutdown
/// flag again. A blocked thread cannot be told to stop from outside; it must
/// come up for air.
pub const TICK: Duration = Duration::from_millis(100);

/// Frames and payload bytes, for a connection's closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub frames: u64,
    pub bytes: u64,
}

/// `Err` of the steps below: the connection is over, and this is why (an
/// error, a stall, a cut). Not always a failure, hence not `ConnError`.
type Step<T = ()> = Result<T, End>;

/// One connection served over a blocking `TcpStream`: the framed reader,
/// the echoes owed, and the rules for writing them.
#[derive(Debug)]
pub struct EchoConn<'a> {
    stream: &'a TcpStream,
    /// Who is at the other end, for the per-frame `debug` lines.
    peer: Option<SocketAddr>,
    /// Reads only: `&TcpStream` is `Read`, and the stream stays usable for
    /// options and writes.
    framed: FramedStream<&'a TcpStream>,
    /// Encoded echoes not yet accepted by the kernel.
    out: BytesMut,
    /// Echoes in `out`, counted as echoed once `out` is empty.
    owed: Tally,
    echoed: Tally,
    config: &'a ServerConfig,
    shutdown: &'a Shutdown,
    stats: &'a Stats,
    /// The `SO_SNDTIMEO` last set, to skip a `setsockopt` that changes nothing.
    write_timeout: Option<Duration>,
}

impl<'a> EchoConn<'a> {
    pub fn new(
        stream: &'a TcpStream,
        config: &'a ServerConfig,
        shutdown: &'a Shutdown,
        stats: &'a Stats,
    ) -> io::Result<Self> {
        // A listener may hand out sockets in whatever mode it is in.
        stream.set_nonblocking(false)?;
        // Echoes are small and latency matters: without TCP_NODELAY a small
        // write may wait up to 40 ms for the client's delayed ACK (Nagle).
        stream.set_nodelay(true)?;
        Ok(EchoConn {
            stream,
            peer: stream.peer_addr().ok(),
            framed: FramedStream::new(stream, config.framing, config.max_frame),
            out: BytesMut::new(),
            owed: Tally::default(),
            echoed: Tally::default(),
            config,
            shutdown,
            stats,
            write_timeout: None,
        })
    }

    /// Serve the connection to its end: the blocking echo loop. Returns why
    /// it ended, for [`crate::conn::log_close`].
    ///
    /// `read()` blocks, and a blocked `read()` does not notice Ctrl-C or the
    /// idle clock; so the socket gets `SO_RCVTIMEO` = `poll` (shorter if
    /// `--idle-timeout` is), `read()` fails with `EAGAIN` (`WouldBlock`)
    /// each time it expires, and the loop looks around. A timeout in the
    /// middle of a frame loses nothing: the framed reader keeps the partial
    /// frame and the next call carries on.
    pub fn serve(&mut self, poll: Duration) -> End {
        match self.echo_loop(poll) {
            Ok(end) | Err(end) => end,
        }
    }

    // ANCHOR: echo-loop
    fn echo_loop(&mut self, poll: Duration) -> Step<End> {
        let idle_timeout = self.config.idle_timeout;
        // A zero timeout would mean "block for ever" to the kernel; std
        // refuses it, hence the 1 ms floor.
        let poll = idle_timeout
            .map_or(poll, |idle| idle.min(poll))
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(poll))?;
        let mut last_input = Instant::now();
        let mut received = 0;
        loop {
            if self.shutdown.is_triggered() {
                return Ok(self.drain());
            }
            match self.framed.read_frame() {
                Ok(Some(frame)) => {
                    last_input = Instant::now();
                    self.echo(&frame)?;
                    // Frames the client pipelined are already in our
                    // buffer: echo them all, then send the lot at once.
                    self.echo_buffered()?;
                }
                // read() returned 0 between frames: the client shut down its
                // write side (a half-close) or closed. Everything it sent
                // has been echoed, so we close too.
                Ok(None) => return Ok(End::PeerClosed),
                // SO_RCVTIMEO expired: nothing arrived, or only part of a frame.
                Err(e) if e.is_timeout() => {
                    if self.framed.bytes_read() != received {
                        // Bytes of an unfinished frame: slow, not idle.
                        received = self.framed.bytes_read();
                        last_input = Instant::now();
                    }
                    if let Some(idle) = idle_timeout
                        && last_input.elapsed() >= idle
                    {
                        return Ok(End::Idle(idle));
                    }
                }
                Err(e) => return Err(End::from(e)),
            }
        }
    }
    // ANCHOR_END: echo-loop

    /// What this connection has echoed so far (frames whose bytes the
    /// kernel accepted in full).
    pub fn echoed(&self) -> Tally {
        self.echoed
    }

    /// Echo one frame: `--work`, then queue it. At `--max-pending` queued
    /// bytes, flush before taking anything more from the client: that is
    /// the backpressure, a client that does not read stops being read.
    fn echo(&mut self, frame: &[u8]) -> Step {
        self.queue(frame)?;
        if self.out.len() >= self.config.max_pending {
            self.flush()?;
        }
        Ok(())
    }

    /// `--work`, then encode the echo into our buffer (no syscall).
    fn queue(&mut self, frame: &[u8]) -> Step {
        if self.config.work > 0 {
            // On this thread: a blocking server has nothing else to do.
            crate::work::work(frame, self.config.work);
        }
        if let Some(peer) = self.peer {
            log::debug!("{peer}: echo {} bytes", frame.len());
        }
        encode(self.config.framing, frame, &mut self.out).map_err(End::from)?;
        self.owed.frames += 1;
        self.owed.bytes += frame.len() as u64;
        Ok(())
    }

    /// Echo every frame already in our buffer (no syscall), then write them
    /// all: a pipelined batch costs one `write()`. A bad frame ends the
    /// connection after what came before it was flushed.
    fn echo_buffered(&mut self) -> Step {
        let bad = loop {
            match self.framed.try_buffered_frame() {
                Ok(Some(frame)) => self.echo(&frame)?,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        self.flush()?;
        match bad {
            Some(e) => Err(End::from(e)),
            None => Ok(()),
        }
    }

    /// Write every queued echo. Ends the connection with `Stalled` when the
    /// kernel takes no byte for `--stall-timeout`, and with `Cut` at the
    /// shutdown deadline (see the module docs).
    // ANCHOR: bounded-flush
    fn flush(&mut self) -> Step {
        let mut progress = Instant::now();
        while !self.out.is_empty() {
            let now = Instant::now();
            let deadline = self.shutdown.deadline(self.config.grace);
            if deadline.is_some_and(|d| now >= d) {
                return Err(End::Cut);
            }
            let stall = self.config.stall_timeout;
            let stall_left = stall.saturating_sub(now - progress);
            if stall_left.is_zero() {
                return Err(End::Stalled(stall));
            }
            let mut wait = stall_left.min(TICK);
            if let Some(d) = deadline {
                wait = wait.min(d - now);
            }
            self.set_write_timeout(wait)?;
            match self.stream.write(&self.out) {
                Ok(0) => return Err(End::from(io::Error::from(io::ErrorKind::WriteZero))),
                Ok(n) => {
                    // Some bytes went: progress, whatever the count.
                    self.out.advance(n);
                    progress = Instant::now();
                }
                // SO_SNDTIMEO expired with nothing sent (a blocked write is
                // not activity), or a signal: look at the clocks again.
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::from(e)),
            }
        }
        // Every queued echo is in the kernel's hands: count them.
        let Tally { frames, bytes } = std::mem::take(&mut self.owed);
        self.stats.frames.fetch_add(frames, Relaxed);
        self.stats.bytes.fetch_add(bytes, Relaxed);
        self.echoed.frames += frames;
        self.echoed.bytes += bytes;
        Ok(())
    }
    // ANCHOR_END: bounded-flush

    fn set_write_timeout(&mut self, wait: Duration) -> io::Result<()> {
        // Zero would mean "block for ever" to the kernel; std refuses it.
        let wait = wait.max(Duration::from_millis(1));
        if self.write_timeout != Some(wait) {
            self.stream.set_write_timeout(Some(wait))?;
            self.write_timeout = Some(wait);
        }
        Ok(())
    }

    /// The graceful end of a connection once shutdown has been triggered;
    /// returns how it ended. Never blocks past the `--grace` deadline.
    fn drain(&mut self) -> End {
        match self.drain_steps() {
            Ok(end) | Err(end) => end,
        }
    }

    // ANCHOR: drain
    fn drain_steps(&mut self) -> Step<End> {
        let deadline = self
            .shutdown
            .deadline(self.config.grace)
            .unwrap_or_else(|| Instant::now() + self.config.grace);
        // Step 2: every complete frame already received, from our buffer and
        // the kernel's receive queue, without waiting for more.
        loop {
            let (more, bad) = self.read_received()?;
            self.flush()?;
            if let Some(e) = bad {
                return Err(End::from(e));
            }
            if !more {
                break;
            }
        }
        let unfinished = self.framed.pending();
        if self.framed.is_eof() {
            // The client had closed its side too: a clean end on both sides.
            return Ok(End::PeerClosed);
        }
        // Step 3: FIN, then read and discard until the peer's FIN, so our
        // close() does not reset the connection under echoes in flight.
        self.stream.shutdown(Direction::Write)?;
        let mut scratch = [0u8; 4096];
        let mut discarded = 0u64;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!("discarded {discarded} bytes after our FIN");
                return Err(End::Cut);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.stream.read(&mut scratch) {
                Ok(0) => {
                    log::debug!("peer's FIN after {discarded} discarded bytes");
                    return Ok(End::Shutdown { unfinished });
                }
                Ok(n) => discarded += n as u64,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::from(e)),
            }
        }
    }
    // ANCHOR_END: drain

    /// Non-blocking reads until `WouldBlock`, end of stream, or
    /// `--max-pending` queued. Returns whether more may be waiting (the
    /// queue filled up first) and a protocol error met, if any.
    fn read_received(&mut self) -> Step<(bool, Option<ConnError>)> {
        // Non-blocking for the reads only: read() hands over what the kernel
        // holds, then fails with WouldBlock instead of waiting for the client.
        self.stream.set_nonblocking(true)?;
        let mut result = (false, None);
        while self.out.len() < self.config.max_pending {
            match self.framed.read_frame() {
                Ok(Some(frame)) => self.queue(&frame)?,
                Ok(None) => break,
                Err(e) if e.is_timeout() => break,
                Err(e) => {
                    result.1 = Some(e);
                    break;
                }
            }
            result.0 = self.out.len() >= self.config.max_pending;
        }
        // Back to blocking: flush() bounds each write with SO_SNDTIMEO.
        self.stream.set_nonblocking(false)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (s, c)
    }

    /// At shutdown every complete frame already received comes back, then
    /// FIN; the client's FIN ends the drain cleanly, with the unfinished
    /// frame reported.
    #[test]
    fn drain_echoes_what_was_received_then_fin() {
        let (server, mut client) = pair();
        let config = ServerConfig::default();
        let (shutdown, stats) = (Shutdown::new(), Stats::new());
        client.write_all(b"one\ntwo\nhal").unwrap();
        let mut conn = EchoConn::new(&server, &config, &shutdown, &stats).unwrap();
        // Wait (bounded) until the bytes are in the server's receive queue.
        let mut peek = [0u8; 11];
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while server.peek(&mut peek).unwrap() < 11 {}
        shutdown.trigger();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            drop(client); // our FIN
            got
        });
        let end = conn.drain();
        assert!(matches!(end, End::Shutdown { unfinished: 3 }), "{end:?}");
        assert_eq!(t.join().unwrap(), b"one\ntwo\n");
        assert_eq!(
            conn.echoed(),
            Tally {
                frames: 2,
                bytes: 6
            }
        );
    }

    /// A client that never reads nor closes is cut at the deadline.
    #[test]
    fn a_client_that_never_reads_is_cut_at_the_deadline() {
        let (server, client) = pair();
        let config = ServerConfig {
            grace: Duration::from_millis(200),
            max_pending: 64 << 10,
            ..ServerConfig::default()
        };
        let (shutdown, stats) = (Shutdown::new(), Stats::new());
        let mut conn = EchoConn::new(&server, &config, &shutdown, &stats).unwrap();
        shutdown.trigger();
        let big = vec![b'x'; 4 << 20];
        // Far more than both socket buffers hold: flush cannot finish.
        for chunk in big.chunks(1 << 16) {
            if conn.echo(&chunk[..chunk.len() - 1]).is_err() {
                break;
            }
        }
        let end = match conn.flush() {
            Err(end) => end,
            Ok(()) => conn.drain(),
        };
        assert!(matches!(end, End::Cut), "{end:?}");
        drop(client);
    }

    /// Not reading for `--stall-timeout` while echoes wait: `Stalled`.
    #[test]
    fn a_client_that_stops_reading_stalls() {
        let (server, _client) = pair();
        let config = ServerConfig {
            stall_timeout: Duration::from_millis(100),
            ..ServerConfig::default()
        };
        let (shutdown, stats) = (Shutdown::new(), Stats::new());
        let mut conn = EchoConn::new(&server, &config, &shutdown, &stats).unwrap();
        let line = vec![b'y'; 1 << 16];
        let end = loop {
            if let Err(end) = conn.echo(&line) {
                break end;
            }
            if let Err(end) = conn.flush() {
                break end;
            }
        };
        assert!(matches!(end, End::Stalled(_)), "{end:?}");
    }
}
