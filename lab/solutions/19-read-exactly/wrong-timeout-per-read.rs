//! Exercise 19, a typical wrong solution: a timeout per read.
//! MISTAKE: set once for every read, so a peer that trickles bytes is waited for forever.

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
    // MISTAKE: the same timeout for every read, so a trickle never ends.
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ReadError::Io)?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadError::Eof { got }),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // SO_RCVTIMEO expired: Linux says EAGAIN (WouldBlock).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::TimedOut { got });
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(buf)
}
