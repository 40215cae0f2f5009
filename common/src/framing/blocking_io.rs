//! [`FramedStream`]: the codec over a blocking `Read + Write`, as the
//! blocking chapters (tcp-echo, threaded-server) and the clients use it.
//!
//! One `read()` or `write()` per call into the kernel; the frames themselves
//! are cut by [`Decoder`](super::Decoder), so this file only decides how much
//! to ask the kernel for and what to do with a short count.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};

use super::{ConnError, Decoder, FrameError, Framing, READ_CHUNK, encode};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameError;
    use std::io::Cursor;

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
