//! The server contract for **blocking** sockets, shared by `tcp-echo` (one
//! client at a time) and both `threaded-server` models (one thread per
//! connection): the blocking loop that drives a connection's
//! [`Echo`](crate::echo::Echo), the same state machine the event loop and
//! the io_uring loop drive. The chapters differ in who runs a connection
//! (the accept loop itself, a thread per client, a pool worker); what
//! happens on the connection is the same, so it lives once; what this file
//! adds is how a *blocking* thread waits without waiting for ever.
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
//! so echoes wait in the [`Echo`](crate::echo::Echo)'s queue instead.
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
use std::time::{Duration, Instant};

use crate::conn::End;
use crate::echo::{Ctx, Echo, Finish, Phase, Spare};
use crate::framing::{ConnError, READ_CHUNK, is_timeout};
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

/// Who is at the other end, for the per-frame `debug` lines.
#[derive(Debug, Clone, Copy)]
struct PeerName(Option<SocketAddr>);

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("(unknown peer)"),
        }
    }
}

/// One connection served over a blocking `TcpStream`: its [`Echo`], and
/// the blocking reads and bounded writes that drive it.
#[derive(Debug)]
pub struct EchoConn<'a> {
    stream: &'a TcpStream,
    peer: PeerName,
    echo: Echo,
    /// Spare echo buffers, this connection's own (one thread, one
    /// connection: nobody to share them with).
    spare: Spare,
    /// Bytes asked of the next `read()`: 4 KiB, doubling up to
    /// [`READ_CHUNK`] while reads fill what they asked (the room is zeroed
    /// before each read, so a small read size keeps small echoes cheap).
    chunk: usize,
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
            peer: PeerName(stream.peer_addr().ok()),
            echo: Echo::new(config, Instant::now()),
            spare: Spare::default(),
            chunk: 4096,
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
    /// middle of a frame loses nothing: the echo keeps the partial frame and
    /// the next read carries on.
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
        loop {
            if self.shutdown.is_triggered() {
                return Ok(self.drain());
            }
            match self.read_some() {
                // The client shut down its write side (a half-close) or
                // closed: the last frames, then the end (a truncated last
                // frame is reported after the echoes before it).
                Ok(0) => {
                    self.received_eof()?;
                    self.flush()?;
                    if let Finish::FinAndClose(end) | Finish::Close(end) = self.echo.finish() {
                        return Ok(end);
                    }
                    return Ok(End::PeerClosed);
                }
                // Every whole frame read is echoed, all in one write; a bad
                // frame ends the connection after those before it went out.
                Ok(n) => {
                    let decoded = self.decode(n);
                    self.flush()?;
                    decoded?;
                }
                // SO_RCVTIMEO expired: nothing arrived. Bytes of an
                // unfinished frame restarted the idle clock when they came.
                Err(e) if is_timeout(&e) => {
                    let stall = self.config.stall_timeout;
                    if let Some(end) = self.echo.timed_out(Instant::now(), idle_timeout, stall) {
                        return Ok(end);
                    }
                }
                Err(e) => return Err(End::from(e)),
            }
        }
    }
    // ANCHOR_END: echo-loop

    /// What this connection has echoed so far (frames queued for the
    /// kernel; [`EchoConn::serve`] returns only once they were written or
    /// the connection ended).
    pub fn echoed(&self) -> Tally {
        let (frames, bytes) = self.echo.tally();
        Tally { frames, bytes }
    }

    /// One `read()` straight into the echo's input buffer (no copy).
    fn read_some(&mut self) -> io::Result<usize> {
        let buf = self.echo.input_buf();
        let start = buf.len();
        buf.resize(start + self.chunk, 0);
        let result = loop {
            match self.stream.read(&mut buf[start..]) {
                // EINTR: a signal arrived during the syscall; just retry.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        buf.truncate(start + *result.as_ref().unwrap_or(&0));
        let n = result?;
        if n == self.chunk {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        Ok(n)
    }

    fn cx(&mut self) -> (&mut Echo, Ctx<'_>) {
        let cx = Ctx {
            now: Instant::now(),
            config: self.config,
            stats: self.stats,
            spare: &mut self.spare,
            peer: &self.peer,
        };
        (&mut self.echo, cx)
    }

    /// `n` bytes were read: echo every whole frame (`--work` runs here, on
    /// this thread: a blocking server has nothing else to do).
    fn decode(&mut self, n: usize) -> Step {
        let (echo, mut cx) = self.cx();
        echo.decode_input(n, &mut cx).map_err(End::from)
    }

    fn received_eof(&mut self) -> Step {
        let (echo, mut cx) = self.cx();
        echo.received_eof(&mut cx).map_err(End::from)
    }

    /// Write every queued echo. Ends the connection with `Stalled` when the
    /// kernel takes no byte for `--stall-timeout`, and with `Cut` at the
    /// shutdown deadline (see the module docs).
    // ANCHOR: bounded-flush
    fn flush(&mut self) -> Step {
        let stall = self.config.stall_timeout;
        while !self.echo.to_send().is_empty() {
            let now = Instant::now();
            let deadline = self.shutdown.deadline(self.config.grace);
            if deadline.is_some_and(|d| now >= d) {
                return Err(End::Cut);
            }
            // The echo's stall clock: restarted by every byte the kernel
            // takes, not by a write that waits.
            if let Some(end) = self.echo.timed_out(now, None, stall) {
                return Err(end);
            }
            let stall_left = self
                .echo
                .stall_deadline(stall)
                .map_or(stall, |d| d.saturating_duration_since(now));
            let mut wait = stall_left.min(TICK);
            if let Some(d) = deadline {
                wait = wait.min(d - now);
            }
            self.set_write_timeout(wait)?;
            match self.stream.write(self.echo.to_send()) {
                Ok(0) => return Err(End::from(io::Error::from(io::ErrorKind::WriteZero))),
                // Some bytes went, perhaps not all (a short write): progress.
                Ok(n) => self.echo.sent(n, Instant::now(), &mut self.spare),
                // SO_SNDTIMEO expired with nothing sent (a blocked write is
                // not activity), or a signal: look at the clocks again.
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::from(e)),
            }
        }
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
        self.echo.begin_drain(None);
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
        let unfinished = match self.echo.finish() {
            // The client had closed its side too: a clean end on both sides.
            Finish::FinAndClose(end) | Finish::Close(end) => return Ok(end),
            Finish::Fin | Finish::No => match self.echo.phase() {
                Phase::FinSent { unfinished } => unfinished,
                _ => self.echo.unfinished(),
            },
        };
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

    /// Non-blocking reads until `WouldBlock` (the echo's input is then
    /// done), end of stream, or `--max-pending` queued. Returns whether more
    /// may be waiting (the queue filled up first) and a protocol error met,
    /// if any.
    fn read_received(&mut self) -> Step<(bool, Option<ConnError>)> {
        // Non-blocking for the reads only: read() hands over what the kernel
        // holds, then fails with WouldBlock instead of waiting for the client.
        self.stream.set_nonblocking(true)?;
        let mut bad = None;
        while self.echo.wants_input(self.config.max_pending) {
            let step = match self.read_some() {
                Ok(0) => self.received_eof(),
                Ok(n) => self.decode(n),
                Err(e) if is_timeout(&e) => {
                    self.echo.input_exhausted();
                    break;
                }
                Err(e) => return Err(End::from(e)),
            };
            if let Err(End::Error(e)) = step {
                bad = Some(e);
                break;
            }
        }
        let more = matches!(self.echo.phase(), Phase::Draining { .. }) && bad.is_none();
        // Back to blocking: flush() bounds each write with SO_SNDTIMEO.
        self.stream.set_nonblocking(false)?;
        Ok((more, bad))
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
        let mut line = vec![b'x'; 1 << 16];
        *line.last_mut().unwrap() = b'\n';
        // Far more than both socket buffers hold: flush cannot finish.
        for _ in 0..64 {
            conn.echo.input_buf().extend_from_slice(&line);
            if conn.decode(line.len()).is_err() {
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
        let mut line = vec![b'y'; 1 << 16];
        *line.last_mut().unwrap() = b'\n';
        let end = loop {
            conn.echo.input_buf().extend_from_slice(&line);
            if let Err(end) = conn.decode(line.len()) {
                break end;
            }
            if let Err(end) = conn.flush() {
                break end;
            }
        };
        assert!(matches!(end, End::Stalled(_)), "{end:?}");
    }
}
