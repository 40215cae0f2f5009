//! The Budget Chat protocol (Protohackers problem 3) as pure functions: the
//! name rule and every line the server sends. No socket here, so the three
//! designs say exactly the same bytes and the rules are unit-tested alone.
//!
//! ```text
//! server: Welcome to budgetchat! What shall I call you?
//! client: alice
//! server: * The room contains: bob, carol      (to alice)
//! server: * alice has entered the room         (to bob and carol)
//! client: hi                                   (from alice)
//! server: [alice] hi                           (to bob and carol, never to alice)
//! server: * alice has left the room            (when alice goes)
//! ```
//!
//! Every line ends with `\n`; a trailing `\r` from the client is stripped
//! (the protocol allows `\r\n` clients such as `nc -C` or telnet). A message
//! is built once as [`Bytes`], a reference-counted buffer: putting it in a
//! hundred outboxes clones a pointer a hundred times, never the text.

use bytes::{BufMut, Bytes, BytesMut};

/// Names are 1 to this many ASCII letters or digits (the protocol asks for
/// at least 16 to be accepted).
pub const MAX_NAME: usize = 16;

/// The first line every connection receives.
pub const WELCOME: &[u8] = b"Welcome to budgetchat! What shall I call you?\n";
/// Told to every connection when the server stops.
pub const SHUTTING_DOWN: &[u8] = b"* server shutting down\n";
/// Told to a connection over `--max-conns` before it is closed.
pub const ROOM_FULL: &[u8] = b"* the room is full (--max-conns), try again later\n";

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong(usize),
    /// The first byte that is not an ASCII letter or digit.
    BadByte(u8),
    Taken,
}

impl NameError {
    /// The one line the refused client receives before it is closed.
    pub fn line(&self) -> Bytes {
        let why = match self {
            NameError::Empty => "an empty name".to_owned(),
            NameError::TooLong(n) => format!("a name of {n} characters (at most {MAX_NAME})"),
            NameError::BadByte(b) => format!("a name with {:?} in it", char::from(*b)),
            NameError::Taken => "a name already in the room".to_owned(),
        };
        line(format!(
            "* refused: {why}; names are 1 to {MAX_NAME} ASCII letters or digits"
        ))
    }
}

/// The name rule: 1 to [`MAX_NAME`] ASCII letters or digits, nothing else
/// (no spaces, no punctuation, no UTF-8). `line` is the client's first line
/// without its `\n`; a trailing `\r` has already been stripped.
pub fn check_name(line: &[u8]) -> Result<&str, NameError> {
    if line.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(&b) = line.iter().find(|b| !b.is_ascii_alphanumeric()) {
        return Err(NameError::BadByte(b));
    }
    if line.len() > MAX_NAME {
        return Err(NameError::TooLong(line.len()));
    }
    // Every byte is ASCII, so this cannot fail; the error arm is unreachable.
    std::str::from_utf8(line).map_err(|_| NameError::Empty)
}

/// A line as the client sent it, minus a trailing `\r`.
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn line(text: String) -> Bytes {
    let mut b = text.into_bytes();
    b.push(b'\n');
    Bytes::from(b)
}

/// To the joining member: who else is here (not itself), in joining order.
pub fn presence<'a>(names: impl Iterator<Item = &'a str>) -> Bytes {
    line(format!(
        "* The room contains: {}",
        names.collect::<Vec<_>>().join(", ")
    ))
}

pub fn entered(name: &str) -> Bytes {
    line(format!("* {name} has entered the room"))
}

pub fn left(name: &str) -> Bytes {
    line(format!("* {name} has left the room"))
}

// ANCHOR: said
/// `[NAME] text\n`, built once and shared by every recipient's outbox.
pub fn said(name: &str, text: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(name.len() + text.len() + 4);
    b.put_u8(b'[');
    b.put_slice(name.as_bytes());
    b.put_slice(b"] ");
    b.put_slice(text);
    b.put_u8(b'\n');
    b.freeze()
}
// ANCHOR_END: said

/// Told once to a `--slow skip` member whose outbox has drained again.
pub fn missed(n: u64) -> Bytes {
    let s = if n == 1 { "" } else { "s" };
    line(format!("* you missed {n} message{s}"))
}

/// Told to a member whose line is over `--max-frame`, before it is closed.
pub fn too_long(max: usize) -> Bytes {
    line(format!(
        "* refused: a line over {max} bytes (--max-frame); closing"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name(b"alice"), Ok("alice"));
        assert_eq!(check_name(b"Bob42"), Ok("Bob42"));
        assert_eq!(check_name(b"abcdefghijklmnop"), Ok("abcdefghijklmnop"));
        assert_eq!(
            check_name(b"abcdefghijklmnopq"),
            Err(NameError::TooLong(17))
        );
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(b"al ice"), Err(NameError::BadByte(b' ')));
        assert_eq!(check_name(b"al_ice"), Err(NameError::BadByte(b'_')));
        assert_eq!(check_name("é".as_bytes()), Err(NameError::BadByte(0xc3)));
        assert_eq!(strip_cr(b"alice\r"), b"alice");
        assert_eq!(strip_cr(b"alice"), b"alice");
    }

    #[test]
    fn lines() {
        assert_eq!(
            &presence(["bob", "carol"].into_iter())[..],
            b"* The room contains: bob, carol\n"
        );
        assert_eq!(&presence([].into_iter())[..], b"* The room contains: \n");
        assert_eq!(&entered("bob")[..], b"* bob has entered the room\n");
        assert_eq!(&left("bob")[..], b"* bob has left the room\n");
        assert_eq!(&said("bob", b"hi there")[..], b"[bob] hi there\n");
        assert_eq!(&missed(1)[..], b"* you missed 1 message\n");
        assert_eq!(&missed(7)[..], b"* you missed 7 messages\n");
        assert!(
            NameError::Taken
                .line()
                .starts_with(b"* refused: a name already")
        );
        assert!(too_long(10).ends_with(b"closing\n"));
    }
}
