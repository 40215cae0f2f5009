//! Exercise 4: the length-prefixed decoder, sans-I/O (`--framing length`).
//!
//! A frame is a 4-byte big-endian length N, then N bytes of payload. Like the
//! line decoder it is called again and again on a buffer that grows as bytes
//! arrive, and it must wait without fuss for a frame that is not all there
//! yet (even for the 4 length bytes themselves).
//!
//! The trap: the length is a number the PEER wrote. A peer can announce
//! 4 GiB in four bytes and then send nothing, so a decoder that allocates
//! (or reserves, or waits for) the announced length lets any client make the
//! server allocate 4 GiB. Check it against `max` first, as soon as the four
//! length bytes are in. The grader refuses any allocation over 64 MiB.
//!
//! Fill in `decode_frame`. Grade it: cargo run -p lab -- check 4

/// Why a peer's bytes cannot be a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LengthError {
    /// The peer announced `len` bytes; we take at most `max`.
    TooLong { len: usize, max: usize },
}

/// Take one complete frame off the front of `buf`: `Ok(Some(payload))` with
/// the 4 length bytes and the payload removed from `buf`; `Ok(None)` when
/// the header or the payload is not complete yet (leave `buf` alone);
/// `Err(TooLong)` as soon as the header announces more than `max`.
pub fn decode_frame(buf: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, LengthError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None); // not even the length yet
    };
    // The peer wrote this number: check it before it sizes anything.
    // MISTAKE: from_le_bytes: x86's own byte order, not the network's.
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(LengthError::TooLong { len, max });
    }
    if buf.len() < 4 + len {
        return Ok(None); // the payload is still on its way
    }
    let payload = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(payload))
}
