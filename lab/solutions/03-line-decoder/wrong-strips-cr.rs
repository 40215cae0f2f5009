//! Exercise 3: the line decoder, sans-I/O (chapter 5, `--framing line`).
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half a
//! line, or three lines and a half. A server therefore appends whatever
//! arrived to a buffer and asks a decoder "is there a whole line yet?". The
//! decoder sees no socket at all, only the buffer, so it can be tested by
//! cutting the input at every possible byte (which is what the grader does).
//! The workspace's real one is `common::framing::Decoder`.
//!
//! Fill in `decode_line`. Grade it: cargo run -p lab -- check 3

/// Why a peer's bytes cannot be a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// More than `max` bytes without a `\n`: the peer may never send one,
    /// and we will not buffer without bound.
    TooLong { max: usize },
}

/// Take one complete line off the front of `buf`.
///
/// - A line is the bytes before the first `\n`, returned WITHOUT the `\n`;
///   the line and its `\n` are removed from `buf`, the rest stays.
/// - No `\n` yet: return `Ok(None)` and leave `buf` as it is (more bytes
///   will be appended and you will be called again).
/// - A line longer than `max` bytes (not counting the `\n`), or more than
///   `max` bytes in `buf` with no `\n` among them: `Err(LineError::TooLong)`.
/// - Any bytes may appear in a line (not only UTF-8): `\r` and `\0` included.
///   Only `\n` ends a line. A line sent as `hello\r\n` comes out as `hello\r`
///   (the decoder does not strip the `\r`: that is the application's choice),
///   and a `\r` anywhere else is an ordinary byte of the line.
pub fn decode_line(buf: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    // Search only the first max+1 bytes: a \n further on ends a line that is
    // too long anyway, and this keeps each call's work bounded.
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == b'\n') {
        Some(pos) => {
            // MISTAKE: strips a \r before the \n, as str::lines does; the
            // exercise's decoder returns every byte before the \n.
            let end = if pos > 0 && buf[pos - 1] == b'\r' {
                pos - 1
            } else {
                pos
            };
            let line = buf[..end].to_vec();
            buf.drain(..=pos);
            Ok(Some(line))
        }
        None if buf.len() > max => Err(LineError::TooLong { max }),
        None => Ok(None),
    }
}
