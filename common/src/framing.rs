//! The one wire protocol every server speaks, as pure functions over buffers.
//!
//! TCP gives you a byte stream, not messages: one `send()` of 10 bytes may
//! arrive as two `recv()`s of 3 and 7, and two `send()`s may arrive as one
//! `recv()`. *Framing* is how both ends agree where one message stops. This
//! module offers the three framings of `DESIGN.md`:
//!
//! | framing  | on the wire                            | good for                        |
//! |----------|----------------------------------------|---------------------------------|
//! | `line`   | bytes up to and including `\n`         | typing at `nc`, text protocols  |
//! | `length` | 4-byte big-endian length, then payload | binary data, any byte allowed   |
//! | `raw`    | no framing: whatever arrived           | the course's asyncio example    |
//!
//! Nothing here touches a socket ("sans-I/O", as in mini-redis's `frame.rs`):
//! [`Decoder::decode`] looks at a [`BytesMut`] that some I/O code filled and
//! either cuts one complete frame off its front, says "need more bytes", or
//! names what is wrong. [`encode`] appends a frame to an output buffer. The
//! blocking, mio and tokio servers, the fuzz target and the property tests all
//! call exactly this code. The thin adapters that do own a socket are
//! [`FramedStream`] (blocking `Read + Write`) and, with the `tokio` feature,
//! [`tokio_io::AsyncFramed`].
//!
//! The size limit is checked *before* anything is allocated. A client that
//! sends the length prefix `FF FF FF FF` claims a 4 GiB frame; we reject the
//! claim from the four header bytes alone, and a line with no `\n` is
//! rejected as soon as it is longer than the limit, so a client can never make
//! the server hold more than `max_frame` (plus one read's worth) of its bytes.

use std::fmt;
use std::io::{self, Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How frames are delimited on the wire. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Framing {
    /// Bytes up to `\n` (the `\n` is not part of the payload). Friendly to `nc`.
    #[default]
    Line,
    /// A 4-byte big-endian length, then that many bytes.
    Length,
    /// No framing: bytes are echoed as they arrive.
    Raw,
}

impl Framing {
    /// All framings, for tests and for `loadgen` matrices.
    pub const ALL: [Framing; 3] = [Framing::Line, Framing::Length, Framing::Raw];

    /// The name used on the command line (`--framing line`).
    pub fn name(self) -> &'static str {
        match self {
            Framing::Line => "line",
            Framing::Length => "length",
            Framing::Raw => "raw",
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Size of the length prefix in `length` framing.
pub const LENGTH_PREFIX: usize = 4;

/// The default `--max-frame`: 1 MiB, large enough for the tests' 1 MiB frames.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What can be wrong with the bytes a peer sent. A caller can match on it;
/// every variant's message names the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length prefix announced more than the limit. Nothing was allocated.
    #[error("frame of {len} bytes over the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    /// More than `max` bytes arrived and none of the first `max + 1` is a
    /// `\n`: the line is over the limit whatever comes next (a newline later
    /// in the buffer does not make it shorter).
    #[error("line longer than the limit of {max} bytes (no newline in its first {} bytes; {seen} bytes buffered)", max + 1)]
    LineTooLong { seen: usize, max: usize },
    /// The peer closed its side in the middle of a frame.
    #[error("connection closed with {pending} bytes of an unfinished frame")]
    Truncated { pending: usize },
    /// `encode` was asked to put a `\n` inside a `line` frame, which would
    /// split it in two on the other side.
    #[error("a line frame cannot contain a newline (found at byte {at})")]
    NewlineInLine { at: usize },
}

/// Cuts frames off the front of a buffer. Holds only the framing, the limit
/// and how far a partial line has already been searched (so a long line that
/// arrives one byte at a time costs O(n), not O(n²)).
#[derive(Debug, Clone)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    /// `line` framing: bytes at the front of the buffer already known to
    /// contain no `\n`.
    scanned: usize,
}

impl Decoder {
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        Decoder {
            framing,
            max_frame,
            scanned: 0,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    // ANCHOR: decode
    /// Try to cut one complete frame off the front of `buf`.
    ///
    /// - `Ok(Some(payload))`: one frame; its bytes (and its delimiter) are
    ///   removed from `buf`. Call again: more frames may be buffered.
    /// - `Ok(None)`: not enough bytes yet; read more and call again.
    /// - `Err(_)`: the peer broke the protocol; close the connection.
    ///
    /// In `raw` framing every non-empty buffer is one frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.framing {
            Framing::Raw => {
                if buf.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(buf.split().freeze()))
                }
            }
            Framing::Length => {
                if buf.len() < LENGTH_PREFIX {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                // Check the claim before reserving anything for it.
                if len as u64 > self.max_frame as u64 {
                    return Err(FrameError::TooLarge {
                        len: len.into(),
                        max: self.max_frame,
                    });
                }
                let len = len as usize;
                if buf.len() < LENGTH_PREFIX + len {
                    // The claim is within the limit, so it is now safe to make
                    // room for the whole frame at once (one allocation instead
                    // of several doublings while it trickles in).
                    buf.reserve(LENGTH_PREFIX + len - buf.len());
                    return Ok(None);
                }
                buf.advance(LENGTH_PREFIX);
                Ok(Some(buf.split_to(len).freeze()))
            }
            Framing::Line => {
                // Only look at bytes not searched before, and never further
                // than the longest legal line (payload + `\n`).
                let window = buf.len().min(self.max_frame.saturating_add(1));
                let start = self.scanned.min(window);
                match buf[start..window].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let nl = start + i;
                        self.scanned = 0;
                        let mut line = buf.split_to(nl + 1);
                        line.truncate(nl);
                        Ok(Some(line.freeze()))
                    }
                    None if buf.len() > self.max_frame => Err(FrameError::LineTooLong {
                        seen: buf.len(),
                        max: self.max_frame,
                    }),
                    None => {
                        self.scanned = window;
                        Ok(None)
                    }
                }
            }
        }
    }
    // ANCHOR_END: decode

    /// Call when the peer has closed its write side (`read` returned 0):
    /// returns the last frame if the buffer holds exactly whole frames'
    /// remainder in `raw` mode, `Ok(None)` if nothing is pending, and
    /// [`FrameError::Truncated`] if an unfinished frame is left.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            let pending = buf.len();
            buf.clear();
            self.scanned = 0;
            Err(FrameError::Truncated { pending })
        }
    }
}

// ANCHOR: encode
/// Append `payload` to `out` as one frame in `framing`.
///
/// Fails only for payloads that cannot be represented: a `\n` inside a
/// `line` frame, or more than `u32::MAX` bytes in a `length` frame.
pub fn encode(framing: Framing, payload: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    match framing {
        Framing::Raw => out.extend_from_slice(payload),
        Framing::Length => {
            let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
                len: payload.len() as u64,
                max: u32::MAX as usize,
            })?;
            out.reserve(LENGTH_PREFIX + payload.len());
            out.put_u32(len);
            out.extend_from_slice(payload);
        }
        Framing::Line => {
            if let Some(at) = payload.iter().position(|&b| b == b'\n') {
                return Err(FrameError::NewlineInLine { at });
            }
            out.reserve(payload.len() + 1);
            out.extend_from_slice(payload);
            out.put_u8(b'\n');
        }
    }
    Ok(())
}
// ANCHOR_END: encode

/// Bytes asked of the kernel per `read()`. 64 KiB matches Linux's default
/// socket receive queue well: one syscall usually drains what has arrived.
pub const READ_CHUNK: usize = 64 * 1024;

/// Everything that can end a framed connection: the socket failed, or the
/// peer broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl ConnError {
    /// True when the error is a read timeout (`SO_RCVTIMEO` expired), which
    /// blocking servers use to notice idle clients and shutdown.
    /// Linux reports it as `EAGAIN` (`WouldBlock`); other systems as `TimedOut`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnError::Io(e) if is_timeout(e))
    }
}

/// `SO_RCVTIMEO` expiry: `WouldBlock` on Unix, `TimedOut` on Windows.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A blocking framed connection over any `Read + Write` (a `TcpStream`, a
/// TLS stream, a `Cursor` in a test).
///
/// `read_frame` is resumable: if the underlying `read` fails with a timeout
/// halfway through a frame, the bytes already received stay buffered and the
/// next call carries on. That is what lets a blocking server use a short
/// `SO_RCVTIMEO` to check for shutdown without losing data.
#[derive(Debug)]
pub struct FramedStream<S> {
    stream: S,
    decoder: Decoder,
    rbuf: BytesMut,
    wbuf: BytesMut,
    eof: bool,
    /// Bytes asked of the next `read()`: 4 KiB up to [`READ_CHUNK`].
    chunk: usize,
    /// Total bytes received, so a server can tell "idle" from "slow".
    bytes_read: u64,
}

impl<S: Read + Write> FramedStream<S> {
    pub fn new(stream: S, framing: Framing, max_frame: usize) -> Self {
        FramedStream {
            stream,
            decoder: Decoder::new(framing, max_frame),
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::new(),
            eof: false,
            chunk: 4 * 1024,
            bytes_read: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.rbuf.len()
    }

    /// Read the next frame. `Ok(None)` means the peer closed its write side
    /// cleanly between frames (a half-close or a full close: `read` returned
    /// 0). Closing in the middle of a frame is [`FrameError::Truncated`].
    pub fn read_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
        loop {
            if self.eof {
                return Ok(self.decoder.decode_eof(&mut self.rbuf)?);
            }
            if let Some(frame) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(Some(frame));
            }
            self.fill()?;
        }
    }

    /// One `read()` into the buffer. Returns how many bytes arrived; 0 means
    /// end of stream and is remembered.
    fn fill(&mut self) -> io::Result<usize> {
        // `Read::read` wants an initialised `&mut [u8]`, so the spare room is
        // zeroed before the syscall. Zeroing 64 KiB for a 64-byte message
        // would cost more than the copy, so the read size adapts: it starts
        // small and doubles each time a read fills it completely.
        let start = self.rbuf.len();
        self.rbuf.resize(start + self.chunk, 0);
        let result = loop {
            match self.stream.read(&mut self.rbuf[start..]) {
                // EINTR: a signal arrived during the syscall; just retry.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.rbuf.truncate(start + n);
        let n = result?;
        self.bytes_read += n as u64;
        if n == 0 {
            self.eof = true;
        } else if n == self.chunk {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        Ok(n)
    }

    /// Queue one frame for sending. Nothing is written until [`flush`](Self::flush),
    /// so a batch of echoes leaves in as few `write()`s as possible.
    pub fn queue_frame(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        encode(self.decoder.framing(), payload, &mut self.wbuf)
    }

    /// Frames queued but not yet flushed, in bytes.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    // ANCHOR: flush
    /// Write everything queued. `write_all` loops over short writes: the
    /// kernel may accept fewer bytes than offered when the socket's send
    /// buffer is full, and a lossy single `write` would silently drop the rest.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let result = self.stream.write_all(&self.wbuf);
            // On error we cannot know how much went out: drop it all, the
            // connection is finished anyway.
            self.wbuf.clear();
            result?;
        }
        self.stream.flush()
    }
    // ANCHOR_END: flush

    /// `queue_frame` + `flush`.
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        self.queue_frame(payload)?;
        self.flush()?;
        Ok(())
    }

    /// True once the peer has closed its write side.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Total bytes received so far. A server compares it across read
    /// timeouts to tell an idle client from one sending a big frame slowly.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Take the next frame only if it is already buffered: no syscall.
    /// Servers use it to echo a whole pipelined batch with one `write()`.
    pub fn try_buffered_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.eof {
            return self.decoder.decode_eof(&mut self.rbuf);
        }
        self.decoder.decode(&mut self.rbuf)
    }
}

#[cfg(feature = "tokio")]
pub mod tokio_io {
    //! The async twin of [`FramedStream`](super::FramedStream), for tokio.
    //! Same decoder, same buffers; only the reads and writes `.await`.
    //!
    //! Every `async fn` here is **cancel-safe**: it awaits one `read` or one
    //! `write` at a time and touches the buffers only once that call has
    //! returned, so a server may put any of them in a `tokio::select!`
    //! against a timer or a shutdown signal and lose nothing when the other
    //! branch wins.
    //!
    //! **Buffers.** The read buffer starts empty, and each read asks for 4
    //! KiB, doubling (up to [`READ_CHUNK`]) while reads fill what they were
    //! given, as [`FramedStream`](super::FramedStream) does. Between echoes
    //! a connection keeps its buffers: giving a 4 KiB buffer back after every
    //! echo and allocating it again on the next one cost a ping-pong server
    //! 13% more CPU per echo (async-server's README). What it gives back is
    //! a buffer that grew past twice its read size for one big frame, once
    //! that frame is gone, so a connection that once received 1 MiB does not
    //! hold 1 MiB while it idles.

    use super::{ConnError, Decoder, FrameError, Framing, READ_CHUNK, encode};
    use bytes::{Buf, Bytes, BytesMut};
    use std::io;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// The first read's size, and the least a buffer may keep between frames.
    const FIRST_CHUNK: usize = 4 * 1024;

    #[derive(Debug)]
    pub struct AsyncFramed<S> {
        stream: S,
        decoder: Decoder,
        rbuf: BytesMut,
        wbuf: BytesMut,
        eof: bool,
        /// Bytes asked of the next `read()`: 4 KiB up to [`READ_CHUNK`].
        chunk: usize,
        /// The largest capacity each buffer had since it was last given
        /// back. `BytesMut::capacity` shrinks as frames are split off the
        /// front, so it alone cannot tell how much memory the buffer holds.
        rbuf_peak: usize,
        wbuf_peak: usize,
        bytes_read: u64,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncFramed<S> {
        pub fn new(stream: S, framing: Framing, max_frame: usize) -> Self {
            AsyncFramed {
                stream,
                decoder: Decoder::new(framing, max_frame),
                rbuf: BytesMut::new(),
                wbuf: BytesMut::new(),
                eof: false,
                chunk: FIRST_CHUNK,
                rbuf_peak: 0,
                wbuf_peak: 0,
                bytes_read: 0,
            }
        }

        pub fn get_ref(&self) -> &S {
            &self.stream
        }

        pub fn get_mut(&mut self) -> &mut S {
            &mut self.stream
        }

        /// Bytes received but not yet part of a complete frame.
        pub fn pending(&self) -> usize {
            self.rbuf.len()
        }

        /// Total bytes received so far, whole frames or not (a client
        /// sending one big frame slowly is not idle).
        pub fn bytes_read(&self) -> u64 {
            self.bytes_read
        }

        /// Read the next frame; `Ok(None)` on a clean end of stream.
        ///
        /// Cancel-safe: it only awaits inside [`read_more`](Self::read_more),
        /// so using it in `tokio::select!` (say, against a shutdown signal)
        /// loses no data.
        pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
            loop {
                if let Some(frame) = self.try_buffered_frame()? {
                    return Ok(Some(frame));
                }
                if self.eof {
                    return Ok(None);
                }
                self.read_more().await?;
            }
        }

        /// One `read()` into the buffer, without decoding. Returns how many
        /// bytes arrived; 0 means end of stream and is remembered. (tokio's
        /// `TcpStream` treats a read that returns less than asked as "the
        /// receive queue is empty" and waits for the next epoll event rather
        /// than spending a `read()` on `EAGAIN`.)
        pub async fn read_more(&mut self) -> io::Result<usize> {
            if self.eof {
                return Ok(0);
            }
            if self.rbuf.is_empty() && self.rbuf_peak > 2 * self.chunk {
                self.rbuf = BytesMut::new(); // a big frame's buffer, now unused
                self.rbuf_peak = 0;
            }
            self.rbuf.reserve(self.chunk);
            let room = self.rbuf.capacity() - self.rbuf.len();
            self.rbuf_peak = self.rbuf_peak.max(self.rbuf.capacity());
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            self.bytes_read += n as u64;
            if n == 0 {
                self.eof = true;
            } else if n == room {
                self.chunk = (self.chunk * 2).min(READ_CHUNK);
            }
            Ok(n)
        }

        /// Take the next frame only if it is already buffered (no await).
        /// After the end of stream, an unfinished frame is
        /// [`FrameError::Truncated`].
        pub fn try_buffered_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
            let frame = if self.eof {
                self.decoder.decode_eof(&mut self.rbuf)
            } else {
                self.decoder.decode(&mut self.rbuf)
            };
            // A length prefix may have reserved room for a whole frame.
            self.rbuf_peak = self.rbuf_peak.max(self.rbuf.capacity());
            frame
        }

        /// Queue the echo of the next complete buffered frame without
        /// handing the frame out (no await), for a server that sends every
        /// frame back as it came. Returns the payload's length, `None` if no
        /// complete frame is buffered; after the end of stream an unfinished
        /// frame is [`FrameError::Truncated`], as with
        /// [`try_buffered_frame`](Self::try_buffered_frame).
        ///
        /// In `raw` framing the frame is everything buffered: its bytes go
        /// from the read buffer to the write queue in one copy and the read
        /// buffer is emptied in place. No `Bytes` is cut off it, so no
        /// reference count is taken and dropped per frame, and the next read
        /// reuses the buffer without having to check whether a frame still
        /// shares it.
        pub fn echo_buffered_frame(&mut self) -> Result<Option<usize>, FrameError> {
            if self.decoder.framing() == Framing::Raw {
                let len = self.rbuf.len();
                if len == 0 {
                    return Ok(None);
                }
                self.wbuf.extend_from_slice(&self.rbuf);
                self.rbuf.clear();
                self.wbuf_peak = self.wbuf_peak.max(self.wbuf.capacity());
                return Ok(Some(len));
            }
            let Some(frame) = self.try_buffered_frame()? else {
                return Ok(None);
            };
            self.queue_frame(&frame)?;
            Ok(Some(frame.len()))
        }

        /// Read once and throw the bytes away, with any unfinished frame
        /// still buffered: for a server that has sent its FIN and waits for
        /// the peer's. Returns how many bytes arrived; 0 is the peer's FIN.
        pub async fn discard(&mut self) -> io::Result<usize> {
            self.rbuf.clear();
            let n = self.read_more().await?;
            self.rbuf.clear();
            Ok(n)
        }

        pub fn queue_frame(&mut self, payload: &[u8]) -> Result<(), FrameError> {
            encode(self.decoder.framing(), payload, &mut self.wbuf)?;
            self.wbuf_peak = self.wbuf_peak.max(self.wbuf.capacity());
            Ok(())
        }

        /// Frames queued but not yet written, in bytes.
        pub fn queued(&self) -> usize {
            self.wbuf.len()
        }

        /// One `write()` of what is queued: waits until the kernel takes at
        /// least one byte (room in the socket's send buffer), and returns
        /// how many it took. A short write is normal; the rest stays queued.
        /// A server puts a timer around this call to notice a peer that
        /// stopped reading: a write that is waiting is not progress.
        pub async fn write_some(&mut self) -> io::Result<usize> {
            if self.wbuf.is_empty() {
                return Ok(0);
            }
            let n = self.stream.write(&self.wbuf).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if n == self.wbuf.len() {
                // All of it: empty the buffer in place. (`advance` would
                // move its start up, leaving the next echo less room, and
                // the one after that a `reserve` to move it back.)
                self.wbuf.clear();
            } else {
                self.wbuf.advance(n);
            }
            if self.wbuf.is_empty() && self.wbuf_peak > 2 * self.chunk.max(FIRST_CHUNK) {
                self.wbuf = BytesMut::new();
                self.wbuf_peak = 0;
            }
            Ok(n)
        }

        /// Write everything queued (`write_all`: short writes are retried).
        pub async fn flush(&mut self) -> io::Result<()> {
            if !self.wbuf.is_empty() {
                let result = self.stream.write_all(&self.wbuf).await;
                self.wbuf.clear();
                result?;
            }
            self.stream.flush().await
        }

        pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), ConnError> {
            self.queue_frame(payload)?;
            self.flush().await?;
            Ok(())
        }

        pub fn is_eof(&self) -> bool {
            self.eof
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        /// Every test is bounded: a hang fails instead of blocking the run.
        async fn bounded(test: impl std::future::Future<Output = ()>) {
            tokio::time::timeout(Duration::from_secs(10), test)
                .await
                .expect("test timed out");
        }

        #[tokio::test]
        async fn reads_pipelined_frames_and_writes_in_pieces() {
            bounded(async {
                // An 8-byte pipe each way: reads and writes come in pieces.
                let (client, server) = tokio::io::duplex(8);
                let mut framed = AsyncFramed::new(server, Framing::Line, 64);
                let (mut rd, mut wr) = tokio::io::split(client);
                let writer = tokio::spawn(async move {
                    wr.write_all(b"one\ntwo\nthr").await.unwrap();
                    wr
                });
                let one = framed.read_frame().await.unwrap();
                assert_eq!(one.as_deref(), Some(&b"one"[..]));
                let two = framed.read_frame().await.unwrap();
                assert_eq!(two.as_deref(), Some(&b"two"[..]));
                let mut wr = writer.await.unwrap();
                framed.queue_frame(b"0123456789").unwrap();
                // The pipe holds 8 bytes: the first write is short.
                let n = framed.write_some().await.unwrap();
                assert!((1..=8).contains(&n), "{n}");
                assert_eq!(framed.queued(), 11 - n);
                let mut got = vec![0; 11];
                rd.read_exact(&mut got[..n]).await.unwrap();
                while framed.queued() > 0 {
                    framed.write_some().await.unwrap();
                }
                rd.read_exact(&mut got[n..]).await.unwrap();
                assert_eq!(got, b"0123456789\n");
                wr.write_all(b"ee").await.unwrap();
                wr.shutdown().await.unwrap(); // FIN
                // End of stream mid-frame: Truncated, every byte counted.
                assert!(matches!(
                    framed.read_frame().await,
                    Err(ConnError::Frame(FrameError::Truncated { pending: 5 }))
                ));
                assert_eq!(framed.bytes_read(), 13);
                assert_eq!(framed.discard().await.unwrap(), 0);
            })
            .await;
        }

        #[tokio::test]
        async fn echo_buffered_frame_queues_each_frame_as_it_came() {
            bounded(async {
                for framing in Framing::ALL {
                    let (mut client, server) = tokio::io::duplex(1024);
                    let mut framed = AsyncFramed::new(server, framing, 64);
                    let mut wire = BytesMut::new();
                    encode(framing, b"one", &mut wire).unwrap();
                    encode(framing, b"", &mut wire).unwrap();
                    encode(framing, b"three", &mut wire).unwrap();
                    client.write_all(&wire).await.unwrap();
                    client.write_all(b"ha").await.unwrap(); // half a frame
                    client.shutdown().await.unwrap();
                    while framed.read_more().await.unwrap() > 0 {}
                    let mut lens = Vec::new();
                    let end = loop {
                        match framed.echo_buffered_frame() {
                            Ok(Some(len)) => lens.push(len),
                            other => break other,
                        }
                    };
                    framed.flush().await.unwrap();
                    drop(framed);
                    let mut echoed = Vec::new();
                    client.read_to_end(&mut echoed).await.unwrap();
                    if framing == Framing::Raw {
                        // Raw: everything buffered is one frame, even "ha".
                        wire.extend_from_slice(b"ha");
                        assert_eq!(lens, [wire.len()]);
                        assert_eq!(end, Ok(None));
                    } else {
                        assert_eq!(lens, [3, 0, 5], "{framing}");
                        assert_eq!(end, Err(FrameError::Truncated { pending: 2 }));
                    }
                    assert_eq!(echoed, wire, "{framing}: the echoes are the frames sent");
                }
            })
            .await;
        }

        #[tokio::test]
        async fn a_big_frame_buffer_is_given_back_a_small_one_kept() {
            bounded(async {
                let (mut client, server) = tokio::io::duplex(1 << 20);
                let mut framed = AsyncFramed::new(server, Framing::Length, 1 << 20);
                let mut wire = BytesMut::new();
                encode(Framing::Length, &[7; 300_000], &mut wire).unwrap();
                encode(Framing::Length, b"small", &mut wire).unwrap();
                client.write_all(&wire).await.unwrap();
                let big = framed.read_frame().await.unwrap().unwrap();
                assert_eq!(big.len(), 300_000);
                drop(big);
                let small = framed.read_frame().await.unwrap();
                assert_eq!(small.as_deref(), Some(&b"small"[..]));
                client.write_all(b"\0\0\0\x01x").await.unwrap();
                let x = framed.read_frame().await.unwrap();
                assert_eq!(x.as_deref(), Some(&b"x"[..]));
                // Released once empty; what it holds now is one read's room.
                assert!(
                    framed.rbuf_peak <= 2 * READ_CHUNK,
                    "the 300 KB buffer was kept: {}",
                    framed.rbuf_peak
                );
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn dec(f: Framing, max: usize, input: &[u8]) -> (Vec<Vec<u8>>, Result<(), FrameError>, usize) {
        let mut d = Decoder::new(f, max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(fr)) => out.push(fr.to_vec()),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    #[test]
    fn line_frames_split_on_newline() {
        let (frames, res, rest) = dec(Framing::Line, 100, b"a\n\nbc\r\nrest");
        assert_eq!(frames, vec![b"a".to_vec(), b"".to_vec(), b"bc\r".to_vec()]);
        assert_eq!(res, Ok(()));
        assert_eq!(rest, 4);
    }

    #[test]
    fn line_at_exact_limit_is_accepted_one_more_is_not() {
        let (frames, res, _) = dec(Framing::Line, 3, b"abc\n");
        assert_eq!(frames, vec![b"abc".to_vec()]);
        assert_eq!(res, Ok(()));
        let (frames, res, _) = dec(Framing::Line, 3, b"abcd\n");
        assert!(frames.is_empty());
        assert_eq!(res, Err(FrameError::LineTooLong { seen: 5, max: 3 }));
        // Without a newline, rejected as soon as the limit is passed.
        let (_, res, _) = dec(Framing::Line, 3, b"abcd");
        assert_eq!(res, Err(FrameError::LineTooLong { seen: 4, max: 3 }));
        let (_, res, _) = dec(Framing::Line, 3, b"abc");
        assert_eq!(res, Ok(()));
    }

    #[test]
    fn line_scanned_offset_survives_trickle() {
        let mut d = Decoder::new(Framing::Line, 10);
        let mut buf = BytesMut::new();
        for &b in b"hello" {
            buf.put_u8(b);
            assert_eq!(d.decode(&mut buf), Ok(None));
        }
        buf.put_u8(b'\n');
        assert_eq!(d.decode(&mut buf), Ok(Some(Bytes::from_static(b"hello"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn length_frames_round_trip() {
        let mut out = BytesMut::new();
        encode(Framing::Length, b"", &mut out).unwrap();
        encode(Framing::Length, b"xyz", &mut out).unwrap();
        assert_eq!(&out[..], b"\0\0\0\0\0\0\0\x03xyz");
        let (frames, res, rest) = dec(Framing::Length, 3, &out);
        assert_eq!(frames, vec![b"".to_vec(), b"xyz".to_vec()]);
        assert_eq!((res, rest), (Ok(()), 0));
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        let mut d = Decoder::new(Framing::Length, DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        let cap_before = buf.capacity();
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                max: DEFAULT_MAX_FRAME
            })
        );
        assert_eq!(buf.capacity(), cap_before, "nothing reserved for the claim");
        assert_eq!(
            FrameError::TooLarge {
                len: 4294967295,
                max: 1048576
            }
            .to_string(),
            "frame of 4294967295 bytes over the limit of 1048576 bytes"
        );
    }

    #[test]
    fn partial_length_frame_waits() {
        let (frames, res, rest) = dec(Framing::Length, 10, b"\0\0\0\x05ab");
        assert!(frames.is_empty());
        assert_eq!((res, rest), (Ok(()), 6));
    }

    #[test]
    fn raw_takes_everything() {
        let (frames, _, rest) = dec(Framing::Raw, 1, b"anything\n at all");
        assert_eq!(frames, vec![b"anything\n at all".to_vec()]);
        assert_eq!(rest, 0);
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let mut d = Decoder::new(Framing::Line, 10);
        let mut buf = BytesMut::from(&b"ok\nhalf"[..]);
        assert_eq!(d.decode_eof(&mut buf), Ok(Some(Bytes::from_static(b"ok"))));
        let err = d.decode_eof(&mut buf).unwrap_err();
        assert_eq!(err, FrameError::Truncated { pending: 4 });
        assert_eq!(
            err.to_string(),
            "connection closed with 4 bytes of an unfinished frame"
        );
        assert_eq!(d.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn encode_rejects_newline_in_line() {
        let mut out = BytesMut::new();
        assert_eq!(
            encode(Framing::Line, b"a\nb", &mut out),
            Err(FrameError::NewlineInLine { at: 1 })
        );
        assert!(out.is_empty());
    }

    /// A reader that hands out at most `chunk` bytes per call, as a TCP
    /// socket may.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
        written: Vec<u8>,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    impl Write for Trickle<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Short writes: accept at most 3 bytes per call.
            let n = buf.len().min(3);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn framed_stream_reads_trickled_frames_and_writes_through_short_writes() {
        let t = Trickle {
            data: b"\0\0\0\x02hi\0\0\0\0",
            chunk: 1,
            written: Vec::new(),
        };
        let mut fs = FramedStream::new(t, Framing::Length, 16);
        assert_eq!(fs.read_frame().unwrap().as_deref(), Some(&b"hi"[..]));
        assert_eq!(fs.read_frame().unwrap().as_deref(), Some(&b""[..]));
        assert!(fs.read_frame().unwrap().is_none());
        fs.write_frame(b"hello").unwrap();
        assert_eq!(fs.get_ref().written, b"\0\0\0\x05hello");
    }

    #[test]
    fn framed_stream_reports_truncation() {
        let mut fs = FramedStream::new(Cursor::new(b"abc".to_vec()), Framing::Line, 16);
        match fs.read_frame() {
            Err(ConnError::Frame(FrameError::Truncated { pending: 3 })) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
