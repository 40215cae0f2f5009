//! The codec: where one frame stops, as pure functions over buffers.
//!
//! Nothing here touches a socket. [`Decoder::decode`] looks at a
//! [`BytesMut`] that some I/O code filled and either cuts one complete frame
//! off its front, says "need more bytes", or names what is wrong. [`encode`]
//! appends a frame to an output buffer. The adapters beside this file
//! (`blocking_io.rs`, `tokio_io.rs`) and every event loop call exactly this.
//!
//! The size limit is checked *before* anything is allocated. A client that
//! sends the length prefix `FF FF FF FF` claims a 4 GiB frame; we reject the
//! claim from the four header bytes alone, and a line with no `\n` is
//! rejected as soon as it is longer than the limit, so a client can never make
//! the server hold more than `max_frame` (plus one read's worth) of its bytes.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
