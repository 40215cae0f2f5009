//! Exercise 19: read exactly N bytes from a socket, and say why not
//! (chapter 3, the socket API from Python to Rust).
//!
//! Python's `recv(n)` and Rust's `read` return what has arrived, 1 to n
//! bytes, or 0 when the peer has closed; Python has no "receive exactly n"
//! at all (you write the loop), and Rust's `read_exact` loops for you but
//! on failure does not say how many bytes it had. Write the loop, with a
//! deadline for the whole message, and three ways to end:
//! - all `n` bytes: `Ok(bytes)`;
//! - the peer closed first (read returned 0): `Err(Eof { got })`, with how
//!   many bytes arrived before the close;
//! - the deadline passed: `Err(TimedOut { got })`. Set the socket's read
//!   timeout to the time left before each read; on Linux a read timeout is
//!   `ErrorKind::WouldBlock` (EAGAIN), not `TimedOut`: take both;
//! - any other error: `Err(Io(e))`; `Interrupted` (a signal) is retried.
//!
//! Fill in `read_exactly`. Grade it: cargo run -p lab -- check 19

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
    // Your code here. One read is not always n bytes.
    let _ = Instant::now();
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ReadError::Io)?;
    let mut buf = vec![0u8; n];
    let got = stream.read(&mut buf).map_err(ReadError::Io)?;
    buf.truncate(got);
    Ok(buf)
}
