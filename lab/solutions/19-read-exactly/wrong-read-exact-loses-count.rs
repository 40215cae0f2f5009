//! Exercise 19, a typical wrong solution: std's read_exact.
//! MISTAKE: an EOF mid-message is reported as 0 bytes received.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why `read_exactly` could not return the n bytes.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed after sending `got` bytes of the message.
    Eof { got: usize },
    /// `timeout` passed with `got` bytes of the message received.
    TimedOut { got: usize },
    /// Any other error of the socket.
    Io(io::Error),
}

/// Read exactly `n` bytes from `stream` within `timeout` (for all of them,
/// not for each read). `n` is at most a few KiB here: allocating it is fine.
pub fn read_exactly(
    stream: &mut TcpStream,
    n: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ReadError> {
    // MISTAKE: read_exact loops, but its UnexpectedEof does not say how
    // many bytes had arrived, so the count is guessed as 0.
    let _ = Instant::now();
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ReadError::Io)?;
    let mut buf = vec![0u8; n];
    match stream.read_exact(&mut buf) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Eof { got: 0 }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ReadError::TimedOut { got: 0 })
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}
