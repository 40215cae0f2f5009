//! The one wire protocol every server speaks, and the two adapters that put
//! it on a socket.
//!
//! TCP gives you a byte stream, not messages: one `send()` of 10 bytes may
//! arrive as two `recv()`s of 3 and 7, and two `send()`s may arrive as one
//! `recv()`. *Framing* is how both ends agree where one message stops. The
//! workspace speaks three framings:
//!
//! | framing  | on the wire                            | good for                        |
//! |----------|----------------------------------------|---------------------------------|
//! | `line`   | bytes up to and including `\n`         | typing at `nc`, text protocols  |
//! | `length` | 4-byte big-endian length, then payload | binary data, any byte allowed   |
//! | `raw`    | no framing: whatever arrived           | the course's asyncio example    |
//!
//! | file | what it holds | touches a socket? |
//! |---|---|---|
//! | `codec.rs` | [`Framing`], [`Decoder`], [`encode`], [`FrameError`]: pure functions over buffers | no |
//! | `blocking_io.rs` | [`FramedStream`]: the codec over any blocking `Read + Write` | yes |
//! | `tokio_io.rs` | `tokio_io::AsyncFramed` (feature `tokio`): the codec over `AsyncRead + AsyncWrite` | yes |
//!
//! The codec is "sans-I/O", as in mini-redis's `frame.rs`: the blocking,
//! mio, io_uring and tokio servers, the fuzz target and the property tests
//! all call exactly that code, and each adapter only decides *when* to read
//! and write. Everything is re-exported here, so callers write
//! `common::framing::Decoder` whichever file it lives in.

use std::io;

mod blocking_io;
mod codec;
#[cfg(feature = "tokio")]
pub mod tokio_io;

pub use blocking_io::FramedStream;
pub use codec::{DEFAULT_MAX_FRAME, Decoder, FrameError, Framing, LENGTH_PREFIX, encode};

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
