//! The echo of one TLS connection after its handshake (`server.rs` does the
//! accept and the handshake): frames in, echoes out, through rustls, with
//! the idle and stall rules, backpressure at `--max-pending`, and the
//! shutdown drain that finds the bytes wherever a TLS connection hides them
//! (our buffer, rustls's plaintext, the kernel's receive queue).

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use common::conn::End;
use common::{Decoder, FrameError, ServerConfig, Shutdown, encode};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_rustls::server::TlsStream;

use super::{Tally, cut_deadline};

/// Bytes asked of one read. A TLS record carries at most 16 KiB of
/// plaintext, and tokio-rustls fills the buffer from as many records as it
/// has decrypted, so this is one record or a few.
const READ_CHUNK: usize = 16 * 1024;

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
pub(super) struct Conn<'a> {
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
    /// Log this connection's one closing line (`Tally::close`).
    pub(super) fn close_tally(&mut self, end: &End) {
        self.tally.close(end);
    }

    pub(super) fn new(
        tls: TlsStream<TcpStream>,
        config: &'a ServerConfig,
        tally: Tally<'a>,
    ) -> Self {
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
    pub(super) async fn serve(&mut self, shutdown: &Shutdown) -> End {
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
