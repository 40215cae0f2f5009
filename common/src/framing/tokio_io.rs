//! [`AsyncFramed`]: the codec over tokio's `AsyncRead + AsyncWrite`, the
//! async twin of [`FramedStream`](super::FramedStream), used by the tokio
//! model of async-server (`async-server --model tokio`).
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
