//! Exercise 19, a typical wrong solution: the timeout not recognised.
//! MISTAKE: matches ErrorKind::TimedOut only, so Linux's WouldBlock is an Io error.

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
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TimedOut { got });
        }
        // The timeout left for the whole message, not a fresh one per read:
        // a peer that sends a byte a second would otherwise never time out.
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadError::Eof { got }),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // MISTAKE: only TimedOut; Linux reports SO_RCVTIMEO as WouldBlock.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ReadError::TimedOut { got });
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(buf)
}
